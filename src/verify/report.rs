//! The verification report: what a run measured (the challenge's figures, coverage, receipts, probes, size), the
//! findings its measurements support, and the submission.json `compliance` vocabulary decided from them. Typed and
//! `Serialize`; front ends print it as text or JSON.

use serde::Serialize;

use super::eval::EvalReport;
use super::ledger::{Coverage, Receipt, RunRecord, TrainingLog};
use super::mixer::MixerTttRecipe;
use super::probes::ProbeReport;
use super::ttt::TttRecipe;
use super::windows::WindowForm;
use crate::data::audit;
use crate::data::tokenizer::Tokenizer;
use crate::kernels::Precision;
use crate::pack::budget::SizeCheck;

/// Something the evaluation measured that a reviewer must weigh, with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub title: String,
    pub evidence: Vec<String>,
}

/// The findings a run's own measurements support: targets scored more than once or never, weights the model
/// changes at evaluation time, CaseOps tokens scored without their byte sidecar.
pub fn report_findings(
    r: &EvalReport,
    caseops: bool,
    regridded: &[(String, f32, f32)],
    sidecar: bool,
) -> Vec<Finding> {
    let mut notes = Vec::new();
    let c = &r.coverage;
    if c.scored_more_than_once > 0 {
        notes.push(Finding {
            id: "targets_scored_more_than_once",
            title: format!(
                "{} targets scored more than once (up to {} times): the score is not single-pass (C4)",
                c.scored_more_than_once, c.max_times
            ),
            evidence: vec![format!(
                "{} targets, {} scored exactly once",
                c.targets, c.scored_once
            )],
        });
    }
    if c.unscored > 0 {
        notes.push(Finding {
            id: "targets_never_scored",
            title: format!("{} of {} targets are never scored", c.unscored, c.targets),
            evidence: vec![format!("{} scored at least once", c.targets - c.unscored)],
        });
    }
    if !regridded.is_empty() {
        let mut worst: Vec<&(String, f32, f32)> = regridded.iter().collect();
        worst.sort_by(|a, b| b.2.total_cmp(&a.2));
        notes.push(Finding {
            id: "evaluation_time_rounding",
            title: format!(
                "{} weight matrices are re-gridded per row at evaluation (fake quantization left active)",
                regridded.len()
            ),
            evidence: worst
                .iter()
                .take(3)
                .map(|(name, clip, change)| format!("{name}: clip ±{clip}, max |Δw| {change:.3e}"))
                .collect(),
        });
    }
    if caseops && !sidecar {
        notes.push(Finding {
            id: "caseops_without_sidecar",
            title: "CaseOps tokens scored with the tokenizer's byte table; the record counts original bytes from \
                    its byte sidecar (--byte-sidecar)"
                .into(),
            evidence: Vec::new(),
        });
    }
    notes
}

/// What the byte audit finds in the stream and the tokenizer that makes a score non-comparable: documents not
/// delimited by BOS (a validation set that is not the challenge's export), a tokenizer that does not invert.
/// `table` is the tokenizer's canonical table, built once per run.
pub fn stream_findings(
    tokenizer: &Tokenizer,
    table: &crate::data::bytes::ByteTable,
    tokens: &[u16],
) -> Vec<Finding> {
    audit::audit_against(tokenizer, table, table, tokens)
        .findings
        .into_iter()
        .filter_map(|f| {
            let id = match f.code {
                "documents_not_delimited" => "validation_set_not_canonical",
                "not_invertible" => "tokenizer_not_invertible",
                _ => return None,
            };
            Some(Finding {
                id,
                title: f.message,
                evidence: vec![format!("byte audit finding {}", f.code)],
            })
        })
        .collect()
}

/// The submission.json `compliance` vocabulary, each value decided by a measurement (None: not measured here).
/// Fields in the order the text report lists them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Compliance {
    pub artifact_under_16mb: Option<bool>,
    pub causal: Option<bool>,
    pub no_ngram_cache: Option<bool>,
    pub no_slot: Option<bool>,
    pub normalized: Option<bool>,
    pub score_before_update: Option<bool>,
    pub score_first_ttt: Option<bool>,
    pub single_pass: Option<bool>,
}

/// The measurement that decided each [`Compliance`] value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ComplianceBasis {
    pub artifact_under_16mb: &'static str,
    pub causal: &'static str,
    pub no_ngram_cache: &'static str,
    pub no_slot: &'static str,
    pub normalized: &'static str,
    pub score_before_update: &'static str,
    pub score_first_ttt: &'static str,
    pub single_pass: &'static str,
}

impl Compliance {
    /// Decides each value from what was measured: the probes (when run), the training log and coverage of the
    /// full run, the size check (when the model is an artifact), and whether the procedure trains.
    pub fn decide(
        record: &RunRecord,
        probes: Option<&ProbeReport>,
        size: Option<&SizeCheck>,
        trains: bool,
    ) -> (Compliance, ComplianceBasis) {
        let probe = |id: &str| probes.and_then(|p| p.passed(id));
        let both = |a: Option<bool>, b: Option<bool>| match (a, b) {
            (Some(x), Some(y)) => Some(x && y),
            _ => None,
        };
        let t = &record.training;
        let ordering_full_run = t.steps_using_unscored_targets == 0
            && t.steps_before_first_score == 0
            && t.steps_after_last_score == 0;
        let score_first_ttt = trains.then(|| {
            ordering_full_run
                && probe("ttt_ordering").unwrap_or(true)
                && probe("c3_score_before_update").unwrap_or(true)
        });
        let single_pass = record.coverage.exactly_once && probe("c4_single_pass").unwrap_or(true);
        let values = Compliance {
            artifact_under_16mb: size.and_then(|s| s.under_budget),
            score_first_ttt,
            no_ngram_cache: probe("c2_normalized"),
            no_slot: both(probe("c1_causal"), probe("c3_score_before_update")),
            causal: probe("c1_causal"),
            normalized: probe("c2_normalized"),
            score_before_update: probe("c3_score_before_update"),
            single_pass: Some(single_pass),
        };
        let basis = ComplianceBasis {
            artifact_under_16mb: match size {
                None => "the model is not an artifact",
                Some(s) if s.code_bytes.is_none() && s.under_budget.is_none() => {
                    "artifact bytes only; pass --code train_gpt.py to count the code"
                }
                Some(_) => "artifact file bytes + counted code bytes ≤ 16,000,000",
            },
            score_first_ttt: if trains {
                "optimizer steps checked against scored targets over the full run, plus the C3 and TTT-ordering \
                 probes when run"
            } else {
                "the evaluated procedure does not train"
            },
            no_ngram_cache: "C2 normalization probe (hashed caches give rows summing far above 1)",
            no_slot: "C1 and C3 probes (scored-region deltas move earlier losses and the target's own row)",
            causal: "C1 probe",
            normalized: "C2 probe",
            score_before_update: "C3 probe",
            single_pass: "every target's score count over the full run (and the C4 probe)",
        };
        (values, basis)
    }

    /// (name, value) in report order.
    pub fn entries(&self) -> [(&'static str, Option<bool>); 8] {
        [
            ("artifact_under_16mb", self.artifact_under_16mb),
            ("causal", self.causal),
            ("no_ngram_cache", self.no_ngram_cache),
            ("no_slot", self.no_slot),
            ("normalized", self.normalized),
            ("score_before_update", self.score_before_update),
            ("score_first_ttt", self.score_first_ttt),
            ("single_pass", self.single_pass),
        ]
    }
}

/// The recipe a training procedure ran: the records' SGD score-first TTT, seed 003's AdamW recipe, or per-document
/// LoRA TTT.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TttRecipeReport {
    ScoreFirst(TttRecipe),
    Mixer(MixerTttRecipe),
    Lora(crate::verify::lora_ttt::LoraTttRecipe),
}

/// The spread of a procedure's BPB over its own randomness (one rerun per seed).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedSpread {
    pub seeds: Vec<u64>,
    pub val_bpb: Vec<f64>,
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for one run.
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl SeedSpread {
    pub fn from_runs(runs: Vec<(u64, f64)>) -> Self {
        let n = runs.len().max(1) as f64;
        let bpb: Vec<f64> = runs.iter().map(|r| r.1).collect();
        let mean = bpb.iter().sum::<f64>() / n;
        let var = if bpb.len() > 1 {
            bpb.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        SeedSpread {
            seeds: runs.iter().map(|r| r.0).collect(),
            mean,
            std: var.sqrt(),
            min: bpb.iter().copied().fold(f64::INFINITY, f64::min),
            max: bpb.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            val_bpb: bpb,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TttSummary {
    pub recipe: TttRecipeReport,
    pub trainable_parameters: usize,
    pub chunks: usize,
    pub training: TrainingLog,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReceiptSummary {
    pub count: usize,
    pub chain: String,
    pub first: Option<Receipt>,
    pub last: Option<Receipt>,
}

/// The declared procedure next to its canonical legal counterpart (`--canonical`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CanonicalComparison {
    pub procedure: String,
    pub val_bpb: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<Vec<Finding>>,
    /// What changed from the declared procedure to reach it (empty: the declared one is canonical).
    pub changes: Vec<String>,
    pub declared_minus_canonical_bpb: f64,
}

/// One verification, as `pgolf verify --json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub model: String,
    /// `--preset NAME` with no evaluation flag ran the evaluation that preset's record declares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared_by: Option<String>,
    pub tokenizer: String,
    pub parameters: usize,
    /// The procedure that ran (`sliding`, `score_first_ttt`, …).
    pub procedure: String,
    /// The window form it ran over.
    pub method: &'static str,
    pub device: String,
    pub precision: Precision,
    /// With `--precision mixed` on the CPU: which engine ran the bf16 products (AMX tiles, or why not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixed_products: Option<String>,
    pub generic_ops: bool,
    pub seq_len: usize,
    pub stride: Option<usize>,
    pub windows: usize,
    pub val_loss: f64,
    pub val_bpb: f64,
    pub nll_sum: f64,
    pub targets: u64,
    pub bytes: u64,
    pub coverage: Coverage,
    pub seconds: f64,
    pub targets_per_second: f64,
    pub ttt: Option<TttSummary>,
    pub receipts: ReceiptSummary,
    pub probes: Option<ProbeReport>,
    pub size: Option<SizeCheck>,
    pub compliance: Compliance,
    pub compliance_basis: ComplianceBasis,
    pub findings: Vec<Finding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical: Option<CanonicalComparison>,
    /// `--ttt-seeds K`: the BPB of K reruns with other adapter draws.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_spread: Option<SeedSpread>,
    /// The window form with its parameters (for the text report).
    #[serde(skip)]
    pub form: WindowForm,
    /// The config rounds weights at evaluation time (what `--canonical` turns off).
    #[serde(skip)]
    pub fake_quant: bool,
    /// Every receipt, one per scored chunk (for `--receipts`).
    #[serde(skip)]
    pub all_receipts: Vec<Receipt>,
}

impl VerifyReport {
    /// A probe failed, or the size check found the submission over the cap: the run's verdict is a failure.
    pub fn failed(&self) -> bool {
        self.probes
            .as_ref()
            .is_some_and(|p| p.probes.iter().any(|r| !r.passed))
            || self.size.as_ref().and_then(|s| s.under_budget) == Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::probes::ProbeResult;

    fn record(exactly_once: bool, training: TrainingLog) -> RunRecord {
        let counts = if exactly_once { vec![1, 1] } else { vec![1, 2] };
        RunRecord {
            sums: Default::default(),
            coverage: Coverage::from_counts(&counts),
            nll: None,
            rows: Default::default(),
            receipts: Vec::new(),
            training,
        }
    }

    fn probes(results: &[(&'static str, bool)]) -> ProbeReport {
        ProbeReport {
            procedure: "sliding".into(),
            prefix_targets: 10,
            runs: 1,
            seconds: 0.0,
            probes: results
                .iter()
                .map(|&(id, passed)| ProbeResult {
                    id,
                    title: id,
                    passed,
                    measured: String::new(),
                    evidence: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn nothing_measured_decides_nothing_but_coverage() {
        let (c, basis) =
            Compliance::decide(&record(true, TrainingLog::default()), None, None, false);
        assert_eq!(
            c,
            Compliance {
                single_pass: Some(true),
                ..Compliance::default()
            }
        );
        assert_eq!(basis.artifact_under_16mb, "the model is not an artifact");
        assert_eq!(
            basis.score_first_ttt,
            "the evaluated procedure does not train"
        );
        let (c, _) = Compliance::decide(&record(false, TrainingLog::default()), None, None, false);
        assert_eq!(c.single_pass, Some(false));
    }

    #[test]
    fn probes_decide_their_conditions() {
        let p = probes(&[
            ("c1_causal", true),
            ("c2_normalized", false),
            ("c3_score_before_update", true),
            ("c4_single_pass", false),
            ("ttt_ordering", true),
        ]);
        let (c, _) =
            Compliance::decide(&record(true, TrainingLog::default()), Some(&p), None, true);
        assert_eq!(c.causal, Some(true));
        assert_eq!((c.normalized, c.no_ngram_cache), (Some(false), Some(false)));
        assert_eq!(c.no_slot, Some(true));
        assert_eq!(c.score_before_update, Some(true));
        assert_eq!(
            c.single_pass,
            Some(false),
            "the C4 probe overrides full-run coverage"
        );
        assert_eq!(c.score_first_ttt, Some(true));
        let failed_c1 = probes(&[("c1_causal", false), ("c3_score_before_update", true)]);
        let (c, _) = Compliance::decide(
            &record(true, TrainingLog::default()),
            Some(&failed_c1),
            None,
            false,
        );
        assert_eq!((c.no_slot, c.score_first_ttt), (Some(false), None));
    }

    #[test]
    fn ttt_ordering_over_the_full_run_decides_score_first() {
        let early = TrainingLog {
            steps_before_first_score: 1,
            ..TrainingLog::default()
        };
        let (c, _) = Compliance::decide(&record(true, early), None, None, true);
        assert_eq!(c.score_first_ttt, Some(false));
        let unscored = TrainingLog {
            steps_using_unscored_targets: 3,
            ..TrainingLog::default()
        };
        let (c, _) = Compliance::decide(&record(true, unscored), None, None, true);
        assert_eq!(c.score_first_ttt, Some(false));
        let (c, _) = Compliance::decide(&record(true, TrainingLog::default()), None, None, true);
        assert_eq!(c.score_first_ttt, Some(true));
    }

    #[test]
    fn the_size_check_decides_the_cap() {
        let r = record(true, TrainingLog::default());
        let over = SizeCheck::against_cap(16_000_001, None);
        let (c, basis) = Compliance::decide(&r, None, Some(&over), false);
        assert_eq!(c.artifact_under_16mb, Some(false));
        assert_eq!(
            basis.artifact_under_16mb,
            "artifact file bytes + counted code bytes ≤ 16,000,000"
        );
        let uncounted = SizeCheck::against_cap(1_000, None);
        let (c, basis) = Compliance::decide(&r, None, Some(&uncounted), false);
        assert_eq!(c.artifact_under_16mb, None);
        assert!(basis.artifact_under_16mb.contains("pass --code"));
        let fits = SizeCheck::against_cap(1_000, Some(2_000));
        let (c, _) = Compliance::decide(&r, None, Some(&fits), false);
        assert_eq!(c.artifact_under_16mb, Some(true));
        assert_eq!(
            c.entries().map(|(k, _)| k),
            [
                "artifact_under_16mb",
                "causal",
                "no_ngram_cache",
                "no_slot",
                "normalized",
                "score_before_update",
                "score_first_ttt",
                "single_pass"
            ]
        );
    }
}
