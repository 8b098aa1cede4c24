//! The coders: the general-purpose compressors the records use (zlib, zstd, xz, brotli) at the settings they use,
//! each with its name, its capped decoder and its id in the pgolf container; and the container's body codec (pgolf's
//! rANS, or one of these). Every other file names a coder through this one.

use std::io::{Read, Write};
use std::path::Path;

use serde::Serialize;

use super::{PackError, Result};

/// The coders the records use, at the settings they use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coder {
    /// zlib level 9
    Zlib,
    /// zstd level 22
    Zstd,
    /// xz preset 9 extreme
    Xz,
    /// brotli quality 11, window 2^22 (Python's default)
    Brotli,
}

impl Coder {
    pub const ALL: [Coder; 4] = [Coder::Zlib, Coder::Zstd, Coder::Xz, Coder::Brotli];

    /// The coder's name, as layers, codecs and the CLI spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Coder::Zlib => "zlib",
            Coder::Zstd => "zstd",
            Coder::Xz => "xz",
            Coder::Brotli => "brotli",
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Coder::Zlib => "zlib level 9",
            Coder::Zstd => "zstd level 22",
            Coder::Xz => "xz preset 9 extreme",
            Coder::Brotli => "brotli quality 11, lgwin 22",
        }
    }

    /// The setting pack writes with: as [`Coder::compress`], but brotli with a 2^24 window (the records' PGRP
    /// remainder setting, and their best).
    pub fn compress_for_pack(&self, data: &[u8]) -> Vec<u8> {
        match self {
            Coder::Brotli => brotli_compress(data, 24),
            other => other.compress(data),
        }
    }

    pub fn compress(&self, data: &[u8]) -> Vec<u8> {
        match self {
            Coder::Zlib => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
                e.write_all(data).expect("in-memory write");
                e.finish().expect("in-memory write")
            }
            Coder::Zstd => zstd::bulk::compress(data, 22).expect("zstd level 22 on memory"),
            Coder::Xz => {
                let stream = liblzma::stream::Stream::new_easy_encoder(
                    9 | 0x8000_0000,
                    liblzma::stream::Check::Crc64,
                )
                .expect("xz preset 9e");
                let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
                e.write_all(data).expect("in-memory write");
                e.finish().expect("in-memory write")
            }
            Coder::Brotli => brotli_compress(data, 22),
        }
    }

    /// Decodes one stream of this coder, capped at `limit` bytes; `path` names the input in errors.
    pub fn decode(&self, path: &Path, bytes: &[u8], limit: u64) -> Result<Vec<u8>> {
        match self {
            Coder::Zlib => capped(path, "zlib", flate2::read::ZlibDecoder::new(bytes), limit),
            Coder::Zstd => {
                let dec =
                    zstd::stream::read::Decoder::new(bytes).map_err(|e| PackError::Corrupt {
                        path: path.into(),
                        layer: "zstd",
                        message: e.to_string(),
                    })?;
                capped(path, "zstd", dec, limit)
            }
            Coder::Xz => capped(path, "xz", liblzma::read::XzDecoder::new(bytes), limit),
            Coder::Brotli => capped(
                path,
                "brotli",
                brotli::Decompressor::new(bytes, 1 << 16),
                limit,
            ),
        }
    }

    /// Decompresses what [`Coder::compress`] wrote, capped at `limit` bytes.
    pub fn decompress(&self, data: &[u8], limit: u64) -> Result<Vec<u8>> {
        self.decode(Path::new("<memory>"), data, limit)
    }
}

fn brotli_compress(data: &[u8], lgwin: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: 11,
        lgwin,
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).expect("in-memory brotli");
    out
}

/// Reads a decoder to its end, refusing more than `limit` bytes.
pub fn capped(path: &Path, layer: &'static str, reader: impl Read, limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| PackError::Corrupt {
            path: path.into(),
            layer,
            message: e.to_string(),
        })?;
    if out.len() as u64 > limit {
        return Err(PackError::TooLarge {
            path: path.into(),
            layer,
            limit,
        });
    }
    Ok(out)
}

/// How the body of a pgolf artifact is coded (`docs/FORMAT.md`: the codec byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// pgolf's per-tensor rANS for symbols; scales and passthrough bytes stored raw.
    Rans,
    /// One stream of every tensor's bytes through a general-purpose coder (optionally byte-shuffled).
    General(Coder),
}

impl Codec {
    /// The codec byte of the container.
    pub fn id(&self) -> u8 {
        match self {
            Codec::Rans => 0,
            Codec::General(Coder::Zlib) => 1,
            Codec::General(Coder::Zstd) => 2,
            Codec::General(Coder::Xz) => 3,
            Codec::General(Coder::Brotli) => 4,
        }
    }

    pub fn from_id(id: u8) -> Option<Self> {
        Codec::all().find(|c| c.id() == id)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Codec::Rans => "rans",
            Codec::General(c) => c.name(),
        }
    }

    /// Every codec, in id order.
    pub fn all() -> impl Iterator<Item = Codec> {
        [Codec::Rans]
            .into_iter()
            .chain(Coder::ALL.map(Codec::General))
    }

    /// The codec a name names (`rans`, `zlib`, `zstd`, `xz`, `brotli`).
    pub fn from_name(name: &str) -> Option<Self> {
        Codec::all().find(|c| c.name() == name)
    }
}

/// A codec is written as its name (`"rans"`, `"zlib"`, …).
impl Serialize for Codec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_ids_round_trip_and_are_the_format_s() {
        let ids: Vec<(u8, &str)> = (0..=5)
            .filter_map(Codec::from_id)
            .map(|c| (c.id(), c.name()))
            .collect();
        assert_eq!(
            ids,
            [
                (0, "rans"),
                (1, "zlib"),
                (2, "zstd"),
                (3, "xz"),
                (4, "brotli")
            ]
        );
        for c in Codec::all() {
            assert_eq!(Codec::from_name(c.name()), Some(c));
        }
        assert_eq!(Codec::from_name("lzma"), None);
    }

    #[test]
    fn every_coder_round_trips_and_respects_the_cap() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 13) as u8).collect();
        for c in Coder::ALL {
            assert_eq!(c.decompress(&c.compress(&data), 1 << 20).unwrap(), data);
            assert_eq!(
                c.decompress(&c.compress_for_pack(&data), 1 << 20).unwrap(),
                data
            );
            assert!(matches!(
                c.decompress(&c.compress(&data), 100),
                Err(PackError::TooLarge { .. })
            ));
        }
    }
}
