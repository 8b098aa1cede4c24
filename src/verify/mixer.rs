//! Seed 003's backoff n-gram mixer (PR #1033, architectures §2.4) as an evaluation procedure, exactly as the seed
//! scores, and its properly normalized counterpart.
//!
//! Hashed counts of orders 2..=max_order (float32, `buckets` entries per order, bucket = hash & (buckets − 1)),
//! updated chunk by chunk after the chunk is scored; for each target, the highest order whose context count is at
//! least `min_count` gives p_ng = min(F, C)/C (else the add-½ unigram), mixed with the neural probability of the
//! temperature-scaled logits with the entropy-adaptive weight α = base + range·σ(2(H − center)). The seed evaluates
//! the mixture only at the realized target; over the whole vocabulary it sums to far more than 1 (hash collisions
//! and min(F, C)/C per candidate), which the C2 probe measures. `normalized` divides p_ng by its sum over the
//! vocabulary first, which makes the mixture a distribution.

use std::collections::HashMap;

use candle_core::D;

use candle_core::{Tensor, Var};

use super::ledger::{Ledger, WeightsDigest, weights_digest};
use super::procedure::Procedure;
use super::softmax::{cross_entropy_row, log_softmax_f32, log_softmax_row};
use super::windows::{Window, WindowForm, plan_windows};
use super::{Result, VerifyError};
use crate::infer::lm::CausalLm;
use crate::infer::model::Gpt;
use crate::optim::{Adam, clip_grad_norm};

const PRIMES: [i64; 7] = [36313, 27191, 51647, 81929, 131071, 174763, 233017];

/// The mixer's knobs, with the seed's run values as defaults.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MixerOptions {
    pub max_order: usize,
    /// A power of two.
    pub buckets: usize,
    pub min_count: f32,
    /// The mixer stays off (neural only) until this many tokens have been added.
    pub min_tokens: usize,
    pub alpha_base: f32,
    pub alpha_range: f32,
    pub alpha_center: f32,
    /// Logits are divided by this before every probability (TTT_TEMPERATURE).
    pub temperature: f32,
    /// Targets per chunk; the counts are updated with each chunk's tokens after it is scored.
    pub chunk_tokens: usize,
    /// Divide p_ng by its sum over the vocabulary (the legal, normalized mixture).
    pub normalized: bool,
}

impl Default for MixerOptions {
    fn default() -> Self {
        MixerOptions {
            max_order: 10,
            buckets: 1 << 22,
            min_count: 2.0,
            min_tokens: 10_000,
            alpha_base: 0.20,
            alpha_range: 0.55,
            alpha_center: 3.0,
            temperature: 0.98,
            chunk_tokens: 32_768,
            normalized: false,
        }
    }
}

/// The hashed n-gram counts.
struct Counts {
    opts: MixerOptions,
    unigram: Vec<f32>,
    unigram_total: f64,
    /// Per order 2..=max_order: context counts and (context, next) counts.
    context: Vec<Vec<f32>>,
    full: Vec<Vec<f32>>,
    tokens_seen: usize,
}

impl Counts {
    fn new(opts: &MixerOptions, vocab: usize) -> Self {
        let orders = opts.max_order.saturating_sub(1);
        Counts {
            opts: opts.clone(),
            unigram: vec![0.0; vocab],
            unigram_total: 0.0,
            context: vec![vec![0.0; opts.buckets]; orders],
            full: vec![vec![0.0; opts.buckets]; orders],
            tokens_seen: 0,
        }
    }

    fn mask(&self) -> i64 {
        self.opts.buckets as i64 - 1
    }

    /// The context hash of tokens `ctx` (oldest first): ctx[0]·P0 XOR ctx[k]·P[k mod 7].
    fn context_hash(ctx: &[i64]) -> i64 {
        let mut h = ctx[0] * PRIMES[0];
        for (k, &t) in ctx.iter().enumerate().skip(1) {
            h ^= t * PRIMES[k % PRIMES.len()];
        }
        h
    }

    fn full_hash(context_hash: i64, next: i64, order: usize) -> i64 {
        context_hash ^ (next * PRIMES[(order - 1) % PRIMES.len()])
    }

    /// `update(tokens)`: unigrams, and every full n-gram inside `tokens` for each order.
    fn update(&mut self, tokens: &[u16]) {
        let t: Vec<i64> = tokens.iter().map(|&x| x as i64).collect();
        let n = t.len();
        self.tokens_seen += n;
        for &x in &t {
            self.unigram[x as usize] += 1.0;
        }
        self.unigram_total += n as f64;
        let mask = self.mask();
        for order in 2..=self.opts.max_order {
            if n < order {
                continue;
            }
            for i in 0..=n - order {
                let h = Self::context_hash(&t[i..i + order - 1]);
                self.context[order - 2][(h & mask) as usize] += 1.0;
                let f = Self::full_hash(h, t[i + order - 1], order);
                self.full[order - 2][(f & mask) as usize] += 1.0;
            }
        }
    }

    fn active(&self) -> bool {
        self.tokens_seen >= self.opts.min_tokens
    }

    /// The backoff for a position whose window-local context is `ctx` (tokens up to and including the current
    /// input, oldest first, zero-padded at the window start as the seed's shifted stacks are): the order chosen by
    /// context counts alone, as (order, its context hash, C), or None for the unigram fallback.
    fn backoff(&self, ctx: &[i64], position: usize) -> Option<(usize, i64, f32)> {
        let mask = self.mask();
        for order in (2..=self.opts.max_order).rev() {
            if position < order - 2 {
                continue;
            }
            let cw = order - 1;
            let h = Self::context_hash(&ctx[ctx.len() - cw..]);
            let c = self.context[order - 2][(h & mask) as usize];
            if c >= self.opts.min_count {
                return Some((order, h, c));
            }
        }
        None
    }

    /// p_ng of candidate `y` under a chosen backoff.
    fn p_ngram(&self, chosen: Option<(usize, i64, f32)>, y: usize) -> f32 {
        match chosen {
            Some((order, h, c)) => {
                let f = self.full[order - 2]
                    [(Self::full_hash(h, y as i64, order) & self.mask()) as usize];
                (f.min(c) / c.max(1.0)).clamp(0.0, 1.0)
            }
            None => {
                let v = self.unigram.len() as f64;
                ((self.unigram[y] + 0.5) as f64 / (self.unigram_total + 0.5 * v)) as f32
            }
        }
    }
}

/// Seed 003's test-time training between chunks (its `eval_val_sliding_ttt` with TTT_EPOCHS > 0): after a chunk is
/// scored (with the Polyak average swapped in) and added to the counts, E epochs of AdamW (β 0.9/0.999, no weight
/// decay) over the chunk's whole sequences, batches of `batch_seqs`, gradient clip, and the Polyak average
/// P ← P + (1 − decay)·(p − P) after every step. The learning rate is the cosine across chunks, times
/// 1 + (max − 1)·min(ci / (0.3·chunks), 1) with the adaptive schedule; the loss is the cross-entropy weighted per
/// target by its base bytes over their batch mean when byte-weighted. Never on the last chunk.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MixerTttRecipe {
    /// TTT_EPOCHS.
    pub epochs: usize,
    /// TTT_LR.
    pub lr: f64,
    /// TTT_BATCH_SEQS.
    pub batch_seqs: usize,
    /// TTT_GRAD_CLIP.
    pub grad_clip: f64,
    /// TTT_FREEZE_BLOCKS as this seed reads it: 0 trains every weight; N > 0 trains the last N blocks and every
    /// weight whose name holds norm, scale, lm_head or tok_emb.
    pub trained_last_blocks: usize,
    /// POLYAK_DECAY when USE_POLYAK=1.
    pub polyak_decay: Option<f64>,
    /// ADAPTIVE_LR_MAX when ADAPTIVE_LR=1.
    pub adaptive_lr_max: Option<f64>,
    /// BYTE_WEIGHTED_TTT.
    pub byte_weighted: bool,
}

/// The seed's TTT state: its trainable weights, where they start, and the base bytes per id (for byte weighting).
struct MixerTtt {
    recipe: MixerTttRecipe,
    params: Vec<Var>,
    initial: Vec<Tensor>,
    base_bytes: Vec<f32>,
}

/// Seed 003's evaluation: `form` windows (its own is [`WindowForm::LegacySlidingFull`]) scored chunk by chunk with
/// the mixer, the counts updated after each chunk, and — with a TTT recipe — the model trained on each chunk after
/// it is scored, its Polyak average scoring the next.
pub struct BackoffMixerProcedure {
    model: Box<dyn CausalLm + Send>,
    ttt: Option<MixerTtt>,
    pub seq_len: usize,
    pub form: WindowForm,
    pub batch_seqs: usize,
    pub opts: MixerOptions,
}

impl BackoffMixerProcedure {
    /// Takes the model; with `ttt` (the recipe and the base bytes of every id), the weights the recipe trains become
    /// variables, and every run starts again from the weights given here.
    pub fn new(
        mut model: Box<dyn CausalLm + Send>,
        seq_len: usize,
        form: WindowForm,
        batch_seqs: usize,
        opts: MixerOptions,
        ttt: Option<(MixerTttRecipe, Vec<u16>)>,
    ) -> Result<Self> {
        let ttt = match ttt {
            None => None,
            Some((recipe, base_bytes)) => {
                if recipe.batch_seqs == 0 || !(recipe.lr.is_finite() && recipe.grad_clip > 0.0) {
                    return Err(VerifyError::Setup(
                        "TTT batch sequences must be positive, the learning rate finite and the clip positive"
                            .into(),
                    ));
                }
                let blocks = model
                    .named_weights()
                    .iter()
                    .filter_map(|(n, _)| n.strip_prefix("blocks.")?.split('.').next()?.parse().ok())
                    .map(|i: usize| i + 1)
                    .max()
                    .unwrap_or(0);
                let k = recipe.trained_last_blocks;
                let trained = move |name: &str| {
                    k == 0
                        || ["norm", "scale", "lm_head", "tok_emb"]
                            .iter()
                            .any(|w| name.contains(w))
                        || (blocks.saturating_sub(k)..blocks)
                            .any(|i| name.contains(&format!("blocks.{i}.")))
                };
                let params: Vec<Var> = model
                    .make_trainable(&trained)?
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect();
                let initial = params
                    .iter()
                    .map(|v| v.as_tensor().copy())
                    .collect::<candle_core::Result<_>>()?;
                Some(MixerTtt {
                    recipe,
                    params,
                    initial,
                    base_bytes: base_bytes.into_iter().map(f32::from).collect(),
                })
            }
        };
        Ok(BackoffMixerProcedure {
            model,
            ttt,
            seq_len,
            form,
            batch_seqs,
            opts,
        })
    }

    pub fn trainable_parameters(&self) -> usize {
        self.ttt
            .as_ref()
            .map(|t| t.params.iter().map(|v| v.elem_count()).sum())
            .unwrap_or(0)
    }

    /// The seed's training on chunk `ci` (targets `start..end`): E epochs over its whole sequences.
    #[allow(clippy::too_many_arguments)]
    fn train_chunk(
        &self,
        ttt: &MixerTtt,
        tokens: &[u16],
        start: usize,
        end: usize,
        lr: f64,
        opt: &mut Adam,
        polyak: &mut [Tensor],
        ledger: &mut Ledger,
    ) -> Result<()> {
        let l = self.seq_len;
        let n = (end - start) / l;
        opt.lr = lr;
        let device = self.model.device();
        for _epoch in 0..ttt.recipe.epochs {
            for b0 in (0..n).step_by(ttt.recipe.batch_seqs) {
                let b1 = (b0 + ttt.recipe.batch_seqs).min(n);
                let (t0, t1) = (start + b0 * l, start + b1 * l);
                if t1 + 1 > tokens.len() {
                    continue;
                }
                let seqs = b1 - b0;
                let ids = |from: usize| -> Result<Tensor> {
                    let v: Vec<u32> = tokens[from..from + seqs * l]
                        .iter()
                        .map(|&t| t as u32)
                        .collect();
                    Ok(Tensor::from_vec(v, (seqs, l), device)?)
                };
                let y = ids(t0 + 1)?;
                let losses = self.model.train_token_losses(&ids(t0)?, &y)?;
                let loss = if ttt.recipe.byte_weighted {
                    // w = base_bytes[y] / max(mean(base_bytes[y]), 1e-6), in f32 as the seed computes it.
                    let w: Vec<f32> = tokens[t0 + 1..t1 + 1]
                        .iter()
                        .map(|&t| ttt.base_bytes.get(t as usize).copied().unwrap_or(0.0))
                        .collect();
                    let mean = (w.iter().map(|&v| v as f64).sum::<f64>() / w.len() as f64) as f32;
                    let w: Vec<f32> = w.iter().map(|&v| v / mean.max(1e-6)).collect();
                    let w = Tensor::from_vec(w, losses.dims(), device)?;
                    (losses * w)?.mean_all()?
                } else {
                    losses.mean_all()?
                };
                let grads = loss.backward()?;
                let mut g: Vec<Option<Tensor>> = ttt
                    .params
                    .iter()
                    .map(|v| grads.get(v.as_tensor()).cloned())
                    .collect();
                clip_grad_norm(&mut g, ttt.recipe.grad_clip)?;
                opt.step(&ttt.params, &g)?;
                if let Some(decay) = ttt.recipe.polyak_decay {
                    for (avg, v) in polyak.iter_mut().zip(&ttt.params) {
                        // torch.lerp_(p, 1 − decay): P + (1 − decay)·(p − P).
                        *avg = (&*avg + ((v.as_tensor() - &*avg)? * (1.0 - decay))?)?;
                    }
                }
                ledger.train_step(std::slice::from_ref(&(t0..t1)));
            }
        }
        Ok(())
    }

    /// Per-position NLL (and, for `want` positions, full log rows) of one window's uncapped logits.
    #[allow(clippy::too_many_arguments)]
    fn score_window(
        &self,
        counts: &Counts,
        uncapped: &[f32],
        vocab: usize,
        inputs: &[u16],
        targets: &[u16],
        from: usize,
        want: &dyn Fn(usize) -> bool,
        rows: &mut Vec<(usize, Vec<f64>)>,
    ) -> Vec<f32> {
        let model = self.model.as_ref();
        let temperature = self.opts.temperature;
        let max_ctx = self.opts.max_order - 1;
        let mut nll = vec![0.0f32; targets.len()];
        for p in from..targets.len() {
            let mut row = model.capped_row(&uncapped[p * vocab..(p + 1) * vocab]);
            row.iter_mut().for_each(|c| *c /= temperature);
            let logp = log_softmax_f32(&row);
            let y = targets[p] as usize;
            if !counts.active() {
                nll[p] = -logp[y];
                if want(p) {
                    rows.push((p, log_softmax_row(row.iter().copied())));
                }
                continue;
            }
            let ctx: Vec<i64> = (0..max_ctx)
                .rev()
                .map(|k| if p >= k { inputs[p - k] as i64 } else { 0 })
                .collect();
            let chosen = counts.backoff(&ctx, p);
            let entropy: f32 = -logp.iter().map(|&l| l.exp() * l).sum::<f32>();
            let alpha = self.opts.alpha_base
                + self.opts.alpha_range * sigmoid(2.0 * (entropy - self.opts.alpha_center));
            let norm = if self.opts.normalized {
                (0..vocab)
                    .map(|v| counts.p_ngram(chosen, v) as f64)
                    .sum::<f64>() as f32
            } else {
                1.0
            };
            let mixed = |v: usize| {
                let p_nn = logp[v].exp();
                (1.0 - alpha) * p_nn + alpha * (counts.p_ngram(chosen, v) / norm)
            };
            nll[p] = -mixed(y).max(1e-12).ln();
            if want(p) {
                rows.push((
                    p,
                    (0..vocab)
                        .map(|v| (mixed(v).max(1e-12) as f64).ln())
                        .collect(),
                ));
            }
        }
        nll
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Procedure for BackoffMixerProcedure {
    fn name(&self) -> String {
        let mixer = if self.opts.normalized {
            "backoff_mixer_normalized"
        } else {
            "backoff_mixer"
        };
        match &self.ttt {
            Some(_) => format!("{mixer}+ttt"),
            None => mixer.into(),
        }
    }

    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn trains(&self) -> bool {
        self.ttt.as_ref().is_some_and(|t| t.recipe.epochs > 0)
    }

    fn run(
        &self,
        tokens: &[u16],
        ledger: &mut Ledger,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let targets = ledger.targets();
        let windows = plan_windows(targets, self.seq_len, self.form)?;
        let chunk = self.opts.chunk_tokens.max(1);
        let num_chunks = targets.div_ceil(chunk).max(1);
        let mut by_chunk: Vec<Vec<Window>> = vec![Vec::new(); num_chunks];
        for w in &windows {
            by_chunk[((w.start + w.score_from) / chunk).min(num_chunks - 1)].push(*w);
        }
        let mut counts = Counts::new(&self.opts, self.model.vocab_size());
        let device = self.model.device();
        let mut done = 0;
        // TTT: every run starts from the given weights, with a fresh optimizer and Polyak average.
        let mut opt = None;
        let mut polyak = Vec::new();
        if let Some(ttt) = &self.ttt {
            for (v, t) in ttt.params.iter().zip(&ttt.initial) {
                v.set(t)?;
            }
            opt = Some(Adam::new(ttt.params.len(), ttt.recipe.lr, 0.9, 0.999, 1e-8));
            polyak = ttt
                .initial
                .iter()
                .map(|t| t.copy())
                .collect::<candle_core::Result<_>>()?;
        }
        let mut weights = weights_digest(self.model.as_ref())?;
        for (ci, chunk_windows) in by_chunk.iter().enumerate() {
            if chunk_windows.is_empty() {
                continue;
            }
            // Score with the Polyak average swapped in, then put the raw weights back.
            let raw = match &self.ttt {
                Some(ttt) if ttt.recipe.polyak_decay.is_some() => {
                    let raw = ttt
                        .params
                        .iter()
                        .map(|v| v.as_tensor().copy())
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    for (v, avg) in ttt.params.iter().zip(&polyak) {
                        v.set(avg)?;
                    }
                    Some(raw)
                }
                _ => None,
            };
            let scored_with = if raw.is_some() {
                weights_digest(self.model.as_ref())?
            } else {
                weights
            };
            for batch in chunk_windows.chunks(self.batch_seqs.max(1)) {
                let (x, len) =
                    super::procedure::padded_inputs(tokens, batch, self.seq_len, device)?;
                let logits = self.model.uncapped_logits(&x)?;
                let vocab = logits.dim(D::Minus1)?;
                let logits = logits.flatten_all()?.to_vec1::<f32>()?;
                for (i, w) in batch.iter().enumerate() {
                    let inputs = &tokens[w.start..w.start + w.len];
                    let outs = &tokens[w.start + 1..w.start + w.len + 1];
                    let mut rows = Vec::new();
                    let want = |p: usize| ledger.wants_row(w.start + p);
                    let nll = self.score_window(
                        &counts,
                        &logits[i * len * vocab..(i * len + w.len) * vocab],
                        vocab,
                        inputs,
                        outs,
                        w.score_from,
                        &want,
                        &mut rows,
                    );
                    ledger.score(w.start + w.score_from, &nll[w.score_from..]);
                    for (p, row) in rows {
                        ledger.row(w.start + p, row);
                    }
                }
                done += batch.len();
                progress(done, windows.len());
            }
            let start = ci * chunk;
            let end = ((ci + 1) * chunk).min(targets);
            counts.update(&tokens[start..end]);
            if let (Some(ttt), Some(raw)) = (&self.ttt, raw) {
                for (v, t) in ttt.params.iter().zip(&raw) {
                    v.set(t)?;
                }
            }
            if let (Some(ttt), Some(opt)) = (&self.ttt, opt.as_mut())
                && ci + 1 < num_chunks
                && ttt.recipe.epochs > 0
                && (end - start) / self.seq_len > 0
            {
                let cosine = 0.5
                    * (1.0
                        + (std::f64::consts::PI * ci as f64 / (num_chunks.max(2) - 1) as f64)
                            .cos());
                let adaptive = ttt.recipe.adaptive_lr_max.map_or(1.0, |max| {
                    1.0 + (max - 1.0) * (ci as f64 / (num_chunks as f64 * 0.3)).min(1.0)
                });
                let lr = ttt.recipe.lr * cosine * adaptive;
                self.train_chunk(ttt, tokens, start, end, lr, opt, &mut polyak, ledger)?;
                weights = weights_digest(self.model.as_ref())?;
            }
            ledger.receipt(format!("chunk {ci}"), &scored_with, &weights);
        }
        Ok(())
    }
}

/// Seed 004's `NGramCache` blend (PR #1499, its default sliding evaluation): exact counts of every context of 1 to
/// max_order − 1 tokens and the token that followed, pre-filled from training tokens and extended with each window's
/// scored targets after the window is scored. For a target, the longest context of the global stream that has been
/// seen gives p_ng = count(target)/total, blended as (1 − α)·e^{−NLL} + α·p_ng with α = min(0.5, alpha·(1 + NLL/3)).
/// α depends on the target's own NLL, so over the vocabulary the blend is not a distribution (C2).
pub struct NgramCacheBlend<'a> {
    pub model: &'a Gpt,
    pub seq_len: usize,
    pub form: WindowForm,
    pub batch_seqs: usize,
    pub max_order: usize,
    pub alpha: f64,
    /// The training tokens the cache starts from (NGRAM_PRETRAIN_TOKENS of them).
    pub prefill: Vec<u16>,
    pub weights: WeightsDigest,
}

type ContextCounts = HashMap<Vec<u16>, HashMap<u16, u64>>;

impl NgramCacheBlend<'_> {
    /// `update(stream, start, end)`: for each i in start..end, every context stream[i−k..i] (k = 1..max_order−1,
    /// as far as the stream reaches back) counts stream[i].
    fn update(&self, counts: &mut ContextCounts, stream: &[u16], start: usize, end: usize) {
        for i in start..end {
            for order in 2..(self.max_order + 1).min(i + 2) {
                let ctx = stream[i + 1 - order..i].to_vec();
                *counts.entry(ctx).or_default().entry(stream[i]).or_insert(0) += 1;
            }
        }
    }

    /// `blend(nll, target, ctx_end, stream)` in f64, as the seed computes it in Python floats.
    fn blend(
        &self,
        counts: &ContextCounts,
        nll: f64,
        target: u16,
        ctx_end: usize,
        stream: &[u16],
    ) -> f64 {
        for order in (1..=(self.max_order - 1).min(ctx_end)).rev() {
            if let Some(c) = counts.get(&stream[ctx_end - order..ctx_end]) {
                let total: u64 = c.values().sum();
                if total > 0 {
                    let p_ng = *c.get(&target).unwrap_or(&0) as f64 / total as f64;
                    let alpha = (self.alpha * (1.0 + nll / 3.0)).min(0.5);
                    let mixed = (1.0 - alpha) * (-nll).exp() + alpha * p_ng;
                    return -mixed.max(1e-40).ln();
                }
            }
        }
        nll
    }
}

impl Procedure for NgramCacheBlend<'_> {
    fn name(&self) -> String {
        "ngram_cache_blend".into()
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
        let mut counts = ContextCounts::new();
        self.update(&mut counts, &self.prefill, 0, self.prefill.len());
        let device = self.model.device();
        let model = self.model;
        let mut done = 0;
        for batch in windows.chunks(self.batch_seqs.max(1)) {
            let (x, _) = super::procedure::padded_inputs(tokens, batch, self.seq_len, device)?;
            // Only the scored positions go through the head (a window scores its last stride of positions).
            let hidden = model.final_hidden(&x, crate::kernels::Pass::Score)?;
            for (i, w) in batch.iter().enumerate() {
                let scored = w.len - w.score_from;
                let logits = model
                    .head(&hidden.get(i)?.narrow(0, w.score_from, scored)?)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let vocab = logits.len() / scored.max(1);
                let mut nll = Vec::with_capacity(scored);
                for p in w.score_from..w.len {
                    let at = (p - w.score_from) * vocab;
                    let row = model.capped_row(&logits[at..at + vocab]);
                    let target = tokens[w.start + p + 1];
                    let ctx_end = w.start + p + 1;
                    let neural = cross_entropy_row(&row, target as usize) as f64;
                    nll.push(self.blend(&counts, neural, target, ctx_end, tokens) as f32);
                    if ledger.wants_row(w.start + p) {
                        let logp = log_softmax_row(row.iter().copied());
                        let full = (0..vocab)
                            .map(|v| -self.blend(&counts, -logp[v], v as u16, ctx_end, tokens))
                            .collect();
                        ledger.row(w.start + p, full);
                    }
                }
                ledger.score(w.start + w.score_from, &nll);
                self.update(
                    &mut counts,
                    tokens,
                    w.start + w.score_from + 1,
                    w.start + w.len + 1,
                );
            }
            done += batch.len();
            progress(done, windows.len());
        }
        ledger.receipt(self.name(), &self.weights, &self.weights);
        Ok(())
    }
}
