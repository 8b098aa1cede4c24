//! One representation for the quantization schemas records ship (spec quantization-and-packing §2–3):
//! the baseline `int8_clean_per_row_v1` dictionary and the `{"w": …, "m": …}` mixed int5/int6/int7/int8 dictionaries,
//! plus plain state dicts (safetensors or `torch.save`). Each tensor knows its scheme, bits, shape and scales, and
//! dequantizes to f32 the way the record's own code does.

use std::path::Path;

use super::torchfile::{HostTensor, Obj, checked_numel};
use super::{PackError, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Integer symbols with one scale per row (scale.len() == rows) or one for the whole tensor, plus an optional
    /// low-rank (LQER) correction.
    Quantized {
        q: HostTensor,
        scale: HostTensor,
        lowrank: Option<Box<LowRank>>,
        /// AWQ-lite groups kept at a higher precision inside the same GPTQ solve, with scales of their own.
        protected: Option<Box<ProtectedGroups>>,
    },
    /// Stored as is (possibly downcast to fp16 for storage).
    Passthrough { values: HostTensor },
    /// Bit-packed groups (ternary base-3 or bitmask, binary), unpacked to one symbol per value of the padded matrix,
    /// with one scale per group of `group_size` along the padded rows.
    Grouped {
        kind: GroupKind,
        symbols: Vec<i8>,
        scales: Vec<f32>,
        group_size: usize,
        padded_cols: usize,
        rows: usize,
        cols: usize,
        stored: Vec<u8>,
    },
    /// fp4 of the ternary record: values in [-7, 7] packed two per byte (low nibble first, +8), one fp16 scale per row.
    Fp4 {
        symbols: Vec<i8>,
        scales: Vec<f32>,
        stored: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    Ternary,
    TernaryBitmask,
    Binary,
}

/// LQER: W += (qA·sA) @ (qB·sB). Asymmetric: A int2 with one scale, B int4 with one scale per `group` values of the
/// flattened B. Symmetric: per-row scales for both.
#[derive(Clone, Debug, PartialEq)]
pub struct LowRank {
    pub asymmetric: bool,
    pub a_q: HostTensor,
    pub a_s: HostTensor,
    pub b_q: HostTensor,
    pub b_s: HostTensor,
}

impl LowRank {
    /// (qA·sA) @ (qB·sB) as a row-major [rows, cols] matrix.
    fn product(&self) -> Vec<f32> {
        let (rows, rank) = (
            self.a_q.shape[0],
            self.a_q.shape.get(1).copied().unwrap_or(1),
        );
        let cols = self.b_q.numel() / rank.max(1);
        let aq = self.a_q.to_f32();
        let bq = self.b_q.to_f32();
        let (sa, sb) = (self.a_s.to_f32(), self.b_s.to_f32());
        let a: Vec<f32> = if self.asymmetric {
            aq.iter().map(|&x| x * sa[0]).collect()
        } else {
            aq.iter()
                .enumerate()
                .map(|(i, &x)| x * sa[i / rank])
                .collect()
        };
        let b: Vec<f32> = if self.asymmetric {
            let g = bq.len() / sb.len().max(1);
            bq.iter()
                .enumerate()
                .map(|(i, &x)| x * sb[i / g.max(1)])
                .collect()
        } else {
            bq.iter()
                .enumerate()
                .map(|(i, &x)| x * sb[i / cols.max(1)])
                .collect()
        };
        let mut out = vec![0f32; rows * cols];
        for r in 0..rows {
            for k in 0..rank {
                let av = a[r * rank + k];
                for c in 0..cols {
                    // Fused multiply-add in k order, one rounding per step: what PyTorch's CPU matmul computes
                    // for the records' `qA @ qB` (checked bit for bit against #2014's and #2135's
                    // dequantize_mixed, where a separate multiply and add differ in the last bit).
                    out[r * cols + c] = av.mul_add(b[k * cols + c], out[r * cols + c]);
                }
            }
        }
        out
    }
}

/// AWQ-lite (#1908 → #1945, #2014): whole column groups of a GPTQ matrix quantized on a finer grid inside the same
/// solve. Their symbols sit in `q` at those columns; each row's scale there is `scale_hi[row]`, not the matrix's row
/// scale. The records store `<name>.awqg_start` (int16 column starts), `<name>.awqg_s_hi` (fp16, one per row) and
/// `<name>.awqg_size` (an int16 scalar), and mark the meta `+awqgrpint<bits>`. Kept as stored, so that the bytes
/// and the dequantization are the record's.
#[derive(Clone, Debug, PartialEq)]
pub struct ProtectedGroups {
    /// The finer grid's bits (`awqgrpint8`: symbols in [−127, 127]).
    pub bits: u32,
    pub starts: HostTensor,
    pub size: HostTensor,
    pub scale_hi: HostTensor,
}

impl ProtectedGroups {
    /// The first column of each group.
    pub fn column_starts(&self) -> Vec<usize> {
        self.starts
            .to_i64()
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.max(0) as usize)
            .collect()
    }

    /// Columns per group.
    pub fn group_size(&self) -> usize {
        self.size
            .to_i64()
            .and_then(|v| v.first().copied())
            .unwrap_or(0)
            .max(0) as usize
    }

    /// The record's `W[:, start:start+size] = q[:, start:start+size] · s_hi[row]` on a row-major [rows, cols] matrix.
    fn apply(&self, q: &[f32], w: &mut [f32], cols: usize) {
        let s_hi = self.scale_hi.to_f32();
        let size = self.group_size();
        let starts = self.column_starts();
        for (r, s) in s_hi.iter().enumerate() {
            for &start in &starts {
                for c in start..(start + size).min(cols) {
                    w[r * cols + c] = q[r * cols + c] * s;
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct QTensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// e.g. `int8_per_row`, `int6_per_row`, `int8_per_tensor`, `passthrough_fp16`, `passthrough_fp32`.
    pub scheme: String,
    /// Bits of the stored value grid (6 for int6 in an int8 container; 16 for fp16 passthrough).
    pub bits: u32,
    /// The dtype the tensor is restored to (float32 unless the artifact says otherwise).
    pub orig_dtype: String,
    pub payload: Payload,
}

impl QTensor {
    pub fn params(&self) -> usize {
        self.shape.iter().product()
    }

    /// The largest |symbol| the scheme allows: 2^(bits−1) − 1.
    pub fn clip_range(&self) -> i64 {
        (1i64 << (self.bits.saturating_sub(1))) - 1
    }

    /// f32 values: `q · scale[row]` (or `q · scale`) for quantized tensors, rounded through the original dtype as the
    /// records' `.to(orig_dtype)` does; passthrough values converted.
    pub fn dequantize(&self) -> Vec<f32> {
        let out = match &self.payload {
            Payload::Passthrough { values } => values.to_f32(),
            Payload::Quantized {
                q,
                scale,
                lowrank,
                protected,
            } => {
                let qv = q.to_f32();
                let sv = scale.to_f32();
                let mut w: Vec<f32> = if sv.len() == 1 && scale.shape.is_empty() {
                    qv.iter().map(|&x| x * sv[0]).collect()
                } else {
                    let rows = sv.len().max(1);
                    let per_row = qv.len() / rows;
                    qv.iter()
                        .enumerate()
                        .map(|(i, &x)| x * sv[i / per_row.max(1)])
                        .collect()
                };
                // In the record's order: the protected groups' own scales, then the low-rank correction.
                if let Some(p) = protected {
                    let cols = q.shape.get(1).copied().unwrap_or(1).max(1);
                    p.apply(&qv, &mut w, cols);
                }
                if let Some(lr) = lowrank {
                    w.iter_mut().zip(lr.product()).for_each(|(x, c)| *x += c);
                }
                w
            }
            Payload::Grouped {
                kind,
                symbols,
                scales,
                group_size,
                padded_cols,
                rows,
                cols,
                ..
            } => {
                // Per group: ternary uses the shrinkage fix q·(scale / mean|q|); binary q·scale.
                let mut padded = vec![0f32; symbols.len()];
                for (g, (chunk, out)) in symbols
                    .chunks(*group_size)
                    .zip(padded.chunks_mut(*group_size))
                    .enumerate()
                {
                    let s = scales[g];
                    let factor = match kind {
                        GroupKind::Binary => s,
                        _ => {
                            let mean = chunk.iter().map(|&q| (q as f32).abs()).sum::<f32>()
                                / *group_size as f32;
                            s / mean.max(1e-8)
                        }
                    };
                    chunk
                        .iter()
                        .zip(out.iter_mut())
                        .for_each(|(&q, o)| *o = q as f32 * factor);
                }
                (0..*rows)
                    .flat_map(|r| padded[r * padded_cols..r * padded_cols + cols].to_vec())
                    .collect()
            }
            Payload::Fp4 {
                symbols, scales, ..
            } => {
                let per_row = self.shape.last().copied().unwrap_or(1).max(1);
                if self.shape.len() <= 1 {
                    symbols.iter().map(|&q| q as f32 * scales[0]).collect()
                } else {
                    symbols
                        .iter()
                        .enumerate()
                        .map(|(i, &q)| q as f32 * scales[i / per_row])
                        .collect()
                }
            }
        };
        round_to_dtype(out, &self.orig_dtype)
    }

    /// Stored bytes of the payload (symbols + scales, or passthrough values).
    pub fn raw_bytes(&self) -> usize {
        self.stored_bytes().len()
    }

    /// The bytes the artifact stores for this tensor: symbols then scales (and low-rank factors), the packed
    /// bytes and scales of packed schemes, or the passthrough values.
    pub fn stored_bytes(&self) -> Vec<u8> {
        match &self.payload {
            Payload::Quantized {
                q,
                scale,
                lowrank,
                protected,
            } => {
                let mut v = [q.data.as_slice(), scale.data.as_slice()].concat();
                if let Some(lr) = lowrank {
                    for t in [&lr.a_q, &lr.a_s, &lr.b_q, &lr.b_s] {
                        v.extend_from_slice(&t.data);
                    }
                }
                if let Some(p) = protected {
                    for t in [&p.starts, &p.scale_hi, &p.size] {
                        v.extend_from_slice(&t.data);
                    }
                }
                v
            }
            Payload::Passthrough { values } => values.data.clone(),
            Payload::Grouped { stored, .. } | Payload::Fp4 { stored, .. } => stored.clone(),
        }
    }

    /// The stored integer symbols and scales, for quantized schemes.
    pub fn symbols_and_scales(&self) -> Option<(Vec<i64>, Vec<f32>)> {
        match &self.payload {
            Payload::Quantized { q, scale, .. } => Some((q.to_i64()?, scale.to_f32())),
            Payload::Grouped {
                symbols, scales, ..
            }
            | Payload::Fp4 {
                symbols, scales, ..
            } => Some((symbols.iter().map(|&x| x as i64).collect(), scales.clone())),
            Payload::Passthrough { .. } => None,
        }
    }
}

fn round_to_dtype(v: Vec<f32>, dtype: &str) -> Vec<f32> {
    match dtype {
        "bfloat16" => v
            .into_iter()
            .map(|x| half::bf16::from_f32(x).to_f32())
            .collect(),
        "float16" => v
            .into_iter()
            .map(|x| half::f16::from_f32(x).to_f32())
            .collect(),
        _ => v,
    }
}

fn dtype_bits(dtype: &str) -> u32 {
    match dtype {
        "float64" | "int64" => 64,
        "float32" | "int32" => 32,
        "float16" | "bfloat16" | "int16" => 16,
        "bool" => 1,
        _ => 8,
    }
}

/// Bits named by a record's meta type string: "int6", "gptq (int6)", {"type": "int5"}, …
fn bits_of_type(t: &str) -> Option<u32> {
    let i = t.find("int")?;
    let digits: String = t[i + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok().filter(|b| (1..=8).contains(b))
}

fn passthrough(name: &str, values: &HostTensor, orig_dtype: Option<&str>) -> QTensor {
    let orig = orig_dtype
        .unwrap_or(if values.is_float() {
            "float32"
        } else {
            values.dtype.as_str()
        })
        .to_string();
    QTensor {
        name: name.into(),
        shape: values.shape.clone(),
        scheme: format!("passthrough_{}", short_dtype(&values.dtype)),
        bits: dtype_bits(&values.dtype),
        orig_dtype: orig,
        payload: Payload::Passthrough {
            values: values.clone(),
        },
    }
}

fn short_dtype(d: &str) -> &str {
    match d {
        "float32" => "fp32",
        "float16" => "fp16",
        "bfloat16" => "bf16",
        "float64" => "fp64",
        other => other,
    }
}

/// Maps a loaded object to tensors. Returns the format name and the tensors in the artifact's order.
pub fn interpret(path: &Path, obj: &Obj) -> Result<(String, Vec<QTensor>)> {
    let bad = |message: String| PackError::Format {
        path: path.into(),
        message,
    };
    if let Some(fmt) = obj.get("__quant_format__").and_then(Obj::as_str) {
        if fmt != "int8_clean_per_row_v1" {
            return Err(PackError::Unsupported {
                path: path.into(),
                what: format!("quant format {fmt:?}"),
            });
        }
        return baseline(path, obj).map(|t| (fmt.to_string(), t));
    }
    if let (Some(w), Some(m)) = (obj.get("w"), obj.get("m")) {
        return mixed(path, w, m).map(|t| ("w_m_mixed".to_string(), t));
    }
    let entries = obj.entries();
    if !entries.is_empty()
        && entries
            .iter()
            .all(|(_, v)| v.get("type").and_then(Obj::as_str).is_some())
    {
        let tensors = entries
            .iter()
            .map(|(name, e)| packed_entry(path, name, e))
            .collect::<Result<Vec<_>>>()?;
        return Ok(("typed_entries".to_string(), tensors));
    }
    // A plain state dict: every entry a tensor (possibly nested under "state_dict"/"model").
    let dict = ["state_dict", "model"]
        .iter()
        .find_map(|k| obj.get(k))
        .unwrap_or(obj);
    let entries = dict.entries();
    if entries.is_empty() {
        return Err(bad(format!(
            "top level is a {} with no tensors: not a state dict or known artifact",
            obj.type_name()
        )));
    }
    let mut out = Vec::new();
    for (name, v) in entries {
        match v {
            Obj::Tensor(t) => {
                out.extend(unbank(name, t).unwrap_or_else(|| vec![passthrough(name, t, None)]))
            }
            other => {
                return Err(bad(format!(
                    "entry {name:?} is a {}, not a tensor",
                    other.type_name()
                )));
            }
        }
    }
    Ok(("state_dict".into(), out))
}

fn tensor<'a>(path: &Path, dict: &'a Obj, key: &str, what: &str) -> Result<&'a HostTensor> {
    match dict.get(key) {
        Some(Obj::Tensor(t)) => Ok(t),
        Some(other) => Err(PackError::Format {
            path: path.into(),
            message: format!("{what} {key:?} is a {}", other.type_name()),
        }),
        None => Err(PackError::Format {
            path: path.into(),
            message: format!("{what} {key:?} is missing"),
        }),
    }
}

fn check_scale(path: &Path, name: &str, q: &HostTensor, scale: &HostTensor) -> Result<()> {
    let rows = q.shape.first().copied().unwrap_or(1);
    let ok = scale.numel() == 1 && scale.shape.len() <= 1
        || (scale.shape.len() == 1 && scale.shape[0] == rows);
    if !ok || q.to_i64().is_none() || !scale.is_float() {
        return Err(PackError::Format {
            path: path.into(),
            message: format!(
                "{name}: symbols {} {:?} with scales {} {:?} do not form a per-row or per-tensor quantization",
                q.dtype, q.shape, scale.dtype, scale.shape
            ),
        });
    }
    Ok(())
}

fn baseline(path: &Path, obj: &Obj) -> Result<Vec<QTensor>> {
    let bad = |message: String| PackError::Format {
        path: path.into(),
        message,
    };
    let quantized = obj
        .get("quantized")
        .ok_or_else(|| bad("int8_clean_per_row_v1 without \"quantized\"".into()))?;
    let scales = obj
        .get("scales")
        .ok_or_else(|| bad("int8_clean_per_row_v1 without \"scales\"".into()))?;
    let dtypes = obj.get("dtypes");
    let pass = obj.get("passthrough");
    let orig = obj.get("passthrough_orig_dtypes");
    let mut out = Vec::new();
    for (name, q) in quantized.entries() {
        let Obj::Tensor(q) = q else {
            return Err(bad(format!("quantized {name:?} is not a tensor")));
        };
        let scale = tensor(path, scales, name, "scale")?;
        check_scale(path, name, q, scale)?;
        let per_row = !scale.shape.is_empty();
        out.push(QTensor {
            name: name.into(),
            shape: q.shape.clone(),
            scheme: if per_row {
                "int8_per_row".into()
            } else {
                "int8_per_tensor".into()
            },
            bits: 8,
            orig_dtype: dtypes
                .and_then(|d| d.get(name))
                .and_then(Obj::as_str)
                .unwrap_or("float32")
                .into(),
            payload: Payload::Quantized {
                q: q.clone(),
                scale: scale.clone(),
                lowrank: None,
                protected: None,
            },
        });
    }
    if let Some(pass) = pass {
        for (name, v) in pass.entries() {
            let Obj::Tensor(t) = v else {
                return Err(bad(format!("passthrough {name:?} is not a tensor")));
            };
            out.push(passthrough(
                name,
                t,
                orig.and_then(|o| o.get(name)).and_then(Obj::as_str),
            ));
        }
    }
    Ok(out)
}

fn mixed(path: &Path, w: &Obj, m: &Obj) -> Result<Vec<QTensor>> {
    let bad = |message: String| PackError::Format {
        path: path.into(),
        message,
    };
    let mut out = Vec::new();
    // Every key of `w` that a meta entry reads; any other is a field pgolf does not know, and an error.
    let mut read: std::collections::BTreeSet<String> = Default::default();
    for (name, info) in m.entries() {
        let kind = match info {
            Obj::Str(s) => s.clone(),
            Obj::Dict(_) => info
                .get("type")
                .and_then(Obj::as_str)
                .unwrap_or("")
                .to_string(),
            other => return Err(bad(format!("meta of {name:?} is a {}", other.type_name()))),
        };
        if kind.contains("passthrough") {
            read.insert(name.to_string());
            out.push(passthrough(
                name,
                tensor(path, w, name, "passthrough tensor")?,
                None,
            ));
            continue;
        }
        if kind == "gate_int8_row" {
            read.extend([format!("{name}.gq"), format!("{name}.gs")]);
            let q = tensor(path, w, &format!("{name}.gq"), "gate symbols")?;
            let scale = tensor(path, w, &format!("{name}.gs"), "gate scales")?;
            check_scale(path, name, q, scale)?;
            out.push(QTensor {
                name: name.into(),
                shape: q.shape.clone(),
                scheme: "gate_int8_row".into(),
                bits: 8,
                orig_dtype: "float32".into(),
                payload: Payload::Quantized {
                    q: q.clone(),
                    scale: scale.clone(),
                    lowrank: None,
                    protected: None,
                },
            });
            continue;
        }
        check_meta_parts(path, name, &kind)?;
        let bits = bits_of_type(&kind).ok_or_else(|| PackError::Unsupported {
            path: path.into(),
            what: format!("{name:?} has meta type {kind:?}"),
        })?;
        read.extend([format!("{name}.q"), format!("{name}.scale")]);
        let q = tensor(path, w, &format!("{name}.q"), "symbols")?;
        let scale = tensor(path, w, &format!("{name}.scale"), "scales")?;
        check_scale(path, name, q, scale)?;
        let per_row = !scale.shape.is_empty() && scale.numel() > 1 || q.shape.len() >= 2;
        let lowrank = if kind.contains("lqer") {
            let sfx = if kind.contains("lqer_asym") { "_a" } else { "" };
            read.extend(["lqA", "lqAs", "lqB", "lqBs"].map(|k| format!("{name}.{k}{sfx}")));
            Some(Box::new(lowrank_of(path, w, name, &kind, q)?))
        } else {
            None
        };
        let protected = match awq_bits(&kind) {
            Some(hi_bits) => {
                read.extend(
                    ["awqg_start", "awqg_s_hi", "awqg_size"].map(|k| format!("{name}.{k}")),
                );
                Some(Box::new(protected_of(path, w, name, hi_bits, q)?))
            }
            None => None,
        };
        let mut scheme = format!(
            "int{bits}_{}",
            if per_row { "per_row" } else { "per_tensor" }
        );
        if let Some(p) = &protected {
            scheme.push_str(&format!("+awqgrpint{}", p.bits));
        }
        if let Some(lr) = &lowrank {
            scheme.push_str(if lr.asymmetric { "+lqer_asym" } else { "+lqer" });
        }
        out.push(QTensor {
            name: name.into(),
            shape: q.shape.clone(),
            scheme,
            bits,
            orig_dtype: "float32".into(),
            payload: Payload::Quantized {
                q: q.clone(),
                scale: scale.clone(),
                lowrank,
                protected,
            },
        });
    }
    if let Some((key, _)) = w.entries().into_iter().find(|(k, _)| !read.contains(*k)) {
        return Err(bad(format!(
            "{key:?}: a field pgolf does not know (no meta entry reads it), so the artifact cannot be decoded \
             faithfully"
        )));
    }
    Ok(out)
}

/// The parts of a GPTQ meta string the reader knows: `gptq (int<b>)` or `int<b>…`, then `+awqgrpint<b>`, `+lqer`
/// or `+lqer_asym`. Any other part would change the decoding and is refused.
fn check_meta_parts(path: &Path, name: &str, kind: &str) -> Result<()> {
    for part in kind.split('+').skip(1) {
        let known =
            part == "lqer" || part == "lqer_asym" || awq_bits(&format!("+{part}")).is_some();
        if !known {
            return Err(PackError::Unsupported {
                path: path.into(),
                what: format!("{name:?}: meta part {part:?} of {kind:?} is not one pgolf knows"),
            });
        }
    }
    Ok(())
}

/// The bits of an AWQ-lite `+awqgrpint<b>` part.
fn awq_bits(kind: &str) -> Option<u32> {
    let i = kind.find("+awqgrpint")?;
    let digits: String = kind[i + "+awqgrpint".len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok().filter(|b| (2..=8).contains(b))
}

/// The AWQ-lite fields of `name`, checked to fit q: integer starts, a positive group size, groups inside the
/// columns, one fp scale per row, and the protected symbols within the finer grid.
fn protected_of(
    path: &Path,
    w: &Obj,
    name: &str,
    bits: u32,
    q: &HostTensor,
) -> Result<ProtectedGroups> {
    let part = |k: &str| tensor(path, w, &format!("{name}.{k}"), "AWQ-lite field").cloned();
    let p = ProtectedGroups {
        bits,
        starts: part("awqg_start")?,
        size: part("awqg_size")?,
        scale_hi: part("awqg_s_hi")?,
    };
    let bad = |m: String| PackError::Format {
        path: path.into(),
        message: format!("{name}: AWQ-lite {m}"),
    };
    let (rows, cols) = match q.shape.as_slice() {
        [r, c] => (*r, *c),
        other => {
            return Err(bad(format!(
                "groups on a {other:?} tensor (a matrix is needed)"
            )));
        }
    };
    let starts = p
        .starts
        .to_i64()
        .ok_or_else(|| bad(format!("awqg_start is {}, not integers", p.starts.dtype)))?;
    let size = match p.size.to_i64().as_deref() {
        Some([s]) if *s > 0 => *s as usize,
        _ => {
            return Err(bad(format!(
                "awqg_size {:?} is not one positive integer",
                p.size.shape
            )));
        }
    };
    if starts
        .iter()
        .any(|&s| s < 0 || (s as usize).checked_add(size).is_none_or(|end| end > cols))
    {
        return Err(bad(format!(
            "groups {starts:?} of {size} columns do not fit {cols} columns"
        )));
    }
    if !p.scale_hi.is_float() || p.scale_hi.numel() != rows {
        return Err(bad(format!(
            "awqg_s_hi {} {:?} is not one scale per row of {rows}",
            p.scale_hi.dtype, p.scale_hi.shape
        )));
    }
    let limit = (1i64 << (bits - 1)) - 1;
    let symbols = q.to_i64().unwrap_or_default();
    let outside = starts.iter().any(|&s| {
        (0..rows).any(|r| {
            let row = &symbols[r * cols + s as usize..r * cols + s as usize + size];
            row.iter().any(|v| v.unsigned_abs() > limit as u64)
        })
    });
    if outside {
        return Err(bad(format!(
            "symbols outside the int{bits} grid [-{limit}, {limit}]"
        )));
    }
    Ok(p)
}

/// The LQER factors of `name` (keys `.lqA/.lqAs/.lqB/.lqBs`, with an `_a` suffix when asymmetric), checked to fit q.
fn lowrank_of(path: &Path, w: &Obj, name: &str, kind: &str, q: &HostTensor) -> Result<LowRank> {
    let asymmetric = kind.contains("lqer_asym");
    let sfx = if asymmetric { "_a" } else { "" };
    let part = |k: &str| tensor(path, w, &format!("{name}.{k}{sfx}"), "LQER factor").cloned();
    let lr = LowRank {
        asymmetric,
        a_q: part("lqA")?,
        a_s: part("lqAs")?,
        b_q: part("lqB")?,
        b_s: part("lqBs")?,
    };
    let rows = q.shape.first().copied().unwrap_or(0);
    let rank = lr.a_q.shape.get(1).copied().unwrap_or(0);
    let fits = lr.a_q.shape.len() == 2
        && lr.a_q.shape[0] == rows
        && lr.b_q.shape.len() == 2
        && lr.b_q.shape[0] == rank
        && lr.b_q.numel() == rank * (q.numel() / rows.max(1))
        && lr.b_s.numel() > 0
        && lr.b_q.numel().is_multiple_of(lr.b_s.numel())
        // Symmetric B has one scale per row (rank rows); asymmetric B one per group.
        && (asymmetric || lr.b_s.numel() == rank)
        && lr.a_s.numel() == if asymmetric { 1 } else { rows };
    if !fits {
        return Err(PackError::Format {
            path: path.into(),
            message: format!("{name}: LQER factors do not fit a {:?} matrix", q.shape),
        });
    }
    Ok(lr)
}

/// Parameter banks (rec/2026-03-23 "Parallel Muon" lineage) split into the per-block names
/// ([`crate::infer::weights::bank_slice_names`]): qo_bank [2L,d,d] → c_q (first L), proj (last L); kv_bank
/// [2L,kv,d] → c_k, c_v; mlp_up_bank [L,h,d] → mlp.fc; mlp_down_bank [L,d,h] → mlp.proj.
fn unbank(name: &str, t: &HostTensor) -> Option<Vec<QTensor>> {
    let names = crate::infer::weights::bank_slice_names(name, &t.shape)?;
    let slice_bytes = t.data.len() / t.shape[0].max(1);
    Some(
        names
            .iter()
            .enumerate()
            .map(|(k, block_name)| {
                let values = HostTensor {
                    dtype: t.dtype.clone(),
                    shape: t.shape[1..].to_vec(),
                    data: t.data[k * slice_bytes..(k + 1) * slice_bytes].to_vec(),
                };
                passthrough(block_name, &values, None)
            })
            .collect(),
    )
}

fn usize_of(path: &Path, e: &Obj, key: &str, name: &str) -> Result<usize> {
    match e.get(key) {
        Some(Obj::Int(i)) if *i >= 0 => Ok(*i as usize),
        _ => Err(PackError::Format {
            path: path.into(),
            message: format!("{name}: {key:?} is not a non-negative integer"),
        }),
    }
}

fn usize_list(path: &Path, e: &Obj, key: &str, name: &str) -> Result<Vec<usize>> {
    let bad = |m: &str| PackError::Format {
        path: path.into(),
        message: format!("{name}: {key:?} {m}"),
    };
    match e.get(key) {
        Some(Obj::List(items)) => items
            .iter()
            .map(|x| match x {
                Obj::Int(i) if *i >= 0 => Ok(*i as usize),
                _ => Err(bad("holds a non-integer")),
            })
            .collect(),
        _ => Err(bad("is not a list")),
    }
}

/// One entry of the ternary/binary records' `{name: {"type": …}}` dictionaries (spec §7). Their `deq_sd` restores
/// to bfloat16 by default, so these tensors are rounded through bfloat16.
fn packed_entry(path: &Path, name: &str, e: &Obj) -> Result<QTensor> {
    let bad = |message: String| PackError::Format {
        path: path.into(),
        message: format!("{name}: {message}"),
    };
    let kind = e
        .get("type")
        .and_then(Obj::as_str)
        .unwrap_or_default()
        .to_string();
    let bf16 = "bfloat16".to_string();
    match kind.as_str() {
        "fp16" | "fp8" => {
            let values = tensor(path, e, "data", name)?;
            Ok(QTensor {
                name: name.into(),
                shape: values.shape.clone(),
                scheme: kind.clone(),
                bits: if kind == "fp8" { 8 } else { 16 },
                orig_dtype: bf16,
                payload: Payload::Passthrough {
                    values: values.clone(),
                },
            })
        }
        "fp4" => {
            let packed = tensor(path, e, "packed", name)?;
            let scale = tensor(path, e, "scale", name)?;
            let shape = usize_list(path, e, "shape", name)?;
            let numel =
                checked_numel(&shape).ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
            if packed.data.len() * 2 < numel || packed.dtype != "uint8" {
                return Err(bad(format!(
                    "{} packed bytes cannot hold {numel} fp4 values",
                    packed.data.len()
                )));
            }
            let rows = if shape.len() <= 1 {
                1
            } else {
                numel / shape[shape.len() - 1].max(1)
            };
            if scale.numel() != rows {
                return Err(bad(format!("{} scales for {rows} rows", scale.numel())));
            }
            let symbols: Vec<i8> = packed
                .data
                .iter()
                .flat_map(|&b| [(b & 0x0f) as i8 - 8, ((b >> 4) & 0x0f) as i8 - 8])
                .take(numel)
                .collect();
            Ok(QTensor {
                name: name.into(),
                shape,
                scheme: "fp4_per_row".into(),
                bits: 4,
                orig_dtype: bf16,
                payload: Payload::Fp4 {
                    symbols,
                    scales: scale.to_f32(),
                    stored: [packed.data.clone(), scale.data.clone()].concat(),
                },
            })
        }
        "ternary" | "ternary_bitmask" | "binary" => {
            let packed = match e.get("packed") {
                Some(Obj::Bytes(b)) => b.clone(),
                Some(Obj::Tensor(t)) => t.data.clone(),
                _ => return Err(bad("\"packed\" is not bytes".into())),
            };
            let scale = tensor(path, e, "scale", name)?;
            let shape = usize_list(path, e, "shape", name)?;
            let group_size = usize_of(path, e, "group_size", name)?;
            let padded_cols = usize_of(path, e, "padded_cols", name)?;
            let n = usize_of(
                path,
                e,
                if kind == "binary" {
                    "n_bits"
                } else {
                    "n_trits"
                },
                name,
            )?;
            let [rows, cols] = shape[..] else {
                return Err(bad(format!("shape {shape:?} is not 2-D")));
            };
            let consistent = group_size > 0
                && padded_cols >= cols
                && padded_cols.is_multiple_of(group_size)
                && rows.checked_mul(padded_cols) == Some(n);
            if !consistent {
                return Err(bad(format!(
                    "inconsistent packing: shape {shape:?}, padded_cols {padded_cols}, group_size {group_size}, count {n}"
                )));
            }
            if scale.numel() != n / group_size {
                return Err(bad(format!(
                    "{} scales for {} groups",
                    scale.numel(),
                    n / group_size
                )));
            }
            let short = |what: &str| {
                bad(format!(
                    "{what} payload of {} bytes is too short for {n} values",
                    packed.len()
                ))
            };
            let (symbols, gk) = match kind.as_str() {
                "ternary" => (
                    unpack_base3(&packed, n).ok_or_else(|| short("base-3"))?,
                    GroupKind::Ternary,
                ),
                "ternary_bitmask" => (
                    unpack_bitmask(&packed, n).ok_or_else(|| short("bitmask"))?,
                    GroupKind::TernaryBitmask,
                ),
                _ => (
                    unpack_binary(&packed, n).ok_or_else(|| short("binary"))?,
                    GroupKind::Binary,
                ),
            };
            let orig = usize_list(path, e, "orig_shape", name).unwrap_or_else(|_| shape.clone());
            Ok(QTensor {
                name: name.into(),
                shape: if checked_numel(&orig) == Some(rows * cols) {
                    orig
                } else {
                    shape.clone()
                },
                scheme: format!("{kind}_g{group_size}"),
                bits: if kind == "binary" { 1 } else { 2 },
                orig_dtype: bf16,
                payload: Payload::Grouped {
                    kind: gk,
                    symbols,
                    scales: scale.to_f32(),
                    group_size,
                    padded_cols,
                    rows,
                    cols,
                    stored: [packed, scale.data.clone()].concat(),
                },
            })
        }
        other => Err(PackError::Unsupported {
            path: path.into(),
            what: format!("{name}: entry type {other:?}"),
        }),
    }
}

/// Base-3, five trits per byte: byte = Σ (q_i + 1)·3^i.
fn unpack_base3(data: &[u8], n: usize) -> Option<Vec<i8>> {
    if data.len() * 5 < n {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 5);
    for &b in data {
        let mut v = b as u16;
        for _ in 0..5 {
            out.push((v % 3) as i8 - 1);
            v /= 3;
        }
    }
    out.truncate(n);
    Some(out)
}

/// `packbits(nonzero) ++ packbits(sign of the nonzeros)` (numpy's bit order: most significant bit first).
fn unpack_bitmask(data: &[u8], n: usize) -> Option<Vec<i8>> {
    let mask_bytes = n.div_ceil(8);
    let bit = |bytes: &[u8], i: usize| bytes.get(i / 8).map(|b| (b >> (7 - i % 8)) & 1 == 1);
    let (mask, signs) = (data.get(..mask_bytes)?, data.get(mask_bytes..)?);
    let mut k = 0;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if bit(mask, i)? {
            out.push(if bit(signs, k)? { 1 } else { -1 });
            k += 1;
        } else {
            out.push(0);
        }
    }
    Some(out)
}

/// {−1, +1} as bits, eight per byte, least significant bit first.
fn unpack_binary(data: &[u8], n: usize) -> Option<Vec<i8>> {
    if data.len() * 8 < n {
        return None;
    }
    Some(
        (0..n)
            .map(|i| {
                if (data[i / 8] >> (i % 8)) & 1 == 1 {
                    1
                } else {
                    -1
                }
            })
            .collect(),
    )
}

/// Splits the records' parameter banks among unquantized tensors into per-block tensors, as their
/// `_unbank_state_dict` does before quantizing, so every matrix is quantized per row under its per-block name.
pub fn unbank_tensors(tensors: Vec<QTensor>) -> Vec<QTensor> {
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        match &t.payload {
            Payload::Passthrough { values } => match unbank(&t.name, values) {
                Some(parts) => out.extend(parts),
                None => out.push(t),
            },
            _ => out.push(t),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(dtype: &str, shape: &[usize], data: Vec<u8>) -> Obj {
        Obj::Tensor(HostTensor {
            dtype: dtype.into(),
            shape: shape.to_vec(),
            data,
        })
    }

    fn dict(entries: Vec<(&str, Obj)>) -> Obj {
        Obj::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (Obj::Str(k.into()), v))
                .collect(),
        )
    }

    #[test]
    fn a_symmetric_lqer_entry_needs_one_b_scale_per_rank_row() {
        // W [4, 6] with rank-2 factors A [4, 2] (one scale per row) and B [2, 6]: B needs 2 row scales, has 1.
        let q = HostTensor {
            dtype: "int8".into(),
            shape: vec![4, 6],
            data: vec![0; 24],
        };
        let f16 = |n: usize| vec![0u8; 2 * n];
        let w = |b_scales: usize| {
            dict(vec![
                ("x.lqA", host("int8", &[4, 2], vec![1; 8])),
                ("x.lqAs", host("float16", &[4], f16(4))),
                ("x.lqB", host("int8", &[2, 6], vec![1; 12])),
                ("x.lqBs", host("float16", &[b_scales], f16(b_scales))),
            ])
        };
        let e = lowrank_of(Path::new("l.ptz"), &w(1), "x", "int6+lqer", &q)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("l.ptz") && e.contains("LQER factors do not fit"),
            "{e}"
        );
        let lr = lowrank_of(Path::new("l.ptz"), &w(2), "x", "int6+lqer", &q).unwrap();
        assert_eq!(lr.product().len(), 24);
    }

    #[test]
    fn an_fp4_shape_whose_element_count_overflows_is_an_error() {
        let entry = |shape: &[i64]| {
            dict(vec![
                ("type", Obj::Str("fp4".into())),
                ("packed", host("uint8", &[2], vec![0x88, 0x88])),
                ("scale", host("float16", &[1], vec![0, 0x3c])),
                (
                    "shape",
                    Obj::List(shape.iter().map(|&d| Obj::Int(d)).collect()),
                ),
            ])
        };
        let e = packed_entry(Path::new("f.ptz"), "w", &entry(&[1 << 32, 1 << 32]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.ptz") && e.contains("overflows"), "{e}");
        let t = packed_entry(Path::new("f.ptz"), "w", &entry(&[1, 4])).unwrap();
        assert_eq!(t.params(), 4);
    }
}
