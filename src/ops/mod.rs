//! CPU reference ops: for each layer one plain forward and one plain backward function, generic
//! over f32 and f64. Forwards write into buffers they are given; backwards accumulate (`+=`) into
//! the gradient buffers they are given.

pub mod attention;
pub(crate) mod bulk;
pub mod cross_entropy;
mod dot;
pub mod embedding;
mod gemm;
pub mod linear;
pub mod matmul;
mod microgemm;
mod narrow;
pub mod pool;
pub mod rmsnorm;
pub mod rope;
mod scratch;
pub(crate) mod simd;
pub mod swiglu;
