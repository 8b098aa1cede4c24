//! The challenge's baseline GPT (root `train_gpt.py`), operation by operation:
//! embedding → RMSNorm → U-Net halves of blocks (skip_weights) → final RMSNorm → tied/untied head → tanh soft-cap.
//! Each block: x = resid_mix[0]·x + resid_mix[1]·x0; x += attn_scale·Attn(rmsnorm(x)); x += mlp_scale·MLP(rmsnorm(x)).
//! Attention: q,k,v projections, per-head RMSNorm of q and k, half-split RoPE, per-head q_gain, grouped-query causal
//! softmax attention (scale 1/√head_dim), output projection. MLP: relu(x·fcᵀ)² · projᵀ.

use candle_core::{DType, Device, Tensor};

use super::Result;
use super::attention::{AttentionShape, causal_attention};
use super::config::ModelConfig;
use super::weights::StateDict;

/// `F.rms_norm` with eps=None uses FLT_EPSILON.
pub const RMS_NORM_EPS: f32 = f32::EPSILON;

struct Attention {
    c_q: Tensor,
    c_k: Tensor,
    c_v: Tensor,
    proj: Tensor,
    /// [1, H, 1, 1]
    q_gain: Tensor,
}

struct Mlp {
    fc: Tensor,
    proj: Tensor,
}

struct Block {
    attn: Attention,
    mlp: Mlp,
    /// [d]
    attn_scale: Tensor,
    mlp_scale: Tensor,
    /// rows 0 and 1 of resid_mix, each [d]
    mix_x: Tensor,
    mix_x0: Tensor,
}

/// The forward pass. Built from a checked state dict on a device and dtype; the output logits are always f32.
pub struct Gpt {
    pub cfg: ModelConfig,
    device: Device,
    dtype: DType,
    tok_emb: Tensor,
    lm_head: Option<Tensor>,
    /// [n_skip, d]
    skip_weights: Vec<Tensor>,
    blocks: Vec<Block>,
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

impl Gpt {
    pub fn new(
        cfg: ModelConfig,
        mut state: StateDict,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let mut take = |name: &str| -> Result<Tensor> {
            Ok(state
                .remove(name)
                .expect("checked by check_state_dict")
                .to_device(device)?
                .to_dtype(dtype)?)
        };
        let tok_emb = take("tok_emb.weight")?;
        let lm_head = if cfg.tie_embeddings {
            None
        } else {
            Some(take("lm_head.weight")?)
        };
        let skip = take("skip_weights")?;
        let skip_weights = (0..cfg.num_skip_weights())
            .map(|i| skip.get(i))
            .collect::<candle_core::Result<_>>()?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let b = format!("blocks.{i}");
            let resid_mix = take(&format!("{b}.resid_mix"))?;
            blocks.push(Block {
                attn: Attention {
                    c_q: take(&format!("{b}.attn.c_q.weight"))?,
                    c_k: take(&format!("{b}.attn.c_k.weight"))?,
                    c_v: take(&format!("{b}.attn.c_v.weight"))?,
                    proj: take(&format!("{b}.attn.proj.weight"))?,
                    q_gain: take(&format!("{b}.attn.q_gain"))?.reshape((1, cfg.num_heads, 1, 1))?,
                },
                mlp: Mlp {
                    fc: take(&format!("{b}.mlp.fc.weight"))?,
                    proj: take(&format!("{b}.mlp.proj.weight"))?,
                },
                attn_scale: take(&format!("{b}.attn_scale"))?,
                mlp_scale: take(&format!("{b}.mlp_scale"))?,
                mix_x: resid_mix.get(0)?,
                mix_x0: resid_mix.get(1)?,
            });
        }
        Ok(Gpt {
            ones_model: Tensor::ones(cfg.model_dim, dtype, device)?,
            ones_head: Tensor::ones(cfg.head_dim(), dtype, device)?,
            cfg,
            device: device.clone(),
            dtype,
            tok_emb,
            lm_head,
            skip_weights,
            blocks,
        })
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

    fn rms_norm(&self, x: &Tensor, ones: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            ones,
            RMS_NORM_EPS,
        )?)
    }

    /// Logits [B, T, V] (f32, soft-capped) for token ids [B, T] (u32).
    pub fn logits(&self, ids: &Tensor) -> Result<Tensor> {
        let c = self.cfg.logit_softcap;
        Ok(((self.uncapped_logits(ids)? / c)?.tanh()? * c)?)
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
        let (b, t) = ids.dims2()?;
        let cfg = &self.cfg;
        let x = self
            .tok_emb
            .embedding(&ids.flatten_all()?)?
            .reshape((b, t, cfg.model_dim))?;
        let x0 = self.rms_norm(&x, &self.ones_model)?;
        let (cos, neg_sin) = {
            let (c, s) = self.rope_tables(t)?;
            (c, s.neg()?)
        };
        let mut x = x0.clone();
        let mut skips = Vec::with_capacity(cfg.num_encoder_layers());
        for i in 0..cfg.num_encoder_layers() {
            x = self.block(&self.blocks[i], &x, &x0, &cos, &neg_sin)?;
            skips.push(x.clone());
        }
        for j in 0..cfg.num_decoder_layers() {
            if let Some(skip) = skips.pop() {
                x = (x + skip.broadcast_mul(&self.skip_weights[j])?)?;
            }
            x = self.block(
                &self.blocks[cfg.num_encoder_layers() + j],
                &x,
                &x0,
                &cos,
                &neg_sin,
            )?;
        }
        let x = self.rms_norm(&x, &self.ones_model)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.tok_emb);
        Ok(linear(&x, head)?.to_dtype(DType::F32)?)
    }

    fn block(
        &self,
        blk: &Block,
        x: &Tensor,
        x0: &Tensor,
        cos: &Tensor,
        neg_sin: &Tensor,
    ) -> Result<Tensor> {
        let x = (x.broadcast_mul(&blk.mix_x)? + x0.broadcast_mul(&blk.mix_x0)?)?;
        let a = self.attention(
            &blk.attn,
            &self.rms_norm(&x, &self.ones_model)?,
            cos,
            neg_sin,
        )?;
        let x = (&x + a.broadcast_mul(&blk.attn_scale)?)?;
        let h = linear(&self.rms_norm(&x, &self.ones_model)?, &blk.mlp.fc)?
            .relu()?
            .sqr()?;
        let m = linear(&h, &blk.mlp.proj)?;
        Ok((x + m.broadcast_mul(&blk.mlp_scale)?)?)
    }

    fn attention(
        &self,
        a: &Attention,
        x: &Tensor,
        cos: &Tensor,
        neg_sin: &Tensor,
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
        let q = self.rms_norm(&heads(&a.c_q, h)?, &self.ones_head)?;
        let k = self.rms_norm(&heads(&a.c_k, hkv)?, &self.ones_head)?;
        let v = heads(&a.c_v, hkv)?;
        // The reference rotates with [x1·cos + x2·sin, −x1·sin + x2·cos]: candle's half-split rope with −sin.
        let q = candle_nn::rotary_emb::rope(&q, cos, neg_sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, neg_sin)?;
        let q = q.broadcast_mul(&a.q_gain)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let y = if self.device.is_cpu() && self.dtype == DType::F32 {
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
            let mask = causal_mask(t, &self.device, self.dtype)?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
            candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?
        };
        let y = y.transpose(1, 2)?.reshape((b, t, d))?;
        linear(&y, &a.proj)
    }
}

/// [T, T] with 0 on and below the diagonal and −∞ above it.
fn causal_mask(t: usize, device: &Device, dtype: DType) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(mask, (t, t), device)?.to_dtype(dtype)?)
}
