//! The per-element passes of the softmax over a tile row: the row maximum and `exp(x − shift)`
//! with its sum. Next to the tile GEMMs these are the attention's hot loops, so they are written to
//! vectorise: eight independent running maxima and sums (a single fold would serialise on the
//! add latency), and for f32 an exp built from plain arithmetic instead of a libm call. f64 keeps
//! the libm exp: it is the precision the gradient checks demand, not a speed path.

use std::any::TypeId;

use crate::float::{cst, Float};

const LANES: usize = 8;

/// The largest of `init` and the row's elements (−inf stays −inf for a fully masked row).
pub(super) fn row_max<T: Float>(row: &[T], init: T) -> T {
    let mut lanes = [init; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(init, |m, &x| m.max(x));
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = m.max(x);
        }
    }
    lanes.iter().fold(tail, |m, &x| m.max(x))
}

/// Replaces every `x` by `exp(x − shift)` (−inf, a masked score, becomes exactly 0) and returns
/// their sum.
pub(super) fn exp_shifted_sum<T: Float>(row: &mut [T], shift: T) -> T {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32 (same TypeId), so this reinterprets the slice as its own type.
        let row = unsafe { &mut *(row as *mut [T] as *mut [f32]) };
        let shift = shift.to_f32().expect("an f32 converts to f32");
        return cst(f64::from(sum_lanes(row, |x| exp_f32(x - shift))));
    }
    sum_lanes(row, |x| (x - shift).exp())
}

fn sum_lanes<T: Float>(row: &mut [T], f: impl Fn(T) -> T) -> T {
    let mut lanes = [T::zero(); LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, x) in lanes.iter_mut().zip(chunk) {
            *x = f(*x);
            *s += *x;
        }
    }
    let mut tail = T::zero();
    for x in chunks.into_remainder() {
        *x = f(*x);
        tail += *x;
    }
    lanes.iter().fold(tail, |s, &x| s + x)
}

/// `exp(x)` for `x <= 0` within a few ulp, branch-free so that loops over it vectorise.
/// Cody-Waite reduction `x = n·ln2 + r` with `|r| <= ln2/2`, a degree-7 Taylor polynomial for
/// `e^r` (truncation error r⁸/8! < 1e-8 relative), and `2^n` assembled in the exponent bits.
/// Results below e^-87 (under f32's normal range, and negligible next to a softmax's maximum
/// term, which is 1) are flushed to 0, which also maps −inf to 0.
fn exp_f32(x: f32) -> f32 {
    const CUTOFF: f32 = -87.0;
    // 1.5·2^23: adding it rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // ln2 split so that n·LN2_HI is exact for |n| < 2^7: LN2_HI is 0x3f317000, ln2 with its low 12
    // mantissa bits cleared.
    const LN2_HI: f32 = 0.693_115_23;
    const LN2_LO: f32 = 3.194_618_3e-5;
    let xc = x.max(CUTOFF);
    let shifted = xc * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    if x < CUTOFF {
        0.0
    } else {
        p * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_a_few_ulp_of_exp_and_flushes_masked_scores_to_zero() {
        let mut worst = 0.0f64;
        for step in 0..=870_000 {
            let x = -(step as f32) * 1e-4;
            let want = f64::from(x).exp();
            worst = worst.max((f64::from(exp_f32(x)) - want).abs() / want);
        }
        assert!(
            worst < 4.0 * f64::from(f32::EPSILON),
            "worst relative error {worst:e}"
        );
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
    }

    #[test]
    fn row_passes_match_scalar_folds_for_every_tail_length() {
        for len in 0..20 {
            let row: Vec<f32> = (0..len).map(|i| ((i * 7919) % 13) as f32 * -0.37).collect();
            let want_max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            assert_eq!(row_max(&row, f32::NEG_INFINITY), want_max, "len {len}");
            let (mut r32, mut r64) = (
                row.clone(),
                row.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
            );
            let (s32, s64) = (
                exp_shifted_sum(&mut r32, 0.5f32),
                exp_shifted_sum(&mut r64, 0.5f64),
            );
            let want: f64 = row.iter().map(|&x| (f64::from(x) - 0.5).exp()).sum();
            assert!(
                (s64 - want).abs() <= 1e-15 * want.max(1.0),
                "len {len}: f64 sum {s64} vs {want}"
            );
            assert!(
                (f64::from(s32) - want).abs() <= 1e-6 * want.max(1.0),
                "len {len}: f32 sum {s32} vs {want}"
            );
            for (a, b) in r32.iter().zip(&r64) {
                assert!(
                    (f64::from(*a) - b).abs() <= 1e-6 * b,
                    "len {len}: {a} vs {b}"
                );
            }
        }
    }
}
