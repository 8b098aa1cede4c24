//! candle's device-generic operations: the compositions a GPU runs (explicit masked-softmax attention, composed
//! RMSNorm, RoPE and cross-entropy, candle's autograd), on any device.

use candle_core::{Device, Tensor};

use super::compose::{self, Common};
use super::products::Products;
use super::{Backend, Kernels, OpsKind, Pass, Result, RopeTables};

pub struct GenericOps {
    common: Common,
}

impl GenericOps {
    pub fn new(device: &Device, products: Products) -> Self {
        GenericOps {
            common: Common::new(device, products),
        }
    }
}

impl Kernels for GenericOps {
    fn backend(&self) -> Backend {
        Backend {
            ops: OpsKind::Generic,
            products: self.common.products.kind(),
        }
    }

    fn common(&self) -> &Common {
        &self.common
    }

    fn rms_norm(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match pass {
            Pass::Score => compose::rms_norm_scoring(self, x),
            Pass::Train => compose::rms_norm_differentiable(x),
        }
    }

    fn channel_scale(&self, x: &Tensor, s: &Tensor, _pass: Pass) -> Result<Tensor> {
        x.broadcast_mul(s)
    }

    fn rope(&self, z: &Tensor, rope: &RopeTables, pass: Pass) -> Result<Tensor> {
        match pass {
            Pass::Score => compose::rope_scoring(z, rope),
            Pass::Train => {
                candle_nn::rotary_emb::rope_slow(&z.contiguous()?, &rope.cos, &rope.neg_sin)
            }
        }
    }

    fn head_gain(&self, q: &Tensor, gain: &Tensor, _pass: Pass) -> Result<Tensor> {
        q.broadcast_mul(&gain.reshape((1, q.dim(1)?, 1, 1))?)
    }

    fn relu_squared(&self, u: &Tensor, slope: f64) -> Result<Tensor> {
        compose::relu_squared(u, slope)
    }

    fn causal_attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, pass: Pass) -> Result<Tensor> {
        compose::causal_attention(self, q, k, v, pass)
    }

    fn causal_probabilities(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        let (scores, v) = compose::attention_scores(self, q, k, v)?;
        let t = scores.dim(candle_core::D::Minus1)?;
        let masked = scores.broadcast_add(&compose::causal_mask(t, q.device())?)?;
        let p = match pass {
            Pass::Score => candle_nn::ops::softmax_last_dim(&masked)?,
            Pass::Train => compose::softmax_last_dim_differentiable(&masked)?,
        };
        Ok((p, v))
    }

    fn capped_token_losses(&self, z: &Tensor, targets: &Tensor, cap: f64) -> Result<Tensor> {
        compose::capped_token_losses(z, targets, cap)
    }
}
