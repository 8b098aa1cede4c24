//! The data layer: challenge shards, tokenizers, the byte tables behind bits-per-byte, BPB accounting, and the
//! `data stats` command (`command`).
//!
//! This module imports nothing else from pgolf. Every error names the file it concerns.

pub mod audit;
pub mod bese;
pub mod bpb;
pub mod bytes;
pub mod command;
pub mod sentencepiece;
pub mod shard;
pub mod tokenizer;

use std::path::PathBuf;

/// Everything that can go wrong while reading data, tokenizers or byte tables.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error("{path}: file is {len} bytes, shorter than the 1024-byte shard header")]
    ShortHeader { path: PathBuf, len: u64 },
    #[error("{path}: wrong shard magic {found} (expected 20240520): not a challenge shard")]
    BadMagic { path: PathBuf, found: i32 },
    #[error("{path}: unsupported shard version {found} (expected 1)")]
    BadVersion { path: PathBuf, found: i32 },
    #[error("{path}: header declares a negative token count {found}")]
    NegativeCount { path: PathBuf, found: i32 },
    #[error(
        "{path}: header declares {declared} tokens, so the file should be {expected} bytes, but it is {actual} bytes ({})",
        if actual < expected { "truncated" } else { "trailing bytes" }
    )]
    SizeMismatch {
        path: PathBuf,
        declared: u64,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{path}: {count} tokens exceed the limit of {limit} tokens per shard (raise it with --max-shard-tokens)"
    )]
    TooManyTokens {
        path: PathBuf,
        count: u64,
        limit: u64,
    },
    #[error("no files match {pattern:?}")]
    NoFiles { pattern: String },
    #[error("bad glob pattern {pattern:?}: {message}")]
    BadPattern { pattern: String, message: String },
    #[error("{what}: {tokens} tokens are too few for sequence length {seq_len} (need at least {} tokens)", seq_len + 1)]
    TooShort {
        what: String,
        tokens: usize,
        seq_len: usize,
    },
    #[error("sequence length must be positive")]
    ZeroSeqLen,
    #[error("{path}: bad tokenizer: {message}")]
    BadTokenizer { path: PathBuf, message: String },
    #[error("{path}: not a SentencePiece model: {message}")]
    SentencePiece { path: PathBuf, message: String },
    #[error(
        "{path}: token id {token} at position {position} is outside the vocabulary of {vocab} ids"
    )]
    TokenOutOfRange {
        path: PathBuf,
        token: u32,
        position: usize,
        vocab: usize,
    },
    #[error("{path}: byte sidecar has {sidecar} entries but the token stream has {tokens}")]
    SidecarLength {
        path: PathBuf,
        sidecar: usize,
        tokens: usize,
    },
    #[error("{path}: bad byte table: {message}")]
    ByteTable { path: PathBuf, message: String },
    /// A problem stated in full (with the context of the command that met it).
    #[error("{0}")]
    Setup(String),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}
