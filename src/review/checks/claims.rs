//! The claims against the logs: each seed's claimed figures against its log's final line, and the number of runs.

use super::numeric::*;
use super::{Check, Status, check};
use std::collections::BTreeSet;

use super::scores::scored_logs;
use crate::review::canonical::*;
use crate::review::folder::Folder;
use crate::review::log::LogSummary;
use crate::review::stats::{mean, sample_std};

/// `claims_match_logs`: each seed's claimed val_bpb/val_loss/bytes equals its log's final line (at the printed
/// precision), and the claimed mean (and std, sample or population) is the mean of the runs.
pub fn claims_match_logs(f: &Folder) -> Check {
    let Some(c) = &f.claims else {
        return check(
            "claims_match_logs",
            Status::Unknown,
            "no submission.json",
            vec![],
        );
    };
    let logs = scored_logs(&f.logs);
    if logs.is_empty() {
        return check(
            "claims_match_logs",
            Status::Unknown,
            "no log reports a final score",
            vec![],
        );
    }
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for s in &c.seeds {
        let same: Vec<&&LogSummary> = logs.iter().filter(|l| l.is_seed(&s.seed)).collect();
        if same.is_empty() {
            if let Some(claimed) = s.val_bpb {
                bad.push(format!(
                    "seed {}: claimed val_bpb {claimed} but no log of that seed",
                    s.seed
                ));
            }
            continue;
        }
        for l in &same {
            if let (Some(own), Some(named)) = (l.seed, l.seed_in_name)
                && own != named
            {
                ok.push(format!(
                    "note: {} is named for seed {named} but its own seed line says {own}",
                    l.file
                ));
            }
        }
        // A claim matches the log's final line, or (noted) an earlier evaluation line of the same log.
        let find = |claimed: f64, of: &dyn Fn(&crate::review::log::Evaluation) -> (f64, usize)| {
            let mut earlier = None;
            for l in &same {
                let n = l.evaluations.len();
                for (k, e) in l.evaluations.iter().enumerate().rev() {
                    let (v, d) = of(e);
                    if agree(claimed, decimals(claimed), v, d) {
                        if k + 1 == n {
                            return Some((l.file.clone(), e.line, e.label.clone(), true));
                        }
                        earlier.get_or_insert((l.file.clone(), e.line, e.label.clone(), false));
                    }
                }
            }
            earlier
        };
        if let Some(claimed) = s.val_bpb {
            match find(claimed, &|e| (e.val_bpb, e.bpb_decimals)) {
                Some((file, line, _, true)) => ok.push(format!("seed {} val_bpb {claimed} = {file}:{line}", s.seed)),
                Some((file, line, label, false)) => ok.push(format!(
                    "note: seed {} val_bpb {claimed} is {file}:{line} ({label}), not the log's last evaluation line",
                    s.seed
                )),
                None => bad.push(format!(
                    "seed {}: claimed val_bpb {claimed}, logs say {}",
                    s.seed,
                    same.iter().map(|l| format!("{} ({})", l.val_bpb.unwrap_or(f64::NAN), l.file)).collect::<Vec<_>>().join(", ")
                )),
            }
        }
        if let Some(claimed) = s.val_loss
            && find(claimed, &|e| {
                (e.val_loss.unwrap_or(f64::NAN), e.loss_decimals)
            })
            .is_none()
        {
            bad.push(format!(
                "seed {}: claimed val_loss {claimed}, logs say {}",
                s.seed,
                same.iter()
                    .map(|l| format!("{} ({})", l.val_loss.unwrap_or(f64::NAN), l.file))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(claimed) = s.artifact_bytes.or(s.total_bytes) {
            let sizes: Vec<u64> = same
                .iter()
                .flat_map(|l| [l.artifact_bytes, l.total_bytes])
                .flatten()
                .collect();
            if !sizes.is_empty() && !sizes.contains(&claimed) {
                bad.push(format!(
                    "seed {}: claimed {claimed} bytes, logs say {}",
                    s.seed,
                    sizes
                        .iter()
                        .map(|b| b.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    // The claimed mean against the runs: the per-seed claims where stated, else one final score per log.
    let per_run: Vec<f64> = {
        let seeds: Vec<f64> = c.seeds.iter().filter_map(|s| s.val_bpb).collect();
        if seeds.is_empty() {
            logs.iter().filter_map(|l| l.val_bpb).collect()
        } else {
            seeds
        }
    };
    if let Some(claimed) = c.val_bpb {
        let m = mean(&per_run);
        let single = logs.iter().find(|l| {
            l.final_evaluation()
                .is_some_and(|e| agree(claimed, decimals(claimed), e.val_bpb, e.bpb_decimals))
        });
        if agree(claimed, decimals(claimed), m, 8) {
            ok.push(format!(
                "mean val_bpb {claimed} = mean of {} runs {m:.8}",
                per_run.len()
            ));
        } else if let (Some(l), true) = (single, c.seeds.iter().all(|s| s.val_bpb.is_none())) {
            ok.push(format!(
                "note: the claimed val_bpb {claimed} is the run of {}, not the mean of the {} runs ({m:.8}, {:+.5})",
                l.file,
                per_run.len(),
                m - claimed
            ));
        } else {
            bad.push(format!(
                "claimed val_bpb {claimed}, mean of {} runs is {m:.8}",
                per_run.len()
            ));
        }
        if let (Some(claimed_std), Some(s)) = (c.val_bpb_std, sample_std(&per_run)) {
            let n = per_run.len() as f64;
            let population = s * ((n - 1.0) / n).sqrt();
            let near = |x: f64| {
                agree(claimed_std, decimals(claimed_std), x, 8)
                    || (claimed_std - x).abs() <= 0.05 * x
            };
            if near(s) || near(population) {
                ok.push(format!(
                    "val_bpb_std {claimed_std} (sample {s:.8}, population {population:.8})"
                ));
            } else {
                bad.push(format!("claimed val_bpb_std {claimed_std}, runs give {s:.8} (sample) / {population:.8} (population)"));
            }
        }
    }
    if let (Some(r), Some(claimed)) = (&f.readme, c.val_bpb) {
        let mentioned = r.bpb_mentions.iter().any(|m| {
            m.parse::<f64>()
                .is_ok_and(|x| agree(x, decimals_of_text(m), claimed, decimals(claimed)))
        });
        if !r.bpb_mentions.is_empty() {
            if mentioned {
                ok.push(format!("{} mentions the claimed {claimed}", r.file));
            } else {
                // The README is prose: a mismatch is reported, not failed.
                ok.push(format!(
                    "note: {} does not mention the claimed {claimed} (mentions {})",
                    r.file,
                    r.bpb_mentions
                        .iter()
                        .take(6)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    if bad.is_empty() {
        check(
            "claims_match_logs",
            Status::Pass,
            format!("{} comparisons agree", ok.len()),
            ok,
        )
    } else {
        check(
            "claims_match_logs",
            Status::Fail,
            format!(
                "{} of {} comparisons disagree",
                bad.len(),
                bad.len() + ok.len()
            ),
            bad,
        )
    }
}

/// `seed_count`: at least three runs with a final score.
pub fn seed_count(f: &Folder) -> Check {
    let logs = scored_logs(&f.logs);
    let seeds: BTreeSet<String> = logs
        .iter()
        .map(|l| {
            l.seed
                .map(|s| s.to_string())
                .unwrap_or_else(|| l.file.clone())
        })
        .collect();
    let n = seeds.len();
    let measured = format!(
        "{n} distinct seed(s) with a final score in {} log(s) (seeds: {})",
        logs.len(),
        seeds.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    let mut ev: Vec<String> = logs.iter().map(|l| l.file.clone()).collect();
    for l in &f.logs {
        if let (Some(own), Some(named)) = (l.seed, l.seed_in_name)
            && own != named
        {
            ev.push(format!(
                "note: {} is named for seed {named} but ran with seed {own}",
                l.file
            ));
        }
        if let Some(d) = &l.duplicate_of {
            ev.push(format!(
                "note: {} repeats the run of {d} (counted once)",
                l.file
            ));
        }
    }
    if !f.time_limited {
        return check(
            "seed_count",
            Status::Pass,
            format!("non-record track: no seed requirement; {measured}"),
            ev,
        );
    }
    check(
        "seed_count",
        if n >= MIN_SEEDS {
            Status::Pass
        } else {
            Status::Fail
        },
        measured,
        ev,
    )
}
