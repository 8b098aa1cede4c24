//! Differentiable CPU (f32) operations for the training pass, each with a hand-written backward in one pass:
//! a composition of candle operations records several nodes per use, and their backward passes reduce over
//! broadcast dimensions element by element, which dominated the training step.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::buffers::{contiguous, uninit_vec, with_f32};
use super::fused::{Strided, linear_f32, product_f32};

/// The residual mix `x · mix[0] + x0 · mix[1]` for x, x0 [.., d] and mix [2, d] as one differentiable node (the
/// composition records two channel scales, two row selections and a sum, each with a materialized gradient). The
/// same f32 operations: each product rounded, then the sum; ∂x = g·mix[0], ∂x0 = g·mix[1], ∂mix the channel scales'
/// column sums.
pub fn residual_mix(x: &Tensor, x0: &Tensor, mix: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&x0.contiguous()?, &mix.contiguous()?, ResidualMix)
}

struct ResidualMix;

impl CustomOp3 for ResidualMix {
    fn name(&self) -> &'static str {
        "residual-mix"
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
        let x = contiguous::<f32>(s1, l1, self.name())?;
        let x0 = contiguous::<f32>(s2, l2, self.name())?;
        let mix = contiguous::<f32>(s3, l3, self.name())?;
        let d = *l1.dims().last().unwrap_or(&0);
        if d == 0 || l1.dims() != l2.dims() || l3.dims() != [2, d] {
            candle_core::bail!(
                "residual-mix: {:?} and {:?} by {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        let (m0, m1) = mix.split_at(d);
        let mut out = uninit_vec(x.len());
        out.par_chunks_mut(d * 64)
            .zip(x.par_chunks(d * 64).zip(x0.par_chunks(d * 64)))
            .for_each(|(o, (x, x0))| {
                for ((o, x), x0) in o.chunks_mut(d).zip(x.chunks(d)).zip(x0.chunks(d)) {
                    for i in 0..d {
                        o[i] = x[i] * m0[i] + x0[i] * m1[i];
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        x0: &Tensor,
        mix: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let (m0, m1) = (mix.get(0)?, mix.get(1)?);
        let dx = g.apply_op2_no_bwd(&m0, &ChannelScale)?;
        let dx0 = g.apply_op2_no_bwd(&m1, &ChannelScale)?;
        let dmix = Tensor::stack(
            &[
                x.apply_op2_no_bwd(&g, &ChannelScaleGrad)?,
                x0.apply_op2_no_bwd(&g, &ChannelScaleGrad)?,
            ],
            0,
        )?;
        Ok((Some(dx), Some(dx0), Some(dmix)))
    }
}

/// `x + a · s` for x, a [.., d] and s [d] (a branch's output scaled into the residual stream) as one
/// differentiable node: the product rounded, then the sum, as the composition; ∂x = g, ∂a = g·s, ∂s the column
/// sums of g ⊙ a.
pub fn add_scaled(x: &Tensor, a: &Tensor, s: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&a.contiguous()?, &s.contiguous()?, AddScaled)
}

struct AddScaled;

impl CustomOp3 for AddScaled {
    fn name(&self) -> &'static str {
        "add-scaled"
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
        let x = contiguous::<f32>(s1, l1, self.name())?;
        let a = contiguous::<f32>(s2, l2, self.name())?;
        let s = contiguous::<f32>(s3, l3, self.name())?;
        let d = s.len();
        if d == 0 || l1.dims() != l2.dims() || l1.dims().last() != Some(&d) {
            candle_core::bail!(
                "add-scaled: {:?} plus {:?} by {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        let mut out = uninit_vec(x.len());
        out.par_chunks_mut(d * 64)
            .zip(x.par_chunks(d * 64).zip(a.par_chunks(d * 64)))
            .for_each(|(o, (x, a))| {
                for ((o, x), a) in o.chunks_mut(d).zip(x.chunks(d)).zip(a.chunks(d)) {
                    for i in 0..d {
                        o[i] = x[i] + a[i] * s[i];
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        a: &Tensor,
        s: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let da = g.apply_op2_no_bwd(s, &ChannelScale)?;
        let ds = a.apply_op2_no_bwd(&g, &ChannelScaleGrad)?;
        Ok((Some(g), Some(da), Some(ds)))
    }
}

/// `x · s` with `s` [d] broadcast along the last dimension of `x` [.., d].
pub fn channel_scale(x: &Tensor, s: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(&s.contiguous()?, ChannelScale)
}

struct ChannelScale;

/// Σ over rows of `x ⊙ g`: the gradient of a per-channel scale.
struct ChannelScaleGrad;

impl CustomOp2 for ChannelScale {
    fn name(&self) -> &'static str {
        "channel-scale"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(s1, l1, self.name())?;
        let s = contiguous::<f32>(s2, l2, self.name())?;
        let d = s.len();
        if d == 0 || l1.dims().last() != Some(&d) {
            candle_core::bail!("channel-scale: {:?} by {:?}", l1.dims(), l2.dims())
        }
        let mut out = uninit_vec(x.len());
        out.par_chunks_mut(d * 64)
            .zip(x.par_chunks(d * 64))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    for ((o, x), s) in o.iter_mut().zip(x).zip(s) {
                        *o = x * s;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        s: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dx = g.apply_op2_no_bwd(s, &ChannelScale)?;
        let ds = x.apply_op2_no_bwd(&g, &ChannelScaleGrad)?;
        Ok((Some(dx), Some(ds)))
    }
}

impl CustomOp2 for ChannelScaleGrad {
    fn name(&self) -> &'static str {
        "channel-scale-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(s1, l1, self.name())?;
        let g = contiguous::<f32>(s2, l2, self.name())?;
        let d = *l1.dims().last().unwrap_or(&0);
        let partial: Vec<Vec<f64>> = x
            .par_chunks(d * 256)
            .zip(g.par_chunks(d * 256))
            .map(|(x, g)| {
                let mut acc = vec![0f64; d];
                for (x, g) in x.chunks(d).zip(g.chunks(d)) {
                    for ((a, x), g) in acc.iter_mut().zip(x).zip(g) {
                        *a += (*x as f64) * (*g as f64);
                    }
                }
                acc
            })
            .collect();
        let mut out = vec![0f64; d];
        for p in partial {
            for (o, v) in out.iter_mut().zip(p) {
                *o += v;
            }
        }
        Ok((
            CpuStorage::F32(out.into_iter().map(|v| v as f32).collect()),
            Shape::from(d),
        ))
    }
}

/// `F.linear(x, W)` = x · Wᵀ for x [.., in] and W [out, in] (f32, CPU) as one differentiable operation: one node
/// instead of the reshape, transpose, matmul and reshape a composition records (each of whose gradients candle
/// accumulates into a zero-filled buffer), and products into buffers that are not zero-filled first. Forward and
/// backward are the gemm calls candle's matmul makes for the composition: y = x·Wᵀ, ∂x = ∂y·W, and ∂W as
/// (xᵀ·∂y)ᵀ, stored transposed.
pub fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
}

struct Linear;

/// Rows, `in` and `out` of a linear layer's operands (x's leading dimensions flattened).
fn linear_dims(x: &Layout, w: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let inner = *x.dims().last().unwrap_or(&0);
    let (out, w_inner) = w.shape().dims2()?;
    if inner != w_inner || x.dims().is_empty() {
        candle_core::bail!("linear: x {:?} against W {:?}", x.dims(), w.dims())
    }
    Ok((x.shape().elem_count() / inner.max(1), inner, out))
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, inner, out) = linear_dims(l1, l2)?;
        let x = contiguous::<f32>(s1, l1, self.name())?;
        let w = contiguous::<f32>(s2, l2, self.name())?;
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("rank checked") = out;
        Ok((
            CpuStorage::F32(linear_f32(x, w, rows, out, inner)),
            Shape::from(dims),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, inner, out) = linear_dims(x.layout(), w.layout())?;
        let (dx, dw) = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(g, |g| Ok(linear_backward(x, w, g, rows, inner, out)))
            })
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
        ))
    }
}

/// The gradients of `y = x · Wᵀ` (x [rows, in], W [out, in]) from ∂y [rows, out]: ∂x = ∂y·W, and ∂W as (xᵀ·∂y)ᵀ
/// stored transposed; the gemm calls candle's matmul backward makes for the composition.
pub(crate) fn linear_backward(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    rows: usize,
    inner: usize,
    out: usize,
) -> (Vec<f32>, Vec<f32>) {
    let dx = product_f32(
        Strided::new(g, rows, out, out, 1),
        Strided::new(w, out, inner, inner, 1),
        false,
    );
    let dw = product_f32(
        Strided::new(x, inner, rows, 1, inner),
        Strided::new(g, rows, out, out, 1),
        true,
    );
    (dx, dw)
}

/// `relu(u)²` (the MLP's activation) as one differentiable node: candle's `relu` then `sqr` record two nodes whose
/// backward passes take eight passes over the hidden activations (a comparison mask, its conversion, products, the
/// doubling, and two zero-filled accumulations). Same arithmetic: forward `h·h` with `h = max(u, 0)`, backward
/// `(h·g)·2` where `u ≥ 0`, else 0.
pub fn relu_squared(u: &Tensor) -> candle_core::Result<Tensor> {
    u.contiguous()?.apply_op1(ReluSquared)
}

struct ReluSquared;

struct ReluSquaredGrad;

impl CustomOp1 for ReluSquared {
    fn name(&self) -> &'static str {
        "relu-squared"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let u = contiguous::<f32>(s, l, self.name())?;
        let mut out = uninit_vec(u.len());
        out.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(u.par_chunks(ELEMENTS_PER_TASK))
            .for_each(|(o, u)| relu_squared_values(u, o));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, u: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            u.apply_op2_no_bwd(&g.contiguous()?, &ReluSquaredGrad)?,
        ))
    }
}

impl CustomOp2 for ReluSquaredGrad {
    fn name(&self) -> &'static str {
        "relu-squared-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let u = contiguous::<f32>(s1, l1, self.name())?;
        let g = contiguous::<f32>(s2, l2, self.name())?;
        if u.len() != g.len() {
            candle_core::bail!("relu-squared-grad: {:?} against {:?}", l1.dims(), l2.dims())
        }
        let mut out = uninit_vec(u.len());
        out.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(
                u.par_chunks(ELEMENTS_PER_TASK)
                    .zip(g.par_chunks(ELEMENTS_PER_TASK)),
            )
            .for_each(|(o, (u, g))| relu_squared_gradient(u, g, o));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Elements per parallel task of the element-wise nodes.
const ELEMENTS_PER_TASK: usize = 16 * 1024;

#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2"))]
fn relu_squared_values(u: &[f32], out: &mut [f32]) {
    for (o, &u) in out.iter_mut().zip(u) {
        let h = if u > 0.0 { u } else { 0.0 };
        *o = h * h;
    }
}

/// candle's chain: sqr's backward `(h·g)·2 + 0`, then relu's `· 1[u ≥ 0]`, accumulated onto zero.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2"))]
fn relu_squared_gradient(u: &[f32], g: &[f32], out: &mut [f32]) {
    for ((o, &u), &g) in out.iter_mut().zip(u).zip(g) {
        let h = if u > 0.0 { u } else { 0.0 };
        *o = if u >= 0.0 { (h * g) * 2.0 + 0.0 } else { 0.0 };
    }
}

/// `q · gain[h]` for q [B, H, T, hd] and one gain per head [H] (the records' q_gain) as one differentiable node:
/// the broadcast product candle records reduces the gain's gradient element by element, on one thread, through a
/// full-size product and a zero-filled accumulation. Same arithmetic: ∂q = g·gain[h], and ∂gain[h] the f32 sum of
/// g·q over (batch, position, channel) in row-major order from 0, as candle's reduction adds them.
pub fn head_gain(q: &Tensor, gain: &Tensor) -> candle_core::Result<Tensor> {
    q.contiguous()?.apply_op2(&gain.contiguous()?, HeadGain)
}

struct HeadGain;

/// ∂gain of [`head_gain`] from (q, ∂y).
struct HeadGainGrad;

/// (B, H, T·hd) of q [B, H, T, hd] against a gain of H values.
fn head_gain_dims(q: &Layout, gain: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (b, h, t, hd) = q.shape().dims4()?;
    if gain.shape().elem_count() != h || t * hd == 0 {
        candle_core::bail!("head-gain: q {:?} against gain {:?}", q.dims(), gain.dims())
    }
    Ok((b, h, t * hd))
}

impl CustomOp2 for HeadGain {
    fn name(&self) -> &'static str {
        "head-gain"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, h, span) = head_gain_dims(l1, l2)?;
        let q = contiguous::<f32>(s1, l1, self.name())?;
        let gain = contiguous::<f32>(s2, l2, self.name())?;
        let mut out = uninit_vec(q.len());
        out.par_chunks_mut(span)
            .zip(q.par_chunks(span))
            .enumerate()
            .for_each(|(bh, (o, q))| {
                let g = gain[bh % h];
                o.iter_mut().zip(q).for_each(|(o, q)| *o = q * g);
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        gain: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dq = g.apply_op2_no_bwd(gain, &HeadGain)?;
        let dgain = q
            .apply_op2_no_bwd(&g, &HeadGainGrad)?
            .reshape(gain.shape())?;
        Ok((Some(dq), Some(dgain)))
    }
}

impl CustomOp2 for HeadGainGrad {
    fn name(&self) -> &'static str {
        "head-gain-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, t, hd) = l1.shape().dims4()?;
        let span = t * hd;
        if span == 0 {
            candle_core::bail!("head-gain-grad: empty heads {:?}", l1.dims())
        }
        let q = contiguous::<f32>(s1, l1, self.name())?;
        let g = contiguous::<f32>(s2, l2, self.name())?;
        if g.len() != q.len() {
            candle_core::bail!("head-gain-grad: {:?} against {:?}", l1.dims(), l2.dims())
        }
        let sums: Vec<f32> = (0..h)
            .into_par_iter()
            .map(|head| {
                let mut acc = 0f32;
                for batch in 0..b {
                    let at = (batch * h + head) * span;
                    for (&g, &q) in g[at..at + span].iter().zip(&q[at..at + span]) {
                        acc += g * q;
                    }
                }
                acc
            })
            .collect();
        Ok((CpuStorage::F32(sums), Shape::from(h)))
    }
}

/// `F.rms_norm(x, (d,))` without weight: `x / sqrt(mean(x²) + eps)` over the last dimension.
pub fn rms_norm(x: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(RmsNorm { eps })
}

struct RmsNorm {
    eps: f32,
}

struct RmsNormGrad {
    eps: f32,
}

/// 1/√(mean(x²) + eps) of one row (the training RMSNorm's f32 arithmetic).
pub(crate) fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(s, l, self.name())?;
        let d = *l.dims().last().unwrap_or(&0);
        let mut out = uninit_vec(x.len());
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, row)| {
                let r = inv_rms(row, self.eps);
                for (o, x) in o.iter_mut().zip(row) {
                    *o = x * r;
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &g.contiguous()?,
            &RmsNormGrad { eps: self.eps },
        )?))
    }
}

impl CustomOp2 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "rms-norm-train-grad"
    }

    /// dx = r·(g − x·r²·mean(g ⊙ x)) with r = 1/√(mean(x²) + eps).
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(s1, l1, self.name())?;
        let g = contiguous::<f32>(s2, l2, self.name())?;
        let d = *l1.dims().last().unwrap_or(&0);
        let mut out = uninit_vec(x.len());
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d).zip(g.par_chunks(d)))
            .for_each(|(o, (x, g))| {
                let r = inv_rms(x, self.eps);
                let mean_gx = x.iter().zip(g).map(|(a, b)| a * b).sum::<f32>() / d as f32;
                let k = r * r * mean_gx;
                for ((o, x), g) in o.iter_mut().zip(x).zip(g) {
                    *o = r * (g - x * k);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Half-split rotary embedding of `x` [B, H, T, D]: for i < D/2,
/// `(x_i, x_{i+D/2}) → (x_i·cos + x_{i+D/2}·sin, −x_i·sin + x_{i+D/2}·cos)` with `cos`, `sin` [T, D/2] (the
/// reference's `apply_rotary_emb`). Its backward is the inverse rotation.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let cos = cos.flatten_all()?.to_vec1::<f32>()?;
    let sin = sin.flatten_all()?.to_vec1::<f32>()?;
    x.contiguous()?.apply_op1(Rope {
        cos,
        sin,
        inverse: false,
    })
}

struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    inverse: bool,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(s, l, self.name())?;
        let (_, _, t, d) = l.shape().dims4()?;
        let half = d / 2;
        if self.cos.len() < t * half {
            candle_core::bail!(
                "rope: tables for {} positions, {t} needed",
                self.cos.len() / half.max(1)
            )
        }
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut out = uninit_vec(x.len());
        out.par_chunks_mut(t * d)
            .zip(x.par_chunks(t * d))
            .for_each(|(o, x)| {
                for p in 0..t {
                    let (c, sn) = (
                        &self.cos[p * half..(p + 1) * half],
                        &self.sin[p * half..(p + 1) * half],
                    );
                    let (xr, or) = (&x[p * d..(p + 1) * d], &mut o[p * d..(p + 1) * d]);
                    for i in 0..half {
                        let (x1, x2, s) = (xr[i], xr[i + half], sign * sn[i]);
                        or[i] = x1 * c[i] + x2 * s;
                        or[i + half] = -x1 * s + x2 * c[i];
                    }
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let inverse = Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            inverse: !self.inverse,
        };
        Ok(Some(g.contiguous()?.apply_op1(inverse)?))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{D, Device, Var};

    /// max |a − b| over all elements.
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A node against the composition it replaces, bit for bit: the values of `ours` and `theirs`, and the gradients
    /// of Σ(y ⊙ g) with respect to each named variable. `case` names the case in a failure.
    pub(crate) fn assert_same_node(
        ours: &Tensor,
        theirs: &Tensor,
        g: &Tensor,
        vars: &[(&str, &Var)],
        case: &str,
    ) {
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values(ours), values(theirs), "values {case}");
        let ga = (ours * g).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (theirs * g).unwrap().sum_all().unwrap().backward().unwrap();
        for (what, v) in vars {
            assert_eq!(
                values(ga.get(v.as_tensor()).unwrap()),
                values(gb.get(v.as_tensor()).unwrap()),
                "∂{what} {case}"
            );
        }
    }

    /// [`assert_same_node`] within tolerances: max |Δ| of the values below `value_tol`, of each gradient below
    /// `grad_tol`.
    pub(crate) fn assert_close_node(
        ours: &Tensor,
        theirs: &Tensor,
        g: &Tensor,
        vars: &[(&str, &Var)],
        case: &str,
        (value_tol, grad_tol): (f32, f32),
    ) {
        let dy = max_abs_diff(ours, theirs);
        assert!(dy < value_tol, "values {case}: max |Δ| {dy}");
        let ga = (ours * g).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (theirs * g).unwrap().sum_all().unwrap().backward().unwrap();
        for (what, v) in vars {
            let dg = max_abs_diff(
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            );
            assert!(dg < grad_tol, "∂{what} {case}: max |Δ| {dg}");
        }
    }

    /// The residual mix and the scaled add against the compositions they replace (channel-scale nodes, row
    /// selections and sums), bit for bit: values and the gradients of every input.
    #[test]
    fn residual_mix_and_add_scaled_are_their_compositions_bit_for_bit() {
        let dev = Device::Cpu;
        for &(b, t, d) in &[(2, 5, 16), (1, 70, 24), (3, 1, 1)] {
            let x = Var::randn(0f32, 1.0, (b, t, d), &dev).unwrap();
            let x0 = Var::randn(0f32, 1.0, (b, t, d), &dev).unwrap();
            let a = Var::randn(0f32, 1.0, (b, t, d), &dev).unwrap();
            let mix = Var::randn(0.5f32, 0.5, (2, d), &dev).unwrap();
            let s = Var::randn(0f32, 0.3, d, &dev).unwrap();
            let g = Tensor::randn(0f32, 1.0, (b, t, d), &dev).unwrap();
            let case = format!("{b}×{t}×{d}");
            let ours = residual_mix(x.as_tensor(), x0.as_tensor(), mix.as_tensor()).unwrap();
            let theirs = (channel_scale(x.as_tensor(), &mix.as_tensor().get(0).unwrap()).unwrap()
                + channel_scale(x0.as_tensor(), &mix.as_tensor().get(1).unwrap()).unwrap())
            .unwrap();
            assert_same_node(
                &ours,
                &theirs,
                &g,
                &[("x", &x), ("x0", &x0), ("mix", &mix)],
                &case,
            );
            let ours = add_scaled(x.as_tensor(), a.as_tensor(), s.as_tensor()).unwrap();
            let theirs =
                (x.as_tensor() + channel_scale(a.as_tensor(), s.as_tensor()).unwrap()).unwrap();
            assert_same_node(
                &ours,
                &theirs,
                &g,
                &[("x", &x), ("a", &a), ("s", &s)],
                &case,
            );
        }
        let x = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &dev).unwrap();
        let mix = Tensor::zeros((2, 5), candle_core::DType::F32, &dev).unwrap();
        let err = residual_mix(&x, &x, &mix).unwrap_err().to_string();
        assert!(err.contains("residual-mix"), "{err}");
        let err = add_scaled(&x, &x, &mix.get(0).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("add-scaled"), "{err}");
    }

    /// max |a − b| over values (< 1e-5) and over the gradients of Σ(y ⊙ w) for a fixed random w (< 1e-4).
    fn compare(
        ours: impl Fn(&Tensor) -> Tensor,
        theirs: impl Fn(&Tensor) -> Tensor,
        shape: &[usize],
    ) {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1.0, shape, &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
        let (a, b) = (ours(x.as_tensor()), theirs(x.as_tensor()));
        assert_close_node(
            &a,
            &b,
            &w,
            &[("x", &x)],
            &format!("{shape:?}"),
            (1e-5, 1e-4),
        );
    }

    /// The linear node gives candle's composition (reshape, transpose, matmul, reshape) bit for bit: values and the
    /// gradients of both operands, also with a row count that splits gemm's blocks unevenly.
    #[test]
    fn linear_matches_the_composition_bit_for_bit() {
        let dev = Device::Cpu;
        for &(b, t, inner, out) in &[(2, 5, 16, 24), (3, 67, 64, 130), (1, 1, 3, 1)] {
            let x = Var::randn(0f32, 1.0, (b, t, inner), &dev).unwrap();
            let w = Var::randn(0f32, 1.0, (out, inner), &dev).unwrap();
            let g = Tensor::randn(0f32, 1.0, (b, t, out), &dev).unwrap();
            let ours = linear(x.as_tensor(), w.as_tensor()).unwrap();
            let theirs = x
                .as_tensor()
                .reshape((b * t, inner))
                .unwrap()
                .matmul(&w.as_tensor().t().unwrap())
                .unwrap()
                .reshape((b, t, out))
                .unwrap();
            let case = format!("{b}×{t}×{inner}→{out}");
            assert_same_node(&ours, &theirs, &g, &[("x", &x), ("W", &w)], &case);
        }
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(linear(&x, &w).is_err(), "mismatched inner dimensions");
    }

    /// relu² as one node against candle's relu then sqr: values and gradient bit for bit, exact zeros included.
    #[test]
    fn relu_squared_is_relu_then_sqr_bit_for_bit() {
        let dev = Device::Cpu;
        let mut values = Tensor::randn(0f32, 1.0, 40_000, &dev)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        values[..7].copy_from_slice(&[0.0, -0.0, 1e-30, -1e-30, 3.0, -3.0, f32::MIN_POSITIVE]);
        let u = Var::from_tensor(&Tensor::from_vec(values, (200, 200), &dev).unwrap()).unwrap();
        let g = Tensor::randn(0f32, 1.0, (200, 200), &dev).unwrap();
        let ours = relu_squared(u.as_tensor()).unwrap();
        let theirs = u.as_tensor().relu().unwrap().sqr().unwrap();
        assert_same_node(&ours, &theirs, &g, &[("u", &u)], "relu²");
    }

    /// The per-head gain as one node against candle's broadcast product: values and both gradients bit for bit.
    #[test]
    fn head_gain_is_the_broadcast_product_bit_for_bit() {
        let dev = Device::Cpu;
        let (b, h, t, hd) = (3, 4, 37, 16);
        let q = Var::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap();
        let gain = Var::randn(0f32, 1.0, h, &dev).unwrap();
        let g = Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap();
        let ours = head_gain(q.as_tensor(), gain.as_tensor()).unwrap();
        let theirs = q
            .as_tensor()
            .broadcast_mul(&gain.as_tensor().reshape((1, h, 1, 1)).unwrap())
            .unwrap();
        assert_same_node(
            &ours,
            &theirs,
            &g,
            &[("q", &q), ("gain", &gain)],
            "head gain",
        );
        assert!(
            head_gain(
                q.as_tensor(),
                &Tensor::ones(3, candle_core::DType::F32, &dev).unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn channel_scale_matches_broadcast_mul() {
        let s = Tensor::randn(0f32, 1.0, 16, &Device::Cpu).unwrap();
        compare(
            |x| channel_scale(x, &s).unwrap(),
            |x| x.broadcast_mul(&s).unwrap(),
            &[3, 5, 16],
        );
        // and the gradient with respect to the scale
        let x = Tensor::randn(0f32, 1.0, (7, 16), &Device::Cpu).unwrap();
        let sv = Var::from_tensor(&s).unwrap();
        let g1 = channel_scale(&x, sv.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = x
            .broadcast_mul(sv.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let d = max_abs_diff(
            g1.get(sv.as_tensor()).unwrap(),
            g2.get(sv.as_tensor()).unwrap(),
        );
        assert!(d < 1e-4, "{d}");
    }

    #[test]
    fn rms_norm_matches_the_composition() {
        let eps = f32::EPSILON;
        compare(
            |x| rms_norm(x, eps).unwrap(),
            |x| {
                let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
                x.broadcast_div(&(ms + eps as f64).unwrap().sqrt().unwrap())
                    .unwrap()
            },
            &[4, 6, 32],
        );
    }

    #[test]
    fn rope_matches_candles_half_split_rope() {
        let cos = Tensor::randn(0f32, 1.0, (8, 4), &Device::Cpu).unwrap();
        let sin = Tensor::randn(0f32, 1.0, (8, 4), &Device::Cpu).unwrap();
        compare(
            |x| rope(x, &cos, &sin).unwrap(),
            |x| candle_nn::rotary_emb::rope_slow(x, &cos, &sin.neg().unwrap()).unwrap(),
            &[2, 3, 8, 8],
        );
    }
}
