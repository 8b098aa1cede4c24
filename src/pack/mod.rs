//! Artifacts, from the bottom up: the restricted unpickler (`pickle`) and torch `.pt` reader (`torchfile`); the
//! coders, their names and ids (`codec`) and pgolf's rANS (`rans`); the outer layers peeled by magic (`outer`) and the
//! records' per-group container (`pgrp`); the quantization schemas the records ship (`schema`) and the seed 002
//! prior (`prior`); the one decode budget every input spends (`decode_budget`); pgolf's own container (`container`); the universal loader, to tensors and to a state dict
//! (`artifact`); the 16,000,000-byte cap and code counting (`budget`); the statistics `inspect` reports (`stats`);
//! and packing: the quantizers (`quantize`), the budget search (`fit`), and the `pack` command's flags, spec and
//! run (`command`).

pub mod artifact;
pub mod budget;
pub mod calibrate;
pub mod codec;
pub mod command;
pub mod container;
pub mod decode_budget;
pub mod decoder;
pub mod dequantized;
pub mod fit;
pub mod gptq;
pub mod inspect;
pub mod lqer;
pub mod outer;
pub mod pgrp;
pub mod pickle;
pub mod prior;
pub mod quantize;
pub mod rans;
pub mod schema;
pub mod stats;
pub mod torchfile;

use std::path::PathBuf;

pub use crate::limits::Limits;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {layer} layer is corrupt: {message}")]
    Corrupt {
        path: PathBuf,
        layer: &'static str,
        message: String,
    },
    #[error(
        "{path}: {layer} layer decompresses past the limit of {limit} bytes (raise it with --max-decompressed-bytes)"
    )]
    TooLarge {
        path: PathBuf,
        layer: &'static str,
        limit: u64,
    },
    #[error(
        "{path}: {layer} layer decodes past {limit} bytes, {ratio}× the file's {file_bytes} bytes (raise it with --max-expansion)"
    )]
    Expansion {
        path: PathBuf,
        layer: &'static str,
        limit: u64,
        ratio: u64,
        file_bytes: u64,
    },
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(
        "cannot fit the budget: the smallest artifact tried is {smallest} bytes, over the {target} bytes available for the model by {}; try {hint}", smallest.saturating_sub(*target)
    )]
    Budget {
        smallest: u64,
        target: u64,
        hint: String,
    },
    #[error("{path}: pickle refused: {message}")]
    Pickle { path: PathBuf, message: String },
    #[error(transparent)]
    Weights(#[from] crate::infer::InferError),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// Flags that do not make a pack (or an inspection) that can run.
    #[error("{0}")]
    Setup(String),
}

pub type Result<T, E = PackError> = std::result::Result<T, E>;
