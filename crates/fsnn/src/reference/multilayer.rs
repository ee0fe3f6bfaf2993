//! The multi-layer feedback spiking model (AlexNet-F / CIFARNet-F of ALGORITHM.md §1, §2, §5),
//! its forward simulation, its equilibrium, and two gradients: the authors' training recipe
//! **\[ref\]** and the true implicit derivative.
//!
//! Neuron layers `1..N` (0-based `0..N−1` in code), all NCHW, per sample:
//!
//! ```text
//! x1        = m_x ⊙ BN_in(conv_x(x) + b_x)                    BN_in: batch statistics
//! W_eff     = clamp(g, −1, 1) · w_fb / σ̂,  σ̂ = uᵀ w_fb v         (rows = C_N, see spectral.rs)
//! z_1       = m_fb ⊙ convT(W_eff, a_N) + x1,        a_1     = σ(z_1 / vth)
//! z_{i+1}   = m_i ⊙ BN_i(conv_i(a_i) + b_i),        a_{i+1} = σ(z_{i+1} / vth)
//! f(a_N)    = a_N computed from the given a_N by the two lines above,  σ = clamp(·, 0, 1)
//! ```
//!
//! `conv_i` is `W_i` (PyTorch name `layers.{i−1}`: the ModuleList is 0-based, so `layers.0`
//! maps layer 1 to layer 2). Each inner `BN_i` runs in a [`BnMode`]: `Running` (eval mode,
//! the running statistics as constants) or `Batch` (training mode, batch statistics, which
//! couple the samples). The authors' recipe uses `Running` in the simulation and the β solve
//! and `Batch` in the one evaluation of `f` that yields `∂f/∂θ` — so its "gradient" is not
//! the derivative of any single fixed-point map; [`Model::loss_and_implicit_grads`] uses one
//! mode throughout and is the exact implicit derivative that finite differences check.
//!
//! Masks (`None` = all ones) are variational dropout, fixed per training step: `mask_x` and
//! `mask_fb` are `[n, d_1]`, `masks[i]` is `[n, d_{i+2}]` (after `layers.{i}`'s BN).

use super::adjoint::{self, SolveStats, Solver};
use super::bn::{bn_backward, bn_forward, BnCache, BN_EPS};
use super::conv::{
    conv2d, conv2d_bias_grad, conv2d_input_grad, conv2d_weight_grad, conv_transpose2d,
    conv_transpose2d_input_grad, conv_transpose2d_weight_grad, ConvShape, ConvTransposeShape,
};
use super::dense::{dot, lu_solve, max_abs, norm, softmax_cross_entropy, sub, Rng};
use super::spectral;

/// One forward convolution: output channels, square kernel, stride, zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// Output channels.
    pub cout: usize,
    /// Kernel size (square).
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes).
    pub pad: usize,
}

/// The feedback `ConvTranspose2d` from layer N to layer 1 (channels come from the layers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedbackSpec {
    /// Kernel size (square).
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub pad: usize,
    /// Output padding (`< stride`).
    pub output_padding: usize,
}

/// Architecture and the hyper-parameters that enter `f`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// `F_x`: input → layer 1.
    pub fx: ConvSpec,
    /// `W_1 … W_{N−1}`: `layers[i]` maps layer `i+1` to layer `i+2` (1-based layers).
    pub layers: Vec<ConvSpec>,
    /// Feedback from layer N back to layer 1; must reproduce layer 1's shape.
    pub fb: FeedbackSpec,
    /// Classifier outputs.
    pub classes: usize,
    /// Firing threshold.
    pub vth: f64,
}

fn c3(cout: usize, stride: usize) -> ConvSpec {
    ConvSpec {
        cout,
        k: 3,
        stride,
        pad: 1,
    }
}

impl Config {
    /// AlexNet-F on 3×32×32 (ALGORITHM.md §5): 96 (s2), 256, 384 (s2), 384, 256, all 3×3 p1;
    /// feedback ConvT 256→96 k3 s2 p1 op1; classifier 256·8·8 → `classes`; vth 2.
    pub fn alexnet_f(classes: usize) -> Self {
        Self::cifar([96, 256, 384, 384, 256], classes)
    }

    /// CIFARNet-F on 3×32×32: 128 (s2), 256, 512 (s2), 1024, 512; feedback 512→128.
    pub fn cifarnet_f(classes: usize) -> Self {
        Self::cifar([128, 256, 512, 1024, 512], classes)
    }

    fn cifar(ch: [usize; 5], classes: usize) -> Self {
        Config {
            cin: 3,
            h: 32,
            w: 32,
            fx: c3(ch[0], 2),
            layers: vec![c3(ch[1], 1), c3(ch[2], 2), c3(ch[3], 1), c3(ch[4], 1)],
            fb: FeedbackSpec {
                k: 3,
                stride: 2,
                pad: 1,
                output_padding: 1,
            },
            classes,
            vth: 2.0,
        }
    }

    /// Number of neuron layers `N`.
    pub fn num_layers(&self) -> usize {
        self.layers.len() + 1
    }

    /// `(C, H, W)` of every neuron layer, 0-based.
    pub fn layer_shapes(&self) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::with_capacity(self.num_layers());
        let s = self.fx_conv(1);
        out.push((s.cout, s.oh(), s.ow()));
        for i in 0..self.layers.len() {
            let s = self.layer_conv(i, 1, out[i]);
            out.push((s.cout, s.oh(), s.ow()));
        }
        out
    }

    /// Neurons per sample in each layer.
    pub fn dims(&self) -> Vec<usize> {
        self.layer_shapes()
            .iter()
            .map(|(c, h, w)| c * h * w)
            .collect()
    }

    /// Values per input sample.
    pub fn in_dim(&self) -> usize {
        self.cin * self.h * self.w
    }

    /// Neurons per sample of layer N (the fixed-point variable and the classifier's input).
    pub fn out_dim(&self) -> usize {
        *self.dims().last().expect("at least one layer")
    }

    /// The paper's neuron count: the input values plus every layer's neurons.
    pub fn neuron_count(&self) -> usize {
        self.in_dim() + self.dims().iter().sum::<usize>()
    }

    /// `F_x` on a batch of `n`.
    pub fn fx_conv(&self, n: usize) -> ConvShape {
        conv_shape(n, (self.cin, self.h, self.w), self.fx)
    }

    fn layer_conv(&self, i: usize, n: usize, input: (usize, usize, usize)) -> ConvShape {
        conv_shape(n, input, self.layers[i])
    }

    /// `layers.{i}` on a batch of `n` (input = 0-based layer `i`).
    pub fn layer_conv_shape(&self, i: usize, n: usize) -> ConvShape {
        self.layer_conv(i, n, self.layer_shapes()[i])
    }

    /// The feedback transposed convolution on a batch of `n`; panics unless it maps layer N's
    /// shape exactly onto layer 1's.
    pub fn fb_conv(&self, n: usize) -> ConvTransposeShape {
        let shapes = self.layer_shapes();
        let (c1, h1, w1) = shapes[0];
        let (cn, hn, wn) = shapes[shapes.len() - 1];
        let s = ConvTransposeShape {
            n,
            cin: cn,
            h: hn,
            w: wn,
            cout: c1,
            kh: self.fb.k,
            kw: self.fb.k,
            stride: self.fb.stride,
            pad: self.fb.pad,
            output_padding: self.fb.output_padding,
        };
        assert_eq!(
            (s.oh(), s.ow()),
            (h1, w1),
            "feedback does not map layer N onto layer 1"
        );
        s
    }

    /// Feedback weight viewed as the spectral-norm matrix: (rows = C_N, cols = C_1·k·k).
    pub fn fb_matrix_shape(&self) -> (usize, usize) {
        let shapes = self.layer_shapes();
        let c1 = shapes[0].0;
        let cn = shapes[shapes.len() - 1].0;
        (cn, c1 * self.fb.k * self.fb.k)
    }

    /// `(name, shape)` of every trainable parameter, in [`Params::named`] order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let shapes = self.layer_shapes();
        let c1 = shapes[0].0;
        let mut out = vec![
            ("fx.weight".into(), vec![c1, self.cin, self.fx.k, self.fx.k]),
            ("fx.bias".into(), vec![c1]),
            ("bn.weight".into(), vec![c1]),
            ("bn.bias".into(), vec![c1]),
        ];
        for (i, spec) in self.layers.iter().enumerate() {
            let cin = shapes[i].0;
            let c = spec.cout;
            out.push((format!("layers.{i}.weight"), vec![c, cin, spec.k, spec.k]));
            out.push((format!("layers.{i}.bias"), vec![c]));
            out.push((format!("layers.{i}.bn.weight"), vec![c]));
            out.push((format!("layers.{i}.bn.bias"), vec![c]));
        }
        let cn = shapes[shapes.len() - 1].0;
        out.push(("fb.weight".into(), vec![cn, c1, self.fb.k, self.fb.k]));
        out.push(("fb.scale".into(), vec![1]));
        let d = self.out_dim();
        out.push(("classifier.weight".into(), vec![self.classes, d]));
        out.push(("classifier.bias".into(), vec![self.classes]));
        out
    }

    /// `(name, shape)` of the non-trainable state, in [`Model::buffers_mut`] order.
    pub fn buffer_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let shapes = self.layer_shapes();
        let mut out = vec![
            ("bn.running_mean".into(), vec![shapes[0].0]),
            ("bn.running_var".into(), vec![shapes[0].0]),
        ];
        for (i, spec) in self.layers.iter().enumerate() {
            out.push((format!("layers.{i}.bn.running_mean"), vec![spec.cout]));
            out.push((format!("layers.{i}.bn.running_var"), vec![spec.cout]));
        }
        let (r, c) = self.fb_matrix_shape();
        out.push(("fb.u".into(), vec![r]));
        out.push(("fb.v".into(), vec![c]));
        out
    }

    /// The paper's parameter count (the spectral scale counts as one).
    pub fn param_count(&self) -> usize {
        self.param_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

fn conv_shape(n: usize, (cin, h, w): (usize, usize, usize), s: ConvSpec) -> ConvShape {
    ConvShape {
        n,
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

/// How the β solve linearises `f` in the training recipe (ALGORITHM.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdjointForm {
    /// What the authors' code runs **\[ref\]**, and what the published CIFAR numbers come
    /// from: `J_fᵀ` with the inner BNs in training mode (batch statistics and their
    /// derivative, which couples the samples), taken at `f(rate)`.
    #[default]
    Authors,
    /// `J_fᵀ` with the inner BNs' running statistics as constants (one system per sample),
    /// taken at the rate, before this step's running-statistics update.
    Consistent,
}

impl AdjointForm {
    /// The form of checkpoints that predate the choice.
    pub fn consistent() -> Self {
        AdjointForm::Consistent
    }

    /// The name used on the command line and in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            AdjointForm::Authors => "authors",
            AdjointForm::Consistent => "consistent",
        }
    }
}

impl std::str::FromStr for AdjointForm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "authors" => Ok(AdjointForm::Authors),
            "consistent" => Ok(AdjointForm::Consistent),
            _ => Err(format!(
                "unknown adjoint form `{s}` (expected `authors` or `consistent`)"
            )),
        }
    }
}

/// Which statistics a batch norm normalises with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// The running statistics, as constants (PyTorch eval mode).
    Running,
    /// The batch statistics, biased variance (PyTorch training mode); couples the samples.
    Batch,
}

/// Per-layer parameters of `layers.{i}`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParams {
    /// `layers.{i}.weight`, `[C_out, C_in, k, k]`.
    pub weight: Vec<f64>,
    /// `layers.{i}.bias`. Cancelled by BN in `Batch` mode (its gradient is then noise).
    pub bias: Vec<f64>,
    /// `layers.{i}.bn.weight` (γ).
    pub bn_weight: Vec<f64>,
    /// `layers.{i}.bn.bias` (β).
    pub bn_bias: Vec<f64>,
}

/// Trainable parameters, named as in the PyTorch model (see [`Params::named`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// `fx.weight`, `[C_1, cin, k, k]`.
    pub fx_weight: Vec<f64>,
    /// `fx.bias`; exactly cancelled by BN_in in batch mode.
    pub fx_bias: Vec<f64>,
    /// `bn.weight`.
    pub bn_weight: Vec<f64>,
    /// `bn.bias`.
    pub bn_bias: Vec<f64>,
    /// `layers.{i}.*`.
    pub layers: Vec<LayerParams>,
    /// `fb.weight`: raw ConvTranspose2d weight `[C_N, C_1, k, k]`.
    pub fb_weight: Vec<f64>,
    /// `fb.scale` (`g`, used as `clamp(g, −1, 1)`).
    pub fb_scale: f64,
    /// `classifier.weight`, `[classes, d_N]`.
    pub classifier_weight: Vec<f64>,
    /// `classifier.bias`.
    pub classifier_bias: Vec<f64>,
}

/// Gradients have the parameters' layout and names.
pub type Grads = Params;

impl Params {
    /// All-zero parameters shaped by `config`.
    pub fn zeros(config: &Config) -> Self {
        let shapes = config.layer_shapes();
        let (c1, d) = (shapes[0].0, config.out_dim());
        let (r, c) = config.fb_matrix_shape();
        Params {
            fx_weight: vec![0.0; c1 * config.cin * config.fx.k * config.fx.k],
            fx_bias: vec![0.0; c1],
            bn_weight: vec![0.0; c1],
            bn_bias: vec![0.0; c1],
            layers: config
                .layers
                .iter()
                .enumerate()
                .map(|(i, s)| LayerParams {
                    weight: vec![0.0; s.cout * shapes[i].0 * s.k * s.k],
                    bias: vec![0.0; s.cout],
                    bn_weight: vec![0.0; s.cout],
                    bn_bias: vec![0.0; s.cout],
                })
                .collect(),
            fb_weight: vec![0.0; r * c],
            fb_scale: 0.0,
            classifier_weight: vec![0.0; config.classes * d],
            classifier_bias: vec![0.0; config.classes],
        }
    }

    /// `(name, values)` of every tensor, in [`Config::param_shapes`] order.
    pub fn named(&self) -> Vec<(String, &[f64])> {
        let mut out: Vec<(String, &[f64])> = vec![
            ("fx.weight".into(), &self.fx_weight),
            ("fx.bias".into(), &self.fx_bias),
            ("bn.weight".into(), &self.bn_weight),
            ("bn.bias".into(), &self.bn_bias),
        ];
        for (i, l) in self.layers.iter().enumerate() {
            out.push((format!("layers.{i}.weight"), &l.weight));
            out.push((format!("layers.{i}.bias"), &l.bias));
            out.push((format!("layers.{i}.bn.weight"), &l.bn_weight));
            out.push((format!("layers.{i}.bn.bias"), &l.bn_bias));
        }
        out.push(("fb.weight".into(), &self.fb_weight));
        out.push(("fb.scale".into(), std::slice::from_ref(&self.fb_scale)));
        out.push(("classifier.weight".into(), &self.classifier_weight));
        out.push(("classifier.bias".into(), &self.classifier_bias));
        out
    }

    /// Mutable [`Params::named`].
    pub fn named_mut(&mut self) -> Vec<(String, &mut [f64])> {
        let mut out: Vec<(String, &mut [f64])> = vec![
            ("fx.weight".into(), &mut self.fx_weight),
            ("fx.bias".into(), &mut self.fx_bias),
            ("bn.weight".into(), &mut self.bn_weight),
            ("bn.bias".into(), &mut self.bn_bias),
        ];
        for (i, l) in self.layers.iter_mut().enumerate() {
            out.push((format!("layers.{i}.weight"), &mut l.weight));
            out.push((format!("layers.{i}.bias"), &mut l.bias));
            out.push((format!("layers.{i}.bn.weight"), &mut l.bn_weight));
            out.push((format!("layers.{i}.bn.bias"), &mut l.bn_bias));
        }
        out.push(("fb.weight".into(), &mut self.fb_weight));
        out.push(("fb.scale".into(), std::slice::from_mut(&mut self.fb_scale)));
        out.push(("classifier.weight".into(), &mut self.classifier_weight));
        out.push(("classifier.bias".into(), &mut self.classifier_bias));
        out
    }

    /// Total number of scalars.
    pub fn count(&self) -> usize {
        self.named().iter().map(|(_, v)| v.len()).sum()
    }
}

/// Running statistics of one batch norm (PyTorch initialises mean 0, var 1).
#[derive(Clone, Debug, PartialEq)]
pub struct RunningStats {
    /// `running_mean`.
    pub mean: Vec<f64>,
    /// `running_var` (unbiased, as PyTorch keeps it).
    pub var: Vec<f64>,
}

impl RunningStats {
    fn fresh(c: usize) -> Self {
        RunningStats {
            mean: vec![0.0; c],
            var: vec![1.0; c],
        }
    }

    /// PyTorch's update `r ← (1 − m)·r + m·batch`, with the batch variance made unbiased.
    pub fn update(&mut self, batch: &BatchStats, momentum: f64) {
        let k = batch.count as f64;
        let unbias = k / (k - 1.0).max(1.0);
        for c in 0..self.mean.len() {
            self.mean[c] = (1.0 - momentum) * self.mean[c] + momentum * batch.mean[c];
            self.var[c] = (1.0 - momentum) * self.var[c] + momentum * batch.var[c] * unbias;
        }
    }
}

/// Batch statistics of one batch norm in one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats {
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Biased variance per channel (what normalises).
    pub var: Vec<f64>,
    /// Values per channel, `n · H · W` (for the unbiased running update).
    pub count: usize,
}

/// The model: config, parameters, running statistics, spectral-norm vectors, dropout masks.
#[derive(Clone, Debug)]
pub struct Model {
    /// Architecture.
    pub config: Config,
    /// Trainable parameters.
    pub params: Params,
    /// `bn.running_mean/var` (used only when `input_bn` is `Running`).
    pub bn_running: RunningStats,
    /// `layers.{i}.bn.running_mean/var`.
    pub layers_running: Vec<RunningStats>,
    /// `fb.u` (length C_N), constant for the gradient.
    pub fb_u: Vec<f64>,
    /// `fb.v` (length C_1·k·k), constant for the gradient.
    pub fb_v: Vec<f64>,
    /// Mode of BN_in: `Batch` in training (the default), `Running` for evaluation.
    pub input_bn: BnMode,
    /// Dropout after BN_in, `[n, d_1]`.
    pub mask_x: Option<Vec<f64>>,
    /// Dropout after `layers.{i}`'s BN, `[n, d_{i+2}]`; one entry per inner layer.
    pub masks: Vec<Option<Vec<f64>>>,
    /// Dropout on the feedback current, `[n, d_1]`.
    pub mask_fb: Option<Vec<f64>>,
}

/// What [`Model::fixed_point`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedPointStats {
    /// Outer iterations (plain, Newton or damped steps).
    pub iterations: usize,
    /// Final `max |f(a) − a|`.
    pub residual: f64,
}

/// The output of [`Model::loss_and_grads_paper`].
#[derive(Clone, Debug)]
pub struct PaperStep {
    /// Mean cross-entropy at `rate`.
    pub loss: f64,
    /// Gradients of every parameter.
    pub grads: Grads,
    /// The β solve (against the Jacobian of the chosen [`AdjointForm`]).
    pub solve: SolveStats,
    /// BN_in's batch statistics (`None` when `input_bn` is `Running`).
    pub bn_in: Option<BatchStats>,
    /// Each inner BN's batch statistics in the gradient evaluation: where the running
    /// statistics are updated.
    pub layers_bn: Vec<BatchStats>,
}

/// The `a_N`-independent part of `f` for one batch.
struct Prepared {
    n: usize,
    x1: Vec<f64>,
    bn_in: BnCache,
    w_eff: Vec<f64>,
    sigma: f64,
}

/// One evaluation of `f`: per layer the σ argument `z/vth`, the activation and the BN cache.
struct Eval {
    mode: BnMode,
    zv: Vec<Vec<f64>>,
    act: Vec<Vec<f64>>,
    bn: Vec<BnCache>,
}

fn mask_at(mask: &Option<Vec<f64>>, i: usize) -> f64 {
    mask.as_ref().map_or(1.0, |m| m[i])
}

fn sigma_on(zv: f64) -> bool {
    zv > 0.0 && zv < 1.0
}

/// BN forward in `mode` on the output of the convolution `s`. In `Running` mode the cache
/// holds the running statistics, so the backward pass below needs only the mode to know
/// which formula applies.
fn bn_apply(
    mode: BnMode,
    x: &[f64],
    s: &ConvShape,
    gamma: &[f64],
    beta: &[f64],
    running: &RunningStats,
) -> (Vec<f64>, BnCache) {
    let (n, c, spatial) = (s.n, s.cout, s.oh() * s.ow());
    match mode {
        BnMode::Batch => bn_forward(x, n, c, spatial, gamma, beta),
        BnMode::Running => {
            let inv_std: Vec<f64> = running
                .var
                .iter()
                .map(|v| 1.0 / (v + BN_EPS).sqrt())
                .collect();
            let mut xhat = vec![0.0; x.len()];
            let mut y = vec![0.0; x.len()];
            for i in 0..x.len() {
                let ch = (i / spatial) % c;
                xhat[i] = (x[i] - running.mean[ch]) * inv_std[ch];
                y[i] = gamma[ch] * xhat[i] + beta[ch];
            }
            let cache = BnCache {
                xhat,
                inv_std,
                mean: running.mean.clone(),
                var: running.var.clone(),
            };
            (y, cache)
        }
    }
}

/// `(∂L/∂x, ∂L/∂γ, ∂L/∂β)`; in `Running` mode the statistics are constants, so the input
/// gradient is a per-channel scaling and does not couple the samples.
fn bn_back(
    mode: BnMode,
    gy: &[f64],
    s: &ConvShape,
    gamma: &[f64],
    cache: &BnCache,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, c, spatial) = (s.n, s.cout, s.oh() * s.ow());
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

/// Scales each row of a row-major `rows × cols` matrix to unit L2 norm.
fn unit_rows(w: &mut [f64], cols: usize) {
    for row in w.chunks_mut(cols) {
        let n = norm(row);
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v /= n);
        }
    }
}

/// The buffers by name; a free function so that it can borrow alongside `params`.
fn buffer_slots<'a>(
    bn_running: &'a mut RunningStats,
    layers_running: &'a mut [RunningStats],
    fb_u: &'a mut [f64],
    fb_v: &'a mut [f64],
) -> Vec<(String, &'a mut [f64])> {
    let mut out: Vec<(String, &mut [f64])> = vec![
        ("bn.running_mean".into(), &mut bn_running.mean),
        ("bn.running_var".into(), &mut bn_running.var),
    ];
    for (i, r) in layers_running.iter_mut().enumerate() {
        out.push((format!("layers.{i}.bn.running_mean"), &mut r.mean));
        out.push((format!("layers.{i}.bn.running_var"), &mut r.var));
    }
    out.push(("fb.u".into(), fb_u));
    out.push(("fb.v".into(), fb_v));
    out
}

impl Model {
    /// The authors' initialisation **\[ref\]** (as [`super::feedback::Model::init`]): SNN
    /// weights U(−1, 1) with unit-norm output rows, biases 0, γ = 1, β = 0, running mean 0 /
    /// var 1, classifier U(±1/√d_N), the feedback ConvT's weight unit-norm per output
    /// channel, `fb.scale`, `fb.u`, `fb.v` as [`spectral::init_authors`]. No masks.
    pub fn init(config: Config, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut params = Params::zeros(&config);
        let shapes = config.layer_shapes();
        let fan_fx = config.cin * config.fx.k * config.fx.k;
        params.fx_weight = rng.vec_range(params.fx_weight.len(), -1.0, 1.0);
        unit_rows(&mut params.fx_weight, fan_fx);
        params.bn_weight.fill(1.0);
        for (i, l) in params.layers.iter_mut().enumerate() {
            let spec = config.layers[i];
            l.weight = rng.vec_range(l.weight.len(), -1.0, 1.0);
            unit_rows(&mut l.weight, shapes[i].0 * spec.k * spec.k);
            l.bn_weight.fill(1.0);
        }
        let (r, c) = config.fb_matrix_shape();
        params.fb_weight = rng.vec_range(r * c, -1.0, 1.0);
        // `[C_N, C_1, k, k]`: the unit-norm slices are per output channel, dim 1 (§4).
        unit_output_channels(&mut params.fb_weight, r, shapes[0].0, c / shapes[0].0);
        let d = config.out_dim();
        let bound = 1.0 / (d as f64).sqrt();
        params.classifier_weight = rng.vec_range(config.classes * d, -bound, bound);
        params.classifier_bias = rng.vec_range(config.classes, -bound, bound);
        let (u, v, scale) = spectral::init_authors(&mut rng, &params.fb_weight, r, c);
        params.fb_scale = scale;
        let layers_running = config
            .layers
            .iter()
            .map(|s| RunningStats::fresh(s.cout))
            .collect();
        Model {
            bn_running: RunningStats::fresh(shapes[0].0),
            layers_running,
            fb_u: u,
            fb_v: v,
            input_bn: BnMode::Batch,
            mask_x: None,
            masks: vec![None; config.layers.len()],
            mask_fb: None,
            params,
            config,
        }
    }

    /// `(name, values)` of the non-trainable state, in [`Config::buffer_shapes`] order.
    pub fn buffers_mut(&mut self) -> Vec<(String, &mut [f64])> {
        buffer_slots(
            &mut self.bn_running,
            &mut self.layers_running,
            &mut self.fb_u,
            &mut self.fb_v,
        )
    }

    /// Sets the parameter or state tensor `name` (a PyTorch / checkpoint name) from f32
    /// values; errors on an unknown name or a wrong length.
    pub fn load_f32(&mut self, name: &str, values: &[f32]) -> Result<(), String> {
        let mut slots = self.params.named_mut();
        slots.extend(buffer_slots(
            &mut self.bn_running,
            &mut self.layers_running,
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
        let (r, c) = self.config.fb_matrix_shape();
        (self.fb_u, self.fb_v) = spectral::power_step(&self.params.fb_weight, r, c, &self.fb_u);
    }

    /// `(W_eff, σ̂)`.
    pub fn effective_feedback_weight(&self) -> (Vec<f64>, f64) {
        let (r, c) = self.config.fb_matrix_shape();
        let p = &self.params;
        spectral::effective_weight(&p.fb_weight, r, c, p.fb_scale, &self.fb_u, &self.fb_v)
    }

    /// Batch size of an input batch `x` (`[n, cin, h, w]`).
    pub fn batch_size(&self, x: &[f64]) -> usize {
        let k = self.config.in_dim();
        assert_eq!(x.len() % k, 0, "input length is not a multiple of in_dim");
        x.len() / k
    }

    fn check_masks(&self, n: usize) {
        let dims = self.config.dims();
        assert_eq!(
            self.masks.len(),
            self.config.layers.len(),
            "one mask per W_i"
        );
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

    fn prepare(&self, x: &[f64]) -> Prepared {
        let n = self.batch_size(x);
        self.check_masks(n);
        let cfg = &self.config;
        let p = &self.params;
        let s = cfg.fx_conv(n);
        let pre = conv2d(&s, x, &p.fx_weight, Some(&p.fx_bias));
        let (y, bn_in) = bn_apply(
            self.input_bn,
            &pre,
            &s,
            &p.bn_weight,
            &p.bn_bias,
            &self.bn_running,
        );
        let x1 = y
            .iter()
            .enumerate()
            .map(|(i, v)| mask_at(&self.mask_x, i) * v)
            .collect();
        let (w_eff, sigma) = self.effective_feedback_weight();
        Prepared {
            n,
            x1,
            bn_in,
            w_eff,
            sigma,
        }
    }

    /// `m_fb ⊙ convT(W_eff, a_N)`.
    fn feedback(&self, p: &Prepared, a_n: &[f64]) -> Vec<f64> {
        let mut h = conv_transpose2d(&self.config.fb_conv(p.n), a_n, &p.w_eff, None);
        for (i, v) in h.iter_mut().enumerate() {
            *v *= mask_at(&self.mask_fb, i);
        }
        h
    }

    /// `m_i ⊙ BN_i(conv_i(a_i) + b_i)`: the input current of layer `i + 1` (0-based).
    fn layer_current(&self, i: usize, n: usize, a: &[f64], mode: BnMode) -> (Vec<f64>, BnCache) {
        let s = self.config.layer_conv_shape(i, n);
        let l = &self.params.layers[i];
        let pre = conv2d(&s, a, &l.weight, Some(&l.bias));
        let (mut y, cache) = bn_apply(
            mode,
            &pre,
            &s,
            &l.bn_weight,
            &l.bn_bias,
            &self.layers_running[i],
        );
        for (k, v) in y.iter_mut().enumerate() {
            *v *= mask_at(&self.masks[i], k);
        }
        (y, cache)
    }

    fn eval(&self, p: &Prepared, a_n: &[f64], mode: BnMode) -> Eval {
        let vth = self.config.vth;
        let clamp = |zv: &[f64]| zv.iter().map(|v| v.clamp(0.0, 1.0)).collect::<Vec<f64>>();
        let fb = self.feedback(p, a_n);
        let zv0: Vec<f64> = fb.iter().zip(&p.x1).map(|(h, x)| (h + x) / vth).collect();
        let mut act = vec![clamp(&zv0)];
        let mut zv = vec![zv0];
        let mut bn = Vec::with_capacity(self.config.layers.len());
        for i in 0..self.config.layers.len() {
            let (y, cache) = self.layer_current(i, p.n, &act[i], mode);
            let z: Vec<f64> = y.iter().map(|v| v / vth).collect();
            act.push(clamp(&z));
            zv.push(z);
            bn.push(cache);
        }
        Eval { mode, zv, act, bn }
    }

    /// Backpropagates `β` (a cotangent of `f`'s output) through the evaluation `ev` at
    /// `a_n`. Returns `J_fᵀβ`, and when `params` is set also `(∂f/∂θ)ᵀβ` for every
    /// parameter of `f` (classifier entries 0). `x` is needed only for `fx.weight`.
    fn backward(
        &self,
        p: &Prepared,
        ev: &Eval,
        x: &[f64],
        a_n: &[f64],
        beta: &[f64],
        params: bool,
    ) -> (Vec<f64>, Option<Grads>) {
        let cfg = &self.config;
        let vth = cfg.vth;
        let n = p.n;
        let mut grads = params.then(|| Params::zeros(cfg));
        // ∂L/∂z for a layer: σ' mask and the 1/vth scaling.
        let through_sigma = |g: &[f64], zv: &[f64]| -> Vec<f64> {
            g.iter()
                .zip(zv)
                .map(|(g, &z)| if sigma_on(z) { g / vth } else { 0.0 })
                .collect()
        };
        let mut g = beta.to_vec();
        for i in (0..cfg.layers.len()).rev() {
            let gz = through_sigma(&g, &ev.zv[i + 1]);
            let gy: Vec<f64> = gz
                .iter()
                .enumerate()
                .map(|(k, v)| v * mask_at(&self.masks[i], k))
                .collect();
            let s = cfg.layer_conv_shape(i, n);
            let l = &self.params.layers[i];
            let (g_pre, gg, gb) = bn_back(ev.mode, &gy, &s, &l.bn_weight, &ev.bn[i]);
            if let Some(gr) = grads.as_mut() {
                let gl = &mut gr.layers[i];
                gl.weight = conv2d_weight_grad(&s, &ev.act[i], &g_pre);
                gl.bias = conv2d_bias_grad(&s, &g_pre);
                gl.bn_weight = gg;
                gl.bn_bias = gb;
            }
            g = conv2d_input_grad(&s, &l.weight, &g_pre);
        }
        let gz1 = through_sigma(&g, &ev.zv[0]);
        let gh: Vec<f64> = gz1
            .iter()
            .enumerate()
            .map(|(k, v)| v * mask_at(&self.mask_fb, k))
            .collect();
        let fb = cfg.fb_conv(n);
        let jt_beta = conv_transpose2d_input_grad(&fb, &p.w_eff, &gh);
        if let Some(gr) = grads.as_mut() {
            let gx1: Vec<f64> = gz1
                .iter()
                .enumerate()
                .map(|(k, v)| v * mask_at(&self.mask_x, k))
                .collect();
            let s = cfg.fx_conv(n);
            let prm = &self.params;
            let (g_pre, gg, gb) = bn_back(self.input_bn, &gx1, &s, &prm.bn_weight, &p.bn_in);
            gr.fx_weight = conv2d_weight_grad(&s, x, &g_pre);
            gr.fx_bias = conv2d_bias_grad(&s, &g_pre);
            gr.bn_weight = gg;
            gr.bn_bias = gb;
            let g_weff = conv_transpose2d_weight_grad(&fb, a_n, &gh);
            let (_, cols) = cfg.fb_matrix_shape();
            (gr.fb_weight, gr.fb_scale) = spectral::backward(
                &prm.fb_weight,
                cols,
                prm.fb_scale,
                &self.fb_u,
                &self.fb_v,
                p.sigma,
                &g_weff,
            );
        }
        (jt_beta, grads)
    }

    /// `f(a_N)` for the batch `x` with the inner BNs in `mode`.
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

    /// The forward simulation of ALGORITHM.md §1 for `steps` steps (IF: `leak = 1`); inner
    /// BNs use the running statistics **\[ref\]**, BN_in uses `input_bn`. Returns every
    /// layer's rate `[n, d_i]`; the last is `rate_N`.
    ///
    /// Spikes fire when `u ≥ vth`, reset by subtraction, then leak. Layer 1 integrates `x1`
    /// plus the feedback of layer N's spikes of the previous step; layer `i+1` integrates the
    /// current driven by layer `i`'s spikes of the same step.
    pub fn forward_sim(&self, x: &[f64], steps: usize, leak: f64) -> Vec<Vec<f64>> {
        assert!(steps > 0);
        let p = self.prepare(x);
        let vth = self.config.vth;
        let big_n = self.config.num_layers();
        let dims = self.config.dims();
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
        for t in 0..steps {
            let mut cur = p.x1.clone();
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

    /// How the adjoint system splits: `Running` is one system per sample; `Batch` couples the
    /// samples through the batch statistics, so it is one system over the whole batch.
    fn systems(&self, n: usize, mode: BnMode) -> (usize, usize) {
        let d = self.config.out_dim();
        match mode {
            BnMode::Running => (n, d),
            BnMode::Batch => (1, n * d),
        }
    }

    /// `J_f` at `a` for each independent system (see [`Model::systems`]), dense row-major,
    /// assembled from `J_fᵀ` products with unit vectors and transposed.
    fn jacobians(&self, p: &Prepared, ev: &Eval, a: &[f64]) -> Vec<Vec<f64>> {
        let (sys, dim) = self.systems(p.n, ev.mode);
        let mut jac = vec![vec![0.0; dim * dim]; sys];
        let mut e = vec![0.0; sys * dim];
        for j in 0..dim {
            for s in 0..sys {
                e[s * dim + j] = 1.0;
            }
            // Row j of J_f (= column j of J_fᵀ) of every system.
            let (col, _) = self.backward(p, ev, &[], a, &e, false);
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
        let start = self.eval(&p, &vec![0.0; p.n * self.config.out_dim()], mode);
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

    /// Each iteration takes the plain step `a ← f(a)` if it at least halves the residual
    /// (cheap, and contractive in the regimes the tests use); otherwise a Newton step with
    /// the dense Jacobian (exact for piecewise-linear `f` once the active set is right),
    /// and if that does not help either, the damped step `a ← ½a + ½f(a)`. Panics after 500
    /// iterations.
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
        let d = self.config.out_dim();
        let k = self.config.classes;
        let p = &self.params;
        let mut out = Vec::with_capacity(a_n.len() / d * k);
        for sample in a_n.chunks(d) {
            for c in 0..k {
                out.push(
                    dot(&p.classifier_weight[c * d..(c + 1) * d], sample) + p.classifier_bias[c],
                );
            }
        }
        out
    }

    /// Mean softmax cross-entropy on the rates `a_N`.
    pub fn loss(&self, a_n: &[f64], labels: &[usize]) -> f64 {
        softmax_cross_entropy(&self.logits(a_n), self.config.classes, labels).0
    }

    /// `(loss, ∂L/∂a_N, ∂L/∂classifier.weight, ∂L/∂classifier.bias)`.
    fn classifier_backward(
        &self,
        a_n: &[f64],
        labels: &[usize],
    ) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
        let d = self.config.out_dim();
        let k = self.config.classes;
        assert_eq!(a_n.len(), labels.len() * d, "rate must be [n, d_N]");
        let (loss, dl) = softmax_cross_entropy(&self.logits(a_n), k, labels);
        let mut gw = vec![0.0; k * d];
        let mut gb = vec![0.0; k];
        let mut ga = vec![0.0; a_n.len()];
        for (s, sample) in a_n.chunks(d).enumerate() {
            for c in 0..k {
                let g = dl[s * k + c];
                gb[c] += g;
                let w = &self.params.classifier_weight[c * d..(c + 1) * d];
                for j in 0..d {
                    gw[c * d + j] += g * sample[j];
                    ga[s * d + j] += g * w[j];
                }
            }
        }
        (loss, ga, gw, gb)
    }

    /// Solves `β = J_fᵀβ + gL` at `rate` with the inner BNs in `mode`. `Running`: one system
    /// per sample (what the GPU solves); `Batch`: one system over the whole batch (the
    /// Broyden eps is then `2e-10·sqrt(n·d)` all the same).
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
        let op = |beta: &[f64]| self.backward(&p, &ev, x, rate, beta, false).0;
        // The dense solve needs independent systems; the iterative ones keep one estimate per
        // sample under one global stopping rule even where `op` couples the samples, as the
        // authors' batched Broyden does.
        let (sys, dim) = match solver {
            Solver::Dense => self.systems(p.n, mode),
            _ => (p.n, self.config.out_dim()),
        };
        adjoint::solve(solver, sys, dim, &op, gl)
    }

    /// `(∂f(rate; θ)/∂θ)ᵀ β` with the inner BNs in `mode` (classifier entries 0), and the
    /// batch statistics of that evaluation (empty in `Running` mode).
    pub fn grads_from_adjoint(
        &self,
        x: &[f64],
        rate: &[f64],
        beta: &[f64],
        mode: BnMode,
    ) -> (Grads, Vec<BatchStats>) {
        let p = self.prepare(x);
        let ev = self.eval(&p, rate, mode);
        let (_, grads) = self.backward(&p, &ev, x, rate, beta, true);
        let stats = match mode {
            BnMode::Running => Vec::new(),
            BnMode::Batch => ev
                .bn
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let s = self.config.layer_conv_shape(i, p.n);
                    BatchStats {
                        mean: c.mean.clone(),
                        var: c.var.clone(),
                        count: p.n * s.oh() * s.ow(),
                    }
                })
                .collect(),
        };
        (grads.expect("asked for parameter gradients"), stats)
    }

    /// The training recipe's gradient: β from the adjoint system of `form`, then one
    /// `Batch`-mode evaluation of `f` at `rate` backpropagated with β (its own σ' masks and
    /// the batch-coupled BN backward).
    ///
    /// [`AdjointForm::Authors`] **\[ref\]**: `J_fᵀ` of the `Batch`-mode `f` at `f(rate)`.
    /// At a `Batch`-mode fixed point (`f(rate) = rate`) this is the exact implicit derivative
    /// of the loss; at a simulated rate it is not the derivative of anything, only what the
    /// authors compute. [`AdjointForm::Consistent`]: `J_fᵀ` of the `Running`-mode `f` at the
    /// rate (the running statistics as they are before this step updates them).
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
        grads.classifier_weight = gw;
        grads.classifier_bias = gb;
        let bn_in = (self.input_bn == BnMode::Batch).then(|| {
            let p = self.prepare(x);
            let s = self.config.fx_conv(p.n);
            BatchStats {
                mean: p.bn_in.mean,
                var: p.bn_in.var,
                count: p.n * s.oh() * s.ow(),
            }
        });
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
        if let Some(b) = &step.bn_in {
            self.bn_running.update(b, momentum);
        }
        for (r, b) in self.layers_running.iter_mut().zip(&step.layers_bn) {
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
        grads.classifier_weight = gw;
        grads.classifier_bias = gb;
        (loss, grads, stats)
    }
}

#[cfg(test)]
mod tests {
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

    /// Input 2×8×8 → 3×8×8 (k3 s1 p1) → 4×4×4 (k3 s2 p1) → 3×4×4 (k3 s1 p1), feedback
    /// ConvT 3→3 k3 s2 p1 op1 back to 3×8×8.
    fn small_config() -> Config {
        Config {
            cin: 2,
            h: 8,
            w: 8,
            fx: c3(3, 1),
            layers: vec![c3(4, 2), c3(3, 1)],
            fb: FeedbackSpec {
                k: 3,
                stride: 2,
                pad: 1,
                output_padding: 1,
            },
            classes: 3,
            vth: 2.0,
        }
    }

    fn set_masks(m: &mut Model, rng: &mut Rng, n: usize) {
        let dims = m.config.dims();
        m.mask_x = Some(dropout_mask(rng, n * dims[0], 0.2));
        m.mask_fb = Some(dropout_mask(rng, n * dims[0], 0.2));
        m.masks = (1..dims.len())
            .map(|i| Some(dropout_mask(rng, n * dims[i], 0.2)))
            .collect();
    }

    fn inputs(rng: &mut Rng, m: &Model, n: usize) -> Vec<f64> {
        // A per-sample offset keeps the batch statistics nontrivial.
        let k = m.config.in_dim();
        (0..n * k)
            .map(|i| rng.normal() + (i / k) as f64 * 0.3)
            .collect()
    }

    /// The smooth regime: every BN has small γ and β ≈ vth/2, so each `z/vth` sits near ½
    /// (or near ⅝ under a 1.25 dropout scale); the feedback scale 0.3 < 1 keeps `fb.scale`'s
    /// gradient live. Running statistics are the batch statistics at the batch-mode fixed
    /// point, jittered, so that the two modes are close but not equal.
    fn smooth(seed: u64) -> (Model, Vec<f64>, Vec<usize>) {
        let n = 3;
        let mut rng = Rng::new(seed);
        let mut m = Model::init(small_config(), 7);
        let vth = m.config.vth;
        let c1 = m.params.bn_weight.len();
        m.params.bn_weight = rng.vec_range(c1, 0.1, 0.2);
        m.params.bn_bias = rng.vec_range(c1, 0.4 * vth, 0.6 * vth);
        m.params.fx_bias = rng.vec_range(c1, -0.5, 0.5);
        for l in m.params.layers.iter_mut() {
            let c = l.bias.len();
            l.bias = rng.vec_range(c, -0.5, 0.5);
            l.bn_weight = rng.vec_range(c, 0.1, 0.2);
            l.bn_bias = rng.vec_range(c, 0.4 * vth, 0.6 * vth);
        }
        m.params.fb_scale = 0.3;
        set_masks(&mut m, &mut rng, n);
        let x = inputs(&mut rng, &m, n);
        let y = labels(&mut rng, n, m.config.classes);
        let (a, _) = m.fixed_point(&x, 1e-12, BnMode::Batch);
        let beta = vec![0.0; a.len()];
        let (_, stats) = m.grads_from_adjoint(&x, &a, &beta, BnMode::Batch);
        for (r, b) in m.layers_running.iter_mut().zip(&stats) {
            r.mean = b.mean.iter().map(|v| v + rng.range(-0.05, 0.05)).collect();
            r.var = b.var.iter().map(|v| v * rng.range(0.8, 1.25)).collect();
        }
        (m, x, y)
    }

    /// Smallest distance of a live `z/vth` from σ's kinks at the fixed point, and the fraction
    /// strictly inside (0, 1). A neuron whose every input mask is 0 has `z ≡ 0`, and so does
    /// a feedback-only layer-1 neuron (`m_x = 0`) whose whole receptive field in layer N is
    /// masked: no perturbation moves them, so an exact 0 is not counted.
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

    struct FdReport {
        name: String,
        rel: f64,
        abs: f64,
        scale: f64,
    }

    /// Implicit gradients (dense adjoint) against central differences of the loss through
    /// the fixed point solved to 1e-13, for every parameter element.
    fn fd_check(m: &Model, x: &[f64], y: &[usize], mode: BnMode) -> Vec<FdReport> {
        let (a, st) = m.fixed_point(x, 1e-13, mode);
        assert!(st.residual <= 1e-13);
        let (_, grads, stats) = m.loss_and_implicit_grads(x, y, &a, mode);
        assert!(stats.rel_residual < 1e-12, "{}", stats.rel_residual);
        fd_check_grads(m, x, y, mode, &grads)
    }

    /// `grads` against central differences of the loss through the `mode` fixed point.
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
        for (k, (name, g)) in grads.named().into_iter().enumerate() {
            let mut fd = vec![0.0; g.len()];
            for (i, fdi) in fd.iter_mut().enumerate() {
                let eval = |delta: f64| {
                    let mut mm = m.clone();
                    mm.params.named_mut()[k].1[i] += delta;
                    let (ap, _) = mm.fixed_point_from(x, &a, TOL, mode);
                    mm.loss(&ap, y)
                };
                *fdi = (eval(H) - eval(-H)) / (2.0 * H);
            }
            let abs = max_abs(&sub(g, &fd));
            let scale = max_abs(&fd);
            out.push(FdReport {
                name,
                rel: abs / scale,
                abs,
                scale,
            });
        }
        out
    }

    /// Biases that a batch-statistics BN right after them cancels exactly.
    fn cancelled(name: &str, mode: BnMode) -> bool {
        name == "fx.bias"
            || (mode == BnMode::Batch
                && name.starts_with("layers.")
                && name.ends_with(".bias")
                && !name.ends_with("bn.bias"))
    }

    /// A seed whose fixed points keep every live z/vth ≥ 1e-3 from σ's kinks in both modes
    /// (with the per-output-channel feedback initialisation).
    const SMOOTH_SEED: u64 = 179;

    fn check_fd(mode: BnMode) {
        let (m, x, y) = smooth(SMOOTH_SEED);
        let (margin, inside) = regime(&m, &x, mode);
        println!(
            "multilayer {mode:?}: {:.0}% of z/vth inside (0,1), min live distance to a kink {margin:.3e}",
            inside * 100.0
        );
        assert!(margin > 1e-3 && inside > 0.8);
        let (_, st) = m.fixed_point(&x, 1e-13, mode);
        println!("  fixed point from f(0): {} iterations", st.iterations);
        let mut worst: f64 = 0.0;
        for r in fd_check(&m, &x, &y, mode) {
            if cancelled(&r.name, mode) {
                println!(
                    "  {:<22} (cancelled by BN) max|g−fd| {:.3e}  max|fd| {:.3e}",
                    r.name, r.abs, r.scale
                );
                assert!(r.scale < 1e-8 && r.abs < 1e-8, "{} not ~0", r.name);
            } else {
                println!(
                    "  {:<22} rel {:.3e}  abs {:.3e}  max|fd| {:.3e}",
                    r.name, r.rel, r.abs, r.scale
                );
                assert!(r.scale > 1e-6, "{} gradient vanishes; vacuous", r.name);
                assert!(r.rel < 1e-4, "{} relative error {}", r.name, r.rel);
                worst = worst.max(r.rel);
            }
        }
        println!("  worst relative error {worst:.3e}");
    }

    #[test]
    fn implicit_gradient_running_bn_matches_finite_differences() {
        check_fd(BnMode::Running);
    }

    #[test]
    fn implicit_gradient_batch_bn_matches_finite_differences() {
        check_fd(BnMode::Batch);
    }

    /// The authors' initialisation and a simulated rate of `steps` steps, with running
    /// statistics set to the batch statistics of one training step at T = 30 (as after
    /// training has started; the fresh 0/1 statistics would make the inner layers unlike
    /// any trained network).
    fn realistic(steps: usize) -> (Model, Vec<f64>, Vec<usize>, Vec<f64>) {
        let n = 3;
        let mut rng = Rng::new(202);
        let mut m = Model::init(small_config(), 8);
        m.refresh_spectral();
        set_masks(&mut m, &mut rng, n);
        let x = inputs(&mut rng, &m, n);
        let y = labels(&mut rng, n, m.config.classes);
        let rate = m.forward_sim(&x, 30, 1.0).pop().unwrap();
        let step = m.loss_and_grads_paper(&x, &y, &rate, AdjointForm::Authors, Solver::Dense);
        m.update_running_stats(&step, 1.0);
        let rate = m.forward_sim(&x, steps, 1.0).pop().unwrap();
        (m, x, y, rate)
    }

    fn worst_grad_diff(a: &Grads, b: &Grads) -> f64 {
        a.named()
            .iter()
            .zip(b.named().iter())
            .filter(|((name, _), _)| !cancelled(name, BnMode::Batch))
            .map(|((_, a), (_, b))| max_abs(&sub(a, b)) / max_abs(b).max(1e-300))
            .fold(0.0, f64::max)
    }

    #[test]
    fn broyden_adjoint_matches_dense_multilayer() {
        let (m, x, y, rate) = realistic(30);
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
                let g = worst_grad_diff(&step.grads, &dense_step.grads);
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
        let (m, x, y, rate) = realistic(30);
        let step = m.loss_and_grads_paper(&x, &y, &rate, AdjointForm::Authors, Solver::Dense);
        let (_, gl, _, _) = m.classifier_backward(&rate, &y);
        let f_rate = m.f(&x, &rate, BnMode::Batch);
        let moved = norm(&sub(&f_rate, &rate)) / norm(&rate);
        assert!(moved > 1e-3, "f(rate) = rate would make the check vacuous");
        let (beta, _) = m.adjoint(&x, &f_rate, &gl, BnMode::Batch, Solver::Dense);
        let (grads, _) = m.grads_from_adjoint(&x, &rate, &beta, BnMode::Batch);
        let mut want = grads;
        want.classifier_weight = step.grads.classifier_weight.clone();
        want.classifier_bias = step.grads.classifier_bias.clone();
        let d = worst_grad_diff(&step.grads, &want);
        assert!(d < 1e-12, "{d}");
        // Linearising at the rate instead changes the gradient: (b) matters.
        let (beta_at_rate, _) = m.adjoint(&x, &rate, &gl, BnMode::Batch, Solver::Dense);
        let b_diff = norm(&sub(&beta, &beta_at_rate)) / norm(&beta);
        let consistent =
            m.loss_and_grads_paper(&x, &y, &rate, AdjointForm::Consistent, Solver::Dense);
        let forms = worst_grad_diff(&consistent.grads, &step.grads);
        println!(
            "multilayer T=30: ‖f(rate)−rate‖/‖rate‖ {moved:.3e}; β at f(rate) vs at rate {b_diff:.3e}; authors vs consistent grads worst rel diff {forms:.3e}"
        );
        assert!(b_diff > 1e-6 && forms > 1e-3, "the forms should differ");
    }

    /// At the `Batch`-mode fixed point `f(a*) = a*`, the authors' form is a true gradient:
    /// that of the loss at the fixed point of the training-mode `f`. Checked against central
    /// finite differences of the loss through that fixed point, every parameter element.
    #[test]
    fn authors_adjoint_at_the_fixed_point_matches_finite_differences() {
        let (m, x, y) = smooth(SMOOTH_SEED);
        let (margin, inside) = regime(&m, &x, BnMode::Batch);
        assert!(margin > 1e-3 && inside > 0.8, "not the smooth regime");
        let (a, st) = m.fixed_point(&x, 1e-13, BnMode::Batch);
        assert!(st.residual <= 1e-13);
        let step = m.loss_and_grads_paper(&x, &y, &a, AdjointForm::Authors, Solver::Dense);
        let mut worst: f64 = 0.0;
        for r in fd_check_grads(&m, &x, &y, BnMode::Batch, &step.grads) {
            if cancelled(&r.name, BnMode::Batch) {
                assert!(r.scale < 1e-8 && r.abs < 1e-8, "{} not ~0", r.name);
                continue;
            }
            println!(
                "  authors form {:<22} rel {:.3e}  max|fd| {:.3e}",
                r.name, r.rel, r.scale
            );
            assert!(r.scale > 1e-6, "{} gradient vanishes; vacuous", r.name);
            assert!(r.rel < 1e-4, "{} relative error {}", r.name, r.rel);
            worst = worst.max(r.rel);
        }
        println!("authors form at the Batch-mode fixed point vs finite differences: worst rel {worst:.3e}");
        // The consistent form at the same point is the derivative of another map.
        let c = m.loss_and_grads_paper(&x, &y, &a, AdjointForm::Consistent, Solver::Dense);
        println!(
            "  consistent form there: worst rel diff to the authors' {:.3e}",
            worst_grad_diff(&c.grads, &step.grads)
        );
    }

    /// The transposed-conv feedback is unit-norm per output channel (dim 1), so AlexNet-F's
    /// σ̂ at initialisation is below 1 and its scale g is learnable (ALGORITHM.md §4).
    #[test]
    fn alexnet_feedback_init_is_per_output_channel_with_sigma_below_one() {
        let m = Model::init(Config::alexnet_f(10), 1);
        let (r, c) = m.config.fb_matrix_shape();
        let cout = m.config.layer_shapes()[0].0;
        let kk = c / cout;
        for o in 0..cout {
            let mut n2 = 0.0;
            for i in 0..r {
                for t in 0..kk {
                    n2 += m.params.fb_weight[(i * cout + o) * kk + t].powi(2);
                }
            }
            assert!((n2 - 1.0).abs() < 1e-12, "output channel {o}: {n2}");
        }
        let first_step = spectral::sigma(&m.params.fb_weight, r, c, &m.fb_u, &m.fb_v);
        println!(
            "alexnet-f feedback at init: g = σ(w) (10 steps) {:.4}, σ̂ after the construction's step {first_step:.4}",
            m.params.fb_scale
        );
        assert!(m.params.fb_scale < 1.0 && m.params.fb_scale > 0.5);
        assert!(first_step <= m.params.fb_scale + 1e-9);
    }

    #[test]
    fn multilayer_rate_approaches_the_fixed_point_as_t_grows() {
        let mut res = Vec::new();
        for t in [5, 30, 100] {
            let (m, x, _, rate) = realistic(t);
            res.push(m.fixed_point_residual(&x, &rate, BnMode::Running));
        }
        println!(
            "multilayer IF ‖f(rate)−rate‖/‖rate‖ (Running BN) at T=5,30,100: {:.3e}, {:.3e}, {:.3e}",
            res[0], res[1], res[2]
        );
        assert!(res[0] > res[1] && res[1] > res[2], "{res:?}");
    }

    #[test]
    fn simulation_fires_layer_by_layer_with_ties() {
        // γ = 0 everywhere and no feedback: every layer's current is its BN β, constant, so
        // an IF neuron with current c fires ⌊T·c/vth⌋ times (ties fire) in every layer.
        let mut m = Model::init(small_config(), 3);
        m.params.fb_scale = 0.0;
        m.params.bn_weight.fill(0.0);
        m.params.bn_bias.fill(1.0);
        let levels = [0.5, 2.0];
        for (l, c) in m.params.layers.iter_mut().zip(levels) {
            l.bn_weight.fill(0.0);
            l.bn_bias.fill(c);
        }
        let x = Rng::new(4).vec_range(2 * m.config.in_dim(), -1.0, 1.0);
        let rates = m.forward_sim(&x, 7, 1.0);
        let want = [3.0 / 7.0, 1.0 / 7.0, 1.0];
        for (r, w) in rates.iter().zip(want) {
            assert!(r.iter().all(|v| (v - w).abs() < 1e-15), "{w}: {r:?}");
        }
    }

    #[test]
    fn multilayer_paper_parameter_and_neuron_counts() {
        let cases = [
            (Config::alexnet_f(10), 3_709_515, 158_720),
            (Config::alexnet_f(100), 5_184_165, 158_720),
            (Config::cifarnet_f(10), 11_840_011, 232_448),
            (Config::cifarnet_f(100), 14_789_221, 232_448),
        ];
        for (c, params, neurons) in cases {
            println!(
                "{} classes, channels {:?}: params {}, neurons {}",
                c.classes,
                c.layer_shapes(),
                c.param_count(),
                c.neuron_count()
            );
            assert_eq!(c.param_count(), params);
            assert_eq!(c.neuron_count(), neurons);
            c.fb_conv(1);
        }
        let m = Model::init(small_config(), 1);
        assert_eq!(m.params.count(), m.config.param_count());
    }

    #[test]
    fn multilayer_tensors_load_by_name() {
        let mut m = Model::init(small_config(), 5);
        let cfg = m.config.clone();
        let all: Vec<_> = cfg
            .param_shapes()
            .into_iter()
            .chain(cfg.buffer_shapes())
            .collect();
        for (k, (name, shape)) in all.iter().enumerate() {
            let len: usize = shape.iter().product();
            let vals: Vec<f32> = (0..len).map(|i| (k * 1000 + i) as f32).collect();
            m.load_f32(name, &vals).unwrap();
        }
        let mut seen = 0;
        for (k, (name, v)) in m.params.named().into_iter().enumerate() {
            assert_eq!(name, all[k].0);
            assert_eq!(v[0], (k * 1000) as f64);
            seen += 1;
        }
        for (k, (name, v)) in m.buffers_mut().into_iter().enumerate() {
            assert_eq!(name, all[seen + k].0);
            assert_eq!(v[v.len() - 1], ((seen + k) * 1000 + v.len() - 1) as f64);
        }
        assert!(m.load_f32("layers.0.weight", &[0.0]).is_err());
        assert!(m.load_f32("layers.9.weight", &[0.0]).is_err());
    }
}
