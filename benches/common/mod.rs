//! What several benches share: criterion's short configuration for work that takes milliseconds a
//! run, and the CUDA GPU of the GPU benches, which skip saying so when there is none.
// Each bench compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;
use longlora::kernels::Device;

/// 10 samples after 1 s of warm-up, over 3 s: enough for runs of milliseconds each.
pub fn short_criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// GPU 0, or `None` after printing "skipped: no CUDA GPU".
pub fn gpu_or_skip() -> Option<Device> {
    if Device::cuda_device_count() == 0 {
        println!("skipped: no CUDA GPU");
        return None;
    }
    Some(Device::cuda(0).expect("the CUDA device"))
}
