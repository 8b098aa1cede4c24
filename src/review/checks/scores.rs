//! The runs a folder reports and their scores: the per-seed claims where the submission states them, else its logs.

use super::Scores;
use super::numeric::{agree, decimals};
use crate::review::folder::Folder;
use crate::review::log::LogSummary;

/// The runs a folder reports: one per log with a final score, a log repeating another's run counted once.
pub fn scored_logs(logs: &[LogSummary]) -> Vec<&LogSummary> {
    logs.iter()
        .filter(|l| l.val_bpb.is_some() && l.duplicate_of.is_none())
        .collect()
}

/// Each run's scores: the per-seed claims where the submission states them, else the logs' final lines.
pub fn folder_scores(f: &Folder) -> Scores {
    let source = f.dir.display().to_string();
    let logs = scored_logs(&f.logs);
    if let Some(c) = &f.claims {
        let seeds: Vec<(f64, Option<f64>)> = c
            .seeds
            .iter()
            .filter_map(|s| {
                let bpb = s.val_bpb?;
                // A claim without val_loss takes it from the log line that states its val_bpb.
                let loss = s.val_loss.or_else(|| {
                    logs.iter().filter(|l| l.is_seed(&s.seed)).find_map(|l| {
                        l.evaluations
                            .iter()
                            .rev()
                            .find(|e| agree(bpb, decimals(bpb), e.val_bpb, e.bpb_decimals))
                            .and_then(|e| e.val_loss)
                    })
                });
                Some((bpb, loss))
            })
            .collect();
        if seeds.len() >= 2 {
            let all_loss = seeds.iter().all(|(_, l)| l.is_some());
            return Scores {
                source,
                val_bpb: seeds.iter().map(|(b, _)| *b).collect(),
                val_loss: if all_loss {
                    seeds.iter().filter_map(|(_, l)| *l).collect()
                } else {
                    Vec::new()
                },
            };
        }
    }
    Scores {
        source,
        val_bpb: logs.iter().filter_map(|l| l.val_bpb).collect(),
        val_loss: logs.iter().filter_map(|l| l.val_loss).collect(),
    }
}

/// The logs a claim rests on: where the submission states per-seed scores, the logs of those seeds with a line
/// giving that score; otherwise every log. Logs kept for comparison (an original run beside its compliance rerun)
/// are then supporting evidence, not the claim.
pub fn claimed_logs(f: &Folder) -> Vec<&LogSummary> {
    let all: Vec<&LogSummary> = f.logs.iter().filter(|l| l.duplicate_of.is_none()).collect();
    let Some(c) = &f.claims else {
        return all;
    };
    let picked: Vec<&LogSummary> = all
        .iter()
        .copied()
        .filter(|l| {
            c.seeds.iter().any(|s| {
                l.is_seed(&s.seed)
                    && s.val_bpb.is_some_and(|b| {
                        l.evaluations
                            .iter()
                            .any(|e| agree(b, decimals(b), e.val_bpb, e.bpb_decimals))
                    })
            })
        })
        .collect();
    if picked.is_empty() { all } else { picked }
}
