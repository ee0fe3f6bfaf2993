//! fsnn: feedback spiking neural networks trained by implicit differentiation on the equilibrium
//! state (IDE, Xiao et al., NeurIPS 2021), with hand-written WGSL kernels run through wgpu.
//!
//! The data path: dataset → batches → GPU buffers ([`gpu`]) → kernels ([`ops`], each with a CPU
//! twin in [`cpu`]) → loss → solver → optimizer.
//!
//! # Using it as a library
//!
//! A network is described by a [`NetworkSpec`] (a TOML model file, or one of the presets in
//! [`model::spec::presets`]); [`build`] turns it into a [`Model`] on a [`Gpu`] that trains a
//! batch ([`Model::train_step`]), evaluates one ([`Model::eval_batch`], then [`Model::logits`]
//! and [`Model::layer_rates`]) and moves its weights to and from the host ([`Model::to_host`],
//! [`Model::load_host`]), which [`save_checkpoint`] and [`read_checkpoint`] write and read.
//! [`load_sources`] gives a dataset's training and test splits as batch sources
//! ([`batches::BatchSource`]); [`train::train`] is the whole training loop of `fsnn train`.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use fsnn::{batches::BatchSource, Gpu, NetworkSpec};
//!
//! let gpu = Gpu::new(&fsnn::gpu::AdapterChoice::default())?;
//! let spec = NetworkSpec::from_file("models/fc400.toml".as_ref())?;
//! let mut net = fsnn::build(&spec, &gpu, 0)?;
//! let (train, _test) = fsnn::load_sources("fashion-mnist", None, spec.neuron.time_steps)?;
//! let idx: Vec<usize> = (0..64).collect();
//! let mut x = vec![0.0; idx.len() * train.sample_len()];
//! train.fill(&idx, 0, &mut x);
//! let y: Vec<u32> = idx.iter().map(|&i| train.label(i)).collect();
//! let stats = net.train_step(&gpu, &x, &y, 0.05, fsnn::solver::SolverKind::Broyden, 30, 0)?;
//! println!("loss {:.3}", stats.loss_sum / stats.samples as f64);
//! let state = fsnn::train::TrainState::default();
//! fsnn::save_checkpoint("fc400.safetensors".as_ref(), &spec, &state, &net.to_host(&gpu))?;
//! # Ok(())
//! # }
//! ```

pub mod batches;
pub mod checks;
pub use fsnn_core::twins as cpu;
pub mod data;
pub mod gpu;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod plot;
pub mod plot_font;
pub mod reference;
pub mod runs;
pub mod shader_source;
pub mod solver;
pub mod train;
pub mod variants;

pub mod inspect;

pub use batches::load_sources;
pub use fsnn_core;
pub use fsnn_core::{Backend, TensorOps};
pub use gpu::{Gpu, Tensor};
pub use model::{build, Model, NetworkSpec, Recording};
pub use train::{load_checkpoint, read_checkpoint, save_checkpoint, Checkpoint};
