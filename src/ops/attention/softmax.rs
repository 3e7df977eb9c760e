//! The per-element passes of the softmax over a transposed score tile `st[key][query]` (row
//! stride `ld`): each query's running maximum, and `exp(s − shift[query])` with its column sums.
//! Next to the tile products these are the attention's hot loops. In this layout every pass runs
//! along contiguous rows with one independent lane per query, so it vectorises without
//! horizontal reductions; for f32 the exp is plain arithmetic (no libm call) compiled for
//! AVX-512 and AVX2 as well as the baseline target and chosen at run time. f64 keeps the libm
//! exp: it is the precision the gradient checks demand, not a speed path.

use std::any::TypeId;

use crate::float::Float;

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
    let max = &mut max[..tile.queries];
    for row in tile.st.chunks(tile.ld).take(tile.keys) {
        for (m, &s) in max.iter_mut().zip(row) {
            *m = m.max(s);
        }
    }
}

/// Replaces every score `s` of query q by `exp(s − shift[q])` (−inf, a masked score, becomes
/// exactly 0) and adds each query's new values to `sum[q]`.
pub(super) fn exp_columns<T: Float>(tile: &mut ScoreTile<'_, T>, shift: &[T], sum: &mut [T]) {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: T is f32 (same TypeId), so these reinterpret the slices as their own type.
        let (st, shift, sum) = unsafe {
            (
                &mut *(tile.st as *mut [T] as *mut [f32]),
                &*(shift as *const [T] as *const [f32]),
                &mut *(sum as *mut [T] as *mut [f32]),
            )
        };
        let mut tile32 = ScoreTile {
            st,
            keys: tile.keys,
            queries: tile.queries,
            ld: tile.ld,
        };
        return exp_columns_f32(&mut tile32, shift, sum);
    }
    exp_columns_with(tile, shift, sum, |x| x.exp());
}

fn exp_columns_f32(tile: &mut ScoreTile<'_, f32>, shift: &[f32], sum: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { exp_columns_avx512(tile, shift, sum) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            return unsafe { exp_columns_avx2(tile, shift, sum) };
        }
    }
    exp_columns_with(tile, shift, sum, exp_f32);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_columns_avx512(tile: &mut ScoreTile<'_, f32>, shift: &[f32], sum: &mut [f32]) {
    exp_columns_with(tile, shift, sum, exp_f32);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_columns_avx2(tile: &mut ScoreTile<'_, f32>, shift: &[f32], sum: &mut [f32]) {
    exp_columns_with(tile, shift, sum, exp_f32);
}

#[inline(always)]
fn exp_columns_with<T: Float>(
    tile: &mut ScoreTile<'_, T>,
    shift: &[T],
    sum: &mut [T],
    exp: impl Fn(T) -> T,
) {
    let (shift, sum) = (&shift[..tile.queries], &mut sum[..tile.queries]);
    for row in tile.st.chunks_mut(tile.ld).take(tile.keys) {
        for ((s, &m), total) in row.iter_mut().zip(shift).zip(sum.iter_mut()) {
            *s = exp(*s - m);
            *total += *s;
        }
    }
}

/// `exp(x)` for f32, branch-free so that loops over it vectorise. Within 2 ulp of the exact value
/// for `-87 <= x <= 88` (tested over that whole range); below −87 (under e^-87 ≈ 1.6e-38, the
/// bottom of f32's normal range, and nothing next to a softmax's largest term, which is 1) the
/// result is 0, so −inf gives exactly 0; NaN gives NaN.
///
/// Cody-Waite reduction `x = n·ln2 + r` with `|r| <= ln2/2`, a degree-7 Taylor polynomial for
/// `e^r` (truncation error r⁸/8! < 1e-8 relative), and `2^n` assembled in the exponent bits.
#[inline(always)]
pub(super) fn exp_f32(x: f32) -> f32 {
    const CUTOFF: f32 = -87.0;
    // 1.5·2^23: adding it rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // ln2 split so that n·LN2_HI is exact for |n| < 2^7: LN2_HI is 0x3f317000, ln2 with its low 12
    // mantissa bits cleared.
    const LN2_HI: f32 = 0.693_115_23;
    const LN2_LO: f32 = 3.194_618_3e-5;
    // A comparison rather than `max`, which would turn NaN into the cutoff.
    let xc = if x < CUTOFF { CUTOFF } else { x };
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

    type Kernel = fn(&mut ScoreTile<'_, f32>, &[f32], &mut [f32]);

    /// Distance in units in the last place between an f32 and the exact value.
    fn ulps(got: f32, want: f64) -> f64 {
        let spacing =
            f64::from(f32::from_bits((want as f32).abs().to_bits() + 1) - (want as f32).abs());
        (f64::from(got) - want).abs() / spacing
    }

    #[test]
    fn exp_f32_is_within_two_ulp_over_its_range_and_flushes_below_it() {
        let mut worst = 0.0f64;
        // Every f32 in [-87, 88] would take a while; a step of ~1e-5 visits 17.5 million of them.
        let mut x = -87.0f32;
        while x <= 88.0 {
            worst = worst.max(ulps(exp_f32(x), f64::from(x).exp()));
            x += 1e-5 * (1.0 + x.abs() / 8.0);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        for flushed in [f32::NEG_INFINITY, -1e30, -104.0, -87.01] {
            assert_eq!(exp_f32(flushed), 0.0, "exp({flushed})");
        }
        assert!(exp_f32(f32::NAN).is_nan());
    }

    /// A transposed tile with ragged sizes, padding columns that must not change, and masked
    /// scores; f32 on every kernel this CPU has, against f64.
    #[test]
    fn column_passes_match_scalar_definitions() {
        for (keys, queries, ld) in [
            (1, 1, 1),
            (7, 5, 9),
            (64, 64, 64),
            (33, 17, 20),
            (64, 3, 64),
        ] {
            let st: Vec<f32> = (0..keys * ld)
                .map(|i| match i % 11 {
                    0 => f32::NEG_INFINITY,
                    r => (r as f32 * 0.37 - 2.0) * if i % 2 == 0 { 1.0 } else { -3.0 },
                })
                .collect();
            let mut max = vec![f32::NEG_INFINITY; queries];
            column_max(
                &ScoreTile {
                    st: &mut st.clone(),
                    keys,
                    queries,
                    ld,
                },
                &mut max,
            );
            for q in 0..queries {
                let want = (0..keys)
                    .map(|k| st[k * ld + q])
                    .fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(max[q], want, "max of query {q}");
            }
            let shift: Vec<f32> = max
                .iter()
                .map(|&m| if m.is_finite() { m } else { 0.0 })
                .collect();
            let mut kernels: Vec<(&str, Kernel)> = vec![
                ("dispatched", exp_columns::<f32>),
                ("baseline", |t, s, u| exp_columns_with(t, s, u, exp_f32)),
            ];
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    kernels.push(("avx512", |t, s, u| unsafe { exp_columns_avx512(t, s, u) }));
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA.
                    kernels.push(("avx2", |t, s, u| unsafe { exp_columns_avx2(t, s, u) }));
                }
            }
            for (name, kernel) in kernels {
                let (mut got, mut sum) = (st.clone(), vec![0.5f32; queries]);
                kernel(
                    &mut ScoreTile {
                        st: &mut got,
                        keys,
                        queries,
                        ld,
                    },
                    &shift,
                    &mut sum,
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
                            "{name}: p[{k}][{q}] = {g}, expected {want}"
                        );
                    }
                    assert!(
                        (f64::from(sum[q]) - want_sum).abs() <= 1e-6 * want_sum,
                        "{name}: sum[{q}]"
                    );
                }
                for (i, (&g, &s)) in got.iter().zip(&st).enumerate() {
                    if i % ld >= queries {
                        assert_eq!(
                            g.to_bits(),
                            s.to_bits(),
                            "{name}: padding column changed at {i}"
                        );
                    }
                }
            }
        }
    }
}
