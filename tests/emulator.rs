//! The kernel workspace's own checks: every device primitive (through the probe kernel) against scalar
//! definitions written here, independently of the emulator, from the PTX ISA's fragment layouts
//! (DESIGN §5); barriers that diverge are reported as errors; a shared-memory reduction; launches on
//! parallel threads stay apart; the generated params.rs matches the C layouts. The `gpu_*` tests run
//! the same checks on a CUDA GPU; they are ignored unless asked for (`-- --include-ignored`).

use half::{bf16, f16};
use longlora::kernels::self_test::{
    divergent_barrier, mma_loop, probe, reduce_sum, Divergence, ProbeInputs, ProbeOutputs,
    LDMATRIX_REGISTERS,
};
use longlora::kernels::{self, Device, KernelError};
use longlora::rng::Rng;

/// Definitions from the PTX ISA, indexed by matrix element: where element (row, col) of each fragment
/// lives (the emulator goes the other way, from each lane's registers to elements).
mod common;

use common::device::gpu;
use common::probe::random_inputs;

mod ptx {
    /// (lane, register, half) of element (row, col) of the 16x16 A fragment of mma.m16n8k16.
    pub fn a_location(row: usize, col: usize) -> (usize, usize, usize) {
        (
            (row % 8) * 4 + (col % 8) / 2,
            (col / 8) * 2 + row / 8,
            col % 2,
        )
    }

    /// (lane, register, half) of element (k, n) of the 16x8 B fragment.
    pub fn b_location(k: usize, n: usize) -> (usize, usize, usize) {
        (n * 4 + (k % 8) / 2, k / 8, k % 2)
    }

    /// (lane, register) of element (row, col) of the 16x8 f32 C and D fragments.
    pub fn c_location(row: usize, col: usize) -> (usize, usize) {
        ((row % 8) * 4 + col / 2, (row / 8) * 2 + col % 2)
    }

    fn half_of(register: u32, half: usize) -> u16 {
        (register >> (16 * half)) as u16
    }

    /// D = A * B + C as the emulator defines the arithmetic: exact f32 products added to c in k order,
    /// each addition rounded to f32. Returns D in fragment order ([lane][4]).
    pub fn mma(a: &[u32; 128], b: &[u32; 64], c: &[f32; 128], to_f32: fn(u16) -> f32) -> Vec<f32> {
        let mut d = vec![f32::NAN; 128];
        for row in 0..16 {
            for col in 0..8 {
                let (lane, index) = c_location(row, col);
                let mut sum = c[lane * 4 + index];
                for k in 0..16 {
                    let (a_lane, a_reg, a_half) = a_location(row, k);
                    let (b_lane, b_reg, b_half) = b_location(k, col);
                    let x = to_f32(half_of(a[a_lane * 4 + a_reg], a_half));
                    let y = to_f32(half_of(b[b_lane * 2 + b_reg], b_half));
                    sum += x * y;
                }
                d[lane * 4 + index] = sum;
            }
        }
        d
    }

    /// ldmatrix.m8n8.x{matrices}{.trans}: matrix j's row r is the 8 elements at `rows[8j + r]` of
    /// `source`. Non-transposed, element (r, c) goes to lane 4r + c/2, half c % 2 of register j;
    /// transposed, to lane 4c + r/2, half r % 2. Returns [lane][matrices].
    pub fn ldmatrix(
        source: &[u16; 256],
        rows: &[u32; 32],
        matrices: usize,
        trans: bool,
    ) -> Vec<u32> {
        let mut out = vec![0u32; 32 * matrices];
        for j in 0..matrices {
            for r in 0..8 {
                for c in 0..8 {
                    let element = u32::from(source[rows[8 * j + r] as usize * 8 + c]);
                    let (lane, half) = if trans {
                        (4 * c + r / 2, r % 2)
                    } else {
                        (4 * r + c / 2, c % 2)
                    };
                    out[lane * matrices + j] |= element << (16 * half);
                }
            }
        }
        out
    }

    /// The lane each shuffle reads, by the CUDA programming guide's definitions: lanes form segments of
    /// `width`; `__shfl_sync` reads `src_lane` modulo width within the segment; up and down read
    /// `delta` lanes away unless that leaves the segment; xor reads `lane ^ mask` unless that is a
    /// later segment. A lane that would leave gets its own value. Returns [idx, up, down, xor].
    pub fn shuffle_sources(
        lane: usize,
        src_lane: usize,
        delta: usize,
        xor_mask: usize,
        width: usize,
    ) -> [usize; 4] {
        let segment = lane / width * width;
        let idx = segment + src_lane % width;
        let up = if lane % width >= delta {
            lane - delta
        } else {
            lane
        };
        let down = if lane % width + delta < width {
            lane + delta
        } else {
            lane
        };
        let xor = if (lane ^ xor_mask) / width <= lane / width {
            lane ^ xor_mask
        } else {
            lane
        };
        [idx, up, down, xor]
    }
}

/// How close the mma results must be: bit-exact in the emulator, whose arithmetic the reference
/// defines; on a GPU within the rounding of the tensor cores' own accumulation order.
#[derive(Clone, Copy)]
enum MmaMatch {
    Exact,
    TensorCore,
}

fn check_mma(name: &str, got: &[f32], want: &[f32], inputs_c: &[f32; 128], mode: MmaMatch) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = match mode {
            MmaMatch::Exact => g.to_bits() == w.to_bits(),
            // 16 products of magnitude below 1 plus c: a few ulps of the largest partial sum.
            MmaMatch::TensorCore => (g - w).abs() <= 1e-5 * (16.0 + inputs_c[i].abs()),
        };
        assert!(
            ok,
            "{name}: lane {} register {}: expected {w:e}, got {g:e}",
            i / 4,
            i % 4
        );
    }
}

fn check_ldmatrix(inputs: &ProbeInputs, outputs: &ProbeOutputs) {
    // (first register in the probe's output, matrices, transposed) for each form, in probe.cu's order.
    let forms = [
        (0, 1, false),
        (1, 2, false),
        (3, 4, false),
        (7, 1, true),
        (8, 2, true),
        (10, 4, true),
    ];
    for (first, matrices, trans) in forms {
        let want = ptx::ldmatrix(
            &inputs.ldmatrix_source,
            &inputs.ldmatrix_rows,
            matrices,
            trans,
        );
        for lane in 0..32 {
            for j in 0..matrices {
                let got = outputs.ldmatrix[lane * LDMATRIX_REGISTERS + first + j];
                let want = want[lane * matrices + j];
                let form = format!("ldmatrix.x{matrices}{}", if trans { ".trans" } else { "" });
                assert_eq!(
                    got, want,
                    "{form}: lane {lane} register {j}: expected {want:#010x}, got {got:#010x}"
                );
            }
        }
    }
}

fn check_shuffles(inputs: &ProbeInputs, outputs: &ProbeOutputs) {
    let names = [
        "__shfl_sync",
        "__shfl_up_sync",
        "__shfl_down_sync",
        "__shfl_xor_sync",
    ];
    for lane in 0..32 {
        let sources = ptx::shuffle_sources(
            lane,
            inputs.shuffle_sources[lane] as usize,
            inputs.shuffle_delta as usize,
            inputs.shuffle_xor_mask as usize,
            inputs.shuffle_width as usize,
        );
        for (i, source) in sources.into_iter().enumerate() {
            let got = outputs.shuffles[lane * 4 + i];
            let want = inputs.shuffle_values[source];
            assert_eq!(
                got, want,
                "{} (width {}, delta {}, xor {:#x}): lane {lane} should read lane {source}",
                names[i], inputs.shuffle_width, inputs.shuffle_delta, inputs.shuffle_xor_mask
            );
        }
    }
}

fn check_probe(device: &Device, seed: u64, mma: MmaMatch) {
    for (i, width) in [32, 16, 8, 4, 2, 1].into_iter().enumerate() {
        let inputs = random_inputs(seed + i as u64, width);
        let outputs = probe(device, &inputs).unwrap();
        let want_bf16 = ptx::mma(&inputs.mma_bf16_a, &inputs.mma_bf16_b, &inputs.mma_c, |b| {
            bf16::from_bits(b).to_f32()
        });
        let want_f16 = ptx::mma(&inputs.mma_f16_a, &inputs.mma_f16_b, &inputs.mma_c, |b| {
            f16::from_bits(b).to_f32()
        });
        check_mma(
            "mma.m16n8k16.bf16",
            &outputs.mma_bf16_d,
            &want_bf16,
            &inputs.mma_c,
            mma,
        );
        check_mma(
            "mma.m16n8k16.f16",
            &outputs.mma_f16_d,
            &want_f16,
            &inputs.mma_c,
            mma,
        );
        check_ldmatrix(&inputs, &outputs);
        check_shuffles(&inputs, &outputs);
    }
}

/// Row sums and total of `rows x cols` random values on `device`, checked against f64 sums.
fn check_reduce_sum(device: &Device, seed: u64, rows: usize, cols: usize, block_threads: u32) {
    let mut rng = Rng::new(seed);
    let data: Vec<f32> = (0..rows * cols)
        .map(|_| rng.uniform_range(-1.0, 1.0) as f32)
        .collect();
    let input = device.upload(&data).unwrap();
    let mut row_sums = device.upload(&vec![f32::NAN; rows]).unwrap();
    let mut total = device.upload(&[0.0f32]).unwrap();
    reduce_sum(
        device,
        &input,
        rows,
        cols,
        block_threads,
        &mut row_sums,
        &mut total,
    )
    .unwrap();
    let got_rows = device.download(&row_sums).unwrap();
    let got_total = device.download(&total).unwrap()[0];

    let context = format!("{rows} x {cols}, {block_threads} threads");
    for (r, row) in data.chunks(cols).enumerate() {
        let want: f64 = row.iter().map(|&x| f64::from(x)).sum();
        let scale: f64 = row.iter().map(|&x| f64::from(x).abs()).sum();
        let got = f64::from(got_rows[r]);
        assert!(
            (got - want).abs() <= 1e-6 * scale + 1e-30,
            "row {r} of {context}: expected {want}, got {got}"
        );
    }
    let want: f64 = data.iter().map(|&x| f64::from(x)).sum();
    let scale: f64 = data.iter().map(|&x| f64::from(x).abs()).sum();
    let got = f64::from(got_total);
    assert!(
        (got - want).abs() <= 1e-6 * scale + 1e-30,
        "total of {context}: expected {want}, got {got}"
    );
}

#[test]
fn emulated_primitives_match_ptx_definitions() {
    check_probe(&Device::emulator(), 1, MmaMatch::Exact);
}

#[test]
fn emulated_mma_accumulates_in_every_warp() {
    let inputs = random_inputs(7, 32);
    let (a, b) = (&inputs.mma_bf16_a, &inputs.mma_bf16_b);
    let bf16_to_f32 = |bits| bf16::from_bits(bits).to_f32();
    let mut want = [0.0f32; 128];
    for _ in 0..3 {
        let d = ptx::mma(a, b, &want, bf16_to_f32);
        want.copy_from_slice(&d);
    }
    let got = mma_loop(&Device::emulator(), a, b, 3, 3).unwrap();
    for warp in 0..3 {
        check_mma(
            "mma loop",
            &got[warp * 128..][..128],
            &want,
            &want,
            MmaMatch::Exact,
        );
    }
}

#[test]
fn emulated_reduce_sum_is_right_for_any_block_size() {
    let device = Device::emulator();
    for (i, block_threads) in [1, 2, 7, 32, 33, 64, 100, 128, 255, 256, 1000, 1024]
        .into_iter()
        .enumerate()
    {
        check_reduce_sum(&device, 10 + i as u64, 3, 1 + 397 * i, block_threads);
    }
}

#[test]
fn divergent_barriers_are_reported_and_the_next_launch_works() {
    let device = Device::emulator();
    let cases = [
        (Divergence::DIVERGENCE_EARLY_EXIT, "exited"),
        (
            Divergence::DIVERGENCE_TWO_BARRIERS,
            "while 1 thread(s) wait at __syncthreads",
        ),
        (
            Divergence::DIVERGENCE_SHUFFLE_EXIT,
            "shuffles from lane 5, which does not take part",
        ),
        (Divergence::DIVERGENCE_SHUFFLE_BARRIER, "deadlock"),
    ];
    for (divergence, expected) in cases {
        match divergent_barrier(&device, divergence, 96) {
            Err(KernelError::Emulator { kernel, message }) => {
                assert_eq!(kernel, "divergent_barrier_kernel");
                assert!(
                    message.contains(expected),
                    "{divergence:?}: message {message:?} lacks {expected:?}"
                );
            }
            other => panic!("{divergence:?}: expected an emulator error, got {other:?}"),
        }
        // The failed launch leaves nothing behind on this thread.
        check_reduce_sum(&device, 3, 2, 50, 64);
        check_probe(&device, 4, MmaMatch::Exact);
    }
}

#[test]
fn parallel_launches_do_not_share_shared_memory() {
    // Each thread probes (static __shared__ tile) and reduces (dynamic shared memory) with its own
    // inputs over and over; any sharing between OS threads corrupts someone's results.
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            scope.spawn(move || {
                let device = Device::emulator();
                for i in 0..10 {
                    check_probe(&device, 100 * t + i, MmaMatch::Exact);
                    check_reduce_sum(
                        &device,
                        100 * t + i,
                        2,
                        300 + t as usize,
                        32 + 31 * t as u32,
                    );
                }
            });
        }
    });
}

#[test]
fn invalid_arguments_are_rejected_with_clear_errors() {
    let device = Device::emulator();
    let input = device.upload(&[1.0f32; 10]).unwrap();
    let mut row_sums = device.upload(&[0.0f32; 2]).unwrap();
    let mut total = device.upload(&[0.0f32]).unwrap();
    let error = reduce_sum(&device, &input, 2, 6, 32, &mut row_sums, &mut total).unwrap_err();
    assert_eq!(
        error.to_string(),
        "reduce_sum_kernel: invalid input: expected 12 elements, got 10 elements"
    );
    let error = reduce_sum(&device, &input, 2, 5, 1025, &mut row_sums, &mut total).unwrap_err();
    assert_eq!(
        error.to_string(),
        "reduce_sum_kernel: invalid block_threads: expected 1 to 1024, got 1025"
    );
    let mut inputs = random_inputs(5, 32);
    inputs.shuffle_width = 12;
    let error = probe(&device, &inputs).unwrap_err();
    assert_eq!(
        error.to_string(),
        "probe_kernel: invalid shuffle_width: expected a power of two up to 32, got 12"
    );
}

#[test]
fn generated_params_match_the_c_layouts() {
    use kernels::params;
    use kernels::params::{
        AttentionBackwardParams, AttentionForwardParams, AttentionProblem, DivergentBarrierParams,
        LoraGradAParams, LoraGradBParams, LoraLinearParams, MmaLoopParams, ProbeParams,
        ReduceSumParams,
    };
    use std::mem::{align_of, size_of};
    let mut rust = vec![
        (
            "ProbeParams",
            size_of::<ProbeParams>(),
            align_of::<ProbeParams>(),
        ),
        (
            "ReduceSumParams",
            size_of::<ReduceSumParams>(),
            align_of::<ReduceSumParams>(),
        ),
        (
            "DivergentBarrierParams",
            size_of::<DivergentBarrierParams>(),
            align_of::<DivergentBarrierParams>(),
        ),
    ];
    rust.push((
        "MmaLoopParams",
        size_of::<MmaLoopParams>(),
        align_of::<MmaLoopParams>(),
    ));
    rust.push((
        "LoraLinearParams",
        size_of::<LoraLinearParams>(),
        align_of::<LoraLinearParams>(),
    ));
    rust.push((
        "LoraGradAParams",
        size_of::<LoraGradAParams>(),
        align_of::<LoraGradAParams>(),
    ));
    rust.push((
        "LoraGradBParams",
        size_of::<LoraGradBParams>(),
        align_of::<LoraGradBParams>(),
    ));
    rust.push((
        "PadRowsParams",
        size_of::<params::PadRowsParams>(),
        align_of::<params::PadRowsParams>(),
    ));
    rust.push((
        "ConvertParams",
        size_of::<params::ConvertParams>(),
        align_of::<params::ConvertParams>(),
    ));
    rust.push((
        "ScaledConvertParams",
        size_of::<params::ScaledConvertParams>(),
        align_of::<params::ScaledConvertParams>(),
    ));
    rust.push((
        "SwigluParams",
        size_of::<params::SwigluParams>(),
        align_of::<params::SwigluParams>(),
    ));
    rust.push((
        "SwigluBackwardParams",
        size_of::<params::SwigluBackwardParams>(),
        align_of::<params::SwigluBackwardParams>(),
    ));
    rust.push((
        "RopeParams",
        size_of::<params::RopeParams>(),
        align_of::<params::RopeParams>(),
    ));
    rust.push((
        "EmbeddingParams",
        size_of::<params::EmbeddingParams>(),
        align_of::<params::EmbeddingParams>(),
    ));
    rust.push((
        "EmbeddingBackwardParams",
        size_of::<params::EmbeddingBackwardParams>(),
        align_of::<params::EmbeddingBackwardParams>(),
    ));
    rust.push((
        "RmsnormForwardParams",
        size_of::<params::RmsnormForwardParams>(),
        align_of::<params::RmsnormForwardParams>(),
    ));
    rust.push((
        "RmsnormBackwardParams",
        size_of::<params::RmsnormBackwardParams>(),
        align_of::<params::RmsnormBackwardParams>(),
    ));
    rust.push((
        "CrossEntropyForwardParams",
        size_of::<params::CrossEntropyForwardParams>(),
        align_of::<params::CrossEntropyForwardParams>(),
    ));
    rust.push((
        "CrossEntropyBackwardParams",
        size_of::<params::CrossEntropyBackwardParams>(),
        align_of::<params::CrossEntropyBackwardParams>(),
    ));
    rust.push((
        "OptimTensor",
        size_of::<params::OptimTensor>(),
        align_of::<params::OptimTensor>(),
    ));
    rust.push((
        "GradSumSquaresParams",
        size_of::<params::GradSumSquaresParams>(),
        align_of::<params::GradSumSquaresParams>(),
    ));
    rust.push((
        "AdamwParams",
        size_of::<params::AdamwParams>(),
        align_of::<params::AdamwParams>(),
    ));
    rust.push((
        "AttentionProblem",
        size_of::<AttentionProblem>(),
        align_of::<AttentionProblem>(),
    ));
    rust.push((
        "AttentionForwardParams",
        size_of::<AttentionForwardParams>(),
        align_of::<AttentionForwardParams>(),
    ));
    rust.push((
        "AttentionBackwardParams",
        size_of::<AttentionBackwardParams>(),
        align_of::<AttentionBackwardParams>(),
    ));
    rust.push((
        "SharedAccessParams",
        size_of::<params::SharedAccessParams>(),
        align_of::<params::SharedAccessParams>(),
    ));
    let mut c: Vec<_> = kernels::emu::param_layouts()
        .into_iter()
        .map(|layout| (layout.name, layout.size, layout.align))
        .collect();
    rust.sort();
    c.sort();
    let rust: Vec<_> = rust
        .into_iter()
        .map(|(name, size, align)| (name.to_string(), size, align))
        .collect();
    assert_eq!(
        rust, c,
        "params.rs (left) and params.h as compiled (right) disagree"
    );
}

#[test]
fn without_a_gpu_the_cuda_backend_is_an_error_not_a_panic() {
    if Device::cuda_device_count() > 0 {
        return;
    }
    let error = Device::cuda(0)
        .err()
        .expect("no GPU, yet Device::cuda succeeded");
    if kernels::built_with_kernels() {
        assert!(
            matches!(error, KernelError::NoDriver | KernelError::Cuda { .. }),
            "{error}"
        );
    } else {
        assert_eq!(
            error.to_string(),
            "built without CUDA kernels: run scripts/install-nvcc.sh and rebuild"
        );
    }
}

/// A device opened on one thread launches from another: the launch layer binds the GPU's context to
/// the calling thread before it looks a kernel up or sets its attributes.
fn check_launch_from_a_second_thread(device: &Device) {
    std::thread::scope(|scope| {
        scope
            .spawn(|| check_reduce_sum(device, 7, 3, 100, 64))
            .join()
            .unwrap();
    });
    check_reduce_sum(device, 8, 2, 50, 32);
}

#[test]
fn kernels_launch_from_a_second_os_thread() {
    check_launch_from_a_second_thread(&Device::emulator());
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_kernels_launch_from_a_second_os_thread() {
    check_launch_from_a_second_thread(&gpu());
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_primitives_match_ptx_definitions() {
    check_probe(&gpu(), 1, MmaMatch::TensorCore);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_reduce_sum_is_right_for_any_block_size() {
    let device = gpu();
    for (i, block_threads) in [1, 7, 32, 33, 100, 256, 1000, 1024].into_iter().enumerate() {
        check_reduce_sum(&device, 10 + i as u64, 3, 1 + 397 * i, block_threads);
    }
}
