//! LQER (records 2026-04-27/29): a low-rank correction of a quantized matrix's error, W ≈ Wq + A·B with A = U_r·Σ_r
//! and B = V_rᵀ from the SVD of E = W − Wq, applied to the `top_k` matrices with the largest ‖E‖_F and stored
//! quantized. Asymmetric (`_lqer_pack_asym`): A int2 in [−2, 1] with one fp16 scale max|A|/1.5, B int4 in [−8, 7]
//! with an fp16 scale max|B_g|/7.5 per group of `g` values of the flattened B. Symmetric (`_lqer_pack`): per-row
//! fp16 scales max|row|/(2^(b−1)−1) for both, symbols clamped to ±(2^(b−1)−1). Rounding half-to-even, divisions in
//! f32 by the fp16 scale widened to f32, as the reference does.
//!
//! The SVD's leading r triplets come from a randomized subspace iteration in f64 (deterministic seed, rank + 8
//! columns, power iterations run until the leading triplets stop moving, then an exact eigen-decomposition of the
//! small projected problem): A·B agrees with torch's full SVD to f32 precision on the records' error matrices.

/// The quantized factors of one correction.
#[derive(Clone, Debug, PartialEq)]
pub struct LqerFactors {
    pub rank: usize,
    pub a_q: Vec<i8>,
    /// One scale (asymmetric) or one per row of A.
    pub a_s: Vec<f32>,
    pub b_q: Vec<i8>,
    /// One scale per group (asymmetric) or per row of B.
    pub b_s: Vec<f32>,
    pub asymmetric: bool,
}

fn f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// `_lqer_pack_asym(A, B, g)`: A [rows, r], B [r, cols] row-major, B.len() divisible by g.
pub fn pack_asym(a: &[f32], b: &[f32], g: usize) -> (Vec<i8>, f32, Vec<i8>, Vec<f32>) {
    let amax = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-10);
    let sa = f16(amax / 1.5);
    let qa = a
        .iter()
        .map(|&x| (x / sa).round_ties_even().clamp(-2.0, 1.0) as i8)
        .collect();
    let mut sb = Vec::with_capacity(b.len() / g);
    let mut qb = Vec::with_capacity(b.len());
    for grp in b.chunks(g) {
        let bmax = grp.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-10);
        let s = f16(bmax / 7.5);
        sb.push(s);
        qb.extend(
            grp.iter()
                .map(|&x| (x / s).round_ties_even().clamp(-8.0, 7.0) as i8),
        );
    }
    (qa, sa, qb, sb)
}

/// `_lqer_pack(A, B, bits)`: per-row scales for A [rows, r] and B [r, cols].
pub fn pack_sym(
    a: &[f32],
    rank: usize,
    b: &[f32],
    cols: usize,
    bits: u32,
) -> (Vec<i8>, Vec<f32>, Vec<i8>, Vec<f32>) {
    let rng = ((1i32 << (bits - 1)) - 1) as f32;
    let rows_of = |m: &[f32], width: usize| -> (Vec<i8>, Vec<f32>) {
        let mut q = Vec::with_capacity(m.len());
        let mut s = Vec::with_capacity(m.len() / width.max(1));
        for row in m.chunks(width.max(1)) {
            let sc = f16(row.iter().fold(0f32, |mx, x| mx.max(x.abs())).max(1e-10) / rng);
            s.push(sc);
            q.extend(
                row.iter()
                    .map(|&x| (x / sc).round_ties_even().clamp(-rng, rng) as i8),
            );
        }
        (q, s)
    };
    let (qa, sa) = rows_of(a, rank);
    let (qb, sb) = rows_of(b, cols);
    (qa, sa, qb, sb)
}

/// Orthonormalizes the columns of a row-major [n, k] matrix in place (modified Gram–Schmidt).
fn orthonormalize(m: &mut [f64], n: usize, k: usize) {
    for j in 0..k {
        for p in 0..j {
            let dot: f64 = (0..n).map(|i| m[i * k + j] * m[i * k + p]).sum();
            for i in 0..n {
                m[i * k + j] -= dot * m[i * k + p];
            }
        }
        let norm = (0..n).map(|i| m[i * k + j].powi(2)).sum::<f64>().sqrt();
        if norm > 0.0 {
            for i in 0..n {
                m[i * k + j] /= norm;
            }
        }
    }
}

/// Eigen-decomposition of a small symmetric matrix by cyclic Jacobi: (eigenvalues, eigenvectors as columns).
fn jacobi_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// The leading `rank` SVD triplets of a row-major [rows, cols] matrix as A = U_r·Σ_r [rows, rank] and
/// B = V_rᵀ [rank, cols] (f32).
pub fn low_rank(e: &[f32], rows: usize, cols: usize, rank: usize) -> (Vec<f32>, Vec<f32>) {
    let rank = rank.min(rows).min(cols);
    let k = (rank + 8).min(rows).min(cols);
    let e64: Vec<f64> = e.iter().map(|&x| x as f64).collect();
    let mut state = 0x1a2b_3c4d_u64;
    let mut rand = || {
        state = state.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    // Y = E Ω, then (E Eᵀ)^q Y with re-orthonormalization.
    let omega: Vec<f64> = (0..cols * k).map(|_| rand()).collect();
    let mul_e = |x: &[f64]| -> Vec<f64> {
        let mut y = vec![0.0; rows * k];
        for r in 0..rows {
            for c in 0..cols {
                let ev = e64[r * cols + c];
                for j in 0..k {
                    y[r * k + j] += ev * x[c * k + j];
                }
            }
        }
        y
    };
    let mul_et = |y: &[f64]| -> Vec<f64> {
        let mut z = vec![0.0; cols * k];
        for r in 0..rows {
            for c in 0..cols {
                let ev = e64[r * cols + c];
                for j in 0..k {
                    z[c * k + j] += ev * y[r * k + j];
                }
            }
        }
        z
    };
    // The Rayleigh–Ritz step on the current basis Q = y: S = Qᵀ E [k, cols]; S Sᵀ = W Λ Wᵀ; U = Q W; σ = √λ;
    // Vᵀ = Wᵀ S / σ. Returns the leading `rank` triplets as A = U·Σ [rows, rank] (f64) and B = Vᵀ [rank, cols].
    let ritz = |y: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let z = mul_et(y); // [cols, k] = Eᵀ Q = Sᵀ
        let mut sst = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                sst[i * k + j] = (0..cols).map(|c| z[c * k + i] * z[c * k + j]).sum();
            }
        }
        let (lambda, w) = jacobi_eigen(sst, k);
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| lambda[b].total_cmp(&lambda[a]));
        let mut a = vec![0f64; rows * rank];
        let mut b = vec![0f64; rank * cols];
        for (t, &idx) in order.iter().take(rank).enumerate() {
            let sigma = lambda[idx].max(0.0).sqrt();
            let mut u: Vec<f64> = (0..rows)
                .map(|r| (0..k).map(|j| y[r * k + j] * w[j * k + idx]).sum())
                .collect();
            let mut v: Vec<f64> = (0..cols)
                .map(|c| {
                    if sigma > 0.0 {
                        (0..k).map(|j| z[c * k + j] * w[j * k + idx]).sum::<f64>() / sigma
                    } else {
                        0.0
                    }
                })
                .collect();
            // A fixed sign (the largest |u| component positive) so successive iterates can be compared.
            let pivot = u
                .iter()
                .fold(0f64, |m, &x| if x.abs() > m.abs() { x } else { m });
            if pivot < 0.0 {
                u.iter_mut().for_each(|x| *x = -*x);
                v.iter_mut().for_each(|x| *x = -*x);
            }
            for r in 0..rows {
                a[r * rank + t] = u[r] * sigma;
            }
            b[t * cols..(t + 1) * cols].copy_from_slice(&v);
        }
        (a, b)
    };
    // Power iterations (E Eᵀ)^q Y with re-orthonormalization, until the leading triplets stop moving (every 4
    // iterations after the first 8: the largest change of U·Σ below 1e-10 of σ₁), at most 400. Quantization errors
    // have flat spectra, so a fixed small q leaves ~1e-5 in the correction; run to convergence it agrees with a full
    // SVD to f32 precision (`tests/gptq.rs`).
    let mut y = mul_e(&omega);
    orthonormalize(&mut y, rows, k);
    let mut prev: Option<Vec<f64>> = None;
    for it in 1..=400 {
        let mut z = mul_et(&y);
        orthonormalize(&mut z, cols, k);
        y = mul_e(&z);
        orthonormalize(&mut y, rows, k);
        if it >= 8 && it % 4 == 0 {
            let (a, _) = ritz(&y);
            let sigma1 = (0..rows).map(|r| a[r * rank].powi(2)).sum::<f64>().sqrt();
            if let Some(p) = &prev {
                let moved = a.iter().zip(p).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
                if moved <= 1e-10 * sigma1.max(f64::MIN_POSITIVE) {
                    break;
                }
            }
            prev = Some(a);
        }
    }
    let (a, b) = ritz(&y);
    let (a, b) = (
        a.iter().map(|&x| x as f32).collect::<Vec<f32>>(),
        b.iter().map(|&x| x as f32).collect::<Vec<f32>>(),
    );
    (a, b)
}

/// The correction of one error matrix, packed as the records pack it (asymmetric when `B` splits into groups of
/// `group`, else symmetric with `factor_bits`).
pub fn lqer_factors(
    e: &[f32],
    rows: usize,
    cols: usize,
    rank: usize,
    asymmetric: bool,
    group: usize,
    factor_bits: u32,
) -> LqerFactors {
    let (a, b) = low_rank(e, rows, cols, rank);
    let rank = a.len() / rows.max(1);
    if asymmetric && group > 0 && b.len().is_multiple_of(group) {
        let (a_q, sa, b_q, b_s) = pack_asym(&a, &b, group);
        LqerFactors {
            rank,
            a_q,
            a_s: vec![sa],
            b_q,
            b_s,
            asymmetric: true,
        }
    } else {
        let (a_q, a_s, b_q, b_s) = pack_sym(&a, rank, &b, cols, factor_bits);
        LqerFactors {
            rank,
            a_q,
            a_s,
            b_q,
            b_s,
            asymmetric: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_rank_recovers_a_separated_spectrum() {
        // E = Σ σ_i u_i v_iᵀ with σ = 8, 4, 2, 1 on orthogonal-ish vectors, plus small noise.
        let (rows, cols) = (40, 30);
        let mut e = vec![0f32; rows * cols];
        for (t, s) in [8.0f32, 4.0, 2.0, 1.0].iter().enumerate() {
            for r in 0..rows {
                for c in 0..cols {
                    let u = ((r * (t + 3) + t) as f32 * 0.37).sin();
                    let v = ((c * (t + 5) + 2 * t) as f32 * 0.53).cos();
                    e[r * cols + c] += s * u * v / (rows as f32 * cols as f32).sqrt() * 4.0;
                }
            }
        }
        let (a, b) = low_rank(&e, rows, cols, 4);
        let mut err = 0f64;
        let mut norm = 0f64;
        for r in 0..rows {
            for c in 0..cols {
                let p: f32 = (0..4).map(|t| a[r * 4 + t] * b[t * cols + c]).sum();
                err += ((p - e[r * cols + c]) as f64).powi(2);
                norm += (e[r * cols + c] as f64).powi(2);
            }
        }
        assert!(err / norm < 1e-8, "relative residual {}", err / norm);
    }
}
