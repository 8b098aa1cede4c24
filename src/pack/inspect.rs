//! `pgolf inspect` in two stages: the flags ([`InspectFlags`]) resolved into what runs ([`InspectSpec`]), then
//! [`inspect`]: every tensor of any artifact with its scheme, bits, entropy and share of the compressed bytes, the
//! architecture or preset its names match, and its distance to the cap ([`InspectReport`]).

use std::path::PathBuf;

use serde::Serialize;

use super::artifact::{Container, load_artifact};
use super::budget::{CodeSize, SizeCheck, code_size};
use super::outer::Layer;
use super::stats::{self, CoderSize, TensorStats};
use super::{Limits, Result};
use crate::infer::patch_jepa::PatchJepaConfig;
use crate::infer::presets;

/// Every `pgolf inspect` flag, as given.
#[derive(Clone, Debug, Default)]
pub struct InspectFlags {
    pub file: PathBuf,
    pub code: Option<PathBuf>,
    pub no_shares: bool,
    pub coders: bool,
    pub dequantize: Option<PathBuf>,
}

/// What one inspection measures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InspectSpec {
    pub file: PathBuf,
    /// The submission's `train_gpt.py`, counted toward the cap.
    pub code: Option<PathBuf>,
    /// Measure each tensor's share of the compressed bytes (coded alone with the artifact's coder).
    pub shares: bool,
    /// Also code every quantized tensor's symbols with every coder.
    pub coders: bool,
    /// Write the dequantized weights here as safetensors.
    pub dequantize: Option<PathBuf>,
}

impl InspectFlags {
    pub fn resolve(&self) -> Result<InspectSpec> {
        let inputs: Vec<&std::path::Path> = std::iter::once(self.file.as_path())
            .chain(self.code.as_deref())
            .collect();
        if let Some(out) = &self.dequantize {
            crate::output::refuse_inputs(out, &inputs)?;
        }
        Ok(InspectSpec {
            file: self.file.clone(),
            code: self.code.clone(),
            shares: !self.no_shares,
            coders: self.coders,
            dequantize: self.dequantize.clone(),
        })
    }
}

/// A preset whose tensor names and shapes the artifact's are closest to.
#[derive(Clone, Debug, Serialize)]
pub struct PresetReport {
    pub exact: bool,
    pub extra: usize,
    pub missing: usize,
    pub name: &'static str,
    /// `records/track_10min_16mb/<folder>`.
    pub record: &'static str,
    pub reshaped: usize,
}

/// A byte string stored next to the weights.
#[derive(Clone, Debug, Serialize)]
pub struct BundledEntry {
    pub bytes: usize,
    pub name: String,
}

/// Every quantized tensor's symbols coded with every coder.
#[derive(Clone, Debug, Serialize)]
pub struct CoderComparison {
    /// Order-0 entropy of the symbols, in bytes.
    pub entropy_bytes: f64,
    pub sizes: Vec<CoderSize>,
    pub symbols: u64,
}

/// What an artifact holds. Fields in the order the JSON has always listed them (alphabetical).
#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    /// `gpt`, or `byte_patch_jepa` (seed 001).
    pub architecture: &'static str,
    pub bits_per_parameter: f64,
    pub bundled: Vec<BundledEntry>,
    pub code: Option<CodeSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coders: Option<CoderComparison>,
    pub container: Container,
    pub file: String,
    /// `int8_clean_per_row_v1`, `w_m_mixed`, `typed_entries`, `state_dict`, `pgolf-v1`.
    pub format: String,
    /// Seed 001's config as its tensors give it.
    pub inferred_config: Option<PatchJepaConfig>,
    pub layers: Vec<Layer>,
    pub model_bytes: u64,
    pub parameters: usize,
    pub preset: Option<PresetReport>,
    pub share_measured_as: String,
    pub size: SizeCheck,
    pub tensors: Vec<TensorStats>,
    /// `--dequantize`: the safetensors file written, its tensors and bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dequantized: Option<DequantizedFile>,
}

/// The dequantized weights written by `--dequantize`.
#[derive(Clone, Debug, Serialize)]
pub struct DequantizedFile {
    pub path: String,
    pub tensors: usize,
    pub bytes: u64,
}

/// Inspects an artifact. `progress(done, total)` counts tensors.
pub fn inspect(
    spec: &InspectSpec,
    limits: &Limits,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<InspectReport> {
    let artifact = load_artifact(&spec.file, limits)?;
    let dequantized = match &spec.dequantize {
        Some(out) => {
            let bytes = super::dequantized::dequantized_safetensors(&spec.file, &artifact.tensors)?;
            let inputs: Vec<&std::path::Path> = std::iter::once(spec.file.as_path())
                .chain(spec.code.as_deref())
                .collect();
            crate::output::write_file(out, &inputs, &bytes)?;
            Some(DequantizedFile {
                path: out.display().to_string(),
                tensors: artifact.tensors.len(),
                bytes: bytes.len() as u64,
            })
        }
        None => None,
    };
    let coder = if spec.shares { artifact.coder() } else { None };
    let tensors = stats::tensor_stats(&artifact, coder, progress);
    let code = spec
        .code
        .as_ref()
        .map(|p| code_size(p, limits))
        .transpose()?;
    let coders = spec.coders.then(|| {
        let (entropy_bytes, symbols, sizes) = stats::coder_comparison(&artifact);
        CoderComparison {
            entropy_bytes,
            sizes,
            symbols,
        }
    });
    let parameters: usize = tensors.iter().map(|s| s.params).sum();
    let model_bytes = artifact.file_bytes;
    let share_measured_as = match coder {
        _ if artifact.stored_bytes.is_some() && spec.shares => {
            "the bytes each tensor occupies in the file (rANS symbols plus its coded scales or values: exact)"
                .to_string()
        }
        Some(c) => format!(
            "each tensor's stored bytes (symbols + scales) compressed alone with {}",
            c.describe()
        ),
        None => "not measured (no compression layer)".into(),
    };
    let named: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    let inferred_config = PatchJepaConfig::from_tensors(&named);
    let preset = presets::closest_preset(&named)
        .filter(|_| inferred_config.is_none())
        .map(|m| PresetReport {
            exact: m.exact(),
            extra: m.extra,
            missing: m.missing,
            name: m.name,
            record: presets::preset(m.name)
                .map(|p| p.record)
                .unwrap_or_default(),
            reshaped: m.reshaped,
        });
    Ok(InspectReport {
        architecture: if inferred_config.is_some() {
            "byte_patch_jepa"
        } else {
            "gpt"
        },
        bits_per_parameter: 8.0 * model_bytes as f64 / parameters.max(1) as f64,
        bundled: artifact
            .bundled
            .iter()
            .map(|(name, b)| BundledEntry {
                bytes: b.len(),
                name: name.clone(),
            })
            .collect(),
        size: SizeCheck::against_cap(model_bytes, code.as_ref().map(|c| c.counted_bytes)),
        code,
        coders,
        container: artifact.container,
        file: spec.file.display().to_string(),
        format: artifact.format,
        inferred_config,
        layers: artifact.layers,
        model_bytes,
        parameters,
        preset,
        share_measured_as,
        tensors,
        dequantized,
    })
}
