//! `pgolf data stats` in two stages: the flags ([`StatsFlags`]) resolved into what runs ([`StatsSpec`]), then
//! [`stats`]: tokens, documents, scored targets and their bytes as the challenge counts them, and the byte-table
//! audit ([`StatsReport`]).

use std::path::PathBuf;

use serde::Serialize;

use super::audit::{self, Audit};
use super::bytes::{ByteSource, ByteTable};
use super::sentencepiece::PieceType;
use super::shard;
use super::tokenizer::Tokenizer;
use super::{DataError, Result};
use crate::limits::Limits;

/// Every `pgolf data stats` flag, as given.
#[derive(Clone, Debug, Default)]
pub struct StatsFlags {
    pub val: String,
    pub tokenizer: String,
    pub seq_len: Option<usize>,
    pub vocab_size: Option<usize>,
    pub byte_table: Option<PathBuf>,
    pub byte_sidecar: Option<String>,
}

/// What one `data stats` counts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatsSpec {
    /// Validation shards (glob).
    pub val: String,
    pub tokenizer: String,
    /// The challenge's truncation to whole sequences of this length (None: every target counts).
    pub seq_len: Option<usize>,
    /// Rows of the model's embedding (None: the tokenizer's vocabulary).
    pub vocab_size: Option<usize>,
    /// A submission's own byte table to audit instead of the canonical one.
    pub byte_table: Option<PathBuf>,
    /// CaseOps per-token byte sidecar shards (glob).
    pub byte_sidecar: Option<String>,
}

impl StatsFlags {
    pub fn resolve(&self) -> Result<StatsSpec> {
        Ok(StatsSpec {
            val: self.val.clone(),
            tokenizer: self.tokenizer.clone(),
            seq_len: self.seq_len,
            vocab_size: self.vocab_size,
            byte_table: self.byte_table.clone(),
            byte_sidecar: self.byte_sidecar.clone(),
        })
    }
}

/// The stream's counts and the audit. Fields in the order the JSON has always listed them (alphabetical).
#[derive(Clone, Debug, Serialize)]
pub struct StatsReport {
    pub audit: Audit,
    /// Target bytes by the audited table (with `--byte-table`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audited_table_target_bytes: Option<u64>,
    pub bytes_per_token: f64,
    /// BOS count.
    pub documents: usize,
    pub files: Vec<String>,
    pub seq_len: Option<usize>,
    /// Target bytes by the byte sidecar (with `--byte-sidecar`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar_target_bytes: Option<u64>,
    /// Entries of the canonical table (max of the tokenizer's vocabulary and the model's).
    pub table_size: usize,
    /// Target bytes by the canonical table.
    pub target_bytes: u64,
    pub targets: usize,
    pub tokenizer: String,
    /// What the tokenizer is, in words.
    #[serde(skip)]
    pub tokenizer_description: String,
    pub tokenizer_vocab: usize,
    pub tokens: usize,
    pub unscored_tail_targets: usize,
    /// The glob the shards came from.
    #[serde(skip)]
    pub val: String,
}

/// Counts a validation stream and audits its byte table.
pub fn stats(spec: &StatsSpec, limits: &Limits) -> Result<StatsReport> {
    let tokenizer = Tokenizer::load(&spec.tokenizer)?;
    let files = shard::validation_files(&spec.val)?;
    let model_vocab = spec.vocab_size.unwrap_or(tokenizer.vocab_size());
    // Each shard is checked on its own, so a bad id is reported against the file that holds it.
    let mut tokens = Vec::new();
    for f in &files {
        let shard_tokens = shard::read_shard(f, limits)?;
        Tokenizer::check_ids(&shard_tokens, model_vocab.max(tokenizer.vocab_size()), f)
            .map_err(|e| DataError::Setup(format!("validation stream {}: {e}", spec.val)))?;
        tokens.extend(shard_tokens);
    }
    let all_tokens = tokens.len();
    let documents = shard::count_documents(&tokens);
    // The canonical table is built once: bytes per target and the audit read it.
    let canonical = tokenizer.byte_table(model_vocab);
    let table = match &spec.byte_table {
        Some(p) => ByteTable::load_json(p)?,
        None => canonical.clone(),
    };
    // The audit sees every document whole, before truncation.
    let audit = if table.len() == canonical.len() {
        audit::audit_against(&tokenizer, &canonical, &table, &tokens)
    } else {
        audit::audit(&tokenizer, &table, &tokens)
    };
    if let Some(l) = spec.seq_len {
        tokens = shard::truncate_to_usable(tokens, l, &spec.val)?;
    }
    let targets = tokens.len().saturating_sub(1);
    let table_size = canonical.len();
    let target_bytes = ByteSource::Table(canonical).bytes_of_targets(&tokens, 0..targets);
    let table_bytes = ByteSource::Table(table).bytes_of_targets(&tokens, 0..targets);
    let sidecar_target_bytes = match &spec.byte_sidecar {
        Some(glob) => Some(
            ByteSource::load_sidecar(glob, tokens.len(), limits)?
                .bytes_of_targets(&tokens, 0..targets),
        ),
        None => None,
    };
    Ok(StatsReport {
        audit,
        audited_table_target_bytes: spec.byte_table.as_ref().map(|_| table_bytes),
        bytes_per_token: target_bytes as f64 / targets.max(1) as f64,
        documents,
        files: files.iter().map(|f| f.display().to_string()).collect(),
        seq_len: spec.seq_len,
        sidecar_target_bytes,
        table_size,
        target_bytes,
        targets,
        tokenizer: tokenizer.name(),
        tokenizer_description: describe_tokenizer(&tokenizer),
        tokenizer_vocab: tokenizer.vocab_size(),
        tokens: all_tokens,
        unscored_tail_targets: all_tokens.saturating_sub(1) - targets,
        val: spec.val.clone(),
    })
}

/// What a tokenizer is, in words.
pub fn describe_tokenizer(t: &Tokenizer) -> String {
    match t {
        Tokenizer::SentencePiece(m) => format!(
            "{} ({} pieces: {} normal, {} control, {} unknown, {} byte, {} user-defined; normalizer {})",
            m.path.display(),
            m.vocab_size(),
            m.count_of(PieceType::Normal),
            m.count_of(PieceType::Control),
            m.count_of(PieceType::Unknown),
            m.count_of(PieceType::Byte),
            m.count_of(PieceType::UserDefined),
            m.normalizer_name
        ),
        Tokenizer::Byte260 => "byte260 (pad 0, BOS 1, EOS 2, UNK 3, byte b -> b+4)".into(),
        Tokenizer::Bese(m) => format!(
            "{} (BESE: {} base ids + {} merges, PR #1666)",
            m.path.display(),
            super::bese::BESE_BASE_VOCAB,
            m.merges.len()
        ),
    }
}
