//! The linear layers of a training step, one function each way whatever runs them: on a GPU the plain
//! products (no adapter: the MLP projections, lm_head, and their input gradients) go to cuBLAS, the
//! adapted ones to the fused LoRA kernels (cuda/lora_linear.cu), which no library provides. On the
//! emulator every product runs our kernels, the plain ones as the fused kernel at rank 0 (one kernel
//! to verify; a GPU never runs it on these), so a whole training step stays testable on the CPU.

use super::cublas::Gemm;
use super::lora::{check_backward, check_forward};
use super::{
    lora_linear_backward, lora_linear_forward, lora_linear_forward_accumulate, Buffer, Device,
    LinearScratch, LinearShape, LoraAdapter, LoraBackward, Result,
};

/// `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ`, or `y += …` with `accumulate`, as [`lora_linear_forward`] defines it
/// (`xa = x·Aᵀ` written for the backward when there is an adapter).
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(
    device: &Device,
    shape: LinearShape,
    x: &Buffer<u16>,
    weight: &Buffer<u16>,
    lora: Option<(LoraAdapter, &mut Buffer<f32>)>,
    y: &mut Buffer<u16>,
    accumulate: bool,
    scratch: &mut LinearScratch,
) -> Result<()> {
    match (lora, device.gpu()) {
        (None, Some(gpu)) => {
            const WHAT: &str = "gemm y = x·Wᵀ";
            check_forward(WHAT, shape, x, weight, y)?;
            // Column-major: yᵀ [out][rows] = (W stored in x out)ᵀ · xᵀ [in][rows].
            let gemm = Gemm {
                m: shape.out_features,
                n: shape.rows,
                k: shape.in_features,
                a: device.pointer(weight, "weight")? as u64,
                lda: shape.in_features,
                transpose_a: true,
                b: device.pointer(x, "x")? as u64,
                ldb: shape.in_features,
                c: device.pointer_mut(y, "y")? as u64,
                ldc: shape.out_features,
                beta: if accumulate { 1.0 } else { 0.0 },
            };
            gpu.gemm(WHAT, &gemm)
        }
        (lora, _) if accumulate => {
            lora_linear_forward_accumulate(device, shape, x, weight, lora, y, scratch)
        }
        (lora, _) => lora_linear_forward(device, shape, x, weight, lora, y, scratch),
    }
}

/// `dx += dY·W + s·(dY·B)·A` and the adapter's gradients, as [`lora_linear_backward`] defines them.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    device: &Device,
    shape: LinearShape,
    dy: &Buffer<u16>,
    x: &Buffer<u16>,
    weight: &Buffer<u16>,
    lora: Option<LoraBackward>,
    dx: &mut Buffer<u16>,
    scratch: &mut LinearScratch,
) -> Result<()> {
    match (lora, device.gpu()) {
        (None, Some(gpu)) => {
            const WHAT: &str = "gemm dx += dY·W";
            check_backward(WHAT, shape, dy, x, weight, dx)?;
            // Column-major: dxᵀ [in][rows] += (W stored in x out) · dYᵀ [out][rows].
            let gemm = Gemm {
                m: shape.in_features,
                n: shape.rows,
                k: shape.out_features,
                a: device.pointer(weight, "weight")? as u64,
                lda: shape.in_features,
                transpose_a: false,
                b: device.pointer(dy, "dy")? as u64,
                ldb: shape.out_features,
                c: device.pointer_mut(dx, "dx")? as u64,
                ldc: shape.in_features,
                beta: 1.0,
            };
            gpu.gemm(WHAT, &gemm)
        }
        (lora, _) => lora_linear_backward(device, shape, dy, x, weight, lora, dx, scratch),
    }
}
