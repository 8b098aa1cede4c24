//! `pgolf train`: the challenge's baseline recipe in candle, from shards to a safetensors checkpoint that `pack`
//! and `verify` read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use pgolf::data::bytes::ByteSource;
use pgolf::data::shard;
use pgolf::data::tokenizer::Tokenizer;
use pgolf::infer::config::ModelConfig;
use pgolf::infer::weights;
use pgolf::output;
use pgolf::train::loader::TokenStream;
use pgolf::train::{QatOptions, TrainEvent, TrainOptions, Trainer, ValSet, train};
use serde_json::json;

use crate::compute::ComputeArgs;

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
    #[arg(long, default_value_t = 20_000)]
    pub iterations: usize,
    /// WARMDOWN_ITERS: linear warm-down over the last N iterations (or N average steps of the wall-clock cap).
    #[arg(long, default_value_t = 1_200)]
    pub warmdown_iters: usize,
    /// Linear learning-rate warm-up over the first N steps (the baseline has none).
    #[arg(long, default_value_t = 0)]
    pub lr_warmup_steps: usize,
    /// TRAIN_BATCH_TOKENS per optimizer step.
    #[arg(long, default_value_t = 524_288)]
    pub train_batch_tokens: usize,
    /// Micro-batches per step (the batch is split, the mean loss is the same).
    #[arg(long, default_value_t = 1)]
    pub grad_accum_steps: usize,
    /// MAX_WALLCLOCK_SECONDS: stop (and warm down) by training time; 0 for iterations only.
    #[arg(long, default_value_t = 600.0)]
    pub max_wallclock_seconds: f64,
    #[arg(long, default_value_t = 0.6)]
    pub embed_lr: f64,
    #[arg(long, default_value_t = 0.008)]
    pub head_lr: f64,
    #[arg(long, default_value_t = 0.05)]
    pub tied_embed_lr: f64,
    #[arg(long, default_value_t = 0.005)]
    pub tied_embed_init_std: f64,
    #[arg(long, default_value_t = 0.04)]
    pub matrix_lr: f64,
    #[arg(long, default_value_t = 0.04)]
    pub scalar_lr: f64,
    #[arg(long, default_value_t = 0.95)]
    pub muon_momentum: f64,
    #[arg(long, default_value_t = 5)]
    pub muon_backend_steps: usize,
    #[arg(long, default_value_t = 0.85)]
    pub muon_momentum_warmup_start: f64,
    #[arg(long, default_value_t = 500)]
    pub muon_momentum_warmup_steps: usize,
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    #[arg(long, default_value_t = 0.95)]
    pub beta2: f64,
    #[arg(long, default_value_t = 1e-8)]
    pub adam_eps: f64,
    /// GRAD_CLIP_NORM (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub grad_clip_norm: f64,
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// VAL_LOSS_EVERY (0: only at the end).
    #[arg(long, default_value_t = 1000)]
    pub val_loss_every: usize,
    /// TRAIN_LOG_EVERY.
    #[arg(long, default_value_t = 200)]
    pub train_log_every: usize,
    /// Export an EMA of the weights with this decay (records use 0.997).
    #[arg(long)]
    pub ema: Option<f64>,
    /// Quantization-aware training: fake-quantize the block matrices on pack's SDClip grid.
    #[arg(long)]
    pub qat: bool,
    /// QAT bits (pack's default 6).
    #[arg(long, default_value_t = 6)]
    pub qat_bits: u32,
    /// QAT switches on once the learning-rate scale falls below this (1.0: from the first step).
    #[arg(long, default_value_t = 0.15)]
    pub qat_threshold: f64,
    /// Print one JSON object (and no log lines).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    // The outputs may not be the inputs (`--init` inside the output folder, say): refused before any work.
    let mut inputs = vec![args.config.as_path()];
    inputs.extend(args.init.as_deref());
    for name in ["model.safetensors", "config.json", "train_log.json"] {
        output::refuse_inputs(&args.output.join(name), &inputs)?;
    }
    let device = args.compute.open()?;
    let cfg = ModelConfig::load(&args.config)?;
    let components = cfg.components();
    if !components.is_empty() {
        bail!(
            "{}: pgolf train builds the challenge's baseline architecture; this config enables {} (pgolf verify \
             runs them)",
            args.config.display(),
            components.join(", ")
        );
    }
    if !(2..=8).contains(&args.qat_bits) {
        bail!("--qat-bits must be in 2..=8, got {}", args.qat_bits);
    }
    let tokenizer = Tokenizer::load(&args.tokenizer)?;
    let seq_len = cfg.train_seq_len;
    let files = shard::validation_files(&args.val)?;
    let mut tokens = shard::read_shards(&files, &pgolf::limits::current())?;
    if let Some(n) = args.max_val_tokens {
        tokens.truncate(n);
    }
    let tokens = shard::truncate_to_usable(tokens, seq_len, &args.val)?;
    if let Some(p) = tokens.iter().position(|&x| x as usize >= cfg.vocab_size) {
        bail!(
            "{}: validation token {} at position {p} is outside vocab_size {}",
            args.val,
            tokens[p],
            cfg.vocab_size
        );
    }
    let val = ValSet {
        bytes: ByteSource::Table(tokenizer.byte_table(cfg.vocab_size)),
        tokens,
    };
    let mut stream = TokenStream::open(&args.train)?;
    let opts = TrainOptions {
        iterations: args.iterations,
        warmdown_iters: args.warmdown_iters,
        lr_warmup_steps: args.lr_warmup_steps,
        train_batch_tokens: args.train_batch_tokens,
        grad_accum_steps: args.grad_accum_steps,
        max_wallclock_seconds: (args.max_wallclock_seconds > 0.0)
            .then_some(args.max_wallclock_seconds),
        embed_lr: args.embed_lr,
        head_lr: args.head_lr,
        tied_embed_lr: args.tied_embed_lr,
        tied_embed_init_std: args.tied_embed_init_std,
        matrix_lr: args.matrix_lr,
        scalar_lr: args.scalar_lr,
        muon_momentum: args.muon_momentum,
        muon_backend_steps: args.muon_backend_steps,
        muon_momentum_warmup_start: args.muon_momentum_warmup_start,
        muon_momentum_warmup_steps: args.muon_momentum_warmup_steps,
        beta1: args.beta1,
        beta2: args.beta2,
        adam_eps: args.adam_eps,
        grad_clip_norm: args.grad_clip_norm,
        seed: args.seed,
        val_loss_every: args.val_loss_every,
        train_log_every: args.train_log_every,
        ema_decay: args.ema,
        qat: args.qat.then_some(QatOptions {
            bits: args.qat_bits,
            k_attn: 13.0,
            k_mlp: 12.0,
            k_other: 12.85,
            threshold: args.qat_threshold,
        }),
        precision: args.compute.precision,
    };
    if let Some(d) = opts.ema_decay
        && !(0.0..1.0).contains(&d)
    {
        bail!("--ema must be in [0, 1), got {d}");
    }
    let mut trainer = match &args.init {
        Some(path) => {
            let state = pgolf::infer::weights::load_safetensors(path, &candle_core::Device::Cpu)?;
            let state = pgolf::infer::weights::check_state_dict(
                &cfg,
                state,
                candle_core::DType::F32,
                path,
            )?;
            Trainer::from_state(cfg.clone(), state, opts.clone(), &device)?
        }
        None => Trainer::new(cfg.clone(), opts.clone(), &device)?,
    };
    if args.compute.generic_ops {
        trainer.use_generic_ops();
    }
    if !args.json {
        println!(
            "model_params:{} train_shards:{} val_tokens:{} train_batch_tokens:{} train_seq_len:{} iterations:{} max_wallclock_seconds:{}",
            cfg.parameter_count(),
            stream.files().len(),
            val.tokens.len() - 1,
            args.train_batch_tokens,
            seq_len,
            args.iterations,
            args.max_wallclock_seconds
        );
    }
    let mut events = Vec::new();
    let json_mode = args.json;
    let iterations = args.iterations;
    let outcome = train(&mut trainer, &mut stream, Some(&val), &mut |e| {
        if !json_mode {
            match e {
                TrainEvent::Step {
                    step,
                    train_loss,
                    train_time_ms,
                    step_avg_ms,
                    ..
                } => println!(
                    "step:{step}/{iterations} train_loss:{train_loss:.4} train_time:{train_time_ms:.0}ms step_avg:{step_avg_ms:.2}ms"
                ),
                TrainEvent::Val {
                    step,
                    val_loss,
                    val_bpb,
                    train_time_ms,
                    step_avg_ms,
                } => println!(
                    "step:{step}/{iterations} val_loss:{val_loss:.4} val_bpb:{val_bpb:.4} train_time:{train_time_ms:.0}ms step_avg:{step_avg_ms:.2}ms"
                ),
                TrainEvent::QatOn {
                    step,
                    lr_scale,
                    loss_gap,
                } => println!(
                    "qat:on step:{step} lr_scale:{lr_scale:.4} fake_quant_loss_gap:{loss_gap:+.6}"
                ),
                TrainEvent::StoppingEarly {
                    step,
                    train_time_ms,
                } => println!(
                    "stopping_early: wallclock_cap train_time:{train_time_ms:.0}ms step:{step}/{iterations}"
                ),
            }
        }
        events.push(e.clone());
    })
    .with_context(|| format!("training {}", args.config.display()))?;

    std::fs::create_dir_all(&args.output).with_context(|| args.output.display().to_string())?;
    let model_path = args.output.join("model.safetensors");
    let config_path = args.output.join("config.json");
    let log_path = args.output.join("train_log.json");
    let tensors: HashMap<String, candle_core::Tensor> = outcome.weights.iter().cloned().collect();
    // The weights are read back from the temporary file and compared before they take the output's name.
    output::write_with(
        &model_path,
        &inputs,
        |p| candle_core::safetensors::save(&tensors, p).map_err(|e| e.to_string()),
        |p| {
            let back = weights::load_safetensors(p, &candle_core::Device::Cpu)
                .map_err(|e| e.to_string())?;
            let same = back.len() == tensors.len()
                && tensors.iter().all(|(name, t)| {
                    back.get(name).is_some_and(|b| {
                        let values = |x: &candle_core::Tensor| {
                            x.to_dtype(candle_core::DType::F32)
                                .and_then(|x| x.flatten_all()?.to_vec1::<f32>())
                                .ok()
                        };
                        values(b).is_some() && values(b) == values(t)
                    })
                });
            if same {
                Ok(())
            } else {
                Err("the weights differ from those trained".into())
            }
        },
    )?;
    // The grid QAT trained against travels with the config, so `pack` quantizes on it by default.
    let mut cfg = cfg;
    cfg.qat_grid = opts.qat.as_ref().map(|q| pgolf::infer::config::QatGrid {
        bits: q.bits,
        k_attn: q.k_attn,
        k_mlp: q.k_mlp,
        k_other: q.k_other,
    });
    output::write_file(
        &config_path,
        &inputs,
        serde_json::to_string_pretty(&cfg)?.as_bytes(),
    )?;
    let summary = json!({
        "model": model_path.display().to_string(),
        "config": config_path.display().to_string(),
        "parameters": cfg.parameter_count(),
        "steps": outcome.steps,
        "tokens_seen": outcome.tokens_seen,
        "train_time_ms": outcome.train_time_ms,
        "tokens_per_second": outcome.tokens_seen as f64 / (outcome.train_time_ms / 1000.0).max(1e-9),
        "final_val_loss": outcome.final_val.map(|v| v.0),
        "final_val_bpb": outcome.final_val.map(|v| v.1),
        "exported": if opts.ema_decay.is_some() { "ema" } else { "live" },
        "qat_started_at_step": outcome.qat_started_at,
        "options": opts,
        "events": events,
    });
    output::write_file(
        &log_path,
        &inputs,
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        if let Some((l, b)) = outcome.final_val {
            println!(
                "final {} weights val_loss:{l:.8} val_bpb:{b:.8}",
                if opts.ema_decay.is_some() {
                    "ema"
                } else {
                    "live"
                }
            );
        }
        println!(
            "wrote {} and {} ({} steps, {:.0} tokens/s)",
            model_path.display(),
            config_path.display(),
            outcome.steps,
            outcome.tokens_seen as f64 / (outcome.train_time_ms / 1000.0).max(1e-9)
        );
    }
    Ok(ExitCode::SUCCESS)
}
