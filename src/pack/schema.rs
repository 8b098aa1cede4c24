//! One representation for the quantization schemas records ship (spec quantization-and-packing §2–3):
//! the baseline `int8_clean_per_row_v1` dictionary and the `{"w": …, "m": …}` mixed int5/int6/int7/int8 dictionaries,
//! plus plain state dicts (safetensors or `torch.save`). Each tensor knows its scheme, bits, shape and scales, and
//! dequantizes to f32 the way the record's own code does.

use std::path::Path;

use super::torchfile::{HostTensor, Obj};
use super::{PackError, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Integer symbols with one scale per row (scale.len() == rows) or one for the whole tensor.
    Quantized { q: HostTensor, scale: HostTensor },
    /// Stored as is (possibly downcast to fp16 for storage).
    Passthrough { values: HostTensor },
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
            Payload::Quantized { q, scale } => {
                let qv = q.to_f32();
                let sv = scale.to_f32();
                if sv.len() == 1 && scale.shape.is_empty() {
                    qv.iter().map(|&x| x * sv[0]).collect()
                } else {
                    let rows = sv.len().max(1);
                    let per_row = qv.len() / rows;
                    qv.iter()
                        .enumerate()
                        .map(|(i, &x)| x * sv[i / per_row.max(1)])
                        .collect()
                }
            }
        };
        round_to_dtype(out, &self.orig_dtype)
    }

    /// Stored bytes of the payload (symbols + scales, or passthrough values).
    pub fn raw_bytes(&self) -> usize {
        match &self.payload {
            Payload::Quantized { q, scale } => q.data.len() + scale.data.len(),
            Payload::Passthrough { values } => values.data.len(),
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
            Obj::Tensor(t) => out.push(passthrough(name, t, None)),
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
        if kind.starts_with("passthrough") {
            out.push(passthrough(
                name,
                tensor(path, w, name, "passthrough tensor")?,
                None,
            ));
            continue;
        }
        let bits = bits_of_type(&kind).ok_or_else(|| PackError::Unsupported {
            path: path.into(),
            what: format!("{name:?} has meta type {kind:?}"),
        })?;
        let q = tensor(path, w, &format!("{name}.q"), "symbols")?;
        let scale = tensor(path, w, &format!("{name}.scale"), "scales")?;
        check_scale(path, name, q, scale)?;
        let per_row = !scale.shape.is_empty() && scale.numel() > 1 || q.shape.len() >= 2;
        out.push(QTensor {
            name: name.into(),
            shape: q.shape.clone(),
            scheme: format!(
                "int{bits}_{}",
                if per_row { "per_row" } else { "per_tensor" }
            ),
            bits,
            orig_dtype: "float32".into(),
            payload: Payload::Quantized {
                q: q.clone(),
                scale: scale.clone(),
            },
        });
    }
    Ok(out)
}
