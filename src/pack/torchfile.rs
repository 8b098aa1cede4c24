//! `torch.save` files: a zip archive holding `<prefix>/data.pkl` and one record per storage
//! (`<prefix>/data/<key>`). Tensors are materialized as contiguous little-endian bytes with their strides and
//! storage offsets honoured, after checking that every element they address lies inside the storage.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use super::decode_budget::DecodeBudget;
use super::pickle::{self, TensorRef, Value, dtype_element};
use super::{Limits, PackError, Result};

/// A tensor's data in memory: contiguous, row-major, little-endian.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// torch dtype name: float32, float16, bfloat16, float8_e4m3fn, int8, uint8, int16, int32, int64, bool, float64.
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// The element count of a shape read from input, or None when the product overflows.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

impl HostTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_float(&self) -> bool {
        matches!(
            self.dtype.as_str(),
            "float32" | "float16" | "bfloat16" | "float64" | "float8_e4m3fn"
        )
    }

    /// Values as f32 (integers exactly where they fit).
    pub fn to_f32(&self) -> Vec<f32> {
        let d = &self.data;
        match self.dtype.as_str() {
            "float32" => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            "float64" => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            "float16" => d
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            "bfloat16" => d
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            "float8_e4m3fn" => d.iter().map(|&b| f8_e4m3fn_to_f32(b)).collect(),
            "int8" => d.iter().map(|&b| b as i8 as f32).collect(),
            "uint8" | "bool" => d.iter().map(|&b| b as f32).collect(),
            "int16" => d
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            "int32" => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            "int64" => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Integer values (for int8/uint8/int16/int32/int64/bool tensors).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let d = &self.data;
        Some(match self.dtype.as_str() {
            "int8" => d.iter().map(|&b| b as i8 as i64).collect(),
            "uint8" | "bool" => d.iter().map(|&b| b as i64).collect(),
            "int16" => d
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            "int32" => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            "int64" => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            _ => return None,
        })
    }
}

/// float8 e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; S.1111.111 is NaN.
pub fn f8_e4m3fn_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0x0f) as i32;
    let man = (b & 0x07) as f32;
    if exp == 0x0f && b & 0x07 == 0x07 {
        return f32::NAN;
    }
    if exp == 0 {
        sign * man / 8.0 * 2f32.powi(-6)
    } else {
        sign * (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    }
}

/// A loaded `torch.save` object: the unpickled value with tensors materialized.
#[derive(Clone, Debug, PartialEq)]
pub enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Obj>),
    Dict(Vec<(Obj, Obj)>),
    Tensor(HostTensor),
}

impl Obj {
    pub fn get(&self, key: &str) -> Option<&Obj> {
        match self {
            Obj::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Obj::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool(_) => "bool",
            Obj::Int(_) => "int",
            Obj::Float(_) => "float",
            Obj::Str(_) => "str",
            Obj::Bytes(_) => "bytes",
            Obj::List(_) => "list",
            Obj::Dict(_) => "dict",
            Obj::Tensor(_) => "tensor",
        }
    }

    /// String-keyed entries of a dict.
    pub fn entries(&self) -> Vec<(&str, &Obj)> {
        match self {
            Obj::Dict(items) => items
                .iter()
                .filter_map(|(k, v)| k.as_str().map(|k| (k, v)))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Whether bytes start like a zip archive (a torch.save file).
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// Reads a `torch.save` zip held in memory; `path` names the source in errors.
/// Every entry read and every tensor made is charged to `budget`.
pub fn load_torch(
    path: &Path,
    bytes: &[u8],
    limits: &Limits,
    budget: &mut DecodeBudget,
) -> Result<Obj> {
    let fmt = |message: String| PackError::Format {
        path: path.into(),
        message,
    };
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| fmt(format!("not a torch.save zip: {e}")))?;
    if zip.len() > limits.max_zip_entries {
        return Err(fmt(format!(
            "{} zip entries exceed the limit of {}",
            zip.len(),
            limits.max_zip_entries
        )));
    }
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let pkl = names
        .iter()
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .ok_or_else(|| fmt("the zip has no data.pkl: not a torch.save file".into()))?
        .clone();
    let prefix = pkl.strip_suffix("data.pkl").unwrap_or("").to_string();
    let read_entry = |zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
                      name: &str,
                      budget: &mut DecodeBudget|
     -> Result<Vec<u8>> {
        let mut f = zip
            .by_name(name)
            .map_err(|e| fmt(format!("zip entry {name}: {e}")))?;
        let cap = budget.remaining();
        if f.size() > cap {
            // A declared size past the budget is refused before anything is read.
            return Err(budget.exceeded("zip"));
        }
        let mut out = Vec::with_capacity(f.size() as usize);
        (&mut f)
            .take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|e| fmt(format!("zip entry {name}: {e}")))?;
        budget.charge("zip", out.len() as u64)?;
        Ok(out)
    };
    let pickle_bytes = read_entry(&mut zip, &pkl, budget)?;
    let value = pickle::unpickle(&pickle_bytes, limits).map_err(|message| PackError::Pickle {
        path: path.into(),
        message,
    })?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    // Each tensor is charged for the elements it makes: a strided view may address far more elements than its
    // storage holds (stride 0), and many views may share one storage.
    materialize(value, &mut |t: &TensorRef| {
        if !storages.contains_key(&t.storage.key) {
            let name = format!("{prefix}data/{}", t.storage.key);
            let data = read_entry(&mut zip, &name, budget)?;
            storages.insert(t.storage.key.clone(), data);
        }
        tensor_from_storage(path, t, &storages[&t.storage.key], limits, budget)
    })
}

fn materialize(v: Value, tensor: &mut dyn FnMut(&TensorRef) -> Result<HostTensor>) -> Result<Obj> {
    Ok(match v {
        Value::None => Obj::None,
        Value::Bool(b) => Obj::Bool(b),
        Value::Int(i) => Obj::Int(i),
        Value::Float(f) => Obj::Float(f),
        Value::Str(s) => Obj::Str(s),
        Value::Bytes(b) => Obj::Bytes(b),
        Value::List(items) | Value::Tuple(items) => Obj::List(
            items
                .into_iter()
                .map(|i| materialize(i, tensor))
                .collect::<Result<_>>()?,
        ),
        Value::Dict(items) => Obj::Dict(
            items
                .into_iter()
                .map(|(k, v)| Ok((materialize(k, tensor)?, materialize(v, tensor)?)))
                .collect::<Result<_>>()?,
        ),
        Value::Tensor(t) => Obj::Tensor(tensor(&t)?),
        Value::Global(_) | Value::Storage(_) => Obj::None,
    })
}

fn tensor_from_storage(
    path: &Path,
    t: &TensorRef,
    storage: &[u8],
    limits: &Limits,
    budget: &mut DecodeBudget,
) -> Result<HostTensor> {
    let fmt = |message: String| PackError::Format {
        path: path.into(),
        message,
    };
    let elem = dtype_element(&t.dtype)
        .ok_or_else(|| fmt(format!("unsupported tensor dtype {}", t.dtype)))?;
    let mut numel: u64 = 1;
    for &d in &t.shape {
        numel = numel
            .checked_mul(d)
            .ok_or_else(|| fmt(format!("tensor shape {:?} overflows", t.shape)))?;
    }
    if numel > limits.max_tensor_elements {
        return Err(fmt(format!(
            "tensor shape {:?} exceeds the limit of {} elements",
            t.shape, limits.max_tensor_elements
        )));
    }
    budget.charge_tensor(numel, elem)?;
    let storage_elems = storage.len() as u64 / elem as u64;
    if t.offset > storage_elems {
        // Even a tensor of no elements starts inside (or at the end of) its storage.
        return Err(fmt(format!(
            "tensor of shape {:?} starts at element {}, past its storage of {storage_elems} elements",
            t.shape, t.offset
        )));
    }
    if numel > 0 {
        // The last element addressed: offset + Σ (size − 1)·stride must lie inside the storage.
        let mut last = t.offset;
        for (&d, &s) in t.shape.iter().zip(&t.stride) {
            last = (d - 1)
                .checked_mul(s)
                .and_then(|x| x.checked_add(last))
                .ok_or_else(|| fmt("tensor strides overflow".into()))?;
        }
        if last >= storage_elems {
            return Err(fmt(format!(
                "tensor of shape {:?} (offset {}, stride {:?}) addresses element {last}, past its storage of {storage_elems} elements",
                t.shape, t.offset, t.stride
            )));
        }
    }
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let mut data = Vec::with_capacity(numel as usize * elem);
    let contiguous = {
        let mut expected = 1u64;
        let mut ok = true;
        for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
            if d != 1 && s != expected {
                ok = false;
            }
            expected *= d;
        }
        ok
    };
    if contiguous {
        let start = t.offset as usize * elem;
        data.extend_from_slice(&storage[start..start + numel as usize * elem]);
    } else if numel > 0 {
        let mut idx = vec![0u64; shape.len()];
        for _ in 0..numel {
            let off = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
            let b = off as usize * elem;
            data.extend_from_slice(&storage[b..b + elem]);
            for ax in (0..idx.len()).rev() {
                idx[ax] += 1;
                if idx[ax] < t.shape[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
    }
    Ok(HostTensor {
        dtype: t.dtype.clone(),
        shape,
        data,
    })
}
