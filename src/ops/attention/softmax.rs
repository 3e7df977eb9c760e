//! The per-element passes of the softmax over a transposed score tile `st[key][query]` (row
//! stride `ld`): each query's running maximum, `exp(s − shift[query])` with its column sums, and
//! the backward's `dS = P ∘ (dP − delta[query])`. Next to the tile products these are the
//! attention's hot loops. In this layout every pass runs along contiguous rows with one
//! independent lane per query, so it vectorises without horizontal reductions; each pass runs
//! through `ops::simd`, compiled for AVX-512 and AVX2 as well as the baseline target, with a
//! polynomial exp for f32 (f64 keeps libm's: it is the precision the gradient checks demand, not a
//! speed path).
//!
//! A full tile's rows (`queries == BR`) are cut to the constant `BR`, with the per-query
//! statistics in fixed-size arrays, so that each row compiles to a few whole vectors and the
//! statistics stay in registers. Cut to a run-time length, a row of 64 scores is two AVX-512
//! iterations behind some forty instructions of length, bounds and overlap checks: the backward's
//! `dS` pass took as long as its exp.

#[cfg(target_arch = "x86_64")]
use std::any::TypeId;

use super::tiled::BR;
use crate::float::Float;
use crate::ops::simd::{self, Kernel};

/// A transposed score tile: `keys` rows of `queries` scores, row stride `ld`.
pub(super) struct ScoreTile<'a, T> {
    pub st: &'a mut [T],
    pub keys: usize,
    pub queries: usize,
    pub ld: usize,
}

/// Raises `max[q]` to the largest score of query q in the tile (−inf stays −inf for a query
/// whose keys in this tile are all masked).
pub(super) fn column_max<T: Float>(tile: &ScoreTile<'_, T>, max: &mut [T]) {
    simd::dispatch(ColumnMax { tile, max });
}

struct ColumnMax<'a, 'b, T> {
    tile: &'a ScoreTile<'b, T>,
    max: &'a mut [T],
}

impl<T: Float> Kernel for ColumnMax<'_, '_, T> {
    #[inline(always)]
    fn run<const FUSED: bool>(self) {
        let (queries, ld) = (self.tile.queries, self.tile.ld);
        let rows = self.tile.st.chunks(ld).take(self.tile.keys);
        let row_max = |max: &mut [T], row: &[T]| {
            for (m, &s) in max.iter_mut().zip(row) {
                *m = m.max(s);
            }
        };
        if queries == BR {
            let max: &mut [T; BR] = (&mut self.max[..BR]).try_into().unwrap();
            let mut acc = *max;
            rows.for_each(|row| row_max(&mut acc, &row[..BR]));
            *max = acc;
        } else {
            let max = &mut self.max[..queries];
            rows.for_each(|row| row_max(max, &row[..queries]));
        }
    }
}

/// Replaces every score `s` of query q by `exp(s − shift[q])` (−inf, a masked score, becomes
/// exactly 0) and adds each query's new values to `sum[q]`. In f32 on a CPU with AVX-512 it runs
/// [`simd::exp_f32x16`], the same values with fewer instructions (the exp is most of the
/// forward's time outside the tile products).
pub(super) fn exp_columns<T: Float>(tile: &mut ScoreTile<'_, T>, shift: &[T], sum: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && simd::supported(simd::Isa::Avx512) {
        let (len, keys, queries, ld) = (tile.st.len(), tile.keys, tile.queries, tile.ld);
        assert!(
            shift.len() >= queries
                && sum.len() >= queries
                && queries <= ld
                && (keys == 0 || (keys - 1) * ld + queries <= len),
            "exp_columns: tile or statistics too short"
        );
        // SAFETY: T is f32 (same TypeId), so these are the same slices in their own type; the
        // CPU has AVX-512F, and the assert keeps every element the pass touches inside them.
        return unsafe {
            exp_columns_avx512(
                std::slice::from_raw_parts_mut(tile.st.as_mut_ptr().cast(), len),
                (keys, queries, ld),
                std::slice::from_raw_parts(shift.as_ptr().cast(), queries),
                std::slice::from_raw_parts_mut(sum.as_mut_ptr().cast(), queries),
            )
        };
    }
    simd::dispatch(ExpColumns { tile, shift, sum });
}

/// [`ExpColumns`] on 16 queries at a time, each chunk's shifts and sums held in registers over the
/// keys; the summation order (key by key) is the same, so are the sums.
///
/// # Safety
/// The CPU must have AVX-512F; `st` must hold `(keys − 1)·ld + queries` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_columns_avx512(
    st: &mut [f32],
    (keys, queries, ld): (usize, usize, usize),
    shift: &[f32],
    sum: &mut [f32],
) {
    use std::arch::x86_64::*;
    for q0 in (0..queries).step_by(16) {
        let lanes: __mmask16 = if queries - q0 >= 16 {
            !0
        } else {
            (1 << (queries - q0)) - 1
        };
        // SAFETY (whole block): lanes q0.. q0 + 16 under the mask lie inside every row's first
        // `queries` elements, which the caller keeps inside the slices.
        unsafe {
            let shift_q = _mm512_maskz_loadu_ps(lanes, shift.as_ptr().add(q0));
            let mut sum_q = _mm512_maskz_loadu_ps(lanes, sum.as_ptr().add(q0));
            for key in 0..keys {
                let at = st.as_mut_ptr().add(key * ld + q0);
                let p = simd::exp_f32x16(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, at), shift_q));
                _mm512_mask_storeu_ps(at, lanes, p);
                sum_q = _mm512_add_ps(sum_q, p);
            }
            _mm512_mask_storeu_ps(sum.as_mut_ptr().add(q0), lanes, sum_q);
        }
    }
}

struct ExpColumns<'a, 'b, T> {
    tile: &'a mut ScoreTile<'b, T>,
    shift: &'a [T],
    sum: &'a mut [T],
}

impl<T: Float> Kernel for ExpColumns<'_, '_, T> {
    #[inline(always)]
    fn run<const FUSED: bool>(self) {
        let (queries, ld) = (self.tile.queries, self.tile.ld);
        let rows = self.tile.st.chunks_mut(ld).take(self.tile.keys);
        let exp_row = |row: &mut [T], shift: &[T], sum: &mut [T]| {
            for ((s, &m), total) in row.iter_mut().zip(shift).zip(sum.iter_mut()) {
                *s = (*s - m).exp_simd::<FUSED>();
                *total += *s;
            }
        };
        if queries == BR {
            let shift: [T; BR] = self.shift[..BR].try_into().unwrap();
            let sum: &mut [T; BR] = (&mut self.sum[..BR]).try_into().unwrap();
            let mut acc = *sum;
            rows.for_each(|row| exp_row(&mut row[..BR], &shift, &mut acc));
            *sum = acc;
        } else {
            let (shift, sum) = (&self.shift[..queries], &mut self.sum[..queries]);
            rows.for_each(|row| exp_row(&mut row[..queries], shift, sum));
        }
    }
}

/// Turns a tile of `dPᵀ` into `dSᵀ` in place: `ds = p ∘ (ds − delta[q])`, where `p` is the
/// tile's probabilities in the same layout and `delta[q] = dO_q · O_q`.
pub(super) fn softmax_grad_columns<T: Float>(ds: &mut ScoreTile<'_, T>, p: &[T], delta: &[T]) {
    simd::dispatch(SoftmaxGradColumns { ds, p, delta });
}

struct SoftmaxGradColumns<'a, 'b, T> {
    ds: &'a mut ScoreTile<'b, T>,
    p: &'a [T],
    delta: &'a [T],
}

impl<T: Float> Kernel for SoftmaxGradColumns<'_, '_, T> {
    #[inline(always)]
    fn run<const FUSED: bool>(self) {
        let (queries, ld) = (self.ds.queries, self.ds.ld);
        let rows = self
            .ds
            .st
            .chunks_mut(ld)
            .zip(self.p.chunks(ld))
            .take(self.ds.keys);
        let grad_row = |ds: &mut [T], p: &[T], delta: &[T]| {
            for ((g, &p), &d) in ds.iter_mut().zip(p).zip(delta) {
                *g = p * (*g - d);
            }
        };
        if queries == BR {
            let delta: [T; BR] = self.delta[..BR].try_into().unwrap();
            rows.for_each(|(ds, p)| grad_row(&mut ds[..BR], &p[..BR], &delta));
        } else {
            let delta = &self.delta[..queries];
            rows.for_each(|(ds, p)| grad_row(&mut ds[..queries], &p[..queries], delta));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `keys × ld` score tile of mixed signs and magnitudes, every eleventh score masked (−inf).
    fn ragged_scores(keys: usize, ld: usize) -> Vec<f32> {
        (0..keys * ld)
            .map(|i| match i % 11 {
                0 => f32::NEG_INFINITY,
                r => (r as f32 * 0.37 - 2.0) * if i % 2 == 0 { 1.0 } else { -3.0 },
            })
            .collect()
    }

    /// A transposed tile with ragged sizes, padding columns that must not change, and masked
    /// scores; f32 on every instruction set this CPU has, against f64.
    #[test]
    fn column_passes_match_scalar_definitions() {
        for (keys, queries, ld) in [
            (1, 1, 1),
            (7, 5, 9),
            (64, 64, 64),
            (33, 17, 20),
            (64, 3, 64),
            (5, 64, 70),
        ] {
            let st = ragged_scores(keys, ld);
            let want_max: Vec<f32> = (0..queries)
                .map(|q| {
                    (0..keys)
                        .map(|k| st[k * ld + q])
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect();
            for name in simd::available() {
                // One query starts above every score, so the pass must keep the running max.
                let mut max = vec![f32::NEG_INFINITY; queries];
                max[0] = 100.0;
                simd::run_on(
                    name,
                    ColumnMax {
                        tile: &ScoreTile {
                            st: &mut st.clone(),
                            keys,
                            queries,
                            ld,
                        },
                        max: &mut max,
                    },
                );
                for q in 0..queries {
                    let want = if q == 0 { 100.0 } else { want_max[q] };
                    assert_eq!(max[q], want, "{name:?}: max of query {q}");
                }
            }
            let max = want_max;
            let shift: Vec<f32> = max
                .iter()
                .map(|&m| if m.is_finite() { m } else { 0.0 })
                .collect();
            for name in simd::available() {
                let (mut got, mut sum) = (st.clone(), vec![0.5f32; queries]);
                simd::run_on(
                    name,
                    ExpColumns {
                        tile: &mut ScoreTile {
                            st: &mut got,
                            keys,
                            queries,
                            ld,
                        },
                        shift: &shift,
                        sum: &mut sum,
                    },
                );
                for q in 0..queries {
                    let mut want_sum = 0.5f64;
                    for k in 0..keys {
                        // The difference is rounded to f32 before the exp, as in the kernel.
                        let want = f64::from(st[k * ld + q] - shift[q]).exp();
                        want_sum += want;
                        let g = f64::from(got[k * ld + q]);
                        assert!(
                            (g - want).abs() <= 2.5e-7 * want,
                            "{name:?}: p[{k}][{q}] = {g}, expected {want}"
                        );
                    }
                    assert!(
                        (f64::from(sum[q]) - want_sum).abs() <= 1e-6 * want_sum,
                        "{name:?}: sum[{q}]"
                    );
                }
                for (i, (&g, &s)) in got.iter().zip(&st).enumerate() {
                    if i % ld >= queries {
                        assert_eq!(
                            g.to_bits(),
                            s.to_bits(),
                            "{name:?}: padding column changed at {i}"
                        );
                    }
                }
            }
        }
    }

    /// The pass as the attention calls it (the explicit 16-lane loop) against the generic kernel
    /// compiled for AVX-512: the same bits, padding columns untouched.
    #[test]
    fn exp_columns_agrees_bitwise_with_the_generic_kernel() {
        if !simd::supported(simd::Isa::Avx512) {
            eprintln!("skipped: without AVX-512, exp_columns is the generic kernel itself");
            return;
        }
        for (keys, queries, ld) in [
            (1, 1, 1),
            (7, 5, 9),
            (64, 64, 64),
            (33, 17, 20),
            (3, 40, 48),
        ] {
            let st = ragged_scores(keys, ld);
            let shift: Vec<f32> = (0..queries).map(|q| q as f32 * 0.25 - 1.0).collect();
            let (mut got, mut got_sum) = (st.clone(), vec![0.5f32; queries]);
            exp_columns(
                &mut ScoreTile {
                    st: &mut got,
                    keys,
                    queries,
                    ld,
                },
                &shift,
                &mut got_sum,
            );
            let (mut want, mut want_sum) = (st.clone(), vec![0.5f32; queries]);
            simd::run_on(
                simd::Isa::Avx512,
                ExpColumns {
                    tile: &mut ScoreTile {
                        st: &mut want,
                        keys,
                        queries,
                        ld,
                    },
                    shift: &shift,
                    sum: &mut want_sum,
                },
            );
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{keys}x{queries} (ld {ld}): p");
            assert_eq!(bits(&got_sum), bits(&want_sum), "{keys}x{queries}: sums");
        }
    }

    /// `ds = p ∘ (dp − delta)` on ragged tiles with padding columns, every instruction set.
    #[test]
    fn softmax_grad_pass_matches_its_definition() {
        for (keys, queries, ld) in [
            (1, 1, 1),
            (7, 5, 9),
            (64, 64, 64),
            (33, 17, 20),
            (5, 64, 70),
        ] {
            let value = |i: usize, scale: f32| ((i * 7919) % 23) as f32 * scale - 1.0;
            let p: Vec<f32> = (0..keys * ld).map(|i| value(i, 0.04)).collect();
            let dp: Vec<f32> = (0..keys * ld).map(|i| value(i + 5, 0.3)).collect();
            let delta: Vec<f32> = (0..queries).map(|q| value(q + 11, 0.2)).collect();
            for name in simd::available() {
                let mut ds = dp.clone();
                simd::run_on(
                    name,
                    SoftmaxGradColumns {
                        ds: &mut ScoreTile {
                            st: &mut ds,
                            keys,
                            queries,
                            ld,
                        },
                        p: &p,
                        delta: &delta,
                    },
                );
                for (i, &got) in ds.iter().enumerate() {
                    let q = i % ld;
                    let want = if q < queries {
                        p[i] * (dp[i] - delta[q])
                    } else {
                        dp[i]
                    };
                    assert_eq!(got.to_bits(), want.to_bits(), "{name:?}: ds[{i}]");
                }
            }
        }
    }
}
