//! Building a model from its description ([`NetworkSpec`]), and the interface the trainer
//! drives ([`Model`]).

use anyhow::Result;

use super::multi::{ConvSpec, MultiConfig, MultiNet};
use super::network::Network;
use super::spec::{FeedbackSpec, NetworkSpec, OpSpec};
use super::{Arch, HostState, Net, NetConfig, StepStats};
use crate::gpu::Gpu;
use crate::kernels::Kernels;
use crate::solver::SolverKind;

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

/// Builds the GPU network a description states, freshly initialised from `seed` (load trained
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
pub fn build(spec: &NetworkSpec, gpu: &Gpu, seed: u64) -> Result<Box<dyn Model>> {
    spec.validate()?;
    Ok(Box::new(Network::new(gpu, spec.clone(), seed)?))
}

/// The hand-built single-layer model's ([`Net`]) description of `spec`, where it has that shape: one spiking layer
/// fed by `linear + batchnorm` (flat input) or `conv + batchnorm` (image input), with linear
/// feedback or stride-1 conv feedback of odd kernel and "same" padding.
pub fn as_single(spec: &NetworkSpec) -> Option<NetConfig> {
    if spec.layers.len() != 1 {
        return None;
    }
    let arch = match (
        spec.input.shape.as_slice(),
        spec.layers[0].ops.as_slice(),
        spec.feedback,
    ) {
        (
            &[input],
            &[OpSpec::Linear { out, bias: true }, OpSpec::BatchNorm {}],
            FeedbackSpec::Linear {},
        ) => Arch::Fc { input, hidden: out },
        (
            &[cin, h, w],
            &[OpSpec::Conv {
                out,
                k,
                stride,
                pad,
                bias: true,
            }, OpSpec::BatchNorm {}],
            FeedbackSpec::Conv {
                k: k_fb,
                stride: 1,
                pad: pad_fb,
            },
        ) if k_fb % 2 == 1 && pad_fb == k_fb / 2 => Arch::Conv {
            cin,
            h,
            w,
            channels: out,
            k_in: k,
            stride_in: stride,
            pad_in: pad,
            k_fb,
        },
        _ => return None,
    };
    let n = spec.neuron;
    Some(NetConfig {
        preset: spec.name.clone(),
        arch,
        classes: spec.classes,
        time_steps: n.time_steps,
        vth: n.vth,
        leak: n.leak,
        dropout: n.dropout,
        time_varying: spec.input.time_varying,
    })
}

/// The hand-built multi-layer model's ([`MultiNet`]) description of `spec`, where it has that shape: N ≥ 2 spiking
/// layers each fed by `conv + batchnorm`, image input (not time-varying), transposed-conv
/// feedback.
pub fn as_multi(spec: &NetworkSpec) -> Option<MultiConfig> {
    if spec.layers.len() < 2 || spec.input.time_varying {
        return None;
    }
    let &[cin, h, w] = spec.input.shape.as_slice() else {
        return None;
    };
    let FeedbackSpec::ConvTranspose {
        k,
        stride,
        pad,
        output_pad,
    } = spec.feedback
    else {
        return None;
    };
    let mut convs = Vec::new();
    for layer in &spec.layers {
        match layer.ops.as_slice() {
            &[OpSpec::Conv {
                out,
                k,
                stride,
                pad,
                bias: true,
            }, OpSpec::BatchNorm {}] => convs.push(ConvSpec {
                cout: out,
                k,
                stride,
                pad,
            }),
            _ => return None,
        }
    }
    let n = spec.neuron;
    Some(MultiConfig {
        preset: spec.name.clone(),
        cin,
        h,
        w,
        fx: convs[0],
        layers: convs[1..].to_vec(),
        fb_k: k,
        fb_stride: stride,
        fb_pad: pad,
        fb_output_pad: output_pad,
        classes: spec.classes,
        time_steps: n.time_steps,
        vth: n.vth,
        leak: n.leak,
        dropout: n.dropout,
        adjoint: spec.adjoint,
    })
}
