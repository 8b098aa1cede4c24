//! Forward-only CPU f32 kernels for scoring passes: the element-wise steps of a block fused into single parallel
//! passes that write fresh buffers without zero-filling them first, and linear layers straight into the `gemm`
//! crate. Each computes, element by element, the same f32 expression in the same order as the candle composition
//! it replaces (products and sums rounded one at a time, no fused multiply-add), so results are bit-identical except
//! the RMSNorm: its sum of squares is summed in 16 lanes, and the row is multiplied by the reciprocal square root as
//! PyTorch's `rms_norm` does (candle divides by the square root): differences of ~1e-7 relative.
//!
//! They serve [`super::Pass::Score`] on CPU f32 tensors only; callers fall back to candle otherwise.

use std::mem::MaybeUninit;

use candle_core::Tensor;
use rayon::prelude::*;

use super::Result;
use super::buffers::{as_uninit, filled, uninit_vec, with_values};

/// Rows per parallel task of the element-wise kernels (the rows are one model dimension wide).
const ROWS_PER_TASK: usize = 16;

/// `x · wᵀ` for x [rows, inner] and w [out, inner] (F.linear without bias), f32, on the `gemm` crate over the rayon
/// pool: the product candle's matmul computes, without its zero-filled output buffer.
pub(crate) fn linear_f32(x: &[f32], w: &[f32], rows: usize, out: usize, inner: usize) -> Vec<f32> {
    assert_eq!(x.len(), rows * inner);
    assert_eq!(w.len(), out * inner);
    // wᵀ's element (k, j) is w[j·inner + k].
    product_f32(
        Strided::new(x, rows, inner, inner, 1),
        Strided::new(w, inner, out, 1, inner),
        false,
    )
}

/// A matrix operand of [`product_f32`]: `rows` × `cols` values of `values`, element (i, j) at
/// `i · row_stride + j · col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a> {
    values: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Strided<'a> {
    pub(crate) fn new(
        values: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        if rows > 0 && cols > 0 {
            assert!((rows - 1) * row_stride + (cols - 1) * col_stride < values.len());
        }
        Strided {
            values,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }
}

/// `C = A · B` (f32) on the `gemm` crate over the rayon pool, into a fresh buffer that is not zero-filled first:
/// C [m, n] row-major, or with `transposed_out` its transpose [n, m] row-major (the same products and sums, stored
/// the other way). The call candle's CPU matmul makes for the same operands and strides.
pub(crate) fn product_f32(a: Strided, b: Strided, transposed_out: bool) -> Vec<f32> {
    filled(a.rows * b.cols, |dst| {
        product_into(a, b, transposed_out, true, dst)
    })
}

/// [`product_f32`] into `dst` (m·n values, every one written), over the rayon pool where `parallel` (else on this
/// thread: for callers that run many small products in parallel themselves).
pub(crate) fn product_into(
    a: Strided,
    b: Strided,
    transposed_out: bool,
    parallel: bool,
    dst: &mut [MaybeUninit<f32>],
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert_eq!(dst.len(), m * n);
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let (dst_row, dst_col) = if transposed_out { (1, m) } else { (n, 1) };
    if k == 0 {
        dst.iter_mut().for_each(|v| {
            v.write(0.0);
        });
        return;
    }
    // SAFETY: dst holds m × n elements at (i, j) ↦ i·dst_row + j·dst_col, borrowed exclusively.
    unsafe {
        gemm_call(
            a,
            b,
            dst.as_mut_ptr() as *mut f32,
            (dst_row, dst_col),
            false,
            parallelism,
        )
    }
}

/// The `gemm` crate's `dst ← A · B` (or with `accumulate`, `dst ← dst + A · B`), dst element (i, j) at
/// `i · strides.0 + j · strides.1`.
///
/// # Safety
/// Those m × n elements lie in one live allocation that no one else touches during the call, and with `accumulate`
/// they hold initialized values. (`Strided::new` checked that A's and B's elements lie within their slices; without
/// `accumulate` gemm writes every element without reading it.)
unsafe fn gemm_call(
    a: Strided,
    b: Strided,
    dst: *mut f32,
    strides: (usize, usize),
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    // SAFETY: the caller's guarantee.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            strides.1 as isize,
            strides.0 as isize,
            accumulate,
            a.values.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.values.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `dst = A · B` (or with `accumulate`, `dst += A · B`) (f32) on this thread, dst [m, n] row-major: for callers
/// that run many small products in parallel themselves, into buffers they own.
pub(crate) fn product_rows(a: Strided, b: Strided, dst: &mut [f32], accumulate: bool) {
    let n = b.cols;
    assert_eq!(dst.len(), a.rows * n);
    // SAFETY: dst holds the m × n initialized elements, rows n apart, and is borrowed exclusively.
    unsafe { product_to(a, b, dst.as_mut_ptr(), n, accumulate) }
}

/// `C = A · B` (or with `accumulate`, `C += A · B`) (f32) on this thread, into rows of n values `dst_row_stride`
/// apart from `dst`: for products whose output rows interleave with other tasks' (a head's rows of a tensor laid
/// out by position).
///
/// # Safety
/// The m rows of n values at `dst + i · dst_row_stride` lie in one live allocation, no one else reads or writes
/// them during the call, and with `accumulate` they hold initialized values.
pub(crate) unsafe fn product_to(
    a: Strided,
    b: Strided,
    dst: *mut f32,
    dst_row_stride: usize,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert!(m <= 1 || dst_row_stride >= n, "output rows overlap");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row i lies in the caller's allocation.
                unsafe { std::slice::from_raw_parts_mut(dst.add(i * dst_row_stride), n).fill(0.0) };
            }
        }
        return;
    }
    // SAFETY: the caller guarantees dst's rows.
    unsafe {
        gemm_call(
            a,
            b,
            dst,
            (dst_row_stride, 1),
            accumulate,
            gemm::Parallelism::None,
        )
    }
}

/// The row-wise steps of a block, each one pass over rows of `d` values.
enum RowStep<'a> {
    /// `x · m0 + other · m1` (the residual mix).
    Mix { m0: &'a [f32], m1: &'a [f32] },
    /// `x + other · s` (a branch added to the residual stream).
    AddScaled { s: &'a [f32] },
    /// `x` itself (for [`rms_norm_scaled`], whose only output is the normed one).
    Copy,
}

/// An RMSNorm written beside a step's output: `(y · rsqrt(mean(y²) + eps)) · scale` of each output row y, the LN
/// scale applied when it is not 1. `bf16`: the normed rows are written rounded to bf16 (nearest-even), for the
/// mixed-precision products that read them (they would round them themselves, once per product).
#[derive(Clone, Copy)]
pub(crate) struct Norm {
    pub eps: f32,
    pub scale: f32,
    pub bf16: bool,
}

/// A task's rows of the normed output.
enum NormedRows<'a> {
    F32(&'a mut [MaybeUninit<f32>]),
    Bf16(&'a mut [MaybeUninit<half::bf16>]),
}

/// The normed output of [`map_rows`].
enum Normed {
    None,
    F32(Vec<f32>),
    Bf16(Vec<half::bf16>),
}

impl Normed {
    fn into_tensor(self, like: &Tensor) -> Result<Option<Tensor>> {
        Ok(match self {
            Normed::None => None,
            Normed::F32(v) => Some(Tensor::from_vec(v, like.shape(), like.device())?),
            Normed::Bf16(v) => Some(Tensor::from_vec(v, like.shape(), like.device())?),
        })
    }
}

/// Runs `step` over all rows of `x` (and the matching rows of `other`, empty when the step reads none), in parallel
/// tasks of [`ROWS_PER_TASK`] rows; with `norm`, also the normed rows, in the same pass. `keep` false: only the
/// normed rows are wanted (the first vector comes back empty).
fn map_rows(
    x: &[f32],
    other: &[f32],
    d: usize,
    step: &RowStep,
    norm: Option<Norm>,
    keep: bool,
) -> (Vec<f32>, Normed) {
    let len = x.len();
    let out_len = if keep { len } else { 0 };
    let (f32_len, bf16_len) = match norm {
        Some(Norm { bf16: true, .. }) => (0, len),
        Some(_) => (len, 0),
        None => (0, 0),
    };
    let mut out: Vec<f32> = uninit_vec(out_len);
    let mut normed_f32: Vec<f32> = uninit_vec(f32_len);
    let mut normed_bf16: Vec<half::bf16> = uninit_vec(bf16_len);
    let chunk = d * ROWS_PER_TASK;
    let mut out_chunks = as_uninit(&mut out).chunks_mut(chunk);
    let mut f32_chunks = as_uninit(&mut normed_f32).chunks_mut(chunk);
    let mut bf16_chunks = as_uninit(&mut normed_bf16).chunks_mut(chunk);
    let work: Vec<_> = (0..len.div_ceil(chunk))
        .map(|_| {
            let normed = match (f32_chunks.next(), bf16_chunks.next()) {
                (Some(rows), _) => Some(NormedRows::F32(rows)),
                (_, Some(rows)) => Some(NormedRows::Bf16(rows)),
                _ => None,
            };
            (out_chunks.next(), normed)
        })
        .collect();
    work.into_par_iter()
        .enumerate()
        .for_each(|(task, (out, normed))| {
            let span = task * chunk..((task + 1) * chunk).min(len);
            let other = if other.is_empty() {
                other
            } else {
                &other[span.clone()]
            };
            rows_task(step, &x[span], other, d, out, norm.zip(normed));
        });
    // Every task wrote its rows of each requested output in full (rows_task writes every element).
    let normed = match norm {
        Some(Norm { bf16: true, .. }) => Normed::Bf16(normed_bf16),
        Some(_) => Normed::F32(normed_f32),
        None => Normed::None,
    };
    (out, normed)
}

/// One task of [`map_rows`], compiled for AVX-512 and for AVX2 (chosen at run time) so its loops vectorize wide.
/// No fused multiply-add is involved, so every target computes the same values.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+fma", "x86_64+avx2+fma"))]
fn rows_task(
    step: &RowStep,
    x: &[f32],
    other: &[f32],
    d: usize,
    mut out: Option<&mut [MaybeUninit<f32>]>,
    mut norm: Option<(Norm, NormedRows)>,
) {
    let mut row = vec![0f32; d];
    for i in 0..x.len() / d {
        let span = i * d..(i + 1) * d;
        let x = &x[span.clone()];
        match *step {
            RowStep::Mix { m0, m1 } => {
                let x0 = &other[span.clone()];
                for c in 0..d {
                    row[c] = x[c] * m0[c] + x0[c] * m1[c];
                }
            }
            RowStep::AddScaled { s } => {
                let a = &other[span.clone()];
                for c in 0..d {
                    row[c] = x[c] + a[c] * s[c];
                }
            }
            RowStep::Copy => row.copy_from_slice(x),
        }
        if let Some(out) = out.as_deref_mut() {
            for (o, v) in out[span.clone()].iter_mut().zip(&row) {
                o.write(*v);
            }
        }
        if let Some((Norm { eps, scale, .. }, normed)) = norm.as_mut() {
            let r = inv_rms(&row, *eps);
            if *scale == 1.0 {
                for v in row.iter_mut() {
                    *v *= r;
                }
            } else {
                for v in row.iter_mut() {
                    *v = (*v * r) * *scale;
                }
            }
            match normed {
                NormedRows::F32(rows) => {
                    for (o, v) in rows[span].iter_mut().zip(&row) {
                        o.write(*v);
                    }
                }
                NormedRows::Bf16(rows) => {
                    for (o, v) in rows[span].iter_mut().zip(&row) {
                        o.write(half::bf16::from_bits(super::amx::bf16_bits(*v)));
                    }
                }
            }
        }
    }
}

/// The 16 partial sums of squares, added in lane order: Σ x² over a row.
#[inline(always)]
fn sum_of_squares(row: &[f32]) -> f32 {
    let (chunks, rest) = row.as_chunks::<16>();
    let mut lanes = [0f32; 16];
    for c in chunks {
        for l in 0..16 {
            lanes[l] += c[l] * c[l];
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|v| v * v).sum::<f32>()
}

/// `rsqrt(mean(x²) + eps)` over a row, as PyTorch's `rms_norm` computes it (1 / sqrt, two roundings); the row is
/// then multiplied by it (candle's RMSNorm divides by the square root instead, which can differ in the last bit).
#[inline(always)]
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    1.0 / (sum_of_squares(row) / row.len() as f32 + eps).sqrt()
}

/// Checks that `t`'s last dimension is `d` and returns the row count.
fn rows_of(t: &Tensor, d: usize, what: &str) -> Result<usize> {
    match t.dims().last() {
        Some(&last) if last == d && d > 0 => Ok(t.elem_count() / d),
        _ => Err(candle_core::Error::Msg(format!(
            "{what}: {:?} does not end in {d}",
            t.dims()
        ))),
    }
}

/// The error for two tensors that should have had the same shape.
fn mismatch(what: &str, a: &Tensor, b: &Tensor) -> candle_core::Error {
    candle_core::Error::Msg(format!("{what}: {:?} with {:?}", a.dims(), b.dims()))
}

/// The residual mix `m0 · x + m1 · x0` with per-channel m0, m1 [d] (the records' `resid_mix`), and with `norm`
/// its RMSNorm too, from the same pass.
pub(crate) fn residual_mix(
    x: &Tensor,
    x0: &Tensor,
    m0: &Tensor,
    m1: &Tensor,
    norm: Option<Norm>,
) -> Result<(Tensor, Option<Tensor>)> {
    let d = m0.elem_count();
    rows_of(x, d, "residual mix")?;
    if x0.elem_count() != x.elem_count() || m1.elem_count() != d {
        return Err(mismatch("residual mix", x, x0));
    }
    let (out, normed) = with_values(x, |x| {
        with_values(x0, |x0| {
            with_values(m0, |m0| {
                with_values(m1, |m1| {
                    Ok(map_rows(x, x0, d, &RowStep::Mix { m0, m1 }, norm, true))
                })
            })
        })
    })?;
    two_outputs(x, out, normed)
}

/// `x + s · a` with a per-channel scale s [d] (a block's attention or MLP output added to the residual stream), and
/// with `norm` its RMSNorm too, from the same pass.
pub(crate) fn add_scaled(
    x: &Tensor,
    a: &Tensor,
    s: &Tensor,
    norm: Option<Norm>,
) -> Result<(Tensor, Option<Tensor>)> {
    let d = s.elem_count();
    rows_of(x, d, "scaled residual add")?;
    if a.elem_count() != x.elem_count() {
        return Err(mismatch("scaled residual add", x, a));
    }
    let (out, normed) = with_values(x, |x| {
        with_values(a, |a| {
            with_values(s, |s| {
                Ok(map_rows(x, a, d, &RowStep::AddScaled { s }, norm, true))
            })
        })
    })?;
    two_outputs(x, out, normed)
}

/// Tensors of x's shape from a step's outputs.
fn two_outputs(x: &Tensor, out: Vec<f32>, normed: Normed) -> Result<(Tensor, Option<Tensor>)> {
    let normed = normed.into_tensor(x)?;
    Ok((Tensor::from_vec(out, x.shape(), x.device())?, normed))
}

/// `F.rms_norm(x, (d,))` over the last dimension, times `scale` when it is not 1 (a block's LN scale):
/// x · rsqrt(mean(x²) + eps), then the product.
pub(crate) fn rms_norm_scaled(x: &Tensor, eps: f32, scale: f32) -> Result<Tensor> {
    let d = *x.dims().last().unwrap_or(&0);
    rows_of(x, d, "rms norm")?;
    let norm = Some(Norm {
        eps,
        scale,
        bf16: false,
    });
    let (_, normed) = with_values(x, |x| Ok(map_rows(x, &[], d, &RowStep::Copy, norm, false)))?;
    Ok(normed.into_tensor(x)?.expect("asked for"))
}

/// The attention heads of a projection z [B, T, n·hd] as [B, n, T, hd], each head RMS-normed (eps), rotated by
/// half-split RoPE over all hd dims with tables cos, −sin [T, hd/2] ((x₁, x₂) → (x₁·cos + x₂·sin, x₂·cos − x₁·sin),
/// as the records' `apply_rotary_emb`, evaluated as candle's `rope` on (cos, −sin) does), then times its gain g[h] when given (q_gain): the transpose, RMSNorm, RoPE
/// and gain of the composition, in one pass.
pub(crate) fn heads_normed_rotated(
    z: &Tensor,
    heads: usize,
    eps: f32,
    cos: &Tensor,
    neg_sin: &Tensor,
    gain: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, t, width) = z.dims3()?;
    let hd = width / heads;
    if hd * heads != width
        || !hd.is_multiple_of(2)
        || cos.dims() != [t, hd / 2]
        || neg_sin.dims() != [t, hd / 2]
    {
        return Err(candle_core::Error::Msg(format!(
            "heads: {:?} as {heads} heads with rotary tables {:?}",
            z.dims(),
            cos.dims()
        )));
    }
    let gains = match gain {
        Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
        None => Vec::new(),
    };
    let values = with_values(z, |z| {
        with_values(cos, |cos| {
            with_values(neg_sin, |neg_sin| {
                Ok(filled(z.len(), |out| {
                    // One task per (batch, head): T rows of hd.
                    out.par_chunks_mut(t * hd)
                        .enumerate()
                        .for_each(|(bh, out)| {
                            let (bi, h) = (bh / heads, bh % heads);
                            let head = HeadTask {
                                z: &z[bi * t * width..(bi + 1) * t * width],
                                width,
                                offset: h * hd,
                                eps,
                                cos,
                                neg_sin,
                                gain: gains.get(h).copied(),
                            };
                            head_task(&head, out);
                        })
                }))
            })
        })
    })?;
    Tensor::from_vec(values, (b, heads, t, hd), z.device())
}

/// How many rows ahead [`head_task`] asks for: its rows are a projection's width apart, a stride the hardware
/// prefetchers do not follow, and without this the loads wait on memory (half the kernel's time, measured).
const PREFETCH_ROWS_AHEAD: usize = 8;

/// Asks the CPU to bring row `ti`'s hd values of the task's head into cache (a hint: no effect past the end).
#[inline(always)]
fn prefetch_row(task: &HeadTask, ti: usize, hd: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = ti * task.width + task.offset;
        if start + hd <= task.z.len() {
            for line in (0..hd).step_by(16) {
                // SAFETY: a prefetch hint on an address inside `task.z`; it reads nothing architecturally.
                unsafe {
                    std::arch::x86_64::_mm_prefetch(
                        task.z.as_ptr().add(start + line) as *const i8,
                        std::arch::x86_64::_MM_HINT_T0,
                    )
                };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (task, ti, hd);
}

/// One (batch, head) of [`heads_normed_rotated`]: the batch's rows of z [T, width], the head's columns from `offset`.
struct HeadTask<'a> {
    z: &'a [f32],
    width: usize,
    offset: usize,
    eps: f32,
    cos: &'a [f32],
    neg_sin: &'a [f32],
    gain: Option<f32>,
}

/// Writes the head's T rows of hd (out is [T, hd]). Compiled for AVX-512 and AVX2 (chosen at run time); no fused
/// multiply-add, so every target computes the same values.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+fma", "x86_64+avx2+fma"))]
fn head_task(task: &HeadTask, out: &mut [MaybeUninit<f32>]) {
    let t = task.z.len() / task.width;
    let hd = out.len() / t;
    let half = hd / 2;
    let mut normed = vec![0f32; hd];
    for (ti, o) in out.chunks_mut(hd).enumerate() {
        prefetch_row(task, ti + PREFETCH_ROWS_AHEAD, hd);
        let row = &task.z[ti * task.width + task.offset..][..hd];
        let r = inv_rms(row, task.eps);
        for (n, x) in normed.iter_mut().zip(row) {
            *n = x * r;
        }
        let (c, ns) = (
            &task.cos[ti * half..][..half],
            &task.neg_sin[ti * half..][..half],
        );
        let (x1, x2) = normed.split_at(half);
        let (o1, o2) = o.split_at_mut(half);
        match task.gain {
            Some(g) => {
                for i in 0..half {
                    o1[i].write((x1[i] * c[i] - x2[i] * ns[i]) * g);
                    o2[i].write((x1[i] * ns[i] + x2[i] * c[i]) * g);
                }
            }
            None => {
                for i in 0..half {
                    o1[i].write(x1[i] * c[i] - x2[i] * ns[i]);
                    o2[i].write(x1[i] * ns[i] + x2[i] * c[i]);
                }
            }
        }
    }
}

/// [B, H, T, hd] values as [B, T, H, hd] (attention's output heads back to positions), in parallel over positions.
pub(crate) fn heads_to_positions(y: &[f32], b: usize, h: usize, t: usize, hd: usize) -> Vec<f32> {
    assert_eq!(y.len(), b * h * t * hd);
    filled(y.len(), |out| {
        out.par_chunks_mut(h * hd)
            .enumerate()
            .for_each(|(bt, row)| {
                let (bi, ti) = (bt / t, bt % t);
                for (hi, o) in row.chunks_mut(hd).enumerate() {
                    let src = &y[((bi * h + hi) * t + ti) * hd..][..hd];
                    for (o, v) in o.iter_mut().zip(src) {
                        o.write(*v);
                    }
                }
            })
    })
}

/// In place: u ← relu(u)², or with a negative slope (max(u, 0) + slope·min(u, 0))² as the composition
/// `(relu(u) − relu(−u)·slope)²` evaluates it.
pub(crate) fn relu_squared(values: &mut [f32], slope: f32) {
    values
        .par_chunks_mut(4096)
        .for_each(|chunk| relu_squared_chunk(chunk, slope));
}

/// [`relu_squared`] of `values` rounded to bf16 (nearest-even) into a new buffer, for a mixed-precision product on
/// AMX tiles that reads it next (it would round it itself).
pub(crate) fn relu_squared_bf16(values: &[f32], slope: f32) -> Vec<half::bf16> {
    filled(values.len(), |out| {
        out.par_chunks_mut(4096)
            .zip(values.par_chunks(4096))
            .for_each(|(out, chunk)| relu_squared_bf16_chunk(chunk, slope, out))
    })
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+fma", "x86_64+avx2+fma"))]
fn relu_squared_bf16_chunk(chunk: &[f32], slope: f32, out: &mut [MaybeUninit<half::bf16>]) {
    for (o, &u) in out.iter_mut().zip(chunk) {
        o.write(half::bf16::from_bits(super::amx::bf16_bits(
            relu_squared_value(u, slope),
        )));
    }
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+fma", "x86_64+avx2+fma"))]
fn relu_squared_chunk(chunk: &mut [f32], slope: f32) {
    for u in chunk {
        *u = relu_squared_value(*u, slope);
    }
}

/// relu(u)², or (max(u, 0) − max(−u, 0)·slope)² with a negative slope, as the composition evaluates it.
#[inline(always)]
fn relu_squared_value(u: f32, slope: f32) -> f32 {
    let r = if slope == 0.0 {
        u.max(0.0)
    } else {
        u.max(0.0) - (-u).max(0.0) * slope
    };
    r * r
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tensor(values: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed)
                    .wrapping_mul(2_654_435_761)
                    .rotate_left(13);
                (h % 20_001) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn linear_matches_candles_matmul_bit_for_bit() {
        let (rows, out, inner) = (37, 29, 53);
        let x = tensor(pseudo(rows * inner, 1), &[rows, inner]);
        let w = tensor(pseudo(out * inner, 2), &[out, inner]);
        let want = values(&x.matmul(&w.t().unwrap()).unwrap());
        let got = linear_f32(&values(&x), &values(&w), rows, out, inner);
        assert_eq!(got, want);
    }

    #[test]
    fn element_wise_kernels_match_the_compositions() {
        let (rows, d) = (45, 24);
        let x = tensor(pseudo(rows * d, 3), &[3, 15, d]);
        let x0 = tensor(pseudo(rows * d, 4), &[3, 15, d]);
        let m0 = tensor(pseudo(d, 5), &[d]);
        let m1 = tensor(pseudo(d, 6), &[d]);
        let want = (x.broadcast_mul(&m0).unwrap() + x0.broadcast_mul(&m1).unwrap()).unwrap();
        assert_eq!(
            values(&residual_mix(&x, &x0, &m0, &m1, None).unwrap().0),
            values(&want)
        );
        // With the norm: the same sum, and its RMSNorm (times the LN scale) from the same pass.
        let norm = Some(Norm {
            eps: 1e-6,
            scale: 0.7,
            bf16: false,
        });
        let (mixed, normed) = residual_mix(&x, &x0, &m0, &m1, norm).unwrap();
        assert_eq!(values(&mixed), values(&want));
        let want_normed = values(&rms_norm_scaled(&want, 1e-6, 0.7).unwrap());
        assert_eq!(values(&normed.unwrap()), want_normed);
        let want = (&x + x0.broadcast_mul(&m1).unwrap()).unwrap();
        assert_eq!(
            values(&add_scaled(&x, &x0, &m1, None).unwrap().0),
            values(&want)
        );
        let (sum, normed) = add_scaled(&x, &x0, &m1, norm).unwrap();
        assert_eq!(values(&sum), values(&want));
        let want_normed = values(&rms_norm_scaled(&want, 1e-6, 0.7).unwrap());
        assert_eq!(values(&normed.unwrap()), want_normed);
        // Written in bf16: the same normed values, rounded to nearest-even.
        let bf16_norm = norm.map(|n| Norm { bf16: true, ..n });
        let (sum, normed) = add_scaled(&x, &x0, &m1, bf16_norm).unwrap();
        assert_eq!(values(&sum), values(&want));
        let normed = normed.unwrap();
        assert_eq!(normed.dtype(), candle_core::DType::BF16);
        let got_bits: Vec<u16> = normed
            .flatten_all()
            .unwrap()
            .to_vec1::<half::bf16>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let want_bits: Vec<u16> = want_normed
            .iter()
            .map(|&v| super::super::amx::bf16_bits(v))
            .collect();
        assert_eq!(got_bits, want_bits);
        let ones = tensor(vec![1.0; d], &[d]);
        for scale in [1.0f32, 0.7] {
            let want = (candle_nn::ops::rms_norm(&x, &ones, 1e-6).unwrap() * scale as f64).unwrap();
            let got = values(&rms_norm_scaled(&x, 1e-6, scale).unwrap());
            for (a, b) in got.iter().zip(values(&want)) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
            }
        }
        for slope in [0.0f32, 0.5] {
            let u = x.clone();
            let want = if slope == 0.0 {
                u.relu().unwrap().sqr().unwrap()
            } else {
                (u.relu().unwrap() - (u.neg().unwrap().relu().unwrap() * slope as f64).unwrap())
                    .unwrap()
                    .sqr()
                    .unwrap()
            };
            let mut got = values(&x);
            let rounded = relu_squared_bf16(&got, slope);
            relu_squared(&mut got, slope);
            assert_eq!(got, values(&want));
            let want_bits: Vec<u16> = got
                .iter()
                .map(|&v| super::super::amx::bf16_bits(v))
                .collect();
            let got_bits: Vec<u16> = rounded.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got_bits, want_bits);
        }
    }

    #[test]
    fn heads_match_transpose_norm_rope_and_gain() {
        let (b, t, h, hd) = (2, 7, 3, 8);
        let z = tensor(pseudo(b * t * h * hd, 7), &[b, t, h * hd]);
        let cos = tensor(pseudo(t * hd / 2, 8), &[t, hd / 2]);
        let sin = tensor(pseudo(t * hd / 2, 9), &[t, hd / 2]);
        let gain = tensor(pseudo(h, 10), &[h]);
        let heads = z
            .reshape((b, t, h, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        let ones = tensor(vec![1.0; hd], &[hd]);
        let normed = candle_nn::ops::rms_norm(&heads, &ones, 1e-6).unwrap();
        let neg_sin = sin.neg().unwrap();
        let rotated = candle_nn::rotary_emb::rope(&normed, &cos, &neg_sin).unwrap();
        let want = rotated
            .broadcast_mul(&gain.reshape((1, h, 1, 1)).unwrap())
            .unwrap();
        let got = heads_normed_rotated(&z, h, 1e-6, &cos, &neg_sin, Some(&gain)).unwrap();
        assert_eq!(got.dims(), &[b, h, t, hd]);
        for (a, b) in values(&got).iter().zip(values(&want)) {
            assert!((a - b).abs() <= 2e-6 * b.abs().max(1e-3), "{a} vs {b}");
        }
    }
}
