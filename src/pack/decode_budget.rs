//! One decode budget per input: every byte an artifact turns into while it is read — each outer layer's output,
//! each zip entry, each decoded rANS stream or container body, each tensor materialized (strided views included)
//! and the values it is widened to — is charged to one budget of `--max-decompressed-bytes`, so that a small file
//! cannot cost gigabytes however its layers are nested. The number of tensors is capped too.

use std::path::{Path, PathBuf};

use super::{PackError, Result};

/// The most tensors one artifact may hold (the records hold a few hundred).
pub const MAX_TENSORS: usize = 100_000;

/// What one input has spent of its budget.
#[derive(Debug)]
pub struct DecodeBudget {
    path: PathBuf,
    limit: u64,
    used: u64,
    tensors: usize,
}

impl DecodeBudget {
    /// A budget of `limit` bytes for the input `path` (named in its errors).
    pub fn new(path: &Path, limit: u64) -> Self {
        DecodeBudget {
            path: path.into(),
            limit,
            used: 0,
            tensors: 0,
        }
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
            return Err(PackError::TooLarge {
                path: self.path.clone(),
                layer,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// The limit error for `layer`, for a size known to be past the budget before anything is read.
    pub fn exceeded(&self, layer: &'static str) -> PackError {
        PackError::TooLarge {
            path: self.path.clone(),
            layer,
            limit: self.limit,
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
}
