//! The clocks: training within its 600 seconds (with any calibration that reads training data after the loop), and
//! the reported score's evaluation.

use super::scores::claimed_logs;
use super::{Check, Status, check};
use crate::review::canonical::*;
use crate::review::folder::Folder;

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
