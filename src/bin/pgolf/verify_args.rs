//! `pgolf verify`'s flags. Each is one field of [`pgolf::verify::flags::VerifyFlags`] under the same name; a flag with
//! a default shows the library's ([`flags::defaults`]) and reaches the library only when given, so that the
//! resolution can tell a flag given from one left at its default.

use std::path::PathBuf;

use clap::{ArgMatches, Args, ValueEnum};
use pgolf::verify::flags::{self, PlantedKind, VerifyFlags};
use pgolf::verify::spec::LoraRecipeName;

use crate::compute::ComputeArgs;
use crate::given::given;

/// Deliberately illegal procedures, for seeing each probe fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlantedArg {
    /// A hashed n-gram cache blended only at the realized token (PR #886): fails C2.
    NgramCache,
    /// A per-window hidden delta optimized on the window's scored targets (PR #1240): fails C1 and C3.
    Slot,
    /// TTT that trains on each chunk before scoring it: fails C1, C3 and TTT ordering.
    AdaptThenScore,
    /// Score-first TTT preceded by a warm-up step on validation tokens: fails TTT ordering.
    WarmupOnUnscored,
}

/// The LoRA TTT recipes, by the record that runs each (the dates alone are accepted too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LoraRecipeArg {
    /// rec/2026-03-17_LoRA_TTT's `eval_val_ttt_lora`: q, v and head adapters, Adam, A drawn again per batch.
    #[value(name = "rec-2026-03-17", alias = "2026-03-17")]
    Rec20260317,
    /// rec/2026-04-27's `eval_val_ttt_phased` (and rec/2026-04-10's LoRA TTT): adapters on q, k, v, o, the MLP
    /// and the head scaled by alpha/rank, AdamW, A kept warm, batches queued by document length, and its global
    /// score-first SGD phases on the base weights.
    #[value(name = "rec-2026-04-27", alias = "2026-04-27")]
    Rec20260427,
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
    /// `rec-2026-04-27`; docs/ARCHITECTURES.md). With no evaluation flag, the record's declared evaluation runs.
    #[arg(long)]
    preset: Option<String>,
    /// Validation shards (glob; sorted; `*_bytes_*` sidecars skipped).
    #[arg(long)]
    val: String,
    /// SentencePiece `.model` file, or `byte260`.
    #[arg(long)]
    tokenizer: String,
    /// The evaluation's sequence length, the record's EVAL_SEQ_LEN (default: the config's train_seq_len): windows,
    /// the truncation rule, and the global phases of phased TTT unless --eval-seq-len sets theirs.
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
    #[arg(long, default_value_t = flags::defaults().mixer.max_order)]
    mixer_order: usize,
    /// Mixer: hash buckets per order, a power of two (NGRAM_BUCKETS).
    #[arg(long, default_value_t = flags::defaults().mixer.buckets)]
    mixer_buckets: usize,
    /// Mixer: tokens counted before it switches on (MIXER_MIN_TOKENS).
    #[arg(long, default_value_t = flags::defaults().mixer.min_tokens)]
    mixer_min_tokens: usize,
    /// Mixer: targets per chunk; counts are updated after each chunk is scored (TTT_CHUNK_TOKENS).
    #[arg(long, default_value_t = flags::defaults().mixer.chunk_tokens)]
    mixer_chunk_tokens: usize,
    /// Mixer: logit temperature (TTT_TEMPERATURE).
    #[arg(long, default_value_t = flags::defaults().mixer.temperature)]
    mixer_temperature: f32,
    /// Mixer: α = base + range·σ(2(H − center)) (ALPHA_BASE, ALPHA_RANGE, ALPHA_CENTER).
    #[arg(long, default_value_t = flags::defaults().mixer.alpha_base)]
    mixer_alpha_base: f32,
    #[arg(long, default_value_t = flags::defaults().mixer.alpha_range)]
    mixer_alpha_range: f32,
    #[arg(long, default_value_t = flags::defaults().mixer.alpha_center)]
    mixer_alpha_center: f32,
    /// Seed 004's NGramCache blend (PR #1499's default sliding evaluation): exact context counts pre-filled from
    /// training tokens (--ngram-prefill) and extended with scored targets, blended with a weight that depends on
    /// the target's own loss.
    #[arg(long)]
    ngram_blend: bool,
    /// NGramCache: highest order (NGRAM_ORDER; contexts of up to order − 1 tokens).
    #[arg(long, default_value_t = flags::defaults().ngram_order)]
    ngram_order: usize,
    /// NGramCache: base blend weight (NGRAM_ALPHA).
    #[arg(long, default_value_t = flags::defaults().ngram_alpha)]
    ngram_alpha: f64,
    /// NGramCache: training shards (glob) the cache is pre-filled from, as the seed reads fineweb_train_*.bin.
    #[arg(long, requires = "ngram_blend")]
    ngram_prefill: Option<String>,
    /// NGramCache: how many training tokens pre-fill it (NGRAM_PRETRAIN_TOKENS).
    #[arg(long, default_value_t = flags::defaults().ngram_prefill_tokens)]
    ngram_prefill_tokens: usize,
    /// Seed 002's n-gram logit tilt (PR #1666): the soft-capped logits raised by β/2 at the next token a fixed
    /// prior predicts from the previous one and two tokens (the artifact's bundled "ngram" entry, or --ngram-prior).
    #[arg(long, conflicts_with_all = ["ngram_blend", "mixer", "ttt", "planted", "doc_isolated"])]
    ngram_tilt: bool,
    /// The tilt's prior as a file (zlib over a pickle, as the seed's build_ngram_table.py writes it), instead of
    /// the artifact's bundled one.
    #[arg(long, requires = "ngram_tilt")]
    ngram_prior: Option<PathBuf>,
    /// The tilt's β (NGRAM_TILT_BETA); each matching prefix adds β/2.
    #[arg(long, default_value_t = flags::defaults().ngram_tilt_beta, requires = "ngram_tilt")]
    ngram_tilt_beta: f64,
    /// The records' VarLen eval_val (rec/2026-04-10 on): flat buffers of --batch-seqs sequences of --seq-len,
    /// attention isolated to each document (split at BOS and into pieces of at most --seq-len).
    #[arg(long, conflicts_with = "stride")]
    doc_isolated: bool,
    /// CaseOps per-token byte sidecar shards (glob): bytes come from it instead of the tokenizer's table.
    #[arg(long)]
    byte_sidecar: Option<String>,
    /// Windows per forward batch (the window procedures; --doc-isolated: sequences per flat buffer).
    #[arg(long, default_value_t = flags::defaults().batch_seqs)]
    batch_seqs: usize,
    #[command(flatten)]
    compute: ComputeArgs,
    /// Score-first test-time training (the records' recipe): score each chunk, then train on it.
    #[arg(long)]
    ttt: bool,
    /// TTT: targets per chunk (TTT_CHUNK_TOKENS).
    #[arg(long, default_value_t = flags::defaults().ttt.chunk_tokens)]
    ttt_chunk_tokens: usize,
    /// TTT: epochs over each scored chunk (TTT_EPOCHS).
    #[arg(long, default_value_t = flags::defaults().ttt.epochs)]
    ttt_epochs: usize,
    /// TTT: base SGD learning rate, cosine-decayed across chunks (TTT_LR; rec/2026-04-09 used 0.005).
    #[arg(long, default_value_t = flags::defaults().ttt.lr)]
    ttt_lr: f64,
    /// TTT: SGD momentum (TTT_MOMENTUM).
    #[arg(long, default_value_t = flags::defaults().ttt.momentum)]
    ttt_momentum: f64,
    /// TTT: sequences per optimizer step and rank (TTT_BATCH_SEQS).
    #[arg(long, default_value_t = flags::defaults().ttt.batch_seqs)]
    ttt_batch_seqs: usize,
    /// TTT: sequences per backward pass (0: the whole batch). The step still averages the whole batch (the same
    /// gradient up to rounding); it bounds GPU memory at full size.
    #[arg(long, default_value_t = 0)]
    ttt_micro_batch: usize,
    /// TTT: gradient-norm clip (TTT_GRAD_CLIP).
    #[arg(long, default_value_t = flags::defaults().ttt.grad_clip)]
    ttt_grad_clip: f64,
    /// TTT: keep the first N blocks fixed (TTT_FREEZE_BLOCKS). With --mixer, seed 003's reading: the last N
    /// blocks train, with every weight named norm, scale, lm_head or tok_emb (0: all weights).
    #[arg(long, default_value_t = flags::defaults().ttt.freeze_blocks)]
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
    /// Per-document LoRA test-time training with a record's recipe (default rec-2026-03-17): documents in
    /// batches, each with its own adapters; each chunk scored, then an optimizer step. The knobs below override the
    /// recipe's values.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "rec-2026-03-17")]
    lora_ttt: Option<LoraRecipeArg>,
    /// The same as --lora-ttt rec-2026-04-27: rec/2026-04-27's `eval_val_ttt_phased`, the score of every record
    /// from 2026-04-14 on.
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
    /// Phased TTT (rec-2026-04-27): the global SGD phases fall after this many documents (in queue order) are
    /// scored (PHASED_TTT_PREFIX_DOCS; 2500; 0: none).
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
    /// Phased TTT: tokens per chunk of a phase's documents (GLOBAL_TTT_CHUNK_TOKENS; 32768; the last chunk is
    /// never trained on).
    #[arg(long, requires = "lora_procedure")]
    global_ttt_chunk_tokens: Option<usize>,
    /// Phased TTT: sequences per SGD step (GLOBAL_TTT_BATCH_SEQS; 32).
    #[arg(long, requires = "lora_procedure")]
    global_ttt_batch_seqs: Option<usize>,
    /// Phased TTT: gradient-norm clip (GLOBAL_TTT_GRAD_CLIP; 1.0).
    #[arg(long, requires = "lora_procedure")]
    global_ttt_grad_clip: Option<f64>,
    /// Phased TTT: the global steps' sequence length, when it is not the evaluation's (--seq-len; the record has
    /// one EVAL_SEQ_LEN for both).
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
    /// --doc-isolated's per-rank ranges, each truncated to whole buffers, and LoRA TTT's ranks in lockstep. Default
    /// 1; a preset's declared evaluation: its record's 8.
    #[arg(long)]
    world_size: Option<usize>,
    /// Run the legality probes (C1–C4, TTT ordering, determinism) on a prefix of the stream.
    #[arg(long)]
    probes: bool,
    /// Targets in the probes' prefix (default: three TTT chunks with TTT, else 16384).
    #[arg(long, requires = "probes")]
    probe_targets: Option<usize>,
    /// Re-runs with one token replaced (each checks C1 and C3).
    #[arg(long, default_value_t = flags::defaults().probe_perturbations)]
    probe_perturbations: usize,
    /// Rows checked for normalization (C2).
    #[arg(long, default_value_t = flags::defaults().probe_rows)]
    probe_rows: usize,
    /// Seed of the probes' positions and replacement tokens.
    #[arg(long, default_value_t = flags::defaults().probe_seed)]
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
    /// Also run the canonical legal counterpart of the declared procedure on the same model and stream, and report
    /// both: exactly-once sliding windows instead of a re-scoring or full-windows-only form, the normalized mixture
    /// instead of the seed's mixer, no n-gram blend, the stored weights without evaluation-time fake quantization.
    #[arg(long, conflicts_with = "planted")]
    canonical: bool,
    /// Score the stored weights as they are: ignore a config's evaluation-time fake quantization (eval_fake_quant).
    #[arg(long)]
    score_stored_weights: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Resolve the flags (preset and its declared evaluation, recipe, overrides, defaults) and print the spec that
    /// would run, as JSON, without reading any input.
    #[arg(long)]
    pub dry_run: bool,
}

/// The library's flags from the parsed ones: `copied` fields as they are, `defaulted` ones (a flag with a default)
/// only where the command line gave them, then the fields written out.
macro_rules! to_flags {
    ($args:ident, $m:ident, copied { $($c:ident),* $(,)? }, defaulted { $($d:ident),* $(,)? }, $($rest:tt)*) => {
        VerifyFlags {
            $($c: $args.$c.clone(),)*
            $($d: given($m, stringify!($d), &$args.$d),)*
            $($rest)*
        }
    };
}

impl VerifyArgs {
    /// The library's flags.
    pub fn flags(&self, m: &ArgMatches) -> VerifyFlags {
        to_flags!(self, m,
            copied {
                model, config, preset, val, tokenizer, seq_len, stride, legacy_sliding, legacy_sliding_full,
                full_windows, mixer, mixer_normalized, ngram_blend, ngram_prefill, ngram_tilt, ngram_prior,
                doc_isolated, byte_sidecar, ttt, ttt_polyak, ttt_adaptive_lr_max, ttt_byte_weighted, phased_ttt,
                ttt_lora_rank, ttt_lora_lr, ttt_chunk_size, ttt_eval_seq_len, ttt_batch_size, beta1, beta2,
                ttt_lora_alpha, ttt_warm_start_a, ttt_weight_decay, ttt_grad_steps, phased_ttt_prefix_docs,
                phased_ttt_num_phases, global_ttt_lr, global_ttt_momentum, global_ttt_epochs,
                global_ttt_chunk_tokens, global_ttt_batch_seqs, global_ttt_grad_clip, eval_seq_len, lora_init,
                world_size, probes, probe_targets, code, receipts, html, canonical, score_stored_weights,
            },
            defaulted {
                mixer_order, mixer_buckets, mixer_min_tokens, mixer_chunk_tokens, mixer_temperature,
                mixer_alpha_base, mixer_alpha_range, mixer_alpha_center, ngram_order, ngram_alpha,
                ngram_prefill_tokens, ngram_tilt_beta, batch_seqs, ttt_chunk_tokens, ttt_epochs, ttt_lr,
                ttt_momentum, ttt_batch_seqs, ttt_micro_batch, ttt_grad_clip, ttt_freeze_blocks, ttt_seed,
                ttt_seeds, probe_perturbations, probe_rows, probe_seed,
            },
            compute: self.compute.flags(),
            lora_ttt: self.lora_ttt.map(|r| match r {
                LoraRecipeArg::Rec20260317 => LoraRecipeName::Rec20260317,
                LoraRecipeArg::Rec20260427 => LoraRecipeName::Rec20260427,
            }),
            planted: self.planted.map(|p| match p {
                PlantedArg::NgramCache => PlantedKind::NgramCache,
                PlantedArg::Slot => PlantedKind::Slot,
                PlantedArg::AdaptThenScore => PlantedKind::AdaptThenScore,
                PlantedArg::WarmupOnUnscored => PlantedKind::WarmupOnUnscored,
            }),
        )
    }
}
