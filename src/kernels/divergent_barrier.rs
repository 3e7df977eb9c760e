//! divergent_barrier_kernel (cuda/tests/divergent_barrier.cu): an emulator self-test kernel that
//! breaks a barrier or warp collective on purpose, to show the emulator reports it instead of hanging.

use super::params::{Divergence, DivergentBarrierParams};
use super::{invalid, Device, LaunchConfig, Result};

kernels! {
    KERNEL = divergent_barrier_kernel / longlora_emu_divergent_barrier_kernel(DivergentBarrierParams), emulator_only;
}

/// Runs the kernel in one block of `block_threads` threads (64 to 1024, so at least two warps) and
/// returns what each thread stored; in the emulator, every `divergence` makes the launch an error.
pub fn divergent_barrier(
    device: &Device,
    divergence: Divergence,
    block_threads: u32,
) -> Result<Vec<f32>> {
    if !(64..=1024).contains(&block_threads) {
        return Err(invalid(
            KERNEL.name,
            "block_threads",
            "64 to 1024",
            block_threads,
        ));
    }
    let mut out = device.upload(&vec![f32::NAN; block_threads as usize])?;
    let params = DivergentBarrierParams {
        divergence: divergence as u32,
        out: device.pointer_mut(&mut out, "out")?,
    };
    let config = LaunchConfig {
        grid: [1, 1, 1],
        block: [block_threads, 1, 1],
        dynamic_shared_bytes: 0,
    };
    device.launch(&KERNEL, config, &params)?;
    device.download(&out)
}
