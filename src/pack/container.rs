//! The pgolf artifact (`docs/FORMAT.md` specifies it byte by byte): a fixed 43-byte preamble, a zlib-compressed JSON
//! header (model config and each tensor's scheme, shape, scales and where its bytes are), and a body of per-tensor
//! rANS streams (codec 0) or one general-purpose compressed stream (codecs 1–4), guarded by a sha256.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::codec::{Codec, Coder};
use super::decode_budget::{DecodeBudget, MAX_TENSORS};
use super::outer;
use super::schema::{Payload, QTensor};
use super::torchfile::{HostTensor, checked_numel};
use super::{Limits, PackError, Result, rans};

pub const MAGIC: &[u8; 4] = b"PGLF";
pub const VERSION: u8 = 1;
/// magic 4 + version 1 + codec 1 + shuffle 1 + header length 4 + sha256 32.
pub const PREAMBLE: usize = 43;
/// The most a decompressed header may take (a record's header is tens of KB).
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// A byte range of the body (codec 0) or of the decompressed stream (codecs 1–4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub offset: u64,
    pub length: u64,
    /// Codec 0 only, on `scales` and `values`: how the span's bytes are coded (`zlib`, `xz` or `brotli`, with
    /// `+shuffleK` when the elements' bytes were split into K planes first). Absent: raw bytes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub coding: Option<String>,
}

/// Spans shorter than this stay raw: no coder's framing pays for itself.
const MIN_CODED_SPAN: usize = 64;

/// The smallest coding of a scales or values span: raw, or zlib / xz / brotli, each on the bytes as they are or
/// split into element-size planes (the high bytes of fp16 values compress far better apart from the low ones).
fn code_side_span(data: &[u8], elem: usize) -> (Vec<u8>, Option<String>) {
    let mut best = (data.to_vec(), None);
    if data.len() < MIN_CODED_SPAN {
        return best;
    }
    let mut strides = vec![1];
    if elem > 1 && data.len().is_multiple_of(elem) {
        strides.push(elem);
    }
    for &stride in &strides {
        let planes = outer::shuffle(data, stride);
        for coder in [Coder::Zlib, Coder::Xz, Coder::Brotli] {
            let coded = coder.compress_for_pack(&planes);
            if coded.len() < best.0.len() {
                let name = if stride > 1 {
                    format!("{}+shuffle{stride}", coder.name())
                } else {
                    coder.name().to_string()
                };
                best = (coded, Some(name));
            }
        }
    }
    best
}

/// Decodes a coded span to exactly `expected` bytes.
fn decode_side_span(
    path: &Path,
    coding: &str,
    bytes: &[u8],
    expected: u64,
) -> std::result::Result<Vec<u8>, String> {
    let (name, stride) = match coding.split_once("+shuffle") {
        Some((n, k)) => (
            n,
            k.parse::<usize>()
                .map_err(|_| format!("coding {coding:?}"))?,
        ),
        None => (coding, 1),
    };
    if !(1..=16).contains(&stride) {
        return Err(format!("coding {coding:?}: stride {stride}"));
    }
    let coder = match name {
        "zlib" => Coder::Zlib,
        "xz" => Coder::Xz,
        "brotli" => Coder::Brotli,
        other => return Err(format!("unknown span coding {other:?}")),
    };
    let planes = coder
        .decode(path, bytes, expected)
        .map_err(|e| e.to_string())?;
    if planes.len() as u64 != expected {
        return Err(format!(
            "{coding} span decodes to {} bytes, not {expected}",
            planes.len()
        ));
    }
    Ok(outer::unshuffle(&planes, stride))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub scheme: String,
    pub bits: u32,
    pub orig_dtype: String,
    /// int8 symbols (rANS-coded under codec 0).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub symbols: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scales: Option<Span>,
    /// Passthrough values.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub values: Option<Span>,
    /// LQER correction: `asym` or `sym`, with its four spans (int8 factors A [rows, r] and B [r, cols], fp16 scales).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lqer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lqer_a: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lqer_a_scales: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lqer_b: Option<Span>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lqer_b_scales: Option<Span>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub config: Option<serde_json::Value>,
    pub tensors: Vec<TensorEntry>,
    /// How GPTQ was calibrated (shards, tokens, and whether validation data was used), when it was.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub calibration: Option<serde_json::Value>,
}

fn push(body: &mut Vec<u8>, dtype: &str, shape: &[usize], bytes: &[u8]) -> Span {
    let span = Span {
        dtype: dtype.into(),
        shape: shape.to_vec(),
        offset: body.len() as u64,
        length: bytes.len() as u64,
        coding: None,
    };
    body.extend_from_slice(bytes);
    span
}

/// A scales or values span: coded by [`code_side_span`] under codec 0, raw otherwise.
fn push_side(body: &mut Vec<u8>, codec: Codec, dtype: &str, shape: &[usize], bytes: &[u8]) -> Span {
    if codec != Codec::Rans {
        return push(body, dtype, shape, bytes);
    }
    let elem = super::pickle::dtype_element(dtype).unwrap_or(1);
    let (coded, coding) = code_side_span(bytes, elem);
    let mut span = push(body, dtype, shape, &coded);
    span.coding = coding;
    span
}

/// Writes tensors (quantized per row/tensor, or passthrough) as a pgolf artifact.
pub fn encode(
    tensors: &[QTensor],
    config: Option<&serde_json::Value>,
    calibration: Option<&serde_json::Value>,
    codec: Codec,
    shuffle: usize,
) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut entries = Vec::with_capacity(tensors.len());
    for t in tensors {
        let mut e = TensorEntry {
            name: t.name.clone(),
            shape: t.shape.clone(),
            scheme: t.scheme.clone(),
            bits: t.bits,
            orig_dtype: t.orig_dtype.clone(),
            symbols: None,
            scales: None,
            values: None,
            lqer: None,
            lqer_a: None,
            lqer_a_scales: None,
            lqer_b: None,
            lqer_b_scales: None,
        };
        match &t.payload {
            Payload::Quantized {
                protected: Some(p), ..
            } => {
                return Err(PackError::Unsupported {
                    path: t.name.clone().into(),
                    what: format!(
                        "AWQ-lite groups (int{} columns at {:?}, {} wide) cannot be written to a pgolf artifact yet",
                        p.bits,
                        p.column_starts(),
                        p.group_size()
                    ),
                });
            }
            Payload::Quantized {
                q,
                scale,
                lowrank,
                protected: None,
            } => {
                let coded;
                let sym_bytes = if codec == Codec::Rans {
                    let syms: Vec<i8> = q.data.iter().map(|&b| b as i8).collect();
                    coded = rans::encode(&syms);
                    &coded
                } else {
                    &q.data
                };
                e.symbols = Some(push(&mut body, "int8", &q.shape, sym_bytes));
                e.scales = Some(push_side(
                    &mut body,
                    codec,
                    &scale.dtype,
                    &scale.shape,
                    &scale.data,
                ));
                if let Some(lr) = lowrank {
                    e.lqer = Some(if lr.asymmetric { "asym" } else { "sym" }.into());
                    for (slot, h) in [
                        (&mut e.lqer_a, &lr.a_q),
                        (&mut e.lqer_a_scales, &lr.a_s),
                        (&mut e.lqer_b, &lr.b_q),
                        (&mut e.lqer_b_scales, &lr.b_s),
                    ] {
                        *slot = Some(push_side(&mut body, codec, &h.dtype, &h.shape, &h.data));
                    }
                }
            }
            Payload::Passthrough { values } => {
                e.values = Some(push_side(
                    &mut body,
                    codec,
                    &values.dtype,
                    &values.shape,
                    &values.data,
                ));
            }
            _ => {
                return Err(PackError::Unsupported {
                    path: t.name.clone().into(),
                    what: format!(
                        "scheme {} cannot be written to a pgolf artifact yet",
                        t.scheme
                    ),
                });
            }
        }
        entries.push(e);
    }
    let header = Header {
        format: "pgolf-v1".into(),
        config: config.cloned(),
        tensors: entries,
        calibration: calibration.cloned(),
    };
    let json = serde_json::to_vec(&header).expect("serializable header");
    let header_z = Coder::Zlib.compress(&json);
    let body = match codec {
        Codec::Rans => body,
        Codec::General(c) => c.compress_for_pack(&outer::shuffle(&body, shuffle.max(1))),
    };
    let mut digest = Sha256::new();
    digest.update(&header_z);
    digest.update(&body);
    let mut out = Vec::with_capacity(PREAMBLE + header_z.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(codec.id());
    out.push(shuffle.clamp(1, 255) as u8);
    out.extend_from_slice(&(header_z.len() as u32).to_le_bytes());
    out.extend_from_slice(&digest.finalize());
    out.extend_from_slice(&header_z);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Every non-empty span of the header in its own bytes: two spans that overlap (or alias one stretch) would let a
/// small body stand for many tensors, and are never written by [`encode`].
fn check_disjoint_spans(header: &Header) -> std::result::Result<(), String> {
    let mut spans: Vec<(u64, u64, &str, &str)> = header
        .tensors
        .iter()
        .flat_map(|e| {
            [
                (&e.symbols, "symbols"),
                (&e.scales, "scales"),
                (&e.values, "values"),
                (&e.lqer_a, "LQER A"),
                (&e.lqer_a_scales, "LQER A scales"),
                (&e.lqer_b, "LQER B"),
                (&e.lqer_b_scales, "LQER B scales"),
            ]
            .into_iter()
            .filter_map(move |(span, what)| {
                span.as_ref()
                    .filter(|s| s.length > 0)
                    .map(|s| (s.offset, s.length, e.name.as_str(), what))
            })
        })
        .collect();
    spans.sort_unstable_by_key(|&(offset, length, _, _)| (offset, length));
    for pair in spans.windows(2) {
        let ((a_off, a_len, a_name, a_what), (b_off, _, b_name, b_what)) = (pair[0], pair[1]);
        if a_off.saturating_add(a_len) > b_off {
            return Err(format!(
                "the {a_what} of {a_name} [{a_off}, +{a_len}) and the {b_what} of {b_name} (from {b_off}) overlap"
            ));
        }
    }
    Ok(())
}

pub fn is_pgolf(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Reads a pgolf artifact's preamble and header (charged to `budget`): the header, the codec, the body's shuffle
/// stride and the compressed header's length; rejects anything malformed.
pub fn read_header(
    path: &Path,
    bytes: &[u8],
    budget: &mut DecodeBudget,
) -> Result<(Header, Codec, usize, usize)> {
    let bad = |message: String| PackError::Format {
        path: path.into(),
        message: format!("pgolf artifact: {message}"),
    };
    if bytes.len() < PREAMBLE || !is_pgolf(bytes) {
        return Err(bad(format!(
            "{} bytes, shorter than the {PREAMBLE}-byte preamble",
            bytes.len()
        )));
    }
    if bytes[4] != VERSION {
        return Err(bad(format!(
            "version {} (this pgolf reads version {VERSION})",
            bytes[4]
        )));
    }
    let codec =
        Codec::from_id(bytes[5]).ok_or_else(|| bad(format!("unknown codec {}", bytes[5])))?;
    let shuffle = bytes[6].max(1) as usize;
    let header_len = u32::from_le_bytes(bytes[7..11].try_into().unwrap()) as usize;
    let expected: [u8; 32] = bytes[11..43].try_into().unwrap();
    let rest = &bytes[PREAMBLE..];
    if Sha256::digest(rest).as_slice() != expected {
        return Err(bad(
            "sha256 mismatch: the file is corrupt or was modified".into()
        ));
    }
    let header_z = rest
        .get(..header_len)
        .ok_or_else(|| bad(format!("header of {header_len} bytes runs past the end")))?;
    let header_limit = MAX_HEADER_BYTES.min(budget.remaining());
    let json = match Coder::Zlib.decode(path, header_z, header_limit) {
        Err(PackError::TooLarge { .. }) => {
            return Err(bad(format!(
                "the header decompresses past {header_limit} bytes, more than any real header"
            )));
        }
        other => other?,
    };
    budget.charge("pgolf header", json.len() as u64)?;
    let header: Header = serde_json::from_slice(&json).map_err(|e| bad(format!("header: {e}")))?;
    if header.tensors.len() > MAX_TENSORS {
        return Err(bad(format!(
            "{} tensors, more than the {MAX_TENSORS} an artifact may hold",
            header.tensors.len()
        )));
    }
    check_disjoint_spans(&header).map_err(bad)?;
    Ok((header, codec, shuffle, header_len))
}

/// Reads a pgolf artifact: header, config and tensors; rejects anything malformed.
/// The header, the decoded body and every tensor are charged to `budget`.
pub fn decode(
    path: &Path,
    bytes: &[u8],
    limits: &Limits,
    budget: &mut DecodeBudget,
) -> Result<(Header, Codec, Vec<QTensor>)> {
    let (header, codec, shuffle, header_len) = read_header(path, bytes, budget)?;
    let bad = |message: String| PackError::Format {
        path: path.into(),
        message: format!("pgolf artifact: {message}"),
    };
    let rest = &bytes[PREAMBLE..];
    let body_raw = &rest[header_len..];
    let body = match codec {
        Codec::Rans => body_raw.to_vec(),
        Codec::General(c) => {
            let decoded = c
                .decode(path, body_raw, budget.remaining())
                .map_err(|e| match e {
                    PackError::TooLarge { .. } => budget.exceeded(c.name()),
                    other => other,
                })
                .and_then(|d| budget.charge(c.name(), d.len() as u64).map(|_| d))?;
            outer::unshuffle(&decoded, shuffle)
        }
    };
    let slice = |span: &Span, what: &str, name: &str| -> Result<Vec<u8>> {
        let end = span
            .offset
            .checked_add(span.length)
            .filter(|&e| e <= body.len() as u64);
        match end {
            Some(end) => Ok(body[span.offset as usize..end as usize].to_vec()),
            None => Err(bad(format!(
                "{name}: {what} [{}, +{}) lies outside the {}-byte body",
                span.offset,
                span.length,
                body.len()
            ))),
        }
    };
    let elem = |dtype: &str| super::pickle::dtype_element(dtype);
    // Each tensor is charged for its symbols and the f32 it becomes before it is decoded (a few bytes of rANS can
    // stand for billions of symbols).
    let mut tensors = Vec::with_capacity(header.tensors.len());
    for e in &header.tensors {
        let numel: u64 = e
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("{}: shape overflows", e.name)))?;
        if numel > limits.max_tensor_elements {
            return Err(bad(format!(
                "{}: {numel} elements exceed the limit of {}",
                e.name, limits.max_tensor_elements
            )));
        }
        budget.charge_tensor(numel, 1)?;
        let host = |span: &Span, data: Vec<u8>, what: &str| -> Result<HostTensor> {
            let size = elem(&span.dtype)
                .ok_or_else(|| bad(format!("{}: unknown dtype {}", e.name, span.dtype)))?;
            let n = checked_numel(&span.shape)
                .ok_or_else(|| bad(format!("{}: {what} shape overflows", e.name)))?;
            let data = match &span.coding {
                None => data,
                Some(_) if codec != Codec::Rans => {
                    return Err(bad(format!(
                        "{}: {what} carry a coding, which only codec 0 (rans) allows",
                        e.name
                    )));
                }
                Some(coding) => {
                    let expected = n
                        .checked_mul(size)
                        .filter(|&b| (b as u64) <= limits.max_tensor_elements.saturating_mul(8))
                        .ok_or_else(|| bad(format!("{}: {what} shape overflows", e.name)))?
                        as u64;
                    decode_side_span(path, coding, &data, expected)
                        .map_err(|m| bad(format!("{}: {what}: {m}", e.name)))?
                }
            };
            if Some(data.len()) != n.checked_mul(size) {
                return Err(bad(format!(
                    "{}: {what} hold {} bytes, not {} × {size}",
                    e.name,
                    data.len(),
                    n
                )));
            }
            Ok(HostTensor {
                dtype: span.dtype.clone(),
                shape: span.shape.clone(),
                data,
            })
        };
        let payload = match (&e.symbols, &e.scales, &e.values) {
            (Some(sym), Some(sc), None) => {
                let raw = slice(sym, "symbols", &e.name)?;
                let data = if codec == Codec::Rans {
                    rans::decode(&raw, numel)
                        .map_err(|err| bad(format!("{}: {err}", e.name)))?
                        .iter()
                        .map(|&s| s as u8)
                        .collect()
                } else {
                    raw
                };
                if sym.shape != e.shape || data.len() as u64 != numel {
                    return Err(bad(format!(
                        "{}: {} symbols for shape {:?}",
                        e.name,
                        data.len(),
                        e.shape
                    )));
                }
                let scale = host(sc, slice(sc, "scales", &e.name)?, "scales")?;
                let rows = e.shape.first().copied().unwrap_or(1);
                if !(scale.numel() == 1 && sc.shape.is_empty() || sc.shape == [rows]) {
                    return Err(bad(format!(
                        "{}: scales of shape {:?} for {:?}",
                        e.name, sc.shape, e.shape
                    )));
                }
                let lowrank = match (
                    &e.lqer,
                    &e.lqer_a,
                    &e.lqer_a_scales,
                    &e.lqer_b,
                    &e.lqer_b_scales,
                ) {
                    (None, None, None, None, None) => None,
                    (Some(kind), Some(a), Some(as_), Some(b), Some(bs)) => {
                        let asymmetric = match kind.as_str() {
                            "asym" => true,
                            "sym" => false,
                            other => return Err(bad(format!("{}: LQER kind {other:?}", e.name))),
                        };
                        let a_q = host(a, slice(a, "LQER A", &e.name)?, "LQER A")?;
                        let a_s =
                            host(as_, slice(as_, "LQER A scales", &e.name)?, "LQER A scales")?;
                        let b_q = host(b, slice(b, "LQER B", &e.name)?, "LQER B")?;
                        let b_s = host(bs, slice(bs, "LQER B scales", &e.name)?, "LQER B scales")?;
                        let (rows, cols) = (
                            e.shape.first().copied().unwrap_or(0),
                            e.shape.get(1).copied().unwrap_or(0),
                        );
                        let rank = a.shape.get(1).copied().unwrap_or(0);
                        let groups_ok = b_s.numel() > 0 && b_q.numel() % b_s.numel() == 0;
                        let scales_ok = if asymmetric {
                            a_s.numel() == 1 && groups_ok
                        } else {
                            a_s.shape == [rows] && b_s.shape == [rank]
                        };
                        if e.shape.len() != 2
                            || a.shape != [rows, rank]
                            || b.shape != [rank, cols]
                            || a.dtype != "int8"
                            || b.dtype != "int8"
                            || rank == 0
                            || !scales_ok
                        {
                            return Err(bad(format!(
                                "{}: LQER factors {:?} × {:?} (scales {:?}, {:?}) do not fit {:?}",
                                e.name, a.shape, b.shape, as_.shape, bs.shape, e.shape
                            )));
                        }
                        Some(Box::new(super::schema::LowRank {
                            asymmetric,
                            a_q,
                            a_s,
                            b_q,
                            b_s,
                        }))
                    }
                    _ => return Err(bad(format!("{}: an incomplete LQER correction", e.name))),
                };
                Payload::Quantized {
                    q: HostTensor {
                        dtype: "int8".into(),
                        shape: e.shape.clone(),
                        data,
                    },
                    scale,
                    lowrank,
                    protected: None,
                }
            }
            (None, None, Some(v)) => {
                let values = host(v, slice(v, "values", &e.name)?, "values")?;
                if v.shape != e.shape {
                    return Err(bad(format!(
                        "{}: values of shape {:?} for {:?}",
                        e.name, v.shape, e.shape
                    )));
                }
                Payload::Passthrough { values }
            }
            _ => {
                return Err(bad(format!(
                    "{}: needs symbols and scales, or values",
                    e.name
                )));
            }
        };
        if !(1..=64).contains(&e.bits) {
            return Err(bad(format!("{}: {} bits", e.name, e.bits)));
        }
        tensors.push(QTensor {
            name: e.name.clone(),
            shape: e.shape.clone(),
            scheme: e.scheme.clone(),
            bits: e.bits,
            orig_dtype: e.orig_dtype.clone(),
            payload,
        });
    }
    Ok((header, codec, tensors))
}

#[cfg(test)]
mod span_coding_tests {
    use super::*;

    #[test]
    fn side_spans_round_trip_and_refuse_what_they_cannot_decode() {
        let p = Path::new("t.pglf");
        // fp16-like data: high bytes repetitive, low bytes varied, so the shuffled coding wins.
        let data: Vec<u8> = (0..4096u32)
            .flat_map(|i| [(i * 37 % 251) as u8, 0x3c])
            .collect();
        let (coded, coding) = code_side_span(&data, 2);
        let coding = coding.expect("4 KB of fp16 compresses");
        assert!(coded.len() < data.len() / 2, "{coding}: {}", coded.len());
        assert_eq!(
            decode_side_span(p, &coding, &coded, data.len() as u64).unwrap(),
            data
        );
        // Short spans stay raw.
        assert_eq!(code_side_span(&data[..32], 2), (data[..32].to_vec(), None));
        assert!(
            decode_side_span(p, "lz4", &coded, data.len() as u64)
                .unwrap_err()
                .contains("unknown span coding")
        );
        assert!(
            decode_side_span(p, &coding, &coded, data.len() as u64 - 1).is_err(),
            "more bytes than declared"
        );
        assert!(
            decode_side_span(p, &coding, &coded, data.len() as u64 + 1)
                .unwrap_err()
                .contains("not")
        );
        assert!(decode_side_span(p, "brotli+shuffle99", &coded, 8).is_err());
    }
}
