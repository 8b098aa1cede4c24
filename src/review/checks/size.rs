//! The size checks: the 16,000,000-byte cap, and the code bytes the logs counted against the shipped file.

use super::{Check, Status, check};
use crate::pack::budget::BUDGET_BYTES;
use crate::review::folder::Folder;
use crate::review::log::LogSummary;

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
        // A log that counts its own compressed wrapper ran the source whose uncompressed size it states: quote
        // that line, since it is the one that disagrees with the shipped file.
        match l.code_bytes_uncompressed.filter(|_| l.code_counted_compressed) {
            Some(ran) => bad.push(format!(
                "{}: the shipped {} is {} bytes ({:+}): this run's script was another version of it (its compressed \
                 wrapper counted {b} bytes)",
                l.evidence_for("code_bytes_uncompressed").join(""),
                code.file,
                code.bytes,
                code.bytes as i64 - ran as i64
            )),
            None => bad.push(format!(
                "{}: the shipped {} is {} bytes ({:+})",
                l.evidence_for("code_bytes").join(""),
                code.file,
                code.bytes,
                code.bytes as i64 - b as i64
            )),
        }
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

/// `external_code`: the folder's other code that the counted script runs — modules it imports, sources it compiles,
/// libraries it loads, scripts it executes — and whether the counted code bytes cover it. "All counted code should
/// live in the `train_gpt.py` script" (the challenge's README); code that the score depends on and that no log
/// counts fails, with the cap margin it would leave if it were counted as it sits.
pub fn external_code(f: &Folder) -> Check {
    let Some(code) = &f.code else {
        return check(
            "external_code",
            Status::Unknown,
            "no train_gpt.py in the folder",
            vec![],
        );
    };
    let deps = &f.code_dependencies;
    if deps.is_empty() {
        return check(
            "external_code",
            Status::Pass,
            format!(
                "{} imports, compiles and runs no other file of the folder",
                code.file
            ),
            vec![],
        );
    }
    let extra: u64 = deps.iter().map(|d| d.bytes).sum();
    let evidence: Vec<String> = deps
        .iter()
        .map(|d| {
            format!(
                "{} ({} bytes) {} by {}:{}: {}",
                d.file,
                d.bytes,
                d.how.as_str(),
                d.by,
                d.line,
                d.text
            )
        })
        .collect();
    let names = deps
        .iter()
        .map(|d| format!("{} ({})", d.file, d.how.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    // What the logs counted as the source: the uncompressed size where a script counts its own wrapper.
    let counted_source: Vec<u64> = f
        .logs
        .iter()
        .filter_map(|l| {
            if l.code_counted_compressed {
                l.code_bytes_uncompressed
            } else {
                l.code_bytes
            }
        })
        .collect();
    let script_bytes = code.decoded_bytes.unwrap_or(code.bytes);
    let covered = !counted_source.is_empty()
        && counted_source
            .iter()
            .all(|&b| b >= script_bytes + extra && b > script_bytes);
    if covered {
        return check(
            "external_code",
            Status::Pass,
            format!(
                "{} runs {names}: {extra} bytes that the logs' counted code ({} bytes) covers",
                code.file, counted_source[0]
            ),
            evidence,
        );
    }
    let largest_total = f.logs.iter().filter_map(|l| l.total_bytes).max();
    let margin = largest_total
        .map(|t| {
            let with = t + extra;
            format!(
                "; counted as they sit, the largest total would be {with} bytes ({})",
                if with <= BUDGET_BYTES {
                    format!("{} under the cap", BUDGET_BYTES - with)
                } else {
                    format!("{} over the cap", with - BUDGET_BYTES)
                }
            )
        })
        .unwrap_or_default();
    check(
        "external_code",
        Status::Fail,
        format!(
            "the score depends on {extra} bytes of code outside the counted {}: {names}{margin}",
            code.file
        ),
        evidence,
    )
}
