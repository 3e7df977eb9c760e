//! Row-major matrix products used by every layer, as thin safe wrappers over one strided GEMM.
//!
//! `acc` selects `out += product` (true) or `out = product` (false).

use crate::float::Float;

fn beta<T: Float>(acc: bool) -> T {
    if acc {
        T::one()
    } else {
        T::zero()
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
    assert!(out.len() >= m * n && x.len() >= m * k && w.len() >= n * k);
    // SAFETY: the lengths were checked above; `out` is a distinct mutable slice.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            x.as_ptr(),
            k as isize,
            1,
            w.as_ptr(),
            1,
            k as isize,
            beta(acc),
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
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
    assert!(out.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    // SAFETY: the lengths were checked above; `out` is a distinct mutable slice.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            beta(acc),
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
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
    assert!(out.len() >= m * n && a.len() >= k * m && b.len() >= k * n);
    // SAFETY: the lengths were checked above; `out` is a distinct mutable slice.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            1,
            m as isize,
            b.as_ptr(),
            n as isize,
            1,
            beta(acc),
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}
