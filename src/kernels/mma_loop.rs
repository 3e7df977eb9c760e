//! mma_loop_kernel (cuda/tests/mma_loop.cu): an emulator-only kernel that repeats one warp-level mma,
//! for measuring what each costs in the emulator (benches/emulator.rs).

use super::params::MmaLoopParams;
use super::{invalid, Device, LaunchConfig, Result};

kernels! {
    KERNEL = mma_loop_kernel / longlora_emu_mma_loop_kernel(MmaLoopParams), emulator_only;
}

/// Runs `iterations` bf16 mmas `d = a * b + d` (d starting at zero) in each of `warps` warps (1 to
/// 32) of one block, and returns every warp's D fragments, `[warps][32][4]`.
pub fn mma_loop(
    device: &Device,
    a: &[u32; 128],
    b: &[u32; 64],
    warps: u32,
    iterations: u32,
) -> Result<Vec<f32>> {
    if !(1..=32).contains(&warps) {
        return Err(invalid(KERNEL.name, "warps", "1 to 32", warps));
    }
    let a = device.upload(a)?;
    let b = device.upload(b)?;
    let mut d = device.upload(&vec![f32::NAN; warps as usize * 128])?;
    let params = MmaLoopParams {
        a: device.pointer(&a, "a")?,
        b: device.pointer(&b, "b")?,
        d: device.pointer_mut(&mut d, "d")?,
        iterations,
    };
    let config = LaunchConfig {
        grid: [1, 1, 1],
        block: [warps * 32, 1, 1],
        dynamic_shared_bytes: 0,
    };
    device.launch(&KERNEL, config, &params)?;
    device.download(&d)
}
