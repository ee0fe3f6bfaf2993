//! The one feedback spiking network (ALGORITHM.md §1–§4), built from a [`NetworkSpec`]: the
//! T-step simulation, the fixed-point map f, the adjoint solve through J_fᵀ, the parameter
//! gradients, evaluation and checkpoint naming, for every model a description can state.
//!
//! Per sample, with layer l's operator chain C_l (linear, conv, avgpool, BN) and dropout masks m:
//!
//! ```text
//! x1       = m_x ⊙ C_1(x)                                  constant over time; BN on batch stats
//! z_1      = m_fb ⊙ FB(W_eff, a_N) + x1,   a_1 = σ(z_1 / vth)
//! z_l      = m_l ⊙ C_l(a_{l−1}),           a_l = σ(z_l / vth)      l = 2..N
//! f(a_N)   = a_N from the lines above;  σ = clamp(·, 0, 1)
//! ```
//!
//! BN rules \[ref\]: layer 1's chain uses batch statistics in training (updating the running ones
//! once per step); the BNs inside the loop use running statistics during the simulation, and batch
//! statistics in the one evaluation of f that yields ∂f/∂θ. The β solve has two forms
//! ([`AdjointForm`], ALGORITHM.md §4): the authors' (inner BNs in training mode, J_fᵀ taken at
//! f(rate)) and a consistent one (running statistics, at the rate). With one spiking layer there
//! is no inner BN and the consistent form is exactly the authors' single-layer code.

use anyhow::{bail, Result};

use super::config::{Model, Recording};
pub use super::spec::AdjointForm;
use super::spec::{FeedbackSpec, NetworkSpec, OpSpec, ResolvedOp, Shape};
use super::spectral::{unit_output_channels, unit_rows, SpectralNorm};
use super::{host_state, load_state, HostRng, HostState, Param, StepStats, BN_MOMENTUM};
use crate::gpu::Gpu;
use crate::solver::{Solver, SolverKind};
use fsnn_core::backend::{Backend, TensorOps};
use fsnn_core::shapes::{BnShape, ConvShape, ConvTShape, FcEventSim, Kernels, NeuronStep, Op};

/// Which statistics a BN of a chain normalises with in one pass.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bn {
    /// Running statistics as constants (evaluation mode).
    Running,
    /// Batch statistics, recorded for the backward pass, running ones untouched.
    Batch,
    /// Batch statistics that also update the running ones (once per step).
    BatchUpdate,
    /// The batch statistics recorded by the last `Batch*` pass (per-frame input).
    Recorded,
}

/// Where an operator's tensors live in [`Network::params`] and its running statistics.
#[derive(Clone, Copy, Debug, Default)]
struct OpIndex {
    weight: Option<usize>,
    bias: Option<usize>,
    /// Index into [`Network::running`].
    running: Option<usize>,
}

struct LayerWork<B: Backend> {
    /// Each operator's output for a batch.
    outs: Vec<B::Tensor>,
    /// Each BN's batch statistics (mean, biased variance) from its last batch-mode pass.
    stats: Vec<Option<(B::Tensor, B::Tensor)>>,
    u: B::Tensor,
    acc: B::Tensor,
    spikes: B::Tensor,
    /// Layer 1: z = m_fb ⊙ FB(a) + x1 (the chain's output must survive); else unused.
    z: B::Tensor,
    a: B::Tensor,
    /// σ' of the last f evaluation (then folded into the adjoint's per-element factor).
    mask: B::Tensor,
    /// Dropout on the layer's chain output (m_x for layer 1).
    drop: B::Tensor,
    /// Gradient with respect to this layer's activation.
    g: B::Tensor,
}

/// Time-varying input's buffers: all frames, the current one, layer 1's chain outputs on it.
type Frames<B> = (
    <B as Backend>::Tensor,
    <B as Backend>::Tensor,
    Vec<<B as Backend>::Tensor>,
);

struct Work<B: Backend> {
    batch: usize,
    x: B::Tensor,
    /// Time-varying input: all frames `[T, batch, input]`, one frame, and layer 1's chain on it.
    frames: Option<Frames<B>>,
    labels: B::Tensor,
    layers: Vec<LayerWork<B>>,
    m_fb: B::Tensor,
    /// Event path: the spike bit sets of two consecutive steps.
    events: Option<[B::Tensor; 2]>,
    /// Event path with a width that is not a multiple of 4: `W_effᵀ` with zero-padded rows
    /// (otherwise it lives in `sn.grad_eff`, free during the forward pass).
    wt_padded: Option<B::Tensor>,
    logits: B::Tensor,
    loss: B::Tensor,
    dlogits: B::Tensor,
    correct: B::Tensor,
    beta: B::Tensor,
    /// ∂L/∂rate, the solve's right-hand side (every layer's g is scratch inside J_fᵀ).
    gl: B::Tensor,
    /// Two scratch vectors for the chains' backward passes (and one BN parameter-gradient dump).
    scratch: [B::Tensor; 2],
    dump: (B::Tensor, B::Tensor),
    partials: B::Tensor,
    scalar: B::Tensor,
    solver: Option<Solver<B>>,
}

/// A feedback spiking network on a [`Backend`] (the GPU unless stated).
pub struct Network<B: Backend = Gpu> {
    pub spec: NetworkSpec,
    chains: Vec<Vec<ResolvedOp>>,
    index: Vec<Vec<OpIndex>>,
    pub params: Vec<Param<B>>,
    /// Running (mean, var) of every BN, in checkpoint order.
    pub running: Vec<(B::Tensor, B::Tensor)>,
    running_names: Vec<String>,
    fb: usize,
    classifier: usize,
    /// Spectral normalisation of the feedback weight.
    pub sn: SpectralNorm<B>,
    kernels: Kernels,
    work: Option<Work<B>>,
}

impl<B: Backend> Network<B> {
    /// A freshly initialised network (the authors' initialisation, seeded): linear and conv
    /// weights with unit rows, transposed-conv feedback with unit output channels, BN γ = 1,
    /// classifier uniform in ±1/√d_N, the spectral scale g = σ(W_fb).
    pub fn new(gpu: &B, spec: NetworkSpec, seed: u64) -> Result<Self> {
        spec.validate()?;
        let chains = spec.resolve();
        let shapes = spec.param_shapes();
        let mut rng = HostRng::new(seed);
        let d_last = *spec.neurons_per_layer().last().unwrap() as f32;
        let mut params = Vec::new();
        let mut sn = None;
        for (name, shape) in &shapes {
            let n: usize = shape.iter().product();
            let data = if name == "fb.weight" {
                let w = match spec.feedback {
                    // [in, out, k, k]: the output channel is dim 1 (ALGORITHM.md §4).
                    FeedbackSpec::ConvTranspose { .. } => {
                        unit_output_channels(&mut rng, shape[0], shape[1], shape[2] * shape[3])
                    }
                    _ => unit_rows(&mut rng, shape[0], n / shape[0]),
                };
                sn = Some(SpectralNorm::new(gpu, &mut rng, &w, shape[0], n / shape[0]));
                w
            } else if name == "fb.scale" {
                vec![sn.as_ref().unwrap().1]
            } else if name.starts_with("classifier.") {
                let b = 1.0 / d_last.sqrt();
                (0..n).map(|_| rng.uniform(-b, b)).collect()
            } else if name.ends_with(".weight") && shape.len() == 1 {
                vec![1.0; n]
            } else if name.ends_with(".weight") {
                unit_rows(&mut rng, shape[0], n / shape[0])
            } else {
                vec![0.0; n]
            };
            params.push(Param {
                name: name.clone(),
                value: gpu.upload(shape, &data),
                grad: gpu.zeros(shape),
                momentum: gpu.zeros(shape),
            });
        }
        let find = |n: &str| params.iter().position(|p| p.name == n);
        let mut running = Vec::new();
        let mut running_names = Vec::new();
        let index = chains
            .iter()
            .map(|ops| {
                ops.iter()
                    .map(|op| match op.op {
                        OpSpec::Linear { .. } | OpSpec::Conv { .. } => OpIndex {
                            weight: find(&format!("{}.weight", op.name)),
                            bias: find(&format!("{}.bias", op.name)),
                            running: None,
                        },
                        OpSpec::BatchNorm {} => {
                            let c = op.input.channels();
                            running.push((gpu.zeros(&[c]), gpu.upload(&[c], &vec![1.0; c])));
                            running_names.push(op.name.clone());
                            OpIndex {
                                weight: find(&format!("{}.weight", op.name)),
                                bias: find(&format!("{}.bias", op.name)),
                                running: Some(running.len() - 1),
                            }
                        }
                        OpSpec::AvgPool { .. } => OpIndex::default(),
                    })
                    .collect()
            })
            .collect();
        let fb = find("fb.weight").unwrap();
        let classifier = find("classifier.weight").unwrap();
        let mut net = Self {
            chains,
            index,
            params,
            running,
            running_names,
            fb,
            classifier,
            sn: sn.unwrap().0,
            kernels: Kernels::Dense,
            work: None,
            spec,
        };
        net.set_kernels(Kernels::Event);
        Ok(net)
    }

    fn depth(&self) -> usize {
        self.chains.len()
    }

    fn shape(&self, l: usize) -> Shape {
        self.chains[l].last().unwrap().output
    }

    fn len(&self, l: usize) -> usize {
        self.shape(l).len()
    }

    /// The feedback as a convolution (conv) or its transpose (conv_transpose).
    fn fb_conv(&self, batch: usize) -> Option<ConvShape> {
        let last = self.shape(self.depth() - 1);
        match (self.spec.feedback, last) {
            (FeedbackSpec::Conv { k, stride, pad }, Shape::Chw(c, h, w)) => Some(ConvShape {
                batch,
                cin: c,
                h,
                w,
                cout: self.shape(0).channels(),
                kh: k,
                kw: k,
                stride,
                pad,
            }),
            _ => None,
        }
    }

    fn fb_convt(&self, batch: usize) -> Option<ConvTShape> {
        let last = self.shape(self.depth() - 1);
        match (self.spec.feedback, last) {
            (
                FeedbackSpec::ConvTranspose {
                    k,
                    stride,
                    pad,
                    output_pad,
                },
                Shape::Chw(c, h, w),
            ) => Some(ConvTShape {
                batch,
                cin: c,
                h,
                w,
                cout: self.shape(0).channels(),
                k,
                stride,
                pad,
                output_pad,
            }),
            _ => None,
        }
    }

    /// Whether the event-driven simulation handles this network: one spiking layer whose
    /// feedback is linear (up to [`Backend::fc_event_max_neurons`]) or a "same" convolution.
    pub fn events_supported(&self) -> bool {
        events_supported::<B>(&self.spec)
    }

    /// Selects the forward simulation's kernels; `Event` (and unresolved `Auto`) fall back to
    /// `Dense` where the event kernels do not handle the network.
    pub fn select_kernels(&mut self, k: Kernels) {
        let k = match k {
            Kernels::Event | Kernels::Auto if self.events_supported() => Kernels::Event,
            _ => Kernels::Dense,
        };
        if k != self.kernels {
            self.kernels = k;
            self.work = None;
        }
    }

    /// The kernels the forward simulation uses.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    fn work(&mut self, gpu: &B, batch: usize, solver: Option<(SolverKind, usize)>) {
        let rebuild = match &self.work {
            None => true,
            Some(w) => w.batch != batch || !Solver::serves(w.solver.as_ref(), solver),
        };
        if !rebuild {
            return;
        }
        self.work = None;
        let z = |n: usize| gpu.zeros(&[n]);
        let chain_outs = |ops: &[ResolvedOp]| -> Vec<B::Tensor> {
            ops.iter().map(|op| z(batch * op.output.len())).collect()
        };
        let events = self.kernels == Kernels::Event;
        let layers = (0..self.depth())
            .map(|l| {
                let n = batch * self.len(l);
                LayerWork {
                    outs: chain_outs(&self.chains[l]),
                    stats: self.chains[l]
                        .iter()
                        .map(|op| {
                            matches!(op.op, OpSpec::BatchNorm {}).then(|| {
                                let c = op.input.channels();
                                (z(c), z(c))
                            })
                        })
                        .collect(),
                    u: z(n),
                    acc: z(n),
                    spikes: z(if events { 1 } else { n }),
                    z: z(if l == 0 { n } else { 1 }),
                    a: z(n),
                    mask: z(n),
                    drop: z(n),
                    g: z(n),
                }
            })
            .collect();
        // Scratch holds gradients of the values inside a chain (never of the data) and vectors
        // of a layer's size.
        let widest = self
            .chains
            .iter()
            .flat_map(|ops| ops.iter().skip(1))
            .map(|op| op.input.len())
            .chain((0..self.depth()).map(|l| self.len(l)))
            .max()
            .unwrap();
        let cmax = self
            .chains
            .iter()
            .flatten()
            .map(|op| op.input.channels())
            .max()
            .unwrap();
        let (n0, nl) = (self.len(0), self.len(self.depth() - 1));
        let il = self.spec.input_len();
        let cl = batch * self.spec.classes;
        let c0 = self.shape(0).channels();
        self.work = Some(Work {
            batch,
            x: gpu.zeros(&[batch, il]),
            frames: self.spec.input.time_varying.then(|| {
                (
                    z(self.spec.neuron.time_steps * batch * il),
                    z(batch * il),
                    chain_outs(&self.chains[0]),
                )
            }),
            labels: z(batch),
            layers,
            m_fb: z(batch * n0),
            events: events.then(|| {
                let words = match self.spec.feedback {
                    FeedbackSpec::Linear {} => batch * B::spike_words(n0),
                    _ => {
                        let s = self.fb_conv(batch).unwrap();
                        B::conv_spike_words(batch, s.cin, s.h, s.w)
                    }
                };
                [z(words), z(words)]
            }),
            wt_padded: (events && !c0.is_multiple_of(4))
                .then(|| z(self.sn.weff.len() / c0 * c0.next_multiple_of(4))),
            logits: z(cl),
            loss: z(batch),
            dlogits: z(cl),
            correct: z(batch),
            beta: z(batch * nl),
            gl: z(batch * nl),
            scratch: [z(batch * widest), z(batch * widest)],
            dump: (z(cmax), z(cmax)),
            partials: z(B::sum_partials_len(batch * widest.max(n0))),
            scalar: z(1),
            solver: solver.map(|(k, t)| Solver::new(gpu, k, t, batch, nl)),
        });
    }

    fn bn_shape(batch: usize, s: Shape) -> BnShape {
        BnShape {
            batch,
            channels: s.channels(),
            hw: s.hw(),
        }
    }

    /// Runs layer l's chain on `input`, op j writing `outs[j]`; returns the last output.
    fn chain_forward<'a>(
        &self,
        gpu: &B,
        w: &'a Work<B>,
        l: usize,
        input: &'a B::Tensor,
        outs: &'a [B::Tensor],
        bn: Bn,
    ) -> &'a B::Tensor {
        let b = w.batch;
        let p = &self.params;
        let mut x = input;
        for (j, op) in self.chains[l].iter().enumerate() {
            let y = &outs[j];
            let ix = self.index[l][j];
            match op.op {
                OpSpec::Linear { out, .. } => gpu.gemm(
                    Op::N,
                    Op::T,
                    b,
                    out,
                    op.input.len(),
                    1.0,
                    x,
                    &p[ix.weight.unwrap()].value,
                    0.0,
                    y,
                ),
                OpSpec::Conv {
                    out,
                    k,
                    stride,
                    pad,
                    ..
                } => {
                    let s = conv_shape(b, op.input, out, k, stride, pad);
                    gpu.conv2d(&s, x, &p[ix.weight.unwrap()].value, 0.0, y)
                }
                OpSpec::AvgPool { .. } => {
                    let Shape::Chw(c, h, wd) = op.input else {
                        unreachable!("validated")
                    };
                    gpu.avgpool2x2(b * c, h, wd, x, y)
                }
                OpSpec::BatchNorm {} => {
                    let s = Self::bn_shape(b, op.input);
                    let (rm, rv) = &self.running[ix.running.unwrap()];
                    let (bm, bv) = w.layers[l].stats[j].as_ref().unwrap();
                    let (gamma, beta) = (&p[ix.weight.unwrap()].value, &p[ix.bias.unwrap()].value);
                    let (mean, var) = match bn {
                        Bn::Running => (rm, rv),
                        Bn::Batch | Bn::BatchUpdate => {
                            let update = (bn == Bn::BatchUpdate).then_some(BN_MOMENTUM);
                            gpu.bn_stats(s, x, bm, bv, rm, rv, update);
                            (bm, bv)
                        }
                        Bn::Recorded => (bm, bv),
                    };
                    gpu.bn_forward(s, x, mean, var, gamma, beta, y);
                }
            }
            if let Some(bias) = ix.bias.filter(|_| !matches!(op.op, OpSpec::BatchNorm {})) {
                gpu.bias_add(Self::bn_shape(b, op.output), &p[bias].value, y);
            }
            x = y;
        }
        x
    }

    /// Backward through layer l's chain: `dy` (∂L/∂ chain output, not modified) to `dx`
    /// (∂L/∂ chain input; `None` for the data). With `grads`, every operator's parameter
    /// gradients are written too. `bn` is the mode the forward pass used (`Recorded` = batch).
    #[allow(clippy::too_many_arguments)]
    fn chain_backward(
        &self,
        gpu: &B,
        w: &Work<B>,
        l: usize,
        input: &B::Tensor,
        dy: &B::Tensor,
        dx: Option<&B::Tensor>,
        bn: Bn,
        grads: bool,
    ) {
        let b = w.batch;
        let p = &self.params;
        let chain = &self.chains[l];
        let mut g = dy.clone();
        // Which scratch vector holds g (none while g is the caller's).
        let mut held: Option<usize> = None;
        for j in (0..chain.len()).rev() {
            let op = &chain[j];
            let ix = self.index[l][j];
            let x = if j == 0 {
                input
            } else {
                &w.layers[l].outs[j - 1]
            };
            let first = j == 0;
            if first && dx.is_none() && !grads {
                return;
            }
            // ∂L/∂ op input: the caller's buffer for the first op, else a scratch vector other
            // than the one holding g.
            let next = if first {
                dx.cloned()
            } else {
                let k = if held == Some(0) { 1 } else { 0 };
                held = Some(k);
                Some(prefix(&w.scratch[k], b * op.input.len()))
            };
            match op.op {
                OpSpec::Linear { out, .. } => {
                    let k = op.input.len();
                    let wt = &p[ix.weight.unwrap()];
                    if grads {
                        gpu.gemm(Op::T, Op::N, out, k, b, 1.0, &g, x, 0.0, &wt.grad);
                    }
                    if let Some(d) = &next {
                        gpu.gemm(Op::N, Op::N, b, k, out, 1.0, &g, &wt.value, 0.0, d);
                    }
                }
                OpSpec::Conv {
                    out,
                    k,
                    stride,
                    pad,
                    ..
                } => {
                    let s = conv_shape(b, op.input, out, k, stride, pad);
                    let wt = &p[ix.weight.unwrap()];
                    if grads {
                        gpu.conv2d_weight_grad(&s, &g, x, 1.0, 0.0, &wt.grad);
                    }
                    if let Some(d) = &next {
                        gpu.conv2d_input_grad(&s, &g, &wt.value, 1.0, 0.0, d);
                    }
                }
                OpSpec::AvgPool { .. } => {
                    let Shape::Chw(c, h, wd) = op.input else {
                        unreachable!("validated")
                    };
                    if let Some(d) = &next {
                        gpu.avgpool2x2_grad(b * c, h, wd, &g, d);
                    }
                }
                OpSpec::BatchNorm {} => {
                    let s = Self::bn_shape(b, op.input);
                    let (rm, rv) = &self.running[ix.running.unwrap()];
                    let (bm, bv) = w.layers[l].stats[j].as_ref().unwrap();
                    let batch_stats = bn != Bn::Running;
                    let (mean, var) = if batch_stats { (bm, bv) } else { (rm, rv) };
                    let (dg, db) = if grads {
                        (&p[ix.weight.unwrap()].grad, &p[ix.bias.unwrap()].grad)
                    } else {
                        (&w.dump.0, &w.dump.1)
                    };
                    let gamma = &p[ix.weight.unwrap()].value;
                    gpu.bn_backward(
                        s,
                        x,
                        &g,
                        mean,
                        var,
                        gamma,
                        batch_stats,
                        dg,
                        db,
                        next.as_ref(),
                    );
                }
            }
            if grads && !matches!(op.op, OpSpec::BatchNorm {}) {
                if let Some(bias) = ix.bias {
                    let s = Self::bn_shape(b, op.output);
                    gpu.channel_sum(s, &g, 1.0, 0.0, &p[bias].grad);
                }
            }
            match next {
                Some(n) => g = n,
                None => return,
            }
        }
    }

    /// `out = FB(W_eff, a)` for a batch of spike or rate vectors of the last layer.
    fn feedback(&self, gpu: &B, batch: usize, a: &B::Tensor, out: &B::Tensor) {
        let weff = &self.sn.weff;
        match self.spec.feedback {
            FeedbackSpec::Linear {} => {
                let (d1, dn) = (self.len(0), self.len(self.depth() - 1));
                gpu.gemm(Op::N, Op::T, batch, d1, dn, 1.0, a, weff, 0.0, out)
            }
            FeedbackSpec::Conv { .. } => {
                gpu.conv2d(&self.fb_conv(batch).unwrap(), a, weff, 0.0, out)
            }
            FeedbackSpec::ConvTranspose { .. } => {
                gpu.conv_transpose2d(&self.fb_convt(batch).unwrap(), a, weff, 0.0, out)
            }
        }
    }

    /// `out = FBᵀ g` (∂/∂a of ⟨g, FB(a)⟩).
    fn feedback_vjp(&self, gpu: &B, batch: usize, g: &B::Tensor, out: &B::Tensor) {
        let weff = &self.sn.weff;
        match self.spec.feedback {
            FeedbackSpec::Linear {} => {
                let (d1, dn) = (self.len(0), self.len(self.depth() - 1));
                gpu.gemm(Op::N, Op::N, batch, dn, d1, 1.0, g, weff, 0.0, out)
            }
            FeedbackSpec::Conv { .. } => {
                gpu.conv2d_input_grad(&self.fb_conv(batch).unwrap(), g, weff, 1.0, 0.0, out)
            }
            FeedbackSpec::ConvTranspose { .. } => {
                gpu.conv_transpose2d_input_grad(&self.fb_convt(batch).unwrap(), g, weff, 0.0, out)
            }
        }
    }

    /// `sn.grad_eff = ∂L/∂W_eff` from `g = ∂L/∂FB(a)` and the rate `a`.
    fn feedback_weight_grad(&self, gpu: &B, batch: usize, g: &B::Tensor, a: &B::Tensor) {
        let ge = &self.sn.grad_eff;
        match self.spec.feedback {
            FeedbackSpec::Linear {} => {
                let (d1, dn) = (self.len(0), self.len(self.depth() - 1));
                gpu.gemm(Op::T, Op::N, d1, dn, batch, 1.0, g, a, 0.0, ge)
            }
            FeedbackSpec::Conv { .. } => {
                gpu.conv2d_weight_grad(&self.fb_conv(batch).unwrap(), g, a, 1.0, 0.0, ge)
            }
            FeedbackSpec::ConvTranspose { .. } => {
                gpu.conv_transpose2d_weight_grad(&self.fb_convt(batch).unwrap(), g, a, 1.0, 0.0, ge)
            }
        }
    }

    fn refresh_weff(&self, gpu: &B) {
        let p = &self.params;
        self.sn
            .refresh(gpu, &p[self.fb].value, &p[self.fb + 1].value);
    }

    /// Layer 1's input current, the T-step simulation leaving every layer's rate in its `acc`,
    /// and the classifier's loss. With `train`, BN of layer 1's chain uses batch statistics and
    /// updates the running ones once, and the dropout masks of `seed` apply. `record` receives
    /// every layer's spikes of the first samples, `[T, samples, neurons_l]` per layer.
    fn forward(&mut self, gpu: &B, train: bool, seed: u32, record: Option<(&[B::Tensor], usize)>) {
        self.refresh_weff(gpu);
        let w = self.work.as_ref().unwrap();
        let spec = &self.spec;
        let (b, n, steps) = (w.batch, self.depth(), spec.neuron.time_steps);
        let l0 = &w.layers[0];
        let bn0 = if train { Bn::BatchUpdate } else { Bn::Running };
        let x1 = self.chain_forward(gpu, w, 0, &w.x, &l0.outs, bn0).clone();
        let drop = train && spec.neuron.dropout > 0.0;
        if drop {
            let p = spec.neuron.dropout;
            gpu.dropout_mask(&l0.drop, p, seed, 0);
            gpu.mask_mul(&l0.drop, &x1);
            gpu.dropout_mask(&w.m_fb, p, seed, 1);
            for l in 1..n {
                gpu.dropout_mask(&w.layers[l].drop, p, seed, 1 + l as u32);
            }
        }
        for lw in &w.layers {
            gpu.fill_zero(&lw.u);
            gpu.fill_zero(&lw.acc);
        }
        let neuron = |has_feedback| NeuronStep {
            vth: spec.neuron.vth,
            leak: spec.neuron.leak,
            has_feedback,
            x_offset: 0,
        };
        let fb_mask = drop.then_some(&w.m_fb);
        // W_effᵀ for the event kernels lives in grad_eff unless its rows need padding: that
        // buffer only carries ∂L/∂W_eff from the backward pass to the spectral-norm backward, so
        // it is free here and the event path needs no extra weight-sized buffer.
        let wt = w.wt_padded.as_ref().unwrap_or(&self.sn.grad_eff);
        if w.events.is_some() {
            // Rows of W_eff: layer 1's features (linear) or channels (conv).
            let rows = self.shape(0).channels();
            let cols = self.sn.weff.len() / rows;
            let ld = match spec.feedback {
                FeedbackSpec::Linear {} => B::fc_event_ld(rows),
                _ => B::conv_event_ld(rows),
            };
            gpu.transpose_padded(rows, cols, ld, &self.sn.weff, wt);
        }
        let fc_sim = |bits: &[B::Tensor; 2], ts: std::ops::Range<usize>, x: &B::Tensor| {
            let sim = FcEventSim {
                n: self.len(0),
                batch: b,
                t_begin: ts.start,
                t_end: ts.end,
                x_step: 0,
                x_off: 0,
                vth: spec.neuron.vth,
                leak: spec.neuron.leak,
            };
            gpu.fc_event_sim(&sim, &l0.u, &l0.acc, &bits[0], wt, x, fb_mask);
        };
        let linear_fb = matches!(spec.feedback, FeedbackSpec::Linear {});
        let fused = match (&w.events, &w.frames) {
            // Constant input and linear feedback: the whole simulation in one dispatch.
            (Some(bits), None) if linear_fb && record.is_none() => {
                fc_sim(bits, 0..steps, &x1);
                true
            }
            _ => false,
        };
        let il = spec.input_len();
        for t in 0..if fused { 0 } else { steps } {
            // Time-varying input: layer 1's chain on this step's frame, normalised with the
            // statistics of the mean frame (the ones the fixed-point equation uses).
            let current = match &w.frames {
                Some((frames, xt, outs)) => {
                    gpu.copy(frames, t * b * il, xt, 0, b * il);
                    let bn = if train { Bn::Recorded } else { Bn::Running };
                    let c = self.chain_forward(gpu, w, 0, xt, outs, bn);
                    if drop {
                        gpu.mask_mul(&l0.drop, c);
                    }
                    c
                }
                None => &x1,
            };
            match &w.events {
                Some(bits) if linear_fb => fc_sim(bits, t..t + 1, current),
                // Step t reads step t−1's spikes from one bit set and writes its own to the other.
                Some(bits) => gpu.conv_event_sim(
                    &self.fb_conv(b).unwrap(),
                    neuron(t > 0),
                    &l0.u,
                    &l0.acc,
                    &bits[(t + 1) % 2],
                    &bits[t % 2],
                    wt,
                    current,
                    fb_mask,
                ),
                None => {
                    if t > 0 {
                        self.feedback(gpu, b, &w.layers[n - 1].spikes, &l0.z);
                        if drop {
                            gpu.mask_mul(&w.m_fb, &l0.z);
                        }
                    }
                    gpu.neuron_step(&l0.u, &l0.acc, &l0.spikes, current, &l0.z, neuron(t > 0));
                }
            }
            for l in 1..n {
                // Spikes of the layer before, in this same step; running BN statistics.
                let lw = &w.layers[l];
                let cur =
                    self.chain_forward(gpu, w, l, &w.layers[l - 1].spikes, &lw.outs, Bn::Running);
                if drop {
                    gpu.mask_mul(&lw.drop, cur);
                }
                gpu.neuron_step(&lw.u, &lw.acc, &lw.spikes, cur, cur, neuron(false));
            }
            if let Some((bufs, k)) = record {
                for (l, buf) in bufs.iter().enumerate() {
                    let len = k * self.len(l);
                    gpu.copy(&w.layers[l].spikes, 0, buf, t * len, len);
                }
            }
        }
        for lw in &w.layers {
            gpu.scale(1.0 / spec.rate_norm(), &lw.acc);
        }
        let (cw, cb) = (
            &self.params[self.classifier],
            &self.params[self.classifier + 1],
        );
        let (classes, nl) = (spec.classes, self.len(n - 1));
        let rate = &w.layers[n - 1].acc;
        gpu.gemm(
            Op::N,
            Op::T,
            b,
            classes,
            nl,
            1.0,
            rate,
            &cw.value,
            0.0,
            &w.logits,
        );
        let s = Self::bn_shape(b, Shape::Flat(classes));
        gpu.bias_add(s, &cb.value, &w.logits);
        gpu.softmax_xent(
            b,
            classes,
            &w.logits,
            &w.labels,
            1.0 / b as f32,
            &w.loss,
            &w.dlogits,
            &w.correct,
        );
    }

    /// Evaluates f at `a_n` (the last layer's rate, or f(rate)), leaving each layer's
    /// activation in `a` and σ' in `mask`; `bn` is the mode of the BNs inside the loop.
    fn eval_f(&self, gpu: &B, a_n: &B::Tensor, bn: Bn, drop: bool) {
        let w = self.work.as_ref().unwrap();
        let (b, vth) = (w.batch, self.spec.neuron.vth);
        let l0 = &w.layers[0];
        self.feedback(gpu, b, a_n, &l0.z);
        if drop {
            gpu.mask_mul(&w.m_fb, &l0.z);
        }
        gpu.axpby(1.0, l0.outs.last().unwrap(), 1.0, &l0.z);
        gpu.clamp_mask(&l0.z, 1.0 / vth, &l0.a, &l0.mask);
        for l in 1..self.depth() {
            let lw = &w.layers[l];
            let cur = self.chain_forward(gpu, w, l, &w.layers[l - 1].a, &lw.outs, bn);
            if drop {
                gpu.mask_mul(&lw.drop, cur);
            }
            gpu.clamp_mask(cur, 1.0 / vth, &lw.a, &lw.mask);
        }
    }

    /// ‖f(rate) − rate‖ / ‖rate‖ from the evaluation of f just made at the rate.
    fn residual_after_eval(&self, gpu: &B) -> f64 {
        self.layer_residual(gpu, self.depth() - 1)
    }

    /// ‖a_l − rate_l‖ / ‖rate_l‖: layer l's activation in the last evaluation of f against its
    /// simulated rate.
    fn layer_residual(&self, gpu: &B, l: usize) -> f64 {
        let w = self.work.as_ref().unwrap();
        let lw = &w.layers[l];
        let d = prefix(&w.scratch[0], lw.a.len());
        gpu.copy(&lw.a, 0, &d, 0, d.len());
        gpu.axpby(-1.0, &lw.acc, 1.0, &d);
        gpu.sum(&d, true, &w.partials, &w.scalar);
        let num = gpu.read(&w.scalar)[0] as f64;
        gpu.sum(&lw.acc, true, &w.partials, &w.scalar);
        let den = gpu.read(&w.scalar)[0] as f64;
        (num / den.max(1e-30)).sqrt()
    }

    fn upload(&mut self, gpu: &B, x: &[f32], labels: &[u32]) -> Result<()> {
        let (b, il, sl) = (labels.len(), self.spec.input_len(), self.spec.sample_len());
        if x.len() != b * sl {
            bail!(
                "batch of {} values for {b} labels of {sl} inputs each",
                x.len()
            );
        }
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= self.spec.classes) {
            bail!("label {l} out of range for {} classes", self.spec.classes);
        }
        let w = self.work.as_ref().unwrap();
        match &w.frames {
            Some((frames, _, _)) => {
                // x is [T, batch, input]; the fixed point sees the rate-weighted mean frame.
                let mut mean = vec![0.0f32; b * il];
                for t in 0..self.spec.neuron.time_steps {
                    let wt = self.spec.step_weight(t);
                    for (m, v) in mean.iter_mut().zip(&x[t * b * il..(t + 1) * b * il]) {
                        *m += wt * v;
                    }
                }
                gpu.write(frames, x);
                gpu.write(&w.x, &mean);
            }
            None => gpu.write(&w.x, x),
        }
        gpu.write_words(&w.labels, 0, bytemuck::cast_slice(labels));
        Ok(())
    }

    fn loss_correct(&self, gpu: &B) -> (f64, usize) {
        let w = self.work.as_ref().unwrap();
        super::batch_loss_correct(gpu, &w.loss, &w.correct)
    }

    /// Loss and accuracy on a batch (running BN statistics, no dropout, no update).
    pub fn eval_batch(&mut self, gpu: &B, x: &[f32], labels: &[u32]) -> Result<StepStats> {
        self.work(gpu, labels.len(), None);
        self.upload(gpu, x, labels)?;
        self.forward(gpu, false, 0, None);
        let (loss_sum, correct) = self.loss_correct(gpu);
        Ok(StepStats {
            loss_sum,
            correct,
            samples: labels.len(),
            ..Default::default()
        })
    }

    /// One IDE training step on a batch; `seed` draws this step's dropout masks.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &mut self,
        gpu: &B,
        x: &[f32],
        labels: &[u32],
        lr: f32,
        solver: SolverKind,
        threshold: usize,
        seed: u32,
    ) -> Result<StepStats> {
        let t0 = std::time::Instant::now();
        self.work(gpu, labels.len(), Some((solver, threshold)));
        self.upload(gpu, x, labels)?;
        self.forward(gpu, true, seed, None);
        gpu.flush();
        let forward_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = std::time::Instant::now();
        let b = labels.len();
        let n = self.depth();
        let drop = self.spec.neuron.dropout > 0.0;
        let inv_vth = 1.0 / self.spec.neuron.vth;
        let authors = self.spec.adjoint == AdjointForm::Authors;
        let (classes, nl) = (self.spec.classes, self.len(n - 1));
        let w = self.work.as_ref().unwrap();
        let rate = w.layers[n - 1].acc.clone();
        let gl = w.gl.clone();
        {
            // Classifier: its gradients, and ∂L/∂rate into the last layer's g.
            let (cw, cb) = (
                &self.params[self.classifier],
                &self.params[self.classifier + 1],
            );
            gpu.gemm(
                Op::N,
                Op::N,
                b,
                nl,
                classes,
                1.0,
                &w.dlogits,
                &cw.value,
                0.0,
                &gl,
            );
            gpu.gemm(
                Op::T,
                Op::N,
                classes,
                nl,
                b,
                1.0,
                &w.dlogits,
                &rate,
                0.0,
                &cw.grad,
            );
            let s = Self::bn_shape(b, Shape::Flat(classes));
            gpu.channel_sum(s, &w.dlogits, 1.0, 0.0, &cb.grad);
        }
        let forward_residual = if authors {
            // ALGORITHM.md §4 (a)–(c), as the authors' code runs it: f at the rate in training
            // mode (this step's one running-statistics update) gives f(rate); the solve then
            // linearises f at f(rate) with the inner BNs in training mode.
            self.eval_f(gpu, &rate, Bn::BatchUpdate, drop);
            let res = self.residual_after_eval(gpu);
            let w = self.work.as_ref().unwrap();
            let last_a = &w.layers[n - 1].a;
            let fr = prefix(&w.scratch[1], last_a.len());
            gpu.copy(last_a, 0, &fr, 0, fr.len());
            self.eval_f(gpu, &fr, Bn::Batch, drop);
            res
        } else {
            // The map the simulation approximates: running statistics, at the rate, before this
            // step's running-statistics update.
            self.eval_f(gpu, &rate, Bn::Running, drop);
            self.residual_after_eval(gpu)
        };
        let w = self.work.as_ref().unwrap();
        // Fold σ'/vth and the dropout of every layer into one per-element factor, so that J_fᵀ
        // is masks, chain backward passes and FBᵀ.
        for (l, lw) in w.layers.iter().enumerate() {
            gpu.scale(inv_vth, &lw.mask);
            if drop {
                gpu.mask_mul(if l == 0 { &w.m_fb } else { &lw.drop }, &lw.mask);
            }
        }
        let inner_bn = if authors { Bn::Batch } else { Bn::Running };
        let (solve, solve_ms) = {
            let mut wk = self.work.take().unwrap();
            let mut solver = wk.solver.take().unwrap();
            let this = &*self;
            let wr = &wk;
            let mut jt = |x: &B::Tensor, out: &B::Tensor| {
                // In the authors' form the BN backward couples the samples through the batch
                // statistics; the solver still keeps one estimate per sample, as theirs does.
                let g = &wr.layers[n - 1].g;
                gpu.copy(x, 0, g, 0, x.len());
                for l in (1..n).rev() {
                    let lw = &wr.layers[l];
                    gpu.mask_mul(&lw.mask, &lw.g);
                    let prev = &wr.layers[l - 1];
                    this.chain_backward(gpu, wr, l, &prev.a, &lw.g, Some(&prev.g), inner_bn, false);
                }
                let l0 = &wr.layers[0];
                gpu.mask_mul(&l0.mask, &l0.g);
                this.feedback_vjp(gpu, b, &l0.g, out);
            };
            let ts = std::time::Instant::now();
            let st = solver.solve(gpu, &mut jt, &gl, &wk.beta);
            gpu.flush();
            wk.solver = Some(solver);
            self.work = Some(wk);
            (st, ts.elapsed().as_secs_f64() * 1e3)
        };
        // The one f evaluation at the rate with batch statistics that yields ∂f/∂θ, and β
        // through it; the authors' form has already updated the running statistics.
        let bn = if authors { Bn::Batch } else { Bn::BatchUpdate };
        self.eval_f(gpu, &rate, bn, drop);
        let w = self.work.as_ref().unwrap();
        gpu.copy(&w.beta, 0, &w.layers[n - 1].g, 0, w.beta.len());
        for l in (0..n).rev() {
            // ∂L/∂z_l = g ⊙ σ'/vth; through m_l into the chain.
            let lw = &w.layers[l];
            gpu.mask_mul(&lw.mask, &lw.g);
            gpu.scale(inv_vth, &lw.g);
            if l == 0 {
                let dfb = prefix(&w.scratch[0], lw.g.len());
                gpu.copy(&lw.g, 0, &dfb, 0, dfb.len());
                if drop {
                    gpu.mask_mul(&w.m_fb, &dfb);
                }
                self.feedback_weight_grad(gpu, b, &dfb, &rate);
                let p = &self.params;
                let (fw, fs) = (&p[self.fb], &p[self.fb + 1]);
                self.sn
                    .backward(gpu, &fw.value, &fs.value, &fw.grad, &fs.grad);
            }
            if drop {
                gpu.mask_mul(&lw.drop, &lw.g);
            }
            let bn = if l == 0 { Bn::Batch } else { bn };
            let (input, dx) = if l == 0 {
                (&w.x, None)
            } else {
                (&w.layers[l - 1].a, Some(&w.layers[l - 1].g))
            };
            self.chain_backward(gpu, w, l, input, &lw.g, dx, bn, true);
        }
        gpu.flush();
        let backward_ms = t1.elapsed().as_secs_f64() * 1e3;
        let t2 = std::time::Instant::now();
        for p in &self.params {
            gpu.sgd(&p.value, &p.grad, &p.momentum, lr, 0.9, 5e-4);
        }
        let (loss_sum, correct) = self.loss_correct(gpu);
        let optimizer_ms = t2.elapsed().as_secs_f64() * 1e3;
        Ok(StepStats {
            loss_sum,
            correct,
            samples: b,
            forward_residual,
            solve,
            forward_ms,
            backward_ms,
            solve_ms,
            optimizer_ms,
        })
    }

    /// Rates of the last layer for the last batch (`[batch, neurons]`).
    pub fn rate(&self, gpu: &B) -> Vec<f32> {
        self.work
            .as_ref()
            .map(|w| gpu.read(&w.layers.last().unwrap().acc))
            .unwrap_or_default()
    }

    fn state_tensors(&self) -> Vec<(String, &B::Tensor)> {
        let mut v = Vec::new();
        for (name, (m, var)) in self.running_names.iter().zip(&self.running) {
            v.push((format!("{name}.running_mean"), m));
            v.push((format!("{name}.running_var"), var));
        }
        v.push(("fb.u".into(), &self.sn.u));
        v.push(("fb.v".into(), &self.sn.v));
        v
    }

    /// Every parameter, momentum and state tensor, copied to the host.
    pub fn to_host(&self, gpu: &B) -> HostState {
        host_state(gpu, &self.params, &self.state_tensors())
    }

    /// Restores tensors by name; every tensor of the model must be present with its shape.
    pub fn load_host(&mut self, gpu: &B, state: &HostState, source: &str) -> Result<()> {
        load_state(gpu, &self.params, &self.state_tensors(), state, source)
    }
}

impl<B: Backend> Model<B> for Network<B> {
    fn train_step(
        &mut self,
        gpu: &B,
        x: &[f32],
        labels: &[u32],
        lr: f32,
        solver: SolverKind,
        threshold: usize,
        seed: u32,
    ) -> Result<StepStats> {
        Network::train_step(self, gpu, x, labels, lr, solver, threshold, seed)
    }
    fn eval_batch(&mut self, gpu: &B, x: &[f32], labels: &[u32]) -> Result<StepStats> {
        Network::eval_batch(self, gpu, x, labels)
    }
    fn to_host(&self, gpu: &B) -> HostState {
        Network::to_host(self, gpu)
    }
    fn load_host(&mut self, gpu: &B, state: &HostState, source: &str) -> Result<()> {
        Network::load_host(self, gpu, state, source)
    }
    fn rate(&self, gpu: &B) -> Vec<f32> {
        Network::rate(self, gpu)
    }
    fn logits(&self, gpu: &B) -> Vec<f32> {
        self.work
            .as_ref()
            .map(|w| gpu.read(&w.logits))
            .unwrap_or_default()
    }
    fn layer_rates(&self, gpu: &B) -> Vec<Vec<f32>> {
        self.work
            .as_ref()
            .map(|w| w.layers.iter().map(|l| gpu.read(&l.acc)).collect())
            .unwrap_or_default()
    }
    fn record(&mut self, gpu: &B, x: &[f32], labels: &[u32], samples: usize) -> Result<Recording> {
        // The event path keeps spikes as bit sets; recording reads the dense spike tensors,
        // which give the same spikes.
        let kernels = self.kernels;
        self.select_kernels(Kernels::Dense);
        let k = samples.min(labels.len());
        let steps = self.spec.neuron.time_steps;
        let bufs: Vec<B::Tensor> = (0..self.depth())
            .map(|l| gpu.zeros(&[(steps * k * self.len(l)).max(1)]))
            .collect();
        self.work(gpu, labels.len(), None);
        self.upload(gpu, x, labels)?;
        self.forward(gpu, false, 0, Some((&bufs, k)));
        let (loss_sum, correct) = self.loss_correct(gpu);
        let spikes = bufs
            .iter()
            .enumerate()
            .map(|(l, buf)| {
                let all = gpu.read(buf);
                let len = k * self.len(l);
                (0..steps)
                    .map(|t| {
                        all[t * len..(t + 1) * len]
                            .iter()
                            .map(|&s| (s > 0.5) as u8)
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let rec = Recording {
            stats: StepStats {
                loss_sum,
                correct,
                samples: labels.len(),
                ..Default::default()
            },
            spikes,
            rates: self.layer_rates(gpu),
            logits: Model::logits(self, gpu),
        };
        self.select_kernels(kernels);
        if self.kernels != Kernels::Dense {
            // Switching back dropped the buffers; the rates must stay readable.
            self.work(gpu, labels.len(), None);
            self.upload(gpu, x, labels)?;
            self.forward(gpu, false, 0, None);
        }
        Ok(rec)
    }
    fn residual(&mut self, gpu: &B) -> Result<Vec<f64>> {
        let Some(w) = self.work.as_ref() else {
            bail!("no batch has been run yet");
        };
        let rate = w.layers.last().unwrap().acc.clone();
        self.eval_f(gpu, &rate, Bn::Running, false);
        Ok((0..self.depth())
            .map(|l| self.layer_residual(gpu, l))
            .collect())
    }
    fn set_kernels(&mut self, kernels: Kernels) -> Kernels {
        self.select_kernels(kernels);
        self.kernels
    }
}

/// Whether backend `B`'s event-driven simulation handles the network `cfg` describes: one
/// spiking layer whose feedback is linear (up to [`Backend::fc_event_max_neurons`]) or a
/// convolution [`Backend::conv_event_supported`] takes.
pub fn events_supported<B: Backend>(cfg: &NetworkSpec) -> bool {
    if cfg.depth() != 1 || cfg.validate().is_err() {
        return false;
    }
    match cfg.feedback {
        FeedbackSpec::Linear {} => cfg.layer_shapes()[0].len() <= B::fc_event_max_neurons(),
        _ => feedback_conv(cfg, 1).is_some_and(|s| B::conv_event_supported(&s)),
    }
}

/// The first layer's feedback convolution at this batch, where the feedback is one.
pub fn feedback_conv(cfg: &NetworkSpec, batch: usize) -> Option<ConvShape> {
    match (cfg.feedback, cfg.layer_shapes()[0]) {
        (FeedbackSpec::Conv { k, stride, pad }, Shape::Chw(c, h, w)) => Some(ConvShape {
            batch,
            cin: c,
            h,
            w,
            cout: c,
            kh: k,
            kw: k,
            stride,
            pad,
        }),
        _ => None,
    }
}

fn conv_shape(
    batch: usize,
    input: Shape,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> ConvShape {
    let Shape::Chw(cin, h, w) = input else {
        unreachable!("validated: conv input is [C, H, W]")
    };
    ConvShape {
        batch,
        cin,
        h,
        w,
        cout,
        kh: k,
        kw: k,
        stride,
        pad,
    }
}

/// The first `len` elements of `t`, as a tensor of their own (same buffer).
fn prefix<T: TensorOps>(t: &T, len: usize) -> T {
    t.prefix(len)
}
