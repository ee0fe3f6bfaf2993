//! The single-layer feedback spiking network of ALGORITHM.md (FC and conv variants): parameters,
//! the T-step forward simulation, and one IDE training step (classifier gradient, adjoint solve,
//! one vector–Jacobian product of f at the rate, SGD).

pub mod config;
pub mod legacy;
pub mod multi;
pub mod network;
pub mod spec;
pub mod spectral;

pub use config::{build, Model, Recording};
pub use spec::NetworkSpec;
use spectral::{unit_rows, SpectralNorm};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::gpu::{Gpu, Tensor};
use crate::kernels::Kernels;
use crate::ops::{self, BnShape, ConvShape, NeuronStep, Op};
use crate::solver::{SolveStats, Solver, SolverKind};

/// The feed-forward input layer F_x and the feedback connection W_s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    /// Linear `input → hidden`, feedback linear `hidden → hidden`.
    Fc { input: usize, hidden: usize },
    /// Conv `cin → channels` (k_in, stride_in, pad_in) on `h × w`, feedback conv `channels →
    /// channels` k_fb × k_fb, stride 1, "same" padding.
    Conv {
        cin: usize,
        h: usize,
        w: usize,
        channels: usize,
        k_in: usize,
        stride_in: usize,
        pad_in: usize,
        k_fb: usize,
    },
}

impl Arch {
    pub fn input_len(&self) -> usize {
        match *self {
            Arch::Fc { input, .. } => input,
            Arch::Conv { cin, h, w, .. } => cin * h * w,
        }
    }
    fn in_conv(&self, batch: usize) -> Option<ConvShape> {
        match *self {
            Arch::Fc { .. } => None,
            Arch::Conv {
                cin,
                h,
                w,
                channels,
                k_in,
                stride_in,
                pad_in,
                ..
            } => Some(ConvShape {
                batch,
                cin,
                h,
                w,
                cout: channels,
                kh: k_in,
                kw: k_in,
                stride: stride_in,
                pad: pad_in,
            }),
        }
    }
    fn fb_conv(&self, batch: usize) -> Option<ConvShape> {
        self.in_conv(batch).map(|s| ConvShape {
            batch,
            cin: s.cout,
            h: s.oh(),
            w: s.ow(),
            cout: s.cout,
            kh: self.k_fb(),
            kw: self.k_fb(),
            stride: 1,
            pad: self.k_fb() / 2,
        })
    }
    fn k_fb(&self) -> usize {
        match *self {
            Arch::Conv { k_fb, .. } => k_fb,
            Arch::Fc { .. } => 0,
        }
    }
    /// Channels of the batch norm (features for FC).
    pub fn channels(&self) -> usize {
        match *self {
            Arch::Fc { hidden, .. } => hidden,
            Arch::Conv { channels, .. } => channels,
        }
    }
    /// Spatial size per channel of the spiking layer (1 for FC).
    pub fn hw(&self) -> usize {
        self.in_conv(1).map(|s| s.oh() * s.ow()).unwrap_or(1)
    }
    /// Spiking neurons per sample.
    pub fn neurons(&self) -> usize {
        self.channels() * self.hw()
    }
    pub fn fx_weight_shape(&self) -> Vec<usize> {
        match *self {
            Arch::Fc { input, hidden } => vec![hidden, input],
            Arch::Conv {
                cin,
                channels,
                k_in,
                ..
            } => vec![channels, cin, k_in, k_in],
        }
    }
    pub fn fb_weight_shape(&self) -> Vec<usize> {
        match *self {
            Arch::Fc { hidden, .. } => vec![hidden, hidden],
            Arch::Conv { channels, k_fb, .. } => vec![channels, channels, k_fb, k_fb],
        }
    }
}

/// Everything that defines a network and how it is simulated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetConfig {
    pub preset: String,
    pub arch: Arch,
    pub classes: usize,
    pub time_steps: usize,
    pub vth: f32,
    /// 1 for IF; λ for LIF.
    pub leak: f32,
    pub dropout: f32,
    /// Per-step input (event data): batches carry T frames, F_x is applied to frame t at step t,
    /// and the fixed-point equation sees F_x of the rate-weighted mean frame.
    #[serde(default)]
    pub time_varying: bool,
}

impl NetConfig {
    /// Weight of step t's spikes (and frame t) in the rate: λ^(T−1−t) / Σ_k λ^k.
    pub fn step_weight(&self, t: usize) -> f32 {
        self.leak.powi((self.time_steps - 1 - t) as i32) / self.rate_norm()
    }

    /// Values one sample of a batch carries: T frames for time-varying input.
    pub fn sample_len(&self) -> usize {
        self.arch.input_len()
            * if self.time_varying {
                self.time_steps
            } else {
                1
            }
    }

    /// Σ_{k<T} λ^k: the rate's normaliser.
    pub fn rate_norm(&self) -> f32 {
        if self.leak == 1.0 {
            self.time_steps as f32
        } else {
            (1.0 - self.leak.powi(self.time_steps as i32)) / (1.0 - self.leak)
        }
    }
    pub fn param_shapes(&self) -> Vec<(&'static str, Vec<usize>)> {
        let c = self.arch.channels();
        vec![
            ("fx.weight", self.arch.fx_weight_shape()),
            ("fx.bias", vec![c]),
            ("bn.weight", vec![c]),
            ("bn.bias", vec![c]),
            ("fb.weight", self.arch.fb_weight_shape()),
            ("fb.scale", vec![1]),
            ("classifier.weight", vec![self.classes, self.arch.neurons()]),
            ("classifier.bias", vec![self.classes]),
        ]
    }
    pub fn param_count(&self) -> usize {
        self.param_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
    /// Neurons as the paper counts them: spiking neurons plus input neurons.
    pub fn paper_neurons(&self) -> usize {
        self.arch.neurons() + self.arch.input_len()
    }
}

pub const FX_W: usize = 0;
pub const FX_B: usize = 1;
pub const BN_W: usize = 2;
pub const BN_B: usize = 3;
pub const FB_W: usize = 4;
pub const FB_S: usize = 5;
pub const CL_W: usize = 6;
pub const CL_B: usize = 7;

pub const BN_MOMENTUM: f32 = 0.1;

pub struct Param {
    pub name: String,
    pub value: Tensor,
    pub grad: Tensor,
    pub momentum: Tensor,
}

/// Host-side copy of every tensor a checkpoint holds.
pub struct HostState {
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// Per-batch-size scratch buffers, allocated once and reused every step.
struct Work {
    batch: usize,
    /// The input F_x sees in the fixed-point equation (the mean frame for time-varying input).
    x: Tensor,
    /// Time-varying input: all frames `[T, batch, input]`, one frame, and its F_x output.
    frames: Option<(Tensor, Tensor, Tensor)>,
    labels: Tensor,
    pre: Tensor,
    bn_mean: Tensor,
    bn_var: Tensor,
    x1: Tensor,
    m_x: Tensor,
    m_fb: Tensor,
    u: Tensor,
    acc: Tensor,
    spikes: Tensor,
    /// Event path: the spike bit sets of two consecutive steps (`spikes` is then unused).
    events: Option<[Tensor; 2]>,
    /// Event path, feedback layers whose width (channels) is not a multiple of 4: `W_effᵀ` with
    /// zero-padded rows (otherwise it lives in `sn.grad_eff`).
    wt_padded: Option<Tensor>,
    fb: Tensor,
    logits: Tensor,
    loss: Tensor,
    dlogits: Tensor,
    correct: Tensor,
    gl: Tensor,
    z: Tensor,
    frate: Tensor,
    mask: Tensor,
    beta: Tensor,
    dz: Tensor,
    dpre: Tensor,
    partials: Tensor,
    scalar: Tensor,
    solver: Option<Solver>,
}

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

pub struct Net {
    pub cfg: NetConfig,
    pub params: Vec<Param>,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    /// Spectral normalisation of the feedback weight.
    pub sn: SpectralNorm,
    /// Dense or event-driven forward simulation (both give the same spikes).
    kernels: Kernels,
    work: Option<Work>,
}

/// SplitMix64, for reproducible initialisation on the host.
pub struct HostRng(u64);

impl HostRng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn normal(&mut self) -> f32 {
        let u1 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * (u1.max(1e-300)).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

impl Net {
    /// A freshly initialised network (the authors' initialisation, seeded).
    pub fn new(gpu: &Gpu, cfg: NetConfig, seed: u64) -> Self {
        let mut rng = HostRng::new(seed);
        let shapes = cfg.param_shapes();
        let c = cfg.arch.channels();
        let fxs = &shapes[FX_W].1;
        let fx = unit_rows(&mut rng, fxs[0], fxs[1..].iter().product());
        let fbs = &shapes[FB_W].1;
        let (rows, cols) = (fbs[0], fbs[1..].iter().product::<usize>());
        let fb = unit_rows(&mut rng, rows, cols);
        let (sn, sigma) = SpectralNorm::new(gpu, &mut rng, &fb, rows, cols);
        let n = cfg.arch.neurons();
        let bound = 1.0 / (n as f32).sqrt();
        let clw: Vec<f32> = (0..cfg.classes * n)
            .map(|_| rng.uniform(-bound, bound))
            .collect();
        let clb: Vec<f32> = (0..cfg.classes)
            .map(|_| rng.uniform(-bound, bound))
            .collect();
        let values: Vec<Vec<f32>> = vec![
            fx,
            vec![0.0; c],
            vec![1.0; c],
            vec![0.0; c],
            fb,
            vec![sigma],
            clw,
            clb,
        ];
        let params = shapes
            .iter()
            .zip(values)
            .map(|((name, shape), data)| Param {
                name: name.to_string(),
                value: gpu.upload(shape, &data),
                grad: gpu.zeros(shape),
                momentum: gpu.zeros(shape),
            })
            .collect();
        Self {
            params,
            running_mean: gpu.zeros(&[c]),
            running_var: gpu.upload(&[c], &vec![1.0; c]),
            sn,
            kernels: Kernels::Event,
            work: None,
            cfg,
        }
    }

    /// Whether the event-driven simulation handles this architecture.
    pub fn events_supported(cfg: &NetConfig) -> bool {
        match cfg.arch {
            Arch::Fc { hidden, .. } => hidden <= ops::FC_EVENT_MAX_NEURONS,
            Arch::Conv { .. } => ops::conv_event_supported(&cfg.arch.fb_conv(1).unwrap()),
        }
    }

    /// Selects the forward simulation's kernels; `Event` falls back to `Dense` where the event
    /// kernels do not handle the architecture. `Auto` must be resolved by the caller
    /// ([`crate::kernels::resolve`]); here it means `Event`.
    pub fn set_kernels(&mut self, k: Kernels) {
        let k = match k {
            Kernels::Event | Kernels::Auto if Self::events_supported(&self.cfg) => Kernels::Event,
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

    fn work(&mut self, gpu: &Gpu, batch: usize, solver: Option<(SolverKind, usize)>) -> &mut Work {
        let n = self.cfg.arch.neurons();
        let c = self.cfg.arch.channels();
        let rebuild = match &self.work {
            None => true,
            Some(w) => w.batch != batch || !Solver::serves(w.solver.as_ref(), solver),
        };
        if rebuild {
            if let Some(old) = self.work.take() {
                drop(old);
            }
            let bn = batch * n;
            let cl = batch * self.cfg.classes;
            self.work = Some(Work {
                batch,
                x: gpu.zeros(&[batch, self.cfg.arch.input_len()]),
                frames: self.cfg.time_varying.then(|| {
                    let il = self.cfg.arch.input_len();
                    (
                        gpu.zeros(&[self.cfg.time_steps, batch, il]),
                        gpu.zeros(&[batch, il]),
                        gpu.zeros(&[bn]),
                    )
                }),
                labels: gpu.zeros(&[batch]),
                pre: gpu.zeros(&[bn]),
                bn_mean: gpu.zeros(&[c]),
                bn_var: gpu.zeros(&[c]),
                x1: gpu.zeros(&[bn]),
                m_x: gpu.zeros(&[bn]),
                m_fb: gpu.zeros(&[bn]),
                u: gpu.zeros(&[bn]),
                acc: gpu.zeros(&[bn]),
                spikes: gpu.zeros(&[if self.kernels == Kernels::Event {
                    1
                } else {
                    bn
                }]),
                events: (self.kernels == Kernels::Event).then(|| {
                    let words = match self.cfg.arch {
                        Arch::Fc { hidden, .. } => batch * ops::spike_words(hidden),
                        Arch::Conv { .. } => {
                            let s = self.cfg.arch.fb_conv(batch).unwrap();
                            ops::conv_spike_words(batch, s.cin, s.h, s.w)
                        }
                    };
                    [gpu.zeros(&[words]), gpu.zeros(&[words])]
                }),
                wt_padded: (self.kernels == Kernels::Event && !c.is_multiple_of(4)).then(|| {
                    let taps = self.sn.weff.len() / c;
                    gpu.zeros(&[taps * c.next_multiple_of(4)])
                }),
                fb: gpu.zeros(&[bn]),
                logits: gpu.zeros(&[cl]),
                loss: gpu.zeros(&[batch]),
                dlogits: gpu.zeros(&[cl]),
                correct: gpu.zeros(&[batch]),
                gl: gpu.zeros(&[bn]),
                z: gpu.zeros(&[bn]),
                frate: gpu.zeros(&[bn]),
                mask: gpu.zeros(&[bn]),
                beta: gpu.zeros(&[bn]),
                dz: gpu.zeros(&[bn]),
                dpre: gpu.zeros(&[bn]),
                partials: gpu.zeros(&[ops::sum_partials_len(bn)]),
                scalar: gpu.zeros(&[1]),
                solver: solver.map(|(k, t)| Solver::new(gpu, k, t, batch, n)),
            });
        }
        self.work.as_mut().unwrap()
    }

    /// `out = F_pre(x) = W_in x + b` (linear or conv) for a batch.
    fn input_layer(&self, gpu: &Gpu, batch: usize, x: &Tensor, out: &Tensor) {
        let arch = self.cfg.arch;
        let p = &self.params;
        match arch {
            Arch::Fc { input, hidden } => ops::gemm(
                gpu,
                Op::N,
                Op::T,
                batch,
                hidden,
                input,
                1.0,
                x,
                &p[FX_W].value,
                0.0,
                out,
            ),
            Arch::Conv { .. } => ops::conv2d(
                gpu,
                &arch.in_conv(batch).unwrap(),
                x,
                &p[FX_W].value,
                0.0,
                out,
            ),
        }
        ops::bias_add(
            gpu,
            BnShape {
                batch,
                channels: arch.channels(),
                hw: arch.hw(),
            },
            &p[FX_B].value,
            out,
        );
    }

    /// `out = W_eff s` for a batch of spike/rate vectors.
    fn feedback(&self, gpu: &Gpu, batch: usize, s: &Tensor, out: &Tensor) {
        match self.cfg.arch {
            Arch::Fc { hidden, .. } => ops::gemm(
                gpu,
                Op::N,
                Op::T,
                batch,
                hidden,
                hidden,
                1.0,
                s,
                &self.sn.weff,
                0.0,
                out,
            ),
            Arch::Conv { .. } => ops::conv2d(
                gpu,
                &self.cfg.arch.fb_conv(batch).unwrap(),
                s,
                &self.sn.weff,
                0.0,
                out,
            ),
        }
    }

    /// `out = W_effᵀ g`.
    fn feedback_vjp(&self, gpu: &Gpu, batch: usize, g: &Tensor, out: &Tensor) {
        match self.cfg.arch {
            Arch::Fc { hidden, .. } => ops::gemm(
                gpu,
                Op::N,
                Op::N,
                batch,
                hidden,
                hidden,
                1.0,
                g,
                &self.sn.weff,
                0.0,
                out,
            ),
            Arch::Conv { .. } => ops::conv2d_input_grad(
                gpu,
                &self.cfg.arch.fb_conv(batch).unwrap(),
                g,
                &self.sn.weff,
                1.0,
                0.0,
                out,
            ),
        }
    }

    fn refresh_weff(&self, gpu: &Gpu) {
        let p = &self.params;
        self.sn.refresh(gpu, &p[FB_W].value, &p[FB_S].value);
    }

    /// F_x(x) (+ BN, + dropout) into `work.x1`, and the T-step simulation leaving the rate in
    /// `work.acc`. With `train`, BN uses batch statistics and updates the running ones once.
    fn forward(&mut self, gpu: &Gpu, batch: usize, train: bool, seed: u32) {
        let cfg = self.cfg.clone();
        let arch = cfg.arch;
        let (c, hw) = (arch.channels(), arch.hw());
        let bns = BnShape {
            batch,
            channels: c,
            hw,
        };
        self.refresh_weff(gpu);
        let p = &self.params;
        let w = self.work.as_ref().unwrap();
        self.input_layer(gpu, batch, &w.x, &w.pre);
        let (stat_mean, stat_var) = if train {
            (&w.bn_mean, &w.bn_var)
        } else {
            (&self.running_mean, &self.running_var)
        };
        if train {
            ops::bn_stats(
                gpu,
                bns,
                &w.pre,
                &w.bn_mean,
                &w.bn_var,
                &self.running_mean,
                &self.running_var,
                Some(BN_MOMENTUM),
            );
            ops::bn_forward(
                gpu,
                bns,
                &w.pre,
                &w.bn_mean,
                &w.bn_var,
                &p[BN_W].value,
                &p[BN_B].value,
                &w.x1,
            );
        } else {
            ops::bn_forward(
                gpu,
                bns,
                &w.pre,
                &self.running_mean,
                &self.running_var,
                &p[BN_W].value,
                &p[BN_B].value,
                &w.x1,
            );
        }
        let drop = train && cfg.dropout > 0.0;
        if drop {
            ops::dropout_mask(gpu, &w.m_x, cfg.dropout, seed, 0);
            ops::dropout_mask(gpu, &w.m_fb, cfg.dropout, seed, 1);
            ops::mask_mul(gpu, &w.m_x, &w.x1);
        }
        let il = arch.input_len();
        gpu.fill_zero(&w.u);
        gpu.fill_zero(&w.acc);
        let fb_mask = drop.then_some(&w.m_fb);
        // W_effᵀ for the event kernels, in grad_eff unless its rows need padding: that buffer only
        // carries data from the backward pass's weight gradient to the spectral-norm backward, so
        // it is free here and the event path needs no extra weight-sized buffer.
        let wt = w.wt_padded.as_ref().unwrap_or(&self.sn.grad_eff);
        if w.events.is_some() {
            let (rows, cols) = (arch.channels(), self.sn.weff.len() / arch.channels());
            let ld = match arch {
                Arch::Fc { hidden, .. } => ops::fc_event_ld(hidden),
                Arch::Conv { .. } => ops::conv_event_ld(rows),
            };
            ops::transpose_padded(gpu, rows, cols, ld, &self.sn.weff, wt);
        }
        // Linear event simulation of the steps `ts`, all in one dispatch.
        let fc_sim = |n: usize, bits: &[Tensor; 2], ts: std::ops::Range<usize>, x: &Tensor| {
            let sim = ops::FcEventSim {
                n,
                batch,
                t_begin: ts.start,
                t_end: ts.end,
                x_step: 0,
                x_off: 0,
                vth: cfg.vth,
                leak: cfg.leak,
            };
            ops::fc_event_sim(gpu, &sim, &w.u, &w.acc, &bits[0], wt, x, fb_mask);
        };
        let fused = match (&w.events, arch, &w.frames) {
            // Constant input: the whole linear simulation in one dispatch.
            (Some(bits), Arch::Fc { hidden, .. }, None) => {
                fc_sim(hidden, bits, 0..cfg.time_steps, &w.x1);
                true
            }
            _ => false,
        };
        for t in 0..if fused { 0 } else { cfg.time_steps } {
            // Time-varying input: F_x of this step's frame, normalised with the statistics of the
            // mean frame's F_x (the ones the fixed-point equation uses).
            let current = match &w.frames {
                Some((frames, xt, x1t)) => {
                    gpu.copy(frames, t * batch * il, xt, 0, batch * il);
                    self.input_layer(gpu, batch, xt, x1t);
                    ops::bn_forward(
                        gpu,
                        bns,
                        x1t,
                        stat_mean,
                        stat_var,
                        &p[BN_W].value,
                        &p[BN_B].value,
                        &w.fb,
                    );
                    gpu.copy(&w.fb, 0, x1t, 0, batch * arch.neurons());
                    if drop {
                        ops::mask_mul(gpu, &w.m_x, x1t);
                    }
                    x1t
                }
                None => &w.x1,
            };
            let step = NeuronStep {
                vth: cfg.vth,
                leak: cfg.leak,
                has_feedback: t > 0,
                x_offset: 0,
            };
            match (&w.events, arch) {
                (Some(bits), Arch::Fc { hidden, .. }) => fc_sim(hidden, bits, t..t + 1, current),
                // Step t reads step t−1's spikes from one bit set and writes its own to the other.
                (Some(bits), Arch::Conv { .. }) => ops::conv_event_sim(
                    gpu,
                    &arch.fb_conv(batch).unwrap(),
                    step,
                    &w.u,
                    &w.acc,
                    &bits[(t + 1) % 2],
                    &bits[t % 2],
                    wt,
                    current,
                    fb_mask,
                ),
                (None, _) => {
                    if t > 0 {
                        self.feedback(gpu, batch, &w.spikes, &w.fb);
                        if drop {
                            ops::mask_mul(gpu, &w.m_fb, &w.fb);
                        }
                    }
                    ops::neuron_step(gpu, &w.u, &w.acc, &w.spikes, current, &w.fb, step);
                }
            }
        }
        ops::scale(gpu, 1.0 / cfg.rate_norm(), &w.acc);
        let cl = &self.params[CL_W].value;
        ops::gemm(
            gpu,
            Op::N,
            Op::T,
            batch,
            cfg.classes,
            arch.neurons(),
            1.0,
            &w.acc,
            cl,
            0.0,
            &w.logits,
        );
        ops::bias_add(
            gpu,
            BnShape {
                batch,
                channels: cfg.classes,
                hw: 1,
            },
            &self.params[CL_B].value,
            &w.logits,
        );
        ops::softmax_xent(
            gpu,
            batch,
            cfg.classes,
            &w.logits,
            &w.labels,
            1.0 / batch as f32,
            &w.loss,
            &w.dlogits,
            &w.correct,
        );
    }

    fn upload_batch(&mut self, gpu: &Gpu, x: &[f32], labels: &[u32]) -> Result<usize> {
        let batch = labels.len();
        let il = self.cfg.arch.input_len();
        let sl = self.cfg.sample_len();
        if x.len() != batch * sl {
            bail!(
                "batch of {} values for {batch} labels of {sl} inputs each",
                x.len()
            );
        }
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= self.cfg.classes) {
            bail!("label {l} out of range for {} classes", self.cfg.classes);
        }
        let w = self.work.as_ref().unwrap();
        match &w.frames {
            Some((frames, _, _)) => {
                // x is [T, batch, input]; the fixed point sees the rate-weighted mean frame.
                let mut mean = vec![0.0f32; batch * il];
                for t in 0..self.cfg.time_steps {
                    let wt = self.cfg.step_weight(t);
                    for (m, v) in mean
                        .iter_mut()
                        .zip(&x[t * batch * il..(t + 1) * batch * il])
                    {
                        *m += wt * v;
                    }
                }
                gpu.write(frames, x);
                gpu.write(&w.x, &mean);
            }
            None => gpu.write(&w.x, x),
        }
        gpu.write_words(&w.labels, 0, bytemuck::cast_slice(labels));
        Ok(batch)
    }

    fn read_loss_correct(&self, gpu: &Gpu) -> (f64, usize) {
        let w = self.work.as_ref().unwrap();
        batch_loss_correct(gpu, &w.loss, &w.correct)
    }

    /// Loss and accuracy on a batch (running BN statistics, no dropout, no update).
    pub fn eval_batch(&mut self, gpu: &Gpu, x: &[f32], labels: &[u32]) -> Result<StepStats> {
        self.work(gpu, labels.len(), None);
        let batch = self.upload_batch(gpu, x, labels)?;
        self.forward(gpu, batch, false, 0);
        let (loss_sum, correct) = self.read_loss_correct(gpu);
        Ok(StepStats {
            loss_sum,
            correct,
            samples: batch,
            ..Default::default()
        })
    }

    /// One IDE training step on a batch; `seed` draws this step's dropout masks.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &mut self,
        gpu: &Gpu,
        x: &[f32],
        labels: &[u32],
        lr: f32,
        solver: SolverKind,
        threshold: usize,
        seed: u32,
    ) -> Result<StepStats> {
        let t0 = std::time::Instant::now();
        self.work(gpu, labels.len(), Some((solver, threshold)));
        let batch = self.upload_batch(gpu, x, labels)?;
        self.forward(gpu, batch, true, seed);
        gpu.flush();
        let forward_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = std::time::Instant::now();
        let cfg = self.cfg.clone();
        let arch = cfg.arch;
        let n = arch.neurons();
        let (c, hw) = (arch.channels(), arch.hw());
        let bns = BnShape {
            batch,
            channels: c,
            hw,
        };
        let drop = cfg.dropout > 0.0;
        let mut work = self.work.take().unwrap();
        {
            let w = &work;
            let p = &self.params;
            // Classifier: gL = ∂L/∂rate, and its own gradients.
            ops::gemm(
                gpu,
                Op::N,
                Op::N,
                batch,
                n,
                cfg.classes,
                1.0,
                &w.dlogits,
                &p[CL_W].value,
                0.0,
                &w.gl,
            );
            ops::gemm(
                gpu,
                Op::T,
                Op::N,
                cfg.classes,
                n,
                batch,
                1.0,
                &w.dlogits,
                &w.acc,
                0.0,
                &p[CL_W].grad,
            );
            ops::channel_sum(
                gpu,
                BnShape {
                    batch,
                    channels: cfg.classes,
                    hw: 1,
                },
                &w.dlogits,
                1.0,
                0.0,
                &p[CL_B].grad,
            );
            // f at the rate: z = m_fb ⊙ W_eff a + x1; f = σ(z / vth); mask = σ'.
            self.feedback(gpu, batch, &w.acc, &w.z);
            if drop {
                ops::mask_mul(gpu, &w.m_fb, &w.z);
            }
            ops::axpby(gpu, 1.0, &w.x1, 1.0, &w.z);
            ops::clamp_mask(gpu, &w.z, 1.0 / cfg.vth, &w.frate, &w.mask);
            // D = σ' ⊙ m_fb / vth, so J_fᵀβ = W_effᵀ (D ⊙ β).
            ops::scale(gpu, 1.0 / cfg.vth, &w.mask);
        }
        let fr = {
            let w = &work;
            ops::axpby(gpu, -1.0, &w.acc, 1.0, &w.frate);
            ops::sum(gpu, &w.frate, true, &w.partials, &w.scalar);
            let num = gpu.read(&w.scalar)[0] as f64;
            ops::sum(gpu, &w.acc, true, &w.partials, &w.scalar);
            let den = gpu.read(&w.scalar)[0] as f64;
            (num / den.max(1e-30)).sqrt()
        };
        let stats = {
            let w = &mut work;
            let mut solver = w.solver.take().unwrap();
            let (mask, m_fb, dz) = (w.mask.clone(), w.m_fb.clone(), w.dz.clone());
            let this = &*self;
            let mut jt = |x: &Tensor, out: &Tensor| {
                gpu.copy(x, 0, &dz, 0, x.len());
                ops::mask_mul(gpu, &mask, &dz);
                if drop {
                    ops::mask_mul(gpu, &m_fb, &dz);
                }
                this.feedback_vjp(gpu, batch, &dz, out);
            };
            let ts = std::time::Instant::now();
            let st = solver.solve(gpu, &mut jt, &w.gl, &w.beta);
            gpu.flush();
            w.solver = Some(solver);
            (st, ts.elapsed().as_secs_f64() * 1e3)
        };
        let (stats, solve_ms) = stats;
        {
            let w = &work;
            let p = &self.params;
            // ∂L/∂z = β ⊙ σ'/vth; the feedback path sees it through m_fb, the input through m_x.
            gpu.copy(&w.beta, 0, &w.dz, 0, w.beta.len());
            ops::mask_mul(gpu, &w.mask, &w.dz);
            gpu.copy(&w.dz, 0, &w.fb, 0, w.dz.len());
            if drop {
                ops::mask_mul(gpu, &w.m_fb, &w.fb);
                ops::mask_mul(gpu, &w.m_x, &w.dz);
            }
            // Feedback weight: G = ∂L/∂W_eff, then through spectral normalisation.
            match arch {
                Arch::Fc { hidden, .. } => ops::gemm(
                    gpu,
                    Op::T,
                    Op::N,
                    hidden,
                    hidden,
                    batch,
                    1.0,
                    &w.fb,
                    &w.acc,
                    0.0,
                    &self.sn.grad_eff,
                ),
                Arch::Conv { .. } => ops::conv2d_weight_grad(
                    gpu,
                    &arch.fb_conv(batch).unwrap(),
                    &w.fb,
                    &w.acc,
                    1.0,
                    0.0,
                    &self.sn.grad_eff,
                ),
            }
            self.sn.backward(
                gpu,
                &p[FB_W].value,
                &p[FB_S].value,
                &p[FB_W].grad,
                &p[FB_S].grad,
            );
            // Input layer: BN backward (batch statistics), then the linear/conv weight and bias.
            ops::bn_backward(
                gpu,
                bns,
                &w.pre,
                &w.dz,
                &w.bn_mean,
                &w.bn_var,
                &p[BN_W].value,
                true,
                &p[BN_W].grad,
                &p[BN_B].grad,
                Some(&w.dpre),
            );
            match arch {
                Arch::Fc { input, hidden } => ops::gemm(
                    gpu,
                    Op::T,
                    Op::N,
                    hidden,
                    input,
                    batch,
                    1.0,
                    &w.dpre,
                    &w.x,
                    0.0,
                    &p[FX_W].grad,
                ),
                Arch::Conv { .. } => ops::conv2d_weight_grad(
                    gpu,
                    &arch.in_conv(batch).unwrap(),
                    &w.dpre,
                    &w.x,
                    1.0,
                    0.0,
                    &p[FX_W].grad,
                ),
            }
            ops::channel_sum(gpu, bns, &w.dpre, 1.0, 0.0, &p[FX_B].grad);
        }
        gpu.flush();
        let backward_ms = t1.elapsed().as_secs_f64() * 1e3;
        let t2 = std::time::Instant::now();
        for p in &self.params {
            ops::sgd(gpu, &p.value, &p.grad, &p.momentum, lr, 0.9, 5e-4);
        }
        self.work = Some(work);
        let (loss_sum, correct) = self.read_loss_correct(gpu);
        let optimizer_ms = t2.elapsed().as_secs_f64() * 1e3;
        Ok(StepStats {
            loss_sum,
            correct,
            samples: batch,
            forward_residual: fr,
            solve: stats,
            forward_ms,
            backward_ms,
            solve_ms,
            optimizer_ms,
        })
    }

    /// The firing rates of the last batch (`[batch, neurons]`), as the simulation left them.
    pub fn rate(&self, gpu: &Gpu) -> Vec<f32> {
        self.work
            .as_ref()
            .map(|w| gpu.read(&w.acc))
            .unwrap_or_default()
    }

    fn state_tensors(&self) -> Vec<(String, &Tensor)> {
        vec![
            ("bn.running_mean".into(), &self.running_mean),
            ("bn.running_var".into(), &self.running_var),
            ("fb.u".into(), &self.sn.u),
            ("fb.v".into(), &self.sn.v),
        ]
    }

    /// Every parameter and state tensor, copied to the host (for checkpoints and tests).
    pub fn to_host(&self, gpu: &Gpu) -> HostState {
        host_state(gpu, &self.params, &self.state_tensors())
    }

    /// Restores tensors by name; every tensor of the model must be present with its shape.
    pub fn load_host(&mut self, gpu: &Gpu, state: &HostState, source: &str) -> Result<()> {
        load_state(gpu, &self.params, &self.state_tensors(), state, source)
    }
}

/// Parameters, their momentum buffers and the extra state tensors, copied to the host.
pub(crate) fn host_state(gpu: &Gpu, params: &[Param], state: &[(String, &Tensor)]) -> HostState {
    let mut tensors = Vec::new();
    for p in params {
        tensors.push((p.name.clone(), p.value.shape.clone(), gpu.read(&p.value)));
    }
    for p in params {
        tensors.push((
            format!("optim.momentum.{}", p.name),
            p.value.shape.clone(),
            gpu.read(&p.momentum),
        ));
    }
    for (name, t) in state {
        tensors.push((name.clone(), t.shape.clone(), gpu.read(t)));
    }
    HostState { tensors }
}

/// The inverse of [`host_state`]: every tensor must be present with the model's shape.
pub(crate) fn load_state(
    gpu: &Gpu,
    params: &[Param],
    state: &[(String, &Tensor)],
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
        gpu.write(&p.value, find(&p.name, &p.value.shape)?);
        gpu.write(
            &p.momentum,
            find(&format!("optim.momentum.{}", p.name), &p.value.shape)?,
        );
    }
    for (name, t) in state {
        gpu.write(t, find(name, &t.shape)?);
    }
    Ok(())
}

/// Summed loss and number of correct predictions of a batch, from the per-sample outputs of the
/// softmax cross-entropy kernel.
pub(crate) fn batch_loss_correct(gpu: &Gpu, loss: &Tensor, correct: &Tensor) -> (f64, usize) {
    let l: f64 = gpu.read(loss).iter().map(|&v| v as f64).sum();
    let c = gpu.read(correct).iter().filter(|&&v| v > 0.5).count();
    (l, c)
}
