//! The tokenizers a validation stream can come from: a SentencePiece model, the byte260 byte tokenizer, or seed
//! 002's BESE tokenizer.

use std::path::Path;

use super::bese::BeseModel;
use super::bytes::{BYTE260_OFFSET, BYTE260_VOCAB, ByteTable};
use super::sentencepiece::{PieceType, SpModel};
use super::{DataError, Result};

/// The prefix that selects a BESE tokenizer.json on the command line.
pub const BESE_PREFIX: &str = "bese:";

/// The name that selects the byte tokenizer on the command line.
pub const BYTE260_NAME: &str = "byte260";

#[derive(Clone, Debug)]
pub enum Tokenizer {
    SentencePiece(SpModel),
    /// pad 0, BOS 1, EOS 2, UNK 3, byte b → b + 4; encoding is raw UTF-8 (no normalization).
    Byte260,
    /// Seed 002's BESE tokenizer (`bese:PATH/tokenizer.json`).
    Bese(BeseModel),
}

impl Tokenizer {
    /// `byte260` selects the byte tokenizer; anything else is a SentencePiece `.model` path.
    pub fn load(spec: &str) -> Result<Self> {
        if spec == BYTE260_NAME {
            return Ok(Tokenizer::Byte260);
        }
        if let Some(path) = spec.strip_prefix(BESE_PREFIX) {
            return Ok(Tokenizer::Bese(BeseModel::load(Path::new(path))?));
        }
        Ok(Tokenizer::SentencePiece(SpModel::load(Path::new(spec))?))
    }

    pub fn name(&self) -> String {
        match self {
            Tokenizer::SentencePiece(m) => m.path.display().to_string(),
            Tokenizer::Byte260 => BYTE260_NAME.into(),
            Tokenizer::Bese(m) => format!("{BESE_PREFIX}{}", m.path.display()),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::SentencePiece(m) => m.vocab_size(),
            Tokenizer::Byte260 => BYTE260_VOCAB,
            Tokenizer::Bese(m) => m.vocab_size(),
        }
    }

    /// The byte table for a model whose embedding has `model_vocab` rows.
    pub fn byte_table(&self, model_vocab: usize) -> ByteTable {
        match self {
            Tokenizer::SentencePiece(m) => ByteTable::from_sentencepiece(m, model_vocab),
            Tokenizer::Byte260 => ByteTable::byte260(model_vocab),
            Tokenizer::Bese(m) => ByteTable::from_counts(&m.bytes, 4, model_vocab),
        }
    }

    pub fn is_unknown(&self, id: u16) -> bool {
        match self {
            Tokenizer::SentencePiece(m) => m.kind(id as usize) == Some(PieceType::Unknown),
            Tokenizer::Byte260 | Tokenizer::Bese(_) => id == 3,
        }
    }

    /// The text bytes of a run of ids (a document without its BOS), as the tokenizer's own decoder gives them.
    pub fn decode(&self, ids: &[u16]) -> Vec<u8> {
        match self {
            Tokenizer::SentencePiece(m) => m.decode(ids),
            Tokenizer::Byte260 => ids
                .iter()
                .filter(|&&i| i as usize >= BYTE260_OFFSET)
                .map(|&i| (i as usize - BYTE260_OFFSET) as u8)
                .collect(),
            Tokenizer::Bese(m) => m.decode(ids).into_bytes(),
        }
    }

    /// Checks that every id of a stream exists in a vocabulary of `vocab` ids; `path` names the stream.
    pub fn check_ids(tokens: &[u16], vocab: usize, path: &Path) -> Result<()> {
        match tokens.iter().position(|&t| t as usize >= vocab) {
            Some(position) => Err(DataError::TokenOutOfRange {
                path: path.into(),
                token: tokens[position] as u32,
                position,
                vocab,
            }),
            None => Ok(()),
        }
    }
}
