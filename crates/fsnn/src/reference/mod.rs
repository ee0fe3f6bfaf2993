//! f64 ground truth for fsnn: the single-layer feedback spiking model of ALGORITHM.md, its
//! forward simulation, its equilibrium, and the implicit (IDE) gradient with three adjoint
//! solvers. Pure std, written for clarity; GPU code is tested against it.
//!
//! - [`dense`]: vector helpers, LU solve, softmax cross-entropy, a deterministic RNG.
//! - [`conv`]: `conv2d` (NCHW) with input/weight/bias gradients, and `conv_transpose2d`.
//! - [`bn`]: training-mode batch norm forward/backward.
//! - [`spectral`]: `W_eff = clamp(g,−1,1)·w/(uᵀwv)` and its backward.
//! - [`adjoint`]: `(I − J_fᵀ)β = gL` by dense LU, batched Broyden, damped fixed point.
//! - [`feedback`]: the model, generic over [`feedback::Arch`]; [`fc`] and [`convnet`] are
//!   its two variants (`fc::Model`, `convnet::Model`).
//! - [`multilayer`]: the AlexNet-F style multi-layer model, with both adjoint forms.
//! - [`network`]: one model for any [`crate::model::spec::NetworkSpec`], generalising the two.
//!
//! The equation, including where the dropout masks sit, is in [`feedback`]'s docs.

pub mod adjoint;
pub mod bn;
pub mod conv;
pub mod convnet;
pub mod dense;
pub mod fc;
pub mod feedback;
pub mod multilayer;
pub mod network;
pub mod spectral;

#[cfg(test)]
mod tests;
