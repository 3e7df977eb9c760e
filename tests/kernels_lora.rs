//! The fused LoRA linear kernels (cuda/lora_linear.cu) against the f64 reference
//! (`longlora::ops::linear`), through the emulator and, when one is present, on a GPU: random bf16
//! operands, outputs poisoned with NaN, shapes that are not multiples of the 128 x 128 x 32 tiles (nor,
//! for some, of the 8 elements that keep rows 16-byte aligned), and LoRA ranks 0 (the plain GEMM), 1,
//! 8, 16 and 64. The same checks hold the training step's GEMM path (`kernels::linear_*`) to the
//! reference: cuBLAS on a GPU, its host stand-in in the emulator.

mod common;

use std::rc::Rc;

use common::device::{
    devices, from_bits, from_f32, gpu, random_bf16, to_bits, to_f32, BF16_BAND, BF16_NAN, F32_BAND,
};
use common::{assert_close, random_vec};
use longlora::kernels::params::{LORA_BLOCK_COLS, LORA_BLOCK_REDUCE, LORA_BLOCK_ROWS};
use longlora::kernels::{
    self, lora_linear_backward, lora_linear_forward, lora_linear_forward_accumulate,
    lora_linear_forward_x_tile_loads, record_launches, Buffer, Device, LinearScratch, LinearShape,
    LoraAdapter, LoraBackward,
};
use longlora::model::{Linear, Lora, Param};
use longlora::ops::linear::{linear_backward, linear_forward};
use longlora::rng::Rng;

fn param(name: &str, shape: Vec<usize>, data: Vec<f64>) -> Param<f64> {
    Param {
        name: name.to_string(),
        shape,
        data,
    }
}

/// A layer with random bf16 weights and, for rank > 0, an adapter with alpha = 2·rank (s = 2) whose
/// B is random (not PEFT's zeros, which would test nothing).
fn random_layer(rng: &mut Rng, shape: LinearShape, rank: usize) -> Linear<Param<f64>> {
    let (n_in, n_out) = (shape.in_features, shape.out_features);
    let w_scale = 1.0 / (n_in as f64).sqrt();
    Linear {
        weight: param(
            "weight",
            vec![n_out, n_in],
            random_bf16(rng, n_out * n_in, w_scale),
        ),
        lora: (rank > 0).then(|| Lora {
            a: param(
                "lora_A",
                vec![rank, n_in],
                random_bf16(rng, rank * n_in, w_scale),
            ),
            b: param(
                "lora_B",
                vec![n_out, rank],
                random_bf16(rng, n_out * rank, 1.0 / (rank as f64).sqrt()),
            ),
            rank,
            alpha: 2.0 * rank as f64,
        }),
    }
}

/// Partial tiles everywhere. The first two have output rows of odd length (53, 90: dY is padded for
/// the backward), the third splits the dA, dB reductions into 4 row slices and has fewer features than
/// one tile, the last spans 2 x 2 blocks and 7 reduction slices (more than the pipeline's 4 stages).
const SHAPES: [LinearShape; 4] = [
    LinearShape {
        rows: 37,
        in_features: 72,
        out_features: 53,
    },
    LinearShape {
        rows: 70,
        in_features: 40,
        out_features: 90,
    },
    LinearShape {
        rows: 200,
        in_features: 24,
        out_features: 16,
    },
    LinearShape {
        rows: 150,
        in_features: 200,
        out_features: 136,
    },
];

const RANKS: [usize; 5] = [0, 1, 8, 16, 64];

/// The layer's weights on `device`, and its adapter's.
struct DeviceLayer {
    weight: Buffer<u16>,
    lora: Option<(Buffer<u16>, Buffer<u16>, usize, f32)>,
}

impl DeviceLayer {
    fn new(device: &Device, layer: &Linear<Param<f64>>) -> DeviceLayer {
        DeviceLayer {
            weight: device.upload(&to_bits(&layer.weight.data)).unwrap(),
            lora: layer.lora.as_ref().map(|l| {
                (
                    device.upload(&to_bits(&l.a.data)).unwrap(),
                    device.upload(&to_bits(&l.b.data)).unwrap(),
                    l.rank,
                    l.scale::<f32>(),
                )
            }),
        }
    }

    fn adapter(&self) -> Option<LoraAdapter<'_>> {
        self.lora.as_ref().map(|(a, b, rank, scale)| LoraAdapter {
            a,
            b,
            rank: *rank,
            scale: *scale,
        })
    }
}

/// Which function runs a layer: our fused kernel (`lora_linear_*`), or the training step's
/// `kernels::linear_*`, whose GEMMs cuBLAS runs on a GPU and its host stand-in in the emulator, around
/// our rounding kernel.
#[derive(Clone, Copy, Debug)]
enum Path {
    Fused,
    Layer,
}

/// Every device, each with both paths.
fn devices_and_paths() -> Vec<(Rc<Device>, Path)> {
    let devices = devices().into_iter().map(Rc::new);
    devices
        .flat_map(|device| [(Rc::clone(&device), Path::Layer), (device, Path::Fused)])
        .collect()
}

impl Path {
    /// `y = x·Wᵀ + …`, or `y += …` with `accumulate`.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        self,
        device: &Device,
        shape: LinearShape,
        x: &Buffer<u16>,
        weight: &Buffer<u16>,
        lora: Option<(LoraAdapter, &mut Buffer<f32>)>,
        y: &mut Buffer<u16>,
        accumulate: bool,
        scratch: &mut LinearScratch,
    ) {
        match (self, accumulate) {
            (Path::Layer, _) => {
                kernels::linear_forward(device, shape, x, weight, lora, y, accumulate, scratch)
            }
            (Path::Fused, false) => lora_linear_forward(device, shape, x, weight, lora, y, scratch),
            (Path::Fused, true) => {
                lora_linear_forward_accumulate(device, shape, x, weight, lora, y, scratch)
            }
        }
        .unwrap()
    }

    /// `dx += dY·W + …` and the adapter's gradients.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        self,
        device: &Device,
        shape: LinearShape,
        dy: &Buffer<u16>,
        x: &Buffer<u16>,
        weight: &Buffer<u16>,
        lora: Option<LoraBackward>,
        dx: &mut Buffer<u16>,
        scratch: &mut LinearScratch,
    ) {
        match self {
            Path::Layer => {
                kernels::linear_backward(device, shape, dy, x, weight, lora, dx, scratch)
            }
            Path::Fused => lora_linear_backward(device, shape, dy, x, weight, lora, dx, scratch),
        }
        .unwrap()
    }
}

#[test]
fn lora_linear_forward_matches_reference_for_ranks_0_1_8_16_64() {
    for (device, path) in devices_and_paths() {
        let mut scratch = LinearScratch::default();
        for (case, &shape) in SHAPES.iter().enumerate() {
            for rank in RANKS {
                let mut rng = Rng::new(100 + case as u64 * 10 + rank as u64);
                let layer = random_layer(&mut rng, shape, rank);
                let x = random_bf16(&mut rng, shape.rows * shape.in_features, 1.0);
                let mut y_ref = vec![0.0; shape.rows * shape.out_features];
                let mut xa_ref = vec![0.0; shape.rows * rank];
                linear_forward(&mut y_ref, &mut xa_ref, &x, &layer, shape.rows, false);

                let on = DeviceLayer::new(&device, &layer);
                let x_dev = device.upload(&to_bits(&x)).unwrap();
                let mut y = device.upload(&vec![BF16_NAN; y_ref.len()]).unwrap();
                let mut xa = device.upload(&vec![f32::NAN; xa_ref.len()]).unwrap();
                let lora = on.adapter().map(|adapter| (adapter, &mut xa));
                path.forward(
                    &device,
                    shape,
                    &x_dev,
                    &on.weight,
                    lora,
                    &mut y,
                    false,
                    &mut scratch,
                );

                let what = format!("{} {path:?} {shape:?} rank {rank}", device.name());
                let y_got = from_bits(&device.download(&y).unwrap());
                assert_close(&format!("y, {what}"), &y_got, &y_ref, BF16_BAND);
                if rank > 0 {
                    let xa_got = from_f32(&device.download(&xa).unwrap());
                    assert_close(&format!("xa, {what}"), &xa_got, &xa_ref, F32_BAND);
                }
            }
        }
    }
}

/// The residual form `y = r + x·Wᵀ + s·(x·Aᵀ)·Bᵀ`: the kernel adds to what `y` holds.
#[test]
fn lora_linear_forward_accumulate_adds_to_the_output() {
    for (device, path) in devices_and_paths() {
        for rank in [0, 8] {
            let shape = SHAPES[0];
            let mut rng = Rng::new(300 + rank as u64);
            let layer = random_layer(&mut rng, shape, rank);
            let x = random_bf16(&mut rng, shape.rows * shape.in_features, 1.0);
            let residual = random_bf16(&mut rng, shape.rows * shape.out_features, 1.0);
            let mut y_ref = vec![0.0; residual.len()];
            let mut xa_ref = vec![0.0; shape.rows * rank];
            linear_forward(&mut y_ref, &mut xa_ref, &x, &layer, shape.rows, false);
            y_ref.iter_mut().zip(&residual).for_each(|(y, r)| *y += r);

            let on = DeviceLayer::new(&device, &layer);
            let x_dev = device.upload(&to_bits(&x)).unwrap();
            let mut y = device.upload(&to_bits(&residual)).unwrap();
            let mut xa = device.upload(&vec![f32::NAN; xa_ref.len()]).unwrap();
            let lora = on.adapter().map(|adapter| (adapter, &mut xa));
            let mut scratch = LinearScratch::default();
            path.forward(
                &device,
                shape,
                &x_dev,
                &on.weight,
                lora,
                &mut y,
                true,
                &mut scratch,
            );
            let y_got = from_bits(&device.download(&y).unwrap());
            let what = format!("y = r + linear, {} {path:?} rank {rank}", device.name());
            assert_close(&what, &y_got, &y_ref, BF16_BAND);
        }
    }
}

/// The device-side buffer operations the model's workspace relies on.
#[test]
fn device_buffers_write_copy_and_zero_in_place() {
    for device in devices() {
        let mut a = device.upload(&[1.0f32, 2.0, 3.0]).unwrap();
        let mut b = device.zeros::<f32>(3).unwrap();
        device.write(&mut a, &[4.0, 5.0, 6.0]).unwrap();
        device.copy(&a, &mut b).unwrap();
        device.fill_zeros(&mut a).unwrap();
        assert_eq!(device.download(&a).unwrap(), [0.0; 3], "{}", device.name());
        assert_eq!(
            device.download(&b).unwrap(),
            [4.0, 5.0, 6.0],
            "{}",
            device.name()
        );
        let short = device.zeros::<f32>(2).unwrap();
        let err = device.copy(&short, &mut b).unwrap_err().to_string();
        assert!(err.contains("destination") && err.contains('2'), "{err}");
        let err = device.write(&mut b, &[1.0]).unwrap_err().to_string();
        assert!(err.contains("write") && err.contains("3 elements"), "{err}");
    }
}

#[test]
fn lora_linear_backward_matches_reference_for_ranks_0_1_8_16_64() {
    for (device, path) in devices_and_paths() {
        let mut scratch = LinearScratch::default();
        for (case, &shape) in SHAPES.iter().enumerate() {
            for rank in RANKS {
                let mut rng = Rng::new(200 + case as u64 * 10 + rank as u64);
                let layer = random_layer(&mut rng, shape, rank);
                let (rows, n_in, n_out) = (shape.rows, shape.in_features, shape.out_features);
                let x = random_bf16(&mut rng, rows * n_in, 1.0);
                let dy = random_bf16(&mut rng, rows * n_out, 1.0);
                let mut y = vec![0.0; rows * n_out];
                let mut xa = vec![0.0; rows * rank];
                linear_forward(&mut y, &mut xa, &x, &layer, rows, false);
                // Gradients accumulate: start them at random values, not zeros.
                let dx0 = random_bf16(&mut rng, rows * n_in, 1.0);
                let grad_a0 = random_vec(&mut rng, rank * n_in, 1.0);
                let grad_b0 = random_vec(&mut rng, n_out * rank, 1.0);
                let mut dx_ref = dx0.clone();
                let mut grad_ref = Linear {
                    weight: None,
                    lora: layer.lora.as_ref().map(|l| Lora {
                        a: Some(param("lora_A", vec![rank, n_in], grad_a0.clone())),
                        b: Some(param("lora_B", vec![n_out, rank], grad_b0.clone())),
                        rank,
                        alpha: l.alpha,
                    }),
                };
                linear_backward(
                    Some(&mut dx_ref),
                    &mut grad_ref,
                    &dy,
                    &x,
                    &layer,
                    &xa,
                    rows,
                    true,
                );

                let on = DeviceLayer::new(&device, &layer);
                let x_dev = device.upload(&to_bits(&x)).unwrap();
                let dy_dev = device.upload(&to_bits(&dy)).unwrap();
                let xa_dev = device.upload(&to_f32(&xa)).unwrap();
                let mut grad_a = device.upload(&to_f32(&grad_a0)).unwrap();
                let mut grad_b = device.upload(&to_f32(&grad_b0)).unwrap();
                let mut dx = device.upload(&to_bits(&dx0)).unwrap();
                let lora = on.adapter().map(|adapter| LoraBackward {
                    adapter,
                    xa: &xa_dev,
                    grad_a: &mut grad_a,
                    grad_b: &mut grad_b,
                });
                path.backward(
                    &device,
                    shape,
                    &dy_dev,
                    &x_dev,
                    &on.weight,
                    lora,
                    &mut dx,
                    &mut scratch,
                );

                let what = format!("{} {path:?} {shape:?} rank {rank}", device.name());
                let dx_got = from_bits(&device.download(&dx).unwrap());
                assert_close(&format!("dx, {what}"), &dx_got, &dx_ref, BF16_BAND);
                if let Some(Lora {
                    a: Some(ga),
                    b: Some(gb),
                    ..
                }) = &grad_ref.lora
                {
                    let a_got = from_f32(&device.download(&grad_a).unwrap());
                    assert_close(&format!("grad A, {what}"), &a_got, &ga.data, BF16_BAND);
                    let b_got = from_f32(&device.download(&grad_b).unwrap());
                    assert_close(&format!("grad B, {what}"), &b_got, &gb.data, BF16_BAND);
                }
            }
        }
    }
}

#[test]
fn fused_lora_forward_reads_each_x_tile_once_unlike_two_products() {
    for device in devices() {
        assert_fused_forward_reads_x_once(&device);
    }
}

/// A random layer of `rank` on `device` with a random x, and zeroed y and xa for its forward.
struct ForwardCase {
    on: DeviceLayer,
    x: Buffer<u16>,
    y: Buffer<u16>,
    xa: Buffer<f32>,
}

fn forward_case(device: &Device, shape: LinearShape, rank: usize, seed: u64) -> ForwardCase {
    let mut rng = Rng::new(seed);
    let layer = random_layer(&mut rng, shape, rank);
    let x = random_bf16(&mut rng, shape.rows * shape.in_features, 1.0);
    ForwardCase {
        on: DeviceLayer::new(device, &layer),
        x: device.upload(&to_bits(&x)).unwrap(),
        y: device.zeros(shape.rows * shape.out_features).unwrap(),
        xa: device.zeros(shape.rows * rank).unwrap(),
    }
}

fn assert_fused_forward_reads_x_once(device: &Device) {
    let shape = SHAPES[3];
    let rank = 8;
    let ForwardCase {
        on,
        x,
        mut y,
        mut xa,
    } = forward_case(device, shape, rank, 300);
    let mut scratch = LinearScratch::default();

    let adapter = on.adapter().unwrap();
    let lora = Some((adapter, &mut xa));
    let fused =
        lora_linear_forward_x_tile_loads(device, shape, &x, &on.weight, lora, &mut y, &mut scratch)
            .unwrap();
    let base =
        lora_linear_forward_x_tile_loads(device, shape, &x, &on.weight, None, &mut y, &mut scratch)
            .unwrap();
    // The unfused adapter product x·Aᵀ: a plain product with A as the weight.
    let down_shape = LinearShape {
        out_features: rank,
        ..shape
    };
    let mut xa_bits = device.upload(&vec![0u16; shape.rows * rank]).unwrap();
    let down = lora_linear_forward_x_tile_loads(
        device,
        down_shape,
        &x,
        adapter.a,
        None,
        &mut xa_bits,
        &mut scratch,
    )
    .unwrap();

    // Every block reads each reduction slice of its x rows once.
    let slices = shape.in_features.div_ceil(LORA_BLOCK_REDUCE as usize) as u32;
    let blocks = |cols: usize| {
        let rows = shape.rows.div_ceil(LORA_BLOCK_ROWS as usize);
        (rows * cols.div_ceil(LORA_BLOCK_COLS as usize)) as u32
    };
    assert_eq!(
        base,
        blocks(shape.out_features) * slices,
        "x tile loads of x·Wᵀ"
    );
    assert_eq!(
        down,
        blocks(rank) * slices,
        "x tile loads of x·Aᵀ (one column of blocks)"
    );
    assert_eq!(
        fused, base,
        "the fused forward must load x exactly as often as x·Wᵀ alone"
    );
    assert!(fused < base + down);
}

#[test]
fn lora_linear_rejects_bad_shapes_naming_the_tensor() {
    let device = Device::emulator();
    let shape = SHAPES[0];
    let x = device.upload(&[0u16; 3]).unwrap();
    let weight = device
        .upload(&vec![0u16; shape.in_features * shape.out_features])
        .unwrap();
    let mut y = device
        .upload(&vec![0u16; shape.rows * shape.out_features])
        .unwrap();
    let mut scratch = LinearScratch::default();
    let err =
        lora_linear_forward(&device, shape, &x, &weight, None, &mut y, &mut scratch).unwrap_err();
    assert!(err.to_string().contains("x:"), "{err}");

    let x = device
        .upload(&vec![0u16; shape.rows * shape.in_features])
        .unwrap();
    let a = device.upload(&vec![0u16; 65 * shape.in_features]).unwrap();
    let b = device.upload(&vec![0u16; 65 * shape.out_features]).unwrap();
    let mut xa = device.upload(&vec![0f32; 65 * shape.rows]).unwrap();
    let adapter = LoraAdapter {
        a: &a,
        b: &b,
        rank: 65,
        scale: 1.0,
    };
    let err = lora_linear_forward(
        &device,
        shape,
        &x,
        &weight,
        Some((adapter, &mut xa)),
        &mut y,
        &mut scratch,
    )
    .unwrap_err();
    assert!(err.to_string().contains("lora rank"), "{err}");
}

#[test]
fn lora_backward_rejects_a_wrong_gradient_naming_it() {
    let device = Device::emulator();
    let shape = SHAPES[0];
    let (rows, n_in, n_out) = (shape.rows, shape.in_features, shape.out_features);
    let zeros = |n: usize| device.upload(&vec![0u16; n]).unwrap();
    let (dy, x, weight) = (zeros(rows * n_out), zeros(rows * n_in), zeros(n_out * n_in));
    let mut dx = zeros(rows * n_in + 1);
    let mut scratch = LinearScratch::default();
    let err = lora_linear_backward(
        &device,
        shape,
        &dy,
        &x,
        &weight,
        None,
        &mut dx,
        &mut scratch,
    )
    .unwrap_err();
    assert!(err.to_string().contains("dx:"), "{err}");
}

/// Operands whose rows are a multiple of 8 elements are read in place; only the others (here B at rank
/// 4: rows of 4 elements) are copied with padded rows, into scratch that the next call reuses.
#[test]
fn lora_linear_pads_only_operands_whose_rows_are_not_16_byte_aligned() {
    let device = Device::emulator();
    let shape = SHAPES[3];
    let mut scratch = LinearScratch::default();
    let pads = |rank: usize, scratch: &mut LinearScratch| {
        let ForwardCase {
            on,
            x,
            mut y,
            mut xa,
        } = forward_case(&device, shape, rank, 7 + rank as u64);
        let lora = on.adapter().map(|adapter| (adapter, &mut xa));
        let (result, launches) = record_launches(|| {
            lora_linear_forward(&device, shape, &x, &on.weight, lora, &mut y, scratch)
        });
        result.unwrap();
        launches
            .iter()
            .filter(|l| l.kernel == "pad_rows_kernel")
            .count()
    };
    assert_eq!(pads(8, &mut scratch), 0, "rank 8: every row aligned");
    assert_eq!(pads(4, &mut scratch), 1, "rank 4: B padded");
    assert_eq!(pads(0, &mut scratch), 0, "no adapter");
}

/// The plain products as a GPU runs them (cuBLAS, through linear_forward / linear_backward) against
/// our kernel at rank 0 and the f64 reference, overwriting and accumulating.
#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_cublas_plain_products_match_our_kernel_and_the_reference() {
    let device = gpu();
    let mut scratch = LinearScratch::default();
    for (case, &shape) in SHAPES.iter().enumerate() {
        let (rows, n_in, n_out) = (shape.rows, shape.in_features, shape.out_features);
        let mut rng = Rng::new(400 + case as u64);
        let layer = random_layer(&mut rng, shape, 0);
        let x = random_bf16(&mut rng, rows * n_in, 1.0);
        let dy = random_bf16(&mut rng, rows * n_out, 1.0);
        let y0 = random_bf16(&mut rng, rows * n_out, 1.0);
        let dx0 = random_bf16(&mut rng, rows * n_in, 1.0);
        let mut y_ref = vec![0.0; rows * n_out];
        linear_forward(&mut y_ref, &mut [], &x, &layer, rows, false);
        let y_acc_ref: Vec<f64> = y_ref.iter().zip(&y0).map(|(y, r)| y + r).collect();
        let mut dx_ref = dx0.clone();
        let mut grads = Linear {
            weight: None,
            lora: None,
        };
        linear_backward(
            Some(&mut dx_ref),
            &mut grads,
            &dy,
            &x,
            &layer,
            &[],
            rows,
            true,
        );

        let on = DeviceLayer::new(&device, &layer);
        let x_dev = device.upload(&to_bits(&x)).unwrap();
        let dy_dev = device.upload(&to_bits(&dy)).unwrap();
        let mut results = Vec::new();
        for cublas in [true, false] {
            let mut y = device.upload(&vec![BF16_NAN; rows * n_out]).unwrap();
            let mut y_acc = device.upload(&to_bits(&y0)).unwrap();
            let mut dx = device.upload(&to_bits(&dx0)).unwrap();
            let weight = &on.weight;
            if cublas {
                kernels::linear_forward(
                    &device,
                    shape,
                    &x_dev,
                    weight,
                    None,
                    &mut y,
                    false,
                    &mut scratch,
                )
                .unwrap();
                kernels::linear_forward(
                    &device,
                    shape,
                    &x_dev,
                    weight,
                    None,
                    &mut y_acc,
                    true,
                    &mut scratch,
                )
                .unwrap();
                kernels::linear_backward(
                    &device,
                    shape,
                    &dy_dev,
                    &x_dev,
                    weight,
                    None,
                    &mut dx,
                    &mut scratch,
                )
                .unwrap();
            } else {
                lora_linear_forward(&device, shape, &x_dev, weight, None, &mut y, &mut scratch)
                    .unwrap();
                lora_linear_forward_accumulate(
                    &device,
                    shape,
                    &x_dev,
                    weight,
                    None,
                    &mut y_acc,
                    &mut scratch,
                )
                .unwrap();
                lora_linear_backward(
                    &device,
                    shape,
                    &dy_dev,
                    &x_dev,
                    weight,
                    None,
                    &mut dx,
                    &mut scratch,
                )
                .unwrap();
            }
            let what = format!("{shape:?}, {}", if cublas { "cuBLAS" } else { "ours" });
            let got = |buffer: &Buffer<u16>| from_bits(&device.download(buffer).unwrap());
            let (y, y_acc, dx) = (got(&y), got(&y_acc), got(&dx));
            assert_close(&format!("y, {what}"), &y, &y_ref, BF16_BAND);
            assert_close(&format!("y += x·Wᵀ, {what}"), &y_acc, &y_acc_ref, BF16_BAND);
            assert_close(&format!("dx, {what}"), &dx, &dx_ref, BF16_BAND);
            results.push((y, y_acc, dx));
        }
        let (cublas, ours) = (&results[0], &results[1]);
        assert_close(
            &format!("y cuBLAS vs ours, {shape:?}"),
            &cublas.0,
            &ours.0,
            BF16_BAND,
        );
        assert_close(
            &format!("dx cuBLAS vs ours, {shape:?}"),
            &cublas.2,
            &ours.2,
            BF16_BAND,
        );
    }
}
