//! The Rust side of `cuda/`: one launch function per kernel, each of which validates its arguments,
//! fills the kernel's parameter struct (`params`, generated from `cuda/include/params.h`) and launches
//! it on a [`Device`]: a CUDA GPU (through cudarc, with the fatbin that build.rs embeds) or the CPU
//! emulator (the same kernel sources compiled as C++). Because both backends go through the same
//! function, the launch logic that runs on a GPU is the one the CPU tests run.

/// Declares kernels: each one's emulator entry point (exported by `LONGLORA_EMU_ENTRY` in its `.cu`
/// file, with the signature of [`emu::Entry`]) and its [`Kernel`] constant, named as in the fatbin.
/// `emulator_only` marks self-tests that would hang a GPU.
macro_rules! kernels {
    ($($constant:ident = $name:ident / $entry:ident ($params:ty) $(, $emulator_only:ident)?;)*) => {
        extern "C" {
            $(fn $entry(
                params: *const $params,
                grid: *const u32,
                block: *const u32,
                dynamic_shared_bytes: u32,
                max_dynamic_shared_bytes: u32,
                max_shared_per_block: u32,
                static_shared_bytes: *mut u32,
                error: *mut std::ffi::c_char,
                error_len: usize,
            ) -> std::ffi::c_int;)*
        }
        $(const $constant: $crate::kernels::Kernel<$params> = $crate::kernels::Kernel {
            name: stringify!($name),
            emulator: $entry,
            on_gpu: kernels!(@on_gpu $($emulator_only)?),
        };)*
    };
    (@on_gpu) => {
        true
    };
    (@on_gpu emulator_only) => {
        false
    };
}

mod aligned;
mod attention;
mod cublas;
mod cuda;
mod device;
mod divergent_barrier;
mod elementwise;
pub mod emu;
mod emu_counters;
mod host_gemm;
mod launch;
mod linear;
mod lora;
mod mma_loop;
mod optim;
#[allow(non_camel_case_types, clippy::all)]
pub mod params;
mod probe;
mod reduce;
mod shared_access;

pub use attention::{
    attention_backward, attention_forward, attention_tiles, from_bf16, to_bf16, AttentionHeads,
    AttentionScratch, AttentionTiles, BackwardOptions, Sequences,
};
pub use cuda::built_with_kernels;
pub use device::{Buffer, Device, Element};
pub use elementwise::{
    bf16_to_f32, cross_entropy_backward, cross_entropy_forward, embedding_backward,
    embedding_forward, f32_to_bf16, rmsnorm_backward, rmsnorm_forward, rope_backward, rope_forward,
    scaled_f32_to_bf16, swiglu_backward, swiglu_forward, DeviceRopeTable,
};
pub use emu_counters::{count_launches, LaunchCounters};
pub(crate) use launch::{note_launch, shared_memory_opt_in, LaunchConfig};
pub use launch::{record_launches, without_shared_memory_opt_in, GpuTarget, LaunchRecord};
pub use linear::{linear_backward, linear_forward};
pub use lora::{
    lora_linear_backward, lora_linear_forward, lora_linear_forward_accumulate,
    lora_linear_forward_x_tile_loads, LinearScratch, LinearShape, LoraAdapter, LoraBackward,
    MAX_LORA_RANK,
};
pub use optim::{adamw_step, clip_coefficient, grad_norm, AdamwTensor};

/// Errors from preparing or running a kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{kernel}: invalid {what}: expected {expected}, got {got}")]
    Invalid {
        kernel: &'static str,
        what: &'static str,
        expected: String,
        got: String,
    },

    #[error("{kernel} in the emulator: {message}")]
    Emulator {
        kernel: &'static str,
        message: String,
    },

    #[error("{kernel} exists only in the emulator: on a GPU it would hang")]
    EmulatorOnly { kernel: &'static str },

    #[error("{what}: a buffer of the {buffer} passed to the {device}")]
    WrongDevice {
        what: &'static str,
        buffer: &'static str,
        device: &'static str,
    },

    #[error("built without CUDA kernels: run scripts/install-nvcc.sh and rebuild")]
    NoKernels,

    #[error("no CUDA driver found (libcuda could not be loaded)")]
    NoDriver,

    #[error(
        "no cuBLAS library found (libcublas.so.13 could not be loaded): the linear layers on a GPU \
         need it; add the directory that holds it (such as /usr/local/cuda/lib64) to LD_LIBRARY_PATH"
    )]
    NoCublas,

    #[error("CUDA {what}: {message}")]
    Cuda { what: String, message: String },

    #[error(
        "out of GPU memory {what}: {bytes} bytes asked for with {} of {} MiB free",
        .free / (1 << 20),
        .total / (1 << 20)
    )]
    OutOfMemory {
        /// The allocation, e.g. "for model.layers.0.self_attn.q_proj.weight".
        what: String,
        bytes: usize,
        free: usize,
        total: usize,
    },
}

impl KernelError {
    /// Names what an allocation that ran out of memory was for; other errors pass unchanged.
    pub fn allocating(self, what: impl Into<String>) -> KernelError {
        match self {
            KernelError::OutOfMemory {
                bytes, free, total, ..
            } => KernelError::OutOfMemory {
                what: what.into(),
                bytes,
                free,
                total,
            },
            other => other,
        }
    }
}

/// The result type of this module.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// A kernel as both backends know it: its name in the fatbin and its emulator entry point.
pub(crate) struct Kernel<P> {
    name: &'static str,
    emulator: emu::Entry<P>,
    /// False for emulator self-tests that would hang a GPU.
    on_gpu: bool,
}

/// The error for an argument that fails a kernel's requirements.
fn invalid(
    kernel: &'static str,
    what: &'static str,
    expected: impl ToString,
    got: impl ToString,
) -> KernelError {
    KernelError::Invalid {
        kernel,
        what,
        expected: expected.to_string(),
        got: got.to_string(),
    }
}

/// Checks that a buffer holds exactly `expected` elements.
fn check_len<T: Element>(
    kernel: &'static str,
    what: &'static str,
    buffer: &Buffer<T>,
    expected: usize,
) -> Result<()> {
    if buffer.len() == expected {
        Ok(())
    } else {
        Err(invalid(
            kernel,
            what,
            format!("{expected} elements"),
            format!("{} elements", buffer.len()),
        ))
    }
}

/// The kernel workspace's checks of its own device primitives and of the emulator: the probe kernel
/// (every primitive's raw per-lane output), an mma loop, a barrier that diverges, a shared-memory
/// reduction and counted shared-memory accesses. They serve tests/emulator.rs, the GPU golden
/// vectors, the emulator bench and the kernel report, not users of the library.
#[doc(hidden)]
pub mod self_test {
    pub use super::divergent_barrier::divergent_barrier;
    pub use super::mma_loop::mma_loop;
    pub use super::params::Divergence;
    pub use super::probe::{probe, ProbeInputs, ProbeOutputs, LDMATRIX_REGISTERS};
    pub use super::reduce::reduce_sum;
    pub use super::shared_access::{shared_access_counters, SharedAccess};
}
