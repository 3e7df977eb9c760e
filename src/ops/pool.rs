//! The fork-join pool every parallel op runs on: the calling thread and `threads − 1` workers
//! take a region's tasks from one atomic counter, and between regions the workers spin for a
//! while before they sleep.
//!
//! A training step is a few hundred short parallel regions separated by short serial stretches.
//! On a pool whose workers sleep as soon as they find no work (rayon's), every region paid for
//! waking them: 58–240 µs on these virtual machines (an idle vCPU halts, and its wake-up goes
//! through the hypervisor), measured with two 200 µs tasks behind serial gaps of 0–500 µs, against
//! 5–18 µs here (`cargo bench --bench fork_join`, 2026-12-03). OpenMP runtimes spin for the same
//! reason.
//!
//! The thread count is `RAYON_NUM_THREADS` when set (the variable earlier builds read, kept so that
//! commands that set it still mean the same), else the machine's available parallelism. A region
//! started inside another, or while another thread's region holds the pool, runs on its caller
//! alone; results never depend on which thread runs a task.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps: longer than the serial stretches inside a
/// step, short enough that a pool left idle stops using its core at once.
const SPIN: Duration = Duration::from_millis(1);

/// A region's tasks: `run(i)` for every `i < count`, claimed through `next`.
type Task<'a> = dyn Fn(usize) + Sync + 'a;

struct Pool {
    workers: usize,
    /// Held by the thread whose region runs on the pool.
    owner: Mutex<()>,
    /// Region number · 2, plus 1 while workers may still join the region.
    state: AtomicU64,
    /// The open region's tasks (a pointer to the caller's reference to them), valid while the
    /// region is open or a worker is inside it.
    task: AtomicPtr<&'static Task<'static>>,
    count: AtomicUsize,
    next: AtomicUsize,
    /// Workers inside the open region.
    active: AtomicUsize,
    /// The first panic of the region's tasks, resumed on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Workers asleep, and what wakes them.
    sleepers: Mutex<usize>,
    wake: Condvar,
}

thread_local! {
    /// Whether this thread is running a region's task (its own region's or, on a worker, any).
    static IN_REGION: Cell<bool> = const { Cell::new(false) };
}

/// The threads a parallel region uses, the caller included.
pub fn threads() -> usize {
    pool().map_or(1, |p| p.workers + 1)
}

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
    *POOL.get_or_init(|| {
        let threads = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads < 2 {
            return None;
        }
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            workers: threads - 1,
            owner: Mutex::new(()),
            state: AtomicU64::new(0),
            task: AtomicPtr::new(std::ptr::null_mut()),
            count: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            panic: Mutex::new(None),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
        }));
        for w in 0..pool.workers {
            let spawned = std::thread::Builder::new()
                .name(format!("longlora-worker-{w}"))
                .spawn(move || pool.work());
            if spawned.is_err() {
                // Without workers every region runs on its caller: slower, still correct.
                return None;
            }
        }
        Some(pool)
    })
}

/// Runs `f(i)` for every `i < count`, on the pool's threads, and returns when all have finished.
/// A task's panic is resumed here after every task has stopped.
pub fn for_each(count: usize, f: impl Fn(usize) + Sync) {
    if count == 0 {
        return;
    }
    let inline = || (0..count).for_each(&f);
    let Some(pool) = pool().filter(|_| count > 1 && !IN_REGION.get()) else {
        return inline();
    };
    let _owner = match pool.owner.try_lock() {
        Ok(owner) => owner,
        // A region that panicked poisoned the lock; the pool itself is consistent again.
        Err(TryLockError::Poisoned(owner)) => owner.into_inner(),
        Err(TryLockError::WouldBlock) => return inline(),
    };
    pool.run(count, &f);
}

/// Runs `f(i, chunk)` for the consecutive chunks of `x` of `size` elements (the last may be
/// shorter), in parallel.
pub(crate) fn for_each_chunk<T: Send>(
    x: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    assert!(size > 0, "pool: chunk size must be positive");
    let (base, len) = (Base::new(x), x.len());
    for_each(len.div_ceil(size), |i| {
        let start = i * size;
        // SAFETY: chunk i covers elements start..min(start + size, len) of x, inside it, and no
        // other task's chunk overlaps it; x stays mutably borrowed until every task has finished.
        let chunk =
            unsafe { std::slice::from_raw_parts_mut(base.at(start), size.min(len - start)) };
        f(i, chunk);
    });
}

/// The same over two slices at once: `f(i, a chunk i, b chunk i)`; `a` and `b` must hold the same
/// number of chunks.
pub(crate) fn for_each_chunk_pair<T: Send, U: Send>(
    a: &mut [T],
    a_size: usize,
    b: &mut [U],
    b_size: usize,
    f: impl Fn(usize, &mut [T], &mut [U]) + Sync,
) {
    assert!(
        a_size > 0 && b_size > 0,
        "pool: chunk size must be positive"
    );
    let chunks = a.len().div_ceil(a_size);
    assert_eq!(
        chunks,
        b.len().div_ceil(b_size),
        "pool: chunk counts differ"
    );
    let (a_base, a_len, b_base, b_len) = (Base::new(a), a.len(), Base::new(b), b.len());
    for_each(chunks, |i| {
        let (a0, b0) = (i * a_size, i * b_size);
        // SAFETY: as in `for_each_chunk`, for each slice.
        let (ca, cb) = unsafe {
            (
                std::slice::from_raw_parts_mut(a_base.at(a0), a_size.min(a_len - a0)),
                std::slice::from_raw_parts_mut(b_base.at(b0), b_size.min(b_len - b0)),
            )
        };
        f(i, ca, cb);
    });
}

/// A slice's base pointer, shared by tasks that each touch only their own elements.
pub(crate) struct Base<T>(*mut T);

impl<T> Clone for Base<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Base<T> {}

// SAFETY: tasks reach disjoint elements through it (see its users).
unsafe impl<T: Send> Send for Base<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Base<T> {}

impl<T> Base<T> {
    pub(crate) fn new(x: &mut [T]) -> Self {
        Base(x.as_mut_ptr())
    }

    /// # Safety
    /// `offset` must lie inside the slice the base came from.
    pub(crate) unsafe fn at(self, offset: usize) -> *mut T {
        unsafe { self.0.add(offset) }
    }
}

impl Pool {
    /// The caller's side of a region; the caller holds `owner`.
    fn run(&self, count: usize, f: &Task<'_>) {
        // SAFETY: only lifetimes are erased. Workers dereference the pointer only after joining
        // the region while it is open, and this function returns only once the region is closed
        // and no worker is inside it, so `f` and the reference to it outlive every use.
        let task: *mut &'static Task<'static> = unsafe { std::mem::transmute(&f) };
        self.task.store(task, SeqCst);
        self.count.store(count, SeqCst);
        self.next.store(0, SeqCst);
        let region = self.state.load(SeqCst) + 2;
        self.state.store(region | 1, SeqCst);
        if *self.sleepers.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            self.wake.notify_all();
        }
        let caller = catch_unwind(AssertUnwindSafe(|| self.claim(count, f)));
        self.state.store(region, SeqCst);
        let mut spins = 0u32;
        while self.active.load(SeqCst) > 0 {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                // A worker the OS has descheduled (more threads than cores) needs the core.
                std::thread::yield_now();
            }
        }
        let worker_panic = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Err(payload) = caller {
            resume_unwind(payload);
        }
        if let Some(payload) = worker_panic {
            resume_unwind(payload);
        }
    }

    /// Runs tasks until none is left to claim.
    fn claim(&self, count: usize, f: &Task<'_>) {
        IN_REGION.set(true);
        let run = catch_unwind(AssertUnwindSafe(|| loop {
            let i = self.next.fetch_add(1, SeqCst);
            if i >= count {
                break;
            }
            f(i);
        }));
        IN_REGION.set(false);
        if let Err(payload) = run {
            resume_unwind(payload);
        }
    }

    /// A worker's loop: wait for an open region, join it, run its tasks, leave.
    fn work(&self) {
        let mut seen = 0;
        loop {
            let state = self.wait_for_region(seen);
            seen = state;
            // Joining, then checking that the region is still open, pairs with the caller closing
            // it, then reading `active` (all SeqCst): either this worker sees it closed and leaves
            // without touching the task, or the caller sees this worker inside and waits for it.
            self.active.fetch_add(1, SeqCst);
            if self.state.load(SeqCst) == state {
                let (task, count) = (self.task.load(SeqCst), self.count.load(SeqCst));
                // SAFETY: the region is open, so `task` points at the caller's live reference.
                let f: &Task<'_> = unsafe { *task };
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.claim(count, f))) {
                    let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(payload);
                }
            }
            self.active.fetch_sub(1, SeqCst);
        }
    }

    /// Spins, then sleeps, until a region other than `seen` is open; returns its state.
    fn wait_for_region(&self, seen: u64) -> u64 {
        let open = |s: u64| s & 1 == 1 && s != seen;
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let s = self.state.load(SeqCst);
            if open(s) {
                return s;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                break;
            }
        }
        let mut sleepers = self.sleepers.lock().unwrap_or_else(|e| e.into_inner());
        *sleepers += 1;
        let s = loop {
            let s = self.state.load(SeqCst);
            if open(s) {
                break s;
            }
            sleepers = self.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
        };
        *sleepers -= 1;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Every task runs exactly once, however many there are, including regions started inside a
    /// task and from several threads at once.
    #[test]
    fn every_task_runs_once() {
        for count in [0, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicU32> = (0..count).map(|_| AtomicU32::new(0)).collect();
            for_each(count, |i| {
                hits[i].fetch_add(1, SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "{count} tasks");
        }
        let nested: Vec<AtomicU32> = (0..64).map(|_| AtomicU32::new(0)).collect();
        for_each(8, |i| {
            for_each(8, |j| _ = nested[i * 8 + j].fetch_add(1, SeqCst))
        });
        assert!(nested.iter().all(|h| h.load(SeqCst) == 1), "nested regions");
        std::thread::scope(|s| {
            for t in 0..4u32 {
                s.spawn(move || {
                    for _ in 0..50 {
                        let sum = AtomicU32::new(0);
                        for_each(33, |i| _ = sum.fetch_add(i as u32 + t, SeqCst));
                        assert_eq!(sum.load(SeqCst), 528 + 33 * t);
                    }
                });
            }
        });
    }

    /// Chunks cover the slices exactly, the last one short.
    #[test]
    fn chunks_cover_their_slices() {
        let mut a = vec![0u32; 1003];
        let mut b = vec![0u64; 101];
        for_each_chunk_pair(&mut a, 100, &mut b, 10, |i, ca, cb| {
            ca.iter_mut().for_each(|v| *v += i as u32 + 1);
            cb.iter_mut().for_each(|v| *v += 1);
        });
        assert!(a
            .iter()
            .enumerate()
            .all(|(e, &v)| v == (e / 100) as u32 + 1));
        assert!(b.iter().all(|&v| v == 1));
        for_each_chunk(&mut a, 7, |_, c| c.iter_mut().for_each(|v| *v = 9));
        assert!(a.iter().all(|&v| v == 9));
    }

    /// A task's panic reaches the caller after the region ends, and the pool still works.
    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let ran = AtomicU32::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            for_each(64, |i| {
                ran.fetch_add(1, SeqCst);
                assert!(i != 40, "task 40 fails");
            })
        }));
        assert!(result.is_err());
        let sum = AtomicU32::new(0);
        for_each(10, |i| _ = sum.fetch_add(i as u32, SeqCst));
        assert_eq!(sum.load(SeqCst), 45);
    }
}
