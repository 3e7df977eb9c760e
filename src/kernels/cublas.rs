//! The bf16 GEMMs on a GPU through cuBLAS (cudarc's dynamically loaded libcublas): bf16 operands, f32
//! accumulation (`CUBLAS_COMPUTE_32F`), a bf16 output or (for a LoRA rank-r product) an f32 one. Our
//! matrices are row-major; cuBLAS's are column-major, so a row-major `C = A·B` is computed as the
//! column-major `Cᵀ = Bᵀ·Aᵀ`, which reads the same memory.

use std::ffi::c_void;

use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::CudaBlas;
use cudarc::driver::CudaStream;

use super::{KernelError, Result};

/// Whether libcublas can be loaded: cudarc would panic at its first use otherwise.
fn check_present() -> Result<()> {
    // SAFETY: only tries to load the library.
    match unsafe { cudarc::cublas::sys::is_culib_present() } {
        true => Ok(()),
        false => Err(KernelError::NoCublas),
    }
}

/// Loads cuBLAS for `stream`'s GPU: an error, not a panic, when the library is missing.
pub(crate) fn load(stream: std::sync::Arc<CudaStream>) -> Result<CudaBlas> {
    check_present()?;
    CudaBlas::new(stream).map_err(|error| KernelError::Cuda {
        what: "creating a cuBLAS handle".to_string(),
        message: error.to_string(),
    })
}

/// The element type of a GEMM's output.
#[derive(Clone, Copy)]
pub(crate) enum GemmOutput {
    Bf16,
    F32,
}

/// A column-major product `c = a_op · b_op + beta · c` of `m x k` by `k x n` (bf16 operands, device
/// addresses, leading dimensions in elements), where `transpose_a` reads `a` as stored `k x m` and
/// `transpose_b` reads `b` as stored `n x k`.
pub(crate) struct Gemm {
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) a: u64,
    pub(crate) lda: usize,
    pub(crate) transpose_a: bool,
    pub(crate) b: u64,
    pub(crate) ldb: usize,
    pub(crate) transpose_b: bool,
    pub(crate) c: u64,
    pub(crate) ldc: usize,
    pub(crate) c_type: GemmOutput,
    pub(crate) beta: f32,
}

/// Queues `gemm` on the handle's stream (the caller has bound the GPU's context to this thread).
pub(crate) fn run(blas: &CudaBlas, what: &'static str, gemm: &Gemm) -> Result<()> {
    let int = |value: usize| {
        i32::try_from(value).map_err(|_| KernelError::Invalid {
            kernel: what,
            what: "dimension",
            expected: "below 2^31".to_string(),
            got: value.to_string(),
        })
    };
    let (alpha, beta) = (1.0f32, gemm.beta);
    let operation = |transpose: bool| match transpose {
        true => cublasOperation_t::CUBLAS_OP_T,
        false => cublasOperation_t::CUBLAS_OP_N,
    };
    let c_type = match gemm.c_type {
        GemmOutput::Bf16 => cudaDataType::CUDA_R_16BF,
        GemmOutput::F32 => cudaDataType::CUDA_R_32F,
    };
    // SAFETY: the addresses are device buffers of this GPU holding the m x k, k x n and m x n matrices
    // (the last of `c_type`) at the given leading dimensions (checked by the caller), alive until the
    // stream is synchronised.
    unsafe {
        gemm_ex(
            *blas.handle(),
            operation(gemm.transpose_a),
            operation(gemm.transpose_b),
            int(gemm.m)?,
            int(gemm.n)?,
            int(gemm.k)?,
            (&alpha as *const f32).cast::<c_void>(),
            gemm.a as *const c_void,
            cudaDataType::CUDA_R_16BF,
            int(gemm.lda)?,
            gemm.b as *const c_void,
            cudaDataType::CUDA_R_16BF,
            int(gemm.ldb)?,
            (&beta as *const f32).cast::<c_void>(),
            gemm.c as *mut c_void,
            c_type,
            int(gemm.ldc)?,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|error| KernelError::Cuda {
        what: format!("cuBLAS {what}"),
        message: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    /// Without libcublas (as on the CI machine) the linear layers fail with an error naming it, not a
    /// panic.
    #[test]
    fn a_missing_cublas_is_an_error_naming_the_library() {
        match super::check_present() {
            Ok(()) => println!("libcublas is present"),
            Err(error) => assert_eq!(
                error.to_string(),
                "no cuBLAS library found (libcublas.so.13 could not be loaded): the linear layers \
                 on a GPU need it; add the directory that holds it (such as /usr/local/cuda/lib64) to \
                 LD_LIBRARY_PATH"
            ),
        }
    }
}
