//! The linear layers of a training step, one function each way whatever runs them: every product is
//! a GEMM that cuBLAS runs on a GPU and its host stand-in runs in the emulator
//! (`src/kernels/host_gemm.rs`), so the CPU tests check all that is handed to the library. The frozen
//! `x·Wᵀ` is one GEMM; an adapter adds two thin ones around our rounding kernel, `xa = x·Aᵀ` (f32,
//! kept for the backward) and `y = bf16(s·xa)·Bᵀ`, to which the frozen product is then added; the
//! backward likewise, with the adapter's gradients as two more GEMMs reducing over the rows into the
//! f32 gradients. On an H200 our fused LoRA kernel (cuda/lora_linear.cu, `lora_linear_*`), which reads
//! x once for both products, ran at 0.29x cuBLAS's rate, far more than the adapter's extra passes over
//! x and y cost (REPORT.md, "On a GPU"); it stays, tested, for benchmarks and GPUs where that may
//! differ.
//!
//! Rounding differs between the two by where the adapter's share meets the frozen product: the fused
//! kernel adds both in f32 and rounds once; here `bf16(s·xa)·Bᵀ` (plus what `y` held, when
//! accumulating) is rounded to bf16 before the frozen product is added and rounded again. The
//! gradients here read the rank-r products scaled, then rounded (`bf16(s·dy_b)`); the fused path's
//! read them rounded, then scale the sums.

use super::aligned::grown;
use super::cublas::{Gemm, GemmOutput};
use super::lora::{check_adapter, check_adapter_backward, check_backward, check_forward};
use super::{
    check_len, scaled_f32_to_bf16, Buffer, Device, LinearScratch, LinearShape, LoraAdapter,
    LoraBackward, Result,
};

/// `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ`, or `y += …` with `accumulate`, as [`super::lora_linear_forward`]
/// defines it (`xa = x·Aᵀ` written for the backward when there is an adapter).
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
    const WHAT: &str = "gemm y = x·Wᵀ";
    check_forward(WHAT, shape, x, weight, y)?;
    let mut beta = if accumulate { 1.0 } else { 0.0 };
    if let Some((adapter, xa)) = lora {
        adapter_forward(device, shape, x, adapter, xa, y, beta, scratch)?;
        beta = 1.0;
    }
    let gemm = product(
        [shape.rows, shape.in_features, shape.out_features],
        device.pointer(x, "x")? as u64,
        Right::Transposed(device.pointer(weight, "weight")? as u64),
        (device.pointer_mut(y, "y")? as u64, GemmOutput::Bf16),
        beta,
    );
    device.gemm(WHAT, &gemm)
}

/// `xa = x·Aᵀ` (f32) and `y = beta·y + bf16(s·xa)·Bᵀ`.
#[allow(clippy::too_many_arguments)]
fn adapter_forward(
    device: &Device,
    shape: LinearShape,
    x: &Buffer<u16>,
    adapter: LoraAdapter,
    xa: &mut Buffer<f32>,
    y: &mut Buffer<u16>,
    beta: f32,
    scratch: &mut LinearScratch,
) -> Result<()> {
    const WHAT: &str = "gemm y += s·(x·Aᵀ)·Bᵀ";
    let LinearShape {
        rows,
        in_features,
        out_features,
    } = shape;
    let rank = adapter.rank;
    check_adapter(WHAT, &adapter, in_features, out_features)?;
    check_len(WHAT, "xa", xa, rows * rank)?;
    let down = product(
        [rows, in_features, rank],
        device.pointer(x, "x")? as u64,
        Right::Transposed(device.pointer(adapter.a, "lora A")? as u64),
        (device.pointer_mut(xa, "xa")? as u64, GemmOutput::F32),
        0.0,
    );
    device.gemm("gemm xa = x·Aᵀ", &down)?;
    let scaled = grown(device, &mut scratch.scaled_low, rows * rank)?;
    scaled_f32_to_bf16(device, xa, adapter.scale, scaled, rows * rank)?;
    let up = product(
        [rows, rank, out_features],
        device.pointer(scaled, "s·xa")? as u64,
        Right::Transposed(device.pointer(adapter.b, "lora B")? as u64),
        (device.pointer_mut(y, "y")? as u64, GemmOutput::Bf16),
        beta,
    );
    device.gemm(WHAT, &up)
}

/// `dx += dY·W + s·(dY·B)·A` and the adapter's gradients, as [`super::lora_linear_backward`] defines
/// them.
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
    const WHAT: &str = "gemm dx += dY·W";
    check_backward(WHAT, shape, dy, x, weight, dx)?;
    if let Some(lora) = lora {
        adapter_backward(device, shape, dy, x, lora, dx, scratch)?;
    }
    let gemm = product(
        [shape.rows, shape.out_features, shape.in_features],
        device.pointer(dy, "dy")? as u64,
        Right::AsStored(device.pointer(weight, "weight")? as u64),
        (device.pointer_mut(dx, "dx")? as u64, GemmOutput::Bf16),
        1.0,
    );
    device.gemm(WHAT, &gemm)
}

/// `dy_b = dY·B` (f32), `dx += bf16(s·dy_b)·A`, and the adapter's gradients
/// `grad_a += bf16(s·dy_b)ᵀ·x`, `grad_b += dYᵀ·bf16(s·xa)`.
#[allow(clippy::too_many_arguments)]
fn adapter_backward(
    device: &Device,
    shape: LinearShape,
    dy: &Buffer<u16>,
    x: &Buffer<u16>,
    lora: LoraBackward,
    dx: &mut Buffer<u16>,
    scratch: &mut LinearScratch,
) -> Result<()> {
    const WHAT: &str = "gemm dx += s·(dY·B)·A";
    let LinearShape {
        rows,
        in_features,
        out_features,
    } = shape;
    check_adapter_backward(WHAT, shape, &lora)?;
    let adapter = lora.adapter;
    let rank = adapter.rank;
    let dy_b = grown(device, &mut scratch.dy_b, rows * rank)?;
    let down = product(
        [rows, out_features, rank],
        device.pointer(dy, "dy")? as u64,
        Right::AsStored(device.pointer(adapter.b, "lora B")? as u64),
        (device.pointer_mut(dy_b, "dy_b")? as u64, GemmOutput::F32),
        0.0,
    );
    device.gemm("gemm dy_b = dY·B", &down)?;
    let scaled = grown(device, &mut scratch.scaled_low, rows * rank)?;
    scaled_f32_to_bf16(device, dy_b, adapter.scale, scaled, rows * rank)?;
    let up = product(
        [rows, rank, in_features],
        device.pointer(scaled, "s·dy_b")? as u64,
        Right::AsStored(device.pointer(adapter.a, "lora A")? as u64),
        (device.pointer_mut(dx, "dx")? as u64, GemmOutput::Bf16),
        1.0,
    );
    device.gemm(WHAT, &up)?;
    let grad_a = row_reduction(
        [rows, rank, in_features],
        device.pointer(scaled, "s·dy_b")? as u64,
        device.pointer(x, "x")? as u64,
        device.pointer_mut(lora.grad_a, "grad_a")? as u64,
    );
    device.gemm("gemm grad_a += s·(dY·B)ᵀ·x", &grad_a)?;
    scaled_f32_to_bf16(device, lora.xa, adapter.scale, scaled, rows * rank)?;
    let grad_b = row_reduction(
        [rows, out_features, rank],
        device.pointer(dy, "dy")? as u64,
        device.pointer(scaled, "s·xa")? as u64,
        device.pointer_mut(lora.grad_b, "grad_b")? as u64,
    );
    device.gemm("gemm grad_b += s·dYᵀ·xa", &grad_b)
}

/// The row-major reduction over the rows `c [p][q] += leftᵀ · right` of `left [rows][p]` and
/// `right [rows][q]` (dense rows) into an f32 `c`: cuBLAS's column-major `cᵀ += rightᵀ · left`.
fn row_reduction([rows, p, q]: [usize; 3], left: u64, right: u64, c: u64) -> Gemm {
    Gemm {
        m: q,
        n: p,
        k: rows,
        a: right,
        lda: q,
        transpose_a: false,
        b: left,
        ldb: p,
        transpose_b: true,
        c,
        ldc: q,
        c_type: GemmOutput::F32,
        beta: 1.0,
    }
}

/// The right operand of a row-major product, a device address: a matrix stored `[cols][k]` that
/// multiplies as its transpose (a weight `[out][in]` in the forward), or one stored `[k][cols]`.
enum Right {
    Transposed(u64),
    AsStored(u64),
}

/// The row-major product `c [rows][cols] = x [rows][k] · right + beta·c`, dense rows, as cuBLAS's
/// column-major `cᵀ = rightᵀ · xᵀ`, which reads the same memory.
fn product(
    [rows, k, cols]: [usize; 3],
    x: u64,
    right: Right,
    (c, c_type): (u64, GemmOutput),
    beta: f32,
) -> Gemm {
    let (a, lda, transpose_a) = match right {
        Right::Transposed(a) => (a, k, true),
        Right::AsStored(a) => (a, cols, false),
    };
    Gemm {
        m: cols,
        n: rows,
        k,
        a,
        lda,
        transpose_a,
        b: x,
        ldb: k,
        transpose_b: false,
        c,
        ldc: cols,
        c_type,
        beta,
    }
}
