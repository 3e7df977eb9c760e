//! The SwiGLU gate of Llama's MLP: `out = silu(gate) ∘ up`, with `silu(g) = g·σ(g)`.

use rayon::prelude::*;

use crate::float::Float;

fn sigmoid<T: Float>(g: T) -> T {
    (T::one() + (-g).exp()).recip()
}

/// `out = silu(gate) ∘ up`, elementwise.
pub fn swiglu_forward<T: Float>(out: &mut [T], gate: &[T], up: &[T]) {
    assert!(
        out.len() == gate.len() && gate.len() == up.len(),
        "swiglu lengths"
    );
    out.par_iter_mut()
        .zip(gate.par_iter().zip(up.par_iter()))
        .for_each(|(o, (&g, &u))| *o = g * sigmoid(g) * u);
}

/// Accumulates `dgate += dout·up·silu'(gate)` and `dup += dout·silu(gate)`.
pub fn swiglu_backward<T: Float>(dgate: &mut [T], dup: &mut [T], dout: &[T], gate: &[T], up: &[T]) {
    assert!(
        dgate.len() == dout.len() && dup.len() == dout.len(),
        "swiglu grads"
    );
    dgate
        .par_iter_mut()
        .zip(dup.par_iter_mut())
        .zip(dout.par_iter().zip(gate.par_iter().zip(up.par_iter())))
        .for_each(|((dg, du), (&d, (&g, &u)))| {
            let s = sigmoid(g);
            *dg += d * u * s * (T::one() + g * (T::one() - s));
            *du += d * g * s;
        });
}
