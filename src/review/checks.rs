//! The review's checks. Each is `pass`, `fail` or `unknown`, with what it measured and the lines it came from.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::canonical::*;
use super::folder::{CodeFile, Folder};
use super::log::LogSummary;
use super::stats::{mean, sample_std, welch_one_sided};
use crate::infer::presets::presets;
use crate::pack::budget::BUDGET_BYTES;

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

fn check(
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

/// Decimals of a number as its shortest decimal form prints it (1.1194 → 4).
fn decimals(x: f64) -> usize {
    let s = format!("{x}");
    s.split_once('.').map(|(_, f)| f.len()).unwrap_or(0)
}

/// Whether two printed values agree at the coarser one's precision: within one unit in its last place, so that a
/// truncated figure (0.94855 written 0.9485) agrees as well as a rounded one; plus 1e-9 for binary representation.
fn agree(a: f64, a_dec: usize, b: f64, b_dec: usize) -> bool {
    let dec = a_dec.min(b_dec) as i32;
    (a - b).abs() <= 10f64.powi(-dec) + 1e-9
}

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

/// `size_cap`: code + artifact ≤ 16,000,000 bytes (decimal) for every run, as each log counts it, and for every
/// per-seed claim.
pub fn size_cap(f: &Folder) -> Check {
    let mut totals: Vec<(u64, String)> = Vec::new();
    for l in &f.logs {
        let code = l.code_bytes.or(f.code.as_ref().map(|c| c.bytes));
        let total = l.total_bytes.or_else(|| Some(l.artifact_bytes? + code?));
        if let Some(t) = total {
            let mut ev = l.evidence_for("total_bytes");
            if ev.is_empty() {
                ev = l.evidence_for("artifact_bytes");
            }
            totals.push((t, ev.first().cloned().unwrap_or_else(|| l.file.clone())));
        }
    }
    if let Some(c) = &f.claims {
        let file = c.file.clone().unwrap_or_default();
        for s in &c.seeds {
            if let Some(t) = s.total_bytes {
                totals.push((t, format!("{file}: seed {} bytes_total {t}", s.seed)));
            }
        }
        if let Some(t) = c.bytes_total {
            totals.push((t, format!("{file}: bytes_total {t}")));
        }
    }
    if totals.is_empty() {
        return check(
            "size_cap",
            Status::Unknown,
            "no log or claim states the artifact's size",
            vec![],
        );
    }
    let over: Vec<&(u64, String)> = totals.iter().filter(|(t, _)| *t > BUDGET_BYTES).collect();
    let max = totals.iter().map(|(t, _)| *t).max().unwrap_or(0);
    if over.is_empty() {
        check(
            "size_cap",
            Status::Pass,
            format!(
                "largest total {max} bytes, {} under the cap ({} totals)",
                BUDGET_BYTES - max,
                totals.len()
            ),
            totals.into_iter().map(|(_, e)| e).collect(),
        )
    } else {
        check(
            "size_cap",
            Status::Fail,
            format!(
                "{} of {} totals over {BUDGET_BYTES}: largest {max} (+{})",
                over.len(),
                totals.len(),
                max - BUDGET_BYTES
            ),
            over.into_iter().map(|(_, e)| e.clone()).collect(),
        )
    }
}

/// `code_bytes_match`: the log's counted code size equals the shipped file's. A script that counts its own
/// compressed wrapper (`Code size (compressed)`) matches when its uncompressed size is the file's.
pub fn code_bytes_match(f: &Folder) -> Check {
    let Some(code) = &f.code else {
        return check(
            "code_bytes_match",
            Status::Unknown,
            "no train_gpt.py in the folder",
            vec![],
        );
    };
    let logged: Vec<&LogSummary> = f.logs.iter().filter(|l| l.code_bytes.is_some()).collect();
    if logged.is_empty() {
        return check(
            "code_bytes_match",
            Status::Unknown,
            format!(
                "{} is {} bytes; no log states a code size",
                code.file, code.bytes
            ),
            vec![],
        );
    }
    let mut bad = Vec::new();
    let mut via_wrapper = false;
    for l in &logged {
        let b = l.code_bytes.unwrap_or(0);
        if b == code.bytes || code.decoded_bytes == Some(b) && code.wrapper.is_none() {
            continue;
        }
        if l.code_counted_compressed && l.code_bytes_uncompressed == Some(code.bytes) {
            via_wrapper = true;
            continue;
        }
        bad.push(format!(
            "{} (log says {b})",
            l.evidence_for("code_bytes").join("")
        ));
    }
    if bad.is_empty() {
        let measured = if via_wrapper {
            format!(
                "{} is {} bytes as shipped, the logs' uncompressed size; the logs count the script's own compressed \
                 wrapper of it ({} bytes), the convention the records since 04-13 use",
                code.file,
                code.bytes,
                logged[0].code_bytes.unwrap_or(0)
            )
        } else {
            format!(
                "{} is {} bytes, as {} log(s) state",
                code.file,
                code.bytes,
                logged.len()
            )
        };
        check(
            "code_bytes_match",
            Status::Pass,
            measured,
            logged
                .iter()
                .flat_map(|l| l.evidence_for("code_bytes"))
                .collect(),
        )
    } else {
        check(
            "code_bytes_match",
            Status::Fail,
            format!(
                "{} is {} bytes; {} log(s) state another size",
                code.file,
                code.bytes,
                bad.len()
            ),
            bad,
        )
    }
}

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
            if s.val_bpb.is_some() {
                bad.push(format!(
                    "seed {}: claimed {:?} but no log of that seed",
                    s.seed, s.val_bpb
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
        let find = |claimed: f64, of: &dyn Fn(&super::log::Evaluation) -> (f64, usize)| {
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
                    "seed {}: claimed {claimed} bytes, logs say {sizes:?}",
                    s.seed
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

fn decimals_of_text(s: &str) -> usize {
    s.split_once('.').map(|(_, f)| f.len()).unwrap_or(0)
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

/// Relative rounding error of a printed value.
fn rounding(x: f64, dec: usize) -> f64 {
    0.5 * 10f64.powi(-(dec as i32)) / x.abs()
}

/// `byte_accounting`: the byte denominator each log implies, val_loss·targets / (ln 2 · val_bpb), against the
/// canonical byte count of the validation set, whatever the tokenizer.
pub fn byte_accounting(f: &Folder) -> Check {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let mut implied_all = Vec::new();
    for l in scored_logs(&f.logs) {
        let e = l.final_evaluation().expect("scored");
        let targets = l
            .val_tokens
            .map(|t| (t, "the log's val_tokens"))
            .or_else(|| {
                let v = canonical_targets(l.variant.as_deref()?, l.caseops)?;
                (v.len() == 1).then(|| (v[0], "the canonical target count"))
            });
        let Some((targets, whence)) = targets else {
            continue;
        };
        if e.val_bpb <= 0.0 {
            continue;
        }
        let Some(val_loss) = e.val_loss else {
            continue;
        };
        let implied = val_loss * targets as f64 / (std::f64::consts::LN_2 * e.val_bpb);
        let slack =
            implied * (rounding(val_loss, e.loss_decimals) + rounding(e.val_bpb, e.bpb_decimals));
        implied_all.push(implied);
        let line = format!(
            "{}: {:.0} bytes implied by val_loss {} × {targets} targets ({whence}) / (ln 2 × val_bpb {}) (±{:.0} from rounding)",
            l.file, implied, val_loss, e.val_bpb, slack
        );
        if implied + slack >= CANONICAL_VAL_BYTES_LOW && implied - slack <= CANONICAL_VAL_BYTES_HIGH
        {
            ok.push(line);
        } else {
            bad.push(format!(
                "{line}: {:+.2}% from the canonical {:.0}",
                (implied / CANONICAL_VAL_BYTES - 1.0) * 100.0,
                CANONICAL_VAL_BYTES
            ));
        }
    }
    if implied_all.is_empty() {
        return check(
            "byte_accounting",
            Status::Unknown,
            "no log gives a final val_loss, val_bpb and a target count (val_tokens, or a known tokenizer)",
            vec![],
        );
    }
    let band = format!("canonical band {CANONICAL_VAL_BYTES_LOW:.0}–{CANONICAL_VAL_BYTES_HIGH:.0}");
    if bad.is_empty() {
        check(
            "byte_accounting",
            Status::Pass,
            format!(
                "implied denominators {:.0}–{:.0} bytes, inside the {band}",
                min(&implied_all),
                max(&implied_all)
            ),
            ok,
        )
    } else {
        check(
            "byte_accounting",
            Status::Fail,
            format!(
                "{} of {} runs imply a denominator outside the {band}",
                bad.len(),
                implied_all.len()
            ),
            bad,
        )
    }
}

fn min(xs: &[f64]) -> f64 {
    xs.iter().cloned().fold(f64::INFINITY, f64::min)
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
}

/// `val_tokens`: the logged validation token count against the canonical count for the tokenizer.
pub fn val_tokens(f: &Folder) -> Check {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let mut unknown = Vec::new();
    for l in &f.logs {
        let Some(t) = l.val_tokens else {
            continue;
        };
        let ev = l.evidence_for("val_tokens").join("");
        match l
            .variant
            .as_deref()
            .and_then(|v| canonical_targets(v, l.caseops))
        {
            Some(canon) if canon.contains(&t) => ok.push(ev),
            Some(canon) => bad.push(format!(
                "{ev}: {} expects {}",
                variant_name(l),
                canon
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
            None => unknown.push(format!(
                "{ev}: no canonical count for the tokenizer {}",
                l.variant.as_deref().unwrap_or("(not named in the log)")
            )),
        }
    }
    if !bad.is_empty() {
        check(
            "val_tokens",
            Status::Fail,
            format!("{} log(s) evaluate a non-canonical token count", bad.len()),
            bad,
        )
    } else if !ok.is_empty() {
        check(
            "val_tokens",
            Status::Pass,
            format!("{} log(s) evaluate the canonical token count", ok.len()),
            ok,
        )
    } else if !unknown.is_empty() {
        check(
            "val_tokens",
            Status::Unknown,
            "the tokenizer has no canonical count",
            unknown,
        )
    } else {
        check(
            "val_tokens",
            Status::Unknown,
            "no log states the validation token count",
            vec![],
        )
    }
}

fn variant_name(l: &LogSummary) -> String {
    format!(
        "{}{}",
        l.variant.as_deref().unwrap_or("?"),
        if l.caseops { " CaseOps" } else { "" }
    )
}

/// `train_time`: the training loop's clock plus any GPTQ calibration that reads training data after it (rules
/// count it as training, spec §5.9) within 600 s (+1 s for the loop's last step).
pub fn train_time(f: &Folder) -> Check {
    if !f.time_limited {
        let longest = f
            .logs
            .iter()
            .filter_map(|l| l.train_seconds)
            .fold(0.0, f64::max);
        return check(
            "train_time",
            Status::Pass,
            format!("non-record track: no time limit (longest run {longest:.0} s)"),
            vec![],
        );
    }
    let mut rows = Vec::new();
    let mut over = Vec::new();
    let claimed = claimed_logs(f);
    for l in &f.logs {
        let Some(train) = l.train_seconds else {
            continue;
        };
        let supporting = !claimed.iter().any(|c| std::ptr::eq(*c, l));
        let hessian = if l.calibration_self_generated {
            None
        } else {
            l.hessian_seconds
        };
        let total = train + hessian.unwrap_or(0.0);
        let mut line = format!("{}: train loop {train:.3} s", l.file);
        if let Some(h) = hessian {
            line += &format!(" + GPTQ Hessians from training data {h:.1} s = {total:.3} s");
        }
        let mut ev = l.evidence_for("train_seconds");
        ev.extend(l.evidence_for("hessian_seconds"));
        line += &format!(" [{}]", ev.join(" | "));
        let late = total > TRAIN_SECONDS_CAP + TRAIN_SECONDS_GRACE;
        if late && supporting {
            rows.push(format!(
                "note: {line}: over {TRAIN_SECONDS_CAP} s, but the claim does not rest on this run"
            ));
        } else if late {
            over.push(line);
        } else {
            rows.push(line);
        }
    }
    if rows.is_empty() && over.is_empty() {
        return check(
            "train_time",
            Status::Unknown,
            "no log states the training time",
            vec![],
        );
    }
    if over.is_empty() {
        check(
            "train_time",
            Status::Pass,
            format!("{} run(s) within {TRAIN_SECONDS_CAP} s", rows.len()),
            rows,
        )
    } else {
        check(
            "train_time",
            Status::Fail,
            format!(
                "{} of {} run(s) over {TRAIN_SECONDS_CAP} s (+{TRAIN_SECONDS_GRACE} s grace)",
                over.len(),
                over.len() + rows.len()
            ),
            over,
        )
    }
}

/// `eval_time`: the evaluation clock of the reported score (the script's total where it prints one, else the final
/// line's) and any per-seed claim, within 600 s.
pub fn eval_time(f: &Folder) -> Check {
    if !f.time_limited {
        let longest = f
            .logs
            .iter()
            .filter_map(|l| l.eval_seconds)
            .fold(0.0, f64::max);
        return check(
            "eval_time",
            Status::Pass,
            format!("non-record track: no time limit (longest evaluation {longest:.0} s)"),
            vec![],
        );
    }
    let mut rows = Vec::new();
    let mut over = Vec::new();
    for l in &f.logs {
        if let Some(s) = l.eval_seconds {
            let line = format!(
                "{}: {s:.1} s [{}]",
                l.file,
                l.evidence_for("eval_seconds").join("")
            );
            if s > EVAL_SECONDS_CAP {
                over.push(line)
            } else {
                rows.push(line)
            }
        }
    }
    if let Some(c) = &f.claims {
        for s in &c.seeds {
            if let Some(e) = s.eval_seconds {
                let line = format!(
                    "{}: seed {} eval {e:.1} s",
                    c.file.as_deref().unwrap_or(""),
                    s.seed
                );
                if e > EVAL_SECONDS_CAP {
                    over.push(line)
                } else {
                    rows.push(line)
                }
            }
        }
    }
    if rows.is_empty() && over.is_empty() {
        return check(
            "eval_time",
            Status::Unknown,
            "no log or claim states the evaluation time",
            vec![],
        );
    }
    if over.is_empty() {
        check(
            "eval_time",
            Status::Pass,
            format!(
                "{} evaluation time(s) within {EVAL_SECONDS_CAP} s",
                rows.len()
            ),
            rows,
        )
    } else {
        check(
            "eval_time",
            Status::Fail,
            format!(
                "{} evaluation time(s) over {EVAL_SECONDS_CAP} s",
                over.len()
            ),
            over,
        )
    }
}

/// `significance`: one-sided Welch t-test of the runs against the baseline's: `pass` when the README's rule holds
/// (mean improvement ≥ 0.005 nats at p < 0.01, in val_loss), with the leaderboard's practice (val_bpb, p < 0.25)
/// reported beside it.
pub fn significance(candidate: &Scores, baseline: Option<&Scores>) -> Check {
    let Some(b) = baseline else {
        return check(
            "significance",
            Status::Unknown,
            "no baseline (--baseline DIR|FILE)",
            vec![],
        );
    };
    let mut ev = vec![
        format!(
            "candidate {}: val_loss {:?} val_bpb {:?}",
            candidate.source, candidate.val_loss, candidate.val_bpb
        ),
        format!(
            "baseline {}: val_loss {:?} val_bpb {:?}",
            b.source, b.val_loss, b.val_bpb
        ),
    ];
    let mut values = std::collections::BTreeMap::new();
    let practice_test = welch_one_sided(&candidate.val_bpb, &b.val_bpb, 0.0);
    if let Some(w) = &practice_test {
        for (k, v) in [
            ("practice_t", w.t),
            ("practice_df", w.df),
            ("practice_p", w.p_one_sided),
            ("practice_improvement_bpb", w.improvement),
        ] {
            values.insert(k.to_string(), v);
        }
    }
    let practice = practice_test.map(|w| {
        format!(
            "practice (val_bpb, Welch, p < {PRACTICE_P}): improvement {:.5} BPB, t = {:.3}, df = {:.2}, p = {:.4} → {}",
            w.improvement,
            w.t,
            w.df,
            w.p_one_sided,
            if w.p_one_sided < PRACTICE_P { "holds" } else { "does not hold" }
        )
    });
    // Nats per token are comparable only under one tokenizer: val_loss / val_bpb = ln 2 · bytes per token. Where
    // the two sides' ratios differ by more than 1%, the baseline's scores are put in the candidate's nats per
    // token (its BPB times the candidate's ratio), which is the README's rule applied per byte.
    let ratio = |s: &Scores| {
        (s.val_loss.len() == s.val_bpb.len() && !s.val_loss.is_empty()).then(|| {
            mean(
                &s.val_loss
                    .iter()
                    .zip(&s.val_bpb)
                    .map(|(l, b)| l / b)
                    .collect::<Vec<_>>(),
            )
        })
    };
    let mut base_loss = b.val_loss.clone();
    if let (Some(rc), Some(rb)) = (ratio(candidate), ratio(b))
        && (rc / rb - 1.0).abs() > 0.01
    {
        base_loss = b.val_bpb.iter().map(|x| x * rc).collect();
        ev.push(format!(
                "note: the tokenizers differ (val_loss/val_bpb {rc:.4} vs {rb:.4}): the baseline's val_bpb × {rc:.4} stands for its val_loss in the candidate's nats per token"
            ));
    }
    let Some(rule) = welch_one_sided(&candidate.val_loss, &base_loss, RULE_MARGIN_NATS) else {
        ev.extend(practice);
        let mut c = check(
            "significance",
            Status::Unknown,
            format!(
                "needs ≥ 2 runs with val_loss on each side and some spread (candidate {}, baseline {})",
                candidate.val_loss.len(),
                base_loss.len()
            ),
            ev,
        );
        c.values = values;
        return c;
    };
    for (k, v) in [
        ("rule_t", rule.t),
        ("rule_df", rule.df),
        ("rule_p", rule.p_one_sided),
        ("rule_improvement_nats", rule.improvement),
    ] {
        values.insert(k.to_string(), v);
    }
    let holds = rule.improvement >= RULE_MARGIN_NATS && rule.p_one_sided < RULE_P;
    let mut measured = format!(
        "rule (val_loss, ≥ {RULE_MARGIN_NATS} nats at p < {RULE_P}): improvement {:.5} nats, t = {:.3}, df = {:.2}, p = {:.4} → {}",
        rule.improvement,
        rule.t,
        rule.df,
        rule.p_one_sided,
        if holds { "holds" } else { "does not hold" }
    );
    if let Some(p) = practice {
        measured += "; ";
        measured += &p;
    }
    let mut c = check(
        "significance",
        if holds { Status::Pass } else { Status::Fail },
        measured,
        ev,
    );
    c.values = values;
    c
}

struct Hint {
    what: &'static str,
    pattern: Regex,
}

/// Code patterns that deserve a reviewer's look (spec §5, §7). Hints, never verdicts.
static HINTS: LazyLock<Vec<Hint>> = LazyLock::new(|| {
    let h = |what, p: &str| Hint {
        what,
        pattern: Regex::new(p).expect("hint"),
    };
    vec![
        h(
            "n-gram table keyed by the target token (C2: check the lookup is by context only, and normalized)",
            r"(?i)(ngram|n_gram|cache|table|counts?)\w*\s*\[[^\]]*\b(target|tgt|y_true|next_tok\w*|y\[)",
        ),
        h(
            "n-gram cache or tilt at evaluation (C2: a probability over the whole vocabulary?)",
            r"(?i)\b(ngram|n_gram)_?(cache|tilt|eval|mix)",
        ),
        h(
            "SLOT-style per-window delta optimized at evaluation (C1/C3)",
            r"\b(?:slot_\w+|SLOT_[A-Z_]+)\b|delta\s*=\s*torch\.zeros\([^)]*requires_grad\s*=\s*True",
        ),
        h(
            "pre-quantization TTT on validation tokens (ruled illegal, spec §5.7)",
            r"(?i)pre_?quant\w*_?ttt|ttt\w*_?pre_?quant",
        ),
        h(
            "validation data read in calibration or training (spec §5.1, §5.9)",
            r"(?i)(calib|hessian|gptq)\w*.*\b(val_tokens|fineweb_val|val_files|val_loader)\b|\b(val_tokens|fineweb_val|val_files)\b.*(calib|hessian)",
        ),
        h(
            "code loaded from another file at run time (its bytes count as code, spec §6.1)",
            r#"exec\(\s*open\(|exec\(\s*compile\(\s*open\(|runpy\.run_path|importlib\.import_module\(\s*["']train"#,
        ),
        h(
            "several TTT epochs over the same tokens: check each chunk is scored before its first update (C3)",
            r#"(?i)TTT_EPOCHS["']?\s*,\s*["']?([2-9]|\d{2,})"#,
        ),
    ]
});

/// `static_legality`: hints from the code (never verdicts): n-gram tables keyed by the target, SLOT-style deltas,
/// pre-quant TTT, validation files in calibration, multi-epoch TTT. `pass` with none, `unknown` with any.
pub fn static_legality(code: Option<&CodeFile>) -> Check {
    let Some(code) = code else {
        return check(
            "static_legality",
            Status::Unknown,
            "no code to read",
            vec![],
        );
    };
    let mut hits = Vec::new();
    for (i, line) in code.source.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        for h in HINTS.iter() {
            if h.pattern.is_match(t) {
                hits.push(format!(
                    "{}:{}: {}: {}",
                    code.file,
                    i + 1,
                    h.what,
                    t.chars().take(160).collect::<String>()
                ));
            }
        }
    }
    let source = if code.wrapper.is_some() {
        " (decoded from its wrapper)"
    } else {
        ""
    };
    if hits.is_empty() {
        check(
            "static_legality",
            Status::Pass,
            format!("no hint in {}{source}", code.file),
            vec![],
        )
    } else {
        let n = hits.len();
        hits.truncate(40);
        check(
            "static_legality",
            Status::Unknown,
            format!(
                "{n} line(s) for a reviewer to read in {}{source}",
                code.file
            ),
            hits,
        )
    }
}

/// `reproduce`: the `pgolf verify` command that re-runs the declared evaluation, from the preset whose logged
/// parameter count the log prints, else the hyperparameters a config would need.
pub fn reproduce(f: &Folder) -> Check {
    let l = f
        .logs
        .iter()
        .find(|l| l.model_params.is_some())
        .or(f.logs.first());
    let Some(l) = l else {
        return check(
            "reproduce",
            Status::Unknown,
            "no log to read the model from",
            vec![],
        );
    };
    let artifact = artifact_name(l);
    let variant = l.variant.clone().unwrap_or_else(|| "sp1024".into());
    let tokenizer = match variant.strip_prefix("sp") {
        Some(v) if v.chars().all(|c| c.is_ascii_digit()) => format!("fineweb_{v}_bpe.model"),
        _ if variant == "byte260" => variant.clone(),
        _ => format!("THE_RECORDS_{}_TOKENIZER.model", variant.to_uppercase()),
    };
    let val = format!("'data/datasets/fineweb10B_{variant}/fineweb_val_*.bin'");
    if let Some(p) = l.model_params.and_then(|n| {
        presets()
            .into_iter()
            .find(|p| p.logged_parameters as u64 == n)
    }) {
        let mut cmd = format!(
            "pgolf verify {artifact} --preset {} --val {val} --tokenizer {tokenizer}",
            p.name
        );
        if p.eval.byte_sidecar {
            cmd +=
                " --byte-sidecar 'data/datasets/fineweb10B_sp8192_caseops/fineweb_val_bytes_*.bin'";
        }
        return check(
            "reproduce",
            Status::Pass,
            cmd,
            vec![format!(
                "{} (preset {}: {})",
                l.evidence_for("model_params").join(""),
                p.name,
                p.record
            )],
        );
    }
    let keys = [
        "vocab_size",
        "num_layers",
        "model_dim",
        "num_heads",
        "num_kv_heads",
        "mlp_mult",
        "train_seq_len",
        "tie_embeddings",
    ];
    let known: Vec<String> = keys
        .iter()
        .filter_map(|k| l.hyperparameters.get(*k).map(|v| format!("{k}={v}")))
        .collect();
    check(
        "reproduce",
        Status::Unknown,
        format!(
            "no preset has {} parameters: write a config (docs/ARCHITECTURES.md) and run pgolf verify {artifact} --config CONFIG.json --val {val} --tokenizer {tokenizer}{}",
            l.model_params
                .map(|n| n.to_string())
                .unwrap_or_else(|| "an unknown number of".into()),
            if known.is_empty() {
                String::new()
            } else {
                format!(" (from the log: {})", known.join(", "))
            }
        ),
        l.evidence_for("model_params"),
    )
}

/// The artifact's file name as the record's script writes it, from the scheme its log names.
fn artifact_name(l: &LogSummary) -> String {
    let scheme = l
        .evidence
        .get("artifact_bytes")
        .map(|e| e.text.to_lowercase())
        .unwrap_or_default();
    for bits in ["int8", "int6", "int5", "int4"] {
        if scheme.contains(bits) {
            return format!("final_model.{bits}.ptz");
        }
    }
    "final_model.ptz".into()
}
