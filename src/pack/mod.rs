//! Artifacts: the torch `.pt` reader (zip + a restricted unpickler), the outer coders and byte-shuffle layer, the
//! quantization schemas the records ship, and the per-tensor statistics `inspect` reports.

pub mod container;
pub mod fit;
pub mod inspect;
pub mod outer;
pub mod pgrp;
pub mod pickle;
pub mod quantize;
pub mod rans;
pub mod schema;
pub mod torchfile;

use std::path::PathBuf;

/// Bounds every reader obeys, generous enough for real 16 MB artifacts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes any decompression layer may produce.
    pub max_decompressed_bytes: u64,
    /// Elements of one tensor.
    pub max_tensor_elements: u64,
    /// Nesting depth of pickled containers.
    pub max_pickle_depth: usize,
    /// Entries of the pickle memo.
    pub max_memo_entries: usize,
    /// Values the unpickler may create (copies through the memo included).
    pub max_pickle_values: u64,
    /// Entries of a zip archive.
    pub max_zip_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decompressed_bytes: 1 << 30,
            max_tensor_elements: 1 << 31,
            max_pickle_depth: 64,
            max_memo_entries: 1 << 20,
            max_pickle_values: 1 << 24,
            max_zip_entries: 100_000,
        }
    }
}

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
}

pub type Result<T, E = PackError> = std::result::Result<T, E>;
