//! The shape of a launch and a record of the launches made, so that tools (the kernel report,
//! examples/kernel_launches.rs) read every kernel's real launch configuration from the launch functions
//! themselves instead of a copied table.

use std::cell::RefCell;

/// Grid and block shape and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaunchConfig {
    pub(crate) grid: [u32; 3],
    pub(crate) block: [u32; 3],
    pub(crate) dynamic_shared_bytes: u32,
}

/// One launch as the launch layer made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRecord {
    pub kernel: &'static str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared_bytes: u32,
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
pub(crate) fn note_launch(kernel: &'static str, config: LaunchConfig) {
    RECORDED.with(|recorded| {
        if let Some(launches) = recorded.borrow_mut().as_mut() {
            launches.push(LaunchRecord {
                kernel,
                grid: config.grid,
                block: config.block,
                dynamic_shared_bytes: config.dynamic_shared_bytes,
            });
        }
    });
}
