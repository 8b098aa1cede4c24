//! The arithmetic a forward pass runs in: plain f32, or the records' mixed precision.
//!
//! The records train and evaluate under `torch.autocast(device_type="cuda", dtype=torch.bfloat16)` with f32
//! parameters (`CastedLinear` casts its weight to the input's dtype at each call): every matrix product (the linear
//! layers, the head, and attention's q·kᵀ and p·v inside FlashAttention) reads bf16 operands and accumulates in
//! f32, while normalisation, softmax, the soft-cap and the losses stay in f32. [`Precision::Mixed`] is that rule:
//! weights stay f32 (so test-time training updates f32 masters), the operands of each product are rounded to bf16
//! (round-to-nearest-even, as torch's cast), and the product comes back as f32.

use std::str::FromStr;

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::Result;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    Fp32,
    /// bf16 operands for matrix products, f32 for everything else (the records' autocast).
    Mixed,
}

impl Precision {
    /// The name `--precision` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Mixed => "mixed",
        }
    }

    /// `a · b` under this precision; the result is f32 either way.
    pub fn matmul(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Precision::Fp32 => a.matmul(b)?,
            Precision::Mixed => a
                .to_dtype(DType::BF16)?
                .matmul(&b.to_dtype(DType::BF16)?)?
                .to_dtype(DType::F32)?,
        })
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "fp32" | "f32" => Ok(Precision::Fp32),
            "mixed" | "bf16" => Ok(Precision::Mixed),
            other => Err(format!(
                "unknown precision {other:?}: expected fp32 or mixed (bf16 matrix products, f32 elsewhere)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mixed_rounds_the_operands_to_bf16_and_returns_f32() {
        // 1 + 2⁻¹⁰ is not a bf16 value (8 mantissa bits): it rounds to 1, so the mixed product loses it.
        let a = Tensor::new(&[[1.0f32 + 1.0 / 1024.0]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[3.0f32]], &Device::Cpu).unwrap();
        let exact = Precision::Fp32.matmul(&a, &b).unwrap();
        let mixed = Precision::Mixed.matmul(&a, &b).unwrap();
        assert_eq!(mixed.dtype(), DType::F32);
        assert_eq!(exact.to_vec2::<f32>().unwrap()[0][0], 3.0 + 3.0 / 1024.0);
        assert_eq!(mixed.to_vec2::<f32>().unwrap()[0][0], 3.0);
    }

    #[test]
    fn parses_both_names_and_refuses_others() {
        assert_eq!("fp32".parse::<Precision>(), Ok(Precision::Fp32));
        assert_eq!("mixed".parse::<Precision>(), Ok(Precision::Mixed));
        assert!(
            "f16"
                .parse::<Precision>()
                .unwrap_err()
                .contains("fp32 or mixed")
        );
    }
}
