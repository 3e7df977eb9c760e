//! The device optimizer step (cuda/adamw.cu): global gradient norm, clipping and AdamW over several
//! tensors in one launch each, against `longlora::train::optim` (clip_grad_norm, then AdamW::update), for two
//! steps with weight decay, through the emulator and, when one is present, on a GPU.

mod common;

use common::assert_close;
use common::device::{devices, from_f32, to_f32, BF16_NAN};
use common::random_vec;
use half::bf16;
use longlora::kernels::{adamw_step, clip_coefficient, grad_norm, AdamwTensor};
use longlora::model::Param;
use longlora::rng::Rng;
use longlora::train::optim::{clip_grad_norm, AdamW, AdamWConfig};

/// f32 arithmetic throughout (DESIGN §4: far under the bf16 band).
const F32_BAND: f64 = 1e-5;

#[test]
fn clipped_adamw_over_all_tensors_matches_reference_for_two_steps() {
    let sizes = [7, 300, 1, 1000];
    let config = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let (lr, max_norm) = (1e-2, 1.0);
    let mut rng = Rng::new(7);
    let param0: Vec<Vec<f64>> = sizes
        .iter()
        .map(|&n| {
            to_f32(&random_vec(&mut rng, n, 1.0))
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect();
    // Gradients of global norm well above max_norm, so that clipping acts.
    let grads: Vec<Vec<Vec<f64>>> = (0..2)
        .map(|_| {
            sizes
                .iter()
                .map(|&n| {
                    to_f32(&random_vec(&mut rng, n, 0.5))
                        .iter()
                        .map(|&v| v as f64)
                        .collect()
                })
                .collect()
        })
        .collect();

    let mut ref_params: Vec<Param<f64>> = param0
        .iter()
        .enumerate()
        .map(|(i, data)| Param {
            name: format!("t{i}"),
            shape: vec![data.len()],
            data: data.clone(),
        })
        .collect();
    let mut adamw = AdamW::new(config, &sizes);
    let mut ref_norms = Vec::new();
    for step_grads in &grads {
        let mut g: Vec<Param<f64>> = step_grads
            .iter()
            .map(|data| Param {
                name: "grad".into(),
                shape: vec![data.len()],
                data: data.clone(),
            })
            .collect();
        ref_norms.push(clip_grad_norm(
            &mut g.iter_mut().collect::<Vec<_>>(),
            max_norm,
        ));
        let mut pairs: Vec<_> = ref_params.iter_mut().zip(g.iter()).collect();
        adamw.update(&mut pairs, lr);
    }
    assert!(
        ref_norms.iter().all(|&n| n > 2.0 * max_norm),
        "the test must clip"
    );

    for device in devices() {
        let mut params: Vec<_> = param0
            .iter()
            .map(|p| device.upload(&to_f32(p)).unwrap())
            .collect();
        let zeros = |n: usize| device.upload(&vec![0f32; n]).unwrap();
        let mut ms: Vec<_> = sizes.iter().map(|&n| zeros(n)).collect();
        let mut vs: Vec<_> = sizes.iter().map(|&n| zeros(n)).collect();
        let mut copies: Vec<_> = sizes
            .iter()
            .map(|&n| device.upload(&vec![BF16_NAN; n]).unwrap())
            .collect();
        for (step, step_grads) in grads.iter().enumerate() {
            let g: Vec<_> = step_grads
                .iter()
                .map(|data| device.upload(&to_f32(data)).unwrap())
                .collect();
            let norm = grad_norm(&device, &g.iter().collect::<Vec<_>>()).unwrap();
            let expected = ref_norms[step];
            assert!(
                (norm - expected).abs() <= F32_BAND * expected,
                "grad norm at step {}: got {norm}, expected {expected}",
                step + 1
            );
            let mut tensors: Vec<AdamwTensor> = params
                .iter_mut()
                .zip(&g)
                .zip(ms.iter_mut().zip(vs.iter_mut()))
                .zip(copies.iter_mut())
                .map(|(((param, grad), (m, v)), copy)| AdamwTensor {
                    param,
                    grad,
                    m,
                    v,
                    param_bf16: Some(copy),
                })
                .collect();
            let scale = clip_coefficient(norm, max_norm);
            adamw_step(&device, &mut tensors, &config, step as u64 + 1, lr, scale).unwrap();
        }

        for (i, want) in ref_params.iter().enumerate() {
            let got = from_f32(&device.download(&params[i]).unwrap());
            // Compare the change, which is what AdamW computes, not the much larger weights.
            let delta = |p: &[f64]| {
                p.iter()
                    .zip(&param0[i])
                    .map(|(a, b)| a - b)
                    .collect::<Vec<_>>()
            };
            let what = format!("tensor {i} on {}", device.name());
            assert_close(
                &format!("update of {what}"),
                &delta(&got),
                &delta(&want.data),
                1e-4,
            );
            let m = from_f32(&device.download(&ms[i]).unwrap());
            assert_close(
                &format!("m of {what}"),
                &m,
                &adamw.m[i].iter().map(|&v| v as f64).collect::<Vec<_>>(),
                F32_BAND,
            );
            let v = from_f32(&device.download(&vs[i]).unwrap());
            assert_close(
                &format!("v of {what}"),
                &v,
                &adamw.v[i].iter().map(|&v| v as f64).collect::<Vec<_>>(),
                F32_BAND,
            );
            let copy = device.download(&copies[i]).unwrap();
            let params_f32 = device.download(&params[i]).unwrap();
            for (j, (&c, &p)) in copy.iter().zip(&params_f32).enumerate() {
                assert_eq!(c, bf16::from_f32(p).to_bits(), "bf16 copy of {what} [{j}]");
            }
        }
    }
}
