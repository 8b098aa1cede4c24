//! `pgolf pack`: the flags, resolved and run by `pgolf::pack::command`; a progress bar for the calibration; the
//! report printed as text or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{ArgMatches, Args, ValueEnum};
use pgolf::pack::codec::Codec;
use pgolf::pack::command::{self, FitMethod, PackFlags, PackReport, defaults};
use pgolf::pack::decoder::PYTHON_DECODER;
use pgolf::pack::fit::Scheme;

use crate::given::given;
use crate::progress;

#[derive(Clone, Copy, ValueEnum)]
enum SchemeArg {
    Percentile,
    GptqLite,
    Sdclip,
    /// Full-Hessian GPTQ with SDClip scales (needs --calibrate).
    Gptq,
}

#[derive(Clone, Copy, ValueEnum)]
enum FitArg {
    Bisect,
    Rd,
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
    #[arg(long, default_value_t = defaults().embed_bits)]
    embed_bits: u32,
    /// SDClip k per group (clip = k·std(row)); the records' defaults.
    #[arg(long, default_value_t = defaults().k_embed)]
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
    #[arg(long, default_value = defaults().codec.name(), value_parser = clap::builder::ValueParser::new(parse_codec))]
    codec: Codec,
    /// Byte-shuffle stride before a general-purpose codec (1 = none).
    #[arg(long, default_value_t = defaults().shuffle)]
    shuffle: usize,
    /// Float tensors with at most this many elements are passed through (the challenge's 65,536).
    #[arg(long, default_value_t = defaults().keep_float_max_numel)]
    keep_float_max_numel: usize,
    /// The cap on artifact + code bytes.
    #[arg(long, default_value_t = defaults().budget)]
    budget: u64,
    /// The submission's train_gpt.py, counted as the challenge counts it.
    #[arg(long)]
    code: Option<PathBuf>,
    /// Also write the Python decoder cut to what this artifact needs (python/pgolf_decode.py without the codecs,
    /// shuffles and LQER code it does not use), for a train_gpt.py to embed.
    #[arg(long)]
    decoder_out: Option<PathBuf>,
    /// Bytes to keep free under the budget.
    #[arg(long, default_value_t = defaults().margin)]
    margin: u64,
    /// How the budget is met: `bisect` widens one k factor for every group (or lowers a group's bits); `rd` chooses
    /// each matrix's bits and k (and, with --lqer-rank R, its correction rank among 0, R/2, R, 2R) to minimise the
    /// (Hessian-weighted, with --calibrate) error for the bytes (rans only).
    #[arg(long, value_enum, default_value = "bisect")]
    fit: FitArg,
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
    #[arg(long, default_value_t = defaults().lqer_top_k)]
    lqer_top_k: usize,
    /// LQER: symmetric per-row factors of --lqer-factor-bits instead of the asymmetric int2 A / int4-grouped B.
    #[arg(long)]
    lqer_sym: bool,
    /// LQER: values of B per fp16 scale (asymmetric).
    #[arg(long, default_value_t = defaults().lqer_group)]
    lqer_group: usize,
    /// LQER: bits of both factors (symmetric).
    #[arg(long, default_value_t = defaults().lqer_factor_bits)]
    lqer_factor_bits: u32,
    /// Training shards to calibrate GPTQ on (pgolf's forward pass collects each matrix's input Hessian).
    #[arg(long, value_name = "GLOB")]
    calibrate: Option<String>,
    /// Tokens of the calibration shards to run.
    #[arg(long, default_value_t = defaults().calib_tokens)]
    calib_tokens: usize,
    /// Allow calibration shards named as validation data (ruled illegal for submissions; the artifact records it).
    #[arg(long)]
    allow_validation_calibration: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl PackArgs {
    fn flags(&self, m: &ArgMatches) -> PackFlags {
        PackFlags {
            checkpoint: self.checkpoint.clone(),
            config: self.config.clone(),
            output: self.output.clone(),
            scheme: Some(match self.scheme {
                SchemeArg::Percentile => Scheme::Percentile,
                SchemeArg::GptqLite => Scheme::GptqLite,
                SchemeArg::Sdclip => Scheme::Sdclip,
                SchemeArg::Gptq => Scheme::Gptq,
            }),
            bits: self.bits,
            embed_bits: given(m, "embed_bits", &self.embed_bits),
            k_embed: given(m, "k_embed", &self.k_embed),
            k_attn: self.k_attn,
            k_mlp: self.k_mlp,
            k_other: self.k_other,
            codec: Some(self.codec),
            shuffle: given(m, "shuffle", &self.shuffle),
            keep_float_max_numel: given(m, "keep_float_max_numel", &self.keep_float_max_numel),
            budget: given(m, "budget", &self.budget),
            code: self.code.clone(),
            decoder_out: self.decoder_out.clone(),
            margin: given(m, "margin", &self.margin),
            fit: match self.fit {
                FitArg::Bisect => FitMethod::Bisect,
                FitArg::Rd => FitMethod::Rd,
            },
            control_fp16: self.control_fp16,
            no_gate_int8: self.no_gate_int8,
            lqer_rank: given(m, "lqer_rank", &self.lqer_rank),
            lqer_top_k: given(m, "lqer_top_k", &self.lqer_top_k),
            lqer_sym: self.lqer_sym,
            lqer_group: given(m, "lqer_group", &self.lqer_group),
            lqer_factor_bits: given(m, "lqer_factor_bits", &self.lqer_factor_bits),
            calibrate: self.calibrate.clone(),
            calib_tokens: given(m, "calib_tokens", &self.calib_tokens),
            allow_validation_calibration: self.allow_validation_calibration,
        }
    }
}

pub fn run(args: PackArgs, matches: &ArgMatches) -> Result<ExitCode> {
    let spec = args.flags(matches).resolve()?;
    let mut bar = progress::Stages::new(args.json);
    let report = command::pack(
        &spec,
        &pgolf::limits::current(),
        &mut |stage, done, total| bar.update(stage, done, total),
    )?;
    bar.finish();
    if args.json {
        crate::print::json_value(&report)?;
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &PackReport) {
    out!(
        "wrote        {} ({} bytes, {:.3} bits/parameter, read back and checked)",
        r.output,
        r.size.artifact_bytes,
        r.bits_per_parameter
    );
    out!("scheme       {}, codec {}", r.scheme, r.codec);
    if let Some(n) = &r.qat_grid {
        out!("qat          {n}");
    }
    if let Some(rd) = &r.rd {
        print_rd(rd);
    }
    if let Some(c) = &r.calibration {
        out!(
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
    let fit = &r.fit;
    match fit.k_factor {
        Some(f) => out!(
            "fit          k × {f:.3} after {} tries (target {} bytes for the model)",
            fit.tries.len(),
            fit.target_bytes
        ),
        None => out!(
            "fit          {} tries (target {} bytes for the model)",
            fit.tries.len(),
            fit.target_bytes
        ),
    }
    for g in &r.groups {
        let k = g.k.map(|k| format!(", k {k:.2}")).unwrap_or_default();
        out!(
            "  {:<10} int{}{k}: {} tensors, {} params, mse {:.3e}, relative error {:.3e}",
            format!("{:?}", g.group).to_lowercase(),
            g.bits,
            g.tensors,
            g.params,
            g.mse,
            g.relative_error
        );
    }
    out!(
        "code         {} bytes; python decoder (python/pgolf_decode.py) {} bytes if embedded, {} inside an lzma+base85 wrapper; cut to this artifact{}: {} / {}",
        r.size.code_bytes.unwrap_or(0),
        PYTHON_DECODER.len(),
        r.python_decoder_wrapped_bytes,
        r.decoder_out
            .as_ref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default(),
        r.tailored_decoder_bytes,
        r.tailored_decoder_wrapped_bytes
    );
    out!(
        "total        {} of {}: margin {} bytes",
        r.size.total_bytes,
        r.size.budget_bytes,
        r.size.headroom_bytes
    );
}

/// The rate–distortion fit's choices, counted.
fn print_rd(r: &pgolf::pack::fit::RdReport) {
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
    out!(
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
