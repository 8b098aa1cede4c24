//! Window geometry: the challenge's evaluation forms laid over a validation stream of `T + 1` tokens (`T` targets;
//! target `j` is token `j + 1` predicted from tokens `0..=j`).

use serde::Serialize;

use super::{Result, VerifyError};

/// How windows are laid over the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "form", rename_all = "snake_case")]
pub enum WindowForm {
    /// `eval_val`: consecutive windows of L, every target scored once.
    NonOverlapping,
    /// The canonical exactly-once sliding window: starts every S while `ws + (L − S) < T`; the first window scores
    /// all its targets, later ones from local position L − S on.
    Sliding { stride: usize },
    /// The older sliding form (rec/2026-03-19): every start `ws < T`, scoring from `max(wlen − S, 0)`, so tail windows
    /// re-score the last targets. Only to reproduce old records; never exactly once.
    LegacySliding { stride: usize },
    /// Seed 003's form: every start `ws < T` whose window holds at least S targets (or ws = 0), scoring the last S
    /// of each window, so the windows that run into the end of the stream re-score its last S targets.
    LegacySlidingFull { stride: usize },
    /// Seed 001's TTT form (PR #696 `eval_val_sliding_ttt`): only full-length windows, starts every S with
    /// `ws + L ≤ T`; the first scores all its targets, later ones the last S. Each target is scored at most once,
    /// and the targets after the last full window are never scored.
    FullWindows { stride: usize },
    /// The records' VarLen `eval_val` (rec/2026-04-10 on): flat buffers of `batch_seqs` sequences of L, attention
    /// isolated to each document (split at BOS, and into pieces of at most L), every target of a buffer scored.
    /// Like the records, each of `world_size` ranks takes sequences [n·r/W, n·(r+1)/W) and scores whole buffers
    /// only: the last (range mod batch_seqs) sequences of every rank are never scored.
    DocIsolated {
        batch_seqs: usize,
        world_size: usize,
    },
}

impl WindowForm {
    pub fn name(&self) -> &'static str {
        match self {
            WindowForm::NonOverlapping => "non_overlapping",
            WindowForm::Sliding { .. } => "sliding",
            WindowForm::LegacySliding { .. } => "legacy_sliding",
            WindowForm::LegacySlidingFull { .. } => "legacy_sliding_full",
            WindowForm::FullWindows { .. } => "full_windows",
            WindowForm::DocIsolated { .. } => "doc_isolated",
        }
    }

    /// The stride of the sliding forms.
    pub fn stride(&self) -> Option<usize> {
        match *self {
            WindowForm::NonOverlapping | WindowForm::DocIsolated { .. } => None,
            WindowForm::Sliding { stride }
            | WindowForm::LegacySliding { stride }
            | WindowForm::LegacySlidingFull { stride }
            | WindowForm::FullWindows { stride } => Some(stride),
        }
    }
}

/// One window: inputs `tokens[start .. start + len]`, targets `start .. start + len` (tokens shifted by one), of
/// which local positions `score_from .. len` are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub len: usize,
    pub score_from: usize,
}

/// The windows of a form over `targets` targets with sequence length `seq_len`.
pub fn plan_windows(targets: usize, seq_len: usize, form: WindowForm) -> Result<Vec<Window>> {
    if seq_len == 0 {
        return Err(VerifyError::Setup(
            "sequence length must be positive".into(),
        ));
    }
    if targets < seq_len {
        return Err(VerifyError::Setup(format!(
            "sequence length {seq_len} is longer than the stream's {targets} targets"
        )));
    }
    let check_stride = |stride: usize| {
        if stride == 0 || stride > seq_len {
            Err(VerifyError::Setup(format!(
                "stride must be in 1..={seq_len}, got {stride}"
            )))
        } else {
            Ok(())
        }
    };
    Ok(match form {
        WindowForm::NonOverlapping => (0..targets / seq_len)
            .map(|k| Window {
                start: k * seq_len,
                len: seq_len,
                score_from: 0,
            })
            .collect(),
        WindowForm::Sliding { stride } => {
            check_stride(stride)?;
            let context = seq_len - stride;
            (0..targets)
                .step_by(stride)
                .filter(|ws| ws + context < targets)
                .map(|ws| Window {
                    start: ws,
                    len: (ws + seq_len).min(targets) - ws,
                    score_from: if ws == 0 { 0 } else { context },
                })
                .collect()
        }
        WindowForm::DocIsolated {
            batch_seqs,
            world_size,
        } => {
            if batch_seqs == 0 || world_size == 0 {
                return Err(VerifyError::Setup(
                    "doc-isolated batch_seqs and world size must be positive".into(),
                ));
            }
            let total_seqs = targets / seq_len;
            let mut windows = Vec::new();
            for rank in 0..world_size {
                let first = total_seqs * rank / world_size;
                let end = total_seqs * (rank + 1) / world_size;
                let end = first + (end - first) / batch_seqs * batch_seqs;
                windows.extend((first..end).step_by(batch_seqs).map(|seq| Window {
                    start: seq * seq_len,
                    len: seq_len * batch_seqs,
                    score_from: 0,
                }));
            }
            windows
        }
        WindowForm::FullWindows { stride } => {
            check_stride(stride)?;
            (0..targets)
                .step_by(stride)
                .filter(|ws| ws + seq_len <= targets)
                .map(|ws| Window {
                    start: ws,
                    len: seq_len,
                    score_from: if ws == 0 { 0 } else { seq_len - stride },
                })
                .collect()
        }
        WindowForm::LegacySlidingFull { stride } => {
            check_stride(stride)?;
            (0..targets)
                .step_by(stride)
                .filter(|&ws| ws == 0 || (ws + seq_len).min(targets) - ws >= stride)
                .map(|ws| {
                    let len = (ws + seq_len).min(targets) - ws;
                    Window {
                        start: ws,
                        len,
                        score_from: if ws == 0 { 0 } else { len - stride },
                    }
                })
                .collect()
        }
        WindowForm::LegacySliding { stride } => {
            check_stride(stride)?;
            (0..targets)
                .step_by(stride)
                .map(|ws| {
                    let len = (ws + seq_len).min(targets) - ws;
                    Window {
                        start: ws,
                        len,
                        score_from: if ws == 0 {
                            0
                        } else {
                            len.saturating_sub(stride)
                        },
                    }
                })
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(targets: usize, seq_len: usize, form: WindowForm) -> Vec<u32> {
        let mut c = vec![0u32; targets];
        for w in plan_windows(targets, seq_len, form).unwrap() {
            for p in w.score_from..w.len {
                c[w.start + p] += 1;
            }
        }
        c
    }

    #[test]
    fn canonical_sliding_scores_every_target_once() {
        for (t, l, s) in [
            (1024, 128, 32),
            (1000, 128, 32),
            (4096, 1024, 64),
            (777, 64, 64),
            (130, 128, 1),
        ] {
            assert!(
                counts(t, l, WindowForm::Sliding { stride: s })
                    .iter()
                    .all(|&c| c == 1),
                "{t} {l} {s}"
            );
        }
    }

    #[test]
    fn legacy_sliding_rescores_the_tail_l_over_s_times() {
        let c = counts(1024, 128, WindowForm::LegacySliding { stride: 32 });
        assert_eq!(c[..1024 - 32].iter().copied().max(), Some(1));
        assert!(
            c[1024 - 32..].iter().all(|&x| x == 4),
            "last S targets scored L/S times"
        );
        // The log figure total_windows = T/S.
        assert_eq!(
            plan_windows(62_021_632, 1024, WindowForm::LegacySliding { stride: 64 })
                .unwrap()
                .len(),
            969_088
        );
    }

    #[test]
    fn non_overlapping_windows_tile_the_stream() {
        let w = plan_windows(1024, 128, WindowForm::NonOverlapping).unwrap();
        assert_eq!(w.len(), 8);
        assert_eq!(
            w[7],
            Window {
                start: 896,
                len: 128,
                score_from: 0
            }
        );
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(plan_windows(100, 128, WindowForm::NonOverlapping).is_err());
        assert!(plan_windows(1000, 128, WindowForm::Sliding { stride: 0 }).is_err());
        assert!(plan_windows(1000, 128, WindowForm::Sliding { stride: 129 }).is_err());
    }
}
