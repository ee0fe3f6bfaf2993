//! The part of fsnn that no compute backend owns: the shapes and parameters of the ops
//! ([`shapes`]), the seeded host RNG ([`rng`]), the host power iteration the spectral norm starts
//! from ([`host`]), the event kernels' default layouts ([`events`]), the cache folder ([`cache`]) and the [`Backend`] trait the network, the solver and the trainer are written
//! against. No wgpu here: a backend crate depends on this one, never the other way round.

pub mod backend;
pub mod cache;
pub mod events;
pub mod host;
pub mod rng;
pub mod shapes;
pub mod twins;

pub use backend::{Backend, TensorOps};
pub use rng::HostRng;
pub use shapes::{
    BnShape, ConvShape, ConvTShape, FcEventSim, Kernels, NeuronStep, Op, SolverIter, SolverLayout,
    SolverMode, SolverVectors, ANDERSON_MAX_SLOTS, BN_EPS,
};
