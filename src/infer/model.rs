//! The challenge's baseline GPT (root `train_gpt.py`), operation by operation:
//! embedding → RMSNorm → U-Net halves of blocks (skip_weights) → final RMSNorm → tied/untied head → tanh soft-cap.
//! Each block: x = resid_mix[0]·x + resid_mix[1]·x0; x += attn_scale·Attn(rmsnorm(x)); x += mlp_scale·MLP(rmsnorm(x)).
//! Attention: q,k,v projections, per-head RMSNorm of q and k, half-split RoPE, per-head q_gain, grouped-query causal
//! softmax attention (scale 1/√head_dim), output projection. MLP: relu(x·fcᵀ)² · projᵀ.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor, Var};

use super::Result;
use super::config::{FinalLane, GateSource, LayerStep, ModelConfig};
use super::layers::{BOS_ID, fake_quant_clip, fake_quantize_rows, make_trainable};
use super::lora::{LoraSet, LoraTarget};
use super::weights::StateDict;
use crate::kernels::compose::{rope_tables, softcap, softmax_last_dim_differentiable};
use crate::kernels::observed::Observed;
use crate::kernels::{
    Activation, Backend, BlockNorm, HeadShape, Kernels, LinearHook, Pass, Precision, RMS_NORM_EPS,
    RopeTables, Weight,
};

/// Positions of one block's tensors in [`Gpt`]'s parameter list, and its per-block switches.
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
    /// `attn.vr_lambda` [2] (value residual).
    vr_lambda: Option<usize>,
    /// The legacy `attn.attn_gate` Linear(d, H): weight and bias.
    legacy_gate: Option<(usize, usize)>,
    /// `attn.attn_gate_proj.weight` [H, gate_window] (AttnOutGate).
    out_gate: Option<usize>,
    /// `attn.attn_gate_w`: [H, d] (GatedAttn) or [H, gate_window] (SparseAttnGate).
    head_gate: Option<usize>,
    /// `ve_layer_scales.{k}` [1] when this block takes the value embedding.
    ve_scale: Option<usize>,
    /// `attn.v_lambda` [2] (seed 004's value residual).
    v_lambda: Option<usize>,
    /// `mlp.hidden_gain` [hidden].
    hidden_gain: Option<usize>,
    /// `vrl_scales.{i−1}` [1] (seed 003's VRL) for blocks i ≥ 1.
    vrl_scale: Option<usize>,
    /// LN scale 1/√(i+1) of the physical index (1 without LN scale).
    ln_scale: f64,
    xsa: bool,
    /// GPT-J parallel residual: attention and MLP read the same normed input.
    gptj_parallel: bool,
}

/// The model-level tensors of the record components.
struct Globals {
    /// `bigram.embed.weight`, `bigram.proj.weight` (when bigram_dim ≠ d), `bigram.scale`.
    bigram: Option<(usize, Option<usize>, usize)>,
    smear_v1: Option<usize>,
    /// `smear_gate.weight` [1, w], `smear_lambda` [1].
    smear_v2: Option<(usize, usize)>,
    skip_gates: Option<usize>,
    /// `ve_shared.embed.weight`, `ve_shared.proj.weight` (when ve_dim ≠ kv_dim), `ve_shared.scale`.
    value_embedding: Option<(usize, Option<usize>, usize)>,
    /// `parallel_post_lambdas` [L, 2, 2], `parallel_resid_lambdas` [L, 2].
    lanes: Option<(usize, usize)>,
    jepa: Option<JepaParams>,
}

/// Seed 000's JEPA latent injection: projector fc1/fc2, predictor fc1/fc2/start_token, injection.
struct JepaParams {
    projector: (usize, usize),
    predictor: (usize, usize),
    start_token: usize,
    injection: usize,
}

/// What every block of one forward pass shares: the RoPE tables, the cached value embedding, the
/// document segments when attention is isolated per document, and block 0's values for the value residual.
struct Context<'a> {
    /// Seed 003's VRL values: block 0's c_v of its own normed input [B, T, kv_dim].
    vrl_v0: Option<Tensor>,
    rope: RopeTables,
    value_embedding: Option<Tensor>,
    segments: Option<&'a [(usize, usize)]>,
    pass: Pass,
    /// Per-document adapters of a LoRA test-time-training batch.
    lora: Option<&'a LoraSet>,
}

/// The forward pass. Built from a checked state dict on a device and dtype; the output logits are always f32.
/// The weights are kept as one list in the challenge's state-dict order ([`ModelConfig::expected_tensors`]), so
/// callers can enumerate, hash, or make them trainable by name.
pub struct Gpt {
    pub cfg: ModelConfig,
    /// Weights re-gridded at load by the config's evaluation-time fake quantization: (name, clip, max |Δw|).
    pub regridded: Vec<(String, f32, f32)>,
    device: Device,
    /// The backend chosen when the model was built ([`Backend::choose`]); every operation goes through it.
    base_kernels: Arc<dyn Kernels>,
    /// `base_kernels`, or them wrapped by an installed hook ([`Gpt::install_linear_hook`]).
    kernels: Arc<dyn Kernels>,
    /// In the challenge's state-dict order.
    weights: Vec<Weight>,
    tok_emb: usize,
    lm_head: Option<usize>,
    /// [n_skip, d]
    skip_weights: usize,
    blocks: Vec<BlockParams>,
    globals: Globals,
    /// The blocks in execution order with their skip operations (with recurrence, blocks repeat).
    steps: Vec<LayerStep>,
}

/// BigramHash indices (architectures §1.8), in the records' int32 arithmetic: idx[0] = Vb−1 and
/// idx[t] = ((36313·id[t]) XOR (27191·id[t−1])) mod (Vb−1), per row.
pub fn bigram_hash(ids: &[u32], bigram_vocab_size: usize) -> Vec<u32> {
    let modulus = (bigram_vocab_size - 1) as i32;
    (0..ids.len())
        .map(|t| {
            if t == 0 {
                return modulus as u32;
            }
            let cur = 36313i32.wrapping_mul(ids[t] as i32);
            let prev = 27191i32.wrapping_mul(ids[t - 1] as i32);
            (cur ^ prev).rem_euclid(modulus) as u32
        })
        .collect()
}

/// `start + weight·(end − start)`, torch.lerp.
fn lerp(start: &Tensor, end: &Tensor, weight: &Tensor) -> Result<Tensor> {
    Ok((start + (end - start)?.broadcast_mul(weight)?)?)
}

impl Gpt {
    /// The model on `device` under `precision`, on the backend [`Backend::choose`] picks for them.
    pub fn new(
        cfg: ModelConfig,
        state: StateDict,
        device: &Device,
        precision: Precision,
    ) -> Result<Self> {
        let backend = Backend::choose(device, precision, false);
        Self::with_backend(cfg, state, device, precision, backend)
    }

    /// The model on a backend chosen by the caller (`--generic-ops` picks the GPU's compositions on the CPU).
    pub fn with_backend(
        cfg: ModelConfig,
        mut state: StateDict,
        device: &Device,
        precision: Precision,
        backend: Backend,
    ) -> Result<Self> {
        let mut names = Vec::new();
        let mut params = Vec::new();
        for (name, _) in cfg.expected_tensors() {
            let t = state
                .remove(&name)
                .expect("checked by check_state_dict")
                .to_device(device)?
                .to_dtype(DType::F32)?;
            names.push(name);
            params.push(t);
        }
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let at = |name: &str| index[name];
        let find = |name: &str| index.get(name).copied();
        let xsa_from = cfg.num_layers - cfg.xsa_last_n;
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
                    vr_lambda: find(&format!("{b}.attn.vr_lambda")),
                    v_lambda: find(&format!("{b}.attn.v_lambda")),
                    hidden_gain: find(&format!("{b}.mlp.hidden_gain")),
                    vrl_scale: i
                        .checked_sub(1)
                        .and_then(|k| find(&format!("vrl_scales.{k}"))),
                    legacy_gate: find(&format!("{b}.attn.attn_gate.weight"))
                        .zip(find(&format!("{b}.attn.attn_gate.bias"))),
                    out_gate: find(&format!("{b}.attn.attn_gate_proj.weight")),
                    head_gate: find(&format!("{b}.attn.attn_gate_w")),
                    ve_scale: cfg
                        .ve_layers
                        .iter()
                        .position(|&l| l == i)
                        .map(|k| at(&format!("ve_layer_scales.{k}"))),
                    ln_scale: if cfg.ln_scale {
                        1.0 / ((i + 1) as f64).sqrt()
                    } else {
                        1.0
                    },
                    xsa: i >= xsa_from,
                    gptj_parallel: cfg.parallel_residual_start.is_some_and(|s| i >= s),
                }
            })
            .collect();
        let globals = Globals {
            bigram: find("bigram.embed.weight")
                .map(|e| (e, find("bigram.proj.weight"), at("bigram.scale"))),
            smear_v1: find("smear.gate"),
            smear_v2: find("smear_gate.weight").map(|w| (w, at("smear_lambda"))),
            skip_gates: find("skip_gates"),
            value_embedding: find("ve_shared.embed.weight")
                .map(|e| (e, find("ve_shared.proj.weight"), at("ve_shared.scale"))),
            lanes: find("parallel_post_lambdas").map(|p| (p, at("parallel_resid_lambdas"))),
            jepa: find("jepa_injection.weight").map(|injection| JepaParams {
                projector: (
                    at("jepa_projector.fc1.weight"),
                    at("jepa_projector.fc2.weight"),
                ),
                predictor: (
                    at("jepa_predictor.fc1.weight"),
                    at("jepa_predictor.fc2.weight"),
                ),
                start_token: at("jepa_predictor.start_token"),
                injection,
            }),
        };
        let steps = cfg.layer_steps();
        let mut regridded = Vec::new();
        if cfg.eval_fake_quant {
            for (name, t) in names.iter().zip(params.iter_mut()) {
                if let Some(clip) = fake_quant_clip(name, t.elem_count()) {
                    let q = fake_quantize_rows(t, clip)?;
                    let change = (&q - &*t)?
                        .abs()?
                        .flatten_all()?
                        .max(0)?
                        .to_dtype(DType::F32)?;
                    regridded.push((name.clone(), clip, change.to_scalar::<f32>()?));
                    *t = q;
                }
            }
        }
        let kernels = backend.kernels(device, precision);
        Ok(Gpt {
            regridded,
            tok_emb: at("tok_emb.weight"),
            lm_head: (!cfg.tie_embeddings).then(|| at("lm_head.weight")),
            skip_weights: at("skip_weights"),
            blocks,
            globals,
            steps,
            cfg,
            device: device.clone(),
            base_kernels: kernels.clone(),
            kernels,
            weights: names
                .into_iter()
                .zip(params)
                .map(|(name, t)| Weight::new(name, t))
                .collect(),
        })
    }

    /// Every weight with its state-dict name, in the challenge's order.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.weights.iter().map(|w| (w.name(), w.tensor()))
    }

    /// Turns the weights `selected` by name into candle variables (the model then reads them, so updating a
    /// variable in place updates the model) and returns them in the challenge's order; the others stay constants.
    /// Nothing a backend prepared from the weights (the AMX packings) is kept or made from then on: the variables,
    /// and the constants sharing their storage, change in place.
    pub fn make_trainable(
        &mut self,
        selected: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, Var)>> {
        make_trainable(&mut self.weights, &selected)
    }

    /// Replaces the weight `name` by `t` (same shape) and returns what it held; the trainer swaps fake-quantized
    /// weights in and out this way.
    pub fn set_parameter(&mut self, name: &str, t: Tensor) -> Result<Tensor> {
        let w = self
            .weights
            .iter_mut()
            .find(|w| w.name() == name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no weight named {name}")))?;
        if t.dims() != w.tensor().dims() {
            return Err(candle_core::Error::Msg(format!(
                "{name}: shape {:?} does not match {:?}",
                t.dims(),
                w.tensor().dims()
            ))
            .into());
        }
        Ok(w.replace(t))
    }

    /// Layer passes of one forward pass (blocks, looped ones once per pass): the LoRA slots.
    pub fn layer_passes(&self) -> usize {
        self.steps.len()
    }

    fn p(&self, i: usize) -> &Tensor {
        self.weights[i].tensor()
    }

    /// The kernels every operation runs on.
    fn k(&self) -> &dyn Kernels {
        self.kernels.as_ref()
    }

    /// The backend the model was built on.
    pub fn backend(&self) -> Backend {
        self.base_kernels.backend()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The arithmetic of the forward pass (weights are f32 either way).
    pub fn precision(&self) -> Precision {
        self.kernels.precision()
    }

    /// `F.linear(x, W)` of weight `w` under the model's precision.
    fn linear(&self, x: &Tensor, w: usize) -> Result<Tensor> {
        Ok(self.k().linear(x, &self.weights[w])?)
    }

    /// Shows `hook` the input of every product of the model's weights from now on (GPTQ calibration's Hessians):
    /// the backend wrapped so that each product's input is a tensor ([`Observed`]).
    pub fn install_linear_hook(&mut self, hook: Arc<dyn LinearHook>) {
        self.kernels = Arc::new(Observed::new(self.base_kernels.clone(), hook));
    }

    /// Removes the hook [`Gpt::install_linear_hook`] installed.
    pub fn remove_linear_hook(&mut self) {
        self.kernels = self.base_kernels.clone();
    }

    /// RoPE tables for positions 0..T over the rotated dims rd: inv_freq[i] = base^(−2i/rd), freqs = t ⊗ inv_freq
    /// computed in f32, as the records' `Rotary` does, with the NTK rule when the config has one and T exceeds
    /// its train_seq_len: base' = base·(T/train_seq_len)^(rd/(rd−2)) (computed in f64, as Python does, then used
    /// in f32). Returned as (cos, −sin) of [T, rd/2].
    fn rope_tables(&self, seq_len: usize) -> Result<RopeTables> {
        let rd = self.cfg.rotary_dims();
        let base = match self.cfg.rope_ntk_train_seq_len {
            Some(train) if seq_len > train => {
                let scale = seq_len as f64 / train as f64;
                self.cfg.rope_base * scale.powf(rd as f64 / (rd as f64 - 2.0))
            }
            _ => self.cfg.rope_base,
        } as f32;
        let (cos, sin) = rope_tables(rd, base, seq_len, &self.device)?;
        Ok(RopeTables {
            cos,
            neg_sin: sin.neg()?,
        })
    }

    /// The block norm's settings for the fused steps: its LN scale, and whether only plain products read it (no
    /// adapters in this pass).
    fn block_norm_of(&self, blk: &BlockParams, ctx: &Context) -> BlockNorm {
        BlockNorm {
            scale: blk.ln_scale,
            plain_readers: ctx.lora.is_none(),
        }
    }

    /// Logits [B, T, V] (f32, soft-capped) for token ids [B, T] (u32).
    pub fn logits(&self, ids: &Tensor) -> Result<Tensor> {
        self.softcap_tensor(&self.uncapped_logits(ids)?)
    }

    /// `c · tanh(z / c)` over a tensor of logits.
    pub fn softcap_tensor(&self, z: &Tensor) -> Result<Tensor> {
        Ok(softcap(z, self.cfg.logit_softcap)?)
    }

    /// The soft-cap `c · tanh(z / c)` applied to one uncapped logit, in f32 as the reference computes it (tanh
    /// within 2 ulp, branch-free so that row loops vectorize).
    #[inline(always)]
    pub fn softcap(&self, z: f32) -> f32 {
        let c = self.cfg.logit_softcap as f32;
        c * crate::kernels::loss::tanh_f32(z / c)
    }

    /// The head's output [B, T, V] (f32) before the soft-cap, for callers that fuse the cap with their own pass
    /// over the logits.
    pub fn uncapped_logits(&self, ids: &Tensor) -> Result<Tensor> {
        self.head(&self.final_hidden(ids, Pass::Score)?)
    }

    /// The head applied to final hidden states [.., d]: uncapped logits in f32.
    pub fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        self.linear(hidden, self.lm_head.unwrap_or(self.tok_emb))
    }

    /// The mean cross-entropy of the soft-capped logits against `targets` [B, T] (u32), differentiable with respect
    /// to every trainable weight: the reference's `GPT.forward(x, y)`.
    pub fn train_loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        Ok(self.train_token_losses(ids, targets)?.mean_all()?)
    }

    /// The cross-entropy of every target [B·T], differentiable like [`Gpt::train_loss`] (for weighted losses).
    pub fn train_token_losses(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        self.head_losses(&self.final_hidden(ids, Pass::Train)?, targets)
    }

    /// The head and the soft-capped cross-entropy of final hidden states [.., d] against `targets`: one loss per
    /// row (as one node on the CPU kernels in f32, [`crate::kernels::loss::capped_head_losses`]).
    fn head_losses(&self, hidden: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let head = &self.weights[self.lm_head.unwrap_or(self.tok_emb)];
        Ok(self
            .k()
            .head_losses(hidden, head, targets, self.cfg.logit_softcap)?)
    }

    /// The cross-entropy of every target of one flat buffer ids [1, N] whose attention is isolated to `segments`
    /// (the records' `forward(x, y, cu_seqlens=…)`: RoPE at flat-buffer positions), differentiable with respect to
    /// every trainable weight: [N].
    pub fn train_token_losses_segmented(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        segments: &[(usize, usize)],
    ) -> Result<Tensor> {
        self.head_losses(&self.hidden(ids, Some(segments), Pass::Train)?, targets)
    }

    /// The cross-entropy of every target [B, T] with each batch element's adapters in `lora` (one document per
    /// element), differentiable with respect to the adapters: the LoRA records' `GPT.forward(x, y, lora=…)`, whose
    /// head adapter adds to the logits before the soft-cap.
    pub fn lora_token_losses(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        lora: &LoraSet,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let hidden = self.hidden_with(ids, None, Pass::Train, Some(lora))?;
        let mut z = self.head(&hidden)?;
        if let Some(head) = &lora.head {
            z = (z + head.delta(&hidden, lora.scale)?)?;
        }
        Ok(self.capped_token_losses(z, targets)?.reshape((b, t))?)
    }

    /// Uncapped logits [B, T, V] with each batch element's adapters in `lora` (the head adapter included).
    pub fn lora_uncapped_logits(&self, ids: &Tensor, lora: &LoraSet) -> Result<Tensor> {
        let hidden = self.hidden_with(ids, None, Pass::Score, Some(lora))?;
        let z = self.head(&hidden)?;
        match &lora.head {
            Some(head) => Ok((z + head.delta(&hidden, lora.scale)?)?),
            None => Ok(z),
        }
    }

    /// Soft-capped cross-entropy of uncapped logits z [.., V] against `targets`: one loss per row.
    fn capped_token_losses(&self, z: Tensor, targets: &Tensor) -> Result<Tensor> {
        Ok(self
            .k()
            .capped_token_losses(&z, targets, self.cfg.logit_softcap)?)
    }

    /// The final hidden states [B, T, d] (after the last RMSNorm) for token ids [B, T] (u32).
    pub fn final_hidden(&self, ids: &Tensor, pass: Pass) -> Result<Tensor> {
        self.hidden(ids, None, pass)
    }

    /// Uncapped logits [1, N, V] for one flat buffer of ids [1, N] whose attention is isolated to `segments`
    /// ((start, len) pairs tiling 0..N), as the records' VarLen evaluation runs it: RoPE at flat-buffer positions,
    /// everything outside attention per token over the whole buffer.
    pub fn uncapped_logits_segmented(
        &self,
        ids: &Tensor,
        segments: &[(usize, usize)],
    ) -> Result<Tensor> {
        self.head(&self.hidden(ids, Some(segments), Pass::Score)?)
    }

    fn hidden(
        &self,
        ids: &Tensor,
        segments: Option<&[(usize, usize)]>,
        pass: Pass,
    ) -> Result<Tensor> {
        self.hidden_with(ids, segments, pass, None)
    }

    fn hidden_with(
        &self,
        ids: &Tensor,
        segments: Option<&[(usize, usize)]>,
        pass: Pass,
        lora: Option<&LoraSet>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let cfg = &self.cfg;
        let x0 = self.embed(ids, pass)?;
        let rope = self.rope_tables(t)?;
        let value_embedding = match self.globals.value_embedding {
            Some((embed, proj, scale)) => {
                let mut ve = self
                    .p(embed)
                    .embedding(&ids.flatten_all()?)?
                    .reshape((b, t, cfg.ve_dim))?;
                if let Some(proj) = proj {
                    ve = self.linear(&ve, proj)?;
                }
                Some(ve.broadcast_mul(self.p(scale))?)
            }
            None => None,
        };
        let vrl_v0 = if cfg.vrl {
            let blk = &self.blocks[0];
            let n = self.block_norm(blk, &self.residual_mix(blk, &x0, &x0, pass)?, pass)?;
            Some(self.linear(&n, blk.c_v)?)
        } else {
            None
        };
        let ctx = Context {
            vrl_v0,
            rope,
            value_embedding,
            segments,
            pass,
            lora,
        };
        let mut x = x0.clone();
        let mut v0: Option<Tensor> = None;
        let mut skips = Vec::new();
        let mut lanes: Option<(Tensor, Tensor)> = None;
        for (slot, step) in self.steps.iter().enumerate() {
            let i = step.block;
            let skip = step.skip.and_then(|j| skips.pop().map(|s| (j, s)));
            let two_lane = cfg.parallel_start_layer.is_some_and(|s| i >= s);
            if two_lane {
                let (lane0, lane1) = lanes.take().unwrap_or_else(|| (x.clone(), x.clone()));
                let lane0 = match skip {
                    Some((j, skip)) => self.add_skip(j, &skip, &lane0, pass)?,
                    None => lane0,
                };
                lanes = Some(self.two_lane_block(
                    i,
                    Some(slot),
                    &lane0,
                    &lane1,
                    &x0,
                    &ctx,
                    v0.as_ref(),
                )?);
            } else {
                if let Some((j, skip)) = skip {
                    x = self.add_skip(j, &skip, &x, pass)?;
                }
                let (out, raw_v) = self.block(i, Some(slot), &x, &x0, &ctx, v0.as_ref())?;
                x = out;
                if v0.is_none() {
                    v0 = raw_v;
                }
            }
            if step.push {
                skips.push(x.clone());
            }
        }
        if let Some((lane0, lane1)) = lanes {
            x = match cfg.parallel_final_lane {
                FinalLane::Mean => ((lane0 + lane1)? * 0.5)?,
                FinalLane::Attn => lane0,
                FinalLane::Mlp => lane1,
            };
        }
        // Seed 004: the segment re-runs after the whole stack, with block 0's values, without skips.
        for _ in 1..cfg.depth_recur_count.max(1) {
            for i in cfg.depth_recur_start..=cfg.depth_recur_end {
                x = self.block(i, None, &x, &x0, &ctx, v0.as_ref())?.0;
            }
        }
        if let Some(jepa) = &self.globals.jepa {
            x = (&x + self.jepa_injection(jepa, &x)?)?;
        }
        Ok(self.k().rms_norm(&x, pass)?)
    }

    /// Seed 000's latent injection (architectures §2.1) on the final hidden x [B, T, d] (before the final norm):
    /// chunk means h_c over cs positions, z_c = P(h_c), p_c = Q(c = 0 ? start : z_{c−1}) with
    /// P, Q = fc2(silu(rmsnorm(fc1(·)))), and positions of chunk c get p_c·injectionᵀ (those past the last whole
    /// chunk get 0). Chunk c sees only chunk c − 1's hidden states, which are all in the past.
    fn jepa_injection(&self, jepa: &JepaParams, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let cs = self.cfg.jepa_chunk_size;
        let chunks = t / cs;
        if chunks == 0 {
            return Ok(x.zeros_like()?);
        }
        let mlp = |h: &Tensor, (fc1, fc2): (usize, usize)| -> Result<Tensor> {
            let u = self.linear(h, fc1)?;
            let ones = Tensor::ones(u.dim(D::Minus1)?, u.dtype(), u.device())?;
            let n = candle_nn::ops::rms_norm(&u.contiguous()?, &ones, RMS_NORM_EPS)?;
            self.linear(&candle_nn::ops::silu(&n)?, fc2)
        };
        let pooled = x
            .narrow(1, 0, chunks * cs)?
            .reshape((b, chunks, cs, d))?
            .mean(2)?;
        let z = mlp(&pooled, jepa.projector)?;
        let latent = self.cfg.jepa_latent_dim;
        let start = self
            .p(jepa.start_token)
            .reshape((1, 1, latent))?
            .broadcast_as((b, 1, latent))?;
        let inputs = Tensor::cat(&[&start.contiguous()?, &z.narrow(1, 0, chunks - 1)?], 1)?;
        let predicted = mlp(&inputs, jepa.predictor)?;
        let injected = self
            .linear(&predicted, jepa.injection)?
            .unsqueeze(2)?
            .broadcast_as((b, chunks, cs, d))?
            .reshape((b, chunks * cs, d))?;
        if chunks * cs == t {
            return Ok(injected);
        }
        let pad = Tensor::zeros((b, t - chunks * cs, d), injected.dtype(), injected.device())?;
        Ok(Tensor::cat(&[&injected, &pad], 1)?)
    }

    /// The embedding stream x0: tok_emb (+ BigramHash) → (SmearGate v2) → RMSNorm → (SmearGate v1).
    fn embed(&self, ids: &Tensor, pass: Pass) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let d = self.cfg.model_dim;
        let mut x = self
            .p(self.tok_emb)
            .embedding(&ids.flatten_all()?)?
            .reshape((b, t, d))?;
        let needs_ids = self.globals.bigram.is_some() || self.globals.smear_v2.is_some();
        let rows: Vec<Vec<u32>> = if needs_ids {
            ids.to_vec2()?
        } else {
            Vec::new()
        };
        if let Some((embed, proj, scale)) = self.globals.bigram {
            let idx: Vec<u32> = rows
                .iter()
                .flat_map(|row| bigram_hash(row, self.cfg.bigram_vocab_size))
                .collect();
            let idx = Tensor::from_vec(idx, b * t, &self.device)?;
            let mut h = self
                .p(embed)
                .embedding(&idx)?
                .reshape((b, t, self.cfg.bigram_dim))?;
            if let Some(proj) = proj {
                h = self.linear(&h, proj)?;
            }
            x = (x + h.broadcast_mul(self.p(scale))?)?;
        }
        if let Some((w, lambda)) = self.globals.smear_v2 {
            x = self.smear_v2(&x, &rows, w, lambda)?;
        }
        let mut x = self.k().rms_norm(&x, pass)?;
        if let Some(gate) = self.globals.smear_v1 {
            // x ← (1−g)⊙x + g⊙x_{t−1}, g = σ(gate), x_{−1} = 0.
            let g = candle_nn::ops::sigmoid(self.p(gate))?;
            let prev = Tensor::cat(
                &[&x.zeros_like()?.narrow(1, 0, 1)?, &x.narrow(1, 0, t - 1)?],
                1,
            )?;
            x = (x.broadcast_mul(&g.affine(-1.0, 1.0)?)? + prev.broadcast_mul(&g)?)?;
        }
        Ok(x)
    }

    /// SmearGate v2 on the raw embedding: for t ≥ 1, x_t ← x_t + λ·σ(x_t[..w]·wᵀ)·x_{t−1}, zeroed where the
    /// token at t is BOS when the config has the BOS fix; x_0 unchanged.
    fn smear_v2(&self, x: &Tensor, rows: &[Vec<u32>], w: usize, lambda: usize) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        if t < 2 {
            return Ok(x.clone());
        }
        let cur = x.narrow(1, 1, t - 1)?;
        let prev = x.narrow(1, 0, t - 1)?;
        let gate_in = cur.narrow(2, 0, self.cfg.gate_window)?.contiguous()?;
        let g =
            candle_nn::ops::sigmoid(&self.linear(&gate_in, w)?)?.broadcast_mul(self.p(lambda))?;
        let mut smear = g.broadcast_mul(&prev)?;
        if self.cfg.smear_gate_bos_fix {
            let not_bos: Vec<f32> = rows
                .iter()
                .flat_map(|row| {
                    row[1..]
                        .iter()
                        .map(|&id| if id == BOS_ID { 0.0 } else { 1.0 })
                })
                .collect();
            let not_bos = Tensor::from_vec(not_bos, (b, t - 1, 1), &self.device)?;
            smear = smear.broadcast_mul(&not_bos)?;
        }
        Ok(Tensor::cat(&[&x.narrow(1, 0, 1)?, &(cur + smear)?], 1)?)
    }

    /// Decoder step j's skip: x + w⊙skip, or with skip gates lerp(w⊙skip, x, σ(g)).
    fn add_skip(&self, j: usize, skip: &Tensor, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let scaled = self.channel_scale(skip, &self.p(self.skip_weights).get(j)?, pass)?;
        match self.globals.skip_gates {
            Some(gates) => {
                let g = candle_nn::ops::sigmoid(&self.p(gates).get(j)?)?;
                lerp(&scaled, x, &g)
            }
            None => Ok((x + scaled)?),
        }
    }

    /// `x · s` with a per-channel vector `s` [d].
    fn channel_scale(&self, x: &Tensor, s: &Tensor, pass: Pass) -> Result<Tensor> {
        Ok(self.k().channel_scale(x, s, pass)?)
    }

    /// The normed block input times the block's LN scale.
    fn block_norm(&self, blk: &BlockParams, x: &Tensor, pass: Pass) -> Result<Tensor> {
        Ok(self.k().block_norm(x, blk.ln_scale, pass)?)
    }

    /// [`Gpt::residual_mix`] and the block norm of its result (one pass on the fused kernels).
    fn residual_mix_normed(
        &self,
        blk: &BlockParams,
        x: &Tensor,
        x0: &Tensor,
        ctx: &Context,
    ) -> Result<(Tensor, Tensor)> {
        let norm = self.block_norm_of(blk, ctx);
        let mix = self.p(blk.resid_mix);
        Ok(self.k().residual_mix_normed(x, x0, mix, norm, ctx.pass)?)
    }

    fn residual_mix(
        &self,
        blk: &BlockParams,
        x: &Tensor,
        x0: &Tensor,
        pass: Pass,
    ) -> Result<Tensor> {
        Ok(self.k().residual_mix(x, x0, self.p(blk.resid_mix), pass)?)
    }

    /// `x + s · a` with a per-channel `s` [d] (a branch's output added to the residual stream).
    fn add_scaled(&self, x: &Tensor, a: &Tensor, s: &Tensor, pass: Pass) -> Result<Tensor> {
        Ok(self.k().add_scaled(x, a, s, pass)?)
    }

    /// [`Gpt::add_scaled`] and the block norm of its result (one pass on the fused kernels).
    fn add_scaled_normed(
        &self,
        blk: &BlockParams,
        x: &Tensor,
        a: &Tensor,
        s: &Tensor,
        ctx: &Context,
    ) -> Result<(Tensor, Tensor)> {
        let norm = self.block_norm_of(blk, ctx);
        Ok(self.k().add_scaled_normed(x, a, s, norm, ctx.pass)?)
    }

    /// One block (physical index i); returns its output and, with the value residual, its raw values.
    /// `slot` is the layer pass (for LoRA adapters; None: no adapter).
    fn block(
        &self,
        i: usize,
        slot: Option<usize>,
        x: &Tensor,
        x0: &Tensor,
        ctx: &Context,
        v0: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let blk = &self.blocks[i];
        let pass = ctx.pass;
        let (x, n) = self.residual_mix_normed(blk, x, x0, ctx)?;
        let (a, raw_v) = self.attention(blk, slot, &n, ctx, v0)?;
        if blk.gptj_parallel {
            // GPT-J: attention and MLP both read the normed x_in (mlp_norm(x_in)·s is the same value).
            let attn = self.channel_scale(&a, self.p(blk.attn_scale), pass)?;
            let m = self.mlp_adapted(blk, slot, &n, ctx)?;
            let out = ((&x + attn)? + self.channel_scale(&m, self.p(blk.mlp_scale), pass)?)?;
            return Ok((out, raw_v));
        }
        let (x, n) = self.add_scaled_normed(blk, &x, &a, self.p(blk.attn_scale), ctx)?;
        let m = self.mlp_adapted(blk, slot, &n, ctx)?;
        Ok((self.add_scaled(&x, &m, self.p(blk.mlp_scale), pass)?, raw_v))
    }

    /// A two-lane parallel residual block (PR #1529): attention reads the resid-mixed lane0, the MLP reads raw lane1,
    /// and both lanes take both outputs: lane_k' = R[i,k]·lane_k + P[i,0,k]·a + P[i,1,k]·m.
    #[allow(clippy::too_many_arguments)]
    fn two_lane_block(
        &self,
        i: usize,
        slot: Option<usize>,
        lane0: &Tensor,
        lane1: &Tensor,
        x0: &Tensor,
        ctx: &Context,
        v0: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let blk = &self.blocks[i];
        let pass = ctx.pass;
        let (post, resid) = self
            .globals
            .lanes
            .expect("two-lane config has lane lambdas");
        let read = self.residual_mix(blk, lane0, x0, pass)?;
        let (a, _) = self.attention(blk, slot, &self.block_norm(blk, &read, pass)?, ctx, v0)?;
        let a = self.channel_scale(&a, self.p(blk.attn_scale), pass)?;
        let m = self.mlp_adapted(blk, slot, &self.block_norm(blk, lane1, pass)?, ctx)?;
        let m = self.channel_scale(&m, self.p(blk.mlp_scale), pass)?;
        let r = self.p(resid).get(i)?;
        let p = self.p(post).get(i)?;
        let scalar = |t: &Tensor, k: usize| t.narrow(0, k, 1);
        let p_attn = p.get(0)?;
        let p_mlp = p.get(1)?;
        let new0 = ((lane0.broadcast_mul(&scalar(&r, 0)?)?
            + a.broadcast_mul(&scalar(&p_attn, 0)?)?)?
            + m.broadcast_mul(&scalar(&p_mlp, 0)?)?)?;
        let new1 = ((lane1.broadcast_mul(&scalar(&r, 1)?)?
            + a.broadcast_mul(&scalar(&p_attn, 1)?)?)?
            + m.broadcast_mul(&scalar(&p_mlp, 1)?)?)?;
        Ok((new0, new1))
    }

    /// The MLP with its LoRA output correction (from the MLP's input) when the batch has one for this pass.
    fn mlp_adapted(
        &self,
        blk: &BlockParams,
        slot: Option<usize>,
        x: &Tensor,
        ctx: &Context,
    ) -> Result<Tensor> {
        let m = self.mlp(blk, x)?;
        match ctx
            .lora
            .map(|l| l.delta(slot, LoraTarget::Mlp, x))
            .transpose()?
            .flatten()
        {
            Some(d) => Ok((m + d)?),
            None => Ok(m),
        }
    }

    /// relu(x·fcᵀ)², or leaky_relu(x·fcᵀ, slope)² = (max(u,0) + slope·min(u,0))², (times the hidden gain,) then
    /// ·projᵀ.
    fn mlp(&self, blk: &BlockParams, x: &Tensor) -> Result<Tensor> {
        let act = Activation {
            slope: self.cfg.mlp_negative_slope,
            gain: blk.hidden_gain.map(|g| self.p(g)),
        };
        let (fc, proj) = (&self.weights[blk.fc], &self.weights[blk.mlp_proj]);
        Ok(self.k().mlp(x, fc, proj, act)?)
    }

    /// Attention of one block on its (normed, LN-scaled) input x [B, T, d]: projections, (value embedding, value
    /// residual), q/k RMSNorm, RoPE, q_gain, causal grouped-query attention (within segments when given), (XSA),
    /// (output gate), output projection. Also returns the raw values [B, T, Hkv, hd] when the value residual is on.
    fn attention(
        &self,
        blk: &BlockParams,
        slot: Option<usize>,
        x: &Tensor,
        ctx: &Context,
        v0: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let cfg = &self.cfg;
        let pass = ctx.pass;
        let (b, t, d) = x.dims3()?;
        let (h, hkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim());
        // A projection plus its LoRA correction (of the same input) when the batch has one for this pass.
        let adapted = |input: &Tensor, w: usize, target: LoraTarget| -> Result<Tensor> {
            let y = self.linear(input, w)?;
            match ctx
                .lora
                .map(|l| l.delta(slot, target, input))
                .transpose()?
                .flatten()
            {
                Some(d) => Ok((y + d)?),
                None => Ok(y),
            }
        };
        let q_raw = adapted(x, blk.c_q, LoraTarget::Q)?;
        let k_raw = adapted(x, blk.c_k, LoraTarget::K)?;
        let shape = HeadShape {
            heads: h,
            kv_heads: hkv,
            head_dim: hd,
            rotary_dims: cfg.rotary_dims(),
        };
        let gain = self.p(blk.q_gain);
        let (q, k) = self
            .k()
            .qk_heads(&q_raw, &k_raw, shape, &ctx.rope, gain, pass)?;
        let mut v_flat = adapted(x, blk.c_v, LoraTarget::V)?;
        // The value embedding and seed 003's VRL term are summed first and added together, as the seed does.
        let ve = match (blk.ve_scale, &ctx.value_embedding) {
            (Some(scale), Some(ve)) => Some(ve.broadcast_mul(self.p(scale))?),
            _ => None,
        };
        let vrl = match (blk.vrl_scale, &ctx.vrl_v0) {
            (Some(scale), Some(v0)) => Some(v0.broadcast_mul(self.p(scale))?),
            _ => None,
        };
        let extra = match (ve, vrl) {
            (Some(a), Some(b)) => Some((a + b)?),
            (a, b) => a.or(b),
        };
        // Plain values (no value embedding, residual or XSA, one segment): the attention reads the value
        // projection's output and writes the output projection's input as they are laid out.
        let plain_values = extra.is_none()
            && !(cfg.value_residual || cfg.v_lambda)
            && (v0.is_none() || (blk.vr_lambda.is_none() && blk.v_lambda.is_none()))
            && !blk.xsa
            && ctx.segments.is_none();
        if let Some(extra) = extra {
            v_flat = (v_flat + extra)?;
        }
        let gate = self.attention_gate(blk, x, &q_raw)?;
        if plain_values {
            let mut y = self.k().attention_by_position(&q, &k, &v_flat, pass)?;
            if let Some(g) = gate {
                y = y
                    .reshape((b, t, h, hd))?
                    .broadcast_mul(&g.unsqueeze(3)?)?
                    .reshape((b, t, d))?;
            }
            return self.output_projection(blk, slot, x, &y, ctx, None);
        }
        // [B, T, Hkv, hd]: the values as XSA and the value residual see them.
        let mut v = v_flat.reshape((b, t, hkv, hd))?;
        let raw_v = (cfg.value_residual || cfg.v_lambda).then(|| v.clone());
        if let (Some(lam), Some(v0)) = (blk.vr_lambda, v0) {
            let lam = self.p(lam);
            v = (v0.broadcast_mul(&lam.narrow(0, 0, 1)?)?
                + v.broadcast_mul(&lam.narrow(0, 1, 1)?)?)?;
        }
        if let (Some(lam), Some(v0)) = (blk.v_lambda, v0) {
            let lam = softmax_last_dim_differentiable(self.p(lam))?;
            v = (v.broadcast_mul(&lam.narrow(0, 0, 1)?)?
                + v0.broadcast_mul(&lam.narrow(0, 1, 1)?)?)?;
        }
        let v_heads = v.transpose(1, 2)?.contiguous()?;
        let minus_self = blk.xsa && cfg.xsa_diag;
        let attend = |q: &Tensor, k: &Tensor, v: &Tensor| {
            if minus_self {
                self.causal_attention_minus_self(q, k, v, pass)
            } else {
                Ok(self.k().causal_attention(q, k, v, pass)?)
            }
        };
        let y = match ctx.segments {
            None => attend(&q, &k, &v_heads)?,
            Some(segments) => {
                let parts = segments
                    .iter()
                    .filter(|&&(_, len)| len > 0)
                    .map(|&(start, len)| {
                        let part = |z: &Tensor| z.narrow(2, start, len);
                        attend(&part(&q)?, &part(&k)?, &part(&v_heads)?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&parts, 2)?
            }
        };
        // [B, T, H, hd]
        let mut y = y.transpose(1, 2)?;
        if blk.xsa && !cfg.xsa_diag {
            y = xsa(&y, &v)?;
        }
        if let Some(g) = gate {
            y = y.broadcast_mul(&g.unsqueeze(3)?)?;
        }
        let y = y.reshape((b, t, d))?;
        self.output_projection(blk, slot, x, &y, ctx, raw_v)
    }

    /// The attention output's gate [B, T, H] when the block has one: the legacy gate (Linear with bias),
    /// AttnOutGate (2σ of a window of the input or of q) or the head gate (σ of the input or a scaled window of it).
    fn attention_gate(
        &self,
        blk: &BlockParams,
        x: &Tensor,
        q_raw: &Tensor,
    ) -> Result<Option<Tensor>> {
        let cfg = &self.cfg;
        Ok(if let Some((w, bias)) = blk.legacy_gate {
            Some(candle_nn::ops::sigmoid(
                &self.linear(x, w)?.broadcast_add(self.p(bias))?,
            )?)
        } else if let Some(w) = blk.out_gate {
            let src = match cfg.attn_out_gate_src {
                GateSource::Proj => x,
                GateSource::Q => q_raw,
            };
            let gate_in = src.narrow(2, 0, cfg.gate_window)?.contiguous()?;
            Some((candle_nn::ops::sigmoid(&self.linear(&gate_in, w)?)? * 2.0)?)
        } else if let Some(w) = blk.head_gate {
            let z = if cfg.sparse_attn_gate {
                let gate_in = x.narrow(2, 0, cfg.gate_window)?.contiguous()?;
                (self.linear(&gate_in, w)? * cfg.sparse_attn_gate_scale)?
            } else {
                self.linear(x, w)?
            };
            Some(candle_nn::ops::sigmoid(&z)?)
        } else {
            None
        })
    }

    /// The attention's output projection of y [B, T, d] with its LoRA correction; passes `raw_v` through.
    fn output_projection(
        &self,
        blk: &BlockParams,
        slot: Option<usize>,
        x: &Tensor,
        y: &Tensor,
        ctx: &Context,
        raw_v: Option<Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        // The records' o_loras read the block's normed input (as q, k, v do), not the attention output, and add to
        // the output projection's result.
        let out = self.linear(y, blk.attn_proj)?;
        match ctx
            .lora
            .map(|l| l.delta(slot, LoraTarget::O, x))
            .transpose()?
            .flatten()
        {
            Some(dl) => Ok(((out + dl)?, raw_v)),
            None => Ok((out, raw_v)),
        }
    }

    /// Seed 004's XSA: the causal softmax A made explicit, y = A·V − diag(A)⊙v (the self term removed without
    /// renormalizing). q [B, H, T, hd], k, v [B, Hkv, T, hd].
    fn causal_attention_minus_self(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        pass: Pass,
    ) -> Result<Tensor> {
        let (p, v) = self.k().causal_probabilities(q, k, v, pass)?;
        let t = p.dim(D::Minus1)?;
        // diag(A): entries t·T + t of each flattened [T, T] map.
        let at: Vec<u32> = (0..t).map(|i| (i * t + i) as u32).collect();
        let at = Tensor::from_vec(at, t, p.device())?;
        let diag = p.flatten_from(2)?.index_select(&at, 2)?.unsqueeze(3)?;
        Ok((self.k().matmul(&p, &v)? - v.broadcast_mul(&diag)?)?)
    }
}

/// XSA (architectures §1.5): each head's output loses its component along its position's own (normalized) value
/// vector: with v̂ = v / max(‖v‖, 1e-12) of the head's kv group, y ← y − (y·v̂)v̂. y [B, T, H, hd], v [B, T, Hkv, hd].
fn xsa(y: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, t, h, hd) = y.dims4()?;
    let hkv = v.dim(2)?;
    let y_g = y.reshape((b, t, hkv, h / hkv, hd))?;
    let norm = v.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    let vn = v.broadcast_div(&norm)?.unsqueeze(3)?;
    let proj = y_g
        .broadcast_mul(&vn)?
        .sum_keepdim(D::Minus1)?
        .broadcast_mul(&vn)?;
    Ok((y_g - proj)?.reshape((b, t, h, hd))?)
}
