//! The CUDA backend: the driver API through cudarc (loaded at run time, so building needs no CUDA),
//! running the fatbin that build.rs compiled and embedded. Every cudarc call of the crate is in
//! src/kernels/.

use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{
    CudaContext, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, DriverError,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::device::Element;
use super::params::{
    AttentionBackwardParams, AttentionForwardParams, DivergentBarrierParams, MmaLoopParams,
    ProbeParams, ReduceSumParams,
};
use super::{KernelError, LaunchConfig, Result};

pub(crate) type DeviceSlice<T> = CudaSlice<T>;

// SAFETY: the params structs are plain C structs (params.h) of integers, floats and device pointers,
// which the kernels take by value.
unsafe impl DeviceRepr for ProbeParams {}
unsafe impl DeviceRepr for ReduceSumParams {}
unsafe impl DeviceRepr for DivergentBarrierParams {}
unsafe impl DeviceRepr for MmaLoopParams {}
unsafe impl DeviceRepr for AttentionForwardParams {}
unsafe impl DeviceRepr for AttentionBackwardParams {}

/// Dynamic shared memory a kernel may use without opting in to more.
const DEFAULT_DYNAMIC_SHARED_BYTES: u32 = 48 * 1024;

#[cfg(longlora_cuda_kernels)]
fn fatbin() -> Result<&'static [u8]> {
    Ok(include_bytes!(concat!(env!("OUT_DIR"), "/kernels.fatbin")))
}

#[cfg(not(longlora_cuda_kernels))]
fn fatbin() -> Result<&'static [u8]> {
    Err(KernelError::NoKernels)
}

/// Whether build.rs found nvcc and embedded the kernels' fatbin.
pub fn built_with_kernels() -> bool {
    fatbin().is_ok()
}

fn driver_present() -> bool {
    // SAFETY: only tries to load the driver library; cudarc panics on first use if it is missing.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

fn cuda_error(what: impl Into<String>) -> impl FnOnce(DriverError) -> KernelError {
    let what = what.into();
    move |error| KernelError::Cuda {
        what,
        message: error.to_string(),
    }
}

/// One GPU with our kernels loaded, and the stream everything runs on.
pub(crate) struct Gpu {
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    name: String,
}

impl Gpu {
    pub(crate) fn new(ordinal: usize) -> Result<Gpu> {
        let fatbin = fatbin()?;
        if !driver_present() {
            return Err(KernelError::NoDriver);
        }
        let context =
            CudaContext::new(ordinal).map_err(cuda_error(format!("opening GPU {ordinal}")))?;
        // Everything runs on one stream, in order, so cudarc's per-buffer events are not needed.
        // SAFETY: no buffer of this context is used on another stream.
        unsafe { context.disable_event_tracking() };
        let name = context.name().map_err(cuda_error("reading the GPU name"))?;
        let module = context
            .load_module(Ptx::from_binary(fatbin.to_vec()))
            .map_err(cuda_error("loading the kernels"))?;
        Ok(Gpu {
            stream: context.default_stream(),
            module,
            name,
        })
    }

    pub(crate) fn device_count() -> usize {
        if !driver_present() {
            return 0;
        }
        CudaContext::device_count().map_or(0, |count| usize::try_from(count).unwrap_or(0))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn upload<T: Element>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        self.stream
            .clone_htod(data)
            .map_err(cuda_error("copying to the GPU"))
    }

    pub(crate) fn zeros<T: Element>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(len)
            .map_err(cuda_error("allocating GPU memory"))
    }

    pub(crate) fn write<T: Element>(&self, slice: &mut CudaSlice<T>, data: &[T]) -> Result<()> {
        self.stream
            .memcpy_htod(data, slice)
            .map_err(cuda_error("copying to the GPU"))
    }

    pub(crate) fn fill_zeros<T: Element>(&self, slice: &mut CudaSlice<T>) -> Result<()> {
        self.stream
            .memset_zeros(slice)
            .map_err(cuda_error("zeroing GPU memory"))
    }

    pub(crate) fn copy<T: Element>(
        &self,
        src: &CudaSlice<T>,
        dst: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.stream
            .memcpy_dtod(src, dst)
            .map_err(cuda_error("copying within the GPU"))
    }

    pub(crate) fn download<T: Element>(&self, slice: &CudaSlice<T>) -> Result<Vec<T>> {
        let data = self
            .stream
            .clone_dtoh(slice)
            .map_err(cuda_error("copying from the GPU"))?;
        self.stream
            .synchronize()
            .map_err(cuda_error("waiting for the GPU"))?;
        Ok(data)
    }

    pub(crate) fn address<T>(&self, slice: &CudaSlice<T>) -> u64 {
        slice.device_ptr(&self.stream).0
    }

    /// Queues kernel `name`; errors inside the kernel surface at the next download.
    pub(crate) fn launch<P: DeviceRepr>(
        &self,
        name: &'static str,
        config: LaunchConfig,
        params: &P,
    ) -> Result<()> {
        let function = self
            .module
            .load_function(name)
            .map_err(cuda_error(format!("finding kernel {name}")))?;
        if config.dynamic_shared_bytes > DEFAULT_DYNAMIC_SHARED_BYTES {
            function
                .set_attribute(
                    CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    config.dynamic_shared_bytes as i32,
                )
                .map_err(cuda_error(format!(
                    "allowing {name} {} bytes of shared memory",
                    config.dynamic_shared_bytes
                )))?;
        }
        let config = cudarc::driver::LaunchConfig {
            grid_dim: config.grid.into(),
            block_dim: config.block.into(),
            shared_mem_bytes: config.dynamic_shared_bytes,
        };
        let mut launch = self.stream.launch_builder(&function);
        launch.arg(params);
        // SAFETY: `params` is the kernel's parameter struct, filled by its launch function from buffers
        // of this GPU that outlive the launch's use of them (downloads synchronise the stream).
        unsafe { launch.launch(config) }.map_err(cuda_error(format!("launching {name}")))?;
        Ok(())
    }
}
