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

/// The emulator's own launch checks, below the launch layer's (which refuses some of these first).
#[cfg(test)]
mod tests {
    use super::super::emu::{self, SharedMemoryLimits};
    use super::*;

    /// Launches reduce_sum (one row of 32 values, 4-byte partial sums per thread in dynamic shared
    /// memory) with the given shape and shared memory, straight into the emulator.
    fn launch(grid: [u32; 3], block: [u32; 3], dynamic: u32, opt_in: Option<u32>) -> Result<f32> {
        let device = Device::emulator();
        let input = device.upload(&[0.5f32; 32])?;
        let mut row_sums = device.upload(&[0.0f32])?;
        let mut total = device.upload(&[0.0f32])?;
        let params = ReduceSumParams {
            input: device.pointer(&input, "input")?,
            row_sums: device.pointer_mut(&mut row_sums, "row_sums")?,
            total: device.pointer_mut(&mut total, "total")?,
            cols: 32,
        };
        let config = LaunchConfig {
            grid,
            block,
            dynamic_shared_bytes: dynamic,
        };
        let limits = SharedMemoryLimits {
            max_dynamic_bytes: opt_in,
            max_per_block: 163 * 1024,
        };
        emu::launch(KERNEL.name, KERNEL.emulator, config, limits, &params)?;
        Ok(device.download(&row_sums)?[0])
    }

    fn refusal(result: Result<f32>) -> String {
        match result {
            Err(super::super::KernelError::Emulator { message, .. }) => message,
            other => panic!("expected the emulator to refuse the launch, got {other:?}"),
        }
    }

    #[test]
    fn emulator_refuses_grids_and_blocks_beyond_the_gpu_limits() {
        assert_eq!(launch([1, 1, 1], [32, 1, 1], 128, None).unwrap(), 16.0);
        for grid in [[1 << 31, 1, 1], [1, 65536, 1], [1, 1, 65536], [0, 1, 1]] {
            assert!(refusal(launch(grid, [32, 1, 1], 128, None)).contains("invalid grid"));
        }
        for block in [[1025, 1, 1], [32, 32, 2], [1, 1, 65], [0, 1, 1]] {
            assert!(refusal(launch([1, 1, 1], block, 128, None)).contains("invalid block"));
        }
    }

    #[test]
    fn emulator_applies_the_drivers_shared_memory_rules() {
        let over_default = 48 * 1024 + 4;
        let message = refusal(launch([1, 1, 1], [32, 1, 1], over_default, None));
        assert!(message.contains("without opting in"), "{message}");
        assert_eq!(
            launch([1, 1, 1], [32, 1, 1], over_default, Some(over_default)).unwrap(),
            16.0
        );
        let message = refusal(launch([1, 1, 1], [32, 1, 1], 60_000, Some(50_000)));
        assert!(message.contains("exceed the opt-in limit"), "{message}");
        let message = refusal(launch([1, 1, 1], [32, 1, 1], 1024, Some(164 * 1024)));
        assert!(message.contains("would fail"), "{message}");
    }
}
