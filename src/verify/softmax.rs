//! The per-row softmax arithmetic every scorer, blend and probe uses, each in the precision its reference computes
//! it in: cross-entropy of one row in f32 (`F.cross_entropy` on f32 logits), log-probabilities in f64 (what probes
//! and the ledger's rows keep) or in f32 (seed 003's mixer), and a log-sum-exp in f64.

/// `F.cross_entropy` of one row of logits, in f32: `log Σ exp(z − max) + max − z[target]`.
pub fn cross_entropy_row(logits: &[f32], target: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&z| (z - max).exp()).sum();
    sum.ln() + max - logits[target]
}

/// Log-probabilities (f64) of one row of logits: `z − max − log Σ exp(z − max)`.
pub fn log_softmax_row(logits: impl Iterator<Item = f32>) -> Vec<f64> {
    let z: Vec<f64> = logits.map(|v| v as f64).collect();
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = z.iter().map(|&v| (v - max).exp()).sum::<f64>().ln() + max;
    z.iter().map(|&v| v - lse).collect()
}

/// Log-probabilities (f32) of one row of logits: `z − (log Σ exp(z − max) + max)`, as seed 003 computes them.
pub fn log_softmax_f32(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = row.iter().map(|&z| (z - max).exp()).sum::<f32>().ln() + max;
    row.iter().map(|&z| z - lse).collect()
}

/// `log Σ exp(row)` in f64 (−∞ or NaN rows returned as their max).
pub fn logsumexp(row: &[f64]) -> f64 {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    row.iter().map(|&v| (v - max).exp()).sum::<f64>().ln() + max
}
