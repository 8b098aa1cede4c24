//! The reference's initialisation, drawn from a seed: token embedding N(0, tied_embed_init_std) when tied
//! (N(0, 1), nn.Embedding's default, when untied); q/k/v and fc weights U(−1/√fan_in, 1/√fan_in) (nn.Linear's
//! kaiming-uniform default); the output projections and the untied head zero (`_zero_init`); scales and
//! skip_weights one, resid_mix rows (1, 0), q_gain = qk_gain_init. The same seed gives the same weights.

use candle_core::{Device, Tensor};

use super::Result;
use crate::infer::config::ModelConfig;
use crate::infer::weights::StateDict;

/// splitmix64 with Box–Muller normals.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

pub fn initial_state(
    cfg: &ModelConfig,
    tied_embed_init_std: f64,
    seed: u64,
    device: &Device,
) -> Result<StateDict> {
    let mut rng = Rng::new(seed);
    let mut state = StateDict::new();
    for (name, shape) in cfg.expected_tensors() {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name == "tok_emb.weight" {
            let std = if cfg.tie_embeddings {
                tied_embed_init_std
            } else {
                1.0
            };
            (0..n).map(|_| (rng.normal() * std) as f32).collect()
        } else if name.ends_with("attn.proj.weight")
            || name.ends_with("mlp.proj.weight")
            || name == "lm_head.weight"
        {
            vec![0.0; n]
        } else if name.ends_with(".weight") {
            let bound = 1.0 / (shape[1] as f64).sqrt();
            (0..n)
                .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
                .collect()
        } else if name.ends_with("resid_mix") {
            let d = shape[1];
            (0..n).map(|i| if i < d { 1.0 } else { 0.0 }).collect()
        } else if name.ends_with("q_gain") {
            vec![cfg.qk_gain_init as f32; n]
        } else {
            // attn_scale, mlp_scale, skip_weights
            vec![1.0; n]
        };
        state.insert(name, Tensor::from_vec(values, shape, device)?);
    }
    Ok(state)
}
