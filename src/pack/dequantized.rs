//! An artifact's weights as its own decoder returns them, written as safetensors (`pgolf inspect FILE
//! --dequantize OUT.safetensors`): every tensor under the artifact's name, dequantized as the record's
//! `dequantize_mixed` does (row scales, AWQ-lite groups, then the LQER correction) and restored to the dtype the
//! artifact records (float32 where it records none, as the records' `{"w", "m"}` schema restores its matrices to the
//! template's float32 weights); integer passthrough tensors keep their stored dtype and bytes. PyTorch loads the file
//! with `safetensors.torch.load_file`, and the tensors compare with the record's own `deserialize` one by one.

use std::path::Path;

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::schema::{Payload, QTensor};
use super::{PackError, Result};

/// The safetensors dtype of a torch dtype name.
fn dtype_of(name: &str) -> Option<Dtype> {
    Some(match name {
        "float32" => Dtype::F32,
        "float16" => Dtype::F16,
        "bfloat16" => Dtype::BF16,
        "float64" => Dtype::F64,
        "int8" => Dtype::I8,
        "uint8" => Dtype::U8,
        "int16" => Dtype::I16,
        "int32" => Dtype::I32,
        "int64" => Dtype::I64,
        "bool" => Dtype::BOOL,
        _ => return None,
    })
}

/// The dtype and little-endian bytes of one tensor as the artifact's decoder returns it.
fn restored(t: &QTensor) -> std::result::Result<(Dtype, Vec<u8>), String> {
    if let Payload::Passthrough { values } = &t.payload
        && !values.is_float()
    {
        let dtype = dtype_of(&values.dtype).ok_or_else(|| {
            format!(
                "{}: stored as {}, which safetensors cannot hold",
                t.name, values.dtype
            )
        })?;
        return Ok((dtype, values.data.clone()));
    }
    let values = t.dequantize();
    let dtype = dtype_of(&t.orig_dtype)
        .filter(|d| matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64));
    let bytes = match dtype {
        Some(Dtype::F16) => values
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        Some(Dtype::BF16) => values
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        Some(Dtype::F64) => values
            .iter()
            .flat_map(|&x| (x as f64).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|&x| x.to_le_bytes()).collect(),
    };
    Ok((dtype.unwrap_or(Dtype::F32), bytes))
}

/// The safetensors bytes of `tensors`, dequantized. `path` names the artifact in errors.
pub fn dequantized_safetensors(path: &Path, tensors: &[QTensor]) -> Result<Vec<u8>> {
    let bad = |message: String| PackError::Format {
        path: path.into(),
        message,
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut data = Vec::with_capacity(tensors.len());
    for t in tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(bad(format!("{}: two tensors of one name", t.name)));
        }
        let (dtype, bytes) = restored(t).map_err(bad)?;
        data.push((t.name.clone(), dtype, t.shape.clone(), bytes));
    }
    let views = data
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| bad(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, None).map_err(|e| bad(format!("safetensors: {e}")))
}
