//! Process-level allocator tuning for training loops.
//!
//! Each step allocates and frees activation buffers of tens of MiB. glibc serves such blocks with
//! mmap and returns them on free, so every step page-faults its memory in again: measured on the
//! default fine-tune, that was 30% of the wall time, all of it in the kernel. Keeping freed memory
//! in the heap makes the next step reuse the same pages.
//!
//! The tensors of a long context are also larger than the TLB reaches in 4 KiB pages (a 4,096-token
//! step streams tens of MiB of activations, K/V copies and gradients): [`LargeBlocks`] asks the
//! kernel to back them with 2 MiB pages instead, and starts every large block on a cache line.

use std::alloc::{GlobalAlloc, Layout, System};

/// Makes glibc keep freed blocks for reuse instead of unmapping them (no-op on other C libraries).
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called before any worker thread
    // allocates, and valid parameter values cannot break existing allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// The system allocator, with every block of at least [`MIN_LINE_ALIGNED`] bytes starting a cache
/// line, and every block of at least [`MIN_ADVISED`] bytes marked for transparent huge pages
/// (`madvise(MADV_HUGEPAGE)` on the 2 MiB-aligned extents inside it), so that the kernel backs them
/// with 2 MiB pages where it has them: one TLB entry then covers 512 times the memory. The huge
/// pages are a hint only: where THP is off (`/sys/kernel/mm/transparent_hugepage/enabled` is
/// `never`), or on other systems, blocks keep ordinary pages. Binaries install it with
/// `#[global_allocator]`; a library never does.
///
/// The alignment is for the GEMMs, whose outputs are the model's tensors: glibc aligns a block to
/// 16 bytes, so three tensors in four started mid-line, and with them every row of C the product
/// kernel loads and stores 64 bytes at a time (the rows of a 256- or 688-wide tensor are whole
/// lines apart, so all of them or none). A store that straddles two lines costs two: on the bench
/// model's 4,096-row products, C 16 bytes past a line made the GEMM 6–15% slower on one thread.
pub struct LargeBlocks;

/// Bytes in a transparent huge page on x86-64 and (with 4 KiB base pages) on aarch64.
const HUGE_PAGE: usize = 2 << 20;

/// The smallest block advised: it always holds at least one aligned huge page.
pub const MIN_ADVISED: usize = 2 * HUGE_PAGE;

/// Bytes in a cache line on x86-64 (and on most aarch64 cores).
const CACHE_LINE: usize = 64;

/// The smallest block placed at the start of a cache line (four rows of 256 f32): every tensor a
/// product writes is far larger, and smaller blocks keep glibc's tighter packing.
pub const MIN_LINE_ALIGNED: usize = 4096;

/// The layout a block is allocated (and freed) with: the caller's, its alignment raised to a cache
/// line when the block is large. A pure function of the caller's layout, so that `dealloc` and
/// `realloc` recover what `alloc` asked of `System`.
fn placed(layout: Layout) -> Layout {
    if layout.size() >= MIN_LINE_ALIGNED {
        layout.align_to(CACHE_LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every block comes from `System` with `placed(layout)` (a large zeroed block as
// `System.alloc` followed by zeroing all its bytes) and goes back to it with the same, which
// satisfies the caller's layout (same size, alignment at least the caller's); `advise` only adds a
// hint about how a block's pages are backed, changing neither address nor contents.
unsafe impl GlobalAlloc for LargeBlocks {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `placed` keeps the size and raises the alignment to another power of two, which
        // keeps the caller's contract for `alloc` (non-zero size) that `System.alloc` needs.
        let block = unsafe { System.alloc(placed(layout)) };
        advise(block, layout.size());
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < MIN_ADVISED {
            // SAFETY: as in `alloc`.
            return unsafe { System.alloc_zeroed(placed(layout)) };
        }
        // Advised before anything touches it: `calloc` may clear the block itself, and pages
        // first touched as 4 KiB pages stay so until the kernel's background collapse.
        // SAFETY: as in `alloc`.
        let block = unsafe { System.alloc(placed(layout)) };
        if !block.is_null() {
            advise(block, layout.size());
            // SAFETY: the block holds `layout.size()` writable bytes.
            unsafe { block.write_bytes(0, layout.size()) };
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: the block came from `System` with `placed(layout)`.
        unsafe { System.dealloc(block, placed(layout)) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size` rounded up to `layout.align()` fits.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let (old, new) = (placed(layout), placed(new_layout));
        let moved = if old.align() == new.align() {
            // SAFETY: the block came from `System` with `old`, and `System.realloc` keeps its
            // alignment.
            unsafe { System.realloc(block, old, new_size) }
        } else {
            // The block crosses `MIN_LINE_ALIGNED`: a new block with the other alignment.
            // SAFETY: `new_layout` has a non-zero size (the caller's contract); the old block
            // holds `layout.size()` bytes, the new one `new_size`, and they are distinct blocks.
            unsafe {
                let fresh = self.alloc(new_layout);
                if !fresh.is_null() {
                    std::ptr::copy_nonoverlapping(block, fresh, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                fresh
            }
        };
        advise(moved, new_size);
        moved
    }
}

/// Marks the whole huge pages inside `len` bytes from `block` for transparent huge pages.
fn advise(block: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    if !block.is_null() && len >= MIN_ADVISED {
        let start = (block as usize).next_multiple_of(HUGE_PAGE);
        let end = (block as usize + len) / HUGE_PAGE * HUGE_PAGE;
        // SAFETY: [start, end) lies inside the block just allocated; madvise with this advice
        // changes how its pages are backed, never their contents, and a failure (THP disabled)
        // leaves the block as it was.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (block, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large and small blocks through every method: zeroed blocks read zero, a grown block keeps
    /// its contents, and each block's bytes are its own.
    #[test]
    fn large_blocks_behave_like_the_system_allocator() {
        for size in [64, MIN_ADVISED - 1, MIN_ADVISED + 4096 + 8] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            // SAFETY: non-zero sizes; every block is freed with the layout it has.
            unsafe {
                let zeroed = LargeBlocks.alloc_zeroed(layout);
                assert!(!zeroed.is_null(), "alloc_zeroed({size}) failed");
                let bytes = std::slice::from_raw_parts(zeroed, size);
                assert!(
                    bytes.iter().all(|&b| b == 0),
                    "alloc_zeroed({size}) not zero"
                );
                let block = LargeBlocks.alloc(layout);
                assert!(!block.is_null(), "alloc({size}) failed");
                for i in 0..size {
                    *block.add(i) = (i % 251) as u8;
                }
                let grown = LargeBlocks.realloc(block, layout, 3 * size);
                assert!(!grown.is_null(), "realloc({size} -> {}) failed", 3 * size);
                for i in 0..size {
                    assert_eq!(
                        *grown.add(i),
                        (i % 251) as u8,
                        "realloc lost byte {i} of {size}"
                    );
                }
                assert!(std::slice::from_raw_parts(zeroed, size)
                    .iter()
                    .all(|&b| b == 0));
                LargeBlocks.dealloc(grown, Layout::from_size_align(3 * size, 64).unwrap());
                LargeBlocks.dealloc(zeroed, layout);
            }
        }
    }

    /// Blocks of `MIN_LINE_ALIGNED` bytes or more start a cache line whatever alignment the caller
    /// asked for, through every method, including a block that grows or shrinks across the
    /// threshold; sixteen such blocks all aligned by glibc's chance would be a 4^-16 event.
    #[test]
    fn large_blocks_start_a_cache_line() {
        let starts_a_line = |p: *mut u8| !p.is_null() && (p as usize).is_multiple_of(CACHE_LINE);
        let large = Layout::from_size_align(MIN_LINE_ALIGNED + 4, 4).unwrap();
        let small = Layout::from_size_align(100, 4).unwrap();
        // SAFETY: non-zero sizes; every block is freed with the layout it has at that point.
        unsafe {
            let blocks: Vec<*mut u8> = (0..16).map(|_| LargeBlocks.alloc(large)).collect();
            for (i, &b) in blocks.iter().enumerate() {
                assert!(starts_a_line(b), "alloc block {i} at {b:p}");
            }
            for b in blocks {
                LargeBlocks.dealloc(b, large);
            }
            let zeroed = LargeBlocks.alloc_zeroed(large);
            assert!(starts_a_line(zeroed), "alloc_zeroed at {zeroed:p}");
            LargeBlocks.dealloc(zeroed, large);

            let block = LargeBlocks.alloc(small);
            for i in 0..100 {
                *block.add(i) = i as u8;
            }
            let grown = LargeBlocks.realloc(block, small, 3 * MIN_LINE_ALIGNED);
            assert!(
                starts_a_line(grown),
                "grown past the threshold at {grown:p}"
            );
            let grown_layout = Layout::from_size_align(3 * MIN_LINE_ALIGNED, 4).unwrap();
            let larger = LargeBlocks.realloc(grown, grown_layout, 5 * MIN_LINE_ALIGNED);
            assert!(starts_a_line(larger), "grown again at {larger:p}");
            let larger_layout = Layout::from_size_align(5 * MIN_LINE_ALIGNED, 4).unwrap();
            let shrunk = LargeBlocks.realloc(larger, larger_layout, 50);
            assert!(!shrunk.is_null(), "shrinking below the threshold failed");
            for i in 0..50 {
                assert_eq!(*shrunk.add(i), i as u8, "byte {i} lost on the way");
            }
            LargeBlocks.dealloc(shrunk, Layout::from_size_align(50, 4).unwrap());
        }
    }
}
