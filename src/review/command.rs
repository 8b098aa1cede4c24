//! `pgolf review` in two stages: the flags ([`ReviewFlags`]) resolved into what runs ([`ReviewSpec`]: one folder,
//! with its baseline, or a whole records tree), then [`review`]: the review, and its HTML report where asked
//! ([`ReviewOutcome`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::leaderboard::{LeaderboardAudit, audit_leaderboard};
use super::tree::{TreeReview, review_tree};
use super::{Result, Review, ReviewError, baseline_scores, review_dir};
use crate::limits::Limits;

/// Every `pgolf review` flag, as given.
#[derive(Clone, Debug, Default)]
pub struct ReviewFlags {
    pub dir: Option<PathBuf>,
    pub all: Option<PathBuf>,
    pub baseline: Option<PathBuf>,
    pub html: Option<PathBuf>,
    /// The challenge README whose leaderboard rows are held to the folders under `dir`.
    pub leaderboard: Option<PathBuf>,
}

/// What is reviewed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewTarget {
    /// One submission folder, its significance against a baseline (a record folder, a log or a submission.json).
    Folder {
        dir: PathBuf,
        baseline: Option<PathBuf>,
    },
    /// Every record folder of a records tree, in date order, each against the best earlier record of its track.
    Tree { root: PathBuf },
    /// Each row of a README's leaderboard against its folder under `root`: score, date, stated p-value.
    Leaderboard { readme: PathBuf, root: PathBuf },
}

/// What one review runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReviewSpec {
    pub target: ReviewTarget,
    /// The report as one self-contained HTML file.
    pub html: Option<PathBuf>,
}

impl ReviewFlags {
    pub fn resolve(&self) -> Result<ReviewSpec> {
        if let Some(html) = &self.html
            && html.is_dir()
        {
            return Err(ReviewError::Setup(format!(
                "{}: --html names a folder, not a file",
                html.display()
            )));
        }
        if let Some(readme) = &self.leaderboard {
            return match (&self.dir, &self.all, &self.baseline, &self.html) {
                (Some(root), None, None, None) => Ok(ReviewSpec {
                    target: ReviewTarget::Leaderboard {
                        readme: readme.clone(),
                        root: root.clone(),
                    },
                    html: None,
                }),
                _ => Err(ReviewError::Setup(
                    "--leaderboard README.md takes the records folder (RECORDS_DIR), and no --all, --baseline or --html"
                        .into(),
                )),
            };
        }
        let target = match (&self.dir, &self.all) {
            (Some(dir), None) => ReviewTarget::Folder {
                dir: dir.clone(),
                baseline: self.baseline.clone(),
            },
            (None, Some(root)) if self.baseline.is_none() => {
                ReviewTarget::Tree { root: root.clone() }
            }
            _ => {
                return Err(ReviewError::Setup(
                    "review one folder (DIR, with --baseline) or a records tree (--all RECORDS_DIR)".into(),
                ));
            }
        };
        Ok(ReviewSpec {
            target,
            html: self.html.clone(),
        })
    }
}

/// A review of one folder or of a tree; its JSON is the review's own.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum ReviewOutcome {
    Folder(Box<Review>),
    Tree(TreeReview),
    Leaderboard(LeaderboardAudit),
}

impl ReviewOutcome {
    /// Whether any check of any review failed (the command then exits 2).
    pub fn failed(&self) -> bool {
        match self {
            ReviewOutcome::Folder(r) => r.failed(),
            ReviewOutcome::Tree(t) => t.reviews.iter().any(Review::failed),
            ReviewOutcome::Leaderboard(l) => l.failed(),
        }
    }
}

/// Reviews what the spec names and writes its HTML report where asked. `progress(done, total)` counts a tree's
/// records.
pub fn review(
    spec: &ReviewSpec,
    limits: &Limits,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<ReviewOutcome> {
    let outcome = match &spec.target {
        ReviewTarget::Folder { dir, baseline } => {
            let baseline = baseline
                .as_deref()
                .map(|p| baseline_scores(p, limits))
                .transpose()?;
            ReviewOutcome::Folder(Box::new(review_dir(dir, baseline, limits)?))
        }
        ReviewTarget::Tree { root } => ReviewOutcome::Tree(review_tree(root, limits, progress)?),
        ReviewTarget::Leaderboard { readme, root } => {
            ReviewOutcome::Leaderboard(audit_leaderboard(readme, root, limits)?)
        }
    };
    if let Some(html) = &spec.html {
        let (inputs, page): (Vec<PathBuf>, String) = match &outcome {
            ReviewOutcome::Folder(r) => (r.inputs(), super::html::review_html(r)),
            ReviewOutcome::Tree(t) => (
                t.reviews.iter().flat_map(Review::inputs).collect(),
                super::html::tree_html(t),
            ),
            ReviewOutcome::Leaderboard(_) => return Ok(outcome),
        };
        let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        crate::output::write_file(html, &inputs, page.as_bytes())?;
    }
    Ok(outcome)
}
