//! Per-document LoRA test-time training, as rec/2026-03-17_LoRA_TTT's `eval_val_ttt_lora` runs it.
//!
//! Documents are found by BOS (each one's span includes the next document's BOS, so every target from the first BOS
//! on belongs to exactly one document); rank r of W takes documents [n·r/W, n·(r+1)/W), sorted stably by their
//! number of chunks, (len − 2) // chunk; batches of `batch_size` documents share one batched LoRA (each document its
//! own A and B) and one Adam. A document's targets are cut into chunks of `chunk_size`; chunk ci of every document of
//! the batch is scored in one forward pass over a window of up to `eval_seq_len` tokens ending at the chunk's end,
//! and then, for the documents whose chunk is not their last, one Adam step on the mean loss of the chunk's
//! positions (the batch's chunk window; a finished document's rows are masked out). Scores come first: the step
//! after chunk ci only changes what chunks after ci see.
//!
//! Randomness: each LoRA A is drawn uniform in ±1/√in when the batched LoRA is built (once at the start, at the
//! full batch size, and again for a smaller batch) and when it is reset (before each full batch); B starts at zero.
//! The draws come from a seeded generator, or from a file holding the reference's own draws in order
//! (the first under the state dict's names, `lm_head_lora.A`, `q_loras.{slot}.A`, …; the k-th after it under
//! `draw{k}.`), which reproduces the reference's run exactly. Every rank draws from its own generator, all seeded
//! alike as the records seed every rank; in a file, rank r > 0's draws carry the prefix `rank{r}.`.
//!
//! Ranks (`world_size` W) are replayed in one process, in lockstep: round j runs every rank's j-th batch (with the
//! length queue, queue entries jW … jW + W − 1, entry k on rank k mod W), and a global phase starts between rounds
//! once the documents scored reach its boundary (at most one phase per round). The records' ranks claim batches from
//! a shared counter and pause when a file flag appears, so which rank runs which batch, and how many batches are
//! scored before a phase, depend on timing there; the lockstep schedule is the one deterministic reading of it, and
//! `fixtures/generate_lora_ttt.py` runs the record's own code on two gloo ranks under it. In a phase, rank r trains
//! on its slice of each chunk's sequences and a step uses the ranks' gradients summed and divided by W (the
//! records' all-reduce).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::ledger::{Ledger, WeightsDigest, weights_digest};
use super::procedure::Procedure;
use super::softmax::log_softmax_row;
use super::{Result, VerifyError};
use crate::infer::lm::{CausalLm, LoraShapes};
use crate::infer::lora::{LoraAdapter, LoraSet, LoraTarget};
use crate::optim::Adam;

/// The recipe's knobs under the records' environment names (defaults: rec/2026-03-17).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoraTttRecipe {
    /// TTT_LORA_RANK
    pub rank: usize,
    /// TTT_LORA_LR
    pub lr: f64,
    /// TTT_CHUNK_SIZE: targets per document chunk.
    pub chunk_size: usize,
    /// TTT_EVAL_SEQ_LEN: the longest window a chunk is scored in.
    pub eval_seq_len: usize,
    /// TTT_BATCH_SIZE: documents per batch.
    pub batch_size: usize,
    /// BETA1, BETA2 of the adapters' Adam (eps 1e-10).
    pub beta1: f64,
    pub beta2: f64,
    /// The projections that get adapters in every layer pass (rec/2026-03-17: q and v), and the head.
    pub targets: Vec<LoraTarget>,
    pub head: bool,
    /// Ranks replayed one after another, each with its own documents, adapters and optimizer.
    pub world_size: usize,
    /// TTT_LORA_ALPHA: adapters scaled by alpha / rank (None: unscaled, rec/2026-03-17).
    pub alpha: Option<f64>,
    /// TTT_WARM_START_A: a reset zeroes B and keeps A (rec/2026-04-27), instead of drawing A again.
    pub warm_start_a: bool,
    /// TTT_WEIGHT_DECAY: AdamW's decoupled decay (0: Adam).
    pub weight_decay: f64,
    /// TTT_GRAD_STEPS: optimizer steps per chunk (a fresh forward pass before each after the first).
    pub grad_steps: usize,
    pub schedule: LoraSchedule,
    /// rec/2026-04-27's global phases (`eval_val_ttt_phased`): score-first SGD on the base weights over the
    /// documents scored so far, at phase boundaries (None: adapters only).
    pub phases: Option<GlobalPhases>,
}

/// The global SGD phases of `eval_val_ttt_phased` (`train_val_ttt_global_sgd_distributed`), under the records'
/// environment names.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GlobalPhases {
    /// PHASED_TTT_PREFIX_DOCS: the documents (in queue order) after which the phases fall.
    pub prefix_docs: usize,
    /// PHASED_TTT_NUM_PHASES: phase k (1-based) starts once prefix_docs·k/phases documents are scored.
    pub num_phases: usize,
    /// GLOBAL_TTT_LR (cosine over the phase's chunks), GLOBAL_TTT_MOMENTUM.
    pub lr: f64,
    pub momentum: f64,
    /// GLOBAL_TTT_EPOCHS over each chunk.
    pub epochs: usize,
    /// GLOBAL_TTT_CHUNK_TOKENS: the phase's documents, concatenated, cut into chunks; the last is never trained on.
    pub chunk_tokens: usize,
    /// GLOBAL_TTT_BATCH_SEQS sequences of `seq_len` (the model's EVAL_SEQ_LEN) per step.
    pub batch_seqs: usize,
    pub seq_len: usize,
    /// GLOBAL_TTT_GRAD_CLIP (0: none).
    pub grad_clip: f64,
}

/// How documents become batches and batches reach ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraSchedule {
    /// rec/2026-03-17: rank r takes documents [n·r/W, n·(r+1)/W), sorted stably by chunk count, in batches.
    RankSlices,
    /// rec/2026-04-10, 04-27 (`_build_ttt_global_batches`): all documents sorted stably by length, cut into
    /// batches, the batches sorted stably by their longest document, longest first; the records' ranks claim them
    /// from a shared counter (timing decides who gets which), pgolf gives batch k to rank k mod W.
    LengthQueue,
}

impl LoraTttRecipe {
    /// rec/2026-04-27's LoRA settings (its log's `Hyperparameters:`; the global phases are not part of this).
    pub fn rec_2026_04_27() -> Self {
        LoraTttRecipe {
            rank: 80,
            lr: 1e-4,
            chunk_size: 48,
            eval_seq_len: 2048,
            batch_size: 64,
            beta1: 0.0,
            beta2: 0.99,
            targets: vec![
                LoraTarget::Q,
                LoraTarget::K,
                LoraTarget::V,
                LoraTarget::O,
                LoraTarget::Mlp,
            ],
            head: true,
            world_size: 1,
            alpha: Some(144.0),
            warm_start_a: true,
            weight_decay: 0.5,
            grad_steps: 1,
            schedule: LoraSchedule::LengthQueue,
            phases: Some(GlobalPhases {
                prefix_docs: 2500,
                num_phases: 3,
                lr: 1e-3,
                momentum: 0.9,
                epochs: 1,
                chunk_tokens: 32_768,
                batch_seqs: 32,
                seq_len: 2048,
                grad_clip: 1.0,
            }),
        }
    }
}

impl LoraTttRecipe {
    /// Refuses knobs the procedure cannot run: zero sizes, a window shorter than a chunk, a learning rate that is
    /// not a finite non-negative number, and the same for the global phases.
    pub fn check(&self) -> Result<()> {
        let setup = |m: String| Err(VerifyError::Setup(m));
        if self.rank == 0
            || self.chunk_size == 0
            || self.batch_size == 0
            || self.world_size == 0
            || self.eval_seq_len < self.chunk_size
        {
            return setup(format!(
                "LoRA TTT: rank, chunk size, batch size and world size must be positive and the evaluation length \
                 ({}) at least the chunk size ({})",
                self.eval_seq_len, self.chunk_size
            ));
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return setup(format!(
                "LoRA TTT: learning rate {} is not a finite non-negative number",
                self.lr
            ));
        }
        if let Some(p) = &self.phases
            && (p.num_phases == 0
                || p.epochs == 0
                || p.chunk_tokens == 0
                || p.batch_seqs == 0
                || p.seq_len == 0
                || !(p.lr.is_finite() && p.lr >= 0.0)
                || !(p.momentum.is_finite() && (0.0..1.0).contains(&p.momentum))
                || !(p.grad_clip.is_finite() && p.grad_clip >= 0.0))
        {
            return setup(format!(
                "global TTT phases: the number of phases ({}), epochs ({}), chunk tokens ({}), batch sequences ({}) \
                 and sequence length ({}) must be positive, the learning rate ({}) and clip ({}) finite and \
                 non-negative, the momentum ({}) in [0, 1) (--phased-ttt-prefix-docs 0 turns the phases off)",
                p.num_phases,
                p.epochs,
                p.chunk_tokens,
                p.batch_seqs,
                p.seq_len,
                p.lr,
                p.grad_clip,
                p.momentum
            ));
        }
        Ok(())
    }
}

impl Default for LoraTttRecipe {
    fn default() -> Self {
        LoraTttRecipe {
            rank: 8,
            lr: 0.01,
            chunk_size: 256,
            eval_seq_len: 1024,
            batch_size: 64,
            beta1: 0.9,
            beta2: 0.95,
            targets: vec![LoraTarget::Q, LoraTarget::V],
            head: true,
            world_size: 1,
            alpha: None,
            warm_start_a: false,
            weight_decay: 0.0,
            grad_steps: 1,
            schedule: LoraSchedule::RankSlices,
            phases: None,
        }
    }
}

/// Where the adapters' initial A values come from.
#[derive(Clone, Debug)]
pub enum LoraInit {
    /// A seeded generator (SplitMix64; uniform in ±1/√in, drawn in the state dict's order).
    Seed(u64),
    /// The reference's own draws, by name (see the module notes), read from `path`.
    File {
        path: PathBuf,
        tensors: BTreeMap<String, Tensor>,
    },
}

impl LoraInit {
    /// Reads a `--lora-init` safetensors file (f32 tensors).
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| VerifyError::Setup(format!("{}: {e}", path.display())))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
            VerifyError::Setup(format!("{}: not a safetensors file: {e}", path.display()))
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(VerifyError::Setup(format!(
                    "{}: {name} is {:?}, LoRA draws are float32",
                    path.display(),
                    view.dtype()
                )));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let t = Tensor::from_vec(values, view.shape(), &candle_core::Device::Cpu)?;
            tensors.insert(name, t);
        }
        Ok(LoraInit::File {
            path: path.to_path_buf(),
            tensors,
        })
    }
}

/// The sequence of draws one run makes.
struct Draws<'a> {
    init: &'a LoraInit,
    /// Draws made so far (0: the first).
    count: usize,
    state: u64,
    /// The rank's prefix in a `--lora-init` file (empty for rank 0).
    prefix: String,
}

impl Draws<'_> {
    fn uniform(&mut self, n: usize, bound: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                let u = ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * u - 1.0) * bound
            })
            .collect()
    }

    /// One draw of every A of a batched LoRA of `bsz` documents: (name, [bsz, r, in]) in the state dict's order.
    fn draw(
        &mut self,
        names: &[(String, usize)],
        bsz: usize,
        rank: usize,
        device: &candle_core::Device,
    ) -> Result<Vec<Tensor>> {
        let k = self.count;
        self.count += 1;
        let prefix = if k == 0 {
            self.prefix.clone()
        } else {
            format!("{}draw{k}.", self.prefix)
        };
        names
            .iter()
            .map(|(name, fan_in)| match self.init {
                LoraInit::Seed(_) => {
                    let bound = 1.0 / (*fan_in as f32).sqrt();
                    Ok(Tensor::from_vec(
                        self.uniform(bsz * rank * fan_in, bound),
                        (bsz, rank, *fan_in),
                        device,
                    )?)
                }
                LoraInit::File { path, tensors } => {
                    let key = format!("{prefix}{name}");
                    let t = tensors.get(&key).ok_or_else(|| {
                        VerifyError::Setup(format!(
                            "{}: no tensor {key} (draw {k} of the run; the file holds {} tensors)",
                            path.display(),
                            tensors.len()
                        ))
                    })?;
                    if t.dims() != [bsz, rank, *fan_in] {
                        return Err(VerifyError::Setup(format!(
                            "{}: {key} has shape {:?}, the run needs [{bsz}, {rank}, {fan_in}]",
                            path.display(),
                            t.dims()
                        )));
                    }
                    Ok(t.to_device(device)?)
                }
            })
            .collect()
    }
}

/// One adapter of a batched LoRA: its state-dict name (without `.A`), in and out features, and where it sits
/// (Some((layer pass, target)), or None for the head).
type AdapterLayout = (String, usize, usize, Option<(usize, LoraTarget)>);

/// One batch's adapters as variables (A and B of each), in the state dict's order, with their names.
struct BatchLora {
    names: Vec<String>,
    a: Vec<Var>,
    b: Vec<Var>,
    /// Where each adapter sits: Some((slot, target)) or None for the head.
    places: Vec<Option<(usize, LoraTarget)>>,
}

impl BatchLora {
    fn set(&self, scale: f64) -> LoraSet {
        let mut set = LoraSet {
            scale,
            ..Default::default()
        };
        for ((place, a), b) in self.places.iter().zip(&self.a).zip(&self.b) {
            let adapter = LoraAdapter {
                a: a.as_tensor().clone(),
                b: b.as_tensor().clone(),
            };
            match place {
                None => set.head = Some(adapter),
                Some((slot, target)) => {
                    if set.slots.len() <= *slot {
                        set.slots.resize(slot + 1, Vec::new());
                    }
                    set.slots[*slot].push((*target, adapter));
                }
            }
        }
        set
    }

    fn vars(&self) -> Vec<Var> {
        self.a.iter().chain(&self.b).cloned().collect()
    }

    fn digest(&self) -> Result<WeightsDigest> {
        let mut h = Sha256::new();
        for v in self.a.iter().chain(&self.b) {
            for x in v.as_tensor().flatten_all()?.to_vec1::<f32>()? {
                h.update(x.to_le_bytes());
            }
        }
        Ok(h.finalize().into())
    }
}

pub struct LoraTtt {
    /// The model (a lock only so that global phases can turn its weights into variables and back: the adapters'
    /// backward passes then compute no gradient for them).
    model: std::sync::Mutex<Box<dyn CausalLm + Send>>,
    device: candle_core::Device,
    shapes: LoraShapes,
    pub recipe: LoraTttRecipe,
    /// Where A's draws come from (a seed replaces it for `--ttt-seeds` reruns).
    pub init: std::sync::Mutex<LoraInit>,
    /// Planted violation: each chunk is trained on (one Adam step) before it is scored.
    pub adapt_before_score: bool,
    /// The length queue's rank rotation ([`Procedure::reschedule`]; 0: entry k on rank k mod W).
    rotation: std::sync::atomic::AtomicUsize,
    /// With global phases: the base weights' values at the start of every run (the phases change them).
    base: Vec<Tensor>,
}

/// (start, len) of each document: BOS to the next BOS inclusive (the last to the stream's end), as `_find_docs`
/// with `include_next_bos`; tokens before the first BOS belong to no document.
pub fn find_docs(tokens: &[u16]) -> Vec<(usize, usize)> {
    let bos: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|&(_, &t)| t as u32 == crate::infer::layers::BOS_ID)
        .map(|(i, _)| i)
        .collect();
    bos.iter()
        .enumerate()
        .map(|(i, &start)| {
            let end = bos.get(i + 1).map_or(tokens.len(), |&n| n + 1);
            (start, end - start)
        })
        .filter(|&(_, len)| len >= 2)
        .collect()
}

/// `_compute_chunk_window(ci, pred_len, num_chunks, chunk, eval_seq_len)`: (window start, window length, the
/// chunk's offset in the window, the chunk's length).
fn chunk_window(
    ci: usize,
    pred_len: usize,
    num_chunks: usize,
    chunk: usize,
    eval_seq_len: usize,
) -> (usize, usize, usize, usize) {
    let chunk_start = ci * chunk;
    let chunk_end = if ci == num_chunks - 1 {
        pred_len
    } else {
        (ci + 1) * chunk
    };
    let win_start = chunk_end.saturating_sub(eval_seq_len);
    (
        win_start,
        chunk_end - win_start,
        chunk_start - win_start,
        chunk_end - chunk_start,
    )
}

impl LoraTtt {
    pub fn new(
        model: Box<dyn CausalLm + Send>,
        recipe: LoraTttRecipe,
        init: LoraInit,
    ) -> Result<Self> {
        let shapes = model.lora_shapes().ok_or_else(|| {
            VerifyError::Setup("LoRA TTT: this architecture takes no LoRA adapters".into())
        })?;
        recipe.check()?;
        if recipe.phases.is_some() && recipe.schedule != LoraSchedule::LengthQueue {
            return Err(VerifyError::Setup(
                "global phases belong to the length-queued schedule of rec/2026-04-27".into(),
            ));
        }
        let mut model = model;
        let base = if recipe.phases.is_some() {
            let base = model
                .make_trainable(&|_| true)?
                .into_iter()
                .map(|(_, v)| Ok(v.as_tensor().copy()?))
                .collect::<Result<Vec<_>>>()?;
            model.make_trainable(&|_| false)?;
            base
        } else {
            Vec::new()
        };
        Ok(LoraTtt {
            base,
            device: model.device().clone(),
            model: std::sync::Mutex::new(model),
            shapes,
            recipe,
            init: std::sync::Mutex::new(init),
            adapt_before_score: false,
            rotation: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn lm(&self) -> std::sync::MutexGuard<'_, Box<dyn CausalLm + Send>> {
        self.model.lock().expect("model lock")
    }

    /// Adapter values per batch element: Σ over adapters of r·(in + out) (each document trains this many).
    pub fn adapter_parameters(&self) -> usize {
        self.layout()
            .iter()
            .map(|(_, fan_in, fan_out, _)| self.recipe.rank * (fan_in + fan_out))
            .sum()
    }

    /// The adapters' names, fan-ins and places, in the reference's state-dict order: the head, then per layer pass
    /// each target (`lm_head_lora`, `q_loras.{slot}`, `v_loras.{slot}`, …).
    fn layout(&self) -> Vec<AdapterLayout> {
        let mut out = Vec::new();
        if self.recipe.head {
            out.push((
                "lm_head_lora".to_string(),
                self.shapes.model_dim,
                self.shapes.vocab,
                None,
            ));
        }
        for target in &self.recipe.targets {
            let Some(&(_, fan_in, fan_out)) =
                self.shapes.targets.iter().find(|(t, _, _)| t == target)
            else {
                continue;
            };
            let key = match target {
                LoraTarget::Q => "q_loras",
                LoraTarget::K => "k_loras",
                LoraTarget::V => "v_loras",
                LoraTarget::O => "o_loras",
                LoraTarget::Mlp => "mlp_loras",
            };
            for slot in 0..self.shapes.slots {
                out.push((
                    format!("{key}.{slot}"),
                    fan_in,
                    fan_out,
                    Some((slot, *target)),
                ));
            }
        }
        out
    }

    /// A batched LoRA of `bsz` documents: A from the next draw, B zero.
    fn build(&self, bsz: usize, draws: &mut Draws) -> Result<BatchLora> {
        let layout = self.layout();
        let names: Vec<(String, usize)> = layout
            .iter()
            .map(|(n, fan_in, _, _)| (format!("{n}.A"), *fan_in))
            .collect();
        let device = &self.device;
        let a = draws.draw(&names, bsz, self.recipe.rank, device)?;
        let mut lora = BatchLora {
            names: layout.iter().map(|(n, ..)| n.clone()).collect(),
            a: Vec::new(),
            b: Vec::new(),
            places: Vec::new(),
        };
        for ((_, _, fan_out, place), a) in layout.into_iter().zip(a) {
            lora.a.push(Var::from_tensor(&a)?);
            lora.b.push(Var::from_tensor(&Tensor::zeros(
                (bsz, fan_out, self.recipe.rank),
                DType::F32,
                device,
            )?)?);
            lora.places.push(place);
        }
        Ok(lora)
    }

    /// `reset()`: every B zeroed, and every A drawn again unless A starts warm.
    fn reset(&self, lora: &BatchLora, draws: &mut Draws) -> Result<()> {
        if self.recipe.warm_start_a {
            for v in &lora.b {
                v.set(&v.as_tensor().zeros_like()?)?;
            }
            return Ok(());
        }
        let bsz = lora.a.first().map_or(0, |a| a.dims()[0]);
        let names: Vec<(String, usize)> = lora
            .names
            .iter()
            .zip(&lora.a)
            .map(|(n, a)| (format!("{n}.A"), a.dims()[2]))
            .collect();
        let fresh = draws.draw(&names, bsz, self.recipe.rank, &self.device)?;
        for (v, t) in lora.a.iter().zip(fresh) {
            v.set(&t)?;
        }
        for v in &lora.b {
            v.set(&v.as_tensor().zeros_like()?)?;
        }
        Ok(())
    }

    /// One batch of documents (`(start, len)` in the stream): every chunk scored, then trained on where it is not
    /// the document's last.
    fn run_batch(
        &self,
        tokens: &[u16],
        batch: &[(usize, usize)],
        lora: &BatchLora,
        ledger: &mut Ledger,
    ) -> Result<()> {
        let r = &self.recipe;
        let (chunk, l) = (r.chunk_size, r.eval_seq_len);
        let device = &self.device;
        let model = self.lm();
        let bsz = batch.len();
        let vars = lora.vars();
        let mut adam = Adam::new(vars.len(), r.lr, r.beta1, r.beta2, 1e-10);
        adam.weight_decay = r.weight_decay;
        let scale = r.alpha.map_or(1.0, |a| a / r.rank as f64);
        let pred_lens: Vec<usize> = batch.iter().map(|&(_, len)| len - 1).collect();
        let num_chunks: Vec<usize> = pred_lens.iter().map(|p| p.div_ceil(chunk)).collect();
        let max_nc = num_chunks.iter().copied().max().unwrap_or(0);
        for ci in 0..max_nc {
            let (_, context, chunk_offset, _) =
                chunk_window(ci, (ci + 1) * chunk, ci + 1, chunk, l);
            let needs_train = num_chunks.iter().any(|&nc| ci + 1 < nc);
            let mut x = vec![0u32; bsz * context];
            let mut y = vec![0u32; bsz * context];
            let mut scored = Vec::with_capacity(bsz);
            for (b, &(ds, _)) in batch.iter().enumerate() {
                if ci >= num_chunks[b] {
                    scored.push(None);
                    continue;
                }
                let (ws, wl, co, cl) = chunk_window(ci, pred_lens[b], num_chunks[b], chunk, l);
                for p in 0..wl {
                    x[b * context + p] = tokens[ds + ws + p] as u32;
                    y[b * context + p] = tokens[ds + ws + p + 1] as u32;
                }
                scored.push(Some((ds + ws, co, cl)));
            }
            let xs = Tensor::from_vec(x, (bsz, context), device)?;
            let ys = Tensor::from_vec(y, (bsz, context), device)?;
            if self.adapt_before_score {
                // Planted violation: one Adam step on every active document's chunk, then the chunk is scored.
                let ptl = model.lora_token_losses(&xs, &ys, &lora.set(scale))?;
                let mask: Vec<f32> = num_chunks
                    .iter()
                    .map(|&nc| if ci < nc { 1.0 } else { 0.0 })
                    .collect();
                let mask = Tensor::from_vec(mask, bsz, device)?;
                adapter_step(&ptl, chunk_offset, chunk, &mask, &vars, &mut adam)?;
                let ranges: Vec<std::ops::Range<usize>> = scored
                    .iter()
                    .flatten()
                    .map(|&(ws, co, cl)| ws + co..ws + co + cl)
                    .collect();
                ledger.train_step(&ranges);
            }
            let set = lora.set(scale);
            let ptl = model.lora_token_losses(&xs, &ys, &set)?;
            let rows = ptl.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            for (b, s) in scored.iter().enumerate() {
                if let Some((window_start, co, cl)) = *s {
                    ledger.score(window_start + co, &rows[b][co..co + cl]);
                }
            }
            // The probes' full rows: log-probabilities of the capped logits the chunk was scored with.
            let wanted: Vec<(usize, usize, usize)> = scored
                .iter()
                .enumerate()
                .filter_map(|(b, s)| s.map(|(ws, co, cl)| (b, ws, co..co + cl)))
                .flat_map(|(b, ws, range)| range.map(move |p| (b, p, ws + p)))
                .filter(|&(_, _, j)| ledger.wants_row(j))
                .collect();
            if !wanted.is_empty() {
                let z = model.lora_uncapped_logits(&xs, &set)?;
                for (b, p, j) in wanted {
                    let row = z.get(b)?.get(p)?.to_vec1::<f32>()?;
                    ledger.row(j, log_softmax_row(model.capped_row(&row).into_iter()));
                }
            }
            if needs_train && !self.adapt_before_score {
                let mask: Vec<f32> = num_chunks
                    .iter()
                    .map(|&nc| if ci + 1 < nc { 1.0 } else { 0.0 })
                    .collect();
                let mask = Tensor::from_vec(mask, bsz, device)?;
                for step in 0..r.grad_steps.max(1) {
                    let ptl = if step == 0 {
                        ptl.clone()
                    } else {
                        model.lora_token_losses(&xs, &ys, &lora.set(scale))?
                    };
                    adapter_step(&ptl, chunk_offset, chunk, &mask, &vars, &mut adam)?;
                }
                let ranges: Vec<std::ops::Range<usize>> = batch
                    .iter()
                    .zip(&num_chunks)
                    .filter(|&(_, &nc)| ci + 1 < nc)
                    .map(|(&(ds, _), _)| {
                        let first = ds + (ci + 1) * chunk - context + chunk_offset;
                        first..first + chunk
                    })
                    .collect();
                ledger.train_step(&ranges);
            }
        }
        Ok(())
    }
}

/// One optimizer step on the adapters: the loss is Σ over documents of mask · (the mean loss of the batch's chunk
/// positions `[chunk_offset, chunk_offset + chunk)` of per-target losses `ptl` [B, T]), as the records write it.
fn adapter_step(
    ptl: &Tensor,
    chunk_offset: usize,
    chunk: usize,
    mask: &Tensor,
    vars: &[Var],
    adam: &mut Adam,
) -> Result<()> {
    let per_doc = ptl.narrow(1, chunk_offset, chunk)?.mean(1)?;
    let grads = (per_doc * mask)?.sum_all()?.backward()?;
    let g: Vec<Option<Tensor>> = vars
        .iter()
        .map(|v| grads.get(v.as_tensor()).cloned())
        .collect();
    adam.step(vars, &g)?;
    Ok(())
}

impl LoraTtt {
    /// `train_val_ttt_global_sgd_distributed` on one rank: the documents' tokens concatenated, cut into chunks of
    /// `chunk_tokens` targets; every chunk but the last trained on for `epochs` epochs of SGD with momentum (a fresh
    /// optimizer per phase), lr cosine across the chunks, in steps of `batch_seqs` sequences of `seq_len`, attention
    /// isolated to each document (split at BOS, pieces of at most `seq_len`), gradient norm clipped.
    fn global_phase(
        &self,
        tokens: &[u16],
        docs: &[(usize, usize, usize, usize)],
        p: &GlobalPhases,
        ledger: &mut Ledger,
    ) -> Result<usize> {
        // The phase's tokens, and for each the stream position it came from.
        let mut phase_tokens: Vec<u16> = Vec::new();
        let mut origin: Vec<usize> = Vec::new();
        for &(_, _, start, len) in docs {
            phase_tokens.extend_from_slice(&tokens[start..start + len]);
            origin.extend(start..start + len);
        }
        let total = phase_tokens.len().saturating_sub(1);
        let chunk = p.chunk_tokens.max(1);
        let num_chunks = total.div_ceil(chunk);
        // The base weights are variables for the phase only.
        let mut model = self.lm();
        let vars: Vec<Var> = model
            .make_trainable(&|_| true)?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let mut sgd = crate::optim::Sgd::new(vars.len(), p.lr, p.momentum);
        let l = p.seq_len.max(1);
        let mut steps_run = 0;
        for ci in 0..num_chunks {
            let chunk_start = ci * chunk;
            let chunk_end = ((ci + 1) * chunk).min(total);
            if ci == num_chunks - 1 || p.epochs == 0 {
                continue;
            }
            let chunk_seqs = (chunk_end - chunk_start) / l;
            if chunk_seqs == 0 {
                continue;
            }
            let decay_steps = (num_chunks - 1).max(1);
            sgd.lr =
                p.lr * 0.5 * (1.0 + (std::f64::consts::PI * ci as f64 / decay_steps as f64).cos());
            // Rank r trains on the chunk's sequences [chunk_seqs·r/W, chunk_seqs·(r+1)/W); the ranks' s-th steps
            // are one step on the sum of their gradients divided by W (the records' all-reduce). A rank with no s-th
            // step adds nothing (the records' collectives would not pair up there).
            let w = self.recipe.world_size;
            let spans: Vec<(usize, usize)> = (0..w)
                .map(|rank| (chunk_seqs * rank / w, chunk_seqs * (rank + 1) / w))
                .collect();
            let batch_seqs = p.batch_seqs.max(1);
            let steps = spans
                .iter()
                .map(|&(s, e)| (e - s).div_ceil(batch_seqs))
                .max()
                .unwrap_or(0);
            for _ in 0..p.epochs {
                for step in 0..steps {
                    let mut g: Vec<Option<Tensor>> = vec![None; vars.len()];
                    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
                    for &(my_s, my_e) in &spans {
                        let bs = step * batch_seqs;
                        if bs >= my_e - my_s {
                            continue;
                        }
                        let be = (bs + batch_seqs).min(my_e - my_s);
                        let start = chunk_start + (my_s + bs) * l;
                        let end = chunk_start + (my_s + be) * l + 1;
                        if end > phase_tokens.len() {
                            continue;
                        }
                        let rank_grads = Self::global_step_grads(
                            model.as_ref(),
                            &phase_tokens[start..end],
                            l,
                            &vars,
                        )?;
                        for (acc, rg) in g.iter_mut().zip(rank_grads) {
                            *acc = match (acc.take(), rg) {
                                (Some(a), Some(b)) => Some((a + b)?),
                                (a, b) => a.or(b),
                            };
                        }
                        // The stream targets this step trained on: phase positions whose next token is the stream's
                        // next.
                        for i in start..end - 1 {
                            if origin[i + 1] == origin[i] + 1 {
                                let j = origin[i];
                                match ranges.last_mut() {
                                    Some(r) if r.end == j => r.end = j + 1,
                                    _ => ranges.push(j..j + 1),
                                }
                            }
                        }
                    }
                    if ranges.is_empty() {
                        continue;
                    }
                    if w > 1 {
                        for t in g.iter_mut().flatten() {
                            *t = (&*t / w as f64)?;
                        }
                    }
                    if p.grad_clip > 0.0 {
                        crate::optim::clip_grad_norm(&mut g, p.grad_clip)?;
                    }
                    sgd.step(&vars, &g)?;
                    ledger.train_step(&ranges);
                    steps_run += 1;
                }
            }
        }
        model.make_trainable(&|_| false)?;
        Ok(steps_run)
    }

    /// One rank's gradients for one global step: the mean loss over `window` (inputs and their next tokens),
    /// attention isolated to each document as `_build_cu_seqlens` cuts it (segments start at 0, at every BOS, and
    /// every `seq_len` within a document).
    fn global_step_grads(
        model: &dyn CausalLm,
        window: &[u16],
        seq_len: usize,
        vars: &[Var],
    ) -> Result<Vec<Option<Tensor>>> {
        let device = model.device();
        let x: Vec<u32> = window[..window.len() - 1]
            .iter()
            .map(|&t| t as u32)
            .collect();
        let y: Vec<u32> = window[1..].iter().map(|&t| t as u32).collect();
        let mut starts: Vec<usize> = x
            .iter()
            .enumerate()
            .filter(|&(_, &t)| t == crate::infer::layers::BOS_ID)
            .map(|(i, _)| i)
            .collect();
        if starts.first() != Some(&0) {
            starts.insert(0, 0);
        }
        starts.push(x.len());
        let mut segments = Vec::new();
        for win in starts.windows(2) {
            let mut pos = win[0];
            while pos < win[1] {
                let len = seq_len.min(win[1] - pos);
                segments.push((pos, len));
                pos += len;
            }
        }
        let n = x.len();
        let xs = Tensor::from_vec(x, (1, n), device)?;
        let ys = Tensor::from_vec(y, (1, n), device)?;
        let loss = model
            .train_token_losses_segmented(&xs, &ys, &segments)?
            .mean_all()?;
        let grads = loss.backward()?;
        Ok(vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned())
            .collect())
    }
}

impl Procedure for LoraTtt {
    fn name(&self) -> String {
        if self.adapt_before_score {
            "planted:lora_adapt_then_score".into()
        } else {
            "lora_ttt".into()
        }
    }

    fn vocab_size(&self) -> usize {
        self.lm().vocab_size()
    }

    fn trains(&self) -> bool {
        true
    }

    fn claims_doc_isolation(&self) -> bool {
        true
    }

    fn reseed(&self, seed: u64) -> bool {
        *self.init.lock().expect("init lock") = LoraInit::Seed(seed);
        true
    }

    /// The length queue's batches go to ranks rotated by k (entry i on rank (i + k) mod W): the records' ranks claim
    /// them by timing, so any rotation is a schedule a real run could have had.
    fn reschedule(&self, k: usize) -> bool {
        if self.recipe.schedule != LoraSchedule::LengthQueue || self.recipe.world_size < 2 {
            return false;
        }
        self.rotation.store(
            k % self.recipe.world_size,
            std::sync::atomic::Ordering::Relaxed,
        );
        true
    }

    fn run(
        &self,
        tokens: &[u16],
        ledger: &mut Ledger,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let r = &self.recipe;
        // Every run starts from the given weights (global phases change them).
        if !self.base.is_empty() {
            let mut model = self.lm();
            for ((_, v), t) in model.make_trainable(&|_| true)?.iter().zip(&self.base) {
                v.set(t)?;
            }
            model.make_trainable(&|_| false)?;
        }
        let docs = find_docs(tokens);
        let mut base = weights_digest(self.lm().as_ref())?;
        let init = self.init.lock().expect("init lock").clone();
        let seed = match init {
            LoraInit::Seed(s) => s,
            LoraInit::File { .. } => 0,
        };
        let n = docs.len();
        let w = r.world_size;
        // Each rank's batches, in the order it runs them, with each batch's index before the queue's sort.
        type Batch = (usize, Vec<(usize, usize)>);
        let rank_batches: Vec<Vec<Batch>> = match r.schedule {
            LoraSchedule::RankSlices => (0..w)
                .map(|rank| {
                    let mut d = docs[n * rank / w..n * (rank + 1) / w].to_vec();
                    // A stable sort, as Python's list.sort.
                    d.sort_by_key(|&(_, len)| (len - 2) / r.chunk_size);
                    d.chunks(r.batch_size)
                        .map(<[_]>::to_vec)
                        .enumerate()
                        .collect()
                })
                .collect(),
            LoraSchedule::LengthQueue => {
                let mut d = docs.clone();
                d.sort_by_key(|&(_, len)| len);
                let mut batches: Vec<Batch> = d
                    .chunks(r.batch_size)
                    .map(<[_]>::to_vec)
                    .enumerate()
                    .collect();
                batches
                    .sort_by_key(|(_, b)| std::cmp::Reverse(b.iter().map(|&(_, len)| len).max()));
                let rotation = self.rotation.load(std::sync::atomic::Ordering::Relaxed);
                let mut per_rank = vec![Vec::new(); w];
                for (k, b) in batches.into_iter().enumerate() {
                    per_rank[(k + rotation) % w].push(b);
                }
                per_rank
            }
        };
        // Global phases: the boundaries (documents scored) and the documents scored so far.
        let boundaries: Vec<usize> = match &r.phases {
            Some(p) => {
                let limit = p.prefix_docs.min(n);
                let k = p.num_phases.max(1);
                (0..k).map(|pi| limit * (pi + 1) / k).collect()
            }
            None => Vec::new(),
        };
        let mut phase = 0;
        let mut global_done = boundaries.first().is_none_or(|&b| b == 0);
        let mut scored_docs: Vec<(usize, usize, usize, usize)> = Vec::new();
        let total_batches: usize = rank_batches.iter().map(Vec::len).sum();
        let mut done = 0;
        // Every rank draws from its own generator, seeded alike (the records seed every rank with the same
        // `torch.manual_seed(h.seed)`); from a file, rank r > 0 reads its draws under `rank{r}.`.
        let mut draws: Vec<Draws> = (0..w)
            .map(|rank| Draws {
                init: &init,
                count: 0,
                state: seed,
                prefix: if rank == 0 {
                    String::new()
                } else {
                    format!("rank{rank}.")
                },
            })
            .collect();
        // Each rank's full-size LoRA, built before its first batch (a draw even if no batch is full) and again
        // after each global phase.
        let mut full: Vec<BatchLora> = draws
            .iter_mut()
            .map(|d| self.build(r.batch_size, d))
            .collect::<Result<_>>()?;
        // The ranks run in lockstep: round j is every rank's j-th batch (queue entries jW … jW + W − 1); a phase
        // starts only between rounds, once the documents scored reach its boundary (at most one per round, as the
        // records' pause flag is checked once per batch).
        let rounds = rank_batches.iter().map(Vec::len).max().unwrap_or(0);
        for round in 0..rounds {
            for rank in 0..w {
                let Some((orig_index, batch)) = rank_batches[rank].get(round) else {
                    continue;
                };
                let fresh;
                let lora = if batch.len() == r.batch_size {
                    self.reset(&full[rank], &mut draws[rank])?;
                    &full[rank]
                } else {
                    fresh = self.build(batch.len(), &mut draws[rank])?;
                    &fresh
                };
                // Receipts: the base weights together with the batch's adapters.
                let combined =
                    |base: &WeightsDigest, lora_digest: WeightsDigest| -> WeightsDigest {
                        let mut h = Sha256::new();
                        h.update(base);
                        h.update(lora_digest);
                        h.finalize().into()
                    };
                let scored_with = combined(&base, lora.digest()?);
                self.run_batch(tokens, batch, lora, ledger)?;
                let left = combined(&base, lora.digest()?);
                ledger.receipt(format!("rank {rank} batch {done}"), &scored_with, &left);
                done += 1;
                progress(done, total_batches);
                if !global_done {
                    scored_docs.extend(
                        batch
                            .iter()
                            .enumerate()
                            .map(|(pos, &(start, len))| (*orig_index, pos, start, len)),
                    );
                }
            }
            if global_done || scored_docs.len() < boundaries[phase] {
                continue;
            }
            // Phase: score-first SGD on the base weights over the documents scored so far, in the order of their
            // batches before the queue's sort, cut at the boundary.
            let mut phase_docs = scored_docs.clone();
            phase_docs.sort_by_key(|&(b, pos, _, _)| (b, pos));
            phase_docs.truncate(boundaries[phase]);
            let p = r.phases.as_ref().expect("phases");
            let before = base;
            if self.global_phase(tokens, &phase_docs, p, ledger)? == 0 {
                // A phase that trains on nothing is a silent no-op: the score would be the record's with its global
                // learning rate at 0.
                let held: usize = phase_docs.iter().map(|d| d.3).sum();
                return Err(VerifyError::Setup(format!(
                    "global TTT phase {} would run no SGD step: its {} documents hold {held} tokens, cut into chunks \
                     of {} (GLOBAL_TTT_CHUNK_TOKENS; the last chunk is never trained on) and sequences of {} \
                     (EVAL_SEQ_LEN: --eval-seq-len, else the evaluation's --seq-len); lower \
                     --global-ttt-chunk-tokens or the sequence length, or raise --phased-ttt-prefix-docs",
                    phase + 1,
                    phase_docs.len(),
                    p.chunk_tokens,
                    p.seq_len
                )));
            }
            base = weights_digest(self.lm().as_ref())?;
            ledger.receipt(format!("global phase {}", phase + 1), &before, &base);
            for (f, d) in full.iter_mut().zip(&mut draws) {
                *f = self.build(r.batch_size, d)?;
            }
            phase += 1;
            if phase >= boundaries.len() {
                global_done = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_take_the_next_bos_and_chunks_end_at_the_document() {
        let t = [5u16, 1, 7, 8, 1, 9, 1, 4, 4, 4];
        assert_eq!(find_docs(&t), vec![(1, 4), (4, 3), (6, 4)]);
        // pred_len 100, chunk 32, eval length 64: chunk 3 is the last (96..100), its window 36..100.
        assert_eq!(chunk_window(3, 100, 4, 32, 64), (36, 64, 60, 4));
        assert_eq!(chunk_window(0, 100, 4, 32, 64), (0, 32, 0, 32));
        assert_eq!(chunk_window(2, 100, 4, 32, 64), (32, 64, 32, 32));
    }
}
