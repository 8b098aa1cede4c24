//! The attention's per-head queries and keys for passes that take gradients (CPU, f32), as one differentiable node:
//! a projection's output z [B, T, n·hd] taken to heads [B, n, T, hd], each head's RMSNorm (no weight), half-split
//! RoPE over all hd dims and, for queries, the per-head gain (q_gain).
//!
//! The composition it replaces records six nodes per projection (reshape, transpose, the contiguous copy, the norm,
//! RoPE and the gain), and candle's backward materializes each one's gradient into a zero-filled buffer. Here the
//! forward is one pass; the backward recomputes each row's norm and rotation and runs the same steps in reverse
//! (∂gain = Σ ∂y ⊙ rotated; ∂rotated = ∂y · gain; the inverse rotation; the norm's backward), in the same order and
//! the same f32 operations as [`super::ops::rms_norm`], [`super::ops::rope`] and [`super::ops::head_gain`], so
//! values and gradients are the composition's bit for bit (test).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::buffers::{SharedRows, contiguous, uninit_vec, with_f32};
use super::ops::inv_rms;

/// Heads of z [B, T, n·hd] normed, rotated by the tables `cos`, `sin` [≥T, hd/2] (RoPE's `sin`, not its negation)
/// and, with `gain` [n], scaled per head: [B, n, T, hd], differentiable with respect to z and the gain.
pub fn normed_rotated_heads(
    z: &Tensor,
    heads: usize,
    eps: f32,
    cos: &Tensor,
    sin: &Tensor,
    gain: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let op = HeadPrep {
        heads,
        eps,
        cos: cos.flatten_all()?.to_vec1::<f32>()?,
        sin: sin.flatten_all()?.to_vec1::<f32>()?,
    };
    let z = z.contiguous()?;
    match gain {
        Some(g) => z.apply_op2(&g.contiguous()?, op),
        None => z.apply_op1(op),
    }
}

struct HeadPrep {
    heads: usize,
    eps: f32,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// (B, T, hd) of z against the head count and the tables.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    t: usize,
    hd: usize,
}

impl HeadPrep {
    fn dims(&self, z: &Layout, gain: Option<&Layout>) -> candle_core::Result<Dims> {
        let (batch, t, width) = z.shape().dims3()?;
        let n = self.heads;
        let hd = width.checked_div(n).unwrap_or(0);
        let gain_ok = gain.is_none_or(|g| g.shape().elem_count() == n);
        if n == 0 || hd == 0 || hd * n != width || hd % 2 == 1 || !gain_ok {
            candle_core::bail!(
                "normed-rotated-heads: z {:?} as {n} heads (gain {:?})",
                z.dims(),
                gain.map(|g| g.dims().to_vec())
            )
        }
        if self.cos.len() < t * hd / 2 || self.sin.len() != self.cos.len() {
            candle_core::bail!(
                "normed-rotated-heads: RoPE tables of {} values, {t} positions × {} needed",
                self.cos.len(),
                hd / 2
            )
        }
        Ok(Dims { batch, t, hd })
    }

    /// One row of head `h` at (b, t) normed and rotated into `out` (the composition's f32 operations).
    fn rotated_row(&self, row: &[f32], p: usize, out: &mut [f32]) {
        let hd = row.len();
        let half = hd / 2;
        let r = inv_rms(row, self.eps);
        let (c, s) = (
            &self.cos[p * half..(p + 1) * half],
            &self.sin[p * half..(p + 1) * half],
        );
        for i in 0..half {
            let (x1, x2) = (row[i] * r, row[i + half] * r);
            out[i] = x1 * c[i] + x2 * s[i];
            out[i + half] = -x1 * s[i] + x2 * c[i];
        }
    }

    fn forward(&self, z: &[f32], gain: Option<&[f32]>, d: Dims) -> Vec<f32> {
        let (n, t, hd) = (self.heads, d.t, d.hd);
        let mut out = uninit_vec(z.len());
        out.par_chunks_mut(t * hd)
            .enumerate()
            .for_each(|(bh, head_out)| {
                let (b, h) = (bh / n, bh % n);
                for (p, o) in head_out.chunks_exact_mut(hd).enumerate() {
                    let row = &z[((b * t + p) * n + h) * hd..][..hd];
                    self.rotated_row(row, p, o);
                    if let Some(gain) = gain {
                        let g = gain[h];
                        o.iter_mut().for_each(|x| *x *= g);
                    }
                }
            });
        out
    }

    /// ∂z [B, T, n·hd] and, with a gain, ∂gain [n], from ∂y [B, n, T, hd]: one head per task, its batches and
    /// positions in order (∂gain's f32 sum runs over (batch, position, channel) from 0, as the gain node's does).
    fn backward(
        &self,
        z: &[f32],
        gain: Option<&[f32]>,
        dy: &[f32],
        d: Dims,
    ) -> (Vec<f32>, Option<Vec<f32>>) {
        let (n, t, hd) = (self.heads, d.t, d.hd);
        let half = hd / 2;
        let mut dz = uninit_vec(z.len());
        let dz_rows = SharedRows::new(&mut dz);
        let dgain: Vec<f32> = (0..n)
            .into_par_iter()
            .map(|h| {
                let mut acc = 0f32;
                let mut rotated = vec![0f32; hd];
                let mut d_normed = vec![0f32; hd];
                for b in 0..d.batch {
                    for p in 0..t {
                        let at = ((b * t + p) * n + h) * hd;
                        let row = &z[at..at + hd];
                        let g = &dy[((b * n + h) * t + p) * hd..][..hd];
                        // The gain: ∂gain += Σ g ⊙ rotated, ∂rotated = g · gain.
                        let d_rot: &[f32] = match gain {
                            Some(gain) => {
                                self.rotated_row(row, p, &mut rotated);
                                for (&g, &q) in g.iter().zip(&rotated) {
                                    acc += g * q;
                                }
                                let gh = gain[h];
                                rotated.iter_mut().zip(g).for_each(|(o, &g)| *o = g * gh);
                                &rotated
                            }
                            None => g,
                        };
                        // RoPE's backward: the inverse rotation (sin negated).
                        let (c, sn) = (
                            &self.cos[p * half..(p + 1) * half],
                            &self.sin[p * half..(p + 1) * half],
                        );
                        for i in 0..half {
                            let (x1, x2, s) = (d_rot[i], d_rot[i + half], -sn[i]);
                            d_normed[i] = x1 * c[i] + x2 * s;
                            d_normed[i + half] = -x1 * s + x2 * c[i];
                        }
                        // The norm's backward: r·(g − x·r²·mean(g ⊙ x)).
                        let r = inv_rms(row, self.eps);
                        let mean_gx =
                            row.iter().zip(&d_normed).map(|(a, b)| a * b).sum::<f32>() / hd as f32;
                        let k = r * r * mean_gx;
                        // SAFETY: row (b, p, h) of ∂z is written by this task only (task h owns head h's rows).
                        let out = unsafe { dz_rows.row(at, hd) };
                        for ((o, x), g) in out.iter_mut().zip(row).zip(&d_normed) {
                            *o = r * (g - x * k);
                        }
                    }
                }
                acc
            })
            .collect();
        (dz, gain.map(|_| dgain))
    }
}

impl CustomOp1 for HeadPrep {
    fn name(&self) -> &'static str {
        "normed-rotated-heads"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims(l, None)?;
        let z = contiguous::<f32>(s, l, CustomOp1::name(self))?;
        let out = self.forward(z, None, d);
        Ok((
            CpuStorage::F32(out),
            Shape::from((d.batch, self.heads, d.t, d.hd)),
        ))
    }

    fn bwd(&self, z: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let d = self.dims(z.layout(), None)?;
        let dz = with_f32(z, |zv| {
            with_f32(g, |gv| Ok(self.backward(zv, None, gv, d).0))
        })?;
        Ok(Some(Tensor::from_vec(dz, z.shape(), z.device())?))
    }
}

impl CustomOp2 for HeadPrep {
    fn name(&self) -> &'static str {
        "normed-rotated-heads"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims(l1, Some(l2))?;
        let z = contiguous::<f32>(s1, l1, CustomOp1::name(self))?;
        let gain = contiguous::<f32>(s2, l2, CustomOp1::name(self))?;
        let out = self.forward(z, Some(gain), d);
        Ok((
            CpuStorage::F32(out),
            Shape::from((d.batch, self.heads, d.t, d.hd)),
        ))
    }

    fn bwd(
        &self,
        z: &Tensor,
        gain: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let d = self.dims(z.layout(), Some(gain.layout()))?;
        let (dz, dgain) = with_f32(z, |zv| {
            with_f32(gain, |gn| {
                with_f32(g, |gv| Ok(self.backward(zv, Some(gn), gv, d)))
            })
        })?;
        let dgain = dgain.expect("asked for with a gain");
        Ok((
            Some(Tensor::from_vec(dz, z.shape(), z.device())?),
            Some(Tensor::from_vec(dgain, gain.shape(), gain.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ops::tests::assert_same_node;
    use candle_core::{Device, Var};

    /// Values and the gradients of z and the gain against the composition the model ran (reshape, transpose,
    /// contiguous, RMSNorm, RoPE, head gain nodes), bit for bit, with and without a gain.
    #[test]
    fn the_node_is_the_composition_bit_for_bit() {
        let dev = Device::Cpu;
        for &(b, t, n, hd) in &[(2, 7, 4, 16), (1, 33, 2, 8), (3, 1, 1, 2)] {
            let z = Var::randn(0f32, 1.0, (b, t, n * hd), &dev).unwrap();
            let gain = Var::randn(1f32, 0.3, n, &dev).unwrap();
            let g = Tensor::randn(0f32, 1.0, (b, n, t, hd), &dev).unwrap();
            let (cos, neg_sin) =
                crate::kernels::compose::rope_tables(hd, 10000.0, t + 3, &dev).unwrap();
            let sin = neg_sin.clone();
            let composed = |with_gain: bool| {
                let heads = z
                    .as_tensor()
                    .reshape((b, t, n, hd))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap();
                let normed = crate::kernels::ops::rms_norm(&heads, 1e-6).unwrap();
                let rotated = crate::kernels::ops::rope(&normed, &cos, &sin).unwrap();
                if with_gain {
                    crate::kernels::ops::head_gain(&rotated, gain.as_tensor()).unwrap()
                } else {
                    rotated
                }
            };
            let ours =
                normed_rotated_heads(z.as_tensor(), n, 1e-6, &cos, &sin, Some(gain.as_tensor()))
                    .unwrap();
            let case = format!("{b}×{t}×{n}×{hd}");
            assert_same_node(
                &ours,
                &composed(true),
                &g,
                &[("z", &z), ("gain", &gain)],
                &case,
            );
            let ours = normed_rotated_heads(z.as_tensor(), n, 1e-6, &cos, &sin, None).unwrap();
            assert_same_node(&ours, &composed(false), &g, &[("z", &z)], &case);
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        let dev = Device::Cpu;
        let (cos, sin) = crate::kernels::compose::rope_tables(8, 10000.0, 4, &dev).unwrap();
        let z = Tensor::zeros((1, 4, 24), candle_core::DType::F32, &dev).unwrap();
        // 24 values are not 5 heads.
        let err = normed_rotated_heads(&z, 5, 1e-6, &cos, &sin, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("normed-rotated-heads"), "{err}");
        // Tables for 4 positions, 6 needed.
        let z = Tensor::zeros((1, 6, 16), candle_core::DType::F32, &dev).unwrap();
        let err = normed_rotated_heads(&z, 2, 1e-6, &cos, &sin, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("RoPE tables"), "{err}");
        // A gain of the wrong length.
        let gain = Tensor::ones(3, candle_core::DType::F32, &dev).unwrap();
        let err = normed_rotated_heads(
            &z.narrow(1, 0, 4).unwrap(),
            2,
            1e-6,
            &cos,
            &sin,
            Some(&gain),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("normed-rotated-heads"), "{err}");
    }
}
