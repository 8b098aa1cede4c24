//! The embedded trainer: the challenge's baseline recipe (root `train_gpt.py`) in candle.
//!
//! - Parameters and groups as the reference: the token embedding on Adam (TIED_EMBED_LR, or EMBED_LR untied), an
//!   untied head on Adam (HEAD_LR), the 2-D block matrices on Muon (MATRIX_LR), every vector and control tensor
//!   (scales, resid_mix, q_gain, skip_weights) on Adam (SCALAR_LR); betas (0.9, 0.95), eps 1e-8.
//! - Muon momentum warmed up linearly from 0.85 to 0.95 over 500 steps.
//! - The learning-rate scale `lr_mul`: 1, then a linear warm-down over the last WARMDOWN_ITERS iterations, or, with
//!   a wall-clock cap, over the last WARMDOWN_ITERS × (average step time) of the cap. (The reference's
//!   WARMUP_STEPS only prime `torch.compile` and restore the initial state, so they leave no trace in the
//!   trajectory; pgolf has nothing to compile. An optional linear learning-rate warm-up is offered separately.)
//! - Sequential token stream; periodic validation through `verify`'s evaluation driver (the challenge's
//!   `eval_val`); the training timer stops while validating.
//! - Optional EMA of the weights (the exported checkpoint), and optional QAT: a straight-through fake quantization
//!   of the block matrices on `pack`'s SDClip grid, switched on when the learning-rate scale falls below a
//!   threshold.

pub mod command;
pub mod init;
pub mod loader;

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use serde::Serialize;

use crate::data::bytes::ByteSource;
use crate::infer::config::ModelConfig;
use crate::infer::model::Gpt;
use crate::kernels::{Backend, Precision};
use crate::optim::{Adam, Muon, clip_grad_norm};
use crate::pack::fit::{Group, group_of};
use crate::pack::quantize::sdclip_rows;
use crate::verify::eval::evaluate;
use crate::verify::ledger::weights_digest;
use crate::verify::procedure::WindowProcedure;
use crate::verify::scorer::ModelScorer;
use crate::verify::windows::WindowForm;
use loader::TokenStream;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Infer(#[from] crate::infer::InferError),
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error("{0}")]
    Setup(String),
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Infer(e.into())
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// The control tensors the reference keeps on Adam whatever their shape (CONTROL_TENSOR_NAME_PATTERNS, the same
/// list the exporter keeps in fp32).
pub use crate::pack::quantize::CONTROL_PATTERNS;

/// Straight-through fake quantization of the block matrices on `pack`'s SDClip grid.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QatOptions {
    pub bits: u32,
    /// SDClip k of the attention, MLP and other matrices (pack's defaults 13, 12, 12.85).
    pub k_attn: f32,
    pub k_mlp: f32,
    pub k_other: f32,
    /// QAT switches on at the first step whose learning-rate scale is below this (1.0: from the start).
    pub threshold: f64,
}

/// The recipe's knobs with the reference's names and defaults.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainOptions {
    pub iterations: usize,
    pub warmdown_iters: usize,
    /// Optional linear learning-rate warm-up over the first steps (0 in the baseline).
    pub lr_warmup_steps: usize,
    pub train_batch_tokens: usize,
    pub grad_accum_steps: usize,
    /// Stop (and warm down) by wall-clock: the reference's MAX_WALLCLOCK_SECONDS; None for iterations only.
    pub max_wallclock_seconds: Option<f64>,
    pub embed_lr: f64,
    pub head_lr: f64,
    pub tied_embed_lr: f64,
    pub tied_embed_init_std: f64,
    pub matrix_lr: f64,
    pub scalar_lr: f64,
    pub muon_momentum: f64,
    pub muon_backend_steps: usize,
    pub muon_momentum_warmup_start: f64,
    pub muon_momentum_warmup_steps: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    /// 0 disables clipping (the baseline).
    pub grad_clip_norm: f64,
    pub seed: u64,
    pub val_loss_every: usize,
    pub train_log_every: usize,
    /// EMA decay of the exported weights (records use 0.997); None exports the live weights.
    pub ema_decay: Option<f64>,
    pub qat: Option<QatOptions>,
    /// The arithmetic of the forward and backward passes: f32, or the records' autocast (bf16 products).
    pub precision: Precision,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            iterations: 20_000,
            warmdown_iters: 1_200,
            lr_warmup_steps: 0,
            train_batch_tokens: 524_288,
            grad_accum_steps: 1,
            max_wallclock_seconds: Some(600.0),
            embed_lr: 0.6,
            head_lr: 0.008,
            tied_embed_lr: 0.05,
            tied_embed_init_std: 0.005,
            matrix_lr: 0.04,
            scalar_lr: 0.04,
            muon_momentum: 0.95,
            muon_backend_steps: 5,
            muon_momentum_warmup_start: 0.85,
            muon_momentum_warmup_steps: 500,
            beta1: 0.9,
            beta2: 0.95,
            adam_eps: 1e-8,
            grad_clip_norm: 0.0,
            seed: 1337,
            val_loss_every: 1000,
            train_log_every: 200,
            ema_decay: None,
            qat: None,
            precision: Precision::Fp32,
        }
    }
}

/// The reference's `lr_mul(step, elapsed_ms)`, times the optional linear warm-up.
pub fn lr_scale(opts: &TrainOptions, step: usize, elapsed_ms: f64) -> f64 {
    let warmup = if opts.lr_warmup_steps > 0 {
        ((step + 1) as f64 / opts.lr_warmup_steps as f64).min(1.0)
    } else {
        1.0
    };
    let warmdown = if opts.warmdown_iters == 0 {
        1.0
    } else if let Some(cap_s) = opts.max_wallclock_seconds {
        let max_ms = 1000.0 * cap_s;
        let step_ms = elapsed_ms / step.max(1) as f64;
        let warmdown_ms = opts.warmdown_iters as f64 * step_ms;
        let remaining_ms = (max_ms - elapsed_ms).max(0.0);
        if remaining_ms <= warmdown_ms {
            remaining_ms / warmdown_ms.max(1e-9)
        } else {
            1.0
        }
    } else {
        let start = opts.iterations.saturating_sub(opts.warmdown_iters);
        if start <= step && step < opts.iterations {
            ((opts.iterations - step) as f64 / opts.warmdown_iters.max(1) as f64).max(0.0)
        } else {
            1.0
        }
    };
    warmup * warmdown
}

/// What the trainer reports while it runs (the CLI prints these in the reference's log style).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    Step {
        step: usize,
        train_loss: f64,
        lr_scale: f64,
        train_time_ms: f64,
        step_avg_ms: f64,
    },
    Val {
        step: usize,
        val_loss: f64,
        val_bpb: f64,
        train_time_ms: f64,
        step_avg_ms: f64,
    },
    /// QAT switched on; `loss_gap` = loss with fake-quantized weights − loss without, on that step's batch: the
    /// evidence that the fake quantization reaches the forward.
    QatOn {
        step: usize,
        lr_scale: f64,
        loss_gap: f64,
    },
    StoppingEarly {
        step: usize,
        train_time_ms: f64,
    },
}

/// Which optimizer a weight belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Embedding,
    Head,
    Matrix,
    Scalar,
}

fn role_of(name: &str, dims: usize) -> Role {
    if name == "tok_emb.weight" {
        Role::Embedding
    } else if name == "lm_head.weight" {
        Role::Head
    } else if name.starts_with("blocks.")
        && dims == 2
        && !CONTROL_PATTERNS.iter().any(|p| name.contains(p))
    {
        Role::Matrix
    } else {
        Role::Scalar
    }
}

pub struct Trainer {
    model: Gpt,
    names: Vec<String>,
    vars: Vec<Var>,
    roles: Vec<Role>,
    opts: TrainOptions,
    adam_tok: Adam,
    adam_head: Adam,
    adam_scalar: Adam,
    muon: Muon,
    ema: Option<Vec<Tensor>>,
    qat_active: bool,
}

impl Trainer {
    /// A freshly initialised model (the reference's initialisation, drawn from `opts.seed` on the host whatever
    /// the device, so a seed gives the same start everywhere), trained on `device` with `backend`'s kernels.
    pub fn new(
        cfg: ModelConfig,
        opts: TrainOptions,
        device: &Device,
        backend: Backend,
    ) -> Result<Self> {
        let state = init::initial_state(&cfg, opts.tied_embed_init_std, opts.seed, &Device::Cpu)?;
        Self::from_state(cfg, state, opts, device, backend)
    }

    /// A trainer starting from given weights (checked against the config by the caller), trained on `device` with
    /// `backend`'s kernels ([`Backend::choose`] for the device and `opts.precision`).
    pub fn from_state(
        cfg: ModelConfig,
        state: crate::infer::weights::StateDict,
        opts: TrainOptions,
        device: &Device,
        backend: Backend,
    ) -> Result<Self> {
        let components = cfg.components();
        if !components.is_empty() {
            // The optimizer groups and initialisation follow the baseline's train_gpt.py; the records' components
            // bring their own (banks, gate inits, lane lambdas), which the trainer does not reproduce.
            return Err(TrainError::Setup(format!(
                "pgolf train builds the challenge's baseline architecture; this config enables {} \
                 (pgolf verify runs them)",
                components.join(", ")
            )));
        }
        if opts.train_batch_tokens == 0 || opts.grad_accum_steps == 0 {
            return Err(TrainError::Setup(
                "train batch tokens and gradient-accumulation steps must be positive".into(),
            ));
        }
        let per_step = opts.train_batch_tokens / opts.grad_accum_steps;
        if per_step < cfg.train_seq_len {
            return Err(TrainError::Setup(format!(
                "a micro-batch of {per_step} tokens holds no sequence of train_seq_len {}",
                cfg.train_seq_len
            )));
        }
        let mut model = Gpt::with_backend(cfg, state, device, opts.precision, backend)?;
        let named = model.make_trainable(|_| true)?;
        let (names, vars): (Vec<String>, Vec<Var>) = named.into_iter().unzip();
        let roles: Vec<Role> = names
            .iter()
            .zip(&vars)
            .map(|(n, v)| role_of(n, v.dims().len()))
            .collect();
        let count = |r: Role| roles.iter().filter(|&&x| x == r).count();
        let token_lr = if model.cfg.tie_embeddings {
            opts.tied_embed_lr
        } else {
            opts.embed_lr
        };
        let ema = match opts.ema_decay {
            Some(_) => Some(
                vars.iter()
                    .map(|v| v.as_tensor().copy())
                    .collect::<candle_core::Result<_>>()?,
            ),
            None => None,
        };
        Ok(Trainer {
            adam_tok: Adam::new(
                count(Role::Embedding),
                token_lr,
                opts.beta1,
                opts.beta2,
                opts.adam_eps,
            ),
            adam_head: Adam::new(
                count(Role::Head),
                opts.head_lr,
                opts.beta1,
                opts.beta2,
                opts.adam_eps,
            ),
            adam_scalar: Adam::new(
                count(Role::Scalar),
                opts.scalar_lr,
                opts.beta1,
                opts.beta2,
                opts.adam_eps,
            ),
            muon: Muon::new(
                count(Role::Matrix),
                opts.matrix_lr,
                opts.muon_momentum,
                opts.muon_backend_steps,
            ),
            model,
            names,
            vars,
            roles,
            opts,
            ema,
            qat_active: false,
        })
    }

    pub fn model(&self) -> &Gpt {
        &self.model
    }

    pub fn qat_active(&self) -> bool {
        self.qat_active
    }

    pub fn set_qat(&mut self, on: bool) -> Result<()> {
        if on && self.opts.qat.is_none() {
            return Err(TrainError::Setup("QAT was not configured".into()));
        }
        self.qat_active = on;
        Ok(())
    }

    /// The fake-quantized values of a block matrix on the SDClip grid `pack` uses.
    pub fn fake_quantized(&self, name: &str, w: &Tensor) -> Result<Tensor> {
        let q = self.opts.qat.as_ref().expect("QAT configured");
        let k = match group_of(name) {
            Group::Attention => q.k_attn,
            Group::Mlp => q.k_mlp,
            _ => q.k_other,
        };
        let (rows, cols) = w.dims2()?;
        let values = w.flatten_all()?.to_vec1::<f32>()?;
        let deq = sdclip_rows(name, &values, rows, cols, q.bits, k).dequantize();
        Ok(Tensor::from_vec(deq, (rows, cols), w.device())?)
    }

    /// The training loss on one batch: the mean cross-entropy, with the block matrices replaced by
    /// `w + (fake_quant(w) − w).detach()` while QAT is on (the forward sees the quantized values, the gradient
    /// reaches `w` unchanged).
    pub fn loss(&mut self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        if !self.qat_active {
            return Ok(self.model.train_loss(x, y)?);
        }
        let mut saved = Vec::new();
        for i in 0..self.vars.len() {
            if self.roles[i] != Role::Matrix {
                continue;
            }
            let w = self.vars[i].as_tensor().clone();
            let q = self.fake_quantized(&self.names[i], &w)?;
            let ste = (&w + (q - &w)?.detach())?;
            saved.push((i, self.model.set_parameter(&self.names[i], ste)?));
        }
        let loss = self.model.train_loss(x, y);
        for (i, t) in saved {
            self.model.set_parameter(&self.names[i], t)?;
        }
        Ok(loss?)
    }

    /// One optimizer step over micro-batches (the mean of their losses), every group at `lr_scale` × its base
    /// rate, Muon at `muon_momentum`. Returns the mean training loss.
    pub fn step(
        &mut self,
        batches: &[(Tensor, Tensor)],
        lr_scale: f64,
        muon_momentum: f64,
    ) -> Result<f64> {
        let mut total: Option<Tensor> = None;
        for (x, y) in batches {
            let l = self.loss(x, y)?;
            total = Some(match total {
                None => l,
                Some(t) => (t + l)?,
            });
        }
        let Some(total) = total else {
            return Err(TrainError::Setup("a step needs at least one batch".into()));
        };
        let loss = (total / batches.len() as f64)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let grads = loss.backward()?;
        let mut g: Vec<Option<Tensor>> = self
            .vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned())
            .collect();
        if self.opts.grad_clip_norm > 0.0 {
            clip_grad_norm(&mut g, self.opts.grad_clip_norm)?;
        }
        let token_lr = if self.model.cfg.tie_embeddings {
            self.opts.tied_embed_lr
        } else {
            self.opts.embed_lr
        };
        self.adam_tok.lr = token_lr * lr_scale;
        self.adam_head.lr = self.opts.head_lr * lr_scale;
        self.adam_scalar.lr = self.opts.scalar_lr * lr_scale;
        self.muon.lr = self.opts.matrix_lr * lr_scale;
        self.muon.momentum = muon_momentum;
        let pick = |role: Role| -> (Vec<Var>, Vec<Option<Tensor>>) {
            self.vars
                .iter()
                .zip(&g)
                .zip(&self.roles)
                .filter(|(_, r)| **r == role)
                .map(|((v, g), _)| (v.clone(), g.clone()))
                .unzip()
        };
        let (v, gr) = pick(Role::Embedding);
        self.adam_tok.step(&v, &gr)?;
        let (v, gr) = pick(Role::Head);
        self.adam_head.step(&v, &gr)?;
        let (v, gr) = pick(Role::Matrix);
        self.muon.step(&v, &gr)?;
        let (v, gr) = pick(Role::Scalar);
        self.adam_scalar.step(&v, &gr)?;
        if let (Some(ema), Some(decay)) = (&mut self.ema, self.opts.ema_decay) {
            for (e, v) in ema.iter_mut().zip(&self.vars) {
                *e = ((&*e * decay)? + (v.as_tensor() * (1.0 - decay))?)?;
            }
        }
        Ok(value)
    }

    /// The weights to export, with their state-dict names: the EMA when enabled, else the live weights.
    pub fn export(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(match &self.ema {
            Some(ema) => self
                .names
                .iter()
                .cloned()
                .zip(ema.iter().cloned())
                .collect(),
            None => {
                let mut out = Vec::with_capacity(self.vars.len());
                for (n, v) in self.names.iter().zip(&self.vars) {
                    out.push((n.clone(), v.as_tensor().copy()?));
                }
                out
            }
        })
    }

    /// Loads `weights` (name → tensor) into the live model; returns what was there.
    fn swap_weights(&mut self, weights: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let mut old = Vec::new();
        for (i, (n, t)) in weights.iter().enumerate() {
            let prev = self.vars[i].as_tensor().copy()?;
            self.vars[i].set(t)?;
            old.push((n.clone(), prev));
        }
        Ok(old)
    }
}

/// The validation set: tokens (already truncated to whole sequences) and their bytes.
pub struct ValSet {
    pub tokens: Vec<u16>,
    pub bytes: ByteSource,
}

fn eval_val(model: &Gpt, val: &ValSet, seq_len: usize) -> Result<(f64, f64)> {
    let procedure = WindowProcedure {
        scorer: Box::new(ModelScorer::new(model, seq_len)),
        seq_len,
        form: WindowForm::NonOverlapping,
        batch_seqs: 8,
        vocab_size: model.cfg.vocab_size,
        weights: weights_digest(model)?,
    };
    let (r, _) = evaluate(&procedure, &val.tokens, &val.bytes, &mut |_, _| {})?;
    Ok((r.val_loss, r.val_bpb))
}

/// What a finished run produced.
pub struct TrainOutcome {
    pub weights: Vec<(String, Tensor)>,
    pub steps: usize,
    pub train_time_ms: f64,
    /// (val_loss, val_bpb) of the exported weights, when a validation set was given.
    pub final_val: Option<(f64, f64)>,
    pub qat_started_at: Option<usize>,
    pub tokens_seen: u64,
}

/// The training loop of the reference's `main()`: validate at step 0, every `val_loss_every` and at the end;
/// stop at `iterations` or when the wall-clock cap is reached.
pub fn train(
    trainer: &mut Trainer,
    stream: &mut TokenStream,
    val: Option<&ValSet>,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<TrainOutcome> {
    let opts = trainer.opts.clone();
    let seq_len = trainer.model.cfg.train_seq_len;
    let local_tokens = opts.train_batch_tokens / opts.grad_accum_steps;
    let seqs = local_tokens / seq_len;
    let mut training_ms = 0.0;
    let mut stop_after: Option<usize> = None;
    let mut qat_started_at = None;
    let mut tokens_seen = 0u64;
    let mut t0 = Instant::now();
    let mut step = 0usize;
    loop {
        let last = step == opts.iterations || stop_after.is_some_and(|s| step >= s);
        if let Some(v) = val
            && (last || (opts.val_loss_every > 0 && step.is_multiple_of(opts.val_loss_every)))
        {
            training_ms += t0.elapsed().as_secs_f64() * 1000.0;
            let (val_loss, val_bpb) = eval_val(&trainer.model, v, seq_len)?;
            on_event(&TrainEvent::Val {
                step,
                val_loss,
                val_bpb,
                train_time_ms: training_ms,
                step_avg_ms: training_ms / step.max(1) as f64,
            });
            t0 = Instant::now();
        }
        if last {
            if stop_after.is_some() && step < opts.iterations {
                on_event(&TrainEvent::StoppingEarly {
                    step,
                    train_time_ms: training_ms,
                });
            }
            break;
        }
        let elapsed_ms = training_ms + t0.elapsed().as_secs_f64() * 1000.0;
        let scale = lr_scale(&opts, step, elapsed_ms);
        let mut batches = Vec::with_capacity(opts.grad_accum_steps);
        for _ in 0..opts.grad_accum_steps {
            // Each micro-batch takes local_tokens + 1 tokens, as DistributedTokenLoader does for one rank.
            let span = stream.take(local_tokens + 1)?;
            let used = seqs * seq_len;
            let x: Vec<u32> = span[..used].iter().map(|&t| t as u32).collect();
            let y: Vec<u32> = span[1..used + 1].iter().map(|&t| t as u32).collect();
            batches.push((
                Tensor::from_vec(x, (seqs, seq_len), trainer.model.device())?,
                Tensor::from_vec(y, (seqs, seq_len), trainer.model.device())?,
            ));
            tokens_seen += used as u64;
        }
        if let Some(q) = &opts.qat
            && !trainer.qat_active
            && scale < q.threshold
        {
            let (x, y) = &batches[0];
            let plain = trainer
                .loss(x, y)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            trainer.set_qat(true)?;
            let quantized = trainer
                .loss(x, y)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            qat_started_at = Some(step);
            on_event(&TrainEvent::QatOn {
                step,
                lr_scale: scale,
                loss_gap: quantized - plain,
            });
        }
        let frac = if opts.muon_momentum_warmup_steps > 0 {
            (step as f64 / opts.muon_momentum_warmup_steps as f64).min(1.0)
        } else {
            1.0
        };
        let momentum = (1.0 - frac) * opts.muon_momentum_warmup_start + frac * opts.muon_momentum;
        let train_loss = trainer.step(&batches, scale, momentum)?;
        if !train_loss.is_finite() {
            return Err(TrainError::Setup(format!(
                "the training loss became {train_loss} at step {}; lower the learning rates",
                step + 1
            )));
        }
        step += 1;
        let approx_ms = training_ms + t0.elapsed().as_secs_f64() * 1000.0;
        if opts.train_log_every > 0
            && (step <= 10 || step.is_multiple_of(opts.train_log_every) || stop_after.is_some())
        {
            on_event(&TrainEvent::Step {
                step,
                train_loss,
                lr_scale: scale,
                train_time_ms: approx_ms,
                step_avg_ms: approx_ms / step as f64,
            });
        }
        if stop_after.is_none()
            && opts
                .max_wallclock_seconds
                .is_some_and(|cap| approx_ms >= cap * 1000.0)
        {
            stop_after = Some(step);
        }
    }
    let weights = trainer.export()?;
    let final_val = match val {
        Some(v) if trainer.ema.is_some() => {
            let live = trainer.swap_weights(&weights)?;
            let r = eval_val(&trainer.model, v, seq_len)?;
            trainer.swap_weights(&live)?;
            Some(r)
        }
        Some(v) => Some(eval_val(&trainer.model, v, seq_len)?),
        None => None,
    };
    Ok(TrainOutcome {
        weights,
        steps: step,
        train_time_ms: training_ms,
        final_val,
        qat_started_at,
        tokens_seen,
    })
}
