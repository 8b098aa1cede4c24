//! The canonical validation counts reviewers compare logs against (`../shared/spec/evaluation-and-legality.md` §1.3,
//! from the records' own logs and the data repositories): scored targets per tokenizer variant and the byte count of
//! the first 50,000 FineWeb validation documents.

/// Targets the challenge's loader scores for a variant (more than one where the truncation to `seq_len` differs).
pub fn canonical_targets(variant: &str, caseops: bool) -> Option<&'static [u64]> {
    Some(match (variant, caseops) {
        ("sp1024", _) => &[62_021_632],
        ("sp4096", _) => &[45_514_752, 45_508_608],
        ("sp8192", true) => &[47_851_520],
        ("sp8192", false) => &[40_540_160, 40_538_112],
        ("byte260", _) => &[151_130_112],
        _ => return None,
    })
}

/// Tokens in the whole validation stream (50,000 documents, every BOS included) where the data repository's export
/// is known to the token: the CaseOps sidecar set (#1881's correction to 50,000 documents). The loader scores
/// `((N − 1) // seq_len) · seq_len` targets of it, or all `N − 1` with `EVAL_INCLUDE_TAIL` (#2014).
pub fn raw_validation_tokens(variant: &str, caseops: bool) -> Option<u64> {
    match (variant, caseops) {
        ("sp8192", true) => Some(47_853_344),
        _ => None,
    }
}

/// How a validation token count is canonical.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CanonicalCount {
    /// The loader's truncation to a multiple of the evaluation length.
    Truncated { seq_len: u64 },
    /// Every target of the stream (`EVAL_INCLUDE_TAIL`): more targets scored, none dropped.
    IncludeTail,
    /// One of the counts the records' own logs show for the variant (its raw total is not known to the token).
    Logged,
}

/// The canonical target counts for a variant evaluated at `seq_len` (when the log states it), with or without its
/// tail: the loader's own arithmetic where the stream's length is known, else the counts the records logged.
pub fn expected_targets(
    variant: &str,
    caseops: bool,
    seq_len: Option<u64>,
    include_tail: bool,
) -> Option<Vec<(u64, CanonicalCount)>> {
    if let Some(raw) = raw_validation_tokens(variant, caseops) {
        let targets = raw - 1;
        if include_tail {
            return Some(vec![(targets, CanonicalCount::IncludeTail)]);
        }
        if let Some(l) = seq_len.filter(|&l| l > 0) {
            return Some(vec![(
                targets / l * l,
                CanonicalCount::Truncated { seq_len: l },
            )]);
        }
    }
    canonical_targets(variant, caseops)
        .map(|v| v.iter().map(|&t| (t, CanonicalCount::Logged)).collect())
}

/// The byte denominators the records' logs imply for the canonical validation set: sp1024 151,080,169 (early
/// sliding evaluation), sp8192 151,078,221, the CaseOps byte sidecar 151,074,309 (PR #2138 errata). They differ by
/// the tokenizers' unscored tails and `<unk>` bytes; the check accepts anything inside this band (widened by the
/// rounding of the logged numbers).
pub const CANONICAL_VAL_BYTES_LOW: f64 = 151_070_000.0;
pub const CANONICAL_VAL_BYTES_HIGH: f64 = 151_085_000.0;
/// The denominator of the CaseOps stream with its tail (`EVAL_INCLUDE_TAIL`, #2014's logs: 151,080,644–151,080,646;
/// the truncated canonical set is 151,074,498): the band an include-tail run's implied denominator must fall in,
/// before the logged numbers' rounding.
pub const INCLUDE_TAIL_VAL_BYTES_LOW: f64 = 151_080_644.0;
pub const INCLUDE_TAIL_VAL_BYTES_HIGH: f64 = 151_080_646.0;
/// A reference point inside the band, for the relative difference a report prints.
pub const CANONICAL_VAL_BYTES: f64 = 151_078_221.0;

/// The challenge's limits on training and evaluation time (seconds, 8×H100).
pub const TRAIN_SECONDS_CAP: f64 = 600.0;
pub const EVAL_SECONDS_CAP: f64 = 600.0;
/// The training loop checks its wallclock cap after a step, so every record stops a few tens of milliseconds past
/// 600 s (the baseline at 600.038 s); reviewers asked for reruns at 602 s (PR #1945). One second of grace.
pub const TRAIN_SECONDS_GRACE: f64 = 1.0;
/// The README's significance rule: at least 0.005 nats better at p < 0.01; the leaderboard's practice since PR #1902
/// is a one-sided Welch test of val_bpb at p < 0.25.
pub const RULE_MARGIN_NATS: f64 = 0.005;
pub const RULE_P: f64 = 0.01;
pub const PRACTICE_P: f64 = 0.25;
/// Runs a record needs.
pub const MIN_SEEDS: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caseops_counts_follow_the_loaders_truncation() {
        let at = |l| expected_targets("sp8192", true, Some(l), false).unwrap()[0].0;
        // The records' logs: 2048 and 2560 → 47,851,520 (#2135), 2816 → 47,852,288 (#1945 V22).
        assert_eq!(at(2048), 47_851_520);
        assert_eq!(at(2560), 47_851_520);
        assert_eq!(at(2816), 47_852_288);
        assert_eq!(
            expected_targets("sp8192", true, Some(3072), true),
            Some(vec![(47_853_343, CanonicalCount::IncludeTail)])
        );
        assert_eq!(
            expected_targets("sp8192", false, Some(2048), false),
            Some(vec![
                (40_540_160, CanonicalCount::Logged),
                (40_538_112, CanonicalCount::Logged)
            ])
        );
        assert_eq!(expected_targets("sp4242", false, Some(2048), false), None);
    }
}
