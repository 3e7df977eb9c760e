//! The scalar types the CPU reference runs in: f32 for training, f64 for gradient checks.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use num_traits::{Float as NumFloat, FromPrimitive, ToPrimitive};

/// A floating-point element type of the reference ops.
pub trait Float:
    NumFloat
    + FromPrimitive
    + ToPrimitive
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// Name used in messages and file headers.
    const NAME: &'static str;

    /// Converts from f64, rounding to the nearest representable value.
    fn from_f64_lossy(v: f64) -> Self;

    /// `exp` for the loops of [`crate::ops::simd`]: f32 uses a polynomial within 2 ulp that
    /// vectorises (0 below −87, +inf above 88); f64, the gradient checks' precision, keeps libm's.
    fn exp_simd(self) -> Self;

    /// General matrix multiply with explicit strides:
    /// `c[m×n] = alpha · a[m×k] · b[k×n]`, or `c += …` with `accumulate`.
    /// Without `accumulate` the old contents of `c` are ignored (may be NaN).
    ///
    /// # Safety
    /// The pointers and strides must describe valid, non-overlapping (for `c`) matrices.
    /// `sizes` is (m, k, n); each matrix is (pointer, row stride, column stride).
    unsafe fn gemm_raw(
        sizes: (usize, usize, usize),
        alpha: Self,
        a: (*const Self, isize, isize),
        b: (*const Self, isize, isize),
        accumulate: bool,
        c: (*mut Self, isize, isize),
    );
}

/// Implements [`Float`] for a primitive float; faer's matmul is generic over both.
macro_rules! impl_float {
    ($t:ty, $name:literal, $exp:expr) => {
        impl Float for $t {
            const NAME: &'static str = $name;

            fn from_f64_lossy(v: f64) -> Self {
                v as $t
            }

            #[inline(always)]
            fn exp_simd(self) -> Self {
                $exp(self)
            }

            unsafe fn gemm_raw(
                (m, k, n): (usize, usize, usize),
                alpha: Self,
                (a, rsa, csa): (*const Self, isize, isize),
                (b, rsb, csb): (*const Self, isize, isize),
                accumulate: bool,
                (c, rsc, csc): (*mut Self, isize, isize),
            ) {
                // SAFETY: the caller guarantees the three matrices these describe.
                let (lhs, rhs, dst) = unsafe {
                    (
                        faer::MatRef::from_raw_parts(a, m, k, rsa, csa),
                        faer::MatRef::from_raw_parts(b, k, n, rsb, csb),
                        faer::MatMut::from_raw_parts_mut(c, m, n, rsc, csc),
                    )
                };
                let accum = if accumulate {
                    faer::Accum::Add
                } else {
                    faer::Accum::Replace
                };
                faer::linalg::matmul::matmul(dst, accum, lhs, rhs, alpha, faer::Par::rayon(0));
            }
        }
    };
}

impl_float!(f32, "f32", crate::ops::simd::exp_f32);
impl_float!(f64, "f64", f64::exp);

/// Shorthand for a constant in the generic element type.
pub fn cst<T: Float>(v: f64) -> T {
    T::from_f64_lossy(v)
}
