//! The interface the trainer drives ([`Model`]); [`super::build`] makes one from its
//! description ([`super::NetworkSpec`]).

use anyhow::Result;
use fsnn_core::backend::Backend;
use fsnn_core::Kernels;

use super::{HostState, StepStats};
use crate::gpu::Gpu;
use crate::solver::SolverKind;

/// What the trainer needs of a model, on backend `B` (the GPU unless stated).
pub trait Model<B: Backend = Gpu> {
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &mut self,
        gpu: &B,
        x: &[f32],
        labels: &[u32],
        lr: f32,
        solver: SolverKind,
        threshold: usize,
        seed: u32,
    ) -> Result<StepStats>;
    fn eval_batch(&mut self, gpu: &B, x: &[f32], labels: &[u32]) -> Result<StepStats>;
    fn to_host(&self, gpu: &B) -> HostState;
    fn load_host(&mut self, gpu: &B, state: &HostState, source: &str) -> Result<()>;
    /// Rates of the classifier's layer for the last batch.
    fn rate(&self, gpu: &B) -> Vec<f32>;
    /// Logits of the last batch, `[batch, classes]`.
    fn logits(&self, _gpu: &B) -> Vec<f32> {
        Vec::new()
    }
    /// Firing rates of every spiking layer for the last batch, `[batch, neurons_l]` each.
    fn layer_rates(&self, gpu: &B) -> Vec<Vec<f32>> {
        vec![self.rate(gpu)]
    }
    /// An evaluation-mode batch (running statistics, no dropout) that also records every
    /// spiking layer's spikes for the first `samples` samples of the batch.
    fn record(
        &mut self,
        _gpu: &B,
        _x: &[f32],
        _labels: &[u32],
        _samples: usize,
    ) -> Result<Recording> {
        anyhow::bail!("this model cannot record spikes")
    }
    /// The equilibrium residual per spiking layer after an evaluation batch: f evaluated at the
    /// last layer's simulated rate a_N (running statistics, no dropout) gives every layer's
    /// activation; layer l's entry is ‖f_l(a_N) − a_l‖ / ‖a_l‖ against its simulated rate a_l.
    /// The last entry is the fixed-point residual ‖f(a) − a‖ / ‖a‖ itself.
    fn residual(&mut self, _gpu: &B) -> Result<Vec<f64>> {
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
