//! Multi-layer feedback spiking networks (AlexNet-F, CIFARNet-F; ALGORITHM.md §1–§2, §4): conv
//! layers fed forward inside each time step, and a spectral-normalised transposed convolution from
//! the last layer back to the first.
//!
//! BN rules \[ref\]: F_x's BN uses batch statistics in training; the BN layers inside the loop use
//! running statistics during the simulation, and batch statistics (updating the running ones) in
//! the one evaluation of f that yields the parameter gradients. The adjoint solve has two forms
//! ([`AdjointForm`], ALGORITHM.md §4): the authors' (inner BNs in training mode, J_fᵀ taken at
//! f(rate)), the default, and a consistent one (running statistics, at the rate).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::spectral::{unit_output_channels, unit_rows, SpectralNorm};
use super::{host_state, load_state, HostRng, HostState, Param, StepStats, BN_MOMENTUM};
use crate::gpu::{Gpu, Tensor};
use crate::ops::{self, BnShape, ConvShape, ConvTShape, NeuronStep, Op};
pub use crate::reference::network::AdjointForm;
use crate::solver::{Solver, SolverKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvSpec {
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiConfig {
    pub preset: String,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    /// F_x: the input convolution (+ bias, BN), whose output drives layer 1.
    pub fx: ConvSpec,
    /// W_i: layer i → layer i+1 (+ bias, BN).
    pub layers: Vec<ConvSpec>,
    /// Feedback: transposed convolution from the last layer to the first (no bias, SN).
    pub fb_k: usize,
    pub fb_stride: usize,
    pub fb_pad: usize,
    pub fb_output_pad: usize,
    pub classes: usize,
    pub time_steps: usize,
    pub vth: f32,
    pub leak: f32,
    pub dropout: f32,
    /// How the β solve linearises f. Checkpoints written before this field existed were
    /// trained with the consistent form, so that is what a missing field means.
    #[serde(default = "AdjointForm::consistent")]
    pub adjoint: AdjointForm,
}

impl MultiConfig {
    fn conv(cin: usize, h: usize, w: usize, s: &ConvSpec, batch: usize) -> ConvShape {
        ConvShape {
            batch,
            cin,
            h,
            w,
            cout: s.cout,
            kh: s.k,
            kw: s.k,
            stride: s.stride,
            pad: s.pad,
        }
    }
    pub fn in_conv(&self, batch: usize) -> ConvShape {
        Self::conv(self.cin, self.h, self.w, &self.fx, batch)
    }
    /// Neuron shapes (C, H, W) of layers 1..N.
    pub fn dims(&self) -> Vec<(usize, usize, usize)> {
        let s = self.in_conv(1);
        let mut d = vec![(s.cout, s.oh(), s.ow())];
        for l in &self.layers {
            let (c, h, w) = *d.last().unwrap();
            let cs = Self::conv(c, h, w, l, 1);
            d.push((cs.cout, cs.oh(), cs.ow()));
        }
        d
    }
    /// W_l: from layer l−1 to layer l (l ≥ 1, 0-based layer index).
    pub fn layer_conv(&self, l: usize, batch: usize) -> ConvShape {
        let (c, h, w) = self.dims()[l - 1];
        Self::conv(c, h, w, &self.layers[l - 1], batch)
    }
    pub fn fb_shape(&self, batch: usize) -> ConvTShape {
        let d = self.dims();
        let (c, h, w) = *d.last().unwrap();
        ConvTShape {
            batch,
            cin: c,
            h,
            w,
            cout: d[0].0,
            k: self.fb_k,
            stride: self.fb_stride,
            pad: self.fb_pad,
            output_pad: self.fb_output_pad,
        }
    }
    pub fn validate(&self) -> Result<()> {
        let d = self.dims();
        let fb = self.fb_shape(1);
        if (fb.cout, fb.oh(), fb.ow()) != d[0] {
            bail!(
                "{}: the feedback maps {:?} to {}×{}×{}, but layer 1 is {:?}",
                self.preset,
                d.last().unwrap(),
                fb.cout,
                fb.oh(),
                fb.ow(),
                d[0]
            );
        }
        Ok(())
    }
    pub fn neurons_per_layer(&self) -> Vec<usize> {
        self.dims().iter().map(|(c, h, w)| c * h * w).collect()
    }
    pub fn neurons(&self) -> usize {
        self.neurons_per_layer().iter().sum()
    }
    pub fn paper_neurons(&self) -> usize {
        self.neurons() + self.cin * self.h * self.w
    }
    pub fn input_len(&self) -> usize {
        self.cin * self.h * self.w
    }
    pub fn rate_norm(&self) -> f32 {
        if self.leak == 1.0 {
            self.time_steps as f32
        } else {
            (1.0 - self.leak.powi(self.time_steps as i32)) / (1.0 - self.leak)
        }
    }
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let d = self.dims();
        let mut v = vec![
            (
                "fx.weight".to_string(),
                vec![self.fx.cout, self.cin, self.fx.k, self.fx.k],
            ),
            ("fx.bias".into(), vec![self.fx.cout]),
            ("bn.weight".into(), vec![self.fx.cout]),
            ("bn.bias".into(), vec![self.fx.cout]),
        ];
        for (i, l) in self.layers.iter().enumerate() {
            let cin = d[i].0;
            v.push((format!("layers.{i}.weight"), vec![l.cout, cin, l.k, l.k]));
            v.push((format!("layers.{i}.bias"), vec![l.cout]));
            v.push((format!("layers.{i}.bn.weight"), vec![l.cout]));
            v.push((format!("layers.{i}.bn.bias"), vec![l.cout]));
        }
        let (cn, hn, wn) = *d.last().unwrap();
        v.push(("fb.weight".into(), vec![cn, d[0].0, self.fb_k, self.fb_k]));
        v.push(("fb.scale".into(), vec![1]));
        v.push(("classifier.weight".into(), vec![self.classes, cn * hn * wn]));
        v.push(("classifier.bias".into(), vec![self.classes]));
        v
    }
    pub fn param_count(&self) -> usize {
        self.param_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

/// Buffers of one layer for a batch.
struct LayerWork {
    u: Tensor,
    acc: Tensor,
    spikes: Tensor,
    /// Pre-BN input (W a + b) from the last f evaluation, for the BN backward.
    pre: Tensor,
    /// Input current after BN and dropout.
    cur: Tensor,
    /// Activation of the chain in the last f evaluation.
    a: Tensor,
    /// σ' of the last f evaluation, turned into the adjoint's per-element factor.
    mask: Tensor,
    /// Dropout mask on the layer's incoming current.
    drop: Tensor,
    /// Gradient with respect to this layer's activation.
    g: Tensor,
    bn_mean: Tensor,
    bn_var: Tensor,
}

struct Work {
    batch: usize,
    x: Tensor,
    labels: Tensor,
    x1: Tensor,
    m_fb: Tensor,
    layers: Vec<LayerWork>,
    logits: Tensor,
    loss: Tensor,
    dlogits: Tensor,
    correct: Tensor,
    gl: Tensor,
    beta: Tensor,
    /// f(rate), where the authors' form linearises f for the β solve.
    f_rate: Tensor,
    scratch_g: Tensor,
    bn_scratch: (Tensor, Tensor),
    partials: Tensor,
    scalar: Tensor,
    solver: Option<Solver>,
}

pub struct MultiNet {
    pub cfg: MultiConfig,
    pub params: Vec<Param>,
    /// Running statistics: index 0 is F_x's BN, l ≥ 1 the BN of W_l.
    pub running: Vec<(Tensor, Tensor)>,
    /// Spectral normalisation of the feedback weight.
    pub sn: SpectralNorm,
    work: Option<Work>,
}

impl MultiNet {
    pub fn new(gpu: &Gpu, cfg: MultiConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = HostRng::new(seed);
        let shapes = cfg.param_shapes();
        let mut params = Vec::new();
        let mut fb_host = Vec::new();
        let n_last = *cfg.neurons_per_layer().last().unwrap();
        for (name, shape) in &shapes {
            let n: usize = shape.iter().product();
            let data = if name.ends_with("bn.weight") {
                vec![1.0; n]
            } else if name == "classifier.weight" || name == "classifier.bias" {
                let b = 1.0 / (n_last as f32).sqrt();
                (0..n).map(|_| rng.uniform(-b, b)).collect()
            } else if name == "fb.weight" {
                // [in, out, k, k]: the output channel is dim 1 (ALGORITHM.md §4).
                let w = unit_output_channels(&mut rng, shape[0], shape[1], shape[2] * shape[3]);
                fb_host = w.clone();
                w
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
        let fbs = &shapes[shapes.len() - 4].1;
        let (rows, cols) = (fbs[0], fbs[1..].iter().product::<usize>());
        let (sn, sigma) = SpectralNorm::new(gpu, &mut rng, &fb_host, rows, cols);
        let fs = params.len() - 3;
        gpu.write(&params[fs].value, &[sigma]);
        let mut running = Vec::new();
        for (c, _, _) in cfg.dims() {
            running.push((gpu.zeros(&[c]), gpu.upload(&[c], &vec![1.0; c])));
        }
        Ok(Self {
            params,
            running,
            sn,
            work: None,
            cfg,
        })
    }

    fn n_layers(&self) -> usize {
        self.cfg.layers.len() + 1
    }
    fn idx_layer(&self, l: usize) -> usize {
        4 + 4 * (l - 1)
    }
    fn idx_fb(&self) -> usize {
        4 + 4 * self.cfg.layers.len()
    }

    fn work(&mut self, gpu: &Gpu, batch: usize, solver: Option<(SolverKind, usize)>) {
        let rebuild = match &self.work {
            None => true,
            Some(w) => w.batch != batch || !Solver::serves(w.solver.as_ref(), solver),
        };
        if !rebuild {
            return;
        }
        self.work = None;
        let dims = self.cfg.dims();
        let ns = self.cfg.neurons_per_layer();
        let layers = dims
            .iter()
            .zip(&ns)
            .map(|(&(c, _, _), &n)| {
                let z = || gpu.zeros(&[batch * n]);
                LayerWork {
                    u: z(),
                    acc: z(),
                    spikes: z(),
                    pre: z(),
                    cur: z(),
                    a: z(),
                    mask: z(),
                    drop: z(),
                    g: z(),
                    bn_mean: gpu.zeros(&[c]),
                    bn_var: gpu.zeros(&[c]),
                }
            })
            .collect();
        let n0 = ns[0];
        let nl = *ns.last().unwrap();
        let cmax = dims.iter().map(|d| d.0).max().unwrap();
        let nmax = *ns.iter().max().unwrap();
        let cl = batch * self.cfg.classes;
        self.work = Some(Work {
            batch,
            x: gpu.zeros(&[batch, self.cfg.input_len()]),
            labels: gpu.zeros(&[batch]),
            x1: gpu.zeros(&[batch * n0]),
            m_fb: gpu.zeros(&[batch * n0]),
            layers,
            logits: gpu.zeros(&[cl]),
            loss: gpu.zeros(&[batch]),
            dlogits: gpu.zeros(&[cl]),
            correct: gpu.zeros(&[batch]),
            gl: gpu.zeros(&[batch * nl]),
            beta: gpu.zeros(&[batch * nl]),
            f_rate: gpu.zeros(&[batch * nl]),
            scratch_g: gpu.zeros(&[batch * nmax]),
            bn_scratch: (gpu.zeros(&[cmax]), gpu.zeros(&[cmax])),
            partials: gpu.zeros(&[ops::sum_partials_len(batch * nmax)]),
            scalar: gpu.zeros(&[1]),
            solver: solver.map(|(k, t)| Solver::new(gpu, k, t, batch, nl)),
        });
    }

    fn bn_shape(&self, l: usize, batch: usize) -> BnShape {
        let (c, h, w) = self.cfg.dims()[l];
        BnShape {
            batch,
            channels: c,
            hw: h * w,
        }
    }

    fn refresh_weff(&self, gpu: &Gpu) {
        let fb = self.idx_fb();
        self.sn
            .refresh(gpu, &self.params[fb].value, &self.params[fb + 1].value);
    }

    /// `cur_l = m_l ⊙ BN_l(W_l input + b_l)` into `w.layers[l].cur`, keeping the pre-BN value.
    /// `bn` says whether BN uses (and records) the batch statistics, and whether those update
    /// the running ones.
    fn layer_current(
        &self,
        gpu: &Gpu,
        w: &Work,
        l: usize,
        input: &Tensor,
        bn: InnerBn,
        drop: bool,
    ) {
        let b = w.batch;
        let i = self.idx_layer(l);
        let p = &self.params;
        let lw = &w.layers[l];
        let bns = self.bn_shape(l, b);
        ops::conv2d(
            gpu,
            &self.cfg.layer_conv(l, b),
            input,
            &p[i].value,
            0.0,
            &lw.pre,
        );
        ops::bias_add(gpu, bns, &p[i + 1].value, &lw.pre);
        let (rm, rv) = &self.running[l];
        if bn != InnerBn::Running {
            let update = (bn == InnerBn::BatchUpdate).then_some(BN_MOMENTUM);
            ops::bn_stats(gpu, bns, &lw.pre, &lw.bn_mean, &lw.bn_var, rm, rv, update);
            ops::bn_forward(
                gpu,
                bns,
                &lw.pre,
                &lw.bn_mean,
                &lw.bn_var,
                &p[i + 2].value,
                &p[i + 3].value,
                &lw.cur,
            );
        } else {
            ops::bn_forward(
                gpu,
                bns,
                &lw.pre,
                rm,
                rv,
                &p[i + 2].value,
                &p[i + 3].value,
                &lw.cur,
            );
        }
        if drop {
            ops::mask_mul(gpu, &lw.drop, &lw.cur);
        }
    }

    fn forward(&mut self, gpu: &Gpu, train: bool, seed: u32) {
        self.refresh_weff(gpu);
        let w = self.work.as_ref().unwrap();
        let b = w.batch;
        let p = &self.params;
        let cfg = &self.cfg;
        let n = self.n_layers();
        let bn0 = self.bn_shape(0, b);
        // F_x (constant over time).
        let l0 = &w.layers[0];
        ops::conv2d(gpu, &cfg.in_conv(b), &w.x, &p[0].value, 0.0, &l0.pre);
        ops::bias_add(gpu, bn0, &p[1].value, &l0.pre);
        let (rm, rv) = &self.running[0];
        if train {
            ops::bn_stats(
                gpu,
                bn0,
                &l0.pre,
                &l0.bn_mean,
                &l0.bn_var,
                rm,
                rv,
                Some(BN_MOMENTUM),
            );
            ops::bn_forward(
                gpu,
                bn0,
                &l0.pre,
                &l0.bn_mean,
                &l0.bn_var,
                &p[2].value,
                &p[3].value,
                &w.x1,
            );
        } else {
            ops::bn_forward(gpu, bn0, &l0.pre, rm, rv, &p[2].value, &p[3].value, &w.x1);
        }
        let drop = train && cfg.dropout > 0.0;
        if drop {
            ops::dropout_mask(gpu, &l0.drop, cfg.dropout, seed, 0);
            ops::mask_mul(gpu, &l0.drop, &w.x1);
            ops::dropout_mask(gpu, &w.m_fb, cfg.dropout, seed, 1);
            for l in 1..n {
                ops::dropout_mask(gpu, &w.layers[l].drop, cfg.dropout, seed, 1 + l as u32);
            }
        }
        for lw in &w.layers {
            gpu.fill_zero(&lw.u);
            gpu.fill_zero(&lw.acc);
        }
        let fbs = cfg.fb_shape(b);
        for t in 0..cfg.time_steps {
            if t > 0 {
                ops::conv_transpose2d(
                    gpu,
                    &fbs,
                    &w.layers[n - 1].spikes,
                    &self.sn.weff,
                    0.0,
                    &l0.cur,
                );
                if drop {
                    ops::mask_mul(gpu, &w.m_fb, &l0.cur);
                }
            }
            let step = |x: &Tensor, fb: &Tensor, has_fb: bool, lw: &LayerWork| {
                ops::neuron_step(
                    gpu,
                    &lw.u,
                    &lw.acc,
                    &lw.spikes,
                    x,
                    fb,
                    NeuronStep {
                        vth: cfg.vth,
                        leak: cfg.leak,
                        has_feedback: has_fb,
                        x_offset: 0,
                    },
                );
            };
            step(&w.x1, &l0.cur, t > 0, l0);
            for l in 1..n {
                // Spikes of the previous layer in this same step; running BN statistics.
                self.layer_current(gpu, w, l, &w.layers[l - 1].spikes, InnerBn::Running, drop);
                step(&w.layers[l].cur, &w.layers[l].cur, false, &w.layers[l]);
            }
        }
        let last = &w.layers[n - 1];
        ops::scale(gpu, 1.0 / cfg.rate_norm(), &last.acc);
        let nl = *cfg.neurons_per_layer().last().unwrap();
        let cl = self.params.len() - 2;
        ops::gemm(
            gpu,
            Op::N,
            Op::T,
            b,
            cfg.classes,
            nl,
            1.0,
            &last.acc,
            &p[cl].value,
            0.0,
            &w.logits,
        );
        ops::bias_add(
            gpu,
            BnShape {
                batch: b,
                channels: cfg.classes,
                hw: 1,
            },
            &p[cl + 1].value,
            &w.logits,
        );
        ops::softmax_xent(
            gpu,
            b,
            cfg.classes,
            &w.logits,
            &w.labels,
            1.0 / b as f32,
            &w.loss,
            &w.dlogits,
            &w.correct,
        );
    }

    /// Evaluates f at `a_n` (the last layer's rate, or f(rate)), leaving each layer's
    /// activation in `a` and σ' in `mask`; `bn` selects the BN mode of the inner layers.
    fn eval_f(&self, gpu: &Gpu, a_n: &Tensor, bn: InnerBn, drop: bool) {
        let w = self.work.as_ref().unwrap();
        let b = w.batch;
        let n = self.n_layers();
        let l0 = &w.layers[0];
        ops::conv_transpose2d(gpu, &self.cfg.fb_shape(b), a_n, &self.sn.weff, 0.0, &l0.cur);
        if drop {
            ops::mask_mul(gpu, &w.m_fb, &l0.cur);
        }
        ops::axpby(gpu, 1.0, &w.x1, 1.0, &l0.cur);
        ops::clamp_mask(gpu, &l0.cur, 1.0 / self.cfg.vth, &l0.a, &l0.mask);
        for l in 1..n {
            self.layer_current(gpu, w, l, &w.layers[l - 1].a, bn, drop);
            let lw = &w.layers[l];
            ops::clamp_mask(gpu, &lw.cur, 1.0 / self.cfg.vth, &lw.a, &lw.mask);
        }
    }

    fn upload(&mut self, gpu: &Gpu, x: &[f32], labels: &[u32]) -> Result<()> {
        let il = self.cfg.input_len();
        if x.len() != labels.len() * il {
            bail!(
                "batch of {} values for {} labels of {il} inputs each",
                x.len(),
                labels.len()
            );
        }
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= self.cfg.classes) {
            bail!("label {l} out of range for {} classes", self.cfg.classes);
        }
        let w = self.work.as_ref().unwrap();
        gpu.write(&w.x, x);
        gpu.write_words(&w.labels, 0, bytemuck::cast_slice(labels));
        Ok(())
    }

    fn loss_correct(&self, gpu: &Gpu) -> (f64, usize) {
        let w = self.work.as_ref().unwrap();
        super::batch_loss_correct(gpu, &w.loss, &w.correct)
    }

    pub fn eval_batch(&mut self, gpu: &Gpu, x: &[f32], labels: &[u32]) -> Result<StepStats> {
        self.work(gpu, labels.len(), None);
        self.upload(gpu, x, labels)?;
        self.forward(gpu, false, 0);
        let (loss_sum, correct) = self.loss_correct(gpu);
        Ok(StepStats {
            loss_sum,
            correct,
            samples: labels.len(),
            ..Default::default()
        })
    }

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
        self.upload(gpu, x, labels)?;
        self.forward(gpu, true, seed);
        gpu.flush();
        let forward_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = std::time::Instant::now();
        let cfg = self.cfg.clone();
        let b = labels.len();
        let n = self.n_layers();
        let drop = cfg.dropout > 0.0;
        let nl = *cfg.neurons_per_layer().last().unwrap();
        let cl = self.params.len() - 2;
        let fb = self.idx_fb();
        let inv_vth = 1.0 / cfg.vth;
        // Classifier.
        {
            let w = self.work.as_ref().unwrap();
            let p = &self.params;
            let rate = &w.layers[n - 1].acc;
            ops::gemm(
                gpu,
                Op::N,
                Op::N,
                b,
                nl,
                cfg.classes,
                1.0,
                &w.dlogits,
                &p[cl].value,
                0.0,
                &w.gl,
            );
            ops::gemm(
                gpu,
                Op::T,
                Op::N,
                cfg.classes,
                nl,
                b,
                1.0,
                &w.dlogits,
                rate,
                0.0,
                &p[cl].grad,
            );
            ops::channel_sum(
                gpu,
                BnShape {
                    batch: b,
                    channels: cfg.classes,
                    hw: 1,
                },
                &w.dlogits,
                1.0,
                0.0,
                &p[cl + 1].grad,
            );
        }
        let authors = cfg.adjoint == AdjointForm::Authors;
        let residual_of = |w: &Work| {
            // ‖f(rate) − rate‖ / ‖rate‖ from the evaluation just made at the rate.
            let last = &w.layers[n - 1];
            let d = sub(&w.scratch_g, b * nl);
            gpu.copy(&last.a, 0, &d, 0, b * nl);
            ops::axpby(gpu, -1.0, &last.acc, 1.0, &d);
            ops::sum(gpu, &d, true, &w.partials, &w.scalar);
            let num = gpu.read(&w.scalar)[0] as f64;
            ops::sum(gpu, &last.acc, true, &w.partials, &w.scalar);
            let den = gpu.read(&w.scalar)[0] as f64;
            (num / den.max(1e-30)).sqrt()
        };
        let forward_residual = if authors {
            // ALGORITHM.md §4 (a)–(c), as the authors' code runs it: f at the rate in training
            // mode (this step's one running-statistics update) gives f(rate); the solve then
            // linearises f at f(rate) with the inner BNs in training mode. The running statistics
            // the authors' copy starts from (c) do not enter a training-mode BN.
            let w = self.work.as_ref().unwrap();
            let acc = w.layers[n - 1].acc.clone();
            self.eval_f(gpu, &acc, InnerBn::BatchUpdate, drop);
            let res = residual_of(w);
            gpu.copy(&w.layers[n - 1].a, 0, &w.f_rate, 0, b * nl);
            self.eval_f(gpu, &w.f_rate, InnerBn::Batch, drop);
            res
        } else {
            // The consistent form: f at the rate with running statistics, the map the simulation
            // approximates, before this step's running-statistics update.
            let w = self.work.as_ref().unwrap();
            self.eval_f(gpu, &w.layers[n - 1].acc, InnerBn::Running, drop);
            residual_of(w)
        };
        // Fold σ'/vth and dropout of every layer into one per-element factor; with running
        // statistics also the (then constant) BN scale, so J_fᵀ is masks and transposed
        // convolutions only. Training-mode BN keeps its own backward inside J_fᵀ.
        {
            let w = self.work.as_ref().unwrap();
            let p = &self.params;
            for l in 0..n {
                let lw = &w.layers[l];
                ops::scale(gpu, inv_vth, &lw.mask);
                if l == 0 {
                    if drop {
                        ops::mask_mul(gpu, &w.m_fb, &lw.mask);
                    }
                } else {
                    if drop {
                        ops::mask_mul(gpu, &lw.drop, &lw.mask);
                    }
                    if !authors {
                        // Running-statistics BN is a per-channel scale γ/√(var+ε).
                        let i = self.idx_layer(l);
                        let (rm, rv) = &self.running[l];
                        gpu.copy(&lw.mask, 0, &lw.g, 0, lw.mask.len());
                        let (s1, s2) = &w.bn_scratch;
                        ops::bn_backward(
                            gpu,
                            self.bn_shape(l, b),
                            &lw.g,
                            &lw.g,
                            rm,
                            rv,
                            &p[i + 2].value,
                            false,
                            s1,
                            s2,
                            Some(&lw.mask),
                        );
                    }
                }
            }
        }
        let (solve, solve_ms) = {
            let mut w = self.work.take().unwrap();
            let mut solver = w.solver.take().unwrap();
            let this = &*self;
            let wr = &w;
            let mut jt = |x: &Tensor, out: &Tensor| {
                // g_{N} = x; for l = N−1..1: g ⊙= D_l, (training-mode BN backward), g_{l−1} =
                // W_lᵀ g; then D_0 and W_fbᵀ. In the authors' form the BN backward couples the
                // samples through the batch mean and variance; the solver still updates each
                // sample's Broyden estimate separately under one global stopping rule, as theirs.
                let mut g = wr.scratch_g.clone();
                gpu.copy(x, 0, &g, 0, x.len());
                for l in (1..n).rev() {
                    let lw = &wr.layers[l];
                    let len = lw.mask.len();
                    ops::mask_mul(gpu, &lw.mask, &sub(&g, len));
                    let mut gin = sub(&g, len);
                    if authors {
                        // dx must not alias dy: g is scratch_g for the last layer, else layers[l].g.
                        let dx = if l == n - 1 {
                            lw.g.clone()
                        } else {
                            sub(&wr.scratch_g, len)
                        };
                        let (s1, s2) = &wr.bn_scratch;
                        ops::bn_backward(
                            gpu,
                            this.bn_shape(l, b),
                            &lw.pre,
                            &gin,
                            &lw.bn_mean,
                            &lw.bn_var,
                            &this.params[this.idx_layer(l) + 2].value,
                            true,
                            s1,
                            s2,
                            Some(&dx),
                        );
                        gin = dx;
                    }
                    let prev = &wr.layers[l - 1].g;
                    ops::conv2d_input_grad(
                        gpu,
                        &this.cfg.layer_conv(l, b),
                        &gin,
                        &this.params[this.idx_layer(l)].value,
                        1.0,
                        0.0,
                        prev,
                    );
                    g = prev.clone();
                }
                ops::mask_mul(gpu, &wr.layers[0].mask, &g);
                ops::conv_transpose2d_input_grad(
                    gpu,
                    &this.cfg.fb_shape(b),
                    &g,
                    &this.sn.weff,
                    0.0,
                    out,
                );
            };
            let ts = std::time::Instant::now();
            let st = solver.solve(gpu, &mut jt, &w.gl, &w.beta);
            gpu.flush();
            w.solver = Some(solver);
            self.work = Some(w);
            (st, ts.elapsed().as_secs_f64() * 1e3)
        };
        // The one f evaluation at the rate with batch statistics that yields ∂f/∂θ, and β
        // through it; the authors' form has already updated the running statistics with the
        // same batch values.
        {
            let w = self.work.as_ref().unwrap();
            let bn = if authors {
                InnerBn::Batch
            } else {
                InnerBn::BatchUpdate
            };
            self.eval_f(gpu, &w.layers[n - 1].acc, bn, drop);
        }
        {
            let w = self.work.as_ref().unwrap();
            let p = &self.params;
            let mut g = w.beta.clone();
            for l in (1..n).rev() {
                let lw = &w.layers[l];
                let i = self.idx_layer(l);
                let bns = self.bn_shape(l, b);
                // ∂L/∂(BN output) = g ⊙ σ'/vth ⊙ m_l.
                let dcur = &w.scratch_g;
                let dcur = sub(dcur, lw.mask.len());
                gpu.copy(&g, 0, &dcur, 0, lw.mask.len());
                ops::mask_mul(gpu, &lw.mask, &dcur);
                ops::scale(gpu, inv_vth, &dcur);
                if drop {
                    ops::mask_mul(gpu, &lw.drop, &dcur);
                }
                ops::bn_backward(
                    gpu,
                    bns,
                    &lw.pre,
                    &dcur,
                    &lw.bn_mean,
                    &lw.bn_var,
                    &p[i + 2].value,
                    true,
                    &p[i + 2].grad,
                    &p[i + 3].grad,
                    Some(&lw.g),
                );
                ops::channel_sum(gpu, bns, &lw.g, 1.0, 0.0, &p[i + 1].grad);
                let cs = cfg.layer_conv(l, b);
                ops::conv2d_weight_grad(gpu, &cs, &lw.g, &w.layers[l - 1].a, 1.0, 0.0, &p[i].grad);
                let prev = &w.layers[l - 1].g;
                ops::conv2d_input_grad(gpu, &cs, &lw.g, &p[i].value, 1.0, 0.0, prev);
                g = prev.clone();
            }
            // Layer 1: z_1 = m_fb ⊙ W_fb a + x1.
            let l0 = &w.layers[0];
            ops::mask_mul(gpu, &l0.mask, &g);
            ops::scale(gpu, inv_vth, &g);
            let dfb = sub(&w.scratch_g, g.len());
            gpu.copy(&g, 0, &dfb, 0, g.len());
            if drop {
                ops::mask_mul(gpu, &w.m_fb, &dfb);
                ops::mask_mul(gpu, &l0.drop, &g);
            }
            ops::conv_transpose2d_weight_grad(
                gpu,
                &cfg.fb_shape(b),
                &dfb,
                &w.layers[n - 1].acc,
                1.0,
                0.0,
                &self.sn.grad_eff,
            );
            self.sn.backward(
                gpu,
                &p[fb].value,
                &p[fb + 1].value,
                &p[fb].grad,
                &p[fb + 1].grad,
            );
            // F_x: BN (batch statistics) and the input convolution.
            let bn0 = self.bn_shape(0, b);
            ops::bn_backward(
                gpu,
                bn0,
                &l0.pre,
                &g,
                &l0.bn_mean,
                &l0.bn_var,
                &p[2].value,
                true,
                &p[2].grad,
                &p[3].grad,
                Some(&dfb),
            );
            ops::channel_sum(gpu, bn0, &dfb, 1.0, 0.0, &p[1].grad);
            ops::conv2d_weight_grad(gpu, &cfg.in_conv(b), &dfb, &w.x, 1.0, 0.0, &p[0].grad);
        }
        gpu.flush();
        let backward_ms = t1.elapsed().as_secs_f64() * 1e3;
        let t2 = std::time::Instant::now();
        for p in &self.params {
            ops::sgd(gpu, &p.value, &p.grad, &p.momentum, lr, 0.9, 5e-4);
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

    pub fn rate(&self, gpu: &Gpu) -> Vec<f32> {
        self.work
            .as_ref()
            .map(|w| gpu.read(&w.layers.last().unwrap().acc))
            .unwrap_or_default()
    }

    fn state_tensors(&self) -> Vec<(String, &Tensor)> {
        let mut v = vec![
            ("bn.running_mean".to_string(), &self.running[0].0),
            ("bn.running_var".to_string(), &self.running[0].1),
        ];
        for l in 1..self.n_layers() {
            v.push((
                format!("layers.{}.bn.running_mean", l - 1),
                &self.running[l].0,
            ));
            v.push((
                format!("layers.{}.bn.running_var", l - 1),
                &self.running[l].1,
            ));
        }
        v.push(("fb.u".into(), &self.sn.u));
        v.push(("fb.v".into(), &self.sn.v));
        v
    }

    pub fn to_host(&self, gpu: &Gpu) -> HostState {
        host_state(gpu, &self.params, &self.state_tensors())
    }

    pub fn load_host(&mut self, gpu: &Gpu, state: &HostState, source: &str) -> Result<()> {
        load_state(gpu, &self.params, &self.state_tensors(), state, source)
    }
}

/// The BN mode of the layers inside the loop for one evaluation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum InnerBn {
    /// Running statistics as constants (evaluation mode).
    Running,
    /// Batch statistics (training mode) without touching the running ones.
    Batch,
    /// Batch statistics that also update the running ones (once per step).
    BatchUpdate,
}

/// The first `len` elements of `t`, as a tensor of their own (same buffer).
fn sub(t: &Tensor, len: usize) -> Tensor {
    assert!(len <= t.len());
    Tensor {
        buf: t.buf.clone(),
        shape: vec![len],
    }
}
