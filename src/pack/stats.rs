//! The per-tensor statistics `pgolf inspect` reports: symbol range, order-0 entropy, clip saturation, scale
//! statistics, raw bytes, each tensor's share of the compressed bytes measured with the artifact's own coder, and
//! the coders compared on the artifact's symbols.

use serde::Serialize;

use super::artifact::Artifact;
use super::codec::Coder;
use super::outer;
use super::rans;
use super::schema::{Payload, QTensor};

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
    /// AWQ-lite groups kept on a finer grid (#1945, #2014); their symbols are left out of `saturation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awq_lite: Option<AwqLite>,
}

/// A tensor's AWQ-lite groups, as its artifact stores them.
#[derive(Clone, Debug, Serialize)]
pub struct AwqLite {
    /// The finer grid's bits (8: symbols in [−127, 127]).
    pub bits: u32,
    pub group_size: usize,
    /// First column of each group.
    pub starts: Vec<usize>,
    /// Median of the groups' own row scales.
    pub scale_median: f32,
}

/// Order-0 entropy in bits per symbol.
pub fn order0_entropy<I: IntoIterator<Item = i64>>(symbols: I) -> f64 {
    // Counted in a BTreeMap so the sum runs in symbol order: the same bits on every run.
    let mut counts = std::collections::BTreeMap::new();
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
            // Where the container gives each tensor's bytes exactly, no tensor is re-compressed to estimate them.
            let s = one_tensor(t, coder.filter(|_| artifact.stored_bytes.is_none()));
            progress(i + 1, n);
            s
        })
        .collect();
    if let Some(stored) = &artifact.stored_bytes {
        for (s, &b) in stats.iter_mut().zip(stored) {
            s.coded_bytes = Some(b as usize);
        }
    }
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
    let protected = match &t.payload {
        Payload::Quantized {
            protected: Some(p), ..
        } => Some(p),
        _ => None,
    };
    let cols = t.shape.get(1).copied().unwrap_or(1).max(1);
    let mut protected_column = vec![false; if protected.is_some() { cols } else { 0 }];
    if let Some(p) = protected {
        for s in p.column_starts() {
            let end = (s + p.group_size()).min(cols);
            protected_column[s.min(end)..end].fill(true);
        }
    }
    let in_group = |i: usize| protected.is_some() && protected_column[i % cols];
    let awq_lite = protected.map(|p| {
        let mut s = p.scale_hi.to_f32();
        s.sort_by(f32::total_cmp);
        AwqLite {
            bits: p.bits,
            group_size: p.group_size(),
            starts: p.column_starts(),
            scale_median: s.get(s.len() / 2).copied().unwrap_or(0.0),
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
            let base: Vec<i64> = symbols
                .iter()
                .enumerate()
                .filter(|(i, _)| !in_group(*i))
                .map(|(_, &s)| s)
                .collect();
            base.iter().filter(|&&s| s.abs() >= cr).count() as f64 / base.len().max(1) as f64
        }),
        scales: scale_stats,
        raw_bytes: raw.len(),
        coded_bytes: coder.map(|c| c.compress(&raw).len()),
        share: None,
        awq_lite,
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
    measure("rans (pgolf)".into(), &|s| rans::encode(s).len());
    for c in Coder::ALL {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_uniform_symbols() {
        assert!((order0_entropy([1, 2, 3, 4]) - 2.0).abs() < 1e-12);
        assert_eq!(order0_entropy([7, 7, 7]), 0.0);
    }
}
