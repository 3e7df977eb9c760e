//! The fused LoRA linear layer (cuda/lora_linear.cu): `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ` reading x once, and its
//! backward `dX += dY·W + s·(dY·B)·A` in one pass over dY, `dA += s·(dY·B)ᵀ·x`, `dB += s·dYᵀ·(x·Aᵀ)`.
//! Tensors are row-major, bf16 (as `u16` bits) for activations and weights, f32 for the rank-r
//! intermediates and the adapter gradients. Without an adapter the forward is the plain `x·Wᵀ`. These
//! always run our kernels; the training step calls [`super::linear_forward`] and
//! [`super::linear_backward`] instead, which run every product as a GEMM (cuBLAS on a GPU).

use std::ptr;

use super::aligned::{aligned_operand, grown, Operand};
use super::params::{
    LoraGradAParams, LoraGradBParams, LoraLinearParams, LORA_BLOCK_COLS, LORA_BLOCK_ROWS,
    LORA_GRAD_BLOCK, LORA_GRAD_THREADS, LORA_MAX_RANK, LORA_THREADS,
};
use super::{check_len, invalid, Buffer, Device, LaunchConfig, Result};

kernels! {
    FORWARD = lora_linear_forward_kernel / longlora_emu_lora_linear_forward_kernel(LoraLinearParams);
    BACKWARD_INPUT = lora_linear_backward_input_kernel
        / longlora_emu_lora_linear_backward_input_kernel(LoraLinearParams);
    GRAD_A = lora_grad_a_kernel / longlora_emu_lora_grad_a_kernel(LoraGradAParams);
    GRAD_B = lora_grad_b_kernel / longlora_emu_lora_grad_b_kernel(LoraGradBParams);
}

extern "C" {
    /// The dynamic shared memory of a lora_linear launch at `rank` (cuda/lora_linear.cu's layout).
    fn longlora_lora_linear_shared_bytes(rank: u32) -> u32;
}

// SAFETY: plain C structs (params.h) of integers, floats and device pointers, which the kernels take
// by value.
unsafe impl cudarc::driver::DeviceRepr for LoraLinearParams {}
unsafe impl cudarc::driver::DeviceRepr for LoraGradAParams {}
unsafe impl cudarc::driver::DeviceRepr for LoraGradBParams {}

/// The largest adapter rank the kernels hold in registers.
pub const MAX_LORA_RANK: usize = LORA_MAX_RANK as usize;

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

/// What the adapter's backward reads and writes: `xa = x·Aᵀ` (`[rows][rank]`) saved by the forward, and
/// the gradients, accumulated.
pub struct LoraBackward<'a> {
    pub adapter: LoraAdapter<'a>,
    pub xa: &'a Buffer<f32>,
    pub grad_a: &'a mut Buffer<f32>,
    pub grad_b: &'a mut Buffer<f32>,
}

/// Device memory the linear kernels reuse from call to call, kept by the caller (one per model, say):
/// `dY·B` of the adapter's backward, the scaled bf16 rank-r product that [`super::linear_forward`]
/// multiplies with the up operand, and 16-byte-aligned copies of operands whose rows are not (row
/// lengths that are not a multiple of 8, such as a LoRA rank of 4). It grows to the largest call and
/// belongs to the device of its first use.
#[derive(Default)]
pub struct LinearScratch {
    pub(super) dy_b: Option<Buffer<f32>>,
    pub(super) scaled_low: Option<Buffer<u16>>,
    x: Option<Buffer<u16>>,
    dy: Option<Buffer<u16>>,
    weight: Option<Buffer<u16>>,
    lora_a: Option<Buffer<u16>>,
    lora_b: Option<Buffer<u16>>,
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
    scratch: &mut LinearScratch,
) -> Result<()> {
    let output = Output {
        y,
        accumulate: false,
    };
    forward(device, shape, x, weight, lora, output, scratch, None)
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
    scratch: &mut LinearScratch,
) -> Result<()> {
    let output = Output {
        y,
        accumulate: true,
    };
    forward(device, shape, x, weight, lora, output, scratch, None)
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
    scratch: &mut LinearScratch,
) -> Result<u32> {
    let mut count = device.upload(&[0u32])?;
    let output = Output {
        y,
        accumulate: false,
    };
    forward(
        device,
        shape,
        x,
        weight,
        lora,
        output,
        scratch,
        Some(&mut count),
    )?;
    Ok(device.download(&count)?[0])
}

/// Where a product goes: overwriting `y` or added to it.
struct Output<'a> {
    y: &'a mut Buffer<u16>,
    accumulate: bool,
}

#[allow(clippy::too_many_arguments)]
fn forward(
    device: &Device,
    shape: LinearShape,
    x: &Buffer<u16>,
    weight: &Buffer<u16>,
    lora: Option<(LoraAdapter, &mut Buffer<f32>)>,
    output: Output,
    scratch: &mut LinearScratch,
    x_tile_loads: Option<&mut Buffer<u32>>,
) -> Result<()> {
    let name = FORWARD.name;
    let grid = check_forward(name, shape, x, weight, output.y)?;
    let LinearShape {
        rows,
        in_features,
        out_features,
    } = shape;
    let input = aligned_operand(device, name, x, rows, in_features, &mut scratch.x, "x")?;
    let weight = aligned_operand(
        device,
        name,
        weight,
        out_features,
        in_features,
        &mut scratch.weight,
        "weight",
    )?;
    let mut params = product_params(shape, in_features, out_features, input, weight);
    params.output = device.pointer_mut(output.y, "y")?;
    params.accumulate = output.accumulate.into();
    if let Some(count) = x_tile_loads {
        params.input_tile_loads = device.pointer_mut(count, "x tile loads")?;
    }
    if let Some((adapter, xa)) = lora {
        check_adapter(name, &adapter, in_features, out_features)?;
        check_len(name, "xa", xa, rows * adapter.rank)?;
        let rank = adapter.rank;
        let down = aligned_operand(
            device,
            name,
            adapter.a,
            rank,
            in_features,
            &mut scratch.lora_a,
            "lora A",
        )?;
        let up = aligned_operand(
            device,
            name,
            adapter.b,
            out_features,
            rank,
            &mut scratch.lora_b,
            "lora B",
        )?;
        set_adapter(
            &mut params,
            &adapter,
            down,
            up,
            device.pointer_mut(xa, "xa")?,
        );
    }
    launch_product(device, &FORWARD, grid, &params)
}

/// Accumulates `dx += dY·W + s·(dY·B)·A` (`[rows][in_features]`, bf16) and, with an adapter,
/// `grad_a += s·(dY·B)ᵀ·x` and `grad_b += s·dYᵀ·xa`. `dy` is `[rows][out_features]`. The frozen
/// weight gets no gradient.
#[allow(clippy::too_many_arguments)]
pub fn lora_linear_backward(
    device: &Device,
    shape: LinearShape,
    dy: &Buffer<u16>,
    x: &Buffer<u16>,
    weight: &Buffer<u16>,
    lora: Option<LoraBackward>,
    dx: &mut Buffer<u16>,
    scratch: &mut LinearScratch,
) -> Result<()> {
    let name = BACKWARD_INPUT.name;
    let input_grid = check_backward(name, shape, dy, x, weight, dx)?;
    let LinearShape {
        rows,
        in_features,
        out_features,
    } = shape;
    let dy_operand = aligned_operand(device, name, dy, rows, out_features, &mut scratch.dy, "dy")?;
    let weight = aligned_operand(
        device,
        name,
        weight,
        out_features,
        in_features,
        &mut scratch.weight,
        "weight",
    )?;
    let mut params = product_params(shape, out_features, in_features, dy_operand, weight);
    params.output = device.pointer_mut(dx, "dx")?;
    params.accumulate = 1;
    let Some(lora) = lora else {
        return launch_product(device, &BACKWARD_INPUT, input_grid, &params);
    };
    check_adapter_backward(name, shape, &lora)?;
    let adapter = lora.adapter;
    let rank = adapter.rank;
    // Backward, B reduces over the output features and A over the rank: they swap places.
    let down = aligned_operand(
        device,
        name,
        adapter.b,
        out_features,
        rank,
        &mut scratch.lora_b,
        "lora B",
    )?;
    let up = aligned_operand(
        device,
        name,
        adapter.a,
        rank,
        in_features,
        &mut scratch.lora_a,
        "lora A",
    )?;
    let dy_b = grown(device, &mut scratch.dy_b, rows * rank)?;
    set_adapter(
        &mut params,
        &adapter,
        down,
        up,
        device.pointer_mut(dy_b, "dy_b")?,
    );
    launch_product(device, &BACKWARD_INPUT, input_grid, &params)?;

    let x_operand = aligned_operand(device, name, x, rows, in_features, &mut scratch.x, "x")?;
    let grad_a = LoraGradAParams {
        dy_b: params.low.cast_const(),
        x: x_operand.pointer,
        grad_a: device.pointer_mut(lora.grad_a, "grad_a")?,
        rows: rows as u32,
        in_features: in_features as u32,
        rank: rank as u32,
        x_ld: x_operand.ld,
        scale: adapter.scale,
    };
    let split = row_slices(rows);
    let grad_a_grid = split(grad_grid(GRAD_A.name, rank, in_features)?);
    device.launch(&GRAD_A, grad_config(grad_a_grid), &grad_a)?;
    let grad_b = LoraGradBParams {
        dy: dy_operand.pointer,
        xa: device.pointer(lora.xa, "xa")?,
        grad_b: device.pointer_mut(lora.grad_b, "grad_b")?,
        rows: rows as u32,
        out_features: out_features as u32,
        rank: rank as u32,
        dy_ld: dy_operand.ld,
        scale: adapter.scale,
    };
    let grad_b_grid = split(grad_grid(GRAD_B.name, out_features, rank)?);
    device.launch(&GRAD_B, grad_config(grad_b_grid), &grad_b)
}

/// Checks an adapter's backward tensors against `shape` (errors name `kernel`).
pub(super) fn check_adapter_backward(
    kernel: &'static str,
    shape: LinearShape,
    lora: &LoraBackward,
) -> Result<()> {
    let rank = lora.adapter.rank;
    check_adapter(kernel, &lora.adapter, shape.in_features, shape.out_features)?;
    check_len(kernel, "xa", lora.xa, shape.rows * rank)?;
    check_len(kernel, "grad_a", lora.grad_a, rank * shape.in_features)?;
    check_len(kernel, "grad_b", lora.grad_b, shape.out_features * rank)
}

/// Checks the forward's tensors against `shape` (errors name `kernel`); returns the kernel's grid.
pub(super) fn check_forward(
    kernel: &'static str,
    shape: LinearShape,
    x: &Buffer<u16>,
    weight: &Buffer<u16>,
    y: &Buffer<u16>,
) -> Result<[u32; 3]> {
    let LinearShape {
        rows,
        in_features: n_in,
        out_features: n_out,
    } = shape;
    let tensors = [("x", x, rows * n_in), ("y", y, rows * n_out)];
    check_product(kernel, shape, n_out, n_in, weight, &tensors)
}

/// Checks the input gradient's tensors against `shape`; returns the kernel's grid.
pub(super) fn check_backward(
    kernel: &'static str,
    shape: LinearShape,
    dy: &Buffer<u16>,
    x: &Buffer<u16>,
    weight: &Buffer<u16>,
    dx: &Buffer<u16>,
) -> Result<[u32; 3]> {
    let LinearShape {
        rows,
        in_features: n_in,
        out_features: n_out,
    } = shape;
    let tensors = [
        ("dy", dy, rows * n_out),
        ("x", x, rows * n_in),
        ("dx", dx, rows * n_in),
    ];
    check_product(kernel, shape, n_in, n_out, weight, &tensors)
}

/// A product of `shape.rows` rows reducing over `reduce` into `cols` columns: its grid, after
/// checking the weight and `tensors` (name, buffer, expected length).
fn check_product(
    kernel: &'static str,
    shape: LinearShape,
    cols: usize,
    reduce: usize,
    weight: &Buffer<u16>,
    tensors: &[(&'static str, &Buffer<u16>, usize)],
) -> Result<[u32; 3]> {
    let grid = grid(kernel, shape.rows, cols)?;
    check_features(kernel, reduce)?;
    check_len(
        kernel,
        "weight",
        weight,
        shape.in_features * shape.out_features,
    )?;
    for &(what, buffer, len) in tensors {
        check_len(kernel, what, buffer, len)?;
    }
    Ok(grid)
}

/// The parameters of a plain product `input [rows][reduce] · weight` into `cols` output columns; the
/// caller sets the output, and the adapter if any.
fn product_params(
    shape: LinearShape,
    reduce: usize,
    cols: usize,
    input: Operand,
    weight: Operand,
) -> LoraLinearParams {
    LoraLinearParams {
        input: input.pointer,
        weight: weight.pointer,
        down: ptr::null(),
        up: ptr::null(),
        output: ptr::null_mut(),
        low: ptr::null_mut(),
        input_tile_loads: ptr::null_mut(),
        rows: shape.rows as u32,
        reduce: reduce as u32,
        cols: cols as u32,
        rank: 0,
        input_ld: input.ld,
        weight_ld: weight.ld,
        down_ld: 0,
        up_ld: 0,
        scale: 0.0,
        accumulate: 0,
    }
}

fn set_adapter(
    params: &mut LoraLinearParams,
    adapter: &LoraAdapter,
    down: Operand,
    up: Operand,
    low: *mut f32,
) {
    params.down = down.pointer;
    params.down_ld = down.ld;
    params.up = up.pointer;
    params.up_ld = up.ld;
    params.low = low;
    params.rank = adapter.rank as u32;
    params.scale = adapter.scale;
}

fn launch_product(
    device: &Device,
    kernel: &super::Kernel<LoraLinearParams>,
    grid: [u32; 3],
    params: &LoraLinearParams,
) -> Result<()> {
    // SAFETY: a pure function of the rank.
    let dynamic_shared_bytes = unsafe { longlora_lora_linear_shared_bytes(params.rank) };
    let config = LaunchConfig {
        grid,
        block: [LORA_THREADS, 1, 1],
        dynamic_shared_bytes,
    };
    device.launch(kernel, config, params)
}

/// The grid of `tile_rows x tile_cols` output tiles over `rows x cols`, after checking that both are
/// positive and that every index the kernels form fits in 32 bits.
fn tiles(
    name: &'static str,
    rows: usize,
    cols: usize,
    tile_rows: usize,
    tile_cols: usize,
) -> Result<[u32; 3]> {
    const MAX_GRID_Y: usize = 65535;
    if rows == 0 || rows > MAX_GRID_Y * tile_rows {
        let expected = format!("1 to {}", MAX_GRID_Y * tile_rows);
        return Err(invalid(name, "rows", expected, rows));
    }
    if cols == 0 || cols > u32::MAX as usize / 2 {
        return Err(invalid(name, "columns", "1 to 2^31 - 1", cols));
    }
    Ok([
        cols.div_ceil(tile_cols) as u32,
        rows.div_ceil(tile_rows) as u32,
        1,
    ])
}

fn grid(name: &'static str, rows: usize, cols: usize) -> Result<[u32; 3]> {
    let (tile_rows, tile_cols) = (LORA_BLOCK_ROWS as usize, LORA_BLOCK_COLS as usize);
    tiles(name, rows, cols, tile_rows, tile_cols)
}

fn grad_grid(name: &'static str, rows: usize, cols: usize) -> Result<[u32; 3]> {
    let tile = LORA_GRAD_BLOCK as usize;
    tiles(name, rows, cols, tile, tile)
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

fn grad_config(grid: [u32; 3]) -> LaunchConfig {
    LaunchConfig {
        grid,
        block: [LORA_GRAD_THREADS, 1, 1],
        dynamic_shared_bytes: 0,
    }
}

pub(super) fn check_adapter(
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
