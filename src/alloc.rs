//! The `pgolf` binary's heap: glibc's `malloc`, tuned for tensors, with blocks of 256 KiB or more starting on a
//! 64-byte cache line where that costs nothing.
//!
//! Why the alignment: the CPU kernels move 64 bytes at a time (AVX-512 loads and stores, one AMX tile row per load
//! or store), and glibc aligns blocks to 16 bytes only (a block it maps whole starts 16 bytes past a page). Every such
//! access to a buffer that starts inside a line touches two lines. With large blocks on a line, `pgolf verify
//! --precision mixed` scored 8–10% more targets per second on the baseline shape, fp32 evaluation and training 1–3%
//! (docs/PERFORMANCE.md, issue 23's sixth step). Smaller blocks keep glibc's alignment: aligning everything from a
//! page up made the many small tensors of a LoRA TTT run 7% slower (`posix_memalign` splits blocks that `malloc`
//! would have handed out whole), and the kernels' large buffers are what gain.
//!
//! The extra alignment is best-effort, never a promise beyond the caller's layout:
//! - `alloc` of 256 KiB or more: `posix_memalign` to 64 bytes.
//! - `alloc_zeroed` below the mmap threshold: the same, then zeroed (glibc's `calloc` clears such heap blocks too).
//!   From the threshold up, `calloc` itself: glibc maps those blocks fresh and skips the clearing, where an aligned
//!   block would have to be cleared page by page (brotli's 134 MB zeroed hash table, made at every compression of a
//!   budget search, cost a 1.7 s pack test 62 s of page faults).
//! - `realloc`: glibc's `realloc` (it may keep the block in place or remap it), which keeps the caller's alignment.
//!
//! Every block is glibc's, so `free` releases any of them, whichever call made it. Elsewhere than Linux with glibc,
//! [`CacheLineAligned`] is the system allocator unchanged.

use std::alloc::{GlobalAlloc, Layout};

/// Blocks of this many bytes and more start on a cache line (except as the module says).
pub const ALIGNED_FROM_BYTES: usize = 256 << 10;

/// The cache line, the alignment those blocks get.
pub const CACHE_LINE: usize = 64;

/// glibc's mmap threshold as [`tune_for_tensors`] sets it: blocks this large are mapped from the kernel whole.
pub const MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// The heap allocator of the `pgolf` binary (`#[global_allocator]`): see the module.
pub struct CacheLineAligned;

/// The alignment asked of glibc for a block of `layout` (before the choice of call): the caller's, raised to a cache
/// line for blocks of [`ALIGNED_FROM_BYTES`] or more.
pub fn block_alignment(layout: Layout) -> usize {
    if layout.size() >= ALIGNED_FROM_BYTES {
        layout.align().max(CACHE_LINE)
    } else {
        layout.align()
    }
}

/// Sets glibc's heap for tensors: the forward and backward passes allocate and free buffers of megabytes many times a
/// second, and glibc's defaults hand the pages back to the kernel after each free (mapped blocks, a trimmed heap
/// top), so that every new tensor page-faults and zero-fills fresh pages. Kept instead: 12% less time in a LoRA TTT
/// run (docs/PERFORMANCE.md). Call once, before any other thread exists.
pub fn tune_for_tensors() {
    // SAFETY: mallopt only sets allocator parameters; the caller runs this before other threads exist.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use super::*;

    /// The alignment glibc's `malloc`, `calloc` and `realloc` guarantee on x86-64 and aarch64.
    const MALLOC_ALIGNMENT: usize = 16;

    /// A block of `size` bytes aligned to `align` (a power of two, at least a pointer), or null.
    ///
    /// # Safety
    /// `align` is a power of two and a multiple of the pointer size; the block is freed with `free`.
    unsafe fn aligned(size: usize, align: usize) -> *mut u8 {
        let mut out = std::ptr::null_mut();
        // SAFETY: `align` is a power of two and a multiple of the pointer size (MALLOC_ALIGNMENT or more here).
        match unsafe { libc::posix_memalign(&mut out, align, size) } {
            0 => out.cast(),
            _ => std::ptr::null_mut(),
        }
    }

    // SAFETY: every block comes from glibc (`malloc`, `posix_memalign`, `calloc`, `realloc`) with at least the
    // caller's alignment and size, and is released by `free` or resized by `realloc`, which accept any of them.
    unsafe impl GlobalAlloc for CacheLineAligned {
        /// # Safety
        /// [`GlobalAlloc::alloc`]'s contract, which the caller keeps.
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let align = block_alignment(layout);
            if align <= MALLOC_ALIGNMENT {
                // SAFETY: plain malloc; its alignment covers the caller's.
                return unsafe { libc::malloc(layout.size()).cast() };
            }
            // SAFETY: `align` is a power of two ≥ 16.
            unsafe { aligned(layout.size(), align) }
        }

        /// # Safety
        /// [`GlobalAlloc::alloc_zeroed`]'s contract, which the caller keeps.
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let align = block_alignment(layout);
            let large = layout.size() >= MMAP_THRESHOLD_BYTES;
            if align <= MALLOC_ALIGNMENT || (large && layout.align() <= MALLOC_ALIGNMENT) {
                // SAFETY: calloc, zeroed (by the kernel for a fresh mapping); its alignment covers the caller's.
                return unsafe { libc::calloc(layout.size(), 1).cast() };
            }
            // SAFETY: `align` is a power of two ≥ 16; the block is `size` bytes long where non-null.
            unsafe {
                let block = aligned(layout.size(), align);
                if !block.is_null() {
                    std::ptr::write_bytes(block, 0, layout.size());
                }
                block
            }
        }

        /// # Safety
        /// [`GlobalAlloc::dealloc`]'s contract, which the caller keeps.
        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            // SAFETY: `ptr` came from one of glibc's allocation calls above.
            unsafe { libc::free(ptr.cast()) }
        }

        /// # Safety
        /// [`GlobalAlloc::realloc`]'s contract, which the caller keeps.
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if layout.align() <= MALLOC_ALIGNMENT {
                // SAFETY: `ptr` is glibc's; realloc keeps 16-byte alignment, which covers the caller's.
                return unsafe { libc::realloc(ptr.cast(), new_size).cast() };
            }
            // A caller's alignment above malloc's: a new aligned block, the contents, the old block freed.
            // SAFETY: the new block is valid for `new_size` bytes, the old one for `layout.size()`.
            unsafe {
                let moved = aligned(new_size, block_alignment(layout).max(layout.align()));
                if !moved.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                    libc::free(ptr.cast());
                }
                moved
            }
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
use std::alloc::System;

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
// SAFETY: the system allocator, every call passed through unchanged.
unsafe impl GlobalAlloc for CacheLineAligned {
    /// # Safety
    /// [`GlobalAlloc::alloc`]'s contract, which the caller keeps.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller keeps `alloc`'s contract, which `System` requires.
        unsafe { System.alloc(layout) }
    }

    /// # Safety
    /// [`GlobalAlloc::alloc_zeroed`]'s contract, which the caller keeps.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller keeps `alloc_zeroed`'s contract, which `System` requires.
        unsafe { System.alloc_zeroed(layout) }
    }

    /// # Safety
    /// [`GlobalAlloc::dealloc`]'s contract, which the caller keeps.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` (every block here does) with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    /// # Safety
    /// [`GlobalAlloc::realloc`]'s contract, which the caller keeps.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with this layout; the caller keeps `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn large_blocks_start_on_a_cache_line_and_keep_any_larger_alignment() {
        let a = CacheLineAligned;
        let from = ALIGNED_FROM_BYTES;
        for (size, align) in [
            (from, 4),
            (4 * from, 8),
            (from - 1, 4),
            (4096, 8),
            (64, 16),
            (from, 128),
            (24, 32),
        ] {
            let l = layout(size, align);
            let want = block_alignment(l);
            assert_eq!(want, if size >= from { align.max(64) } else { align });
            for zeroed in [false, true] {
                // SAFETY: a non-zero-size layout; the block is written within its size and freed.
                unsafe {
                    let p = if zeroed {
                        a.alloc_zeroed(l)
                    } else {
                        a.alloc(l)
                    };
                    assert!(!p.is_null());
                    if cfg!(all(target_os = "linux", target_env = "gnu")) {
                        assert_eq!(p as usize % want, 0, "{size} bytes, align {align}");
                    }
                    assert_eq!(p as usize % align, 0, "{size} bytes, align {align}");
                    if zeroed {
                        assert!((0..size).all(|i| *p.add(i) == 0));
                    }
                    p.write_bytes(0xa5, size);
                    a.dealloc(p, l);
                }
            }
        }
    }

    #[test]
    fn zeroed_blocks_past_the_mmap_threshold_are_zero_and_keep_the_callers_alignment() {
        let a = CacheLineAligned;
        let l = layout(MMAP_THRESHOLD_BYTES + 4096, 4);
        // SAFETY: the block is read within its size and freed with its layout.
        unsafe {
            let p = a.alloc_zeroed(l);
            assert!(!p.is_null());
            assert_eq!(p as usize % 4, 0);
            assert!((0..l.size()).step_by(4093).all(|i| *p.add(i) == 0));
            a.dealloc(p, l);
        }
    }

    #[test]
    fn realloc_keeps_the_contents_and_the_callers_alignment() {
        let a = CacheLineAligned;
        for align in [4, 256] {
            let small = layout(100, align);
            // SAFETY: each block is used within its size and freed with the layout it has at that point.
            unsafe {
                let p = a.alloc(small);
                for i in 0..100 {
                    *p.add(i) = i as u8;
                }
                let big = ALIGNED_FROM_BYTES + 10;
                let grown = a.realloc(p, small, big);
                assert_eq!(grown as usize % align, 0);
                assert!((0..100).all(|i| *grown.add(i) == i as u8));
                let shrunk = a.realloc(grown, layout(big, align), 50);
                assert_eq!(shrunk as usize % align, 0);
                assert!((0..50).all(|i| *shrunk.add(i) == i as u8));
                a.dealloc(shrunk, layout(50, align));
            }
        }
    }
}
