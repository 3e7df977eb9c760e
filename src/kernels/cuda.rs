//! The CUDA backend: the driver API through cudarc (loaded at run time, so building needs no CUDA),
//! running the fatbin that build.rs compiled and embedded. Every cudarc call of the crate is in
//! src/kernels/.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;

use cudarc::driver::sys::{CUdevice_attribute_enum, CUfunction_attribute_enum, CUresult};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    DriverError, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::cublas::{self, Gemm};
use super::device::Element;
use super::params::{
    AttentionBackwardParams, AttentionForwardParams, DivergentBarrierParams, MmaLoopParams,
    ProbeParams, ReduceSumParams,
};
use super::{note_launch, shared_memory_opt_in, KernelError, LaunchConfig, Result};

pub(crate) type DeviceSlice<T> = CudaSlice<T>;

// SAFETY: the params structs are plain C structs (params.h) of integers, floats and device pointers,
// which the kernels take by value.
unsafe impl DeviceRepr for ProbeParams {}
unsafe impl DeviceRepr for ReduceSumParams {}
unsafe impl DeviceRepr for DivergentBarrierParams {}
unsafe impl DeviceRepr for MmaLoopParams {}
unsafe impl DeviceRepr for AttentionForwardParams {}
unsafe impl DeviceRepr for AttentionBackwardParams {}

/// Set to 1, every launch waits for its kernel to finish and reports a failure as that kernel's.
const SYNC_LAUNCH_VARIABLE: &str = "LONGLORA_SYNC_LAUNCH";

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

/// A kernel looked up once, with what its launches need to know.
struct LoadedKernel {
    function: CudaFunction,
    static_shared_bytes: u32,
    /// The opt-in limit of dynamic shared memory set so far (0: never set).
    max_dynamic_shared_bytes: AtomicU32,
}

/// One GPU with our kernels loaded, and the stream everything runs on.
pub(crate) struct Gpu {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    name: String,
    max_shared_per_block: u32,
    kernels: Mutex<HashMap<&'static str, Arc<LoadedKernel>>>,
    /// Loaded at the first plain GEMM.
    blas: OnceLock<CudaBlas>,
    sync_launches: bool,
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
        let max_shared_per_block = context
            .attribute(
                CUdevice_attribute_enum::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .map_err(cuda_error("reading the shared memory per block"))?;
        let module = context
            .load_module(Ptx::from_binary(fatbin.to_vec()))
            .map_err(cuda_error("loading the kernels"))?;
        Ok(Gpu {
            stream: context.default_stream(),
            context,
            module,
            name,
            max_shared_per_block: u32::try_from(max_shared_per_block).unwrap_or(0),
            kernels: Mutex::new(HashMap::new()),
            blas: OnceLock::new(),
            sync_launches: std::env::var_os(SYNC_LAUNCH_VARIABLE).is_some_and(|v| v == "1"),
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
            .map_err(self.allocation_error::<T>("copying to the GPU", data.len()))
    }

    pub(crate) fn zeros<T: Element>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(len)
            .map_err(self.allocation_error::<T>("allocating GPU memory", len))
    }

    pub(crate) fn uninitialized<T: Element>(&self, len: usize) -> Result<CudaSlice<T>> {
        // SAFETY: the caller's kernels write every element before anything reads it.
        unsafe { self.stream.alloc(len) }
            .map_err(self.allocation_error::<T>("allocating GPU memory", len))
    }

    /// Free and total device memory in bytes.
    pub(crate) fn memory_info(&self) -> Result<(usize, usize)> {
        self.context
            .bind_to_thread()
            .map_err(cuda_error("binding the context"))?;
        cudarc::driver::result::mem_get_info().map_err(cuda_error("reading the free memory"))
    }

    /// An allocation of `len` elements that failed: out of memory says how much was asked for and
    /// how much is free; anything else is the driver's error.
    fn allocation_error<T>(
        &self,
        what: &'static str,
        len: usize,
    ) -> impl FnOnce(DriverError) -> KernelError + '_ {
        move |error| {
            if error.0 != CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                return cuda_error(what)(error);
            }
            let (free, total) = self.memory_info().unwrap_or((0, 0));
            KernelError::OutOfMemory {
                what: "for a buffer".into(),
                bytes: len * std::mem::size_of::<T>(),
                free,
                total,
            }
        }
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

    /// Makes this GPU's context the calling thread's, which every driver call that takes no stream
    /// (function lookup, attributes) relies on: the first call from a new thread would fail otherwise.
    fn bind(&self) -> Result<()> {
        self.context
            .bind_to_thread()
            .map_err(cuda_error("binding the GPU to this thread"))
    }

    /// Kernel `name`, looked up in the module on its first launch only.
    fn kernel(&self, name: &'static str) -> Result<Arc<LoadedKernel>> {
        let mut kernels = self
            .kernels
            .lock()
            .expect("no launch panics holding the kernel table");
        if let Some(kernel) = kernels.get(name) {
            return Ok(Arc::clone(kernel));
        }
        let function = self
            .module
            .load_function(name)
            .map_err(cuda_error(format!("finding kernel {name}")))?;
        let static_shared_bytes = function
            .get_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
            .map_err(cuda_error(format!("reading the shared memory of {name}")))?;
        let kernel = Arc::new(LoadedKernel {
            function,
            static_shared_bytes: u32::try_from(static_shared_bytes).unwrap_or(0),
            max_dynamic_shared_bytes: AtomicU32::new(0),
        });
        kernels.insert(name, Arc::clone(&kernel));
        Ok(kernel)
    }

    /// Queues kernel `name`; errors inside the kernel surface at the next download, or at once with
    /// LONGLORA_SYNC_LAUNCH=1.
    pub(crate) fn launch<P: DeviceRepr>(
        &self,
        name: &'static str,
        config: LaunchConfig,
        params: &P,
    ) -> Result<()> {
        self.bind()?;
        let kernel = self.kernel(name)?;
        let static_bytes = kernel.static_shared_bytes;
        let dynamic_bytes = config.dynamic_shared_bytes;
        let opt_in =
            shared_memory_opt_in(name, static_bytes, dynamic_bytes, self.max_shared_per_block)?;
        if let Some(bytes) = opt_in {
            if kernel.max_dynamic_shared_bytes.load(Ordering::Relaxed) < bytes {
                kernel
                    .function
                    .set_attribute(
                        CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        bytes as i32,
                    )
                    .map_err(cuda_error(format!(
                        "allowing {name} {bytes} bytes of dynamic shared memory"
                    )))?;
                kernel
                    .max_dynamic_shared_bytes
                    .fetch_max(bytes, Ordering::Relaxed);
            }
        }
        note_launch(name, config, static_bytes, opt_in);
        let cuda_config = cudarc::driver::LaunchConfig {
            grid_dim: config.grid.into(),
            block_dim: config.block.into(),
            shared_mem_bytes: dynamic_bytes,
        };
        let mut launch = self.stream.launch_builder(&kernel.function);
        launch.arg(params);
        // SAFETY: `params` is the kernel's parameter struct, filled by its launch function from buffers
        // of this GPU that outlive the launch's use of them (downloads synchronise the stream).
        unsafe { launch.launch(cuda_config) }.map_err(cuda_error(format!("launching {name}")))?;
        self.finish(name)
    }

    /// Queues a plain GEMM through cuBLAS (`what` names it in errors).
    pub(crate) fn gemm(&self, what: &'static str, gemm: &Gemm) -> Result<()> {
        self.bind()?;
        let blas = match self.blas.get() {
            Some(blas) => blas,
            None => {
                let loaded = cublas::load(Arc::clone(&self.stream))?;
                self.blas.get_or_init(|| loaded)
            }
        };
        cublas::run(blas, what, gemm)?;
        self.finish(what)
    }

    /// With LONGLORA_SYNC_LAUNCH=1, waits for the work just queued and names it in a failure.
    fn finish(&self, what: &'static str) -> Result<()> {
        if !self.sync_launches {
            return Ok(());
        }
        self.stream.synchronize().map_err(cuda_error(format!(
            "running {what} ({SYNC_LAUNCH_VARIABLE}=1)"
        )))
    }
}
