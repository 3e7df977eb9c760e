//! What the CPU emulator counts in each kernel launch (cuda/emu/counters.h): global bytes read,
//! written and atomically updated through the kernels' memory wrappers and cp.async, warp-level mma
//! instructions, and the shared-memory wavefronts of every ldmatrix and counted ld.shared /
//! st.shared next to the conflict-free number, under the 32-bank model that counters.h states. The
//! counters cost a few additions per instruction, so they are always on; [`count_launches`] collects
//! them per launch.

use std::cell::RefCell;

extern "C" {
    fn longlora_emu_take_counters(out: *mut u64, len: usize) -> usize;
}

/// The counters of one emulator launch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaunchCounters {
    pub kernel: &'static str,
    pub global_read_bytes: u64,
    pub global_write_bytes: u64,
    /// Bytes of global atomics (read-modify-write: each counts here only).
    pub global_atomic_bytes: u64,
    /// Warp-level mma.m16n8k16 instructions.
    pub mma: u64,
    /// Warp-level ldmatrix instructions.
    pub ldmatrix: u64,
    pub ldmatrix_wavefronts: u64,
    /// One per 8x8 matrix: what the ldmatrix instructions would need without bank conflicts.
    pub ldmatrix_ideal_wavefronts: u64,
    /// Warp-level ld.shared instructions through the counted wrapper.
    pub shared_loads: u64,
    pub shared_load_wavefronts: u64,
    pub shared_load_ideal_wavefronts: u64,
    /// Warp-level st.shared instructions through the counted wrapper.
    pub shared_stores: u64,
    pub shared_store_wavefronts: u64,
    pub shared_store_ideal_wavefronts: u64,
}

/// The order of the C struct's fields, all u64.
const FIELDS: usize = 13;

impl LaunchCounters {
    /// Extra wavefronts of the ldmatrix instructions: zero when they are free of bank conflicts.
    pub fn ldmatrix_bank_conflicts(&self) -> u64 {
        self.ldmatrix_wavefronts - self.ldmatrix_ideal_wavefronts
    }

    pub fn shared_load_bank_conflicts(&self) -> u64 {
        self.shared_load_wavefronts - self.shared_load_ideal_wavefronts
    }

    pub fn shared_store_bank_conflicts(&self) -> u64 {
        self.shared_store_wavefronts - self.shared_store_ideal_wavefronts
    }

    fn from_raw(kernel: &'static str, raw: [u64; FIELDS]) -> LaunchCounters {
        LaunchCounters {
            kernel,
            global_read_bytes: raw[0],
            global_write_bytes: raw[1],
            global_atomic_bytes: raw[2],
            mma: raw[3],
            ldmatrix: raw[4],
            ldmatrix_wavefronts: raw[5],
            ldmatrix_ideal_wavefronts: raw[6],
            shared_loads: raw[7],
            shared_load_wavefronts: raw[8],
            shared_load_ideal_wavefronts: raw[9],
            shared_stores: raw[10],
            shared_store_wavefronts: raw[11],
            shared_store_ideal_wavefronts: raw[12],
        }
    }
}

thread_local! {
    /// The launches [`count_launches`] is collecting on this thread, when it is.
    static RECORDING: RefCell<Option<Vec<LaunchCounters>>> = const { RefCell::new(None) };
}

/// Takes (and clears) the emulator's counters of this thread.
fn take() -> [u64; FIELDS] {
    let mut raw = [0u64; FIELDS];
    // SAFETY: writes at most `raw.len()` u64 values, and only when the count fits.
    let fields = unsafe { longlora_emu_take_counters(raw.as_mut_ptr(), raw.len()) };
    assert_eq!(
        fields, FIELDS,
        "cuda/emu/counters.h and LaunchCounters disagree"
    );
    raw
}

/// Called before every emulator launch: counts from here on belong to it.
pub(crate) fn start_launch() {
    take();
}

/// Called after every emulator launch of `kernel`.
pub(crate) fn end_launch(kernel: &'static str) {
    let raw = take();
    RECORDING.with(|r| {
        if let Some(launches) = r.borrow_mut().as_mut() {
            launches.push(LaunchCounters::from_raw(kernel, raw));
        }
    });
}

/// Runs `f` and returns its result with the counters of every emulator launch it made on this
/// thread, in launch order (nothing for launches on a GPU).
pub fn count_launches<R>(f: impl FnOnce() -> R) -> (R, Vec<LaunchCounters>) {
    let outer = RECORDING.with(|r| r.borrow_mut().replace(Vec::new()));
    let result = f();
    let launches = RECORDING.with(|r| std::mem::replace(&mut *r.borrow_mut(), outer));
    (result, launches.unwrap_or_default())
}
