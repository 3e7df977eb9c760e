//! probe_kernel (cuda/probe.cu): every device primitive applied once to given inputs, returning each
//! lane's raw output registers, so that tests can hold the emulator and GPUs to the PTX ISA's
//! definitions (and record a GPU's outputs as golden vectors).

use super::params::ProbeParams;
use super::{invalid, Device, LaunchConfig, Result};

/// Registers per lane that the probe's ldmatrix calls produce: x1, x2, x4, then the same transposed.
pub const LDMATRIX_REGISTERS: usize = 14;

kernels! {
    KERNEL = probe_kernel / longlora_emu_probe_kernel(ProbeParams);
}

/// The probe's inputs, lane-major: lane l's k registers of an `[u32; 32 * k]` are at `l * k..`.
#[derive(Clone, Debug)]
pub struct ProbeInputs {
    /// A fragments (pairs of bf16 bits) for the bf16 mma.
    pub mma_bf16_a: [u32; 128],
    /// B fragments (pairs of bf16 bits) for the bf16 mma.
    pub mma_bf16_b: [u32; 64],
    /// A fragments (pairs of f16 bits) for the f16 mma.
    pub mma_f16_a: [u32; 128],
    /// B fragments (pairs of f16 bits) for the f16 mma.
    pub mma_f16_b: [u32; 64],
    /// C fragments for both products.
    pub mma_c: [f32; 128],
    /// 32 rows of eight 16-bit elements, which the kernel copies to shared memory with cp.async.
    pub ldmatrix_source: [u16; 256],
    /// The shared-memory row (0..32) whose address each lane passes to ldmatrix.
    pub ldmatrix_rows: [u32; 32],
    /// Each lane's value for the shuffles.
    pub shuffle_values: [u32; 32],
    /// Each lane's source lane for `__shfl_sync`.
    pub shuffle_sources: [u32; 32],
    /// `delta` of `__shfl_up_sync` and `__shfl_down_sync`.
    pub shuffle_delta: u32,
    /// `laneMask` of `__shfl_xor_sync`.
    pub shuffle_xor_mask: u32,
    /// `width` of all four shuffles: a power of two from 1 to 32.
    pub shuffle_width: u32,
}

/// The probe's outputs, lane-major like its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeOutputs {
    /// `[32][4]` D fragments of the bf16 mma.
    pub mma_bf16_d: Vec<f32>,
    /// `[32][4]` D fragments of the f16 mma.
    pub mma_f16_d: Vec<f32>,
    /// `[32][LDMATRIX_REGISTERS]`: x1, x2 (2), x4 (4), x1.trans, x2.trans (2), x4.trans (4).
    pub ldmatrix: Vec<u32>,
    /// `[32][4]`: `__shfl_sync`, `__shfl_up_sync`, `__shfl_down_sync`, `__shfl_xor_sync`.
    pub shuffles: Vec<u32>,
}

/// Runs the probe kernel (one warp) on `device`.
pub fn probe(device: &Device, inputs: &ProbeInputs) -> Result<ProbeOutputs> {
    let width = inputs.shuffle_width;
    if !(width.is_power_of_two() && width <= 32) {
        return Err(invalid(
            KERNEL.name,
            "shuffle_width",
            "a power of two up to 32",
            width,
        ));
    }
    if let Some(row) = inputs.ldmatrix_rows.iter().find(|&&row| row >= 32) {
        return Err(invalid(KERNEL.name, "ldmatrix_rows", "rows below 32", row));
    }

    let mma_bf16_a = device.upload(&inputs.mma_bf16_a)?;
    let mma_bf16_b = device.upload(&inputs.mma_bf16_b)?;
    let mma_f16_a = device.upload(&inputs.mma_f16_a)?;
    let mma_f16_b = device.upload(&inputs.mma_f16_b)?;
    let mma_c = device.upload(&inputs.mma_c)?;
    let ldmatrix_source = device.upload(&inputs.ldmatrix_source)?;
    let ldmatrix_rows = device.upload(&inputs.ldmatrix_rows)?;
    let shuffle_values = device.upload(&inputs.shuffle_values)?;
    let shuffle_sources = device.upload(&inputs.shuffle_sources)?;
    // Outputs start as NaN / all ones, so a register the kernel fails to write cannot pass.
    let mut mma_bf16_d = device.upload(&[f32::NAN; 128])?;
    let mut mma_f16_d = device.upload(&[f32::NAN; 128])?;
    let mut ldmatrix = device.upload(&[u32::MAX; 32 * LDMATRIX_REGISTERS])?;
    let mut shuffles = device.upload(&[u32::MAX; 128])?;

    let params = ProbeParams {
        mma_bf16_a: device.pointer(&mma_bf16_a, "mma_bf16_a")?,
        mma_bf16_b: device.pointer(&mma_bf16_b, "mma_bf16_b")?,
        mma_f16_a: device.pointer(&mma_f16_a, "mma_f16_a")?,
        mma_f16_b: device.pointer(&mma_f16_b, "mma_f16_b")?,
        mma_c: device.pointer(&mma_c, "mma_c")?,
        ldmatrix_source: device.pointer(&ldmatrix_source, "ldmatrix_source")?,
        ldmatrix_rows: device.pointer(&ldmatrix_rows, "ldmatrix_rows")?,
        shuffle_values: device.pointer(&shuffle_values, "shuffle_values")?,
        shuffle_sources: device.pointer(&shuffle_sources, "shuffle_sources")?,
        shuffle_delta: inputs.shuffle_delta,
        shuffle_xor_mask: inputs.shuffle_xor_mask,
        shuffle_width: width,
        mma_bf16_d: device.pointer_mut(&mut mma_bf16_d, "mma_bf16_d")?,
        mma_f16_d: device.pointer_mut(&mut mma_f16_d, "mma_f16_d")?,
        ldmatrix_out: device.pointer_mut(&mut ldmatrix, "ldmatrix_out")?,
        shuffle_out: device.pointer_mut(&mut shuffles, "shuffle_out")?,
    };
    let config = LaunchConfig {
        grid: [1, 1, 1],
        block: [32, 1, 1],
        dynamic_shared_bytes: 0,
    };
    device.launch(&KERNEL, config, &params)?;

    Ok(ProbeOutputs {
        mma_bf16_d: device.download(&mma_bf16_d)?,
        mma_f16_d: device.download(&mma_f16_d)?,
        ldmatrix: device.download(&ldmatrix)?,
        shuffles: device.download(&shuffles)?,
    })
}
