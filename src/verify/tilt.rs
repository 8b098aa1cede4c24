//! Seed 002's n-gram logit tilt (PR #1666 `eval_val_sliding` with `NgramTilt`, architectures §2.3): a fixed prior
//! maps the previous token, and the previous two, to a most frequent next token; on each window row the soft-capped
//! logit of that token is raised by δ = β/2 for each prefix that has one (they stack), and the cross-entropy is
//! taken over the whole tilted row, so the result is a normalized distribution.
//!
//! The seed's indexing is reproduced as it is: the row at local position t (which predicts x_{t+1}) is tilted by the
//! prefixes (x_{t−1}) and (x_{t−2}, x_{t−1}), not by the ones ending at x_t. The tilt reads only tokens inside the
//! window, so it is window-relative: positions 0 and 1 get fewer boosts.

use std::collections::HashMap;

use rayon::prelude::*;

use super::scorer::{Scored, WindowScorer, batch_logits};
use super::softmax::{cross_entropy_row, log_softmax_row};
use super::{Result, VerifyError};
use crate::infer::lm::CausalLm;

/// The prior's lookups, as the seed's `_precompute_lookup_arrays` builds them: `next_after_one[prev]` (−1 where the
/// prior has no entry) and the two-token prefixes (prev2, prev1) that have one (a map rather than the seed's dense
/// V×V array, which would take 268 MB at V = 8192).
#[derive(Clone, Debug, PartialEq)]
pub struct NgramTiltPrior {
    pub vocab_size: usize,
    pub next_after_one: Vec<i32>,
    pub next_after_two: HashMap<(u16, u16), u16>,
}

impl NgramTiltPrior {
    /// Builds the arrays from the prior's entries (prefix, most frequent next token); prefixes of length 1 and 2
    /// are used, longer ones ignored (the seed's arrays stop at trigrams). Ids must lie below `vocab_size`.
    pub fn from_entries(
        vocab_size: usize,
        entries: impl IntoIterator<Item = (Vec<usize>, usize)>,
    ) -> Result<Self> {
        let mut prior = NgramTiltPrior {
            vocab_size,
            next_after_one: vec![-1; vocab_size],
            next_after_two: HashMap::new(),
        };
        for (prefix, next) in entries {
            if next >= vocab_size.min(1 << 16)
                || prefix.iter().any(|&t| t >= vocab_size.min(1 << 16))
            {
                return Err(VerifyError::Setup(format!(
                    "n-gram prior entry {prefix:?} → {next} has an id outside the vocabulary of {vocab_size}"
                )));
            }
            match prefix[..] {
                [prev] => prior.next_after_one[prev] = next as i32,
                [prev2, prev1] => {
                    prior
                        .next_after_two
                        .insert((prev2 as u16, prev1 as u16), next as u16);
                }
                _ => {}
            }
        }
        Ok(prior)
    }

    /// Prefixes with an entry: (one-token, two-token).
    pub fn entries(&self) -> (usize, usize) {
        let one = self.next_after_one.iter().filter(|&&t| t >= 0).count();
        (one, self.next_after_two.len())
    }

    /// Raises `row` (the soft-capped logits at local position t of a window with inputs `x`) by δ at the prior's
    /// tokens for the prefixes (x_{t−1}) and (x_{t−2}, x_{t−1}).
    pub fn tilt_row(&self, row: &mut [f32], x: &[u16], t: usize, delta: f32) {
        if t >= 1 {
            let next = self.next_after_one[x[t - 1] as usize];
            if next >= 0 {
                row[next as usize] += delta;
            }
        }
        if t >= 2
            && let Some(&next) = self.next_after_two.get(&(x[t - 2], x[t - 1]))
        {
            row[next as usize] += delta;
        }
    }
}

/// Scores windows with the model's soft-capped logits tilted by the prior (δ = β/2 per matching prefix).
pub struct NgramTiltScorer<'a> {
    pub model: &'a dyn CausalLm,
    pub prior: &'a NgramTiltPrior,
    /// NGRAM_TILT_BETA; the seed adds β·0.5 (computed in Python floats, added to f32 logits).
    pub beta: f64,
    /// Batches are zero-padded to at least this length, as [`super::scorer::ModelScorer`] pads them.
    pub pad_to: usize,
}

impl WindowScorer for NgramTiltScorer<'_> {
    fn score(
        &self,
        inputs: &[&[u16]],
        targets: &[&[u16]],
        rows: &[(usize, usize)],
    ) -> Result<Scored> {
        let b = inputs.len();
        let Some((logits, len, v)) = batch_logits(self.model, inputs, self.pad_to)? else {
            return Ok(Scored::empty(b));
        };
        let delta = (self.beta * 0.5) as f32;
        let tilted = |i: usize, p: usize| -> Vec<f32> {
            let at = (i * len + p) * v;
            let mut row = self.model.capped_row(&logits[at..at + v]);
            self.prior.tilt_row(&mut row, inputs[i], p, delta);
            row
        };
        let nll = (0..b)
            .into_par_iter()
            .map(|i| {
                (0..inputs[i].len())
                    .map(|p| cross_entropy_row(&tilted(i, p), targets[i][p] as usize))
                    .collect()
            })
            .collect();
        let rows = rows
            .iter()
            .map(|&(i, p)| log_softmax_row(tilted(i, p).into_iter()))
            .collect();
        Ok(Scored { nll, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilt_uses_the_seeds_prefixes_and_stacks() {
        let prior =
            NgramTiltPrior::from_entries(5, [(vec![2], 4), (vec![1, 2], 4), (vec![3], 0)]).unwrap();
        assert_eq!(prior.entries(), (2, 1));
        let x = [1u16, 2, 3, 3];
        // Position 2 (predicting x_3): prefixes (x_1) = (2) and (x_0, x_1) = (1, 2) both point at 4.
        let mut row = vec![0.0f32; 5];
        prior.tilt_row(&mut row, &x, 2, 0.15);
        assert_eq!(row, vec![0.0, 0.0, 0.0, 0.0, 0.3]);
        // Position 0 has no prefix; position 1 only the one-token prefix (x_0) = (1), which has no entry.
        let mut row = vec![0.0f32; 5];
        prior.tilt_row(&mut row, &x, 0, 0.15);
        prior.tilt_row(&mut row, &x, 1, 0.15);
        assert_eq!(row, vec![0.0; 5]);
        assert!(NgramTiltPrior::from_entries(5, [(vec![7], 1)]).is_err());
    }
}
