//! The soft-capped cross-entropy of the reference's `GPT.forward(x, y)` as one differentiable operation:
//! `c = cap·tanh(z/cap)`, `loss = logsumexp(c) − c[target]` per row, and the backward
//! `∂loss/∂z = (softmax(c) − onehot(target)) · (1 − tanh²(z/cap))` in one pass over the logits, instead of the
//! dozen passes (and [N, V] temporaries) a composition of candle operations records. CPU, f32.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::attention::{exp_f32, exp_scaled_shifted};
use std::sync::Mutex;

use super::buffers::{contiguous, uninit_vec, with_f32};
use super::fused::linear_f32;
use super::ops::linear_backward;

/// Per-row losses [N] (f32) of uncapped logits [.., V] (f32; N rows over the leading dimensions) against targets
/// [N] (u32).
pub fn capped_cross_entropy_rows(
    logits: &Tensor,
    targets: &Tensor,
    cap: f32,
) -> candle_core::Result<Tensor> {
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CappedCrossEntropy { cap })
}

#[derive(Clone, Copy)]
struct CappedCrossEntropy {
    cap: f32,
}

struct CappedCrossEntropyBackward {
    cap: f32,
}

/// Rows of [.., V] logits (the leading dimensions flattened) and V.
fn rows<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<(&'a [f32], usize)> {
    let Some(&v) = l.dims().last() else {
        candle_core::bail!("{what}: logits need a vocabulary dimension")
    };
    Ok((contiguous::<f32>(s, l, what)?, v))
}

/// tanh(y) in f32, branch-free so it vectorizes: `sign(y)·(1 − e)/(1 + e)` with `e = exp(−2|y|)` (the quotient in
/// f64), and for |y| < 0.55 (where 1 − e would lose bits to cancellation) the odd Taylor series to y¹⁹ written as
/// `y + y³·P(y²)`, with P's leading −1/3 split into two f32 (its rounding would otherwise bias every value the same
/// way). Correctly rounded for 93–100% of arguments, within 0.9 ulp (test), as PyTorch's CPU `tanh` is (measured:
/// 98–100% correctly rounded, within 0.57 ulp); glibc's `tanhf` is within 2.1 ulp.
#[inline(always)]
pub fn tanh_f32(y: f32) -> f32 {
    // P(u) = −1/3 + 2/15·u − 17/315·u² + 62/2835·u³ − 1382/155925·u⁴ + 21844/6081075·u⁵ − 929569/638512875·u⁶
    //        + 6404582/10854718875·u⁷ − 443861162/1856156927625·u⁸.
    const SERIES: [f32; 8] = [
        0.133_333_33,
        -0.053_968_254,
        0.021_869_488,
        -0.008_863_236,
        0.003_592_128_7,
        -0.001_455_834_4,
        0.000_590_027_4,
        -0.000_239_129_1,
    ];
    const THIRD_HI: f32 = -0.333_333_34;
    const THIRD_LO: f32 = 9.934_108e-9; // −1/3 − THIRD_HI
    let a = y.abs();
    // 1 − e and 1 + e and their quotient in f64, so that only e's own error (under 1 ulp of e) remains.
    let e = exp_f32(-2.0 * a) as f64;
    let big = ((1.0 - e) / (1.0 + e)) as f32;
    let u = a * a;
    let mut tail = SERIES[7];
    for c in SERIES[..7].iter().rev() {
        tail = tail.mul_add(u, *c);
    }
    let p = THIRD_HI + tail.mul_add(u, THIRD_LO);
    let small = (a * u).mul_add(p, a);
    let t = if a < 0.55 { small } else { big };
    t.copysign(y)
}

/// `cap · tanh(z / cap)` over a row of logits (the records' soft-cap), value for value as the scalar form computes
/// it; compiled for AVX-512 and AVX2 with FMA (chosen at run time), where the loop vectorizes. `mul_add` rounds once
/// on every target (the instruction or the correctly rounded library call), so all targets agree.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+fma", "x86_64+avx2+fma"))]
pub fn softcap_values(cap: f32, z: &[f32], out: &mut [f32]) {
    for (o, &z) in out.iter_mut().zip(z) {
        *o = cap * tanh_f32(z / cap);
    }
}

/// `e ← exp(cap·tanh(z/cap) − max)` for a row z (copied into `e`, then [`capped_exp_in_place`]); `th` receives
/// tanh(z/cap). Returns Σ over the row.
fn capped_exp_row(z: &[f32], cap: f32, th: &mut Vec<f32>, e: &mut Vec<f32>) -> f32 {
    th.resize(z.len(), 0.0);
    e.clear();
    e.extend_from_slice(z);
    capped_exp_in_place(e, cap, th)
}

/// `d ← g·(p·inv)·(1 − th²)`: a row of the backward before the target's own term.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+fma", "x86_64+avx2+fma"))]
fn capped_softmax_gradient(d: &mut [f32], g: f32, e: &[f32], inv: f32, th: &[f32]) {
    for ((d, &p), &t) in d.iter_mut().zip(e).zip(th) {
        *d = g * (p * inv) * (1.0 - t * t);
    }
}

/// Per-row losses [N] of the soft-capped logits `hidden · Wᵀ` against targets [N] (u32), for hidden [.., d] (N rows
/// over the leading dimensions) and the head W [V, d] (f32, CPU), as one differentiable node: the head's product
/// and [`capped_cross_entropy_rows`] with the logits [N, V] never a graph tensor (candle would accumulate their
/// gradient into a zero-filled buffer). The forward keeps each row's tanh and exp values and sum; the backward
/// writes ∂logits row by row from them and goes straight into the head's two products. Arithmetic, values and
/// gradients are those of the head's [`super::ops::linear`] followed by [`capped_cross_entropy_rows`].
pub fn capped_head_losses(
    hidden: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    cap: f32,
) -> candle_core::Result<Tensor> {
    hidden.contiguous()?.apply_op3(
        &w.contiguous()?,
        &targets.contiguous()?,
        CappedHeadLosses {
            cap,
            kept: Mutex::new(None),
        },
    )
}

struct CappedHeadLosses {
    cap: f32,
    kept: Mutex<Option<KeptRows>>,
}

/// The forward's per-row values the backward needs: tanh(z/cap) and exp(c − max) [N, V], and each row's Σ.
struct KeptRows {
    th: Vec<f32>,
    e: Vec<f32>,
    sums: Vec<f32>,
}

impl CustomOp3 for CappedHeadLosses {
    fn name(&self) -> &'static str {
        "capped-head-losses"
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
        let (hidden, d) = rows(s1, l1, self.name())?;
        let w = contiguous::<f32>(s2, l2, self.name())?;
        let t = contiguous::<u32>(s3, l3, self.name())?;
        let (v, wd) = l2.shape().dims2()?;
        let n = hidden.len() / d.max(1);
        if wd != d || t.len() != n || v == 0 {
            candle_core::bail!(
                "capped head losses: hidden {:?}, head {:?}, {} targets",
                l1.dims(),
                l2.dims(),
                t.len()
            )
        }
        if let Some(&bad) = t.iter().find(|&&t| t as usize >= v) {
            candle_core::bail!("capped head losses: target {bad} outside the vocabulary of {v}")
        }
        // The logits become the exp values in place; their tanh goes beside them.
        let mut e = linear_f32(hidden, w, n, v, d);
        let mut th = uninit_vec(n * v);
        let (losses, sums): (Vec<f32>, Vec<f32>) = e
            .par_chunks_mut(v)
            .zip(th.par_chunks_mut(v))
            .zip(t.par_iter())
            .map(|((e, th), &target)| {
                let sum = capped_exp_in_place(e, self.cap, th);
                (sum.ln() - e[target as usize].ln(), sum)
            })
            .unzip();
        *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(KeptRows { th, e, sums });
        Ok((CpuStorage::F32(losses), Shape::from(n)))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        w: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(kept) = self.kept.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            candle_core::bail!("capped head losses: backward without its forward's rows")
        };
        let (v, d) = w.dims2()?;
        let n = kept.sums.len();
        let t = targets.flatten_all()?.to_vec1::<u32>()?;
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let mut dz = uninit_vec(n * v);
        dz.par_chunks_mut(v)
            .zip(kept.e.par_chunks(v).zip(kept.th.par_chunks(v)))
            .zip(kept.sums.par_iter().zip(t.par_iter().zip(g.par_iter())))
            .for_each(|((d, (e, th)), (&sum, (&target, &g)))| {
                capped_row_gradient(d, g, e, 1.0 / sum, th, target as usize)
            });
        drop(kept);
        let (dh, dw) = with_f32(hidden, |x| {
            with_f32(w, |w| Ok(linear_backward(x, w, &dz, n, d, v)))
        })?;
        Ok((
            Some(Tensor::from_vec(dh, hidden.shape(), hidden.device())?),
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
            None,
        ))
    }
}

/// One row of ∂z: `g·(p·inv)·(1 − th²)`, less `g·(1 − th[target]²)` at the target.
fn capped_row_gradient(d: &mut [f32], g: f32, e: &[f32], inv: f32, th: &[f32], target: usize) {
    capped_softmax_gradient(d, g, e, inv, th);
    let t = th[target];
    d[target] -= g * (1.0 - t * t);
}

/// In place: a row of logits `z → exp(cap·tanh(z/cap) − max)`; `th` receives tanh(z/cap). Returns Σ over the row.
fn capped_exp_in_place(z: &mut [f32], cap: f32, th: &mut [f32]) -> f32 {
    tanh_and_capped_in_place(cap, z, th);
    exp_scaled_shifted(z, 1.0)
}

/// `th ← tanh(z/cap)`, `z ← cap·th` (the soft-cap of [`softcap_values`], keeping the tanh for the backward),
/// compiled as [`softcap_values`] is: without FMA in the target, each `mul_add` would be a library call.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+fma", "x86_64+avx2+fma"))]
fn tanh_and_capped_in_place(cap: f32, z: &mut [f32], th: &mut [f32]) {
    for (t, z) in th.iter_mut().zip(z.iter_mut()) {
        *t = tanh_f32(*z / cap);
        *z = cap * *t;
    }
}

impl CustomOp2 for CappedCrossEntropy {
    fn name(&self) -> &'static str {
        "capped-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (z, v) = rows(s1, l1, self.name())?;
        let t = contiguous::<u32>(s2, l2, self.name())?;
        let n = z.len() / v.max(1);
        if t.len() != n {
            candle_core::bail!("capped cross-entropy: {} targets for {n} rows", t.len())
        }
        let loss: Vec<f32> = z
            .par_chunks(v)
            .zip(t.par_iter())
            .map_init(
                || (Vec::new(), Vec::new()),
                |(th, e), (row, &target)| {
                    // −log p(target) = log Σ exp(c − max) − (c_target − max); capped logits lie in ±cap, so no
                    // term underflows.
                    let sum = capped_exp_row(row, self.cap, th, e);
                    sum.ln() - e[target as usize].ln()
                },
            )
            .collect();
        Ok((CpuStorage::F32(loss), Shape::from(n)))
    }

    fn bwd(
        &self,
        z: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dz = z.apply_op3_no_bwd(
            targets,
            &grad.contiguous()?,
            &CappedCrossEntropyBackward { cap: self.cap },
        )?;
        Ok((Some(dz), None))
    }
}

impl CustomOp3 for CappedCrossEntropyBackward {
    fn name(&self) -> &'static str {
        "capped-cross-entropy-backward"
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
        let (z, v) = rows(s1, l1, self.name())?;
        let t = contiguous::<u32>(s2, l2, self.name())?;
        let g = contiguous::<f32>(s3, l3, self.name())?;
        let mut dz = uninit_vec(z.len());
        dz.par_chunks_mut(v)
            .zip(z.par_chunks(v))
            .zip(t.par_iter().zip(g.par_iter()))
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(th, e), ((d, row), (&target, &g))| {
                    let inv = 1.0 / capped_exp_row(row, self.cap, th, e);
                    capped_row_gradient(d, g, e, inv, th, target as usize);
                },
            );
        Ok((CpuStorage::F32(dz), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ops::tests::{assert_same_node, max_abs_diff};
    use candle_core::Device;

    #[test]
    fn tanh_matches_libm() {
        // Within 0.9 ulp of the exact tanh (f64) over [−10, 10], densely, and near the branch point; below 0.55
        // within 0.75.
        let mut worst_ulps = 0f64;
        for i in -400_000..=400_000 {
            for y in [i as f32 * 2.5e-5, 0.55 + i as f32 * 1e-9] {
                let (a, b) = (tanh_f32(y) as f64, (y as f64).tanh());
                let ulp = ((b as f32).abs().to_bits() + 1) as f64;
                let ulp = f32::from_bits(ulp as u32) as f64 - (b as f32).abs() as f64;
                if b != 0.0 {
                    let err = (a - b).abs() / ulp;
                    worst_ulps = worst_ulps.max(err);
                    assert!(y.abs() >= 0.55 || err <= 0.75, "tanh({y}): {err} ulp");
                }
            }
        }
        assert!(worst_ulps <= 0.9, "max error {worst_ulps} ulp");
        assert_eq!(tanh_f32(0.0), 0.0);
        assert_eq!(tanh_f32(40.0), 1.0);
        assert_eq!(tanh_f32(-40.0), -1.0);
    }

    /// The head-and-loss node against the head's linear node followed by the capped cross-entropy node: losses and
    /// the gradients of the hidden states and of the head, bit for bit.
    #[test]
    fn head_losses_are_the_two_nodes_bit_for_bit() {
        let dev = Device::Cpu;
        let (b, t, d, v) = (3, 7, 16, 50);
        let hidden = candle_core::Var::randn(0f32, 1.0, (b, t, d), &dev).unwrap();
        let w = candle_core::Var::randn(0f32, 0.5, (v, d), &dev).unwrap();
        let targets = Tensor::new(
            (0..(b * t) as u32)
                .map(|i| i * 7 % v as u32)
                .collect::<Vec<_>>(),
            &dev,
        )
        .unwrap();
        let g = Tensor::randn(0f32, 1.0, b * t, &dev).unwrap();
        let ours = capped_head_losses(hidden.as_tensor(), w.as_tensor(), &targets, 12.0).unwrap();
        let z = crate::kernels::ops::linear(hidden.as_tensor(), w.as_tensor()).unwrap();
        let theirs = capped_cross_entropy_rows(&z, &targets, 12.0).unwrap();
        assert_same_node(
            &ours,
            &theirs,
            &g,
            &[("hidden", &hidden), ("W", &w)],
            "head losses",
        );
        let bad = Tensor::new(&[v as u32], &dev).unwrap();
        let one = hidden
            .as_tensor()
            .narrow(1, 0, 1)
            .unwrap()
            .narrow(0, 0, 1)
            .unwrap();
        let err = capped_head_losses(&one, w.as_tensor(), &bad, 12.0).unwrap_err();
        assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    }

    #[test]
    fn loss_and_gradient_match_the_composition() {
        let dev = Device::Cpu;
        let z = Tensor::randn(0f32, 8.0, (6, 50), &dev).unwrap();
        let t = Tensor::new(&[3u32, 0, 49, 7, 7, 20], &dev).unwrap();
        let cap = 12.0f32;
        let var = candle_core::Var::from_tensor(&z).unwrap();
        let ours = capped_cross_entropy_rows(var.as_tensor(), &t, cap).unwrap();
        let g1 = ours.sum_all().unwrap().backward().unwrap();
        let c = ((var.as_tensor() / cap as f64).unwrap().tanh().unwrap() * cap as f64).unwrap();
        let lse = candle_nn::ops::log_softmax(&c, 1).unwrap();
        let theirs = lse
            .gather(&t.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap();
        let g2 = theirs.sum_all().unwrap().backward().unwrap();
        let d = max_abs_diff(&ours, &theirs);
        assert!(d < 1e-5, "loss differs by {d}");
        let (a, b) = (
            g1.get(var.as_tensor()).unwrap(),
            g2.get(var.as_tensor()).unwrap(),
        );
        let d = max_abs_diff(a, b);
        assert!(d < 1e-5, "gradient differs by {d}");
    }
}
