//! The reference's `TokenStream`: training shards read in sorted order, one after another, wrapping around forever;
//! each batch takes the next contiguous span (no sampling, no workers).

use std::path::PathBuf;

use super::{Result, TrainError};
use crate::data::shard;

pub struct TokenStream {
    files: Vec<PathBuf>,
    file: usize,
    tokens: Vec<u16>,
    pos: usize,
}

impl TokenStream {
    pub fn open(pattern: &str) -> Result<Self> {
        let files: Vec<PathBuf> = shard::expand_glob(pattern)?
            .into_iter()
            .filter(|p| !shard::is_byte_sidecar(p))
            .collect();
        if files.is_empty() {
            return Err(TrainError::Setup(format!("{pattern}: no training shards")));
        }
        let tokens = shard::read_shard(&files[0], &crate::limits::current())?;
        Ok(TokenStream {
            files,
            file: 0,
            tokens,
            pos: 0,
        })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The next `n` tokens of the stream.
    pub fn take(&mut self, n: usize) -> Result<Vec<u16>> {
        let mut out = Vec::with_capacity(n);
        let mut empty_files = 0;
        while out.len() < n {
            let avail = self.tokens.len() - self.pos;
            if avail == 0 {
                empty_files += 1;
                if empty_files > self.files.len() {
                    return Err(TrainError::Setup("every training shard is empty".into()));
                }
                self.file = (self.file + 1) % self.files.len();
                self.tokens = shard::read_shard(&self.files[self.file], &crate::limits::current())?;
                self.pos = 0;
                continue;
            }
            let k = (n - out.len()).min(avail);
            out.extend_from_slice(&self.tokens[self.pos..self.pos + k]);
            self.pos += k;
        }
        Ok(out)
    }
}
