//! Layers the records' GPT and seed 001's JEPA both build from: linear products under a precision, RMSNorm, RoPE
//! tables and rotation, per-channel scales, grouped-query causal attention, evaluation-time fake quantization, and the
//! turning of named weights into trainable variables. Each takes a [`Pass`]: `Score` may use the fused CPU kernels,
//! `Train` is differentiable.

use candle_core::{D, DType, Device, Tensor, Var};

use super::Result;
use super::attention::{AttentionShape, causal_attention};
use super::fused::with_values;
use super::precision::Precision;

/// The BOS token id of every tokenizer the challenge uses.
pub const BOS_ID: u32 = 1;

/// `F.rms_norm` with eps=None uses FLT_EPSILON.
pub const RMS_NORM_EPS: f32 = f32::EPSILON;

/// Which kernels a forward pass uses: `Score` the fastest ones (no gradients: fused RMSNorm and RoPE, the blocked
/// CPU attention), `Train` a composition of differentiable candle operations, so `backward()` reaches every weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Score,
    Train,
}

pub(crate) fn linear(x: &Tensor, w: &Tensor, precision: Precision) -> Result<Tensor> {
    linear_prepacked(x, w, None, precision)
}

/// [`linear`], with W's AMX packing made once by the caller where it has one ([`super::amx::PackedB::from_nk`] of
/// W's values; used only on the mixed-precision tile path).
pub(crate) fn linear_prepacked(
    x: &Tensor,
    w: &Tensor,
    packed: Option<&super::amx::PackedB>,
    precision: Precision,
) -> Result<Tensor> {
    // F.linear(x, W) = x · Wᵀ, as one [rows, in] × [in, out] product over all leading dimensions.
    let dims = x.dims();
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("at least one dimension") = w.dim(0)?;
    if let Some(values) = linear_forward_values(x, w, packed, precision)? {
        return Ok(Tensor::from_vec(values, out_dims, x.device())?);
    }
    if precision == Precision::Fp32 && super::fused::applies(&[x, w]) && w.rank() == 2 {
        // A tracked product (training): one differentiable node on the gemm crate.
        return Ok(super::ops::linear(x, w)?);
    }
    let (inner, rows) = (dims[dims.len() - 1], x.elem_count() / dims[dims.len() - 1]);
    let y = precision.matmul(&x.reshape((rows, inner))?, &w.t()?)?;
    Ok(y.reshape(out_dims)?)
}

/// The values of `F.linear(x, W)` (row-major, x's leading dimensions by W's rows) from the forward-only CPU
/// kernels, where they apply: CPU f32 tensors that no gradient tracks, in f32 on the `gemm` crate, under mixed
/// precision on AMX tiles (where the CPU has them; from `packed`, W's packing, where the caller has it). None: the
/// caller composes candle's product.
pub(crate) fn linear_forward_values(
    x: &Tensor,
    w: &Tensor,
    packed: Option<&super::amx::PackedB>,
    precision: Precision,
) -> Result<Option<Vec<f32>>> {
    let on_tiles = precision == Precision::Mixed && super::amx::available();
    // An activation a fused kernel already wrote in bf16 for the tiles.
    let bf16_input = on_tiles && x.dtype() == DType::BF16 && x.device().is_cpu();
    let forward_only = (super::fused::applies(&[x, w])
        || bf16_input && super::fused::applies(&[w]))
        && !x.track_op()
        && !w.track_op();
    let kernel = precision == Precision::Fp32 || on_tiles;
    if !forward_only || !kernel || w.rank() != 2 || x.rank() == 0 {
        return Ok(None);
    }
    let inner = *x.dims().last().expect("rank checked");
    let (out, w_inner) = w.dims2()?;
    if inner != w_inner {
        return Ok(None); // candle's product reports the mismatch
    }
    let rows = x.elem_count() / inner.max(1);
    if !on_tiles {
        return with_values(x, |xs| {
            with_values(w, |ws| {
                Ok(Some(super::fused::linear_f32(xs, ws, rows, out, inner)))
            })
        });
    }
    // The same rule as candle's bf16 product, on AMX tiles, with W's packing: the caller's where it has one of W's
    // shape, else made here.
    let made_here;
    let tiles = match packed.filter(|p| p.dims() == (out, inner)) {
        Some(p) => p,
        None => {
            made_here = with_values(w, |ws| Ok(super::amx::PackedB::from_nk(ws, out, inner)))?;
            &made_here
        }
    };
    if bf16_input {
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        else {
            return Ok(None);
        };
        let values = &cpu.as_slice::<half::bf16>()?[start..end];
        // SAFETY: half::bf16 is a transparent u16 (its bits).
        let xs = unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u16, values.len()) };
        return Ok(Some(super::amx::matmul_bt_bf16_packed(xs, tiles, rows)));
    }
    with_values(x, |xs| {
        Ok(Some(super::amx::matmul_bt_packed(xs, tiles, rows)))
    })
}

/// Softmax over the last dimension from differentiable operations (the max shift is a constant of the gradient).
pub(crate) fn softmax_last_dim_differentiable(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Turns the weights `selected` by name into candle variables (the list then holds the variables' tensors, so
/// updating a variable in place updates the model) and returns them in list order; the others become constants.
pub(crate) fn make_trainable(
    names: &[String],
    params: &mut [Tensor],
    selected: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, Var)>> {
    let mut vars = Vec::new();
    for (name, t) in names.iter().zip(params.iter_mut()) {
        if selected(name) {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            vars.push((name.clone(), var));
        } else {
            *t = t.detach();
        }
    }
    Ok(vars)
}

/// RoPE tables for positions 0..T over `rd` rotated dims with base `base`: inv_freq[i] = base^(−2i/rd) and
/// freqs = t ⊗ inv_freq in f32, as the records' `Rotary`; (cos, sin) of [T, rd/2] in f32.
pub(crate) fn rope_tables(
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

/// `F.rms_norm` over the last dimension (eps = FLT_EPSILON). `fused`: the hand-differentiated CPU f32 kernel for
/// training passes.
pub(crate) fn rms_norm(x: &Tensor, ones: &Tensor, pass: Pass, fused: bool) -> Result<Tensor> {
    Ok(match pass {
        Pass::Score => candle_nn::ops::rms_norm(&x.contiguous()?, ones, RMS_NORM_EPS)?,
        Pass::Train if fused => super::ops::rms_norm(x, RMS_NORM_EPS)?,
        Pass::Train => {
            // x · rsqrt(mean(x²) + eps), as F.rms_norm.
            let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
            x.broadcast_mul(&(ms + RMS_NORM_EPS as f64)?.sqrt()?.recip()?)?
        }
    })
}

/// `x · s` with a per-channel vector `s` [d].
pub(crate) fn channel_scale(x: &Tensor, s: &Tensor, pass: Pass, fused: bool) -> Result<Tensor> {
    Ok(if pass == Pass::Train && fused {
        super::ops::channel_scale(x, s)?
    } else {
        x.broadcast_mul(s)?
    })
}

/// Half-split RoPE over all of the last dimension of z [B, H, T, hd] with tables [T, hd/2].
pub(crate) fn rope(
    z: &Tensor,
    cos: &Tensor,
    neg_sin: &Tensor,
    pass: Pass,
    fused: bool,
) -> Result<Tensor> {
    let z = z.contiguous()?;
    Ok(match pass {
        Pass::Score => candle_nn::rotary_emb::rope(&z, cos, neg_sin)?,
        Pass::Train if fused => super::ops::rope(&z, cos, &neg_sin.neg()?)?,
        Pass::Train => candle_nn::rotary_emb::rope_slow(&z, cos, neg_sin)?,
    })
}

/// Causal grouped-query softmax attention of q [B, H, T, hd] over k, v [B, Hkv, T, hd] (scale 1/√hd): the blocked
/// CPU kernel when scoring with `cpu_kernels` (under mixed precision on bf16-rounded operands), the explicit
/// softmax otherwise (its two products under `precision`).
pub(crate) fn grouped_causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pass: Pass,
    precision: Precision,
    cpu_kernels: bool,
) -> Result<Tensor> {
    let (b, h, t, hd) = q.dims4()?;
    if pass == Pass::Score && cpu_kernels {
        let shape = AttentionShape {
            batch: b,
            heads: h,
            kv_heads: k.dim(1)?,
            seq_len: t,
            head_dim: hd,
        };
        let mixed = precision == Precision::Mixed;
        // Both products read bf16 operands: on AMX the kernel's packing rounds q, k and v; for its f32 products
        // they are rounded here (the probabilities are rounded in the kernel either way).
        let round_here = mixed && !super::amx::available();
        let rounded = |z: &Tensor| -> Result<Tensor> {
            let mut values = z.flatten_all()?.to_vec1::<f32>()?;
            super::attention::round_to_bf16(&mut values);
            Ok(Tensor::from_vec(values, z.shape(), z.device())?)
        };
        let (q, k, v) = if round_here {
            (rounded(q)?, rounded(k)?, rounded(v)?)
        } else {
            (q.clone(), k.clone(), v.clone())
        };
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let y = with_values(&q, |q| {
            with_values(&k, |k| {
                with_values(&v, |v| Ok(causal_attention(q, k, v, shape, scale, mixed)))
            })
        })?;
        // Returned as a [B, H, T, hd] view of [B, T, H, hd] values (transposed here over all threads): the caller
        // takes the heads back to [B, T, H·hd] for the output projection, which then reads them in place.
        let by_position = super::fused::heads_to_positions(&y, b, h, t, hd);
        return Ok(Tensor::from_vec(by_position, (b, t, h, hd), q.device())?.transpose(1, 2)?);
    }
    if cpu_kernels
        && precision == Precision::Fp32
        && t * hd > 0
        && super::fused::applies(&[q, k, v])
    {
        // A tracked pass: one differentiable node, blocked over queries (the composition's values to f32 rounding).
        let scale = 1.0 / (hd as f64).sqrt();
        return Ok(super::attention_grad::causal_attention(q, k, v, scale)?);
    }
    let (p, v) = causal_probabilities(q, k, v, pass, precision, cpu_kernels)?;
    precision.matmul(&p, &v)
}

/// The causal softmax A = softmax(q·kᵀ/√hd) [B, H, T, T] with grouped-query keys (query head h reads kv head
/// h / (H / Hkv)), and the values expanded to the H heads. The scores come from a product under `precision`; the
/// softmax is f32.
pub(crate) fn causal_probabilities(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pass: Pass,
    precision: Precision,
    cpu_kernels: bool,
) -> Result<(Tensor, Tensor)> {
    let (b, h, t, hd) = q.dims4()?;
    let hkv = k.dim(1)?;
    let (k, v) = if hkv != h {
        let expand = |z: &Tensor| -> Result<Tensor> {
            Ok(z.unsqueeze(2)?
                .expand((b, hkv, h / hkv, t, hd))?
                .reshape((b, h, t, hd))?)
        };
        (expand(k)?, expand(v)?)
    } else {
        (k.contiguous()?, v.contiguous()?)
    };
    let scores = (precision.matmul(&q.contiguous()?, &k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
    let p = if cpu_kernels {
        super::attention::causal_softmax(&scores)?
    } else {
        let masked = scores.broadcast_add(&causal_mask(t, q.device())?)?;
        match pass {
            Pass::Score => candle_nn::ops::softmax_last_dim(&masked)?,
            Pass::Train => softmax_last_dim_differentiable(&masked)?,
        }
    };
    Ok((p, v))
}

/// The clip range of seed 004's evaluation-time fake quantization for a weight, if it gets one: its CastedLinear
/// weights (attention and MLP matrices, the bigram projection, an untied head) with more than 8192 elements;
/// 15 for the MLP, 31 otherwise.
pub(crate) fn fake_quant_clip(name: &str, numel: usize) -> Option<f32> {
    let casted = name.ends_with(".attn.c_q.weight")
        || name.ends_with(".attn.c_k.weight")
        || name.ends_with(".attn.c_v.weight")
        || name.ends_with(".attn.proj.weight")
        || name.ends_with(".mlp.fc.weight")
        || name.ends_with(".mlp.proj.weight")
        || name == "bigram.proj.weight"
        || name == "lm_head.weight";
    if !casted || numel <= 8192 {
        return None;
    }
    Some(if name.contains(".mlp.") { 15.0 } else { 31.0 })
}

/// `_ste_fake_quantize` as its forward computes it in f32: s = max(rowmax|w|/c, 1e−12), q = clamp(round(w/s), −c, c)
/// (round half to even, as torch.round), and w + (q·s − w), the straight-through form, evaluated as written.
pub(crate) fn fake_quantize_rows(w: &Tensor, clip: f32) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let dtype = w.dtype();
    let values = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(values.len());
    for row in values.chunks(cols) {
        let row_max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = (row_max / clip).max(1e-12);
        out.extend(row.iter().map(|&v| {
            let q = (v / scale).round_ties_even().clamp(-clip, clip);
            v + (q * scale - v)
        }));
    }
    Ok(Tensor::from_vec(out, (rows, cols), w.device())?.to_dtype(dtype)?)
}

/// [T, T] with 0 on and below the diagonal and −∞ above it.
fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(mask, (t, t), device)?)
}
