//! The CPU emulator's side of the FFI: one C entry point per kernel (exported by
//! `LONGLORA_EMU_ENTRY` in each kernel file), which runs the whole grid on the calling thread and
//! returns an error message when a barrier or warp collective diverged or the launch is one a GPU
//! would refuse.

use std::ffi::{c_char, c_int, CStr};

use super::{KernelError, LaunchConfig, Result};

/// The signature `LONGLORA_EMU_ENTRY` (cuda/emu/launch.h) gives every kernel's entry point. With
/// null params it only writes the kernel's static shared memory.
pub(crate) type Entry<P> = unsafe extern "C" fn(
    params: *const P,
    grid: *const u32,
    block: *const u32,
    dynamic_shared_bytes: u32,
    max_dynamic_shared_bytes: u32,
    max_shared_per_block: u32,
    static_shared_bytes: *mut u32,
    error: *mut c_char,
    error_len: usize,
) -> c_int;

/// The static shared memory the kernel of `entry` declares.
pub(crate) fn static_shared_bytes<P>(entry: Entry<P>) -> u32 {
    let mut bytes = 0;
    let mut error = [0 as c_char; 1];
    // SAFETY: with null params the entry point only writes `bytes`.
    unsafe {
        entry(
            std::ptr::null(),
            [0; 3].as_ptr(),
            [0; 3].as_ptr(),
            0,
            0,
            0,
            &mut bytes,
            error.as_mut_ptr(),
            error.len(),
        )
    };
    bytes
}

/// The shared memory of one launch as the driver would see it: the opt-in limit the launch layer
/// set (None: not set) and the target's per-block maximum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SharedMemoryLimits {
    pub(crate) max_dynamic_bytes: Option<u32>,
    pub(crate) max_per_block: u32,
}

extern "C" {
    fn longlora_emu_param_layout(
        index: usize,
        size: *mut usize,
        align: *mut usize,
    ) -> *const c_char;
}

/// Runs kernel `name` through its emulator entry point.
pub(crate) fn launch<P>(
    name: &'static str,
    entry: Entry<P>,
    config: LaunchConfig,
    limits: SharedMemoryLimits,
    params: &P,
) -> Result<()> {
    let mut error = [0 as c_char; 1024];
    let mut static_bytes = 0;
    // SAFETY: `entry` is the entry point compiled for P's kernel; `params` points into buffers that the
    // launch function borrowed from the caller for the whole (synchronous) launch.
    let status = unsafe {
        entry(
            params,
            config.grid.as_ptr(),
            config.block.as_ptr(),
            config.dynamic_shared_bytes,
            limits.max_dynamic_bytes.unwrap_or(0),
            limits.max_per_block,
            &mut static_bytes,
            error.as_mut_ptr(),
            error.len(),
        )
    };
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the emulator always NUL-terminates the message within the buffer.
    let message = unsafe { CStr::from_ptr(error.as_ptr()) };
    Err(KernelError::Emulator {
        kernel: name,
        message: message.to_string_lossy().into_owned(),
    })
}

/// A params.h struct's layout as the C++ compiler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    pub name: String,
    pub size: usize,
    pub align: usize,
}

/// The layouts of all params.h structs as compiled into the emulator (cuda/emu/param_layouts.cpp).
pub fn param_layouts() -> Vec<ParamLayout> {
    (0..)
        .map_while(|index| {
            let (mut size, mut align) = (0, 0);
            // SAFETY: returns null past the last struct, else a static NUL-terminated name.
            let name = unsafe { longlora_emu_param_layout(index, &mut size, &mut align) };
            (!name.is_null()).then(|| ParamLayout {
                // SAFETY: non-null names are static C strings.
                name: unsafe { CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned(),
                size,
                align,
            })
        })
        .collect()
}
