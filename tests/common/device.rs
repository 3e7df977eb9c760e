//! Helpers for the kernel tests: the devices to run on, and bf16 operands that the f64 reference sees
//! exactly as the kernels do.

use half::bf16;
use longlora::kernels::Device;
use longlora::rng::Rng;

use super::random_vec;

/// DESIGN §4: kernels with bf16 operands and f32 accumulation.
pub const BF16_BAND: f64 = 1e-2;
/// Kernels whose operands are exact bf16 values and whose arithmetic and outputs are f32.
pub const F32_BAND: f64 = 1e-5;

/// The CUDA GPU of the tests marked `#[ignore = "needs a CUDA GPU"]`, which run only when asked
/// for (`cargo test -- --include-ignored`, as scripts/gpu-pack.sh does): without a GPU they fail
/// here rather than pass having checked nothing.
pub fn gpu() -> Device {
    assert!(
        Device::cuda_device_count() > 0,
        "this test needs a CUDA GPU and there is none"
    );
    Device::cuda(0).expect("the GPU opens: a library built without kernels cannot run on it")
}

/// The emulator, then the GPU when there is one (saying so when there is not).
pub fn devices() -> Vec<Device> {
    let mut devices = vec![Device::emulator()];
    if Device::cuda_device_count() == 0 {
        println!("skipped on GPU: no CUDA GPU");
    } else {
        devices.push(Device::cuda(0).unwrap());
    }
    devices
}

/// `n` values uniform in [-scale, scale), rounded to bf16.
pub fn random_bf16(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    random_vec(rng, n, scale)
        .into_iter()
        .map(|v| bf16::from_f64(v).to_f64())
        .collect()
}

pub fn to_bits(values: &[f64]) -> Vec<u16> {
    values
        .iter()
        .map(|&v| bf16::from_f64(v).to_bits())
        .collect()
}

pub fn from_bits(bits: &[u16]) -> Vec<f64> {
    bits.iter().map(|&b| bf16::from_bits(b).to_f64()).collect()
}

pub fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

pub fn from_f32(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| v as f64).collect()
}

/// bf16 NaN bits, to poison outputs before a kernel writes them.
pub const BF16_NAN: u16 = 0x7fc0;
