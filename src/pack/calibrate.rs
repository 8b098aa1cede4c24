//! GPTQ calibration: pgolf's own forward pass (every record architecture, loops included) over training shards,
//! accumulating each quantized matrix's input Hessian Σ xᵀx (the tied embedding's from the final norm's output, as
//! the records collect it). Calibrating on validation data is ruled illegal: shards whose names mark them as
//! validation data are refused unless the caller says otherwise, and then the artifact records it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::schema::QTensor;
use super::{Limits, PackError, Result};
use crate::infer::config::ModelConfig;
use crate::infer::model::Gpt;
use crate::infer::weights::{StateDict, check_state_dict};
use crate::kernels::{LinearHook, Precision};

/// What a calibration read, for the artifact header and the pack report.
#[derive(Clone, Debug, Serialize)]
pub struct CalibrationReport {
    pub shards: Vec<String>,
    pub tokens: usize,
    pub sequences: usize,
    pub seq_len: usize,
    /// The shards include validation data (only with the explicit override).
    pub validation_data: bool,
    /// Matrices with a Hessian.
    pub hessians: usize,
}

pub struct Calibration {
    /// Row-major [in, in] Hessians (f32, averaged over rows) by weight name.
    pub hessians: BTreeMap<String, Vec<f32>>,
    pub report: CalibrationReport,
}

fn calib_error(path: &Path, message: String) -> PackError {
    PackError::Format {
        path: path.into(),
        message: format!("calibration: {message}"),
    }
}

/// Σ xᵀx over every row a forward pass feeds each linear layer, by the name of the layer's weight (a weight used
/// on several passes, as with loop recurrence or a tied head, accumulates every use): GPTQ's Hessians. For a tied
/// embedding the head's input is the final norm's output, as the records collect it. Installed on the model as a
/// hook ([`Gpt::install_linear_hook`]).
#[derive(Debug, Default)]
struct InputMoments {
    sums: Mutex<Moments>,
}

#[derive(Debug, Default)]
struct Moments {
    /// Row-major [in, in] sums, f64.
    sums: BTreeMap<String, Vec<f64>>,
    /// Rows accumulated per weight.
    rows: BTreeMap<String, u64>,
}

impl InputMoments {
    /// The sums so far.
    fn take(&self) -> Moments {
        std::mem::take(&mut *self.sums.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl LinearHook for InputMoments {
    fn observe(&self, weight: &str, x: &Tensor) -> candle_core::Result<()> {
        if weight.is_empty() {
            return Ok(());
        }
        let n_in = *x.dims().last().unwrap_or(&0);
        let x2 = x.to_dtype(DType::F32)?.reshape(((), n_in))?;
        let rows = x2.dim(0)? as u64;
        let xtx: Vec<f32> = x2.t()?.matmul(&x2)?.flatten_all()?.to_vec1()?;
        let mut m = self.sums.lock().unwrap_or_else(|e| e.into_inner());
        let sum = m
            .sums
            .entry(weight.to_string())
            .or_insert_with(|| vec![0.0; n_in * n_in]);
        for (a, &b) in sum.iter_mut().zip(&xtx) {
            *a += b as f64;
        }
        *m.rows.entry(weight.to_string()).or_default() += rows;
        Ok(())
    }
}

/// Whether a shard's name marks it as validation data (`fineweb_val_000000.bin`, a `val` folder, …).
pub fn is_validation_shard(p: &Path) -> bool {
    p.iter().any(|part| {
        let s = part.to_string_lossy().to_lowercase();
        s.contains("_val_") || s.starts_with("val_") || s == "val" || s.contains("validation")
    })
}

/// Runs the model on up to `max_tokens` tokens of the shards `glob` names, in sequences of the config's
/// `train_seq_len`, `batch` sequences per forward pass. `progress(done, total)` counts sequences.
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    checkpoint: &[QTensor],
    config: &ModelConfig,
    glob: &str,
    max_tokens: usize,
    allow_validation: bool,
    batch: usize,
    limits: &Limits,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Calibration> {
    let pattern = Path::new(glob);
    let mut files: Vec<PathBuf> = glob::glob(glob)
        .map_err(|e| calib_error(pattern, format!("bad glob: {e}")))?
        .filter_map(|p| p.ok())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(calib_error(pattern, "the glob matches no shard".into()));
    }
    let validation: Vec<&PathBuf> = files.iter().filter(|p| is_validation_shard(p)).collect();
    if !validation.is_empty() && !allow_validation {
        return Err(calib_error(
            validation[0],
            "is validation data: calibrating on it is ruled illegal (train shards only; \
             --allow-validation-calibration overrides and the artifact records it)"
                .into(),
        ));
    }
    let mut tokens = Vec::new();
    for f in &files {
        if tokens.len() >= max_tokens {
            break;
        }
        let t =
            crate::data::shard::read_shard(f, limits).map_err(|e| calib_error(f, e.to_string()))?;
        if let Some(&bad) = t.iter().find(|&&id| id as usize >= config.vocab_size) {
            return Err(calib_error(
                f,
                format!(
                    "token id {bad} is outside the model's vocabulary of {}: shards of another tokenizer",
                    config.vocab_size
                ),
            ));
        }
        tokens.extend(t);
    }
    let seq_len = config.train_seq_len.max(1);
    tokens.truncate(max_tokens);
    let sequences = tokens.len() / seq_len;
    if sequences == 0 {
        return Err(calib_error(
            pattern,
            format!(
                "{} tokens, fewer than one sequence of {seq_len}",
                tokens.len()
            ),
        ));
    }
    let device = Device::Cpu;
    let mut state = StateDict::new();
    for t in checkpoint {
        let v = Tensor::from_vec(t.dequantize(), t.shape.as_slice(), &device)
            .map_err(crate::infer::InferError::from)?;
        state.insert(t.name.clone(), v);
    }
    let state = check_state_dict(config, state, DType::F32, Path::new("checkpoint"))?;
    let mut model = Gpt::new(config.clone(), state, &device, Precision::Fp32)?;
    let recorder = Arc::new(InputMoments::default());
    model.install_linear_hook(recorder.clone());
    let batch = batch.max(1);
    let mut done = 0;
    while done < sequences {
        let n = batch.min(sequences - done);
        let ids: Vec<u32> = tokens[done * seq_len..(done + n) * seq_len]
            .iter()
            .map(|&t| t as u32)
            .collect();
        let ids =
            Tensor::from_vec(ids, (n, seq_len), &device).map_err(crate::infer::InferError::from)?;
        model.uncapped_logits(&ids)?;
        done += n;
        progress(done, sequences);
    }
    model.remove_linear_hook();
    let moments = recorder.take();
    let hessians: BTreeMap<String, Vec<f32>> = moments
        .sums
        .into_iter()
        .map(|(name, sum)| {
            let rows = moments.rows.get(&name).copied().unwrap_or(1).max(1) as f64;
            (name, sum.into_iter().map(|x| (x / rows) as f32).collect())
        })
        .collect();
    Ok(Calibration {
        report: CalibrationReport {
            shards: files.iter().map(|p| p.display().to_string()).collect(),
            tokens: sequences * seq_len,
            sequences,
            seq_len,
            validation_data: !validation.is_empty(),
            hessians: hessians.len(),
        },
        hessians,
    })
}
