//! Turning a checkpoint into a pgolf artifact: per-group quantization settings, and the budget search that picks
//! the clip widths or bit widths with the real coder until artifact + code fit under the cap with a margin.

use rayon::prelude::*;
use serde::Serialize;

use super::codec::Codec;
use super::container;
use super::quantize;
use super::schema::{LowRank, Payload, QTensor};
use super::torchfile::HostTensor;
use super::{PackError, Result};

/// How a matrix is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Per-row quantile clip (0.9999984) with the legacy scale floor 1/cr; at 8 bits exactly the challenge's exporter.
    Percentile,
    /// Five clip candidates by whole-matrix MSE (PR #414).
    GptqLite,
    /// clip = k·std(row) (PR #1394).
    Sdclip,
    /// Full-Hessian GPTQ with SDClip scales (the records since 04-05); needs calibration Hessians.
    Gptq,
}

/// Tensor groups that get their own bits and k: names with tok_emb/lm_head, `.attn.`, `.mlp.`, and the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Embedding,
    Attention,
    Mlp,
    Other,
}

pub const GROUPS: [Group; 4] = [Group::Embedding, Group::Attention, Group::Mlp, Group::Other];

pub fn group_of(name: &str) -> Group {
    if name.contains("tok_emb") || name.contains("lm_head") {
        Group::Embedding
    } else if name.contains(".attn.") {
        Group::Attention
    } else if name.contains(".mlp.") {
        Group::Mlp
    } else {
        Group::Other
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GroupSetting {
    pub bits: u32,
    /// SDClip's k (clip = k·std(row)); unused by the other schemes.
    pub k: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PackOptions {
    pub scheme: Scheme,
    /// Indexed like [`GROUPS`].
    pub groups: [GroupSetting; 4],
    #[serde(skip)]
    pub codec: Codec,
    pub shuffle: usize,
    /// Float tensors with at most this many elements are passed through (fp16; control tensors fp32).
    pub keep_float_max_numel: usize,
    /// GPTQ's input Hessians by weight name (from [`super::calibrate`]); a matrix without one is rounded by SDClip.
    #[serde(skip)]
    pub hessians: Option<std::sync::Arc<std::collections::BTreeMap<String, Vec<f32>>>>,
    /// What the calibration read, stored in the artifact header.
    #[serde(skip)]
    pub calibration: Option<serde_json::Value>,
    /// LQER corrections on the matrices with the largest quantization error (None: off).
    pub lqer: Option<LqerOptions>,
    /// Attention-gate matrices (`*.attn_gate_w`, 32–8,192 values) as int8 rows, as the records since 04-19.
    pub gate_int8: bool,
    /// Per-tensor settings (bits, k) that override the tensor's group, as the rate–distortion fit chooses them.
    pub overrides: std::collections::BTreeMap<String, GroupSetting>,
    /// Keep control tensors (`attn_scale`, `resid_mix`, `q_gain`, …) in fp16 like every other small tensor, as the
    /// GPTQ records store them, instead of the baseline's fp32.
    pub control_fp16: bool,
    /// Per-tensor LQER ranks chosen by the rate–distortion fit (0: no correction); when set they replace the
    /// top-k rule of `lqer`.
    pub lqer_ranks: std::collections::BTreeMap<String, usize>,
}

/// LQER settings, named as the records' environment (`LQER_RANK`, `LQER_TOP_K`, `LQER_ASYM_ENABLED`,
/// `LQER_ASYM_GROUP`, `LQER_FACTOR_BITS`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LqerOptions {
    pub rank: usize,
    pub top_k: usize,
    pub asymmetric: bool,
    pub group: usize,
    pub factor_bits: u32,
}

/// ‖W − Wq‖ of one quantized matrix against its float original: the error matrix, or None where LQER does not apply
/// (not a 2-D matrix quantized here, already corrected, an attention gate).
fn lqer_error(orig: &QTensor, q: &QTensor) -> Option<Vec<f32>> {
    if !matches!(q.payload, Payload::Quantized { lowrank: None, .. }) || q.shape.len() != 2 {
        return None;
    }
    if !(q.bits < 8 || q.scheme.starts_with("gptq") || q.scheme.starts_with("int")) {
        return None;
    }
    if matches!(orig.payload, Payload::Quantized { .. }) || orig.name.contains("attn_gate") {
        return None;
    }
    let (w, d) = (orig.dequantize(), q.dequantize());
    Some(w.iter().zip(&d).map(|(a, b)| a - b).collect())
}

/// Attaches the rank-`rank` correction of the error `e` to the quantized matrix `t`.
fn attach_lqer(t: &mut QTensor, e: &[f32], rank: usize, o: &LqerOptions) {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let f = super::lqer::lqer_factors(e, rows, cols, rank, o.asymmetric, o.group, o.factor_bits);
    let host_i8 = |v: &[i8], shape: Vec<usize>| HostTensor {
        dtype: "int8".into(),
        shape,
        data: v.iter().map(|&x| x as u8).collect(),
    };
    let host_f16 = |v: &[f32], shape: Vec<usize>| HostTensor {
        dtype: "float16".into(),
        shape,
        data: quantize::f16_bytes(v),
    };
    let lr = LowRank {
        asymmetric: f.asymmetric,
        a_q: host_i8(&f.a_q, vec![rows, f.rank]),
        a_s: host_f16(&f.a_s, if f.asymmetric { vec![] } else { vec![rows] }),
        b_q: host_i8(&f.b_q, vec![f.rank, cols]),
        b_s: host_f16(&f.b_s, vec![f.b_s.len()]),
    };
    if let Payload::Quantized { lowrank, .. } = &mut t.payload {
        *lowrank = Some(Box::new(lr));
    }
    t.scheme = format!(
        "{}+{}",
        t.scheme,
        if f.asymmetric { "lqer_asym" } else { "lqer" }
    );
}

/// Adds LQER corrections as `gptq_mixed_quantize` does: rank `o.rank` on the `top_k` quantized matrices with the
/// largest ‖W − Wq‖_F; or, where the rate–distortion fit chose them (`ranks`, by name), each matrix's own rank.
fn add_lqer(
    checkpoint: &[QTensor],
    tensors: &mut [QTensor],
    o: &LqerOptions,
    ranks: &std::collections::BTreeMap<String, usize>,
) {
    let mut candidates: Vec<(usize, f64, Vec<f32>)> = tensors
        .iter()
        .enumerate()
        // With per-tensor ranks, only the tensors given one need their error matrix.
        .filter(|(_, q)| ranks.is_empty() || ranks.get(&q.name).is_some_and(|&r| r > 0))
        .filter_map(|(i, q)| {
            let orig = checkpoint.iter().find(|t| t.name == q.name)?;
            let e = lqer_error(orig, q)?;
            let norm = e.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            Some((i, norm, e))
        })
        .collect();
    if ranks.is_empty() {
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        candidates.truncate(o.top_k);
    }
    let corrections: Vec<(usize, usize, Vec<f32>)> = candidates
        .into_iter()
        .filter_map(|(i, _, e)| {
            let rank = if ranks.is_empty() {
                o.rank
            } else {
                ranks.get(&tensors[i].name).copied().unwrap_or(0)
            };
            (rank > 0).then_some((i, rank, e))
        })
        .collect();
    for (i, rank, e) in corrections {
        attach_lqer(&mut tensors[i], &e, rank, o);
    }
}

impl PackOptions {
    pub fn setting(&self, g: Group) -> GroupSetting {
        self.groups[GROUPS.iter().position(|x| *x == g).expect("a group")]
    }
}

/// Quantizes one checkpoint tensor under the options (passthrough rules as the challenge's exporter).
pub fn quantize_tensor(t: &QTensor, opts: &PackOptions) -> Result<QTensor> {
    let Payload::Passthrough { values } = &t.payload else {
        return Ok(t.clone());
    };
    let set = opts
        .overrides
        .get(&t.name)
        .copied()
        .unwrap_or_else(|| opts.setting(group_of(&t.name)));
    if opts.gate_int8
        && values.is_float()
        && values.shape.len() == 2
        && t.name.ends_with(".attn_gate_w")
        && (32..=8192).contains(&values.numel())
    {
        let mut q =
            quantize::gate_int8_rows(&t.name, &values.to_f32(), values.shape[0], values.shape[1]);
        q.orig_dtype = values.dtype.clone();
        return Ok(q);
    }
    let small_or_int = !values.is_float() || values.numel() <= opts.keep_float_max_numel;
    if opts.control_fp16 && values.is_float() && values.numel() <= opts.keep_float_max_numel {
        // The records since 04-05 (`gptq_mixed_quantize`): every small float tensor in fp16, control tensors too.
        let mut q = quantize::percentile_int8_entry(&t.name, values, opts.keep_float_max_numel);
        if let Payload::Passthrough { values: v } = &mut q.payload
            && v.dtype == "float32"
        {
            *v = HostTensor {
                dtype: "float16".into(),
                shape: v.shape.clone(),
                data: quantize::f16_bytes(&v.to_f32()),
            };
            q.scheme = "passthrough_fp16".into();
            q.bits = 16;
        }
        return Ok(q);
    }
    let two_d = values.shape.len() == 2;
    if small_or_int || !two_d || (opts.scheme == Scheme::Percentile && set.bits == 8) {
        return Ok(quantize::percentile_int8_entry(
            &t.name,
            values,
            opts.keep_float_max_numel,
        ));
    }
    let (rows, cols) = (values.shape[0], values.shape[1]);
    let w = values.to_f32();
    let hessian = opts.hessians.as_ref().and_then(|h| h.get(&t.name));
    let mut q = match opts.scheme {
        Scheme::Percentile => quantize::percentile_rows(&t.name, &w, rows, cols, set.bits),
        Scheme::GptqLite => quantize::gptq_lite_rows(&t.name, &w, rows, cols, set.bits),
        Scheme::Sdclip => quantize::sdclip_rows(&t.name, &w, rows, cols, set.bits, set.k),
        Scheme::Gptq => match hessian {
            Some(h) => {
                let cr = quantize::clip_range(set.bits);
                let (q, scales) = super::gptq::gptq_quantize(&w, rows, cols, h, set.k, cr, 128)
                    .map_err(|e| PackError::Format {
                        path: t.name.clone().into(),
                        message: format!("GPTQ: {e}"),
                    })?;
                let mut q = quantize::quantized_rows(&t.name, rows, cols, set.bits, q, &scales);
                q.scheme = format!("gptq_int{}_per_row", set.bits);
                q
            }
            None => quantize::sdclip_rows(&t.name, &w, rows, cols, set.bits, set.k),
        },
    };
    q.orig_dtype = values.dtype.clone();
    Ok(q)
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    pub group: Group,
    pub bits: u32,
    pub k: Option<f32>,
    pub tensors: usize,
    pub params: usize,
    /// Mean squared reconstruction error over the group's quantized elements.
    pub mse: f64,
    /// Relative error ‖w − ŵ‖² / ‖w‖².
    pub relative_error: f64,
}

pub struct Packed {
    pub bytes: Vec<u8>,
    pub tensors: Vec<QTensor>,
    pub groups: Vec<GroupReport>,
    /// Wall-clock seconds of quantization (GPTQ included) and of coding the artifact.
    pub quantize_seconds: f64,
    pub encode_seconds: f64,
}

/// Quantizes and encodes every tensor.
pub fn pack(
    checkpoint: &[QTensor],
    config: Option<&serde_json::Value>,
    opts: &PackOptions,
) -> Result<Packed> {
    let started = std::time::Instant::now();
    let mut tensors: Vec<QTensor> = checkpoint
        .par_iter()
        .map(|t| quantize_tensor(t, opts))
        .collect::<Result<_>>()?;
    if let Some(o) = &opts.lqer {
        add_lqer(checkpoint, &mut tensors, o, &opts.lqer_ranks);
    }
    let quantize_seconds = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let bytes = container::encode(
        &tensors,
        config,
        opts.calibration.as_ref(),
        opts.codec,
        opts.shuffle,
    )?;
    let mut groups = Vec::new();
    for g in GROUPS {
        let (mut n, mut params, mut err, mut energy, mut count) = (0, 0, 0f64, 0f64, 0usize);
        for (orig, q) in checkpoint.iter().zip(&tensors) {
            if group_of(&orig.name) != g || !matches!(q.payload, Payload::Quantized { .. }) {
                continue;
            }
            let (w, d) = (orig.dequantize(), q.dequantize());
            n += 1;
            params += w.len();
            count += w.len();
            for (a, b) in w.iter().zip(&d) {
                err += ((a - b) as f64).powi(2);
                energy += (*a as f64).powi(2);
            }
        }
        if n > 0 {
            let set = opts.setting(g);
            groups.push(GroupReport {
                group: g,
                bits: set.bits,
                k: matches!(opts.scheme, Scheme::Sdclip | Scheme::Gptq).then_some(set.k),
                tensors: n,
                params,
                mse: err / count as f64,
                relative_error: err / energy.max(f64::MIN_POSITIVE),
            });
        }
    }
    let encode_seconds = started.elapsed().as_secs_f64();
    Ok(Packed {
        bytes,
        tensors,
        groups,
        quantize_seconds,
        encode_seconds,
    })
}

/// One tensor's choice in the rate–distortion fit.
#[derive(Clone, Debug, Serialize)]
pub struct RdChoice {
    pub name: String,
    pub bits: u32,
    pub k: Option<f32>,
    /// The rank of its LQER correction (0: none).
    pub lqer_rank: usize,
    /// The tensor's bytes in the artifact (its rANS symbols and coded scales).
    pub bytes: u64,
    /// Σ ΔW·H·ΔWᵀ with the calibration Hessian, else Σ ΔW².
    pub error: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RdReport {
    /// "hessian-weighted" or "squared".
    pub error: &'static str,
    pub lambda: f64,
    pub candidates_per_tensor: usize,
    pub total_error: f64,
    pub choices: Vec<RdChoice>,
}

/// The bytes one quantized tensor occupies in a codec-0 artifact: its spans are coded alone, so the artifact's size
/// is the sum of these plus the preamble, header and other tensors. `empty` is the size of an artifact of no tensor.
fn tensor_bytes(q: &QTensor, empty: u64) -> Result<u64> {
    let one = container::encode(std::slice::from_ref(q), None, None, Codec::Rans, 1)?;
    Ok((one.len() as u64).saturating_sub(empty))
}

fn tensor_error(orig: &QTensor, q: &QTensor, hessian: Option<&Vec<f32>>) -> f64 {
    let (w, d) = (orig.dequantize(), q.dequantize());
    let delta: Vec<f64> = w.iter().zip(&d).map(|(a, b)| (a - b) as f64).collect();
    match hessian {
        Some(h) if orig.shape.len() == 2 && h.len() == orig.shape[1] * orig.shape[1] => {
            let cols = orig.shape[1];
            delta
                .chunks(cols)
                .map(|row| {
                    (0..cols)
                        .map(|i| {
                            let hi = &h[i * cols..(i + 1) * cols];
                            row[i] * row.iter().zip(hi).map(|(x, &y)| x * y as f64).sum::<f64>()
                        })
                        .sum::<f64>()
                })
                .sum()
        }
        _ => delta.iter().map(|x| x * x).sum(),
    }
}

/// Rate–distortion fit for the rANS codec: every quantized matrix gets its own (bits, k) among fewer-or-equal bits
/// than requested and k × {1, 1.25, 1.6, 2, 2.5} and, with LQER on (rank R), its own correction rank among
/// {0, R/2, R, 2R} on the requested k at the requested bits and the two below; the choice minimising
/// Σ error + λ·Σ bytes, with the smallest λ (bisected) whose artifact fits `target`. The error is Hessian-weighted
/// when every candidate matrix has a calibration Hessian, else squared (of the corrected weights where a correction
/// is chosen). Each tensor's bytes are measured exactly (its spans, factors included, are coded alone).
pub fn rd_fit(
    checkpoint: &[QTensor],
    config: Option<&serde_json::Value>,
    opts: &PackOptions,
    target: u64,
) -> Result<(Packed, PackOptions, RdReport)> {
    if opts.codec != Codec::Rans {
        return Err(PackError::Unsupported {
            path: "--fit rd".into(),
            what: "the rate–distortion fit needs the rans codec, whose per-tensor bytes add up"
                .into(),
        });
    }
    let base = pack(checkpoint, config, opts)?;
    // The matrices the fit may change: float matrices of the checkpoint that the requested settings quantize on a
    // grid with bits (the requested bits, 8 included, are the upper bound) and k; not the int8 gate rows.
    let candidates: Vec<usize> = base
        .tensors
        .iter()
        .enumerate()
        .filter(|&(i, q)| {
            q.shape.len() == 2
                && matches!(q.payload, Payload::Quantized { .. })
                && matches!(&checkpoint[i].payload, Payload::Passthrough { values } if values.is_float())
                && q.scheme != "int8_gate_per_row"
        })
        .map(|(i, _)| i)
        .collect();
    let weighted = opts.hessians.as_ref().is_some_and(|h| {
        candidates
            .iter()
            .all(|&i| h.contains_key(&base.tensors[i].name))
    });
    let empty = container::encode(&[], None, None, Codec::Rans, 1)?.len() as u64;
    let k_factors: &[f32] = if matches!(opts.scheme, Scheme::Sdclip | Scheme::Gptq) {
        &[1.0, 1.25, 1.6, 2.0, 2.5]
    } else {
        &[1.0]
    };
    let lqer_ranks: Vec<usize> = match &opts.lqer {
        Some(o) => {
            let mut r = vec![(o.rank / 2).max(1), o.rank, o.rank * 2];
            r.dedup();
            r
        }
        None => Vec::new(),
    };
    // Candidate table per tensor: (setting, LQER rank, bytes, error).
    let tables: Vec<Vec<(GroupSetting, usize, u64, f64)>> = candidates
        .par_iter()
        .map(|&i| {
            let orig = &checkpoint[i];
            let set = opts.setting(group_of(&orig.name));
            let hessian = if weighted {
                opts.hessians.as_ref().and_then(|h| h.get(&orig.name))
            } else {
                None
            };
            let mut table = Vec::new();
            for bits in (2..=set.bits).rev() {
                for &f in k_factors {
                    let mut o = opts.clone();
                    o.lqer = None;
                    let s = GroupSetting { bits, k: set.k * f };
                    o.overrides.insert(orig.name.clone(), s);
                    let q = quantize_tensor(orig, &o)?;
                    table.push((
                        s,
                        0,
                        tensor_bytes(&q, empty)?,
                        tensor_error(orig, &q, hessian),
                    ));
                    let (Some(lo), true) = (&opts.lqer, f == 1.0 && bits + 2 >= set.bits) else {
                        continue;
                    };
                    let Some(e) = lqer_error(orig, &q) else {
                        continue;
                    };
                    for &rank in &lqer_ranks {
                        let mut c = q.clone();
                        attach_lqer(&mut c, &e, rank, lo);
                        table.push((
                            s,
                            rank,
                            tensor_bytes(&c, empty)?,
                            tensor_error(orig, &c, hessian),
                        ));
                    }
                }
            }
            Ok(table)
        })
        .collect::<Result<_>>()?;
    let requested: u64 = candidates
        .iter()
        .map(|&i| tensor_bytes(&base.tensors[i], empty))
        .sum::<Result<u64>>()?;
    let fixed = (base.bytes.len() as u64).saturating_sub(requested);
    let choose = |lambda: f64| -> Vec<usize> {
        tables
            .iter()
            .map(|t| {
                (0..t.len())
                    .min_by(|&a, &b| {
                        (t[a].3 + lambda * t[a].2 as f64)
                            .total_cmp(&(t[b].3 + lambda * t[b].2 as f64))
                    })
                    .unwrap_or(0)
            })
            .collect()
    };
    let bytes_at = |pick: &[usize]| -> u64 { pick.iter().zip(&tables).map(|(&p, t)| t[p].2).sum() };
    // Header growth with other scheme names is small; keep 1 KB of slack and re-check the real artifact.
    let mut slack = 1024u64;
    for _ in 0..8 {
        let budget = target.saturating_sub(fixed + slack);
        let (mut lo, mut hi) = (0f64, 1.0f64);
        while bytes_at(&choose(hi)) > budget && hi < 1e30 {
            hi *= 4.0;
        }
        if bytes_at(&choose(hi)) > budget {
            break;
        }
        for _ in 0..80 {
            let mid = if lo == 0.0 {
                hi / 1e12
            } else {
                (lo * hi).sqrt()
            };
            if mid <= lo || mid >= hi {
                break;
            }
            if bytes_at(&choose(mid)) <= budget {
                hi = mid
            } else {
                lo = mid
            }
        }
        let pick = choose(hi);
        let mut o = opts.clone();
        for (&i, (&p, t)) in candidates.iter().zip(pick.iter().zip(&tables)) {
            o.overrides.insert(checkpoint[i].name.clone(), t[p].0);
            if o.lqer.is_some() {
                o.lqer_ranks.insert(checkpoint[i].name.clone(), t[p].1);
            }
        }
        let packed = pack(checkpoint, config, &o)?;
        if packed.bytes.len() as u64 <= target {
            let choices: Vec<RdChoice> = candidates
                .iter()
                .zip(pick.iter().zip(&tables))
                .map(|(&i, (&p, t))| RdChoice {
                    name: checkpoint[i].name.clone(),
                    bits: t[p].0.bits,
                    k: (k_factors.len() > 1).then_some(t[p].0.k),
                    lqer_rank: t[p].1,
                    bytes: t[p].2,
                    error: t[p].3,
                })
                .collect();
            let report = RdReport {
                error: if weighted {
                    "hessian-weighted"
                } else {
                    "squared"
                },
                lambda: hi,
                candidates_per_tensor: tables.iter().map(Vec::len).max().unwrap_or(0),
                total_error: choices.iter().map(|c| c.error).sum(),
                choices,
            };
            return Ok((packed, o, report));
        }
        slack = slack * 2 + (packed.bytes.len() as u64 - target);
    }
    Err(PackError::Budget {
        smallest: fixed + tables.iter().map(|t| t.iter().map(|c| c.2).min().unwrap_or(0)).sum::<u64>(),
        target,
        hint: "fewer bits for the passthrough tensors (a smaller --keep-float-max-numel), a smaller model, or less code"
            .into(),
    })
}

/// What the budget search chose.
#[derive(Clone, Debug, Serialize)]
pub struct FitReport {
    pub target_bytes: u64,
    pub tries: Vec<FitTry>,
    /// SDClip: the factor applied to every group's k.
    pub k_factor: Option<f32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FitTry {
    pub k_factor: Option<f32>,
    pub bits: [u32; 4],
    pub bytes: u64,
}

/// Searches settings until the artifact is at most `target` bytes. The requested settings are tried first and kept
/// when they fit (the records' k and bits are their quality optimum). Otherwise SDClip bisects one factor ≥ 1 on
/// every group's k (size falls as k grows, error rises) and takes the smallest factor that fits; the other schemes lower the bits of
/// the group with the most parameters, one bit at a time, down to 2.
pub fn fit(
    checkpoint: &[QTensor],
    config: Option<&serde_json::Value>,
    opts: &PackOptions,
    target: u64,
) -> Result<(Packed, PackOptions, FitReport)> {
    let mut tries = Vec::new();
    let bits_of = |o: &PackOptions| {
        [
            o.groups[0].bits,
            o.groups[1].bits,
            o.groups[2].bits,
            o.groups[3].bits,
        ]
    };
    let too_big = |tries: &Vec<FitTry>| PackError::Budget {
        smallest: tries.iter().map(|t| t.bytes).min().unwrap_or(0),
        target,
        hint: "fewer bits (--bits / --embed-bits), a larger k, a smaller model, or less code"
            .into(),
    };
    if matches!(opts.scheme, Scheme::Sdclip | Scheme::Gptq) {
        let with_factor = |f: f32| {
            let mut o = opts.clone();
            o.groups.iter_mut().for_each(|g| g.k *= f);
            o
        };
        let first = pack(checkpoint, config, opts)?;
        tries.push(FitTry {
            k_factor: Some(1.0),
            bits: bits_of(opts),
            bytes: first.bytes.len() as u64,
        });
        if first.bytes.len() as u64 <= target {
            return Ok((
                first,
                opts.clone(),
                FitReport {
                    target_bytes: target,
                    tries,
                    k_factor: Some(1.0),
                },
            ));
        }
        let (mut lo, mut hi) = (1.0f32, 16.0f32);
        let top = pack(checkpoint, config, &with_factor(hi))?;
        tries.push(FitTry {
            k_factor: Some(hi),
            bits: bits_of(opts),
            bytes: top.bytes.len() as u64,
        });
        if top.bytes.len() as u64 > target {
            return Err(too_big(&tries));
        }
        let mut best = (hi, top);
        for _ in 0..14 {
            let mid = (lo * hi).sqrt();
            let p = pack(checkpoint, config, &with_factor(mid))?;
            tries.push(FitTry {
                k_factor: Some(mid),
                bits: bits_of(opts),
                bytes: p.bytes.len() as u64,
            });
            if p.bytes.len() as u64 <= target {
                hi = mid;
                best = (mid, p);
            } else {
                lo = mid;
            }
            if hi / lo < 1.01 {
                break;
            }
        }
        let chosen = with_factor(best.0);
        return Ok((
            best.1,
            chosen,
            FitReport {
                target_bytes: target,
                tries,
                k_factor: Some(best.0),
            },
        ));
    }
    let mut o = opts.clone();
    loop {
        let p = pack(checkpoint, config, &o)?;
        tries.push(FitTry {
            k_factor: None,
            bits: bits_of(&o),
            bytes: p.bytes.len() as u64,
        });
        if p.bytes.len() as u64 <= target {
            return Ok((
                p,
                o,
                FitReport {
                    target_bytes: target,
                    tries,
                    k_factor: None,
                },
            ));
        }
        // Lower the group holding the most quantized parameters that can still go down.
        let params = |g: Group| -> usize {
            checkpoint
                .iter()
                .filter(|t| group_of(&t.name) == g && t.params() > o.keep_float_max_numel)
                .map(|t| t.params())
                .sum()
        };
        let candidate = GROUPS
            .iter()
            .enumerate()
            .filter(|(i, g)| o.groups[*i].bits > 2 && params(**g) > 0)
            .max_by_key(|(_, g)| params(**g));
        match candidate {
            Some((i, _)) => o.groups[i].bits -= 1,
            None => return Err(too_big(&tries)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(gate_int8: bool) -> PackOptions {
        PackOptions {
            scheme: Scheme::Sdclip,
            groups: [GroupSetting { bits: 6, k: 12.0 }; 4],
            codec: Codec::Rans,
            shuffle: 1,
            keep_float_max_numel: 65_536,
            hessians: None,
            calibration: None,
            lqer: None,
            gate_int8,
            overrides: Default::default(),
            lqer_ranks: Default::default(),
            control_fp16: false,
        }
    }

    fn float_tensor(name: &str, shape: Vec<usize>) -> QTensor {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .flat_map(|i| ((i as f32 * 0.37).sin() * 0.2).to_le_bytes())
            .collect();
        QTensor {
            name: name.into(),
            shape: shape.clone(),
            scheme: "passthrough_fp32".into(),
            bits: 32,
            orig_dtype: "float32".into(),
            payload: Payload::Passthrough {
                values: HostTensor {
                    dtype: "float32".into(),
                    shape,
                    data,
                },
            },
        }
    }

    #[test]
    fn attention_gates_of_32_to_8192_values_become_int8_rows() {
        let gate = float_tensor("blocks.3.attn.attn_gate_w", vec![8, 12]);
        assert_eq!(
            quantize_tensor(&gate, &options(true)).unwrap().scheme,
            "int8_gate_per_row"
        );
        assert!(
            quantize_tensor(&gate, &options(false))
                .unwrap()
                .scheme
                .starts_with("passthrough")
        );
        let tiny = float_tensor("blocks.3.attn.attn_gate_w", vec![2, 12]);
        assert!(
            quantize_tensor(&tiny, &options(true))
                .unwrap()
                .scheme
                .starts_with("passthrough")
        );
        let other = float_tensor("blocks.3.attn.c_q.weight", vec![8, 12]);
        assert!(
            quantize_tensor(&other, &options(true))
                .unwrap()
                .scheme
                .starts_with("passthrough")
        );
    }
}
