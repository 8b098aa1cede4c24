//! `verify`'s flags as a user gives them ([`VerifyFlags`]: the records' environment names as flag names, `None` for
//! a knob not given), resolved once ([`VerifyFlags::resolve`]) into the spec of what runs ([`VerifySpec`]).
//! Defaults, presets and their declared evaluation, LoRA recipes and their overrides are applied here and nowhere
//! else; a flag that the chosen procedure does not take is an error that says which procedure takes it.
//! [`VerifyFlags::command_line`] writes flags back as the `pgolf verify` arguments that give them (what `review`
//! prints to reproduce a record).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::mixer::{MixerOptions, MixerTttRecipe};
use super::spec::{
    ArchSource, EvalProcedure, LoraInitSource, LoraRecipeName, LoraTttSpec, NgramBlendSpec,
    PhaseSeqLen, Planted, ProbeSpec, ScoreFirstTttSpec, TiltSpec, VerifyOutputs, VerifySpec,
    Windows, named_preset,
};
use super::ttt::TttRecipe;
use super::windows::WindowForm;
use super::{Result, VerifyError};
use crate::infer::device::ComputeFlags;
use crate::infer::presets;

/// Deliberately illegal procedures, for seeing each probe fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlantedKind {
    /// A hashed n-gram cache blended only at the realized token (PR #886): fails C2.
    NgramCache,
    /// A per-window hidden delta optimized on the window's scored targets (PR #1240): fails C1 and C3.
    Slot,
    /// TTT that trains on each chunk before scoring it: fails C1, C3 and TTT ordering.
    AdaptThenScore,
    /// Score-first TTT preceded by a warm-up step on validation tokens: fails TTT ordering.
    WarmupOnUnscored,
}

impl PlantedKind {
    /// The name the `--planted` flag takes.
    pub fn name(self) -> &'static str {
        match self {
            PlantedKind::NgramCache => "ngram-cache",
            PlantedKind::Slot => "slot",
            PlantedKind::AdaptThenScore => "adapt-then-score",
            PlantedKind::WarmupOnUnscored => "warmup-on-unscored",
        }
    }
}

/// The defaults of the knobs whose default does not depend on a recipe or a preset (the records' values).
#[derive(Clone, Debug)]
pub struct Defaults {
    pub batch_seqs: usize,
    pub mixer: MixerOptions,
    pub ngram_order: usize,
    pub ngram_alpha: f64,
    pub ngram_prefill_tokens: usize,
    pub ngram_tilt_beta: f64,
    pub ttt: TttRecipe,
    pub probe_perturbations: usize,
    pub probe_rows: usize,
    pub probe_seed: u64,
    /// Probe prefix without TTT (with TTT: three chunks).
    pub probe_targets: usize,
}

/// The one source of the defaults the flags show and the resolution applies.
pub fn defaults() -> Defaults {
    let probe = super::probes::ProbeOptions::default();
    Defaults {
        batch_seqs: 8,
        mixer: MixerOptions::default(),
        ngram_order: 7,
        ngram_alpha: 0.20,
        ngram_prefill_tokens: 2_000_000,
        ngram_tilt_beta: 0.3,
        ttt: TttRecipe::default(),
        probe_perturbations: probe.perturbations,
        probe_rows: probe.row_samples,
        probe_seed: probe.seed,
        probe_targets: probe.prefix_targets,
    }
}

/// Declares [`VerifyFlags`] and, from the same list, the command line that gives them ([`VerifyFlags::command_line`]):
/// one field per flag, named as the flag (`mixer_order` is `--mixer-order`), in the order `--help` lists them.
macro_rules! verify_flags {
    ($first:ident: $first_ty:ty, $($name:ident: $ty:ty,)*) => {
        /// Every `pgolf verify` flag, as given: `None` (or false) for a flag not given.
        #[derive(Clone, Debug, Default)]
        pub struct VerifyFlags {
            /// The model (the positional argument).
            pub $first: $first_ty,
            $(pub $name: $ty,)*
        }

        impl VerifyFlags {
            /// The `pgolf verify` arguments that give these flags (after the subcommand): the model, then each flag
            /// given, in the order `--help` lists them.
            pub fn command_line(&self) -> Vec<String> {
                let mut args = vec![self.$first.display().to_string()];
                $(FlagValue::push(&self.$name, stringify!($name), &mut args);)*
                args
            }
        }
    };
}

verify_flags! {
    model: PathBuf,
    config: Option<PathBuf>,
    preset: Option<String>,
    val: String,
    tokenizer: String,
    seq_len: Option<usize>,
    stride: Option<usize>,
    legacy_sliding: bool,
    legacy_sliding_full: bool,
    full_windows: bool,
    mixer: bool,
    mixer_normalized: bool,
    mixer_order: Option<usize>,
    mixer_buckets: Option<usize>,
    mixer_min_tokens: Option<usize>,
    mixer_chunk_tokens: Option<usize>,
    mixer_temperature: Option<f32>,
    mixer_alpha_base: Option<f32>,
    mixer_alpha_range: Option<f32>,
    mixer_alpha_center: Option<f32>,
    ngram_blend: bool,
    ngram_order: Option<usize>,
    ngram_alpha: Option<f64>,
    ngram_prefill: Option<String>,
    ngram_prefill_tokens: Option<usize>,
    ngram_tilt: bool,
    ngram_prior: Option<PathBuf>,
    ngram_tilt_beta: Option<f64>,
    doc_isolated: bool,
    byte_sidecar: Option<String>,
    batch_seqs: Option<usize>,
    compute: ComputeFlags,
    ttt: bool,
    ttt_chunk_tokens: Option<usize>,
    ttt_epochs: Option<usize>,
    ttt_lr: Option<f64>,
    ttt_momentum: Option<f64>,
    ttt_batch_seqs: Option<usize>,
    ttt_micro_batch: Option<usize>,
    ttt_grad_clip: Option<f64>,
    ttt_freeze_blocks: Option<usize>,
    ttt_polyak: Option<f64>,
    ttt_adaptive_lr_max: Option<f64>,
    ttt_byte_weighted: bool,
    lora_ttt: Option<LoraRecipeName>,
    phased_ttt: bool,
    ttt_lora_rank: Option<usize>,
    ttt_lora_lr: Option<f64>,
    ttt_chunk_size: Option<usize>,
    ttt_eval_seq_len: Option<usize>,
    ttt_batch_size: Option<usize>,
    beta1: Option<f64>,
    beta2: Option<f64>,
    ttt_lora_alpha: Option<f64>,
    ttt_warm_start_a: Option<u8>,
    ttt_weight_decay: Option<f64>,
    ttt_grad_steps: Option<usize>,
    phased_ttt_prefix_docs: Option<usize>,
    phased_ttt_num_phases: Option<usize>,
    global_ttt_lr: Option<f64>,
    global_ttt_momentum: Option<f64>,
    global_ttt_epochs: Option<usize>,
    global_ttt_chunk_tokens: Option<usize>,
    global_ttt_batch_seqs: Option<usize>,
    global_ttt_grad_clip: Option<f64>,
    eval_seq_len: Option<usize>,
    ttt_seed: Option<u64>,
    lora_init: Option<PathBuf>,
    ttt_seeds: Option<usize>,
    world_size: Option<usize>,
    probes: bool,
    probe_targets: Option<usize>,
    probe_perturbations: Option<usize>,
    probe_rows: Option<usize>,
    probe_seed: Option<u64>,
    planted: Option<PlantedKind>,
    code: Option<PathBuf>,
    receipts: Option<PathBuf>,
    html: Option<PathBuf>,
    canonical: bool,
    score_stored_weights: bool,
}

/// A flag's value as command-line arguments.
trait FlagValue {
    fn push(&self, name: &str, args: &mut Vec<String>);
}

fn flag_name(name: &str) -> String {
    format!("--{}", name.replace('_', "-"))
}

impl FlagValue for bool {
    fn push(&self, name: &str, args: &mut Vec<String>) {
        if *self {
            args.push(flag_name(name));
        }
    }
}

impl FlagValue for String {
    fn push(&self, name: &str, args: &mut Vec<String>) {
        args.extend([flag_name(name), self.clone()]);
    }
}

impl FlagValue for ComputeFlags {
    fn push(&self, _: &str, args: &mut Vec<String>) {
        let d = ComputeFlags::default();
        if self.device != d.device {
            args.extend(["--device".into(), self.device.clone()]);
        }
        if self.precision != d.precision {
            args.extend(["--precision".into(), self.precision.name().into()]);
        }
        self.generic_ops.push("generic_ops", args);
    }
}

/// A flag value as the flag parses it.
trait FlagText {
    fn text(&self) -> String;
}

macro_rules! display_text {
    ($($t:ty),*) => {$(impl FlagText for $t {
        fn text(&self) -> String {
            self.to_string()
        }
    })*};
}
display_text!(usize, u64, u8, f32, f64, String);

impl FlagText for PathBuf {
    fn text(&self) -> String {
        self.display().to_string()
    }
}

impl FlagText for LoraRecipeName {
    fn text(&self) -> String {
        self.name().into()
    }
}

impl FlagText for PlantedKind {
    fn text(&self) -> String {
        self.name().into()
    }
}

impl<T: FlagText> FlagValue for Option<T> {
    fn push(&self, name: &str, args: &mut Vec<String>) {
        if let Some(v) = self {
            args.extend([flag_name(name), v.text()]);
        }
    }
}

fn setup<T>(message: impl Into<String>) -> Result<T> {
    Err(VerifyError::Setup(message.into()))
}

/// The flags of `names` that were given, as `--flag` names.
fn given(names: &[(&'static str, bool)]) -> Vec<String> {
    names
        .iter()
        .filter(|(_, given)| *given)
        .map(|(n, _)| format!("--{}", n.replace('_', "-")))
        .collect()
}

/// Refuses the `given` flags, which `owner` takes and the chosen procedure does not.
fn refuse_unused(given: Vec<String>, owner: &str) -> Result<()> {
    if given.is_empty() {
        return Ok(());
    }
    setup(format!(
        "{} belong{} to {owner}, which this verification does not run",
        given.join(", "),
        if given.len() == 1 { "s" } else { "" }
    ))
}

impl VerifyFlags {
    /// The flags naming a model, a stream and a tokenizer, every other flag not given.
    pub fn new(
        model: impl Into<PathBuf>,
        val: impl Into<String>,
        tokenizer: impl Into<String>,
    ) -> Self {
        VerifyFlags {
            model: model.into(),
            val: val.into(),
            tokenizer: tokenizer.into(),
            compute: ComputeFlags::default(),
            ..Default::default()
        }
    }

    /// The LoRA TTT recipe asked for: `--lora-ttt NAME`, or `--phased-ttt` (04-27's).
    fn lora_recipe(&self) -> Option<LoraRecipeName> {
        if self.phased_ttt {
            Some(LoraRecipeName::Rec20260427)
        } else {
            self.lora_ttt
        }
    }

    /// Whether any flag chooses the evaluation (window form, lengths, a procedure): without one, `--preset NAME` runs
    /// the evaluation its record declares (`--byte-sidecar` and `--world-size` only say where its sidecar is and how
    /// many ranks to replay).
    fn evaluation_flags_given(&self) -> bool {
        self.seq_len.is_some()
            || self.stride.is_some()
            || self.legacy_sliding
            || self.legacy_sliding_full
            || self.full_windows
            || self.mixer
            || self.ngram_blend
            || self.ngram_tilt
            || self.doc_isolated
            || self.ttt
            || self.lora_recipe().is_some()
            || self.planted.is_some()
    }

    /// Resolves the flags into the spec of what runs; reads nothing.
    pub fn resolve(&self) -> Result<VerifySpec> {
        let arch = match (&self.preset, &self.config) {
            (Some(_), Some(_)) => {
                return setup("--config and --preset name the model twice; pass one");
            }
            (Some(name), None) => {
                named_preset(name)?;
                ArchSource::Preset(name.clone())
            }
            (None, Some(path)) => ArchSource::Config(path.clone()),
            (None, None) => ArchSource::Carried,
        };
        if self.canonical && self.planted.is_some() {
            return setup("--canonical compares a declared procedure; a planted one has none");
        }
        let declared = self
            .preset
            .as_deref()
            .filter(|_| !self.evaluation_flags_given());
        // A preset alone: its record's evaluation, as the flags that give it.
        let evaluation = match declared {
            Some(name) => self.declared_evaluation(name)?,
            None => self.clone(),
        };
        let procedure = evaluation.procedure()?;
        let d = defaults();
        let probes = if self.probes {
            let ttt_chunk = self.ttt_chunk_tokens.unwrap_or(d.ttt.chunk_tokens);
            Some(ProbeSpec {
                targets: self.probe_targets.unwrap_or(if procedure.trains() {
                    3 * ttt_chunk
                } else {
                    d.probe_targets
                }),
                perturbations: self.probe_perturbations.unwrap_or(d.probe_perturbations),
                rows: self.probe_rows.unwrap_or(d.probe_rows),
                seed: self.probe_seed.unwrap_or(d.probe_seed),
            })
        } else {
            let probe_flags = given(&[
                ("probe_targets", self.probe_targets.is_some()),
                ("probe_perturbations", self.probe_perturbations.is_some()),
                ("probe_rows", self.probe_rows.is_some()),
                ("probe_seed", self.probe_seed.is_some()),
            ]);
            refuse_unused(probe_flags, "--probes")?;
            None
        };
        Ok(VerifySpec {
            model: self.model.clone(),
            arch,
            val: self.val.clone(),
            tokenizer: self.tokenizer.clone(),
            byte_sidecar: evaluation.byte_sidecar,
            seq_len: evaluation.seq_len,
            compute: self.compute.clone(),
            procedure,
            probes,
            code: self.code.clone(),
            canonical: self.canonical,
            score_stored_weights: self.score_stored_weights,
            declared_by: declared.map(str::to_string),
            outputs: VerifyOutputs {
                receipts: self.receipts.clone(),
                html: self.html.clone(),
            },
        })
    }

    /// `--preset NAME` with no evaluation flag: the evaluation the preset's record reports its score with — its
    /// window form and lengths, its byte sidecar (the record's `fineweb_val_bytes_*.bin` beside the validation
    /// shards, unless `--byte-sidecar` names it), the TTT of its final score with the record's knobs, and its ranks —
    /// written as the evaluation flags that give it, so that it resolves as they do: a knob given overrides the
    /// record's value (`--world-size` replays another number of ranks), and a knob of another procedure is refused.
    fn declared_evaluation(&self, name: &str) -> Result<Self> {
        let eval = named_preset(name)?.eval;
        let mut f = self.clone();
        f.seq_len = Some(eval.seq_len);
        if f.byte_sidecar.is_none() && eval.byte_sidecar {
            let dir = Path::new(&self.val)
                .parent()
                .filter(|d| !d.as_os_str().is_empty());
            let glob = dir.map_or_else(
                || PathBuf::from("fineweb_val_bytes_*.bin"),
                |d| d.join("fineweb_val_bytes_*.bin"),
            );
            f.byte_sidecar = Some(glob.to_string_lossy().into_owned());
        }
        let ranks = f.world_size.or(Some(eval.world_size));
        match eval.final_score {
            // Its own per-document windows: no window form of its own.
            presets::FinalScore::PhasedLoraTtt => {
                f.phased_ttt = true;
                f.world_size = ranks;
                return Ok(f);
            }
            presets::FinalScore::ScoreFirstTtt { lr } => {
                f.ttt = true;
                f.ttt_lr = f.ttt_lr.or(Some(lr));
                f.world_size = ranks;
            }
            presets::FinalScore::Windows => {}
        }
        f.stride = eval.stride;
        f.legacy_sliding = eval.legacy_sliding;
        if let Some(b) = eval.doc_isolated_batch_seqs {
            f.doc_isolated = true;
            f.batch_seqs = f.batch_seqs.or(Some(b));
            f.world_size = ranks;
        }
        Ok(f)
    }

    /// The window form the flags select.
    fn window_form(&self) -> Result<WindowForm> {
        let forms = [
            self.legacy_sliding,
            self.legacy_sliding_full,
            self.full_windows,
        ];
        if forms.iter().filter(|&&f| f).count() > 1 {
            return setup(
                "--legacy-sliding, --legacy-sliding-full and --full-windows are different window forms; pass one",
            );
        }
        Ok(match self.stride {
            None if forms.iter().any(|&f| f) => {
                return setup(
                    "--legacy-sliding, --legacy-sliding-full and --full-windows need --stride",
                );
            }
            None if self.doc_isolated => WindowForm::DocIsolated {
                batch_seqs: self.batch_seqs.unwrap_or(defaults().batch_seqs),
                world_size: self.world_size.unwrap_or(1),
            },
            None => WindowForm::NonOverlapping,
            Some(_) if self.doc_isolated => {
                return setup("--doc-isolated is its own window form; it does not take --stride");
            }
            Some(stride) if self.legacy_sliding_full => WindowForm::LegacySlidingFull { stride },
            Some(stride) if self.full_windows => WindowForm::FullWindows { stride },
            Some(stride) if self.legacy_sliding => WindowForm::LegacySliding { stride },
            Some(stride) => WindowForm::Sliding { stride },
        })
    }

    /// The procedure the flags select, each knob checked to belong to it.
    fn procedure(&self) -> Result<EvalProcedure> {
        if let Some(name) = self.lora_recipe() {
            return self.lora_procedure(name);
        }
        refuse_unused(self.lora_flags_given(), "--lora-ttt / --phased-ttt")?;
        let form = self.window_form()?;
        if self.batch_seqs == Some(0) || self.world_size == Some(0) {
            return setup("--batch-seqs and --world-size must be positive");
        }
        let windows = Windows {
            form,
            batch_seqs: self.batch_seqs.unwrap_or(defaults().batch_seqs),
        };
        if self.mixer {
            return self.mixer_procedure(windows);
        }
        refuse_unused(self.mixer_flags_given(), "--mixer")?;
        if self.ngram_tilt {
            if self.ngram_blend || self.ttt || self.planted.is_some() || self.doc_isolated {
                return setup(
                    "--ngram-tilt is an evaluation procedure of its own; it does not combine with --ngram-blend, \
                     --mixer, --ttt, --planted or --doc-isolated",
                );
            }
            refuse_unused(self.ngram_blend_flags_given(), "--ngram-blend")?;
            self.refuse_ttt_flags()?;
            self.refuse_world_size(form)?;
            return Ok(EvalProcedure::NgramTilt {
                windows,
                tilt: TiltSpec {
                    prior: self.ngram_prior.clone(),
                    beta: self.ngram_tilt_beta.unwrap_or(defaults().ngram_tilt_beta),
                },
            });
        }
        refuse_unused(
            given(&[
                ("ngram_prior", self.ngram_prior.is_some()),
                ("ngram_tilt_beta", self.ngram_tilt_beta.is_some()),
            ]),
            "--ngram-tilt",
        )?;
        if self.ngram_blend {
            if self.ttt || self.planted.is_some() || self.doc_isolated {
                return setup(
                    "--ngram-blend is an evaluation procedure of its own; it does not combine with --ttt, --planted, \
                     --mixer or --doc-isolated",
                );
            }
            let d = defaults();
            let order = self.ngram_order.unwrap_or(d.ngram_order);
            if !(2..=64).contains(&order) {
                return setup(format!("--ngram-order must be in 2..=64, got {order}"));
            }
            self.refuse_ttt_flags()?;
            self.refuse_world_size(form)?;
            let tokens = self.ngram_prefill_tokens.unwrap_or(d.ngram_prefill_tokens);
            return Ok(EvalProcedure::NgramBlend {
                windows,
                blend: NgramBlendSpec {
                    order,
                    alpha: self.ngram_alpha.unwrap_or(d.ngram_alpha),
                    prefill: self.ngram_prefill.clone().map(|glob| (glob, tokens)),
                },
            });
        }
        refuse_unused(self.ngram_blend_flags_given(), "--ngram-blend")?;
        let trains = self.ttt
            || matches!(
                self.planted,
                Some(PlantedKind::AdaptThenScore | PlantedKind::WarmupOnUnscored)
            );
        if self.doc_isolated && (trains || self.planted.is_some()) {
            return setup(
                "--doc-isolated is an evaluation form of its own; it does not combine with --ttt or --planted",
            );
        }
        Ok(match self.planted {
            Some(kind @ (PlantedKind::NgramCache | PlantedKind::Slot)) => {
                if self.ttt {
                    return setup(
                        "--planted ngram-cache and slot are window procedures; drop --ttt",
                    );
                }
                self.refuse_ttt_flags()?;
                self.refuse_world_size(form)?;
                EvalProcedure::Planted(match kind {
                    PlantedKind::NgramCache => Planted::NgramCache(windows),
                    _ => Planted::Slot(windows),
                })
            }
            Some(PlantedKind::AdaptThenScore) => {
                EvalProcedure::Planted(Planted::AdaptThenScore(self.score_first_ttt(windows)?))
            }
            Some(PlantedKind::WarmupOnUnscored) => {
                EvalProcedure::Planted(Planted::WarmupOnUnscored(self.score_first_ttt(windows)?))
            }
            None if self.ttt => EvalProcedure::ScoreFirstTtt(self.score_first_ttt(windows)?),
            None => {
                self.refuse_ttt_flags()?;
                self.refuse_world_size(form)?;
                EvalProcedure::Windows(windows)
            }
        })
    }

    /// `--world-size` given where nothing depends on the ranks: refused.
    fn refuse_world_size(&self, form: WindowForm) -> Result<()> {
        if self.world_size.is_some() && !matches!(form, WindowForm::DocIsolated { .. }) {
            return setup(
                "--world-size replays ranks for --doc-isolated, --ttt and --lora-ttt / --phased-ttt; this \
                 evaluation scores the same on any number of ranks",
            );
        }
        Ok(())
    }

    /// The score-first TTT recipe of the flags (the records' defaults for those not given).
    fn score_first_ttt(&self, windows: Windows) -> Result<ScoreFirstTttSpec> {
        refuse_unused(
            self.seed_003_ttt_flags_given(),
            "--mixer --ttt (seed 003's recipe)",
        )?;
        let d = defaults().ttt;
        let recipe = TttRecipe {
            chunk_tokens: self.ttt_chunk_tokens.unwrap_or(d.chunk_tokens),
            epochs: self.ttt_epochs.unwrap_or(d.epochs),
            lr: self.ttt_lr.unwrap_or(d.lr),
            momentum: self.ttt_momentum.unwrap_or(d.momentum),
            batch_seqs: self.ttt_batch_seqs.unwrap_or(d.batch_seqs),
            grad_clip: self.ttt_grad_clip.unwrap_or(d.grad_clip),
            freeze_blocks: self.ttt_freeze_blocks.unwrap_or(d.freeze_blocks),
            world_size: self.world_size.unwrap_or(d.world_size),
        };
        if recipe.chunk_tokens == 0 || recipe.batch_seqs == 0 || recipe.world_size == 0 {
            return setup("TTT chunk tokens, batch sequences and world size must be positive");
        }
        Ok(ScoreFirstTttSpec {
            windows,
            recipe,
            micro_batch: self.ttt_micro_batch.unwrap_or(0),
        })
    }

    /// Seed 003's mixer over the windows (and its AdamW TTT with `--ttt`).
    fn mixer_procedure(&self, windows: Windows) -> Result<EvalProcedure> {
        if self.planted.is_some() || self.doc_isolated {
            return setup(
                "--mixer is an evaluation procedure of its own; it does not combine with --planted or \
                 --doc-isolated",
            );
        }
        if self.ngram_blend {
            return setup(
                "--ngram-blend is an evaluation procedure of its own; it does not combine with --ttt, --planted, \
                 --mixer or --doc-isolated",
            );
        }
        if self.ngram_tilt {
            return setup(
                "--ngram-tilt is an evaluation procedure of its own; it does not combine with --ngram-blend, \
                 --mixer, --ttt, --planted or --doc-isolated",
            );
        }
        let d = defaults().mixer;
        let options = MixerOptions {
            max_order: self.mixer_order.unwrap_or(d.max_order),
            buckets: self.mixer_buckets.unwrap_or(d.buckets),
            min_count: d.min_count,
            min_tokens: self.mixer_min_tokens.unwrap_or(d.min_tokens),
            alpha_base: self.mixer_alpha_base.unwrap_or(d.alpha_base),
            alpha_range: self.mixer_alpha_range.unwrap_or(d.alpha_range),
            alpha_center: self.mixer_alpha_center.unwrap_or(d.alpha_center),
            temperature: self.mixer_temperature.unwrap_or(d.temperature),
            chunk_tokens: self.mixer_chunk_tokens.unwrap_or(d.chunk_tokens),
            normalized: self.mixer_normalized,
        };
        if !options.buckets.is_power_of_two() || !(2..=64).contains(&options.max_order) {
            return setup(format!(
                "--mixer-buckets must be a power of two and --mixer-order in 2..=64 (got {} and {})",
                options.buckets, options.max_order
            ));
        }
        self.refuse_world_size(windows.form)?;
        let ttt = if self.ttt {
            refuse_unused(
                given(&[
                    ("ttt_chunk_tokens", self.ttt_chunk_tokens.is_some()),
                    ("ttt_momentum", self.ttt_momentum.is_some()),
                    ("ttt_micro_batch", self.ttt_micro_batch.is_some()),
                ]),
                "--ttt (score-first TTT; seed 003's recipe scores in --mixer-chunk-tokens chunks with AdamW)",
            )?;
            let t = defaults().ttt;
            Some(MixerTttRecipe {
                epochs: self.ttt_epochs.unwrap_or(t.epochs),
                lr: self.ttt_lr.unwrap_or(t.lr),
                batch_seqs: self.ttt_batch_seqs.unwrap_or(t.batch_seqs),
                grad_clip: self.ttt_grad_clip.unwrap_or(t.grad_clip),
                trained_last_blocks: self.ttt_freeze_blocks.unwrap_or(t.freeze_blocks),
                polyak_decay: self.ttt_polyak,
                adaptive_lr_max: self.ttt_adaptive_lr_max,
                byte_weighted: self.ttt_byte_weighted,
            })
        } else {
            self.refuse_ttt_flags()?;
            None
        };
        Ok(EvalProcedure::Mixer {
            windows,
            options,
            ttt,
        })
    }

    /// Per-document LoRA TTT: the named recipe with each flag given overriding its value.
    fn lora_procedure(&self, name: LoraRecipeName) -> Result<EvalProcedure> {
        let planted_other = self
            .planted
            .is_some_and(|p| p != PlantedKind::AdaptThenScore);
        if self.ttt
            || self.mixer
            || planted_other
            || self.doc_isolated
            || self.ngram_blend
            || self.ngram_tilt
            || self.stride.is_some()
        {
            return setup(
                "--lora-ttt is an evaluation procedure of its own (per-document chunks and windows); it does not \
                 combine with --ttt, --mixer, --planted (but adapt-then-score, its planted violation), --doc-isolated, \
                 --ngram-blend, --ngram-tilt or --stride",
            );
        }
        refuse_unused(
            given(&[
                ("legacy_sliding", self.legacy_sliding),
                ("legacy_sliding_full", self.legacy_sliding_full),
                ("full_windows", self.full_windows),
                ("batch_seqs", self.batch_seqs.is_some()),
            ]),
            "the window procedures (per-document LoRA TTT batches documents: --ttt-batch-size)",
        )?;
        self.refuse_ttt_flags()?;
        refuse_unused(self.mixer_flags_given(), "--mixer")?;
        refuse_unused(self.ngram_blend_flags_given(), "--ngram-blend")?;
        let phase_flags = self.phase_flags_given();
        let mut r = name.recipe();
        if r.phases.is_none() && !phase_flags.is_empty() {
            return setup(format!(
                "{} set the global phases of --lora-ttt rec-2026-04-27; the {} recipe has none",
                phase_flags.join(", "),
                name.name()
            ));
        }
        r.rank = self.ttt_lora_rank.unwrap_or(r.rank);
        r.lr = self.ttt_lora_lr.unwrap_or(r.lr);
        r.chunk_size = self.ttt_chunk_size.unwrap_or(r.chunk_size);
        r.eval_seq_len = self.ttt_eval_seq_len.unwrap_or(r.eval_seq_len);
        r.batch_size = self.ttt_batch_size.unwrap_or(r.batch_size);
        r.beta1 = self.beta1.unwrap_or(r.beta1);
        r.beta2 = self.beta2.unwrap_or(r.beta2);
        r.alpha = self.ttt_lora_alpha.or(r.alpha);
        r.warm_start_a = self.ttt_warm_start_a.map_or(r.warm_start_a, |v| v == 1);
        r.weight_decay = self.ttt_weight_decay.unwrap_or(r.weight_decay);
        r.grad_steps = self.ttt_grad_steps.unwrap_or(r.grad_steps);
        r.world_size = self.world_size.unwrap_or(1);
        let mut phase_seq_len = None;
        if let Some(p) = &mut r.phases {
            p.prefix_docs = self.phased_ttt_prefix_docs.unwrap_or(p.prefix_docs);
            p.num_phases = self.phased_ttt_num_phases.unwrap_or(p.num_phases);
            p.lr = self.global_ttt_lr.unwrap_or(p.lr);
            p.momentum = self.global_ttt_momentum.unwrap_or(p.momentum);
            p.epochs = self.global_ttt_epochs.unwrap_or(p.epochs);
            p.chunk_tokens = self.global_ttt_chunk_tokens.unwrap_or(p.chunk_tokens);
            p.batch_seqs = self.global_ttt_batch_seqs.unwrap_or(p.batch_seqs);
            p.grad_clip = self.global_ttt_grad_clip.unwrap_or(p.grad_clip);
            phase_seq_len = Some(match self.eval_seq_len {
                Some(l) => {
                    p.seq_len = l;
                    PhaseSeqLen::Set(l)
                }
                None => PhaseSeqLen::Evaluation,
            });
        }
        // PHASED_TTT_PREFIX_DOCS 0: no global phases (rec/2026-04-10's LoRA TTT).
        if r.phases.as_ref().is_some_and(|p| p.prefix_docs == 0) {
            r.phases = None;
            phase_seq_len = None;
        }
        r.check()?;
        let init = match (&self.lora_init, self.ttt_seed) {
            (Some(_), Some(_)) => {
                return setup("--lora-init and --ttt-seed both say where A comes from; pass one");
            }
            (Some(path), None) => LoraInitSource::File(path.clone()),
            (None, seed) => LoraInitSource::Seed(seed.unwrap_or(0)),
        };
        let spec = LoraTttSpec {
            named: name,
            recipe: r,
            phase_seq_len,
            init,
            seeds: self.ttt_seeds.unwrap_or(0),
        };
        Ok(if self.planted.is_some() {
            EvalProcedure::Planted(Planted::AdaptThenScoreLora(spec))
        } else {
            EvalProcedure::LoraTtt(spec)
        })
    }

    /// Refuses the score-first TTT knobs where no TTT runs.
    fn refuse_ttt_flags(&self) -> Result<()> {
        refuse_unused(
            given(&[
                ("ttt_chunk_tokens", self.ttt_chunk_tokens.is_some()),
                ("ttt_epochs", self.ttt_epochs.is_some()),
                ("ttt_lr", self.ttt_lr.is_some()),
                ("ttt_momentum", self.ttt_momentum.is_some()),
                ("ttt_batch_seqs", self.ttt_batch_seqs.is_some()),
                ("ttt_micro_batch", self.ttt_micro_batch.is_some()),
                ("ttt_grad_clip", self.ttt_grad_clip.is_some()),
                ("ttt_freeze_blocks", self.ttt_freeze_blocks.is_some()),
            ]),
            "--ttt (score-first TTT)",
        )?;
        refuse_unused(
            self.seed_003_ttt_flags_given(),
            "--mixer --ttt (seed 003's recipe)",
        )
    }

    fn seed_003_ttt_flags_given(&self) -> Vec<String> {
        given(&[
            ("ttt_polyak", self.ttt_polyak.is_some()),
            ("ttt_adaptive_lr_max", self.ttt_adaptive_lr_max.is_some()),
            ("ttt_byte_weighted", self.ttt_byte_weighted),
        ])
    }

    fn mixer_flags_given(&self) -> Vec<String> {
        given(&[
            ("mixer_normalized", self.mixer_normalized),
            ("mixer_order", self.mixer_order.is_some()),
            ("mixer_buckets", self.mixer_buckets.is_some()),
            ("mixer_min_tokens", self.mixer_min_tokens.is_some()),
            ("mixer_chunk_tokens", self.mixer_chunk_tokens.is_some()),
            ("mixer_temperature", self.mixer_temperature.is_some()),
            ("mixer_alpha_base", self.mixer_alpha_base.is_some()),
            ("mixer_alpha_range", self.mixer_alpha_range.is_some()),
            ("mixer_alpha_center", self.mixer_alpha_center.is_some()),
        ])
    }

    fn ngram_blend_flags_given(&self) -> Vec<String> {
        given(&[
            ("ngram_order", self.ngram_order.is_some()),
            ("ngram_alpha", self.ngram_alpha.is_some()),
            ("ngram_prefill", self.ngram_prefill.is_some()),
            ("ngram_prefill_tokens", self.ngram_prefill_tokens.is_some()),
        ])
    }

    fn phase_flags_given(&self) -> Vec<String> {
        given(&[
            (
                "phased_ttt_prefix_docs",
                self.phased_ttt_prefix_docs.is_some(),
            ),
            (
                "phased_ttt_num_phases",
                self.phased_ttt_num_phases.is_some(),
            ),
            ("global_ttt_lr", self.global_ttt_lr.is_some()),
            ("global_ttt_momentum", self.global_ttt_momentum.is_some()),
            ("global_ttt_epochs", self.global_ttt_epochs.is_some()),
            (
                "global_ttt_chunk_tokens",
                self.global_ttt_chunk_tokens.is_some(),
            ),
            (
                "global_ttt_batch_seqs",
                self.global_ttt_batch_seqs.is_some(),
            ),
            ("global_ttt_grad_clip", self.global_ttt_grad_clip.is_some()),
            ("eval_seq_len", self.eval_seq_len.is_some()),
        ])
    }

    fn lora_flags_given(&self) -> Vec<String> {
        let mut g = given(&[
            ("ttt_lora_rank", self.ttt_lora_rank.is_some()),
            ("ttt_lora_lr", self.ttt_lora_lr.is_some()),
            ("ttt_chunk_size", self.ttt_chunk_size.is_some()),
            ("ttt_eval_seq_len", self.ttt_eval_seq_len.is_some()),
            ("ttt_batch_size", self.ttt_batch_size.is_some()),
            ("beta1", self.beta1.is_some()),
            ("beta2", self.beta2.is_some()),
            ("ttt_lora_alpha", self.ttt_lora_alpha.is_some()),
            ("ttt_warm_start_a", self.ttt_warm_start_a.is_some()),
            ("ttt_weight_decay", self.ttt_weight_decay.is_some()),
            ("ttt_grad_steps", self.ttt_grad_steps.is_some()),
            ("ttt_seed", self.ttt_seed.is_some()),
            ("lora_init", self.lora_init.is_some()),
            ("ttt_seeds", self.ttt_seeds.is_some()),
        ]);
        g.extend(self.phase_flags_given());
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::lora_ttt::LoraTttRecipe;
    use crate::verify::ttt::TttOrder;

    fn flags() -> VerifyFlags {
        VerifyFlags::new(
            "/nonexistent/model.safetensors",
            "/nonexistent/val_*.bin",
            "byte260",
        )
    }

    fn refused(f: VerifyFlags, needle: &str) {
        match f.resolve() {
            Err(VerifyError::Setup(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected a refusal containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn illegal_combinations_are_refused_before_anything_is_read() {
        assert_eq!(
            flags().resolve().unwrap().procedure,
            EvalProcedure::Windows(Windows {
                form: WindowForm::NonOverlapping,
                batch_seqs: 8
            })
        );
        refused(
            VerifyFlags {
                ngram_blend: true,
                ttt: true,
                ..flags()
            },
            "--ngram-blend is an evaluation procedure of its own",
        );
        refused(
            VerifyFlags {
                mixer: true,
                doc_isolated: true,
                ..flags()
            },
            "--mixer is an evaluation procedure of its own",
        );
        refused(
            VerifyFlags {
                ttt_polyak: Some(0.9),
                ..flags()
            },
            "--ttt-polyak belongs to --mixer --ttt",
        );
        refused(
            VerifyFlags {
                doc_isolated: true,
                planted: Some(PlantedKind::AdaptThenScore),
                ..flags()
            },
            "--doc-isolated is an evaluation form of its own",
        );
        refused(
            VerifyFlags {
                ttt: true,
                planted: Some(PlantedKind::Slot),
                ..flags()
            },
            "window procedures; drop --ttt",
        );
        refused(
            VerifyFlags {
                ttt: true,
                ttt_chunk_tokens: Some(0),
                ..flags()
            },
            "must be positive",
        );
        refused(
            VerifyFlags {
                mixer: true,
                mixer_buckets: Some(1000),
                ..flags()
            },
            "power of two",
        );
        // A knob of another procedure is named with the procedure that takes it.
        refused(
            VerifyFlags {
                ttt_lr: Some(0.01),
                ..flags()
            },
            "--ttt-lr belongs to --ttt (score-first TTT)",
        );
        refused(
            VerifyFlags {
                world_size: Some(8),
                ..flags()
            },
            "--world-size replays ranks",
        );
        refused(
            VerifyFlags {
                lora_ttt: Some(LoraRecipeName::Rec20260317),
                eval_seq_len: Some(64),
                ..flags()
            },
            "--eval-seq-len set the global phases of --lora-ttt rec-2026-04-27; the rec-2026-03-17 recipe has none",
        );
        refused(
            VerifyFlags {
                phased_ttt: true,
                batch_seqs: Some(4),
                ..flags()
            },
            "--batch-seqs belongs to the window procedures",
        );
    }

    /// A global phase's sequence length follows the evaluation's unless `--eval-seq-len` sets it; prefix docs 0
    /// turns the phases off.
    #[test]
    fn phase_sequence_length_follows_the_evaluation_unless_set() {
        let phased = |f: VerifyFlags| match f.resolve().unwrap().procedure {
            EvalProcedure::LoraTtt(l) => l,
            other => panic!("{other:?}"),
        };
        let l = phased(VerifyFlags {
            phased_ttt: true,
            seq_len: Some(256),
            ..flags()
        });
        assert_eq!(l.phase_seq_len, Some(PhaseSeqLen::Evaluation));
        assert_eq!(l.named, LoraRecipeName::Rec20260427);
        let l = phased(VerifyFlags {
            phased_ttt: true,
            eval_seq_len: Some(128),
            ..flags()
        });
        assert_eq!(l.phase_seq_len, Some(PhaseSeqLen::Set(128)));
        assert_eq!(l.recipe.phases.as_ref().unwrap().seq_len, 128);
        let l = phased(VerifyFlags {
            phased_ttt: true,
            phased_ttt_prefix_docs: Some(0),
            ..flags()
        });
        assert!(l.recipe.phases.is_none() && l.phase_seq_len.is_none());
    }

    fn declared_flags(preset: &str) -> VerifyFlags {
        VerifyFlags {
            preset: Some(preset.into()),
            ..VerifyFlags::new("m.safetensors", "v/fineweb_val_*.bin", "t.model")
        }
    }

    fn declared(preset: &str, val: &str) -> VerifySpec {
        VerifyFlags {
            preset: Some(preset.into()),
            ..VerifyFlags::new("m.safetensors", val, "t.model")
        }
        .resolve()
        .unwrap()
    }

    /// Each preset's declared evaluation is the flags docs/ARCHITECTURES.md lists for its record.
    #[test]
    fn a_preset_alone_runs_its_records_declared_evaluation() {
        let b = declared("baseline", "v/fineweb_val_*.bin");
        assert_eq!(b.seq_len, Some(1024));
        assert_eq!(b.procedure.form(), WindowForm::NonOverlapping);
        assert!(matches!(b.procedure, EvalProcedure::Windows(_)));
        assert!(b.byte_sidecar.is_none());
        let r = declared("rec-2026-03-23", "v/fineweb_val_*.bin");
        assert_eq!(r.seq_len, Some(2048));
        let (t, order) = r.procedure.score_first_ttt().unwrap();
        assert_eq!(order, TttOrder::ScoreFirst);
        assert_eq!(t.windows.form, WindowForm::LegacySliding { stride: 64 });
        assert_eq!(
            (t.recipe.lr, t.recipe.epochs, t.recipe.world_size),
            (0.002, 3, 8)
        );
        let r = declared("rec-2026-03-29", "v/fineweb_val_*.bin");
        assert_eq!(r.procedure.form(), WindowForm::LegacySliding { stride: 64 });
        assert!(!r.procedure.trains());
        let r = declared("rec-2026-04-09", "v/fineweb_val_*.bin");
        let (t, _) = r.procedure.score_first_ttt().unwrap();
        assert_eq!(
            (t.windows.form, t.recipe.lr),
            (WindowForm::Sliding { stride: 64 }, 0.005)
        );
        // 04-27: phased LoRA TTT with the record's logged knobs, its byte sidecar beside the shards, 8 ranks.
        let r = declared("rec-2026-04-27", "/data/caseops/fineweb_val_0*.bin");
        let lora = r.procedure.lora().unwrap();
        assert_eq!(
            lora.recipe,
            LoraTttRecipe {
                world_size: 8,
                ..LoraTttRecipe::rec_2026_04_27()
            }
        );
        assert_eq!(lora.phase_seq_len, Some(PhaseSeqLen::Evaluation));
        assert_eq!(r.seq_len, Some(2048));
        assert_eq!(
            r.byte_sidecar.as_deref(),
            Some("/data/caseops/fineweb_val_bytes_*.bin")
        );
        assert_eq!(r.declared_by.as_deref(), Some("rec-2026-04-27"));
        // A shard glob without a folder: the sidecar glob has none either; a given sidecar is kept.
        let r = declared("rec-2026-04-27", "fineweb_val_*.bin");
        assert_eq!(r.byte_sidecar.as_deref(), Some("fineweb_val_bytes_*.bin"));
        let f = VerifyFlags {
            preset: Some("rec-2026-04-27".into()),
            byte_sidecar: Some("elsewhere/b_*.bin".into()),
            world_size: Some(1),
            ..VerifyFlags::new("m", "v/x.bin", "t")
        };
        let s = f.resolve().unwrap();
        assert_eq!(s.byte_sidecar.as_deref(), Some("elsewhere/b_*.bin"));
        assert_eq!(s.procedure.lora().unwrap().recipe.world_size, 1);
        // Knobs given with a preset alone resolve as with its evaluation flags: they override the record's values,
        // and a knob of a procedure the record does not run is refused.
        let f = VerifyFlags {
            preset: Some("rec-2026-04-09".into()),
            ttt_epochs: Some(1),
            ..VerifyFlags::new("m", "v/x.bin", "t")
        };
        let s = f.resolve().unwrap();
        let (t, _) = s.procedure.score_first_ttt().unwrap();
        assert_eq!(
            (t.recipe.epochs, t.recipe.lr, t.recipe.world_size),
            (1, 0.005, 8)
        );
        for (f, needle) in [
            (
                VerifyFlags {
                    ttt_lr: Some(0.01),
                    ..declared_flags("baseline")
                },
                "--ttt-lr belongs to --ttt",
            ),
            (
                VerifyFlags {
                    world_size: Some(8),
                    ..declared_flags("rec-2026-03-29")
                },
                "--world-size replays ranks",
            ),
        ] {
            let err = f.resolve().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let f = VerifyFlags {
            preset: Some("rec-1999".into()),
            ..VerifyFlags::new("m", "v", "t")
        };
        let err = f.resolve().unwrap_err().to_string();
        assert!(err.contains("no preset named \"rec-1999\""), "{err}");
    }

    /// The command line of a set of flags names each flag given and nothing else.
    #[test]
    fn flags_write_back_as_the_arguments_that_give_them() {
        let f = VerifyFlags {
            preset: Some("rec-2026-04-27".into()),
            byte_sidecar: Some("d/b_*.bin".into()),
            stride: Some(64),
            probes: true,
            lora_ttt: Some(LoraRecipeName::Rec20260427),
            planted: Some(PlantedKind::AdaptThenScore),
            ..VerifyFlags::new("final_model.int6.ptz", "d/v_*.bin", "t.model")
        };
        assert_eq!(
            f.command_line(),
            [
                "final_model.int6.ptz",
                "--preset",
                "rec-2026-04-27",
                "--val",
                "d/v_*.bin",
                "--tokenizer",
                "t.model",
                "--stride",
                "64",
                "--byte-sidecar",
                "d/b_*.bin",
                "--lora-ttt",
                "rec-2026-04-27",
                "--probes",
                "--planted",
                "adapt-then-score",
            ]
        );
    }
}
