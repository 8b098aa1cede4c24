//! One decode budget per input: every byte an artifact turns into while it is read — each outer layer's output,
//! each zip entry, each decoded rANS stream or container body, each tensor materialized (strided views included)
//! and the values it is widened to — is charged to one budget of `--max-decompressed-bytes`, so that a small file
//! cannot cost gigabytes however its layers are nested. The budget is also at most `--max-expansion` bytes per byte
//! of the file (above a 64 MiB floor), so that a few hundred bytes cannot stand for a gigabyte either: a real artifact
//! decodes to a few dozen times its size. The number of tensors is capped too.

use std::path::{Path, PathBuf};

use super::{PackError, Result};
use crate::limits::{Limits, MIN_DECODE_BUDGET};

/// The most tensors one artifact may hold (the records hold a few hundred).
pub const MAX_TENSORS: usize = 100_000;

/// What one input has spent of its budget.
#[derive(Debug)]
pub struct DecodeBudget {
    path: PathBuf,
    limit: u64,
    used: u64,
    tensors: usize,
    /// When the limit comes from the expansion cap: (ratio, file bytes).
    expansion: Option<(u64, u64)>,
}

impl DecodeBudget {
    /// A budget of `limit` bytes for the input `path` (named in its errors).
    pub fn new(path: &Path, limit: u64) -> Self {
        DecodeBudget {
            path: path.into(),
            limit,
            used: 0,
            tensors: 0,
            expansion: None,
        }
    }

    /// The budget of a file of `file_bytes` bytes: `--max-decompressed-bytes`, or `--max-expansion` times the file's
    /// size (at least [`MIN_DECODE_BUDGET`]) when that is smaller.
    pub fn for_file(path: &Path, file_bytes: u64, limits: &Limits) -> Self {
        let by_ratio = limits
            .max_expansion
            .saturating_mul(file_bytes)
            .max(MIN_DECODE_BUDGET);
        let mut budget = DecodeBudget::new(path, limits.max_decompressed_bytes.min(by_ratio));
        if by_ratio < limits.max_decompressed_bytes {
            budget.expansion = Some((limits.max_expansion, file_bytes));
        }
        budget
    }

    /// Bytes still available: the cap for the next layer's output.
    pub fn remaining(&self) -> u64 {
        self.limit - self.used
    }

    /// Charges `bytes` produced by `layer`; past the budget the read stops with the limit error.
    pub fn charge(&mut self, layer: &'static str, bytes: u64) -> Result<()> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.limit {
            self.used = self.limit;
            return Err(self.exceeded(layer));
        }
        Ok(())
    }

    /// The limit error for `layer`, for a size known to be past the budget before anything is read.
    pub fn exceeded(&self, layer: &'static str) -> PackError {
        match self.expansion {
            Some((ratio, file_bytes)) => PackError::Expansion {
                path: self.path.clone(),
                layer,
                limit: self.limit,
                ratio,
                file_bytes,
            },
            None => PackError::TooLarge {
                path: self.path.clone(),
                layer,
                limit: self.limit,
            },
        }
    }

    /// A tensor of `numel` elements of `elem` bytes: its bytes and the 8-byte values it may be widened to (f32 for
    /// a model, i64 symbols for `inspect`'s statistics), and one more tensor.
    pub fn charge_tensor(&mut self, numel: u64, elem: usize) -> Result<()> {
        self.tensors += 1;
        if self.tensors > MAX_TENSORS {
            return Err(PackError::Format {
                path: self.path.clone(),
                message: format!("more than the {MAX_TENSORS} tensors an artifact may hold"),
            });
        }
        self.charge("tensor", numel.saturating_mul(elem as u64 + 8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_across_layers_and_stop_at_the_limit() {
        let mut b = DecodeBudget::new(Path::new("a.ptz"), 100);
        b.charge("zlib", 60).unwrap();
        assert_eq!(b.remaining(), 40);
        let e = b.charge("zip", 41).unwrap_err().to_string();
        assert!(
            e.contains("a.ptz") && e.contains("zip") && e.contains("100 bytes"),
            "{e}"
        );
        let mut b = DecodeBudget::new(Path::new("a.ptz"), 1000);
        b.charge_tensor(10, 1).unwrap();
        assert_eq!(b.remaining(), 910);
    }

    #[test]
    fn a_small_file_gets_the_floor_and_a_large_one_its_ratio() {
        let limits = Limits::default();
        let small = DecodeBudget::for_file(Path::new("s.pglf"), 236, &limits);
        assert_eq!(small.remaining(), MIN_DECODE_BUDGET);
        let e = small.exceeded("tensor").to_string();
        assert!(
            e.contains("128× the file's 236 bytes") && e.contains("--max-expansion"),
            "{e}"
        );
        let mid = DecodeBudget::for_file(Path::new("m.pglf"), 2_000_000, &limits);
        assert_eq!(mid.remaining(), 256_000_000);
        // A 16 MB artifact gets the whole --max-decompressed-bytes.
        let big = DecodeBudget::for_file(Path::new("b.pglf"), 16_000_000, &limits);
        assert_eq!(big.remaining(), limits.max_decompressed_bytes);
        assert!(
            big.exceeded("zlib")
                .to_string()
                .contains("--max-decompressed-bytes")
        );
    }
}
