//! The one interface every evaluation procedure runs through, so that the probes can re-run any of them — the
//! plain window forms, score-first TTT, the planted violations, and procedures written later — on altered streams
//! and compare what each target received.

use std::time::Instant;

use super::Result;
use super::ledger::{Ledger, RunRecord, WeightsDigest};
use super::scorer::{WindowScorer, padded_ids};
use super::windows::{Window, WindowForm, plan_windows};
use crate::data::bytes::ByteSource;

/// An evaluation procedure: a deterministic function of the validation stream that scores targets (and perhaps
/// takes optimizer steps) and records all of it in a [`Ledger`].
pub trait Procedure {
    /// A short name for reports (`sliding`, `score_first_ttt`, …).
    fn name(&self) -> String;
    /// The vocabulary the procedure's tokens come from (probes draw replacement tokens from it).
    fn vocab_size(&self) -> usize;
    /// Whether the procedure adapts weights while evaluating.
    fn trains(&self) -> bool {
        false
    }
    /// Whether the procedure claims that no document sees another: attention (and everything else) never crosses a
    /// BOS, so a document's losses do not depend on the documents before it.
    fn claims_doc_isolation(&self) -> bool {
        false
    }
    /// Makes the procedure's own randomness (LoRA TTT's adapter draws) come from `seed` on its next runs; false
    /// for a procedure that has none.
    fn reseed(&self, _seed: u64) -> bool {
        false
    }
    /// Makes its next runs use another of the equally valid rank schedules (the `k`-th; 0 is the documented one);
    /// false for a procedure whose schedule is fixed.
    fn reschedule(&self, _k: usize) -> bool {
        false
    }
    /// Runs on `tokens` (targets `0 .. tokens.len() − 1`). `progress(done, total)` reports the procedure's own units.
    fn run(
        &self,
        tokens: &[u16],
        ledger: &mut Ledger,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()>;
}

/// Runs `procedure` on `tokens` and returns what it did. `keep_nll` keeps per-target NLLs; `rows` asks for full rows.
pub fn run_procedure(
    procedure: &dyn Procedure,
    tokens: &[u16],
    bytes: &ByteSource,
    keep_nll: bool,
    rows: impl IntoIterator<Item = usize>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(RunRecord, f64)> {
    let started = Instant::now();
    let mut ledger = Ledger::new(tokens, bytes, keep_nll, rows);
    procedure.run(tokens, &mut ledger, progress)?;
    Ok((ledger.finish(), started.elapsed().as_secs_f64()))
}

/// The inputs of a batch of windows as one zero-padded [B, L] id tensor (L the longest window, at least `pad_to`, as
/// the records pad every batch to the evaluation length); causal models keep the padding out of every real position.
/// Returns the tensor and L.
pub fn padded_inputs(
    tokens: &[u16],
    batch: &[Window],
    pad_to: usize,
    device: &candle_core::Device,
) -> Result<(candle_core::Tensor, usize)> {
    let inputs: Vec<&[u16]> = batch
        .iter()
        .map(|w| &tokens[w.start..w.start + w.len])
        .collect();
    let len = inputs
        .iter()
        .map(|w| w.len())
        .max()
        .unwrap_or(0)
        .max(pad_to);
    Ok((
        candle_core::Tensor::from_vec(padded_ids(&inputs, len), (batch.len(), len), device)?,
        len,
    ))
}

/// Scores `windows` in batches of `batch_seqs` through `scorer`, recording the scored part of each window and the
/// rows the ledger wants. The plain evaluation forms, and the scoring phase of TTT, are this loop.
pub fn score_windows(
    scorer: &dyn WindowScorer,
    tokens: &[u16],
    windows: &[Window],
    batch_seqs: usize,
    ledger: &mut Ledger,
    after_batch: &mut dyn FnMut(usize),
) -> Result<()> {
    for batch in windows.chunks(batch_seqs.max(1)) {
        let inputs: Vec<&[u16]> = batch
            .iter()
            .map(|w| &tokens[w.start..w.start + w.len])
            .collect();
        let outputs: Vec<&[u16]> = batch
            .iter()
            .map(|w| &tokens[w.start + 1..w.start + w.len + 1])
            .collect();
        let mut wanted = Vec::new();
        for (i, w) in batch.iter().enumerate() {
            for p in w.score_from..w.len {
                if ledger.wants_row(w.start + p) {
                    wanted.push((i, p));
                }
            }
        }
        let scored = scorer.score(&inputs, &outputs, &wanted)?;
        for (w, nll) in batch.iter().zip(&scored.nll) {
            ledger.score(w.start + w.score_from, &nll[w.score_from..w.len]);
        }
        for (&(i, p), row) in wanted.iter().zip(scored.rows) {
            ledger.row(batch[i].start + p, row);
        }
        after_batch(batch.len());
    }
    Ok(())
}

/// A window form over a fixed scorer: `eval_val`, the exactly-once sliding window, or the legacy sliding form.
pub struct WindowProcedure<'a> {
    pub scorer: Box<dyn WindowScorer + 'a>,
    pub seq_len: usize,
    pub form: WindowForm,
    pub batch_seqs: usize,
    pub vocab_size: usize,
    /// The digest of the weights the scorer runs, for the pass's receipt.
    pub weights: WeightsDigest,
}

impl Procedure for WindowProcedure<'_> {
    fn name(&self) -> String {
        self.form.name().to_string()
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn claims_doc_isolation(&self) -> bool {
        matches!(self.form, WindowForm::DocIsolated { .. })
    }

    fn run(
        &self,
        tokens: &[u16],
        ledger: &mut Ledger,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let windows = plan_windows(ledger.targets(), self.seq_len, self.form)?;
        let total = windows.len();
        let mut done = 0;
        score_windows(
            self.scorer.as_ref(),
            tokens,
            &windows,
            self.batch_seqs,
            ledger,
            &mut |n| {
                done += n;
                progress(done, total);
            },
        )?;
        ledger.receipt(self.form.name().to_string(), &self.weights, &self.weights);
        Ok(())
    }
}
