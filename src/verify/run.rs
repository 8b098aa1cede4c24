//! One verification, front-end free: a [`VerifySpec`] says what to run (model, stream, window form, procedure,
//! probes, size check); [`VerifySpec::validate`] refuses an illegal combination before any file is read;
//! [`VerifySpec::canonical`] derives the canonical legal counterpart of a declared procedure as another spec; and
//! [`verify`] loads, builds the procedure, evaluates, probes and returns a typed [`VerifyReport`].

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use super::eval::{self, EvalReport};
use super::ledger::{RunRecord, weights_digest};
use super::lora_ttt::{LoraInit, LoraTtt, LoraTttRecipe};
use super::mixer::{BackoffMixerProcedure, MixerOptions, MixerTttRecipe, NgramCacheBlend};
use super::planted::{HashedNgramCache, SlotDelta};
use super::probes::{ProbeOptions, run_probes};
use super::procedure::{Procedure, WindowProcedure};
use super::report::{
    CanonicalComparison, Compliance, Finding, ReceiptSummary, SeedSpread, TttRecipeReport,
    TttSummary, VerifyReport, report_findings, stream_findings,
};
use super::scorer::{DocIsolatedScorer, ModelScorer, WindowScorer};
use super::tilt::{NgramTiltPrior, NgramTiltScorer};
use super::ttt::{ScoreFirstTtt, TttOrder, TttRecipe};
use super::windows::{WindowForm, plan_windows};
use super::{Result, VerifyError};
use crate::data::bytes::{ByteSource, ByteTable};
use crate::data::shard;
use crate::data::tokenizer::Tokenizer;
use crate::infer::config::ModelConfig;
use crate::infer::lm::CausalLm;
use crate::infer::model::Gpt;
use crate::infer::patch_jepa::{BytePatchJepa, PatchJepaConfig};
use crate::infer::precision::Precision;
use crate::infer::{device, presets, weights};
use crate::limits::Limits;
use crate::pack::artifact::load_weights;
use crate::pack::budget::{SizeCheck, code_size};

/// Deliberately illegal procedures, for seeing each probe fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Planted {
    /// A hashed n-gram cache blended only at the realized token (PR #886): fails C2.
    NgramCache,
    /// A per-window hidden delta optimized on the window's scored targets (PR #1240): fails C1 and C3.
    Slot,
    /// TTT that trains on each chunk before scoring it: fails C1, C3 and TTT ordering.
    AdaptThenScore,
    /// Score-first TTT preceded by a warm-up step on validation tokens: fails TTT ordering.
    WarmupOnUnscored,
}

/// Everything one verification runs, as the CLI's flags name it (defaults are the records').
#[derive(Clone, Debug)]
pub struct VerifySpec {
    /// Safetensors weights or any artifact.
    pub model: PathBuf,
    /// A model config file (the records' hyperparameter names, or seed 001's JEPA).
    pub config: Option<PathBuf>,
    /// A named record config instead of a file.
    pub preset: Option<String>,
    /// Validation shards (glob).
    pub val: String,
    /// SentencePiece model, seed 002's BESE JSON, or `byte260`.
    pub tokenizer: String,
    pub seq_len: Option<usize>,
    pub stride: Option<usize>,
    pub legacy_sliding: bool,
    pub legacy_sliding_full: bool,
    pub full_windows: bool,
    pub mixer: bool,
    pub mixer_normalized: bool,
    pub mixer_order: usize,
    pub mixer_buckets: usize,
    pub mixer_min_tokens: usize,
    pub mixer_chunk_tokens: usize,
    pub mixer_temperature: f32,
    pub mixer_alpha_base: f32,
    pub mixer_alpha_range: f32,
    pub mixer_alpha_center: f32,
    pub ngram_blend: bool,
    pub ngram_order: usize,
    pub ngram_alpha: f64,
    pub ngram_prefill: Option<String>,
    pub ngram_prefill_tokens: usize,
    pub ngram_tilt: bool,
    pub ngram_prior: Option<PathBuf>,
    pub ngram_tilt_beta: f64,
    pub doc_isolated: bool,
    pub byte_sidecar: Option<String>,
    pub batch_seqs: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    pub precision: Precision,
    pub generic_ops: bool,
    pub ttt: bool,
    pub ttt_chunk_tokens: usize,
    pub ttt_epochs: usize,
    pub ttt_lr: f64,
    pub ttt_momentum: f64,
    pub ttt_batch_seqs: usize,
    pub ttt_micro_batch: usize,
    pub ttt_grad_clip: f64,
    pub ttt_freeze_blocks: usize,
    pub ttt_polyak: Option<f64>,
    pub ttt_adaptive_lr_max: Option<f64>,
    pub ttt_byte_weighted: bool,
    /// Per-document LoRA test-time training (rec/2026-03-17), with its recipe and where A's draws come from.
    pub lora_ttt: Option<LoraTttSpec>,
    pub world_size: usize,
    pub probes: bool,
    pub probe_targets: Option<usize>,
    pub probe_perturbations: usize,
    pub probe_rows: usize,
    pub probe_seed: u64,
    pub planted: Option<Planted>,
    /// The submission's `train_gpt.py`, counted toward the cap.
    pub code: Option<PathBuf>,
    /// Also run the canonical legal counterpart and report both.
    pub canonical: bool,
    /// Ignore a config's evaluation-time fake quantization.
    pub score_stored_weights: bool,
    /// The preset whose declared evaluation this spec runs ([`VerifySpec::declared_evaluation`]).
    pub declared_by: Option<String>,
}

/// `--lora-ttt`: the recipe, and the A draws' source (a file of the reference's draws, else the seed).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraTttSpec {
    pub recipe: LoraTttRecipe,
    pub seed: u64,
    pub init_file: Option<PathBuf>,
    /// Also rerun the procedure with seeds `seed .. seed + seeds` and report the spread of the BPB (0: none).
    pub seeds: usize,
}

impl VerifySpec {
    /// A spec with the records' defaults for every knob.
    pub fn new(model: PathBuf, val: String, tokenizer: String) -> Self {
        VerifySpec {
            model,
            config: None,
            preset: None,
            val,
            tokenizer,
            seq_len: None,
            stride: None,
            legacy_sliding: false,
            legacy_sliding_full: false,
            full_windows: false,
            mixer: false,
            mixer_normalized: false,
            mixer_order: 10,
            mixer_buckets: 4_194_304,
            mixer_min_tokens: 10_000,
            mixer_chunk_tokens: 32_768,
            mixer_temperature: 0.98,
            mixer_alpha_base: 0.20,
            mixer_alpha_range: 0.55,
            mixer_alpha_center: 3.0,
            ngram_blend: false,
            ngram_order: 7,
            ngram_alpha: 0.20,
            ngram_prefill: None,
            ngram_prefill_tokens: 2_000_000,
            ngram_tilt: false,
            ngram_prior: None,
            ngram_tilt_beta: 0.3,
            doc_isolated: false,
            byte_sidecar: None,
            batch_seqs: 8,
            device: "cpu".into(),
            precision: Precision::Fp32,
            generic_ops: false,
            ttt: false,
            ttt_chunk_tokens: 32_768,
            ttt_epochs: 3,
            ttt_lr: 0.002,
            ttt_momentum: 0.9,
            ttt_batch_seqs: 32,
            ttt_micro_batch: 0,
            ttt_grad_clip: 1.0,
            ttt_freeze_blocks: 0,
            ttt_polyak: None,
            ttt_adaptive_lr_max: None,
            ttt_byte_weighted: false,
            lora_ttt: None,
            world_size: 1,
            probes: false,
            probe_targets: None,
            probe_perturbations: 4,
            probe_rows: 8,
            probe_seed: 20240520,
            planted: None,
            code: None,
            canonical: false,
            score_stored_weights: false,
            declared_by: None,
        }
    }

    /// `verify --preset NAME` with no evaluation flag: the evaluation the preset's record reports its score with —
    /// its window form and lengths, its byte sidecar (the record's `fineweb_val_bytes_*.bin` beside the validation
    /// shards, unless `--byte-sidecar` names it), the TTT of its final score with the record's knobs, and its 8
    /// ranks. Unchanged without a preset.
    pub fn declared_evaluation(mut self) -> Result<Self> {
        let Some(name) = self.preset.clone() else {
            return Ok(self);
        };
        let eval = named_preset(&name)?.eval;
        self.seq_len = Some(eval.seq_len);
        self.stride = eval.stride;
        self.legacy_sliding = eval.legacy_sliding;
        if let Some(b) = eval.doc_isolated_batch_seqs {
            self.doc_isolated = true;
            self.batch_seqs = b;
        }
        if eval.byte_sidecar && self.byte_sidecar.is_none() {
            let dir = Path::new(&self.val)
                .parent()
                .filter(|d| !d.as_os_str().is_empty());
            let glob = dir.map_or_else(
                || PathBuf::from("fineweb_val_bytes_*.bin"),
                |d| d.join("fineweb_val_bytes_*.bin"),
            );
            self.byte_sidecar = Some(glob.to_string_lossy().into_owned());
        }
        self.world_size = eval.world_size;
        match eval.final_score {
            presets::FinalScore::Windows => {}
            presets::FinalScore::ScoreFirstTtt { lr } => {
                self.ttt = true;
                self.ttt_lr = lr;
            }
            presets::FinalScore::PhasedLoraTtt => {
                // Its own per-document windows: no window form of its own.
                self.doc_isolated = false;
                self.lora_ttt = Some(LoraTttSpec {
                    recipe: LoraTttRecipe::rec_2026_04_27(),
                    seed: 0,
                    init_file: None,
                    seeds: 0,
                });
            }
        }
        self.declared_by = Some(name);
        Ok(self)
    }

    /// The TTT order the spec asks for: a planted TTT violation, score-first TTT, or none.
    pub fn ttt_order(&self) -> Option<TttOrder> {
        match self.planted {
            Some(Planted::AdaptThenScore) => Some(TttOrder::AdaptThenScore),
            Some(Planted::WarmupOnUnscored) => Some(TttOrder::WarmupOnUnscored),
            _ if self.ttt => Some(TttOrder::ScoreFirst),
            _ => None,
        }
    }

    /// The window form the flags select.
    pub fn window_form(&self) -> WindowForm {
        match self.stride {
            None if self.doc_isolated => WindowForm::DocIsolated {
                batch_seqs: self.batch_seqs,
                world_size: self.world_size,
            },
            None => WindowForm::NonOverlapping,
            Some(stride) if self.legacy_sliding_full => WindowForm::LegacySlidingFull { stride },
            Some(stride) if self.full_windows => WindowForm::FullWindows { stride },
            Some(stride) if self.legacy_sliding => WindowForm::LegacySliding { stride },
            Some(stride) => WindowForm::Sliding { stride },
        }
    }

    /// Refuses an illegal combination of procedures and knobs; reads nothing.
    pub fn validate(&self) -> Result<()> {
        if self.lora_ttt.is_some()
            && (self.ttt
                || self.mixer
                || self.planted.is_some_and(|p| p != Planted::AdaptThenScore)
                || self.doc_isolated
                || self.ngram_blend
                || self.ngram_tilt
                || self.stride.is_some())
        {
            return Err(VerifyError::Setup(
                "--lora-ttt is an evaluation procedure of its own (per-document chunks and windows); it does not \
                 combine with --ttt, --mixer, --planted (but adapt-then-score, its planted violation), --doc-isolated, \
                 --ngram-blend, --ngram-tilt or --stride"
                    .into(),
            ));
        }
        let setup = |m: String| Err(VerifyError::Setup(m));
        if self.config.is_some() && self.preset.is_some() {
            return setup("--config and --preset name the model twice; pass one".into());
        }
        let window_forms = [
            self.legacy_sliding,
            self.legacy_sliding_full,
            self.full_windows,
        ];
        if window_forms.iter().filter(|&&f| f).count() > 1 {
            return setup(
                "--legacy-sliding, --legacy-sliding-full and --full-windows are different window forms; pass one"
                    .into(),
            );
        }
        if window_forms.iter().any(|&f| f) && self.stride.is_none() {
            return setup(
                "--legacy-sliding, --legacy-sliding-full and --full-windows need --stride".into(),
            );
        }
        if self.doc_isolated && self.stride.is_some() {
            return setup(
                "--doc-isolated is its own window form; it does not take --stride".into(),
            );
        }
        if self.mixer_normalized && !self.mixer {
            return setup("--mixer-normalized belongs to --mixer".into());
        }
        if self.ngram_prefill.is_some() && !self.ngram_blend {
            return setup("--ngram-prefill belongs to --ngram-blend".into());
        }
        if self.ngram_prior.is_some() && !self.ngram_tilt {
            return setup("--ngram-prior belongs to --ngram-tilt".into());
        }
        if self.ngram_tilt
            && (self.ngram_blend
                || self.mixer
                || self.ttt
                || self.planted.is_some()
                || self.doc_isolated)
        {
            return setup(
                "--ngram-tilt is an evaluation procedure of its own; it does not combine with --ngram-blend, \
                 --mixer, --ttt, --planted or --doc-isolated"
                    .into(),
            );
        }
        if self.canonical && self.planted.is_some() {
            return setup(
                "--canonical compares a declared procedure; a planted one has none".into(),
            );
        }
        let ttt_order = self.ttt_order();
        if self.ngram_blend
            && (ttt_order.is_some() || self.planted.is_some() || self.doc_isolated || self.mixer)
        {
            return setup(
                "--ngram-blend is an evaluation procedure of its own; it does not combine with --ttt, --planted, \
                 --mixer or --doc-isolated"
                    .into(),
            );
        }
        if self.ngram_blend && !(2..=64).contains(&self.ngram_order) {
            return setup(format!(
                "--ngram-order must be in 2..=64, got {}",
                self.ngram_order
            ));
        }
        if self.mixer && (self.planted.is_some() || self.doc_isolated) {
            return setup(
                "--mixer is an evaluation procedure of its own; it does not combine with --planted or \
                 --doc-isolated"
                    .into(),
            );
        }
        if !self.mixer
            && (self.ttt_polyak.is_some()
                || self.ttt_adaptive_lr_max.is_some()
                || self.ttt_byte_weighted)
        {
            return setup(
                "--ttt-polyak, --ttt-adaptive-lr-max and --ttt-byte-weighted belong to --mixer --ttt (seed 003's \
                 recipe)"
                    .into(),
            );
        }
        if self.mixer
            && (!self.mixer_buckets.is_power_of_two()
                || self.mixer_order < 2
                || self.mixer_order > 64)
        {
            return setup(format!(
                "--mixer-buckets must be a power of two and --mixer-order in 2..=64 (got {} and {})",
                self.mixer_buckets, self.mixer_order
            ));
        }
        if self.doc_isolated && (ttt_order.is_some() || self.planted.is_some()) {
            return setup(
                "--doc-isolated is an evaluation form of its own; it does not combine with --ttt or --planted"
                    .into(),
            );
        }
        if ttt_order.is_some() && matches!(self.planted, Some(Planted::NgramCache | Planted::Slot))
        {
            return setup(
                "--planted ngram-cache and slot are window procedures; drop --ttt".into(),
            );
        }
        if ttt_order.is_some()
            && (self.ttt_chunk_tokens == 0 || self.ttt_batch_seqs == 0 || self.world_size == 0)
        {
            return setup(
                "TTT chunk tokens, batch sequences and world size must be positive".into(),
            );
        }
        if self.batch_seqs == 0 || self.world_size == 0 {
            return setup("--batch-seqs and --world-size must be positive".into());
        }
        Ok(())
    }

    /// The canonical legal counterpart of the declared procedure, and what changes to reach it; None when the
    /// declared procedure is already canonical. `fake_quant`: the config rounds weights at evaluation time.
    pub fn canonical(&self, fake_quant: bool) -> Option<(VerifySpec, Vec<String>)> {
        let mut c = self.clone();
        let mut changes = Vec::new();
        if self.stride.is_some()
            && (self.legacy_sliding || self.legacy_sliding_full || self.full_windows)
        {
            let from = if self.legacy_sliding {
                "legacy_sliding"
            } else if self.legacy_sliding_full {
                "legacy_sliding_full"
            } else {
                "full_windows"
            };
            changes.push(format!(
                "window form {from} → sliding (every target exactly once)"
            ));
            (c.legacy_sliding, c.legacy_sliding_full, c.full_windows) = (false, false, false);
        }
        if self.mixer && !self.mixer_normalized {
            changes.push(
                "the mixer → the normalized mixture (p_ng divided by its sum over the vocabulary)"
                    .into(),
            );
            c.mixer_normalized = true;
        }
        if self.ngram_blend {
            changes.push("the target-dependent n-gram blend → none".into());
            (c.ngram_blend, c.ngram_prefill) = (false, None);
        }
        if fake_quant && !self.score_stored_weights {
            changes
                .push("evaluation-time fake quantization → the stored weights as they are".into());
            c.score_stored_weights = true;
        }
        if changes.is_empty() {
            return None;
        }
        (c.canonical, c.probes) = (false, false);
        Some((c, changes))
    }
}

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
        if let Some(p) = &spec.config
            && spec.preset.is_none()
            && names_patch_jepa(p)?
        {
            return Ok(Architecture::PatchJepa(PatchJepaConfig::load(p)?));
        }
        let setup = VerifyError::Setup;
        let mut cfg = match (&spec.preset, &spec.config, carried) {
            (Some(name), _, _) => named_preset(name)?.config,
            (None, Some(p), _) => ModelConfig::load(p)?,
            (None, None, Some(v)) => {
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
            (None, None, None) => {
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

/// The preset of that name, or an error listing the known ones.
fn named_preset(name: &str) -> Result<presets::Preset> {
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
    form: WindowForm,
    vocab_size: usize,
    table: &'a ByteTable,
    tilt_prior: Option<&'a NgramTiltPrior>,
}

/// A built procedure, with the TTT recipe and trainable parameter count when it trains.
type BuiltProcedure<'a> = (Box<dyn Procedure + 'a>, Option<(TttRecipeReport, usize)>);

/// The procedure the spec declares, over the built model (taken by the procedures that train, borrowed by the
/// rest), with the TTT recipe and trainable parameter count when it trains.
fn build_procedure<'a>(
    spec: &VerifySpec,
    inputs: &ProcedureInputs<'a>,
    built: &'a mut Option<Built>,
) -> Result<BuiltProcedure<'a>> {
    let &ProcedureInputs {
        limits,
        seq_len,
        form,
        vocab_size,
        table,
        tilt_prior,
    } = inputs;
    let weights = weights_digest(built.as_ref().expect("built").lm())?;
    let recipe = TttRecipe {
        chunk_tokens: spec.ttt_chunk_tokens,
        epochs: spec.ttt_epochs,
        lr: spec.ttt_lr,
        momentum: spec.ttt_momentum,
        batch_seqs: spec.ttt_batch_seqs,
        grad_clip: spec.ttt_grad_clip,
        freeze_blocks: spec.ttt_freeze_blocks,
        world_size: spec.world_size,
    };
    let ttt_order = spec.ttt_order();
    if spec.mixer {
        let model = built.take().expect("built").boxed();
        let seed_ttt = ttt_order.map(|_| {
            let r = MixerTttRecipe {
                epochs: spec.ttt_epochs,
                lr: spec.ttt_lr,
                batch_seqs: spec.ttt_batch_seqs,
                grad_clip: spec.ttt_grad_clip,
                trained_last_blocks: spec.ttt_freeze_blocks,
                polyak_decay: spec.ttt_polyak,
                adaptive_lr_max: spec.ttt_adaptive_lr_max,
                byte_weighted: spec.ttt_byte_weighted,
            };
            (r, table.base_bytes.clone())
        });
        let report_recipe = seed_ttt.as_ref().map(|(r, _)| r.clone());
        let mixer = BackoffMixerProcedure::new(
            model,
            seq_len,
            form,
            spec.batch_seqs,
            MixerOptions {
                max_order: spec.mixer_order,
                buckets: spec.mixer_buckets,
                min_count: 2.0,
                min_tokens: spec.mixer_min_tokens,
                alpha_base: spec.mixer_alpha_base,
                alpha_range: spec.mixer_alpha_range,
                alpha_center: spec.mixer_alpha_center,
                temperature: spec.mixer_temperature,
                chunk_tokens: spec.mixer_chunk_tokens,
                normalized: spec.mixer_normalized,
            },
            seed_ttt,
        )?;
        let trainable = mixer.trainable_parameters();
        let ttt = ttt_order.map(|_| {
            let r = match report_recipe {
                Some(r) => TttRecipeReport::Mixer(r),
                None => TttRecipeReport::ScoreFirst(recipe.clone()),
            };
            (r, trainable)
        });
        return Ok((Box::new(mixer), ttt));
    }
    if let Some(l) = &spec.lora_ttt {
        let model = built.take().expect("built").boxed();
        let init = match &l.init_file {
            Some(path) => LoraInit::from_file(path)?,
            None => LoraInit::Seed(l.seed),
        };
        let mut recipe = l.recipe.clone();
        recipe.world_size = spec.world_size;
        let mut ttt = LoraTtt::new(model, recipe.clone(), init)?;
        ttt.adapt_before_score = spec.planted == Some(Planted::AdaptThenScore);
        let trainable = ttt.adapter_parameters();
        return Ok((
            Box::new(ttt),
            Some((TttRecipeReport::Lora(recipe), trainable)),
        ));
    }
    if let Some(order) = ttt_order {
        let model = built.take().expect("built").boxed();
        let mut ttt =
            ScoreFirstTtt::new(model, recipe.clone(), seq_len, form, spec.batch_seqs, order)?;
        ttt.micro_batch_seqs = spec.ttt_micro_batch;
        let trainable = ttt.trainable_parameters();
        return Ok((
            Box::new(ttt),
            Some((TttRecipeReport::ScoreFirst(recipe), trainable)),
        ));
    }
    let built: &'a Built = built.as_ref().expect("built");
    let procedure: Box<dyn Procedure + 'a> = match spec.planted {
        None if spec.ngram_blend => {
            let prefill = match &spec.ngram_prefill {
                Some(glob) => {
                    let files = shard::expand_glob(glob)?;
                    let all = shard::read_shards(&files, limits)?;
                    // TokenStream.take: the first N tokens, wrapping around the shards if they hold fewer.
                    all.iter()
                        .copied()
                        .cycle()
                        .take(if all.is_empty() {
                            0
                        } else {
                            spec.ngram_prefill_tokens
                        })
                        .collect()
                }
                None => Vec::new(),
            };
            Box::new(NgramCacheBlend {
                model: built.gpt_only("--ngram-blend")?,
                seq_len,
                form,
                batch_seqs: spec.batch_seqs,
                max_order: spec.ngram_order,
                alpha: spec.ngram_alpha,
                prefill,
                weights,
            })
        }
        Some(Planted::NgramCache) => Box::new(HashedNgramCache {
            model: built.gpt_only("--planted ngram-cache")?,
            seq_len,
            form,
            batch_seqs: spec.batch_seqs,
            context: 1,
            buckets: 4096,
            alpha: 0.4,
            weights,
        }),
        Some(Planted::Slot) => Box::new(SlotDelta {
            model: built.gpt_only("--planted slot")?,
            seq_len,
            form,
            steps: 5,
            lr: 1.0,
            weights,
        }),
        _ => {
            let scorer: Box<dyn WindowScorer + 'a> = if let Some(prior) = tilt_prior {
                Box::new(NgramTiltScorer {
                    model: built.gpt_only("--ngram-tilt")?,
                    prior,
                    beta: spec.ngram_tilt_beta,
                    pad_to: seq_len,
                })
            } else if spec.doc_isolated {
                Box::new(DocIsolatedScorer {
                    model: built.gpt_only("--doc-isolated")?,
                    max_doc_len: seq_len,
                })
            } else {
                Box::new(ModelScorer::new(built.lm(), seq_len))
            };
            Box::new(WindowProcedure {
                scorer,
                seq_len,
                form,
                batch_seqs: spec.batch_seqs,
                vocab_size,
                weights,
            })
        }
    };
    Ok((procedure, None))
}

/// What a LoRA TTT run's reader must know: its score is one draw of the procedure's randomness (adapter draws and,
/// over several ranks, which rank ran which batch), measured when `--ttt-seeds` reran it; a phase prefix larger than
/// the stream's documents (clamped, as the records clamp it); phases that never ran because the documents ran out.
fn lora_findings(
    l: &LoraTttSpec,
    spec: &VerifySpec,
    tokens: &[u16],
    record: &RunRecord,
    spread: Option<&SeedSpread>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let r = &l.recipe;
    let varies_schedule =
        r.schedule == super::lora_ttt::LoraSchedule::LengthQueue && spec.world_size > 1;
    let source = match &l.init_file {
        Some(p) => format!("A drawn from {}", p.display()),
        None => format!("A drawn from seed {}", l.seed),
    };
    let mut evidence = vec![source];
    if varies_schedule {
        evidence.push(format!(
            "{} ranks claim the length queue's batches by timing in the records; pgolf's lockstep schedule gives \
             entry k to rank k mod {}",
            spec.world_size, spec.world_size
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
                    "phases start between rounds of {} batch(es) of {} documents",
                    spec.world_size, r.batch_size
                )],
            });
        }
    }
    findings
}

/// The tilt's prior: the file given, else the artifact's bundled `"ngram"` entry. Returns it with its byte size.
fn load_tilt_prior(
    spec: &VerifySpec,
    bundled: &[(String, Vec<u8>)],
    vocab_size: usize,
    limits: &Limits,
) -> Result<(NgramTiltPrior, usize)> {
    let (source, bytes) = match &spec.ngram_prior {
        Some(p) => (
            p.clone(),
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

/// Runs the verification a spec declares (and, with `canonical`, its canonical counterpart) and reports it.
pub fn verify(spec: &VerifySpec, limits: &Limits, progress: &mut Progress) -> Result<VerifyReport> {
    spec.validate()?;
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
    let device = device::open(&spec.device)?;
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
    let tokens = if spec.lora_ttt.is_some() {
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
            spec.config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "its carried config".into())
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
    let mut built = match &arch {
        Architecture::Gpt(cfg) => {
            let state = weights::check_state_dict(cfg, loaded.state, DType::F32, &spec.model)?;
            Built::Gpt(Gpt::new((**cfg).clone(), state, &device, spec.precision)?)
        }
        Architecture::PatchJepa(cfg) => Built::PatchJepa(BytePatchJepa::new(
            cfg.clone(),
            loaded.state,
            &device,
            spec.precision,
            &spec.model,
        )?),
    };
    if spec.generic_ops {
        match &mut built {
            Built::Gpt(m) => m.use_generic_ops(),
            Built::PatchJepa(m) => CausalLm::use_generic_ops(m),
        }
    }
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
    let form = spec.window_form();
    let windows = plan_windows(tokens.len() - 1, seq_len, form)
        .map_err(context(format!("evaluating {}", spec.model.display())))?
        .len();
    let tilt_prior = if spec.ngram_tilt {
        Some(load_tilt_prior(spec, &loaded.bundled, vocab_size, limits)?)
    } else {
        None
    };
    let parameters = arch.parameter_count();
    let mut built = Some(built);
    let inputs = ProcedureInputs {
        limits,
        seq_len,
        form,
        vocab_size,
        table: &table,
        tilt_prior: tilt_prior.as_ref().map(|(p, _)| p),
    };
    let (procedure, ttt) = build_procedure(spec, &inputs, &mut built)?;
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

    let probes = if spec.probes {
        let prefix = spec.probe_targets.unwrap_or(if ttt.is_some() {
            3 * spec.ttt_chunk_tokens
        } else {
            16_384
        });
        let opts = ProbeOptions {
            prefix_targets: prefix.max(seq_len),
            perturbations: spec.probe_perturbations,
            row_samples: spec.probe_rows,
            seed: spec.probe_seed,
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
    let seed_spread = match &spec.lora_ttt {
        Some(l) if l.seeds > 0 => {
            let mut runs = Vec::with_capacity(l.seeds);
            for k in 0..l.seeds {
                let seed = l.seed + k as u64;
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
                spec.ngram_tilt_beta * 0.5
            ),
            evidence: vec![
                format!("{one} one-token and {two} two-token prefixes with a predicted next token"),
                "the row predicting x[t+1] is tilted by the prefixes ending at x[t−1], as the seed indexes them \
                 (off by one: x[t] is ignored)"
                    .into(),
            ],
        });
    }
    if let Some(l) = &spec.lora_ttt {
        findings.extend(lora_findings(
            l,
            spec,
            &tokens,
            &record,
            seed_spread.as_ref(),
        ));
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
        device: spec.device.clone(),
        precision: spec.precision,
        mixed_products: (spec.precision == Precision::Mixed && device.is_cpu()).then(|| {
            if crate::infer::amx::available() {
                "AMX bf16 tiles for the scoring passes' projections and head; attention on bf16-rounded q, k, v \
                 and probabilities; training passes through candle's bf16 products"
                    .to_string()
            } else {
                format!(
                    "no AMX: {}; bf16-rounded operands through f32 products (slower than fp32)",
                    crate::infer::amx::why_not()
                )
            }
        }),
        generic_ops: spec.generic_ops,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VerifySpec {
        VerifySpec::new(
            "/nonexistent/model.safetensors".into(),
            "/nonexistent/val_*.bin".into(),
            "byte260".into(),
        )
    }

    fn refused(s: VerifySpec, needle: &str) {
        match s.validate() {
            Err(VerifyError::Setup(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected a refusal containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn illegal_combinations_are_refused_before_anything_is_read() {
        assert!(spec().validate().is_ok());
        refused(
            VerifySpec {
                ngram_blend: true,
                ttt: true,
                ..spec()
            },
            "--ngram-blend is an evaluation procedure of its own",
        );
        refused(
            VerifySpec {
                mixer: true,
                doc_isolated: true,
                ..spec()
            },
            "--mixer is an evaluation procedure of its own",
        );
        refused(
            VerifySpec {
                ttt_polyak: Some(0.9),
                ..spec()
            },
            "belong to --mixer --ttt",
        );
        refused(
            VerifySpec {
                doc_isolated: true,
                planted: Some(Planted::AdaptThenScore),
                ..spec()
            },
            "--doc-isolated is an evaluation form of its own",
        );
        refused(
            VerifySpec {
                ttt: true,
                planted: Some(Planted::Slot),
                ..spec()
            },
            "window procedures; drop --ttt",
        );
        refused(
            VerifySpec {
                ttt: true,
                ttt_chunk_tokens: 0,
                ..spec()
            },
            "must be positive",
        );
        refused(
            VerifySpec {
                mixer: true,
                mixer_buckets: 1000,
                ..spec()
            },
            "power of two",
        );
    }

    #[test]
    fn the_canonical_counterpart_is_a_spec() {
        assert!(spec().canonical(false).is_none());
        let declared = VerifySpec {
            stride: Some(64),
            legacy_sliding: true,
            canonical: true,
            probes: true,
            ..spec()
        };
        let (c, changes) = declared.canonical(true).unwrap();
        assert_eq!(c.window_form(), WindowForm::Sliding { stride: 64 });
        assert!(c.score_stored_weights && !c.canonical && !c.probes);
        assert_eq!(
            changes,
            [
                "window form legacy_sliding → sliding (every target exactly once)",
                "evaluation-time fake quantization → the stored weights as they are"
            ]
        );
        let mixer = VerifySpec {
            mixer: true,
            ..spec()
        };
        let (c, _) = mixer.canonical(false).unwrap();
        assert!(c.mixer_normalized);
        let blend = VerifySpec {
            ngram_blend: true,
            ngram_prefill: Some("train_*.bin".into()),
            ..spec()
        };
        let (c, _) = blend.canonical(false).unwrap();
        assert!(!c.ngram_blend && c.ngram_prefill.is_none() && c.validate().is_ok());
    }
}

#[cfg(test)]
mod declared_tests {
    use super::*;

    fn declared(preset: &str, val: &str) -> VerifySpec {
        let mut s = VerifySpec::new("m.safetensors".into(), val.into(), "t.model".into());
        s.preset = Some(preset.into());
        s.declared_evaluation().unwrap()
    }

    /// Each preset's declared evaluation is the flags docs/ARCHITECTURES.md lists for its record.
    #[test]
    fn a_preset_alone_runs_its_records_declared_evaluation() {
        let b = declared("baseline", "v/fineweb_val_*.bin");
        assert_eq!(
            (b.seq_len, b.stride, b.ttt, b.world_size),
            (Some(1024), None, false, 8)
        );
        assert!(b.lora_ttt.is_none() && b.byte_sidecar.is_none() && !b.doc_isolated);
        let r = declared("rec-2026-03-23", "v/fineweb_val_*.bin");
        assert_eq!((r.seq_len, r.stride), (Some(2048), Some(64)));
        assert!(r.legacy_sliding && r.ttt && r.ttt_lr == 0.002 && r.ttt_epochs == 3);
        assert_eq!(r.window_form(), WindowForm::LegacySliding { stride: 64 });
        let r = declared("rec-2026-03-29", "v/fineweb_val_*.bin");
        assert!(r.legacy_sliding && !r.ttt);
        let r = declared("rec-2026-04-09", "v/fineweb_val_*.bin");
        assert!(!r.legacy_sliding && r.ttt && r.ttt_lr == 0.005);
        assert_eq!(r.window_form(), WindowForm::Sliding { stride: 64 });
        // 04-27: phased LoRA TTT with the record's logged knobs, its byte sidecar beside the shards, 8 ranks.
        let r = declared("rec-2026-04-27", "/data/caseops/fineweb_val_0*.bin");
        let lora = r.lora_ttt.as_ref().unwrap();
        assert_eq!(lora.recipe, LoraTttRecipe::rec_2026_04_27());
        assert_eq!(
            r.byte_sidecar.as_deref(),
            Some("/data/caseops/fineweb_val_bytes_*.bin")
        );
        assert_eq!(r.world_size, 8);
        assert!(!r.doc_isolated && !r.ttt && r.stride.is_none());
        assert_eq!(r.declared_by.as_deref(), Some("rec-2026-04-27"));
        r.validate().unwrap();
        // A shard glob without a folder: the sidecar glob has none either; a given sidecar is kept.
        let r = declared("rec-2026-04-27", "fineweb_val_*.bin");
        assert_eq!(r.byte_sidecar.as_deref(), Some("fineweb_val_bytes_*.bin"));
        let mut s = VerifySpec::new("m".into(), "v/x.bin".into(), "t".into());
        s.preset = Some("rec-2026-04-27".into());
        s.byte_sidecar = Some("elsewhere/b_*.bin".into());
        let s = s.declared_evaluation().unwrap();
        assert_eq!(s.byte_sidecar.as_deref(), Some("elsewhere/b_*.bin"));
        let mut s = VerifySpec::new("m".into(), "v".into(), "t".into());
        s.preset = Some("rec-1999".into());
        let err = s.declared_evaluation().unwrap_err().to_string();
        assert!(err.contains("no preset named \"rec-1999\""), "{err}");
    }
}
