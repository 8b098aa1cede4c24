//! `torch.optim.Adam` (no weight decay, no amsgrad): `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
//! `p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)`, state per parameter, step count per parameter; with
//! `weight_decay` > 0 it is `torch.optim.AdamW`: `p ← p·(1 − lr·wd)` first (decoupled decay).

use candle_core::{Tensor, Var};

use super::{OptimError, Result};

pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// AdamW's decoupled weight decay (0: Adam).
    pub weight_decay: f64,
    state: Vec<Option<(Tensor, Tensor, u64)>>,
}

impl Adam {
    pub fn new(parameters: usize, lr: f64, beta1: f64, beta2: f64, eps: f64) -> Self {
        Adam {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay: 0.0,
            state: vec![None; parameters],
        }
    }

    pub fn step(&mut self, params: &[Var], grads: &[Option<Tensor>]) -> Result<()> {
        if params.len() != self.state.len() || grads.len() != params.len() {
            return Err(OptimError::Setup(format!(
                "Adam built for {} parameters was given {} parameters and {} gradients",
                self.state.len(),
                params.len(),
                grads.len()
            )));
        }
        for ((p, g), st) in params.iter().zip(grads).zip(self.state.iter_mut()) {
            let Some(g) = g else { continue };
            let (m, v, t) = match st.take() {
                Some(s) => s,
                None => (g.zeros_like()?, g.zeros_like()?, 0),
            };
            let t = t + 1;
            if self.weight_decay != 0.0 {
                p.set(&(p.as_tensor() * (1.0 - self.lr * self.weight_decay))?)?;
            }
            let m = ((m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let bc1 = 1.0 - self.beta1.powi(t as i32);
            let bc2 = 1.0 - self.beta2.powi(t as i32);
            let denom = ((v.sqrt()? / bc2.sqrt())? + self.eps)?;
            let update = ((&m / &denom)? * (self.lr / bc1))?;
            p.set(&(p.as_tensor() - update)?)?;
            *st = Some((m, v, t));
        }
        Ok(())
    }
}
