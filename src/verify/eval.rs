//! The top driver: one procedure over the whole validation stream, reported as the challenge reports it.

use serde::Serialize;

use super::ledger::{Coverage, RunRecord};
use super::procedure::{Procedure, run_procedure};
use super::{Result, VerifyError};
use crate::data::bpb::BpbAccumulator;
use crate::data::bytes::ByteSource;

/// The result of one evaluation pass: the challenge's sums and figures, and how often each target was scored.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub method: String,
    pub sums: BpbAccumulator,
    pub val_loss: f64,
    pub val_bpb: f64,
    pub coverage: Coverage,
    pub seconds: f64,
}

/// Runs `procedure` over the whole stream and reports the challenge's figures; the [`RunRecord`] carries the
/// receipts and the training log. `progress(done, total)` is passed through.
pub fn evaluate(
    procedure: &dyn Procedure,
    tokens: &[u16],
    bytes: &ByteSource,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(EvalReport, RunRecord)> {
    if tokens.len() < 2 {
        return Err(VerifyError::Setup(
            "the validation stream has no targets".into(),
        ));
    }
    let (record, seconds) = run_procedure(procedure, tokens, bytes, false, [], progress)?;
    let report = EvalReport {
        method: procedure.name(),
        sums: record.sums,
        val_loss: record.sums.val_loss(),
        val_bpb: record.sums.val_bpb(),
        coverage: record.coverage.clone(),
        seconds,
    };
    Ok((report, record))
}
