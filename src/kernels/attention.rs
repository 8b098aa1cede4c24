//! Causal grouped-query attention on the CPU in f32, blocked over queries so the T×T score matrix is never built:
//! for each (batch, head, block of queries) the scores against keys 0..=last query come from one matrix product,
//! each row is soft-maxed over its own causal prefix (later keys get exactly 0), and the block's output is one more
//! product with V. Blocks above the diagonal are skipped, which halves the work of a full masked product.
//!
//! Forward-only; the candle composition in `model.rs` remains the path for other devices, dtypes and gradients.

use rayon::prelude::*;

use super::fused::{Strided, product_rows};

/// Queries per block.
const QUERY_BLOCK: usize = 64;

/// Shape of one attention call. q is [B, H, T, hd]; k and v are [B, Hkv, T, hd]; all row-major and contiguous.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub seq_len: usize,
    pub head_dim: usize,
}

/// Softmax(q·kᵀ · scale + causal mask) · v, returned as [B, H, T, hd]. Query head h reads kv head h / (H / Hkv).
/// With `bf16_probabilities` (mixed precision), the probabilities enter the product with v rounded to bf16 as
/// FlashAttention's bf16 kernels round them: the unnormalized exp values, with the row sum taken before rounding and
/// divided out after the product. Both products then run on AMX tiles where [`super::amx::available`] (whose packing
/// rounds q, k and v), else as f32 products, for which the caller passes q, k and v already rounded.
pub fn causal_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttentionShape,
    scale: f32,
    bf16_probabilities: bool,
) -> Vec<f32> {
    let (t, hd) = (s.seq_len, s.head_dim);
    let per_head = t * hd;
    assert_eq!(q.len(), s.batch * s.heads * per_head);
    assert_eq!(k.len(), s.batch * s.kv_heads * per_head);
    assert_eq!(v.len(), k.len());
    let group = s.heads / s.kv_heads;
    let on_tiles = bf16_probabilities && super::amx::available();
    // On tiles, each kv head's keys and values are packed once for the query heads that share them.
    let packed: Vec<(super::amx::PackedB, super::amx::PackedB)> = if on_tiles {
        (0..s.batch * s.kv_heads)
            .into_par_iter()
            .map(|kv| {
                let span = kv * per_head..(kv + 1) * per_head;
                (
                    super::amx::PackedB::from_nk(&k[span.clone()], t, hd),
                    super::amx::PackedB::from_kn(&v[span], t, hd),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    // Every head's rows are written in full below (each query block's product writes all of its rows × hd) before
    // the vector is read.
    let mut out = super::buffers::uninit_vec::<f32>(q.len());
    out.par_chunks_mut(per_head)
        .enumerate()
        .for_each(|(bh, out_head)| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let kv = b * s.kv_heads + h / group;
            let q_head = &q[bh * per_head..(bh + 1) * per_head];
            let k_head = &k[kv * per_head..(kv + 1) * per_head];
            let v_head = &v[kv * per_head..(kv + 1) * per_head];
            if on_tiles {
                let (keys, values) = &packed[kv];
                amx_head(q_head, keys, values, out_head, t, hd, scale);
                return;
            }
            let mut scores = vec![0f32; QUERY_BLOCK * t];
            for qs in (0..t).step_by(QUERY_BLOCK) {
                let qe = (qs + QUERY_BLOCK).min(t);
                let (m, keys) = (qe - qs, qe);
                let sc = &mut scores[..m * keys];
                // scores[m × keys] = Q[qs..qe] · K[0..keys]ᵀ
                product_rows(
                    Strided::new(&q_head[qs * hd..], m, hd, hd, 1),
                    Strided::new(k_head, hd, keys, 1, hd),
                    sc,
                    false,
                );
                let mut inv_sums = [0f32; QUERY_BLOCK];
                for r in 0..m {
                    let row = &mut sc[r * keys..(r + 1) * keys];
                    let (valid, masked) = row.split_at_mut(qs + r + 1);
                    inv_sums[r] = 1.0 / exp_scaled_shifted(valid, scale);
                    if bf16_probabilities {
                        round_to_bf16(valid);
                    }
                    masked.fill(0.0);
                }
                // out[qs..qe] = P[m × keys] · V[0..keys]
                product_rows(
                    Strided::new(sc, m, keys, keys, 1),
                    Strided::new(v_head, keys, hd, hd, 1),
                    &mut out_head[qs * hd..qe * hd],
                    false,
                );
                // Normalize after the product: m × hd divisions' worth instead of m × keys.
                for (r, row) in out_head[qs * hd..qe * hd].chunks_exact_mut(hd).enumerate() {
                    row.iter_mut().for_each(|x| *x *= inv_sums[r]);
                }
            }
        });
    out
}

/// One head of [`causal_attention`] with `bf16_probabilities` on AMX tiles: both products read bf16 operands (the
/// packing rounds q, the keys, the probabilities and the values, to nearest-even), accumulate in f32; the softmax
/// is f32 and its row sums are taken before the probabilities are rounded, as in the f32-product path.
fn amx_head(
    q_head: &[f32],
    keys_packed: &super::amx::PackedB,
    values_packed: &super::amx::PackedB,
    out_head: &mut [f32],
    t: usize,
    hd: usize,
    scale: f32,
) {
    use super::amx::{PackedA, matmul_packed, matmul_prepacked};
    let mut scores = vec![0f32; QUERY_BLOCK * t];
    let mut probabilities = PackedA::zeroed(QUERY_BLOCK, t);
    for qs in (0..t).step_by(QUERY_BLOCK) {
        let qe = (qs + QUERY_BLOCK).min(t);
        let (m, keys) = (qe - qs, qe);
        let sc = &mut scores[..m * keys];
        matmul_packed(&q_head[qs * hd..], hd, m, hd, keys_packed, keys, sc, keys);
        let mut inv_sums = [0f32; QUERY_BLOCK];
        // The probabilities go straight into A's bf16 tile layout: exp values (f32, summed before rounding) rounded
        // as they are written; keys after the query's own (masked) and the padding stay zero.
        probabilities.reshape(m, keys);
        for r in 0..m {
            let valid = &sc[r * keys..r * keys + qs + r + 1];
            let row = probabilities.row_mut(r);
            let (written, masked) = row.split_at_mut(valid.len());
            inv_sums[r] = 1.0 / exp_scaled_shifted_to_bf16(valid, scale, written);
            masked.fill(0);
        }
        let out = &mut out_head[qs * hd..qe * hd];
        matmul_prepacked(&probabilities, values_packed, hd, out, hd);
        for (r, row) in out.chunks_exact_mut(hd).enumerate() {
            row.iter_mut().for_each(|x| *x *= inv_sums[r]);
        }
    }
}

/// In place: every value rounded to the nearest bf16 (ties to even), kept as f32 (compiled for AVX-512 where the
/// CPU has it: the same integer arithmetic, so the same bits).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2"))]
pub fn round_to_bf16(values: &mut [f32]) {
    for x in values {
        *x = super::amx::bf16_rounded(*x);
    }
}

/// In place: row ← exp(row · scale − max); returns Σ row (the softmax denominator).
pub fn exp_scaled_shifted(row: &mut [f32], scale: f32) -> f32 {
    exp_scaled_shifted_with_max(row, scale).1
}

/// [`exp_scaled_shifted`], also returning the max it subtracted (of the scaled row): (max, Σ row).
/// [`exp_scaled_minus`] with that max recomputes the same values.
pub fn exp_scaled_shifted_with_max(row: &mut [f32], scale: f32) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time.
            return unsafe { exp_scaled_shifted_avx512(row, scale) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected at run time.
            return unsafe { exp_scaled_shifted_avx2(row, scale) };
        }
    }
    exp_scaled_shifted_portable(row, scale)
}

/// # Safety
/// The CPU has AVX-512F, FMA (the caller detected them at run time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn exp_scaled_shifted_avx512(row: &mut [f32], scale: f32) -> (f32, f32) {
    exp_scaled_shifted_portable(row, scale)
}

/// # Safety
/// The CPU has AVX2, FMA (the caller detected them at run time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_scaled_shifted_avx2(row: &mut [f32], scale: f32) -> (f32, f32) {
    exp_scaled_shifted_portable(row, scale)
}

/// In place: row ← exp(row · scale − max) · factor, each exp the one [`exp_scaled_shifted_with_max`] computes for
/// the same score and max (so a softmax row is recomputed bit for bit from its max and 1/Σ).
pub fn exp_scaled_minus(row: &mut [f32], scale: f32, max: f32, factor: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time.
            return unsafe { exp_scaled_minus_avx512(row, scale, max, factor) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected at run time.
            return unsafe { exp_scaled_minus_avx2(row, scale, max, factor) };
        }
    }
    exp_scaled_minus_portable(row, scale, max, factor)
}

/// # Safety
/// The CPU has AVX-512F, FMA (the caller detected them at run time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn exp_scaled_minus_avx512(row: &mut [f32], scale: f32, max: f32, factor: f32) {
    exp_scaled_minus_portable(row, scale, max, factor)
}

/// # Safety
/// The CPU has AVX2, FMA (the caller detected them at run time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_scaled_minus_avx2(row: &mut [f32], scale: f32, max: f32, factor: f32) {
    exp_scaled_minus_portable(row, scale, max, factor)
}

#[inline(always)]
fn exp_scaled_minus_portable(row: &mut [f32], scale: f32, max: f32, factor: f32) {
    for x in row.iter_mut() {
        *x = exp_f32(*x * scale - max) * factor;
    }
}

/// [`exp_scaled_shifted`] of `row` written as bf16 bits into `out` (round-to-nearest-even of the same f32 values);
/// returns the f32 sum of the unrounded values.
pub fn exp_scaled_shifted_to_bf16(row: &[f32], scale: f32, out: &mut [u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time.
            return unsafe { exp_scaled_shifted_to_bf16_avx512(row, scale, out) };
        }
    }
    exp_scaled_shifted_to_bf16_portable(row, scale, out)
}

/// # Safety
/// The CPU has AVX-512F, AVX-512BW, FMA (the caller detected them at run time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,fma")]
unsafe fn exp_scaled_shifted_to_bf16_avx512(row: &[f32], scale: f32, out: &mut [u16]) -> f32 {
    exp_scaled_shifted_to_bf16_portable(row, scale, out)
}

#[inline(always)]
fn exp_scaled_shifted_to_bf16_portable(row: &[f32], scale: f32, out: &mut [u16]) -> f32 {
    assert_eq!(row.len(), out.len());
    let (chunks, rest) = row.as_chunks::<LANES>();
    let mut maxv = [f32::NEG_INFINITY; LANES];
    for c in chunks {
        for l in 0..LANES {
            let x = c[l] * scale;
            maxv[l] = if x > maxv[l] { x } else { maxv[l] };
        }
    }
    let mut max = maxv.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in rest {
        max = max.max(x * scale);
    }
    let (out_chunks, out_rest) = out.as_chunks_mut::<LANES>();
    let mut sumv = [0f32; LANES];
    for (c, o) in chunks.iter().zip(out_chunks.iter_mut()) {
        for l in 0..LANES {
            let e = exp_f32(c[l] * scale - max);
            sumv[l] += e;
            o[l] = super::amx::bf16_bits(e);
        }
    }
    let mut sum: f32 = sumv.iter().sum();
    for (x, o) in rest.iter().zip(out_rest.iter_mut()) {
        let e = exp_f32(x * scale - max);
        sum += e;
        *o = super::amx::bf16_bits(e);
    }
    sum
}

/// Lanes of the element-wise loops: written over fixed-size arrays so the compiler vectorizes them (an f32 sum in
/// one accumulator cannot be reordered, so it would stay scalar).
const LANES: usize = 16;

#[inline(always)]
fn exp_scaled_shifted_portable(row: &mut [f32], scale: f32) -> (f32, f32) {
    let (chunks, rest) = row.as_chunks_mut::<LANES>();
    let mut maxv = [f32::NEG_INFINITY; LANES];
    for c in chunks.iter_mut() {
        for l in 0..LANES {
            c[l] *= scale;
            maxv[l] = if c[l] > maxv[l] { c[l] } else { maxv[l] };
        }
    }
    let mut max = maxv.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in rest.iter_mut() {
        *x *= scale;
        max = max.max(*x);
    }
    let mut sumv = [0f32; LANES];
    for c in chunks.iter_mut() {
        for l in 0..LANES {
            c[l] = exp_f32(c[l] - max);
            sumv[l] += c[l];
        }
    }
    let mut sum: f32 = sumv.iter().sum();
    for x in rest.iter_mut() {
        *x = exp_f32(*x - max);
        sum += *x;
    }
    (max, sum)
}

/// exp(x) for x ≤ 0 (softmax arguments), branch-free so it vectorizes: x = n·ln2 + r with |r| ≤ ln2/2, exp(r) by
/// its Taylor series to degree 7 (relative error < 3e-9, below f32 rounding) in Horner form with fused
/// multiply-adds (one instruction and one rounding per step where the CPU has FMA; the same correctly rounded
/// `fma` elsewhere), 2^n assembled in the exponent bits. Arguments below −87.3 (where exp underflows f32's normal
/// range) give 0.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting rounds to the nearest integer
    let underflow = x < -87.3;
    let x = x.clamp(-87.3, 0.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0f32;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p.mul_add(r, c);
    }
    // n ∈ [−126, 0] is the integer in `shifted`'s low mantissa bits (1.5·2^23 + n, exact): its bits minus ROUND's
    // are n itself. Integer arithmetic on the bits vectorizes; `n as i32` (saturating) would not.
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    if underflow { 0.0 } else { p * scale }
}

/// The causal softmax of attention scores `[.., T, T]` (f32, CPU) as one differentiable operation: row `q` is the
/// softmax of its first `q + 1` entries, zeros after them. The backward is `p ⊙ (g − Σ g ⊙ p)` per row, one pass
/// instead of the dozen a masked composition of candle operations records.
pub fn causal_softmax(scores: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    scores.contiguous()?.apply_op1(CausalSoftmax)
}

struct CausalSoftmax;

struct CausalSoftmaxBackward;

fn rows_of<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<(&'a [f32], usize)> {
    let t = *layout.dims().last().unwrap_or(&0);
    if layout.dims().len() < 2 || layout.dims()[layout.dims().len() - 2] != t {
        candle_core::bail!("{op}: expected [.., T, T] scores, got {:?}", layout.dims())
    }
    Ok((super::buffers::contiguous::<f32>(storage, layout, op)?, t))
}

impl candle_core::CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (x, t) = rows_of(storage, layout, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(t)
            .zip(x.par_chunks(t))
            .enumerate()
            .for_each(|(r, (o, row))| {
                let q = r % t;
                let max = row[..=q].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (o, &v) in o[..=q].iter_mut().zip(&row[..=q]) {
                    *o = (v - max).exp();
                    sum += *o;
                }
                let inv = 1.0 / sum;
                o[..=q].iter_mut().for_each(|v| *v *= inv);
            });
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &candle_core::Tensor,
        res: &candle_core::Tensor,
        grad_res: &candle_core::Tensor,
    ) -> candle_core::Result<Option<candle_core::Tensor>> {
        Ok(Some(res.contiguous()?.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &CausalSoftmaxBackward,
        )?))
    }
}

impl candle_core::CustomOp2 for CausalSoftmaxBackward {
    fn name(&self) -> &'static str {
        "causal-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        p_storage: &candle_core::CpuStorage,
        p_layout: &candle_core::Layout,
        g_storage: &candle_core::CpuStorage,
        g_layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (p, t) = rows_of(p_storage, p_layout, self.name())?;
        let (g, _) = rows_of(g_storage, g_layout, self.name())?;
        let mut out = vec![0f32; p.len()];
        out.par_chunks_mut(t)
            .zip(p.par_chunks(t).zip(g.par_chunks(t)))
            .enumerate()
            .for_each(|(r, (o, (p, g)))| {
                let q = r % t;
                let dot: f32 = p[..=q].iter().zip(&g[..=q]).map(|(a, b)| a * b).sum();
                for ((o, &p), &g) in o[..=q].iter_mut().zip(&p[..=q]).zip(&g[..=q]) {
                    *o = p * (g - dot);
                }
            });
        Ok((candle_core::CpuStorage::F32(out), p_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bf16_softmax_rows_are_the_f32_ones_rounded() {
        for len in [1usize, 15, 16, 17, 100, 1024] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let mut f32_row = row.clone();
            let sum = exp_scaled_shifted(&mut f32_row, 0.125);
            let mut bits = vec![0u16; len];
            let bf16_sum = exp_scaled_shifted_to_bf16(&row, 0.125, &mut bits);
            assert_eq!(bf16_sum, sum, "{len}");
            let rounded: Vec<u16> = f32_row
                .iter()
                .map(|&x| super::super::amx::bf16_bits(x))
                .collect();
            assert_eq!(bits, rounded, "{len}");
        }
    }

    #[test]
    fn exp_matches_libm_to_a_few_ulp() {
        let mut worst = 0f32;
        for i in 0..200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (a, b) = (exp_f32(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-100.0), 0.0);
    }

    /// The same attention, written out naively in f64.
    fn naive(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape, scale: f32) -> Vec<f32> {
        let (t, hd) = (s.seq_len, s.head_dim);
        let mut out = vec![0f32; q.len()];
        for b in 0..s.batch {
            for h in 0..s.heads {
                let kv = b * s.kv_heads + h / (s.heads / s.kv_heads);
                let qh = (b * s.heads + h) * t * hd;
                for i in 0..t {
                    let sc: Vec<f64> = (0..=i)
                        .map(|j| {
                            (0..hd)
                                .map(|d| {
                                    q[qh + i * hd + d] as f64 * k[kv * t * hd + j * hd + d] as f64
                                })
                                .sum::<f64>()
                                * scale as f64
                        })
                        .collect();
                    let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                    for d in 0..hd {
                        out[qh + i * hd + d] = sc
                            .iter()
                            .enumerate()
                            .map(|(j, x)| (x - m).exp() / z * v[kv * t * hd + j * hd + d] as f64)
                            .sum::<f64>() as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn blocked_attention_matches_the_naive_definition() {
        let s = AttentionShape {
            batch: 2,
            heads: 4,
            kv_heads: 2,
            seq_len: 150,
            head_dim: 16,
        };
        let mut seed = 12345u64;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                })
                .collect()
        };
        let q = rnd(2 * 4 * 150 * 16);
        let k = rnd(2 * 2 * 150 * 16);
        let v = rnd(2 * 2 * 150 * 16);
        let fast = causal_attention(&q, &k, &v, s, 0.25, false);
        let slow = naive(&q, &k, &v, s, 0.25);
        let worst = fast
            .iter()
            .zip(&slow)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 2e-6, "max |Δ| {worst}");
    }
}
