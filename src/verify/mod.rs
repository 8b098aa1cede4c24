//! Evaluation drivers (non-overlapping, exactly-once sliding, legacy sliding) over any [`scorer::WindowScorer`],
//! accumulating the challenge's BPB sums in f64 and counting how often each target is scored.

pub mod eval;
pub mod ledger;
pub mod mixer;
pub mod planted;
pub mod probes;
pub mod procedure;
pub mod scorer;
pub mod tilt;
pub mod ttt;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Infer(#[from] crate::infer::InferError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
    #[error("{0}")]
    Setup(String),
}

impl From<candle_core::Error> for VerifyError {
    fn from(e: candle_core::Error) -> Self {
        VerifyError::Infer(e.into())
    }
}

pub type Result<T, E = VerifyError> = std::result::Result<T, E>;
