//! `pgolf verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use clap::Args;
use pgolf::data::bytes::ByteSource;
use pgolf::data::shard;
use pgolf::data::tokenizer::Tokenizer;
use pgolf::infer::config::ModelConfig;
use pgolf::infer::model::Gpt;
use pgolf::infer::weights;
use pgolf::verify::eval::{self, EvalReport, WindowForm};
use pgolf::verify::scorer::ModelScorer;
use serde_json::json;

use crate::progress;

#[derive(Args)]
pub struct VerifyArgs {
    /// Model weights: safetensors with the challenge's state-dict names, or an artifact (torch `.pt`, or a `.ptz`
    /// under zlib/zstd/xz/brotli/BSHF in the baseline int8 or the `{"w","m"}` schemas), dequantized in memory.
    model: PathBuf,
    /// Model config JSON (the challenge's hyperparameter names); not needed for a pgolf artifact, which carries it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Validation shards (glob; sorted; `*_bytes_*` sidecars skipped).
    #[arg(long)]
    val: String,
    /// SentencePiece `.model` file, or `byte260`.
    #[arg(long)]
    tokenizer: String,
    /// Evaluation sequence length (default: the config's train_seq_len). Also sets the truncation rule.
    #[arg(long)]
    seq_len: Option<usize>,
    /// Exactly-once sliding windows with this stride (default: non-overlapping windows, the challenge's eval_val).
    #[arg(long)]
    stride: Option<usize>,
    /// With --stride: the older sliding form that re-scores the tail (to reproduce old records; not exactly once).
    #[arg(long, requires = "stride")]
    legacy_sliding: bool,
    /// CaseOps per-token byte sidecar shards (glob): bytes come from it instead of the tokenizer's table.
    #[arg(long)]
    byte_sidecar: Option<String>,
    /// Windows per forward batch.
    #[arg(long, default_value_t = 8)]
    batch_seqs: usize,
    /// Compute dtype of the forward pass (f32 or bf16); logits and losses are always f32.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    let dtype = match args.dtype.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        other => bail!("--dtype must be f32 or bf16, got {other:?}"),
    };
    let device = Device::Cpu;
    let (state, carried) = load_weights(&args.model, &device)?;
    let cfg = match (&args.config, carried) {
        (Some(p), _) => ModelConfig::load(p)?,
        (None, Some(v)) => {
            let cfg: ModelConfig = serde_json::from_value(v)
                .with_context(|| format!("{}: the config it carries", args.model.display()))?;
            cfg.validate().map_err(|m| {
                anyhow::anyhow!("{}: the config it carries: {m}", args.model.display())
            })?;
            cfg
        }
        (None, None) => bail!(
            "{}: carries no model config; pass --config CONFIG.json",
            args.model.display()
        ),
    };
    let tokenizer = Tokenizer::load(&args.tokenizer)?;
    let seq_len = args.seq_len.unwrap_or(cfg.train_seq_len);
    let files = shard::validation_files(&args.val)?;
    let tokens = shard::truncate_to_usable(shard::read_shards(&files)?, seq_len, &args.val)?;
    if let Some(pos) = tokens.iter().position(|&t| t as usize >= cfg.vocab_size) {
        bail!(
            "{}: token id {} at position {pos} is outside the model's vocab_size {} ({})",
            args.val,
            tokens[pos],
            cfg.vocab_size,
            args.config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "its carried config".into())
        );
    }
    let state = weights::check_state_dict(&cfg, state, dtype, &args.model)?;
    let model = Gpt::new(cfg.clone(), state, &device, dtype)?;
    let bytes = match &args.byte_sidecar {
        Some(glob) => ByteSource::load_sidecar(glob, tokens.len())?,
        None => ByteSource::Table(tokenizer.byte_table(cfg.vocab_size)),
    };
    let form = match (args.stride, args.legacy_sliding) {
        (None, _) => WindowForm::NonOverlapping,
        (Some(stride), false) => WindowForm::Sliding { stride },
        (Some(stride), true) => WindowForm::LegacySliding { stride },
    };
    let bar = progress::bar(0, form.name(), args.json);
    let mut on_progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let report = eval::evaluate(
        &ModelScorer { model: &model },
        &tokens,
        &bytes,
        seq_len,
        form,
        args.batch_seqs,
        &mut on_progress,
    )
    .with_context(|| format!("evaluating {}", args.model.display()))?;
    bar.finish_and_clear();
    print_report(&args, &cfg, &tokenizer, &report)?;
    Ok(ExitCode::SUCCESS)
}

fn print_report(
    args: &VerifyArgs,
    cfg: &ModelConfig,
    tokenizer: &Tokenizer,
    r: &EvalReport,
) -> Result<()> {
    let targets_per_second = r.sums.targets as f64 / r.seconds.max(1e-9);
    if args.json {
        let obj = json!({
            "model": args.model.display().to_string(),
            "tokenizer": tokenizer.name(),
            "parameters": cfg.parameter_count(),
            "method": r.method,
            "seq_len": r.seq_len,
            "stride": r.stride,
            "windows": r.windows,
            "val_loss": r.val_loss,
            "val_bpb": r.val_bpb,
            "nll_sum": r.sums.nll_sum,
            "targets": r.sums.targets,
            "bytes": r.sums.bytes,
            "coverage": r.coverage,
            "seconds": r.seconds,
            "targets_per_second": targets_per_second,
        });
        println!("{}", serde_json::to_string_pretty(&obj)?);
        return Ok(());
    }
    println!(
        "model        {} ({} parameters)",
        args.model.display(),
        cfg.parameter_count()
    );
    let stride = r
        .stride
        .map(|s| format!(", stride {s}"))
        .unwrap_or_default();
    println!(
        "evaluation   {} (seq_len {}{stride}, {} windows)",
        r.method, r.seq_len, r.windows
    );
    println!("val_loss     {:.8} nats/target", r.val_loss);
    println!("val_bpb      {:.8}", r.val_bpb);
    println!(
        "targets      {} scored, {} bytes",
        r.sums.targets, r.sums.bytes
    );
    let c = &r.coverage;
    if c.exactly_once {
        println!(
            "coverage     every target in [0, {}) scored exactly once",
            c.targets
        );
    } else {
        println!(
            "coverage     NOT exactly once: {} unscored, {} scored more than once (up to {} times) of {}",
            c.unscored, c.scored_more_than_once, c.max_times, c.targets
        );
    }
    println!(
        "time         {:.2} s ({:.0} targets/s)",
        r.seconds, targets_per_second
    );
    Ok(())
}

/// Safetensors load as stored; anything else goes through the artifact reader and is dequantized to f32. Returns the
/// config a pgolf artifact carries, if any.
fn load_weights(
    path: &std::path::Path,
    device: &Device,
) -> Result<(weights::StateDict, Option<serde_json::Value>)> {
    let head = {
        use std::io::Read;
        let mut h = [0u8; 9];
        let mut f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        let n = f
            .read(&mut h)
            .with_context(|| format!("{}", path.display()))?;
        h[..n].to_vec()
    };
    let is_safetensors = head.len() == 9 && head[8] == b'{';
    if is_safetensors {
        return Ok((weights::load_safetensors(path, device)?, None));
    }
    let artifact = pgolf::pack::inspect::load_artifact(path, &pgolf::limits::current())?;
    let mut state = weights::StateDict::new();
    for t in &artifact.tensors {
        let values = t.dequantize();
        state.insert(
            t.name.clone(),
            candle_core::Tensor::from_vec(values, t.shape.clone(), device)?,
        );
    }
    Ok((state, artifact.config))
}
