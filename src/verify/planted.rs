//! Planted violations: small, deliberately illegal evaluation procedures built on a real model, for calibrating the
//! probes (each must be caught by the probe for its class, spec §5.4–5.5). They are procedures like any other, so
//! `pgolf verify --planted KIND` shows a reviewer what a failing probe looks like. Never a way to score.

use candle_core::{Tensor, Var};

use super::Result;
use super::ledger::{Ledger, WeightsDigest};
use super::procedure::Procedure;
use super::softmax::log_softmax_row;
use super::windows::{WindowForm, plan_windows};
use crate::infer::model::Gpt;
use crate::kernels::Pass;
use crate::kernels::loss::capped_cross_entropy_rows;

/// PR #886's hashed n-gram cache: counts of (context, token) pairs and of contexts in hashed buckets, built from
/// the targets already scored (so it is causal), blended with the model only at the realized token:
/// `p = (1 − α)·p_model(x) + α·pair[h(ctx, x)] / ctx[h(ctx)]`. Its "row" is that formula for every candidate token,
/// which sums to far more than 1 once buckets collide (C2).
pub struct HashedNgramCache<'a> {
    pub model: &'a Gpt,
    pub seq_len: usize,
    pub form: WindowForm,
    pub batch_seqs: usize,
    /// Tokens of context (n − 1).
    pub context: usize,
    pub buckets: usize,
    pub alpha: f64,
    pub weights: WeightsDigest,
}

fn bucket(items: &[u16], extra: Option<u16>, buckets: usize) -> usize {
    // FNV-1a over the context (and candidate) ids.
    let mut h: u64 = 0xcbf29ce484222325;
    for &t in items.iter().chain(extra.as_ref()) {
        for b in t.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h ^= extra.is_some() as u64;
    (h % buckets as u64) as usize
}

impl Procedure for HashedNgramCache<'_> {
    fn name(&self) -> String {
        "planted:hashed_ngram_cache".into()
    }

    fn vocab_size(&self) -> usize {
        self.model.cfg.vocab_size
    }

    fn run(
        &self,
        tokens: &[u16],
        ledger: &mut Ledger,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let windows = plan_windows(ledger.targets(), self.seq_len, self.form)?;
        let mut pair = vec![0u32; self.buckets];
        let mut ctx = vec![0u32; self.buckets];
        let v = self.model.cfg.vocab_size;
        for (bi, batch) in windows.chunks(self.batch_seqs.max(1)).enumerate() {
            let (x, len) =
                super::procedure::padded_inputs(tokens, batch, self.seq_len, self.model.device())?;
            let logits = self.model.logits(&x)?.flatten_all()?.to_vec1::<f32>()?;
            for (i, w) in batch.iter().enumerate() {
                let mut nll = Vec::with_capacity(w.len - w.score_from);
                for p in w.score_from..w.len {
                    let j = w.start + p;
                    let row = &logits[(i * len + p) * v..(i * len + p + 1) * v];
                    let model_p: Vec<f64> = log_softmax_row(row.iter().copied())
                        .into_iter()
                        .map(f64::exp)
                        .collect();
                    let c = &tokens[(j + 1).saturating_sub(self.context)..=j];
                    let n_ctx = ctx[bucket(c, None, self.buckets)];
                    let blended = |a: usize| {
                        if n_ctx == 0 {
                            model_p[a]
                        } else {
                            let n_pair = pair[bucket(c, Some(a as u16), self.buckets)];
                            (1.0 - self.alpha) * model_p[a]
                                + self.alpha * n_pair as f64 / n_ctx as f64
                        }
                    };
                    let target = tokens[j + 1] as usize;
                    nll.push(-(blended(target).ln()) as f32);
                    if ledger.wants_row(j) {
                        ledger.row(j, (0..v).map(|a| blended(a).ln()).collect());
                    }
                    // Update after scoring: the cache only ever holds scored targets.
                    ctx[bucket(c, None, self.buckets)] += 1;
                    pair[bucket(c, Some(target as u16), self.buckets)] += 1;
                }
                ledger.score(w.start + w.score_from, &nll);
            }
            progress(bi + 1, windows.len().div_ceil(self.batch_seqs.max(1)));
        }
        ledger.receipt(self.name(), &self.weights, &self.weights);
        Ok(())
    }
}

/// PR #1240's SLOT: per window, a hidden delta δ ∈ ℝ^d added to the final hidden states, optimized by a few
/// gradient steps on the NLL of the window's own scored targets, which are then scored with it. Every scored
/// target's loss depends on the later targets of its window (C1) and on itself (C3).
pub struct SlotDelta<'a> {
    pub model: &'a Gpt,
    pub seq_len: usize,
    pub form: WindowForm,
    pub steps: usize,
    pub lr: f64,
    pub weights: WeightsDigest,
}

impl SlotDelta<'_> {
    fn capped_logits(&self, hidden: &Tensor, delta: &Tensor) -> Result<Tensor> {
        let c = self.model.cfg.logit_softcap;
        let z = self.model.head(&hidden.broadcast_add(delta)?)?;
        Ok(((z / c)?.tanh()? * c)?)
    }
}

impl Procedure for SlotDelta<'_> {
    fn name(&self) -> String {
        "planted:slot_delta".into()
    }

    fn vocab_size(&self) -> usize {
        self.model.cfg.vocab_size
    }

    fn run(
        &self,
        tokens: &[u16],
        ledger: &mut Ledger,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let windows = plan_windows(ledger.targets(), self.seq_len, self.form)?;
        let device = self.model.device();
        let d = self.model.cfg.model_dim;
        let total = windows.len();
        for (wi, w) in windows.iter().enumerate() {
            let x: Vec<u32> = tokens[w.start..w.start + w.len]
                .iter()
                .map(|&t| t as u32)
                .collect();
            let y: Vec<u32> = tokens[w.start + 1 + w.score_from..w.start + 1 + w.len]
                .iter()
                .map(|&t| t as u32)
                .collect();
            let x = Tensor::from_vec(x, (1, w.len), device)?;
            let y = Tensor::from_vec(y, w.len - w.score_from, device)?;
            let hidden = self
                .model
                .final_hidden(&x, Pass::Score)?
                .narrow(1, w.score_from, w.len - w.score_from)?
                .squeeze(0)?
                .detach();
            let delta = Var::zeros((1, d), hidden.dtype(), device)?;
            for _ in 0..self.steps {
                let z = self.model.head(&hidden.broadcast_add(delta.as_tensor())?)?;
                let cap = self.model.cfg.logit_softcap as f32;
                let loss = capped_cross_entropy_rows(&z, &y, cap)?.mean_all()?;
                let g = loss.backward()?;
                if let Some(g) = g.get(delta.as_tensor()) {
                    delta.set(&(delta.as_tensor() - (g * self.lr)?)?)?;
                }
            }
            let logits = self
                .capped_logits(&hidden, delta.as_tensor())?
                .to_vec2::<f32>()?;
            let mut nll = Vec::with_capacity(logits.len());
            for (k, row) in logits.iter().enumerate() {
                let j = w.start + w.score_from + k;
                let lp = log_softmax_row(row.iter().copied());
                nll.push(-lp[tokens[j + 1] as usize] as f32);
                if ledger.wants_row(j) {
                    ledger.row(j, lp);
                }
            }
            ledger.score(w.start + w.score_from, &nll);
            progress(wi + 1, total);
        }
        ledger.receipt(self.name(), &self.weights, &self.weights);
        Ok(())
    }
}
