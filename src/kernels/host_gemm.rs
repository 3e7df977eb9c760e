//! The emulator's stand-in for cuBLAS: the same column-major [`Gemm`] on host memory (the emulator's
//! buffers), bf16 operands widened to f32, each output a sum over k in order, then `+ beta·c` and one
//! rounding for a bf16 output. cuBLAS sums in an order of its own, so results agree to rounding, not
//! bit for bit; what this lets the CPU check is everything around the library call: which matrices,
//! leading dimensions, transposes and betas the linear layers hand it.

use half::bf16;

use super::cublas::{Gemm, GemmOutput};

/// Runs `gemm`, whose addresses are host memory holding the matrices it describes (the caller
/// checked their lengths).
pub(crate) fn run(gemm: &Gemm) {
    let Gemm { m, n, k, .. } = *gemm;
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: the caller's buffers hold the m x k, k x n and m x n matrices at these leading
    // dimensions; c is a different buffer from a and b (it is borrowed mutably where they are not).
    let (a, b) = unsafe {
        (
            operand(gemm.a, gemm.lda, gemm.transpose_a, m, k),
            operand(gemm.b, gemm.ldb, gemm.transpose_b, k, n),
        )
    };
    let a_at = |i: usize, p: usize| match gemm.transpose_a {
        true => a[i * gemm.lda + p],
        false => a[p * gemm.lda + i],
    };
    let b_at = |p: usize, j: usize| match gemm.transpose_b {
        true => b[p * gemm.ldb + j],
        false => b[j * gemm.ldb + p],
    };
    let widen = |bits: u16| bf16::from_bits(bits).to_f32();
    let sum = |i: usize, j: usize| {
        (0..k).fold(0.0f32, |sum, p| sum + widen(a_at(i, p)) * widen(b_at(p, j)))
    };
    let len = gemm.ldc * (n - 1) + m;
    // As cuBLAS does, beta = 0 does not read c, so whatever it held (NaN) is overwritten.
    let old = |value: f32| {
        if gemm.beta == 0.0 {
            0.0
        } else {
            gemm.beta * value
        }
    };
    match gemm.c_type {
        GemmOutput::Bf16 => {
            // SAFETY: as above; c holds len bf16 elements and is not a or b.
            let c = unsafe { std::slice::from_raw_parts_mut(gemm.c as *mut u16, len) };
            for j in 0..n {
                for i in 0..m {
                    let at = j * gemm.ldc + i;
                    c[at] = bf16::from_f32(sum(i, j) + old(widen(c[at]))).to_bits();
                }
            }
        }
        GemmOutput::F32 => {
            // SAFETY: as above; c holds len f32 elements and is not a or b.
            let c = unsafe { std::slice::from_raw_parts_mut(gemm.c as *mut f32, len) };
            for j in 0..n {
                for i in 0..m {
                    let at = j * gemm.ldc + i;
                    c[at] = sum(i, j) + old(c[at]);
                }
            }
        }
    }
}

/// The stored elements of a `rows x cols` operand (as the product reads it) at `address`.
///
/// # Safety
/// `address` points to host memory holding the operand at leading dimension `ld`.
unsafe fn operand<'a>(
    address: u64,
    ld: usize,
    transposed: bool,
    rows: usize,
    cols: usize,
) -> &'a [u16] {
    let (stored_rows, stored_cols) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    std::slice::from_raw_parts(address as *const u16, ld * (stored_cols - 1) + stored_rows)
}
