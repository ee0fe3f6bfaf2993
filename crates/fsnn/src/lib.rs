//! fsnn: feedback spiking neural networks trained by implicit differentiation on the equilibrium
//! state (IDE, Xiao et al., NeurIPS 2021), with hand-written WGSL kernels run through wgpu.
//!
//! The data path: dataset → batches → GPU buffers ([`gpu`]) → kernels ([`ops`], each with a CPU
//! twin in [`cpu`]) → loss → solver → optimizer.

pub mod batches;
pub mod checks;
pub mod cpu;
pub mod data;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod plot;
pub mod plot_font;
pub mod reference;
pub mod shader_source;
pub mod solver;
pub mod train;
pub mod variants;

pub use gpu::{Gpu, Tensor};
