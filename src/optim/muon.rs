//! Muon as the challenge's `train_gpt.py` runs it (from modded-nanogpt): Nesterov momentum on the gradient, then the
//! update is orthogonalized by five Newton–Schulz iterations with coefficients (3.4445, −4.7750, 2.0315), scaled by
//! √max(1, rows/cols), and applied as `p ← p − lr · update`.
//!
//! The reference orthogonalizes in bf16 on the GPU. To reproduce its numbers, every tensor it materializes in bf16
//! is rounded to bf16 here too (round-to-nearest-even), with the products and sums computed in f32 as PyTorch's bf16
//! kernels accumulate them; only the summation order inside a matrix product differs.

use candle_core::{DType, Tensor, Var};

use super::{OptimError, Result};

pub const NS_COEFFICIENTS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);

/// Rounds an f32 tensor to the nearest bf16 and back.
fn bf16(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::BF16)?.to_dtype(DType::F32)?)
}

/// `zeropower_via_newtonschulz5(G, steps)`: G [rows, cols] → an approximately orthogonal matrix of the same shape.
pub fn newton_schulz5(g: &Tensor, steps: usize) -> Result<Tensor> {
    let (a, b, c) = NS_COEFFICIENTS;
    let eps = 1e-7;
    let g = g.to_dtype(DType::F32)?;
    let (rows, cols) = g.dims2()?;
    let mut x = bf16(&g)?;
    let norm = bf16(&x.sqr()?.sum_all()?.sqrt()?)?;
    let denom = bf16(&(norm + eps)?)?;
    x = bf16(&x.broadcast_div(&denom)?)?;
    let transposed = rows > cols;
    if transposed {
        x = x.t()?.contiguous()?;
    }
    for _ in 0..steps {
        let am = bf16(&x.matmul(&x.t()?)?)?;
        let ca = bf16(&(&am * c)?)?;
        let bm = bf16(&(bf16(&(&am * b)?)? + bf16(&ca.matmul(&am)?)?)?)?;
        x = bf16(&(bf16(&(&x * a)?)? + bf16(&bm.matmul(&x)?)?)?)?;
    }
    Ok(if transposed { x.t()?.contiguous()? } else { x })
}

pub struct Muon {
    pub lr: f64,
    pub momentum: f64,
    pub backend_steps: usize,
    pub nesterov: bool,
    buffers: Vec<Option<Tensor>>,
}

impl Muon {
    pub fn new(parameters: usize, lr: f64, momentum: f64, backend_steps: usize) -> Self {
        Muon {
            lr,
            momentum,
            backend_steps,
            nesterov: true,
            buffers: vec![None; parameters],
        }
    }

    pub fn step(&mut self, params: &[Var], grads: &[Option<Tensor>]) -> Result<()> {
        if params.len() != self.buffers.len() || grads.len() != params.len() {
            return Err(OptimError::Setup(format!(
                "Muon built for {} parameters was given {} parameters and {} gradients",
                self.buffers.len(),
                params.len(),
                grads.len()
            )));
        }
        for ((p, g), buf) in params.iter().zip(grads).zip(self.buffers.iter_mut()) {
            let Some(g) = g else { continue };
            let (rows, cols) = g.dims2().map_err(|_| {
                OptimError::Setup(format!(
                    "Muon updates matrices only, got shape {:?}",
                    g.dims()
                ))
            })?;
            let b = match buf.take() {
                Some(b) => ((b * self.momentum)? + g)?,
                None => g.clone(),
            };
            let g = if self.nesterov {
                (g + (&b * self.momentum)?)?
            } else {
                b.clone()
            };
            let scale = (rows as f64 / cols as f64).max(1.0).sqrt();
            let update = bf16(&(newton_schulz5(&g, self.backend_steps)? * scale)?)?;
            p.set(&(p.as_tensor() - (update * self.lr)?)?)?;
            *buf = Some(b);
        }
        Ok(())
    }
}
