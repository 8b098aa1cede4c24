//! Verification, from the bottom up: window geometry (`windows`); the ledger of what a procedure scored and trained
//! on, with coverage and receipts (`ledger`); window scorers over a model (`scorer`, and seed 002's n-gram tilt in
//! `tilt`); the procedure interface and the plain window procedure (`procedure`); the procedures that adapt or
//! blend — score-first TTT (`ttt`), seed 003's mixer and seed 004's n-gram blend (`mixer`), the planted violations
//! (`planted`); the driver over the whole stream (`eval`); the legality probes (`probes`); and the run a front end
//! asks for: the flags (`flags`) resolved into a spec of what runs, before anything is read, and its canonical
//! counterpart (`spec`), the built procedure and the run (`run`), and the typed report with findings and compliance
//! (`report`).

pub mod eval;
pub mod flags;
pub mod html;
pub mod ledger;
pub mod lora_ttt;
pub mod mixer;
pub mod planted;
pub mod probes;
pub mod procedure;
pub mod report;
pub mod run;
pub mod scorer;
pub mod softmax;
pub mod spec;
pub mod tilt;
pub mod ttt;
pub mod windows;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Infer(#[from] crate::infer::InferError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
    #[error(transparent)]
    Pack(#[from] crate::pack::PackError),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error("{0}")]
    Setup(String),
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<VerifyError>,
    },
}

impl From<candle_core::Error> for VerifyError {
    fn from(e: candle_core::Error) -> Self {
        VerifyError::Infer(e.into())
    }
}

pub type Result<T, E = VerifyError> = std::result::Result<T, E>;
