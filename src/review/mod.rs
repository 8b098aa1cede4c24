//! `pgolf review`: audit a submission folder from its own files — claims, logs, code and sizes, timing, byte
//! accounting, significance and static legality hints — and a whole records tree, each record against the best
//! earlier one of its track.
//!
//! The JSON contract (kept stable for tools that read it): `record`, `claims`, `logs` (one object per log: `file`,
//! `seed`, `val_bpb`, `val_loss`, `artifact_bytes`, `code_bytes`, `total_bytes`, `train_seconds`, `eval_seconds`,
//! `val_tokens`, `model_params`, null when unknown), `code` (`file`, `bytes`, `wrapper`, `decoded_bytes`), `checks`
//! (`{id, status, measured, evidence}`).

pub mod canonical;
pub mod checks;
pub mod code_deps;
pub mod command;
pub mod folder;
pub mod html;
pub mod leaderboard;
pub mod log;
pub mod stats;
pub mod submission;
pub mod tree;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use checks::{Check, Scores, Status};
pub use folder::{CodeFile, Folder, Readme, read_folder};
pub use log::LogSummary;
pub use submission::Claims;

use crate::limits::Limits;

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0}: not a folder (pgolf review reads a submission folder: submission.json, logs, train_gpt.py)"
    )]
    NotAFolder(PathBuf),
    #[error("{0}: no submission.json, train log or train_gpt.py: not a submission folder")]
    Empty(PathBuf),
    #[error(
        "{path}: no run scores in it (a folder with logs or a submission.json with per-seed results, a log, or a submission.json)"
    )]
    NoBaselineScores { path: PathBuf },
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error("{0}")]
    Setup(String),
}

pub type Result<T> = std::result::Result<T, ReviewError>;

/// Who and what a record is.
#[derive(Clone, Debug, Serialize)]
pub struct RecordInfo {
    pub dir: String,
    pub name: Option<String>,
    pub author: Option<String>,
    pub date: Option<String>,
    pub track: Option<String>,
}

/// A review of one folder.
#[derive(Clone, Debug, Serialize)]
pub struct Review {
    pub record: RecordInfo,
    pub claims: Option<Claims>,
    pub logs: Vec<LogSummary>,
    pub code: Option<CodeFile>,
    pub readme: Option<Readme>,
    pub requirements: Option<Vec<String>>,
    /// The folder's other code that the counted script runs.
    pub code_dependencies: Vec<code_deps::CodeDependency>,
    pub scores: Scores,
    pub baseline: Option<Scores>,
    pub checks: Vec<Check>,
    /// Files that could not be used, with why.
    pub unreadable: Vec<String>,
}

impl Review {
    /// Every file the review read (what an output must not overwrite).
    pub fn inputs(&self) -> Vec<PathBuf> {
        let dir = Path::new(&self.record.dir);
        let mut v: Vec<PathBuf> = self.logs.iter().map(|l| dir.join(&l.file)).collect();
        v.extend(
            self.claims
                .as_ref()
                .and_then(|c| c.file.as_ref())
                .map(|f| dir.join(f)),
        );
        v.extend(self.code.as_ref().map(|c| dir.join(&c.file)));
        v.extend(self.readme.as_ref().map(|r| dir.join(&r.file)));
        v
    }

    /// Whether any check failed (the command then exits 2).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// The record's date: the claim's, else the folder name's `YYYY-MM-DD` prefix.
pub(crate) fn record_date(f: &Folder) -> Option<String> {
    let from_name = f
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.len() >= 10 && n.as_bytes()[4] == b'-' && n.as_bytes()[7] == b'-')
        .map(|n| n[..10].to_string());
    from_name.or_else(|| {
        f.claims
            .as_ref()
            .and_then(|c| c.date.as_ref())
            .map(|d| d.chars().take(10).collect())
    })
}

/// Runs every check on a folder already read.
pub fn review_folder(f: Folder, baseline: Option<Scores>) -> Review {
    let scores = checks::folder_scores(&f);
    let list = vec![
        checks::size_cap(&f),
        checks::code_bytes_match(&f),
        checks::external_code(&f),
        checks::claims_match_logs(&f),
        checks::seed_count(&f),
        checks::byte_accounting(&f),
        checks::val_tokens(&f),
        checks::train_val_overlap(&f),
        checks::train_time(&f),
        checks::eval_time(&f),
        checks::significance(&scores, baseline.as_ref()),
        checks::static_legality(f.code.as_ref()),
        checks::reproduce(&f),
    ];
    let c = f.claims.as_ref();
    Review {
        record: RecordInfo {
            dir: f.dir.display().to_string(),
            name: c.and_then(|c| c.name.clone()),
            author: c.and_then(|c| c.author.clone()),
            date: record_date(&f),
            track: c.and_then(|c| c.track.clone()),
        },
        claims: f.claims,
        logs: f.logs,
        code: f.code,
        readme: f.readme,
        requirements: f.requirements,
        code_dependencies: f.code_dependencies,
        scores,
        baseline,
        checks: list,
        unreadable: f.unreadable,
    }
}

/// Reads and reviews a folder.
pub fn review_dir(dir: &Path, baseline: Option<Scores>, limits: &Limits) -> Result<Review> {
    let f = read_folder(dir, limits)?;
    if f.claims.is_none() && f.logs.is_empty() && f.code.is_none() {
        return Err(ReviewError::Empty(dir.into()));
    }
    Ok(review_folder(f, baseline))
}

/// A baseline's per-run scores from a folder, a train log or a submission.json.
pub fn baseline_scores(path: &Path, limits: &Limits) -> Result<Scores> {
    let scores = if path.is_dir() {
        checks::folder_scores(&read_folder(path, limits)?)
    } else {
        let text = folder::read_text(path)?;
        let name = path.display().to_string();
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => {
                let c = submission::parse_claims(&name, &v);
                let mut s = Scores {
                    source: name,
                    val_bpb: c.seeds.iter().filter_map(|s| s.val_bpb).collect(),
                    val_loss: c.seeds.iter().filter_map(|s| s.val_loss).collect(),
                };
                if s.val_bpb.is_empty() {
                    s.val_bpb.extend(c.val_bpb);
                    s.val_loss.extend(c.val_loss);
                }
                s
            }
            Err(_) => {
                let l = log::parse_log(&name, &text);
                Scores {
                    source: name,
                    val_bpb: l.val_bpb.into_iter().collect(),
                    val_loss: l.val_loss.into_iter().collect(),
                }
            }
        }
    };
    if scores.val_bpb.is_empty() {
        return Err(ReviewError::NoBaselineScores { path: path.into() });
    }
    Ok(scores)
}
