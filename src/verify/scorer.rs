//! The interface every evaluation procedure scores through, and its implementation for a model's forward pass.

use candle_core::{D, Device, Tensor};
use rayon::prelude::*;

use super::Result;
use super::softmax::{cross_entropy_row, log_softmax_row};
use crate::infer::layers::BOS_ID;
use crate::infer::lm::CausalLm;
use crate::infer::model::Gpt;

/// Scores a batch of windows: for window `i`, the NLL (nats) of `targets[i][p]` given `inputs[i][..=p]`, for every
/// position `p`. Inputs and targets of a window have the same length.
/// `rows` names (window, position) pairs whose full log-probability row over the vocabulary is wanted as well.
pub trait WindowScorer {
    fn score(
        &self,
        inputs: &[&[u16]],
        targets: &[&[u16]],
        rows: &[(usize, usize)],
    ) -> Result<Scored>;
}

/// Per-window NLLs, and the requested rows in the order they were requested.
pub struct Scored {
    pub nll: Vec<Vec<f32>>,
    pub rows: Vec<Vec<f64>>,
}

impl Scored {
    /// No positions scored for `windows` empty windows.
    pub fn empty(windows: usize) -> Self {
        Scored {
            nll: vec![Vec::new(); windows],
            rows: Vec::new(),
        }
    }

    /// Per-window NLLs cut from a padded [B, len] batch of them: window i keeps its first `inputs[i].len()`.
    fn from_rows_of(inputs: &[&[u16]], nll: &[f32], len: usize, rows: Vec<Vec<f64>>) -> Self {
        Scored {
            nll: inputs
                .iter()
                .enumerate()
                .map(|(i, w)| nll[i * len..i * len + w.len()].to_vec())
                .collect(),
            rows,
        }
    }
}

/// Scores windows with a model's forward pass: windows are zero-padded to the longest in the batch, or to `pad_to`
/// when that is longer (the records pad every batch to the evaluation length, and with the NTK rule the RoPE base
/// depends on that length; causal attention keeps padding out of every scored position), and each NLL is
/// `logsumexp(logits) − logit[target]` in f32, as `F.cross_entropy(logits.float(), y, reduction="none")`.
///
/// On the CPU the logits are read row by row on the host. On a GPU they never leave it: the cross-entropy runs
/// there and only the [B, L] NLLs (and any requested rows) come back — a batch of 32 windows of 2,048 over an
/// 8,192-token vocabulary is 2 GiB of logits.
pub struct ModelScorer<'a> {
    pub model: &'a dyn CausalLm,
    pub pad_to: usize,
    /// Compute the cross-entropy where the model runs (the default off the CPU, or with generic operations).
    pub nll_on_device: bool,
}

impl<'a> ModelScorer<'a> {
    pub fn new(model: &'a dyn CausalLm, pad_to: usize) -> Self {
        ModelScorer {
            model,
            pad_to,
            nll_on_device: model.backend().ops == crate::kernels::OpsKind::Generic,
        }
    }

    /// The device-side form of [`WindowScorer::score`].
    fn score_on_device(
        &self,
        inputs: &[&[u16]],
        targets: &[&[u16]],
        rows: &[(usize, usize)],
    ) -> Result<Scored> {
        let device = self.model.device();
        let Some((x, len)) = batch_ids(inputs, self.pad_to, device)? else {
            return Ok(Scored::empty(inputs.len()));
        };
        let b = inputs.len();
        let y = Tensor::from_vec(padded_ids(targets, len), b * len, device)?;
        let z = self
            .model
            .softcap_logits(&self.model.uncapped_logits(&x)?)?;
        let v = z.dim(D::Minus1)?;
        let z = z.reshape((b * len, v))?;
        // F.cross_entropy in f32: log Σ exp(z − max) + max − z[target].
        let max = z.max_keepdim(D::Minus1)?;
        let lse = (z
            .broadcast_sub(&max)?
            .exp()?
            .sum_keepdim(D::Minus1)?
            .log()?
            + max)?;
        let picked = z.gather(&y.unsqueeze(1)?, D::Minus1)?;
        let nll = (lse - picked)?.squeeze(1)?.to_vec1::<f32>()?;
        let rows = if rows.is_empty() {
            Vec::new()
        } else {
            let at: Vec<u32> = rows.iter().map(|&(i, p)| (i * len + p) as u32).collect();
            let wanted = z
                .index_select(&Tensor::from_vec(at, rows.len(), device)?, 0)?
                .to_vec2::<f32>()?;
            wanted
                .into_iter()
                .map(|row| log_softmax_row(row.into_iter()))
                .collect()
        };
        Ok(Scored::from_rows_of(inputs, &nll, len, rows))
    }
}

impl WindowScorer for ModelScorer<'_> {
    fn score(
        &self,
        inputs: &[&[u16]],
        targets: &[&[u16]],
        rows: &[(usize, usize)],
    ) -> Result<Scored> {
        if self.nll_on_device {
            return self.score_on_device(inputs, targets, rows);
        }
        // On the CPU a larger batch runs as consecutive forwards over at most CPU_FORWARD_TOKENS tokens, each
        // padded to the whole batch's length (as one forward would pad them), each part's logits scored while
        // they are fresh.
        let len = inputs
            .iter()
            .map(|w| w.len())
            .max()
            .unwrap_or(0)
            .max(self.pad_to);
        let per_forward = (CPU_FORWARD_TOKENS / len.max(1)).max(1);
        if inputs.len() <= per_forward || !self.model.device().is_cpu() {
            return self.score_one_forward(inputs, targets, rows, self.pad_to);
        }
        let mut nll = Vec::with_capacity(inputs.len());
        let mut wanted = vec![Vec::new(); rows.len()];
        for (part, (ins, tgs)) in inputs
            .chunks(per_forward)
            .zip(targets.chunks(per_forward))
            .enumerate()
        {
            let first = part * per_forward;
            let (slots, part_rows): (Vec<usize>, Vec<(usize, usize)>) = rows
                .iter()
                .enumerate()
                .filter(|&(_, &(i, _))| (first..first + ins.len()).contains(&i))
                .map(|(slot, &(i, p))| (slot, (i - first, p)))
                .unzip();
            let scored = self.score_one_forward(ins, tgs, &part_rows, len)?;
            nll.extend(scored.nll);
            for (slot, row) in slots.into_iter().zip(scored.rows) {
                wanted[slot] = row;
            }
        }
        Ok(Scored { nll, rows: wanted })
    }
}

/// Tokens per forward pass of [`ModelScorer`] on the CPU (whole windows, at least one): activations of that many
/// tokens stay closer to the cores. Measured on 2 cores against one forward over 8,192 tokens (docs/PERFORMANCE.md):
/// 4–8% faster on the baseline shape in mixed precision, 10–17% on the SOTA shape; the scores are the same, every
/// window's rows being computed on their own.
const CPU_FORWARD_TOKENS: usize = 4096;

impl ModelScorer<'_> {
    /// One forward over the whole of `inputs`, zero-padded to at least `pad_to`.
    fn score_one_forward(
        &self,
        inputs: &[&[u16]],
        targets: &[&[u16]],
        rows: &[(usize, usize)],
        pad_to: usize,
    ) -> Result<Scored> {
        let Some((logits, len, v)) = batch_logits(self.model, inputs, pad_to)? else {
            return Ok(Scored::empty(inputs.len()));
        };
        let y = padded_ids(targets, len);
        let model = self.model;
        let nll = capped_nll_rows(model, &logits, v, y.par_iter().map(|&t| t as usize));
        let rows = rows
            .iter()
            .map(|&(i, p)| {
                let at = (i * len + p) * v;
                log_softmax_row(model.capped_row(&logits[at..at + v]).into_iter())
            })
            .collect();
        Ok(Scored::from_rows_of(inputs, &nll, len, rows))
    }
}

/// Scores each window as one flat buffer whose attention never crosses a document boundary, as the records'
/// VarLen evaluation does (architectures §1.16): segments start at position 0 and at every BOS, and a document
/// longer than `max_doc_len` is cut into pieces of that length; RoPE runs at flat-buffer positions.
pub struct DocIsolatedScorer<'a> {
    pub model: &'a Gpt,
    pub max_doc_len: usize,
}

/// The records' `_build_cu_seqlens` as (start, len) segments of a buffer of `ids`.
pub fn doc_segments(ids: &[u16], max_doc_len: usize) -> Vec<(usize, usize)> {
    let n = ids.len();
    let mut starts: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|&(_, &t)| t as u32 == BOS_ID)
        .map(|(i, _)| i)
        .collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let mut segments = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(n);
        let mut pos = start;
        while pos < end {
            let len = if max_doc_len > 0 {
                max_doc_len.min(end - pos)
            } else {
                end - pos
            };
            segments.push((pos, len));
            pos += len;
        }
    }
    segments
}

impl WindowScorer for DocIsolatedScorer<'_> {
    fn score(
        &self,
        inputs: &[&[u16]],
        targets: &[&[u16]],
        rows: &[(usize, usize)],
    ) -> Result<Scored> {
        let model = self.model;
        let mut nll = Vec::with_capacity(inputs.len());
        let mut wanted_rows = vec![Vec::new(); rows.len()];
        for (i, (inp, tgt)) in inputs.iter().zip(targets).enumerate() {
            if inp.is_empty() {
                nll.push(Vec::new());
                continue;
            }
            let ids: Vec<u32> = inp.iter().map(|&t| t as u32).collect();
            let ids = Tensor::from_vec(ids, (1, inp.len()), model.device())?;
            let logits =
                model.uncapped_logits_segmented(&ids, &doc_segments(inp, self.max_doc_len))?;
            let v = logits.dim(D::Minus1)?;
            let logits = logits.flatten_all()?.to_vec1::<f32>()?;
            nll.push(capped_nll_rows(
                model,
                &logits,
                v,
                tgt.par_iter().map(|&t| t as usize),
            ));
            for (k, &(w, p)) in rows.iter().enumerate() {
                if w == i {
                    let at = p * v;
                    wanted_rows[k] =
                        log_softmax_row(model.capped_row(&logits[at..at + v]).into_iter());
                }
            }
        }
        Ok(Scored {
            nll,
            rows: wanted_rows,
        })
    }
}

/// The uncapped logits of a batch of windows run as one zero-padded [B, L] batch (L the longest window, at least
/// `pad_to`), flattened, with L and the vocabulary size; None for an empty batch.
pub fn batch_logits(
    model: &dyn CausalLm,
    inputs: &[&[u16]],
    pad_to: usize,
) -> Result<Option<(Vec<f32>, usize, usize)>> {
    let Some((x, len)) = batch_ids(inputs, pad_to, model.device())? else {
        return Ok(None);
    };
    let logits = model.uncapped_logits(&x)?;
    let v = logits.dim(D::Minus1)?;
    Ok(Some((logits.flatten_all()?.to_vec1::<f32>()?, len, v)))
}

/// A batch of windows as one zero-padded [B, L] id tensor on `device` (L the longest window, at least `pad_to`),
/// with L; None for an empty batch.
fn batch_ids(inputs: &[&[u16]], pad_to: usize, device: &Device) -> Result<Option<(Tensor, usize)>> {
    let b = inputs.len();
    let len = inputs.iter().map(|w| w.len()).max().unwrap_or(0);
    if b == 0 || len == 0 {
        return Ok(None);
    }
    let len = len.max(pad_to);
    Ok(Some((
        Tensor::from_vec(padded_ids(inputs, len), (b, len), device)?,
        len,
    )))
}

/// `F.cross_entropy` in f32 of each row of uncapped logits [n, v] against its target, the model's soft-cap applied
/// to the row first ([`CausalLm::softcap_row`], vectorized).
fn capped_nll_rows(
    model: &dyn CausalLm,
    logits: &[f32],
    v: usize,
    targets: impl IndexedParallelIterator<Item = usize>,
) -> Vec<f32> {
    logits
        .par_chunks(v)
        .zip(targets)
        .map_init(
            || vec![0f32; v],
            |capped, (row, target)| {
                model.softcap_row(row, capped);
                cross_entropy_row(capped, target)
            },
        )
        .collect()
}

/// Windows of ids laid out as zero-padded rows of `len`, flattened.
pub fn padded_ids(windows: &[&[u16]], len: usize) -> Vec<u32> {
    let mut x = vec![0u32; windows.len() * len];
    for (i, w) in windows.iter().enumerate() {
        for (p, &t) in w.iter().enumerate() {
            x[i * len + p] = t as u32;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::config::ModelConfig;
    use crate::kernels::Precision;
    use std::path::Path;

    /// A batch longer than one CPU forward is scored in parts: the NLLs and the requested rows (in the order asked,
    /// from both parts) are those of one forward over the whole batch.
    #[test]
    fn parts_score_as_one_forward() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models");
        let cfg = ModelConfig::load(&root.join("sp1024_tied.json")).unwrap();
        let device = Device::Cpu;
        let state =
            crate::infer::weights::load_safetensors(&root.join("sp1024_tied.safetensors"), &device)
                .unwrap();
        let model = Gpt::new(cfg, state, &device, Precision::Fp32).unwrap();
        // 40 windows of up to 128 tokens: 5,120 > CPU_FORWARD_TOKENS, so two forwards of 32 and 8 windows.
        let tokens: Vec<u16> = (0..40 * 129)
            .map(|i| ((i * 7919 + 13) % 1000 + 1) as u16)
            .collect();
        let windows: Vec<&[u16]> = (0..40)
            .map(|w| &tokens[w * 129..w * 129 + 128 - (w % 3)])
            .collect();
        let targets: Vec<&[u16]> = (0..40)
            .map(|w| &tokens[w * 129 + 1..w * 129 + 129 - (w % 3)])
            .collect();
        let rows = [(39, 5), (0, 0), (33, 120), (31, 127), (12, 64)];
        let scorer = ModelScorer {
            model: &model,
            pad_to: 0,
            nll_on_device: false,
        };
        let parts = scorer.score(&windows, &targets, &rows).unwrap();
        let whole = scorer
            .score_one_forward(&windows, &targets, &rows, 0)
            .unwrap();
        assert_eq!(parts.nll, whole.nll);
        assert_eq!(parts.rows, whole.rows);
        assert_eq!(parts.nll.len(), 40);
        assert_eq!(parts.nll[2].len(), 126);
    }
}
