//! bf16 matrices as the GEMM kernels read them: every row on a 16-byte boundary, so that each tile
//! moves in 16-byte cp.async copies. A matrix whose row length is not a multiple of 8 elements (a
//! vocabulary of 258, a LoRA rank of 1) is copied into scratch with its rows padded with zeros
//! (cuda/pad_rows.cu); the others are read in place.

use super::params::{PadRowsParams, LORA_ROW_ALIGN};
use super::{invalid, Buffer, Device, Element, LaunchConfig, Result};

kernels! {
    PAD_ROWS = pad_rows_kernel / longlora_emu_pad_rows_kernel(PadRowsParams);
}

// SAFETY: a plain C struct (params.h) of integers and device pointers, which the kernel takes by value.
unsafe impl cudarc::driver::DeviceRepr for PadRowsParams {}

const PAD_THREADS: u32 = 256;
const MAX_PAD_BLOCKS_ACROSS: usize = 64;
const MAX_PAD_ROWS_PER_LAUNCH: usize = 65_535;

/// A bf16 matrix as a GEMM kernel reads it: its address and row stride (a multiple of 8 elements).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operand {
    pub(crate) pointer: *const u16,
    pub(crate) ld: u32,
}

/// The row stride that puts every row of `cols` bf16 elements on a 16-byte boundary.
pub(crate) fn aligned_stride(cols: usize) -> usize {
    cols.next_multiple_of(LORA_ROW_ALIGN as usize)
}

/// A buffer kept from call to call, grown when a call needs more and never shrunk.
pub(crate) fn grown<'a, T: Element>(
    device: &Device,
    slot: &'a mut Option<Buffer<T>>,
    len: usize,
) -> Result<&'a mut Buffer<T>> {
    let buffer = match slot.take() {
        Some(buffer) if buffer.len() >= len => buffer,
        _ => device.scratch(len.max(1))?,
    };
    Ok(slot.insert(buffer))
}

/// `matrix` (`[rows][cols]`, operand `what` of `kernel` in errors) with its rows on 16-byte
/// boundaries: the matrix itself when `cols` is a multiple of 8, else a copy with its rows padded with
/// zeros, made in `slot`.
pub(crate) fn aligned_operand(
    device: &Device,
    kernel: &'static str,
    matrix: &Buffer<u16>,
    rows: usize,
    cols: usize,
    slot: &mut Option<Buffer<u16>>,
    what: &'static str,
) -> Result<Operand> {
    let ld = aligned_stride(cols);
    let ld_u32 = u32::try_from(ld).map_err(|_| invalid(kernel, what, "rows < 2^32", cols))?;
    if ld == cols {
        let pointer = device.pointer(matrix, what)?;
        // Allocations are 16-byte aligned (malloc, cuMemAlloc); this guards the kernels' assumption.
        if !(pointer as usize).is_multiple_of(16) {
            let got = format!("address {pointer:p}");
            return Err(invalid(kernel, what, "a 16-byte aligned address", got));
        }
        return Ok(Operand {
            pointer,
            ld: ld_u32,
        });
    }
    let padded = grown(device, slot, rows * ld)?;
    let destination = device.pointer_mut(padded, what)?;
    let source = device.pointer(matrix, what)?;
    // Launches of at most 65535 rows each (grid y).
    for first in (0..rows).step_by(MAX_PAD_ROWS_PER_LAUNCH) {
        let count = (rows - first).min(MAX_PAD_ROWS_PER_LAUNCH);
        let params = PadRowsParams {
            // Device addresses within the buffers (first < rows): not dereferenced here.
            source: source.wrapping_add(first * cols),
            destination: destination.wrapping_add(first * ld),
            rows: count as u32,
            cols: cols as u32,
            ld: ld_u32,
        };
        let config = LaunchConfig {
            grid: [
                ld.div_ceil(PAD_THREADS as usize).min(MAX_PAD_BLOCKS_ACROSS) as u32,
                count as u32,
                1,
            ],
            block: [PAD_THREADS, 1, 1],
            dynamic_shared_bytes: 0,
        };
        device.launch(&PAD_ROWS, config, &params)?;
    }
    Ok(Operand {
        pointer: destination.cast_const(),
        ld: ld_u32,
    })
}
