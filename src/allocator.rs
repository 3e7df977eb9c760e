//! Process-level allocator tuning for training loops.
//!
//! Each step allocates and frees activation buffers of tens of MiB. glibc serves such blocks with
//! mmap and returns them on free, so every step page-faults its memory in again: measured on the
//! default fine-tune, that was 30% of the wall time, all of it in the kernel. Keeping freed memory
//! in the heap makes the next step reuse the same pages.
//!
//! The tensors of a long context are also larger than the TLB reaches in 4 KiB pages (a 4,096-token
//! step streams tens of MiB of activations, K/V copies and gradients): [`HugePages`] asks the kernel
//! to back them with 2 MiB pages instead.

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

/// The system allocator, with every block of at least [`MIN_ADVISED`] bytes marked for transparent
/// huge pages (`madvise(MADV_HUGEPAGE)` on the 2 MiB-aligned extents inside it), so that the
/// kernel backs them with 2 MiB pages where it has them: one TLB entry then covers 512 times the
/// memory. A hint only: where THP is off (`/sys/kernel/mm/transparent_hugepage/enabled` is
/// `never`), or on other systems, blocks keep ordinary pages. Binaries install it with
/// `#[global_allocator]`; a library never does.
pub struct HugePages;

/// Bytes in a transparent huge page on x86-64 and (with 4 KiB base pages) on aarch64.
const HUGE_PAGE: usize = 2 << 20;

/// The smallest block advised: it always holds at least one aligned huge page.
pub const MIN_ADVISED: usize = 2 * HUGE_PAGE;

// SAFETY: every block comes from `System` with the caller's layout (a large zeroed block as
// `System.alloc` followed by zeroing all its bytes), and every block goes back to it; `advise`
// only adds a hint about how a block's pages are backed, changing neither address nor contents.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        let block = unsafe { System.alloc(layout) };
        advise(block, layout.size());
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < MIN_ADVISED {
            // SAFETY: as in `alloc`.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // Advised before anything touches it: `calloc` may clear the block itself, and pages
        // first touched as 4 KiB pages stay so until the kernel's background collapse.
        // SAFETY: as in `alloc`.
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            advise(block, layout.size());
            // SAFETY: the block holds `layout.size()` writable bytes.
            unsafe { block.write_bytes(0, layout.size()) };
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is `System.dealloc`'s, and every block came
        // from `System`.
        unsafe { System.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`.
        let moved = unsafe { System.realloc(block, layout, new_size) };
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
    fn huge_page_blocks_behave_like_the_system_allocator() {
        for size in [64, MIN_ADVISED - 1, MIN_ADVISED + 4096 + 8] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            // SAFETY: non-zero sizes; every block is freed with the layout it has.
            unsafe {
                let zeroed = HugePages.alloc_zeroed(layout);
                assert!(!zeroed.is_null(), "alloc_zeroed({size}) failed");
                let bytes = std::slice::from_raw_parts(zeroed, size);
                assert!(
                    bytes.iter().all(|&b| b == 0),
                    "alloc_zeroed({size}) not zero"
                );
                let block = HugePages.alloc(layout);
                assert!(!block.is_null(), "alloc({size}) failed");
                for i in 0..size {
                    *block.add(i) = (i % 251) as u8;
                }
                let grown = HugePages.realloc(block, layout, 3 * size);
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
                HugePages.dealloc(grown, Layout::from_size_align(3 * size, 64).unwrap());
                HugePages.dealloc(zeroed, layout);
            }
        }
    }
}
