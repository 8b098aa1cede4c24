//! The CPU kernels' buffers: borrowing a tensor's values, output buffers that are not zero-filled first (made one
//! way, [`uninit_vec`]), and a buffer whose disjoint rows parallel tasks write ([`SharedRows`]).

use std::marker::PhantomData;
use std::mem::MaybeUninit;

use candle_core::{CpuStorage, DType, Layout, Tensor};

use super::Result;

/// Whether every tensor is an f32 tensor on the CPU: the hand-written kernels apply.
pub(crate) fn applies(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// A CPU f32 tensor's values in row-major order, borrowed from its storage when contiguous (else copied), for `f`.
pub(crate) fn with_values<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<T>) -> Result<T> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            return f(&cpu.as_slice::<f32>()?[start..end]);
        }
    }
    // One copy into a contiguous tensor, then its storage.
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(cpu), Some((start, end))) => {
            f(&cpu.as_slice::<f32>()?[start..end])
        }
        _ => f(&t.flatten_all()?.to_vec1::<f32>()?),
    }
}

/// A CPU f32 tensor's values (copied into a contiguous tensor first where they are not), for `f`.
pub(crate) fn with_f32<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<T>) -> Result<T> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("expected a CPU tensor")
    };
    f(contiguous::<f32>(cpu, layout, "a CPU f32 tensor")?)
}

/// The elements a contiguous layout covers, for the custom operations' CPU kernels.
pub(crate) fn contiguous<'a, T: candle_core::WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: input must be contiguous")
    };
    Ok(&s.as_slice::<T>()?[a..b])
}

/// bf16 values as their bits (the tile kernels read u16).
pub(crate) fn bf16_bits(values: &[half::bf16]) -> &[u16] {
    // SAFETY: half::bf16 is a transparent wrapper of u16 (same size, alignment and bits), and the returned slice
    // borrows `values` for its whole life.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u16>(), values.len()) }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u16 {}
    impl Sealed for half::bf16 {}
}

/// Element types the kernels write into uninitialised buffers: plain numbers with no invalid bit pattern and no
/// destructor.
pub(crate) trait Plain: Copy + Send + Sync + sealed::Sealed {}
impl Plain for f32 {}
impl Plain for u16 {}
impl Plain for half::bf16 {}

/// The one way the kernels make an output buffer that is not zero-filled first: `len` elements, every one of which
/// the caller writes before it reads any (each kernel's comment says how it covers the buffer).
pub(crate) fn uninit_vec<T: Plain>(len: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    // SAFETY: the capacity is `len`; `T` is a plain number type (no destructor, no invalid bit pattern), and every
    // caller writes all `len` elements before reading any, so no uninitialised element is ever read.
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(len)
    };
    out
}

/// A buffer of `len` values written by `fill`, which must write every element: [`uninit_vec`], handed to `fill` as
/// the uninitialised memory it is.
pub(crate) fn filled<T: Plain>(len: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut out = uninit_vec::<T>(len);
    fill(as_uninit(&mut out));
    out
}

/// A buffer from [`uninit_vec`] as the uninitialised memory it holds until written, for kernels that write through
/// `MaybeUninit`.
pub(crate) fn as_uninit<T: Plain>(buffer: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: MaybeUninit<T> has T's size and alignment; `T: Plain` has no invalid value a write could break and no
    // destructor, and the slice borrows `buffer` exclusively for its whole life.
    unsafe {
        std::slice::from_raw_parts_mut(buffer.as_mut_ptr().cast::<MaybeUninit<T>>(), buffer.len())
    }
}

/// A buffer whose disjoint rows parallel tasks write through a shared reference, for as long as it borrows the
/// buffer.
pub(crate) struct SharedRows<'a> {
    ptr: *mut f32,
    len: usize,
    buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: tasks write disjoint rows only (each `row` caller's guarantee), and the buffer is borrowed exclusively by
// this value, so nothing else reads it until the tasks are done and the borrow ends.
unsafe impl Sync for SharedRows<'_> {}

impl<'a> SharedRows<'a> {
    pub(crate) fn new(buffer: &'a mut [f32]) -> Self {
        SharedRows {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            buffer: PhantomData,
        }
    }

    /// Where `rows` rows of `cols` values, `stride` apart, start at element `at`, for products that write strided
    /// rows of the buffer ([`super::fused::product_to`]); asserted to lie within it. Writing through the pointer is
    /// the caller's to justify: no other task may touch those rows meanwhile.
    pub(crate) fn rows_ptr(&self, at: usize, rows: usize, cols: usize, stride: usize) -> *mut f32 {
        if rows > 0 {
            assert!(
                at + (rows - 1) * stride + cols <= self.len,
                "{rows} rows of {cols} at {at}, stride {stride}, overrun {} values",
                self.len
            );
        }
        self.ptr.wrapping_add(at)
    }

    /// Elements `at..at + len`.
    ///
    /// # Safety
    /// No other task reads or writes `at..at + len` while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn row(&self, at: usize, len: usize) -> &mut [f32] {
        assert!(
            at + len <= self.len,
            "row {at}..{} of {}",
            at + len,
            self.len
        );
        // SAFETY: in bounds (asserted); the buffer is live for 'a, which outlives &self, and the range is exclusive by
        // the caller's guarantee.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) }
    }
}
