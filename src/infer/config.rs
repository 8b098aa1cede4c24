//! The model config: a JSON object whose keys are the challenge's hyperparameter names (lower case), with the
//! challenge's defaults (root `train_gpt.py`, `Hyperparameters`). Unknown keys are rejected: a component pgolf does
//! not implement must never be silently ignored.
//!
//! The keys after `train_seq_len` select the record components (`docs/ARCHITECTURES.md` lists each with the record
//! that defines it). Every one defaults to "off", which is the baseline, and is left out of the serialized config
//! when it is off, so a baseline config reads and writes exactly as before.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{InferError, Result};

/// SmearGate (architectures §1.7): how the previous token's embedding is blended into the current one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmearGate {
    #[default]
    None,
    /// `smear.gate` [d]: x ← (1−σ(g))⊙x + σ(g)⊙x_{t−1}, after the embedding RMSNorm (03-20 … 03-31).
    V1,
    /// `smear_gate.weight` [1, gate_window], `smear_lambda` [1]: x_t ← x_t + λ·σ(w·x_t[..w])·x_{t−1} on the raw
    /// embedding (04-16 … 04-29).
    V2,
}

/// Which lane the two-lane parallel residual stack hands to the final norm (`PARALLEL_FINAL_LANE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalLane {
    #[default]
    Mean,
    Attn,
    Mlp,
}

/// The input of the AttnOutGate (`ATTN_OUT_GATE_SRC`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateSource {
    /// The attention input (the normed, LN-scaled block input).
    #[default]
    Proj,
    /// The raw query projection.
    Q,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `mlp_mult` is a float in the records (3.0, 4.0) and an integer in the baseline; an integral value is written
/// as an integer so baseline configs keep their bytes.
fn serialize_mlp_mult<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_u64(*v as u64)
    } else {
        s.serialize_f64(*v)
    }
}

/// One block run of the forward pass and its U-Net skip operations ([`ModelConfig::layer_steps`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerStep {
    /// The physical block.
    pub block: usize,
    /// Push the block's output on the skip stack.
    pub push: bool,
    /// Before the block: x += skip_weights[j]⊙pop().
    pub skip: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_layers")]
    pub num_layers: usize,
    #[serde(default = "d_dim")]
    pub model_dim: usize,
    #[serde(default = "d_heads")]
    pub num_heads: usize,
    #[serde(default = "d_kv")]
    pub num_kv_heads: usize,
    /// MLP hidden width = int(mlp_mult · model_dim).
    #[serde(default = "d_mlp", serialize_with = "serialize_mlp_mult")]
    pub mlp_mult: f64,
    #[serde(default = "d_tie")]
    pub tie_embeddings: bool,
    #[serde(default = "d_softcap")]
    pub logit_softcap: f64,
    #[serde(default = "d_rope")]
    pub rope_base: f64,
    #[serde(default = "d_qk")]
    pub qk_gain_init: f64,
    #[serde(default = "d_seq")]
    pub train_seq_len: usize,

    /// LeakyReLU² (§1.1): h = leaky_relu(u, slope)². 0 is the baseline's relu²; the records use 0.5.
    #[serde(default, skip_serializing_if = "is_default")]
    pub mlp_negative_slope: f64,
    /// Partial RoPE (§1.2): rotate only the first `rope_dims` dims of each head (0 = all of head_dim).
    #[serde(default, skip_serializing_if = "is_default")]
    pub rope_dims: usize,
    /// The NTK rule (§0): when a window is longer than this, base' = base·(T/this)^(rd/(rd−2)). Null: never
    /// rescaled (the baseline; 04-10+ records, whose ROPE_YARN is off).
    #[serde(default, skip_serializing_if = "is_default")]
    pub rope_ntk_train_seq_len: Option<usize>,
    /// LN scale (§1.4): the block's normed inputs are multiplied by 1/√(i+1), i the physical block index.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ln_scale: bool,
    /// XSA (§1.5) on the last N blocks: each head's output loses its component along the position's own value.
    #[serde(default, skip_serializing_if = "is_default")]
    pub xsa_last_n: usize,
    /// U-Net skip gates (§0): x = lerp(w⊙skip, x, σ(skip_gates[j])); `skip_gates` [n_skip, d].
    #[serde(default, skip_serializing_if = "is_default")]
    pub skip_gates: bool,
    /// Depth recurrence, loop segment form (§1.11 B): blocks loop_start..=loop_end run num_loops+1 times, and the
    /// U-Net halves split the virtual layer list. 0 = no recurrence.
    #[serde(default, skip_serializing_if = "is_default")]
    pub num_loops: usize,
    #[serde(default, skip_serializing_if = "is_default")]
    pub loop_start: usize,
    #[serde(default, skip_serializing_if = "is_default")]
    pub loop_end: usize,
    /// GPT-J parallel residuals (§1.12) from this physical block on: x = x_in + a⊙Attn(n) + m⊙MLP(n).
    #[serde(default, skip_serializing_if = "is_default")]
    pub parallel_residual_start: Option<usize>,
    /// Two-lane parallel residuals (PR #1529, §1.12) from the first decoder block with physical index ≥ this.
    #[serde(default, skip_serializing_if = "is_default")]
    pub parallel_start_layer: Option<usize>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub parallel_final_lane: FinalLane,
    /// BigramHash (§1.8): a [bigram_vocab_size, bigram_dim] table of hashed (previous, current) pairs. 0 = off.
    #[serde(default, skip_serializing_if = "is_default")]
    pub bigram_vocab_size: usize,
    #[serde(default = "d_side_dim", skip_serializing_if = "is_side_dim")]
    pub bigram_dim: usize,
    #[serde(default, skip_serializing_if = "is_default")]
    pub smear_gate: SmearGate,
    /// SmearGate v2's BOS fix (§1.7): no smear into a position whose token is BOS.
    #[serde(default, skip_serializing_if = "is_default")]
    pub smear_gate_bos_fix: bool,
    /// Input width of SmearGate v2, AttnOutGate and SparseAttnGate (GATE_WINDOW).
    #[serde(default = "d_gate_window", skip_serializing_if = "is_gate_window")]
    pub gate_window: usize,
    /// Value embeddings (§1.9) on these physical blocks (VE_LAYERS); empty = off.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ve_layers: Vec<usize>,
    #[serde(default = "d_side_dim", skip_serializing_if = "is_side_dim")]
    pub ve_dim: usize,
    /// Value residual (§1.10 a, `attn.vr_lambda` [2]): blocks after the first use v = λ0·v0 + λ1·v.
    #[serde(default, skip_serializing_if = "is_default")]
    pub value_residual: bool,
    /// The legacy gated attention (§1.13, `attn.attn_gate` Linear(d, H) with bias): y ← y·σ(x·Wᵀ + b).
    #[serde(default, skip_serializing_if = "is_default")]
    pub gated_attention: bool,
    /// AttnOutGate (§1.13, `attn.attn_gate_proj.weight` [H, gate_window]): y ← y·2σ(src[..w]·Wᵀ).
    #[serde(default, skip_serializing_if = "is_default")]
    pub attn_out_gate: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub attn_out_gate_src: GateSource,
    /// GatedAttn (§1.13, `attn.attn_gate_w` [H, d]): y ← y·σ(x·Wᵀ).
    #[serde(default, skip_serializing_if = "is_default")]
    pub gated_attn: bool,
    /// SparseAttnGate (§1.13, `attn.attn_gate_w` [H, gate_window]): y ← y·σ(scale·x[..w]·Wᵀ).
    #[serde(default, skip_serializing_if = "is_default")]
    pub sparse_attn_gate: bool,
    #[serde(default = "d_sparse_scale", skip_serializing_if = "is_sparse_scale")]
    pub sparse_attn_gate_scale: f64,
    /// CaseOps (§1.15): the tokens are of the case-folded text; BPB needs the byte sidecar. The model is unchanged.
    #[serde(default, skip_serializing_if = "is_default")]
    pub caseops: bool,
    /// Seed 000's JEPA latent injection (architectures §2.1) after the last block: chunks of this many positions
    /// (0 = off), a projector and predictor of `jepa_proj_hidden`/`jepa_latent_dim` widths.
    #[serde(default, skip_serializing_if = "is_default")]
    pub jepa_chunk_size: usize,
    #[serde(default, skip_serializing_if = "is_default")]
    pub jepa_latent_dim: usize,
    #[serde(default = "d_jepa_hidden", skip_serializing_if = "is_jepa_hidden")]
    pub jepa_proj_hidden: usize,
    /// Seed 004's `mlp.hidden_gain` [hidden] (architectures §1.1): out = (h⊙hidden_gain)·projᵀ.
    #[serde(default, skip_serializing_if = "is_default")]
    pub mlp_hidden_gain: bool,
    /// Seed 004's value residual (§1.10 d): `attn.v_lambda` [2] on blocks ≥ 1, v = softmax(λ)₀·v + softmax(λ)₁·v₀,
    /// v₀ block 0's raw values.
    #[serde(default, skip_serializing_if = "is_default")]
    pub v_lambda: bool,
    /// Seed 004's XSA (§1.5): on the last `xsa_last_n` blocks an explicit causal softmax A and y = A·V − diag(A)⊙v,
    /// instead of the efficient projection form.
    #[serde(default, skip_serializing_if = "is_default")]
    pub xsa_diag: bool,
    /// Seed 004's recurrence (§1.11 D): after the whole U-Net stack, blocks depth_recur_start..=depth_recur_end run
    /// depth_recur_count − 1 more times, without skips (count ≤ 1 = off; the reported run evaluated with it off).
    #[serde(default, skip_serializing_if = "is_default")]
    pub depth_recur_start: usize,
    #[serde(default, skip_serializing_if = "is_default")]
    pub depth_recur_end: usize,
    #[serde(default, skip_serializing_if = "is_default")]
    pub depth_recur_count: usize,
    /// Seed 002's recurrence zone (§2.3): blocks recurrence_zone_start..=recurrence_zone_end run
    /// recurrence_zone_loops times in place; the first pass pushes and pops the U-Net skips of the physical layers,
    /// the later passes touch no skip (loops ≤ 1 = off).
    #[serde(default, skip_serializing_if = "is_default")]
    pub recurrence_zone_start: usize,
    #[serde(default, skip_serializing_if = "is_default")]
    pub recurrence_zone_end: usize,
    #[serde(default, skip_serializing_if = "is_default")]
    pub recurrence_zone_loops: usize,
    /// Seed 004's evaluation-time fake quantization (its global `_QAT_ACTIVE`, never reset, so active when it
    /// scored): every CastedLinear weight with more than 8192 elements is re-gridded per row, w' = clamp(round(w/s),
    /// −c, c)·s with s = max(rowmax|w|/c, 1e−12), c = 15 for the MLP and 31 otherwise.
    #[serde(default, skip_serializing_if = "is_default")]
    pub eval_fake_quant: bool,
    /// Seed 003's VRL (§1.10 c): v0 = block 0's c_v of its own normed input, added to every later block's values as
    /// v0·vrl_scales[i−1] (`vrl_scales.{0..L−2}` [1]) together with the value embedding.
    #[serde(default, skip_serializing_if = "is_default")]
    pub vrl: bool,
    /// The grid `pgolf train --qat` trained the block matrices against; `pgolf pack` quantizes on it by default.
    /// The forward pass ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat_grid: Option<QatGrid>,
}

/// A QAT grid: SDClip with these bits and k per group (attention, MLP, other block matrices).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QatGrid {
    pub bits: u32,
    pub k_attn: f32,
    pub k_mlp: f32,
    pub k_other: f32,
}

fn d_vocab() -> usize {
    1024
}
fn d_layers() -> usize {
    9
}
fn d_dim() -> usize {
    512
}
fn d_heads() -> usize {
    8
}
fn d_kv() -> usize {
    4
}
fn d_mlp() -> f64 {
    2.0
}
fn d_tie() -> bool {
    true
}
fn d_softcap() -> f64 {
    30.0
}
fn d_rope() -> f64 {
    10000.0
}
fn d_qk() -> f64 {
    1.5
}
fn d_seq() -> usize {
    1024
}
fn d_side_dim() -> usize {
    128
}
fn is_side_dim(v: &usize) -> bool {
    *v == d_side_dim()
}
fn d_gate_window() -> usize {
    12
}
fn is_gate_window(v: &usize) -> bool {
    *v == d_gate_window()
}
fn d_jepa_hidden() -> usize {
    256
}
fn is_jepa_hidden(v: &usize) -> bool {
    *v == d_jepa_hidden()
}
fn d_sparse_scale() -> f64 {
    1.0
}
fn is_sparse_scale(v: &f64) -> bool {
    *v == d_sparse_scale()
}

impl Default for ModelConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

/// Reads a JSON config file and checks it with `validate`; errors name the file.
pub(crate) fn load_config<T: serde::de::DeserializeOwned>(
    path: &Path,
    validate: impl Fn(&T) -> std::result::Result<(), String>,
) -> Result<T> {
    let text = crate::limits::read_small_text(path).map_err(|source| InferError::Io {
        path: path.into(),
        source,
    })?;
    let cfg: T = serde_json::from_str(&text).map_err(|e| InferError::Config {
        path: path.into(),
        message: e.to_string(),
    })?;
    validate(&cfg).map_err(|message| InferError::Config {
        path: path.into(),
        message,
    })?;
    Ok(cfg)
}

impl ModelConfig {
    pub fn load(path: &Path) -> Result<Self> {
        load_config(path, ModelConfig::validate)
    }

    /// The constraints the challenge's constructors enforce, plus sanity bounds.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("num_layers", self.num_layers),
            ("model_dim", self.model_dim),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("train_seq_len", self.train_seq_len),
        ];
        for (k, v) in positive {
            if v == 0 {
                return Err(format!("{k} must be positive"));
            }
        }
        if self.vocab_size > 1 << 20
            || self.model_dim > 1 << 16
            || self.num_layers > 1024
            || self.mlp_mult > 64.0
        {
            return Err("absurd model shape (vocab ≤ 2^20, model_dim ≤ 65536, layers ≤ 1024, mlp_mult ≤ 64)".into());
        }
        if !self.model_dim.is_multiple_of(self.num_heads) {
            return Err(format!(
                "model_dim {} must be divisible by num_heads {}",
                self.model_dim, self.num_heads
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "num_heads {} must be divisible by num_kv_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        if self.logit_softcap <= 0.0 || !self.logit_softcap.is_finite() {
            return Err(format!(
                "logit_softcap must be positive, got {}",
                self.logit_softcap
            ));
        }
        if self.rope_base <= 0.0 || !self.rope_base.is_finite() {
            return Err(format!(
                "rope_base must be positive, got {}",
                self.rope_base
            ));
        }
        self.validate_components()
    }

    fn validate_components(&self) -> std::result::Result<(), String> {
        let (l, d, hd) = (self.num_layers, self.model_dim, self.head_dim());
        if !(self.mlp_mult > 0.0 && self.mlp_mult.is_finite()) || self.mlp_hidden() == 0 {
            return Err(format!("mlp_mult must be positive, got {}", self.mlp_mult));
        }
        if !(0.0..1.0).contains(&self.mlp_negative_slope) {
            return Err(format!(
                "mlp_negative_slope must be in [0, 1), got {}",
                self.mlp_negative_slope
            ));
        }
        if self.rope_dims > hd || !self.rope_dims.is_multiple_of(2) {
            return Err(format!(
                "rope_dims {} must be even and at most head_dim {hd}",
                self.rope_dims
            ));
        }
        if self.rope_dims == 2 && self.rope_ntk_train_seq_len.is_some() {
            return Err("the NTK rule needs rope_dims > 2 (its exponent is rd/(rd−2))".into());
        }
        if self.rope_ntk_train_seq_len == Some(0) {
            return Err("rope_ntk_train_seq_len must be positive".into());
        }
        if self.xsa_last_n > l {
            return Err(format!(
                "xsa_last_n {} exceeds num_layers {l}",
                self.xsa_last_n
            ));
        }
        if self.num_loops > 0 && (self.loop_start > self.loop_end || self.loop_end >= l) {
            return Err(format!(
                "the loop segment {}..={} must lie inside the {l} layers",
                self.loop_start, self.loop_end
            ));
        }
        if self.num_loops > 64 {
            return Err(format!(
                "num_loops {} is absurd (at most 64)",
                self.num_loops
            ));
        }
        if self.parallel_residual_start.is_some() && self.parallel_start_layer.is_some() {
            return Err("parallel_residual_start (GPT-J) and parallel_start_layer (two-lane) exclude each other".into());
        }
        if self.parallel_start_layer == Some(0) {
            return Err(
                "parallel_start_layer must be positive (the records treat 0 as off)".into(),
            );
        }
        if self.bigram_vocab_size == 1 || self.bigram_vocab_size > 1 << 24 || self.bigram_dim == 0 {
            return Err(format!(
                "bigram_vocab_size {} must be 0 (off) or in 2..=2^24, with a positive bigram_dim",
                self.bigram_vocab_size
            ));
        }
        if self.smear_gate_bos_fix && self.smear_gate != SmearGate::V2 {
            return Err("smear_gate_bos_fix applies to smear_gate \"v2\" only".into());
        }
        if let Some(&bad) = self.ve_layers.iter().find(|&&i| i >= l) {
            return Err(format!("ve_layers names block {bad}, but there are {l}"));
        }
        if !self.ve_layers.is_empty() && self.ve_dim == 0 {
            return Err("ve_dim must be positive".into());
        }
        let gates = [self.attn_out_gate, self.gated_attn, self.sparse_attn_gate];
        if gates.iter().filter(|&&g| g).count() > 1 {
            return Err("attn_out_gate, gated_attn and sparse_attn_gate exclude each other".into());
        }
        let windowed =
            self.smear_gate == SmearGate::V2 || self.attn_out_gate || self.sparse_attn_gate;
        if windowed && (self.gate_window == 0 || self.gate_window > d) {
            return Err(format!(
                "gate_window {} must be in 1..=model_dim {d}",
                self.gate_window
            ));
        }
        if self.jepa_chunk_size > 0 && (self.jepa_latent_dim == 0 || self.jepa_proj_hidden == 0) {
            return Err(
                "jepa_chunk_size needs a positive jepa_latent_dim and jepa_proj_hidden".into(),
            );
        }
        if self.depth_recur_count > 1
            && (self.depth_recur_start > self.depth_recur_end || self.depth_recur_end >= l)
        {
            return Err(format!(
                "the recurrence segment {}..={} must lie inside the {l} layers",
                self.depth_recur_start, self.depth_recur_end
            ));
        }
        if self.depth_recur_count > 64 {
            return Err(format!(
                "depth_recur_count {} is absurd (at most 64)",
                self.depth_recur_count
            ));
        }
        if self.recurrence_zone_loops > 1 {
            if self.recurrence_zone_start > self.recurrence_zone_end
                || self.recurrence_zone_end >= l
            {
                return Err(format!(
                    "the recurrence zone {}..={} must lie inside the {l} layers",
                    self.recurrence_zone_start, self.recurrence_zone_end
                ));
            }
            if self.recurrence_zone_loops > 64 {
                return Err(format!(
                    "recurrence_zone_loops {} is absurd (at most 64)",
                    self.recurrence_zone_loops
                ));
            }
            if self.num_loops > 0 || self.parallel_start_layer.is_some() {
                return Err(
                    "the recurrence zone excludes the loop segment and two-lane residuals".into(),
                );
            }
        }
        if u8::from(self.v_lambda) + u8::from(self.value_residual) + u8::from(self.vrl) > 1 {
            return Err("v_lambda, value_residual and vrl exclude each other".into());
        }
        if !self.sparse_attn_gate_scale.is_finite() {
            return Err("sparse_attn_gate_scale must be finite".into());
        }
        Ok(())
    }

    /// The record components this config enables, by name (for reports, and for tools that support only some).
    pub fn components(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        let mut on = |flag: bool, name: &'static str| {
            if flag {
                c.push(name)
            }
        };
        on(self.mlp_negative_slope != 0.0, "leaky_relu2");
        on(
            self.rope_dims != 0 && self.rope_dims < self.head_dim(),
            "partial_rope",
        );
        on(self.rope_ntk_train_seq_len.is_some(), "rope_ntk");
        on(self.ln_scale, "ln_scale");
        on(self.xsa_last_n > 0, "xsa");
        on(self.skip_gates, "skip_gates");
        on(self.num_loops > 0, "depth_recurrence");
        on(
            self.parallel_residual_start.is_some(),
            "parallel_residual_gptj",
        );
        on(
            self.parallel_start_layer.is_some(),
            "parallel_residual_two_lane",
        );
        on(self.bigram_vocab_size > 0, "bigram_hash");
        on(self.smear_gate == SmearGate::V1, "smear_gate_v1");
        on(self.smear_gate == SmearGate::V2, "smear_gate_v2");
        on(self.smear_gate_bos_fix, "smear_gate_bos_fix");
        on(!self.ve_layers.is_empty(), "value_embeddings");
        on(self.value_residual, "value_residual");
        on(self.gated_attention, "gated_attention");
        on(self.attn_out_gate, "attn_out_gate");
        on(self.gated_attn, "gated_attn");
        on(self.sparse_attn_gate, "sparse_attn_gate");
        on(self.caseops, "caseops");
        on(self.jepa_chunk_size > 0, "jepa_injection");
        on(self.mlp_hidden_gain, "mlp_hidden_gain");
        on(self.v_lambda, "v_lambda");
        on(self.xsa_diag, "xsa_diag");
        on(self.depth_recur_count > 1, "post_stack_recurrence");
        on(self.recurrence_zone_loops > 1, "recurrence_zone");
        on(self.eval_fake_quant, "eval_fake_quant");
        on(self.vrl, "vrl");
        c
    }

    pub fn head_dim(&self) -> usize {
        self.model_dim / self.num_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim()
    }

    /// int(mlp_mult · model_dim), as the records size the hidden layer.
    pub fn mlp_hidden(&self) -> usize {
        (self.mlp_mult * self.model_dim as f64) as usize
    }

    /// The rotated dims per head: `rope_dims`, or all of head_dim when it is 0.
    pub fn rotary_dims(&self) -> usize {
        if self.rope_dims == 0 {
            self.head_dim()
        } else {
            self.rope_dims
        }
    }

    /// The physical blocks in execution order, split into the U-Net's encoder and decoder halves. Without
    /// recurrence: 0..L/2 and L/2..L. With a loop segment (§1.11 B, `looping_active` as at evaluation):
    /// all = [0..ls) + [ls..=le]×(num_loops+1) + (le..L), encoder = all[..len/2], decoder = the rest.
    pub fn layer_schedule(&self) -> (Vec<usize>, Vec<usize>) {
        let l = self.num_layers;
        let all: Vec<usize> = if self.num_loops > 0 {
            let segment = self.loop_start..=self.loop_end;
            (0..self.loop_start)
                .chain((0..=self.num_loops).flat_map(|_| segment.clone()))
                .chain(self.loop_end + 1..l)
                .collect()
        } else {
            (0..l).collect()
        };
        let mut encoder = all;
        let decoder = encoder.split_off(encoder.len() / 2);
        (encoder, decoder)
    }

    pub fn num_skip_weights(&self) -> usize {
        if self.recurrence_zone_loops > 1 {
            let n_enc = self.num_layers / 2;
            return n_enc.min(self.num_layers - n_enc);
        }
        let (encoder, decoder) = self.layer_schedule();
        encoder.len().min(decoder.len())
    }

    /// The blocks in execution order, each with what it does to the U-Net's skip stack: the encoder steps push
    /// their output, decoder step j first adds skip_weights[j]⊙pop(). With seed 002's recurrence zone the rules
    /// are the physical layer's (push below L/2, pop skip i − L/2 above it while the stack is not empty), applied
    /// on the zone's first pass only, as its `_run_layers`.
    pub fn layer_steps(&self) -> Vec<LayerStep> {
        if self.recurrence_zone_loops <= 1 {
            let (encoder, decoder) = self.layer_schedule();
            let n_skip = encoder.len().min(decoder.len());
            let pushes = encoder.into_iter().map(|block| LayerStep {
                block,
                push: true,
                skip: None,
            });
            let pops = decoder.into_iter().enumerate().map(|(j, block)| LayerStep {
                block,
                push: false,
                skip: (j < n_skip).then_some(j),
            });
            return pushes.chain(pops).collect();
        }
        let l = self.num_layers;
        let (n_enc, n_skip) = (l / 2, self.num_skip_weights());
        let (zs, ze) = (self.recurrence_zone_start, self.recurrence_zone_end);
        let mut depth = 0usize;
        let mut physical = |block: usize| {
            if block < n_enc {
                depth += 1;
                return LayerStep {
                    block,
                    push: true,
                    skip: None,
                };
            }
            let di = block - n_enc;
            let skip = (depth > 0 && di < n_skip).then_some(di);
            depth -= usize::from(skip.is_some());
            LayerStep {
                block,
                push: false,
                skip,
            }
        };
        let mut steps: Vec<LayerStep> = (0..=ze).map(&mut physical).collect();
        for _ in 1..self.recurrence_zone_loops {
            steps.extend((zs..=ze).map(|block| LayerStep {
                block,
                push: false,
                skip: None,
            }));
        }
        steps.extend((ze + 1..l).map(physical));
        steps
    }

    /// Every tensor of the state dict with its shape, in the challenge's names (unbanked: parameter banks are
    /// split into per-block names on load, as the records' `_unbank_state_dict` does).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (d, v, kv, h) = (
            self.model_dim,
            self.vocab_size,
            self.kv_dim(),
            self.mlp_hidden(),
        );
        let heads = self.num_heads;
        let mut t = vec![("tok_emb.weight".to_string(), vec![v, d])];
        if self.bigram_vocab_size > 0 {
            t.push((
                "bigram.embed.weight".into(),
                vec![self.bigram_vocab_size, self.bigram_dim],
            ));
            if self.bigram_dim != d {
                t.push(("bigram.proj.weight".into(), vec![d, self.bigram_dim]));
            }
            t.push(("bigram.scale".into(), vec![]));
        }
        match self.smear_gate {
            SmearGate::None => {}
            SmearGate::V1 => t.push(("smear.gate".into(), vec![d])),
            SmearGate::V2 => {
                t.push(("smear_gate.weight".into(), vec![1, self.gate_window]));
                t.push(("smear_lambda".into(), vec![1]));
            }
        }
        t.push(("skip_weights".into(), vec![self.num_skip_weights(), d]));
        if self.skip_gates {
            t.push(("skip_gates".into(), vec![self.num_skip_weights(), d]));
        }
        for i in 0..self.num_layers {
            let b = format!("blocks.{i}");
            t.push((format!("{b}.attn_scale"), vec![d]));
            t.push((format!("{b}.mlp_scale"), vec![d]));
            t.push((format!("{b}.resid_mix"), vec![2, d]));
            t.push((format!("{b}.attn.c_q.weight"), vec![d, d]));
            t.push((format!("{b}.attn.c_k.weight"), vec![kv, d]));
            t.push((format!("{b}.attn.c_v.weight"), vec![kv, d]));
            t.push((format!("{b}.attn.proj.weight"), vec![d, d]));
            t.push((format!("{b}.attn.q_gain"), vec![heads]));
            if self.value_residual {
                t.push((format!("{b}.attn.vr_lambda"), vec![2]));
            }
            if self.v_lambda && i > 0 {
                t.push((format!("{b}.attn.v_lambda"), vec![2]));
            }
            if self.gated_attention {
                t.push((format!("{b}.attn.attn_gate.weight"), vec![heads, d]));
                t.push((format!("{b}.attn.attn_gate.bias"), vec![heads]));
            }
            if self.attn_out_gate {
                t.push((
                    format!("{b}.attn.attn_gate_proj.weight"),
                    vec![heads, self.gate_window],
                ));
            }
            if self.gated_attn {
                t.push((format!("{b}.attn.attn_gate_w"), vec![heads, d]));
            }
            if self.sparse_attn_gate {
                t.push((
                    format!("{b}.attn.attn_gate_w"),
                    vec![heads, self.gate_window],
                ));
            }
            t.push((format!("{b}.mlp.fc.weight"), vec![h, d]));
            t.push((format!("{b}.mlp.proj.weight"), vec![d, h]));
            if self.mlp_hidden_gain {
                t.push((format!("{b}.mlp.hidden_gain"), vec![h]));
            }
        }
        if !self.ve_layers.is_empty() {
            t.push(("ve_shared.embed.weight".into(), vec![v, self.ve_dim]));
            if self.ve_dim != kv {
                t.push(("ve_shared.proj.weight".into(), vec![kv, self.ve_dim]));
            }
            t.push(("ve_shared.scale".into(), vec![]));
            for k in 0..self.ve_layers.len() {
                t.push((format!("ve_layer_scales.{k}"), vec![1]));
            }
        }
        if self.vrl {
            for k in 0..self.num_layers.saturating_sub(1) {
                t.push((format!("vrl_scales.{k}"), vec![1]));
            }
        }
        if self.jepa_chunk_size > 0 {
            let (latent, hidden) = (self.jepa_latent_dim, self.jepa_proj_hidden);
            t.push(("jepa_projector.fc1.weight".into(), vec![hidden, d]));
            t.push(("jepa_projector.fc2.weight".into(), vec![latent, hidden]));
            t.push(("jepa_predictor.fc1.weight".into(), vec![latent, latent]));
            t.push(("jepa_predictor.fc2.weight".into(), vec![latent, latent]));
            t.push(("jepa_predictor.start_token".into(), vec![latent]));
            t.push(("jepa_injection.weight".into(), vec![d, latent]));
        }
        if self.parallel_start_layer.is_some() {
            t.push(("parallel_post_lambdas".into(), vec![self.num_layers, 2, 2]));
            t.push(("parallel_resid_lambdas".into(), vec![self.num_layers, 2]));
        }
        if !self.tie_embeddings {
            t.push(("lm_head.weight".into(), vec![v, d]));
        }
        t
    }

    pub fn parameter_count(&self) -> usize {
        self.expected_tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}
