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
    if crate::infer::amx::available() && x.device().is_cpu() {
        let (r, c) = x.dims2()?;
        let values = tiles_iterations(x.flatten_all()?.to_vec1::<f32>()?, r, c, steps);
        let x = Tensor::from_vec(values, (r, c), x.device())?;
        return Ok(if transposed { x.t()?.contiguous()? } else { x });
    }
    for _ in 0..steps {
        let am = bf16(&x.matmul(&x.t()?)?)?;
        let ca = bf16(&(&am * c)?)?;
        let bm = bf16(&(bf16(&(&am * b)?)? + bf16(&ca.matmul(&am)?)?)?)?;
        x = bf16(&(bf16(&(&x * a)?)? + bf16(&bm.matmul(&x)?)?)?)?;
    }
    Ok(if transposed { x.t()?.contiguous()? } else { x })
}

/// The Newton–Schulz iterations of [`newton_schulz5`] on AMX tiles, for x [r, c] already normalized and rounded:
/// each product's operands are bf16 values (the tiles take them exactly) accumulated in f32, then rounded to bf16, as
/// the reference's bf16 matmuls on a CPU (oneDNN on AMX) and on a GPU compute them; every element-wise step is the
/// composition's (a product or sum in f32, then rounded). Only the order of a product's f32 sums differs from the
/// composition's f32 `gemm`: an entry may round one bf16 ulp apart (the optimizer test's bound).
fn tiles_iterations(mut x: Vec<f32>, r: usize, c: usize, steps: usize) -> Vec<f32> {
    use crate::infer::amx::{bf16_bits, matmul_bt};
    let (a, b, cc) = NS_COEFFICIENTS;
    let (a, b, cc) = (a as f32, b as f32, cc as f32);
    let round = |v: f32| f32::from_bits((bf16_bits(v) as u32) << 16);
    // candle's `tensor * scalar` is affine(x · s + 0).
    let scaled =
        |m: &[f32], s: f32| -> Vec<f32> { m.iter().map(|&v| round(v * s + 0.0)).collect() };
    let transpose = |m: &[f32], rows: usize, cols: usize| -> Vec<f32> {
        let mut t = vec![0f32; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                t[j * rows + i] = m[i * cols + j];
            }
        }
        t
    };
    for _ in 0..steps {
        // A = X·Xᵀ [r, r]; B = b·A + c·A·A; X = a·X + B·X.
        let am: Vec<f32> = matmul_bt(&x, &x, r, r, c).into_iter().map(round).collect();
        let ca = scaled(&am, cc);
        let a_sq: Vec<f32> = matmul_bt(&ca, &transpose(&am, r, r), r, r, r)
            .into_iter()
            .map(round)
            .collect();
        let bm: Vec<f32> = scaled(&am, b)
            .iter()
            .zip(&a_sq)
            .map(|(p, q)| round(p + q))
            .collect();
        let bx = matmul_bt(&bm, &transpose(&x, r, c), r, c, r);
        x = scaled(&x, a)
            .iter()
            .zip(&bx)
            .map(|(p, &q)| round(p + round(q)))
            .collect();
    }
    x
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
