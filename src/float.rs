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
    /// `c[m×n] = alpha · a[m×k] · b[k×n] + beta · c`.
    /// With `beta == 0` the old contents of `c` are ignored (may be NaN).
    ///
    /// # Safety
    /// The pointers and strides must describe valid, non-overlapping (for `c`) matrices.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

/// Implements [`Float`] for a primitive float through the matching matrixmultiply kernel.
macro_rules! impl_float {
    ($t:ty, $name:literal, $gemm:path, $exp:expr) => {
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
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                $gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
            }
        }
    };
}

impl_float!(f32, "f32", matrixmultiply::sgemm, crate::ops::simd::exp_f32);
impl_float!(f64, "f64", matrixmultiply::dgemm, f64::exp);

/// Shorthand for a constant in the generic element type.
pub fn cst<T: Float>(v: f64) -> T {
    T::from_f64_lossy(v)
}
