//! Pieces the records' GPT and seed 001's JEPA both build from that are not kernels: the BOS id,
//! evaluation-time fake quantization, and the turning of named weights into trainable variables. The operations
//! themselves are the kernels floor's ([`crate::kernels::Kernels`]).

use candle_core::{DType, Tensor, Var};

use super::Result;
use crate::kernels::Weight;

/// The BOS token id of every tokenizer the challenge uses.
pub const BOS_ID: u32 = 1;

/// Turns the weights `selected` by name into candle variables (the list then holds the variables' tensors, so
/// updating a variable in place updates the model) and returns them in list order; the others become constants
/// (sharing storage with what they were). Nothing prepared from any weight is kept from now on.
pub(crate) fn make_trainable(
    weights: &mut [Weight],
    selected: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, Var)>> {
    let mut vars = Vec::new();
    for w in weights.iter_mut() {
        if selected(w.name()) {
            let var = Var::from_tensor(w.tensor())?;
            w.set_variable(var.as_tensor().clone());
            vars.push((w.name().to_string(), var));
        } else {
            let t = w.tensor().detach();
            w.set_variable(t);
        }
    }
    Ok(vars)
}

/// The clip range of seed 004's evaluation-time fake quantization for a weight, if it gets one: its CastedLinear
/// weights (attention and MLP matrices, the bigram projection, an untied head) with more than 8192 elements;
/// 15 for the MLP, 31 otherwise.
pub(crate) fn fake_quant_clip(name: &str, numel: usize) -> Option<f32> {
    let casted = name.ends_with(".attn.c_q.weight")
        || name.ends_with(".attn.c_k.weight")
        || name.ends_with(".attn.c_v.weight")
        || name.ends_with(".attn.proj.weight")
        || name.ends_with(".mlp.fc.weight")
        || name.ends_with(".mlp.proj.weight")
        || name == "bigram.proj.weight"
        || name == "lm_head.weight";
    if !casted || numel <= 8192 {
        return None;
    }
    Some(if name.contains(".mlp.") { 15.0 } else { 31.0 })
}

/// `_ste_fake_quantize` as its forward computes it in f32: s = max(rowmax|w|/c, 1e−12), q = clamp(round(w/s), −c, c)
/// (round half to even, as torch.round), and w + (q·s − w), the straight-through form, evaluated as written.
pub(crate) fn fake_quantize_rows(w: &Tensor, clip: f32) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let dtype = w.dtype();
    let values = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(values.len());
    for row in values.chunks(cols) {
        let row_max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = (row_max / clip).max(1e-12);
        out.extend(row.iter().map(|&v| {
            let q = (v / scale).round_ties_even().clamp(-clip, clip);
            v + (q * scale - v)
        }));
    }
    Ok(Tensor::from_vec(out, (rows, cols), w.device())?.to_dtype(dtype)?)
}
