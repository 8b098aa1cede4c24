//! The significance of a claimed gain: a one-sided Welch t-test of the runs against the baseline's.

use super::Scores;
use super::{Check, Status, check};
use crate::review::canonical::*;
use crate::review::stats::{mean, welch_one_sided};

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
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut ev = vec![
        format!(
            "candidate {}: val_loss [{}] val_bpb [{}]",
            candidate.source,
            list(&candidate.val_loss),
            list(&candidate.val_bpb)
        ),
        format!(
            "baseline {}: val_loss [{}] val_bpb [{}]",
            b.source,
            list(&b.val_loss),
            list(&b.val_bpb)
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
