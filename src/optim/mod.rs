//! Optimizers shared by the trainer and test-time training, written to match PyTorch's update rules step for step.

pub mod adam;
pub mod muon;
pub mod sgd;

pub use adam::Adam;
pub use muon::Muon;
pub use sgd::{Sgd, clip_grad_norm};

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("optimizer: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("optimizer: {0}")]
    Setup(String),
}

pub type Result<T, E = OptimError> = std::result::Result<T, E>;
