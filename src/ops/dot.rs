//! Sums of elementwise products along rows, in independent partial sums. A plain `.sum()` is one
//! chain of dependent additions (four cycles each on these cores) that the compiler may not
//! reorder; sixteen chains let it keep a vector of partial sums instead. Element `i` goes to
//! partial sum `i mod 16`, except the last `len mod 16`, which are summed first; the sixteen are
//! then added to that in order, so a result depends only on the values, never on threads.

use crate::float::Float;

/// Independent partial sums: one AVX-512 vector of f32.
const LANES: usize = 16;

/// `Σ_i a_i·b_i`.
///
/// # Panics
/// If the lengths differ.
pub(crate) fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    assert_eq!(a.len(), b.len(), "dot: lengths differ");
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = (ca.remainder().iter().zip(cb.remainder())).fold(T::zero(), |s, (&x, &y)| s + x * y);
    let mut lanes = [T::zero(); LANES];
    for (x, y) in ca.zip(cb) {
        for ((s, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    lanes.iter().fold(tail, |s, &v| s + v)
}

/// `Σ_i a_i·b_i·c_i`, in the same partial sums as [`dot`].
///
/// # Panics
/// If the lengths differ.
pub(crate) fn dot3<T: Float>(a: &[T], b: &[T], c: &[T]) -> T {
    assert!(
        a.len() == b.len() && b.len() == c.len(),
        "dot3: lengths differ"
    );
    let (ca, cb, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let tail = (ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder()))
    .fold(T::zero(), |s, ((&x, &y), &z)| s + x * y * z);
    let mut lanes = [T::zero(); LANES];
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for (((s, &x), &y), &z) in lanes.iter_mut().zip(x).zip(y).zip(z) {
            *s += x * y * z;
        }
    }
    lanes.iter().fold(tail, |s, &v| s + v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Every length around the lane count, against the f64 sum of the same f32 terms; the f64
    /// form against its own plain sum.
    #[test]
    fn dot_and_dot3_match_a_plain_sum() {
        let mut rng = Rng::new(5);
        for len in [0, 1, 15, 16, 17, 64, 100, 256] {
            let mut random =
                || -> Vec<f64> { (0..len).map(|_| rng.uniform_range(-1.0, 1.0)).collect() };
            let (a, b, c) = (random(), random(), random());
            let f32s = |x: &[f64]| -> Vec<f32> { x.iter().map(|&v| v as f32).collect() };
            let (a32, b32, c32) = (f32s(&a), f32s(&b), f32s(&c));
            let want2: f64 = (0..len)
                .map(|i| f64::from(a32[i]) * f64::from(b32[i]))
                .sum();
            let want3: f64 = (0..len)
                .map(|i| f64::from(a32[i]) * f64::from(b32[i]) * f64::from(c32[i]))
                .sum();
            let tol = 1e-6 * (len as f64).max(1.0);
            let got2 = f64::from(dot(&a32, &b32));
            let got3 = f64::from(dot3(&a32, &b32, &c32));
            assert!(
                (got2 - want2).abs() <= tol,
                "dot, len {len}: {got2} against {want2}"
            );
            assert!(
                (got3 - want3).abs() <= tol,
                "dot3, len {len}: {got3} against {want3}"
            );
            let plain2: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let plain3: f64 = (0..len).map(|i| a[i] * b[i] * c[i]).sum();
            assert!(
                (dot(&a, &b) - plain2).abs() <= 1e-13 * (len as f64).max(1.0),
                "f64 dot, len {len}"
            );
            assert!(
                (dot3(&a, &b, &c) - plain3).abs() <= 1e-13 * (len as f64).max(1.0),
                "f64 dot3, len {len}"
            );
        }
    }
}
