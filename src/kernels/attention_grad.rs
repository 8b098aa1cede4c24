//! Causal grouped-query attention (CPU, f32) as one differentiable operation, for passes that take gradients:
//! `y = softmax(q·kᵀ · scale + causal mask) · v` with a hand-written backward, blocked over queries as the scoring
//! kernel ([`super::attention`]) is, so the T×T matrices are never built and blocks above the diagonal are skipped.
//!
//! Forward, per (batch, head) and block of 64 queries: the scores against keys 0..=last query (one product), each
//! row's softmax over its causal prefix (the scoring kernel's vectorized exp), the block's output (one product with
//! V). Only each row's max and 1/Σ are kept for the backward, not the probabilities.
//!
//! Backward, per (batch, kv head), over its query heads and their blocks: the probabilities recomputed from the
//! same scores, max and 1/Σ (bit for bit the forward's), ∂p = g·vᵀ, the softmax's backward
//! `∂s = p ⊙ (∂p − Σ ∂p ⊙ p)` times the scale, ∂q = ∂s·k written, and ∂k += ∂sᵀ·q, ∂v += pᵀ·g accumulated straight
//! into the kv head's gradients (the expand's backward). Against the candle composition (full masked products,
//! libm exp) values and gradients agree to f32 rounding (test); against a naive f64 definition too.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::attention::{exp_scaled_minus, exp_scaled_shifted_with_max};
use super::buffers::{SharedRows, contiguous, uninit_vec, with_f32};
use super::fused::{Strided, product_rows, product_to};

/// Queries per block.
const QUERY_BLOCK: usize = 64;

/// `softmax(q·kᵀ · scale + causal mask) · v` for q [B, H, T, hd] and k, v [B, Hkv, T, hd] (f32, CPU; Hkv divides
/// H, query head h reads kv head h / (H / Hkv)): [B, H, T, hd], differentiable with respect to q, k and v.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    attention_node(q, k, v, scale, false)
}

/// [`causal_attention`] with the values and the output laid out by position, as the projections read and write
/// them: v [B, T, Hkv·hd] (the value projection's output) and the result [B, T, H·hd] (the output projection's
/// input), so neither goes through a transpose and a copy (nodes of their own, each with a materialized gradient).
/// q [B, H, T, hd] and k [B, Hkv, T, hd] as in [`causal_attention`].
pub fn causal_attention_by_position(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    attention_node(q, k, v, scale, true)
}

fn attention_node(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    by_position: bool,
) -> candle_core::Result<Tensor> {
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        CausalAttention {
            // As candle's affine converts its multiplier.
            scale: scale as f32,
            by_position,
            rows: Mutex::new(None),
        },
    )
}

/// The operation; the forward's per-row softmax statistics are kept for the backward.
struct CausalAttention {
    scale: f32,
    /// v [B, T, Hkv·hd] and the output [B, T, H·hd] (else both [B, n, T, hd]).
    by_position: bool,
    rows: Mutex<Option<RowStats>>,
}

/// Per query row ([B, H, T]): the max of its scaled causal scores and 1/Σ exp(score · scale − max), from which the
/// backward recomputes the row's probabilities.
struct RowStats {
    max: Vec<f32>,
    inv_sum: Vec<f32>,
}

/// The dimensions of one call.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    t: usize,
    hd: usize,
    by_position: bool,
}

impl Dims {
    fn of(q: &Layout, k: &Layout, v: &Layout, by_position: bool) -> candle_core::Result<Self> {
        let (batch, heads, t, hd) = q.shape().dims4()?;
        let (kb, kv_heads, kt, khd) = k.shape().dims4()?;
        let v_ok = if by_position {
            v.dims() == [kb, kt, kv_heads * khd]
        } else {
            v.dims() == k.dims()
        };
        if (kb, kt, khd) != (batch, t, hd)
            || !v_ok
            || kv_heads == 0
            || heads % kv_heads != 0
            || t == 0
            || hd == 0
        {
            candle_core::bail!(
                "causal attention: q {:?}, k {:?}, v {:?}",
                q.dims(),
                k.dims(),
                v.dims()
            )
        }
        Ok(Dims {
            batch,
            heads,
            kv_heads,
            t,
            hd,
            by_position,
        })
    }

    /// Query heads per kv head.
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Where head `head` (of `n`) of batch `b` starts in the values or the output, and its rows' stride: [B, n, T,
    /// hd], or by position [B, T, n·hd].
    fn rows_of(&self, b: usize, head: usize, n: usize) -> (usize, usize) {
        if self.by_position {
            ((b * self.t * n + head) * self.hd, n * self.hd)
        } else {
            ((b * n + head) * self.t * self.hd, self.hd)
        }
    }

    fn output_shape(&self) -> Shape {
        if self.by_position {
            Shape::from((self.batch, self.t, self.heads * self.hd))
        } else {
            Shape::from((self.batch, self.heads, self.t, self.hd))
        }
    }
}

/// The scores of queries qs..qe (rows of `q_head`) against keys 0..qe: `scores` [qe − qs, qe] = Q·Kᵀ. The forward
/// and the backward make this same call, so the backward's scores are the forward's.
fn block_scores(
    q_head: &[f32],
    k_head: &[f32],
    qs: usize,
    qe: usize,
    hd: usize,
    scores: &mut [f32],
) {
    let (m, keys) = (qe - qs, qe);
    product_rows(
        Strided::new(&q_head[qs * hd..qe * hd], m, hd, hd, 1),
        Strided::new(&k_head[..keys * hd], hd, keys, 1, hd),
        scores,
        false,
    );
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1, l2, l3, self.by_position)?;
        let q = contiguous::<f32>(s1, l1, self.name())?;
        let k = contiguous::<f32>(s2, l2, self.name())?;
        let v = contiguous::<f32>(s3, l3, self.name())?;
        let (t, hd, group) = (d.t, d.hd, d.group());
        let rows = d.batch * d.heads * t;
        let (mut max, mut inv_sum) = (vec![0f32; rows], vec![0f32; rows]);
        let mut y = uninit_vec(rows * hd);
        let y_rows = SharedRows::new(&mut y);
        max.par_chunks_mut(t)
            .zip(inv_sum.par_chunks_mut(t))
            .enumerate()
            .for_each(|(bh, (max, inv_sum))| {
                let (b, h) = (bh / d.heads, bh % d.heads);
                let kvh = h / group;
                let q_head = &q[bh * t * hd..(bh + 1) * t * hd];
                let k_head = &k[(b * d.kv_heads + kvh) * t * hd..][..t * hd];
                let (v_at, v_stride) = d.rows_of(b, kvh, d.kv_heads);
                let (y_at, y_stride) = d.rows_of(b, h, d.heads);
                let mut scores = vec![0f32; QUERY_BLOCK.min(t) * t];
                for qs in (0..t).step_by(QUERY_BLOCK) {
                    let qe = (qs + QUERY_BLOCK).min(t);
                    let p = &mut scores[..(qe - qs) * qe];
                    block_scores(q_head, k_head, qs, qe, hd, p);
                    for (r, row) in p.chunks_exact_mut(qe).enumerate() {
                        let (valid, masked) = row.split_at_mut(qs + r + 1);
                        let (row_max, sum) = exp_scaled_shifted_with_max(valid, self.scale);
                        let inv = 1.0 / sum;
                        valid.iter_mut().for_each(|x| *x *= inv);
                        masked.fill(0.0);
                        (max[qs + r], inv_sum[qs + r]) = (row_max, inv);
                    }
                    // SAFETY: rows qs..qe of head (b, h) of y lie within it and are written by this task only.
                    unsafe {
                        product_to(
                            Strided::new(p, qe - qs, qe, qe, 1),
                            Strided::new(&v[v_at..], qe, hd, v_stride, 1),
                            y_rows.rows_ptr(y_at + qs * y_stride, qe - qs, hd, y_stride),
                            y_stride,
                            false,
                        )
                    };
                }
            });
        *self.rows.lock().unwrap_or_else(|e| e.into_inner()) = Some(RowStats { max, inv_sum });
        Ok((CpuStorage::F32(y), d.output_shape()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = Dims::of(q.layout(), k.layout(), v.layout(), self.by_position)?;
        let stats = self.rows.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(stats) = stats else {
            candle_core::bail!("causal attention: backward without its forward's softmax rows")
        };
        let g = grad.contiguous()?;
        let (dq, dk, dv) = with_f32(q, |q| {
            with_f32(k, |k| {
                with_f32(v, |v| {
                    with_f32(&g, |g| {
                        Ok(attention_backward(d, self.scale, q, k, v, &stats, g))
                    })
                })
            })
        })?;
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), q.device())?),
            Some(Tensor::from_vec(dk, k.shape(), k.device())?),
            Some(Tensor::from_vec(dv, v.shape(), v.device())?),
        ))
    }
}

/// ∂q [B, H, T, hd], ∂k [B, Hkv, T, hd] and ∂v (v's layout), from the output's gradient g (the output's layout):
/// one (batch, kv head) per task, its query heads in head order.
fn attention_backward(
    d: Dims,
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stats: &RowStats,
    g: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (t, hd, group) = (d.t, d.hd, d.group());
    let kv_len = d.batch * d.kv_heads * t * hd;
    let (mut dk, mut dv) = (vec![0f32; kv_len], vec![0f32; kv_len]);
    let mut dq = uninit_vec(d.batch * d.heads * t * hd);
    let dv_rows = SharedRows::new(&mut dv);
    dq.par_chunks_mut(group * t * hd)
        .zip(dk.par_chunks_mut(t * hd))
        .enumerate()
        .for_each(|(bkv, (dq, dk))| {
            let (b, kvh) = (bkv / d.kv_heads, bkv % d.kv_heads);
            let k_head = &k[bkv * t * hd..][..t * hd];
            let (v_at, v_stride) = d.rows_of(b, kvh, d.kv_heads);
            let v_head = &v[v_at..];
            let rows = QUERY_BLOCK.min(t) * t;
            let (mut p, mut ds) = (vec![0f32; rows], vec![0f32; rows]);
            for (j, dq) in dq.chunks_exact_mut(t * hd).enumerate() {
                // Query head h = kvh·group + j of batch b.
                let h = kvh * group + j;
                let bh = b * d.heads + h;
                let q_head = &q[bh * t * hd..(bh + 1) * t * hd];
                let (g_at, g_stride) = d.rows_of(b, h, d.heads);
                let (max, inv_sum) = (&stats.max[bh * t..][..t], &stats.inv_sum[bh * t..][..t]);
                for qs in (0..t).step_by(QUERY_BLOCK) {
                    let qe = (qs + QUERY_BLOCK).min(t);
                    let (m, keys) = (qe - qs, qe);
                    let p = &mut p[..m * keys];
                    let ds = &mut ds[..m * keys];
                    block_scores(q_head, k_head, qs, qe, hd, p);
                    for (r, row) in p.chunks_exact_mut(keys).enumerate() {
                        let (valid, masked) = row.split_at_mut(qs + r + 1);
                        exp_scaled_minus(valid, scale, max[qs + r], inv_sum[qs + r]);
                        masked.fill(0.0);
                    }
                    let g_block = Strided::new(&g[g_at + qs * g_stride..], m, hd, g_stride, 1);
                    // y = p·v: ∂p = g·vᵀ, ∂v += pᵀ·g.
                    product_rows(
                        g_block,
                        Strided::new(v_head, hd, keys, 1, v_stride),
                        ds,
                        false,
                    );
                    // SAFETY: rows 0..keys of kv head (b, kvh) of ∂v lie within it, were zeroed, and only this
                    // task touches them.
                    unsafe {
                        product_to(
                            Strided::new(p, keys, m, 1, keys),
                            g_block,
                            dv_rows.rows_ptr(v_at, keys, hd, v_stride),
                            v_stride,
                            true,
                        )
                    };
                    for (r, (ds_row, p_row)) in ds
                        .chunks_exact_mut(keys)
                        .zip(p.chunks_exact(keys))
                        .enumerate()
                    {
                        let valid = qs + r + 1;
                        softmax_backward_row(&p_row[..valid], &mut ds_row[..valid], scale);
                        ds_row[valid..].fill(0.0);
                    }
                    // scores = q·kᵀ: ∂q = ∂s·k, ∂k += ∂sᵀ·q.
                    product_rows(
                        Strided::new(ds, m, keys, keys, 1),
                        Strided::new(&k_head[..keys * hd], keys, hd, hd, 1),
                        &mut dq[qs * hd..qe * hd],
                        false,
                    );
                    product_rows(
                        Strided::new(ds, keys, m, 1, keys),
                        Strided::new(&q_head[qs * hd..qe * hd], m, hd, hd, 1),
                        &mut dk[..keys * hd],
                        true,
                    );
                }
            }
        });
    (dq, dk, dv)
}

/// One row of the softmax's backward, in place: `∂s ← p ⊙ (∂p − Σ ∂p ⊙ p) · scale` over the row's causal prefix.
fn softmax_backward_row(p: &[f32], dp: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time.
            return unsafe { softmax_backward_row_avx512(p, dp, scale) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected at run time.
            return unsafe { softmax_backward_row_avx2(p, dp, scale) };
        }
    }
    softmax_backward_row_portable(p, dp, scale)
}

/// # Safety
/// The CPU has AVX-512F, FMA (the caller detected them at run time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn softmax_backward_row_avx512(p: &[f32], dp: &mut [f32], scale: f32) {
    softmax_backward_row_portable(p, dp, scale)
}

/// # Safety
/// The CPU has AVX2, FMA (the caller detected them at run time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_backward_row_avx2(p: &[f32], dp: &mut [f32], scale: f32) {
    softmax_backward_row_portable(p, dp, scale)
}

/// Lanes of the dot product: a sum in one accumulator cannot be reordered, so it would stay scalar.
const LANES: usize = 16;

#[inline(always)]
fn softmax_backward_row_portable(p: &[f32], dp: &mut [f32], scale: f32) {
    assert_eq!(p.len(), dp.len());
    let (pc, pr) = p.as_chunks::<LANES>();
    let (dc, dr) = dp.as_chunks::<LANES>();
    let mut lanes = [0f32; LANES];
    for (a, b) in pc.iter().zip(dc) {
        for l in 0..LANES {
            lanes[l] += a[l] * b[l];
        }
    }
    let dot = lanes.iter().sum::<f32>() + pr.iter().zip(dr).map(|(a, b)| a * b).sum::<f32>();
    for (o, &p) in dp.iter_mut().zip(p) {
        *o = p * (*o - dot) * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::CpuOps;
    use crate::kernels::ops::tests::{assert_close_node, assert_same_node};
    use crate::kernels::products::Products;
    use crate::kernels::{Kernels, Pass, Precision, ProductsKind};
    use candle_core::{Device, Var};

    /// Values and the gradients of q, k and v against the candle composition (expanded kv heads, full masked scores,
    /// libm exp, batched products), to f32 rounding, with grouped and ungrouped heads, sequences shorter than a
    /// query block and ones crossing block boundaries.
    #[test]
    fn the_node_matches_the_composition() {
        let dev = Device::Cpu;
        for &(b, h, hkv, t, hd) in &[
            (2, 4, 2, 37, 16),
            (1, 3, 3, 64, 8),
            (2, 6, 2, 5, 4),
            (1, 1, 1, 1, 2),
            (1, 4, 2, 150, 16),
            (2, 2, 1, 129, 8),
        ] {
            let q = Var::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap();
            let k = Var::randn(0f32, 1.0, (b, hkv, t, hd), &dev).unwrap();
            let v = Var::randn(0f32, 1.0, (b, hkv, t, hd), &dev).unwrap();
            let g = Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap();
            let scale = 1.0 / (hd as f64).sqrt();
            let ours =
                causal_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), scale).unwrap();
            let cpu = CpuOps::new(&dev, Products::new(ProductsKind::CpuGemm, Precision::Fp32));
            let (p, vx) = cpu
                .causal_probabilities(q.as_tensor(), k.as_tensor(), v.as_tensor(), Pass::Train)
                .unwrap();
            let theirs = p.matmul(&vx).unwrap();
            let case = format!("{b}×{h}/{hkv}×{t}×{hd}");
            assert_close_node(
                &ours,
                &theirs,
                &g,
                &[("q", &q), ("k", &k), ("v", &v)],
                &case,
                (2e-6, 1e-5),
            );
        }
    }

    /// The gradients against a naive f64 definition: y_i = Σ_{j≤i} p_ij v_j, p = softmax(q_i·k_j · scale), for
    /// Σ(y ⊙ g) differentiated by hand (∂v_j = Σ_i p_ij g_i; ∂s_ij = p_ij (g_i·v_j − Σ_l p_il g_i·v_l)).
    #[test]
    fn gradients_match_a_naive_f64_definition() {
        let dev = Device::Cpu;
        let (h, hkv, t, hd) = (4usize, 2usize, 70usize, 8usize);
        let q = Var::randn(0f32, 1.0, (1, h, t, hd), &dev).unwrap();
        let k = Var::randn(0f32, 1.0, (1, hkv, t, hd), &dev).unwrap();
        let v = Var::randn(0f32, 1.0, (1, hkv, t, hd), &dev).unwrap();
        let g = Tensor::randn(0f32, 1.0, (1, h, t, hd), &dev).unwrap();
        let scale = 1.0 / (hd as f64).sqrt();
        let y = causal_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), scale).unwrap();
        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| -> Vec<f64> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|&x| x as f64)
                .collect()
        };
        let (qv, kv, vv, gv) = (
            flat(q.as_tensor()),
            flat(k.as_tensor()),
            flat(v.as_tensor()),
            flat(&g),
        );
        let (mut dq, mut dk, mut dv) = (
            vec![0f64; qv.len()],
            vec![0f64; kv.len()],
            vec![0f64; kv.len()],
        );
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        for head in 0..h {
            let kvh = head / (h / hkv);
            let qo = head * t * hd;
            let ko = kvh * t * hd;
            for i in 0..t {
                let qi = &qv[qo + i * hd..qo + (i + 1) * hd];
                let gi = &gv[qo + i * hd..qo + (i + 1) * hd];
                let s: Vec<f64> = (0..=i)
                    .map(|j| dot(qi, &kv[ko + j * hd..ko + (j + 1) * hd]) * scale)
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                let p: Vec<f64> = s.iter().map(|x| (x - m).exp() / z).collect();
                let gv_j: Vec<f64> = (0..=i)
                    .map(|j| dot(gi, &vv[ko + j * hd..ko + (j + 1) * hd]))
                    .collect();
                let mean = dot(&p, &gv_j);
                for j in 0..=i {
                    let ds = p[j] * (gv_j[j] - mean) * scale;
                    for c in 0..hd {
                        dv[ko + j * hd + c] += p[j] * gi[c];
                        dq[qo + i * hd + c] += ds * kv[ko + j * hd + c];
                        dk[ko + j * hd + c] += ds * qi[c];
                    }
                }
            }
        }
        for (what, x, want) in [("q", &q, &dq), ("k", &k, &dk), ("v", &v, &dv)] {
            let got = flat(grads.get(x.as_tensor()).unwrap());
            let worst = got
                .iter()
                .zip(want.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0f64, f64::max);
            assert!(worst < 1e-5, "∂{what}: max |Δ| {worst}");
        }
    }

    /// The by-position entry against the head-major one with the values and output transposed around it: the same
    /// values and gradients, bit for bit.
    #[test]
    fn the_by_position_layout_is_the_transposed_one() {
        let dev = Device::Cpu;
        for &(b, h, hkv, t, hd) in &[(2, 4, 2, 70, 16), (1, 2, 2, 9, 8), (1, 3, 1, 130, 4)] {
            let q = Var::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap();
            let k = Var::randn(0f32, 1.0, (b, hkv, t, hd), &dev).unwrap();
            let v = Var::randn(0f32, 1.0, (b, t, hkv * hd), &dev).unwrap();
            let g = Tensor::randn(0f32, 1.0, (b, t, h * hd), &dev).unwrap();
            let scale = 1.0 / (hd as f64).sqrt();
            let ours =
                causal_attention_by_position(q.as_tensor(), k.as_tensor(), v.as_tensor(), scale)
                    .unwrap();
            let v_heads = v
                .as_tensor()
                .reshape((b, t, hkv, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap();
            let theirs = causal_attention(q.as_tensor(), k.as_tensor(), &v_heads, scale)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((b, t, h * hd))
                .unwrap();
            let case = format!("{b}×{h}/{hkv}×{t}×{hd}");
            assert_same_node(
                &ours,
                &theirs,
                &g,
                &[("q", &q), ("k", &k), ("v", &v)],
                &case,
            );
        }
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 4, 8, 16), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 3, 8, 16), candle_core::DType::F32, &dev).unwrap();
        let err = causal_attention(&q, &k, &k, 0.25).unwrap_err().to_string();
        assert!(err.contains("causal attention"), "{err}");
        let empty = Tensor::zeros((1, 4, 0, 16), candle_core::DType::F32, &dev).unwrap();
        let err = causal_attention(&empty, &empty, &empty, 0.25)
            .unwrap_err()
            .to_string();
        assert!(err.contains("causal attention"), "{err}");
    }
}
