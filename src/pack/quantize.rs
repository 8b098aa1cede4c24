//! Quantizers over one representation (the [`QTensor`] the artifact readers produce): per-row symmetric grids of
//! 2 to 8 bits, one symbol per byte, fp16 scales, rounding half-to-even like `torch.round`.
//!
//! - [`percentile_int8_state_dict`]: bit-exact with the challenge's `quantize_state_dict_int8` (its quantile
//!   interpolation in f32, clip percentile 99.99984, scale floor 1/127, passthrough rules).
//! - [`gptq_lite_rows`]: the five clip candidates of PR #414, chosen by whole-matrix reconstruction MSE.
//! - [`sdclip_rows`]: clip = k·std(row) (unbiased std, as `Tensor.std`), the SDClip records' rule.

use super::schema::{Payload, QTensor};
use super::torchfile::HostTensor;

/// Names whose tensors the challenge keeps in fp32 (`CONTROL_TENSOR_NAME_PATTERNS`).
pub const CONTROL_PATTERNS: [&str; 9] = [
    "attn_scale",
    "attn_scales",
    "mlp_scale",
    "mlp_scales",
    "resid_mix",
    "resid_mixes",
    "q_gain",
    "skip_weight",
    "skip_weights",
];
/// `INT8_KEEP_FLOAT_MAX_NUMEL`: float tensors this small are passed through.
pub const KEEP_FLOAT_MAX_NUMEL: usize = 65_536;
/// `INT8_CLIP_PERCENTILE / 100`.
pub const INT8_CLIP_Q: f64 = 99.99984 / 100.0;
/// The GPTQ-lite clip candidates (quantiles of |w| per row; 1.0 = row max).
pub const GPTQ_LITE_CANDIDATES: [f64; 5] = [0.9990, 0.9995, 0.9999, 0.99999, 1.0];

/// `torch.quantile(x, q)` on f32 data with linear interpolation, computed as ATen does: the rank `q·(n−1)` in f32,
/// its floor, the weight `rank − floor` in f32, and `torch.lerp`'s two-sided formula.
pub fn torch_quantile(sorted: &[f32], q: f32) -> f32 {
    let n = sorted.len();
    if n == 0 {
        return f32::NAN;
    }
    let rank = q * (n - 1) as f32;
    let below = (rank.floor() as usize).min(n - 1);
    let above = (rank.ceil() as usize).min(n - 1);
    let weight = rank - below as f32;
    lerp(sorted[below], sorted[above], weight)
}

/// `torch.lerp(start, end, weight)` on the CPU: `start + w·(end − start)` when w < 0.5, else `end − (end − start)·(1 − w)`.
pub fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    let diff = end - start;
    if weight.abs() < 0.5 {
        start + weight * diff
    } else {
        end - diff * (1.0 - weight)
    }
}

pub fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|&x| x.to_le_bytes()).collect()
}

fn i8_bytes(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&x| x as u8).collect()
}

/// The largest symbol of a b-bit symmetric grid: 2^(b−1) − 1.
pub fn clip_range(bits: u32) -> i32 {
    (1 << (bits - 1)) - 1
}

fn quantized(name: &str, shape: &[usize], bits: u32, q: Vec<i8>, scale: HostTensor) -> QTensor {
    let layout = if scale.shape.is_empty() {
        "per_tensor"
    } else {
        "per_row"
    };
    QTensor {
        name: name.into(),
        shape: shape.to_vec(),
        scheme: format!("int{bits}_{layout}"),
        bits,
        orig_dtype: "float32".into(),
        payload: Payload::Quantized {
            q: HostTensor {
                dtype: "int8".into(),
                shape: shape.to_vec(),
                data: i8_bytes(&q),
            },
            scale,
            lowrank: None,
            protected: None,
        },
    }
}

fn fp16_scales(v: &[f32]) -> HostTensor {
    HostTensor {
        dtype: "float16".into(),
        shape: vec![v.len()],
        data: f16_bytes(v),
    }
}

/// `quantize_float_tensor` for a 2-D tensor: per-row quantile clip, scale = max(clip/127, 1/127) in f32,
/// q = clamp(round(clamp(w, ±clip) / scale), ±127); the scale is stored as fp16 after q is computed with the f32 one.
pub fn percentile_int8_rows(name: &str, w: &[f32], rows: usize, cols: usize) -> QTensor {
    let q_level = INT8_CLIP_Q as f32;
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(rows);
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        let mut sorted: Vec<f32> = row.iter().map(|x| x.abs()).collect();
        sorted.sort_by(f32::total_cmp);
        let clip = if cols > 0 {
            torch_quantile(&sorted, q_level)
        } else {
            0.0
        };
        let scale = (clip / 127.0).max(1.0f32 / 127.0);
        for &x in row {
            let c = x.min(clip).max(-clip);
            q.push((c / scale).round_ties_even().clamp(-127.0, 127.0) as i8);
        }
        scales.push(scale);
    }
    quantized(name, &[rows, cols], 8, q, fp16_scales(&scales))
}

/// `quantize_float_tensor` for a tensor that is not 2-D: one f32 scale for the whole tensor.
pub fn percentile_int8_tensor(name: &str, w: &[f32], shape: &[usize]) -> QTensor {
    let mut sorted: Vec<f32> = w.iter().map(|x| x.abs()).collect();
    sorted.sort_by(f32::total_cmp);
    let clip = if w.is_empty() {
        0.0
    } else {
        torch_quantile(&sorted, INT8_CLIP_Q as f32)
    } as f64;
    // Python: scale = clip_abs / 127.0 in double, then stored as an f32 tensor.
    let scale = if clip > 0.0 {
        (clip / 127.0) as f32
    } else {
        1.0
    };
    let clip32 = clip as f32;
    let q = w
        .iter()
        .map(|&x| {
            (x.min(clip32).max(-clip32) / scale)
                .round_ties_even()
                .clamp(-127.0, 127.0) as i8
        })
        .collect();
    quantized(
        name,
        shape,
        8,
        q,
        HostTensor {
            dtype: "float32".into(),
            shape: vec![],
            data: f32_bytes(&[scale]),
        },
    )
}

/// One tensor of a state dict as the challenge's exporter treats it; float tensors of at most `keep_float_max_numel`
/// elements ([`KEEP_FLOAT_MAX_NUMEL`] in the challenge) are passed through.
pub fn percentile_int8_entry(
    name: &str,
    values: &HostTensor,
    keep_float_max_numel: usize,
) -> QTensor {
    let passthrough = |v: HostTensor| QTensor {
        name: name.into(),
        shape: v.shape.clone(),
        scheme: format!(
            "passthrough_{}",
            if v.dtype == "float16" { "fp16" } else { "fp32" }
        ),
        bits: if v.dtype == "float16" { 16 } else { 32 },
        orig_dtype: values.dtype.clone(),
        payload: Payload::Passthrough { values: v },
    };
    if !values.is_float() {
        let mut t = passthrough(values.clone());
        t.scheme = format!("passthrough_{}", values.dtype);
        return t;
    }
    let w = values.to_f32();
    if values.numel() <= keep_float_max_numel {
        if CONTROL_PATTERNS.iter().any(|p| name.contains(p)) {
            return passthrough(HostTensor {
                dtype: "float32".into(),
                shape: values.shape.clone(),
                data: f32_bytes(&w),
            });
        }
        if values.dtype == "float32" || values.dtype == "bfloat16" {
            return passthrough(HostTensor {
                dtype: "float16".into(),
                shape: values.shape.clone(),
                data: f16_bytes(&w),
            });
        }
        return passthrough(values.clone());
    }
    let mut t = if let [rows, cols] = values.shape[..] {
        percentile_int8_rows(name, &w, rows, cols)
    } else {
        percentile_int8_tensor(name, &w, &values.shape)
    };
    t.orig_dtype = values.dtype.clone();
    t
}

/// `_quantize_gate_int8_row` (records 04-19 … 04-29, `GATED_ATTN_QUANT_GATE`): per-row scale = fp16(max|row| / 127)
/// (max clamped to ≥ 1e-10), q = clamp(round(w / scale), ±127), half-to-even.
pub fn gate_int8_rows(name: &str, w: &[f32], rows: usize, cols: usize) -> QTensor {
    let scales: Vec<f32> = w
        .chunks(cols.max(1))
        .map(|row| fp16_round(row.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-10) / 127.0))
        .collect();
    let (q, _) = row_quantize(w, cols, 8, &scales);
    let mut t = quantized(name, &[rows, cols], 8, q, fp16_scales(&scales));
    t.scheme = "int8_gate_per_row".into();
    t
}

/// The int6-era percentile rule at any bit width: per-row clip = quantile(|w|, 0.9999984), scale =
/// max(clip/cr, 1/cr) rounded to fp16, q = clamp(round(w / scale), ±cr).
pub fn percentile_rows(name: &str, w: &[f32], rows: usize, cols: usize, bits: u32) -> QTensor {
    let cr = clip_range(bits) as f32;
    let scales: Vec<f32> = w
        .chunks(cols.max(1))
        .map(|row| {
            let mut s: Vec<f32> = row.iter().map(|x| x.abs()).collect();
            s.sort_by(f32::total_cmp);
            fp16_round((torch_quantile(&s, INT8_CLIP_Q as f32) / cr).max(1.0 / cr))
        })
        .collect();
    let (q, _) = row_quantize(w, cols, bits, &scales);
    quantized(name, &[rows, cols], bits, q, fp16_scales(&scales))
}

/// Reconstruction error Σ(w − q·s)² of a row-quantized matrix.
fn row_quantize(w: &[f32], cols: usize, bits: u32, scales: &[f32]) -> (Vec<i8>, f64) {
    let cr = clip_range(bits) as f32;
    let mut q = Vec::with_capacity(w.len());
    let mut err = 0f64;
    for (r, row) in w.chunks(cols.max(1)).enumerate() {
        let s = scales[r];
        for &x in row {
            let v = (x / s).round_ties_even().clamp(-cr, cr);
            q.push(v as i8);
            let d = (x - v * s) as f64;
            err += d * d;
        }
    }
    (q, err)
}

fn fp16_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// GPTQ-lite (PR #414): for each of the five clip candidates, per-row scale = max(quantile(|w|, c)/cr, 1/cr) rounded
/// to fp16, q = clamp(round(w / scale), ±cr); the candidate with the least whole-matrix MSE wins.
pub fn gptq_lite_rows(name: &str, w: &[f32], rows: usize, cols: usize, bits: u32) -> QTensor {
    let cr = clip_range(bits) as f32;
    let sorted_rows: Vec<Vec<f32>> = w
        .chunks(cols.max(1))
        .map(|row| {
            let mut s: Vec<f32> = row.iter().map(|x| x.abs()).collect();
            s.sort_by(f32::total_cmp);
            s
        })
        .collect();
    let mut best: Option<(Vec<i8>, Vec<f32>, f64)> = None;
    for c in GPTQ_LITE_CANDIDATES {
        let scales: Vec<f32> = sorted_rows
            .iter()
            .map(|s| {
                let clip = if c < 1.0 {
                    torch_quantile(s, c as f32)
                } else {
                    s.last().copied().unwrap_or(0.0)
                };
                fp16_round((clip / cr).max(1.0 / cr))
            })
            .collect();
        let (q, err) = row_quantize(w, cols, bits, &scales);
        if best.as_ref().is_none_or(|b| err < b.2) {
            best = Some((q, scales, err));
        }
    }
    let (q, scales, _) = best.expect("five candidates");
    quantized(name, &[rows, cols], bits, q, fp16_scales(&scales))
}

/// A per-row quantized tensor from symbols already computed and their (fp16-exact) row scales.
pub fn quantized_rows(
    name: &str,
    rows: usize,
    cols: usize,
    bits: u32,
    q: Vec<i8>,
    scales: &[f32],
) -> QTensor {
    quantized(name, &[rows, cols], bits, q, fp16_scales(scales))
}

/// SDClip: per-row scale = max(k·std(row)/cr, 1e-10) rounded to fp16 (std unbiased), q = clamp(round(w / scale), ±cr).
pub fn sdclip_rows(name: &str, w: &[f32], rows: usize, cols: usize, bits: u32, k: f32) -> QTensor {
    let cr = clip_range(bits) as f32;
    let scales: Vec<f32> = w
        .chunks(cols.max(1))
        .map(|row| {
            let n = row.len() as f64;
            let mean = row.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var =
                row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            let std = var.sqrt() as f32;
            fp16_round((k * std / cr).max(1e-10))
        })
        .collect();
    let (q, _) = row_quantize(w, cols, bits, &scales);
    quantized(name, &[rows, cols], bits, q, fp16_scales(&scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_torch() {
        let v = [0.0f32, 1.0, 2.0, 3.0];
        assert_eq!(torch_quantile(&v, 0.5), 1.5);
        assert_eq!(torch_quantile(&v, 1.0), 3.0);
        assert_eq!(torch_quantile(&v, 0.0), 0.0);
    }

    #[test]
    fn grids_respect_their_bit_width() {
        let w: Vec<f32> = (0..64 * 32)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for bits in 2..=8 {
            for t in [
                gptq_lite_rows("w", &w, 64, 32, bits),
                sdclip_rows("w", &w, 64, 32, bits, 3.0),
            ] {
                let (syms, _) = t.symbols_and_scales().unwrap();
                let cr = clip_range(bits) as i64;
                assert!(syms.iter().all(|&s| (-cr..=cr).contains(&s)), "bits {bits}");
            }
        }
    }
}
