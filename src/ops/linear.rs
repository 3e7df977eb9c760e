//! A bias-free linear layer with an optional LoRA adapter:
//! `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ`, `s = alpha / r`, every intermediate kept at rank r.

use crate::float::Float;
use crate::model::{Linear, Param};
use crate::ops::matmul::{matmul_nn, matmul_nt, matmul_tn};
use crate::ops::narrow::{
    narrow_nn, narrow_nt, narrow_tn, narrow_tn_transposed, widen_nn, widen_nt,
};
use crate::ops::scratch::with_buffer;

/// Writes `y[m × out] = x[m × in]·Wᵀ (+ s·(x·Aᵀ)·Bᵀ)` (with `accumulate`, adds it to `y`) and
/// saves `xa = x·Aᵀ` (`m × r`) for backward.
pub fn linear_forward<T: Float>(
    y: &mut [T],
    xa: &mut [T],
    x: &[T],
    lin: &Linear<Param<T>>,
    m: usize,
    accumulate: bool,
) {
    let (n_in, n_out) = (lin.in_features(), lin.out_features());
    assert_eq!(x.len(), m * n_in, "{}: input", lin.weight.name);
    assert_eq!(y.len(), m * n_out, "{}: output", lin.weight.name);
    matmul_nt(y, x, &lin.weight.data, m, n_in, n_out, T::one(), accumulate);
    if let Some(lora) = &lin.lora {
        assert_eq!(xa.len(), m * lora.rank, "{}: x·Aᵀ", lin.weight.name);
        narrow_nt(xa, x, &lora.a.data, m, n_in, lora.rank, T::one(), false);
        widen_nt(y, xa, &lora.b.data, m, lora.rank, n_out, lora.scale());
    }
}

/// Computes the input gradient (when `dx` is given) and accumulates the gradients of the tensors
/// `grad` holds (the trained ones; `None` is frozen):
/// `dX = dY·W + s·(dY·B)·A` (with `accumulate`, `dX +=`), `dW += dYᵀ·X`, `dB += s·dYᵀ·(X·Aᵀ)`,
/// `dA += s·(dY·B)ᵀ·X`. Without `accumulate`, `dx` is only written, so it needs no zeroing first.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<T: Float>(
    dx: Option<&mut [T]>,
    grad: &mut Linear<Option<Param<T>>>,
    dy: &[T],
    x: &[T],
    lin: &Linear<Param<T>>,
    xa: &[T],
    m: usize,
    accumulate: bool,
) {
    let (n_in, n_out) = (lin.in_features(), lin.out_features());
    assert_eq!(dy.len(), m * n_out, "{}: output gradient", lin.weight.name);
    if let Some(dw) = grad.weight.as_mut() {
        matmul_tn(&mut dw.data, dy, x, n_out, m, n_in, T::one(), true);
    }
    let rank = lin.lora_rank();
    // `dY·B` (`m × r`), in a per-thread buffer so that a training step does not allocate it.
    with_buffer(m * rank, |dy_b: &mut [T]| {
        if let Some(lora) = &lin.lora {
            narrow_nn(dy_b, dy, &lora.b.data, m, n_out, rank);
            if let Some(g) = grad.lora.as_mut() {
                let s = lora.scale();
                if let Some(db) = g.b.as_mut() {
                    narrow_tn_transposed(&mut db.data, dy, xa, m, n_out, rank, s);
                }
                if let Some(da) = g.a.as_mut() {
                    narrow_tn(&mut da.data, dy_b, x, m, rank, n_in, s);
                }
            }
        }
        if let Some(dx) = dx {
            assert_eq!(dx.len(), m * n_in, "{}: input gradient", lin.weight.name);
            matmul_nn(
                dx,
                dy,
                &lin.weight.data,
                m,
                n_out,
                n_in,
                T::one(),
                accumulate,
            );
            if let Some(lora) = &lin.lora {
                widen_nn(dx, dy_b, &lora.a.data, m, rank, n_in, lora.scale());
            }
        }
    });
}
