//! The f64 reference of any feedback spiking network a [`NetworkSpec`] describes: one model
//! for every description (one layer or many, linear / conv / transposed-conv feedback), so
//! that a GPU network built from the same description has a ground truth whatever its layers
//! are.
//!
//! Neuron layers `1..N` (0-based `0..N−1` in code), per sample, channel-major:
//!
//! ```text
//! x1        = m_x ⊙ F_1(x)                       F_1: layer 1's ops, its BNs in `input_bn` mode
//! W_eff     = clamp(g, −1, 1) · w_fb / σ̂,  σ̂ = uᵀ w_fb v   (rows = first dim of fb.weight)
//! z_1       = m_fb ⊙ FB(W_eff, a_N) + x1,        a_1     = σ(z_1 / vth)
//! z_{i+1}   = m_i ⊙ F_{i+1}(a_i),                a_{i+1} = σ(z_{i+1} / vth)
//! f(a_N)    = a_N computed from the given a_N by the lines above,   σ = clamp(·, 0, 1)
//! ```
//!
//! `F_i` is layer i's chain of [`OpSpec`]s (linear, conv, 2×2 average pooling, batch norm);
//! `FB` is the feedback (linear, conv or transposed conv). The BNs of `F_2 … F_N` run in the
//! [`BnMode`] given to [`Model::f`]; the recipe mixes the modes, in one of two adjoint forms
//! ([`AdjointForm`], see [`Model::loss_and_grads_paper`]).
//!
//! Weight layouts are PyTorch's and the spectral-norm matrix always has the weight's first
//! dimension as rows: linear feedback `[d_1, d_N]` (rows = output), conv `[C_1, C_N, k, k]`
//! (rows = output channels), transposed conv `[C_N, C_1, k, k]` (rows = input channels).
//!
//! Time-varying input (`input.time_varying`): a batch is `[T, n, input]` (the GPU's layout).
//! `f`, the fixed point and every gradient see the rate-weighted mean frame
//! `Σ_t λ^(T−1−t) x_t / Σ_k λ^k` (λ and T from the description); the simulation feeds frame
//! `t` at step `t` through `F_1` with its BNs normalising by the statistics of the mean frame's
//! pass (batch or running, per `input_bn`), so the per-step currents average to `x1`.
//!
//! Masks (`None` = all ones) are variational dropout, fixed per training step: `mask_x` and
//! `mask_fb` are `[n, d_1]`, `masks[i]` is `[n, d_{i+2}]` (after `layers.{i}`'s ops).

use super::adjoint::{self, SolveStats, Solver};
use super::bn::{bn_backward, bn_forward, BnCache, BN_EPS};
pub use super::bn::{BatchStats, BnMode, RunningStats};
use super::conv::{
    conv2d, conv2d_bias_grad, conv2d_input_grad, conv2d_weight_grad, conv_transpose2d,
    conv_transpose2d_input_grad, conv_transpose2d_weight_grad, ConvShape, ConvTransposeShape,
};
use super::dense::{
    axpy, dot, lu_solve, matvec, matvec_t, max_abs, norm, softmax_cross_entropy, sub, Rng,
};
use super::spectral;
pub use crate::model::spec::AdjointForm;
use crate::model::spec::{FeedbackSpec, NetworkSpec, OpSpec, ResolvedOp, Shape};

/// What [`Model::fixed_point`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedPointStats {
    /// Outer iterations (plain, Newton or damped steps).
    pub iterations: usize,
    /// Final `max |f(a) − a|`.
    pub residual: f64,
}

/// One named tensor (a parameter, or a gradient with a parameter's name and shape).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// PyTorch / checkpoint name, e.g. `layers.0.bn.weight`.
    pub name: String,
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f64>,
}

/// Every trainable tensor, in [`NetworkSpec::param_shapes`] order, so that a checkpoint or a
/// GPU model's host state maps onto it name by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// The tensors, in checkpoint order.
    pub tensors: Vec<Tensor>,
}

/// Gradients have the parameters' names, shapes and order.
pub type Grads = Params;

impl Params {
    /// All-zero tensors shaped by `spec`.
    pub fn zeros(spec: &NetworkSpec) -> Self {
        Params {
            tensors: spec
                .param_shapes()
                .into_iter()
                .map(|(name, shape)| Tensor {
                    data: vec![0.0; shape.iter().product()],
                    name,
                    shape,
                })
                .collect(),
        }
    }

    /// Position of the tensor `name`, if the description has it.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// The values of `name`; panics on a name the description does not have.
    pub fn get(&self, name: &str) -> &[f64] {
        let i = self
            .index(name)
            .unwrap_or_else(|| panic!("no parameter {name}"));
        &self.tensors[i].data
    }

    /// Mutable [`Params::get`].
    pub fn get_mut(&mut self, name: &str) -> &mut [f64] {
        let i = self
            .index(name)
            .unwrap_or_else(|| panic!("no parameter {name}"));
        &mut self.tensors[i].data
    }

    /// `(name, values)` of every tensor, in checkpoint order.
    pub fn named(&self) -> Vec<(&str, &[f64])> {
        self.tensors
            .iter()
            .map(|t| (t.name.as_str(), t.data.as_slice()))
            .collect()
    }

    /// Mutable [`Params::named`] (finite differences, optimiser steps).
    pub fn named_mut(&mut self) -> Vec<(&str, &mut [f64])> {
        self.tensors
            .iter_mut()
            .map(|t| (t.name.as_str(), t.data.as_mut_slice()))
            .collect()
    }

    /// Total number of scalars (the paper's parameter count).
    pub fn count(&self) -> usize {
        self.tensors.iter().map(|t| t.data.len()).sum()
    }
}

/// A resolved op with the indices of its tensors, looked up once so that evaluations do not
/// search by name.
#[derive(Clone, Debug)]
struct Op {
    r: ResolvedOp,
    /// Linear/conv weight, or BN γ.
    weight: Option<usize>,
    /// Linear/conv bias, or BN β.
    bias: Option<usize>,
    /// Index into [`Model::running`] for a BN.
    stats: Option<usize>,
}

/// The model: description, parameters, BN running statistics, spectral-norm vectors,
/// dropout masks.
#[derive(Clone, Debug)]
pub struct Model {
    /// The description the model was built from.
    pub spec: NetworkSpec,
    /// Firing threshold, from the description (a field so that tests may vary it).
    pub vth: f64,
    /// Trainable parameters, by name.
    pub params: Params,
    /// Running statistics of every BN, by its name prefix (`bn`, `layers.0.bn`, …), in
    /// description order. Layer 1's are used only when `input_bn` is `Running`.
    pub running: Vec<(String, RunningStats)>,
    /// `fb.u` (length = rows of the feedback matrix), constant for the gradient.
    pub fb_u: Vec<f64>,
    /// `fb.v` (length = columns), constant for the gradient.
    pub fb_v: Vec<f64>,
    /// Mode of the BNs in layer 1's chain: `Batch` in training (the default), `Running` in
    /// evaluation.
    pub input_bn: BnMode,
    /// Dropout on layer 1's input current, `[n, d_1]`.
    pub mask_x: Option<Vec<f64>>,
    /// Dropout on layer `i+2`'s input current (after `layers.{i}`'s ops), `[n, d_{i+2}]`.
    pub masks: Vec<Option<Vec<f64>>>,
    /// Dropout on the feedback current, `[n, d_1]`.
    pub mask_fb: Option<Vec<f64>>,
    ops: Vec<Vec<Op>>,
    shapes: Vec<Shape>,
}

/// The output of [`Model::loss_and_grads_paper`].
#[derive(Clone, Debug)]
pub struct PaperStep {
    /// Mean cross-entropy at `rate`.
    pub loss: f64,
    /// Gradients of every parameter, by name.
    pub grads: Grads,
    /// The β solve (against the Jacobian of the chosen [`AdjointForm`]).
    pub solve: SolveStats,
    /// Batch statistics of layer 1's BNs, by BN name (empty when `input_bn` is `Running`).
    pub bn_in: Vec<(String, BatchStats)>,
    /// Batch statistics of the BNs of layers 2..N in the gradient evaluation, by BN name:
    /// where their running statistics are updated.
    pub layers_bn: Vec<(String, BatchStats)>,
}

/// What a chain of ops kept for its backward pass: each op's input and each BN's cache.
#[derive(Clone, Debug)]
struct ChainCache {
    inputs: Vec<Vec<f64>>,
    bn: Vec<Option<BnCache>>,
}

/// Which statistics the BNs of a chain normalise with.
#[derive(Clone, Copy)]
enum Norm<'a> {
    Mode(BnMode),
    /// The statistics another pass of the same chain used, as constants (the per-frame
    /// input of time-varying data).
    Fixed(&'a ChainCache),
}

/// The `a_N`-independent part of `f` for one batch.
struct Prepared {
    n: usize,
    x1: Vec<f64>,
    chain0: ChainCache,
    w_eff: Vec<f64>,
    sigma: f64,
}

/// One evaluation of `f`: per layer the σ argument `z/vth` and the activation, and the
/// chain caches of layers 2..N.
struct Eval {
    mode: BnMode,
    zv: Vec<Vec<f64>>,
    act: Vec<Vec<f64>>,
    chains: Vec<ChainCache>,
}

fn mask_at(mask: &Option<Vec<f64>>, i: usize) -> f64 {
    mask.as_ref().map_or(1.0, |m| m[i])
}

fn apply_mask(mask: &Option<Vec<f64>>, v: &mut [f64]) {
    for (i, x) in v.iter_mut().enumerate() {
        *x *= mask_at(mask, i);
    }
}

fn sigma_on(zv: f64) -> bool {
    zv > 0.0 && zv < 1.0
}

fn chw(s: Shape) -> (usize, usize, usize) {
    match s {
        Shape::Chw(c, h, w) => (c, h, w),
        Shape::Flat(_) => panic!("{s} is flat where [C, H, W] is needed"),
    }
}

fn conv_shape(
    n: usize,
    input: Shape,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> ConvShape {
    let (cin, h, w) = chw(input);
    ConvShape {
        n,
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

/// `y = W x + b` per sample, `W` `[out, inp]` (an NCHW input is read flattened).
fn linear_forward(inp: usize, out: usize, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    x.chunks(inp)
        .flat_map(|xs| {
            let mut y = matvec(w, out, inp, xs);
            if let Some(b) = b {
                y.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
            y
        })
        .collect()
}

/// `Wᵀ g` per sample.
fn linear_input_grad(inp: usize, out: usize, w: &[f64], g: &[f64]) -> Vec<f64> {
    g.chunks(out)
        .flat_map(|s| matvec_t(w, out, inp, s))
        .collect()
}

/// `Σ_n g_n x_nᵀ`, `[out, inp]`.
fn linear_weight_grad(inp: usize, out: usize, x: &[f64], g: &[f64]) -> Vec<f64> {
    let mut gw = vec![0.0; out * inp];
    for (gs, xs) in g.chunks(out).zip(x.chunks(inp)) {
        for (o, go) in gs.iter().enumerate() {
            axpy(*go, xs, &mut gw[o * inp..(o + 1) * inp]);
        }
    }
    gw
}

/// Average pooling over non-overlapping `k × k` windows; rows and columns past the last
/// whole window are dropped (floor, as PyTorch's `AvgPool2d`).
fn avgpool_forward(input: Shape, k: usize, x: &[f64]) -> Vec<f64> {
    let (c, h, w) = chw(input);
    let (oh, ow) = (h / k, w / k);
    let planes = x.len() / (h * w);
    debug_assert_eq!(planes % c, 0);
    let scale = 1.0 / (k * k) as f64;
    let mut y = vec![0.0; planes * oh * ow];
    for p in 0..planes {
        let xp = &x[p * h * w..(p + 1) * h * w];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = 0.0;
                for ky in 0..k {
                    for kx in 0..k {
                        s += xp[(oy * k + ky) * w + ox * k + kx];
                    }
                }
                y[(p * oh + oy) * ow + ox] = s * scale;
            }
        }
    }
    y
}

/// The VJP of [`avgpool_forward`]: each window's input gets `g/k²`; the dropped border 0.
fn avgpool_backward(input: Shape, k: usize, g: &[f64]) -> Vec<f64> {
    let (_, h, w) = chw(input);
    let (oh, ow) = (h / k, w / k);
    let planes = g.len() / (oh * ow);
    let scale = 1.0 / (k * k) as f64;
    let mut gx = vec![0.0; planes * h * w];
    for p in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let v = g[(p * oh + oy) * ow + ox] * scale;
                for ky in 0..k {
                    for kx in 0..k {
                        gx[(p * h + oy * k + ky) * w + ox * k + kx] += v;
                    }
                }
            }
        }
    }
    gx
}

/// BN with given per-channel statistics as constants (eval mode); the cache holds them so
/// that [`bn_back`] needs only the mode.
fn bn_const(
    x: &[f64],
    c: usize,
    spatial: usize,
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    var: &[f64],
) -> (Vec<f64>, BnCache) {
    let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()).collect();
    let mut xhat = vec![0.0; x.len()];
    let mut y = vec![0.0; x.len()];
    for i in 0..x.len() {
        let ch = (i / spatial) % c;
        xhat[i] = (x[i] - mean[ch]) * inv_std[ch];
        y[i] = gamma[ch] * xhat[i] + beta[ch];
    }
    let cache = BnCache {
        xhat,
        inv_std,
        mean: mean.to_vec(),
        var: var.to_vec(),
    };
    (y, cache)
}

/// `(∂L/∂x, ∂L/∂γ, ∂L/∂β)`; in `Running` mode the statistics are constants, so the input
/// gradient is a per-channel scaling that does not couple the samples.
fn bn_back(
    mode: BnMode,
    gy: &[f64],
    n: usize,
    c: usize,
    spatial: usize,
    gamma: &[f64],
    cache: &BnCache,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    match mode {
        BnMode::Batch => bn_backward(gy, n, c, spatial, gamma, cache),
        BnMode::Running => {
            let mut gg = vec![0.0; c];
            let mut gb = vec![0.0; c];
            let mut gx = vec![0.0; gy.len()];
            for i in 0..gy.len() {
                let ch = (i / spatial) % c;
                gb[ch] += gy[i];
                gg[ch] += gy[i] * cache.xhat[i];
                gx[i] = gy[i] * gamma[ch] * cache.inv_std[ch];
            }
            (gx, gg, gb)
        }
    }
}

/// Scales each row of a row-major `rows × cols` matrix to unit L2 norm.
fn unit_rows(w: &mut [f64], cols: usize) {
    for row in w.chunks_mut(cols) {
        let n = norm(row);
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v /= n);
        }
    }
}

/// Scales each output channel's slice `w[:, o]` of a transposed convolution's weight
/// `[cin, cout, kk]` to unit L2 norm.
fn unit_output_channels(w: &mut [f64], cin: usize, cout: usize, kk: usize) {
    for o in 0..cout {
        let idx = |i: usize, t: usize| (i * cout + o) * kk + t;
        let mut n2 = 0.0;
        for i in 0..cin {
            for t in 0..kk {
                n2 += w[idx(i, t)] * w[idx(i, t)];
            }
        }
        let n = n2.sqrt();
        if n > 0.0 {
            for i in 0..cin {
                for t in 0..kk {
                    w[idx(i, t)] /= n;
                }
            }
        }
    }
}

impl Model {
    /// The authors' initialisation **\[ref\]** (drawing in the order of the hand-written
    /// single- and multi-layer references this model replaced, so that their seeds give the
    /// same numbers): every linear/conv weight
    /// U(−1, 1) with unit-norm output rows, in checkpoint order; biases 0, γ = 1, β = 0;
    /// the feedback weight U(−1, 1), unit-norm rows (linear, conv) or per output channel
    /// (transposed conv); classifier U(±1/√d_N); `fb.scale`, `fb.u`, `fb.v` as
    /// [`spectral::init_authors`]; running mean 0 / var 1; no masks.
    pub fn init(spec: &NetworkSpec, seed: u64) -> Self {
        let mut m = Self::zeros(spec);
        let mut rng = Rng::new(seed);
        for layer in m.ops.clone() {
            for op in layer {
                match op.r.op {
                    OpSpec::Linear { out, .. } | OpSpec::Conv { out, .. } => {
                        let w = &mut m.params.tensors[op.weight.expect("a weight")].data;
                        *w = rng.vec_range(w.len(), -1.0, 1.0);
                        let cols = w.len() / out;
                        unit_rows(w, cols);
                    }
                    OpSpec::BatchNorm {} => {
                        m.params.tensors[op.weight.expect("γ")].data.fill(1.0);
                    }
                    OpSpec::AvgPool { .. } => {}
                }
            }
        }
        let (r, c) = m.fb_matrix_shape();
        let mut w = rng.vec_range(r * c, -1.0, 1.0);
        match spec.feedback {
            FeedbackSpec::ConvTranspose { k, .. } => {
                let c1 = m.shapes[0].channels();
                unit_output_channels(&mut w, r, c1, k * k);
            }
            _ => unit_rows(&mut w, c),
        }
        let d = m.out_dim();
        let bound = 1.0 / (d as f64).sqrt();
        let cw = rng.vec_range(spec.classes * d, -bound, bound);
        let cb = rng.vec_range(spec.classes, -bound, bound);
        let (u, v, scale) = spectral::init_authors(&mut rng, &w, r, c);
        m.params.get_mut("fb.weight").copy_from_slice(&w);
        m.params.get_mut("fb.scale")[0] = scale;
        m.params.get_mut("classifier.weight").copy_from_slice(&cw);
        m.params.get_mut("classifier.bias").copy_from_slice(&cb);
        m.fb_u = u;
        m.fb_v = v;
        m
    }

    /// All parameters 0, running mean 0 / var 1, `fb.u`, `fb.v` 0 (to be loaded).
    pub fn zeros(spec: &NetworkSpec) -> Self {
        spec.validate().expect("a valid network description");
        let params = Params::zeros(spec);
        let resolved = spec.resolve();
        let shapes = spec.layer_shapes();
        let mut running = Vec::new();
        let ops = resolved
            .into_iter()
            .map(|layer| {
                layer
                    .into_iter()
                    .map(|r| {
                        let idx = |suffix: &str| params.index(&format!("{}.{suffix}", r.name));
                        let (weight, bias, stats) = match r.op {
                            OpSpec::Linear { .. } | OpSpec::Conv { .. } => {
                                (idx("weight"), idx("bias"), None)
                            }
                            OpSpec::BatchNorm {} => {
                                let c = r.input.channels();
                                running.push((r.name.clone(), RunningStats::fresh(c)));
                                (idx("weight"), idx("bias"), Some(running.len() - 1))
                            }
                            OpSpec::AvgPool { .. } => (None, None, None),
                        };
                        Op {
                            r,
                            weight,
                            bias,
                            stats,
                        }
                    })
                    .collect()
            })
            .collect();
        let fb = spec.feedback_weight_shape();
        let (r, c) = (fb[0], fb[1..].iter().product());
        Model {
            vth: f64::from(spec.neuron.vth),
            params,
            running,
            fb_u: vec![0.0; r],
            fb_v: vec![0.0; c],
            input_bn: BnMode::Batch,
            mask_x: None,
            masks: vec![None; shapes.len() - 1],
            mask_fb: None,
            ops,
            shapes,
            spec: spec.clone(),
        }
    }

    /// Spiking layers N.
    pub fn depth(&self) -> usize {
        self.shapes.len()
    }

    /// Neuron shape of every layer.
    pub fn layer_shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// Neurons per sample in each layer.
    pub fn dims(&self) -> Vec<usize> {
        self.shapes.iter().map(Shape::len).collect()
    }

    /// Neurons per sample of layer N: the fixed-point variable and the classifier's input.
    pub fn out_dim(&self) -> usize {
        self.shapes.last().expect("a layer").len()
    }

    /// Values of one input frame per sample.
    pub fn in_dim(&self) -> usize {
        self.spec.input_len()
    }

    /// The feedback weight as the spectral-norm matrix: (first dimension, the rest).
    pub fn fb_matrix_shape(&self) -> (usize, usize) {
        (self.fb_u.len(), self.fb_v.len())
    }

    /// `(name, shape)` of the non-trainable state, in [`Model::buffers_mut`] order: every
    /// BN's `running_mean` and `running_var`, then `fb.u`, `fb.v`.
    pub fn buffer_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for (name, r) in &self.running {
            out.push((format!("{name}.running_mean"), vec![r.mean.len()]));
            out.push((format!("{name}.running_var"), vec![r.var.len()]));
        }
        out.push(("fb.u".into(), vec![self.fb_u.len()]));
        out.push(("fb.v".into(), vec![self.fb_v.len()]));
        out
    }

    /// `(name, values)` of the non-trainable state, in [`Model::buffer_shapes`] order.
    pub fn buffers_mut(&mut self) -> Vec<(String, &mut [f64])> {
        buffer_slots(&mut self.running, &mut self.fb_u, &mut self.fb_v)
    }

    /// Sets the parameter or state tensor `name` (a PyTorch / checkpoint name) from f32
    /// values, as a GPU model's host state holds them; errors on an unknown name or a wrong
    /// length.
    pub fn load_f32(&mut self, name: &str, values: &[f32]) -> Result<(), String> {
        let mut slots: Vec<(String, &mut [f64])> = self
            .params
            .tensors
            .iter_mut()
            .map(|t| (t.name.clone(), t.data.as_mut_slice()))
            .collect();
        slots.extend(buffer_slots(
            &mut self.running,
            &mut self.fb_u,
            &mut self.fb_v,
        ));
        let (_, slot) = slots
            .into_iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("unknown tensor {name}"))?;
        if slot.len() != values.len() {
            return Err(format!(
                "{name}: expected {} values, got {}",
                slot.len(),
                values.len()
            ));
        }
        for (s, v) in slot.iter_mut().zip(values) {
            *s = f64::from(*v);
        }
        Ok(())
    }

    /// One power-iteration step from the current `fb.u` (once per forward pass, training or
    /// evaluation, before the simulation, as the authors' spectral norm does).
    pub fn refresh_spectral(&mut self) {
        let (r, c) = self.fb_matrix_shape();
        (self.fb_u, self.fb_v) =
            spectral::power_step(self.params.get("fb.weight"), r, c, &self.fb_u);
    }

    /// `(W_eff, σ̂)`.
    pub fn effective_feedback_weight(&self) -> (Vec<f64>, f64) {
        let (r, c) = self.fb_matrix_shape();
        let p = &self.params;
        spectral::effective_weight(
            p.get("fb.weight"),
            r,
            c,
            p.get("fb.scale")[0],
            &self.fb_u,
            &self.fb_v,
        )
    }

    /// Values one sample carries in a batch: T frames for time-varying input.
    fn sample_len(&self) -> usize {
        self.spec.sample_len()
    }

    /// Batch size of an input batch `x` (`[n, input]`, or `[T, n, input]` for time-varying
    /// input).
    pub fn batch_size(&self, x: &[f64]) -> usize {
        let k = self.sample_len();
        assert_eq!(
            x.len() % k,
            0,
            "input length is not a multiple of the sample length"
        );
        x.len() / k
    }

    /// Weight of frame `t` in the mean frame (and of step t's spikes in the rate):
    /// `λ^(T−1−t) / Σ_k λ^k` with the description's λ and T.
    pub fn frame_weight(&self, t: usize) -> f64 {
        let steps = self.spec.neuron.time_steps;
        let leak = f64::from(self.spec.neuron.leak);
        let total: f64 = (0..steps).map(|k| leak.powi(k as i32)).sum();
        leak.powi((steps - 1 - t) as i32) / total
    }

    /// The rate-weighted mean frame `[n, input]` of a time-varying batch `[T, n, input]`.
    pub fn mean_frame(&self, x: &[f64]) -> Vec<f64> {
        let len = x.len() / self.spec.neuron.time_steps;
        let mut mean = vec![0.0; len];
        for (t, frame) in x.chunks(len).enumerate() {
            axpy(self.frame_weight(t), frame, &mut mean);
        }
        mean
    }

    fn check_masks(&self, n: usize) {
        let dims = self.dims();
        assert_eq!(self.masks.len(), dims.len() - 1, "one mask per inner layer");
        for m in [&self.mask_x, &self.mask_fb].into_iter().flatten() {
            assert_eq!(m.len(), n * dims[0], "mask_x / mask_fb must be [n, d_1]");
        }
        for (i, m) in self.masks.iter().enumerate() {
            if let Some(m) = m {
                assert_eq!(
                    m.len(),
                    n * dims[i + 1],
                    "masks[{i}] must be [n, d_{}]",
                    i + 2
                );
            }
        }
    }

    fn param(&self, i: Option<usize>) -> &[f64] {
        &self.params.tensors[i.expect("op has this tensor")].data
    }

    /// Layer `layer`'s chain of ops on `x` (`[n, input of the chain]`), before the mask.
    fn chain_forward(
        &self,
        layer: usize,
        n: usize,
        x: &[f64],
        norm: Norm,
    ) -> (Vec<f64>, ChainCache) {
        let ops = &self.ops[layer];
        let mut cache = ChainCache {
            inputs: Vec::with_capacity(ops.len()),
            bn: Vec::with_capacity(ops.len()),
        };
        let mut cur = x.to_vec();
        for (k, op) in ops.iter().enumerate() {
            let (inp, out) = (op.r.input, op.r.output);
            let bias = op.bias.map(|_| self.param(op.bias));
            let (y, bn) = match op.r.op {
                OpSpec::Linear { out: o, .. } => (
                    linear_forward(inp.len(), o, &cur, self.param(op.weight), bias),
                    None,
                ),
                OpSpec::Conv {
                    out: o,
                    k: kk,
                    stride,
                    pad,
                    ..
                } => (
                    conv2d(
                        &conv_shape(n, inp, o, kk, stride, pad),
                        &cur,
                        self.param(op.weight),
                        bias,
                    ),
                    None,
                ),
                OpSpec::AvgPool { k: kk } => (avgpool_forward(inp, kk, &cur), None),
                OpSpec::BatchNorm {} => {
                    let (c, hw) = (inp.channels(), inp.hw());
                    let (g, b) = (self.param(op.weight), self.param(op.bias));
                    let (y, bc) = match norm {
                        Norm::Mode(BnMode::Batch) => bn_forward(&cur, n, c, hw, g, b),
                        Norm::Mode(BnMode::Running) => {
                            let r = &self.running[op.stats.expect("BN stats")].1;
                            bn_const(&cur, c, hw, g, b, &r.mean, &r.var)
                        }
                        Norm::Fixed(other) => {
                            let o = other.bn[k].as_ref().expect("the same chain");
                            bn_const(&cur, c, hw, g, b, &o.mean, &o.var)
                        }
                    };
                    (y, Some(bc))
                }
            };
            debug_assert_eq!(y.len(), n * out.len());
            cache.inputs.push(std::mem::replace(&mut cur, y));
            cache.bn.push(bn);
        }
        (cur, cache)
    }

    /// Backpropagates `g` (a cotangent of the chain's output) through layer `layer`'s chain;
    /// writes the parameter gradients into `grads` when given, and returns the input
    /// gradient (empty when `need_input` is false: layer 1's input is data).
    #[allow(clippy::too_many_arguments)]
    fn chain_backward(
        &self,
        layer: usize,
        n: usize,
        cache: &ChainCache,
        mode: BnMode,
        mut g: Vec<f64>,
        mut grads: Option<&mut Params>,
        need_input: bool,
    ) -> Vec<f64> {
        for (k, op) in self.ops[layer].iter().enumerate().rev() {
            let inp = op.r.input;
            let x = &cache.inputs[k];
            let input_needed = k > 0 || need_input;
            match op.r.op {
                OpSpec::Linear { out, bias } => {
                    let il = inp.len();
                    if let Some(gr) = grads.as_deref_mut() {
                        gr.tensors[op.weight.unwrap()].data = linear_weight_grad(il, out, x, &g);
                        if bias {
                            let mut gb = vec![0.0; out];
                            for gs in g.chunks(out) {
                                axpy(1.0, gs, &mut gb);
                            }
                            gr.tensors[op.bias.unwrap()].data = gb;
                        }
                    }
                    g = if input_needed {
                        linear_input_grad(il, out, self.param(op.weight), &g)
                    } else {
                        Vec::new()
                    };
                }
                OpSpec::Conv {
                    out,
                    k: kk,
                    stride,
                    pad,
                    bias,
                } => {
                    let s = conv_shape(n, inp, out, kk, stride, pad);
                    if let Some(gr) = grads.as_deref_mut() {
                        gr.tensors[op.weight.unwrap()].data = conv2d_weight_grad(&s, x, &g);
                        if bias {
                            gr.tensors[op.bias.unwrap()].data = conv2d_bias_grad(&s, &g);
                        }
                    }
                    g = if input_needed {
                        conv2d_input_grad(&s, self.param(op.weight), &g)
                    } else {
                        Vec::new()
                    };
                }
                OpSpec::AvgPool { k: kk } => g = avgpool_backward(inp, kk, &g),
                OpSpec::BatchNorm {} => {
                    let (c, hw) = (inp.channels(), inp.hw());
                    let bc = cache.bn[k].as_ref().expect("BN cache");
                    let (gx, gg, gb) = bn_back(mode, &g, n, c, hw, self.param(op.weight), bc);
                    if let Some(gr) = grads.as_deref_mut() {
                        gr.tensors[op.weight.unwrap()].data = gg;
                        gr.tensors[op.bias.unwrap()].data = gb;
                    }
                    g = gx;
                }
            }
        }
        g
    }

    fn prepare(&self, x: &[f64]) -> Prepared {
        let n = self.batch_size(x);
        self.check_masks(n);
        let x_in = if self.spec.input.time_varying {
            self.mean_frame(x)
        } else {
            x.to_vec()
        };
        let (mut x1, chain0) = self.chain_forward(0, n, &x_in, Norm::Mode(self.input_bn));
        apply_mask(&self.mask_x, &mut x1);
        let (w_eff, sigma) = self.effective_feedback_weight();
        Prepared {
            n,
            x1,
            chain0,
            w_eff,
            sigma,
        }
    }

    /// The feedback product `FB(W, a_N)`, unmasked.
    fn fb_forward(&self, n: usize, w: &[f64], a: &[f64]) -> Vec<f64> {
        match self.spec.feedback {
            FeedbackSpec::Linear {} => {
                let (d1, dn) = (self.shapes[0].len(), self.out_dim());
                a.chunks(dn).flat_map(|s| matvec(w, d1, dn, s)).collect()
            }
            FeedbackSpec::Conv { .. } => conv2d(&self.fb_conv(n), a, w, None),
            FeedbackSpec::ConvTranspose { .. } => conv_transpose2d(&self.fb_conv_t(n), a, w, None),
        }
    }

    /// `FBᵀ g`: the VJP of the feedback with respect to `a_N`.
    fn fb_transpose(&self, n: usize, w: &[f64], g: &[f64]) -> Vec<f64> {
        match self.spec.feedback {
            FeedbackSpec::Linear {} => {
                let (d1, dn) = (self.shapes[0].len(), self.out_dim());
                g.chunks(d1).flat_map(|s| matvec_t(w, d1, dn, s)).collect()
            }
            FeedbackSpec::Conv { .. } => conv2d_input_grad(&self.fb_conv(n), w, g),
            FeedbackSpec::ConvTranspose { .. } => {
                conv_transpose2d_input_grad(&self.fb_conv_t(n), w, g)
            }
        }
    }

    /// `∂L/∂W` of the feedback given `g = ∂L/∂FB(W, a)`, summed over the batch.
    fn fb_weight_grad(&self, n: usize, a: &[f64], g: &[f64]) -> Vec<f64> {
        match self.spec.feedback {
            FeedbackSpec::Linear {} => {
                linear_weight_grad(self.out_dim(), self.shapes[0].len(), a, g)
            }
            FeedbackSpec::Conv { .. } => conv2d_weight_grad(&self.fb_conv(n), a, g),
            FeedbackSpec::ConvTranspose { .. } => {
                conv_transpose2d_weight_grad(&self.fb_conv_t(n), a, g)
            }
        }
    }

    fn fb_conv(&self, n: usize) -> ConvShape {
        let FeedbackSpec::Conv { k, stride, pad } = self.spec.feedback else {
            unreachable!("conv feedback")
        };
        conv_shape(
            n,
            *self.shapes.last().unwrap(),
            self.shapes[0].channels(),
            k,
            stride,
            pad,
        )
    }

    fn fb_conv_t(&self, n: usize) -> ConvTransposeShape {
        let FeedbackSpec::ConvTranspose {
            k,
            stride,
            pad,
            output_pad,
        } = self.spec.feedback
        else {
            unreachable!("transposed-conv feedback")
        };
        let (cn, h, w) = chw(*self.shapes.last().unwrap());
        ConvTransposeShape {
            n,
            cin: cn,
            h,
            w,
            cout: self.shapes[0].channels(),
            kh: k,
            kw: k,
            stride,
            pad,
            output_padding: output_pad,
        }
    }

    /// `m_fb ⊙ FB(W_eff, a_N)`.
    fn feedback(&self, p: &Prepared, a_n: &[f64]) -> Vec<f64> {
        let mut h = self.fb_forward(p.n, &p.w_eff, a_n);
        apply_mask(&self.mask_fb, &mut h);
        h
    }

    /// `m_i ⊙ F_{i+2}(a)`: the input current of 0-based layer `i + 1`.
    fn layer_current(&self, i: usize, n: usize, a: &[f64], mode: BnMode) -> (Vec<f64>, ChainCache) {
        let (mut y, cache) = self.chain_forward(i + 1, n, a, Norm::Mode(mode));
        apply_mask(&self.masks[i], &mut y);
        (y, cache)
    }

    fn eval(&self, p: &Prepared, a_n: &[f64], mode: BnMode) -> Eval {
        let vth = self.vth;
        let clamp = |zv: &[f64]| zv.iter().map(|v| v.clamp(0.0, 1.0)).collect::<Vec<f64>>();
        let fb = self.feedback(p, a_n);
        let zv0: Vec<f64> = fb.iter().zip(&p.x1).map(|(h, x)| (h + x) / vth).collect();
        let mut act = vec![clamp(&zv0)];
        let mut zv = vec![zv0];
        let mut chains = Vec::with_capacity(self.depth() - 1);
        for i in 0..self.depth() - 1 {
            let (y, cache) = self.layer_current(i, p.n, &act[i], mode);
            let z: Vec<f64> = y.iter().map(|v| v / vth).collect();
            act.push(clamp(&z));
            zv.push(z);
            chains.push(cache);
        }
        Eval {
            mode,
            zv,
            act,
            chains,
        }
    }

    /// Backpropagates `β` (a cotangent of `f`'s output) through the evaluation `ev` at `a_n`.
    /// Returns `J_fᵀβ`, and when `params` is set also `(∂f/∂θ)ᵀβ` for every parameter of `f`
    /// (classifier entries 0).
    fn backward(
        &self,
        p: &Prepared,
        ev: &Eval,
        a_n: &[f64],
        beta: &[f64],
        params: bool,
    ) -> (Vec<f64>, Option<Grads>) {
        let vth = self.vth;
        let n = p.n;
        let mut grads = params.then(|| Params::zeros(&self.spec));
        let through_sigma = |g: &[f64], zv: &[f64]| -> Vec<f64> {
            g.iter()
                .zip(zv)
                .map(|(g, &z)| if sigma_on(z) { g / vth } else { 0.0 })
                .collect()
        };
        let mut g = beta.to_vec();
        for i in (0..self.depth() - 1).rev() {
            let gz = through_sigma(&g, &ev.zv[i + 1]);
            let gy: Vec<f64> = gz
                .iter()
                .enumerate()
                .map(|(k, v)| v * mask_at(&self.masks[i], k))
                .collect();
            g = self.chain_backward(i + 1, n, &ev.chains[i], ev.mode, gy, grads.as_mut(), true);
        }
        let gz1 = through_sigma(&g, &ev.zv[0]);
        let gh: Vec<f64> = gz1
            .iter()
            .enumerate()
            .map(|(k, v)| v * mask_at(&self.mask_fb, k))
            .collect();
        let jt_beta = self.fb_transpose(n, &p.w_eff, &gh);
        if let Some(gr) = grads.as_mut() {
            let gx1: Vec<f64> = gz1
                .iter()
                .enumerate()
                .map(|(k, v)| v * mask_at(&self.mask_x, k))
                .collect();
            self.chain_backward(0, n, &p.chain0, self.input_bn, gx1, Some(gr), false);
            let g_weff = self.fb_weight_grad(n, a_n, &gh);
            let (_, cols) = self.fb_matrix_shape();
            let (gw, gs) = spectral::backward(
                self.params.get("fb.weight"),
                cols,
                self.params.get("fb.scale")[0],
                &self.fb_u,
                &self.fb_v,
                p.sigma,
                &g_weff,
            );
            gr.get_mut("fb.weight").copy_from_slice(&gw);
            gr.get_mut("fb.scale")[0] = gs;
        }
        (jt_beta, grads)
    }

    /// `f(a_N)` for the batch `x` with the BNs of layers 2..N in `mode`.
    pub fn f(&self, x: &[f64], a_n: &[f64], mode: BnMode) -> Vec<f64> {
        let p = self.prepare(x);
        let mut ev = self.eval(&p, a_n, mode);
        ev.act.pop().expect("at least one layer")
    }

    /// Every layer's `z/vth` (σ's argument) in `f(a_N)`, for checking the regime.
    pub fn preactivations(&self, x: &[f64], a_n: &[f64], mode: BnMode) -> Vec<Vec<f64>> {
        self.eval(&self.prepare(x), a_n, mode).zv
    }

    /// `‖f(rate) − rate‖ / ‖rate‖` over the batch.
    pub fn fixed_point_residual(&self, x: &[f64], rate: &[f64], mode: BnMode) -> f64 {
        norm(&sub(&self.f(x, rate, mode), rate)) / norm(rate)
    }

    /// Layer 1's masked input current at each step of the simulation: `x1` every step for
    /// constant input; for time-varying input frame t through layer 1's chain with the BN
    /// statistics of the mean frame's pass.
    fn step_currents(&self, p: &Prepared, x: &[f64], steps: usize) -> Vec<Vec<f64>> {
        if !self.spec.input.time_varying {
            return vec![p.x1.clone(); steps];
        }
        assert_eq!(
            steps, self.spec.neuron.time_steps,
            "time-varying input carries one frame per step"
        );
        let len = p.n * self.in_dim();
        x.chunks(len)
            .map(|frame| {
                let (mut y, _) = self.chain_forward(0, p.n, frame, Norm::Fixed(&p.chain0));
                apply_mask(&self.mask_x, &mut y);
                y
            })
            .collect()
    }

    /// The forward simulation of ALGORITHM.md §1 for `steps` steps (IF: `leak = 1`); the BNs
    /// of layers 2..N use the running statistics **\[ref\]**, layer 1's use `input_bn`.
    /// Returns every layer's rate `[n, d_i]`; the last is `rate_N`.
    ///
    /// Spikes fire when `u ≥ vth`, reset by subtraction, then leak. Layer 1 integrates its
    /// input current plus the feedback of layer N's spikes of the previous step; layer `i+1`
    /// integrates the current driven by layer `i`'s spikes of the same step. Time-varying
    /// input needs `steps = T` (one frame per step).
    pub fn forward_sim(&self, x: &[f64], steps: usize, leak: f64) -> Vec<Vec<f64>> {
        assert!(steps > 0);
        let p = self.prepare(x);
        let currents = self.step_currents(&p, x, steps);
        let vth = self.vth;
        let big_n = self.depth();
        let dims = self.dims();
        let mut u: Vec<Vec<f64>> = dims.iter().map(|d| vec![0.0; p.n * d]).collect();
        let mut s = u.clone();
        let mut acc = u.clone();
        let integrate = |u: &mut [f64], s: &mut [f64], acc: &mut [f64], cur: &[f64]| {
            for i in 0..u.len() {
                u[i] += cur[i];
                s[i] = if u[i] >= vth { 1.0 } else { 0.0 };
                u[i] = leak * (u[i] - vth * s[i]);
                acc[i] = leak * acc[i] + s[i];
            }
        };
        for (t, x1) in currents.iter().enumerate() {
            let mut cur = x1.clone();
            // At t = 0 layer N has not spiked yet; skipping the product keeps that exact.
            if t > 0 {
                let fb = self.feedback(&p, &s[big_n - 1]);
                cur.iter_mut().zip(&fb).for_each(|(c, f)| *c += f);
            }
            integrate(&mut u[0], &mut s[0], &mut acc[0], &cur);
            for i in 0..big_n - 1 {
                let (cur, _) = self.layer_current(i, p.n, &s[i], BnMode::Running);
                integrate(&mut u[i + 1], &mut s[i + 1], &mut acc[i + 1], &cur);
            }
        }
        let denom: f64 = (0..steps).map(|k| leak.powi(k as i32)).sum();
        acc.into_iter()
            .map(|a| a.into_iter().map(|v| v / denom).collect())
            .collect()
    }

    /// How the adjoint system splits: one system per sample, unless batch statistics inside
    /// the loop couple the samples, in which case one system over the whole batch.
    fn systems(&self, n: usize, mode: BnMode) -> (usize, usize) {
        let d = self.out_dim();
        let inner_bn = self.ops[1..]
            .iter()
            .flatten()
            .any(|o| matches!(o.r.op, OpSpec::BatchNorm {}));
        if mode == BnMode::Batch && inner_bn {
            (1, n * d)
        } else {
            (n, d)
        }
    }

    /// `J_f` at `a` for each independent system (see [`Model::systems`]), dense row-major,
    /// assembled from `J_fᵀ` products with unit vectors.
    fn jacobians(&self, p: &Prepared, ev: &Eval, a: &[f64]) -> Vec<Vec<f64>> {
        let (sys, dim) = self.systems(p.n, ev.mode);
        let mut jac = vec![vec![0.0; dim * dim]; sys];
        let mut e = vec![0.0; sys * dim];
        for j in 0..dim {
            for s in 0..sys {
                e[s * dim + j] = 1.0;
            }
            // Row j of J_f (= column j of J_fᵀ) of every system.
            let (col, _) = self.backward(p, ev, a, &e, false);
            for s in 0..sys {
                e[s * dim + j] = 0.0;
                jac[s][j * dim..(j + 1) * dim].copy_from_slice(&col[s * dim..(s + 1) * dim]);
            }
        }
        jac
    }

    /// Solves `a_N = f(a_N)` with the inner BNs in `mode` to `max |f(a) − a| ≤ tol` (test
    /// ground truth, not the method's solver), from `f(0)`.
    pub fn fixed_point(&self, x: &[f64], tol: f64, mode: BnMode) -> (Vec<f64>, FixedPointStats) {
        let p = self.prepare(x);
        let start = self.eval(&p, &vec![0.0; p.n * self.out_dim()], mode);
        let a0 = start.act.last().expect("at least one layer").clone();
        self.fixed_point_prepared(&p, a0, tol, mode)
    }

    /// [`Model::fixed_point`] from a given start (finite differences restart from the
    /// unperturbed solution, which makes each solve a few cheap steps).
    pub fn fixed_point_from(
        &self,
        x: &[f64],
        a0: &[f64],
        tol: f64,
        mode: BnMode,
    ) -> (Vec<f64>, FixedPointStats) {
        self.fixed_point_prepared(&self.prepare(x), a0.to_vec(), tol, mode)
    }

    /// Each iteration takes the plain step `a ← f(a)` if it at least halves the residual;
    /// otherwise a Newton step with the dense Jacobian (exact for piecewise-linear `f` once
    /// the active set is right), and if that does not help either, the damped step
    /// `a ← ½a + ½f(a)`. Panics after 500 iterations.
    fn fixed_point_prepared(
        &self,
        p: &Prepared,
        mut a: Vec<f64>,
        tol: f64,
        mode: BnMode,
    ) -> (Vec<f64>, FixedPointStats) {
        let f = |a: &[f64]| self.eval(p, a, mode).act.pop().expect("a layer");
        let (_, dim) = self.systems(p.n, mode);
        let mut fa = f(&a);
        for it in 0..500 {
            let r = sub(&fa, &a);
            let res = max_abs(&r);
            if res <= tol {
                let stats = FixedPointStats {
                    iterations: it,
                    residual: res,
                };
                return (a, stats);
            }
            let f_next = f(&fa);
            if max_abs(&sub(&f_next, &fa)) <= 0.5 * res {
                a = fa;
                fa = f_next;
                continue;
            }
            let ev = self.eval(p, &a, mode);
            let jac = self.jacobians(p, &ev, &a);
            let mut cand = a.clone();
            let mut ok = true;
            for (s, js) in jac.iter().enumerate() {
                let mut m: Vec<f64> = js.iter().map(|v| -v).collect();
                (0..dim).for_each(|i| m[i * dim + i] += 1.0);
                match lu_solve(&m, dim, &r[s * dim..(s + 1) * dim]) {
                    Some(delta) => (0..dim).for_each(|i| cand[s * dim + i] += delta[i]),
                    None => ok = false,
                }
            }
            let f_cand = f(&cand);
            if ok && max_abs(&sub(&f_cand, &cand)) < res {
                a = cand;
                fa = f_cand;
            } else {
                a.iter_mut().zip(&r).for_each(|(v, r)| *v += 0.5 * r);
                fa = f(&a);
            }
        }
        panic!("fixed_point did not reach tol {tol} in 500 iterations");
    }

    /// Classifier logits on the flattened `a_N`, `[n, classes]`.
    pub fn logits(&self, a_n: &[f64]) -> Vec<f64> {
        let d = self.out_dim();
        let k = self.spec.classes;
        let (w, b) = (
            self.params.get("classifier.weight"),
            self.params.get("classifier.bias"),
        );
        let mut out = Vec::with_capacity(a_n.len() / d * k);
        for sample in a_n.chunks(d) {
            for c in 0..k {
                out.push(dot(&w[c * d..(c + 1) * d], sample) + b[c]);
            }
        }
        out
    }

    /// Mean softmax cross-entropy on the rates `a_N`.
    pub fn loss(&self, a_n: &[f64], labels: &[usize]) -> f64 {
        softmax_cross_entropy(&self.logits(a_n), self.spec.classes, labels).0
    }

    /// `(loss, ∂L/∂a_N, ∂L/∂classifier.weight, ∂L/∂classifier.bias)`.
    fn classifier_backward(
        &self,
        a_n: &[f64],
        labels: &[usize],
    ) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
        let d = self.out_dim();
        let k = self.spec.classes;
        assert_eq!(a_n.len(), labels.len() * d, "rate must be [n, d_N]");
        let (loss, dl) = softmax_cross_entropy(&self.logits(a_n), k, labels);
        let cw = self.params.get("classifier.weight");
        let mut gw = vec![0.0; k * d];
        let mut gb = vec![0.0; k];
        let mut ga = vec![0.0; a_n.len()];
        for (s, sample) in a_n.chunks(d).enumerate() {
            for c in 0..k {
                let g = dl[s * k + c];
                gb[c] += g;
                let w = &cw[c * d..(c + 1) * d];
                for j in 0..d {
                    gw[c * d + j] += g * sample[j];
                    ga[s * d + j] += g * w[j];
                }
            }
        }
        (loss, ga, gw, gb)
    }

    /// Solves `β = J_fᵀβ + gL` at `rate` with the inner BNs in `mode`. The dense solve needs
    /// independent systems (the whole batch as one where batch statistics couple it); the
    /// iterative ones keep one estimate per sample under one global stopping rule, as the
    /// authors' batched Broyden does.
    pub fn adjoint(
        &self,
        x: &[f64],
        rate: &[f64],
        gl: &[f64],
        mode: BnMode,
        solver: Solver,
    ) -> (Vec<f64>, SolveStats) {
        let p = self.prepare(x);
        let ev = self.eval(&p, rate, mode);
        let op = |beta: &[f64]| self.backward(&p, &ev, rate, beta, false).0;
        let (sys, dim) = match solver {
            Solver::Dense => self.systems(p.n, mode),
            _ => (p.n, self.out_dim()),
        };
        adjoint::solve(solver, sys, dim, &op, gl)
    }

    /// `(∂f(rate; θ)/∂θ)ᵀ β` with the inner BNs in `mode` (classifier entries 0), and the
    /// batch statistics of the inner BNs in that evaluation, by name (empty in `Running`
    /// mode).
    pub fn grads_from_adjoint(
        &self,
        x: &[f64],
        rate: &[f64],
        beta: &[f64],
        mode: BnMode,
    ) -> (Grads, Vec<(String, BatchStats)>) {
        let p = self.prepare(x);
        let ev = self.eval(&p, rate, mode);
        let (_, grads) = self.backward(&p, &ev, rate, beta, true);
        let stats = match mode {
            BnMode::Running => Vec::new(),
            BnMode::Batch => ev
                .chains
                .iter()
                .enumerate()
                .flat_map(|(i, c)| self.batch_stats(i + 1, p.n, c))
                .collect(),
        };
        (grads.expect("asked for parameter gradients"), stats)
    }

    /// The batch statistics of the BNs of a chain evaluated in batch mode.
    fn batch_stats(&self, layer: usize, n: usize, cache: &ChainCache) -> Vec<(String, BatchStats)> {
        self.ops[layer]
            .iter()
            .zip(&cache.bn)
            .filter_map(|(op, bn)| {
                let bn = bn.as_ref()?;
                Some((
                    op.r.name.clone(),
                    BatchStats {
                        mean: bn.mean.clone(),
                        var: bn.var.clone(),
                        count: n * op.r.input.hw(),
                    },
                ))
            })
            .collect()
    }

    /// The training recipe's gradient: β from the adjoint system of `form`, then one
    /// `Batch`-mode evaluation of `f` at `rate` backpropagated with β (its own σ' masks and
    /// the batch-coupled BN backward).
    ///
    /// [`AdjointForm::Authors`] **\[ref\]**: `J_fᵀ` of the `Batch`-mode `f` at `f(rate)`.
    /// At a `Batch`-mode fixed point this is the exact implicit derivative of the loss; at a
    /// simulated rate it is what the authors compute. [`AdjointForm::Consistent`]: `J_fᵀ` of
    /// the `Running`-mode `f` at the rate. With no BN inside the loop (N = 1, or inner layers
    /// without BN) the modes agree and the forms differ only in where `J_f` is taken.
    pub fn loss_and_grads_paper(
        &self,
        x: &[f64],
        labels: &[usize],
        rate: &[f64],
        form: AdjointForm,
        solver: Solver,
    ) -> PaperStep {
        assert_eq!(labels.len(), self.batch_size(x));
        let (loss, gl, gw, gb) = self.classifier_backward(rate, labels);
        let (beta, solve) = match form {
            AdjointForm::Authors => {
                let f_rate = self.f(x, rate, BnMode::Batch);
                self.adjoint(x, &f_rate, &gl, BnMode::Batch, solver)
            }
            AdjointForm::Consistent => self.adjoint(x, rate, &gl, BnMode::Running, solver),
        };
        let (mut grads, layers_bn) = self.grads_from_adjoint(x, rate, &beta, BnMode::Batch);
        grads.get_mut("classifier.weight").copy_from_slice(&gw);
        grads.get_mut("classifier.bias").copy_from_slice(&gb);
        let bn_in = match self.input_bn {
            BnMode::Batch => {
                let p = self.prepare(x);
                self.batch_stats(0, p.n, &p.chain0)
            }
            BnMode::Running => Vec::new(),
        };
        PaperStep {
            loss,
            grads,
            solve,
            bn_in,
            layers_bn,
        }
    }

    /// Updates every running statistic from a training step's batch statistics (PyTorch
    /// momentum, e.g. 0.1), once per step as ALGORITHM.md §4 asks.
    pub fn update_running_stats(&mut self, step: &PaperStep, momentum: f64) {
        for (name, b) in step.bn_in.iter().chain(&step.layers_bn) {
            let (_, r) = self
                .running
                .iter_mut()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no batch norm {name}"));
            r.update(b, momentum);
        }
    }

    /// The exact implicit gradient with one inner BN `mode` for both the solve and `∂f/∂θ`,
    /// dense adjoint solve: the derivative of the loss at the fixed point of `f` in `mode`.
    pub fn loss_and_implicit_grads(
        &self,
        x: &[f64],
        labels: &[usize],
        rate: &[f64],
        mode: BnMode,
    ) -> (f64, Grads, SolveStats) {
        self.loss_and_implicit_grads_with(x, labels, rate, mode, Solver::Dense)
    }

    /// [`Model::loss_and_implicit_grads`] with a chosen adjoint solver.
    pub fn loss_and_implicit_grads_with(
        &self,
        x: &[f64],
        labels: &[usize],
        rate: &[f64],
        mode: BnMode,
        solver: Solver,
    ) -> (f64, Grads, SolveStats) {
        assert_eq!(labels.len(), self.batch_size(x));
        let (loss, gl, gw, gb) = self.classifier_backward(rate, labels);
        let (beta, stats) = self.adjoint(x, rate, &gl, mode, solver);
        let (mut grads, _) = self.grads_from_adjoint(x, rate, &beta, mode);
        grads.get_mut("classifier.weight").copy_from_slice(&gw);
        grads.get_mut("classifier.bias").copy_from_slice(&gb);
        (loss, grads, stats)
    }

    /// Whether the linear/conv bias `name` is exactly cancelled by a batch-statistics BN
    /// after it (only average pooling in between) when the inner BNs run in `mode`: its
    /// gradient is then rounding noise, which gradient checks must not divide by.
    pub fn bias_cancelled_by_bn(&self, name: &str, mode: BnMode) -> bool {
        for (l, ops) in self.ops.iter().enumerate() {
            let bn_mode = if l == 0 { self.input_bn } else { mode };
            for (k, op) in ops.iter().enumerate() {
                let is_it = matches!(op.r.op, OpSpec::Linear { .. } | OpSpec::Conv { .. })
                    && format!("{}.bias", op.r.name) == name;
                if is_it {
                    let next = ops[k + 1..]
                        .iter()
                        .find(|o| !matches!(o.r.op, OpSpec::AvgPool { .. }));
                    return bn_mode == BnMode::Batch
                        && matches!(next.map(|o| o.r.op), Some(OpSpec::BatchNorm {}));
                }
            }
        }
        false
    }
}

/// The buffers by name; a free function so that it can borrow alongside `params`.
fn buffer_slots<'a>(
    running: &'a mut [(String, RunningStats)],
    fb_u: &'a mut [f64],
    fb_v: &'a mut [f64],
) -> Vec<(String, &'a mut [f64])> {
    let mut out: Vec<(String, &mut [f64])> = Vec::new();
    for (name, r) in running.iter_mut() {
        out.push((format!("{name}.running_mean"), &mut r.mean));
        out.push((format!("{name}.running_var"), &mut r.var));
    }
    out.push(("fb.u".into(), fb_u));
    out.push(("fb.v".into(), fb_v));
    out
}

#[cfg(test)]
mod tests {
    // This model replaced three hand-written f64 references (single-layer FC and conv, and
    // the AlexNet-F style multi-layer one), whose checks are ported below. Before they were
    // deleted it was shown equal to them (commits 3a544f1, 0e68c01): same initialisation from
    // the same seed, then with parameters moved off it, dropout masks on and running
    // statistics updated: `f`, the simulated rates of every layer, the fixed point, the loss,
    // the running statistics and every gradient (implicit in both inner-BN modes, and the
    // training recipe in both adjoint forms and both input-BN modes, dense and Broyden with
    // the same iteration counts). Worst differences measured: single-layer FC and conv 0.0
    // everywhere except the fixed point (5.4e-14, 5.7e-14; both solved to 1e-13) and the
    // loss at it (3.6e-15, 4.9e-15); mini AlexNet-F 0.0 everywhere.

    use super::*;

    /// A variational-dropout mask: 0 with probability `p`, else `1/(1−p)`.
    fn dropout_mask(rng: &mut Rng, len: usize, p: f64) -> Vec<f64> {
        (0..len)
            .map(|_| {
                if rng.uniform() < p {
                    0.0
                } else {
                    1.0 / (1.0 - p)
                }
            })
            .collect()
    }

    fn labels(rng: &mut Rng, n: usize, classes: usize) -> Vec<usize> {
        (0..n)
            .map(|_| (rng.next_u64() % classes as u64) as usize)
            .collect()
    }

    /// A description from its parts: `layers` are TOML arrays of ops, `feedback` the body of
    /// the `[feedback]` table.
    fn describe(
        input: &str,
        time_varying: bool,
        (steps, leak): (usize, f64),
        layers: &[&str],
        feedback: &str,
        classes: usize,
    ) -> NetworkSpec {
        let mut s = format!("name = \"test\"\nclasses = {classes}\n[input]\nshape = {input}\n");
        if time_varying {
            s += "time_varying = true\n";
        }
        s += &format!("[neuron]\ntime_steps = {steps}\nvth = 2.0\nleak = {leak}\n");
        for l in layers {
            s += &format!("[[layers]]\nops = {l}\n");
        }
        s += &format!("[feedback]\n{feedback}\n");
        NetworkSpec::from_toml(&s).expect("a valid test description")
    }

    /// `max|a − b| / max(max|b|, 1e-3)`: relative for values of 1e-3 and more, absolute
    /// below (a bias that BN cancels has a gradient of rounding noise on both sides).
    fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        max_abs(&sub(a, b)) / max_abs(b).max(1e-3)
    }

    fn set_masks(m: &mut Model, rng: &mut Rng, n: usize) {
        let dims = m.dims();
        m.mask_x = Some(dropout_mask(rng, n * dims[0], 0.2));
        m.mask_fb = Some(dropout_mask(rng, n * dims[0], 0.2));
        m.masks = (1..dims.len())
            .map(|i| Some(dropout_mask(rng, n * dims[i], 0.2)))
            .collect();
    }

    /// Inputs with a per-sample offset, which keeps the batch statistics nontrivial.
    fn inputs(rng: &mut Rng, m: &Model, n: usize) -> Vec<f64> {
        let k = m.spec.sample_len();
        (0..n * k)
            .map(|i| rng.normal() + (i / k) as f64 * 0.3)
            .collect()
    }

    fn worst_named(got: &Grads, want: &[(String, &[f64])]) -> f64 {
        want.iter()
            .map(|(name, v)| rel_diff(got.get(name), v))
            .fold(0.0, f64::max)
    }

    /// 3×8×8 → 4×4×4 (k3 s2 p1) → 5×4×4 (k3 p1) → 6×2×2 (k3 s2 p1), feedback ConvT 6→4
    /// k3 s2 p1 op1: AlexNet-F's shape at toy size.
    fn mini_alexnet() -> NetworkSpec {
        describe(
            "[3, 8, 8]",
            false,
            (30, 0.99),
            &[
                "[{ kind = \"conv\", out = 4, k = 3, stride = 2, pad = 1 }, { kind = \"batchnorm\" }]",
                "[{ kind = \"conv\", out = 5, k = 3, pad = 1 }, { kind = \"batchnorm\" }]",
                "[{ kind = \"conv\", out = 6, k = 3, stride = 2, pad = 1 }, { kind = \"batchnorm\" }]",
            ],
            "kind = \"conv_transpose\"\nk = 3\nstride = 2\npad = 1\noutput_pad = 1",
            3,
        )
    }

    // ---- 1. Implicit gradients against finite differences (models that are no preset) ----

    /// The smooth regime: every BN has small γ and β ≈ vth/2, so each
    /// `z/vth` sits near ½; linear/conv biases random; the feedback scale 0.3 < 1 keeps
    /// `fb.scale`'s gradient live. The inner running statistics are the batch statistics at
    /// the batch-mode fixed point, jittered, so that the two modes are close but not equal.
    fn smooth(spec: &NetworkSpec, n: usize, seed: u64) -> (Model, Vec<f64>, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let mut m = Model::init(spec, seed + 1);
        let vth = m.vth;
        for op in m.ops.clone().into_iter().flatten() {
            match op.r.op {
                OpSpec::BatchNorm {} => {
                    let c = op.r.input.channels();
                    m.params.tensors[op.weight.unwrap()].data = rng.vec_range(c, 0.1, 0.2);
                    m.params.tensors[op.bias.unwrap()].data =
                        rng.vec_range(c, 0.4 * vth, 0.6 * vth);
                }
                OpSpec::Linear { out, bias: true }
                | OpSpec::Conv {
                    out, bias: true, ..
                } => {
                    m.params.tensors[op.bias.unwrap()].data = rng.vec_range(out, -0.5, 0.5);
                }
                _ => {}
            }
        }
        m.params.get_mut("fb.scale")[0] = 0.3;
        set_masks(&mut m, &mut rng, n);
        let x = inputs(&mut rng, &m, n);
        let y = labels(&mut rng, n, m.spec.classes);
        let (a, _) = m.fixed_point(&x, 1e-12, BnMode::Batch);
        let (_, stats) = m.grads_from_adjoint(&x, &a, &vec![0.0; a.len()], BnMode::Batch);
        for (name, b) in stats {
            let r = &mut m.running.iter_mut().find(|(k, _)| *k == name).unwrap().1;
            r.mean = b.mean.iter().map(|v| v + rng.range(-0.05, 0.05)).collect();
            r.var = b.var.iter().map(|v| v * rng.range(0.8, 1.25)).collect();
        }
        (m, x, y)
    }

    /// Smallest distance of a live `z/vth` from σ's kinks at the fixed point, and the fraction
    /// strictly inside (0, 1). A neuron whose every input mask is 0 has `z ≡ 0`, and so does a
    /// feedback-only layer-1 neuron whose whole receptive field is masked: no perturbation
    /// moves them, so an exact 0 is not counted.
    fn regime(m: &Model, x: &[f64], mode: BnMode) -> (f64, f64) {
        let (a, _) = m.fixed_point(x, 1e-13, mode);
        let zv = m.preactivations(x, &a, mode);
        let (mut margin, mut inside, mut total) = (f64::INFINITY, 0usize, 0usize);
        for (l, z) in zv.iter().enumerate() {
            for (i, &v) in z.iter().enumerate() {
                let live = if l == 0 {
                    mask_at(&m.mask_x, i) != 0.0 || mask_at(&m.mask_fb, i) != 0.0
                } else {
                    mask_at(&m.masks[l - 1], i) != 0.0
                };
                total += 1;
                inside += usize::from(sigma_on(v));
                if live && v != 0.0 {
                    margin = margin.min(v.abs().min((v - 1.0).abs()));
                }
            }
        }
        (margin, inside as f64 / total as f64)
    }

    /// The first seed from `seed` whose model is in the smooth regime in both BN modes.
    fn smooth_model(spec: &NetworkSpec, n: usize, seed: u64) -> (Model, Vec<f64>, Vec<usize>, u64) {
        for s in seed..seed + 40 {
            let (m, x, y) = smooth(spec, n, s);
            let ok = [BnMode::Running, BnMode::Batch].iter().all(|&mode| {
                let (margin, inside) = regime(&m, &x, mode);
                margin > 1e-3 && inside > 0.8
            });
            if ok {
                return (m, x, y, s);
            }
        }
        panic!("no smooth seed in {seed}..{}", seed + 40);
    }

    struct FdReport {
        name: String,
        rel: f64,
        abs: f64,
        scale: f64,
        checked: usize,
    }

    /// Every element of a tensor of up to 200, else 200 spread deterministically over it.
    fn fd_indices(len: usize) -> Vec<usize> {
        if len <= 200 {
            (0..len).collect()
        } else {
            (0..200).map(|i| i * len / 200).collect()
        }
    }

    /// `grads` against central differences of the loss through the `mode` fixed point solved
    /// to 1e-13 (each solve restarted from the unperturbed fixed point).
    fn fd_check_grads(
        m: &Model,
        x: &[f64],
        y: &[usize],
        mode: BnMode,
        grads: &Grads,
    ) -> Vec<FdReport> {
        const TOL: f64 = 1e-13;
        const H: f64 = 1e-5;
        let (a, _) = m.fixed_point(x, TOL, mode);
        let mut out = Vec::new();
        for (k, t) in grads.tensors.iter().enumerate() {
            let idx = fd_indices(t.data.len());
            let (mut abs, mut scale): (f64, f64) = (0.0, 0.0);
            for &i in &idx {
                let eval = |delta: f64| {
                    let mut mm = m.clone();
                    mm.params.tensors[k].data[i] += delta;
                    let (ap, _) = mm.fixed_point_from(x, &a, TOL, mode);
                    mm.loss(&ap, y)
                };
                let fd = (eval(H) - eval(-H)) / (2.0 * H);
                abs = abs.max((t.data[i] - fd).abs());
                scale = scale.max(fd.abs());
            }
            out.push(FdReport {
                name: t.name.clone(),
                rel: abs / scale,
                abs,
                scale,
                checked: idx.len(),
            });
        }
        out
    }

    /// Prints and checks a finite-difference report; returns the worst relative error.
    fn check_reports(what: &str, m: &Model, mode: BnMode, reports: &[FdReport]) -> f64 {
        let mut worst: f64 = 0.0;
        for r in reports {
            if m.bias_cancelled_by_bn(&r.name, mode) {
                println!(
                    "  {:<20} (cancelled by BN) max|g−fd| {:.3e}  max|fd| {:.3e}",
                    r.name, r.abs, r.scale
                );
                assert!(r.scale < 1e-8 && r.abs < 1e-8, "{what}: {} not ~0", r.name);
            } else {
                println!(
                    "  {:<20} rel {:.3e}  abs {:.3e}  max|fd| {:.3e}  ({} elements)",
                    r.name, r.rel, r.abs, r.scale, r.checked
                );
                assert!(
                    r.scale > 1e-6,
                    "{what}: {} gradient vanishes; vacuous",
                    r.name
                );
                assert!(r.rel < 1e-4, "{what}: {} relative error {}", r.name, r.rel);
                worst = worst.max(r.rel);
            }
        }
        worst
    }

    /// The exact implicit gradient in both BN modes against finite differences.
    fn check_fd(what: &str, spec: &NetworkSpec, n: usize, seed: u64) {
        let (m, x, y, seed) = smooth_model(spec, n, seed);
        for mode in [BnMode::Running, BnMode::Batch] {
            let (margin, inside) = regime(&m, &x, mode);
            let (a, st) = m.fixed_point(&x, 1e-13, mode);
            println!(
                "{what}, inner BN {mode:?} (seed {seed}): {:.0}% of z/vth inside (0,1), min live distance to a kink {margin:.3e}, fixed point in {} iterations",
                inside * 100.0,
                st.iterations
            );
            let (_, grads, stats) = m.loss_and_implicit_grads(&x, &y, &a, mode);
            assert!(stats.rel_residual < 1e-12, "{}", stats.rel_residual);
            let reports = fd_check_grads(&m, &x, &y, mode, &grads);
            let worst = check_reports(what, &m, mode, &reports);
            println!("  worst relative error {worst:.3e}");
            if mode == BnMode::Batch {
                // At the batch-mode fixed point the authors' recipe is this same derivative.
                let s = m.loss_and_grads_paper(&x, &y, &a, AdjointForm::Authors, Solver::Dense);
                let e = grads
                    .tensors
                    .iter()
                    .map(|t| rel_diff(s.grads.get(&t.name), &t.data))
                    .fold(0.0, f64::max);
                println!("  authors' recipe at this fixed point vs the implicit gradient: worst rel diff {e:.1e}");
                assert!(e < 1e-9, "{what}: authors' form {e}");
            }
        }
    }

    /// Two FC spiking layers with BN: [12] → linear 9 + BN → linear 7 + BN, feedback 7 → 9.
    #[test]
    fn fc_two_layers_implicit_gradient_matches_finite_differences() {
        let spec = describe(
            "[12]",
            false,
            (5, 1.0),
            &[
                "[{ kind = \"linear\", out = 9 }, { kind = \"batchnorm\" }]",
                "[{ kind = \"linear\", out = 7 }, { kind = \"batchnorm\" }]",
            ],
            "kind = \"linear\"",
            3,
        );
        check_fd("fc 12→9→7", &spec, 4, 300);
    }

    /// Average pooling inside the loop: [1,8,8] → conv 3 k3 p1 + BN → conv 4 k3 p1, BN,
    /// avgpool → [4,4,4], feedback ConvT 4→3 k2 s2 back to 8×8.
    #[test]
    fn conv_avgpool_implicit_gradient_matches_finite_differences() {
        let spec = describe(
            "[1, 8, 8]",
            false,
            (5, 1.0),
            &[
                "[{ kind = \"conv\", out = 3, k = 3, pad = 1 }, { kind = \"batchnorm\" }]",
                "[{ kind = \"conv\", out = 4, k = 3, pad = 1 }, { kind = \"batchnorm\" }, { kind = \"avgpool\" }]",
            ],
            "kind = \"conv_transpose\"\nk = 2\nstride = 2\npad = 0",
            3,
        );
        check_fd("conv+avgpool 1×8×8→3×8×8→4×4×4", &spec, 3, 400);
    }

    /// The paths the other two leave out: a linear op flattening a `[C, H, W]` layer,
    /// pooling first in an inner chain, a linear op without bias, and linear feedback onto a
    /// conv layer: [1,6,6] → conv 2 k3 p1 + BN → [2,6,6]; avgpool, linear 5 (no bias), BN →
    /// [5]; feedback linear 5 → 72.
    #[test]
    fn mixed_conv_linear_implicit_gradient_matches_finite_differences() {
        let spec = describe(
            "[1, 6, 6]",
            false,
            (5, 1.0),
            &[
                "[{ kind = \"conv\", out = 2, k = 3, pad = 1 }, { kind = \"batchnorm\" }]",
                "[{ kind = \"avgpool\" }, { kind = \"linear\", out = 5, bias = false }, { kind = \"batchnorm\" }]",
            ],
            "kind = \"linear\"",
            3,
        );
        assert_eq!(spec.feedback_weight_shape(), vec![72, 5]);
        assert!(spec
            .param_shapes()
            .iter()
            .all(|(k, _)| k != "layers.0.bias"));
        check_fd("mixed conv→avgpool→linear, linear feedback", &spec, 3, 600);
    }

    // ---- 2. Time-varying input (one layer) ----

    /// Event-style input, T = 4 frames, LIF λ = 0.9: `f`, the fixed point and the gradients
    /// are those of a static twin fed the rate-weighted mean frame; the simulation feeds frame
    /// t at step t, normalised by the mean frame's BN statistics, so the per-step currents
    /// average to `f`'s input current; and the implicit gradient matches finite differences.
    #[test]
    fn time_varying_input_uses_the_mean_frame_in_f_and_each_frame_in_the_simulation() {
        let (steps, leak) = (4, 0.9);
        let layer =
            "[{ kind = \"conv\", out = 3, k = 3, stride = 2, pad = 1 }, { kind = \"batchnorm\" }]";
        let fb = "kind = \"conv\"\nk = 3\npad = 1";
        let tv_spec = describe("[2, 6, 6]", true, (steps, leak), &[layer], fb, 3);
        let st_spec = describe("[2, 6, 6]", false, (steps, leak), &[layer], fb, 3);
        let n = 3;
        let (tv, x, y, _) = smooth_model(&tv_spec, n, 500);
        assert_eq!(x.len(), steps * n * 72);
        let mut st = Model::zeros(&st_spec);
        st.params = tv.params.clone();
        st.running = tv.running.clone();
        (st.fb_u, st.fb_v) = (tv.fb_u.clone(), tv.fb_v.clone());
        (st.mask_x, st.mask_fb) = (tv.mask_x.clone(), tv.mask_fb.clone());
        let wsum: f64 = (0..steps).map(|t| tv.frame_weight(t)).sum();
        assert!((wsum - 1.0).abs() < 1e-15);
        let mean = tv.mean_frame(&x);

        let mut rng = Rng::new(77);
        let a = rng.vec_range(n * tv.out_dim(), 0.0, 1.0);
        let e_f = rel_diff(
            &tv.f(&x, &a, BnMode::Batch),
            &st.f(&mean, &a, BnMode::Batch),
        );
        let rate = tv.forward_sim(&x, steps, leak).pop().unwrap();
        let mut e_grad: f64 = 0.0;
        for form in [AdjointForm::Authors, AdjointForm::Consistent] {
            let g = tv.loss_and_grads_paper(&x, &y, &rate, form, Solver::Dense);
            let w = st.loss_and_grads_paper(&mean, &y, &rate, form, Solver::Dense);
            e_grad = e_grad.max(worst_named(
                &g.grads,
                &w.grads
                    .named()
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect::<Vec<_>>(),
            ));
        }

        // The per-step currents: frame t through the chain with the mean frame's statistics.
        let p = tv.prepare(&x);
        let currents = tv.step_currents(&p, &x, steps);
        let mut avg = vec![0.0; p.x1.len()];
        for (t, c) in currents.iter().enumerate() {
            axpy(tv.frame_weight(t), c, &mut avg);
        }
        let e_avg = max_abs(&sub(&avg, &p.x1));
        let step = tv.loss_and_grads_paper(&x, &y, &rate, AdjointForm::Consistent, Solver::Dense);
        let (name, stats) = &step.bn_in[0];
        assert_eq!(name, "bn");
        let mut frozen = st.clone();
        frozen.input_bn = BnMode::Running;
        frozen.running[0].1 = RunningStats {
            mean: stats.mean.clone(),
            var: stats.var.clone(),
        };
        let frame_len = n * tv.in_dim();
        let e_frames = currents
            .iter()
            .zip(x.chunks(frame_len))
            .map(|(c, frame)| max_abs(&sub(c, &frozen.prepare(frame).x1)))
            .fold(0.0, f64::max);
        assert!(
            currents
                .windows(2)
                .all(|w| max_abs(&sub(&w[0], &w[1])) > 1e-3),
            "frames should differ"
        );

        // The simulation integrates frame t at step t (an explicit IF/LIF loop on those currents).
        let (mut u, mut s, mut acc) = (
            vec![0.0; avg.len()],
            vec![0.0; avg.len()],
            vec![0.0; avg.len()],
        );
        for (t, c) in currents.iter().enumerate() {
            let fbc = if t > 0 {
                tv.feedback(&p, &s)
            } else {
                vec![0.0; c.len()]
            };
            for i in 0..u.len() {
                u[i] += c[i] + fbc[i];
                s[i] = if u[i] >= tv.vth { 1.0 } else { 0.0 };
                u[i] = leak * (u[i] - tv.vth * s[i]);
                acc[i] = leak * acc[i] + s[i];
            }
        }
        let denom: f64 = (0..steps).map(|k| leak.powi(k as i32)).sum();
        let manual: Vec<f64> = acc.iter().map(|v| v / denom).collect();
        let e_sim = max_abs(&sub(&rate, &manual));
        // Identical frames make the simulation the static one.
        let frame0 = &x[..frame_len];
        let same: Vec<f64> = (0..steps).flat_map(|_| frame0.iter().copied()).collect();
        let e_static = max_abs(&sub(
            &tv.forward_sim(&same, steps, leak).pop().unwrap(),
            &st.forward_sim(frame0, steps, leak).pop().unwrap(),
        ));
        println!(
            "time-varying conv (T={steps}, λ={leak}): f vs static twin on the mean frame {e_f:.1e}, gradients {e_grad:.1e}; Σ_t w_t x1_t vs x1 {e_avg:.1e}; per-frame currents vs mean-frame statistics {e_frames:.1e}; simulation vs explicit loop {e_sim:.1e}; constant frames vs static simulation {e_static:.1e}"
        );
        assert!(e_f < 1e-14 && e_grad < 1e-12 && e_avg < 1e-12 && e_frames < 1e-14);
        assert!(e_sim < 1e-12 && e_static < 1e-12);
        check_fd("time-varying conv 2×6×6→3×3×3", &tv_spec, n, 500);
    }

    // ---- 6. One layer, FC and conv feedback (ported from the single-layer reference) ----

    /// One spiking layer `[input] → op + BN`, feedback `fb`, vth 2.
    fn one_layer(input: &str, op: &str, fb: &str, classes: usize) -> NetworkSpec {
        let layer = format!("[{op}, {{ kind = \"batchnorm\" }}]");
        describe(input, false, (5, 1.0), &[&layer], fb, classes)
    }

    /// FC: `[in_dim]` → linear `hidden` + BN, linear feedback `hidden → hidden`.
    fn fc(in_dim: usize, hidden: usize, classes: usize, seed: u64) -> Model {
        let spec = one_layer(
            &format!("[{in_dim}]"),
            &format!("{{ kind = \"linear\", out = {hidden} }}"),
            "kind = \"linear\"",
            classes,
        );
        Model::init(&spec, seed)
    }

    /// Conv: `[1, size, size]` → conv `channels` k5 s2 p2 + BN, conv feedback `k_fb × k_fb`
    /// with same padding.
    fn conv(size: usize, channels: usize, k_fb: usize, classes: usize, seed: u64) -> Model {
        let spec = one_layer(
            &format!("[1, {size}, {size}]"),
            &format!("{{ kind = \"conv\", out = {channels}, k = 5, stride = 2, pad = 2 }}"),
            &format!("kind = \"conv\"\nk = {k_fb}\npad = {}", k_fb / 2),
            classes,
        );
        Model::init(&spec, seed)
    }

    /// Puts a one-layer model in the smooth regime: small γ and β ≈ vth/2 keep `x1/vth` near
    /// ½, and a small spectral scale keeps the feedback current small. The scale stays inside
    /// (−1, 1) so that its gradient is not clamped away.
    fn make_smooth(m: &mut Model, rng: &mut Rng, gamma: (f64, f64)) {
        let c = m.params.get("bn.weight").len();
        let vth = m.vth;
        let draws = [
            ("bn.weight", gamma.0, gamma.1),
            ("bn.bias", 0.4 * vth, 0.6 * vth),
            ("fx.bias", -0.5, 0.5),
        ];
        for (name, lo, hi) in draws {
            m.params
                .get_mut(name)
                .copy_from_slice(&rng.vec_range(c, lo, hi));
        }
        m.params.get_mut("fb.scale")[0] = 0.3;
    }

    fn smooth_fc() -> (Model, Vec<f64>, Vec<usize>) {
        let (in_dim, hidden, classes, n) = (5, 6, 3, 4);
        let mut rng = Rng::new(11);
        let mut m = fc(in_dim, hidden, classes, 21);
        make_smooth(&mut m, &mut rng, (0.1, 0.3));
        m.mask_x = Some(dropout_mask(&mut rng, n * hidden, 0.2));
        m.mask_fb = Some(dropout_mask(&mut rng, n * hidden, 0.2));
        let x = rng.vec_range(n * in_dim, -1.0, 1.0);
        let y = labels(&mut rng, n, classes);
        (m, x, y)
    }

    /// Conv 1×8×8 → 3×4×4 (k5 s2 p2), feedback conv 3→3 k3.
    fn smooth_conv() -> (Model, Vec<f64>, Vec<usize>) {
        let (classes, n) = (3, 3);
        let mut rng = Rng::new(12);
        let mut m = conv(8, 3, 3, classes, 22);
        make_smooth(&mut m, &mut rng, (0.05, 0.15));
        let d = m.out_dim();
        m.mask_x = Some(dropout_mask(&mut rng, n * d, 0.2));
        m.mask_fb = Some(dropout_mask(&mut rng, n * d, 0.2));
        let x = rng.vec_range(n * m.in_dim(), -1.0, 1.0);
        let y = labels(&mut rng, n, classes);
        (m, x, y)
    }

    /// The implicit gradient at the fixed point (dense adjoint) against central differences
    /// of the loss through the fixed point, every parameter element. With one layer there is
    /// no BN inside the loop, so both inner-BN modes are the same `f`.
    fn check_fd_one_layer(what: &str, m: &Model, x: &[f64], y: &[usize]) {
        let mode = BnMode::Running;
        let (margin, inside) = regime(m, x, mode);
        println!(
            "{what} smooth regime: {:.0}% inside (0,1), min distance to a kink {margin:.3e}",
            inside * 100.0
        );
        assert!(margin > 1e-3 && inside > 0.8);
        let (a, st) = m.fixed_point(x, 1e-13, mode);
        assert!(st.residual <= 1e-13);
        let (_, grads, stats) = m.loss_and_implicit_grads(x, y, &a, mode);
        assert!(
            stats.rel_residual < 1e-12,
            "dense adjoint residual {}",
            stats.rel_residual
        );
        println!("{what}: implicit gradient vs finite differences through the fixed point");
        let reports = fd_check_grads(m, x, y, mode, &grads);
        assert!(reports
            .iter()
            .all(|r| r.checked == grads.get(&r.name).len()));
        let worst = check_reports(what, m, mode, &reports);
        println!("  worst relative error {worst:.3e}");
    }

    #[test]
    fn fc_implicit_gradient_matches_finite_differences() {
        let (m, x, y) = smooth_fc();
        check_fd_one_layer("fc 5→6", &m, &x, &y);
    }

    #[test]
    fn conv_implicit_gradient_matches_finite_differences() {
        let (m, x, y) = smooth_conv();
        check_fd_one_layer("conv 1×8×8→3×4×4", &m, &x, &y);
    }

    /// A training-like setting (initialisation as the authors', dropout on, rate from a short
    /// simulation, many neurons saturated) where the adjoint is nontrivial.
    fn realistic_one_layer(
        mut m: Model,
        n: usize,
        steps: usize,
        seed: u64,
    ) -> (Model, Vec<f64>, Vec<usize>, Vec<f64>) {
        let mut rng = Rng::new(seed);
        let d = m.out_dim();
        m.mask_x = Some(dropout_mask(&mut rng, n * d, 0.2));
        m.mask_fb = Some(dropout_mask(&mut rng, n * d, 0.2));
        let x = inputs(&mut rng, &m, n);
        let y = labels(&mut rng, n, m.spec.classes);
        let rate = m.forward_sim(&x, steps, 1.0).pop().unwrap();
        (m, x, y, rate)
    }

    /// `(name, solver, bound on ‖β − β_dense‖/‖β_dense‖)`; the gradients get 10× the bound.
    fn iterative_solvers(broyden_threshold: usize) -> [(&'static str, Solver, f64); 4] {
        [
            ("broyden paper eps", Solver::PAPER_BROYDEN, 1e-6),
            (
                "broyden eps 1e-14",
                Solver::Broyden {
                    threshold: broyden_threshold,
                    eps: Some(1e-14),
                },
                1e-10,
            ),
            (
                "damped fixed point",
                Solver::FixedPoint {
                    threshold: 500,
                    eps: Some(1e-14),
                },
                1e-10,
            ),
            (
                "anderson eps 1e-14",
                Solver::Anderson {
                    threshold: 100,
                    memory: 5,
                    eps: Some(1e-14),
                },
                1e-10,
            ),
        ]
    }

    /// Worst `max|a − b| / max|b|` over the tensors, skipping biases that a batch-statistics
    /// BN cancels (their gradients are rounding noise) under inner-BN `mode`.
    fn worst_grad_diff(m: &Model, a: &Grads, b: &Grads, mode: BnMode) -> f64 {
        a.tensors
            .iter()
            .zip(&b.tensors)
            .filter(|(t, _)| !m.bias_cancelled_by_bn(&t.name, mode))
            .map(|(a, b)| max_abs(&sub(&a.data, &b.data)) / max_abs(&b.data).max(1e-300))
            .fold(0.0, f64::max)
    }

    fn check_solvers(what: &str, m: &Model, x: &[f64], y: &[usize], rate: &[f64]) {
        let mode = BnMode::Running;
        let (_, g_dense, s_dense) = m.loss_and_implicit_grads(x, y, rate, mode);
        let (_, gl, _, _) = m.classifier_backward(rate, y);
        let (b_dense, _) = m.adjoint(x, rate, &gl, mode, Solver::Dense);
        println!(
            "{what}: dense adjoint rel residual {:.3e}",
            s_dense.rel_residual
        );
        assert!(s_dense.rel_residual < 1e-13);
        for (name, solver, bound) in iterative_solvers(30) {
            let (b, s) = m.adjoint(x, rate, &gl, mode, solver);
            let diff = norm(&sub(&b, &b_dense)) / norm(&b_dense);
            let (_, g, _) = m.loss_and_implicit_grads_with(x, y, rate, mode, solver);
            let gdiff = worst_grad_diff(m, &g, &g_dense, mode);
            println!(
                "{what}: {name:<19} iters {:>3}  rel residual {:.3e}  ‖β−β_dense‖/‖β_dense‖ {diff:.3e}  worst param grad rel diff {gdiff:.3e}",
                s.iterations, s.rel_residual
            );
            assert!(diff < bound, "{name}: {diff}");
            assert!(gdiff < bound * 10.0, "{name}: grads {gdiff}");
        }
    }

    #[test]
    fn adjoint_solvers_match_dense_fc() {
        let (m, x, y, rate) = realistic_one_layer(fc(20, 16, 4, 31), 6, 5, 41);
        check_solvers("fc", &m, &x, &y, &rate);
    }

    #[test]
    fn adjoint_solvers_match_dense_conv() {
        let (m, x, y, rate) = realistic_one_layer(conv(10, 4, 5, 4, 32), 3, 30, 42);
        check_solvers("conv", &m, &x, &y, &rate);
    }

    #[test]
    fn reference_half_iteration_solves_the_halved_system() {
        // With zero feedback J_f = 0, so the authors' iteration gives gL/2 and ours gL.
        let (mut m, x, y, rate) = realistic_one_layer(fc(8, 5, 3, 33), 4, 5, 43);
        m.params.get_mut("fb.scale")[0] = 0.0;
        let (_, gl, _, _) = m.classifier_backward(&rate, &y);
        let solver = Solver::FixedPointHalfRef { threshold: 30 };
        let (b, s) = m.adjoint(&x, &rate, &gl, BnMode::Running, solver);
        let half: Vec<f64> = gl.iter().map(|g| g / 2.0).collect();
        let err = max_abs(&sub(&b, &half));
        println!(
            "half iteration, zero feedback: max|β − gL/2| {err:.1e}, rel residual {:.6}",
            s.rel_residual
        );
        assert!(err < 1e-15);
        assert!((s.rel_residual - 0.5).abs() < 1e-12);
    }

    fn sci(v: &[f64]) -> String {
        let parts: Vec<String> = v.iter().map(|x| format!("{x:.3e}")).collect();
        parts.join(", ")
    }

    #[test]
    fn if_rate_approaches_the_fixed_point_as_t_grows() {
        let (m, x, _, _) = realistic_one_layer(fc(30, 20, 4, 34), 8, 5, 44);
        let (mc, xc, _, _) = realistic_one_layer(conv(12, 4, 5, 4, 35), 4, 5, 45);
        let residuals = |m: &Model, x: &[f64], leak: f64| -> Vec<f64> {
            [5, 30, 100]
                .iter()
                .map(|&t| {
                    let rate = m.forward_sim(x, t, leak).pop().unwrap();
                    m.fixed_point_residual(x, &rate, BnMode::Running)
                })
                .collect()
        };
        let fc_res = residuals(&m, &x, 1.0);
        let conv_res = residuals(&mc, &xc, 1.0);
        let lif = residuals(&m, &x, 0.95);
        println!(
            "IF  fc   ‖f(rate)−rate‖/‖rate‖ at T=5,30,100: {}",
            sci(&fc_res)
        );
        println!(
            "IF  conv ‖f(rate)−rate‖/‖rate‖ at T=5,30,100: {}",
            sci(&conv_res)
        );
        println!(
            "LIF 0.95 fc (not asserted; LIF rates need not approach f's fixed point): {}",
            sci(&lif)
        );
        for r in [&fc_res, &conv_res] {
            assert!(r[0] > r[1] && r[1] > r[2], "{r:?}");
        }
    }

    #[test]
    fn simulation_counts_spikes_by_subtraction_with_ties_firing() {
        // Zero feedback and γ = 0 make the current exactly β_bn = c: the IF neuron then fires
        // ⌊T·c/vth⌋ times (ties at u = vth fire), and a neuron with c ≥ vth fires every step,
        // so its rate is 1 for any leak.
        let mut m = fc(3, 4, 2, 36);
        m.params.get_mut("fb.scale")[0] = 0.0;
        m.params.get_mut("bn.weight").fill(0.0);
        m.params
            .get_mut("bn.bias")
            .copy_from_slice(&[1.0, 0.5, 2.0, 3.0]);
        let x = Rng::new(1).vec_range(2 * 3, -1.0, 1.0);
        let t = 7;
        let rate = m.forward_sim(&x, t, 1.0).pop().unwrap();
        let want = [3.0 / 7.0, 1.0 / 7.0, 1.0, 1.0];
        for (s, chunk) in rate.chunks(4).enumerate() {
            for (r, w) in chunk.iter().zip(&want) {
                assert!((r - w).abs() < 1e-15, "sample {s}: {chunk:?}");
            }
        }
        let lif = m.forward_sim(&x, t, 0.9).pop().unwrap();
        assert!((lif[2] - 1.0).abs() < 1e-15 && (lif[3] - 1.0).abs() < 1e-15);
        // A sub-threshold LIF neuron, against the recurrence written out for one scalar.
        let (mut u, mut a) = (0.0f64, 0.0f64);
        for _ in 0..t {
            u += 1.0;
            let s = if u >= 2.0 { 1.0 } else { 0.0 };
            u = 0.9 * (u - 2.0 * s);
            a = 0.9 * a + s;
        }
        let norm_t: f64 = (0..t).map(|k| 0.9f64.powi(k as i32)).sum();
        assert!((lif[0] - a / norm_t).abs() < 1e-15);
    }

    #[test]
    fn fixed_point_is_accurate() {
        let (m, x, _, _) = realistic_one_layer(fc(20, 16, 4, 37), 6, 5, 47);
        let (a, s) = m.fixed_point(&x, 1e-12, BnMode::Running);
        println!(
            "fixed point: {} iterations, residual {:.3e}",
            s.iterations, s.residual
        );
        assert!(max_abs(&sub(&m.f(&x, &a, BnMode::Running), &a)) <= 1e-12);
    }

    // ---- 7. Multi-layer, transposed-conv feedback (ported from the multi-layer reference) ----

    /// Input 2×8×8 → 3×8×8 (k3 s1 p1) → 4×4×4 (k3 s2 p1) → 3×4×4 (k3 s1 p1), feedback
    /// ConvT 3→3 k3 s2 p1 op1 back to 3×8×8.
    fn small_multi() -> NetworkSpec {
        describe(
            "[2, 8, 8]",
            false,
            (30, 1.0),
            &[
                "[{ kind = \"conv\", out = 3, k = 3, pad = 1 }, { kind = \"batchnorm\" }]",
                "[{ kind = \"conv\", out = 4, k = 3, stride = 2, pad = 1 }, { kind = \"batchnorm\" }]",
                "[{ kind = \"conv\", out = 3, k = 3, pad = 1 }, { kind = \"batchnorm\" }]",
            ],
            "kind = \"conv_transpose\"\nk = 3\nstride = 2\npad = 1\noutput_pad = 1",
            3,
        )
    }

    /// The smooth regime of [`smooth`] on [`small_multi`], drawn in the multi-layer
    /// reference's order (layer 1's BN γ, β and conv bias, then each inner layer's bias, γ, β).
    fn smooth_multi(seed: u64) -> (Model, Vec<f64>, Vec<usize>) {
        let n = 3;
        let mut rng = Rng::new(seed);
        let mut m = Model::init(&small_multi(), 7);
        let vth = m.vth;
        let mut draws = vec![
            ("bn.weight".to_string(), 0.1, 0.2),
            ("bn.bias".to_string(), 0.4 * vth, 0.6 * vth),
            ("fx.bias".to_string(), -0.5, 0.5),
        ];
        for i in 0..m.depth() - 1 {
            draws.push((format!("layers.{i}.bias"), -0.5, 0.5));
            draws.push((format!("layers.{i}.bn.weight"), 0.1, 0.2));
            draws.push((format!("layers.{i}.bn.bias"), 0.4 * vth, 0.6 * vth));
        }
        for (name, lo, hi) in draws {
            let v = m.params.get_mut(&name);
            v.copy_from_slice(&rng.vec_range(v.len(), lo, hi));
        }
        m.params.get_mut("fb.scale")[0] = 0.3;
        set_masks(&mut m, &mut rng, n);
        let x = inputs(&mut rng, &m, n);
        let y = labels(&mut rng, n, m.spec.classes);
        let (a, _) = m.fixed_point(&x, 1e-12, BnMode::Batch);
        let (_, stats) = m.grads_from_adjoint(&x, &a, &vec![0.0; a.len()], BnMode::Batch);
        for (name, b) in stats {
            let r = &mut m.running.iter_mut().find(|(k, _)| *k == name).unwrap().1;
            r.mean = b.mean.iter().map(|v| v + rng.range(-0.05, 0.05)).collect();
            r.var = b.var.iter().map(|v| v * rng.range(0.8, 1.25)).collect();
        }
        (m, x, y)
    }

    /// A seed whose fixed points keep every live z/vth ≥ 1e-3 from σ's kinks in both modes
    /// (with the per-output-channel feedback initialisation).
    const SMOOTH_SEED: u64 = 179;

    fn check_fd_multi(mode: BnMode) {
        let (m, x, y) = smooth_multi(SMOOTH_SEED);
        let (margin, inside) = regime(&m, &x, mode);
        println!(
            "multilayer {mode:?}: {:.0}% of z/vth inside (0,1), min live distance to a kink {margin:.3e}",
            inside * 100.0
        );
        assert!(margin > 1e-3 && inside > 0.8);
        let (a, st) = m.fixed_point(&x, 1e-13, mode);
        assert!(st.residual <= 1e-13);
        println!("  fixed point from f(0): {} iterations", st.iterations);
        let (_, grads, stats) = m.loss_and_implicit_grads(&x, &y, &a, mode);
        assert!(stats.rel_residual < 1e-12, "{}", stats.rel_residual);
        let reports = fd_check_grads(&m, &x, &y, mode, &grads);
        assert!(reports
            .iter()
            .all(|r| r.checked == grads.get(&r.name).len()));
        let worst = check_reports("multilayer", &m, mode, &reports);
        println!("  worst relative error {worst:.3e}");
    }

    #[test]
    fn implicit_gradient_running_bn_matches_finite_differences() {
        check_fd_multi(BnMode::Running);
    }

    #[test]
    fn implicit_gradient_batch_bn_matches_finite_differences() {
        check_fd_multi(BnMode::Batch);
    }

    /// The authors' initialisation and a simulated rate of `steps` steps, with running
    /// statistics set to the batch statistics of one training step at T = 30 (as after
    /// training has started; the fresh 0/1 statistics would make the inner layers unlike
    /// any trained network).
    fn realistic_multi(steps: usize) -> (Model, Vec<f64>, Vec<usize>, Vec<f64>) {
        let n = 3;
        let mut rng = Rng::new(202);
        let mut m = Model::init(&small_multi(), 8);
        m.refresh_spectral();
        set_masks(&mut m, &mut rng, n);
        let x = inputs(&mut rng, &m, n);
        let y = labels(&mut rng, n, m.spec.classes);
        let rate = m.forward_sim(&x, 30, 1.0).pop().unwrap();
        let step = m.loss_and_grads_paper(&x, &y, &rate, AdjointForm::Authors, Solver::Dense);
        m.update_running_stats(&step, 1.0);
        let rate = m.forward_sim(&x, steps, 1.0).pop().unwrap();
        (m, x, y, rate)
    }

    #[test]
    fn broyden_adjoint_matches_dense_multilayer() {
        let (m, x, y, rate) = realistic_multi(30);
        let (_, gl, _, _) = m.classifier_backward(&rate, &y);
        let cases = [
            ("broyden paper eps", Solver::PAPER_BROYDEN, 1e-6),
            (
                "broyden eps 1e-14",
                Solver::Broyden {
                    threshold: 60,
                    eps: Some(1e-14),
                },
                1e-10,
            ),
        ];
        // Batch mode couples the samples: the dense solve is one system over the batch, the
        // iterative ones per-sample estimates on the coupled product (as the authors' Broyden).
        for mode in [BnMode::Running, BnMode::Batch] {
            let (b_dense, _) = m.adjoint(&x, &rate, &gl, mode, Solver::Dense);
            for (name, solver, bound) in cases {
                let (b, s) = m.adjoint(&x, &rate, &gl, mode, solver);
                let diff = norm(&sub(&b, &b_dense)) / norm(&b_dense);
                println!(
                    "multilayer {mode:?} adjoint: {name:<18} iters {:>3}  rel residual {:.3e}  ‖β−β_dense‖/‖β_dense‖ {diff:.3e}",
                    s.iterations, s.rel_residual
                );
                assert!(diff < bound, "{mode:?} {name}: {diff}");
            }
        }
        for form in [AdjointForm::Authors, AdjointForm::Consistent] {
            let dense_step = m.loss_and_grads_paper(&x, &y, &rate, form, Solver::Dense);
            println!(
                "multilayer recipe {form:?}: dense adjoint rel residual {:.3e}",
                dense_step.solve.rel_residual
            );
            assert!(dense_step.solve.rel_residual < 1e-12);
            for (name, solver, bound) in cases {
                let step = m.loss_and_grads_paper(&x, &y, &rate, form, solver);
                let g = worst_grad_diff(&m, &step.grads, &dense_step.grads, BnMode::Batch);
                println!(
                    "    {name:<18} iters {:>3}: grads vs dense worst rel diff {g:.3e}",
                    step.solve.iterations
                );
                assert!(g < bound * 10.0);
            }
        }
    }

    /// At a simulated rate (not a fixed point) neither form is the derivative of a loss; this
    /// checks that the authors' form is exactly its definition (dense `Batch`-mode `J_fᵀ` at
    /// `f(rate)`, then `∂f/∂θ` at the rate), and shows how far the two forms lie apart.
    #[test]
    fn authors_adjoint_is_batch_mode_jacobian_at_f_of_rate() {
        let (m, x, y, rate) = realistic_multi(30);
        let step = m.loss_and_grads_paper(&x, &y, &rate, AdjointForm::Authors, Solver::Dense);
        let (_, gl, _, _) = m.classifier_backward(&rate, &y);
        let f_rate = m.f(&x, &rate, BnMode::Batch);
        let moved = norm(&sub(&f_rate, &rate)) / norm(&rate);
        assert!(moved > 1e-3, "f(rate) = rate would make the check vacuous");
        let (beta, _) = m.adjoint(&x, &f_rate, &gl, BnMode::Batch, Solver::Dense);
        let (mut want, _) = m.grads_from_adjoint(&x, &rate, &beta, BnMode::Batch);
        for name in ["classifier.weight", "classifier.bias"] {
            want.get_mut(name).copy_from_slice(step.grads.get(name));
        }
        let d = worst_grad_diff(&m, &step.grads, &want, BnMode::Batch);
        // Linearising at the rate instead changes the gradient: (b) matters.
        let (beta_at_rate, _) = m.adjoint(&x, &rate, &gl, BnMode::Batch, Solver::Dense);
        let b_diff = norm(&sub(&beta, &beta_at_rate)) / norm(&beta);
        let consistent =
            m.loss_and_grads_paper(&x, &y, &rate, AdjointForm::Consistent, Solver::Dense);
        let forms = worst_grad_diff(&m, &consistent.grads, &step.grads, BnMode::Batch);
        println!(
            "multilayer T=30: authors' recipe vs its definition {d:.1e}; ‖f(rate)−rate‖/‖rate‖ {moved:.3e}; β at f(rate) vs at rate {b_diff:.3e}; authors vs consistent grads worst rel diff {forms:.3e}"
        );
        assert!(d < 1e-12, "{d}");
        assert!(b_diff > 1e-6 && forms > 1e-3, "the forms should differ");
    }

    /// At the `Batch`-mode fixed point `f(a*) = a*`, the authors' form is a true gradient:
    /// that of the loss at the fixed point of the training-mode `f`. Checked against central
    /// finite differences of the loss through that fixed point, every parameter element.
    #[test]
    fn authors_adjoint_at_the_fixed_point_matches_finite_differences() {
        let (m, x, y) = smooth_multi(SMOOTH_SEED);
        let (margin, inside) = regime(&m, &x, BnMode::Batch);
        assert!(margin > 1e-3 && inside > 0.8, "not the smooth regime");
        let (a, st) = m.fixed_point(&x, 1e-13, BnMode::Batch);
        assert!(st.residual <= 1e-13);
        let step = m.loss_and_grads_paper(&x, &y, &a, AdjointForm::Authors, Solver::Dense);
        let reports = fd_check_grads(&m, &x, &y, BnMode::Batch, &step.grads);
        let worst = check_reports("authors form", &m, BnMode::Batch, &reports);
        println!("authors form at the Batch-mode fixed point vs finite differences: worst rel {worst:.3e}");
        // The consistent form at the same point is the derivative of another map.
        let c = m.loss_and_grads_paper(&x, &y, &a, AdjointForm::Consistent, Solver::Dense);
        println!(
            "  consistent form there: worst rel diff to the authors' {:.3e}",
            worst_grad_diff(&m, &c.grads, &step.grads, BnMode::Batch)
        );
    }

    #[test]
    fn multilayer_rate_approaches_the_fixed_point_as_t_grows() {
        let mut res = Vec::new();
        for t in [5, 30, 100] {
            let (m, x, _, rate) = realistic_multi(t);
            res.push(m.fixed_point_residual(&x, &rate, BnMode::Running));
        }
        println!(
            "multilayer IF ‖f(rate)−rate‖/‖rate‖ (Running BN) at T=5,30,100: {}",
            sci(&res)
        );
        assert!(res[0] > res[1] && res[1] > res[2], "{res:?}");
    }

    #[test]
    fn simulation_fires_layer_by_layer_with_ties() {
        // γ = 0 everywhere and no feedback: every layer's current is its BN β, constant, so
        // an IF neuron with current c fires ⌊T·c/vth⌋ times (ties fire) in every layer.
        let mut m = Model::init(&small_multi(), 3);
        m.params.get_mut("fb.scale")[0] = 0.0;
        m.params.get_mut("bn.weight").fill(0.0);
        m.params.get_mut("bn.bias").fill(1.0);
        for (i, c) in [0.5, 2.0].into_iter().enumerate() {
            m.params.get_mut(&format!("layers.{i}.bn.weight")).fill(0.0);
            m.params.get_mut(&format!("layers.{i}.bn.bias")).fill(c);
        }
        let x = Rng::new(4).vec_range(2 * m.in_dim(), -1.0, 1.0);
        let rates = m.forward_sim(&x, 7, 1.0);
        let want = [3.0 / 7.0, 1.0 / 7.0, 1.0];
        assert_eq!(rates.len(), want.len());
        for (r, w) in rates.iter().zip(want) {
            assert!(r.iter().all(|v| (v - w).abs() < 1e-15), "{w}: {r:?}");
        }
    }

    /// The transposed-conv feedback is unit-norm per output channel (dim 1), so AlexNet-F's
    /// σ̂ at initialisation is below 1 and its scale g is learnable (ALGORITHM.md §4).
    #[test]
    fn alexnet_feedback_init_is_per_output_channel_with_sigma_below_one() {
        use crate::model::spec::preset;
        let m = Model::init(&preset("alexnet-f").unwrap(), 1);
        let (r, c) = m.fb_matrix_shape();
        let cout = m.layer_shapes()[0].channels();
        let kk = c / cout;
        let w = m.params.get("fb.weight");
        for o in 0..cout {
            let mut n2 = 0.0;
            for i in 0..r {
                for t in 0..kk {
                    n2 += w[(i * cout + o) * kk + t].powi(2);
                }
            }
            assert!((n2 - 1.0).abs() < 1e-12, "output channel {o}: {n2}");
        }
        let g = m.params.get("fb.scale")[0];
        let first_step = spectral::sigma(w, r, c, &m.fb_u, &m.fb_v);
        println!(
            "alexnet-f feedback at init: g = σ(w) (10 steps) {g:.4}, σ̂ after the construction's step {first_step:.4}"
        );
        assert!(g < 1.0 && g > 0.5);
        assert!(first_step <= g + 1e-9);
    }

    // ---- Building blocks, names, presets ----

    #[test]
    fn avgpool_floors_odd_sizes_and_its_vjp_is_its_adjoint() {
        let (n, c, h, w) = (2, 2, 5, 7);
        let shape = Shape::Chw(c, h, w);
        let mut rng = Rng::new(8);
        let x = rng.vec_range(n * c * h * w, -1.0, 1.0);
        let y = avgpool_forward(shape, 2, &x);
        assert_eq!(y.len(), n * c * 2 * 3);
        // Sample 1, channel 1, output (1, 2): rows 2..4, columns 4..6 of plane 3.
        let at = |r: usize, col: usize| x[3 * h * w + r * w + col];
        let want = (at(2, 4) + at(2, 5) + at(3, 4) + at(3, 5)) / 4.0;
        assert!((y[3 * 6 + 3 + 2] - want).abs() < 1e-15);
        let g = rng.vec_range(y.len(), -1.0, 1.0);
        let gx = avgpool_backward(shape, 2, &g);
        let lhs = dot(&y, &g);
        let rhs = dot(&x, &gx);
        println!(
            "avgpool 2×5×7: ⟨pool x, g⟩ − ⟨x, poolᵀ g⟩ = {:.1e}",
            lhs - rhs
        );
        assert!((lhs - rhs).abs() < 1e-14);
        // The floor drops the last row and column: no gradient reaches them.
        for p in 0..n * c {
            for r in 0..h {
                for col in 0..w {
                    if r == h - 1 || col == w - 1 {
                        assert_eq!(gx[(p * h + r) * w + col], 0.0);
                    }
                }
            }
        }
    }

    #[test]
    fn tensors_load_by_name_in_checkpoint_order() {
        let spec = mini_alexnet();
        let mut m = Model::init(&spec, 5);
        let all: Vec<_> = spec
            .param_shapes()
            .into_iter()
            .chain(m.buffer_shapes())
            .collect();
        assert!(all.iter().any(|(k, _)| k == "layers.1.bn.running_var"));
        assert_eq!(all[all.len() - 2], ("fb.u".to_string(), vec![6]));
        assert_eq!(all[all.len() - 1], ("fb.v".to_string(), vec![4 * 9]));
        for (k, (name, shape)) in all.iter().enumerate() {
            let len: usize = shape.iter().product();
            let vals: Vec<f32> = (0..len).map(|i| (k * 1000 + i) as f32).collect();
            m.load_f32(name, &vals).unwrap();
        }
        let np = m.params.tensors.len();
        for (k, t) in m.params.tensors.iter().enumerate() {
            assert_eq!((&t.name, &t.shape), (&all[k].0, &all[k].1));
            assert_eq!(t.data[0], (k * 1000) as f64);
        }
        for (k, (name, v)) in m.buffers_mut().into_iter().enumerate() {
            assert_eq!(name, all[np + k].0);
            assert_eq!(v[v.len() - 1], ((np + k) * 1000 + v.len() - 1) as f64);
        }
        assert!(m.load_f32("layers.0.weight", &[0.0]).is_err());
        assert!(m.load_f32("layers.9.weight", &[0.0]).is_err());
        assert!(m.bias_cancelled_by_bn("fx.bias", BnMode::Running));
        assert!(!m.bias_cancelled_by_bn("layers.0.bias", BnMode::Running));
        assert!(m.bias_cancelled_by_bn("layers.0.bias", BnMode::Batch));
    }

    /// The presets build with the paper's counts: parameters, and for the multi-layer ones
    /// neurons (spiking plus input, as the paper counts them) with a transposed-conv feedback
    /// that maps layer N onto layer 1. The single-layer presets' `fb.scale` starts at the
    /// feedback weight's spectral norm, > 1, so clamp(g) = 1 at initialisation.
    #[test]
    fn presets_build_with_the_papers_counts() {
        use crate::model::spec::preset;
        let single = [
            ("fc400", Some(478_811)),
            ("conv64", Some(229_643)),
            ("conv64-nmnist", None),
            ("conv64-nmnist-p1", None),
        ];
        for (name, count) in single {
            let spec = preset(name).unwrap();
            let m = Model::init(&spec, 1);
            assert_eq!(m.params.count(), spec.param_count(), "{name}");
            let g = m.params.get("fb.scale")[0];
            println!(
                "{name}: {} parameters, fb.scale at init {g:.4}",
                m.params.count()
            );
            assert_eq!(m.params.tensors[4].name, "fb.weight", "{name}");
            if let Some(count) = count {
                assert_eq!(m.params.count(), count, "{name}");
                assert!(g > 1.0, "{name}: fb.scale {g}");
            }
            if name == "conv64" {
                assert_eq!(m.out_dim(), 64 * 14 * 14);
            }
        }
        let multi = [
            ("alexnet-f", 3_709_515, 158_720),
            ("alexnet-f-100", 5_184_165, 158_720),
            ("cifarnet-f", 11_840_011, 232_448),
            ("cifarnet-f-100", 14_789_221, 232_448),
        ];
        for (name, params, neurons) in multi {
            let spec = preset(name).unwrap();
            let m = Model::zeros(&spec);
            let count = m.in_dim() + m.dims().iter().sum::<usize>();
            println!(
                "{name}: {} classes, layer shapes {:?}: params {}, neurons {count}",
                spec.classes,
                m.layer_shapes(),
                m.params.count()
            );
            assert_eq!(m.params.count(), params, "{name}");
            assert_eq!(spec.param_count(), params, "{name}");
            assert_eq!(count, neurons, "{name}");
            let (_, h1, w1) = chw(m.layer_shapes()[0]);
            let s = m.fb_conv_t(1);
            assert_eq!((s.oh(), s.ow()), (h1, w1), "{name}: feedback onto layer 1");
        }
        let spec = small_multi();
        assert_eq!(Model::init(&spec, 1).params.count(), spec.param_count());
    }
}
