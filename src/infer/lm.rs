//! What evaluation and test-time training need from a model, whatever its graph: the records' GPT ([`Gpt`]) and
//! seed 001's byte-patch encoder–decoder ([`super::patch_jepa::BytePatchJepa`]) both answer it.

use candle_core::{Device, Tensor, Var};

use super::lora::{LoraSet, LoraTarget};
use super::model::Gpt;
use super::{InferError, Result};
use crate::kernels::Backend;

/// The shapes a batched LoRA needs from a model: per layer pass (slot), each target's (in, out) features, and the
/// head's (d, vocab).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraShapes {
    pub slots: usize,
    pub model_dim: usize,
    pub vocab: usize,
    /// (target, in, out) of one layer pass.
    pub targets: Vec<(LoraTarget, usize, usize)>,
}

/// A causal language model over token ids: output position p predicts the token after input position p and reads
/// inputs 0..=p only.
pub trait CausalLm: Sync {
    fn vocab_size(&self) -> usize;
    fn device(&self) -> &Device;
    /// Logits [B, T, V] (f32) before any soft-cap, for ids [B, T] (u32).
    fn uncapped_logits(&self, ids: &Tensor) -> Result<Tensor>;
    /// The soft-cap applied to one logit (the identity for a model without one).
    fn softcap(&self, z: f32) -> f32;
    /// [`CausalLm::softcap`] over a row of logits into `out` (same length), value for value.
    fn softcap_row(&self, z: &[f32], out: &mut [f32]) {
        for (o, &z) in out.iter_mut().zip(z) {
            *o = self.softcap(z);
        }
    }
    /// [`CausalLm::softcap_row`] into a new vector: a row of capped logits.
    fn capped_row(&self, z: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; z.len()];
        self.softcap_row(z, &mut out);
        out
    }
    /// The soft-cap applied to a tensor of logits, where they are (the identity for a model without one).
    fn softcap_logits(&self, z: &Tensor) -> Result<Tensor> {
        Ok(z.clone())
    }
    /// The mean cross-entropy of the (capped) logits against `targets` [B, T], differentiable with respect to every
    /// trainable weight.
    fn train_loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        Ok(self.train_token_losses(ids, targets)?.mean_all()?)
    }
    /// The cross-entropy of every target [B·T], differentiable (for weighted training losses).
    fn train_token_losses(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor>;
    /// Every weight with its state-dict name, in the reference's order.
    fn named_weights(&self) -> Vec<(&str, &Tensor)>;
    /// Turns the weights `selected` by name into variables the model reads; the others become constants.
    fn make_trainable(&mut self, selected: &dyn Fn(&str) -> bool) -> Result<Vec<(String, Var)>>;
    /// The index of the layer block that holds the weight `name` (None for weights outside the blocks).
    fn layer_block(&self, name: &str) -> Option<usize>;
    /// How many layer blocks [`CausalLm::layer_block`] counts.
    fn layer_blocks(&self) -> usize;
    /// The backend the model was built on (the device-generic operations always, off the CPU).
    fn backend(&self) -> Backend;
    /// The shapes of the adapters LoRA test-time training can attach (None: this model takes none).
    fn lora_shapes(&self) -> Option<LoraShapes> {
        None
    }
    /// Per-target cross-entropy [B, T] with one document's adapters per batch element, differentiable with respect
    /// to the adapters.
    fn lora_token_losses(
        &self,
        _ids: &Tensor,
        _targets: &Tensor,
        _lora: &LoraSet,
    ) -> Result<Tensor> {
        Err(InferError::Unsupported(
            "this architecture takes no LoRA adapters".into(),
        ))
    }
    /// Per-target cross-entropy [N] of one flat buffer [1, N] with attention isolated to `segments`,
    /// differentiable with respect to the trainable weights (phased TTT's global SGD on documents).
    fn train_token_losses_segmented(
        &self,
        _ids: &Tensor,
        _targets: &Tensor,
        _segments: &[(usize, usize)],
    ) -> Result<Tensor> {
        Err(InferError::Unsupported(
            "this architecture has no document-isolated training pass".into(),
        ))
    }
    /// Uncapped logits [B, T, V] with the adapters (for the probes' full rows).
    fn lora_uncapped_logits(&self, _ids: &Tensor, _lora: &LoraSet) -> Result<Tensor> {
        Err(InferError::Unsupported(
            "this architecture takes no LoRA adapters".into(),
        ))
    }
}

impl CausalLm for Gpt {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn device(&self) -> &Device {
        Gpt::device(self)
    }

    fn uncapped_logits(&self, ids: &Tensor) -> Result<Tensor> {
        Gpt::uncapped_logits(self, ids)
    }

    fn softcap(&self, z: f32) -> f32 {
        Gpt::softcap(self, z)
    }

    fn softcap_row(&self, z: &[f32], out: &mut [f32]) {
        // The same expression as `softcap`, vectorized.
        crate::kernels::loss::softcap_values(self.cfg.logit_softcap as f32, z, out);
    }

    fn softcap_logits(&self, z: &Tensor) -> Result<Tensor> {
        self.softcap_tensor(z)
    }

    fn train_token_losses(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        Gpt::train_token_losses(self, ids, targets)
    }

    fn named_weights(&self) -> Vec<(&str, &Tensor)> {
        self.parameters().collect()
    }

    fn make_trainable(&mut self, selected: &dyn Fn(&str) -> bool) -> Result<Vec<(String, Var)>> {
        Gpt::make_trainable(self, selected)
    }

    fn backend(&self) -> Backend {
        Gpt::backend(self)
    }

    /// `blocks.{i}.…` is block i.
    fn layer_block(&self, name: &str) -> Option<usize> {
        block_index(name.strip_prefix("blocks.")?)
    }

    fn layer_blocks(&self) -> usize {
        self.cfg.num_layers
    }

    fn lora_shapes(&self) -> Option<LoraShapes> {
        let c = &self.cfg;
        let d = c.model_dim;
        Some(LoraShapes {
            slots: self.layer_passes(),
            model_dim: d,
            vocab: c.vocab_size,
            targets: vec![
                (LoraTarget::Q, d, d),
                (LoraTarget::K, d, c.kv_dim()),
                (LoraTarget::V, d, c.kv_dim()),
                (LoraTarget::O, d, d),
                (LoraTarget::Mlp, d, d),
            ],
        })
    }

    fn lora_token_losses(&self, ids: &Tensor, targets: &Tensor, lora: &LoraSet) -> Result<Tensor> {
        Gpt::lora_token_losses(self, ids, targets, lora)
    }

    fn lora_uncapped_logits(&self, ids: &Tensor, lora: &LoraSet) -> Result<Tensor> {
        Gpt::lora_uncapped_logits(self, ids, lora)
    }

    fn train_token_losses_segmented(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        segments: &[(usize, usize)],
    ) -> Result<Tensor> {
        Gpt::train_token_losses_segmented(self, ids, targets, segments)
    }
}

/// The block index at the start of `rest` (`"3.attn.c_q.weight"` → 3): digits followed by a dot.
pub(crate) fn block_index(rest: &str) -> Option<usize> {
    let (index, _) = rest.split_once('.')?;
    index.parse().ok()
}
