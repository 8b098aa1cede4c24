//! Muon as the challenge's `train_gpt.py` runs it (from modded-nanogpt): Nesterov momentum on the gradient, then the
//! update is orthogonalized by five Newton–Schulz iterations with coefficients (3.4445, −4.7750, 2.0315), scaled by
//! √max(1, rows/cols), and applied as `p ← p − lr · update`.
//!
//! The reference orthogonalizes in bf16 on the GPU. To reproduce its numbers, every tensor it materializes in bf16
//! is rounded to bf16 here too (round-to-nearest-even), with the products and sums computed in f32 as PyTorch's bf16
//! kernels accumulate them; only the summation order inside a matrix product differs.

use candle_core::{DType, Tensor, Var};

use super::{OptimError, Result};
use crate::kernels::amx::bf16_rounded;

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
    if crate::kernels::amx::available() && x.device().is_cpu() {
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
    use crate::kernels::amx::matmul_bt;
    let (a, b, cc) = NS_COEFFICIENTS;
    let (a, b, cc) = (a as f32, b as f32, cc as f32);
    for _ in 0..steps {
        // A = X·Xᵀ [r, r]; B = b·A + c·A·A; X = a·X + B·X.
        let mut am = matmul_bt(&x, &x, r, r, c);
        crate::kernels::attention::round_to_bf16(&mut am);
        let ca = scaled_rounded(&am, cc);
        let mut bm = matmul_bt(&ca, &transposed(&am, r, r), r, r, r);
        scaled_plus_rounded(&am, b, &mut bm);
        let mut bx = matmul_bt(&bm, &transposed(&x, r, c), r, c, r);
        scaled_plus_rounded(&x, a, &mut bx);
        x = bx;
    }
    x
}

/// `bf16(m · s + 0)`: candle's `tensor * scalar` (affine) on a bf16 tensor.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2"))]
fn scaled_rounded(m: &[f32], s: f32) -> Vec<f32> {
    m.iter().map(|&v| bf16_rounded(v * s + 0.0)).collect()
}

/// In place: `product ← bf16(bf16(base · s + 0) + bf16(product))`, a scaled bf16 tensor plus a bf16 matmul's output.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2"))]
fn scaled_plus_rounded(base: &[f32], s: f32, product: &mut [f32]) {
    for (p, &v) in product.iter_mut().zip(base) {
        *p = bf16_rounded(bf16_rounded(v * s + 0.0) + bf16_rounded(*p));
    }
}

/// The transpose of m [rows, cols], by 16×16 blocks (both matrices' lines stay in cache).
fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 16;
    let mut t = vec![0f32; rows * cols];
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                for j in j0..(j0 + TILE).min(cols) {
                    t[j * rows + i] = m[i * cols + j];
                }
            }
        }
    }
    t
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
        // Momentum and Nesterov per matrix, then the orthogonalizations (independent of each other) over the
        // thread pool, then the updates: the same arithmetic per matrix as one after the other.
        let mut updates = Vec::with_capacity(params.len());
        for (g, buf) in grads.iter().zip(self.buffers.iter_mut()) {
            let Some(g) = g else {
                updates.push(None);
                continue;
            };
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
            *buf = Some(b);
            let scale = (rows as f64 / cols as f64).max(1.0).sqrt();
            updates.push(Some((g, scale)));
        }
        let steps = self.backend_steps;
        let orthogonalized: Vec<Option<Tensor>> = {
            use rayon::prelude::*;
            updates
                .into_par_iter()
                .map(|u| {
                    u.map(|(g, scale)| bf16(&(newton_schulz5(&g, steps)? * scale)?))
                        .transpose()
                })
                .collect::<Result<_>>()?
        };
        for (p, update) in params.iter().zip(orthogonalized) {
            if let Some(update) = update {
                p.set(&(p.as_tensor() - (update * self.lr)?)?)?;
            }
        }
        Ok(())
    }
}
