//! Score-first test-time training as the records run it (spec §4.1, rec/2026-03-23 `eval_val_sliding_ttt`,
//! rec/2026-04-09 `eval_val_ttt`): the stream is cut into chunks of K targets; each window belongs to the chunk of
//! its first scored target; each chunk is scored with the current weights, then — except the last — trained on for
//! E epochs of SGD with momentum, the learning rate following a cosine across chunks. `world_size` replays W ranks
//! on one machine: the same per-rank sequence ranges, gradients averaged before clipping and stepping.
//!
//! Two deliberately illegal orders exist for calibrating the probes: training on a chunk before scoring it, and a
//! warm-up step on validation tokens before anything is scored.

use candle_core::{Tensor, Var};
use serde::Serialize;

use super::ledger::{Ledger, weights_digest};
use super::procedure::{Procedure, score_windows};
use super::scorer::ModelScorer;
use super::windows::{WindowForm, plan_windows};
use super::{Result, VerifyError};
use crate::infer::lm::CausalLm;
use crate::optim::{Sgd, clip_grad_norm};

/// The recipe's knobs, defaulting to the records' values (rec/2026-03-23 ran lr 0.002 with no frozen blocks;
/// rec/2026-04-09 lr 0.005, all parameters).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TttRecipe {
    /// K, targets per chunk (TTT_CHUNK_TOKENS).
    pub chunk_tokens: usize,
    /// E, passes over each chunk (TTT_EPOCHS).
    pub epochs: usize,
    /// Base learning rate before the cosine across chunks (TTT_LR).
    pub lr: f64,
    pub momentum: f64,
    /// Sequences per optimizer step and rank (TTT_BATCH_SEQS).
    pub batch_seqs: usize,
    /// Gradient-norm clip (TTT_GRAD_CLIP).
    pub grad_clip: f64,
    /// The first N blocks stay fixed (TTT_FREEZE_BLOCKS).
    pub freeze_blocks: usize,
    /// Ranks replayed: per-rank sequence ranges and averaged gradients, as `all_reduce(AVG)`.
    pub world_size: usize,
}

impl Default for TttRecipe {
    fn default() -> Self {
        TttRecipe {
            chunk_tokens: 32_768,
            epochs: 3,
            lr: 0.002,
            momentum: 0.9,
            batch_seqs: 32,
            grad_clip: 1.0,
            freeze_blocks: 0,
            world_size: 1,
        }
    }
}

/// When the procedure trains relative to scoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TttOrder {
    /// Score a chunk, then train on it (never on the last chunk): the legal recipe.
    ScoreFirst,
    /// Planted violation: train on a chunk, then score it (and the last chunk too).
    AdaptThenScore,
    /// Planted violation: the legal recipe preceded by one warm-up step on the stream's first sequences, before
    /// anything has been scored (the compile warm-up of PR #1530).
    WarmupOnUnscored,
}

pub struct ScoreFirstTtt {
    model: Box<dyn CausalLm + Send>,
    params: Vec<Var>,
    initial: Vec<Tensor>,
    pub recipe: TttRecipe,
    pub seq_len: usize,
    pub form: WindowForm,
    /// Windows per scoring batch.
    pub score_batch_seqs: usize,
    pub order: TttOrder,
    /// Sequences per backward pass (0: a rank's whole batch at once). A step still averages the whole batch: each
    /// micro-batch's mean loss is weighted by its share of the rank's sequences and the gradients are summed, which
    /// is the same gradient up to rounding. It bounds the activations a backward pass holds (on a GPU, 32 sequences
    /// of 2,048 with explicit attention do not fit).
    pub micro_batch_seqs: usize,
}

impl ScoreFirstTtt {
    /// Takes the model; every weight outside the first `recipe.freeze_blocks` blocks becomes trainable. Each run
    /// starts again from the weights given here.
    pub fn new(
        mut model: Box<dyn CausalLm + Send>,
        recipe: TttRecipe,
        seq_len: usize,
        form: WindowForm,
        score_batch_seqs: usize,
        order: TttOrder,
    ) -> Result<Self> {
        if recipe.chunk_tokens == 0 || recipe.batch_seqs == 0 || recipe.world_size == 0 {
            return Err(VerifyError::Setup(
                "TTT chunk tokens, batch sequences and world size must be positive".into(),
            ));
        }
        if !(recipe.lr.is_finite() && recipe.momentum.is_finite() && recipe.grad_clip > 0.0) {
            return Err(VerifyError::Setup(
                "TTT learning rate and momentum must be finite and the gradient clip positive"
                    .into(),
            ));
        }
        // TTT_FREEZE_BLOCKS: the weights of the first `freeze_blocks` layer blocks stay fixed.
        let freeze = recipe.freeze_blocks.min(model.layer_blocks());
        let frozen: Vec<String> = model
            .named_weights()
            .into_iter()
            .filter(|(name, _)| model.layer_block(name).is_some_and(|i| i < freeze))
            .map(|(name, _)| name.to_string())
            .collect();
        let vars = model.make_trainable(&|name| !frozen.iter().any(|f| f == name))?;
        let params: Vec<Var> = vars.into_iter().map(|(_, v)| v).collect();
        let initial = params
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?;
        Ok(ScoreFirstTtt {
            model,
            params,
            initial,
            recipe,
            seq_len,
            form,
            score_batch_seqs,
            order,
            micro_batch_seqs: 0,
        })
    }

    pub fn trainable_parameters(&self) -> usize {
        self.params.iter().map(|v| v.elem_count()).sum()
    }

    /// One optimizer step: rank r's batch is the token range `rank_batches[r]` (whole L-token sequences); the
    /// gradient is the mean over ranks of each rank's mean loss.
    fn step(
        &self,
        tokens: &[u16],
        rank_batches: &[std::ops::Range<usize>],
        opt: &mut Sgd,
        ledger: &mut Ledger,
    ) -> Result<()> {
        let l = self.seq_len;
        let device = self.model.device();
        let world = self.recipe.world_size as f64;
        let mut ranges = Vec::new();
        // The sum of the whole rank batches' mean losses (one backward pass for all of them, as without
        // micro-batching); micro-batches each take their own backward pass.
        let mut whole: Option<Tensor> = None;
        let mut g: Vec<Option<Tensor>> = vec![None; self.params.len()];
        for r in rank_batches {
            // Tokens r.start .. r.end + 1 (the records skip a batch whose last target would run off the stream).
            if r.is_empty() || r.end + 1 > tokens.len() {
                continue;
            }
            let n = (r.end - r.start) / l;
            let m = if self.micro_batch_seqs == 0 {
                n
            } else {
                self.micro_batch_seqs.min(n)
            };
            for first in (0..n).step_by(m) {
                let count = m.min(n - first);
                let start = r.start + first * l;
                let end = start + count * l;
                let x: Vec<u32> = tokens[start..end].iter().map(|&t| t as u32).collect();
                let y: Vec<u32> = tokens[start + 1..end + 1]
                    .iter()
                    .map(|&t| t as u32)
                    .collect();
                let x = Tensor::from_vec(x, (count, l), device)?;
                let y = Tensor::from_vec(y, (count, l), device)?;
                // all_reduce(AVG) of the per-rank gradients = the gradient of the mean of the per-rank losses.
                let loss = self.model.train_loss(&x, &y)?;
                if count == n {
                    whole = Some(match whole {
                        None => loss,
                        Some(t) => (t + loss)?,
                    });
                } else {
                    // A micro-batch, weighted by its share of the rank's sequences.
                    let grads = (loss * (count as f64 / n as f64 / world))?.backward()?;
                    add_gradients(&mut g, &grads, &self.params)?;
                }
            }
            ranges.push(r.clone());
        }
        if ranges.is_empty() {
            return Ok(());
        }
        if let Some(total) = whole {
            let grads = (total / world)?.backward()?;
            add_gradients(&mut g, &grads, &self.params)?;
        }
        clip_grad_norm(&mut g, self.recipe.grad_clip)?;
        opt.step(&self.params, &g)?;
        ledger.train_step(&ranges);
        Ok(())
    }

    /// E epochs over the chunk `[chunk_start, chunk_end)` with learning rate `lr`: `chunk_end − chunk_start` // L
    /// sequences, rank r taking `[n·r/W, n·(r+1)/W)`, batches of `batch_seqs` per rank stepping together.
    fn train_chunk(
        &self,
        tokens: &[u16],
        chunk_start: usize,
        chunk_end: usize,
        lr: f64,
        opt: &mut Sgd,
        ledger: &mut Ledger,
    ) -> Result<()> {
        let l = self.seq_len;
        let n = (chunk_end - chunk_start) / l;
        if n == 0 {
            return Ok(());
        }
        opt.lr = lr;
        let w = self.recipe.world_size;
        let bs = self.recipe.batch_seqs;
        let rank_seqs: Vec<(usize, usize)> = (0..w).map(|r| (n * r / w, n * (r + 1) / w)).collect();
        let steps = rank_seqs
            .iter()
            .map(|(s, e)| (e - s).div_ceil(bs))
            .max()
            .unwrap_or(0);
        for _epoch in 0..self.recipe.epochs {
            for k in 0..steps {
                let batches: Vec<std::ops::Range<usize>> = rank_seqs
                    .iter()
                    .map(|&(s, e)| {
                        let b0 = (s + k * bs).min(e);
                        let b1 = (s + (k + 1) * bs).min(e);
                        chunk_start + b0 * l..chunk_start + b1 * l
                    })
                    .collect();
                self.step(tokens, &batches, opt, ledger)?;
            }
        }
        Ok(())
    }
}

/// g[k] += the gradient of `params[k]` in `grads`, where it has one.
fn add_gradients(
    g: &mut [Option<Tensor>],
    grads: &candle_core::backprop::GradStore,
    params: &[Var],
) -> Result<()> {
    for (acc, v) in g.iter_mut().zip(params) {
        if let Some(gi) = grads.get(v.as_tensor()) {
            *acc = Some(match acc.take() {
                None => gi.clone(),
                Some(a) => (a + gi)?,
            });
        }
    }
    Ok(())
}

impl Procedure for ScoreFirstTtt {
    fn name(&self) -> String {
        match self.order {
            TttOrder::ScoreFirst => "score_first_ttt".into(),
            TttOrder::AdaptThenScore => "planted:adapt_then_score".into(),
            TttOrder::WarmupOnUnscored => "planted:warmup_on_unscored".into(),
        }
    }

    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn trains(&self) -> bool {
        true
    }

    fn run(
        &self,
        tokens: &[u16],
        ledger: &mut Ledger,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        for (v, t) in self.params.iter().zip(&self.initial) {
            v.set(t)?;
        }
        let targets = ledger.targets();
        let k = self.recipe.chunk_tokens;
        let windows = plan_windows(targets, self.seq_len, self.form)?;
        let num_chunks = targets.div_ceil(k);
        let mut chunk_windows = vec![Vec::new(); num_chunks];
        for w in windows {
            let ci = ((w.start + w.score_from) / k).min(num_chunks - 1);
            chunk_windows[ci].push(w);
        }
        let mut opt = Sgd::new(self.params.len(), self.recipe.lr, self.recipe.momentum);
        let scorer = ModelScorer::new(self.model.as_ref(), self.seq_len);
        let cosine = |ci: usize| {
            self.recipe.lr
                * 0.5
                * (1.0 + (std::f64::consts::PI * ci as f64 / (num_chunks.max(2) - 1) as f64).cos())
        };
        if self.order == TttOrder::WarmupOnUnscored {
            let n =
                (self.recipe.batch_seqs * self.seq_len).min(targets / self.seq_len * self.seq_len);
            self.step(tokens, std::slice::from_ref(&(0..n)), &mut opt, ledger)?;
        }
        let mut weights = weights_digest(self.model.as_ref())?;
        for (ci, chunk) in chunk_windows.iter().enumerate() {
            if chunk.is_empty() {
                continue;
            }
            let chunk_start = ci * k;
            let chunk_end = ((ci + 1) * k).min(targets);
            let last = ci == num_chunks - 1;
            let train = self.recipe.epochs > 0 && (self.order == TttOrder::AdaptThenScore || !last);
            if train && self.order == TttOrder::AdaptThenScore {
                self.train_chunk(tokens, chunk_start, chunk_end, cosine(ci), &mut opt, ledger)?;
                weights = weights_digest(self.model.as_ref())?;
            }
            score_windows(
                &scorer,
                tokens,
                chunk,
                self.score_batch_seqs,
                ledger,
                &mut |_| {},
            )?;
            let scored_with = weights;
            if train && self.order != TttOrder::AdaptThenScore {
                self.train_chunk(tokens, chunk_start, chunk_end, cosine(ci), &mut opt, ledger)?;
                weights = weights_digest(self.model.as_ref())?;
            }
            ledger.receipt(format!("chunk {ci}"), &scored_with, &weights);
            progress(ci + 1, num_chunks);
        }
        Ok(())
    }
}
