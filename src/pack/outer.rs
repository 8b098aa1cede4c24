//! Outer layers of an artifact, detected by magic and peeled in order: zlib, zstd, xz, the byte-shuffle header
//! `BSHF` (v1: u16 stride, v2: u8 stride), the per-group `PGRP` container, and brotli (no magic: tried last, when
//! nothing else matched and the bytes are not already a torch.save zip). Every layer is capped by what is left of the
//! input's [`DecodeBudget`] (`--max-decompressed-bytes` in all).

use std::io::Read;
use std::path::Path;

use super::codec::{Codec, Coder, capped};
use super::decode_budget::DecodeBudget;
use super::{PackError, Result, torchfile};

/// One layer that was peeled.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "layer", rename_all = "snake_case")]
pub enum Layer {
    Zlib,
    Zstd,
    Xz,
    /// `lzma.compress(format=FORMAT_RAW, filters=[LZMA2])`: no magic; tried when a stream opens with an LZMA2 chunk
    /// that resets the dictionary.
    RawLzma2,
    Brotli,
    ByteShuffle {
        version: u8,
        stride: usize,
    },
    /// The per-group PGRP container (see `pgrp`).
    PerGroup,
    /// #2135's PGRP version 2: row-permuted int8 matrices in one section (lrzip, or brotli), the rest BSHF + brotli.
    PerGroupV2 {
        q_section: &'static str,
    },
    /// pgolf's own artifact (see `container`), with its codec.
    Pgolf {
        codec: Codec,
    },
}

impl Layer {
    pub fn name(&self) -> String {
        match self {
            Layer::Zlib => "zlib".into(),
            Layer::Zstd => "zstd".into(),
            Layer::Xz => "xz".into(),
            Layer::RawLzma2 => "raw-lzma2".into(),
            Layer::Brotli => "brotli".into(),
            Layer::ByteShuffle { version: 0, stride } => {
                format!("headerless-shuffle(stride {stride})")
            }
            Layer::ByteShuffle { version, stride } => format!("bshf-v{version}(stride {stride})"),
            Layer::PerGroup => "pgrp(lrzip groups + brotli remainder)".into(),
            Layer::PerGroupV2 { q_section } => {
                format!("pgrp-v2(row-permuted {q_section} Q section + brotli remainder)")
            }
            Layer::Pgolf { codec } => format!("pgolf({})", codec.name()),
        }
    }

    /// The compression layer written by one coder.
    pub fn of(coder: Coder) -> Layer {
        match coder {
            Coder::Zlib => Layer::Zlib,
            Coder::Zstd => Layer::Zstd,
            Coder::Xz => Layer::Xz,
            Coder::Brotli => Layer::Brotli,
        }
    }

    /// The coder that re-compresses what this layer holds at the records' settings (raw LZMA2 is measured with xz);
    /// None for layers that are not one coder's stream.
    pub fn coder(&self) -> Option<Coder> {
        match self {
            Layer::Zlib => Some(Coder::Zlib),
            Layer::Zstd => Some(Coder::Zstd),
            Layer::Xz | Layer::RawLzma2 => Some(Coder::Xz),
            Layer::Brotli => Some(Coder::Brotli),
            Layer::Pgolf {
                codec: Codec::General(c),
            } => Some(*c),
            Layer::Pgolf { codec: Codec::Rans }
            | Layer::ByteShuffle { .. }
            | Layer::PerGroup
            | Layer::PerGroupV2 { .. } => None,
        }
    }
}

/// The byte shuffle of `stride` (BSHF): plane i holds bytes i, i+stride, … of the input.
pub fn shuffle(data: &[u8], stride: usize) -> Vec<u8> {
    if stride <= 1 {
        return data.to_vec();
    }
    (0..stride)
        .flat_map(|p| data.iter().skip(p).step_by(stride).copied())
        .collect()
}

/// Undoes a byte shuffle of `stride`: the input is `stride` planes, plane i holding bytes i, i+stride, …
pub fn unshuffle(data: &[u8], stride: usize) -> Vec<u8> {
    if stride <= 1 {
        return data.to_vec();
    }
    let n = data.len();
    let mut out = vec![0u8; n];
    let mut pos = 0;
    for plane in 0..stride {
        let mut i = plane;
        while i < n {
            out[i] = data[pos];
            pos += 1;
            i += stride;
        }
    }
    out
}

/// Undoes seed 004's headerless `byte_shuffle` (PR #1499): with chunk = n div stride, plane s holds bytes
/// s, s+stride, … of the first chunk·stride bytes, and the last n mod stride bytes follow unshuffled.
pub fn unshuffle_headerless(data: &[u8], stride: usize) -> Vec<u8> {
    let n = data.len();
    let chunk = n / stride.max(1);
    let mut out = vec![0u8; n];
    for s in 0..stride {
        for i in 0..chunk {
            out[i * stride + s] = data[s * chunk + i];
        }
    }
    out[stride * chunk..].copy_from_slice(&data[stride * chunk..]);
    out
}

/// Decodes one compression layer whose kind is known (no sniffing), capped at `limit` bytes.
pub fn decompress_with(path: &Path, layer: &Layer, bytes: &[u8], limit: u64) -> Result<Vec<u8>> {
    match layer {
        Layer::Zlib => Coder::Zlib.decode(path, bytes, limit),
        Layer::Zstd => Coder::Zstd.decode(path, bytes, limit),
        Layer::Xz => Coder::Xz.decode(path, bytes, limit),
        Layer::Brotli => Coder::Brotli.decode(path, bytes, limit),
        Layer::RawLzma2 => raw_lzma2(bytes, limit).ok_or_else(|| PackError::Corrupt {
            path: path.into(),
            layer: "raw-lzma2",
            message: "does not decode".into(),
        }),
        Layer::ByteShuffle { .. }
        | Layer::PerGroup
        | Layer::PerGroupV2 { .. }
        | Layer::Pgolf { .. } => Err(PackError::Format {
            path: path.into(),
            message: format!("{} is not a compression layer", layer.name()),
        }),
    }
}

/// Peels one layer: `Some((layer, bytes inside))`, or an error naming what the bytes are not.
pub fn peel_one(path: &Path, bytes: Vec<u8>, limit: u64) -> Result<Option<(Layer, Vec<u8>)>> {
    let (layer, next) = if bytes.len() >= 2
        && bytes[0] == 0x78
        && u16::from_be_bytes([bytes[0], bytes[1]]).is_multiple_of(31)
    {
        (
            Layer::Zlib,
            decompress_with(path, &Layer::Zlib, &bytes, limit)?,
        )
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        (
            Layer::Zstd,
            decompress_with(path, &Layer::Zstd, &bytes, limit)?,
        )
    } else if bytes.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        (Layer::Xz, decompress_with(path, &Layer::Xz, &bytes, limit)?)
    } else if bytes.starts_with(b"BSHF") {
        // v1: BSHF + u16le stride; v2: BSHF + u8 stride. A v2 stride byte is followed by payload, so v1 is told
        // apart by a plausible 16-bit stride (≤ 16) whose high byte is 0.
        if bytes.len() < 5 {
            return Err(PackError::Corrupt {
                path: path.into(),
                layer: "bshf",
                message: "header truncated".into(),
            });
        }
        let v1 = bytes.len() >= 6 && bytes[5] == 0 && (1..=16).contains(&bytes[4]);
        let (version, stride, skip) = if v1 {
            (1, bytes[4] as usize, 6)
        } else {
            (2, bytes[4] as usize, 5)
        };
        if stride == 0 {
            return Err(PackError::Corrupt {
                path: path.into(),
                layer: "bshf",
                message: "stride 0".into(),
            });
        }
        (
            Layer::ByteShuffle { version, stride },
            unshuffle(&bytes[skip..], stride),
        )
    } else if bytes.starts_with(b"LRZI") {
        return Err(PackError::Unsupported {
                path: path.into(),
                what: "an lrzip stream: decompress it with `lrzip -d` first (lrzip is not built into pgolf)".into(),
            });
    } else if let Some(out) = Some(unshuffle_headerless(&bytes, 2)).filter(|u| torchfile::is_zip(u))
    {
        // No magic: recognized only when undoing the shuffle yields a torch.save zip.
        (
            Layer::ByteShuffle {
                version: 0,
                stride: 2,
            },
            out,
        )
    } else if let Some(out) = raw_lzma2(&bytes, limit) {
        (Layer::RawLzma2, out)
    } else {
        match capped(
            path,
            "brotli",
            brotli::Decompressor::new(bytes.as_slice(), 1 << 16),
            limit,
        ) {
            Ok(out) if !out.is_empty() => (Layer::Brotli, out),
            Err(e @ PackError::TooLarge { .. }) => return Err(e),
            _ => {
                return Err(PackError::Unsupported {
                    path: path.into(),
                    what: format!(
                        "unknown format (first bytes {:02x?}): not a torch.save zip, zlib, zstd, xz, BSHF, PGRP \
                             or brotli stream",
                        &bytes[..bytes.len().min(8)]
                    ),
                });
            }
        }
    };
    Ok(Some((layer, next)))
}

/// Peels outer layers until `inner` recognizes what remains (a torch.save zip, say); returns the layers (outermost
/// first) and the inner bytes. Each layer's output is charged to `budget`, which also caps it.
pub fn peel(
    path: &Path,
    mut bytes: Vec<u8>,
    budget: &mut DecodeBudget,
    inner: impl Fn(&[u8]) -> bool,
) -> Result<(Vec<Layer>, Vec<u8>)> {
    let mut layers = Vec::new();
    for _ in 0..8 {
        if inner(&bytes) {
            return Ok((layers, bytes));
        }
        // A layer past what is left is reported against the whole budget.
        let peeled = peel_one(path, bytes, budget.remaining()).map_err(|e| match e {
            PackError::TooLarge { layer, .. } => budget.exceeded(layer),
            other => other,
        })?;
        let Some((layer, next)) = peeled else {
            unreachable!("peel_one errs on unknown bytes")
        };
        budget.charge("outer", next.len() as u64)?;
        layers.push(layer);
        bytes = next;
    }
    Err(PackError::Format {
        path: path.into(),
        message: "more than 8 nested outer layers".into(),
    })
}

/// A raw LZMA2 stream decoded, if the bytes are one: the first chunk must reset the dictionary (control byte 0x01
/// for an uncompressed chunk, 0xE0..=0xFF for an LZMA chunk) and the stream must decode whole.
fn raw_lzma2(bytes: &[u8], limit: u64) -> Option<Vec<u8>> {
    let first = *bytes.first()?;
    if first != 0x01 && first < 0xe0 {
        return None;
    }
    let mut opts = liblzma::stream::LzmaOptions::new_preset(6).ok()?;
    // No match reaches further back than the output's length, so a dictionary of the output cap is enough; the
    // decoder allocates it whole.
    let dict = limit.clamp(4096, 1 << 26).next_power_of_two().min(1 << 26);
    opts.dict_size(dict as u32);
    let mut filters = liblzma::stream::Filters::new();
    filters.lzma2(&opts);
    let stream = liblzma::stream::Stream::new_raw_decoder(&filters).ok()?;
    let mut out = Vec::new();
    liblzma::read::XzDecoder::new_stream(bytes, stream)
        .take(limit + 1)
        .read_to_end(&mut out)
        .ok()?;
    (!out.is_empty() && out.len() as u64 <= limit).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshuffle_inverts_a_stride_two_shuffle() {
        let data: Vec<u8> = (0..11).collect();
        let shuffled: Vec<u8> = (0..2)
            .flat_map(|p| data.iter().skip(p).step_by(2).copied().collect::<Vec<_>>())
            .collect();
        assert_eq!(unshuffle(&shuffled, 2), data);
    }

    #[test]
    fn headerless_unshuffle_inverts_seed_004_byte_shuffle_at_every_length() {
        // PR #1499's byte_shuffle: out[s·chunk + i] = in[i·stride + s] for i < chunk = n div stride, then the
        // n mod stride tail bytes unchanged.
        for n in 0..23usize {
            for stride in 1..4usize {
                let data: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(37)).collect();
                let chunk = n / stride;
                let mut shuffled = vec![0u8; n];
                for s in 0..stride {
                    for i in 0..chunk {
                        shuffled[s * chunk + i] = data[i * stride + s];
                    }
                }
                shuffled[stride * chunk..].copy_from_slice(&data[stride * chunk..]);
                assert_eq!(
                    unshuffle_headerless(&shuffled, stride),
                    data,
                    "n {n} stride {stride}"
                );
            }
        }
    }
}
