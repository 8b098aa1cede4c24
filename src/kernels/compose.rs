//! The compositions of candle operations every backend falls back to, written once: the fused steps of a block in
//! terms of a backend's primitives (so a backend that has its own kernel for a primitive uses it inside them too),
//! and the device-generic forms of the primitives (explicit masked softmax, composed cross-entropy).

use std::sync::Mutex;

use candle_core::{D, DType, Device, Tensor};

use super::products::Products;
use super::{Activation, HeadShape, Kernels, Pass, RMS_NORM_EPS, Result, RopeTables, Weight};

/// What every backend holds: its device, its product engine, and the vectors of ones by width on the device (the
/// weights of candle's fused RMSNorm), each made once.
pub struct Common {
    pub device: Device,
    pub products: Products,
    units: Mutex<Vec<(usize, Tensor)>>,
}

impl Common {
    pub fn new(device: &Device, products: Products) -> Self {
        Common {
            device: device.clone(),
            products,
            units: Mutex::new(Vec::new()),
        }
    }

    /// A vector of ones of `width`.
    pub fn unit_weights(&self, width: usize) -> Result<Tensor> {
        let mut made = self.units.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = made.iter().find(|(w, _)| *w == width) {
            return Ok(t.clone());
        }
        let t = Tensor::ones(width, DType::F32, &self.device)?;
        made.push((width, t.clone()));
        Ok(t)
    }
}

/// candle's fused RMSNorm over the last dimension (the scoring passes of every backend).
pub fn rms_norm_scoring<K: Kernels + ?Sized>(k: &K, x: &Tensor) -> Result<Tensor> {
    let width = x.dim(D::Minus1)?;
    candle_nn::ops::rms_norm(
        &x.contiguous()?,
        &k.common().unit_weights(width)?,
        RMS_NORM_EPS,
    )
}

/// candle's fused RoPE (the scoring passes of every backend).
pub fn rope_scoring(z: &Tensor, rope: &RopeTables) -> Result<Tensor> {
    candle_nn::rotary_emb::rope(&z.contiguous()?, &rope.cos, &rope.neg_sin)
}

/// RoPE tables for positions 0..T over `rd` rotated dims with base `base`: inv_freq[i] = base^(−2i/rd) and
/// freqs = t ⊗ inv_freq in f32, as the records' `Rotary`; (cos, sin) of [T, rd/2] in f32.
pub fn rope_tables(
    rd: usize,
    base: f32,
    seq_len: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let inv_freq: Vec<f32> = (0..rd / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / rd as f32))
        .collect();
    let mut freqs = Vec::with_capacity(seq_len * rd / 2);
    for t in 0..seq_len {
        for f in &inv_freq {
            freqs.push(t as f32 * f);
        }
    }
    let freqs = Tensor::from_vec(freqs, (seq_len, rd / 2), device)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// The RMSNorm times a block's LN scale (a Python float times an f32 tensor multiplies in f32).
pub fn block_norm<K: Kernels + ?Sized>(
    k: &K,
    x: &Tensor,
    scale: f64,
    pass: Pass,
) -> Result<Tensor> {
    let n = k.rms_norm(x, pass)?;
    Ok(if scale == 1.0 {
        n
    } else {
        (n * (scale as f32) as f64)?
    })
}

/// `x + s · a`.
pub fn add_scaled<K: Kernels + ?Sized>(
    k: &K,
    x: &Tensor,
    a: &Tensor,
    s: &Tensor,
    pass: Pass,
) -> Result<Tensor> {
    x + k.channel_scale(a, s, pass)?
}

/// `x · mix[0] + x0 · mix[1]`.
pub fn residual_mix<K: Kernels + ?Sized>(
    k: &K,
    x: &Tensor,
    x0: &Tensor,
    mix: &Tensor,
    pass: Pass,
) -> Result<Tensor> {
    k.channel_scale(x, &mix.get(0)?, pass)? + k.channel_scale(x0, &mix.get(1)?, pass)?
}

/// RoPE over the first `rotary_dims` of the last dimension of z [B, H, T, hd] (all of them without partial RoPE).
pub fn rope_leading<K: Kernels + ?Sized>(
    k: &K,
    z: &Tensor,
    rope: &RopeTables,
    rotary_dims: usize,
    pass: Pass,
) -> Result<Tensor> {
    let hd = z.dim(D::Minus1)?;
    if rotary_dims == hd {
        return k.rope(z, rope, pass);
    }
    let rotated = k.rope(&z.narrow(D::Minus1, 0, rotary_dims)?, rope, pass)?;
    Tensor::cat(
        &[
            &rotated,
            &z.narrow(D::Minus1, rotary_dims, hd - rotary_dims)?,
        ],
        D::Minus1,
    )
}

/// The q and k heads: [B, T, n·hd] → [B, n, T, hd], RMSNorm, RoPE over the rotary dims, q times its gain.
pub fn qk_heads<K: Kernels + ?Sized>(
    k: &K,
    q_raw: &Tensor,
    k_raw: &Tensor,
    shape: HeadShape,
    rope: &RopeTables,
    gain: &Tensor,
    pass: Pass,
) -> Result<(Tensor, Tensor)> {
    let (b, t, _) = q_raw.dims3()?;
    let hd = shape.head_dim;
    let heads = |z: &Tensor, n: usize| -> Result<Tensor> {
        z.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
    };
    let q = k.rms_norm(&heads(q_raw, shape.heads)?, pass)?;
    let kk = k.rms_norm(&heads(k_raw, shape.kv_heads)?, pass)?;
    let q = rope_leading(k, &q, rope, shape.rotary_dims, pass)?;
    let kk = rope_leading(k, &kk, rope, shape.rotary_dims, pass)?;
    Ok((k.head_gain(&q, gain, pass)?, kk))
}

/// Attention with the values and output laid out by position: the values taken to heads, the backend's attention,
/// the output taken back to [B, T, H·hd].
pub fn attention_by_position<K: Kernels + ?Sized>(
    k: &K,
    q: &Tensor,
    kk: &Tensor,
    v: &Tensor,
    pass: Pass,
) -> Result<Tensor> {
    let (b, h, t, hd) = q.dims4()?;
    let hkv = kk.dim(1)?;
    let v_heads = v.reshape((b, t, hkv, hd))?.transpose(1, 2)?.contiguous()?;
    let y = k.causal_attention(q, kk, &v_heads, pass)?;
    y.transpose(1, 2)?.reshape((b, t, h * hd))
}

/// The MLP. Where the product engine gives the first product's values straight (a forward-only pass on the CPU),
/// the activation runs on them in place (or, when the second product reads bf16 on AMX tiles, writes them rounded
/// once); otherwise [`mlp_composed`].
pub fn mlp<K: Kernels + ?Sized>(
    k: &K,
    x: &Tensor,
    fc: &Weight,
    proj: &Weight,
    act: Activation,
) -> Result<Tensor> {
    let products = k.products();
    let Some(mut u) = products.forward_values(x, fc)? else {
        return mlp_composed(k, x, fc, proj, act);
    };
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank ≥ 1") = fc.tensor().dim(0)?;
    let slope = act.slope as f32;
    if act.gain.is_none() && products.on_tiles() {
        let h = Tensor::from_vec(super::fused::relu_squared_bf16(&u, slope), dims, x.device())?;
        return k.linear(&h, proj);
    }
    super::fused::relu_squared(&mut u, slope);
    gained_projection(k, Tensor::from_vec(u, dims, x.device())?, act.gain, proj)
}

/// The MLP as three steps: product, activation, product.
pub fn mlp_composed<K: Kernels + ?Sized>(
    k: &K,
    x: &Tensor,
    fc: &Weight,
    proj: &Weight,
    act: Activation,
) -> Result<Tensor> {
    let u = k.linear(x, fc)?;
    gained_projection(k, k.relu_squared(&u, act.slope)?, act.gain, proj)
}

/// The MLP's activations times the hidden gain where there is one, then its output projection.
fn gained_projection<K: Kernels + ?Sized>(
    k: &K,
    h: Tensor,
    gain: Option<&Tensor>,
    proj: &Weight,
) -> Result<Tensor> {
    let h = match gain {
        Some(g) => h.broadcast_mul(g)?,
        None => h,
    };
    k.linear(&h, proj)
}

/// The head's product, then the soft-capped cross-entropy.
pub fn head_losses<K: Kernels + ?Sized>(
    k: &K,
    hidden: &Tensor,
    head: &Weight,
    targets: &Tensor,
    cap: f64,
) -> Result<Tensor> {
    k.capped_token_losses(&k.linear(hidden, head)?, targets, cap)
}

/// `relu(u)²`, or `(relu(u) − relu(−u)·slope)²`, from candle's operations.
pub fn relu_squared(u: &Tensor, slope: f64) -> Result<Tensor> {
    if slope == 0.0 {
        u.relu()?.sqr()
    } else {
        (u.relu()? - (u.neg()?.relu()? * slope)?)?.sqr()
    }
}

/// `F.rms_norm` as a differentiable composition: x · rsqrt(mean(x²) + eps).
pub fn rms_norm_differentiable(x: &Tensor) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_mul(&(ms + RMS_NORM_EPS as f64)?.sqrt()?.recip()?)
}

/// Softmax over the last dimension from differentiable operations (the max shift is a constant of the gradient).
pub fn softmax_last_dim_differentiable(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// The scores q·kᵀ/√hd [B, H, T, T] of grouped-query attention (query head h reads kv head h / (H / Hkv)), from a
/// product under the backend's precision, and the values expanded to the H heads.
pub fn attention_scores<K: Kernels + ?Sized>(
    k: &K,
    q: &Tensor,
    kk: &Tensor,
    v: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (b, h, t, hd) = q.dims4()?;
    let hkv = kk.dim(1)?;
    let (kk, v) = if hkv != h {
        let expand = |z: &Tensor| -> Result<Tensor> {
            z.unsqueeze(2)?
                .expand((b, hkv, h / hkv, t, hd))?
                .reshape((b, h, t, hd))
        };
        (expand(kk)?, expand(v)?)
    } else {
        (kk.contiguous()?, v.contiguous()?)
    };
    let scores = (k.matmul(&q.contiguous()?, &kk.t()?)? * (1.0 / (hd as f64).sqrt()))?;
    Ok((scores, v))
}

/// Attention as the product of the causal probabilities and the values.
pub fn causal_attention<K: Kernels + ?Sized>(
    k: &K,
    q: &Tensor,
    kk: &Tensor,
    v: &Tensor,
    pass: Pass,
) -> Result<Tensor> {
    let (p, v) = k.causal_probabilities(q, kk, v, pass)?;
    k.matmul(&p, &v)
}

/// [T, T] with 0 on and below the diagonal and −∞ above it.
pub fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)
}

/// `c · tanh(z / c)` over a tensor of logits.
pub fn softcap(z: &Tensor, cap: f64) -> Result<Tensor> {
    (z / cap)?.tanh()? * cap
}

/// The soft-capped cross-entropy as a composition: logsumexp of the capped row minus its target's capped logit.
pub fn capped_token_losses(z: &Tensor, targets: &Tensor, cap: f64) -> Result<Tensor> {
    let v = z.dim(D::Minus1)?;
    let targets = targets.flatten_all()?;
    let z = z.reshape(((), v))?;
    let logits = softcap(&z, cap)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let lse = (logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &max)?;
    let picked = logits.gather(&targets.unsqueeze(1)?, D::Minus1)?;
    (lse - picked)?.squeeze(1)
}
