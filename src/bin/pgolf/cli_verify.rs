//! `pgolf verify`: the flags, a progress bar per stage and the report printed as text or JSON. What a verification
//! means — the spec and its rules, the canonical counterpart, the procedure, findings and compliance — lives in
//! `pgolf::verify::run` and `pgolf::verify::report`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, ValueEnum};
use pgolf::verify::report::VerifyReport;
use pgolf::verify::run::{self, VerifySpec};
use pgolf::verify::windows::WindowForm;

use crate::compute::ComputeArgs;
use crate::progress;

/// Deliberately illegal procedures, for seeing each probe fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PlantedArg {
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
#[group(id = "lora_procedure", args = ["lora_ttt", "phased_ttt"], multiple = false)]
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
    /// Per-document LoRA test-time training: documents in batches, each with its own adapters; each chunk scored,
    /// then an optimizer step. `2026-03-17` (the default): rec/2026-03-17_LoRA_TTT's `eval_val_ttt_lora` (q, v and
    /// head adapters, Adam, A drawn again per batch). `2026-04-27`: the per-document part of rec/2026-04-27's
    /// `eval_val_ttt_phased` (and rec/2026-04-10's LoRA TTT): adapters on q, k, v, o, the MLP and the head scaled by
    /// alpha/rank, AdamW, A kept warm, batches queued by document length, and its global score-first SGD phases on
    /// the base weights (--phased-ttt-prefix-docs 0: none, as 04-10). The knobs below override the recipe's values.
    #[arg(long, num_args = 0..=1, default_missing_value = "2026-03-17", value_parser = ["2026-03-17", "2026-04-27"])]
    lora_ttt: Option<String>,
    /// The same as --lora-ttt 2026-04-27: rec/2026-04-27's `eval_val_ttt_phased`, the score of every record from
    /// 2026-04-14 on.
    #[arg(long, conflicts_with = "lora_ttt")]
    phased_ttt: bool,
    /// LoRA TTT: adapter rank (TTT_LORA_RANK; 8 / 80).
    #[arg(long, requires = "lora_procedure")]
    ttt_lora_rank: Option<usize>,
    /// LoRA TTT: learning rate (TTT_LORA_LR; 0.01 / 1e-4).
    #[arg(long, requires = "lora_procedure")]
    ttt_lora_lr: Option<f64>,
    /// LoRA TTT: targets per document chunk (TTT_CHUNK_SIZE; 256 / 48).
    #[arg(long, requires = "lora_procedure")]
    ttt_chunk_size: Option<usize>,
    /// LoRA TTT: the longest window a chunk is scored in (TTT_EVAL_SEQ_LEN; 1024 / 2048).
    #[arg(long, requires = "lora_procedure")]
    ttt_eval_seq_len: Option<usize>,
    /// LoRA TTT: documents per batch (TTT_BATCH_SIZE; 64).
    #[arg(long, requires = "lora_procedure")]
    ttt_batch_size: Option<usize>,
    /// LoRA TTT: Adam β1 and β2 (BETA1/BETA2 for 03-17, 0.9 / 0.95; TTT_BETA1/TTT_BETA2 for 04-27, 0 / 0.99).
    #[arg(long, alias = "ttt-beta1", requires = "lora_procedure")]
    beta1: Option<f64>,
    #[arg(long, alias = "ttt-beta2", requires = "lora_procedure")]
    beta2: Option<f64>,
    /// LoRA TTT: scale the adapters by alpha / rank (TTT_LORA_ALPHA; 04-27: 144).
    #[arg(long, requires = "lora_procedure")]
    ttt_lora_alpha: Option<f64>,
    /// LoRA TTT: 1 keeps A across resets and zeroes only B (TTT_WARM_START_A; 04-27: 1).
    #[arg(long, requires = "lora_procedure", value_parser = clap::value_parser!(u8).range(0..=1))]
    ttt_warm_start_a: Option<u8>,
    /// LoRA TTT: AdamW's decoupled weight decay (TTT_WEIGHT_DECAY; 04-27: 0.5; 0 is Adam).
    #[arg(long, requires = "lora_procedure")]
    ttt_weight_decay: Option<f64>,
    /// LoRA TTT: optimizer steps per chunk (TTT_GRAD_STEPS; 1).
    #[arg(long, requires = "lora_procedure")]
    ttt_grad_steps: Option<usize>,
    /// Phased TTT (`--lora-ttt 2026-04-27`): the global SGD phases fall after this many documents (in queue order)
    /// are scored (PHASED_TTT_PREFIX_DOCS; 2500; 0: none).
    #[arg(long, requires = "lora_procedure")]
    phased_ttt_prefix_docs: Option<usize>,
    /// Phased TTT: number of global phases (PHASED_TTT_NUM_PHASES; 3).
    #[arg(long, requires = "lora_procedure")]
    phased_ttt_num_phases: Option<usize>,
    /// Phased TTT: SGD learning rate, cosine across a phase's chunks (GLOBAL_TTT_LR; 0.001).
    #[arg(long, requires = "lora_procedure")]
    global_ttt_lr: Option<f64>,
    /// Phased TTT: SGD momentum (GLOBAL_TTT_MOMENTUM; 0.9).
    #[arg(long, requires = "lora_procedure")]
    global_ttt_momentum: Option<f64>,
    /// Phased TTT: epochs over each chunk (GLOBAL_TTT_EPOCHS; 1).
    #[arg(long, requires = "lora_procedure")]
    global_ttt_epochs: Option<usize>,
    /// Phased TTT: tokens per chunk of a phase's documents (GLOBAL_TTT_CHUNK_TOKENS; 32768).
    #[arg(long, requires = "lora_procedure")]
    global_ttt_chunk_tokens: Option<usize>,
    /// Phased TTT: sequences per SGD step (GLOBAL_TTT_BATCH_SEQS; 32).
    #[arg(long, requires = "lora_procedure")]
    global_ttt_batch_seqs: Option<usize>,
    /// Phased TTT: gradient-norm clip (GLOBAL_TTT_GRAD_CLIP; 1.0).
    #[arg(long, requires = "lora_procedure")]
    global_ttt_grad_clip: Option<f64>,
    /// Phased TTT: the sequence length of the global steps (the record's EVAL_SEQ_LEN; 2048).
    #[arg(long, requires = "lora_procedure")]
    eval_seq_len: Option<usize>,
    /// LoRA TTT: seed of the adapters' A draws (uniform in ±1/√in).
    #[arg(long, default_value_t = 0, requires = "lora_procedure")]
    ttt_seed: u64,
    /// LoRA TTT: take every A from this safetensors file instead (the reference's own draws, in order: the first
    /// under the state dict's names, `lm_head_lora.A`, `q_loras.{i}.A`, `v_loras.{i}.A`, the k-th after it under
    /// `draw{k}.`; fixtures/generate_lora_ttt.py writes one).
    #[arg(long, requires = "lora_procedure", conflicts_with = "ttt_seed")]
    lora_init: Option<PathBuf>,
    /// LoRA TTT: also rerun with K seeds (--ttt-seed, +1, …) and report the mean, std and range of the BPB — how
    /// much of a claimed gain lies inside the procedure's own noise.
    #[arg(long, default_value_t = 0, requires = "lora_procedure")]
    ttt_seeds: usize,
    /// Replay W ranks, e.g. 8 to reproduce an 8×H100 run: TTT's per-rank sequence ranges with averaged gradients,
    /// --doc-isolated's per-rank ranges, each truncated to whole buffers, and LoRA TTT's ranks in lockstep
    /// (docs/VERIFY.md). Default 1; a preset's declared evaluation: its record's 8.
    #[arg(long)]
    world_size: Option<usize>,
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
    planted: Option<PlantedArg>,
    /// The submission's `train_gpt.py`, counted toward the 16,000,000-byte cap as the records count it.
    #[arg(long)]
    code: Option<PathBuf>,
    /// Write every receipt (one per scored chunk) to this JSON file.
    #[arg(long)]
    receipts: Option<PathBuf>,
    /// Also write the verification as one self-contained HTML file: score, per-chunk BPB, probes, compliance.
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
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

/// The spec field of each flag of the same name.
macro_rules! same_named {
    ($args:ident, { $($name:ident),* $(,)? }, { $($field:ident: $value:expr),* $(,)? }) => {
        VerifySpec { $($name: $args.$name.clone(),)* $($field: $value,)* }
    };
}

impl VerifyArgs {
    fn spec(&self) -> VerifySpec {
        same_named!(self, {
            model, config, preset, val, tokenizer, seq_len, stride, legacy_sliding, legacy_sliding_full,
            full_windows, mixer, mixer_normalized, mixer_order, mixer_buckets, mixer_min_tokens, mixer_chunk_tokens,
            mixer_temperature, mixer_alpha_base, mixer_alpha_range, mixer_alpha_center, ngram_blend, ngram_order,
            ngram_alpha, ngram_prefill, ngram_prefill_tokens, ngram_tilt, ngram_prior, ngram_tilt_beta, doc_isolated,
            byte_sidecar, batch_seqs, ttt, ttt_chunk_tokens, ttt_epochs, ttt_lr, ttt_momentum, ttt_batch_seqs,
            ttt_micro_batch, ttt_grad_clip, ttt_freeze_blocks, ttt_polyak, ttt_adaptive_lr_max, ttt_byte_weighted,
            probes, probe_targets, probe_perturbations, probe_rows, probe_seed, code, canonical,
            score_stored_weights,
        }, {
            lora_ttt: self.lora_recipe().map(|which| {
                use pgolf::verify::lora_ttt::LoraTttRecipe;
                let mut r = if which == "2026-04-27" {
                    LoraTttRecipe::rec_2026_04_27()
                } else {
                    LoraTttRecipe::default()
                };
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
                if let Some(p) = &mut r.phases {
                    p.prefix_docs = self.phased_ttt_prefix_docs.unwrap_or(p.prefix_docs);
                    p.num_phases = self.phased_ttt_num_phases.unwrap_or(p.num_phases);
                    p.lr = self.global_ttt_lr.unwrap_or(p.lr);
                    p.momentum = self.global_ttt_momentum.unwrap_or(p.momentum);
                    p.epochs = self.global_ttt_epochs.unwrap_or(p.epochs);
                    p.chunk_tokens = self.global_ttt_chunk_tokens.unwrap_or(p.chunk_tokens);
                    p.batch_seqs = self.global_ttt_batch_seqs.unwrap_or(p.batch_seqs);
                    p.grad_clip = self.global_ttt_grad_clip.unwrap_or(p.grad_clip);
                    p.seq_len = self.eval_seq_len.unwrap_or(p.seq_len);
                }
                if r.phases.as_ref().is_some_and(|p| p.prefix_docs == 0) {
                    r.phases = None;
                }
                run::LoraTttSpec {
                    recipe: r,
                    seed: self.ttt_seed,
                    init_file: self.lora_init.clone(),
                    seeds: self.ttt_seeds,
                }
            }),
            world_size: self.world_size.unwrap_or(1),
            declared_by: None,
            device: self.compute.device.clone(),
            precision: self.compute.precision,
            generic_ops: self.compute.generic_ops,
            planted: self.planted.map(|p| match p {
                PlantedArg::NgramCache => run::Planted::NgramCache,
                PlantedArg::Slot => run::Planted::Slot,
                PlantedArg::AdaptThenScore => run::Planted::AdaptThenScore,
                PlantedArg::WarmupOnUnscored => run::Planted::WarmupOnUnscored,
            }),
        })
    }
}

impl VerifyArgs {
    /// Whether any flag chooses the evaluation (window form, lengths, a procedure): without one, `--preset NAME`
    /// runs the evaluation its record declares (`--byte-sidecar` only says where its sidecar is).
    /// The LoRA TTT recipe asked for: `--lora-ttt [DATE]`, or `--phased-ttt` (04-27's).
    fn lora_recipe(&self) -> Option<&str> {
        if self.phased_ttt {
            Some("2026-04-27")
        } else {
            self.lora_ttt.as_deref()
        }
    }

    fn phase_flags_given(&self) -> bool {
        self.phased_ttt_prefix_docs.is_some()
            || self.phased_ttt_num_phases.is_some()
            || self.global_ttt_lr.is_some()
            || self.global_ttt_momentum.is_some()
            || self.global_ttt_epochs.is_some()
            || self.global_ttt_chunk_tokens.is_some()
            || self.global_ttt_batch_seqs.is_some()
            || self.global_ttt_grad_clip.is_some()
            || self.eval_seq_len.is_some()
    }

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
}

pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    if args.lora_recipe().is_some_and(|w| w != "2026-04-27") && args.phase_flags_given() {
        return Err(anyhow::anyhow!(
            "--phased-ttt-*, --global-ttt-* and --eval-seq-len set the global phases of --lora-ttt 2026-04-27; \
             the 2026-03-17 recipe has none"
        ));
    }
    let mut spec = args.spec();
    if args.preset.is_some() && !args.evaluation_flags_given() {
        spec = spec.declared_evaluation()?;
        if let Some(w) = args.world_size {
            spec.world_size = w;
        }
    }
    let mut inputs = vec![args.model.as_path()];
    inputs.extend(args.config.as_deref());
    inputs.extend(args.code.as_deref());
    for path in args.receipts.iter().chain(&args.html) {
        pgolf::output::refuse_inputs(path, &inputs)?;
    }
    let mut bar: Option<(String, indicatif::ProgressBar)> = None;
    let mut on_progress = |stage: &str, done: usize, total: usize| {
        if bar.as_ref().is_none_or(|(s, _)| s != stage) {
            if let Some((_, b)) = bar.take() {
                b.finish_and_clear();
            }
            bar = Some((stage.to_string(), progress::bar(0, stage, args.json)));
        }
        if let Some((_, b)) = &bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    };
    let report = run::verify(&spec, &pgolf::limits::current(), &mut on_progress)?;
    if let Some((_, b)) = bar.take() {
        b.finish_and_clear();
    }
    if let Some(path) = &args.receipts {
        let text = serde_json::to_string_pretty(&report.all_receipts)?;
        pgolf::output::write_file(path, &inputs, text.as_bytes())?;
    }
    if let Some(path) = &args.html {
        let text = pgolf::verify::html::verify_html(&report);
        pgolf::output::write_file(path, &inputs, text.as_bytes())?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report)?;
    }
    Ok(if report.failed() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(r: &VerifyReport) -> Result<()> {
    println!("model        {} ({} parameters)", r.model, r.parameters);
    if let Some(how) = &r.mixed_products {
        println!("precision    mixed: {how}");
    }
    if let Some(name) = &r.declared_by {
        println!("declared     the evaluation preset {name}'s record reports its score with");
    }
    let stride = match r.form {
        WindowForm::DocIsolated {
            batch_seqs,
            world_size,
        } => format!(", {batch_seqs} sequences per document-isolated buffer, {world_size} rank(s)"),
        other => other
            .stride()
            .map(|s| format!(", stride {s}"))
            .unwrap_or_default(),
    };
    let over = if r.procedure == r.method {
        String::new()
    } else {
        format!(" over {} windows", r.method)
    };
    if r.procedure.contains("lora") {
        // Per-document chunks and windows of the recipe's own lengths, not the window form's.
        println!(
            "evaluation   {} (documents in batches; each chunk scored in a window ending at it)",
            r.procedure
        );
    } else {
        println!(
            "evaluation   {}{over} (seq_len {}{stride}, {} windows)",
            r.procedure, r.seq_len, r.windows
        );
    }
    if let Some(t) = &r.ttt {
        println!(
            "ttt          {} receipts, {} steps, {} trainable parameters; recipe {}",
            r.receipts.count,
            t.training.steps,
            t.trainable_parameters,
            serde_json::to_value(&t.recipe)?
        );
    }
    println!("val_loss     {:.8} nats/target", r.val_loss);
    println!("val_bpb      {:.8}", r.val_bpb);
    if let Some(sp) = &r.seed_spread {
        println!(
            "seeds        {} reruns with seeds {}..={}: val_bpb mean {:.8}, std {:.2e}, range {:.8} – {:.8} ({:.2e})",
            sp.seeds.len(),
            sp.seeds.first().copied().unwrap_or(0),
            sp.seeds.last().copied().unwrap_or(0),
            sp.mean,
            sp.std,
            sp.min,
            sp.max,
            sp.max - sp.min
        );
    }
    println!("targets      {} scored, {} bytes", r.targets, r.bytes);
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
        r.receipts.count,
        &r.receipts.chain[..16]
    );
    println!(
        "time         {:.2} s ({:.0} targets/s)",
        r.seconds, r.targets_per_second
    );
    if let Some(p) = &r.probes {
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
    if let Some(s) = &r.size {
        let code = s
            .code_bytes
            .map(|c| format!(" + code {c}"))
            .unwrap_or_else(|| " (code not counted: pass --code)".into());
        println!(
            "size         artifact {}{code} = {} of {} bytes ({})",
            s.artifact_bytes,
            s.total_bytes,
            s.budget_bytes,
            match s.under_budget {
                Some(true) => "under the cap",
                Some(false) => "OVER THE CAP",
                None => "undecided",
            }
        );
    }
    let shown: Vec<String> = r
        .compliance
        .entries()
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::to_value(v).unwrap_or_default()))
        .collect();
    println!("compliance   {}", shown.join(" "));
    for n in &r.findings {
        println!("finding      {}", n.title);
        for e in &n.evidence {
            println!("               {e}");
        }
    }
    Ok(())
}
