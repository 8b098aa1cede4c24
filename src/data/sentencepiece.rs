//! SentencePiece `.model` files: the `ModelProto` protobuf, decoded with prost.
//!
//! The message definitions mirror `sentencepiece_model.proto` (field numbers from that file); only the fields pgolf
//! reads are declared, the rest are skipped by the decoder as unknown fields.

use std::path::{Path, PathBuf};

use super::{DataError, Result, io_err};

/// `ModelProto.SentencePiece.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PieceType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PieceProto {
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    #[prost(enumeration = "PieceType", optional, tag = "3")]
    pub r#type: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrainerSpecProto {
    #[prost(int32, optional, tag = "3")]
    pub model_type: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub vocab_size: Option<i32>,
    #[prost(bool, optional, tag = "35")]
    pub byte_fallback: Option<bool>,
    #[prost(int32, optional, tag = "40")]
    pub unk_id: Option<i32>,
    #[prost(int32, optional, tag = "41")]
    pub bos_id: Option<i32>,
    #[prost(int32, optional, tag = "42")]
    pub eos_id: Option<i32>,
    #[prost(int32, optional, tag = "43")]
    pub pad_id: Option<i32>,
    #[prost(string, optional, tag = "44")]
    pub unk_surface: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NormalizerSpecProto {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(bool, optional, tag = "3")]
    pub add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    pub remove_extra_whitespaces: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<PieceProto>,
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpecProto>,
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpecProto>,
}

/// The whitespace marker U+2581 ('▁') that SentencePiece writes in place of a space.
pub const SPACE_MARK: char = '\u{2581}';
/// SentencePiece's default surface for `<unk>` when decoding: " ⁇ ".
pub const DEFAULT_UNK_SURFACE: &str = " \u{2047} ";

/// One vocabulary entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// A loaded SentencePiece model: its pieces in id order and the normalizer settings that decoding depends on.
#[derive(Clone, Debug)]
pub struct SpModel {
    pub path: PathBuf,
    pub pieces: Vec<Piece>,
    pub normalizer_name: String,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub byte_fallback: bool,
    pub unk_surface: String,
}

impl SpModel {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = crate::limits::read_capped(path, crate::limits::MAX_SMALL_FILE_BYTES, "")
            .map_err(io_err(path))?;
        Self::from_bytes(path, &bytes)
    }

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |message: String| DataError::SentencePiece {
            path: path.into(),
            message,
        };
        let proto =
            <ModelProto as prost::Message>::decode(bytes).map_err(|e| bad(e.to_string()))?;
        if proto.pieces.is_empty() {
            return Err(bad("the model has no pieces".into()));
        }
        if proto.pieces.len() > u16::MAX as usize + 1 {
            return Err(bad(format!(
                "{} pieces: shards hold u16 ids, at most 65,536",
                proto.pieces.len()
            )));
        }
        let mut pieces = Vec::with_capacity(proto.pieces.len());
        for (id, p) in proto.pieces.iter().enumerate() {
            let raw_type = p.r#type.unwrap_or(PieceType::Normal as i32);
            let kind = PieceType::try_from(raw_type)
                .map_err(|_| bad(format!("piece {id} has unknown type {raw_type}")))?;
            let piece = p.piece.clone().unwrap_or_default();
            if kind == PieceType::Byte && byte_piece_value(&piece).is_none() {
                return Err(bad(format!(
                    "byte piece {id} is {piece:?}, not of the form <0xNN>"
                )));
            }
            pieces.push(Piece {
                piece,
                score: p.score.unwrap_or(0.0),
                kind,
            });
        }
        let normalizer = proto.normalizer_spec.unwrap_or_default();
        let trainer = proto.trainer_spec.unwrap_or_default();
        Ok(SpModel {
            path: path.into(),
            pieces,
            normalizer_name: normalizer.name.unwrap_or_default(),
            // proto2 defaults of NormalizerSpec: both true.
            add_dummy_prefix: normalizer.add_dummy_prefix.unwrap_or(true),
            remove_extra_whitespaces: normalizer.remove_extra_whitespaces.unwrap_or(true),
            byte_fallback: trainer.byte_fallback.unwrap_or(false),
            unk_surface: trainer
                .unk_surface
                .unwrap_or_else(|| DEFAULT_UNK_SURFACE.into()),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn kind(&self, id: usize) -> Option<PieceType> {
        self.pieces.get(id).map(|p| p.kind)
    }

    /// `sp.piece_to_id(piece)`: the id of a piece, if the vocabulary has it.
    pub fn piece_to_id(&self, piece: &str) -> Option<usize> {
        self.pieces.iter().position(|p| p.piece == piece)
    }

    pub fn count_of(&self, kind: PieceType) -> usize {
        self.pieces.iter().filter(|p| p.kind == kind).count()
    }

    /// Decodes ids to UTF-8 text bytes the way `SentencePieceProcessor.decode` does: control pieces vanish,
    /// `<unk>` becomes the unknown surface, runs of byte pieces become bytes (invalid UTF-8 replaced), '▁' becomes a
    /// space, and the first piece's leading '▁' is dropped when the normalizer adds a dummy prefix or removes extra
    /// whitespace.
    pub fn decode(&self, ids: &[u16]) -> Vec<u8> {
        let mut text = String::new();
        let mut byte_run: Vec<u8> = Vec::new();
        let mut at_start = true;
        let consume_leading_space = self.add_dummy_prefix || self.remove_extra_whitespaces;
        for &id in ids {
            let Some(p) = self.pieces.get(id as usize) else {
                continue;
            };
            if p.kind == PieceType::Byte {
                byte_run.push(byte_piece_value(&p.piece).expect("validated at load"));
                continue;
            }
            if !byte_run.is_empty() {
                text.push_str(&String::from_utf8_lossy(&byte_run));
                byte_run.clear();
                at_start = false;
            }
            match p.kind {
                PieceType::Control | PieceType::Unused => {}
                PieceType::Unknown => {
                    text.push_str(&self.unk_surface);
                    at_start = false;
                }
                _ => {
                    let mut s = p.piece.as_str();
                    if at_start && consume_leading_space {
                        s = s.strip_prefix(SPACE_MARK).unwrap_or(s);
                    }
                    text.push_str(&s.replace(SPACE_MARK, " "));
                    at_start = false;
                }
            }
        }
        if !byte_run.is_empty() {
            text.push_str(&String::from_utf8_lossy(&byte_run));
        }
        text.into_bytes()
    }
}

/// The byte of a byte-fallback piece `<0xNN>`.
pub fn byte_piece_value(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
