//! What an evaluation procedure did, recorded as it happens: every scored target (with its NLL and bytes), every
//! optimizer step (with the targets in its loss), full predicted rows where a probe asked for them, and a chain of
//! receipts — one per scoring phase (a TTT chunk, or a whole pass) — that anyone can recompute to check the order.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::data::bpb::BpbAccumulator;
use crate::data::bytes::ByteSource;
use crate::infer::lm::CausalLm;

/// How many times each target was scored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Coverage {
    pub targets: usize,
    pub scored_once: usize,
    pub unscored: usize,
    pub scored_more_than_once: usize,
    pub max_times: u32,
    /// Every target in [0, T) scored exactly once.
    pub exactly_once: bool,
}

impl Coverage {
    pub fn from_counts(counts: &[u32]) -> Self {
        let scored_once = counts.iter().filter(|&&c| c == 1).count();
        let unscored = counts.iter().filter(|&&c| c == 0).count();
        let more = counts.len() - scored_once - unscored;
        Coverage {
            targets: counts.len(),
            scored_once,
            unscored,
            scored_more_than_once: more,
            max_times: counts.iter().copied().max().unwrap_or(0),
            exactly_once: scored_once == counts.len(),
        }
    }
}

pub type WeightsDigest = [u8; 32];

/// SHA-256 over every weight in the model's state-dict order: the name, a zero byte, the shape as little-endian
/// u64s, then the values as little-endian f32.
pub fn weights_digest(model: &dyn CausalLm) -> crate::infer::Result<WeightsDigest> {
    let mut h = Sha256::new();
    for (name, t) in model.named_weights() {
        h.update(name.as_bytes());
        h.update([0u8]);
        for d in t.dims() {
            h.update((*d as u64).to_le_bytes());
        }
        let values = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        h.update(&bytes);
    }
    Ok(h.finalize().into())
}

pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// One scoring phase: the targets it scored, their sums, the weights it scored with and the weights it left behind.
/// `chain = SHA-256(previous chain ‖ index ‖ first ‖ end ‖ targets ‖ Σnll bits ‖ Σbytes ‖ scored_with ‖ after)`, all
/// integers little-endian u64, starting from 32 zero bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Receipt {
    pub index: usize,
    pub label: String,
    /// Lowest and one past the highest target index scored in this phase.
    pub first_target: usize,
    pub end_target: usize,
    pub targets: u64,
    pub nll_sum: f64,
    pub bytes: u64,
    pub weights_scored_with: String,
    pub weights_after: String,
    pub chain: String,
}

/// The optimizer steps a procedure took, checked against what had been scored when each was taken.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrainingLog {
    pub steps: usize,
    /// Σ over steps of the targets in the step's loss.
    pub trained_targets: u64,
    pub steps_before_first_score: usize,
    /// Steps whose loss used a target not yet scored.
    pub steps_using_unscored_targets: usize,
    /// The first such step: (step, target index, highest target scored so far).
    pub first_unscored_use: Option<(usize, usize, Option<usize>)>,
    /// Steps taken after the last target was scored (training that can no longer count, e.g. on the last chunk).
    pub steps_after_last_score: usize,
}

/// Everything one run of a procedure produced.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub sums: BpbAccumulator,
    pub coverage: Coverage,
    /// Per-target NLL (NaN where unscored; the last score where scored twice), when asked for.
    pub nll: Option<Vec<f64>>,
    /// Full log-probability rows over the vocabulary at the requested targets that were scored.
    pub rows: BTreeMap<usize, Vec<f64>>,
    pub receipts: Vec<Receipt>,
    pub training: TrainingLog,
}

impl RunRecord {
    pub fn chain_head(&self) -> String {
        self.receipts
            .last()
            .map(|r| r.chain.clone())
            .unwrap_or_else(|| hex(&[0u8; 32]))
    }
}

pub struct Ledger<'a> {
    tokens: &'a [u16],
    bytes: &'a ByteSource,
    counts: Vec<u32>,
    nll: Option<Vec<f64>>,
    wanted_rows: BTreeSet<usize>,
    rows: BTreeMap<usize, Vec<f64>>,
    sums: BpbAccumulator,
    phase: BpbAccumulator,
    phase_range: Option<(usize, usize)>,
    receipts: Vec<Receipt>,
    chain: [u8; 32],
    training: TrainingLog,
    max_scored: Option<usize>,
    steps_since_score: usize,
}

impl<'a> Ledger<'a> {
    /// A ledger for a stream of `tokens.len() − 1` targets. `keep_nll` keeps every target's NLL (probes need it;
    /// a full evaluation does not); `rows` are the targets whose full predicted rows should be kept.
    pub fn new(
        tokens: &'a [u16],
        bytes: &'a ByteSource,
        keep_nll: bool,
        rows: impl IntoIterator<Item = usize>,
    ) -> Self {
        let targets = tokens.len().saturating_sub(1);
        Ledger {
            tokens,
            bytes,
            counts: vec![0; targets],
            nll: keep_nll.then(|| vec![f64::NAN; targets]),
            wanted_rows: rows.into_iter().collect(),
            rows: BTreeMap::new(),
            sums: BpbAccumulator::default(),
            phase: BpbAccumulator::default(),
            phase_range: None,
            receipts: Vec::new(),
            chain: [0; 32],
            training: TrainingLog::default(),
            max_scored: None,
            steps_since_score: 0,
        }
    }

    pub fn targets(&self) -> usize {
        self.counts.len()
    }

    /// Records the scores of targets `first .. first + nll.len()`, in nats.
    pub fn score(&mut self, first: usize, nll: &[f32]) {
        if nll.is_empty() {
            return;
        }
        for (k, &v) in nll.iter().enumerate() {
            let j = first + k;
            let b = self.bytes.bytes_of_target(self.tokens, j);
            self.sums.add(v as f64, b);
            self.phase.add(v as f64, b);
            self.counts[j] += 1;
            if let Some(all) = &mut self.nll {
                all[j] = v as f64;
            }
        }
        let last = first + nll.len() - 1;
        self.max_scored = Some(self.max_scored.map_or(last, |m| m.max(last)));
        self.phase_range = Some(match self.phase_range {
            None => (first, last + 1),
            Some((a, b)) => (a.min(first), b.max(last + 1)),
        });
        self.steps_since_score = 0;
    }

    /// Whether a probe asked for target `j`'s full row.
    pub fn wants_row(&self, j: usize) -> bool {
        self.wanted_rows.contains(&j)
    }

    /// Keeps the log-probabilities over the vocabulary the procedure scored target `j` with.
    pub fn row(&mut self, j: usize, log_probs: Vec<f64>) {
        self.rows.insert(j, log_probs);
    }

    /// Records one optimizer step whose loss used the targets in `ranges`.
    pub fn train_step(&mut self, ranges: &[Range<usize>]) {
        let step = self.training.steps;
        self.training.steps += 1;
        self.steps_since_score += 1;
        if self.max_scored.is_none() {
            self.training.steps_before_first_score += 1;
        }
        let mut unscored = None;
        for r in ranges {
            self.training.trained_targets += r.len() as u64;
            if unscored.is_none() {
                unscored = r
                    .clone()
                    .find(|&j| j >= self.counts.len() || self.counts[j] == 0);
            }
        }
        if let Some(j) = unscored {
            self.training.steps_using_unscored_targets += 1;
            if self.training.first_unscored_use.is_none() {
                self.training.first_unscored_use = Some((step, j, self.max_scored));
            }
        }
    }

    /// Closes the current scoring phase with the digests of the weights it was scored with and left behind.
    pub fn receipt(&mut self, label: String, scored_with: &WeightsDigest, after: &WeightsDigest) {
        let (first, end) = self.phase_range.take().unwrap_or((0, 0));
        let p = std::mem::take(&mut self.phase);
        let index = self.receipts.len();
        let mut h = Sha256::new();
        h.update(self.chain);
        for v in [index as u64, first as u64, end as u64, p.targets] {
            h.update(v.to_le_bytes());
        }
        h.update(p.nll_sum.to_bits().to_le_bytes());
        h.update(p.bytes.to_le_bytes());
        h.update(scored_with);
        h.update(after);
        self.chain = h.finalize().into();
        self.receipts.push(Receipt {
            index,
            label,
            first_target: first,
            end_target: end,
            targets: p.targets,
            nll_sum: p.nll_sum,
            bytes: p.bytes,
            weights_scored_with: hex(scored_with),
            weights_after: hex(after),
            chain: hex(&self.chain),
        });
    }

    pub fn finish(mut self) -> RunRecord {
        self.training.steps_after_last_score = if self.max_scored.is_some() {
            self.steps_since_score
        } else {
            0
        };
        RunRecord {
            sums: self.sums,
            coverage: Coverage::from_counts(&self.counts),
            nll: self.nll,
            rows: self.rows,
            receipts: self.receipts,
            training: self.training,
        }
    }
}
