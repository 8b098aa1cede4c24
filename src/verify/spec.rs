//! What one verification runs, resolved ([`VerifySpec`], made by [`super::flags::VerifyFlags::resolve`]): the model
//! and where its architecture comes from, the stream, one procedure with only its own knobs ([`EvalProcedure`]), the
//! probes, the size check and the outputs; and the canonical legal counterpart of a declared procedure, as another
//! spec ([`VerifySpec::canonical`]).

use std::path::PathBuf;

use serde::Serialize;

use super::lora_ttt::LoraTttRecipe;
use super::mixer::{MixerOptions, MixerTttRecipe};
use super::ttt::{TttOrder, TttRecipe};
use super::windows::WindowForm;
use super::{Result, VerifyError};
use crate::infer::device::ComputeFlags;
use crate::infer::presets;

/// The LoRA test-time-training recipes pgolf reproduces, by the record that runs each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoraRecipeName {
    /// rec/2026-03-17_LoRA_TTT's `eval_val_ttt_lora`: q, v and head adapters, Adam, A drawn again per batch.
    #[serde(rename = "rec-2026-03-17")]
    Rec20260317,
    /// The per-document part of rec/2026-04-27's `eval_val_ttt_phased` (and rec/2026-04-10's LoRA TTT), with its
    /// global score-first SGD phases on the base weights.
    #[serde(rename = "rec-2026-04-27")]
    Rec20260427,
}

impl LoraRecipeName {
    /// The name a flag value and a report use.
    pub fn name(self) -> &'static str {
        match self {
            LoraRecipeName::Rec20260317 => "rec-2026-03-17",
            LoraRecipeName::Rec20260427 => "rec-2026-04-27",
        }
    }

    /// The recipe with the record's own values.
    pub fn recipe(self) -> LoraTttRecipe {
        match self {
            LoraRecipeName::Rec20260317 => LoraTttRecipe::default(),
            LoraRecipeName::Rec20260427 => LoraTttRecipe::rec_2026_04_27(),
        }
    }
}

/// Where the model's architecture comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchSource {
    /// A named record config (`--preset`).
    Preset(String),
    /// A config file (`--config`): the records' hyperparameter names, or seed 001's JEPA.
    Config(PathBuf),
    /// The config a pgolf artifact carries.
    Carried,
}

/// Windows laid over the stream, and how many go into one forward batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Windows {
    pub form: WindowForm,
    pub batch_seqs: usize,
}

/// Seed 004's NGramCache blend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NgramBlendSpec {
    /// NGRAM_ORDER (contexts of up to order − 1 tokens).
    pub order: usize,
    /// NGRAM_ALPHA.
    pub alpha: f64,
    /// Training shards (glob) the cache is pre-filled from, and how many tokens.
    pub prefill: Option<(String, usize)>,
}

/// Seed 002's n-gram logit tilt.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TiltSpec {
    /// The prior as a file (else the artifact's bundled one).
    pub prior: Option<PathBuf>,
    /// NGRAM_TILT_BETA; each matching prefix adds β/2.
    pub beta: f64,
}

/// Score-first TTT over windows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreFirstTttSpec {
    pub windows: Windows,
    pub recipe: TttRecipe,
    /// Sequences per backward pass (0: the whole batch).
    pub micro_batch: usize,
}

/// Where the LoRA adapters' A come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraInitSource {
    /// A seeded generator.
    Seed(u64),
    /// The reference's own draws, read from a safetensors file.
    File(PathBuf),
}

/// The global phases' sequence length: the record's single EVAL_SEQ_LEN, the evaluation's unless set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseSeqLen {
    /// The evaluation's sequence length (`--seq-len`, else the config's train_seq_len).
    Evaluation,
    /// Set by `--eval-seq-len`.
    Set(usize),
}

/// Per-document LoRA TTT: its recipe (with its ranks and phases), where A comes from, and reruns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoraTttSpec {
    /// The recipe the knobs start from.
    pub named: LoraRecipeName,
    /// The recipe with every override applied. Its phases' `seq_len` is settled at run time from `phase_seq_len`.
    pub recipe: LoraTttRecipe,
    pub phase_seq_len: Option<PhaseSeqLen>,
    pub init: LoraInitSource,
    /// Also rerun with seeds `seed .. seed + seeds` and report the spread (0: none).
    pub seeds: usize,
}

/// A deliberately illegal procedure.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Planted {
    NgramCache(Windows),
    Slot(Windows),
    /// Score-first TTT's recipe, trained before scoring.
    AdaptThenScore(ScoreFirstTttSpec),
    /// LoRA TTT trained before scoring.
    AdaptThenScoreLora(LoraTttSpec),
    WarmupOnUnscored(ScoreFirstTttSpec),
}

/// What scores the stream: one procedure, with only its own knobs.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalProcedure {
    /// The model over windows.
    Windows(Windows),
    /// Seed 003's backoff n-gram mixer (with its own AdamW TTT when given).
    Mixer {
        windows: Windows,
        options: MixerOptions,
        ttt: Option<MixerTttRecipe>,
    },
    NgramBlend {
        windows: Windows,
        blend: NgramBlendSpec,
    },
    NgramTilt {
        windows: Windows,
        tilt: TiltSpec,
    },
    ScoreFirstTtt(ScoreFirstTttSpec),
    LoraTtt(LoraTttSpec),
    Planted(Planted),
}

impl EvalProcedure {
    /// The window form the procedure scores with; per-document LoRA TTT has its own windows, reported as the
    /// non-overlapping form.
    pub fn form(&self) -> WindowForm {
        match self {
            EvalProcedure::Windows(w)
            | EvalProcedure::Mixer { windows: w, .. }
            | EvalProcedure::NgramBlend { windows: w, .. }
            | EvalProcedure::NgramTilt { windows: w, .. }
            | EvalProcedure::ScoreFirstTtt(ScoreFirstTttSpec { windows: w, .. })
            | EvalProcedure::Planted(
                Planted::NgramCache(w)
                | Planted::Slot(w)
                | Planted::AdaptThenScore(ScoreFirstTttSpec { windows: w, .. })
                | Planted::WarmupOnUnscored(ScoreFirstTttSpec { windows: w, .. }),
            ) => w.form,
            EvalProcedure::LoraTtt(_) | EvalProcedure::Planted(Planted::AdaptThenScoreLora(_)) => {
                WindowForm::NonOverlapping
            }
        }
    }

    /// The LoRA TTT the procedure runs (legal or planted).
    pub fn lora(&self) -> Option<&LoraTttSpec> {
        match self {
            EvalProcedure::LoraTtt(l) | EvalProcedure::Planted(Planted::AdaptThenScoreLora(l)) => {
                Some(l)
            }
            _ => None,
        }
    }

    /// Whether the procedure trains on the stream (its probes then span three TTT chunks by default).
    pub fn trains(&self) -> bool {
        match self {
            EvalProcedure::Mixer { ttt, .. } => ttt.is_some(),
            EvalProcedure::ScoreFirstTtt(_) | EvalProcedure::LoraTtt(_) => true,
            EvalProcedure::Planted(p) => !matches!(p, Planted::NgramCache(_) | Planted::Slot(_)),
            _ => false,
        }
    }

    /// The score-first TTT the procedure runs, with its order (legal or planted).
    pub fn score_first_ttt(&self) -> Option<(&ScoreFirstTttSpec, TttOrder)> {
        match self {
            EvalProcedure::ScoreFirstTtt(t) => Some((t, TttOrder::ScoreFirst)),
            EvalProcedure::Planted(Planted::AdaptThenScore(t)) => {
                Some((t, TttOrder::AdaptThenScore))
            }
            EvalProcedure::Planted(Planted::WarmupOnUnscored(t)) => {
                Some((t, TttOrder::WarmupOnUnscored))
            }
            _ => None,
        }
    }
}

/// The legality probes' settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeSpec {
    /// Targets of the prefix (at least one sequence at run time).
    pub targets: usize,
    pub perturbations: usize,
    pub rows: usize,
    pub seed: u64,
}

/// Files the run writes besides its report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VerifyOutputs {
    /// Every receipt, as JSON.
    pub receipts: Option<PathBuf>,
    /// The run as one self-contained HTML file.
    pub html: Option<PathBuf>,
}

/// Everything one verification runs, resolved: no default, preset or recipe is left to apply.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifySpec {
    /// Safetensors weights or any artifact.
    pub model: PathBuf,
    pub arch: ArchSource,
    /// Validation shards (glob).
    pub val: String,
    /// SentencePiece model, seed 002's BESE JSON, or `byte260`.
    pub tokenizer: String,
    /// CaseOps per-token byte sidecar shards (glob).
    pub byte_sidecar: Option<String>,
    /// The evaluation's sequence length (None: the config's train_seq_len).
    pub seq_len: Option<usize>,
    pub compute: ComputeFlags,
    pub procedure: EvalProcedure,
    pub probes: Option<ProbeSpec>,
    /// The submission's `train_gpt.py`, counted toward the cap.
    pub code: Option<PathBuf>,
    /// Also run the canonical legal counterpart and report both.
    pub canonical: bool,
    /// Ignore a config's evaluation-time fake quantization.
    pub score_stored_weights: bool,
    /// The preset whose declared evaluation this spec runs.
    pub declared_by: Option<String>,
    pub outputs: VerifyOutputs,
}

/// The preset of that name, or an error listing the known ones.
pub(crate) fn named_preset(name: &str) -> Result<presets::Preset> {
    presets::preset(name).ok_or_else(|| {
        VerifyError::Setup(format!(
            "no preset named {name:?}; known: {}",
            presets::presets()
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

impl VerifySpec {
    /// The canonical legal counterpart of the declared procedure, and what changes to reach it; None when the
    /// declared procedure is already canonical. `fake_quant`: the config rounds weights at evaluation time.
    pub fn canonical(&self, fake_quant: bool) -> Option<(VerifySpec, Vec<String>)> {
        let mut c = self.clone();
        let mut changes = Vec::new();
        let to_sliding = |w: &mut Windows, changes: &mut Vec<String>| {
            let (from, stride) = match w.form {
                WindowForm::LegacySliding { stride } => ("legacy_sliding", stride),
                WindowForm::LegacySlidingFull { stride } => ("legacy_sliding_full", stride),
                WindowForm::FullWindows { stride } => ("full_windows", stride),
                _ => return,
            };
            changes.push(format!(
                "window form {from} → sliding (every target exactly once)"
            ));
            w.form = WindowForm::Sliding { stride };
        };
        match &mut c.procedure {
            EvalProcedure::Windows(w)
            | EvalProcedure::NgramTilt { windows: w, .. }
            | EvalProcedure::ScoreFirstTtt(ScoreFirstTttSpec { windows: w, .. }) => {
                to_sliding(w, &mut changes)
            }
            EvalProcedure::Mixer {
                windows, options, ..
            } => {
                to_sliding(windows, &mut changes);
                if !options.normalized {
                    changes.push(
                        "the mixer → the normalized mixture (p_ng divided by its sum over the vocabulary)".into(),
                    );
                    options.normalized = true;
                }
            }
            EvalProcedure::NgramBlend { windows, .. } => {
                let mut w = *windows;
                to_sliding(&mut w, &mut changes);
                changes.push("the target-dependent n-gram blend → none".into());
                c.procedure = EvalProcedure::Windows(w);
            }
            EvalProcedure::LoraTtt(_) | EvalProcedure::Planted(_) => {}
        }
        if fake_quant && !self.score_stored_weights {
            changes
                .push("evaluation-time fake quantization → the stored weights as they are".into());
            c.score_stored_weights = true;
        }
        if changes.is_empty() {
            return None;
        }
        c.canonical = false;
        c.probes = None;
        c.outputs = VerifyOutputs::default();
        Some((c, changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::flags::VerifyFlags;

    fn flags() -> VerifyFlags {
        VerifyFlags::new(
            "/nonexistent/model.safetensors",
            "/nonexistent/val_*.bin",
            "byte260",
        )
    }

    #[test]
    fn the_canonical_counterpart_is_a_spec() {
        assert!(flags().resolve().unwrap().canonical(false).is_none());
        let declared = VerifyFlags {
            stride: Some(64),
            legacy_sliding: true,
            canonical: true,
            probes: true,
            ..flags()
        }
        .resolve()
        .unwrap();
        let (c, changes) = declared.canonical(true).unwrap();
        assert_eq!(c.procedure.form(), WindowForm::Sliding { stride: 64 });
        assert!(c.score_stored_weights && !c.canonical && c.probes.is_none());
        assert_eq!(
            changes,
            [
                "window form legacy_sliding → sliding (every target exactly once)",
                "evaluation-time fake quantization → the stored weights as they are"
            ]
        );
        let mixer = VerifyFlags {
            mixer: true,
            ..flags()
        };
        let (c, _) = mixer.resolve().unwrap().canonical(false).unwrap();
        assert!(matches!(c.procedure, EvalProcedure::Mixer { options, .. } if options.normalized));
        let blend = VerifyFlags {
            ngram_blend: true,
            ngram_prefill: Some("train_*.bin".into()),
            ..flags()
        };
        let (c, _) = blend.resolve().unwrap().canonical(false).unwrap();
        assert!(matches!(c.procedure, EvalProcedure::Windows(_)));
    }
}
