//! The fused LoRA linear layer (cuda/lora_linear.cu): `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ` reading x once, and its
//! backward `dX += dY·W + s·(dY·B)·A` in one pass over dY, `dA += s·(dY·B)ᵀ·x`, `dB += s·dYᵀ·(x·Aᵀ)`.
//! Tensors are row-major, bf16 (as `u16` bits) for activations and weights, f32 for the rank-r
//! intermediates and the adapter gradients. Without an adapter the forward is the plain `x·Wᵀ`.

use std::ptr;

use super::params::{LoraGradAParams, LoraGradBParams, LoraLinearParams};
use super::{check_len, invalid, Buffer, Device, LaunchConfig, Result};

kernels! {
    FORWARD = lora_linear_forward_kernel / longlora_emu_lora_linear_forward_kernel(LoraLinearParams);
    BACKWARD_INPUT = lora_linear_backward_input_kernel
        / longlora_emu_lora_linear_backward_input_kernel(LoraLinearParams);
    GRAD_A = lora_grad_a_kernel / longlora_emu_lora_grad_a_kernel(LoraGradAParams);
    GRAD_B = lora_grad_b_kernel / longlora_emu_lora_grad_b_kernel(LoraGradBParams);
}

// SAFETY: plain C structs (params.h) of integers, floats and device pointers, which the kernels take
// by value.
unsafe impl cudarc::driver::DeviceRepr for LoraLinearParams {}
unsafe impl cudarc::driver::DeviceRepr for LoraGradAParams {}
unsafe impl cudarc::driver::DeviceRepr for LoraGradBParams {}

/// The output tile of one block (cuda/lora_linear.cu) and its threads.
const BLOCK_TILE: usize = 64;
const BLOCK_THREADS: u32 = 128;
/// The largest adapter rank the kernels hold in registers.
pub const MAX_LORA_RANK: usize = 64;

/// A linear layer `[out_features][in_features]` applied to `rows` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub rows: usize,
    pub in_features: usize,
    pub out_features: usize,
}

/// A LoRA adapter on the device: `a` is `[rank][in_features]`, `b` is `[out_features][rank]` (bf16),
/// `scale` is alpha / rank.
#[derive(Clone, Copy)]
pub struct LoraAdapter<'a> {
    pub a: &'a Buffer<u16>,
    pub b: &'a Buffer<u16>,
    pub rank: usize,
    pub scale: f32,
}

/// What the adapter's backward reads and writes: `xa = x·Aᵀ` saved by the forward, scratch for
/// `dy_b = dY·B` (both `[rows][rank]`), and the gradients, accumulated.
pub struct LoraBackward<'a> {
    pub adapter: LoraAdapter<'a>,
    pub xa: &'a Buffer<f32>,
    pub dy_b: &'a mut Buffer<f32>,
    pub grad_a: &'a mut Buffer<f32>,
    pub grad_b: &'a mut Buffer<f32>,
}

/// Writes `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ` (`[rows][out_features]`) and, with an adapter, `xa = x·Aᵀ`
/// (`[rows][rank]`, f32) for the backward. `x` is `[rows][in_features]`, `weight` is
/// `[out_features][in_features]`.
pub fn lora_linear_forward(
    device: &Device,
    shape: LinearShape,
    x: &Buffer<u16>,
    weight: &Buffer<u16>,
    lora: Option<(LoraAdapter, &mut Buffer<f32>)>,
    y: &mut Buffer<u16>,
) -> Result<()> {
    forward(device, shape, x, weight, lora, y, false, None)
}

/// [`lora_linear_forward`] adding into `y` instead of overwriting it (one rounding to bf16): a
/// residual connection `y = y + x·Wᵀ + …` without a separate add.
pub fn lora_linear_forward_accumulate(
    device: &Device,
    shape: LinearShape,
    x: &Buffer<u16>,
    weight: &Buffer<u16>,
    lora: Option<(LoraAdapter, &mut Buffer<f32>)>,
    y: &mut Buffer<u16>,
) -> Result<()> {
    forward(device, shape, x, weight, lora, y, true, None)
}

/// Runs [`lora_linear_forward`] and returns how many tiles of x the blocks loaded from global memory:
/// the evidence that the adapter's product reads no tile of x a second time.
pub fn lora_linear_forward_x_tile_loads(
    device: &Device,
    shape: LinearShape,
    x: &Buffer<u16>,
    weight: &Buffer<u16>,
    lora: Option<(LoraAdapter, &mut Buffer<f32>)>,
    y: &mut Buffer<u16>,
) -> Result<u32> {
    let mut count = device.upload(&[0u32])?;
    forward(device, shape, x, weight, lora, y, false, Some(&mut count))?;
    Ok(device.download(&count)?[0])
}

#[allow(clippy::too_many_arguments)]
fn forward(
    device: &Device,
    shape: LinearShape,
    x: &Buffer<u16>,
    weight: &Buffer<u16>,
    lora: Option<(LoraAdapter, &mut Buffer<f32>)>,
    y: &mut Buffer<u16>,
    accumulate: bool,
    x_tile_loads: Option<&mut Buffer<u32>>,
) -> Result<()> {
    let name = FORWARD.name;
    let LinearShape {
        rows,
        in_features,
        out_features,
    } = shape;
    let grid = grid(name, rows, out_features)?;
    check_features(name, in_features)?;
    check_len(name, "x", x, rows * in_features)?;
    check_len(name, "weight", weight, out_features * in_features)?;
    check_len(name, "y", y, rows * out_features)?;
    let (down, up, low, rank, scale) = match lora {
        Some((adapter, xa)) => {
            check_adapter(name, &adapter, in_features, out_features)?;
            check_len(name, "xa", xa, rows * adapter.rank)?;
            (
                device.pointer(adapter.a, "lora A")?,
                device.pointer(adapter.b, "lora B")?,
                device.pointer_mut(xa, "xa")?,
                adapter.rank,
                adapter.scale,
            )
        }
        None => (ptr::null(), ptr::null(), ptr::null_mut(), 0, 0.0),
    };
    let params = LoraLinearParams {
        input: device.pointer(x, "x")?,
        weight: device.pointer(weight, "weight")?,
        down,
        up,
        output: device.pointer_mut(y, "y")?,
        low,
        input_tile_loads: match x_tile_loads {
            Some(count) => device.pointer_mut(count, "x tile loads")?,
            None => ptr::null_mut(),
        },
        rows: rows as u32,
        reduce: in_features as u32,
        cols: out_features as u32,
        rank: rank as u32,
        scale,
        accumulate: accumulate.into(),
    };
    device.launch(&FORWARD, config(grid), &params)
}

/// Accumulates `dx += dY·W + s·(dY·B)·A` (`[rows][in_features]`, bf16) and, with an adapter,
/// `grad_a += s·(dY·B)ᵀ·x` and `grad_b += s·dYᵀ·xa`. `dy` is `[rows][out_features]`. The frozen
/// weight gets no gradient.
pub fn lora_linear_backward(
    device: &Device,
    shape: LinearShape,
    dy: &Buffer<u16>,
    x: &Buffer<u16>,
    weight: &Buffer<u16>,
    lora: Option<LoraBackward>,
    dx: &mut Buffer<u16>,
) -> Result<()> {
    let name = BACKWARD_INPUT.name;
    let LinearShape {
        rows,
        in_features,
        out_features,
    } = shape;
    let input_grid = grid(name, rows, in_features)?;
    check_features(name, out_features)?;
    check_len(name, "dy", dy, rows * out_features)?;
    check_len(name, "x", x, rows * in_features)?;
    check_len(name, "weight", weight, out_features * in_features)?;
    check_len(name, "dx", dx, rows * in_features)?;
    let mut params = LoraLinearParams {
        input: device.pointer(dy, "dy")?,
        weight: device.pointer(weight, "weight")?,
        down: ptr::null(),
        up: ptr::null(),
        output: device.pointer_mut(dx, "dx")?,
        low: ptr::null_mut(),
        input_tile_loads: ptr::null_mut(),
        rows: rows as u32,
        reduce: out_features as u32,
        cols: in_features as u32,
        rank: 0,
        scale: 0.0,
        accumulate: 1,
    };
    let Some(lora) = lora else {
        return device.launch(&BACKWARD_INPUT, config(input_grid), &params);
    };
    let adapter = lora.adapter;
    let rank = adapter.rank;
    check_adapter(name, &adapter, in_features, out_features)?;
    check_len(name, "xa", lora.xa, rows * rank)?;
    check_len(name, "dy_b", lora.dy_b, rows * rank)?;
    check_len(name, "grad_a", lora.grad_a, rank * in_features)?;
    check_len(name, "grad_b", lora.grad_b, out_features * rank)?;
    // Backward, B reduces over the output features and A over the rank: they swap places.
    params.down = device.pointer(adapter.b, "lora B")?;
    params.up = device.pointer(adapter.a, "lora A")?;
    params.low = device.pointer_mut(lora.dy_b, "dy_b")?;
    params.rank = rank as u32;
    params.scale = adapter.scale;
    device.launch(&BACKWARD_INPUT, config(input_grid), &params)?;

    let grad_a = LoraGradAParams {
        dy_b: device.pointer(lora.dy_b, "dy_b")?,
        x: device.pointer(x, "x")?,
        grad_a: device.pointer_mut(lora.grad_a, "grad_a")?,
        rows: rows as u32,
        in_features: in_features as u32,
        rank: rank as u32,
        scale: adapter.scale,
    };
    let split = row_slices(rows);
    let grad_a_grid = split(grid(GRAD_A.name, rank, in_features)?);
    device.launch(&GRAD_A, config(grad_a_grid), &grad_a)?;
    let grad_b = LoraGradBParams {
        dy: device.pointer(dy, "dy")?,
        xa: device.pointer(lora.xa, "xa")?,
        grad_b: device.pointer_mut(lora.grad_b, "grad_b")?,
        rows: rows as u32,
        out_features: out_features as u32,
        rank: rank as u32,
        scale: adapter.scale,
    };
    let grad_b_grid = split(grid(GRAD_B.name, out_features, rank)?);
    device.launch(&GRAD_B, config(grad_b_grid), &grad_b)
}

/// The grid of 64 x 64 output tiles over `rows x cols`, after checking that both are positive and
/// that every index the kernels form fits in 32 bits.
fn grid(name: &'static str, rows: usize, cols: usize) -> Result<[u32; 3]> {
    const MAX_GRID_Y: usize = 65535;
    if rows == 0 || rows > MAX_GRID_Y * BLOCK_TILE {
        return Err(invalid(
            name,
            "rows",
            format!("1 to {}", MAX_GRID_Y * BLOCK_TILE),
            rows,
        ));
    }
    if cols == 0 || cols > u32::MAX as usize / 2 {
        return Err(invalid(name, "columns", "1 to 2^31 - 1", cols));
    }
    Ok([
        cols.div_ceil(BLOCK_TILE) as u32,
        rows.div_ceil(BLOCK_TILE) as u32,
        1,
    ])
}

/// The reduced dimension of a product: positive and indexable in 32 bits.
fn check_features(name: &'static str, features: usize) -> Result<()> {
    if features == 0 || features > u32::MAX as usize / 2 {
        return Err(invalid(name, "features", "1 to 2^31 - 1", features));
    }
    Ok(())
}

/// The dA, dB reductions split their rows into slices of at least 64 (and at most 16 slices), so that
/// their few output tiles still give a GPU enough blocks.
fn row_slices(rows: usize) -> impl Fn([u32; 3]) -> [u32; 3] {
    const MIN_SLICE_ROWS: usize = 64;
    const MAX_SLICES: usize = 16;
    let slices = rows.div_ceil(MIN_SLICE_ROWS).clamp(1, MAX_SLICES) as u32;
    move |[x, y, _]| [x, y, slices]
}

fn config(grid: [u32; 3]) -> LaunchConfig {
    LaunchConfig {
        grid,
        block: [BLOCK_THREADS, 1, 1],
        dynamic_shared_bytes: 0,
    }
}

fn check_adapter(
    name: &'static str,
    adapter: &LoraAdapter,
    in_features: usize,
    out_features: usize,
) -> Result<()> {
    if !(1..=MAX_LORA_RANK).contains(&adapter.rank) {
        return Err(invalid(
            name,
            "lora rank",
            format!("1 to {MAX_LORA_RANK}"),
            adapter.rank,
        ));
    }
    if !adapter.scale.is_finite() {
        return Err(invalid(
            name,
            "lora scale",
            "a finite number",
            adapter.scale,
        ));
    }
    check_len(name, "lora A", adapter.a, adapter.rank * in_features)?;
    check_len(name, "lora B", adapter.b, out_features * adapter.rank)
}
