//! `pgolf pack` in two stages: the flags as given ([`PackFlags`]) resolved into what runs ([`PackSpec`]: every
//! default applied, every combination checked before a file is read), then [`pack`]: load the checkpoint
//! (dequantizing an artifact, splitting banked matrices), calibrate GPTQ, fit the budget, write the artifact (read
//! back and checked before it takes its name) and the tailored decoder, and report ([`PackReport`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::artifact::load_artifact;
use super::budget::{BUDGET_BYTES, CodeSize, SizeCheck, code_size, self_extracting_bytes};
use super::calibrate::{CalibrationReport, calibrate};
use super::codec::Codec;
use super::decode_budget::DecodeBudget;
use super::decoder::{self, PYTHON_DECODER};
use super::fit::{
    self, FitReport, GroupReport, GroupSetting, LqerOptions, PackOptions, RdReport, Scheme,
};
use super::quantize::KEEP_FLOAT_MAX_NUMEL;
use super::schema::{Payload, QTensor};
use super::torchfile::HostTensor;
use super::{Limits, PackError, Result};
use crate::infer::config::{ModelConfig, QatGrid};

/// How the budget is met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FitMethod {
    /// Widen one k factor for every group (or lower a group's bits) until the artifact fits.
    #[default]
    Bisect,
    /// Choose each matrix's bits, k (and LQER rank) to minimise the error for the bytes (rans only).
    Rd,
}

/// The defaults of pack's knobs (the records' settings).
pub struct Defaults {
    pub scheme: Scheme,
    pub block_bits: u32,
    pub embed_bits: u32,
    pub k_embed: f32,
    pub k_attn: f32,
    pub k_mlp: f32,
    pub k_other: f32,
    pub codec: Codec,
    pub shuffle: usize,
    pub keep_float_max_numel: usize,
    pub budget: u64,
    pub margin: u64,
    pub lqer_top_k: usize,
    pub lqer_group: usize,
    pub lqer_factor_bits: u32,
    pub calib_tokens: usize,
}

/// The one source of the defaults the flags show and the resolution applies.
pub fn defaults() -> Defaults {
    Defaults {
        scheme: Scheme::Sdclip,
        block_bits: 6,
        embed_bits: 7,
        k_embed: 15.0,
        k_attn: 13.0,
        k_mlp: 12.0,
        k_other: 12.85,
        codec: Codec::Rans,
        shuffle: 1,
        keep_float_max_numel: KEEP_FLOAT_MAX_NUMEL,
        budget: BUDGET_BYTES,
        margin: 0,
        lqer_top_k: 3,
        lqer_group: 64,
        lqer_factor_bits: 4,
        calib_tokens: 65_536,
    }
}

/// Every `pgolf pack` flag, as given (`None`: not given). Field names are the flags' names.
#[derive(Clone, Debug, Default)]
pub struct PackFlags {
    pub checkpoint: PathBuf,
    pub config: Option<PathBuf>,
    pub output: PathBuf,
    pub scheme: Option<Scheme>,
    pub bits: Option<u32>,
    pub embed_bits: Option<u32>,
    pub k_embed: Option<f32>,
    pub k_attn: Option<f32>,
    pub k_mlp: Option<f32>,
    pub k_other: Option<f32>,
    pub codec: Option<Codec>,
    pub shuffle: Option<usize>,
    pub keep_float_max_numel: Option<usize>,
    pub budget: Option<u64>,
    pub code: Option<PathBuf>,
    pub decoder_out: Option<PathBuf>,
    pub margin: Option<u64>,
    pub fit: FitMethod,
    pub control_fp16: bool,
    pub no_gate_int8: bool,
    pub lqer_rank: Option<usize>,
    pub lqer_top_k: Option<usize>,
    pub lqer_sym: bool,
    pub lqer_group: Option<usize>,
    pub lqer_factor_bits: Option<u32>,
    pub calibrate: Option<String>,
    pub calib_tokens: Option<usize>,
    pub allow_validation_calibration: bool,
}

/// The block matrices' grid: each value given, else the checkpoint's QAT grid where it was trained with one, else
/// the default. Settled when the checkpoint's config is read.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BlockGrid {
    pub bits: Option<u32>,
    pub k_attn: Option<f32>,
    pub k_mlp: Option<f32>,
    pub k_other: Option<f32>,
}

/// GPTQ's calibration: training shards, how many tokens, and whether validation shards are allowed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CalibrationSpec {
    pub glob: String,
    pub tokens: usize,
    pub allow_validation: bool,
}

/// What one pack runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PackSpec {
    pub checkpoint: PathBuf,
    pub config: Option<PathBuf>,
    pub output: PathBuf,
    pub decoder_out: Option<PathBuf>,
    pub code: Option<PathBuf>,
    pub budget: u64,
    pub margin: u64,
    pub scheme: Scheme,
    /// The embedding / head group.
    pub embed: GroupSetting,
    pub grid: BlockGrid,
    #[serde(skip)]
    pub codec: Codec,
    pub shuffle: usize,
    pub keep_float_max_numel: usize,
    pub fit: FitMethod,
    pub control_fp16: bool,
    pub gate_int8: bool,
    pub lqer: Option<LqerOptions>,
    pub calibration: Option<CalibrationSpec>,
}

fn setup<T>(message: impl Into<String>) -> Result<T> {
    Err(PackError::Setup(message.into()))
}

impl PackFlags {
    /// Resolves the flags into what runs; reads nothing.
    pub fn resolve(&self) -> Result<PackSpec> {
        let d = defaults();
        let embed_bits = self.embed_bits.unwrap_or(d.embed_bits);
        for b in [self.bits.unwrap_or(d.block_bits), embed_bits] {
            if !(2..=8).contains(&b) {
                return setup(format!("bit widths must be in 2..=8, got {b}"));
            }
        }
        if self.decoder_out.as_ref() == Some(&self.output) {
            return setup(format!(
                "--decoder-out {} is the artifact's own path",
                self.output.display()
            ));
        }
        let lqer_rank = self.lqer_rank.unwrap_or(0);
        let lqer = (lqer_rank > 0).then_some(LqerOptions {
            rank: lqer_rank,
            top_k: self.lqer_top_k.unwrap_or(d.lqer_top_k),
            asymmetric: !self.lqer_sym,
            group: self.lqer_group.unwrap_or(d.lqer_group),
            factor_bits: self.lqer_factor_bits.unwrap_or(d.lqer_factor_bits),
        });
        if lqer.is_some_and(|l| l.group == 0 || !(2..=8).contains(&l.factor_bits)) {
            return setup("--lqer-group must be positive and --lqer-factor-bits in 2..=8");
        }
        let scheme = self.scheme.unwrap_or(d.scheme);
        let calibration = match (scheme, &self.calibrate) {
            (Scheme::Gptq, None) => {
                return setup("--scheme gptq needs --calibrate GLOB (training shards)");
            }
            (Scheme::Gptq, Some(glob)) => {
                let tokens = self.calib_tokens.unwrap_or(d.calib_tokens);
                if tokens == 0 {
                    return setup("--calib-tokens must be positive");
                }
                Some(CalibrationSpec {
                    glob: glob.clone(),
                    tokens,
                    allow_validation: self.allow_validation_calibration,
                })
            }
            (_, Some(_)) => return setup("--calibrate is for --scheme gptq"),
            (_, None) => None,
        };
        Ok(PackSpec {
            checkpoint: self.checkpoint.clone(),
            config: self.config.clone(),
            output: self.output.clone(),
            decoder_out: self.decoder_out.clone(),
            code: self.code.clone(),
            budget: self.budget.unwrap_or(d.budget),
            margin: self.margin.unwrap_or(d.margin),
            scheme,
            embed: GroupSetting {
                bits: embed_bits,
                k: self.k_embed.unwrap_or(d.k_embed),
            },
            grid: BlockGrid {
                bits: self.bits,
                k_attn: self.k_attn,
                k_mlp: self.k_mlp,
                k_other: self.k_other,
            },
            codec: self.codec.unwrap_or(d.codec),
            shuffle: self.shuffle.unwrap_or(d.shuffle).max(1),
            keep_float_max_numel: self.keep_float_max_numel.unwrap_or(d.keep_float_max_numel),
            fit: self.fit,
            control_fp16: self.control_fp16,
            gate_int8: !self.no_gate_int8,
            lqer,
            calibration,
        })
    }
}

/// Seconds each stage took.
#[derive(Clone, Debug, Serialize)]
pub struct StageSeconds {
    pub calibration: f64,
    pub encode: f64,
    pub quantize: f64,
}

/// What a pack wrote and measured. Fields in the order the JSON has always listed them (alphabetical).
#[derive(Clone, Debug, Serialize)]
pub struct PackReport {
    pub bits_per_parameter: f64,
    pub calibration: Option<CalibrationReport>,
    /// The codec and its shuffle, as the container names them.
    pub codec: String,
    pub decoder_out: Option<String>,
    pub fit: FitReport,
    pub groups: Vec<GroupReport>,
    pub output: String,
    pub parameters: usize,
    pub python_decoder_bytes: usize,
    pub python_decoder_wrapped_bytes: u64,
    /// How the checkpoint's QAT grid was used, when it has one.
    pub qat_grid: Option<String>,
    pub rd: Option<RdReport>,
    pub scheme: &'static str,
    pub seconds: f64,
    pub settings: PackOptions,
    pub size: SizeCheck,
    pub stage_seconds: StageSeconds,
    pub tailored_decoder_bytes: usize,
    pub tailored_decoder_wrapped_bytes: u64,
}

/// The checkpoint as float tensors: an artifact dequantized (so a record's weights can be re-packed), banked
/// matrices (rec/2026-03-23 on) split per block as the records do; with the config it carries.
fn float_checkpoint(
    path: &Path,
    limits: &Limits,
) -> Result<(Vec<QTensor>, Option<serde_json::Value>)> {
    let mut checkpoint = load_artifact(path, limits)?;
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
    let tensors = super::schema::unbank_tensors(std::mem::take(&mut checkpoint.tensors));
    Ok((tensors, checkpoint.config))
}

/// The model config: the file given, else the one the checkpoint carries.
fn model_config(
    spec: &PackSpec,
    carried: Option<serde_json::Value>,
) -> Result<Option<serde_json::Value>> {
    let Some(p) = &spec.config else {
        return Ok(carried);
    };
    let text = crate::limits::read_small_text(p)
        .map_err(|e| PackError::Setup(format!("{}: {e}", p.display())))?;
    let cfg: ModelConfig = serde_json::from_str(&text)
        .map_err(|e| PackError::Setup(format!("{}: bad model config: {e}", p.display())))?;
    serde_json::to_value(cfg)
        .map(Some)
        .map_err(|e| PackError::Setup(format!("{}: {e}", p.display())))
}

/// The block groups' settings: each value given, else the grid a `pgolf train --qat` checkpoint carries, else the
/// default; and the note saying how the grid was used.
fn block_settings(
    spec: &PackSpec,
    config: Option<&serde_json::Value>,
) -> ([GroupSetting; 3], Option<String>) {
    let d = defaults();
    let qat: Option<QatGrid> = config
        .and_then(|c| c.get("qat_grid"))
        .and_then(|g| serde_json::from_value(g.clone()).ok());
    let g = spec.grid;
    let bits = g.bits.or(qat.map(|q| q.bits)).unwrap_or(d.block_bits);
    let k = |flag: Option<f32>, of: fn(&QatGrid) -> f32, default: f32| {
        flag.or(qat.as_ref().map(of)).unwrap_or(default)
    };
    let settings = [
        GroupSetting {
            bits,
            k: k(g.k_attn, |q| q.k_attn, d.k_attn),
        },
        GroupSetting {
            bits,
            k: k(g.k_mlp, |q| q.k_mlp, d.k_mlp),
        },
        GroupSetting {
            bits,
            k: k(g.k_other, |q| q.k_other, d.k_other),
        },
    ];
    let note = qat.map(|q| {
        let overridden =
            g.bits.is_some() || g.k_attn.is_some() || g.k_mlp.is_some() || g.k_other.is_some();
        format!(
            "the checkpoint was trained with QAT on int{} (k {}/{}/{}): {}",
            q.bits,
            q.k_attn,
            q.k_mlp,
            q.k_other,
            if overridden {
                "flags given override that grid"
            } else {
                "packing on that grid"
            }
        )
    });
    (settings, note)
}

/// Runs a pack. `progress(stage, done, total)` counts the calibration's sequences.
pub fn pack(
    spec: &PackSpec,
    limits: &Limits,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<PackReport> {
    let mut inputs = vec![spec.checkpoint.as_path()];
    inputs.extend(spec.config.as_deref());
    inputs.extend(spec.code.as_deref());
    crate::output::refuse_inputs(&spec.output, &inputs)?;
    if let Some(d) = &spec.decoder_out {
        crate::output::refuse_inputs(d, &inputs)?;
    }
    let (tensors, carried) = float_checkpoint(&spec.checkpoint, limits)?;
    let config = model_config(spec, carried)?;
    let code = spec
        .code
        .as_ref()
        .map(|p| code_size(p, limits))
        .transpose()?;
    let code_bytes = code.as_ref().map(|c| c.counted_bytes).unwrap_or(0);
    let Some(target) = spec.budget.checked_sub(code_bytes + spec.margin) else {
        return setup(format!(
            "the code ({code_bytes} bytes) and margin ({}) alone exceed the budget of {}",
            spec.margin, spec.budget
        ));
    };
    let (blocks, qat_note) = block_settings(spec, config.as_ref());
    let mut opts = PackOptions {
        scheme: spec.scheme,
        groups: [spec.embed, blocks[0], blocks[1], blocks[2]],
        codec: spec.codec,
        shuffle: spec.shuffle,
        keep_float_max_numel: spec.keep_float_max_numel,
        hessians: None,
        calibration: None,
        gate_int8: spec.gate_int8,
        overrides: Default::default(),
        lqer_ranks: Default::default(),
        control_fp16: spec.control_fp16,
        lqer: spec.lqer,
    };
    let calibration_started = Instant::now();
    let calibration = match &spec.calibration {
        Some(c) => {
            let Some(cfg) = config.clone() else {
                return setup(
                    "--scheme gptq runs the model to calibrate: pass --config CONFIG.json",
                );
            };
            let cfg: ModelConfig = serde_json::from_value(cfg)
                .map_err(|e| PackError::Setup(format!("the checkpoint's config: {e}")))?;
            let cal = calibrate(
                &tensors,
                &cfg,
                &c.glob,
                c.tokens,
                c.allow_validation,
                8,
                limits,
                &mut |done, total| progress("calibrate", done, total),
            )?;
            opts.calibration = serde_json::to_value(&cal.report).ok();
            opts.hessians = Some(std::sync::Arc::new(cal.hessians));
            Some(cal.report)
        }
        None => None,
    };
    let calibration_seconds = calibration_started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (packed, chosen, fit_report, rd) = match spec.fit {
        FitMethod::Rd => {
            let (p, o, rd) = fit::rd_fit(&tensors, config.as_ref(), &opts, target)?;
            let report = FitReport {
                target_bytes: target,
                tries: Vec::new(),
                k_factor: None,
            };
            (p, o, report, Some(rd))
        }
        FitMethod::Bisect => {
            let (p, o, r) = fit::fit(&tensors, config.as_ref(), &opts, target)?;
            (p, o, r, None)
        }
    };
    write_artifact(spec, &inputs, &packed, limits)?;
    let tailored = write_decoder(spec, &inputs, &packed.bytes, limits)?;
    let artifact_bytes = packed.bytes.len() as u64;
    let params: usize = packed.tensors.iter().map(|t| t.params()).sum();
    Ok(PackReport {
        bits_per_parameter: 8.0 * artifact_bytes as f64 / params.max(1) as f64,
        calibration,
        codec: codec_name(&opts),
        decoder_out: spec.decoder_out.as_ref().map(|p| p.display().to_string()),
        fit: fit_report,
        groups: packed.groups,
        output: spec.output.display().to_string(),
        parameters: params,
        python_decoder_bytes: PYTHON_DECODER.len(),
        python_decoder_wrapped_bytes: self_extracting_bytes(PYTHON_DECODER.as_bytes()),
        qat_grid: qat_note,
        rd,
        scheme: scheme_name(opts.scheme),
        seconds: started.elapsed().as_secs_f64(),
        settings: chosen,
        size: SizeCheck::new(
            artifact_bytes,
            code.as_ref().map(|c: &CodeSize| c.counted_bytes),
            spec.budget,
        ),
        stage_seconds: StageSeconds {
            calibration: calibration_seconds,
            encode: packed.encode_seconds,
            quantize: packed.quantize_seconds,
        },
        tailored_decoder_bytes: tailored.len(),
        tailored_decoder_wrapped_bytes: self_extracting_bytes(tailored.as_bytes()),
    })
}

/// The artifact, read back from its temporary file and checked tensor by tensor before it takes the output's
/// name; on any failure nothing is left behind.
fn write_artifact(
    spec: &PackSpec,
    inputs: &[&Path],
    packed: &fit::Packed,
    limits: &Limits,
) -> Result<()> {
    let round_trip = |written: &Path| -> std::result::Result<(), String> {
        let back = load_artifact(written, limits).map_err(|e| e.to_string())?;
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
    crate::output::write_with(
        &spec.output,
        inputs,
        |temp| std::fs::write(temp, &packed.bytes).map_err(|e| e.to_string()),
        round_trip,
    )?;
    Ok(())
}

/// The Python decoder this artifact needs (its own header says which codings it holds), written where asked.
fn write_decoder(
    spec: &PackSpec,
    inputs: &[&Path],
    bytes: &[u8],
    limits: &Limits,
) -> Result<String> {
    let (header, codec_used, shuffle_used, _) = super::container::read_header(
        &spec.output,
        bytes,
        &mut DecodeBudget::for_file(&spec.output, bytes.len() as u64, limits),
    )?;
    let tailored = decoder::tailored(&header, codec_used, shuffle_used);
    if let Some(path) = &spec.decoder_out {
        let mut check_inputs = inputs.to_vec();
        check_inputs.push(spec.output.as_path());
        crate::output::write_with(
            path,
            &check_inputs,
            |temp| std::fs::write(temp, &tailored).map_err(|e| e.to_string()),
            |_| Ok(()),
        )?;
    }
    Ok(tailored)
}

/// The codec and its byte shuffle, as the report names them.
fn codec_name(opts: &PackOptions) -> String {
    match opts.codec {
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
    }
}

/// The scheme as `--scheme` names it.
pub fn scheme_name(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Percentile => "percentile",
        Scheme::GptqLite => "gptq-lite",
        Scheme::Sdclip => "sdclip",
        Scheme::Gptq => "gptq",
    }
}
