//! The feedback spiking network and what the trainer needs around it: [`spec`] describes a
//! network, [`network`] runs it on a [`Backend`] (simulation, fixed point, adjoint solve,
//! gradients), [`build`] builds it, [`config`] states the trainer's [`Model`] interface, [`spectral`] normalises its
//! feedback, and [`legacy`] reads the descriptions of checkpoints that predate model files.

pub mod config;
pub mod legacy;
pub mod network;
pub mod spec;
pub mod spectral;

pub use config::{Model, Recording};
pub use network::Network;
pub use spec::NetworkSpec;

use anyhow::{bail, Result};
use serde::Serialize;

use fsnn_core::backend::{Backend, TensorOps};

use crate::gpu::Gpu;
use crate::solver::SolveStats;

/// PyTorch's default: `running ← 0.9 · running + 0.1 · batch`.
pub const BN_MOMENTUM: f32 = 0.1;

/// A trainable tensor with its gradient and SGD momentum, named as in PyTorch.
pub struct Param<B: Backend = Gpu> {
    pub name: String,
    pub value: B::Tensor,
    pub grad: B::Tensor,
    pub momentum: B::Tensor,
}

pub use fsnn_core::host::HostState;

/// What one batch cost and produced.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StepStats {
    pub loss_sum: f64,
    pub correct: usize,
    pub samples: usize,
    pub forward_residual: f64,
    pub solve: SolveStats,
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// Part of `backward_ms` spent in the adjoint solve.
    pub solve_ms: f64,
    pub optimizer_ms: f64,
}

pub use fsnn_core::HostRng;

/// Parameters, their momentum buffers and the extra state tensors, copied to the host.
pub(crate) fn host_state<B: Backend>(
    gpu: &B,
    params: &[Param<B>],
    state: &[(String, &B::Tensor)],
) -> HostState {
    let mut tensors = Vec::new();
    for p in params {
        tensors.push((p.name.clone(), p.value.shape().to_vec(), gpu.read(&p.value)));
    }
    for p in params {
        tensors.push((
            format!("optim.momentum.{}", p.name),
            p.value.shape().to_vec(),
            gpu.read(&p.momentum),
        ));
    }
    for (name, t) in state {
        tensors.push((name.clone(), t.shape().to_vec(), gpu.read(t)));
    }
    HostState { tensors }
}

/// The inverse of [`host_state`]: every tensor must be present with the model's shape.
pub(crate) fn load_state<B: Backend>(
    gpu: &B,
    params: &[Param<B>],
    state: &[(String, &B::Tensor)],
    host: &HostState,
    source: &str,
) -> Result<()> {
    let find = |name: &str, shape: &[usize]| -> Result<&Vec<f32>> {
        let (_, s, d) = host
            .tensors
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| {
                anyhow::anyhow!("{source}: tensor {name:?} missing (checkpoint of another model?)")
            })?;
        if s.as_slice() != shape {
            bail!("{source}: tensor {name:?} has shape {s:?}, this model needs {shape:?} (checkpoint of another preset?)");
        }
        Ok(d)
    };
    for p in params {
        gpu.write(&p.value, find(&p.name, p.value.shape())?);
        gpu.write(
            &p.momentum,
            find(&format!("optim.momentum.{}", p.name), p.value.shape())?,
        );
    }
    for (name, t) in state {
        gpu.write(t, find(name, t.shape())?);
    }
    Ok(())
}

/// Summed loss and number of correct predictions of a batch, from the per-sample outputs of the
/// softmax cross-entropy kernel.
pub(crate) fn batch_loss_correct<B: Backend>(
    gpu: &B,
    loss: &B::Tensor,
    correct: &B::Tensor,
) -> (f64, usize) {
    let l: f64 = gpu.read(loss).iter().map(|&v| v as f64).sum();
    let c = gpu.read(correct).iter().filter(|&&v| v > 0.5).count();
    (l, c)
}

/// Builds the network a description states, on backend `gpu`, freshly initialised from `seed` (load trained
/// weights with [`Model::load_host`], e.g. from [`crate::train::read_checkpoint`]).
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let gpu = fsnn::Gpu::new(&fsnn::gpu::AdapterChoice::default())?;
/// let spec = fsnn::model::spec::preset("fc400")?;
/// let mut net = fsnn::build(&spec, &gpu, 0)?;
/// let x = vec![0.5f32; 8 * spec.sample_len()];
/// let labels = vec![3u32; 8];
/// let stats = net.eval_batch(&gpu, &x, &labels)?;
/// println!("loss {}", stats.loss_sum / 8.0);
/// # Ok(())
/// # }
/// ```
pub fn build<B: Backend>(spec: &NetworkSpec, gpu: &B, seed: u64) -> Result<Box<dyn Model<B>>> {
    spec.validate()?;
    Ok(Box::new(Network::new(gpu, spec.clone(), seed)?))
}
