//! Cost models, counted rather than timed (DESIGN §3): FLOPs of attention and of a training step,
//! and training memory by category.

pub mod flops;
pub mod memory;
