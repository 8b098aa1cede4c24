//! `pgolf pack`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use pgolf::output;
use pgolf::pack::artifact::load_artifact;
use pgolf::pack::budget::{BUDGET_BYTES, SizeCheck, code_size, self_extracting_bytes};
use pgolf::pack::codec::Codec;
use pgolf::pack::decode_budget::DecodeBudget;
use pgolf::pack::decoder::{self, PYTHON_DECODER};
use pgolf::pack::fit::{self, GroupSetting, PackOptions, Scheme};
use pgolf::pack::quantize::KEEP_FLOAT_MAX_NUMEL;
use pgolf::pack::schema::Payload;

use crate::progress;
use pgolf::pack::torchfile::HostTensor;
use serde_json::json;

#[derive(Clone, Copy, ValueEnum)]
enum SchemeArg {
    Percentile,
    GptqLite,
    Sdclip,
    /// Full-Hessian GPTQ with SDClip scales (needs --calibrate).
    Gptq,
}

/// `--codec`: a codec by the name the container gives it.
fn parse_codec(s: &str) -> std::result::Result<Codec, String> {
    Codec::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Codec::all().map(|c| c.name()).collect();
        format!("unknown codec {s:?}; known: {}", names.join(", "))
    })
}

#[derive(Args)]
pub struct PackArgs {
    /// The checkpoint: safetensors or a torch `.pt` state dict (challenge names); a quantized artifact is
    /// dequantized and re-quantized.
    checkpoint: PathBuf,
    /// Model config JSON, stored in the artifact so `verify` needs no `--config`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output artifact.
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value = "sdclip")]
    scheme: SchemeArg,
    /// Bits of the attention, MLP and other matrices (2–8) [default: 6, or the checkpoint's QAT grid].
    #[arg(long)]
    bits: Option<u32>,
    /// Bits of the embedding / head (2–8).
    #[arg(long, default_value_t = 7)]
    embed_bits: u32,
    /// SDClip k per group (clip = k·std(row)); the records' defaults.
    #[arg(long, default_value_t = 15.0)]
    k_embed: f32,
    /// [default: 13, or the checkpoint's QAT grid]
    #[arg(long)]
    k_attn: Option<f32>,
    /// [default: 12, or the checkpoint's QAT grid]
    #[arg(long)]
    k_mlp: Option<f32>,
    /// [default: 12.85, or the checkpoint's QAT grid]
    #[arg(long)]
    k_other: Option<f32>,
    /// rans, zlib, zstd, xz or brotli.
    #[arg(long, default_value = "rans", value_parser = clap::builder::ValueParser::new(parse_codec))]
    codec: Codec,
    /// Byte-shuffle stride before a general-purpose codec (1 = none).
    #[arg(long, default_value_t = 1)]
    shuffle: usize,
    /// Float tensors with at most this many elements are passed through (the challenge's 65,536).
    #[arg(long, default_value_t = KEEP_FLOAT_MAX_NUMEL)]
    keep_float_max_numel: usize,
    /// The cap on artifact + code bytes.
    #[arg(long, default_value_t = BUDGET_BYTES)]
    budget: u64,
    /// The submission's train_gpt.py, counted as the challenge counts it.
    #[arg(long)]
    code: Option<PathBuf>,
    /// Also write the Python decoder cut to what this artifact needs (python/pgolf_decode.py without the codecs,
    /// shuffles and LQER code it does not use), for a train_gpt.py to embed.
    #[arg(long)]
    decoder_out: Option<PathBuf>,
    /// Bytes to keep free under the budget.
    #[arg(long, default_value_t = 0)]
    margin: u64,
    /// How the budget is met: `bisect` widens one k factor for every group (or lowers a group's bits); `rd` chooses
    /// each matrix's bits and k (and, with --lqer-rank R, its correction rank among 0, R/2, R, 2R) to minimise the
    /// (Hessian-weighted, with --calibrate) error for the bytes (rans only).
    #[arg(long, default_value = "bisect", value_parser = ["bisect", "rd"])]
    fit: String,
    /// Store the control tensors (attn_scale, mlp_scale, resid_mix, q_gain, skip_weights, …) in fp16 like every other
    /// small tensor, as the GPTQ records do (`gptq_mixed_quantize`), instead of the baseline exporter's fp32.
    #[arg(long)]
    control_fp16: bool,
    /// Keep attention-gate matrices (`*.attn_gate_w`) as fp16 passthrough instead of int8 rows.
    #[arg(long)]
    no_gate_int8: bool,
    /// LQER: rank of the low-rank correction of the quantization error (0: off; the 04-27 record uses 4).
    #[arg(long, default_value_t = 0)]
    lqer_rank: usize,
    /// LQER: how many matrices (largest ‖W − Wq‖) get a correction.
    #[arg(long, default_value_t = 3)]
    lqer_top_k: usize,
    /// LQER: symmetric per-row factors of --lqer-factor-bits instead of the asymmetric int2 A / int4-grouped B.
    #[arg(long)]
    lqer_sym: bool,
    /// LQER: values of B per fp16 scale (asymmetric).
    #[arg(long, default_value_t = 64)]
    lqer_group: usize,
    /// LQER: bits of both factors (symmetric).
    #[arg(long, default_value_t = 4)]
    lqer_factor_bits: u32,
    /// Training shards to calibrate GPTQ on (pgolf's forward pass collects each matrix's input Hessian).
    #[arg(long, value_name = "GLOB")]
    calibrate: Option<String>,
    /// Tokens of the calibration shards to run.
    #[arg(long, default_value_t = 65_536)]
    calib_tokens: usize,
    /// Allow calibration shards named as validation data (ruled illegal for submissions; the artifact records it).
    #[arg(long)]
    allow_validation_calibration: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PackArgs) -> Result<ExitCode> {
    for b in [args.bits.unwrap_or(6), args.embed_bits] {
        if !(2..=8).contains(&b) {
            bail!("bit widths must be in 2..=8, got {b}");
        }
    }
    let limits = pgolf::limits::current();
    let mut inputs = vec![args.checkpoint.as_path()];
    inputs.extend(args.config.as_deref());
    inputs.extend(args.code.as_deref());
    output::refuse_inputs(&args.output, &inputs)?;
    if let Some(d) = &args.decoder_out {
        output::refuse_inputs(d, &inputs)?;
        if d == &args.output {
            bail!("--decoder-out {} is the artifact's own path", d.display());
        }
    }
    let checkpoint = load_artifact(&args.checkpoint, &limits)?;
    // A quantized artifact is dequantized first (re-quantization), so a record's weights can be re-packed.
    let mut checkpoint = checkpoint;
    for t in checkpoint.tensors.iter_mut() {
        if !matches!(t.payload, Payload::Passthrough { .. }) {
            let values = t.dequantize();
            let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            t.payload = Payload::Passthrough {
                values: HostTensor {
                    dtype: "float32".into(),
                    shape: t.shape.clone(),
                    data,
                },
            };
            t.scheme = "passthrough_fp32".into();
            t.bits = 32;
        }
    }
    // Banked checkpoints (rec/2026-03-23 on) are split into per-block matrices first, as the records do.
    checkpoint.tensors =
        pgolf::pack::schema::unbank_tensors(std::mem::take(&mut checkpoint.tensors));
    let config = match &args.config {
        Some(p) => {
            let text =
                pgolf::limits::read_small_text(p).with_context(|| p.display().to_string())?;
            let cfg: pgolf::infer::config::ModelConfig = serde_json::from_str(&text)
                .with_context(|| format!("{}: bad model config", p.display()))?;
            Some(serde_json::to_value(cfg)?)
        }
        None => checkpoint.config.clone(),
    };
    let code = args
        .code
        .as_ref()
        .map(|p| code_size(p, &limits))
        .transpose()?;
    let code_bytes = code.as_ref().map(|c| c.counted_bytes).unwrap_or(0);
    let Some(target) = args.budget.checked_sub(code_bytes + args.margin) else {
        bail!(
            "the code ({code_bytes} bytes) and margin ({}) alone exceed the budget of {}",
            args.margin,
            args.budget
        );
    };
    // A checkpoint trained with `pgolf train --qat` carries the grid it trained against: it is the default for the
    // block matrices, and any flag given overrides it.
    let qat_grid = config
        .as_ref()
        .and_then(|c| c.get("qat_grid"))
        .and_then(|g| serde_json::from_value::<pgolf::infer::config::QatGrid>(g.clone()).ok());
    let grid = |from_flag: Option<f32>,
                from_grid: fn(&pgolf::infer::config::QatGrid) -> f32,
                default: f32| {
        from_flag
            .or(qat_grid.as_ref().map(from_grid))
            .unwrap_or(default)
    };
    let block_bits = args.bits.or(qat_grid.map(|g| g.bits)).unwrap_or(6);
    let (k_attn, k_mlp, k_other) = (
        grid(args.k_attn, |g| g.k_attn, 13.0),
        grid(args.k_mlp, |g| g.k_mlp, 12.0),
        grid(args.k_other, |g| g.k_other, 12.85),
    );
    let qat_note = qat_grid.map(|g| {
        let overridden = args.bits.is_some()
            || args.k_attn.is_some()
            || args.k_mlp.is_some()
            || args.k_other.is_some();
        format!(
            "the checkpoint was trained with QAT on int{} (k {}/{}/{}): {}",
            g.bits,
            g.k_attn,
            g.k_mlp,
            g.k_other,
            if overridden {
                "flags given override that grid"
            } else {
                "packing on that grid"
            }
        )
    });
    let opts = PackOptions {
        scheme: match args.scheme {
            SchemeArg::Percentile => Scheme::Percentile,
            SchemeArg::GptqLite => Scheme::GptqLite,
            SchemeArg::Sdclip => Scheme::Sdclip,
            SchemeArg::Gptq => Scheme::Gptq,
        },
        groups: [
            GroupSetting {
                bits: args.embed_bits,
                k: args.k_embed,
            },
            GroupSetting {
                bits: block_bits,
                k: k_attn,
            },
            GroupSetting {
                bits: block_bits,
                k: k_mlp,
            },
            GroupSetting {
                bits: block_bits,
                k: k_other,
            },
        ],
        codec: args.codec,
        shuffle: args.shuffle.max(1),
        keep_float_max_numel: args.keep_float_max_numel,
        hessians: None,
        calibration: None,
        gate_int8: !args.no_gate_int8,
        overrides: Default::default(),
        lqer_ranks: Default::default(),
        control_fp16: args.control_fp16,
        lqer: (args.lqer_rank > 0).then_some(fit::LqerOptions {
            rank: args.lqer_rank,
            top_k: args.lqer_top_k,
            asymmetric: !args.lqer_sym,
            group: args.lqer_group,
            factor_bits: args.lqer_factor_bits,
        }),
    };
    if args.lqer_rank > 0 && (args.lqer_group == 0 || !(2..=8).contains(&args.lqer_factor_bits)) {
        bail!("--lqer-group must be positive and --lqer-factor-bits in 2..=8");
    }
    let mut opts = opts;
    let mut calibration_report = None;
    let calibration_started = std::time::Instant::now();
    match (&args.scheme, &args.calibrate) {
        (SchemeArg::Gptq, None) => bail!("--scheme gptq needs --calibrate GLOB (training shards)"),
        (SchemeArg::Gptq, Some(glob)) => {
            let Some(cfg) = config.clone() else {
                bail!("--scheme gptq runs the model to calibrate: pass --config CONFIG.json");
            };
            let cfg: pgolf::infer::config::ModelConfig = serde_json::from_value(cfg)?;
            if args.calib_tokens == 0 {
                bail!("--calib-tokens must be positive");
            }
            let bar = progress::bar(0, "calibrate", args.json);
            let cal = pgolf::pack::calibrate::calibrate(
                &checkpoint.tensors,
                &cfg,
                glob,
                args.calib_tokens,
                args.allow_validation_calibration,
                8,
                &limits,
                &mut |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
            )?;
            bar.finish_and_clear();
            opts.calibration = Some(serde_json::to_value(&cal.report)?);
            opts.hessians = Some(std::sync::Arc::new(cal.hessians));
            calibration_report = Some(cal.report);
        }
        (_, Some(_)) => bail!("--calibrate is for --scheme gptq"),
        _ => {}
    }
    let calibration_seconds = calibration_started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let (packed, chosen, report, rd) = if args.fit == "rd" {
        let (p, o, rd) = fit::rd_fit(&checkpoint.tensors, config.as_ref(), &opts, target)?;
        let report = fit::FitReport {
            target_bytes: target,
            tries: Vec::new(),
            k_factor: None,
        };
        (p, o, report, Some(rd))
    } else {
        let (p, o, r) = fit::fit(&checkpoint.tensors, config.as_ref(), &opts, target)?;
        (p, o, r, None)
    };
    // The artifact is read back from its temporary file and checked tensor by tensor before it takes the output's
    // name; on any failure nothing is left behind.
    let round_trip = |written: &std::path::Path| -> std::result::Result<(), String> {
        let back = load_artifact(written, &limits).map_err(|e| e.to_string())?;
        if back.tensors.len() != packed.tensors.len() {
            return Err(format!(
                "re-read {} tensors, wrote {}",
                back.tensors.len(),
                packed.tensors.len()
            ));
        }
        match back
            .tensors
            .iter()
            .zip(&packed.tensors)
            .find(|(a, b)| a.name != b.name || a.dequantize() != b.dequantize())
        {
            Some((_, b)) => Err(format!("tensor {} does not read back as written", b.name)),
            None => Ok(()),
        }
    };
    output::write_with(
        &args.output,
        &inputs,
        |temp| std::fs::write(temp, &packed.bytes).map_err(|e| e.to_string()),
        round_trip,
    )?;
    let artifact_bytes = packed.bytes.len() as u64;
    // The decoder this artifact needs (its own header says which codings it holds).
    let (header, codec_used, shuffle_used, _) = pgolf::pack::container::read_header(
        &args.output,
        &packed.bytes,
        &mut DecodeBudget::for_file(&args.output, artifact_bytes, &limits),
    )?;
    let tailored = decoder::tailored(&header, codec_used, shuffle_used);
    if let Some(path) = &args.decoder_out {
        let mut check_inputs = inputs.clone();
        check_inputs.push(args.output.as_path());
        output::write_with(
            path,
            &check_inputs,
            |temp| std::fs::write(temp, &tailored).map_err(|e| e.to_string()),
            |_| Ok(()),
        )?;
    }
    let size = SizeCheck::new(
        artifact_bytes,
        code.as_ref().map(|c| c.counted_bytes),
        args.budget,
    );
    let params: usize = packed.tensors.iter().map(|t| t.params()).sum();
    let codec_name = match opts.codec {
        Codec::Rans => "rans".to_string(),
        Codec::General(c) => format!(
            "{}{}",
            c.describe(),
            if opts.shuffle > 1 {
                format!(" + shuffle {}", opts.shuffle)
            } else {
                String::new()
            }
        ),
    };
    let scheme_name = match opts.scheme {
        Scheme::Percentile => "percentile",
        Scheme::GptqLite => "gptq-lite",
        Scheme::Sdclip => "sdclip",
        Scheme::Gptq => "gptq",
    };
    if args.json {
        let obj = json!({
            "output": args.output.display().to_string(),
            "size": size,
            "scheme": scheme_name,
            "codec": codec_name,
            "parameters": params,
            "bits_per_parameter": 8.0 * artifact_bytes as f64 / params.max(1) as f64,
            "groups": packed.groups,
            "settings": chosen,
            "fit": report,
            "python_decoder_bytes": PYTHON_DECODER.len(),
            "python_decoder_wrapped_bytes": self_extracting_bytes(PYTHON_DECODER.as_bytes()),
            "tailored_decoder_bytes": tailored.len(),
            "tailored_decoder_wrapped_bytes": self_extracting_bytes(tailored.as_bytes()),
            "decoder_out": args.decoder_out.as_ref().map(|p| p.display().to_string()),
            "calibration": calibration_report,
            "rd": rd,
            "qat_grid": qat_note,
            "stage_seconds": {
                "calibration": calibration_seconds,
                "quantize": packed.quantize_seconds,
                "encode": packed.encode_seconds,
            },
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&obj)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "wrote        {} ({artifact_bytes} bytes, {:.3} bits/parameter, read back and checked)",
        args.output.display(),
        8.0 * artifact_bytes as f64 / params.max(1) as f64
    );
    println!("scheme       {scheme_name}, codec {codec_name}");
    if let Some(n) = &qat_note {
        println!("qat          {n}");
    }
    if let Some(r) = &rd {
        let mut bits: std::collections::BTreeMap<u32, usize> = Default::default();
        let mut ranks: std::collections::BTreeMap<usize, usize> = Default::default();
        for c in &r.choices {
            *bits.entry(c.bits).or_default() += 1;
            if c.lqer_rank > 0 {
                *ranks.entry(c.lqer_rank).or_default() += 1;
            }
        }
        let lqer = if ranks.is_empty() {
            String::new()
        } else {
            format!(
                "; LQER: {}",
                ranks
                    .iter()
                    .map(|(r, n)| format!("{n}×rank {r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        println!(
            "rd fit       λ {:.3e}, {} matrices (≤ {} candidates each; bits: {}{lqer}), {} error {:.4e}",
            r.lambda,
            r.choices.len(),
            r.candidates_per_tensor,
            bits.iter()
                .map(|(b, n)| format!("{n}×int{b}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.error,
            r.total_error
        );
    }
    if let Some(c) = &calibration_report {
        println!(
            "calibration  {} tokens ({} sequences of {}) from {} shard(s), {} Hessians{}",
            c.tokens,
            c.sequences,
            c.seq_len,
            c.shards.len(),
            c.hessians,
            if c.validation_data {
                "; VALIDATION DATA (ruled illegal for submissions; recorded in the artifact)"
            } else {
                ""
            }
        );
    }
    if let Some(f) = report.k_factor {
        println!(
            "fit          k × {f:.3} after {} tries (target {} bytes for the model)",
            report.tries.len(),
            report.target_bytes
        );
    } else {
        println!(
            "fit          {} tries (target {} bytes for the model)",
            report.tries.len(),
            report.target_bytes
        );
    }
    for g in &packed.groups {
        let k = g.k.map(|k| format!(", k {k:.2}")).unwrap_or_default();
        println!(
            "  {:<10} int{}{k}: {} tensors, {} params, mse {:.3e}, relative error {:.3e}",
            format!("{:?}", g.group).to_lowercase(),
            g.bits,
            g.tensors,
            g.params,
            g.mse,
            g.relative_error
        );
    }
    println!(
        "code         {code_bytes} bytes; python decoder (python/pgolf_decode.py) {} bytes if embedded, {} inside an lzma+base85 wrapper; cut to this artifact{}: {} / {}",
        PYTHON_DECODER.len(),
        self_extracting_bytes(PYTHON_DECODER.as_bytes()),
        args.decoder_out
            .as_ref()
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default(),
        tailored.len(),
        self_extracting_bytes(tailored.as_bytes())
    );
    println!(
        "total        {} of {}: margin {} bytes",
        size.total_bytes, size.budget_bytes, size.headroom_bytes
    );
    Ok(ExitCode::SUCCESS)
}
