//! Hot elementwise loops compiled for the widest vector instructions this CPU has. The crate is
//! built for the baseline x86-64 target (SSE2), so a loop written once as a [`Kernel`] is run
//! through a copy compiled with AVX-512, or with AVX2 + FMA, chosen at run time. Its exp
//! ([`crate::float::Float::exp_simd`]) is plain arithmetic for f32, so that it vectorises where libm's would be a
//! call per element.

use crate::float::madd;

/// A loop to run with the best instruction set available. `run` must be `#[inline(always)]`, so
/// that it is compiled into each instruction set's copy of [`dispatch`]; `FUSED` says whether
/// that copy has fused multiply-adds (pass it on to [`crate::float::Float::exp_simd`]).
pub(crate) trait Kernel {
    fn run<const FUSED: bool>(self);
}

/// The instruction sets a kernel is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2Fma,
    Baseline,
}

/// Whether this CPU can run `isa`.
pub(crate) fn supported(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            Isa::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            Isa::Baseline => true,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        isa == Isa::Baseline
    }
}

/// Every instruction set this CPU can run, best first (the tests run every one).
#[cfg(test)]
pub(crate) fn available() -> Vec<Isa> {
    [Isa::Avx512, Isa::Avx2Fma, Isa::Baseline]
        .into_iter()
        .filter(|&isa| supported(isa))
        .collect()
}

/// Runs `kernel` compiled for the best instruction set this CPU has.
pub(crate) fn dispatch<K: Kernel>(kernel: K) {
    let best = [Isa::Avx512, Isa::Avx2Fma]
        .into_iter()
        .find(|&isa| supported(isa))
        .unwrap_or(Isa::Baseline);
    run_on(best, kernel)
}

/// Runs `kernel` compiled for `isa`, which this CPU must support.
pub(crate) fn run_on<K: Kernel>(isa: Isa, kernel: K) {
    assert!(supported(isa), "simd: this CPU cannot run {isa:?}");
    match isa {
        // SAFETY: the CPU has the instruction set (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { run_avx512(kernel) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { run_avx2(kernel) },
        _ => kernel.run::<false>(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<K: Kernel>(kernel: K) {
    kernel.run::<true>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(kernel: K) {
    kernel.run::<true>()
}

/// Below this the f32 exps give 0: e^-87 ≈ 1.6e-38 is at the bottom of f32's normal range.
const CUTOFF: f32 = -87.0;
/// 1.5·2^23: adding it rounds to an integer, which then sits in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
/// ln2 split so that n·LN2_HI is exact for |n| < 2^7: LN2_HI is 0x3f317000, ln2 with its low 12
/// mantissa bits cleared.
const LN2_HI: f32 = 0.693_115_23;
const LN2_LO: f32 = 3.194_618_3e-5;
/// e^r on the remainder's range |r| <= ln2/2 to a relative error of 3.8e-9 (a thirtieth of an
/// f32 ulp): the degree-6 minimax polynomial `1 + r + c2·r² + … + c6·r⁶`, highest coefficient
/// first (Horner's order), fitted by `scripts/exp-minimax.py`. The degree-7 Taylor polynomial it
/// replaced was no more accurate and cost one more multiply-add per exp.
const POLY: [f32; 7] = [
    0.001_381_460_2,
    0.008_368_716,
    0.041_668_39,
    0.166_665_21,
    0.499_999_94,
    1.0,
    1.0,
];

/// `exp(x)` for f32, branch-free so that loops over it vectorise. Within 2 ulp of the exact value
/// for `-87 <= x <= 88` (tested over that whole range). Below −87 (under e^-87 ≈ 1.6e-38, the
/// bottom of f32's normal range) the result is 0, so −inf gives exactly 0; above 88 it is +inf
/// (e^88 ≈ 1.7e38 is within 2x of f32's largest value); NaN gives NaN.
///
/// Cody-Waite reduction `x = n·ln2 + r` with `|r| <= ln2/2`, a degree-6 polynomial for `e^r`
/// ([`POLY`]), and `2^n` assembled in the exponent bits.
/// `FUSED` (only where the instruction set has them) makes the reduction and the polynomial's
/// steps fused multiply-adds, half the instructions: with the degree-7 polynomial of the time, the
/// exp's share of the attention's time fell from 13% to 8% (`perf record` on `attention_probe`,
/// 4096 dense, one thread).
#[inline(always)]
pub(crate) fn exp_f32<const FUSED: bool>(x: f32) -> f32 {
    const CEILING: f32 = 88.0;
    // `clamp` keeps NaN (`max` and `min` would turn it into a bound).
    let xc = x.clamp(CUTOFF, CEILING);
    let shifted = madd::<f32, FUSED>(xc, std::f32::consts::LOG2_E, ROUND);
    let n = shifted - ROUND;
    let r = madd::<f32, FUSED>(-n, LN2_LO, madd::<f32, FUSED>(-n, LN2_HI, xc));
    let mut p = POLY[0];
    for &c in &POLY[1..] {
        p = madd::<f32, FUSED>(p, r, c);
    }
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    if x < CUTOFF {
        0.0
    } else if x > CEILING {
        f32::INFINITY
    } else {
        p * scale
    }
}

/// [`exp_f32`] on 16 lanes, for the softmax's shifted scores, with AVX-512's own exponent
/// instructions: `vscalefps` multiplies the polynomial by 2^n (in place of assembling 2^n in the
/// exponent bits, a shift, an add and a product) and zeroes the lanes below the cutoff under a mask
/// (in place of a clamp, two compares and two blends). Its inputs are scores minus their row's
/// maximum or log-sum-exp, at most 0 but for rounding, so it also omits `exp_f32`'s clamp from
/// above: 12 vector arithmetic instructions per 16 lanes in the softmax's exp pass (read in its
/// disassembly). Bitwise equal to `exp_f32::<true>` on `[-87, 88]` and wherever that gives 0 or
/// NaN; above 88 it gives the finite value up to e^88.72 ≈ 3.4e38 and +inf beyond, up to x = 10^6.
/// Past that (where `x·log2(e)` no longer rounds to its integer part through [`ROUND`]) and at
/// +inf the value is unspecified.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn exp_f32x16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let shifted = _mm512_fmadd_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
        _mm512_set1_ps(ROUND),
    );
    let n = _mm512_sub_ps(shifted, _mm512_set1_ps(ROUND));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(POLY[0]);
    for &c in &POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    // Not-less-than, true when unordered: NaN lanes keep their (NaN) value, lanes below the
    // cutoff (and −inf) become 0.
    let kept = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(CUTOFF));
    _mm512_maskz_scalef_ps(kept, p, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::float::Float;

    /// Distance in units in the last place between an f32 and the exact value.
    fn ulps(got: f32, want: f64) -> f64 {
        let spacing =
            f64::from(f32::from_bits((want as f32).abs().to_bits() + 1) - (want as f32).abs());
        (f64::from(got) - want).abs() / spacing
    }

    /// Both forms: the fused one runs through libm's `fmaf` here (the test is not compiled with
    /// FMA), which computes the same single rounding as the instruction.
    #[test]
    fn exp_f32_is_within_two_ulp_over_its_range_and_saturates_outside_it() {
        type Exp = fn(f32) -> f32;
        let forms: [(&str, Exp); 2] = [("unfused", exp_f32::<false>), ("fused", exp_f32::<true>)];
        for (form, exp) in forms {
            let mut worst = 0.0f64;
            // Every f32 in [-87, 88] would take a while; a step of ~1e-5 visits 17.5 million.
            let mut x = -87.0f32;
            while x <= 88.0 {
                worst = worst.max(ulps(exp(x), f64::from(x).exp()));
                x += 1e-5 * (1.0 + x.abs() / 8.0);
            }
            assert!(worst <= 2.0, "{form}: worst error {worst} ulp");
            assert_eq!(exp(0.0), 1.0, "{form}");
            for flushed in [f32::NEG_INFINITY, -1e30, -104.0, -87.01] {
                assert_eq!(exp(flushed), 0.0, "{form}: exp({flushed})");
            }
            for overflowed in [88.01, 89.0, 1e30, f32::INFINITY] {
                assert_eq!(exp(overflowed), f32::INFINITY, "{form}: exp({overflowed})");
            }
            assert!(exp(f32::NAN).is_nan(), "{form}");
        }
    }

    /// Bitwise against the scalar form over the range in steps of ~1e-5 (17.5 million values),
    /// and the saturating values outside it, up to the largest input it promises (10^6).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_f32x16_matches_the_scalar_exp_bitwise() {
        use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
        if !supported(Isa::Avx512) {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let exp16 = |xs: &[f32; 16]| -> [f32; 16] {
            let mut out = [0.0f32; 16];
            // SAFETY: the CPU has AVX-512F (checked above); both arrays hold 16 lanes.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), exp_f32x16(_mm512_loadu_ps(xs.as_ptr()))) };
            out
        };
        let mut lanes = [0.0f32; 16];
        let mut filled = 0;
        let mut x = -87.0f32;
        while x <= 88.0 {
            lanes[filled] = x;
            filled += 1;
            if filled == 16 {
                for (&x, got) in lanes.iter().zip(exp16(&lanes)) {
                    let want = exp_f32::<true>(x);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "exp({x}) = {got}, scalar {want}"
                    );
                }
                filled = 0;
            }
            x += 1e-5 * (1.0 + x.abs() / 8.0);
        }
        let special = [
            f32::NEG_INFINITY,
            -1e30,
            -104.0,
            -87.01,
            88.8,
            89.0,
            1000.0,
            1e6,
            f32::NAN,
            0.0,
            -0.0,
            88.5,
            88.72,
            -87.0,
            88.0,
            1.0,
        ];
        let got = exp16(&special);
        for (&x, g) in special.iter().zip(got) {
            if x.is_nan() {
                assert!(g.is_nan(), "exp(NaN) = {g}");
            } else if x < -87.0 {
                assert_eq!(g.to_bits(), 0, "exp({x}) = {g}");
            } else if x > 88.73 {
                assert_eq!(g, f32::INFINITY, "exp({x})");
            } else {
                // In (88, 88.72] the exact value is finite; elsewhere as the scalar form.
                assert!(ulps(g, f64::from(x).exp()) <= 2.0, "exp({x}) = {g}");
            }
        }
    }

    struct ExpAll<'a>(&'a mut [f32]);

    impl Kernel for ExpAll<'_> {
        #[inline(always)]
        fn run<const FUSED: bool>(self) {
            self.0.iter_mut().for_each(|x| *x = x.exp_simd::<FUSED>());
        }
    }

    #[test]
    fn every_instruction_set_runs_the_kernel_and_agrees() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.2).collect();
        let isas = available();
        assert_eq!(isas.last(), Some(&Isa::Baseline));
        for isa in isas {
            let mut got = xs.clone();
            run_on(isa, ExpAll(&mut got));
            for (&x, &g) in xs.iter().zip(&got) {
                assert!(
                    ulps(g, f64::from(x).exp()) <= 2.0
                        || (x < -87.0 && g == 0.0)
                        || (x > 88.0 && g == f32::INFINITY),
                    "{isa:?}: exp({x}) = {g}"
                );
            }
        }
    }
}
