//! One verification of a resolved [`VerifySpec`] (`flags.rs` resolves the flags into it): [`verify`] loads the model and the
//! stream, builds the procedure the spec names, evaluates, probes, writes the outputs it names and returns a typed
//! [`VerifyReport`].

use std::path::Path;

use candle_core::{DType, Device};

use super::eval::{self, EvalReport};
use super::ledger::{RunRecord, weights_digest};
use super::lora_ttt::{LoraInit, LoraTtt};
use super::mixer::{BackoffMixerProcedure, NgramCacheBlend};
use super::planted::{HashedNgramCache, SlotDelta};
use super::probes::{ProbeOptions, run_probes};
use super::procedure::{Procedure, WindowProcedure};
use super::report::{
    CanonicalComparison, Compliance, Finding, ReceiptSummary, SeedSpread, TttRecipeReport,
    TttSummary, VerifyReport, report_findings, stream_findings,
};
use super::scorer::{DocIsolatedScorer, ModelScorer, WindowScorer};
use super::spec::{
    ArchSource, EvalProcedure, LoraInitSource, LoraTttSpec, PhaseSeqLen, Planted, VerifySpec,
    Windows, named_preset,
};
use super::tilt::{NgramTiltPrior, NgramTiltScorer};
use super::ttt::ScoreFirstTtt;
use super::windows::{WindowForm, plan_windows};
use super::{Result, VerifyError};
use crate::data::bytes::{ByteSource, ByteTable};
use crate::data::shard;
use crate::data::tokenizer::Tokenizer;
use crate::infer::config::ModelConfig;
use crate::infer::lm::CausalLm;
use crate::infer::model::Gpt;
use crate::infer::patch_jepa::{BytePatchJepa, PatchJepaConfig};
use crate::infer::weights;
use crate::kernels::Precision;
use crate::limits::Limits;
use crate::pack::artifact::load_weights;
use crate::pack::budget::{SizeCheck, code_size};

/// The model family a config describes.
#[derive(Clone, Debug)]
pub enum Architecture {
    Gpt(Box<ModelConfig>),
    PatchJepa(PatchJepaConfig),
}

impl Architecture {
    pub fn vocab_size(&self) -> usize {
        match self {
            Architecture::Gpt(c) => c.vocab_size,
            Architecture::PatchJepa(c) => c.vocab_size,
        }
    }

    pub fn train_seq_len(&self) -> usize {
        match self {
            Architecture::Gpt(c) => c.train_seq_len,
            Architecture::PatchJepa(c) => c.train_seq_len,
        }
    }

    pub fn parameter_count(&self) -> usize {
        match self {
            Architecture::Gpt(c) => c.parameter_count(),
            Architecture::PatchJepa(c) => c.parameter_count(),
        }
    }

    /// The architecture a spec names: seed 001's JEPA when its config file says so, else the records' GPT from the
    /// preset, the config file or the config the artifact carries.
    pub fn resolve(spec: &VerifySpec, carried: Option<serde_json::Value>) -> Result<Self> {
        if let ArchSource::Config(p) = &spec.arch
            && names_patch_jepa(p)?
        {
            return Ok(Architecture::PatchJepa(PatchJepaConfig::load(p)?));
        }
        let setup = VerifyError::Setup;
        let mut cfg = match (&spec.arch, carried) {
            (ArchSource::Preset(name), _) => named_preset(name)?.config,
            (ArchSource::Config(p), _) => ModelConfig::load(p)?,
            (ArchSource::Carried, Some(v)) => {
                let cfg: ModelConfig = serde_json::from_value(v).map_err(|e| {
                    setup(format!(
                        "{}: the config it carries: {e}",
                        spec.model.display()
                    ))
                })?;
                cfg.validate().map_err(|m| {
                    setup(format!(
                        "{}: the config it carries: {m}",
                        spec.model.display()
                    ))
                })?;
                cfg
            }
            (ArchSource::Carried, None) => {
                return Err(setup(format!(
                    "{}: carries no model config; pass --config CONFIG.json",
                    spec.model.display()
                )));
            }
        };
        if spec.score_stored_weights {
            cfg.eval_fake_quant = false;
        }
        Ok(Architecture::Gpt(Box::new(cfg)))
    }
}

/// Whether a config file names seed 001's byte-patch JEPA (`"architecture": "byte_patch_jepa"`).
fn names_patch_jepa(path: &Path) -> Result<bool> {
    let text = crate::limits::read_small_text(path)
        .map_err(|e| VerifyError::Setup(format!("{}: {e}", path.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| VerifyError::Setup(format!("{}: bad model config: {e}", path.display())))?;
    Ok(PatchJepaConfig::is_named_in(&json))
}

/// The built model: the records' GPT, or seed 001's encoder–decoder (one value per run, so its size is no concern).
#[allow(clippy::large_enum_variant)]
enum Built {
    Gpt(Gpt),
    PatchJepa(BytePatchJepa),
}

impl Built {
    fn lm(&self) -> &dyn CausalLm {
        match self {
            Built::Gpt(m) => m,
            Built::PatchJepa(m) => m,
        }
    }

    fn boxed(self) -> Box<dyn CausalLm + Send> {
        match self {
            Built::Gpt(m) => Box::new(m),
            Built::PatchJepa(m) => Box::new(m),
        }
    }

    /// The GPT a procedure written for the records' model needs, or an error naming the procedure.
    fn gpt_only(&self, what: &str) -> Result<&Gpt> {
        match self {
            Built::Gpt(m) => Ok(m),
            Built::PatchJepa(_) => Err(VerifyError::Setup(format!(
                "{what} runs on the records' GPT only, not on the byte-patch JEPA"
            ))),
        }
    }
}

fn context(what: String) -> impl FnOnce(VerifyError) -> VerifyError {
    move |source| VerifyError::Context {
        context: what,
        source: Box::new(source),
    }
}

/// Progress of a run: `(stage, done, total)`, stage being the procedure's name or `probes`.
pub type Progress<'a> = dyn FnMut(&str, usize, usize) + 'a;

/// What the procedure needs besides the model.
struct ProcedureInputs<'a> {
    limits: &'a Limits,
    seq_len: usize,
    vocab_size: usize,
    table: &'a ByteTable,
    tilt_prior: Option<&'a NgramTiltPrior>,
}

/// A built procedure, with the TTT recipe and trainable parameter count when it trains.
type BuiltProcedure<'a> = (Box<dyn Procedure + 'a>, Option<(TttRecipeReport, usize)>);

/// The procedure the spec names, over the built model (taken by the procedures that train, borrowed by the rest),
/// with the TTT recipe and trainable parameter count when it trains.
fn build_procedure<'a>(
    procedure: &EvalProcedure,
    inputs: &ProcedureInputs<'a>,
    built: &'a mut Option<Built>,
) -> Result<BuiltProcedure<'a>> {
    let &ProcedureInputs {
        limits,
        seq_len,
        vocab_size,
        table,
        tilt_prior,
    } = inputs;
    let weights = weights_digest(built.as_ref().expect("built").lm())?;
    match procedure {
        EvalProcedure::Mixer {
            windows,
            options,
            ttt,
        } => {
            let model = built.take().expect("built").boxed();
            let seed_ttt = ttt.clone().map(|r| (r, table.base_bytes.clone()));
            let mixer = BackoffMixerProcedure::new(
                model,
                seq_len,
                windows.form,
                windows.batch_seqs,
                options.clone(),
                seed_ttt,
            )?;
            let trainable = mixer.trainable_parameters();
            let report = ttt.clone().map(|r| (TttRecipeReport::Mixer(r), trainable));
            Ok((Box::new(mixer), report))
        }
        EvalProcedure::LoraTtt(l) => lora_procedure(l, false, seq_len, built),
        EvalProcedure::Planted(Planted::AdaptThenScoreLora(l)) => {
            lora_procedure(l, true, seq_len, built)
        }
        EvalProcedure::ScoreFirstTtt(t)
        | EvalProcedure::Planted(Planted::AdaptThenScore(t) | Planted::WarmupOnUnscored(t)) => {
            let order = procedure.score_first_ttt().expect("a score-first TTT").1;
            let model = built.take().expect("built").boxed();
            let w = t.windows;
            let mut ttt = ScoreFirstTtt::new(
                model,
                t.recipe.clone(),
                seq_len,
                w.form,
                w.batch_seqs,
                order,
            )?;
            ttt.micro_batch_seqs = t.micro_batch;
            let trainable = ttt.trainable_parameters();
            Ok((
                Box::new(ttt),
                Some((TttRecipeReport::ScoreFirst(t.recipe.clone()), trainable)),
            ))
        }
        EvalProcedure::NgramBlend { windows, blend } => {
            let built: &'a Built = built.as_ref().expect("built");
            let prefill = match &blend.prefill {
                Some((glob, tokens)) => {
                    let files = shard::expand_glob(glob)?;
                    let all = shard::read_shards(&files, limits)?;
                    // TokenStream.take: the first N tokens, wrapping around the shards if they hold fewer.
                    all.iter()
                        .copied()
                        .cycle()
                        .take(if all.is_empty() { 0 } else { *tokens })
                        .collect()
                }
                None => Vec::new(),
            };
            Ok((
                Box::new(NgramCacheBlend {
                    model: built.gpt_only("--ngram-blend")?,
                    seq_len,
                    form: windows.form,
                    batch_seqs: windows.batch_seqs,
                    max_order: blend.order,
                    alpha: blend.alpha,
                    prefill,
                    weights,
                }),
                None,
            ))
        }
        EvalProcedure::Planted(Planted::NgramCache(windows)) => {
            let built: &'a Built = built.as_ref().expect("built");
            Ok((
                Box::new(HashedNgramCache {
                    model: built.gpt_only("--planted ngram-cache")?,
                    seq_len,
                    form: windows.form,
                    batch_seqs: windows.batch_seqs,
                    context: 1,
                    buckets: 4096,
                    alpha: 0.4,
                    weights,
                }),
                None,
            ))
        }
        EvalProcedure::Planted(Planted::Slot(windows)) => {
            let built: &'a Built = built.as_ref().expect("built");
            Ok((
                Box::new(SlotDelta {
                    model: built.gpt_only("--planted slot")?,
                    seq_len,
                    form: windows.form,
                    steps: 5,
                    lr: 1.0,
                    weights,
                }),
                None,
            ))
        }
        EvalProcedure::NgramTilt { windows, tilt } => {
            let built: &'a Built = built.as_ref().expect("built");
            let scorer = Box::new(NgramTiltScorer {
                model: built.gpt_only("--ngram-tilt")?,
                prior: tilt_prior.expect("the tilt's prior is loaded"),
                beta: tilt.beta,
                pad_to: seq_len,
            });
            Ok((
                window_procedure(scorer, *windows, seq_len, vocab_size, weights),
                None,
            ))
        }
        EvalProcedure::Windows(windows) => {
            let built: &'a Built = built.as_ref().expect("built");
            let scorer: Box<dyn WindowScorer + 'a> = match windows.form {
                WindowForm::DocIsolated { .. } => Box::new(DocIsolatedScorer {
                    model: built.gpt_only("--doc-isolated")?,
                    max_doc_len: seq_len,
                }),
                _ => Box::new(ModelScorer::new(built.lm(), seq_len)),
            };
            Ok((
                window_procedure(scorer, *windows, seq_len, vocab_size, weights),
                None,
            ))
        }
    }
}

/// The plain window procedure over a scorer.
fn window_procedure<'a>(
    scorer: Box<dyn WindowScorer + 'a>,
    windows: Windows,
    seq_len: usize,
    vocab_size: usize,
    weights: super::ledger::WeightsDigest,
) -> Box<dyn Procedure + 'a> {
    Box::new(WindowProcedure {
        scorer,
        seq_len,
        form: windows.form,
        batch_seqs: windows.batch_seqs,
        vocab_size,
        weights,
    })
}

/// Per-document LoRA TTT over the model (trained before scoring when planted), its phases' sequence length
/// settled from the evaluation's where the spec leaves it to it.
fn lora_procedure<'a>(
    l: &LoraTttSpec,
    adapt_before_score: bool,
    seq_len: usize,
    built: &'a mut Option<Built>,
) -> Result<BuiltProcedure<'a>> {
    let init = match &l.init {
        LoraInitSource::File(path) => LoraInit::from_file(path)?,
        LoraInitSource::Seed(seed) => LoraInit::Seed(*seed),
    };
    let mut recipe = l.recipe.clone();
    if let (Some(PhaseSeqLen::Evaluation), Some(p)) = (l.phase_seq_len, &mut recipe.phases) {
        p.seq_len = seq_len;
    }
    let model = built.take().expect("built").boxed();
    let mut ttt = LoraTtt::new(model, recipe.clone(), init)?;
    ttt.adapt_before_score = adapt_before_score;
    let trainable = ttt.adapter_parameters();
    Ok((
        Box::new(ttt),
        Some((TttRecipeReport::Lora(recipe), trainable)),
    ))
}

/// What a LoRA TTT run's reader must know: its score is one draw of the procedure's randomness (adapter draws and,
/// over several ranks, which rank ran which batch), measured when `--ttt-seeds` reran it; a phase prefix larger than
/// the stream's documents (clamped, as the records clamp it); phases that never ran because the documents ran out.
fn lora_findings(
    l: &LoraTttSpec,
    tokens: &[u16],
    record: &RunRecord,
    spread: Option<&SeedSpread>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let r = &l.recipe;
    let world_size = r.world_size;
    let varies_schedule =
        r.schedule == super::lora_ttt::LoraSchedule::LengthQueue && world_size > 1;
    let source = match &l.init {
        LoraInitSource::File(p) => format!("A drawn from {}", p.display()),
        LoraInitSource::Seed(seed) => format!("A drawn from seed {seed}"),
    };
    let mut evidence = vec![source];
    if varies_schedule {
        evidence.push(format!(
            "{world_size} ranks claim the length queue's batches by timing in the records; pgolf's lockstep \
             schedule gives entry k to rank k mod {world_size}"
        ));
    }
    match spread {
        Some(s) => evidence.push(format!(
            "{} reruns (seeds {}..={}{}): val_bpb mean {:.6}, std {:.2e}, range {:.2e}",
            s.seeds.len(),
            s.seeds.first().copied().unwrap_or(0),
            s.seeds.last().copied().unwrap_or(0),
            if varies_schedule {
                ", rank assignment rotated by the rerun's index"
            } else {
                ""
            },
            s.mean,
            s.std,
            s.max - s.min
        )),
        None => evidence.push(
            "not measured: --ttt-seeds K reruns it and reports the spread; a claimed gain inside it is noise"
                .into(),
        ),
    }
    findings.push(Finding {
        id: "lora_ttt_randomness",
        title: if varies_schedule {
            "the score depends on the adapters' random initial A and on which rank runs which batch"
                .into()
        } else {
            "the score depends on the adapters' random initial A".into()
        },
        evidence,
    });
    if let Some(p) = &r.phases {
        let docs = super::lora_ttt::find_docs(tokens).len();
        if p.prefix_docs > docs {
            findings.push(Finding {
                id: "phased_prefix_clamped",
                title: format!(
                    "--phased-ttt-prefix-docs {} exceeds the stream's {docs} documents: the phases fall within \
                     all {docs}, as the records clamp it",
                    p.prefix_docs
                ),
                evidence: vec![],
            });
        }
        let ran = record
            .receipts
            .iter()
            .filter(|rc| rc.label.starts_with("global phase"))
            .count();
        if ran < p.num_phases {
            findings.push(Finding {
                id: "global_phases_not_run",
                title: format!(
                    "{ran} of {} global phases ran: the documents ran out before the later boundaries were reached \
                     between rounds",
                    p.num_phases
                ),
                evidence: vec![format!(
                    "phases start between rounds of {world_size} batch(es) of {} documents",
                    r.batch_size
                )],
            });
        }
    }
    findings
}

/// The tilt's prior: the file given, else the artifact's bundled `"ngram"` entry. Returns it with its byte size.
fn load_tilt_prior(
    spec: &VerifySpec,
    prior: Option<&Path>,
    bundled: &[(String, Vec<u8>)],
    vocab_size: usize,
    limits: &Limits,
) -> Result<(NgramTiltPrior, usize)> {
    let (source, bytes) = match prior {
        Some(p) => (
            p.to_path_buf(),
            crate::limits::read_input(p, limits)
                .map_err(|e| VerifyError::Setup(format!("{}: {e}", p.display())))?,
        ),
        None => match bundled.iter().find(|(k, _)| k == "ngram") {
            Some((_, b)) => (spec.model.clone(), b.clone()),
            None => {
                return Err(VerifyError::Setup(format!(
                    "{}: --ngram-tilt needs an n-gram prior, and the artifact bundles none (no \"ngram\" entry); \
                     pass --ngram-prior FILE",
                    spec.model.display()
                )));
            }
        },
    };
    let entries = crate::pack::prior::read_ngram_prior(&source, &bytes, limits)?;
    let prior =
        NgramTiltPrior::from_entries(vocab_size, entries.into_iter().map(|e| (e.prefix, e.next)))
            .map_err(context(source.display().to_string()))?;
    Ok((prior, bytes.len()))
}

/// Runs the verification a spec declares (and, with `canonical`, its canonical counterpart), writes the receipts
/// and HTML files the spec names (refused before any work where one would overwrite an input), and reports it.
pub fn verify(spec: &VerifySpec, limits: &Limits, progress: &mut Progress) -> Result<VerifyReport> {
    let mut inputs = vec![spec.model.as_path()];
    if let ArchSource::Config(p) = &spec.arch {
        inputs.push(p);
    }
    inputs.extend(spec.code.as_deref());
    for path in spec.outputs.receipts.iter().chain(&spec.outputs.html) {
        crate::output::refuse_inputs(path, &inputs)?;
    }
    let report = verify_with_canonical(spec, limits, progress)?;
    if let Some(path) = &spec.outputs.receipts {
        let text = serde_json::to_string_pretty(&report.all_receipts)
            .map_err(|e| VerifyError::Setup(format!("{}: {e}", path.display())))?;
        crate::output::write_file(path, &inputs, text.as_bytes())?;
    }
    if let Some(path) = &spec.outputs.html {
        let text = super::html::verify_html(&report);
        crate::output::write_file(path, &inputs, text.as_bytes())?;
    }
    Ok(report)
}

/// The run, and its canonical counterpart with `canonical`.
fn verify_with_canonical(
    spec: &VerifySpec,
    limits: &Limits,
    progress: &mut Progress,
) -> Result<VerifyReport> {
    let mut report = verify_once(spec, limits, progress)?;
    if spec.canonical {
        let comparison = match spec.canonical(report.fake_quant) {
            Some((c, changes)) => {
                let theirs = verify_once(&c, limits, progress).map_err(context(format!(
                    "the canonical counterpart of {}",
                    report.procedure
                )))?;
                report.findings.push(Finding {
                    id: "declared_vs_canonical",
                    title: format!(
                        "declared {} scores {:.6} bpb, its canonical counterpart {} {:.6} ({:+.6})",
                        report.procedure,
                        report.val_bpb,
                        theirs.procedure,
                        theirs.val_bpb,
                        report.val_bpb - theirs.val_bpb
                    ),
                    evidence: changes.clone(),
                });
                CanonicalComparison {
                    procedure: theirs.procedure,
                    val_bpb: theirs.val_bpb,
                    val_loss: Some(theirs.val_loss),
                    coverage: Some(theirs.coverage),
                    findings: Some(theirs.findings),
                    changes,
                    declared_minus_canonical_bpb: report.val_bpb - theirs.val_bpb,
                }
            }
            None => CanonicalComparison {
                procedure: report.procedure.clone(),
                val_bpb: report.val_bpb,
                val_loss: None,
                coverage: None,
                findings: None,
                changes: Vec::new(),
                declared_minus_canonical_bpb: 0.0,
            },
        };
        report.canonical = Some(comparison);
    }
    Ok(report)
}

/// One evaluation of one spec, without the canonical comparison.
fn verify_once(
    spec: &VerifySpec,
    limits: &Limits,
    progress: &mut Progress,
) -> Result<VerifyReport> {
    let (device, backend) = spec.compute.open()?;
    // Weights are read and checked on the host; the model moves them to its device.
    let loaded = load_weights(&spec.model, &Device::Cpu, limits)?;
    let arch = Architecture::resolve(spec, loaded.config)?;
    let tokenizer = Tokenizer::load(&spec.tokenizer)?;
    let seq_len = spec.seq_len.unwrap_or(arch.train_seq_len());
    let vocab_size = arch.vocab_size();
    let files = shard::validation_files(&spec.val)?;
    let all = shard::read_shards(&files, limits)?;
    // LoRA TTT reads the whole stream by documents (`eval_val_ttt_lora` loads the shards untruncated); the other
    // procedures cut it to whole sequences as `load_validation_tokens` does.
    let lora = spec.procedure.lora();
    let tokens = if lora.is_some() {
        if all.len() < 2 {
            return Err(VerifyError::Setup(format!(
                "{}: {} tokens, no target to score",
                spec.val,
                all.len()
            )));
        }
        all
    } else {
        shard::truncate_to_usable(all, seq_len, &spec.val)?
    };
    if let Some(pos) = tokens.iter().position(|&t| t as usize >= vocab_size) {
        return Err(VerifyError::Setup(format!(
            "{}: token id {} at position {pos} is outside the model's vocab_size {} ({})",
            spec.val,
            tokens[pos],
            vocab_size,
            match &spec.arch {
                ArchSource::Config(p) => p.display().to_string(),
                ArchSource::Preset(name) => format!("preset {name}"),
                ArchSource::Carried => "its carried config".into(),
            }
        )));
    }
    let size = if loaded.is_artifact {
        let artifact_bytes = std::fs::metadata(&spec.model)
            .map_err(|e| VerifyError::Setup(format!("{}: {e}", spec.model.display())))?
            .len();
        let code_bytes = match &spec.code {
            Some(p) => Some(code_size(p, limits)?.counted_bytes),
            None => None,
        };
        Some(SizeCheck::against_cap(artifact_bytes, code_bytes))
    } else {
        None
    };
    let precision = spec.compute.precision;
    let built = match &arch {
        Architecture::Gpt(cfg) => {
            let state = weights::check_state_dict(cfg, loaded.state, DType::F32, &spec.model)?;
            Built::Gpt(Gpt::with_backend(
                (**cfg).clone(),
                state,
                &device,
                precision,
                backend,
            )?)
        }
        Architecture::PatchJepa(cfg) => Built::PatchJepa(BytePatchJepa::new(
            cfg.clone(),
            loaded.state,
            &device,
            precision,
            backend,
            &spec.model,
        )?),
    };
    let regridded = match &built {
        Built::Gpt(m) => m.regridded.clone(),
        Built::PatchJepa(_) => Vec::new(),
    };
    let caseops = matches!(&arch, Architecture::Gpt(c) if c.caseops);
    let fake_quant = matches!(&arch, Architecture::Gpt(c) if c.eval_fake_quant);
    // The byte table is built once per run: bytes per target, the mixer's byte weights and the audit read it.
    let table = tokenizer.byte_table(vocab_size);
    let bytes = match &spec.byte_sidecar {
        Some(glob) => ByteSource::load_sidecar(glob, tokens.len(), limits)?,
        None => ByteSource::Table(table.clone()),
    };
    let form = spec.procedure.form();
    let windows = plan_windows(tokens.len() - 1, seq_len, form)
        .map_err(context(format!("evaluating {}", spec.model.display())))?
        .len();
    let tilt_prior = match &spec.procedure {
        EvalProcedure::NgramTilt { tilt, .. } => Some(load_tilt_prior(
            spec,
            tilt.prior.as_deref(),
            &loaded.bundled,
            vocab_size,
            limits,
        )?),
        _ => None,
    };
    let parameters = arch.parameter_count();
    let mut built = Some(built);
    let inputs = ProcedureInputs {
        limits,
        seq_len,
        vocab_size,
        table: &table,
        tilt_prior: tilt_prior.as_ref().map(|(p, _)| p),
    };
    let (procedure, ttt) = build_procedure(&spec.procedure, &inputs, &mut built)?;
    let name = procedure.name();
    let (evaluated, record) = eval::evaluate(procedure.as_ref(), &tokens, &bytes, &mut |d, t| {
        progress(&name, d, t)
    })
    .map_err(context(format!("evaluating {}", spec.model.display())))?;
    if evaluated.sums.targets == 0 {
        // A score over nothing is NaN; say why instead.
        let why = match form {
            WindowForm::DocIsolated {
                batch_seqs,
                world_size,
            } => format!(
                ": each of {world_size} rank(s) scores whole buffers of --batch-seqs {batch_seqs} sequences of \
                 {seq_len}, and the stream holds {} sequences",
                (tokens.len() - 1) / seq_len
            ),
            _ => String::new(),
        };
        return Err(VerifyError::Setup(format!(
            "{}: {} scored none of the stream's {} targets{why}",
            spec.model.display(),
            evaluated.method,
            tokens.len() - 1,
        )));
    }

    let probes = if let Some(p) = &spec.probes {
        let opts = ProbeOptions {
            prefix_targets: p.targets.max(seq_len),
            perturbations: p.perturbations,
            row_samples: p.rows,
            seed: p.seed,
            ..ProbeOptions::default()
        };
        let r = run_probes(procedure.as_ref(), &tokens, &bytes, &opts, &mut |d, t| {
            progress("probes", d, t)
        })
        .map_err(context(format!("probing {}", spec.model.display())))?;
        Some(r)
    } else {
        None
    };

    // The procedure's own noise: reruns with other adapter draws.
    let seed_spread = match lora {
        Some(l) if l.seeds > 0 => {
            let first = match l.init {
                LoraInitSource::Seed(seed) => seed,
                LoraInitSource::File(_) => 0,
            };
            let mut runs = Vec::with_capacity(l.seeds);
            for k in 0..l.seeds {
                let seed = first + k as u64;
                procedure.reseed(seed);
                procedure.reschedule(k);
                let (e, _) = eval::evaluate(procedure.as_ref(), &tokens, &bytes, &mut |d, t| {
                    progress(&format!("seed {seed}"), d, t)
                })
                .map_err(context(format!("rerunning with seed {seed}")))?;
                runs.push((seed, e.val_bpb));
            }
            Some(SeedSpread::from_runs(runs))
        }
        _ => None,
    };

    let mut findings =
        report_findings(&evaluated, caseops, &regridded, spec.byte_sidecar.is_some());
    findings.extend(stream_findings(&tokenizer, &table, &tokens));
    if let Some((prior, prior_bytes)) = &tilt_prior {
        let (one, two) = prior.entries();
        findings.push(Finding {
            id: "ngram_tilt",
            title: format!(
                "logits tilted by a fixed n-gram prior of {prior_bytes} bytes carried next to the weights (+{} per \
                 matching prefix); the tilted row is renormalized by the softmax",
                tilt_beta(&spec.procedure) * 0.5
            ),
            evidence: vec![
                format!("{one} one-token and {two} two-token prefixes with a predicted next token"),
                "the row predicting x[t+1] is tilted by the prefixes ending at x[t−1], as the seed indexes them \
                 (off by one: x[t] is ignored)"
                    .into(),
            ],
        });
    }
    if let Some(l) = lora {
        findings.extend(lora_findings(l, &tokens, &record, seed_spread.as_ref()));
    }
    let (compliance, compliance_basis) =
        Compliance::decide(&record, probes.as_ref(), size.as_ref(), ttt.is_some());
    let EvalReport {
        method: procedure_name,
        sums,
        val_loss,
        val_bpb,
        coverage,
        seconds,
    } = evaluated;
    Ok(VerifyReport {
        model: spec.model.display().to_string(),
        declared_by: spec.declared_by.clone(),
        tokenizer: tokenizer.name(),
        parameters,
        procedure: procedure_name,
        method: form.name(),
        device: spec.compute.device.clone(),
        precision,
        mixed_products: (precision == Precision::Mixed && device.is_cpu())
            .then(|| backend.mixed_products()),
        generic_ops: spec.compute.generic_ops,
        seq_len,
        stride: form.stride(),
        windows,
        val_loss,
        val_bpb,
        nll_sum: sums.nll_sum,
        targets: sums.targets,
        bytes: sums.bytes,
        coverage,
        seconds,
        targets_per_second: sums.targets as f64 / seconds.max(1e-9),
        ttt: ttt.map(|(recipe, trainable_parameters)| TttSummary {
            recipe,
            trainable_parameters,
            chunks: record.receipts.len(),
            training: record.training.clone(),
        }),
        receipts: ReceiptSummary {
            count: record.receipts.len(),
            chain: record.chain_head(),
            first: record.receipts.first().cloned(),
            last: record.receipts.last().cloned(),
        },
        probes,
        size,
        compliance,
        compliance_basis,
        findings,
        canonical: None,
        seed_spread,
        form,
        fake_quant,
        all_receipts: record.receipts,
    })
}

/// The tilt's β of a tilt procedure.
fn tilt_beta(procedure: &EvalProcedure) -> f64 {
    match procedure {
        EvalProcedure::NgramTilt { tilt, .. } => tilt.beta,
        _ => 0.0,
    }
}
