//! The byte tables behind bits-per-byte, built exactly as the challenge's `build_sentencepiece_luts`, the byte260
//! table, and the CaseOps per-target byte sidecar.

use std::path::Path;

use super::sentencepiece::{PieceType, SPACE_MARK, SpModel};
use super::{DataError, Result, io_err, shard};
use crate::limits::Limits;

/// Per-id byte accounting: `bytes(prev, target) = base_bytes[target] + (has_leading_space[target] AND NOT
/// is_boundary[prev])`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ByteTable {
    pub base_bytes: Vec<u16>,
    pub has_leading_space: Vec<bool>,
    pub is_boundary: Vec<bool>,
}

impl ByteTable {
    /// `build_sentencepiece_luts`: `table_size = max(sp_vocab, model_vocab)`; every id starts as a 0-byte boundary;
    /// control, unknown and unused pieces stay so; byte-fallback pieces cost exactly 1 byte; a leading '▁' is a flag,
    /// not a byte; everything else costs the UTF-8 length of the piece.
    pub fn from_sentencepiece(model: &SpModel, model_vocab: usize) -> Self {
        let table_size = model.vocab_size().max(model_vocab);
        let mut table = Self::all_boundary(table_size);
        for (id, p) in model.pieces.iter().enumerate() {
            if matches!(
                p.kind,
                PieceType::Control | PieceType::Unknown | PieceType::Unused
            ) {
                continue;
            }
            table.is_boundary[id] = false;
            if p.kind == PieceType::Byte {
                table.base_bytes[id] = 1;
                continue;
            }
            let mut piece = p.piece.as_str();
            if let Some(rest) = piece.strip_prefix(SPACE_MARK) {
                table.has_leading_space[id] = true;
                piece = rest;
            }
            table.base_bytes[id] = piece.len() as u16;
        }
        table
    }

    /// The byte260 table: ids 0..3 (pad, BOS, EOS, UNK) are 0-byte boundaries, id b+4 is byte b (1 byte), no
    /// leading-space term.
    pub fn byte260(model_vocab: usize) -> Self {
        let table_size = BYTE260_VOCAB.max(model_vocab);
        let mut table = Self::all_boundary(table_size);
        for id in BYTE260_OFFSET..BYTE260_VOCAB {
            table.is_boundary[id] = false;
            table.base_bytes[id] = 1;
        }
        table
    }

    /// A table of fixed byte counts per id with no leading-space flags, where the first `specials` ids are
    /// boundaries (seed 002's BESE: bytes(target) only).
    pub fn from_counts(bytes: &[u16], specials: usize, model_vocab: usize) -> Self {
        let mut table = Self::all_boundary(bytes.len().max(model_vocab));
        for (id, &b) in bytes.iter().enumerate() {
            table.base_bytes[id] = b;
            table.is_boundary[id] = id < specials;
        }
        table
    }

    fn all_boundary(size: usize) -> Self {
        ByteTable {
            base_bytes: vec![0; size],
            has_leading_space: vec![false; size],
            is_boundary: vec![true; size],
        }
    }

    pub fn len(&self) -> usize {
        self.base_bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.base_bytes.is_empty()
    }

    /// Bytes a target costs given the token before it. Ids beyond the table cost 0 and count as boundaries, as the
    /// challenge's padding rows do (callers check ids against the vocabulary first).
    #[inline]
    pub fn target_bytes(&self, prev: u16, target: u16) -> u32 {
        let (p, t) = (prev as usize, target as usize);
        let base = self.base_bytes.get(t).copied().unwrap_or(0) as u32;
        let space = self.has_leading_space.get(t).copied().unwrap_or(false)
            && !self.is_boundary.get(p).copied().unwrap_or(true);
        base + space as u32
    }

    /// Reads a table from JSON (`{"base_bytes": [...], "has_leading_space": [...], "is_boundary": [...]}`), the
    /// form in which a submission's own table can be audited.
    pub fn load_json(path: &Path) -> Result<Self> {
        let text = crate::limits::read_small_text(path).map_err(io_err(path))?;
        let table: ByteTable = serde_json::from_str(&text).map_err(|e| DataError::ByteTable {
            path: path.into(),
            message: e.to_string(),
        })?;
        if table.has_leading_space.len() != table.len() || table.is_boundary.len() != table.len() {
            return Err(DataError::ByteTable {
                path: path.into(),
                message: format!(
                    "arrays differ in length: base_bytes {}, has_leading_space {}, is_boundary {}",
                    table.len(),
                    table.has_leading_space.len(),
                    table.is_boundary.len()
                ),
            });
        }
        Ok(table)
    }
}

pub const BYTE260_VOCAB: usize = 260;
pub const BYTE260_OFFSET: usize = 4;

/// Where each target's bytes come from.
#[derive(Clone, Debug)]
pub enum ByteSource {
    /// The per-id table (SentencePiece or byte260).
    Table(ByteTable),
    /// CaseOps: one u16 per token of the stream, the original-byte count of that token; target `j` (token `j+1`)
    /// costs `sidecar[j+1]`.
    Sidecar(Vec<u16>),
}

impl ByteSource {
    /// Bytes of target `j` (the token at stream index `j + 1`, predicted from `tokens[j]`).
    #[inline]
    pub fn bytes_of_target(&self, tokens: &[u16], j: usize) -> u32 {
        match self {
            ByteSource::Table(t) => t.target_bytes(tokens[j], tokens[j + 1]),
            ByteSource::Sidecar(s) => s[j + 1] as u32,
        }
    }

    /// Σ bytes over targets `range` (indices into the target sequence).
    pub fn bytes_of_targets(&self, tokens: &[u16], range: std::ops::Range<usize>) -> u64 {
        range.map(|j| self.bytes_of_target(tokens, j) as u64).sum()
    }

    /// Loads a CaseOps sidecar (shards in the challenge format, concatenated in sorted order) and checks it covers
    /// the token stream.
    pub fn load_sidecar(pattern: &str, tokens_len: usize, limits: &Limits) -> Result<Self> {
        let files = shard::expand_glob(pattern)?;
        let mut sidecar = shard::read_shards(&files, limits)?;
        if sidecar.len() < tokens_len {
            return Err(DataError::SidecarLength {
                path: files[0].clone(),
                sidecar: sidecar.len(),
                tokens: tokens_len,
            });
        }
        sidecar.truncate(tokens_len);
        Ok(ByteSource::Sidecar(sidecar))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte260_table_costs_one_byte_per_byte_token() {
        let t = ByteTable::byte260(260);
        assert_eq!(t.target_bytes(1, 0), 0);
        assert_eq!(t.target_bytes(1, 3), 0);
        assert_eq!(t.target_bytes(1, 4), 1);
        assert_eq!(t.target_bytes(100, 259), 1);
        assert_eq!(ByteTable::byte260(300).len(), 300);
    }
}
