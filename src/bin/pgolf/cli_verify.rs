//! `pgolf verify`: the BPB as the challenge computes it, under the evaluation procedure the submission declares
//! (window form, score-first TTT), with receipts, legality probes that re-run that procedure, the size check and a
//! compliance block filled from the measurements.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use clap::{Args, ValueEnum};
use pgolf::data::audit;
use pgolf::data::bytes::ByteSource;
use pgolf::data::shard;
use pgolf::data::tokenizer::Tokenizer;
use pgolf::infer::config::ModelConfig;
use pgolf::infer::lm::CausalLm;
use pgolf::infer::model::Gpt;
use pgolf::infer::patch_jepa::{BytePatchJepa, PatchJepaConfig};
use pgolf::infer::presets;
use pgolf::infer::weights;
use pgolf::pack::inspect::{BUDGET_BYTES, code_size};
use pgolf::verify::eval::{self, EvalReport, WindowForm, plan_windows};
use pgolf::verify::ledger::{RunRecord, weights_digest};
use pgolf::verify::mixer::{BackoffMixerProcedure, MixerOptions, MixerTttRecipe, NgramCacheBlend};
use pgolf::verify::planted::{HashedNgramCache, SlotDelta};
use pgolf::verify::probes::{ProbeOptions, ProbeReport, run_probes};
use pgolf::verify::procedure::{Procedure, WindowProcedure};
use pgolf::verify::scorer::{DocIsolatedScorer, ModelScorer, WindowScorer};
use pgolf::verify::tilt::{NgramTiltPrior, NgramTiltScorer};
use pgolf::verify::ttt::{ScoreFirstTtt, TttOrder, TttRecipe};
use serde_json::{Value, json};

use crate::compute::ComputeArgs;
use crate::progress;

/// Deliberately illegal procedures, for seeing each probe fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Planted {
    /// A hashed n-gram cache blended only at the realized token (PR #886): fails C2.
    NgramCache,
    /// A per-window hidden delta optimized on the window's scored targets (PR #1240): fails C1 and C3.
    Slot,
    /// TTT that trains on each chunk before scoring it: fails C1, C3 and TTT ordering.
    AdaptThenScore,
    /// Score-first TTT preceded by a warm-up step on validation tokens: fails TTT ordering.
    WarmupOnUnscored,
}

#[derive(Args, Clone)]
pub struct VerifyArgs {
    /// Model weights: safetensors with the challenge's state-dict names, or an artifact (torch `.pt`, or a `.ptz`
    /// under zlib/zstd/xz/brotli/BSHF in the baseline int8 or the `{"w","m"}` schemas), dequantized in memory.
    model: PathBuf,
    /// Model config JSON (the challenge's hyperparameter names); not needed for a pgolf artifact, which carries it.
    #[arg(long, conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// A named record config instead of --config (`baseline`, `rec-2026-03-23`, `rec-2026-03-29`, `rec-2026-04-09`,
    /// `rec-2026-04-27`; docs/ARCHITECTURES.md).
    #[arg(long)]
    preset: Option<String>,
    /// Validation shards (glob; sorted; `*_bytes_*` sidecars skipped).
    #[arg(long)]
    val: String,
    /// SentencePiece `.model` file, or `byte260`.
    #[arg(long)]
    tokenizer: String,
    /// Evaluation sequence length (default: the config's train_seq_len). Also sets the truncation rule.
    #[arg(long)]
    seq_len: Option<usize>,
    /// Exactly-once sliding windows with this stride (default: non-overlapping windows, the challenge's eval_val).
    #[arg(long)]
    stride: Option<usize>,
    /// With --stride: the older sliding form that re-scores the tail (to reproduce old records; not exactly once).
    #[arg(long, requires = "stride")]
    legacy_sliding: bool,
    /// With --stride: seed 003's form, every window holding at least a stride of targets, each scoring its last
    /// stride (the windows that reach the end re-score the last targets).
    #[arg(long, requires = "stride", conflicts_with = "legacy_sliding")]
    legacy_sliding_full: bool,
    /// With --stride: seed 001's form, full-length windows only, each after the first scoring its last stride
    /// (each target at most once; the targets after the last full window are never scored).
    #[arg(long, requires = "stride", conflicts_with_all = ["legacy_sliding", "legacy_sliding_full"])]
    full_windows: bool,
    /// Seed 003's backoff n-gram mixer over the model (PR #1033), scored as the seed does; with
    /// --mixer-normalized, the properly normalized mixture.
    #[arg(long)]
    mixer: bool,
    /// Mixer: divide the n-gram distribution by its sum over the vocabulary (a proper distribution).
    #[arg(long, requires = "mixer")]
    mixer_normalized: bool,
    /// Mixer: highest n-gram order (NGRAM_ORDER).
    #[arg(long, default_value_t = 10)]
    mixer_order: usize,
    /// Mixer: hash buckets per order, a power of two (NGRAM_BUCKETS).
    #[arg(long, default_value_t = 4_194_304)]
    mixer_buckets: usize,
    /// Mixer: tokens counted before it switches on (MIXER_MIN_TOKENS).
    #[arg(long, default_value_t = 10_000)]
    mixer_min_tokens: usize,
    /// Mixer: targets per chunk; counts are updated after each chunk is scored (TTT_CHUNK_TOKENS).
    #[arg(long, default_value_t = 32_768)]
    mixer_chunk_tokens: usize,
    /// Mixer: logit temperature (TTT_TEMPERATURE).
    #[arg(long, default_value_t = 0.98)]
    mixer_temperature: f32,
    /// Mixer: α = base + range·σ(2(H − center)) (ALPHA_BASE, ALPHA_RANGE, ALPHA_CENTER).
    #[arg(long, default_value_t = 0.20)]
    mixer_alpha_base: f32,
    #[arg(long, default_value_t = 0.55)]
    mixer_alpha_range: f32,
    #[arg(long, default_value_t = 3.0)]
    mixer_alpha_center: f32,
    /// Seed 004's NGramCache blend (PR #1499's default sliding evaluation): exact context counts pre-filled from
    /// training tokens (--ngram-prefill) and extended with scored targets, blended with a weight that depends on
    /// the target's own loss.
    #[arg(long)]
    ngram_blend: bool,
    /// NGramCache: highest order (NGRAM_ORDER; contexts of up to order − 1 tokens).
    #[arg(long, default_value_t = 7)]
    ngram_order: usize,
    /// NGramCache: base blend weight (NGRAM_ALPHA).
    #[arg(long, default_value_t = 0.20)]
    ngram_alpha: f64,
    /// NGramCache: training shards (glob) the cache is pre-filled from, as the seed reads fineweb_train_*.bin.
    #[arg(long, requires = "ngram_blend")]
    ngram_prefill: Option<String>,
    /// NGramCache: how many training tokens pre-fill it (NGRAM_PRETRAIN_TOKENS).
    #[arg(long, default_value_t = 2_000_000)]
    ngram_prefill_tokens: usize,
    /// Seed 002's n-gram logit tilt (PR #1666): the soft-capped logits raised by β/2 at the next token a fixed
    /// prior predicts from the previous one and two tokens (the artifact's bundled "ngram" entry, or --ngram-prior).
    #[arg(long, conflicts_with_all = ["ngram_blend", "mixer", "ttt", "planted", "doc_isolated"])]
    ngram_tilt: bool,
    /// The tilt's prior as a file (zlib over a pickle, as the seed's build_ngram_table.py writes it), instead of
    /// the artifact's bundled one.
    #[arg(long, requires = "ngram_tilt")]
    ngram_prior: Option<std::path::PathBuf>,
    /// The tilt's β (NGRAM_TILT_BETA); each matching prefix adds β/2.
    #[arg(long, default_value_t = 0.3, requires = "ngram_tilt")]
    ngram_tilt_beta: f64,
    /// The records' VarLen eval_val (rec/2026-04-10 on): flat buffers of --batch-seqs sequences of --seq-len,
    /// attention isolated to each document (split at BOS and into pieces of at most --seq-len).
    #[arg(long, conflicts_with = "stride")]
    doc_isolated: bool,
    /// CaseOps per-token byte sidecar shards (glob): bytes come from it instead of the tokenizer's table.
    #[arg(long)]
    byte_sidecar: Option<String>,
    /// Windows per forward batch.
    #[arg(long, default_value_t = 8)]
    batch_seqs: usize,
    #[command(flatten)]
    compute: ComputeArgs,
    /// Score-first test-time training (the records' recipe): score each chunk, then train on it.
    #[arg(long)]
    ttt: bool,
    /// TTT: targets per chunk (TTT_CHUNK_TOKENS).
    #[arg(long, default_value_t = 32_768)]
    ttt_chunk_tokens: usize,
    /// TTT: epochs over each scored chunk (TTT_EPOCHS).
    #[arg(long, default_value_t = 3)]
    ttt_epochs: usize,
    /// TTT: base SGD learning rate, cosine-decayed across chunks (TTT_LR; rec/2026-04-09 used 0.005).
    #[arg(long, default_value_t = 0.002)]
    ttt_lr: f64,
    /// TTT: SGD momentum (TTT_MOMENTUM).
    #[arg(long, default_value_t = 0.9)]
    ttt_momentum: f64,
    /// TTT: sequences per optimizer step and rank (TTT_BATCH_SEQS).
    #[arg(long, default_value_t = 32)]
    ttt_batch_seqs: usize,
    /// TTT: sequences per backward pass (0: the whole batch). The step still averages the whole batch (the same
    /// gradient up to rounding); it bounds GPU memory at full size.
    #[arg(long, default_value_t = 0)]
    ttt_micro_batch: usize,
    /// TTT: gradient-norm clip (TTT_GRAD_CLIP).
    #[arg(long, default_value_t = 1.0)]
    ttt_grad_clip: f64,
    /// TTT: keep the first N blocks fixed (TTT_FREEZE_BLOCKS). With --mixer, seed 003's reading: the last N
    /// blocks train, with every weight named norm, scale, lm_head or tok_emb (0: all weights).
    #[arg(long, default_value_t = 0)]
    ttt_freeze_blocks: usize,
    /// With --mixer --ttt (seed 003's AdamW recipe): score with a Polyak average of decay D (USE_POLYAK,
    /// POLYAK_DECAY).
    #[arg(long)]
    ttt_polyak: Option<f64>,
    /// With --mixer --ttt: raise the learning rate linearly to MAX× over the first 30% of chunks (ADAPTIVE_LR_MAX).
    #[arg(long)]
    ttt_adaptive_lr_max: Option<f64>,
    /// With --mixer --ttt: weight each target's loss by its base bytes over the batch mean (BYTE_WEIGHTED_TTT).
    #[arg(long)]
    ttt_byte_weighted: bool,
    /// Replay W ranks, e.g. 8 to reproduce an 8×H100 run: TTT's per-rank sequence ranges with averaged gradients,
    /// and --doc-isolated's per-rank ranges, each truncated to whole buffers.
    #[arg(long, default_value_t = 1)]
    world_size: usize,
    /// Run the legality probes (C1–C4, TTT ordering, determinism) on a prefix of the stream.
    #[arg(long)]
    probes: bool,
    /// Targets in the probes' prefix (default: three TTT chunks with --ttt, else 16384).
    #[arg(long)]
    probe_targets: Option<usize>,
    /// Re-runs with one token replaced (each checks C1 and C3).
    #[arg(long, default_value_t = 4)]
    probe_perturbations: usize,
    /// Rows checked for normalization (C2).
    #[arg(long, default_value_t = 8)]
    probe_rows: usize,
    /// Seed of the probes' positions and replacement tokens.
    #[arg(long, default_value_t = 20240520)]
    probe_seed: u64,
    /// Evaluate a deliberately illegal procedure instead (to see the probes catch it); never a score.
    #[arg(long, value_enum)]
    planted: Option<Planted>,
    /// The submission's `train_gpt.py`, counted toward the 16,000,000-byte cap as the records count it.
    #[arg(long)]
    code: Option<PathBuf>,
    /// Write every receipt (one per scored chunk) to this JSON file.
    #[arg(long)]
    receipts: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also run the canonical legal counterpart of the declared procedure on the same model and stream, and report
    /// both: exactly-once sliding windows instead of a re-scoring or full-windows-only form, the normalized mixture
    /// instead of the seed's mixer, no n-gram blend, the stored weights without evaluation-time fake quantization.
    #[arg(long, conflicts_with = "planted")]
    canonical: bool,
    /// Score the stored weights as they are: ignore a config's evaluation-time fake quantization (eval_fake_quant).
    #[arg(long)]
    score_stored_weights: bool,
}

/// What the size check found when the model is an artifact.
struct SizeCheck {
    artifact_bytes: u64,
    code_bytes: Option<u64>,
}

impl SizeCheck {
    fn total(&self) -> u64 {
        self.artifact_bytes + self.code_bytes.unwrap_or(0)
    }

    fn under_budget(&self) -> Option<bool> {
        if self.total() > BUDGET_BYTES {
            Some(false)
        } else {
            self.code_bytes.map(|_| true)
        }
    }
}

pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    Ok(run_inner(args, true)?.0)
}

/// The canonical legal counterpart of the declared procedure, and what changes to reach it; None when the declared
/// procedure is already canonical.
fn canonical_args(args: &VerifyArgs, fake_quant: bool) -> Option<(VerifyArgs, Vec<String>)> {
    let mut c = args.clone();
    let mut changes = Vec::new();
    if args.stride.is_some()
        && (args.legacy_sliding || args.legacy_sliding_full || args.full_windows)
    {
        let from = if args.legacy_sliding {
            "legacy_sliding"
        } else if args.legacy_sliding_full {
            "legacy_sliding_full"
        } else {
            "full_windows"
        };
        changes.push(format!(
            "window form {from} → sliding (every target exactly once)"
        ));
        (c.legacy_sliding, c.legacy_sliding_full, c.full_windows) = (false, false, false);
    }
    if args.mixer && !args.mixer_normalized {
        changes.push(
            "the mixer → the normalized mixture (p_ng divided by its sum over the vocabulary)"
                .into(),
        );
        c.mixer_normalized = true;
    }
    if args.ngram_blend {
        changes.push("the target-dependent n-gram blend → none".into());
        c.ngram_blend = false;
    }
    if fake_quant && !args.score_stored_weights {
        changes.push("evaluation-time fake quantization → the stored weights as they are".into());
        c.score_stored_weights = true;
    }
    if changes.is_empty() {
        return None;
    }
    (c.canonical, c.probes, c.receipts, c.json) = (false, false, None, true);
    Some((c, changes))
}

/// Runs the evaluation; prints the report when `print`, and returns the exit code and the JSON report.
fn run_inner(args: VerifyArgs, print: bool) -> Result<(ExitCode, Value)> {
    let device = args.compute.open()?;
    let precision = args.compute.precision;
    // Weights are read and checked on the host; the model moves them to its device.
    let (state, carried_config, is_artifact, bundled) = load_weights(&args.model, &Device::Cpu)?;
    let arch = match &args.config {
        Some(p) if args.preset.is_none() && names_patch_jepa(p)? => {
            Architecture::PatchJepa(PatchJepaConfig::load(p)?)
        }
        _ => Architecture::Gpt(gpt_config(&args, carried_config)?),
    };
    let tokenizer = Tokenizer::load(&args.tokenizer)?;
    let seq_len = args.seq_len.unwrap_or(arch.train_seq_len());
    let vocab_size = arch.vocab_size();
    let files = shard::validation_files(&args.val)?;
    let tokens = shard::truncate_to_usable(shard::read_shards(&files)?, seq_len, &args.val)?;
    if let Some(pos) = tokens.iter().position(|&t| t as usize >= vocab_size) {
        bail!(
            "{}: token id {} at position {pos} is outside the model's vocab_size {} ({})",
            args.val,
            tokens[pos],
            vocab_size,
            args.config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "its carried config".into())
        );
    }
    let size = if is_artifact {
        let artifact_bytes = std::fs::metadata(&args.model)
            .with_context(|| format!("{}", args.model.display()))?
            .len();
        let code_bytes = match &args.code {
            Some(p) => Some(code_size(p, &pgolf::limits::current())?.counted_bytes),
            None => None,
        };
        Some(SizeCheck {
            artifact_bytes,
            code_bytes,
        })
    } else {
        None
    };
    let mut built = match &arch {
        Architecture::Gpt(cfg) => {
            let state = weights::check_state_dict(cfg, state, DType::F32, &args.model)?;
            Built::Gpt(Gpt::new(cfg.clone(), state, &device, precision)?)
        }
        Architecture::PatchJepa(cfg) => Built::PatchJepa(BytePatchJepa::new(
            cfg.clone(),
            state,
            &device,
            precision,
            &args.model,
        )?),
    };
    if args.compute.generic_ops {
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
    let weights = weights_digest(built.lm())?;
    let mut built = Some(built);
    let bytes = match &args.byte_sidecar {
        Some(glob) => ByteSource::load_sidecar(glob, tokens.len())?,
        None => ByteSource::Table(tokenizer.byte_table(vocab_size)),
    };
    let form = match (args.stride, args.legacy_sliding) {
        (None, _) if args.doc_isolated => WindowForm::DocIsolated {
            batch_seqs: args.batch_seqs,
            world_size: args.world_size,
        },
        (None, _) => WindowForm::NonOverlapping,
        (Some(stride), _) if args.legacy_sliding_full => WindowForm::LegacySlidingFull { stride },
        (Some(stride), _) if args.full_windows => WindowForm::FullWindows { stride },
        (Some(stride), false) => WindowForm::Sliding { stride },
        (Some(stride), true) => WindowForm::LegacySliding { stride },
    };
    let windows = plan_windows(tokens.len() - 1, seq_len, form)
        .with_context(|| format!("evaluating {}", args.model.display()))?
        .len();
    let recipe = TttRecipe {
        chunk_tokens: args.ttt_chunk_tokens,
        epochs: args.ttt_epochs,
        lr: args.ttt_lr,
        momentum: args.ttt_momentum,
        batch_seqs: args.ttt_batch_seqs,
        grad_clip: args.ttt_grad_clip,
        freeze_blocks: args.ttt_freeze_blocks,
        world_size: args.world_size,
    };
    let ttt_order = match args.planted {
        Some(Planted::AdaptThenScore) => Some(TttOrder::AdaptThenScore),
        Some(Planted::WarmupOnUnscored) => Some(TttOrder::WarmupOnUnscored),
        _ if args.ttt => Some(TttOrder::ScoreFirst),
        _ => None,
    };
    if args.ngram_blend
        && (ttt_order.is_some() || args.planted.is_some() || args.doc_isolated || args.mixer)
    {
        bail!(
            "--ngram-blend is an evaluation procedure of its own; it does not combine with --ttt, --planted, --mixer or --doc-isolated"
        );
    }
    if args.ngram_blend && !(2..=64).contains(&args.ngram_order) {
        bail!("--ngram-order must be in 2..=64, got {}", args.ngram_order);
    }
    if args.mixer && (args.planted.is_some() || args.doc_isolated) {
        bail!(
            "--mixer is an evaluation procedure of its own; it does not combine with --planted or --doc-isolated"
        );
    }
    if !args.mixer
        && (args.ttt_polyak.is_some()
            || args.ttt_adaptive_lr_max.is_some()
            || args.ttt_byte_weighted)
    {
        bail!(
            "--ttt-polyak, --ttt-adaptive-lr-max and --ttt-byte-weighted belong to --mixer --ttt (seed 003's recipe)"
        );
    }
    if args.mixer
        && (!args.mixer_buckets.is_power_of_two() || args.mixer_order < 2 || args.mixer_order > 64)
    {
        bail!(
            "--mixer-buckets must be a power of two and --mixer-order in 2..=64 (got {} and {})",
            args.mixer_buckets,
            args.mixer_order
        );
    }
    if args.doc_isolated && (ttt_order.is_some() || args.planted.is_some()) {
        bail!(
            "--doc-isolated is an evaluation form of its own; it does not combine with --ttt or --planted"
        );
    }
    if ttt_order.is_some() && matches!(args.planted, Some(Planted::NgramCache | Planted::Slot)) {
        bail!("--planted ngram-cache and slot are window procedures; drop --ttt");
    }

    let tilt_prior = if args.ngram_tilt {
        let (source, bytes) = match &args.ngram_prior {
            Some(p) => (
                p.clone(),
                std::fs::read(p).with_context(|| format!("{}", p.display()))?,
            ),
            None => match bundled.iter().find(|(k, _)| k == "ngram") {
                Some((_, b)) => (args.model.clone(), b.clone()),
                None => bail!(
                    "{}: --ngram-tilt needs an n-gram prior, and the artifact bundles none (no \"ngram\" entry); pass --ngram-prior FILE",
                    args.model.display()
                ),
            },
        };
        let entries =
            pgolf::pack::prior::read_ngram_prior(&source, &bytes, &pgolf::limits::current())?;
        let prior = NgramTiltPrior::from_entries(
            vocab_size,
            entries.into_iter().map(|e| (e.prefix, e.next)),
        )
        .with_context(|| format!("{}", source.display()))?;
        Some((prior, bytes.len()))
    } else {
        None
    };
    let scorer;
    let tilt_scorer;
    let mixer;
    let blend;
    let isolated_scorer;
    let window_procedure;
    let ngram;
    let slot;
    let mut ttt;
    let mut trainable = 0;
    let mut ttt_recipe = serde_json::to_value(&recipe)?;
    let procedure: &dyn Procedure = match (ttt_order, args.planted) {
        (_, None) if args.mixer => {
            let model = built.take().expect("built above").boxed();
            let seed_ttt = ttt_order.map(|_| {
                let r = MixerTttRecipe {
                    epochs: args.ttt_epochs,
                    lr: args.ttt_lr,
                    batch_seqs: args.ttt_batch_seqs,
                    grad_clip: args.ttt_grad_clip,
                    trained_last_blocks: args.ttt_freeze_blocks,
                    polyak_decay: args.ttt_polyak,
                    adaptive_lr_max: args.ttt_adaptive_lr_max,
                    byte_weighted: args.ttt_byte_weighted,
                };
                (r, tokenizer.byte_table(vocab_size).base_bytes)
            });
            if let Some((r, _)) = &seed_ttt {
                ttt_recipe = serde_json::to_value(r)?;
            }
            mixer = BackoffMixerProcedure::new(
                model,
                seq_len,
                form,
                args.batch_seqs,
                MixerOptions {
                    max_order: args.mixer_order,
                    buckets: args.mixer_buckets,
                    min_count: 2.0,
                    min_tokens: args.mixer_min_tokens,
                    alpha_base: args.mixer_alpha_base,
                    alpha_range: args.mixer_alpha_range,
                    alpha_center: args.mixer_alpha_center,
                    temperature: args.mixer_temperature,
                    chunk_tokens: args.mixer_chunk_tokens,
                    normalized: args.mixer_normalized,
                },
                seed_ttt,
            )?;
            trainable = mixer.trainable_parameters();
            &mixer
        }
        (Some(order), _) => {
            let model = built.take().expect("built above").boxed();
            ttt = ScoreFirstTtt::new(model, recipe.clone(), seq_len, form, args.batch_seqs, order)?;
            ttt.micro_batch_seqs = args.ttt_micro_batch;
            trainable = ttt.trainable_parameters();
            &ttt
        }
        (None, None) if args.ngram_blend => {
            let prefill = match &args.ngram_prefill {
                Some(glob) => {
                    let files = shard::expand_glob(glob)?;
                    let all = shard::read_shards(&files)?;
                    // TokenStream.take: the first N tokens, wrapping around the shards if they hold fewer.
                    all.iter()
                        .copied()
                        .cycle()
                        .take(if all.is_empty() {
                            0
                        } else {
                            args.ngram_prefill_tokens
                        })
                        .collect()
                }
                None => Vec::new(),
            };
            blend = NgramCacheBlend {
                model: gpt_only(&built, "--ngram-blend")?,
                seq_len,
                form,
                batch_seqs: args.batch_seqs,
                max_order: args.ngram_order,
                alpha: args.ngram_alpha,
                prefill,
                weights,
            };
            &blend
        }
        (None, Some(Planted::NgramCache)) => {
            ngram = HashedNgramCache {
                model: gpt_only(&built, "--planted ngram-cache")?,
                seq_len,
                form,
                batch_seqs: args.batch_seqs,
                context: 1,
                buckets: 4096,
                alpha: 0.4,
                weights,
            };
            &ngram
        }
        (None, Some(Planted::Slot)) => {
            slot = SlotDelta {
                model: gpt_only(&built, "--planted slot")?,
                seq_len,
                form,
                steps: 5,
                lr: 1.0,
                weights,
            };
            &slot
        }
        (None, _) => {
            let chosen: &dyn WindowScorer = if let Some((prior, _)) = &tilt_prior {
                tilt_scorer = NgramTiltScorer {
                    model: gpt_only(&built, "--ngram-tilt")?,
                    prior,
                    beta: args.ngram_tilt_beta,
                    pad_to: seq_len,
                };
                &tilt_scorer
            } else if args.doc_isolated {
                isolated_scorer = DocIsolatedScorer {
                    model: gpt_only(&built, "--doc-isolated")?,
                    max_doc_len: seq_len,
                };
                &isolated_scorer
            } else {
                scorer = ModelScorer::new(built.as_ref().expect("built above").lm(), seq_len);
                &scorer
            };
            window_procedure = WindowProcedure {
                scorer: chosen,
                seq_len,
                form,
                batch_seqs: args.batch_seqs,
                vocab_size,
                weights,
            };
            &window_procedure
        }
    };

    let bar = progress::bar(0, &procedure.name(), args.json);
    let mut on_progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let (report, record) = eval::evaluate(procedure, &tokens, &bytes, &mut on_progress)
        .with_context(|| format!("evaluating {}", args.model.display()))?;
    bar.finish_and_clear();

    let probes = if args.probes {
        let prefix = args.probe_targets.unwrap_or(if ttt_order.is_some() {
            3 * args.ttt_chunk_tokens
        } else {
            16_384
        });
        let opts = ProbeOptions {
            prefix_targets: prefix.max(seq_len),
            perturbations: args.probe_perturbations,
            row_samples: args.probe_rows,
            seed: args.probe_seed,
            ..ProbeOptions::default()
        };
        let bar = progress::bar(0, "probes", args.json);
        let mut on_progress = |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        };
        let r = run_probes(procedure, &tokens, &bytes, &opts, &mut on_progress)
            .with_context(|| format!("probing {}", args.model.display()))?;
        bar.finish_and_clear();
        Some(r)
    } else {
        None
    };

    if let Some(path) = &args.receipts {
        let text = serde_json::to_string_pretty(&record.receipts)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("{}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("{}", path.display()))?;
    }

    let ttt_info = ttt_order.map(|_| (ttt_recipe.clone(), trainable));
    let mut notes = report_notes(&report, caseops, &regridded, args.byte_sidecar.is_some());
    notes.extend(stream_notes(&tokenizer, vocab_size, &tokens));
    if let Some((prior, prior_bytes)) = &tilt_prior {
        let (one, two) = prior.entries();
        notes.push(Note {
            id: "ngram_tilt",
            title: format!(
                "logits tilted by a fixed n-gram prior of {prior_bytes} bytes carried next to the weights (+{} per \
                 matching prefix); the tilted row is renormalized by the softmax",
                args.ngram_tilt_beta * 0.5
            ),
            evidence: vec![
                format!("{one} one-token and {two} two-token prefixes with a predicted next token"),
                "the row predicting x[t+1] is tilted by the prefixes ending at x[t−1], as the seed indexes them \
                 (off by one: x[t] is ignored)"
                    .into(),
            ],
        });
    }
    let fake_quant = matches!(&arch, Architecture::Gpt(c) if c.eval_fake_quant);
    let canonical = match canonical_args(&args, fake_quant) {
        Some((c, changes)) if args.canonical => {
            let (_, c_json) = run_inner(c, false)
                .with_context(|| format!("the canonical counterpart of {}", report.method))?;
            let c_bpb = c_json["val_bpb"].as_f64().unwrap_or(f64::NAN);
            notes.push(Note {
                id: "declared_vs_canonical",
                title: format!(
                    "declared {} scores {:.6} bpb, its canonical counterpart {} {c_bpb:.6} ({:+.6})",
                    report.method,
                    report.val_bpb,
                    c_json["procedure"].as_str().unwrap_or("?"),
                    report.val_bpb - c_bpb
                ),
                evidence: changes.clone(),
            });
            Some(json!({
                "procedure": c_json["procedure"],
                "val_bpb": c_json["val_bpb"],
                "val_loss": c_json["val_loss"],
                "coverage": c_json["coverage"],
                "findings": c_json["findings"],
                "changes": changes,
                "declared_minus_canonical_bpb": report.val_bpb - c_bpb,
            }))
        }
        None if args.canonical => Some(json!({
            "procedure": report.method,
            "val_bpb": report.val_bpb,
            "changes": [],
            "declared_minus_canonical_bpb": 0.0,
        })),
        _ => None,
    };
    let findings = Findings {
        notes: &notes,
        report: &report,
        record: &record,
        probes: probes.as_ref(),
        size: size.as_ref(),
        ttt: ttt_info.as_ref(),
    };
    let out = Summary {
        args: &args,
        arch: &arch,
        tokenizer: &tokenizer,
        seq_len,
        form,
        windows,
    };
    let mut report_json = out.json(&findings);
    if let Some(c) = canonical {
        report_json["canonical"] = c;
    }
    if print {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report_json)?);
        } else {
            out.print(&findings);
        }
    }
    let failed = probes
        .as_ref()
        .is_some_and(|p| p.probes.iter().any(|r| !r.passed))
        || size.as_ref().and_then(|s| s.under_budget()) == Some(false);
    let code = if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    };
    Ok((code, report_json))
}

fn gpt_config(args: &VerifyArgs, carried: Option<serde_json::Value>) -> Result<ModelConfig> {
    let mut cfg = match (&args.config, carried) {
        _ if args.preset.is_some() => {
            let name = args.preset.as_deref().unwrap_or_default();
            match presets::preset(name) {
                Some(p) => p.config,
                None => bail!(
                    "no preset named {name:?}; known: {}",
                    presets::presets()
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        (Some(p), _) => ModelConfig::load(p)?,
        (None, Some(v)) => {
            let cfg: ModelConfig = serde_json::from_value(v)
                .with_context(|| format!("{}: the config it carries", args.model.display()))?;
            cfg.validate().map_err(|m| {
                anyhow::anyhow!("{}: the config it carries: {m}", args.model.display())
            })?;
            cfg
        }
        (None, None) => bail!(
            "{}: carries no model config; pass --config CONFIG.json",
            args.model.display()
        ),
    };
    if args.score_stored_weights {
        cfg.eval_fake_quant = false;
    }
    Ok(cfg)
}

/// Whether a config file names seed 001's byte-patch JEPA (`"architecture": "byte_patch_jepa"`).
fn names_patch_jepa(path: &std::path::Path) -> Result<bool> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: bad model config", path.display()))?;
    Ok(PatchJepaConfig::is_named_in(&json))
}

/// The model family a config describes.
enum Architecture {
    Gpt(ModelConfig),
    PatchJepa(PatchJepaConfig),
}

impl Architecture {
    fn vocab_size(&self) -> usize {
        match self {
            Architecture::Gpt(c) => c.vocab_size,
            Architecture::PatchJepa(c) => c.vocab_size,
        }
    }

    fn train_seq_len(&self) -> usize {
        match self {
            Architecture::Gpt(c) => c.train_seq_len,
            Architecture::PatchJepa(c) => c.train_seq_len,
        }
    }

    fn parameter_count(&self) -> usize {
        match self {
            Architecture::Gpt(c) => c.parameter_count(),
            Architecture::PatchJepa(c) => c.parameter_count(),
        }
    }
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
}

/// The GPT a procedure written for the records' model needs, or an error naming the procedure.
fn gpt_only<'a>(built: &'a Option<Built>, what: &str) -> Result<&'a Gpt> {
    match built {
        Some(Built::Gpt(m)) => Ok(m),
        _ => bail!("{what} runs on the records' GPT only, not on the byte-patch JEPA"),
    }
}

/// Something the evaluation measured that a reviewer must weigh, with its evidence.
struct Note {
    id: &'static str,
    title: String,
    evidence: Vec<String>,
}

/// The findings a run's own measurements support: targets scored more than once or never, weights the model
/// changes at evaluation time, CaseOps tokens scored without their byte sidecar.
fn report_notes(
    r: &EvalReport,
    caseops: bool,
    regridded: &[(String, f32, f32)],
    sidecar: bool,
) -> Vec<Note> {
    let mut notes = Vec::new();
    let c = &r.coverage;
    if c.scored_more_than_once > 0 {
        notes.push(Note {
            id: "targets_scored_more_than_once",
            title: format!(
                "{} targets scored more than once (up to {} times): the score is not single-pass (C4)",
                c.scored_more_than_once, c.max_times
            ),
            evidence: vec![format!("{} targets, {} scored exactly once", c.targets, c.scored_once)],
        });
    }
    if c.unscored > 0 {
        notes.push(Note {
            id: "targets_never_scored",
            title: format!("{} of {} targets are never scored", c.unscored, c.targets),
            evidence: vec![format!("{} scored at least once", c.targets - c.unscored)],
        });
    }
    if !regridded.is_empty() {
        let mut worst: Vec<&(String, f32, f32)> = regridded.iter().collect();
        worst.sort_by(|a, b| b.2.total_cmp(&a.2));
        notes.push(Note {
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
        notes.push(Note {
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
fn stream_notes(tokenizer: &Tokenizer, vocab_size: usize, tokens: &[u16]) -> Vec<Note> {
    let table = tokenizer.byte_table(vocab_size);
    audit::audit(tokenizer, &table, tokens)
        .findings
        .into_iter()
        .filter_map(|f| {
            let id = match f.code {
                "documents_not_delimited" => "validation_set_not_canonical",
                "not_invertible" => "tokenizer_not_invertible",
                _ => return None,
            };
            Some(Note {
                id,
                title: f.message,
                evidence: vec![format!("byte audit finding {}", f.code)],
            })
        })
        .collect()
}

struct Findings<'a> {
    notes: &'a [Note],
    report: &'a EvalReport,
    record: &'a RunRecord,
    probes: Option<&'a ProbeReport>,
    size: Option<&'a SizeCheck>,
    ttt: Option<&'a (Value, usize)>,
}

struct Summary<'a> {
    args: &'a VerifyArgs,
    arch: &'a Architecture,
    tokenizer: &'a Tokenizer,
    seq_len: usize,
    form: WindowForm,
    windows: usize,
}

/// The submission.json `compliance` vocabulary, each value decided by a measurement (null: not measured here),
/// with the measurement that decided it.
fn compliance(f: &Findings) -> (Value, Value) {
    let probe = |id: &str| f.probes.and_then(|p| p.passed(id));
    let both = |a: Option<bool>, b: Option<bool>| match (a, b) {
        (Some(x), Some(y)) => Some(x && y),
        _ => None,
    };
    let t = &f.record.training;
    let ordering_full_run = t.steps_using_unscored_targets == 0
        && t.steps_before_first_score == 0
        && t.steps_after_last_score == 0;
    let score_first_ttt = f.ttt.map(|_| {
        ordering_full_run
            && probe("ttt_ordering").unwrap_or(true)
            && probe("c3_score_before_update").unwrap_or(true)
    });
    let single_pass = f.record.coverage.exactly_once && probe("c4_single_pass").unwrap_or(true);
    let values = json!({
        "artifact_under_16mb": f.size.and_then(|s| s.under_budget()),
        "score_first_ttt": score_first_ttt,
        "no_ngram_cache": probe("c2_normalized"),
        "no_slot": both(probe("c1_causal"), probe("c3_score_before_update")),
        "causal": probe("c1_causal"),
        "normalized": probe("c2_normalized"),
        "score_before_update": probe("c3_score_before_update"),
        "single_pass": single_pass,
    });
    let basis = json!({
        "artifact_under_16mb": match f.size {
            None => "the model is not an artifact",
            Some(s) if s.code_bytes.is_none() && s.under_budget().is_none() =>
                "artifact bytes only; pass --code train_gpt.py to count the code",
            Some(_) => "artifact file bytes + counted code bytes ≤ 16,000,000",
        },
        "score_first_ttt": if f.ttt.is_some() {
            "optimizer steps checked against scored targets over the full run, plus the C3 and TTT-ordering probes when run"
        } else {
            "the evaluated procedure does not train"
        },
        "no_ngram_cache": "C2 normalization probe (hashed caches give rows summing far above 1)",
        "no_slot": "C1 and C3 probes (scored-region deltas move earlier losses and the target's own row)",
        "causal": "C1 probe",
        "normalized": "C2 probe",
        "score_before_update": "C3 probe",
        "single_pass": "every target's score count over the full run (and the C4 probe)",
    });
    (values, basis)
}

impl Summary<'_> {
    fn json(&self, f: &Findings) -> Value {
        let r = f.report;
        let (values, basis) = compliance(f);
        let receipts = &f.record.receipts;
        json!({
            "model": self.args.model.display().to_string(),
            "tokenizer": self.tokenizer.name(),
            "parameters": self.arch.parameter_count(),
            "procedure": r.method,
            "method": self.form.name(),
            "device": self.args.compute.device,
            "precision": self.args.compute.precision,
            "generic_ops": self.args.compute.generic_ops,
            "seq_len": self.seq_len,
            "stride": match self.form {
                WindowForm::NonOverlapping | WindowForm::DocIsolated { .. } => None,
                WindowForm::Sliding { stride }
                | WindowForm::LegacySliding { stride }
                | WindowForm::LegacySlidingFull { stride }
                | WindowForm::FullWindows { stride } => Some(stride),
            },
            "windows": self.windows,
            "val_loss": r.val_loss,
            "val_bpb": r.val_bpb,
            "nll_sum": r.sums.nll_sum,
            "targets": r.sums.targets,
            "bytes": r.sums.bytes,
            "coverage": r.coverage,
            "seconds": r.seconds,
            "targets_per_second": r.sums.targets as f64 / r.seconds.max(1e-9),
            "ttt": f.ttt.map(|(recipe, trainable)| json!({
                "recipe": recipe,
                "trainable_parameters": trainable,
                "chunks": receipts.len(),
                "training": f.record.training,
            })),
            "receipts": {
                "count": receipts.len(),
                "chain": f.record.chain_head(),
                "first": receipts.first(),
                "last": receipts.last(),
            },
            "probes": f.probes,
            "size": f.size.map(|s| json!({
                "artifact_bytes": s.artifact_bytes,
                "code_bytes": s.code_bytes,
                "total_bytes": s.total(),
                "budget_bytes": BUDGET_BYTES,
                "headroom_bytes": BUDGET_BYTES as i64 - s.total() as i64,
            })),
            "compliance": values,
            "compliance_basis": basis,
            "findings": f.notes.iter().map(|n| json!({
                "id": n.id,
                "title": n.title,
                "evidence": n.evidence,
            })).collect::<Vec<_>>(),
        })
    }

    fn print(&self, f: &Findings) {
        let r = f.report;
        println!(
            "model        {} ({} parameters)",
            self.args.model.display(),
            self.arch.parameter_count()
        );
        let stride = match self.form {
            WindowForm::NonOverlapping => String::new(),
            WindowForm::DocIsolated {
                batch_seqs,
                world_size,
            } => format!(
                ", {batch_seqs} sequences per document-isolated buffer, {world_size} rank(s)"
            ),
            WindowForm::Sliding { stride }
            | WindowForm::LegacySliding { stride }
            | WindowForm::LegacySlidingFull { stride }
            | WindowForm::FullWindows { stride } => {
                format!(", stride {stride}")
            }
        };
        let over = if r.method == self.form.name() {
            String::new()
        } else {
            format!(" over {} windows", self.form.name())
        };
        println!(
            "evaluation   {}{over} (seq_len {}{stride}, {} windows)",
            r.method, self.seq_len, self.windows
        );
        if let Some((recipe, trainable)) = f.ttt {
            let t = &f.record.training;
            println!(
                "ttt          {} receipts, {} steps, {} trainable parameters; recipe {}",
                f.record.receipts.len(),
                t.steps,
                trainable,
                recipe
            );
        }
        println!("val_loss     {:.8} nats/target", r.val_loss);
        println!("val_bpb      {:.8}", r.val_bpb);
        println!(
            "targets      {} scored, {} bytes",
            r.sums.targets, r.sums.bytes
        );
        let c = &r.coverage;
        if c.exactly_once {
            println!(
                "coverage     every target in [0, {}) scored exactly once",
                c.targets
            );
        } else {
            println!(
                "coverage     NOT exactly once: {} unscored, {} scored more than once (up to {} times) of {}",
                c.unscored, c.scored_more_than_once, c.max_times, c.targets
            );
        }
        println!(
            "receipts     {} (chain {})",
            f.record.receipts.len(),
            &f.record.chain_head()[..16]
        );
        println!(
            "time         {:.2} s ({:.0} targets/s)",
            r.seconds,
            r.sums.targets as f64 / r.seconds.max(1e-9)
        );
        if let Some(p) = f.probes {
            println!(
                "probes       {} runs of {} on the first {} targets ({:.1} s)",
                p.runs, p.procedure, p.prefix_targets, p.seconds
            );
            for probe in &p.probes {
                println!(
                    "  {}  {}: {}",
                    if probe.passed { "PASS" } else { "FAIL" },
                    probe.title,
                    probe.measured
                );
                if !probe.passed {
                    for e in &probe.evidence {
                        println!("          {e}");
                    }
                }
            }
        }
        if let Some(s) = f.size {
            let code = s
                .code_bytes
                .map(|c| format!(" + code {c}"))
                .unwrap_or_else(|| " (code not counted: pass --code)".into());
            println!(
                "size         artifact {}{code} = {} of {} bytes ({})",
                s.artifact_bytes,
                s.total(),
                BUDGET_BYTES,
                match s.under_budget() {
                    Some(true) => "under the cap",
                    Some(false) => "OVER THE CAP",
                    None => "undecided",
                }
            );
        }
        let (values, _) = compliance(f);
        let shown: Vec<String> = values
            .as_object()
            .expect("an object")
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("compliance   {}", shown.join(" "));
        for n in f.notes {
            println!("finding      {}", n.title);
            for e in &n.evidence {
                println!("               {e}");
            }
        }
    }
}

/// Safetensors load as stored; anything else goes through the artifact reader and is dequantized to f32. Returns the
/// config a pgolf artifact carries, if any.
#[allow(clippy::type_complexity)]
fn load_weights(
    path: &std::path::Path,
    device: &Device,
) -> Result<(
    weights::StateDict,
    Option<serde_json::Value>,
    bool,
    Vec<(String, Vec<u8>)>,
)> {
    let head = {
        use std::io::Read;
        let mut h = [0u8; 9];
        let mut f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        let n = f
            .read(&mut h)
            .with_context(|| format!("{}", path.display()))?;
        h[..n].to_vec()
    };
    let is_safetensors = head.len() == 9 && head[8] == b'{';
    if is_safetensors {
        return Ok((
            weights::load_safetensors(path, device)?,
            None,
            false,
            Vec::new(),
        ));
    }
    let artifact = pgolf::pack::inspect::load_artifact(path, &pgolf::limits::current())?;
    let mut state = weights::StateDict::new();
    for t in &artifact.tensors {
        let values = t.dequantize();
        state.insert(
            t.name.clone(),
            candle_core::Tensor::from_vec(values, t.shape.clone(), device)?,
        );
    }
    Ok((state, artifact.config, true, artifact.bundled))
}
