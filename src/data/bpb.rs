//! Bits-per-byte accounting: `val_loss = Σnll / targets`, `val_bpb = Σnll / (ln 2 · Σbytes)`, all sums in f64.

/// Sums of one evaluation (or one worker's share of it); merge workers with [`BpbAccumulator::merge`], as the
/// challenge's `all_reduce(SUM)` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct BpbAccumulator {
    /// Σ NLL in nats.
    pub nll_sum: f64,
    /// Number of scored targets.
    pub targets: u64,
    /// Σ bytes of the scored targets.
    pub bytes: u64,
}

impl BpbAccumulator {
    #[inline]
    pub fn add(&mut self, nll: f64, bytes: u32) {
        self.nll_sum += nll;
        self.targets += 1;
        self.bytes += bytes as u64;
    }

    pub fn merge(&mut self, other: &BpbAccumulator) {
        self.nll_sum += other.nll_sum;
        self.targets += other.targets;
        self.bytes += other.bytes;
    }

    /// Mean NLL per target, in nats.
    pub fn val_loss(&self) -> f64 {
        self.nll_sum / self.targets as f64
    }

    /// `(val_loss / ln 2) · (targets / bytes)`, in the challenge's order of operations.
    pub fn val_bpb(&self) -> f64 {
        let bits_per_token = self.val_loss() / std::f64::consts::LN_2;
        let tokens_per_byte = self.targets as f64 / self.bytes as f64;
        bits_per_token * tokens_per_byte
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_equals_single_pass() {
        let items = [(2.5, 3u32), (0.25, 0), (1.0, 4), (3.75, 1)];
        let mut whole = BpbAccumulator::default();
        items.iter().for_each(|&(n, b)| whole.add(n, b));
        let (mut a, mut b) = (BpbAccumulator::default(), BpbAccumulator::default());
        items[..1].iter().for_each(|&(n, by)| a.add(n, by));
        items[1..].iter().for_each(|&(n, by)| b.add(n, by));
        a.merge(&b);
        assert_eq!(a, whole);
        assert_eq!(whole.val_loss(), 7.5 / 4.0);
        assert!((whole.val_bpb() - 7.5 / (std::f64::consts::LN_2 * 8.0)).abs() < 1e-15);
    }
}
