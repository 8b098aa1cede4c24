//! Model configs and the forward pass (candle), and weight loading. Knows nothing of evaluation or training.

pub mod config;
pub mod device;
pub mod layers;
pub mod lm;
pub mod lora;
pub mod model;
pub mod patch_jepa;
pub mod presets;
pub mod weights;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: bad model config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: cannot read weights: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{path}: weights do not match the config: {}", problems.join("; "))]
    Mismatch {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("{0}")]
    Device(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("forward pass: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = InferError> = std::result::Result<T, E>;
