//! shared_access_kernel (cuda/tests/shared_access.cu): an emulator-only kernel in which one warp
//! makes one shared-memory access at addresses the caller chooses, for testing the emulator's
//! bank-conflict counters on hand-made address patterns.

use super::emu_counters::{count_launches, LaunchCounters};
use super::params::SharedAccessParams;
use super::{invalid, Device, LaunchConfig, Result};

kernels! {
    KERNEL = shared_access_kernel / longlora_emu_shared_access_kernel(SharedAccessParams), emulator_only;
}

// SAFETY: a plain C struct (params.h) of a device pointer and an integer, taken by value.
unsafe impl cudarc::driver::DeviceRepr for SharedAccessParams {}

/// Bytes of shared memory the kernel gets.
const SHARED_BYTES: u32 = 4096;

/// The shared-memory instruction the warp executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedAccess {
    /// ldmatrix.x4: lane l gives row l % 8 of matrix l / 8 (16 bytes).
    LdmatrixX4 = 0,
    /// ldmatrix.x1: lanes 0..7 give the rows.
    LdmatrixX1 = 1,
    /// st.shared of 4 bytes.
    Store4 = 2,
    /// ld.shared of 16 bytes.
    Load16 = 3,
}

/// Runs `access` with lane l at byte `offsets[l]` of the shared memory and returns the launch's
/// counters.
pub fn shared_access_counters(
    device: &Device,
    access: SharedAccess,
    offsets: &[u32; 32],
) -> Result<LaunchCounters> {
    if let Some(&offset) = offsets.iter().find(|&&o| o + 16 > SHARED_BYTES) {
        return Err(invalid(
            KERNEL.name,
            "offsets",
            format!("below {}", SHARED_BYTES - 16),
            offset,
        ));
    }
    let offsets = device.upload(offsets)?;
    let params = SharedAccessParams {
        offsets: device.pointer(&offsets, "offsets")?,
        access: access as u32,
    };
    let config = LaunchConfig {
        grid: [1, 1, 1],
        block: [32, 1, 1],
        dynamic_shared_bytes: SHARED_BYTES,
    };
    let (result, launches) = count_launches(|| device.launch(&KERNEL, config, &params));
    result?;
    Ok(launches.into_iter().next().unwrap_or_default())
}
