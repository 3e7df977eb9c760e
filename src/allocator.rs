//! Process-level allocator tuning for training loops.
//!
//! Each step allocates and frees activation buffers of tens of MiB. glibc serves such blocks with
//! mmap and returns them on free, so every step page-faults its memory in again: measured on the
//! default fine-tune, that was 30% of the wall time, all of it in the kernel. Keeping freed memory
//! in the heap makes the next step reuse the same pages.

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
