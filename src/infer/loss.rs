//! The soft-capped cross-entropy of the reference's `GPT.forward(x, y)` as one differentiable operation:
//! `c = cap·tanh(z/cap)`, `loss = logsumexp(c) − c[target]` per row, and the backward
//! `∂loss/∂z = (softmax(c) − onehot(target)) · (1 − tanh²(z/cap))` in one pass over the logits, instead of the
//! dozen passes (and [N, V] temporaries) a composition of candle operations records. CPU, f32.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::attention::{exp_f32, exp_scaled_shifted};
use super::ops::contiguous;

/// Per-row losses [N] (f32) of uncapped logits [N, V] (f32) against targets [N] (u32).
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

/// Rows of [N, V] logits and V.
fn rows<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<(&'a [f32], usize)> {
    let (_, v) = l.shape().dims2()?;
    Ok((contiguous::<f32>(s, l, what)?, v))
}

/// tanh(y) in f32, branch-free so it vectorizes: `sign(y)·(1 − e)/(1 + e)` with `e = exp(−2|y|)`, and for
/// |y| < 0.125 (where 1 − e cancels) the odd Taylor series to y⁹ (remainder below 1e-11 relative).
#[inline(always)]
pub fn tanh_f32(y: f32) -> f32 {
    let a = y.abs();
    let e = exp_f32(-2.0 * a);
    let big = (1.0 - e) / (1.0 + e);
    let y2 = y * y;
    let small = a
        * (1.0
            + y2 * (-1.0 / 3.0 + y2 * (2.0 / 15.0 + y2 * (-17.0 / 315.0 + y2 * (62.0 / 2835.0)))));
    let t = if a < 0.125 { small } else { big };
    t.copysign(y)
}

/// In place: `z → exp(cap·tanh(z/cap) − max)`; `th` receives tanh(z/cap). Returns Σ over the row.
fn capped_exp_row(z: &[f32], cap: f32, th: &mut Vec<f32>, e: &mut Vec<f32>) -> f32 {
    th.clear();
    th.extend(z.iter().map(|&v| tanh_f32(v / cap)));
    e.clear();
    e.extend(th.iter().map(|&t| cap * t));
    exp_scaled_shifted(e, 1.0)
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
        let mut dz = vec![0f32; z.len()];
        dz.par_chunks_mut(v)
            .zip(z.par_chunks(v))
            .zip(t.par_iter().zip(g.par_iter()))
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(th, e), ((d, row), (&target, &g))| {
                    let inv = 1.0 / capped_exp_row(row, self.cap, th, e);
                    for ((d, &p), &t) in d.iter_mut().zip(e.iter()).zip(th.iter()) {
                        *d = g * (p * inv) * (1.0 - t * t);
                    }
                    let t = th[target as usize];
                    d[target as usize] -= g * (1.0 - t * t);
                },
            );
        Ok((CpuStorage::F32(dz), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::ops::tests::max_abs_diff;
    use candle_core::Device;

    #[test]
    fn tanh_matches_libm() {
        let mut worst = 0f64;
        for i in -40_000..=40_000 {
            let y = i as f32 * 2.5e-4 * (1.0 + (i as f32).abs() * 1e-4);
            let (a, b) = (tanh_f32(y) as f64, (y as f64).tanh());
            if b != 0.0 {
                worst = worst.max(((a - b) / b).abs());
            }
        }
        assert!(worst < 1e-6, "max relative error {worst}");
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
