//! The review's checks. Each is `pass`, `fail` or `unknown`, with what it measured and the lines it came from. One
//! file per family: sizes (`size`), claims against logs (`claims`), byte and token accounting (`accounting`),
//! clocks (`timing`), significance (`significance`), static legality hints (`legality`), the reproducing command
//! (`reproduce`); the runs' scores (`scores`) and the numeric helpers (`numeric`) apart.

mod accounting;
mod claims;
mod legality;
mod numeric;
mod reproduce;
mod scores;
mod significance;
mod size;
mod timing;

use serde::Serialize;

pub use accounting::{byte_accounting, train_val_overlap, val_tokens};
pub use claims::{claims_match_logs, seed_count};
pub use legality::static_legality;
pub use reproduce::{reproduce, shell_command};
pub use scores::{claimed_logs, folder_scores, scored_logs};
pub use significance::significance;
pub use size::{code_bytes_match, external_code, size_cap};
pub use timing::{eval_time, train_time};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub measured: String,
    pub evidence: Vec<String>,
    /// The figures behind `measured`, unrounded, where a tool may want them (the t-tests' t, df and p).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub values: std::collections::BTreeMap<String, f64>,
}

pub(crate) fn check(
    id: &'static str,
    status: Status,
    measured: impl Into<String>,
    evidence: Vec<String>,
) -> Check {
    Check {
        id,
        status,
        measured: measured.into(),
        evidence,
        values: Default::default(),
    }
}

/// Per-seed scores a significance test compares: val_bpb and val_loss (nats) of each run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Scores {
    /// Where they came from (a folder, a log, a submission.json).
    pub source: String,
    pub val_bpb: Vec<f64>,
    pub val_loss: Vec<f64>,
}
