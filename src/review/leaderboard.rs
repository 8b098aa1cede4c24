//! `pgolf review --leaderboard README.md RECORDS_DIR`: each row of the challenge README's leaderboard table held to
//! its record folder — the score it states against the folder's runs, its date against the folder's, and the
//! p-value it states against the row it beats, recomputed from the two folders' logs by the one-sided Welch test
//! of val_bpb that the leaderboard has used since PR #1902.
//!
//! A row is matched to the folder by the same author (`github_id` or `author` of its submission.json) whose runs'
//! mean val_bpb rounds to the row's score; a row's predecessor is the row whose link names the PR its summary
//! compares against (`p=0.014 vs PR #2014`).

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::checks::{Status, folder_scores};
use super::stats::{mean, welch_one_sided};
use super::tree::find_records;
use super::{Folder, Result, ReviewError, read_folder};
use crate::limits::Limits;

/// One row of the leaderboard table, as written.
#[derive(Clone, Debug, Serialize)]
pub struct LeaderboardRow {
    /// The README line.
    pub line: usize,
    pub run: String,
    pub score: f64,
    #[serde(skip)]
    pub score_decimals: usize,
    pub author: String,
    pub date: String,
    /// The row's own PR (its link, else the summary's "On PR #N").
    pub pr: Option<u64>,
    /// `p=0.014 vs PR #2014`: the stated p and the PR it is against, with what follows the number
    /// (`V21 v2`, `latest rerun`).
    pub stated_p: Option<f64>,
    #[serde(skip)]
    pub stated_p_decimals: usize,
    pub against_pr: Option<u64>,
    pub against_note: String,
}

/// A row held to its folder.
#[derive(Clone, Debug, Serialize)]
pub struct RowAudit {
    #[serde(flatten)]
    pub row: LeaderboardRow,
    pub status: Status,
    /// The matched folder (relative to RECORDS_DIR) and its runs' mean val_bpb.
    pub folder: Option<String>,
    pub folder_runs: usize,
    pub folder_mean_val_bpb: Option<f64>,
    pub folder_date: Option<String>,
    /// The predecessor's folder and the recomputed one-sided Welch p (val_bpb).
    pub against_folder: Option<String>,
    pub recomputed_p: Option<f64>,
    /// What was checked, and what did not hold.
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LeaderboardAudit {
    pub readme: String,
    pub root: String,
    pub rows: Vec<RowAudit>,
}

impl LeaderboardAudit {
    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.status == Status::Fail)
    }
}

static PR_LINK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"/pull/(\d+)").expect("pr link"));
static ON_PR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\s*On PR #(\d+)").expect("on pr"));
static STATED_P: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"p\s*=\s*(\d*\.(\d+))\s+vs\.?\s+(?:PR\s*)?#(\d+)([^);,]*)").expect("stated p")
});

fn decimals(number: &str) -> usize {
    number.split_once('.').map_or(0, |(_, d)| d.len())
}

/// The rows of the first table whose header has `Score` and `Date` columns.
pub fn parse_leaderboard(text: &str) -> Vec<LeaderboardRow> {
    let mut rows = Vec::new();
    let mut columns: Option<Vec<String>> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if !t.starts_with('|') {
            if columns.is_some() && !rows.is_empty() {
                break;
            }
            continue;
        }
        let cells: Vec<String> = t
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        let Some(cols) = &columns else {
            if cells.iter().any(|c| c == "Score") && cells.iter().any(|c| c == "Date") {
                columns = Some(cells);
            }
            continue;
        };
        if cells
            .iter()
            .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')))
        {
            continue;
        }
        let cell = |name: &str| {
            cols.iter()
                .position(|c| c == name)
                .and_then(|k| cells.get(k))
                .cloned()
                .unwrap_or_default()
        };
        let score_text = cell("Score");
        let Ok(score) = score_text.parse::<f64>() else {
            continue;
        };
        let summary = cell("Summary");
        let info = cell("Info");
        let pr = PR_LINK
            .captures(&info)
            .or_else(|| ON_PR.captures(&summary))
            .and_then(|c| c[1].parse().ok());
        let stated = STATED_P.captures(&summary);
        rows.push(LeaderboardRow {
            line: i + 1,
            run: cell("Run"),
            score,
            score_decimals: decimals(&score_text),
            author: cell("Author"),
            date: cell("Date"),
            pr,
            stated_p: stated.as_ref().and_then(|c| c[1].parse().ok()),
            stated_p_decimals: stated.as_ref().map_or(0, |c| c[2].len()),
            against_pr: stated.as_ref().and_then(|c| c[3].parse().ok()),
            against_note: stated
                .as_ref()
                .map(|c| c[4].trim().to_string())
                .unwrap_or_default(),
        });
    }
    rows
}

/// Whether `value` written with `decimals` digits is `stated` (the README's rounding).
fn rounds_to(value: f64, stated: f64, decimals: usize) -> bool {
    (value - stated).abs() <= 0.5 * 10f64.powi(-(decimals as i32)) + 1e-12
}

struct Candidate {
    name: String,
    folder: Folder,
    bpb: Vec<f64>,
}

/// The folder of a row: same author, its runs' mean rounding to the score; the closest of several.
fn match_folder<'a>(
    row: &LeaderboardRow,
    candidates: &'a [Candidate],
) -> (Option<&'a Candidate>, Vec<String>) {
    let mut notes = Vec::new();
    let author = row.author.to_lowercase();
    let by_author: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| {
            c.folder.claims.as_ref().is_some_and(|cl| {
                [
                    cl.other_keys.get("github_id").and_then(|v| v.as_str()),
                    cl.author.as_deref(),
                ]
                .into_iter()
                .flatten()
                .any(|a| a.to_lowercase() == author)
            })
        })
        .collect();
    let best = by_author
        .iter()
        .filter(|c| !c.bpb.is_empty() && rounds_to(mean(&c.bpb), row.score, row.score_decimals))
        .min_by(|a, b| {
            (mean(&a.bpb) - row.score)
                .abs()
                .total_cmp(&(mean(&b.bpb) - row.score).abs())
        })
        .copied();
    if best.is_none() {
        for c in &by_author {
            if !c.bpb.is_empty() {
                notes.push(format!(
                    "{} by {} has runs of mean {:.8}, not {}",
                    c.name,
                    row.author,
                    mean(&c.bpb),
                    row.score
                ));
            }
        }
    }
    (best, notes)
}

/// Audits every row of `readme`'s leaderboard against the record folders under `root`.
pub fn audit_leaderboard(readme: &Path, root: &Path, limits: &Limits) -> Result<LeaderboardAudit> {
    let text = super::folder::read_text(readme)?;
    let rows = parse_leaderboard(&text);
    if rows.is_empty() {
        return Err(ReviewError::Setup(format!(
            "{}: no leaderboard table (a Markdown table with Score and Date columns)",
            readme.display()
        )));
    }
    let mut candidates = Vec::new();
    for (_, dir) in find_records(root)? {
        let folder = read_folder(&dir, limits)?;
        let bpb = folder_scores(&folder).val_bpb;
        let name = dir.strip_prefix(root).unwrap_or(&dir).display().to_string();
        candidates.push(Candidate { name, folder, bpb });
    }
    let matched: Vec<(Option<&Candidate>, Vec<String>)> =
        rows.iter().map(|r| match_folder(r, &candidates)).collect();
    let mut audits = Vec::new();
    for (k, row) in rows.iter().enumerate() {
        let (found, mut notes) = (matched[k].0, matched[k].1.clone());
        let mut status = Status::Pass;
        let Some(c) = found else {
            notes.push(format!(
                "no folder under {} by {} with runs of mean {}",
                root.display(),
                row.author,
                row.score
            ));
            audits.push(RowAudit {
                row: row.clone(),
                status: Status::Unknown,
                folder: None,
                folder_runs: 0,
                folder_mean_val_bpb: None,
                folder_date: None,
                against_folder: None,
                recomputed_p: None,
                notes,
            });
            continue;
        };
        let folder_mean = mean(&c.bpb);
        notes.push(format!(
            "score {} = the mean {:.8} of {} runs, rounded",
            row.score,
            folder_mean,
            c.bpb.len()
        ));
        let folder_date = c.folder.claims.as_ref().and_then(|cl| cl.date.clone());
        if let Some(d) = &folder_date
            && d != &row.date
        {
            notes.push(format!(
                "note: the row's date {} is not the folder's {d}",
                row.date
            ));
        }
        let mut against_folder = None;
        let mut recomputed_p = None;
        if let (Some(stated), Some(against)) = (row.stated_p, row.against_pr) {
            let predecessor = rows
                .iter()
                .position(|r| r.pr == Some(against))
                .and_then(|i| matched[i].0);
            match predecessor {
                Some(p) => {
                    against_folder = Some(p.name.clone());
                    match welch_one_sided(&c.bpb, &p.bpb, 0.0) {
                        Some(w) => {
                            recomputed_p = Some(w.p_one_sided);
                            if rounds_to(w.p_one_sided, stated, row.stated_p_decimals) {
                                notes.push(format!(
                                    "p = {:.4} against {} (Welch, one-sided, val_bpb of {} and {} runs): the stated {stated}",
                                    w.p_one_sided,
                                    p.name,
                                    c.bpb.len(),
                                    p.bpb.len()
                                ));
                            } else {
                                status = Status::Fail;
                                notes.push(format!(
                                    "p = {:.4} against {} (Welch, one-sided, val_bpb of {} and {} runs), not the stated {stated}",
                                    w.p_one_sided,
                                    p.name,
                                    c.bpb.len(),
                                    p.bpb.len()
                                ));
                            }
                        }
                        None => {
                            status = Status::Unknown;
                            notes.push(format!(
                                "fewer than two runs on a side against {}: no p",
                                p.name
                            ));
                        }
                    }
                }
                None => {
                    status = Status::Unknown;
                    notes.push(format!(
                        "the stated p = {stated} is against PR #{against}{}, whose folder is not under {}",
                        if row.against_note.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", row.against_note)
                        },
                        root.display()
                    ));
                }
            }
        }
        audits.push(RowAudit {
            row: row.clone(),
            status,
            folder: Some(c.name.clone()),
            folder_runs: c.bpb.len(),
            folder_mean_val_bpb: Some(folder_mean),
            folder_date,
            against_folder,
            recomputed_p,
            notes,
        });
    }
    Ok(LeaderboardAudit {
        readme: readme.display().to_string(),
        root: root.display().to_string(),
        rows: audits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_their_stated_p_values_are_read() {
        let text = "intro\n\n| Run | Score | Author | Summary | Date | Info |\n|-----|------:|---|---|---|---|\n\
            | A | 1.0565 | codemath3000 | On PR #2135: x; 3-seed mean 1.05651 (p=0.014 vs PR #2014) | 2026-05-01 | [info](https://github.com/openai/parameter-golf/pull/2135) |\n\
            | B | 1.0586 | andrewbaggio1 | On PR #1953: y (p=0.063 vs PR #1945 V21 v2) | 2026-04-30 | [info](https://github.com/openai/parameter-golf/pull/1953) |\n\
            | C | 1.0810 | bigbag | On PR #1493: z | 2026-04-09 | [info](records/x/README.md) |\n\nafter\n| x | y |\n";
        let rows = parse_leaderboard(text);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].pr, Some(2135));
        assert_eq!(rows[0].stated_p, Some(0.014));
        assert_eq!(rows[0].stated_p_decimals, 3);
        assert_eq!(rows[0].against_pr, Some(2014));
        assert_eq!(rows[1].against_pr, Some(1945));
        assert_eq!(rows[1].against_note, "V21 v2");
        assert_eq!(rows[2].pr, Some(1493));
        assert_eq!(rows[2].stated_p, None);
        assert_eq!(rows[2].score_decimals, 4);
        assert!(rounds_to(0.0138, 0.014, 3) && !rounds_to(0.0202, 0.011, 3));
    }
}
