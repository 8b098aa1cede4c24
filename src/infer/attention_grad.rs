//! Causal grouped-query attention (CPU, f32) as one differentiable operation, for passes that take gradients:
//! `y = softmax(q·kᵀ · scale + causal mask) · v` with a hand-written backward. The candle composition it replaces
//! records a dozen nodes per layer (the kv heads expanded, the T×T scores, their scaling, the softmax, two batched
//! products), each of whose T×T gradients candle accumulates into a zero-filled buffer, and runs its batched
//! products one (batch, head) after the other, each split over the threads. Here every (batch, head) is one task:
//! three small products and the softmax forward, five products and the softmax's backward, on one thread each.
//!
//! The arithmetic is the composition's, step for step: the same `gemm` calls for every product (operands and
//! strides as candle passes them), the scores scaled after the product, each row's softmax over its causal prefix
//! with the same scalar `exp` and sequential sum as [`super::attention::causal_softmax`], its backward
//! `p ⊙ (g − Σ g ⊙ p)`, and the kv heads' gradients summed over their query heads in head order. Values and
//! gradients agree with the composition bit for bit (test).

use std::mem::MaybeUninit;
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused::{Strided, filled, product_into};
use super::ops::{contiguous, with_f32};

/// `softmax(q·kᵀ · scale + causal mask) · v` for q [B, H, T, hd] and k, v [B, Hkv, T, hd] (f32, CPU; Hkv divides
/// H, query head h reads kv head h / (H / Hkv)): [B, H, T, hd], differentiable with respect to q, k and v.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        CausalAttention {
            // As candle's affine converts its multiplier.
            scale: scale as f32,
            probabilities: Mutex::new(None),
        },
    )
}

/// The operation; the forward's probabilities [B, H, T, T] are kept for the backward (the composition keeps the
/// scores, the scaled scores and the probabilities alive for it).
struct CausalAttention {
    scale: f32,
    probabilities: Mutex<Option<Vec<f32>>>,
}

/// The dimensions of one call.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    t: usize,
    hd: usize,
}

impl Dims {
    fn of(q: &Layout, k: &Layout, v: &Layout) -> candle_core::Result<Self> {
        let (batch, heads, t, hd) = q.shape().dims4()?;
        let (kb, kv_heads, kt, khd) = k.shape().dims4()?;
        if (kb, kt, khd) != (batch, t, hd)
            || v.dims() != k.dims()
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
        })
    }

    /// Where query head (b, h)'s kv head starts in k and v.
    fn kv_offset(&self, bh: usize) -> usize {
        let (b, h) = (bh / self.heads, bh % self.heads);
        (b * self.kv_heads + h / (self.heads / self.kv_heads)) * self.t * self.hd
    }
}

/// One row of the causal softmax in place: entries 0..=q soft-maxed, the rest zero
/// ([`super::attention::causal_softmax`]'s arithmetic).
fn softmax_causal_row(row: &mut [f32], q: usize) {
    let max = row[..=q].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row[..=q].iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row[..=q].iter_mut().for_each(|v| *v *= inv);
    row[q + 1..].fill(0.0);
}

/// # Safety
/// Every element of `s` was written.
unsafe fn assume_init(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: the caller guarantees every element was written; MaybeUninit<f32> has f32's layout.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
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
        let d = Dims::of(l1, l2, l3)?;
        let q = contiguous::<f32>(s1, l1, self.name())?;
        let k = contiguous::<f32>(s2, l2, self.name())?;
        let v = contiguous::<f32>(s3, l3, self.name())?;
        let (t, hd) = (d.t, d.hd);
        let mut probabilities = Vec::with_capacity(d.batch * d.heads * t * t);
        let y = filled(d.batch * d.heads * t * hd, |y| {
            y.par_chunks_mut(t * hd)
                .zip(probabilities.spare_capacity_mut().par_chunks_mut(t * t))
                .enumerate()
                .for_each(|(bh, (y, p))| {
                    let qh = &q[bh * t * hd..(bh + 1) * t * hd];
                    let kv = d.kv_offset(bh);
                    let (kh, vh) = (&k[kv..kv + t * hd], &v[kv..kv + t * hd]);
                    // Scores q·kᵀ (kᵀ as candle's transposed view: rows 1 apart, columns hd apart).
                    product_into(
                        Strided::new(qh, t, hd, hd, 1),
                        Strided::new(kh, hd, t, 1, hd),
                        false,
                        false,
                        p,
                    );
                    // SAFETY: the product wrote all T×T scores.
                    let p = unsafe { assume_init(p) };
                    for (row, scores) in p.chunks_exact_mut(t).enumerate() {
                        // candle's affine: x · mul + add, add 0.
                        scores.iter_mut().for_each(|s| *s = *s * self.scale + 0.0);
                        softmax_causal_row(scores, row);
                    }
                    product_into(
                        Strided::new(p, t, t, t, 1),
                        Strided::new(vh, t, hd, hd, 1),
                        false,
                        false,
                        y,
                    );
                });
        });
        // SAFETY: every (batch, head)'s T×T probabilities were written above.
        unsafe { probabilities.set_len(d.batch * d.heads * t * t) };
        *self.probabilities.lock().unwrap_or_else(|e| e.into_inner()) = Some(probabilities);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = Dims::of(q.layout(), k.layout(), v.layout())?;
        let probabilities = self
            .probabilities
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(p) = probabilities else {
            candle_core::bail!("causal attention: backward without its forward's probabilities")
        };
        let (t, hd) = (d.t, d.hd);
        let g = grad.contiguous()?;
        let (dq, dk_heads, dv_heads) = with_f32(q, |q| {
            with_f32(k, |k| {
                with_f32(v, |v| {
                    with_f32(&g, |g| {
                        Ok(attention_backward(d, self.scale, q, k, v, &p, g))
                    })
                })
            })
        })?;
        // The kv heads' gradients: their query heads' parts summed in head order (the expand's backward).
        let group = d.heads / d.kv_heads;
        let sum_group = |parts: &[f32]| -> Vec<f32> {
            let mut out = vec![0f32; d.batch * d.kv_heads * t * hd];
            out.par_chunks_mut(t * hd).enumerate().for_each(|(bkv, o)| {
                let (b, kvh) = (bkv / d.kv_heads, bkv % d.kv_heads);
                for j in 0..group {
                    let h = kvh * group + j;
                    let part = &parts[(b * d.heads + h) * t * hd..][..t * hd];
                    o.iter_mut().zip(part).for_each(|(o, x)| *o += x);
                }
            });
            out
        };
        let (dk, dv) = (sum_group(&dk_heads), sum_group(&dv_heads));
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), q.device())?),
            Some(Tensor::from_vec(dk, k.shape(), k.device())?),
            Some(Tensor::from_vec(dv, v.shape(), v.device())?),
        ))
    }
}

/// ∂q [B, H, T, hd] and each query head's part of ∂k and ∂v ([B, H, T, hd]), one (batch, head) per task.
fn attention_backward(
    d: Dims,
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p: &[f32],
    g: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (t, hd) = (d.t, d.hd);
    let n = d.batch * d.heads * t * hd;
    let (mut dq, mut dk, mut dv) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    dq.spare_capacity_mut()
        .par_chunks_mut(t * hd)
        .zip(dk.spare_capacity_mut().par_chunks_mut(t * hd))
        .zip(dv.spare_capacity_mut().par_chunks_mut(t * hd))
        .enumerate()
        .for_each(|(bh, ((dq, dk), dv))| {
            let head = bh * t * hd..(bh + 1) * t * hd;
            let (qh, gh) = (&q[head.clone()], &g[head]);
            let kv = d.kv_offset(bh);
            let (kh, vh) = (&k[kv..kv + t * hd], &v[kv..kv + t * hd]);
            let ph = &p[bh * t * t..(bh + 1) * t * t];
            // y = p·v: ∂p = g·vᵀ, ∂v = pᵀ·g.
            let mut ds = Vec::with_capacity(t * t);
            product_into(
                Strided::new(gh, t, hd, hd, 1),
                Strided::new(vh, hd, t, 1, hd),
                false,
                false,
                &mut ds.spare_capacity_mut()[..t * t],
            );
            // SAFETY: the product wrote all T×T values.
            unsafe { ds.set_len(t * t) };
            product_into(
                Strided::new(ph, t, t, 1, t),
                Strided::new(gh, t, hd, hd, 1),
                false,
                false,
                dv,
            );
            // The softmax's backward, row by row over the causal prefix (zeros after it), then the scale's.
            for (row, (dsr, pr)) in ds.chunks_exact_mut(t).zip(ph.chunks_exact(t)).enumerate() {
                let dot: f32 = pr[..=row]
                    .iter()
                    .zip(&dsr[..=row])
                    .map(|(a, b)| a * b)
                    .sum();
                for (o, &p) in dsr[..=row].iter_mut().zip(&pr[..=row]) {
                    *o = p * (*o - dot);
                }
                dsr[row + 1..].fill(0.0);
                dsr.iter_mut().for_each(|x| *x = *x * scale + 0.0);
            }
            // scores = q·kᵀ: ∂q = ∂s·k, ∂k = (qᵀ·∂s)ᵀ (stored transposed).
            product_into(
                Strided::new(&ds, t, t, t, 1),
                Strided::new(kh, t, hd, hd, 1),
                false,
                false,
                dq,
            );
            product_into(
                Strided::new(qh, hd, t, 1, hd),
                Strided::new(&ds, t, t, t, 1),
                true,
                false,
                dk,
            );
        });
    // SAFETY: every (batch, head)'s rows were written above.
    unsafe {
        dq.set_len(n);
        dk.set_len(n);
        dv.set_len(n);
    }
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::layers::Pass;
    use crate::infer::layers::causal_probabilities;
    use crate::infer::ops::tests::assert_same_node;
    use crate::infer::precision::Precision;
    use candle_core::{Device, Var};

    /// Values and the gradients of q, k and v against the candle composition (expanded kv heads, scaled scores, the
    /// causal softmax node, batched products), bit for bit, with grouped and ungrouped heads.
    #[test]
    fn the_node_is_the_composition_bit_for_bit() {
        let dev = Device::Cpu;
        for &(b, h, hkv, t, hd) in &[
            (2, 4, 2, 37, 16),
            (1, 3, 3, 64, 8),
            (2, 6, 2, 5, 4),
            (1, 1, 1, 1, 2),
        ] {
            let q = Var::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap();
            let k = Var::randn(0f32, 1.0, (b, hkv, t, hd), &dev).unwrap();
            let v = Var::randn(0f32, 1.0, (b, hkv, t, hd), &dev).unwrap();
            let g = Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap();
            let scale = 1.0 / (hd as f64).sqrt();
            let ours =
                causal_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), scale).unwrap();
            let (p, vx) = causal_probabilities(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                Pass::Train,
                Precision::Fp32,
                true,
            )
            .unwrap();
            let theirs = p.matmul(&vx).unwrap();
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
