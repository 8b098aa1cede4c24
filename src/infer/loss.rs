//! The soft-capped cross-entropy of the reference's `GPT.forward(x, y)` as one differentiable operation:
//! `c = cap·tanh(z/cap)`, `loss = logsumexp(c) − c[target]` per row, and the backward
//! `∂loss/∂z = (softmax(c) − onehot(target)) · (1 − tanh²(z/cap))` in one pass over the logits, instead of the
//! dozen passes (and [N, V] temporaries) a composition of candle operations records. CPU, f32.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

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

fn rows<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<(&'a [f32], usize)> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: logits must be contiguous")
    };
    let (_, v) = l.shape().dims2()?;
    Ok((&s.as_slice::<f32>()?[a..b], v))
}

fn targets_of<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [u32]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("capped cross-entropy: targets must be contiguous")
    };
    Ok(&s.as_slice::<u32>()?[a..b])
}

/// The capped row and its log-sum-exp.
fn capped_row(z: &[f32], cap: f32, out: &mut Vec<f32>) -> f32 {
    out.clear();
    out.extend(z.iter().map(|&v| cap * (v / cap).tanh()));
    let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = out.iter().map(|&c| (c - max).exp()).sum();
    sum.ln() + max
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
        let t = targets_of(s2, l2)?;
        let n = z.len() / v.max(1);
        if t.len() != n {
            candle_core::bail!("capped cross-entropy: {} targets for {n} rows", t.len())
        }
        let loss: Vec<f32> = z
            .par_chunks(v)
            .zip(t.par_iter())
            .map_init(Vec::new, |buf, (row, &target)| {
                let lse = capped_row(row, self.cap, buf);
                lse - buf[target as usize]
            })
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
        let t = targets_of(s2, l2)?;
        let Some((a, b)) = l3.contiguous_offsets() else {
            candle_core::bail!("capped cross-entropy backward: gradient must be contiguous")
        };
        let g = &s3.as_slice::<f32>()?[a..b];
        let mut dz = vec![0f32; z.len()];
        dz.par_chunks_mut(v)
            .zip(z.par_chunks(v))
            .zip(t.par_iter().zip(g.par_iter()))
            .for_each_init(Vec::new, |buf, ((d, row), (&target, &g))| {
                let lse = capped_row(row, self.cap, buf);
                for (j, (d, &zj)) in d.iter_mut().zip(row).enumerate() {
                    let th = (zj / self.cap).tanh();
                    let p = (buf[j] - lse).exp();
                    let onehot = if j == target as usize { 1.0 } else { 0.0 };
                    *d = g * (p - onehot) * (1.0 - th * th);
                }
            });
        Ok((CpuStorage::F32(dz), l1.shape().clone()))
    }
}
