//! Where kernels run and where their buffers live: a CUDA GPU, or the CPU emulator, whose "device
//! memory" is ordinary host memory.

use super::cublas::Gemm;
use super::cuda::{DeviceSlice, Gpu};
use super::emu::SharedMemoryLimits;
use super::{
    check_len, emu, host_gemm, note_launch, shared_memory_opt_in, GpuTarget, Kernel, KernelError,
    LaunchConfig, Result,
};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u32 {}
    impl Sealed for u16 {}
    impl Sealed for i32 {}
    impl Sealed for super::super::params::OptimTensor {}
}

/// An element type a [`Buffer`] can hold (16-bit floats travel as their `u16` bits).
pub trait Element:
    cudarc::driver::DeviceRepr
    + cudarc::driver::ValidAsZeroBits
    + Default
    + Copy
    + 'static
    + sealed::Sealed
{
}
impl Element for f32 {}
impl Element for u32 {}
impl Element for u16 {}
impl Element for i32 {}
/// The optimizer's table of tensors (cuda/adamw.cu) lives in device memory.
impl Element for super::params::OptimTensor {}

/// A device that runs kernels.
pub struct Device(Backend);

enum Backend {
    /// Refusing what a GPU of this generation refuses.
    Emulator(GpuTarget),
    Cuda(Gpu),
}

/// An array in a device's memory.
pub struct Buffer<T: Element>(Storage<T>);

enum Storage<T: Element> {
    // Allocated by the global allocator (malloc), so 16-byte aligned, as cp.async's sources must be.
    Host(Vec<T>),
    Cuda(DeviceSlice<T>),
}

impl Device {
    /// The CPU emulator: slow, for tests. It refuses launches that an A100 (sm_80) would refuse, the
    /// smaller of the targets (163 KB of shared memory per block), so that what passes here runs on both.
    pub fn emulator() -> Device {
        Device::emulator_for(GpuTarget::Sm80)
    }

    /// The CPU emulator, refusing what a GPU of `target` would.
    pub fn emulator_for(target: GpuTarget) -> Device {
        Device(Backend::Emulator(target))
    }

    /// CUDA GPU number `ordinal`. Fails with a clear error when the library was built without the
    /// kernels (no nvcc at build time) or when no CUDA driver is installed.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Gpu::new(ordinal).map(|gpu| Device(Backend::Cuda(gpu)))
    }

    /// How many CUDA GPUs the driver sees: 0 when there is no driver.
    pub fn cuda_device_count() -> usize {
        Gpu::device_count()
    }

    /// "CPU emulator", or the GPU's name.
    pub fn name(&self) -> &str {
        match &self.0 {
            Backend::Emulator(_) => "CPU emulator",
            Backend::Cuda(gpu) => gpu.name(),
        }
    }

    pub fn is_emulator(&self) -> bool {
        matches!(self.0, Backend::Emulator(_))
    }

    /// Free and total device memory in bytes; `None` in the emulator, whose buffers are host memory.
    pub fn memory_info(&self) -> Result<Option<(usize, usize)>> {
        match &self.0 {
            Backend::Emulator(_) => Ok(None),
            Backend::Cuda(gpu) => gpu.memory_info().map(Some),
        }
    }

    /// Copies `data` to the device.
    pub fn upload<T: Element>(&self, data: &[T]) -> Result<Buffer<T>> {
        Ok(Buffer(match &self.0 {
            Backend::Emulator(_) => Storage::Host(data.to_vec()),
            Backend::Cuda(gpu) => Storage::Cuda(gpu.upload(data)?),
        }))
    }

    /// A buffer of `len` zeros.
    pub fn zeros<T: Element>(&self, len: usize) -> Result<Buffer<T>> {
        Ok(Buffer(match &self.0 {
            Backend::Emulator(_) => Storage::Host(vec![T::default(); len]),
            Backend::Cuda(gpu) => Storage::Cuda(gpu.zeros(len)?),
        }))
    }

    /// A buffer of `len` elements whose contents are unspecified until written, for scratch that
    /// kernels overwrite in full (no zeroing pass). The emulator fills it with all-ones bytes (NaN in
    /// every float format), so that a kernel reading it before writing shows in the results.
    pub fn scratch<T: Element>(&self, len: usize) -> Result<Buffer<T>> {
        Ok(Buffer(match &self.0 {
            Backend::Emulator(_) => {
                let mut data = vec![T::default(); len];
                // SAFETY: every Element is integers, floats or raw pointers, valid for any bits.
                unsafe { std::ptr::write_bytes(data.as_mut_ptr(), 0xff, len) };
                Storage::Host(data)
            }
            Backend::Cuda(gpu) => Storage::Cuda(gpu.uninitialized(len)?),
        }))
    }

    /// Overwrites `buffer` with `data` (same length), reusing its memory.
    pub fn write<T: Element>(&self, buffer: &mut Buffer<T>, data: &[T]) -> Result<()> {
        check_len("write", "buffer", buffer, data.len())?;
        match (&self.0, &mut buffer.0) {
            (Backend::Emulator(_), Storage::Host(dst)) => {
                dst.copy_from_slice(data);
                Ok(())
            }
            (Backend::Cuda(gpu), Storage::Cuda(slice)) => gpu.write(slice, data),
            _ => Err(self.wrong_device_place("write", matches!(buffer.0, Storage::Host(_)))),
        }
    }

    /// Sets every element of `buffer` to zero.
    pub fn fill_zeros<T: Element>(&self, buffer: &mut Buffer<T>) -> Result<()> {
        match (&self.0, &mut buffer.0) {
            (Backend::Emulator(_), Storage::Host(data)) => {
                data.fill(T::default());
                Ok(())
            }
            (Backend::Cuda(gpu), Storage::Cuda(slice)) => gpu.fill_zeros(slice),
            _ => Err(self.wrong_device_place("fill_zeros", matches!(buffer.0, Storage::Host(_)))),
        }
    }

    /// Copies `src` into `dst` (same length) on the device.
    pub fn copy<T: Element>(&self, src: &Buffer<T>, dst: &mut Buffer<T>) -> Result<()> {
        check_len("copy", "destination", dst, src.len())?;
        match (&self.0, &src.0, &mut dst.0) {
            (Backend::Emulator(_), Storage::Host(from), Storage::Host(to)) => {
                to.copy_from_slice(from);
                Ok(())
            }
            (Backend::Cuda(gpu), Storage::Cuda(from), Storage::Cuda(to)) => gpu.copy(from, to),
            _ => Err(self.wrong_device("copy", src)),
        }
    }

    /// Copies `buffer` back to the host, after every kernel launched before has finished.
    pub fn download<T: Element>(&self, buffer: &Buffer<T>) -> Result<Vec<T>> {
        match (&self.0, &buffer.0) {
            (Backend::Emulator(_), Storage::Host(data)) => Ok(data.clone()),
            (Backend::Cuda(gpu), Storage::Cuda(slice)) => gpu.download(slice),
            _ => Err(self.wrong_device("download", buffer)),
        }
    }

    /// Runs `kernel` with `params`, whose pointers must come from buffers of this device.
    pub(crate) fn launch<P: cudarc::driver::DeviceRepr>(
        &self,
        kernel: &Kernel<P>,
        config: LaunchConfig,
        params: &P,
    ) -> Result<()> {
        match &self.0 {
            Backend::Emulator(target) => {
                let static_bytes = emu::static_shared_bytes(kernel.emulator);
                let max_per_block = target.max_shared_per_block();
                let dynamic_bytes = config.dynamic_shared_bytes;
                let max_dynamic_bytes =
                    shared_memory_opt_in(kernel.name, static_bytes, dynamic_bytes, max_per_block)?;
                note_launch(kernel.name, config, static_bytes, max_dynamic_bytes);
                let limits = SharedMemoryLimits {
                    max_dynamic_bytes,
                    max_per_block,
                };
                emu::launch(kernel.name, kernel.emulator, config, limits, params)
            }
            Backend::Cuda(_) if !kernel.on_gpu => Err(KernelError::EmulatorOnly {
                kernel: kernel.name,
            }),
            Backend::Cuda(gpu) => gpu.launch(kernel.name, config, params),
        }
    }

    /// Queues a GEMM (`what` names it in errors): cuBLAS on a GPU, its host stand-in in the emulator
    /// (`host_gemm.rs`). The caller has checked the lengths of the buffers whose addresses it holds.
    pub(crate) fn gemm(&self, what: &'static str, gemm: &Gemm) -> Result<()> {
        match &self.0 {
            Backend::Emulator(_) => {
                host_gemm::run(gemm);
                Ok(())
            }
            Backend::Cuda(gpu) => gpu.gemm(what, gemm),
        }
    }

    /// The address of `buffer` for a kernel's parameters.
    pub(crate) fn pointer<T: Element>(
        &self,
        buffer: &Buffer<T>,
        what: &'static str,
    ) -> Result<*const T> {
        match (&self.0, &buffer.0) {
            (Backend::Emulator(_), Storage::Host(data)) => Ok(data.as_ptr()),
            (Backend::Cuda(gpu), Storage::Cuda(slice)) => Ok(gpu.address(slice) as *const T),
            _ => Err(self.wrong_device(what, buffer)),
        }
    }

    /// The address of `buffer` for a kernel's parameters, for a kernel that writes it.
    pub(crate) fn pointer_mut<T: Element>(
        &self,
        buffer: &mut Buffer<T>,
        what: &'static str,
    ) -> Result<*mut T> {
        match (&self.0, &mut buffer.0) {
            (Backend::Emulator(_), Storage::Host(data)) => Ok(data.as_mut_ptr()),
            (Backend::Cuda(gpu), Storage::Cuda(slice)) => Ok(gpu.address(slice) as *mut T),
            _ => Err(self.wrong_device(what, buffer)),
        }
    }

    fn wrong_device<T: Element>(&self, what: &'static str, buffer: &Buffer<T>) -> KernelError {
        self.wrong_device_place(what, matches!(buffer.0, Storage::Host(_)))
    }

    fn wrong_device_place(&self, what: &'static str, buffer_on_host: bool) -> KernelError {
        let place = |emulator: bool| if emulator { "CPU emulator" } else { "CUDA GPU" };
        KernelError::WrongDevice {
            what,
            buffer: place(buffer_on_host),
            device: place(self.is_emulator()),
        }
    }
}

impl<T: Element> Buffer<T> {
    pub fn len(&self) -> usize {
        match &self.0 {
            Storage::Host(data) => data.len(),
            Storage::Cuda(slice) => slice.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
