//! The kernels floor: every numeric operation the models run, behind one interface ([`Kernels`]), with the
//! implementations a model chooses between once, when it is built ([`Backend::choose`]).
//!
//! - [`generic::GenericOps`]: candle's device-generic compositions (explicit masked-softmax attention, composed
//!   RMSNorm, RoPE and cross-entropy, candle's autograd): what runs on a GPU, and on the CPU with `--generic-ops`.
//! - [`cpu::CpuOps`]: the hand-written CPU f32 kernels: fused forward-only steps for scoring passes ([`fused`]),
//!   hand-differentiated nodes for training passes ([`ops`], [`heads`], [`attention_grad`], [`loss`]), the blocked
//!   attention ([`attention`]); where a tensor is not a CPU f32 tensor, the composition.
//!
//! Matrix products go through [`products::Products`], chosen with the backend: the `gemm` crate's f32 products on
//! the CPU, AMX bf16 tiles ([`amx`]) under mixed precision where the CPU has them, candle's products elsewhere.
//! [`observed::Observed`] wraps any backend to show a hook every product's input (GPTQ calibration installs one).
//!
//! Nothing here knows of models, evaluation or training; the models in `infer` call only this interface.

pub mod amx;
pub mod attention;
pub mod attention_grad;
pub mod buffers;
pub mod compose;
pub mod cpu;
pub mod fused;
pub mod generic;
pub mod heads;
pub mod loss;
pub mod observed;
pub mod ops;
pub mod precision;
pub mod products;
pub mod weight;

use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::Serialize;

pub use precision::Precision;
pub use weight::Weight;

/// What the kernels return: candle's errors (a kernel's own, such as a shape mismatch, as a candle message).
pub type Result<T> = candle_core::Result<T>;

/// `F.rms_norm` with eps=None uses FLT_EPSILON.
pub const RMS_NORM_EPS: f32 = f32::EPSILON;

/// Which kernels a forward pass uses: `Score` the fastest ones (no gradients: fused RMSNorm and RoPE, the blocked
/// CPU attention), `Train` differentiable ones, so `backward()` reaches every weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Score,
    Train,
}

/// The element-wise and attention operations a backend runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpsKind {
    /// candle's device-generic compositions.
    Generic,
    /// The hand-written CPU f32 kernels.
    CpuFused,
}

/// Where matrix products run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductsKind {
    /// candle's products (any device; under mixed precision, bf16 operands cast by candle).
    Candle,
    /// The `gemm` crate's f32 products on CPU tensors (candle's elsewhere, and for mixed precision).
    CpuGemm,
    /// AMX bf16 tiles for mixed-precision products of CPU tensors (the `gemm` crate's f32 products otherwise).
    AmxTiles,
}

/// The backend a model runs on, chosen once when the model is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub ops: OpsKind,
    pub products: ProductsKind,
}

impl Backend {
    /// The backend for a device and precision: on the CPU the hand-written kernels (unless `generic_ops` asks for
    /// the GPU's compositions) with the `gemm` crate's products, or AMX tiles for mixed precision where the CPU has
    /// them; off the CPU, candle's operations.
    pub fn choose(device: &Device, precision: Precision, generic_ops: bool) -> Backend {
        if !device.is_cpu() {
            return Backend {
                ops: OpsKind::Generic,
                products: ProductsKind::Candle,
            };
        }
        let products = if precision == Precision::Mixed && amx::available() {
            ProductsKind::AmxTiles
        } else {
            ProductsKind::CpuGemm
        };
        let ops = if generic_ops {
            OpsKind::Generic
        } else {
            OpsKind::CpuFused
        };
        Backend { ops, products }
    }

    /// The kernels of this backend for tensors on `device` under `precision`.
    pub fn kernels(self, device: &Device, precision: Precision) -> Arc<dyn Kernels> {
        let products = products::Products::new(self.products, precision);
        match self.ops {
            OpsKind::Generic => Arc::new(generic::GenericOps::new(device, products)),
            OpsKind::CpuFused => Arc::new(cpu::CpuOps::new(device, products)),
        }
    }

    /// How a report names the engine of mixed-precision products on the CPU.
    pub fn mixed_products(self) -> String {
        match self.products {
            ProductsKind::AmxTiles => "AMX bf16 tiles for the scoring passes' projections and head; attention on \
                                       bf16-rounded q, k, v and probabilities; training passes through candle's bf16 \
                                       products"
                .to_string(),
            _ => format!(
                "no AMX: {}; bf16-rounded operands through f32 products (slower than fp32)",
                amx::why_not()
            ),
        }
    }
}

/// How a fused residual step writes the RMSNorm of its result (the next block's normed input).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockNorm {
    /// The block's LN scale (1 without LN scale).
    pub scale: f64,
    /// Every reader of the normed rows is a plain product of the model's weights (no adapter, no hook): a backend
    /// whose products read bf16 may write them rounded once.
    pub plain_readers: bool,
}

/// RoPE tables (cos, −sin) of [T, rd/2] for the rotated dims rd.
#[derive(Clone, Debug)]
pub struct RopeTables {
    pub cos: Tensor,
    pub neg_sin: Tensor,
}

/// The shape of the q and k projections' heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The leading dims of each head that RoPE rotates (all of them without partial RoPE).
    pub rotary_dims: usize,
}

/// The MLP's activation: `relu(u)²`, or `leaky_relu(u, slope)²` = `(max(u,0) + slope·min(u,0))²`, then times a
/// per-channel gain when given.
#[derive(Clone, Copy, Debug)]
pub struct Activation<'a> {
    pub slope: f64,
    pub gain: Option<&'a Tensor>,
}

/// Sees the input of every product of a model's weights (the rows a linear layer reads), by the weight's name.
pub trait LinearHook: Send + Sync {
    fn observe(&self, weight: &str, input: &Tensor) -> Result<()>;
}

/// Every operation a model runs. The primitives have no default; the fused steps default to the compositions of
/// [`compose`], which a backend overrides with its own kernels where it has them. Each result is the same function of
/// its inputs on every backend, up to the rounding each kernel documents.
pub trait Kernels: Send + Sync {
    fn backend(&self) -> Backend;
    /// The device, the product engine and the cached ones every backend holds.
    fn common(&self) -> &compose::Common;
    fn precision(&self) -> Precision {
        self.common().products.precision()
    }
    fn device(&self) -> &Device {
        &self.common().device
    }
    /// The product engine (for the fused steps that compose their own products).
    fn products(&self) -> &products::Products {
        &self.common().products
    }

    /// `F.linear(x, W)` = x · Wᵀ over all leading dimensions, under the precision.
    fn linear(&self, x: &Tensor, w: &Weight) -> Result<Tensor> {
        self.products().linear(x, w)
    }
    /// `a · b` under the precision (attention's probabilities times values).
    fn matmul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.precision().matmul(a, b)
    }
    /// `F.rms_norm` over the last dimension (eps = FLT_EPSILON).
    fn rms_norm(&self, x: &Tensor, pass: Pass) -> Result<Tensor>;
    /// `x · s` with a per-channel vector `s` [d].
    fn channel_scale(&self, x: &Tensor, s: &Tensor, pass: Pass) -> Result<Tensor>;
    /// Half-split RoPE over all of the last dimension of z [B, H, T, hd] with tables [T, hd/2].
    fn rope(&self, z: &Tensor, rope: &RopeTables, pass: Pass) -> Result<Tensor>;
    /// q [B, H, T, hd] times a per-head gain [H].
    fn head_gain(&self, q: &Tensor, gain: &Tensor, pass: Pass) -> Result<Tensor>;
    /// `relu(u)²`, or `leaky_relu(u, slope)²`.
    fn relu_squared(&self, u: &Tensor, slope: f64) -> Result<Tensor>;
    /// Causal grouped-query softmax attention of q [B, H, T, hd] over k, v [B, Hkv, T, hd] (scale 1/√hd): [B, H, T,
    /// hd] (possibly a strided view).
    fn causal_attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, pass: Pass) -> Result<Tensor>;
    /// The causal softmax A = softmax(q·kᵀ/√hd) [B, H, T, T] with grouped-query keys, and the values expanded to
    /// the H heads (for the variants that need A itself).
    fn causal_probabilities(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)>;
    /// Soft-capped cross-entropy of uncapped logits z [.., V] against `targets`: one loss per row.
    fn capped_token_losses(&self, z: &Tensor, targets: &Tensor, cap: f64) -> Result<Tensor>;

    /// The RMSNorm times a block's LN scale.
    fn block_norm(&self, x: &Tensor, scale: f64, pass: Pass) -> Result<Tensor> {
        compose::block_norm(self, x, scale, pass)
    }
    /// `x + s · a` with a per-channel `s` [d] (a branch's output added to the residual stream).
    fn add_scaled(&self, x: &Tensor, a: &Tensor, s: &Tensor, pass: Pass) -> Result<Tensor> {
        compose::add_scaled(self, x, a, s, pass)
    }
    /// [`Kernels::add_scaled`] and the block norm of its result.
    fn add_scaled_normed(
        &self,
        x: &Tensor,
        a: &Tensor,
        s: &Tensor,
        norm: BlockNorm,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        let sum = self.add_scaled(x, a, s, pass)?;
        let normed = self.block_norm(&sum, norm.scale, pass)?;
        Ok((sum, normed))
    }
    /// The residual mix `x · mix[0] + x0 · mix[1]` with mix [2, d].
    fn residual_mix(&self, x: &Tensor, x0: &Tensor, mix: &Tensor, pass: Pass) -> Result<Tensor> {
        compose::residual_mix(self, x, x0, mix, pass)
    }
    /// [`Kernels::residual_mix`] and the block norm of its result.
    fn residual_mix_normed(
        &self,
        x: &Tensor,
        x0: &Tensor,
        mix: &Tensor,
        norm: BlockNorm,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        let mixed = self.residual_mix(x, x0, mix, pass)?;
        let normed = self.block_norm(&mixed, norm.scale, pass)?;
        Ok((mixed, normed))
    }
    /// The attention heads of the q and k projections [B, T, H·hd], [B, T, Hkv·hd]: per-head RMSNorm, RoPE over the
    /// rotary dims, q times its per-head gain; [B, H, T, hd] and [B, Hkv, T, hd].
    fn qk_heads(
        &self,
        q_raw: &Tensor,
        k_raw: &Tensor,
        shape: HeadShape,
        rope: &RopeTables,
        gain: &Tensor,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        compose::qk_heads(self, q_raw, k_raw, shape, rope, gain, pass)
    }
    /// Attention with the values and the output laid out by position, as the projections write and read them:
    /// v [B, T, Hkv·hd] (the value projection's output) and the result [B, T, H·hd]; q, k as the heads.
    fn attention_by_position(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        pass: Pass,
    ) -> Result<Tensor> {
        compose::attention_by_position(self, q, k, v, pass)
    }
    /// The MLP: `activation(x · fcᵀ) · projᵀ`.
    fn mlp(&self, x: &Tensor, fc: &Weight, proj: &Weight, act: Activation) -> Result<Tensor> {
        compose::mlp(self, x, fc, proj, act)
    }
    /// The head and the soft-capped cross-entropy of final hidden states [.., d] against `targets`: one loss per
    /// row.
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
