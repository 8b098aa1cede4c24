//! Full-Hessian GPTQ as the records run it (`gptq_quantize_weight`, records 2026-04-05 … 04-29): SDClip per-row
//! scales, act-order (columns by descending Hessian diagonal), blocks of 128 columns, damping 0.01·mean(diag H),
//! dead columns zeroed, error feedback through the upper Cholesky factor of H⁻¹.
//!
//! Line by line against the reference (read it next to this):
//! ```text
//! H = H.clone(); dead = diag(H) == 0; H[dead, dead] = 1
//! damp = 0.01 * mean(diag(H)); diag(H) += damp
//! perm = argsort(diag(H), descending); W = W[:, perm]; W[:, dead[perm]] = 0; H = H[perm][:, perm]
//! Hinv = cholesky(cholesky_inverse(cholesky(H)), upper)
//! s = fp16(max(k · std(W_orig, dim=1) / cr, 1e-10))
//! for each block [i1, i2): for j: q = clamp(round(w_j / s), ±cr); err = (w_j − q·s) / Hinv[j, j];
//!     W_block[:, j:] −= err ⊗ Hinv[j, j:];  after the block: W[:, i2:] −= Err @ Hinv[i1:i2, i2:]
//! return Q[:, invperm], s
//! ```
//! The arithmetic on the weights is f32 as in the reference; the three factorizations run in f64 and are rounded to
//! f32 (the reference's LAPACK calls are f32: the two differ by f32 rounding, which can flip a symbol only when a
//! weight lands within ~1e-6 of a rounding boundary). Rounding is half-to-even, as `torch.round`.

use std::fmt;

/// Why a Hessian cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub enum GptqError {
    Shape {
        rows: usize,
        cols: usize,
        hessian: usize,
    },
    /// H + damping is not positive definite (the pivot that failed).
    NotPositiveDefinite { pivot: usize },
}

impl fmt::Display for GptqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GptqError::Shape {
                rows,
                cols,
                hessian,
            } => {
                write!(
                    f,
                    "a {rows}×{cols} weight needs a {cols}×{cols} Hessian, got {hessian} values"
                )
            }
            GptqError::NotPositiveDefinite { pivot } => write!(
                f,
                "the Hessian is singular after damping (Cholesky pivot {pivot} is not positive): calibrate on more tokens"
            ),
        }
    }
}

/// Lower Cholesky factor L (row-major, n×n) of a symmetric positive-definite matrix, in f64.
fn cholesky_lower(a: &[f64], n: usize) -> Result<Vec<f64>, GptqError> {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut sum = a[i * n + j];
            for k in 0..j {
                sum -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if sum <= 0.0 || !sum.is_finite() {
                    return Err(GptqError::NotPositiveDefinite { pivot: i });
                }
                l[i * n + i] = sum.sqrt();
            } else {
                l[i * n + j] = sum / l[j * n + j];
            }
        }
    }
    Ok(l)
}

/// (L Lᵀ)⁻¹ from L, as `torch.cholesky_inverse`: invert L (lower-triangular), then L⁻ᵀ L⁻¹.
fn cholesky_inverse(l: &[f64], n: usize) -> Vec<f64> {
    let mut linv = vec![0.0f64; n * n];
    for i in 0..n {
        linv[i * n + i] = 1.0 / l[i * n + i];
        for j in 0..i {
            let mut sum = 0.0;
            for k in j..i {
                sum += l[i * n + k] * linv[k * n + j];
            }
            linv[i * n + j] = -sum / l[i * n + i];
        }
    }
    let mut out = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            // (L⁻ᵀ L⁻¹)[i][j] = Σ_k L⁻¹[k][i] · L⁻¹[k][j], k ≥ max(i, j) = i.
            let mut sum = 0.0;
            for k in i..n {
                sum += linv[k * n + i] * linv[k * n + j];
            }
            out[i * n + j] = sum;
            out[j * n + i] = sum;
        }
    }
    out
}

/// GPTQ of a row-major `rows × cols` weight with the `cols × cols` input Hessian `h` (any positive scale: the result
/// does not depend on it). Returns the int8 symbols (row-major, original column order) and the f32 values of the
/// fp16 row scales.
pub fn gptq_quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f32],
    clip_sigmas: f32,
    clip_range: i32,
    block_size: usize,
) -> Result<(Vec<i8>, Vec<f32>), GptqError> {
    if h.len() != cols * cols || w.len() != rows * cols {
        return Err(GptqError::Shape {
            rows,
            cols,
            hessian: h.len(),
        });
    }
    let mut hm: Vec<f32> = h.to_vec();
    let dead: Vec<bool> = (0..cols).map(|i| hm[i * cols + i] == 0.0).collect();
    for i in 0..cols {
        if dead[i] {
            hm[i * cols + i] = 1.0;
        }
    }
    // damp = 0.01 · mean(diag H), in f32 (the reference's H is f32).
    let diag_sum: f64 = (0..cols).map(|i| hm[i * cols + i] as f64).sum();
    let damp = (0.01f64 * (diag_sum / cols as f64)) as f32;
    for i in 0..cols {
        hm[i * cols + i] += damp;
    }
    // Act order: descending diagonal (ties keep index order; only dead columns tie, and they carry no error).
    let mut perm: Vec<usize> = (0..cols).collect();
    perm.sort_by(|&a, &b| hm[b * cols + b].total_cmp(&hm[a * cols + a]));
    let mut invperm = vec![0usize; cols];
    for (i, &p) in perm.iter().enumerate() {
        invperm[p] = i;
    }
    let hp: Vec<f64> = (0..cols * cols)
        .map(|k| hm[perm[k / cols] * cols + perm[k % cols]] as f64)
        .collect();
    let l = cholesky_lower(&hp, cols)?;
    let inv = cholesky_inverse(&l, cols);
    // Upper factor U of H⁻¹ = Uᵀ U, i.e. the transpose of its lower factor.
    let linv = cholesky_lower(&inv, cols)?;
    let hinv: Vec<f32> = (0..cols * cols)
        .map(|k| linv[(k % cols) * cols + k / cols] as f32)
        .collect();
    // SDClip scales from the original rows: std unbiased, then fp16.
    let scales: Vec<f32> = w
        .chunks(cols)
        .map(|row| {
            let n = row.len() as f64;
            let mean = row.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var =
                row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            let s = (clip_sigmas * var.sqrt() as f32 / clip_range as f32).max(1e-10);
            half::f16::from_f32(s).to_f32()
        })
        .collect();
    let cr = clip_range as f32;
    // W permuted, dead columns zeroed; column-major per row block for the updates.
    let mut work = vec![0f32; rows * cols];
    for r in 0..rows {
        for (c, &p) in perm.iter().enumerate() {
            work[r * cols + c] = if dead[p] { 0.0 } else { w[r * cols + p] };
        }
    }
    let mut q = vec![0i8; rows * cols];
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + block_size).min(cols);
        let width = i2 - i1;
        let mut err = vec![0f32; rows * width];
        for j in 0..width {
            let col = i1 + j;
            let d = hinv[col * cols + col];
            for r in 0..rows {
                let s = scales[r];
                let wv = work[r * cols + col];
                let qv = (wv / s).round_ties_even().clamp(-cr, cr);
                q[r * cols + col] = qv as i8;
                let e = (wv - qv * s) / d;
                err[r * width + j] = e;
                for k in col..i2 {
                    work[r * cols + k] -= e * hinv[col * cols + k];
                }
            }
        }
        // W[:, i2:] −= Err @ Hinv[i1:i2, i2:]
        if i2 < cols {
            for r in 0..rows {
                for k in i2..cols {
                    let mut acc = 0f32;
                    for j in 0..width {
                        acc += err[r * width + j] * hinv[(i1 + j) * cols + k];
                    }
                    work[r * cols + k] -= acc;
                }
            }
        }
        i1 = i2;
    }
    let mut out = vec![0i8; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[r * cols + c] = q[r * cols + invperm[c]];
        }
    }
    Ok((out, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_inverse_inverts() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let l = cholesky_lower(&a, 3).unwrap();
        let inv = cholesky_inverse(&l, 3);
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert_eq!(
            cholesky_lower(&[1.0, 2.0, 2.0, 1.0], 2).unwrap_err(),
            GptqError::NotPositiveDefinite { pivot: 1 }
        );
    }

    #[test]
    fn identity_hessian_is_round_to_nearest() {
        // With H = I every column is independent: GPTQ reduces to SDClip rounding.
        let (rows, cols) = (4, 6);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let h: Vec<f32> = (0..cols * cols)
            .map(|k| if k / cols == k % cols { 1.0 } else { 0.0 })
            .collect();
        let (q, s) = gptq_quantize(&w, rows, cols, &h, 3.0, 31, 128).unwrap();
        for r in 0..rows {
            for c in 0..cols {
                let want = (w[r * cols + c] / s[r])
                    .round_ties_even()
                    .clamp(-31.0, 31.0) as i8;
                assert_eq!(q[r * cols + c], want);
            }
        }
        assert!(matches!(
            gptq_quantize(&w, rows, cols, &h[..35], 3.0, 31, 128),
            Err(GptqError::Shape { .. })
        ));
    }

    #[test]
    fn a_hessian_singular_after_damping_is_an_error() {
        // [[1, 2], [2, 1]] has eigenvalue −1: 1% damping of the mean diagonal cannot make it positive definite.
        // A NaN Hessian (from NaN activations) fails the same way.
        let w = [0.1f32, -0.2, 0.3, 0.05];
        for h in [[1.0f32, 2.0, 2.0, 1.0], [f32::NAN, 0.0, 0.0, 1.0]] {
            let e = gptq_quantize(&w, 2, 2, &h, 3.0, 31, 128).unwrap_err();
            assert!(matches!(e, GptqError::NotPositiveDefinite { .. }), "{e}");
            assert!(e.to_string().contains("singular after damping"));
        }
    }
}
