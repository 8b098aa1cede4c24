//! Batched low-rank adapters, as the LoRA test-time-training records run them (rec/2026-03-17 `BatchedLinearLoRA`,
//! rec/2026-04-27 `BatchedTTTLoRA`): every batch element (one document) has its own A [r, in] and B [out, r], and a
//! projection's output gains (x·Aᵀ)·Bᵀ·scale for that element. The forward pass reads them per layer pass (a looped
//! block's passes are separate slots) and on the head; gradients flow into A and B through candle's autograd.

use candle_core::Tensor;

use super::Result;

/// Which projection of a layer pass an adapter corrects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// `attn.c_q` (input: the block's normed input).
    Q,
    /// `attn.c_k`.
    K,
    /// `attn.c_v`.
    V,
    /// `attn.proj`'s output (input: the block's normed input, as the records' `o_loras` read it).
    O,
    /// The MLP's output (input: the MLP's normed input).
    Mlp,
}

/// One batched adapter: A [B, r, in], B [B, out, r] (f32, contiguous).
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    pub a: Tensor,
    pub b: Tensor,
}

impl LoraAdapter {
    /// (x·Aᵀ)·Bᵀ for x [B, T, in]: [B, T, out], multiplied in the reference's order.
    pub fn delta(&self, x: &Tensor, scale: f64) -> Result<Tensor> {
        let x = x.contiguous()?;
        let at = self.a.transpose(1, 2)?.contiguous()?;
        let bt = self.b.transpose(1, 2)?.contiguous()?;
        let d = x.matmul(&at)?.matmul(&bt)?;
        Ok(if scale == 1.0 { d } else { (d * scale)? })
    }
}

/// The adapters of one batch: per layer pass (slot), those it has, and the head's.
#[derive(Clone, Debug, Default)]
pub struct LoraSet {
    /// Indexed by layer pass (the model's step order); each holds (target, adapter) pairs.
    pub slots: Vec<Vec<(LoraTarget, LoraAdapter)>>,
    pub head: Option<LoraAdapter>,
    /// alpha / rank (1 for the records without an alpha).
    pub scale: f64,
}

impl LoraSet {
    /// The correction of `target` at layer pass `slot` for input x, if that adapter exists.
    pub fn delta(
        &self,
        slot: Option<usize>,
        target: LoraTarget,
        x: &Tensor,
    ) -> Result<Option<Tensor>> {
        let Some(adapters) = slot.and_then(|s| self.slots.get(s)) else {
            return Ok(None);
        };
        match adapters.iter().find(|(t, _)| *t == target) {
            Some((_, a)) => Ok(Some(a.delta(x, self.scale)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_delta_is_per_batch_element() {
        let dev = Device::Cpu;
        // B = 2, T = 1, in = 2, r = 1, out = 2.
        let x = Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0], (2, 1, 2), &dev).unwrap();
        let a = Tensor::from_vec(vec![1f32, 0.0, 0.0, 1.0], (2, 1, 2), &dev).unwrap();
        let b = Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0], (2, 2, 1), &dev).unwrap();
        let d = LoraAdapter { a, b }.delta(&x, 0.5).unwrap();
        // Element 0: x·Aᵀ = 1 → [1, 2]·0.5; element 1: x·Aᵀ = 4 → [12, 16]·0.5.
        assert_eq!(
            d.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.5, 1.0, 6.0, 8.0]
        );
    }
}
