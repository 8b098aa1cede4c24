//! Weight loading: safetensors (or any name → tensor map) checked against the config's expected state dict.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::config::ModelConfig;
use super::{InferError, Result};

/// A state dict: the challenge's tensor names to tensors.
pub type StateDict = HashMap<String, Tensor>;

/// Reads a safetensors file onto `device`.
pub fn load_safetensors(path: &Path, device: &Device) -> Result<StateDict> {
    let bytes = crate::limits::read_input(path, &crate::limits::current()).map_err(|source| {
        InferError::Io {
            path: path.into(),
            source,
        }
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| InferError::Weights {
        path: path.into(),
        message: e.to_string(),
    })?;
    let mut out = StateDict::new();
    for (name, view) in st.tensors() {
        let t = candle_core::safetensors::Load::load(&view, device).map_err(|e| {
            InferError::Weights {
                path: path.into(),
                message: format!("tensor {name}: {e}"),
            }
        })?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Checks names and shapes against the config: every missing, extra or mis-shaped tensor is listed in one error.
/// Floating tensors are converted to `dtype`.
pub fn check_state_dict(
    cfg: &ModelConfig,
    state: StateDict,
    dtype: DType,
    source: &Path,
) -> Result<StateDict> {
    let mut problems = Vec::new();
    let state = unbank(state, cfg.num_layers, &mut problems)?;
    let expected = cfg.expected_tensors();
    for (name, shape) in &expected {
        match state.get(name) {
            None => problems.push(format!("missing {name} {shape:?}")),
            Some(t) if t.dims() != shape.as_slice() => problems.push(format!(
                "{name} has shape {:?}, the config needs {shape:?}",
                t.dims()
            )),
            Some(t) if !t.dtype().is_float() => {
                problems.push(format!("{name} is {:?}, not a float tensor", t.dtype()))
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let mut extra: Vec<&String> = state
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .collect();
    extra.sort();
    for name in extra {
        problems.push(format!("unexpected {name} {:?}", state[name].dims()));
    }
    if !problems.is_empty() {
        return Err(InferError::Mismatch {
            path: source.into(),
            problems,
        });
    }
    let mut out = StateDict::new();
    for (name, t) in state {
        out.insert(name, t.to_dtype(dtype)?);
    }
    Ok(out)
}

/// The records' parameter banks (architectures §1.14) and the per-block names each slice becomes, as
/// `_unbank_state_dict` renames them: (bank, [(first slice, name pattern)]).
const BANKS: [(&str, &[(usize, &str)]); 4] = [
    (
        "qo_bank",
        &[(0, "attn.c_q.weight"), (1, "attn.proj.weight")],
    ),
    ("kv_bank", &[(0, "attn.c_k.weight"), (1, "attn.c_v.weight")]),
    ("mlp_up_bank", &[(0, "mlp.fc.weight")]),
    ("mlp_down_bank", &[(0, "mlp.proj.weight")]),
];

/// For a parameter bank (architectures §1.14) of `shape` [k·n, a, b], the per-block name of each slice along its
/// first dimension, in order; None for any other tensor.
pub fn bank_slice_names(name: &str, shape: &[usize]) -> Option<Vec<String>> {
    let (_, parts) = BANKS.iter().find(|(b, _)| *b == name)?;
    if shape.len() != 3 || !shape[0].is_multiple_of(parts.len()) {
        return None;
    }
    let n = shape[0] / parts.len();
    Some(
        parts
            .iter()
            .flat_map(|&(_, part)| (0..n).map(move |i| format!("blocks.{i}.{part}")))
            .collect(),
    )
}

/// Splits parameter banks into per-block tensors: `qo_bank[i]` is block i's c_q and `qo_bank[n+i]` its out-proj,
/// `kv_bank[i]`/`[n+i]` its c_k/c_v, `mlp_up_bank[i]`/`mlp_down_bank[i]` its fc/proj. A bank of the wrong depth is
/// reported among `problems`.
pub fn unbank(
    mut state: StateDict,
    num_layers: usize,
    problems: &mut Vec<String>,
) -> Result<StateDict> {
    for (bank, parts) in BANKS {
        let Some(t) = state.remove(bank) else {
            continue;
        };
        let depth = parts.len() * num_layers;
        let names = bank_slice_names(bank, t.dims()).filter(|_| t.dim(0).ok() == Some(depth));
        let Some(names) = names else {
            problems.push(format!(
                "{bank} has shape {:?}; {num_layers} layers need [{depth}, _, _]",
                t.dims()
            ));
            continue;
        };
        for (k, name) in names.into_iter().enumerate() {
            state.insert(name, t.get(k)?);
        }
    }
    Ok(state)
}

/// [`unbank`] on names and shapes only: each bank [k·n, a, b] becomes n per-block [a, b] entries per part.
pub fn unbank_shapes(tensors: &[(String, Vec<usize>)]) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::with_capacity(tensors.len());
    for (name, shape) in tensors {
        match bank_slice_names(name, shape) {
            Some(names) => out.extend(names.into_iter().map(|n| (n, shape[1..].to_vec()))),
            None => out.push((name.clone(), shape.clone())),
        }
    }
    out
}
