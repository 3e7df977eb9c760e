//! The SwiGLU gate of Llama's MLP: `out = silu(gate) ∘ up`, with `silu(g) = g·σ(g)`. Both passes
//! run in parallel over chunks, each chunk one vectorised loop (`ops::simd`).

use crate::float::Float;
use crate::ops::pool;
use crate::ops::simd::{self, Kernel};

/// Elements per parallel task: enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 14;

#[inline(always)]
fn sigmoid<T: Float, const FUSED: bool>(g: T) -> T {
    (T::one() + (-g).exp_simd::<FUSED>()).recip()
}

/// `out = silu(gate) ∘ up`, elementwise.
pub fn swiglu_forward<T: Float>(out: &mut [T], gate: &[T], up: &[T]) {
    assert!(
        out.len() == gate.len() && gate.len() == up.len(),
        "swiglu lengths"
    );
    pool::for_each_chunk(out, CHUNK, |task, out| {
        let at = task * CHUNK..task * CHUNK + out.len();
        let (gate, up) = (&gate[at.clone()], &up[at]);
        simd::dispatch(Forward { out, gate, up })
    });
}

struct Forward<'a, T> {
    out: &'a mut [T],
    gate: &'a [T],
    up: &'a [T],
}

impl<T: Float> Kernel for Forward<'_, T> {
    #[inline(always)]
    fn run<const FUSED: bool>(self) {
        for (o, (&g, &u)) in self.out.iter_mut().zip(self.gate.iter().zip(self.up)) {
            *o = g * sigmoid::<T, FUSED>(g) * u;
        }
    }
}

/// Writes `dgate = dout·up·silu'(gate)` and `dup = dout·silu(gate)`; with `accumulate`, adds them
/// instead (without it the gradients are only written, so they need no zeroing first).
pub fn swiglu_backward<T: Float>(
    dgate: &mut [T],
    dup: &mut [T],
    dout: &[T],
    gate: &[T],
    up: &[T],
    accumulate: bool,
) {
    assert!(
        dgate.len() == dout.len() && dup.len() == dout.len(),
        "swiglu grads"
    );
    assert!(
        gate.len() == dout.len() && up.len() == dout.len(),
        "swiglu lengths"
    );
    pool::for_each_chunk_pair(dgate, CHUNK, dup, CHUNK, |task, dgate, dup| {
        let at = task * CHUNK..task * CHUNK + dgate.len();
        let (dout, gate, up) = (&dout[at.clone()], &gate[at.clone()], &up[at]);
        simd::dispatch(Backward {
            dgate,
            dup,
            dout,
            gate,
            up,
            accumulate,
        })
    });
}

struct Backward<'a, T> {
    dgate: &'a mut [T],
    dup: &'a mut [T],
    dout: &'a [T],
    gate: &'a [T],
    up: &'a [T],
    accumulate: bool,
}

impl<T: Float> Kernel for Backward<'_, T> {
    #[inline(always)]
    fn run<const FUSED: bool>(self) {
        let grads = self.dgate.iter_mut().zip(self.dup.iter_mut());
        let inputs = self.dout.iter().zip(self.gate.iter().zip(self.up));
        for ((dg, du), (&d, (&g, &u))) in grads.zip(inputs) {
            let s = sigmoid::<T, FUSED>(g);
            let (new_dg, new_du) = (d * u * s * (T::one() + g * (T::one() - s)), d * g * s);
            (*dg, *du) = if self.accumulate {
                (*dg + new_dg, *du + new_du)
            } else {
                (new_dg, new_du)
            };
        }
    }
}
