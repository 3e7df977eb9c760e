//! The optimizer step on the device (cuda/adamw.cu): the global gradient norm over every trainable
//! tensor, and AdamW on the f32 master weights with gradient clipping folded in, each one launch for all
//! tensors through a table of device pointers.

use std::ptr;

use super::params::{AdamwParams, GradSumSquaresParams, OptimTensor};
use super::{invalid, Buffer, Device, LaunchConfig, Result};
use crate::train::optim::AdamWConfig;

kernels! {
    GRAD_SUM_SQUARES = grad_sum_squares_kernel / longlora_emu_grad_sum_squares_kernel(GradSumSquaresParams);
    ADAMW = adamw_kernel / longlora_emu_adamw_kernel(AdamwParams);
}

// SAFETY: plain C structs (params.h) of integers, floats and device pointers: the kernels take the
// params by value and read the tensor table from device memory.
unsafe impl cudarc::driver::DeviceRepr for OptimTensor {}
// SAFETY: null pointers and zero counts are a valid (empty) table entry.
unsafe impl cudarc::driver::ValidAsZeroBits for OptimTensor {}

impl Default for OptimTensor {
    /// An empty entry: null pointers, no elements (what a zeroed device table holds).
    fn default() -> Self {
        OptimTensor {
            param: ptr::null_mut(),
            grad: ptr::null(),
            m: ptr::null_mut(),
            v: ptr::null_mut(),
            param_bf16: ptr::null_mut(),
            count: 0,
        }
    }
}
unsafe impl cudarc::driver::DeviceRepr for GradSumSquaresParams {}
unsafe impl cudarc::driver::DeviceRepr for AdamwParams {}

const BLOCK_THREADS: u32 = 256;
/// Blocks per tensor at most; they stride over larger tensors.
const MAX_BLOCKS_PER_TENSOR: usize = 1024;
/// Grid rows: one per tensor.
const MAX_TENSORS: usize = 65535;

/// One trainable tensor: its f32 master weights, gradient and AdamW moments (all the same length), and
/// optionally the bf16 copy that the forward multiplies with, rewritten after the update.
pub struct AdamwTensor<'a> {
    pub param: &'a mut Buffer<f32>,
    pub grad: &'a Buffer<f32>,
    pub m: &'a mut Buffer<f32>,
    pub v: &'a mut Buffer<f32>,
    pub param_bf16: Option<&'a mut Buffer<u16>>,
}

/// The global L2 norm of all `grads` (as one vector), in one launch.
pub fn grad_norm(device: &Device, grads: &[&Buffer<f32>]) -> Result<f64> {
    let name = GRAD_SUM_SQUARES.name;
    let table: Vec<OptimTensor> = grads
        .iter()
        .map(|grad| {
            Ok(OptimTensor {
                param: ptr::null_mut(),
                grad: device.pointer(grad, "grad")?,
                m: ptr::null_mut(),
                v: ptr::null_mut(),
                param_bf16: ptr::null_mut(),
                count: grad.len() as u64,
            })
        })
        .collect::<Result<_>>()?;
    let Some(config) = tensor_grid(name, grads.iter().map(|g| g.len()))? else {
        return Ok(0.0);
    };
    let table = device.upload(&table)?;
    let mut sum_squares = device.upload(&[0.0f32])?;
    let params = GradSumSquaresParams {
        tensors: device.pointer(&table, "tensor table")?,
        sum_squares: device.pointer_mut(&mut sum_squares, "sum of squares")?,
    };
    device.launch(&GRAD_SUM_SQUARES, config, &params)?;
    Ok(f64::from(device.download(&sum_squares)?[0]).sqrt())
}

/// The factor that scales gradients of global norm `norm` to at most `max_norm`, as PyTorch's
/// `clip_grad_norm_` computes it (1 when they are already within it).
pub fn clip_coefficient(norm: f64, max_norm: f64) -> f32 {
    (max_norm / (norm + 1e-6)).min(1.0) as f32
}

/// AdamW step `step` (1 for the first) at learning rate `lr` over every tensor, in one launch, with the
/// gradients multiplied by `grad_scale` first (a [`clip_coefficient`], or 1).
pub fn adamw_step(
    device: &Device,
    tensors: &mut [AdamwTensor],
    config: &AdamWConfig,
    step: u64,
    lr: f64,
    grad_scale: f32,
) -> Result<()> {
    let name = ADAMW.name;
    if step == 0 {
        return Err(invalid(name, "step", "1 or more", step));
    }
    let mut table = Vec::with_capacity(tensors.len());
    for t in tensors.iter_mut() {
        let count = t.param.len();
        for (what, len) in [("grad", t.grad.len()), ("m", t.m.len()), ("v", t.v.len())] {
            if len != count {
                return Err(invalid(
                    name,
                    what,
                    format!("{count} elements like its param"),
                    len,
                ));
            }
        }
        let param_bf16 = match t.param_bf16.as_deref_mut() {
            Some(copy) if copy.len() != count => {
                return Err(invalid(
                    name,
                    "param_bf16",
                    format!("{count} elements"),
                    copy.len(),
                ))
            }
            Some(copy) => device.pointer_mut(copy, "param_bf16")?,
            None => ptr::null_mut(),
        };
        table.push(OptimTensor {
            param: device.pointer_mut(t.param, "param")?,
            grad: device.pointer(t.grad, "grad")?,
            m: device.pointer_mut(t.m, "m")?,
            v: device.pointer_mut(t.v, "v")?,
            param_bf16,
            count: count as u64,
        });
    }
    let Some(launch) = tensor_grid(name, tensors.iter().map(|t| t.param.len()))? else {
        return Ok(());
    };
    let table = device.upload(&table)?;
    let t = step as i32;
    let params = AdamwParams {
        tensors: device.pointer(&table, "tensor table")?,
        beta1: config.beta1 as f32,
        beta2: config.beta2 as f32,
        eps: config.eps as f32,
        decay: (1.0 - lr * config.weight_decay) as f32,
        step_size: (lr / (1.0 - config.beta1.powi(t))) as f32,
        bias_correction2: (1.0 - config.beta2.powi(t)) as f32,
        grad_scale,
    };
    device.launch(&ADAMW, launch, &params)
}

/// One grid row per tensor, enough blocks across for the largest; None when there is nothing to do.
fn tensor_grid(
    name: &'static str,
    counts: impl ExactSizeIterator<Item = usize>,
) -> Result<Option<LaunchConfig>> {
    let tensors = counts.len();
    if tensors > MAX_TENSORS {
        return Err(invalid(
            name,
            "tensor count",
            format!("at most {MAX_TENSORS}"),
            tensors,
        ));
    }
    let largest = counts.max().unwrap_or(0);
    if largest == 0 {
        return Ok(None);
    }
    let blocks = largest
        .div_ceil(BLOCK_THREADS as usize)
        .min(MAX_BLOCKS_PER_TENSOR);
    Ok(Some(LaunchConfig {
        grid: [blocks as u32, tensors as u32, 1],
        block: [BLOCK_THREADS, 1, 1],
        dynamic_shared_bytes: 0,
    }))
}
