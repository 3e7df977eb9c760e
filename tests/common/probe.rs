//! Random inputs for the probe kernel (`longlora::kernels::self_test::probe`), shared by the emulator tests
//! and the GPU golden-vector tests.

use half::{bf16, f16};
use longlora::kernels::self_test::ProbeInputs;
use longlora::rng::Rng;

fn bf16_bits(rng: &mut Rng) -> u16 {
    bf16::from_f64(rng.uniform_range(-1.0, 1.0)).to_bits()
}

fn f16_bits(rng: &mut Rng) -> u16 {
    f16::from_f64(rng.uniform_range(-1.0, 1.0)).to_bits()
}

fn pairs<const N: usize>(rng: &mut Rng, element: fn(&mut Rng) -> u16) -> [u32; N] {
    std::array::from_fn(|_| u32::from(element(rng)) | u32::from(element(rng)) << 16)
}

/// Fresh random probe inputs: values in [-1, 1) for the products, random bits and lanes elsewhere.
pub fn random_inputs(seed: u64, shuffle_width: u32) -> ProbeInputs {
    let mut rng = Rng::new(seed);
    ProbeInputs {
        mma_bf16_a: pairs(&mut rng, bf16_bits),
        mma_bf16_b: pairs(&mut rng, bf16_bits),
        mma_f16_a: pairs(&mut rng, f16_bits),
        mma_f16_b: pairs(&mut rng, f16_bits),
        mma_c: std::array::from_fn(|_| rng.uniform_range(-1.0, 1.0) as f32),
        ldmatrix_source: std::array::from_fn(|_| rng.next_u64() as u16),
        ldmatrix_rows: std::array::from_fn(|_| rng.below(32) as u32),
        shuffle_values: std::array::from_fn(|_| rng.next_u64() as u32),
        // Up to 63, so that source lanes past the width wrap.
        shuffle_sources: std::array::from_fn(|_| rng.below(64) as u32),
        shuffle_delta: rng.below(33) as u32,
        shuffle_xor_mask: rng.below(32) as u32,
        shuffle_width,
    }
}
