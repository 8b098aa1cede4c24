//! `pgolf train`: the challenge's baseline recipe in candle, from shards to a safetensors checkpoint that `pack`
//! and `verify` read. The flags, resolved, prepared and run by `pgolf::train::command`; the reference's log lines.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{ArgMatches, Args};
use pgolf::train::command::{self, TrainFlags, qat_defaults};
use pgolf::train::{TrainEvent, TrainOptions};

use crate::compute::ComputeArgs;
use crate::given::given;

#[derive(Args, Clone)]
pub struct TrainArgs {
    /// Model config JSON (the challenge's hyperparameter names; train_seq_len is the training sequence length).
    #[arg(long)]
    pub config: PathBuf,
    /// Training shards (glob; read in sorted order, wrapping around).
    #[arg(long)]
    pub train: String,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Validation shards (glob), scored with the challenge's eval_val during and after training.
    #[arg(long)]
    pub val: String,
    /// SentencePiece `.model` file, or `byte260` (for the validation bytes).
    #[arg(long)]
    pub tokenizer: String,
    /// Output directory: model.safetensors, config.json, train_log.json.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Start from these weights (safetensors, the challenge's names) instead of a fresh initialisation.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Only the first N validation tokens (before the whole-sequence truncation), for quick runs.
    #[arg(long)]
    pub max_val_tokens: Option<usize>,
    /// ITERATIONS.
    #[arg(long, default_value_t = TrainOptions::default().iterations)]
    pub iterations: usize,
    /// WARMDOWN_ITERS: linear warm-down over the last N iterations (or N average steps of the wall-clock cap).
    #[arg(long, default_value_t = TrainOptions::default().warmdown_iters)]
    pub warmdown_iters: usize,
    /// Linear learning-rate warm-up over the first N steps (the baseline has none).
    #[arg(long, default_value_t = TrainOptions::default().lr_warmup_steps)]
    pub lr_warmup_steps: usize,
    /// TRAIN_BATCH_TOKENS per optimizer step.
    #[arg(long, default_value_t = TrainOptions::default().train_batch_tokens)]
    pub train_batch_tokens: usize,
    /// Micro-batches per step (the batch is split, the mean loss is the same).
    #[arg(long, default_value_t = TrainOptions::default().grad_accum_steps)]
    pub grad_accum_steps: usize,
    /// MAX_WALLCLOCK_SECONDS: stop (and warm down) by training time; 0 for iterations only.
    #[arg(long, default_value_t = TrainOptions::default().max_wallclock_seconds.unwrap_or(0.0))]
    pub max_wallclock_seconds: f64,
    #[arg(long, default_value_t = TrainOptions::default().embed_lr)]
    pub embed_lr: f64,
    #[arg(long, default_value_t = TrainOptions::default().head_lr)]
    pub head_lr: f64,
    #[arg(long, default_value_t = TrainOptions::default().tied_embed_lr)]
    pub tied_embed_lr: f64,
    #[arg(long, default_value_t = TrainOptions::default().tied_embed_init_std)]
    pub tied_embed_init_std: f64,
    #[arg(long, default_value_t = TrainOptions::default().matrix_lr)]
    pub matrix_lr: f64,
    #[arg(long, default_value_t = TrainOptions::default().scalar_lr)]
    pub scalar_lr: f64,
    #[arg(long, default_value_t = TrainOptions::default().muon_momentum)]
    pub muon_momentum: f64,
    #[arg(long, default_value_t = TrainOptions::default().muon_backend_steps)]
    pub muon_backend_steps: usize,
    #[arg(long, default_value_t = TrainOptions::default().muon_momentum_warmup_start)]
    pub muon_momentum_warmup_start: f64,
    #[arg(long, default_value_t = TrainOptions::default().muon_momentum_warmup_steps)]
    pub muon_momentum_warmup_steps: usize,
    #[arg(long, default_value_t = TrainOptions::default().beta1)]
    pub beta1: f64,
    #[arg(long, default_value_t = TrainOptions::default().beta2)]
    pub beta2: f64,
    #[arg(long, default_value_t = TrainOptions::default().adam_eps)]
    pub adam_eps: f64,
    /// GRAD_CLIP_NORM (0: none).
    #[arg(long, default_value_t = TrainOptions::default().grad_clip_norm)]
    pub grad_clip_norm: f64,
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    pub seed: u64,
    /// VAL_LOSS_EVERY (0: only at the end).
    #[arg(long, default_value_t = TrainOptions::default().val_loss_every)]
    pub val_loss_every: usize,
    /// TRAIN_LOG_EVERY.
    #[arg(long, default_value_t = TrainOptions::default().train_log_every)]
    pub train_log_every: usize,
    /// Export an EMA of the weights with this decay (records use 0.997).
    #[arg(long)]
    pub ema: Option<f64>,
    /// Quantization-aware training: fake-quantize the block matrices on pack's SDClip grid.
    #[arg(long)]
    pub qat: bool,
    /// QAT bits (pack's default 6).
    #[arg(long, default_value_t = qat_defaults().bits)]
    pub qat_bits: u32,
    /// QAT switches on once the learning-rate scale falls below this (1.0: from the first step).
    #[arg(long, default_value_t = qat_defaults().threshold)]
    pub qat_threshold: f64,
    /// Print one JSON object (and no log lines).
    #[arg(long)]
    pub json: bool,
}

/// The library's flags from the parsed ones: `copied` fields as they are, `defaulted` ones (a flag with a default)
/// only where the command line gave them.
macro_rules! to_flags {
    ($args:ident, $m:ident, copied { $($c:ident),* $(,)? }, defaulted { $($d:ident),* $(,)? }, $($rest:tt)*) => {
        TrainFlags {
            $($c: $args.$c.clone(),)*
            $($d: given($m, stringify!($d), &$args.$d),)*
            $($rest)*
        }
    };
}

impl TrainArgs {
    fn flags(&self, m: &ArgMatches) -> TrainFlags {
        to_flags!(self, m,
            copied { config, train, val, tokenizer, output, init, max_val_tokens, ema, qat },
            defaulted {
                iterations, warmdown_iters, lr_warmup_steps, train_batch_tokens, grad_accum_steps,
                max_wallclock_seconds, embed_lr, head_lr, tied_embed_lr, tied_embed_init_std, matrix_lr, scalar_lr,
                muon_momentum, muon_backend_steps, muon_momentum_warmup_start, muon_momentum_warmup_steps, beta1,
                beta2, adam_eps, grad_clip_norm, seed, val_loss_every, train_log_every, qat_bits, qat_threshold,
            },
            compute: self.compute.flags(),
        )
    }
}

pub fn run(args: TrainArgs, matches: &ArgMatches) -> Result<ExitCode> {
    let spec = args.flags(matches).resolve()?;
    let prepared = command::prepare(&spec, &pgolf::limits::current())?;
    let quiet = args.json;
    if !quiet {
        let h = prepared.header();
        out!(
            "model_params:{} train_shards:{} val_tokens:{} train_batch_tokens:{} train_seq_len:{} iterations:{} max_wallclock_seconds:{}",
            h.model_params,
            h.train_shards,
            h.val_tokens,
            h.train_batch_tokens,
            h.train_seq_len,
            h.iterations,
            h.max_wallclock_seconds
        );
    }
    let iterations = spec.options.iterations;
    let report = prepared.run(&mut |e| {
        if !quiet {
            print_event(e, iterations)
        }
    })?;
    if quiet {
        crate::print::json_value(&report)?;
    } else {
        if let (Some(l), Some(b)) = (report.final_val_loss, report.final_val_bpb) {
            out!(
                "final {} weights val_loss:{l:.8} val_bpb:{b:.8}",
                report.exported
            );
        }
        out!(
            "wrote {} and {} ({} steps, {:.0} tokens/s)",
            report.model,
            report.config,
            report.steps,
            report.tokens_per_second
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One event as the reference logs it.
fn print_event(e: &TrainEvent, iterations: usize) {
    match *e {
        TrainEvent::Step {
            step,
            train_loss,
            train_time_ms,
            step_avg_ms,
            ..
        } => out!(
            "step:{step}/{iterations} train_loss:{train_loss:.4} train_time:{train_time_ms:.0}ms step_avg:{step_avg_ms:.2}ms"
        ),
        TrainEvent::Val {
            step,
            val_loss,
            val_bpb,
            train_time_ms,
            step_avg_ms,
        } => out!(
            "step:{step}/{iterations} val_loss:{val_loss:.4} val_bpb:{val_bpb:.4} train_time:{train_time_ms:.0}ms step_avg:{step_avg_ms:.2}ms"
        ),
        TrainEvent::QatOn {
            step,
            lr_scale,
            loss_gap,
        } => {
            out!("qat:on step:{step} lr_scale:{lr_scale:.4} fake_quant_loss_gap:{loss_gap:+.6}")
        }
        TrainEvent::StoppingEarly {
            step,
            train_time_ms,
        } => out!(
            "stopping_early: wallclock_cap train_time:{train_time_ms:.0}ms step:{step}/{iterations}"
        ),
    }
}
