//! The byte-table audit: the accounting faults reviewers have caught (spec evaluation-and-legality §2.2), and a
//! per-document check that the table's bytes equal the decoded text's UTF-8 length.

use serde::Serialize;

use super::bytes::ByteTable;
use super::sentencepiece::{PieceType, SPACE_MARK};
use super::shard::document_ranges;
use super::tokenizer::Tokenizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The BPB computed with this table is wrong.
    Error,
    /// The BPB is the official one, but something is hidden from it.
    Warning,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Stable identifier: `no_space_piece`, `byte_fallback_cost`, `double_counted_space`, `table_mismatch`,
    /// `table_too_small`, `unknown_targets`, `document_bytes`.
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
}

/// One id where the audited table differs from the canonical one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdMismatch {
    pub id: usize,
    pub piece: String,
    pub expected_bytes: u16,
    pub table_bytes: u16,
    pub expected_leading_space: bool,
    pub table_leading_space: bool,
    pub expected_boundary: bool,
    pub table_boundary: bool,
}

/// One document whose table bytes differ from the decoded text's length.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DocumentMismatch {
    pub document: usize,
    pub table_bytes: u64,
    pub decoded_bytes: u64,
    pub unknown_tokens: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Audit {
    /// Id of the standalone '▁' piece (SentencePiece only).
    pub space_piece_id: Option<usize>,
    pub byte_fallback_pieces: usize,
    pub unknown_targets: u64,
    pub documents_checked: usize,
    pub documents_mismatched: usize,
    /// Mismatched documents that hold no `<unk>` token (those cannot be explained by the unknown surface).
    pub documents_mismatched_without_unknown: usize,
    /// Σ table bytes over every document's tokens (its BOS excluded).
    pub document_table_bytes: u64,
    /// Σ UTF-8 lengths of the decoded documents.
    pub document_decoded_bytes: u64,
    /// Up to [`MAX_EXAMPLES`] ids where the table differs from the canonical one.
    pub id_mismatches: Vec<IdMismatch>,
    /// Up to [`MAX_EXAMPLES`] documents whose bytes disagree.
    pub document_mismatches: Vec<DocumentMismatch>,
    pub findings: Vec<Finding>,
}

pub const MAX_EXAMPLES: usize = 20;

impl Audit {
    /// True when no finding makes the BPB wrong.
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.severity != Severity::Error)
    }

    fn push(&mut self, code: &'static str, severity: Severity, message: String) {
        self.findings.push(Finding {
            code,
            severity,
            message,
        });
    }
}

/// The document-start token of every challenge tokenizer.
const BOS: u16 = 1;

/// Audits `table` (the canonical one, or a submission's own) for `tokenizer` over the token stream `tokens`.
pub fn audit(tokenizer: &Tokenizer, table: &ByteTable, tokens: &[u16]) -> Audit {
    audit_against(tokenizer, &tokenizer.byte_table(table.len()), table, tokens)
}

/// [`audit`] with the tokenizer's canonical table (at the size of `table`) already built.
pub fn audit_against(
    tokenizer: &Tokenizer,
    canonical: &ByteTable,
    table: &ByteTable,
    tokens: &[u16],
) -> Audit {
    let mut audit = Audit::default();
    audit_table(tokenizer, canonical, table, &mut audit);
    audit_documents(tokenizer, table, tokens, &mut audit);
    if !tokens.is_empty() && tokens[0] != BOS {
        let bos = tokens.iter().filter(|&&t| t == BOS).count();
        audit.push(
            "documents_not_delimited",
            Severity::Warning,
            format!(
                "the stream does not open with BOS (id {BOS}) and holds {bos} BOS tokens: documents are not \
                 delimited as in the challenge's export, so this is not the canonical validation set"
            ),
        );
    }
    audit
}

/// Sentences the invertibility check encodes and decodes: upper case, curly quotes and non-ASCII letters, all
/// common in FineWeb.
pub const INVERTIBILITY_PROBES: [&str; 3] = [
    "The Quick Brown Fox, said Dr. Smith.",
    "\u{201c}Quoted,\u{201d} she wrote \u{2014} it\u{2019}s 100% true!",
    "Caf\u{e9} na\u{ef}ve r\u{e9}sum\u{e9} \u{2192} \u{65e5}\u{672c}",
];

/// BESE discards case and merges punctuation: decoding does not give the text back. Measured on
/// [`INVERTIBILITY_PROBES`]; the BPB still counts the true UTF-8 bytes, but it scores a lossy projection of the
/// text, not the text, so it is not comparable with an invertible tokenizer's.
fn audit_invertibility(model: &super::bese::BeseModel, audit: &mut Audit) {
    let lossy: Vec<String> = INVERTIBILITY_PROBES
        .iter()
        .filter_map(|&text| {
            let back = model.decode(&model.encode(text));
            (back != text).then(|| format!("{text:?} decodes as {back:?}"))
        })
        .collect();
    if let Some(example) = lossy.first() {
        audit.push(
            "not_invertible",
            Severity::Warning,
            format!(
                "the tokenizer is not invertible ({} of {} probe sentences do not survive encode/decode, e.g. \
                 {example}): case is discarded and other punctuation merged, so the score is of a lossy \
                 projection of the text and not comparable with the challenge's tokenizers",
                lossy.len(),
                INVERTIBILITY_PROBES.len()
            ),
        );
    }
}

fn audit_table(tokenizer: &Tokenizer, canonical: &ByteTable, table: &ByteTable, audit: &mut Audit) {
    if table.len() < tokenizer.vocab_size() {
        audit.push(
            "table_too_small",
            Severity::Error,
            format!(
                "the table has {} ids but the tokenizer has {}",
                table.len(),
                tokenizer.vocab_size()
            ),
        );
    }
    let piece_of = |id: usize| match tokenizer {
        Tokenizer::SentencePiece(m) => m
            .pieces
            .get(id)
            .map(|p| p.piece.clone())
            .unwrap_or_default(),
        Tokenizer::Byte260 => format!("byte {id}"),
        Tokenizer::Bese(m) => format!("{:?}", m.decode(&[id as u16])),
    };
    if let Tokenizer::Bese(model) = tokenizer {
        audit_invertibility(model, audit);
    }
    if let Tokenizer::SentencePiece(model) = tokenizer {
        audit.space_piece_id = model.piece_to_id(&SPACE_MARK.to_string());
        if audit.space_piece_id.is_none() {
            audit.push(
                "no_space_piece",
                Severity::Error,
                "the model has no standalone '▁' piece: a lone space is encoded as byte-fallback pieces or <unk>, \
                 so its bytes are miscounted (issue #897)"
                    .into(),
            );
        }
        audit.byte_fallback_pieces = model.count_of(PieceType::Byte);
        let wrong_fallback: Vec<(usize, u16)> = model
            .pieces
            .iter()
            .enumerate()
            .filter(|(id, p)| p.kind == PieceType::Byte && table.base_bytes.get(*id) != Some(&1))
            .map(|(id, _)| (id, table.base_bytes.get(id).copied().unwrap_or(0)))
            .collect();
        if let Some(&(id, cost)) = wrong_fallback.first() {
            audit.push(
                "byte_fallback_cost",
                Severity::Error,
                format!(
                    "{} byte-fallback pieces do not cost exactly 1 byte (e.g. id {id} {} costs {cost}; a U+FFFD \
                     decode gives 3, PR #1289)",
                    wrong_fallback.len(),
                    piece_of(id)
                ),
            );
        }
        let double_space: Vec<usize> = model
            .pieces
            .iter()
            .enumerate()
            .filter(|(id, p)| {
                p.kind != PieceType::Byte
                    && canonical.has_leading_space[*id]
                    && table.has_leading_space.get(*id) == Some(&true)
                    && table
                        .base_bytes
                        .get(*id)
                        .is_some_and(|&b| b > canonical.base_bytes[*id])
            })
            .map(|(id, _)| id)
            .collect();
        if let Some(&id) = double_space.first() {
            audit.push(
                "double_counted_space",
                Severity::Error,
                format!(
                    "{} '▁' pieces carry their space in base_bytes and in the leading-space flag, so it is counted \
                     twice (e.g. id {id} {:?}: {} bytes, should be {} + 1; PR #1632)",
                    double_space.len(),
                    piece_of(id),
                    table.base_bytes[id],
                    canonical.base_bytes[id]
                ),
            );
        }
    }
    let n = table.len().min(canonical.len());
    let mut mismatches = 0usize;
    for id in 0..n {
        let differs = table.base_bytes[id] != canonical.base_bytes[id]
            || table.has_leading_space[id] != canonical.has_leading_space[id]
            || table.is_boundary[id] != canonical.is_boundary[id];
        if differs {
            mismatches += 1;
            if audit.id_mismatches.len() < MAX_EXAMPLES {
                audit.id_mismatches.push(IdMismatch {
                    id,
                    piece: piece_of(id),
                    expected_bytes: canonical.base_bytes[id],
                    table_bytes: table.base_bytes[id],
                    expected_leading_space: canonical.has_leading_space[id],
                    table_leading_space: table.has_leading_space[id],
                    expected_boundary: canonical.is_boundary[id],
                    table_boundary: table.is_boundary[id],
                });
            }
        }
    }
    if mismatches > 0 {
        audit.push(
            "table_mismatch",
            Severity::Error,
            format!("the table differs from the one the challenge builds from this tokenizer at {mismatches} ids"),
        );
    }
}

fn audit_documents(tokenizer: &Tokenizer, table: &ByteTable, tokens: &[u16], audit: &mut Audit) {
    for (doc, range) in document_ranges(tokens).into_iter().enumerate() {
        let ids = &tokens[range.start + 1..range.end];
        let table_bytes: u64 = (range.start..range.end - 1)
            .map(|j| table.target_bytes(tokens[j], tokens[j + 1]) as u64)
            .sum();
        let decoded_bytes = tokenizer.decode(ids).len() as u64;
        let unknown_tokens = ids.iter().filter(|&&t| tokenizer.is_unknown(t)).count() as u64;
        audit.unknown_targets += unknown_tokens;
        audit.documents_checked += 1;
        audit.document_table_bytes += table_bytes;
        audit.document_decoded_bytes += decoded_bytes;
        if table_bytes != decoded_bytes {
            audit.documents_mismatched += 1;
            audit.documents_mismatched_without_unknown += (unknown_tokens == 0) as usize;
            if audit.document_mismatches.len() < MAX_EXAMPLES {
                audit.document_mismatches.push(DocumentMismatch {
                    document: doc,
                    table_bytes,
                    decoded_bytes,
                    unknown_tokens,
                });
            }
        }
    }
    if audit.unknown_targets > 0 {
        audit.push(
            "unknown_targets",
            Severity::Warning,
            format!(
                "{} targets are <unk>: boundaries with 0 bytes, so the original bytes they stand for are not in the \
                 denominator",
                audit.unknown_targets
            ),
        );
    }
    if audit.documents_mismatched > 0 {
        let explained_by_unk = audit.documents_mismatched_without_unknown == 0;
        audit.push(
            "document_bytes",
            if explained_by_unk { Severity::Warning } else { Severity::Error },
            format!(
                "{} of {} documents: table bytes differ from the decoded text's UTF-8 length ({} vs {} in all){}",
                audit.documents_mismatched,
                audit.documents_checked,
                audit.document_table_bytes,
                audit.document_decoded_bytes,
                if explained_by_unk { "; each of them holds <unk> tokens, which decode to a surface" } else { "" }
            ),
        );
    }
}
