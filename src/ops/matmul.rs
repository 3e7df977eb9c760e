//! Row-major matrix products used by every layer, as thin wrappers over one strided GEMM
//! (`ops::gemm`).
//!
//! `acc` selects `out += product` (true) or `out = product` (false).

use crate::float::Float;
use crate::ops::gemm::{gemm, Strided};

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
    let a = Strided {
        data: x,
        rs: k,
        cs: 1,
    };
    let b = Strided {
        data: w,
        rs: 1,
        cs: k,
    };
    gemm(out, a, b, (m, k, n), alpha, acc);
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
    let a = Strided {
        data: a,
        rs: k,
        cs: 1,
    };
    let b = Strided {
        data: b,
        rs: n,
        cs: 1,
    };
    gemm(out, a, b, (m, k, n), alpha, acc);
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
    let a = Strided {
        data: a,
        rs: 1,
        cs: m,
    };
    let b = Strided {
        data: b,
        rs: n,
        cs: 1,
    };
    gemm(out, a, b, (m, k, n), alpha, acc);
}
