//! Loading any artifact (safetensors, torch `.pt`, compressed `.ptz`) into [`QTensor`]s, and the per-tensor
//! statistics `pgolf inspect` reports: symbol range, order-0 entropy, clip saturation, scale statistics, raw bytes,
//! and each tensor's share of the compressed bytes measured with the artifact's own coder.

use std::io::{Read, Write};
use std::path::Path;

use serde::Serialize;

use super::outer::{self, Layer};
use super::schema::{self, Payload, QTensor};
use super::torchfile::{self, HostTensor};
use super::{Limits, PackError, Result, container, pgrp};

/// The challenge's cap on code + compressed model bytes (decimal).
pub const BUDGET_BYTES: u64 = 16_000_000;

#[derive(Clone, Debug)]
pub struct Artifact {
    pub file_bytes: u64,
    pub layers: Vec<Layer>,
    /// `safetensors` or `torch.save`.
    pub container: &'static str,
    /// `int8_clean_per_row_v1`, `w_m_mixed`, `typed_entries`, `state_dict`, `pgolf-v1`.
    pub format: String,
    pub tensors: Vec<QTensor>,
    /// The model config a pgolf artifact carries.
    pub config: Option<serde_json::Value>,
    /// Byte strings stored next to the weights in a torch.save dictionary (seed 002's `"ngram"` prior).
    pub bundled: Vec<(String, Vec<u8>)>,
}

impl Artifact {
    /// The compression layer the artifact was written with (the outermost non-shuffle layer), if any.
    pub fn coder(&self) -> Option<Coder> {
        if self.layers.contains(&Layer::PerGroup) {
            // lrzip groups plus a brotli remainder: no single coder to measure a tensor alone with.
            return None;
        }
        self.layers.iter().find_map(|l| match l {
            Layer::Zlib => Some(Coder::Zlib),
            Layer::Zstd => Some(Coder::Zstd),
            Layer::Xz => Some(Coder::Xz),
            Layer::Brotli => Some(Coder::Brotli),
            Layer::RawLzma2 => Some(Coder::Xz),
            Layer::Pgolf { codec } => match codec.as_str() {
                "zlib" => Some(Coder::Zlib),
                "zstd" => Some(Coder::Zstd),
                "xz" => Some(Coder::Xz),
                "brotli" => Some(Coder::Brotli),
                _ => None,
            },
            Layer::ByteShuffle { .. } | Layer::PerGroup => None,
        })
    }
}

/// Reads an artifact from disk.
pub fn load_artifact(path: &Path, limits: &Limits) -> Result<Artifact> {
    let bytes = std::fs::read(path).map_err(|source| PackError::Io {
        path: path.into(),
        source,
    })?;
    load_artifact_bytes(path, bytes, limits)
}

/// Reads an artifact held in memory; `path` names it in errors.
pub fn load_artifact_bytes(path: &Path, bytes: Vec<u8>, limits: &Limits) -> Result<Artifact> {
    let file_bytes = bytes.len() as u64;
    if is_safetensors(&bytes) {
        let tensors = read_safetensors(path, &bytes)?;
        return Ok(Artifact {
            config: None,
            file_bytes,
            layers: Vec::new(),
            container: "safetensors",
            format: "state_dict".into(),
            tensors,
            bundled: Vec::new(),
        });
    }
    if container::is_pgolf(&bytes) {
        let (header, codec, tensors) = container::decode(path, &bytes, limits)?;
        return Ok(Artifact {
            file_bytes,
            layers: vec![Layer::Pgolf {
                codec: codec.name().into(),
            }],
            container: "pgolf",
            format: header.format,
            tensors,
            config: header.config,
            bundled: Vec::new(),
        });
    }
    let (mut layers, inner) = outer::peel(path, bytes, limits)?;
    let (obj, container) = if inner.starts_with(pgrp::MAGIC) {
        layers.push(Layer::PerGroup);
        (pgrp::decode(path, &inner, limits)?, "pgrp")
    } else {
        (torchfile::load_torch(path, &inner, limits)?, "torch.save")
    };
    let (format, tensors) = schema::interpret(path, &obj)?;
    let bundled = obj
        .entries()
        .into_iter()
        .filter_map(|(k, v)| match v {
            torchfile::Obj::Bytes(b) => Some((k.to_string(), b.clone())),
            _ => None,
        })
        .collect();
    Ok(Artifact {
        file_bytes,
        layers,
        container,
        format,
        tensors,
        config: None,
        bundled,
    })
}

fn is_safetensors(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        n > 1 && n < bytes.len() as u64 && bytes[8] == b'{'
    }
}

fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<Vec<QTensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| PackError::Format {
        path: path.into(),
        message: format!("safetensors: {e}"),
    })?;
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let view = st.tensor(&name).map_err(|e| PackError::Format {
            path: path.into(),
            message: e.to_string(),
        })?;
        use safetensors::Dtype as D;
        let dtype = match view.dtype() {
            D::F32 => "float32",
            D::F16 => "float16",
            D::BF16 => "bfloat16",
            D::F64 => "float64",
            D::I8 => "int8",
            D::U8 => "uint8",
            D::I16 => "int16",
            D::I32 => "int32",
            D::I64 => "int64",
            D::BOOL => "bool",
            D::F8_E4M3 => "float8_e4m3fn",
            other => {
                return Err(PackError::Unsupported {
                    path: path.into(),
                    what: format!("tensor {name} of dtype {other:?}"),
                });
            }
        };
        let t = HostTensor {
            dtype: dtype.into(),
            shape: view.shape().to_vec(),
            data: view.data().to_vec(),
        };
        out.push(QTensor {
            name: name.clone(),
            shape: t.shape.clone(),
            scheme: format!("passthrough_{dtype}"),
            bits: (t.data.len() * 8 / t.numel().max(1)) as u32,
            orig_dtype: dtype.into(),
            payload: Payload::Passthrough { values: t },
        });
    }
    Ok(out)
}

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
            Coder::Brotli => {
                let mut out = Vec::new();
                let params = brotli::enc::BrotliEncoderParams {
                    quality: 11,
                    lgwin: 24,
                    ..Default::default()
                };
                brotli::BrotliCompress(&mut &data[..], &mut out, &params)
                    .expect("in-memory brotli");
                out
            }
            other => other.compress(data),
        }
    }

    /// Decompresses what [`Coder::compress`] wrote, capped at `limit` bytes.
    pub fn decompress(&self, data: &[u8], limit: u64) -> Result<Vec<u8>> {
        let path = Path::new("<memory>");
        match outer::peel_one(path, data.to_vec(), limit)? {
            Some((_, out)) => Ok(out),
            None => Err(PackError::Format {
                path: path.into(),
                message: "not compressed".into(),
            }),
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
            Coder::Brotli => {
                let mut out = Vec::new();
                let params = brotli::enc::BrotliEncoderParams {
                    quality: 11,
                    lgwin: 22,
                    ..Default::default()
                };
                brotli::BrotliCompress(&mut &data[..], &mut out, &params)
                    .expect("in-memory brotli");
                out
            }
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ScaleStats {
    pub count: usize,
    pub min: f32,
    pub median: f32,
    pub max: f32,
    /// Fraction of scales at the legacy floor 1/clip_range (the fixed-step quirk).
    pub at_floor: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TensorStats {
    pub name: String,
    pub shape: Vec<usize>,
    pub scheme: String,
    pub bits: u32,
    pub params: usize,
    /// Smallest and largest stored symbol (quantized tensors).
    pub symbol_min: Option<i64>,
    pub symbol_max: Option<i64>,
    /// Order-0 entropy of the stored symbols, bits per symbol (element bit patterns for passthrough tensors).
    pub entropy_bits: f64,
    /// Fraction of symbols at ±clip_range.
    pub saturation: Option<f64>,
    pub scales: Option<ScaleStats>,
    pub raw_bytes: usize,
    /// This tensor's raw bytes compressed alone with the artifact's coder.
    pub coded_bytes: Option<usize>,
    /// coded_bytes / Σ coded_bytes.
    pub share: Option<f64>,
}

/// Order-0 entropy in bits per symbol.
pub fn order0_entropy<I: IntoIterator<Item = i64>>(symbols: I) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0u64;
    for s in symbols {
        *counts.entry(s).or_insert(0u64) += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

/// Statistics of every tensor; `coder` (when given) measures each tensor's compressed bytes.
pub fn tensor_stats(
    artifact: &Artifact,
    coder: Option<Coder>,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<TensorStats> {
    let n = artifact.tensors.len();
    let mut stats: Vec<TensorStats> = artifact
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let s = one_tensor(t, coder);
            progress(i + 1, n);
            s
        })
        .collect();
    let total: usize = stats.iter().filter_map(|s| s.coded_bytes).sum();
    if total > 0 {
        for s in &mut stats {
            s.share = s.coded_bytes.map(|c| c as f64 / total as f64);
        }
    }
    stats
}

fn one_tensor(t: &QTensor, coder: Option<Coder>) -> TensorStats {
    let raw = t.stored_bytes();
    let (symbols, scales) = match t.symbols_and_scales() {
        Some((symbols, scales)) => (symbols, Some(scales)),
        None => {
            let Payload::Passthrough { values } = &t.payload else {
                unreachable!("only passthrough has no symbols")
            };
            let width = (values.data.len() / values.numel().max(1)).clamp(1, 8);
            let patterns = values
                .data
                .chunks_exact(width)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b[..width].copy_from_slice(c);
                    i64::from_le_bytes(b)
                })
                .collect();
            (patterns, None)
        }
    };
    let quantized = scales.is_some();
    // Saturation and the legacy scale floor are properties of the per-row integer grids (int2..int8, gates).
    let grid = matches!(t.payload, Payload::Quantized { .. });
    let cr = t.clip_range();
    let scale_stats = scales.map(|mut s| {
        let floor = 1.0 / cr.max(1) as f32;
        let at_floor = if grid {
            s.iter()
                .filter(|&&x| (x - floor).abs() <= floor * 1e-3)
                .count() as f64
                / s.len().max(1) as f64
        } else {
            0.0
        };
        s.sort_by(f32::total_cmp);
        ScaleStats {
            count: s.len(),
            min: s.first().copied().unwrap_or(0.0),
            median: s.get(s.len() / 2).copied().unwrap_or(0.0),
            max: s.last().copied().unwrap_or(0.0),
            at_floor,
        }
    });
    TensorStats {
        name: t.name.clone(),
        shape: t.shape.clone(),
        scheme: t.scheme.clone(),
        bits: t.bits,
        params: t.params(),
        symbol_min: quantized.then(|| symbols.iter().copied().min().unwrap_or(0)),
        symbol_max: quantized.then(|| symbols.iter().copied().max().unwrap_or(0)),
        entropy_bits: order0_entropy(symbols.iter().copied()).abs(),
        saturation: grid.then(|| {
            symbols.iter().filter(|&&s| s.abs() >= cr).count() as f64 / symbols.len().max(1) as f64
        }),
        scales: scale_stats,
        raw_bytes: raw.len(),
        coded_bytes: coder.map(|c| c.compress(&raw).len()),
        share: None,
    }
}

/// One coder's size for a set of symbols, next to their order-0 entropy.
#[derive(Clone, Debug, Serialize)]
pub struct CoderSize {
    pub coder: String,
    pub bytes: u64,
    /// bytes / (order-0 entropy in bytes).
    pub over_entropy: f64,
    pub bits_per_symbol: f64,
    pub seconds: f64,
}

/// The symbols of every quantized tensor, each coded on its own by every coder (zlib 9, zstd 22, xz 9e, brotli 11
/// with lgwin 24 as pack uses it, each with and without a stride-2 shuffle, and pgolf's rANS), summed over tensors,
/// against Σ order-0 entropy. Returns (entropy bytes, symbols, sizes).
pub fn coder_comparison(artifact: &Artifact) -> (f64, u64, Vec<CoderSize>) {
    let streams: Vec<Vec<i8>> = artifact
        .tensors
        .iter()
        .filter_map(|t| t.symbols_and_scales())
        .map(|(s, _)| s.iter().map(|&x| x as i8).collect())
        .collect();
    let n: u64 = streams.iter().map(|s| s.len() as u64).sum();
    let entropy_bytes: f64 = streams
        .iter()
        .map(|s| order0_entropy(s.iter().map(|&x| x as i64)) * s.len() as f64 / 8.0)
        .sum();
    let mut out = Vec::new();
    let mut measure = |name: String, f: &dyn Fn(&[i8]) -> usize| {
        let t = std::time::Instant::now();
        let bytes: u64 = streams.iter().map(|s| f(s) as u64).sum();
        out.push(CoderSize {
            coder: name,
            bytes,
            over_entropy: bytes as f64 / entropy_bytes.max(1e-9),
            bits_per_symbol: 8.0 * bytes as f64 / n.max(1) as f64,
            seconds: t.elapsed().as_secs_f64(),
        });
    };
    let raw = |s: &[i8]| s.iter().map(|&x| x as u8).collect::<Vec<u8>>();
    measure("rans (pgolf)".into(), &|s| super::rans::encode(s).len());
    for c in [Coder::Zlib, Coder::Zstd, Coder::Xz, Coder::Brotli] {
        measure(c.describe().replace("lgwin 22", "lgwin 24"), &|s| {
            c.compress_for_pack(&raw(s)).len()
        });
        measure(
            format!(
                "{} + shuffle 2",
                c.describe().replace("lgwin 22", "lgwin 24")
            ),
            &|s| c.compress_for_pack(&outer::shuffle(&raw(s), 2)).len(),
        );
    }
    (entropy_bytes, n, out)
}

/// Code bytes as the challenge counts them: the file's bytes, and for a self-extracting wrapper
/// (`exec(<lzma|brotli>.decompress(<base64>.b85decode("…")))`) also the decoded source's size.
#[derive(Clone, Debug, Serialize)]
pub struct CodeSize {
    pub counted_bytes: u64,
    pub wrapper: Option<String>,
    pub decoded_bytes: Option<u64>,
}

pub fn code_size(path: &Path, limits: &Limits) -> Result<CodeSize> {
    let bytes = std::fs::read(path).map_err(|source| PackError::Io {
        path: path.into(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let mut out = CodeSize {
        counted_bytes: bytes.len() as u64,
        wrapper: None,
        decoded_bytes: None,
    };
    let Some(start) = text.find("b85decode(") else {
        return Ok(out);
    };
    let rest = &text[start + "b85decode(".len()..];
    let rest = rest.trim_start_matches('b');
    let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return Ok(out);
    };
    let Some(end) = rest[1..].find(quote) else {
        return Ok(out);
    };
    let payload = b85decode(&rest[1..1 + end]).map_err(|m| PackError::Format {
        path: path.into(),
        message: format!("code wrapper: {m}"),
    })?;
    let corrupt = |layer: &'static str, e: std::io::Error| PackError::Corrupt {
        path: path.into(),
        layer,
        message: e.to_string(),
    };
    let limit = limits.max_decompressed_bytes;
    let (kind, decoded) = if text.contains("brotli") {
        let mut d = Vec::new();
        brotli::Decompressor::new(payload.as_slice(), 1 << 16)
            .take(limit + 1)
            .read_to_end(&mut d)
            .map_err(|e| corrupt("brotli", e))?;
        ("brotli+base85", d)
    } else if text.contains("FORMAT_RAW") {
        let mut opts = liblzma::stream::LzmaOptions::new_preset(9).expect("preset 9");
        opts.dict_size(1 << 26);
        let mut filters = liblzma::stream::Filters::new();
        filters.lzma2(&opts);
        let stream = liblzma::stream::Stream::new_raw_decoder(&filters).expect("raw LZMA2 decoder");
        let mut d = Vec::new();
        liblzma::read::XzDecoder::new_stream(payload.as_slice(), stream)
            .take(limit + 1)
            .read_to_end(&mut d)
            .map_err(|e| corrupt("lzma2", e))?;
        ("raw-lzma2+base85", d)
    } else {
        let stream =
            liblzma::stream::Stream::new_auto_decoder(limit, 0).expect("lzma auto decoder");
        let mut d = Vec::new();
        liblzma::read::XzDecoder::new_stream(payload.as_slice(), stream)
            .take(limit + 1)
            .read_to_end(&mut d)
            .map_err(|e| corrupt("lzma", e))?;
        ("lzma+base85", d)
    };
    out.wrapper = Some(kind.into());
    out.decoded_bytes = Some(decoded.len() as u64);
    Ok(out)
}

/// Python's `base64.b85decode` (RFC 1924 alphabet), including a short final group.
pub fn b85decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    const ALPHABET: &[u8] =
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";
    let mut table = [255u8; 256];
    for (i, &c) in ALPHABET.iter().enumerate() {
        table[c as usize] = i as u8;
    }
    let chars: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(chars.len() * 4 / 5);
    for chunk in chars.chunks(5) {
        let pad = 5 - chunk.len();
        let mut acc: u64 = 0;
        for i in 0..5 {
            let c = chunk.get(i).copied().unwrap_or(b'~');
            let v = table[c as usize];
            if v == 255 {
                return Err(format!("invalid base85 character {:?}", c as char));
            }
            acc = acc * 85 + v as u64;
        }
        if acc > u32::MAX as u64 {
            return Err("base85 group overflows".into());
        }
        out.extend_from_slice(&(acc as u32).to_be_bytes()[..4 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b85_decodes_python_output() {
        // base64.b85encode(b"hello world") == b'Xk~0{Zy<MXa%^M'
        assert_eq!(b85decode("Xk~0{Zy<MXa%^M").unwrap(), b"hello world");
        assert_eq!(b85decode("VPa!sWo7").unwrap(), b"abcdef");
    }

    #[test]
    fn entropy_of_uniform_symbols() {
        assert!((order0_entropy([1, 2, 3, 4]) - 2.0).abs() < 1e-12);
        assert_eq!(order0_entropy([7, 7, 7]), 0.0);
    }
}
