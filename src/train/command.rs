//! `pgolf train` in two stages: the flags as given ([`TrainFlags`]) resolved into what runs ([`TrainSpec`]: the
//! config read and checked, every knob's default applied from [`TrainOptions::default`], the outputs checked against
//! the inputs), then [`prepare`] (device, tokenizer, validation set, training stream, model) and
//! [`Prepared::run`]: the training loop, the weights written (read back and compared first), the config with the
//! QAT grid it trained against, and the log ([`TrainReport`]).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::loader::TokenStream;
use super::{QatOptions, Result, TrainError, TrainEvent, TrainOptions, Trainer, ValSet, train};
use crate::data::bytes::ByteSource;
use crate::data::shard;
use crate::data::tokenizer::Tokenizer;
use crate::infer::config::{ModelConfig, QatGrid};
use crate::infer::device::ComputeFlags;
use crate::infer::weights;
use crate::limits::Limits;
use crate::output;

/// Every `pgolf train` flag, as given (`None`: left at the recipe's default). Field names are the flags' names.
#[derive(Clone, Debug, Default)]
pub struct TrainFlags {
    pub config: PathBuf,
    pub train: String,
    pub compute: ComputeFlags,
    pub val: String,
    pub tokenizer: String,
    pub output: PathBuf,
    pub init: Option<PathBuf>,
    pub max_val_tokens: Option<usize>,
    pub iterations: Option<usize>,
    pub warmdown_iters: Option<usize>,
    pub lr_warmup_steps: Option<usize>,
    pub train_batch_tokens: Option<usize>,
    pub grad_accum_steps: Option<usize>,
    /// 0: iterations only.
    pub max_wallclock_seconds: Option<f64>,
    pub embed_lr: Option<f64>,
    pub head_lr: Option<f64>,
    pub tied_embed_lr: Option<f64>,
    pub tied_embed_init_std: Option<f64>,
    pub matrix_lr: Option<f64>,
    pub scalar_lr: Option<f64>,
    pub muon_momentum: Option<f64>,
    pub muon_backend_steps: Option<usize>,
    pub muon_momentum_warmup_start: Option<f64>,
    pub muon_momentum_warmup_steps: Option<usize>,
    pub beta1: Option<f64>,
    pub beta2: Option<f64>,
    pub adam_eps: Option<f64>,
    pub grad_clip_norm: Option<f64>,
    pub seed: Option<u64>,
    pub val_loss_every: Option<usize>,
    pub train_log_every: Option<usize>,
    pub ema: Option<f64>,
    pub qat: bool,
    pub qat_bits: Option<u32>,
    pub qat_threshold: Option<f64>,
}

/// The QAT defaults: pack's grid (its default bits and k), switched on in the warm-down.
pub fn qat_defaults() -> QatOptions {
    let pack = crate::pack::command::defaults();
    QatOptions {
        bits: pack.block_bits,
        k_attn: pack.k_attn,
        k_mlp: pack.k_mlp,
        k_other: pack.k_other,
        threshold: 0.15,
    }
}

/// The files a training run writes into its output folder.
const OUTPUTS: [&str; 3] = ["model.safetensors", "config.json", "train_log.json"];

/// What one training run does.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainSpec {
    pub config_path: PathBuf,
    pub config: ModelConfig,
    /// Training shards (glob; sorted, wrapping around).
    pub train: String,
    pub compute: ComputeFlags,
    /// Validation shards (glob), scored during and after training.
    pub val: String,
    pub tokenizer: String,
    /// The folder model.safetensors, config.json and train_log.json are written to.
    pub output: PathBuf,
    /// Weights to start from instead of a fresh initialisation.
    pub init: Option<PathBuf>,
    /// Only the first N validation tokens (before the whole-sequence truncation).
    pub max_val_tokens: Option<usize>,
    pub options: TrainOptions,
}

fn setup<T>(message: impl Into<String>) -> Result<T> {
    Err(TrainError::Setup(message.into()))
}

impl TrainFlags {
    /// Resolves the flags: reads and checks the config, applies the recipe's defaults, and refuses an output that
    /// would overwrite an input.
    pub fn resolve(&self) -> Result<TrainSpec> {
        let mut inputs = vec![self.config.as_path()];
        inputs.extend(self.init.as_deref());
        for name in OUTPUTS {
            output::refuse_inputs(&self.output.join(name), &inputs)?;
        }
        let config = ModelConfig::load(&self.config)?;
        let components = config.components();
        if !components.is_empty() {
            return setup(format!(
                "{}: pgolf train builds the challenge's baseline architecture; this config enables {} (pgolf verify \
                 runs them)",
                self.config.display(),
                components.join(", ")
            ));
        }
        let q = qat_defaults();
        let qat_bits = self.qat_bits.unwrap_or(q.bits);
        if !(2..=8).contains(&qat_bits) {
            return setup(format!("--qat-bits must be in 2..=8, got {qat_bits}"));
        }
        let options = self.options(QatOptions {
            bits: qat_bits,
            threshold: self.qat_threshold.unwrap_or(q.threshold),
            ..q
        });
        if let Some(d) = options.ema_decay
            && !(0.0..1.0).contains(&d)
        {
            return setup(format!("--ema must be in [0, 1), got {d}"));
        }
        Ok(TrainSpec {
            config_path: self.config.clone(),
            config,
            train: self.train.clone(),
            compute: self.compute.clone(),
            val: self.val.clone(),
            tokenizer: self.tokenizer.clone(),
            output: self.output.clone(),
            init: self.init.clone(),
            max_val_tokens: self.max_val_tokens,
            options,
        })
    }

    /// The recipe: each knob given, else the baseline's.
    fn options(&self, qat: QatOptions) -> TrainOptions {
        let d = TrainOptions::default();
        TrainOptions {
            iterations: self.iterations.unwrap_or(d.iterations),
            warmdown_iters: self.warmdown_iters.unwrap_or(d.warmdown_iters),
            lr_warmup_steps: self.lr_warmup_steps.unwrap_or(d.lr_warmup_steps),
            train_batch_tokens: self.train_batch_tokens.unwrap_or(d.train_batch_tokens),
            grad_accum_steps: self.grad_accum_steps.unwrap_or(d.grad_accum_steps),
            max_wallclock_seconds: match self.max_wallclock_seconds {
                Some(s) => (s > 0.0).then_some(s),
                None => d.max_wallclock_seconds,
            },
            embed_lr: self.embed_lr.unwrap_or(d.embed_lr),
            head_lr: self.head_lr.unwrap_or(d.head_lr),
            tied_embed_lr: self.tied_embed_lr.unwrap_or(d.tied_embed_lr),
            tied_embed_init_std: self.tied_embed_init_std.unwrap_or(d.tied_embed_init_std),
            matrix_lr: self.matrix_lr.unwrap_or(d.matrix_lr),
            scalar_lr: self.scalar_lr.unwrap_or(d.scalar_lr),
            muon_momentum: self.muon_momentum.unwrap_or(d.muon_momentum),
            muon_backend_steps: self.muon_backend_steps.unwrap_or(d.muon_backend_steps),
            muon_momentum_warmup_start: self
                .muon_momentum_warmup_start
                .unwrap_or(d.muon_momentum_warmup_start),
            muon_momentum_warmup_steps: self
                .muon_momentum_warmup_steps
                .unwrap_or(d.muon_momentum_warmup_steps),
            beta1: self.beta1.unwrap_or(d.beta1),
            beta2: self.beta2.unwrap_or(d.beta2),
            adam_eps: self.adam_eps.unwrap_or(d.adam_eps),
            grad_clip_norm: self.grad_clip_norm.unwrap_or(d.grad_clip_norm),
            seed: self.seed.unwrap_or(d.seed),
            val_loss_every: self.val_loss_every.unwrap_or(d.val_loss_every),
            train_log_every: self.train_log_every.unwrap_or(d.train_log_every),
            ema_decay: self.ema,
            qat: self.qat.then_some(qat),
            precision: self.compute.precision,
        }
    }
}

/// What a run announces before its first step (the reference's first log line).
#[derive(Clone, Debug, Serialize)]
pub struct TrainHeader {
    pub model_params: usize,
    pub train_shards: usize,
    pub val_tokens: usize,
    pub train_batch_tokens: usize,
    pub train_seq_len: usize,
    pub iterations: usize,
    /// The flag's value: 0 for iterations only.
    pub max_wallclock_seconds: f64,
}

/// A run ready to train: the model on its device, the streams read.
pub struct Prepared {
    spec: TrainSpec,
    trainer: Trainer,
    stream: TokenStream,
    val: ValSet,
}

/// Opens the device, reads the tokenizer and the validation stream (checked against the vocabulary), opens the
/// training stream and builds the model (fresh, or from `--init`).
pub fn prepare(spec: &TrainSpec, limits: &Limits) -> Result<Prepared> {
    let (device, backend) = spec.compute.open()?;
    let cfg = &spec.config;
    let tokenizer = Tokenizer::load(&spec.tokenizer)?;
    let files = shard::validation_files(&spec.val)?;
    let mut tokens = shard::read_shards(&files, limits)?;
    if let Some(n) = spec.max_val_tokens {
        tokens.truncate(n);
    }
    let tokens = shard::truncate_to_usable(tokens, cfg.train_seq_len, &spec.val)?;
    if let Some(p) = tokens.iter().position(|&x| x as usize >= cfg.vocab_size) {
        return setup(format!(
            "{}: validation token {} at position {p} is outside vocab_size {}",
            spec.val, tokens[p], cfg.vocab_size
        ));
    }
    let val = ValSet {
        bytes: ByteSource::Table(tokenizer.byte_table(cfg.vocab_size)),
        tokens,
    };
    let stream = TokenStream::open(&spec.train)?;
    let opts = spec.options.clone();
    let trainer = match &spec.init {
        Some(path) => {
            let state = weights::load_safetensors(path, &Device::Cpu)?;
            let state = weights::check_state_dict(cfg, state, DType::F32, path)?;
            Trainer::from_state(cfg.clone(), state, opts, &device, backend)?
        }
        None => Trainer::new(cfg.clone(), opts, &device, backend)?,
    };
    Ok(Prepared {
        spec: spec.clone(),
        trainer,
        stream,
        val,
    })
}

/// What a run wrote and measured (also `train_log.json`). Fields in the order the JSON has always listed them
/// (alphabetical).
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub config: String,
    pub events: Vec<TrainEvent>,
    /// `ema` or `live`: which weights were exported.
    pub exported: &'static str,
    pub final_val_bpb: Option<f64>,
    pub final_val_loss: Option<f64>,
    pub model: String,
    pub options: TrainOptions,
    pub parameters: usize,
    pub qat_started_at_step: Option<usize>,
    pub steps: usize,
    pub tokens_per_second: f64,
    pub tokens_seen: u64,
    pub train_time_ms: f64,
}

impl Prepared {
    pub fn header(&self) -> TrainHeader {
        let (spec, opts) = (&self.spec, &self.spec.options);
        TrainHeader {
            model_params: spec.config.parameter_count(),
            train_shards: self.stream.files().len(),
            val_tokens: self.val.tokens.len() - 1,
            train_batch_tokens: opts.train_batch_tokens,
            train_seq_len: spec.config.train_seq_len,
            iterations: opts.iterations,
            max_wallclock_seconds: opts.max_wallclock_seconds.unwrap_or(0.0),
        }
    }

    /// Trains, then writes the weights, the config and the log; `on_event` sees every event as it happens.
    pub fn run(mut self, on_event: &mut dyn FnMut(&TrainEvent)) -> Result<TrainReport> {
        let spec = &self.spec;
        let mut events = Vec::new();
        let outcome = train(
            &mut self.trainer,
            &mut self.stream,
            Some(&self.val),
            &mut |e| {
                on_event(e);
                events.push(e.clone());
            },
        )
        .map_err(|e| TrainError::Setup(format!("training {}: {e}", spec.config_path.display())))?;
        let mut inputs = vec![spec.config_path.as_path()];
        inputs.extend(spec.init.as_deref());
        std::fs::create_dir_all(&spec.output)
            .map_err(|e| TrainError::Setup(format!("{}: {e}", spec.output.display())))?;
        let model_path = spec.output.join(OUTPUTS[0]);
        let config_path = spec.output.join(OUTPUTS[1]);
        let tensors: HashMap<String, Tensor> = outcome.weights.iter().cloned().collect();
        write_weights(&model_path, &inputs, &tensors)?;
        // The grid QAT trained against travels with the config, so `pack` quantizes on it by default.
        let opts = &spec.options;
        let mut cfg = spec.config.clone();
        cfg.qat_grid = opts.qat.as_ref().map(|q| QatGrid {
            bits: q.bits,
            k_attn: q.k_attn,
            k_mlp: q.k_mlp,
            k_other: q.k_other,
        });
        output::write_file(&config_path, &inputs, pretty(&cfg)?.as_bytes())?;
        let report = TrainReport {
            model: model_path.display().to_string(),
            config: config_path.display().to_string(),
            parameters: cfg.parameter_count(),
            steps: outcome.steps,
            tokens_seen: outcome.tokens_seen,
            train_time_ms: outcome.train_time_ms,
            tokens_per_second: outcome.tokens_seen as f64
                / (outcome.train_time_ms / 1000.0).max(1e-9),
            final_val_loss: outcome.final_val.map(|v| v.0),
            final_val_bpb: outcome.final_val.map(|v| v.1),
            exported: if opts.ema_decay.is_some() {
                "ema"
            } else {
                "live"
            },
            qat_started_at_step: outcome.qat_started_at,
            options: opts.clone(),
            events,
        };
        output::write_file(
            &spec.output.join(OUTPUTS[2]),
            &inputs,
            pretty(&report)?.as_bytes(),
        )?;
        Ok(report)
    }
}

/// JSON text of a value a run writes.
fn pretty<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| TrainError::Setup(e.to_string()))
}

/// The weights, read back from the temporary file and compared before they take the output's name.
fn write_weights(
    path: &std::path::Path,
    inputs: &[&std::path::Path],
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    output::write_with(
        path,
        inputs,
        |p| candle_core::safetensors::save(tensors, p).map_err(|e| e.to_string()),
        |p| {
            let back = weights::load_safetensors(p, &Device::Cpu).map_err(|e| e.to_string())?;
            let values = |x: &Tensor| {
                x.to_dtype(DType::F32)
                    .and_then(|x| x.flatten_all()?.to_vec1::<f32>())
                    .ok()
            };
            let same = back.len() == tensors.len()
                && tensors.iter().all(|(name, t)| {
                    back.get(name)
                        .is_some_and(|b| values(b).is_some() && values(b) == values(t))
                });
            if same {
                Ok(())
            } else {
                Err("the weights differ from those trained".into())
            }
        },
    )?;
    Ok(())
}
