//! `torch.optim.SGD` with momentum (no dampening, no Nesterov, no weight decay) and
//! `torch.nn.utils.clip_grad_norm_`.

use candle_core::{Tensor, Var};

use super::{OptimError, Result};

/// SGD with heavy-ball momentum: on the first step a parameter's buffer is its gradient, then
/// `buf = momentum · buf + grad`; the update is `p ← p − lr · buf`. One buffer per parameter, kept across steps and
/// learning-rate changes (the records create one optimizer for the whole evaluation).
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    pub fn new(parameters: usize, lr: f64, momentum: f64) -> Self {
        Sgd {
            lr,
            momentum,
            buffers: vec![None; parameters],
        }
    }

    /// One step. `grads[i]` belongs to `params[i]`; a parameter without a gradient (`None`, PyTorch's `grad is None`)
    /// is left alone and its buffer untouched.
    pub fn step(&mut self, params: &[Var], grads: &[Option<Tensor>]) -> Result<()> {
        if params.len() != self.buffers.len() || grads.len() != params.len() {
            return Err(OptimError::Setup(format!(
                "SGD built for {} parameters was given {} parameters and {} gradients",
                self.buffers.len(),
                params.len(),
                grads.len()
            )));
        }
        for ((p, g), buf) in params.iter().zip(grads).zip(self.buffers.iter_mut()) {
            let Some(g) = g else { continue };
            let b = match buf.take() {
                Some(b) if self.momentum != 0.0 => ((b * self.momentum)? + g)?,
                _ => g.clone(),
            };
            p.set(&(p.as_tensor() - (&b * self.lr)?)?)?;
            *buf = Some(b);
        }
        Ok(())
    }
}

/// `clip_grad_norm_(params, max_norm)`: the total 2-norm over every gradient; when `max_norm / (norm + 1e-6)` is
/// below 1 every gradient is scaled by it. Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut sq = 0.0f64;
    for g in grads.iter().flatten() {
        sq += g
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    let norm = sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn momentum_matches_the_torch_rule() {
        // p0 = 1, grads 1 then 2, lr 0.1, momentum 0.9: buf 1 → p 0.9; buf 0.9·1 + 2 = 2.9 → p 0.61.
        let p = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut opt = Sgd::new(1, 0.1, 0.9);
        for g in [1.0f32, 2.0] {
            let g = Tensor::new(&[g], &Device::Cpu).unwrap();
            opt.step(std::slice::from_ref(&p), &[Some(g)]).unwrap();
        }
        let v = p.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((v - 0.61).abs() < 1e-6, "{v}");
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = vec![
            Some(Tensor::new(&[3.0f32], &Device::Cpu).unwrap()),
            Some(Tensor::new(&[4.0f32], &Device::Cpu).unwrap()),
        ];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-9);
        let a = g[0].as_ref().unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((a - 3.0 / (5.0 + 1e-6)).abs() < 1e-6);
    }
}
