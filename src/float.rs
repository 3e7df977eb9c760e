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
    /// vectorises (0 below −87, +inf above 88), with fused multiply-adds when `FUSED` (pass the
    /// [`crate::ops::simd::Kernel`]'s); f64, the gradient checks' precision, keeps libm's.
    fn exp_simd<const FUSED: bool>(self) -> Self;
}

/// Implements [`Float`] for a primitive float.
macro_rules! impl_float {
    ($t:ty, $name:literal, $exp:expr) => {
        impl Float for $t {
            const NAME: &'static str = $name;

            fn from_f64_lossy(v: f64) -> Self {
                v as $t
            }

            #[inline(always)]
            fn exp_simd<const FUSED: bool>(self) -> Self {
                $exp(self)
            }
        }
    };
}

impl_float!(f32, "f32", crate::ops::simd::exp_f32::<FUSED>);
impl_float!(f64, "f64", f64::exp);

/// `a·b + c`: one fused multiply-add when `FUSED`, which callers set only where the instruction set
/// has them (elsewhere `mul_add` is a library call), else a product and a sum.
#[inline(always)]
pub(crate) fn madd<T: Float, const FUSED: bool>(a: T, b: T, c: T) -> T {
    if FUSED {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Shorthand for a constant in the generic element type.
pub fn cst<T: Float>(v: f64) -> T {
    T::from_f64_lossy(v)
}
