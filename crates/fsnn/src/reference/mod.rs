//! f64 ground truth for fsnn: the feedback spiking model of ALGORITHM.md for any network
//! description, its forward simulation, its equilibrium, and the implicit (IDE) gradient with
//! several adjoint solvers. Pure std, written for clarity; GPU code is tested against it.
//!
//! - [`dense`]: vector helpers, LU solve, softmax cross-entropy, a deterministic RNG.
//! - [`conv`]: `conv2d` (NCHW) with input/weight/bias gradients, and `conv_transpose2d`.
//! - [`bn`]: training-mode batch norm forward/backward; [`bn::BnMode`] (batch or running
//!   statistics) and the running-statistics update.
//! - [`spectral`]: `W_eff = clamp(g,−1,1)·w/(uᵀwv)` and its backward.
//! - [`adjoint`]: `(I − J_fᵀ)β = gL` by dense LU, batched Broyden, damped fixed point,
//!   Anderson, and the authors' halved iteration.
//! - [`network`]: the model of any [`crate::model::spec::NetworkSpec`] (one spiking layer or
//!   many; linear, conv or transposed-conv feedback; the two [`network::AdjointForm`]s), with
//!   its tests: implicit gradients against finite differences, iterative adjoints against the
//!   dense solve, the simulation against the equilibrium.
//!
//! The equation, including where the dropout masks sit, is in [`network`]'s docs.

pub mod adjoint;
pub mod bn;
pub mod conv;
pub mod dense;
pub mod network;
pub mod spectral;
