//! A backend whose products a hook observes: every linear layer's input is shown to the hook before the product
//! runs (GPTQ calibration collects its Hessians this way). The steps that fuse a product with its neighbours (the
//! MLP's activation, the head's loss, normed outputs written in bf16 for the next product) run as their
//! compositions instead, so that every product's input exists as a tensor the hook can see; the values are those of
//! the wrapped backend.

use std::sync::Arc;

use candle_core::Tensor;

use super::compose::{self, Common};
use super::{
    Activation, Backend, BlockNorm, HeadShape, Kernels, LinearHook, Pass, Result, RopeTables,
    Weight,
};

pub struct Observed {
    inner: Arc<dyn Kernels>,
    hook: Arc<dyn LinearHook>,
}

impl Observed {
    pub fn new(inner: Arc<dyn Kernels>, hook: Arc<dyn LinearHook>) -> Self {
        Observed { inner, hook }
    }

    /// A normed output that a product reads next as a tensor the hook sees (never pre-rounded for it).
    fn seen(norm: BlockNorm) -> BlockNorm {
        BlockNorm {
            plain_readers: false,
            ..norm
        }
    }
}

impl Kernels for Observed {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn common(&self) -> &Common {
        self.inner.common()
    }

    fn linear(&self, x: &Tensor, w: &Weight) -> Result<Tensor> {
        self.hook.observe(w.name(), x)?;
        self.inner.linear(x, w)
    }

    fn matmul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.inner.matmul(a, b)
    }

    fn rms_norm(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        self.inner.rms_norm(x, pass)
    }

    fn channel_scale(&self, x: &Tensor, s: &Tensor, pass: Pass) -> Result<Tensor> {
        self.inner.channel_scale(x, s, pass)
    }

    fn rope(&self, z: &Tensor, rope: &RopeTables, pass: Pass) -> Result<Tensor> {
        self.inner.rope(z, rope, pass)
    }

    fn head_gain(&self, q: &Tensor, gain: &Tensor, pass: Pass) -> Result<Tensor> {
        self.inner.head_gain(q, gain, pass)
    }

    fn relu_squared(&self, u: &Tensor, slope: f64) -> Result<Tensor> {
        self.inner.relu_squared(u, slope)
    }

    fn causal_attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, pass: Pass) -> Result<Tensor> {
        self.inner.causal_attention(q, k, v, pass)
    }

    fn causal_probabilities(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        self.inner.causal_probabilities(q, k, v, pass)
    }

    fn capped_token_losses(&self, z: &Tensor, targets: &Tensor, cap: f64) -> Result<Tensor> {
        self.inner.capped_token_losses(z, targets, cap)
    }

    fn block_norm(&self, x: &Tensor, scale: f64, pass: Pass) -> Result<Tensor> {
        self.inner.block_norm(x, scale, pass)
    }

    fn add_scaled(&self, x: &Tensor, a: &Tensor, s: &Tensor, pass: Pass) -> Result<Tensor> {
        self.inner.add_scaled(x, a, s, pass)
    }

    fn add_scaled_normed(
        &self,
        x: &Tensor,
        a: &Tensor,
        s: &Tensor,
        norm: BlockNorm,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        self.inner
            .add_scaled_normed(x, a, s, Self::seen(norm), pass)
    }

    fn residual_mix(&self, x: &Tensor, x0: &Tensor, mix: &Tensor, pass: Pass) -> Result<Tensor> {
        self.inner.residual_mix(x, x0, mix, pass)
    }

    fn residual_mix_normed(
        &self,
        x: &Tensor,
        x0: &Tensor,
        mix: &Tensor,
        norm: BlockNorm,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        self.inner
            .residual_mix_normed(x, x0, mix, Self::seen(norm), pass)
    }

    fn qk_heads(
        &self,
        q_raw: &Tensor,
        k_raw: &Tensor,
        shape: HeadShape,
        rope: &RopeTables,
        gain: &Tensor,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        self.inner.qk_heads(q_raw, k_raw, shape, rope, gain, pass)
    }

    fn attention_by_position(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        pass: Pass,
    ) -> Result<Tensor> {
        self.inner.attention_by_position(q, k, v, pass)
    }

    /// Product, activation, product: both products' inputs seen.
    fn mlp(&self, x: &Tensor, fc: &Weight, proj: &Weight, act: Activation) -> Result<Tensor> {
        compose::mlp_composed(self, x, fc, proj, act)
    }

    /// The head's product seen, then the loss.
    fn head_losses(
        &self,
        hidden: &Tensor,
        head: &Weight,
        targets: &Tensor,
        cap: f64,
    ) -> Result<Tensor> {
        compose::head_losses(self, hidden, head, targets, cap)
    }
}
