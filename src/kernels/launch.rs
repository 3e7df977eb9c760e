//! What both launch paths (GPU and emulator) decide the same way: the shape of a launch, whether it
//! must opt in to more than 48 KB of shared memory, and a record of the launches made, so that tools
//! (the kernel report, examples/kernel_launches.rs) read every kernel's real launch configuration from
//! the launch functions themselves instead of a copied table.

use std::cell::{Cell, RefCell};

use super::{invalid, Result};

/// Grid and block shape and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaunchConfig {
    pub(crate) grid: [u32; 3],
    pub(crate) block: [u32; 3],
    pub(crate) dynamic_shared_bytes: u32,
}

/// Shared memory (static and dynamic together) a launch gets without opting in to more.
const DEFAULT_SHARED_BYTES: u32 = 48 * 1024;

/// The GPU generation whose limits a device enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuTarget {
    /// A100: 163 KB of shared memory per block.
    Sm80,
    /// H100: 227 KB of shared memory per block.
    Sm90,
}

impl GpuTarget {
    /// The most shared memory, static and dynamic, one block may have with the opt-in attribute.
    pub fn max_shared_per_block(self) -> u32 {
        match self {
            GpuTarget::Sm80 => 163 * 1024,
            GpuTarget::Sm90 => 227 * 1024,
        }
    }
}

thread_local! {
    static WITHHOLD_OPT_IN: Cell<bool> = const { Cell::new(false) };
}

/// The one decision both launch paths make: the value to give the kernel's
/// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` (the dynamic part), or None when static and
/// dynamic shared memory together fit in the 48 KB every launch gets. Fails when they exceed what one
/// block may have (`max_per_block`).
pub(crate) fn shared_memory_opt_in(
    kernel: &'static str,
    static_bytes: u32,
    dynamic_bytes: u32,
    max_per_block: u32,
) -> Result<Option<u32>> {
    let total = u64::from(static_bytes) + u64::from(dynamic_bytes);
    if total > u64::from(max_per_block) {
        return Err(invalid(
            kernel,
            "shared memory",
            format!("at most {max_per_block} bytes per block, static ({static_bytes}) and dynamic together"),
            format!("{total} bytes"),
        ));
    }
    let withheld = WITHHOLD_OPT_IN.with(Cell::get);
    Ok((total > u64::from(DEFAULT_SHARED_BYTES) && !withheld).then_some(dynamic_bytes))
}

/// Runs `f` with the shared-memory opt-in never set by launches of this thread, as the launch layer
/// once did whenever the dynamic part alone fit in 48 KB: tests use it to show that the emulator
/// refuses such a launch as a GPU does. (On a GPU an attribute set by an earlier launch stays set.)
pub fn without_shared_memory_opt_in<R>(f: impl FnOnce() -> R) -> R {
    let outer = WITHHOLD_OPT_IN.with(|withheld| withheld.replace(true));
    let result = f();
    WITHHOLD_OPT_IN.with(|withheld| withheld.set(outer));
    result
}

/// One launch as the launch layer made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRecord {
    pub kernel: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared_bytes: u32,
    /// The kernel's static shared memory (on the emulator, as its entry point declares it).
    pub static_shared_bytes: u32,
    /// The opt-in limit the launch set, when static + dynamic exceed 48 KB.
    pub max_dynamic_shared_bytes: Option<u32>,
}

impl LaunchRecord {
    pub fn threads(&self) -> u32 {
        self.block.iter().product()
    }
}

thread_local! {
    /// The launches of this thread while a [`record_launches`] call runs.
    static RECORDED: RefCell<Option<Vec<LaunchRecord>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns, with its result, every kernel launch that `f` made on this thread (on any
/// device, in order). Calls do not nest: an inner call takes the launches made inside it.
pub fn record_launches<R>(f: impl FnOnce() -> R) -> (R, Vec<LaunchRecord>) {
    let outer = RECORDED.with(|recorded| recorded.replace(Some(Vec::new())));
    let result = f();
    let launches = RECORDED.with(|recorded| recorded.replace(outer));
    (result, launches.unwrap_or_default())
}

/// Adds a launch of `kernel` to the record, if one is being made.
pub(crate) fn note_launch(
    kernel: &'static str,
    config: LaunchConfig,
    static_shared_bytes: u32,
    max_dynamic_shared_bytes: Option<u32>,
) {
    RECORDED.with(|recorded| {
        if let Some(launches) = recorded.borrow_mut().as_mut() {
            launches.push(LaunchRecord {
                kernel,
                grid: config.grid,
                block: config.block,
                dynamic_shared_bytes: config.dynamic_shared_bytes,
                static_shared_bytes,
                max_dynamic_shared_bytes,
            });
        }
    });
}
