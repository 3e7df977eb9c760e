//! Per-thread scratch buffers that outlive one call, so that ops called every training step do not
//! allocate after the first: each thread keeps one value per type and hands it out on request.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

thread_local! {
    static SLOTS: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's value of type `S`, replacing it by `make()` first when there is none
/// or it does not `fit`. The value is taken out while `f` runs, so `f` may itself use scratch of
/// another type (a nested request for the same type gets a fresh value).
pub(crate) fn with_scratch<S: Any, R>(
    fits: impl Fn(&S) -> bool,
    make: impl FnOnce() -> S,
    f: impl FnOnce(&mut S) -> R,
) -> R {
    let taken = SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        let at = slots
            .iter()
            .position(|s| (**s).type_id() == TypeId::of::<S>());
        at.map(|i| slots.swap_remove(i))
    });
    let mut value = match taken.map(|b| b.downcast::<S>()) {
        Some(Ok(v)) if fits(&v) => v,
        _ => Box::new(make()),
    };
    let result = f(&mut value);
    SLOTS.with(|slots| slots.borrow_mut().push(value));
    result
}

/// Bytes in a cache line, and the alignment of every `Aligned` buffer.
const LINE: usize = 64;

/// A buffer whose first element starts a cache line. A 64-byte vector load from a row that starts
/// mid-line touches two lines; the allocator aligns to 16 bytes only, so three rows in four of
/// a tile read in place would do that on every load.
pub(crate) struct Aligned<T> {
    storage: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy> Aligned<T> {
    pub fn new(len: usize, value: T) -> Self {
        let mut buffer = Aligned {
            storage: Vec::new(),
            start: 0,
            len: 0,
        };
        buffer.resize(len, value);
        buffer
    }

    /// Grows or shrinks to `len` elements, keeping the first ones; elements past the old length
    /// are `value` when it had to grow its storage, and unspecified otherwise.
    pub fn resize(&mut self, len: usize, value: T) {
        let slack = LINE / std::mem::size_of::<T>().max(1);
        if self.start + len > self.storage.len() {
            let mut storage = vec![value; len + slack];
            let start = storage.as_ptr().align_offset(LINE).min(slack);
            storage[start..start + self.len].copy_from_slice(&self[..]);
            (self.storage, self.start) = (storage, start);
        }
        self.len = len;
    }
}

impl<T> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl<T> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Runs `f` on `len` cache-line-aligned elements of one of this thread's scratch buffers
/// (contents unspecified), growing it only when it is too short. Nested calls get distinct
/// buffers, which all grow to the sizes asked of them and are then reused.
pub(crate) fn with_buffer<T: Any + Copy + Default, R>(
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    with_scratch(
        |_: &Aligned<T>| true,
        || Aligned::new(0, T::default()),
        |v| {
            if v.len() < len {
                v.resize(len, T::default());
            }
            f(&mut v[..len])
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_kept_per_type_and_grows_when_too_short() {
        with_buffer(4, |b: &mut [f32]| b.fill(7.0));
        let kept = with_buffer(3, |b: &mut [f32]| b.to_vec());
        assert_eq!(kept, vec![7.0; 3], "a buffer long enough is reused");
        with_buffer(2, |b: &mut [f64]| {
            b.fill(1.0);
            // A nested request for another type works while this one is out.
            with_buffer(2, |c: &mut [f32]| assert_eq!(c, &[7.0, 7.0]));
        });
        let grown = with_buffer(8, |b: &mut [f32]| b.to_vec());
        assert_eq!(
            grown[..4],
            [7.0; 4],
            "a short buffer grows, keeping its contents"
        );
        with_buffer(8, |outer: &mut [f32]| {
            outer.fill(1.0);
            with_buffer(8, |inner: &mut [f32]| inner.fill(2.0));
            assert_eq!(outer, &[1.0; 8], "a nested request got a buffer of its own");
        });
    }

    #[test]
    fn buffers_start_on_a_cache_line_however_they_grow() {
        let starts_a_line = |x: &[f64]| (x.as_ptr() as usize).is_multiple_of(LINE);
        let mut buffer = Aligned::new(3, 1.0f64);
        for len in [1, 7, 100, 5, 1000, 4097] {
            buffer.resize(len, 2.0);
            assert!(
                starts_a_line(&buffer),
                "length {len}: {:p}",
                buffer.as_ptr()
            );
            assert_eq!(buffer.len(), len);
            assert_eq!(buffer[0], 1.0, "length {len}: the first element was kept");
        }
        for len in [3, 33, 1000] {
            with_buffer(len, |b: &mut [f32]| {
                assert_eq!(b.as_ptr() as usize % LINE, 0, "with_buffer({len})")
            });
        }
    }
}
