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

/// The byte denominators the records' logs imply for the canonical validation set: sp1024 151,080,169 (early
/// sliding evaluation), sp8192 151,078,221, the CaseOps byte sidecar 151,074,309 (PR #2138 errata). They differ by
/// the tokenizers' unscored tails and `<unk>` bytes; the check accepts anything inside this band (widened by the
/// rounding of the logged numbers).
pub const CANONICAL_VAL_BYTES_LOW: f64 = 151_070_000.0;
pub const CANONICAL_VAL_BYTES_HIGH: f64 = 151_085_000.0;
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
