//! The hand-written CPU f32 kernels: for scoring passes the fused forward-only steps of [`super::fused`] and the
//! blocked attention of [`super::attention`]; for training passes the hand-differentiated nodes of [`super::ops`],
//! [`super::heads`], [`super::attention_grad`] and [`super::loss`] (f32: they touch no matrix product, so they serve
//! both precisions, except where a node holds products of its own). A tensor that is not a CPU f32 tensor takes the
//! composition of [`super::compose`].

use candle_core::{Device, Tensor};

use super::buffers::{applies, with_values};
use super::compose::{self, Common};
use super::fused::{self, Norm};
use super::products::Products;
use super::{
    Backend, BlockNorm, HeadShape, Kernels, OpsKind, Pass, Precision, RMS_NORM_EPS, Result,
    RopeTables, Weight,
};

pub struct CpuOps {
    common: Common,
}

impl CpuOps {
    pub fn new(device: &Device, products: Products) -> Self {
        CpuOps {
            common: Common::new(device, products),
        }
    }

    /// Whether a step of a scoring pass over these tensors runs on the fused forward-only kernels.
    fn fused_scoring(pass: Pass, tensors: &[&Tensor]) -> bool {
        pass == Pass::Score && applies(tensors)
    }

    /// Whether a training pass runs the hand-differentiated f32 nodes on these tensors.
    fn training_nodes(pass: Pass, tensors: &[&Tensor]) -> bool {
        pass == Pass::Train && applies(tensors)
    }

    /// The block norm as the fused kernels take it: written rounded to bf16 where every reader is a product on AMX
    /// tiles (which would round it itself).
    fn norm(&self, norm: BlockNorm) -> Norm {
        Norm {
            eps: RMS_NORM_EPS,
            scale: norm.scale as f32,
            bf16: norm.plain_readers && self.common.products.on_tiles(),
        }
    }
}

impl Kernels for CpuOps {
    fn backend(&self) -> Backend {
        Backend {
            ops: OpsKind::CpuFused,
            products: self.common.products.kind(),
        }
    }

    fn common(&self) -> &Common {
        &self.common
    }

    fn rms_norm(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        match pass {
            Pass::Score => compose::rms_norm_scoring(self, x),
            Pass::Train => super::ops::rms_norm(x, RMS_NORM_EPS),
        }
    }

    fn channel_scale(&self, x: &Tensor, s: &Tensor, pass: Pass) -> Result<Tensor> {
        match pass {
            Pass::Train => super::ops::channel_scale(x, s),
            Pass::Score => x.broadcast_mul(s),
        }
    }

    fn rope(&self, z: &Tensor, rope: &RopeTables, pass: Pass) -> Result<Tensor> {
        match pass {
            Pass::Score => compose::rope_scoring(z, rope),
            Pass::Train => super::ops::rope(&z.contiguous()?, &rope.cos, &rope.neg_sin.neg()?),
        }
    }

    fn head_gain(&self, q: &Tensor, gain: &Tensor, _pass: Pass) -> Result<Tensor> {
        if applies(&[q, gain]) {
            return super::ops::head_gain(q, gain);
        }
        q.broadcast_mul(&gain.reshape((1, q.dim(1)?, 1, 1))?)
    }

    fn relu_squared(&self, u: &Tensor, slope: f64) -> Result<Tensor> {
        if slope == 0.0 && applies(&[u]) {
            return super::ops::relu_squared(u);
        }
        compose::relu_squared(u, slope)
    }

    /// Scoring: the blocked kernel (under mixed precision on bf16-rounded operands: rounded by the tile packing on
    /// AMX, here for the f32 products); training in f32: one differentiable node blocked over queries; otherwise
    /// the composition.
    fn causal_attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, pass: Pass) -> Result<Tensor> {
        let (b, h, t, hd) = q.dims4()?;
        if pass == Pass::Score {
            let shape = super::attention::AttentionShape {
                batch: b,
                heads: h,
                kv_heads: k.dim(1)?,
                seq_len: t,
                head_dim: hd,
            };
            let mixed = self.precision() == Precision::Mixed;
            let round_here = mixed && !self.common.products.on_tiles();
            let rounded = |z: &Tensor| -> Result<Tensor> {
                let mut values = z.flatten_all()?.to_vec1::<f32>()?;
                super::attention::round_to_bf16(&mut values);
                Tensor::from_vec(values, z.shape(), z.device())
            };
            let (q, k, v) = if round_here {
                (rounded(q)?, rounded(k)?, rounded(v)?)
            } else {
                (q.clone(), k.clone(), v.clone())
            };
            let scale = (1.0 / (hd as f64).sqrt()) as f32;
            let y = with_values(&q, |q| {
                with_values(&k, |k| {
                    with_values(&v, |v| {
                        Ok(super::attention::causal_attention(
                            q, k, v, shape, scale, mixed,
                        ))
                    })
                })
            })?;
            // Returned as a [B, H, T, hd] view of [B, T, H, hd] values (transposed here over all threads): the
            // caller takes the heads back to [B, T, H·hd] for the output projection, which then reads them in place.
            let by_position = fused::heads_to_positions(&y, b, h, t, hd);
            return Tensor::from_vec(by_position, (b, t, h, hd), q.device())?.transpose(1, 2);
        }
        if self.precision() == Precision::Fp32 && t * hd > 0 && applies(&[q, k, v]) {
            let scale = 1.0 / (hd as f64).sqrt();
            return super::attention_grad::causal_attention(q, k, v, scale);
        }
        compose::causal_attention(self, q, k, v, pass)
    }

    fn causal_probabilities(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        let (scores, v) = compose::attention_scores(self, q, k, v)?;
        Ok((super::attention::causal_softmax(&scores)?, v))
    }

    fn capped_token_losses(&self, z: &Tensor, targets: &Tensor, cap: f64) -> Result<Tensor> {
        // Over the leading dimensions as they are: a reshape would be one more logits-sized gradient.
        super::loss::capped_cross_entropy_rows(z, &targets.flatten_all()?, cap as f32)
    }

    fn block_norm(&self, x: &Tensor, scale: f64, pass: Pass) -> Result<Tensor> {
        if Self::fused_scoring(pass, &[x]) {
            return fused::rms_norm_scaled(x, RMS_NORM_EPS, scale as f32);
        }
        compose::block_norm(self, x, scale, pass)
    }

    fn add_scaled(&self, x: &Tensor, a: &Tensor, s: &Tensor, pass: Pass) -> Result<Tensor> {
        if Self::fused_scoring(pass, &[x, a, s]) {
            return Ok(fused::add_scaled(x, a, s, None)?.0);
        }
        if Self::training_nodes(pass, &[x, a, s]) && x.dims() == a.dims() {
            return super::ops::add_scaled(x, a, s);
        }
        compose::add_scaled(self, x, a, s, pass)
    }

    fn add_scaled_normed(
        &self,
        x: &Tensor,
        a: &Tensor,
        s: &Tensor,
        norm: BlockNorm,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        if Self::fused_scoring(pass, &[x, a, s]) {
            let (sum, normed) = fused::add_scaled(x, a, s, Some(self.norm(norm)))?;
            return Ok((sum, normed.expect("asked for")));
        }
        let sum = self.add_scaled(x, a, s, pass)?;
        let normed = self.block_norm(&sum, norm.scale, pass)?;
        Ok((sum, normed))
    }

    fn residual_mix(&self, x: &Tensor, x0: &Tensor, mix: &Tensor, pass: Pass) -> Result<Tensor> {
        if Self::fused_scoring(pass, &[x, x0, mix]) {
            return Ok(fused::residual_mix(x, x0, &mix.get(0)?, &mix.get(1)?, None)?.0);
        }
        if Self::training_nodes(pass, &[x, x0, mix]) && x.dims() == x0.dims() {
            return super::ops::residual_mix(x, x0, mix);
        }
        compose::residual_mix(self, x, x0, mix, pass)
    }

    fn residual_mix_normed(
        &self,
        x: &Tensor,
        x0: &Tensor,
        mix: &Tensor,
        norm: BlockNorm,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        if Self::fused_scoring(pass, &[x, x0, mix]) {
            let (mixed, normed) =
                fused::residual_mix(x, x0, &mix.get(0)?, &mix.get(1)?, Some(self.norm(norm)))?;
            return Ok((mixed, normed.expect("asked for")));
        }
        let mixed = self.residual_mix(x, x0, mix, pass)?;
        let normed = self.block_norm(&mixed, norm.scale, pass)?;
        Ok((mixed, normed))
    }

    /// Scoring: the heads' transpose, RMSNorm, full RoPE and gain in one pass each; training in f32: the same steps
    /// as one differentiable node per projection (bit for bit the composition).
    fn qk_heads(
        &self,
        q_raw: &Tensor,
        k_raw: &Tensor,
        shape: HeadShape,
        rope: &RopeTables,
        gain: &Tensor,
        pass: Pass,
    ) -> Result<(Tensor, Tensor)> {
        let full_rotation = shape.rotary_dims == shape.head_dim;
        if full_rotation && Self::fused_scoring(pass, &[q_raw, k_raw]) {
            let (cos, neg_sin) = (&rope.cos, &rope.neg_sin);
            let (h, hkv) = (shape.heads, shape.kv_heads);
            return Ok((
                fused::heads_normed_rotated(q_raw, h, RMS_NORM_EPS, cos, neg_sin, Some(gain))?,
                fused::heads_normed_rotated(k_raw, hkv, RMS_NORM_EPS, cos, neg_sin, None)?,
            ));
        }
        if full_rotation
            && self.precision() == Precision::Fp32
            && Self::training_nodes(pass, &[q_raw, k_raw])
        {
            let sin = rope.neg_sin.neg()?;
            let (h, hkv) = (shape.heads, shape.kv_heads);
            use super::heads::normed_rotated_heads;
            return Ok((
                normed_rotated_heads(q_raw, h, RMS_NORM_EPS, &rope.cos, &sin, Some(gain))?,
                normed_rotated_heads(k_raw, hkv, RMS_NORM_EPS, &rope.cos, &sin, None)?,
            ));
        }
        compose::qk_heads(self, q_raw, k_raw, shape, rope, gain, pass)
    }

    /// Training in f32: one node that reads v and writes y as the projections lay them out (no transposes).
    fn attention_by_position(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        pass: Pass,
    ) -> Result<Tensor> {
        if self.precision() == Precision::Fp32 && Self::training_nodes(pass, &[q, k, v]) {
            let scale = 1.0 / (q.dim(3)? as f64).sqrt();
            return super::attention_grad::causal_attention_by_position(q, k, v, scale);
        }
        compose::attention_by_position(self, q, k, v, pass)
    }

    /// In f32: the head's product and the capped cross-entropy as one node.
    fn head_losses(
        &self,
        hidden: &Tensor,
        head: &Weight,
        targets: &Tensor,
        cap: f64,
    ) -> Result<Tensor> {
        if self.precision() == Precision::Fp32 && applies(&[hidden, head.tensor()]) {
            let targets = targets.flatten_all()?;
            return super::loss::capped_head_losses(hidden, head.tensor(), &targets, cap as f32);
        }
        compose::head_losses(self, hidden, head, targets, cap)
    }
}
