//! reduce_sum_kernel (cuda/reduce.cu): row sums through a shared-memory tree, and their total
//! through atomics.

use super::params::ReduceSumParams;
use super::{check_len, invalid, Buffer, Device, LaunchConfig, Result};

kernels! {
    KERNEL = reduce_sum_kernel / longlora_emu_reduce_sum_kernel(ReduceSumParams);
}

/// Sums each row of `input` (`rows x cols`, row-major) into `row_sums`, and adds the sum of all rows
/// to `total` (one element), with one block of `block_threads` threads (1 to 1024) per row.
pub fn reduce_sum(
    device: &Device,
    input: &Buffer<f32>,
    rows: usize,
    cols: usize,
    block_threads: u32,
    row_sums: &mut Buffer<f32>,
    total: &mut Buffer<f32>,
) -> Result<()> {
    let name = KERNEL.name;
    let grid = u32::try_from(rows)
        .ok()
        .filter(|&rows| (1..=i32::MAX as u32).contains(&rows))
        .ok_or_else(|| invalid(name, "rows", "1 to 2^31 - 1", rows))?;
    let cols_u32 =
        u32::try_from(cols).map_err(|_| invalid(name, "cols", "at most 2^32 - 1", cols))?;
    if !(1..=1024).contains(&block_threads) {
        return Err(invalid(name, "block_threads", "1 to 1024", block_threads));
    }
    let elements = rows
        .checked_mul(cols)
        .ok_or_else(|| invalid(name, "rows x cols", "a size that fits", rows))?;
    check_len(name, "input", input, elements)?;
    check_len(name, "row_sums", row_sums, rows)?;
    check_len(name, "total", total, 1)?;

    let params = ReduceSumParams {
        input: device.pointer(input, "input")?,
        row_sums: device.pointer_mut(row_sums, "row_sums")?,
        total: device.pointer_mut(total, "total")?,
        cols: cols_u32,
    };
    let config = LaunchConfig {
        grid: [grid, 1, 1],
        block: [block_threads, 1, 1],
        dynamic_shared_bytes: block_threads * size_of::<f32>() as u32,
    };
    device.launch(&KERNEL, config, &params)
}
