//! The model config: a JSON object whose keys are the challenge's hyperparameter names (lower case), with the
//! challenge's defaults (root `train_gpt.py`, `Hyperparameters`). Unknown keys are rejected: a component pgolf does
//! not implement must never be silently ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{InferError, Result};

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
    #[serde(default = "d_mlp")]
    pub mlp_mult: usize,
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
fn d_mlp() -> usize {
    2
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

impl Default for ModelConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

impl ModelConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| InferError::Io {
            path: path.into(),
            source,
        })?;
        let cfg: ModelConfig = serde_json::from_str(&text).map_err(|e| InferError::Config {
            path: path.into(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|message| InferError::Config {
            path: path.into(),
            message,
        })?;
        Ok(cfg)
    }

    /// The constraints the challenge's constructors enforce, plus sanity bounds.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("num_layers", self.num_layers),
            ("model_dim", self.model_dim),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("mlp_mult", self.mlp_mult),
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
            || self.mlp_mult > 64
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
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.model_dim / self.num_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim()
    }

    pub fn mlp_hidden(&self) -> usize {
        self.mlp_mult * self.model_dim
    }

    /// U-Net halves: the first `num_layers / 2` blocks push skips, the rest pop them.
    pub fn num_encoder_layers(&self) -> usize {
        self.num_layers / 2
    }

    pub fn num_decoder_layers(&self) -> usize {
        self.num_layers - self.num_encoder_layers()
    }

    pub fn num_skip_weights(&self) -> usize {
        self.num_encoder_layers().min(self.num_decoder_layers())
    }

    /// Every tensor of the state dict with its shape, in the challenge's names.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (d, v, kv, h) = (
            self.model_dim,
            self.vocab_size,
            self.kv_dim(),
            self.mlp_hidden(),
        );
        let mut t = vec![("tok_emb.weight".to_string(), vec![v, d])];
        t.push(("skip_weights".into(), vec![self.num_skip_weights(), d]));
        for i in 0..self.num_layers {
            let b = format!("blocks.{i}");
            t.push((format!("{b}.attn_scale"), vec![d]));
            t.push((format!("{b}.mlp_scale"), vec![d]));
            t.push((format!("{b}.resid_mix"), vec![2, d]));
            t.push((format!("{b}.attn.c_q.weight"), vec![d, d]));
            t.push((format!("{b}.attn.c_k.weight"), vec![kv, d]));
            t.push((format!("{b}.attn.c_v.weight"), vec![kv, d]));
            t.push((format!("{b}.attn.proj.weight"), vec![d, d]));
            t.push((format!("{b}.attn.q_gain"), vec![self.num_heads]));
            t.push((format!("{b}.mlp.fc.weight"), vec![h, d]));
            t.push((format!("{b}.mlp.proj.weight"), vec![d, h]));
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
