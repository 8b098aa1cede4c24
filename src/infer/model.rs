//! The challenge's baseline GPT (root `train_gpt.py`), operation by operation:
//! embedding → RMSNorm → U-Net halves of blocks (skip_weights) → final RMSNorm → tied/untied head → tanh soft-cap.
//! Each block: x = resid_mix[0]·x + resid_mix[1]·x0; x += attn_scale·Attn(rmsnorm(x)); x += mlp_scale·MLP(rmsnorm(x)).
//! Attention: q,k,v projections, per-head RMSNorm of q and k, half-split RoPE, per-head q_gain, grouped-query causal
//! softmax attention (scale 1/√head_dim), output projection. MLP: relu(x·fcᵀ)² · projᵀ.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor, Var};

use super::Result;
use super::attention::{AttentionShape, causal_attention};
use super::config::ModelConfig;
use super::weights::StateDict;

/// `F.rms_norm` with eps=None uses FLT_EPSILON.
pub const RMS_NORM_EPS: f32 = f32::EPSILON;

/// Which kernels a forward pass uses: `Score` the fastest ones (no gradients: fused RMSNorm and RoPE, the blocked
/// CPU attention), `Train` a composition of differentiable candle operations, so `backward()` reaches every weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Score,
    Train,
}

/// Positions of one block's tensors in [`Gpt`]'s parameter list.
struct BlockParams {
    attn_scale: usize,
    mlp_scale: usize,
    /// [2, d]: row 0 mixes the stream, row 1 the embedding x0.
    resid_mix: usize,
    c_q: usize,
    c_k: usize,
    c_v: usize,
    attn_proj: usize,
    /// [H]
    q_gain: usize,
    fc: usize,
    mlp_proj: usize,
}

/// The forward pass. Built from a checked state dict on a device and dtype; the output logits are always f32.
/// The weights are kept as one list in the challenge's state-dict order ([`ModelConfig::expected_tensors`]), so
/// callers can enumerate, hash, or make them trainable by name.
pub struct Gpt {
    pub cfg: ModelConfig,
    device: Device,
    dtype: DType,
    names: Vec<String>,
    params: Vec<Tensor>,
    tok_emb: usize,
    lm_head: Option<usize>,
    /// [n_skip, d]
    skip_weights: usize,
    blocks: Vec<BlockParams>,
    /// Ones of [d] and [head_dim], the weights of candle's fused RMSNorm.
    ones_model: Tensor,
    ones_head: Tensor,
}

fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    // F.linear(x, W) = x · Wᵀ, as one [rows, in] × [in, out] product over all leading dimensions.
    let dims = x.dims();
    let (inner, rows) = (dims[dims.len() - 1], x.elem_count() / dims[dims.len() - 1]);
    let y = x.reshape((rows, inner))?.matmul(&w.t()?)?;
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("at least one dimension") = w.dim(0)?;
    Ok(y.reshape(out_dims)?)
}

/// Softmax over the last dimension from differentiable operations (the max shift is a constant of the gradient).
fn softmax_last_dim_differentiable(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

impl Gpt {
    pub fn new(
        cfg: ModelConfig,
        mut state: StateDict,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let mut names = Vec::new();
        let mut params = Vec::new();
        for (name, _) in cfg.expected_tensors() {
            let t = state
                .remove(&name)
                .expect("checked by check_state_dict")
                .to_device(device)?
                .to_dtype(dtype)?;
            names.push(name);
            params.push(t);
        }
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let at = |name: &str| index[name];
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                let b = format!("blocks.{i}");
                BlockParams {
                    attn_scale: at(&format!("{b}.attn_scale")),
                    mlp_scale: at(&format!("{b}.mlp_scale")),
                    resid_mix: at(&format!("{b}.resid_mix")),
                    c_q: at(&format!("{b}.attn.c_q.weight")),
                    c_k: at(&format!("{b}.attn.c_k.weight")),
                    c_v: at(&format!("{b}.attn.c_v.weight")),
                    attn_proj: at(&format!("{b}.attn.proj.weight")),
                    q_gain: at(&format!("{b}.attn.q_gain")),
                    fc: at(&format!("{b}.mlp.fc.weight")),
                    mlp_proj: at(&format!("{b}.mlp.proj.weight")),
                }
            })
            .collect();
        Ok(Gpt {
            tok_emb: at("tok_emb.weight"),
            lm_head: (!cfg.tie_embeddings).then(|| at("lm_head.weight")),
            skip_weights: at("skip_weights"),
            blocks,
            ones_model: Tensor::ones(cfg.model_dim, dtype, device)?,
            ones_head: Tensor::ones(cfg.head_dim(), dtype, device)?,
            cfg,
            device: device.clone(),
            dtype,
            names,
            params,
        })
    }

    /// Every weight with its state-dict name, in the challenge's order.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(|n| n.as_str()).zip(&self.params)
    }

    /// Turns the weights `selected` by name into candle variables (the model then reads them, so updating a
    /// variable in place updates the model) and returns them in the challenge's order; the others stay constants.
    pub fn make_trainable(
        &mut self,
        selected: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, Var)>> {
        let mut vars = Vec::new();
        for (name, t) in self.names.iter().zip(self.params.iter_mut()) {
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

    /// Replaces the weight `name` by `t` (same shape) and returns what it held; the trainer swaps fake-quantized
    /// weights in and out this way.
    pub fn set_parameter(&mut self, name: &str, t: Tensor) -> Result<Tensor> {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no weight named {name}")))?;
        if t.dims() != self.params[i].dims() {
            return Err(candle_core::Error::Msg(format!(
                "{name}: shape {:?} does not match {:?}",
                t.dims(),
                self.params[i].dims()
            ))
            .into());
        }
        Ok(std::mem::replace(&mut self.params[i], t))
    }

    fn p(&self, i: usize) -> &Tensor {
        &self.params[i]
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// RoPE tables for positions 0..T: inv_freq[i] = base^(−2i/hd), freqs = t ⊗ inv_freq computed in f32, as the
    /// reference's `Rotary` does; returned as (cos, sin) of [T, hd/2] in the model dtype.
    fn rope_tables(&self, seq_len: usize) -> Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim();
        let base = self.cfg.rope_base as f32;
        let inv_freq: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / hd as f32))
            .collect();
        let mut freqs = Vec::with_capacity(seq_len * hd / 2);
        for t in 0..seq_len {
            for f in &inv_freq {
                freqs.push(t as f32 * f);
            }
        }
        let freqs = Tensor::from_vec(freqs, (seq_len, hd / 2), &self.device)?;
        Ok((
            freqs.cos()?.to_dtype(self.dtype)?,
            freqs.sin()?.to_dtype(self.dtype)?,
        ))
    }

    fn rms_norm(&self, x: &Tensor, ones: &Tensor, pass: Pass) -> Result<Tensor> {
        Ok(match pass {
            Pass::Score => candle_nn::ops::rms_norm(&x.contiguous()?, ones, RMS_NORM_EPS)?,
            Pass::Train if self.fused_training_ops() => super::ops::rms_norm(x, RMS_NORM_EPS)?,
            Pass::Train => {
                // x · rsqrt(mean(x²) + eps), as F.rms_norm.
                let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
                x.broadcast_mul(&(ms + RMS_NORM_EPS as f64)?.sqrt()?.recip()?)?
            }
        })
    }

    /// The training pass on the CPU in f32 uses the hand-differentiated operations of [`super::ops`].
    fn fused_training_ops(&self) -> bool {
        self.device.is_cpu() && self.dtype == DType::F32
    }

    /// `x · s` with a per-channel vector `s` [d].
    fn channel_scale(&self, x: &Tensor, s: &Tensor, pass: Pass) -> Result<Tensor> {
        Ok(if pass == Pass::Train && self.fused_training_ops() {
            super::ops::channel_scale(x, s)?
        } else {
            x.broadcast_mul(s)?
        })
    }

    /// Logits [B, T, V] (f32, soft-capped) for token ids [B, T] (u32).
    pub fn logits(&self, ids: &Tensor) -> Result<Tensor> {
        self.softcap_tensor(&self.uncapped_logits(ids)?)
    }

    fn softcap_tensor(&self, z: &Tensor) -> Result<Tensor> {
        let c = self.cfg.logit_softcap;
        Ok(((z / c)?.tanh()? * c)?)
    }

    /// The soft-cap `c · tanh(z / c)` applied to one uncapped logit, in f32 as the reference computes it.
    #[inline]
    pub fn softcap(&self, z: f32) -> f32 {
        let c = self.cfg.logit_softcap as f32;
        c * (z / c).tanh()
    }

    /// The head's output [B, T, V] (f32) before the soft-cap, for callers that fuse the cap with their own pass
    /// over the logits.
    pub fn uncapped_logits(&self, ids: &Tensor) -> Result<Tensor> {
        self.head(&self.final_hidden(ids, Pass::Score)?)
    }

    /// The head applied to final hidden states [.., d]: uncapped logits in f32.
    pub fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        let head = self.p(self.lm_head.unwrap_or(self.tok_emb));
        Ok(linear(hidden, head)?.to_dtype(DType::F32)?)
    }

    /// The mean cross-entropy of the soft-capped logits against `targets` [B, T] (u32), differentiable with respect
    /// to every trainable weight: the reference's `GPT.forward(x, y)`.
    pub fn train_loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let z = self.head(&self.final_hidden(ids, Pass::Train)?)?;
        let v = z.dim(D::Minus1)?;
        let z = z.reshape(((), v))?;
        let targets = targets.flatten_all()?;
        if self.device.is_cpu() {
            let cap = self.cfg.logit_softcap as f32;
            return Ok(super::loss::capped_cross_entropy_rows(&z, &targets, cap)?.mean_all()?);
        }
        let logits = self.softcap_tensor(&z)?;
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let lse = (logits
            .broadcast_sub(&max)?
            .exp()?
            .sum_keepdim(D::Minus1)?
            .log()?
            + &max)?;
        let picked = logits.gather(&targets.unsqueeze(1)?, D::Minus1)?;
        Ok((lse - picked)?.mean_all()?)
    }

    /// The final hidden states [B, T, d] (after the last RMSNorm) for token ids [B, T] (u32).
    pub fn final_hidden(&self, ids: &Tensor, pass: Pass) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let cfg = &self.cfg;
        let x = self
            .p(self.tok_emb)
            .embedding(&ids.flatten_all()?)?
            .reshape((b, t, cfg.model_dim))?;
        let x0 = self.rms_norm(&x, &self.ones_model, pass)?;
        let (cos, neg_sin) = {
            let (c, s) = self.rope_tables(t)?;
            (c, s.neg()?)
        };
        let mut x = x0.clone();
        let mut skips = Vec::with_capacity(cfg.num_encoder_layers());
        for i in 0..cfg.num_encoder_layers() {
            x = self.block(&self.blocks[i], &x, &x0, &cos, &neg_sin, pass)?;
            skips.push(x.clone());
        }
        for j in 0..cfg.num_decoder_layers() {
            if let Some(skip) = skips.pop() {
                x = (x + self.channel_scale(&skip, &self.p(self.skip_weights).get(j)?, pass)?)?;
            }
            x = self.block(
                &self.blocks[cfg.num_encoder_layers() + j],
                &x,
                &x0,
                &cos,
                &neg_sin,
                pass,
            )?;
        }
        self.rms_norm(&x, &self.ones_model, pass)
    }

    fn block(
        &self,
        blk: &BlockParams,
        x: &Tensor,
        x0: &Tensor,
        cos: &Tensor,
        neg_sin: &Tensor,
        pass: Pass,
    ) -> Result<Tensor> {
        let mix = self.p(blk.resid_mix);
        let x = (self.channel_scale(x, &mix.get(0)?, pass)?
            + self.channel_scale(x0, &mix.get(1)?, pass)?)?;
        let a = self.attention(
            blk,
            &self.rms_norm(&x, &self.ones_model, pass)?,
            cos,
            neg_sin,
            pass,
        )?;
        let x = (&x + self.channel_scale(&a, self.p(blk.attn_scale), pass)?)?;
        let h = linear(&self.rms_norm(&x, &self.ones_model, pass)?, self.p(blk.fc))?
            .relu()?
            .sqr()?;
        let m = linear(&h, self.p(blk.mlp_proj))?;
        Ok((x + self.channel_scale(&m, self.p(blk.mlp_scale), pass)?)?)
    }

    fn attention(
        &self,
        blk: &BlockParams,
        x: &Tensor,
        cos: &Tensor,
        neg_sin: &Tensor,
        pass: Pass,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t, d) = x.dims3()?;
        let (h, hkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim());
        let heads = |w: &Tensor, n: usize| -> Result<Tensor> {
            Ok(linear(x, w)?
                .reshape((b, t, n, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = self.rms_norm(&heads(self.p(blk.c_q), h)?, &self.ones_head, pass)?;
        let k = self.rms_norm(&heads(self.p(blk.c_k), hkv)?, &self.ones_head, pass)?;
        let v = heads(self.p(blk.c_v), hkv)?;
        // The reference rotates with [x1·cos + x2·sin, −x1·sin + x2·cos]: candle's half-split rope with −sin.
        let rope = |z: &Tensor| -> Result<Tensor> {
            Ok(match pass {
                Pass::Score => candle_nn::rotary_emb::rope(z, cos, neg_sin)?,
                Pass::Train if self.fused_training_ops() => {
                    super::ops::rope(z, cos, &neg_sin.neg()?)?
                }
                Pass::Train => candle_nn::rotary_emb::rope_slow(z, cos, neg_sin)?,
            })
        };
        let q = rope(&q)?;
        let k = rope(&k)?;
        let q = q.broadcast_mul(&self.p(blk.q_gain).reshape((1, h, 1, 1))?)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let y = if pass == Pass::Score && self.device.is_cpu() && self.dtype == DType::F32 {
            let shape = AttentionShape {
                batch: b,
                heads: h,
                kv_heads: hkv,
                seq_len: t,
                head_dim: hd,
            };
            let flat = |z: &Tensor| z.flatten_all().and_then(|z| z.to_vec1::<f32>());
            let y = causal_attention(&flat(&q)?, &flat(&k)?, &flat(&v)?, shape, scale as f32);
            Tensor::from_vec(y, (b, h, t, hd), &self.device)?
        } else {
            // Grouped-query: query head h reads kv head h / (H / Hkv).
            let (k, v) = if hkv != h {
                let rep = h / hkv;
                let expand = |z: Tensor| -> Result<Tensor> {
                    Ok(z.unsqueeze(2)?
                        .expand((b, hkv, rep, t, hd))?
                        .reshape((b, h, t, hd))?)
                };
                (expand(k)?, expand(v)?)
            } else {
                (k, v)
            };
            let scores = (q.matmul(&k.t()?)? * scale)?;
            let p = if self.device.is_cpu() && self.dtype == DType::F32 {
                super::attention::causal_softmax(&scores)?
            } else {
                let masked = scores.broadcast_add(&causal_mask(t, &self.device, self.dtype)?)?;
                match pass {
                    Pass::Score => candle_nn::ops::softmax_last_dim(&masked)?,
                    Pass::Train => softmax_last_dim_differentiable(&masked)?,
                }
            };
            p.matmul(&v)?
        };
        let y = y.transpose(1, 2)?.reshape((b, t, d))?;
        linear(&y, self.p(blk.attn_proj))
    }
}

/// [T, T] with 0 on and below the diagonal and −∞ above it.
fn causal_mask(t: usize, device: &Device, dtype: DType) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(mask, (t, t), device)?.to_dtype(dtype)?)
}
