//! The elementwise and per-row kernels (conversions, SwiGLU, RoPE, embedding, RMSNorm, cross-entropy)
//! against the f64 reference ops, through the emulator and, when one is present, on a GPU: random
//! inputs, outputs poisoned with NaN, gradients accumulated onto random values, and sizes that are not
//! multiples of the block sizes.

mod common;

use common::device::{
    devices, from_bits, from_f32, random_bf16, to_bits, to_f32, BF16_BAND, BF16_NAN, F32_BAND,
};
use common::{assert_close, random_vec};
use half::bf16;
use longlora::kernels::{
    bf16_to_f32, cross_entropy_backward, cross_entropy_forward, embedding_backward,
    embedding_forward, f32_to_bf16, rmsnorm_backward, rmsnorm_forward, rope_backward, rope_forward,
    scaled_f32_to_bf16, swiglu_backward, swiglu_forward, without_shared_memory_opt_in, Device,
    DeviceRopeTable, GpuTarget, KernelError,
};
use longlora::ops::cross_entropy::{self, IGNORE_INDEX};
use longlora::ops::rope::RopeTable;
use longlora::ops::{embedding, rmsnorm, rope, swiglu};
use longlora::rng::Rng;

#[test]
fn conversions_round_to_nearest_even_like_the_half_crate() {
    let mut rng = Rng::new(1);
    let values: Vec<f32> = (0..1000)
        .map(|_| (rng.uniform_range(-1.0, 1.0) * 10f64.powf(rng.uniform_range(-8.0, 8.0))) as f32)
        .collect();
    for device in devices() {
        let input = device.upload(&values).unwrap();
        let mut narrow = device.upload(&vec![BF16_NAN; values.len()]).unwrap();
        f32_to_bf16(&device, &input, &mut narrow).unwrap();
        let got = device.download(&narrow).unwrap();
        for (i, (&v, &g)) in values.iter().zip(&got).enumerate() {
            assert_eq!(g, bf16::from_f32(v).to_bits(), "f32_to_bf16 [{i}] of {v}");
        }
        let mut wide = device.upload(&vec![f32::NAN; values.len()]).unwrap();
        bf16_to_f32(&device, &narrow, &mut wide).unwrap();
        let widened = device.download(&wide).unwrap();
        for (i, (&w, &g)) in widened.iter().zip(&got).enumerate() {
            assert_eq!(w, bf16::from_bits(g).to_f32(), "bf16_to_f32 [{i}]");
        }
    }
}

/// The LoRA rank-r product's rounding: `bf16(s·x)` for the first `count` elements of longer buffers,
/// the rest of the output untouched; too short a buffer is an error naming it.
#[test]
fn scaled_conversion_rounds_the_scaled_prefix_only() {
    let mut rng = Rng::new(2);
    let values: Vec<f32> = (0..1000)
        .map(|_| rng.uniform_range(-3.0, 3.0) as f32)
        .collect();
    let (count, scale) = (777, 1.7f32);
    for device in devices() {
        let input = device.upload(&values).unwrap();
        let mut narrow = device.upload(&vec![BF16_NAN; values.len()]).unwrap();
        scaled_f32_to_bf16(&device, &input, scale, &mut narrow, count).unwrap();
        let got = device.download(&narrow).unwrap();
        for (i, (&v, &g)) in values.iter().zip(&got).enumerate() {
            let expected = if i < count {
                bf16::from_f32(scale * v).to_bits()
            } else {
                BF16_NAN
            };
            assert_eq!(g, expected, "{} [{i}] of {v}", device.name());
        }
        let mut short = device.upload(&[0u16; 10]).unwrap();
        let error = scaled_f32_to_bf16(&device, &input, scale, &mut short, 11).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("output") && message.contains("at least 11"),
            "{message}"
        );
    }
}

#[test]
fn swiglu_forward_and_backward_match_reference() {
    let n = 1000;
    let mut rng = Rng::new(2);
    let gate = random_bf16(&mut rng, n, 4.0);
    let up = random_bf16(&mut rng, n, 2.0);
    let dout = random_bf16(&mut rng, n, 1.0);
    let dgate0 = random_bf16(&mut rng, n, 1.0);
    let dup0 = random_bf16(&mut rng, n, 1.0);
    let mut out_ref = vec![0.0; n];
    swiglu::swiglu_forward(&mut out_ref, &gate, &up);
    let (mut dgate_ref, mut dup_ref) = (dgate0.clone(), dup0.clone());
    swiglu::swiglu_backward(&mut dgate_ref, &mut dup_ref, &dout, &gate, &up, true);

    for device in devices() {
        let gate_d = device.upload(&to_bits(&gate)).unwrap();
        let up_d = device.upload(&to_bits(&up)).unwrap();
        let dout_d = device.upload(&to_bits(&dout)).unwrap();
        let mut out = device.upload(&vec![BF16_NAN; n]).unwrap();
        swiglu_forward(&device, &mut out, &gate_d, &up_d).unwrap();
        let got = from_bits(&device.download(&out).unwrap());
        assert_close("swiglu out", &got, &out_ref, BF16_BAND);

        let mut dgate = device.upload(&to_bits(&dgate0)).unwrap();
        let mut dup = device.upload(&to_bits(&dup0)).unwrap();
        swiglu_backward(&device, &mut dgate, &mut dup, &dout_d, &gate_d, &up_d).unwrap();
        let got = from_bits(&device.download(&dgate).unwrap());
        assert_close("swiglu dgate", &got, &dgate_ref, BF16_BAND);
        let got = from_bits(&device.download(&dup).unwrap());
        assert_close("swiglu dup", &got, &dup_ref, BF16_BAND);
    }
}

#[test]
fn rope_with_interpolation_matches_reference_forward_and_backward() {
    let (rows, heads, head_dim, max_positions, factor) = (7, 3, 10, 50, 4.0);
    let mut rng = Rng::new(3);
    let positions: Vec<u32> = (0..rows).map(|_| rng.below(max_positions) as u32).collect();
    let x = random_bf16(&mut rng, rows * heads * head_dim, 1.0);
    let table_ref = RopeTable::<f64>::new(max_positions, head_dim, 10000.0, factor);
    let mut rotated_ref = x.clone();
    rope::rope_forward(&mut rotated_ref, &table_ref, &positions, heads);
    let mut back_ref = x.clone();
    rope::rope_backward(&mut back_ref, &table_ref, &positions, heads);

    for device in devices() {
        let table =
            DeviceRopeTable::new(&device, max_positions, head_dim, 10000.0, factor).unwrap();
        let positions_d = device.upload(&positions).unwrap();
        let mut xd = device.upload(&to_bits(&x)).unwrap();
        rope_forward(&device, &mut xd, &table, &positions_d, heads).unwrap();
        let got = from_bits(&device.download(&xd).unwrap());
        assert_close("rope forward", &got, &rotated_ref, BF16_BAND);

        let mut dx = device.upload(&to_bits(&x)).unwrap();
        rope_backward(&device, &mut dx, &table, &positions_d, heads).unwrap();
        let got = from_bits(&device.download(&dx).unwrap());
        assert_close("rope backward", &got, &back_ref, BF16_BAND);
    }
}

#[test]
fn embedding_gathers_rows_and_scatter_adds_repeated_tokens() {
    let (vocab, dim) = (13, 37);
    let mut rng = Rng::new(4);
    let tokens: Vec<u32> = vec![3, 0, 12, 3, 7, 3, 12];
    let table = random_bf16(&mut rng, vocab * dim, 1.0);
    let dout = random_bf16(&mut rng, tokens.len() * dim, 1.0);
    let dtable0: Vec<f64> = to_f32(&random_bf16(&mut rng, vocab * dim, 1.0))
        .iter()
        .map(|&v| v as f64)
        .collect();
    let mut out_ref = vec![0.0; tokens.len() * dim];
    embedding::embedding_forward(&mut out_ref, &tokens, &table, dim);
    let mut dtable_ref = dtable0.clone();
    embedding::embedding_backward(&mut dtable_ref, &dout, &tokens, dim);

    for device in devices() {
        let tokens_d = device.upload(&tokens).unwrap();
        let table_d = device.upload(&to_bits(&table)).unwrap();
        let mut out = device.upload(&vec![BF16_NAN; out_ref.len()]).unwrap();
        embedding_forward(&device, &mut out, &tokens_d, &table_d, dim).unwrap();
        let got = from_bits(&device.download(&out).unwrap());
        assert_close("embedding out", &got, &out_ref, 0.0);

        let dout_d = device.upload(&to_bits(&dout)).unwrap();
        let mut dtable = device.upload(&to_f32(&dtable0)).unwrap();
        embedding_backward(&device, &mut dtable, &dout_d, &tokens_d, dim).unwrap();
        let got = from_f32(&device.download(&dtable).unwrap());
        assert_close("embedding dtable", &got, &dtable_ref, F32_BAND);
    }
}

#[test]
fn rmsnorm_matches_reference_forward_and_backward() {
    // 19 rows: three blocks of the backward, each summing dweight over several rows.
    for (rows, dim) in [(5, 37), (19, 300)] {
        for device in devices() {
            check_rmsnorm(&device, rows, dim);
        }
    }
}

/// The backward's 128 B of static shared memory (block_sum) plus dim·4 B of dynamic cross 48 KB from
/// dim 12257 on: the launch must opt in although the dynamic part alone is at most 48 KB up to 12288.
#[test]
fn rmsnorm_backward_opts_in_when_static_plus_dynamic_shared_memory_exceed_48_kb() {
    for dim in [12257, 12288] {
        for device in devices() {
            check_rmsnorm(&device, 3, dim);
        }
    }
}

/// What the launch layer did before the fix (no opt-in while the dynamic part fits in 48 KB) is
/// refused by the emulator, as by a GPU; 48 KB exactly needs no opt-in.
#[test]
fn emulator_refuses_rmsnorm_backward_without_the_opt_in_as_a_gpu_does() {
    let device = Device::emulator();
    let error =
        without_shared_memory_opt_in(|| rmsnorm_backward_at(&device, 2, 12288)).unwrap_err();
    match &error {
        KernelError::Emulator { kernel, message } => {
            assert_eq!(*kernel, "rmsnorm_backward_kernel");
            assert!(message.contains("without opting in"), "{message}");
        }
        other => panic!("expected the emulator to refuse the launch, got {other:?}"),
    }
    without_shared_memory_opt_in(|| rmsnorm_backward_at(&device, 2, 12256)).unwrap();
}

/// 180 KB of shared memory: more than an A100's block may have, less than an H100's.
#[test]
fn rmsnorm_backward_beyond_an_a100_block_runs_only_on_the_h100_emulator() {
    let dim = 45_000;
    let error = rmsnorm_backward_at(&Device::emulator(), 2, dim).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("rmsnorm_backward_kernel: invalid shared memory"),
        "{error}"
    );
    check_rmsnorm(&Device::emulator_for(GpuTarget::Sm90), 2, dim);
}

/// Runs the backward on `rows` rows of width `dim` (inputs of no interest) and returns its result.
fn rmsnorm_backward_at(device: &Device, rows: usize, dim: usize) -> Result<(), KernelError> {
    let bits = device.upload(&vec![0x3f80u16; rows * dim])?;
    let weight = device.upload(&vec![1.0f32; dim])?;
    let rstd = device.upload(&vec![1.0f32; rows])?;
    let mut dx = device.upload(&vec![0u16; rows * dim])?;
    let mut dweight = device.upload(&vec![0.0f32; dim])?;
    let dweight = Some(&mut dweight);
    rmsnorm_backward(device, &mut dx, dweight, &bits, &bits, &weight, &rstd, dim)
}

/// RMSNorm forward and backward on `device` against the f64 reference, outputs poisoned, gradients
/// accumulated onto random values.
fn check_rmsnorm(device: &Device, rows: usize, dim: usize) {
    let mut rng = Rng::new(5 + dim as u64);
    let x = random_bf16(&mut rng, rows * dim, 2.0);
    // f32 weights, as the kernels take them: not bf16 values.
    let weight: Vec<f64> = from_f32(&to_f32(&random_vec(&mut rng, dim, 1.5)));
    let dout = random_bf16(&mut rng, rows * dim, 1.0);
    let dx0 = random_bf16(&mut rng, rows * dim, 1.0);
    let dweight0 = random_bf16(&mut rng, dim, 1.0);
    let eps = 1e-5;
    let (mut out_ref, mut rstd_ref) = (vec![0.0; rows * dim], vec![0.0; rows]);
    rmsnorm::rmsnorm_forward(&mut out_ref, &mut rstd_ref, &x, &weight, dim, eps);
    let (mut dx_ref, mut dweight_ref) = (dx0.clone(), dweight0.clone());
    rmsnorm::rmsnorm_backward(
        &mut dx_ref,
        Some(&mut dweight_ref),
        &dout,
        &x,
        &weight,
        &rstd_ref,
        dim,
    );

    let what = format!("rows {rows} dim {dim} on {}", device.name());
    let x_d = device.upload(&to_bits(&x)).unwrap();
    let w_d = device.upload(&to_f32(&weight)).unwrap();
    let mut out = device.upload(&vec![BF16_NAN; rows * dim]).unwrap();
    let mut rstd = device.upload(&vec![f32::NAN; rows]).unwrap();
    rmsnorm_forward(device, &mut out, &mut rstd, &x_d, &w_d, dim, eps as f32).unwrap();
    let got = from_bits(&device.download(&out).unwrap());
    assert_close(&format!("rmsnorm out, {what}"), &got, &out_ref, BF16_BAND);
    let got = from_f32(&device.download(&rstd).unwrap());
    assert_close(&format!("rmsnorm rstd, {what}"), &got, &rstd_ref, F32_BAND);

    let dout_d = device.upload(&to_bits(&dout)).unwrap();
    let mut dx = device.upload(&to_bits(&dx0)).unwrap();
    let mut dweight = device.upload(&to_f32(&dweight0)).unwrap();
    rmsnorm_backward(
        device,
        &mut dx,
        Some(&mut dweight),
        &dout_d,
        &x_d,
        &w_d,
        &rstd,
        dim,
    )
    .unwrap();
    let got = from_bits(&device.download(&dx).unwrap());
    assert_close(&format!("rmsnorm dx, {what}"), &got, &dx_ref, BF16_BAND);
    let got = from_f32(&device.download(&dweight).unwrap());
    assert_close(
        &format!("rmsnorm dweight, {what}"),
        &got,
        &dweight_ref,
        F32_BAND,
    );
}

#[test]
fn cross_entropy_with_ignored_rows_matches_reference() {
    let (vocab, dloss) = (301, 0.25);
    let targets: Vec<i32> = vec![5, IGNORE_INDEX, 300, 0, IGNORE_INDEX, 17];
    let rows = targets.len();
    let mut rng = Rng::new(6);
    let logits = random_bf16(&mut rng, rows * vocab, 8.0);
    let dlogits0 = random_bf16(&mut rng, rows * vocab, 0.01);
    let mut lse_ref = vec![0.0; rows];
    let total_ref = cross_entropy::cross_entropy_forward(&mut lse_ref, &logits, &targets, vocab);
    let loss_ref: Vec<f64> = (0..rows)
        .map(|r| match targets[r] {
            IGNORE_INDEX => 0.0,
            t => lse_ref[r] - logits[r * vocab + t as usize],
        })
        .collect();
    let mut dlogits_ref = dlogits0.clone();
    cross_entropy::cross_entropy_backward(
        &mut dlogits_ref,
        &logits,
        &targets,
        &lse_ref,
        vocab,
        dloss,
    );

    for device in devices() {
        let logits_d = device.upload(&to_bits(&logits)).unwrap();
        let targets_d = device.upload(&targets).unwrap();
        let mut lse = device.upload(&vec![f32::NAN; rows]).unwrap();
        let mut loss = device.upload(&vec![f32::NAN; rows]).unwrap();
        cross_entropy_forward(&device, &mut lse, &mut loss, &logits_d, &targets_d, vocab).unwrap();
        let got = from_f32(&device.download(&lse).unwrap());
        assert_close("cross-entropy lse", &got, &lse_ref, F32_BAND);
        let got = from_f32(&device.download(&loss).unwrap());
        assert_close("cross-entropy loss", &got, &loss_ref, F32_BAND);
        let total: f64 = got.iter().sum();
        assert!(
            (total - total_ref).abs() <= 1e-4 * total_ref.abs(),
            "total loss {total} vs {total_ref}"
        );

        let mut dlogits = device.upload(&to_bits(&dlogits0)).unwrap();
        cross_entropy_backward(
            &device,
            &mut dlogits,
            &logits_d,
            &targets_d,
            &lse,
            vocab,
            dloss as f32,
        )
        .unwrap();
        let got = from_bits(&device.download(&dlogits).unwrap());
        assert_close("cross-entropy dlogits", &got, &dlogits_ref, BF16_BAND);
    }
}

/// Norm weights near 1 trained by small steps: bf16 would read every weight here as exactly 1 (its
/// spacing above 1 is 2^-7), shrinking the output by their mean offset, ~1.5e-3. Rounding the
/// output to bf16 is unbiased, so the mean signed error over many elements sees the weight's
/// precision.
#[test]
fn rmsnorm_reads_weights_below_bf16_spacing() {
    let (rows, dim) = (24, 256);
    let mut rng = Rng::new(31);
    let x = random_bf16(&mut rng, rows * dim, 2.0);
    let weight: Vec<f64> = (0..dim)
        .map(|_| 1.0 + rng.uniform_range(0.0, 3e-3) as f32 as f64)
        .collect();
    let (mut out_ref, mut rstd_ref) = (vec![0.0; rows * dim], vec![0.0; rows]);
    rmsnorm::rmsnorm_forward(&mut out_ref, &mut rstd_ref, &x, &weight, dim, 1e-5);
    for device in devices() {
        let x_d = device.upload(&to_bits(&x)).unwrap();
        let w_d = device.upload(&to_f32(&weight)).unwrap();
        let mut out = device.upload(&vec![BF16_NAN; rows * dim]).unwrap();
        let mut rstd = device.upload(&vec![f32::NAN; rows]).unwrap();
        rmsnorm_forward(&device, &mut out, &mut rstd, &x_d, &w_d, dim, 1e-5).unwrap();
        let got = from_bits(&device.download(&out).unwrap());
        let signed: f64 = got.iter().zip(&out_ref).map(|(g, r)| (g - r) * r).sum();
        let bias = signed / out_ref.iter().map(|r| r * r).sum::<f64>();
        assert!(
            bias.abs() < 2e-4,
            "{}: rmsnorm output biased by {bias:.2e} relative: the weight lost precision",
            device.name()
        );
    }
}

#[test]
fn row_kernels_reject_mismatched_tensors_naming_them() {
    let device = Device::emulator();
    let bits = |n: usize| device.upload(&vec![0u16; n]).unwrap();
    let (x, weight) = (bits(12), device.upload(&[0f32; 5]).unwrap());
    let (mut out, mut rstd) = (bits(12), device.upload(&[0f32; 3]).unwrap());
    let err = rmsnorm_forward(&device, &mut out, &mut rstd, &x, &weight, 4, 1e-5).unwrap_err();
    assert!(err.to_string().contains("weight:"), "{err}");

    let targets = device.upload(&[0i32, 1]).unwrap();
    let logits = bits(2 * 7);
    let (mut lse, mut loss) = (
        device.upload(&[0f32; 2]).unwrap(),
        device.upload(&[0f32; 3]).unwrap(),
    );
    let err =
        cross_entropy_forward(&device, &mut lse, &mut loss, &logits, &targets, 7).unwrap_err();
    assert!(err.to_string().contains("loss:"), "{err}");
}
