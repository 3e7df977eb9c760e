//! Row-major matrix products used by every layer, as thin safe wrappers over one strided GEMM.
//!
//! `acc` selects `out += product` (true) or `out = product` (false).

use crate::float::Float;

/// A row-major operand and the strides at which the GEMM reads it (rows, columns).
struct Operand<'a, T> {
    data: &'a [T],
    rs: usize,
    cs: usize,
}

/// `out[m×n] (+)= alpha · a[m×k] · b[k×n]` for operands read through their strides.
#[allow(clippy::too_many_arguments)]
fn gemm<T: Float>(
    out: &mut [T],
    a: Operand<'_, T>,
    b: Operand<'_, T>,
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    acc: bool,
) {
    let last = |o: &Operand<'_, T>, rows: usize, cols: usize| {
        (rows.max(1) - 1) * o.rs + (cols.max(1) - 1) * o.cs
    };
    assert!(
        out.len() >= m * n,
        "matmul output holds {} < {m}×{n}",
        out.len()
    );
    assert!(
        m * k == 0 || a.data.len() > last(&a, m, k),
        "matmul left operand too short"
    );
    assert!(
        k * n == 0 || b.data.len() > last(&b, k, n),
        "matmul right operand too short"
    );
    // SAFETY: the asserts above keep every strided read inside its slice and every write inside
    // `out`, which is a distinct mutable borrow.
    unsafe {
        T::gemm_raw(
            (m, k, n),
            alpha,
            (a.data.as_ptr(), a.rs as isize, a.cs as isize),
            (b.data.as_ptr(), b.rs as isize, b.cs as isize),
            acc,
            (out.as_mut_ptr(), n as isize, 1),
        );
    }
}

/// `out[m×n] (+)= alpha · x[m×k] · w[n×k]ᵀ` (the layout of `nn.Linear` weights).
#[allow(clippy::too_many_arguments)]
pub fn matmul_nt<T: Float>(
    out: &mut [T],
    x: &[T],
    w: &[T],
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    acc: bool,
) {
    let a = Operand {
        data: x,
        rs: k,
        cs: 1,
    };
    let b = Operand {
        data: w,
        rs: 1,
        cs: k,
    };
    gemm(out, a, b, m, k, n, alpha, acc);
}

/// `out[m×n] (+)= alpha · a[m×k] · b[k×n]`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_nn<T: Float>(
    out: &mut [T],
    a: &[T],
    b: &[T],
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    acc: bool,
) {
    let a = Operand {
        data: a,
        rs: k,
        cs: 1,
    };
    let b = Operand {
        data: b,
        rs: n,
        cs: 1,
    };
    gemm(out, a, b, m, k, n, alpha, acc);
}

/// `out[m×n] (+)= alpha · a[k×m]ᵀ · b[k×n]` (weight gradients: `dW = dYᵀ·X`).
#[allow(clippy::too_many_arguments)]
pub fn matmul_tn<T: Float>(
    out: &mut [T],
    a: &[T],
    b: &[T],
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    acc: bool,
) {
    let a = Operand {
        data: a,
        rs: 1,
        cs: m,
    };
    let b = Operand {
        data: b,
        rs: n,
        cs: 1,
    };
    gemm(out, a, b, m, k, n, alpha, acc);
}
