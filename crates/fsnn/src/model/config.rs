//! One type for every model the trainer can build, and the interface the trainer drives.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::multi::{MultiConfig, MultiNet};
use super::{HostState, Net, NetConfig, StepStats};
use crate::gpu::Gpu;
use crate::kernels::Kernels;
use crate::solver::SolverKind;

/// A single-layer network (FC or conv feedback) or a multi-layer one (transposed-conv feedback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum ModelConfig {
    Single(NetConfig),
    Multi(MultiConfig),
}

/// What the trainer needs of a model.
pub trait Model {
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &mut self,
        gpu: &Gpu,
        x: &[f32],
        labels: &[u32],
        lr: f32,
        solver: SolverKind,
        threshold: usize,
        seed: u32,
    ) -> Result<StepStats>;
    fn eval_batch(&mut self, gpu: &Gpu, x: &[f32], labels: &[u32]) -> Result<StepStats>;
    fn to_host(&self, gpu: &Gpu) -> HostState;
    fn load_host(&mut self, gpu: &Gpu, state: &HostState, source: &str) -> Result<()>;
    /// Rates of the classifier's layer for the last batch.
    fn rate(&self, gpu: &Gpu) -> Vec<f32>;
    /// Logits of the last batch, `[batch, classes]`.
    fn logits(&self, _gpu: &Gpu) -> Vec<f32> {
        Vec::new()
    }
    /// Firing rates of every spiking layer for the last batch, `[batch, neurons_l]` each.
    fn layer_rates(&self, gpu: &Gpu) -> Vec<Vec<f32>> {
        vec![self.rate(gpu)]
    }
    /// An evaluation-mode batch (running statistics, no dropout) that also records every
    /// spiking layer's spikes for the first `samples` samples of the batch.
    fn record(
        &mut self,
        _gpu: &Gpu,
        _x: &[f32],
        _labels: &[u32],
        _samples: usize,
    ) -> Result<Recording> {
        anyhow::bail!("this model cannot record spikes")
    }
    /// ‖f(a) − a‖ / ‖a‖ per spiking layer at the last batch's rates, with the statistics and
    /// masks of that batch's forward pass.
    fn residual(&mut self, _gpu: &Gpu) -> Result<f64> {
        anyhow::bail!("this model cannot evaluate its residual")
    }
    /// Selects the forward simulation's kernels (resolve `Auto` first with
    /// [`crate::kernels::resolve`]) and returns the ones in use: models or shapes without an event
    /// path stay dense.
    fn set_kernels(&mut self, _kernels: Kernels) -> Kernels {
        Kernels::Dense
    }
}

/// What [`Model::record`] returns.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub stats: StepStats,
    /// `spikes[l][t]`: layer l's spikes at step t, `[samples, neurons_l]`, each 0 or 1.
    pub spikes: Vec<Vec<Vec<u8>>>,
    /// Rates of every layer for the whole batch, `[batch, neurons_l]`.
    pub rates: Vec<Vec<f32>>,
    /// Logits of the whole batch, `[batch, classes]`.
    pub logits: Vec<f32>,
}

macro_rules! forward_model {
    ($t:ty $(, $extra:item)*) => {
        impl Model for $t {
            fn train_step(
                &mut self,
                gpu: &Gpu,
                x: &[f32],
                labels: &[u32],
                lr: f32,
                solver: SolverKind,
                threshold: usize,
                seed: u32,
            ) -> Result<StepStats> {
                <$t>::train_step(self, gpu, x, labels, lr, solver, threshold, seed)
            }
            fn eval_batch(&mut self, gpu: &Gpu, x: &[f32], labels: &[u32]) -> Result<StepStats> {
                <$t>::eval_batch(self, gpu, x, labels)
            }
            fn to_host(&self, gpu: &Gpu) -> HostState {
                <$t>::to_host(self, gpu)
            }
            fn load_host(&mut self, gpu: &Gpu, state: &HostState, source: &str) -> Result<()> {
                <$t>::load_host(self, gpu, state, source)
            }
            fn rate(&self, gpu: &Gpu) -> Vec<f32> {
                <$t>::rate(self, gpu)
            }
            $($extra)*
        }
    };
}
forward_model!(
    Net,
    fn set_kernels(&mut self, kernels: Kernels) -> Kernels {
        Net::set_kernels(self, kernels);
        self.kernels()
    }
);
forward_model!(MultiNet);

impl ModelConfig {
    pub fn build(&self, gpu: &Gpu, seed: u64) -> Result<Box<dyn Model>> {
        Ok(match self {
            ModelConfig::Single(c) => Box::new(Net::new(gpu, c.clone(), seed)),
            ModelConfig::Multi(c) => Box::new(MultiNet::new(gpu, c.clone(), seed)?),
        })
    }
    pub fn preset(&self) -> &str {
        match self {
            ModelConfig::Single(c) => &c.preset,
            ModelConfig::Multi(c) => &c.preset,
        }
    }
    pub fn param_count(&self) -> usize {
        match self {
            ModelConfig::Single(c) => c.param_count(),
            ModelConfig::Multi(c) => c.param_count(),
        }
    }
    /// Neurons as the paper counts them (spiking plus input).
    pub fn paper_neurons(&self) -> usize {
        match self {
            ModelConfig::Single(c) => c.paper_neurons(),
            ModelConfig::Multi(c) => c.paper_neurons(),
        }
    }
    pub fn spiking_neurons(&self) -> usize {
        match self {
            ModelConfig::Single(c) => c.arch.neurons(),
            ModelConfig::Multi(c) => c.neurons(),
        }
    }
    pub fn input_len(&self) -> usize {
        match self {
            ModelConfig::Single(c) => c.arch.input_len(),
            ModelConfig::Multi(c) => c.input_len(),
        }
    }
    /// Values per sample in a batch (T frames for time-varying input).
    pub fn sample_len(&self) -> usize {
        match self {
            ModelConfig::Single(c) => c.sample_len(),
            ModelConfig::Multi(c) => c.input_len(),
        }
    }
    pub fn time_varying(&self) -> bool {
        matches!(self, ModelConfig::Single(c) if c.time_varying)
    }
    pub fn classes(&self) -> usize {
        match self {
            ModelConfig::Single(c) => c.classes,
            ModelConfig::Multi(c) => c.classes,
        }
    }
    /// (T, vth, leak, dropout), mutable, for command-line overrides.
    pub fn neuron_mut(&mut self) -> (&mut usize, &mut f32, &mut f32, &mut f32) {
        match self {
            ModelConfig::Single(c) => (&mut c.time_steps, &mut c.vth, &mut c.leak, &mut c.dropout),
            ModelConfig::Multi(c) => (&mut c.time_steps, &mut c.vth, &mut c.leak, &mut c.dropout),
        }
    }
    pub fn time_steps(&self) -> usize {
        match self {
            ModelConfig::Single(c) => c.time_steps,
            ModelConfig::Multi(c) => c.time_steps,
        }
    }
    pub fn leak(&self) -> f32 {
        match self {
            ModelConfig::Single(c) => c.leak,
            ModelConfig::Multi(c) => c.leak,
        }
    }
    pub fn vth(&self) -> f32 {
        match self {
            ModelConfig::Single(c) => c.vth,
            ModelConfig::Multi(c) => c.vth,
        }
    }
}
