//! The elementwise and per-row kernels of a Llama training step: bf16 <-> f32 conversion
//! (cuda/convert.cu), SwiGLU (swiglu.cu), RoPE (rope.cu), embedding (embedding.cu), RMSNorm
//! (rmsnorm.cu) and cross-entropy (cross_entropy.cu). Activations and their gradients are bf16 (`u16`
//! bits), statistics and the gradients of trainable tensors f32. As in `longlora::ops`, each layer is a
//! forward that writes its outputs and a backward that accumulates (`+=`) into the gradients it is given.

use super::params::{
    ConvertParams, CrossEntropyBackwardParams, CrossEntropyForwardParams, EmbeddingBackwardParams,
    EmbeddingParams, RmsnormBackwardParams, RmsnormForwardParams, RopeParams, ScaledConvertParams,
    SwigluBackwardParams, SwigluParams,
};
use super::{check_len, invalid, Buffer, Device, LaunchConfig, Result};
use crate::ops::rope::RopeTable;

kernels! {
    F32_TO_BF16 = f32_to_bf16_kernel / longlora_emu_f32_to_bf16_kernel(ConvertParams);
    BF16_TO_F32 = bf16_to_f32_kernel / longlora_emu_bf16_to_f32_kernel(ConvertParams);
    SCALED_F32_TO_BF16 = scaled_f32_to_bf16_kernel / longlora_emu_scaled_f32_to_bf16_kernel(ScaledConvertParams);
    SWIGLU_FORWARD = swiglu_forward_kernel / longlora_emu_swiglu_forward_kernel(SwigluParams);
    SWIGLU_BACKWARD = swiglu_backward_kernel / longlora_emu_swiglu_backward_kernel(SwigluBackwardParams);
    ROPE = rope_kernel / longlora_emu_rope_kernel(RopeParams);
    EMBEDDING_FORWARD = embedding_forward_kernel / longlora_emu_embedding_forward_kernel(EmbeddingParams);
    EMBEDDING_BACKWARD = embedding_backward_kernel / longlora_emu_embedding_backward_kernel(EmbeddingBackwardParams);
    RMSNORM_FORWARD = rmsnorm_forward_kernel / longlora_emu_rmsnorm_forward_kernel(RmsnormForwardParams);
    RMSNORM_BACKWARD = rmsnorm_backward_kernel / longlora_emu_rmsnorm_backward_kernel(RmsnormBackwardParams);
    CROSS_ENTROPY_FORWARD = cross_entropy_forward_kernel / longlora_emu_cross_entropy_forward_kernel(CrossEntropyForwardParams);
    CROSS_ENTROPY_BACKWARD = cross_entropy_backward_kernel / longlora_emu_cross_entropy_backward_kernel(CrossEntropyBackwardParams);
}

// SAFETY: plain C structs (params.h) of integers, floats and device pointers, which the kernels take
// by value.
unsafe impl cudarc::driver::DeviceRepr for ConvertParams {}
unsafe impl cudarc::driver::DeviceRepr for ScaledConvertParams {}
unsafe impl cudarc::driver::DeviceRepr for SwigluParams {}
unsafe impl cudarc::driver::DeviceRepr for SwigluBackwardParams {}
unsafe impl cudarc::driver::DeviceRepr for RopeParams {}
unsafe impl cudarc::driver::DeviceRepr for EmbeddingParams {}
unsafe impl cudarc::driver::DeviceRepr for EmbeddingBackwardParams {}
unsafe impl cudarc::driver::DeviceRepr for RmsnormForwardParams {}
unsafe impl cudarc::driver::DeviceRepr for RmsnormBackwardParams {}
unsafe impl cudarc::driver::DeviceRepr for CrossEntropyForwardParams {}
unsafe impl cudarc::driver::DeviceRepr for CrossEntropyBackwardParams {}

/// Threads per block: elementwise kernels stride the grid over their elements, row kernels give each
/// row one block (a multiple of 32, as the block reductions need).
const BLOCK_THREADS: u32 = 256;
const ROW_THREADS: u32 = 128;
/// The RMSNorm backward's blocks: each sums dweight over its rows in shared memory (dim f32 values),
/// so fewer blocks mean fewer atomic additions into dweight.
const RMSNORM_ROWS_PER_BLOCK: usize = 8;
const MAX_RMSNORM_BLOCKS: usize = 1024;
/// Enough blocks to fill any GPU; the grid strides over the rest.
const MAX_ELEMENTWISE_BLOCKS: usize = 4096;

fn elementwise(count: usize) -> LaunchConfig {
    let blocks = count
        .div_ceil(BLOCK_THREADS as usize)
        .min(MAX_ELEMENTWISE_BLOCKS);
    LaunchConfig {
        grid: [blocks as u32, 1, 1],
        block: [BLOCK_THREADS, 1, 1],
        dynamic_shared_bytes: 0,
    }
}

fn per_row(name: &'static str, rows: usize) -> Result<LaunchConfig> {
    let rows = u32::try_from(rows)
        .ok()
        .filter(|&rows| rows <= i32::MAX as u32)
        .ok_or_else(|| invalid(name, "rows", "at most 2^31 - 1", rows))?;
    Ok(LaunchConfig {
        grid: [rows, 1, 1],
        block: [ROW_THREADS, 1, 1],
        dynamic_shared_bytes: 0,
    })
}

fn to_u32(name: &'static str, what: &'static str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| invalid(name, what, "at most 2^32 - 1", value))
}

/// `dim` must be positive and divide the length of `buffer`: the number of rows.
fn rows_of<T: super::Element>(
    name: &'static str,
    what: &'static str,
    buffer: &Buffer<T>,
    dim: usize,
) -> Result<usize> {
    if dim == 0 || !buffer.len().is_multiple_of(dim) {
        return Err(invalid(
            name,
            what,
            format!("a multiple of {dim} elements (dim > 0)"),
            format!("{} elements", buffer.len()),
        ));
    }
    Ok(buffer.len() / dim)
}

/// Rounds `input` to bf16 into `output` (same length).
pub fn f32_to_bf16(device: &Device, input: &Buffer<f32>, output: &mut Buffer<u16>) -> Result<()> {
    check_len(F32_TO_BF16.name, "output", output, input.len())?;
    if input.is_empty() {
        return Ok(());
    }
    let params = ConvertParams {
        // The kernel only reads the f32 side; the struct is shared with the other direction.
        values_f32: device.pointer(input, "input")?.cast_mut(),
        values_bf16: device.pointer_mut(output, "output")?,
        count: input.len() as u64,
    };
    device.launch(&F32_TO_BF16, elementwise(input.len()), &params)
}

/// Rounds `scale · input[i]` to bf16 into `output[i]` for the first `count` elements (either buffer
/// may be longer, as reused scratch is).
pub fn scaled_f32_to_bf16(
    device: &Device,
    input: &Buffer<f32>,
    scale: f32,
    output: &mut Buffer<u16>,
    count: usize,
) -> Result<()> {
    let name = SCALED_F32_TO_BF16.name;
    for (what, len) in [("input", input.len()), ("output", output.len())] {
        if len < count {
            return Err(invalid(
                name,
                what,
                format!("at least {count} elements"),
                len,
            ));
        }
    }
    if count == 0 {
        return Ok(());
    }
    let params = ScaledConvertParams {
        input: device.pointer(input, "input")?,
        output: device.pointer_mut(output, "output")?,
        scale,
        count: count as u64,
    };
    device.launch(&SCALED_F32_TO_BF16, elementwise(count), &params)
}

/// Widens `input` (bf16) to f32 into `output` (same length).
pub fn bf16_to_f32(device: &Device, input: &Buffer<u16>, output: &mut Buffer<f32>) -> Result<()> {
    check_len(BF16_TO_F32.name, "output", output, input.len())?;
    if input.is_empty() {
        return Ok(());
    }
    let params = ConvertParams {
        values_f32: device.pointer_mut(output, "output")?,
        // The kernel only reads the bf16 side.
        values_bf16: device.pointer(input, "input")?.cast_mut(),
        count: input.len() as u64,
    };
    device.launch(&BF16_TO_F32, elementwise(input.len()), &params)
}

/// `out = silu(gate) · up`, elementwise.
pub fn swiglu_forward(
    device: &Device,
    out: &mut Buffer<u16>,
    gate: &Buffer<u16>,
    up: &Buffer<u16>,
) -> Result<()> {
    let name = SWIGLU_FORWARD.name;
    check_len(name, "up", up, gate.len())?;
    check_len(name, "out", out, gate.len())?;
    if gate.is_empty() {
        return Ok(());
    }
    let params = SwigluParams {
        gate: device.pointer(gate, "gate")?,
        up: device.pointer(up, "up")?,
        out: device.pointer_mut(out, "out")?,
        count: gate.len() as u64,
    };
    device.launch(&SWIGLU_FORWARD, elementwise(gate.len()), &params)
}

/// Accumulates `dgate += dout·up·silu'(gate)` and `dup += dout·silu(gate)`.
pub fn swiglu_backward(
    device: &Device,
    dgate: &mut Buffer<u16>,
    dup: &mut Buffer<u16>,
    dout: &Buffer<u16>,
    gate: &Buffer<u16>,
    up: &Buffer<u16>,
) -> Result<()> {
    let name = SWIGLU_BACKWARD.name;
    let count = dout.len();
    for (what, len) in [
        ("gate", gate.len()),
        ("up", up.len()),
        ("dgate", dgate.len()),
        ("dup", dup.len()),
    ] {
        if len != count {
            return Err(invalid(name, what, format!("{count} elements"), len));
        }
    }
    if count == 0 {
        return Ok(());
    }
    let params = SwigluBackwardParams {
        dout: device.pointer(dout, "dout")?,
        gate: device.pointer(gate, "gate")?,
        up: device.pointer(up, "up")?,
        dgate: device.pointer_mut(dgate, "dgate")?,
        dup: device.pointer_mut(dup, "dup")?,
        count: count as u64,
    };
    device.launch(&SWIGLU_BACKWARD, elementwise(count), &params)
}

/// The rotary angles on the device: cos and sin `[max_positions][head_dim / 2]` (f32), computed in
/// f64 by [`RopeTable`] with the positions divided by the interpolation `factor`.
pub struct DeviceRopeTable {
    cos: Buffer<f32>,
    sin: Buffer<f32>,
    half_dim: usize,
    max_positions: usize,
}

impl DeviceRopeTable {
    pub fn new(
        device: &Device,
        max_positions: usize,
        head_dim: usize,
        theta: f64,
        factor: f64,
    ) -> Result<DeviceRopeTable> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(invalid(
                ROPE.name,
                "head_dim",
                "a positive even number",
                head_dim,
            ));
        }
        let table = RopeTable::<f64>::new(max_positions, head_dim, theta, factor);
        let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        Ok(DeviceRopeTable {
            cos: device.upload(&narrow(&table.cos))?,
            sin: device.upload(&narrow(&table.sin))?,
            half_dim: head_dim / 2,
            max_positions,
        })
    }
}

/// Rotates `x` (`rows × heads × head_dim`, bf16) in place; `positions[row]` (`< max_positions`, or the
/// row becomes NaN) is each row's position.
pub fn rope_forward(
    device: &Device,
    x: &mut Buffer<u16>,
    table: &DeviceRopeTable,
    positions: &Buffer<u32>,
    heads: usize,
) -> Result<()> {
    rope(device, x, table, positions, heads, 1.0)
}

/// Maps the gradient of the rotated tensor to the gradient of its input, in place.
pub fn rope_backward(
    device: &Device,
    dx: &mut Buffer<u16>,
    table: &DeviceRopeTable,
    positions: &Buffer<u32>,
    heads: usize,
) -> Result<()> {
    rope(device, dx, table, positions, heads, -1.0)
}

fn rope(
    device: &Device,
    x: &mut Buffer<u16>,
    table: &DeviceRopeTable,
    positions: &Buffer<u32>,
    heads: usize,
    sign: f32,
) -> Result<()> {
    let name = ROPE.name;
    let rows = positions.len();
    check_len(name, "x", x, rows * heads * 2 * table.half_dim)?;
    if x.is_empty() {
        return Ok(());
    }
    let params = RopeParams {
        x: device.pointer_mut(x, "x")?,
        cos: device.pointer(&table.cos, "cos table")?,
        sin: device.pointer(&table.sin, "sin table")?,
        positions: device.pointer(positions, "positions")?,
        rows: to_u32(name, "rows", rows)?,
        heads: to_u32(name, "heads", heads)?,
        half_dim: to_u32(name, "head_dim", table.half_dim)?,
        max_positions: to_u32(name, "max_positions", table.max_positions)?,
        sign,
    };
    device.launch(&ROPE, elementwise(rows * heads * table.half_dim), &params)
}

/// `out[r] = table[tokens[r]]` (`table` is `[vocab][dim]`); a token `>= vocab` gives a NaN row.
pub fn embedding_forward(
    device: &Device,
    out: &mut Buffer<u16>,
    tokens: &Buffer<u32>,
    table: &Buffer<u16>,
    dim: usize,
) -> Result<()> {
    let name = EMBEDDING_FORWARD.name;
    let vocab = rows_of(name, "table", table, dim)?;
    check_len(name, "out", out, tokens.len() * dim)?;
    if tokens.is_empty() {
        return Ok(());
    }
    let params = EmbeddingParams {
        tokens: device.pointer(tokens, "tokens")?,
        table: device.pointer(table, "table")?,
        out: device.pointer_mut(out, "out")?,
        rows: to_u32(name, "tokens", tokens.len())?,
        dim: to_u32(name, "dim", dim)?,
        vocab: to_u32(name, "vocab", vocab)?,
    };
    device.launch(&EMBEDDING_FORWARD, elementwise(tokens.len() * dim), &params)
}

/// `dtable[tokens[r]] += dout[r]` (f32; a repeated token receives every gradient, tokens `>= vocab`
/// none).
pub fn embedding_backward(
    device: &Device,
    dtable: &mut Buffer<f32>,
    dout: &Buffer<u16>,
    tokens: &Buffer<u32>,
    dim: usize,
) -> Result<()> {
    let name = EMBEDDING_BACKWARD.name;
    let vocab = rows_of(name, "dtable", dtable, dim)?;
    check_len(name, "dout", dout, tokens.len() * dim)?;
    if tokens.is_empty() {
        return Ok(());
    }
    let params = EmbeddingBackwardParams {
        tokens: device.pointer(tokens, "tokens")?,
        dout: device.pointer(dout, "dout")?,
        dtable: device.pointer_mut(dtable, "dtable")?,
        rows: to_u32(name, "tokens", tokens.len())?,
        dim: to_u32(name, "dim", dim)?,
        vocab: to_u32(name, "vocab", vocab)?,
    };
    device.launch(
        &EMBEDDING_BACKWARD,
        elementwise(tokens.len() * dim),
        &params,
    )
}

/// Normalises each row of `x` (`rows × dim`): `out = weight ∘ x · rstd` with an f32 `weight`, saving
/// `rstd` (f32, `[rows]`).
pub fn rmsnorm_forward(
    device: &Device,
    out: &mut Buffer<u16>,
    rstd: &mut Buffer<f32>,
    x: &Buffer<u16>,
    weight: &Buffer<f32>,
    dim: usize,
    eps: f32,
) -> Result<()> {
    let name = RMSNORM_FORWARD.name;
    let rows = rows_of(name, "x", x, dim)?;
    check_len(name, "weight", weight, dim)?;
    check_len(name, "out", out, x.len())?;
    check_len(name, "rstd", rstd, rows)?;
    if rows == 0 {
        return Ok(());
    }
    let params = RmsnormForwardParams {
        x: device.pointer(x, "x")?,
        weight: device.pointer(weight, "weight")?,
        out: device.pointer_mut(out, "out")?,
        rstd: device.pointer_mut(rstd, "rstd")?,
        rows: rows as u32,
        dim: to_u32(name, "dim", dim)?,
        eps,
    };
    device.launch(&RMSNORM_FORWARD, per_row(name, rows)?, &params)
}

/// Accumulates `dx` (bf16) and, unless frozen (`None`), `dweight` (f32, `[dim]`) from `dout`.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    device: &Device,
    dx: &mut Buffer<u16>,
    dweight: Option<&mut Buffer<f32>>,
    dout: &Buffer<u16>,
    x: &Buffer<u16>,
    weight: &Buffer<f32>,
    rstd: &Buffer<f32>,
    dim: usize,
) -> Result<()> {
    let name = RMSNORM_BACKWARD.name;
    let rows = rows_of(name, "x", x, dim)?;
    check_len(name, "weight", weight, dim)?;
    check_len(name, "dout", dout, x.len())?;
    check_len(name, "dx", dx, x.len())?;
    check_len(name, "rstd", rstd, rows)?;
    let trains_weight = dweight.is_some();
    // dweight's partial sums: the launch layer opts in past 48 KB and refuses what a block cannot hold.
    let shared_bytes = u32::try_from(dim * size_of::<f32>())
        .map_err(|_| invalid(name, "dim", "at most 2^30 with a trained weight", dim))?;
    let dweight = match dweight {
        Some(dw) => {
            check_len(name, "dweight", dw, dim)?;
            device.pointer_mut(dw, "dweight")?
        }
        None => std::ptr::null_mut(),
    };
    if rows == 0 {
        return Ok(());
    }
    let params = RmsnormBackwardParams {
        dy: device.pointer(dout, "dout")?,
        x: device.pointer(x, "x")?,
        weight: device.pointer(weight, "weight")?,
        rstd: device.pointer(rstd, "rstd")?,
        dx: device.pointer_mut(dx, "dx")?,
        dweight,
        rows: rows as u32,
        dim: to_u32(name, "dim", dim)?,
    };
    // At least RMSNORM_ROWS_PER_BLOCK rows per block, each block summing dweight in shared memory.
    let blocks = rows
        .div_ceil(RMSNORM_ROWS_PER_BLOCK)
        .min(MAX_RMSNORM_BLOCKS);
    let config = LaunchConfig {
        grid: [blocks as u32, 1, 1],
        block: [ROW_THREADS, 1, 1],
        dynamic_shared_bytes: if trains_weight { shared_bytes } else { 0 },
    };
    device.launch(&RMSNORM_BACKWARD, config, &params)
}

/// Per row of `logits` (`rows × vocab`): the log-sum-exp into `lse` and the loss `lse − logit[target]`
/// into `loss` (both f32, `[rows]`; the loss is 0 where the target is -100 and NaN where it is out of
/// range). Sum `loss` and divide by the scored count for the mean.
pub fn cross_entropy_forward(
    device: &Device,
    lse: &mut Buffer<f32>,
    loss: &mut Buffer<f32>,
    logits: &Buffer<u16>,
    targets: &Buffer<i32>,
    vocab: usize,
) -> Result<()> {
    let name = CROSS_ENTROPY_FORWARD.name;
    let rows = targets.len();
    check_len(name, "logits", logits, rows * vocab)?;
    check_len(name, "lse", lse, rows)?;
    check_len(name, "loss", loss, rows)?;
    if rows == 0 {
        return Ok(());
    }
    if vocab == 0 {
        return Err(invalid(name, "vocab", "at least 1", vocab));
    }
    let params = CrossEntropyForwardParams {
        logits: device.pointer(logits, "logits")?,
        targets: device.pointer(targets, "targets")?,
        lse: device.pointer_mut(lse, "lse")?,
        loss: device.pointer_mut(loss, "loss")?,
        rows: rows as u32,
        vocab: to_u32(name, "vocab", vocab)?,
    };
    device.launch(&CROSS_ENTROPY_FORWARD, per_row(name, rows)?, &params)
}

/// Accumulates `dlogits += dloss · (softmax(logits) − onehot(target))` for scored rows, from the
/// forward's `lse`; `dloss` is the gradient of the reported loss w.r.t. each row's (1/count for a mean).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_backward(
    device: &Device,
    dlogits: &mut Buffer<u16>,
    logits: &Buffer<u16>,
    targets: &Buffer<i32>,
    lse: &Buffer<f32>,
    vocab: usize,
    dloss: f32,
) -> Result<()> {
    let name = CROSS_ENTROPY_BACKWARD.name;
    let rows = targets.len();
    check_len(name, "logits", logits, rows * vocab)?;
    check_len(name, "dlogits", dlogits, rows * vocab)?;
    check_len(name, "lse", lse, rows)?;
    if rows == 0 {
        return Ok(());
    }
    let params = CrossEntropyBackwardParams {
        logits: device.pointer(logits, "logits")?,
        targets: device.pointer(targets, "targets")?,
        lse: device.pointer(lse, "lse")?,
        dlogits: device.pointer_mut(dlogits, "dlogits")?,
        rows: rows as u32,
        vocab: to_u32(name, "vocab", vocab)?,
        dloss,
    };
    device.launch(&CROSS_ENTROPY_BACKWARD, per_row(name, rows)?, &params)
}
