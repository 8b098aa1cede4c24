//! The byte accounting: the byte denominator each log implies, and the validation token count against the canonical
//! one for the tokenizer.

use super::numeric::*;
use super::scores::scored_logs;
use super::{Check, Status, check};
use crate::review::canonical::*;
use crate::review::folder::Folder;
use crate::review::log::LogSummary;

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
