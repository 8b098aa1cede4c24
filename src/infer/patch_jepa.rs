//! Seed 001 (PR #696, architectures §2.2): a byte-level JEPA encoder–decoder. Bytes are grouped into patches of P;
//! a patch encoder (blocks looped R times over the patch sequence, causal across patches) produces one context per
//! patch; a predictor maps the context of patch p − 1 to a latent that conditions every byte of patch p; a causal
//! byte decoder reads the previous byte plus that condition and predicts the byte.
//!
//! The seed's `forward_logits(x, y)` runs on full = [x_0, y_0 .. y_{T−1}] (T + 1 a multiple of P) and logits[j]
//! predicts full[j] from full[..j]; its NLL of y_j is logits[j + 1]. So output j + 1 reads x_0..x_j only, and pgolf
//! runs it as a causal model of the inputs alone: full = the inputs, zero-padded past the end to a multiple of P
//! (positions after the last input never reach an earlier output), and output p = logits[p + 1].

use std::path::Path;

use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::layers::{BOS_ID, make_trainable};
use super::lm::CausalLm;
use super::weights::StateDict;
use super::{InferError, Result};
use crate::kernels::compose::rope_tables;
use crate::kernels::{Backend, Kernels, Pass, Precision, RopeTables, Weight};

/// The `architecture` value of a seed-001 config.
pub const ARCHITECTURE: &str = "byte_patch_jepa";

/// The seed's hyperparameters (its env names in the comments).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchJepaConfig {
    /// Always "byte_patch_jepa".
    pub architecture: String,
    /// VOCAB_SIZE (260: byte260).
    pub vocab_size: usize,
    /// MODEL_DIM, shared by encoder and decoder.
    pub model_dim: usize,
    /// NUM_LAYERS: encoder blocks.
    pub encoder_layers: usize,
    /// ENCODER_REPEATS: passes over all encoder blocks.
    pub encoder_repeats: usize,
    /// NUM_HEADS, NUM_KV_HEADS of the encoder.
    pub encoder_heads: usize,
    pub encoder_kv_heads: usize,
    /// DECODER_LAYERS, DECODER_HEADS (the decoder has as many kv heads as heads).
    pub decoder_layers: usize,
    pub decoder_heads: usize,
    /// MLP_MULT (hidden = mlp_mult · model_dim; LeakyReLU(0.5)²).
    pub mlp_mult: usize,
    pub rope_base: f64,
    /// QK_GAIN_INIT (the q_gain tensors carry the trained values).
    pub qk_gain_init: f64,
    /// PATCH_SIZE.
    pub patch_size: usize,
    /// LATENT_DIM.
    pub latent_dim: usize,
    /// TRAIN_SEQ_LEN (the evaluation length; + 1 is a multiple of the patch size).
    pub train_seq_len: usize,
}

impl PatchJepaConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self> {
        super::config::load_config(path, PatchJepaConfig::validate)
    }

    /// Whether a config file's JSON names this architecture.
    pub fn is_named_in(json: &serde_json::Value) -> bool {
        json.get("architecture").and_then(|v| v.as_str()) == Some(ARCHITECTURE)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.architecture != ARCHITECTURE {
            return Err(format!(
                "architecture must be {ARCHITECTURE:?}, got {:?}",
                self.architecture
            ));
        }
        let d = self.model_dim;
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("model_dim", d),
            ("encoder_layers", self.encoder_layers),
            ("encoder_repeats", self.encoder_repeats),
            ("encoder_heads", self.encoder_heads),
            ("encoder_kv_heads", self.encoder_kv_heads),
            ("decoder_layers", self.decoder_layers),
            ("decoder_heads", self.decoder_heads),
            ("mlp_mult", self.mlp_mult),
            ("latent_dim", self.latent_dim),
            ("train_seq_len", self.train_seq_len),
        ];
        for (name, v) in sizes {
            if v == 0 || v > 1 << 20 {
                return Err(format!("{name} {v} is absurd"));
            }
        }
        if self.encoder_repeats > 64 || self.encoder_layers > 256 || self.decoder_layers > 256 {
            return Err("layer counts are absurd".into());
        }
        if !(2..=64).contains(&self.patch_size) {
            return Err(format!(
                "patch_size must be in 2..=64, got {}",
                self.patch_size
            ));
        }
        for (what, heads, kv) in [
            ("encoder", self.encoder_heads, self.encoder_kv_heads),
            ("decoder", self.decoder_heads, self.decoder_heads),
        ] {
            if !d.is_multiple_of(heads)
                || !heads.is_multiple_of(kv)
                || !(d / heads).is_multiple_of(2)
            {
                return Err(format!(
                    "{what}: model_dim {d} with {heads} heads and {kv} kv heads needs whole, even head dims and \
                     heads divisible by kv heads"
                ));
            }
        }
        if !(self.rope_base.is_finite() && self.rope_base > 0.0) {
            return Err("rope_base must be positive".into());
        }
        Ok(())
    }

    fn block_tensors(
        &self,
        prefix: &str,
        heads: usize,
        kv_heads: usize,
    ) -> Vec<(String, Vec<usize>)> {
        let d = self.model_dim;
        let kv = kv_heads * (d / heads);
        let h = self.mlp_mult * d;
        [
            ("attn_scale", vec![d]),
            ("mlp_scale", vec![d]),
            ("resid_mix", vec![2, d]),
            ("attn.q_gain", vec![heads]),
            ("attn.c_q.weight", vec![d, d]),
            ("attn.c_k.weight", vec![kv, d]),
            ("attn.c_v.weight", vec![kv, d]),
            ("attn.proj.weight", vec![d, d]),
            ("mlp.fc.weight", vec![h, d]),
            ("mlp.proj.weight", vec![d, h]),
        ]
        .into_iter()
        .map(|(n, s)| (format!("{prefix}.{n}"), s))
        .collect()
    }

    /// Every tensor of the state dict with its shape, in the seed's `state_dict()` order (a module's own parameters
    /// before its children's). `projector.*` is a training-only target network, but it is saved, so it is expected.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (d, v, p, l) = (
            self.model_dim,
            self.vocab_size,
            self.patch_size,
            self.latent_dim,
        );
        let mut t = vec![
            ("patch_pos".to_string(), vec![p, d]),
            ("start_latent".to_string(), vec![l]),
            ("tok_emb.weight".to_string(), vec![v, d]),
            ("patch_in.weight".to_string(), vec![d, p * d]),
        ];
        for i in 0..self.encoder_layers {
            t.extend(self.block_tensors(
                &format!("blocks.{i}"),
                self.encoder_heads,
                self.encoder_kv_heads,
            ));
        }
        for mlp in ["projector", "predictor"] {
            t.push((format!("{mlp}.fc.weight"), vec![2 * d, d]));
            t.push((format!("{mlp}.proj.weight"), vec![l, 2 * d]));
        }
        t.push(("decoder_token_emb.weight".into(), vec![v, d]));
        t.push(("decoder_cond.weight".into(), vec![d, l]));
        for j in 0..self.decoder_layers {
            t.extend(self.block_tensors(
                &format!("decoder_blocks.{j}"),
                self.decoder_heads,
                self.decoder_heads,
            ));
        }
        t.push(("decoder_out.weight".into(), vec![v, d]));
        t
    }

    /// The config a state dict's names and shapes imply, when they are exactly those of a byte-patch JEPA (what
    /// `inspect` reports for seed 001's artifacts). The shapes do not carry encoder_repeats, rope_base,
    /// qk_gain_init or the evaluation length: those take the seed's defaults (2, 10000, 1.5, 2047).
    pub fn from_tensors(named: &[(String, Vec<usize>)]) -> Option<Self> {
        let shape = |n: &str| named.iter().find(|(k, _)| k == n).map(|(_, s)| s.clone());
        let (v, d) = match shape("tok_emb.weight")?[..] {
            [v, d] => (v, d),
            _ => return None,
        };
        let patch_size = *shape("patch_pos")?.first()?;
        let latent_dim = *shape("start_latent")?.first()?;
        let count = |prefix: &str| {
            (0..)
                .take_while(|i| shape(&format!("{prefix}.{i}.attn_scale")).is_some())
                .count()
        };
        let (encoder_layers, decoder_layers) = (count("blocks"), count("decoder_blocks"));
        let encoder_heads = *shape("blocks.0.attn.q_gain")?.first()?;
        let decoder_heads = *shape("decoder_blocks.0.attn.q_gain")?.first()?;
        let kv_rows = *shape("blocks.0.attn.c_k.weight")?.first()?;
        let hidden = *shape("blocks.0.mlp.fc.weight")?.first()?;
        if d == 0 || encoder_heads == 0 || d % encoder_heads != 0 {
            return None;
        }
        let cfg = PatchJepaConfig {
            architecture: ARCHITECTURE.into(),
            vocab_size: v,
            model_dim: d,
            encoder_layers,
            encoder_repeats: 2,
            encoder_heads,
            encoder_kv_heads: kv_rows / (d / encoder_heads),
            decoder_layers,
            decoder_heads,
            mlp_mult: hidden / d,
            rope_base: 10000.0,
            qk_gain_init: 1.5,
            patch_size,
            latent_dim,
            train_seq_len: 2047,
        };
        cfg.validate().ok()?;
        let mut want = cfg.expected_tensors();
        let mut have = named.to_vec();
        want.sort();
        have.sort();
        (want == have).then_some(cfg)
    }

    pub fn parameter_count(&self) -> usize {
        self.expected_tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

/// One plain block's weights (the challenge's baseline block: resid_mix, attention with q/k RMSNorm, full RoPE and
/// q_gain, LeakyReLU(0.5)² MLP) as positions in the weight list.
struct PlainBlock {
    attn_scale: usize,
    mlp_scale: usize,
    resid_mix: usize,
    q_gain: usize,
    c_q: usize,
    c_k: usize,
    c_v: usize,
    proj: usize,
    fc: usize,
    mlp_proj: usize,
}

/// A stack's head layout and its RoPE tables.
struct Heads {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

pub struct BytePatchJepa {
    pub cfg: PatchJepaConfig,
    device: Device,
    /// The backend chosen when the model was built; every operation goes through it.
    kernels: Arc<dyn Kernels>,
    /// In the seed's state-dict order.
    params: Vec<Weight>,
    encoder: Vec<PlainBlock>,
    decoder: Vec<PlainBlock>,
}

impl BytePatchJepa {
    /// Builds the model from a state dict holding exactly the expected tensors (kept in f32 on `device`, run
    /// under `precision` on `backend`); `source` names the weights in errors, which list every missing, misshapen
    /// and unexpected tensor.
    pub fn new(
        cfg: PatchJepaConfig,
        mut state: StateDict,
        device: &Device,
        precision: Precision,
        backend: Backend,
        source: &Path,
    ) -> Result<Self> {
        cfg.validate().map_err(|message| InferError::Config {
            path: source.into(),
            message,
        })?;
        let mut names = Vec::new();
        let mut params = Vec::new();
        let mut problems = Vec::new();
        for (name, shape) in cfg.expected_tensors() {
            match state.remove(&name) {
                None => problems.push(format!("missing tensor {name}")),
                Some(t) if t.dims() != shape.as_slice() => problems.push(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    t.dims()
                )),
                Some(t) => {
                    names.push(name);
                    params.push(t.to_device(device)?.to_dtype(DType::F32)?);
                }
            }
        }
        let mut extra: Vec<&String> = state.keys().collect();
        extra.sort();
        problems.extend(
            extra
                .iter()
                .map(|n| format!("unexpected tensor {n} for the byte-patch JEPA")),
        );
        if !problems.is_empty() {
            return Err(InferError::Mismatch {
                path: source.into(),
                problems,
            });
        }
        let at = |name: &str| names.iter().position(|n| n == name).expect("expected");
        let block = |prefix: &str| PlainBlock {
            attn_scale: at(&format!("{prefix}.attn_scale")),
            mlp_scale: at(&format!("{prefix}.mlp_scale")),
            resid_mix: at(&format!("{prefix}.resid_mix")),
            q_gain: at(&format!("{prefix}.attn.q_gain")),
            c_q: at(&format!("{prefix}.attn.c_q.weight")),
            c_k: at(&format!("{prefix}.attn.c_k.weight")),
            c_v: at(&format!("{prefix}.attn.c_v.weight")),
            proj: at(&format!("{prefix}.attn.proj.weight")),
            fc: at(&format!("{prefix}.mlp.fc.weight")),
            mlp_proj: at(&format!("{prefix}.mlp.proj.weight")),
        };
        let encoder = (0..cfg.encoder_layers)
            .map(|i| block(&format!("blocks.{i}")))
            .collect();
        let decoder = (0..cfg.decoder_layers)
            .map(|j| block(&format!("decoder_blocks.{j}")))
            .collect();
        Ok(BytePatchJepa {
            cfg,
            device: device.clone(),
            kernels: backend.kernels(device, precision),
            params: names
                .into_iter()
                .zip(params)
                .map(|(name, t)| Weight::uncached(name, t))
                .collect(),
            encoder,
            decoder,
        })
    }

    /// The weight of that name.
    fn w(&self, name: &str) -> &Weight {
        self.params
            .iter()
            .find(|w| w.name() == name)
            .expect("expected tensor")
    }

    fn p(&self, name: &str) -> &Tensor {
        self.w(name).tensor()
    }

    fn k(&self) -> &dyn Kernels {
        self.kernels.as_ref()
    }

    /// `F.linear(x, W)` under the model's precision.
    fn linear(&self, x: &Tensor, w: &Weight) -> Result<Tensor> {
        Ok(self.k().linear(x, w)?)
    }

    fn norm(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        Ok(self.k().rms_norm(x, pass)?)
    }

    fn channel_scale(&self, x: &Tensor, s: usize, pass: Pass) -> Result<Tensor> {
        Ok(self.k().channel_scale(x, self.params[s].tensor(), pass)?)
    }

    /// The baseline block: x = mix₀·x + mix₁·x0; x += attn_scale·Attn(norm(x)); x += mlp_scale·MLP(norm(x)).
    fn block(
        &self,
        blk: &PlainBlock,
        x: &Tensor,
        x0: &Tensor,
        heads: &Heads,
        tables: &RopeTables,
        pass: Pass,
    ) -> Result<Tensor> {
        let k = self.k();
        let mix = self.params[blk.resid_mix].tensor();
        let x =
            (k.channel_scale(x, &mix.get(0)?, pass)? + k.channel_scale(x0, &mix.get(1)?, pass)?)?;
        let a = self.attention(blk, &self.norm(&x, pass)?, heads, tables, pass)?;
        let x = (&x + self.channel_scale(&a, blk.attn_scale, pass)?)?;
        let u = self.linear(&self.norm(&x, pass)?, &self.params[blk.fc])?;
        // leaky_relu(u, 0.5)² = (max(u, 0) + 0.5·min(u, 0))²
        let h = (u.relu()? - (u.neg()?.relu()? * 0.5)?)?.sqr()?;
        let m = self.linear(&h, &self.params[blk.mlp_proj])?;
        Ok((&x + self.channel_scale(&m, blk.mlp_scale, pass)?)?)
    }

    fn attention(
        &self,
        blk: &PlainBlock,
        x: &Tensor,
        heads: &Heads,
        tables: &RopeTables,
        pass: Pass,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = heads.head_dim;
        let split = |w: usize, n: usize| -> Result<Tensor> {
            Ok(self
                .linear(x, &self.params[w])?
                .reshape((b, t, n, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = self.norm(&split(blk.c_q, heads.heads)?, pass)?;
        let k = self.norm(&split(blk.c_k, heads.kv_heads)?, pass)?;
        let v = split(blk.c_v, heads.kv_heads)?;
        let q = self.k().rope(&q, tables, pass)?;
        let k = self.k().rope(&k, tables, pass)?;
        let q = q.broadcast_mul(&self.params[blk.q_gain].tensor().reshape((
            1,
            heads.heads,
            1,
            1,
        ))?)?;
        let y = self.k().causal_attention(&q, &k, &v, pass)?;
        let y = y.transpose(1, 2)?.reshape((b, t, d))?;
        self.linear(&y, &self.params[blk.proj])
    }

    /// LatentMLP: proj(silu(fc(rmsnorm(x)))).
    fn latent_mlp(&self, prefix: &str, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let u = self.linear(&self.norm(x, pass)?, self.w(&format!("{prefix}.fc.weight")))?;
        self.linear(
            &candle_nn::ops::silu(&u)?,
            self.w(&format!("{prefix}.proj.weight")),
        )
    }

    fn tables(&self, head_dim: usize, positions: usize) -> Result<RopeTables> {
        let (cos, sin) = rope_tables(head_dim, self.cfg.rope_base as f32, positions, &self.device)?;
        Ok(RopeTables {
            cos,
            neg_sin: sin.neg()?,
        })
    }

    /// Logits [B, T, V] for ids [B, T]: output p predicts the byte after ids[p].
    fn forward(&self, ids: &Tensor, pass: Pass) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t) = ids.dims2()?;
        let (p, d) = (cfg.patch_size, cfg.model_dim);
        // full = ids zero-padded past the end to a multiple of P, with room for position T.
        let full_len = (t + 1).div_ceil(p) * p;
        let full = Tensor::cat(
            &[
                ids.clone(),
                Tensor::zeros((b, full_len - t), DType::U32, &self.device)?,
            ],
            1,
        )?;
        let np = full_len / p;
        // Patch encoder: per-byte embedding + in-patch position, RMSNorm per byte, the patch's bytes
        // concatenated (byte-major) and projected.
        let e = self
            .p("tok_emb.weight")
            .embedding(&full.flatten_all()?)?
            .reshape((b, np, p, d))?
            .broadcast_add(self.p("patch_pos"))?;
        let e = self.norm(&e, pass)?.reshape((b, np, p * d))?;
        let c = self.norm(&self.linear(&e, self.w("patch_in.weight"))?, pass)?;
        let enc_heads = Heads {
            heads: cfg.encoder_heads,
            kv_heads: cfg.encoder_kv_heads,
            head_dim: d / cfg.encoder_heads,
        };
        let enc_tables = self.tables(enc_heads.head_dim, np)?;
        let c0 = c.clone();
        let mut c = c;
        for _ in 0..cfg.encoder_repeats {
            for blk in &self.encoder {
                c = self.block(blk, &c, &c0, &enc_heads, &enc_tables, pass)?;
            }
        }
        let c = self.norm(&c, pass)?;
        // Patch p is conditioned on the prediction from patch p − 1's context (patch 0 on the start latent).
        let l = cfg.latent_dim;
        let start = self
            .p("start_latent")
            .reshape((1, 1, l))?
            .broadcast_as((b, 1, l))?
            .contiguous()?;
        let cond = if np > 1 {
            let pred = self.latent_mlp("predictor", &c.narrow(1, 0, np - 1)?, pass)?;
            Tensor::cat(&[&start, &pred], 1)?
        } else {
            start
        };
        let cond = self
            .linear(&cond, self.w("decoder_cond.weight"))?
            .unsqueeze(2)?
            .broadcast_as((b, np, p, d))?
            .reshape((b, full_len, d))?;
        // Byte decoder: the previous byte (BOS before the first) plus the patch condition.
        let prev = Tensor::cat(
            &[
                Tensor::full(BOS_ID, (b, 1), &self.device)?,
                full.narrow(1, 0, full_len - 1)?,
            ],
            1,
        )?;
        let h = (self
            .p("decoder_token_emb.weight")
            .embedding(&prev.flatten_all()?)?
            .reshape((b, full_len, d))?
            + cond)?;
        let dec_heads = Heads {
            heads: cfg.decoder_heads,
            kv_heads: cfg.decoder_heads,
            head_dim: d / cfg.decoder_heads,
        };
        let dec_tables = self.tables(dec_heads.head_dim, full_len)?;
        let h0 = h.clone();
        let mut h = h;
        for blk in &self.decoder {
            h = self.block(blk, &h, &h0, &dec_heads, &dec_tables, pass)?;
        }
        let logits = self.linear(&self.norm(&h, pass)?, self.w("decoder_out.weight"))?;
        // logits[j] predicts full[j]; output p (the byte after ids[p]) is logits[p + 1].
        Ok(logits.narrow(1, 1, t)?)
    }
}

impl CausalLm for BytePatchJepa {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn uncapped_logits(&self, ids: &Tensor) -> Result<Tensor> {
        self.forward(ids, Pass::Score)
    }

    /// The decoder's head has no soft-cap.
    fn softcap(&self, z: f32) -> f32 {
        z
    }

    /// Per target of `F.cross_entropy(logits[:, 1:], y)` (the seed's TTT loss is their mean).
    fn train_token_losses(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let z = self.forward(ids, Pass::Train)?;
        let v = z.dim(D::Minus1)?;
        let logp = candle_nn::ops::log_softmax(&z.reshape(((), v))?, D::Minus1)?;
        let picked = logp.gather(&targets.flatten_all()?.unsqueeze(1)?, D::Minus1)?;
        Ok(picked.squeeze(1)?.neg()?)
    }

    fn named_weights(&self) -> Vec<(&str, &Tensor)> {
        self.params.iter().map(|w| (w.name(), w.tensor())).collect()
    }

    fn make_trainable(&mut self, selected: &dyn Fn(&str) -> bool) -> Result<Vec<(String, Var)>> {
        make_trainable(&mut self.params, selected)
    }

    fn backend(&self) -> Backend {
        self.kernels.backend()
    }

    /// The seed freezes by substring: `blocks.{i}.` also matches `decoder_blocks.{i}.`, as its
    /// `any(f"blocks.{bi}." in name …)` does.
    /// Encoder block i (`blocks.{i}.…`) and decoder block i (`decoder_blocks.{i}.…`) both count as block i, as the
    /// seed's freezing matches `blocks.{i}.` anywhere in a name.
    fn layer_block(&self, name: &str) -> Option<usize> {
        let at = name.find("blocks.")?;
        super::lm::block_index(&name[at + "blocks.".len()..])
    }

    /// The encoder's blocks: the seed freezes at most that many.
    fn layer_blocks(&self) -> usize {
        self.cfg.encoder_layers
    }
}
