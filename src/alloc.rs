//! The process's heap allocator for the `pgolf` binary: the system allocator, with every block of at least a page
//! starting on a 64-byte cache line.
//!
//! Why: the CPU kernels move 64 bytes at a time (AVX-512 loads and stores, one AMX tile row per load or store), and
//! glibc's `malloc` aligns blocks to 16 bytes only (a block it maps whole starts 16 bytes past a page). Every such
//! access to a buffer that starts inside a line touches two lines. With large blocks on a line, `pgolf verify --precision mixed` scored 8–10% more
//! targets per second on the baseline shape, fp32 evaluation and training 1–3% (docs/PERFORMANCE.md, issue 23's
//! sixth step). Small blocks keep the system's alignment: the padding would cost more than it could save.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of this many bytes and more start on a cache line.
pub const ALIGNED_FROM_BYTES: usize = 4096;

/// The cache line, the alignment those blocks get.
pub const CACHE_LINE: usize = 64;

/// [`System`], with blocks of [`ALIGNED_FROM_BYTES`] or more aligned to [`CACHE_LINE`]. Register it with
/// `#[global_allocator]`.
pub struct CacheLineAligned;

/// The layout asked of the system for `layout`: the same size, the alignment raised for large blocks. A pure
/// function of the layout, so that `dealloc` hands back exactly what `alloc` asked for.
pub fn system_layout(layout: Layout) -> Layout {
    if layout.size() >= ALIGNED_FROM_BYTES && layout.align() < CACHE_LINE {
        // CACHE_LINE is a power of two and a size that fitted a smaller alignment fits this one (isize::MAX
        // rounded up to 64 cannot overflow a Layout's limit as sizes of real allocations go; checked anyway).
        Layout::from_size_align(layout.size(), CACHE_LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every block is allocated and freed by `System` with the same layout (`system_layout` of the caller's
// layout, which has the caller's size and at least its alignment); `realloc` moves a block whenever the raised
// alignment would change across the resize, so `System` never sees a layout it did not allocate with.
unsafe impl GlobalAlloc for CacheLineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout has a non-zero size, and so has the system layout (same size).
        unsafe { System.alloc(system_layout(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(system_layout(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` with this layout, so from `System` with its system layout.
        unsafe { System.dealloc(ptr, system_layout(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = system_layout(layout);
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new = system_layout(new_layout);
        if old.align() == new.align() {
            // SAFETY: `ptr` was allocated by `System` with `old`; the new size keeps the same alignment.
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // The block crosses ALIGNED_FROM_BYTES: a new block with the new alignment, the old contents, the old
        // block freed (what `GlobalAlloc::realloc`'s default does).
        // SAFETY: `new` has a non-zero size (the caller's contract); both blocks are valid for the bytes copied.
        unsafe {
            let moved = System.alloc(new);
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_start_on_a_cache_line_and_small_ones_keep_their_alignment() {
        let a = CacheLineAligned;
        for (size, align, want) in [
            (4096, 4, 64),
            (1 << 20, 8, 64),
            (4095, 4, 4),
            (64, 16, 16),
            (8192, 128, 128),
        ] {
            let layout = Layout::from_size_align(size, align).unwrap();
            assert_eq!(
                system_layout(layout).align(),
                want,
                "{size} bytes, align {align}"
            );
            assert_eq!(system_layout(layout).size(), size);
            // SAFETY: a non-zero-size layout; the block is freed with the same layout.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % want, 0, "{size} bytes, align {align}");
                a.dealloc(p, layout);
            }
        }
    }

    #[test]
    fn realloc_across_the_threshold_keeps_the_contents_and_the_alignment() {
        let a = CacheLineAligned;
        let small = Layout::from_size_align(100, 4).unwrap();
        // SAFETY: each block is used within its size and freed with the layout it has at that point.
        unsafe {
            let p = a.alloc(small);
            for i in 0..100 {
                *p.add(i) = i as u8;
            }
            let grown = a.realloc(p, small, 10_000);
            assert_eq!(grown as usize % CACHE_LINE, 0);
            assert!((0..100).all(|i| *grown.add(i) == i as u8));
            let large = Layout::from_size_align(10_000, 4).unwrap();
            let shrunk = a.realloc(grown, large, 50);
            assert!((0..50).all(|i| *shrunk.add(i) == i as u8));
            a.dealloc(shrunk, Layout::from_size_align(50, 4).unwrap());
        }
    }
}
