//! Loading any artifact (safetensors, torch `.pt`, compressed `.ptz`, PGRP, pgolf's own) into [`QTensor`]s, and
//! into the state dict a model is built from.

use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::codec::{Codec, Coder};
use super::decode_budget::DecodeBudget;
use super::outer::{self, Layer};
use super::schema::{self, Payload, QTensor};
use super::torchfile::{self, HostTensor};
use super::{Limits, PackError, Result, container, pgrp};
use crate::infer::weights::{self, StateDict};

/// What holds an artifact's tensors, under its compression layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Container {
    #[serde(rename = "safetensors")]
    Safetensors,
    #[serde(rename = "torch.save")]
    TorchSave,
    /// The per-group container of the 04-27 records (lrzip groups + a brotli remainder).
    #[serde(rename = "pgrp")]
    Pgrp,
    /// pgolf's own artifact (`docs/FORMAT.md`).
    #[serde(rename = "pgolf")]
    Pgolf,
}

impl Container {
    pub fn name(&self) -> &'static str {
        match self {
            Container::Safetensors => "safetensors",
            Container::TorchSave => "torch.save",
            Container::Pgrp => "pgrp",
            Container::Pgolf => "pgolf",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Artifact {
    pub file_bytes: u64,
    pub layers: Vec<Layer>,
    /// What holds the tensors.
    pub container: Container,
    /// `int8_clean_per_row_v1`, `w_m_mixed`, `typed_entries`, `state_dict`, `pgolf-v1`.
    pub format: String,
    pub tensors: Vec<QTensor>,
    /// The model config a pgolf artifact carries.
    pub config: Option<serde_json::Value>,
    /// Byte strings stored next to the weights in a torch.save dictionary (seed 002's `"ngram"` prior).
    pub bundled: Vec<(String, Vec<u8>)>,
    /// The bytes each tensor occupies in the file, where the container says exactly (a pgolf artifact with
    /// per-tensor coding: its spans' stored lengths), in `tensors` order.
    pub stored_bytes: Option<Vec<u64>>,
}

impl Artifact {
    /// The compression layer the artifact was written with (the outermost layer that is one coder's stream), if any.
    pub fn coder(&self) -> Option<Coder> {
        if self
            .layers
            .iter()
            .any(|l| matches!(l, Layer::PerGroup | Layer::PerGroupV2 { .. }))
        {
            // lrzip groups plus a brotli remainder: no single coder to measure a tensor alone with.
            return None;
        }
        self.layers.iter().find_map(Layer::coder)
    }
}

/// Reads an artifact from disk.
pub fn load_artifact(path: &Path, limits: &Limits) -> Result<Artifact> {
    let bytes = crate::limits::read_input(path, limits).map_err(|source| PackError::Io {
        path: path.into(),
        source,
    })?;
    load_artifact_bytes(path, bytes, limits)
}

/// Reads an artifact held in memory; `path` names it in errors.
pub fn load_artifact_bytes(path: &Path, bytes: Vec<u8>, limits: &Limits) -> Result<Artifact> {
    let file_bytes = bytes.len() as u64;
    let mut budget = DecodeBudget::for_file(path, file_bytes, limits);
    if is_safetensors(&bytes) {
        let tensors = read_safetensors(path, &bytes)?;
        return Ok(Artifact {
            config: None,
            file_bytes,
            layers: Vec::new(),
            container: Container::Safetensors,
            format: "state_dict".into(),
            tensors,
            bundled: Vec::new(),
            stored_bytes: None,
        });
    }
    if container::is_pgolf(&bytes) {
        let (header, codec, tensors) = container::decode(path, &bytes, limits, &mut budget)?;
        let stored_bytes = (codec == Codec::Rans).then(|| {
            header
                .tensors
                .iter()
                .map(|e| {
                    [
                        &e.symbols,
                        &e.scales,
                        &e.values,
                        &e.lqer_a,
                        &e.lqer_a_scales,
                        &e.lqer_b,
                        &e.lqer_b_scales,
                    ]
                    .iter()
                    .filter_map(|s| s.as_ref())
                    .map(|s| s.length)
                    .sum()
                })
                .collect()
        });
        return Ok(Artifact {
            file_bytes,
            layers: vec![Layer::Pgolf { codec }],
            container: Container::Pgolf,
            format: header.format,
            tensors,
            config: header.config,
            bundled: Vec::new(),
            stored_bytes,
        });
    }
    let (mut layers, inner) = outer::peel(path, bytes, &mut budget, |b| {
        torchfile::is_zip(b) || b.starts_with(pgrp::MAGIC)
    })?;
    let (obj, container) = if inner.starts_with(pgrp::MAGIC) {
        layers.push(match pgrp::version(&inner) {
            2 => Layer::PerGroupV2 {
                q_section: pgrp::v2_q_method(&inner).unwrap_or("unknown"),
            },
            _ => Layer::PerGroup,
        });
        (
            pgrp::decode(path, &inner, limits, &mut budget)?,
            Container::Pgrp,
        )
    } else {
        (
            torchfile::load_torch(path, &inner, limits, &mut budget)?,
            Container::TorchSave,
        )
    };
    let (format, tensors) = schema::interpret(path, &obj)?;
    let bundled = obj
        .entries()
        .into_iter()
        .filter_map(|(k, v)| match v {
            torchfile::Obj::Bytes(b) => Some((k.to_string(), b.clone())),
            _ => None,
        })
        .collect();
    Ok(Artifact {
        file_bytes,
        layers,
        container,
        format,
        tensors,
        config: None,
        bundled,
        stored_bytes: None,
    })
}

fn is_safetensors(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        n > 1 && n < bytes.len() as u64 && bytes[8] == b'{'
    }
}

fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<Vec<QTensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| PackError::Format {
        path: path.into(),
        message: format!("safetensors: {e}"),
    })?;
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let view = st.tensor(&name).map_err(|e| PackError::Format {
            path: path.into(),
            message: e.to_string(),
        })?;
        use safetensors::Dtype as D;
        let dtype = match view.dtype() {
            D::F32 => "float32",
            D::F16 => "float16",
            D::BF16 => "bfloat16",
            D::F64 => "float64",
            D::I8 => "int8",
            D::U8 => "uint8",
            D::I16 => "int16",
            D::I32 => "int32",
            D::I64 => "int64",
            D::BOOL => "bool",
            D::F8_E4M3 => "float8_e4m3fn",
            other => {
                return Err(PackError::Unsupported {
                    path: path.into(),
                    what: format!("tensor {name} of dtype {other:?}"),
                });
            }
        };
        let t = HostTensor {
            dtype: dtype.into(),
            shape: view.shape().to_vec(),
            data: view.data().to_vec(),
        };
        out.push(QTensor {
            name: name.clone(),
            shape: t.shape.clone(),
            scheme: format!("passthrough_{dtype}"),
            bits: (t.data.len() * 8 / t.numel().max(1)) as u32,
            orig_dtype: dtype.into(),
            payload: Payload::Passthrough { values: t },
        });
    }
    Ok(out)
}

/// Model weights as a model is built from them: safetensors load as stored; anything else goes through the
/// artifact reader and is dequantized to f32.
pub struct LoadedWeights {
    pub state: StateDict,
    /// Whether the file is an artifact (its bytes count toward the cap), not a plain safetensors checkpoint.
    pub is_artifact: bool,
    /// The model config a pgolf artifact carries.
    pub config: Option<serde_json::Value>,
    /// Byte strings stored next to the weights (seed 002's `"ngram"` prior).
    pub bundled: Vec<(String, Vec<u8>)>,
}

/// Reads model weights from a safetensors checkpoint or any artifact, onto `device`.
pub fn load_weights(path: &Path, device: &Device, limits: &Limits) -> Result<LoadedWeights> {
    let io = |source| PackError::Io {
        path: path.into(),
        source,
    };
    let mut head = Vec::with_capacity(9);
    std::fs::File::open(path)
        .map_err(io)?
        .take(9)
        .read_to_end(&mut head)
        .map_err(io)?;
    if head.len() == 9 && head[8] == b'{' {
        return Ok(LoadedWeights {
            state: weights::load_safetensors(path, device)?,
            is_artifact: false,
            config: None,
            bundled: Vec::new(),
        });
    }
    let artifact = load_artifact(path, limits)?;
    let mut state = StateDict::new();
    for t in &artifact.tensors {
        let values = Tensor::from_vec(t.dequantize(), t.shape.clone(), device)
            .map_err(crate::infer::InferError::from)?;
        state.insert(t.name.clone(), values);
    }
    Ok(LoadedWeights {
        state,
        is_artifact: true,
        config: artifact.config,
        bundled: artifact.bundled,
    })
}
