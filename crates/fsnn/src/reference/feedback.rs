//! The single-layer feedback spiking model, generic over how `F_x` and `W_s` are computed
//! (dense in [`super::fc`], convolutional in [`super::convnet`]).
//!
//! Per sample, with `d` neurons:
//!
//! ```text
//! x1    = m_x ⊙ BN(F_pre(x))                    BN: training mode, batch statistics
//! W_eff = clamp(g, −1, 1) · w / σ̂,  σ̂ = uᵀ w v   (u, v fixed, see spectral.rs)
//! f(a)  = σ( (m_fb ⊙ (W_eff a) + x1) / vth ),     σ(z) = clamp(z, 0, 1)
//! ```
//!
//! `m_x` and `m_fb` are the variational-dropout masks (0 or 1/(1−p) per sample and neuron,
//! `None` = all ones): `m_x` multiplies the output of `F_x` (after BN), `m_fb` multiplies the
//! output of `W_s`, before the two currents are added — where the authors' code puts its
//! dropout layers. The same masks are used at every time step, in `f`, and in the adjoint.
//!
//! All batched arrays are row-major `[batch, …]` with each sample's `d` neurons contiguous
//! (for the conv variant, channel-major `C × H × W`).

use super::adjoint::{self, SolveStats, Solver};
use super::bn::{bn_backward, bn_forward, BnCache};
use super::dense::{lu_solve, max_abs, norm, softmax_cross_entropy, sub, Rng};
use super::spectral;

/// How `F_x`'s pre-BN output and the feedback product are computed.
///
/// All functions are batched over `n` samples. Weights are row-major with the first
/// tensor dimension as rows (output units / output channels), as the spectral
/// normalisation and the initialisation view them.
pub trait Arch: Clone + std::fmt::Debug {
    /// Values per input sample.
    fn in_dim(&self) -> usize;
    /// Neurons per sample, `d`.
    fn dim(&self) -> usize;
    /// Batch-norm channels; `dim()` must be a multiple, each channel's values contiguous.
    fn bn_channels(&self) -> usize;
    /// `F_x` weight as a matrix: (output units, fan-in).
    fn fx_weight_shape(&self) -> (usize, usize);
    /// Feedback weight as a matrix: (output units, fan-in).
    fn fb_weight_shape(&self) -> (usize, usize);
    /// `F_pre(x)` = linear/conv of `x` plus bias (one bias per BN channel), `n × d`.
    fn fx_forward(&self, n: usize, x: &[f64], weight: &[f64], bias: &[f64]) -> Vec<f64>;
    /// `(∂L/∂weight, ∂L/∂bias)` of [`Arch::fx_forward`] given `∂L/∂F_pre`.
    fn fx_backward(&self, n: usize, x: &[f64], g_pre: &[f64]) -> (Vec<f64>, Vec<f64>);
    /// `W a` per sample (no bias).
    fn fb_forward(&self, n: usize, w: &[f64], a: &[f64]) -> Vec<f64>;
    /// `Wᵀ g` per sample.
    fn fb_transpose(&self, n: usize, w: &[f64], g: &[f64]) -> Vec<f64>;
    /// `∂L/∂W` of `W a` given `g = ∂L/∂(W a)`, summed over the batch.
    fn fb_weight_grad(&self, n: usize, a: &[f64], g: &[f64]) -> Vec<f64>;
}

/// Trainable parameters, named as in the PyTorch model.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// `fx.weight`: `[H, in]` (fc) or `[C, Cin, K, K]` (conv).
    pub fx_weight: Vec<f64>,
    /// `fx.bias`: one per BN channel. Exactly cancelled by BN; its gradient is rounding noise.
    pub fx_bias: Vec<f64>,
    /// `bn.weight` (γ), one per channel.
    pub bn_weight: Vec<f64>,
    /// `bn.bias` (β), one per channel.
    pub bn_bias: Vec<f64>,
    /// `fb.weight`: the raw feedback weight `w`, `[H, H]` or `[C, C, K, K]`.
    pub fb_weight: Vec<f64>,
    /// `fb.scale`: the spectral-norm scale `g` (used as `clamp(g, −1, 1)`).
    pub fb_scale: f64,
    /// `classifier.weight`: `[classes, d]`.
    pub classifier_weight: Vec<f64>,
    /// `classifier.bias`: `[classes]`.
    pub classifier_bias: Vec<f64>,
}

/// Gradients have the same layout and names as the parameters.
pub type Grads = Params;

impl Params {
    /// PyTorch names, in the order [`Params::named`] returns them.
    pub const NAMES: [&'static str; 8] = [
        "fx.weight",
        "fx.bias",
        "bn.weight",
        "bn.bias",
        "fb.weight",
        "fb.scale",
        "classifier.weight",
        "classifier.bias",
    ];

    /// `(name, values)` for every parameter tensor (`fb.scale` as a 1-element slice).
    pub fn named(&self) -> [(&'static str, &[f64]); 8] {
        let n = Self::NAMES;
        [
            (n[0], &self.fx_weight),
            (n[1], &self.fx_bias),
            (n[2], &self.bn_weight),
            (n[3], &self.bn_bias),
            (n[4], &self.fb_weight),
            (n[5], std::slice::from_ref(&self.fb_scale)),
            (n[6], &self.classifier_weight),
            (n[7], &self.classifier_bias),
        ]
    }

    /// Mutable [`Params::named`], e.g. for finite differences or an optimiser step.
    pub fn named_mut(&mut self) -> [(&'static str, &mut [f64]); 8] {
        let n = Self::NAMES;
        [
            (n[0], &mut self.fx_weight),
            (n[1], &mut self.fx_bias),
            (n[2], &mut self.bn_weight),
            (n[3], &mut self.bn_bias),
            (n[4], &mut self.fb_weight),
            (n[5], std::slice::from_mut(&mut self.fb_scale)),
            (n[6], &mut self.classifier_weight),
            (n[7], &mut self.classifier_bias),
        ]
    }

    /// Total number of scalars (the paper's parameter count).
    pub fn count(&self) -> usize {
        self.named().iter().map(|(_, v)| v.len()).sum()
    }
}

/// The model: architecture, hyper-parameters that enter `f`, parameters, the fixed
/// spectral-norm vectors and the current dropout masks.
#[derive(Clone, Debug)]
pub struct Model<A: Arch> {
    /// Layer sizes and how `F_x` and `W_s` are computed.
    pub arch: A,
    /// Classifier outputs.
    pub classes: usize,
    /// Firing threshold (paper: 2.0). It is part of `f`, so it lives on the model.
    pub vth: f64,
    /// Trainable parameters.
    pub params: Params,
    /// Spectral-norm `u` (length = feedback rows), a constant for the gradient.
    pub fb_u: Vec<f64>,
    /// Spectral-norm `v` (length = feedback fan-in), a constant for the gradient.
    pub fb_v: Vec<f64>,
    /// Dropout mask after `F_x`, `[batch, d]`; `None` = all ones (evaluation / no dropout).
    pub mask_x: Option<Vec<f64>>,
    /// Dropout mask on the output of `W_s`, `[batch, d]`; `None` = all ones.
    pub mask_fb: Option<Vec<f64>>,
}

/// Everything about `f` that does not depend on `a`, computed once per batch.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Batch size.
    pub n: usize,
    /// `x1 = m_x ⊙ BN(F_pre(x))`, `[n, d]`.
    pub x1: Vec<f64>,
    /// Batch-norm statistics of this batch.
    pub bn: BnCache,
    /// `W_eff`.
    pub w_eff: Vec<f64>,
    /// `σ̂ = uᵀ w v`.
    pub sigma: f64,
}

/// What [`Model::fixed_point`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedPointStats {
    /// Outer iterations (Newton or damped steps).
    pub iterations: usize,
    /// Final `max |f(a) − a|`.
    pub residual: f64,
}

fn mask_at(mask: &Option<Vec<f64>>, i: usize) -> f64 {
    mask.as_ref().map_or(1.0, |m| m[i])
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

impl<A: Arch> Model<A> {
    /// The authors' initialisation **\[ref\]**: `fx.weight` and `fb.weight` U(−1, 1) with each
    /// output unit's weight vector scaled to unit L2 norm, biases 0, γ = 1, β = 0; classifier
    /// weight and bias U(±1/√d); `fb.scale` and `fb_u`, `fb_v` as
    /// [`spectral::init_authors`] (call [`Model::refresh_spectral`] before every forward
    /// pass, training or evaluation, as the authors' hook does).
    pub fn init(arch: A, classes: usize, vth: f64, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let d = arch.dim();
        let c = arch.bn_channels();
        let (fr, fc) = arch.fx_weight_shape();
        let mut fx_weight = rng.vec_range(fr * fc, -1.0, 1.0);
        unit_rows(&mut fx_weight, fc);
        let (br, bc) = arch.fb_weight_shape();
        let mut fb_weight = rng.vec_range(br * bc, -1.0, 1.0);
        unit_rows(&mut fb_weight, bc);
        let bound = 1.0 / (d as f64).sqrt();
        let classifier_weight = rng.vec_range(classes * d, -bound, bound);
        let classifier_bias = rng.vec_range(classes, -bound, bound);
        let (fb_u, fb_v, fb_scale) = spectral::init_authors(&mut rng, &fb_weight, br, bc);
        Model {
            arch,
            classes,
            vth,
            params: Params {
                fx_weight,
                fx_bias: vec![0.0; c],
                bn_weight: vec![1.0; c],
                bn_bias: vec![0.0; c],
                fb_weight,
                fb_scale,
                classifier_weight,
                classifier_bias,
            },
            fb_u,
            fb_v,
            mask_x: None,
            mask_fb: None,
        }
    }

    /// One power-iteration step from the current `fb_u`, as done once per training forward
    /// pass before the simulation (`v = normalize(wᵀu)`, `u = normalize(w v)`).
    pub fn refresh_spectral(&mut self) {
        let (r, c) = self.arch.fb_weight_shape();
        (self.fb_u, self.fb_v) = spectral::power_step(&self.params.fb_weight, r, c, &self.fb_u);
    }

    /// Batch size of an input batch `x` (`[n, in_dim]`).
    pub fn batch_size(&self, x: &[f64]) -> usize {
        let k = self.arch.in_dim();
        assert_eq!(x.len() % k, 0, "input length is not a multiple of in_dim");
        x.len() / k
    }

    /// `(W_eff, σ̂)`.
    pub fn effective_feedback_weight(&self) -> (Vec<f64>, f64) {
        let (r, c) = self.arch.fb_weight_shape();
        let p = &self.params;
        spectral::effective_weight(&p.fb_weight, r, c, p.fb_scale, &self.fb_u, &self.fb_v)
    }

    /// Computes the `a`-independent parts of `f` for the batch `x`.
    pub fn prepare(&self, x: &[f64]) -> Prepared {
        let n = self.batch_size(x);
        let d = self.arch.dim();
        let c = self.arch.bn_channels();
        let p = &self.params;
        let pre = self.arch.fx_forward(n, x, &p.fx_weight, &p.fx_bias);
        let (y, bn) = bn_forward(&pre, n, c, d / c, &p.bn_weight, &p.bn_bias);
        self.check_masks(n);
        let x1 = y
            .iter()
            .enumerate()
            .map(|(i, v)| mask_at(&self.mask_x, i) * v)
            .collect();
        let (w_eff, sigma) = self.effective_feedback_weight();
        Prepared {
            n,
            x1,
            bn,
            w_eff,
            sigma,
        }
    }

    fn check_masks(&self, n: usize) {
        let len = n * self.arch.dim();
        for m in [&self.mask_x, &self.mask_fb].into_iter().flatten() {
            assert_eq!(m.len(), len, "dropout mask must be [batch, d]");
        }
    }

    /// `m_fb ⊙ (W_eff a)`.
    fn feedback(&self, p: &Prepared, a: &[f64]) -> Vec<f64> {
        let mut h = self.arch.fb_forward(p.n, &p.w_eff, a);
        for (i, v) in h.iter_mut().enumerate() {
            *v *= mask_at(&self.mask_fb, i);
        }
        h
    }

    fn preactivation_prepared(&self, p: &Prepared, a: &[f64]) -> Vec<f64> {
        let h = self.feedback(p, a);
        h.iter()
            .zip(&p.x1)
            .map(|(h, x1)| (h + x1) / self.vth)
            .collect()
    }

    /// `z = (m_fb ⊙ (W_eff a) + x1) / vth`, the argument of σ (for checking the regime).
    pub fn preactivation(&self, x: &[f64], a: &[f64]) -> Vec<f64> {
        self.preactivation_prepared(&self.prepare(x), a)
    }

    fn f_prepared(&self, p: &Prepared, a: &[f64]) -> Vec<f64> {
        let mut z = self.preactivation_prepared(p, a);
        z.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        z
    }

    /// `f(a) = σ(z)` for the batch `x`.
    pub fn f(&self, x: &[f64], a: &[f64]) -> Vec<f64> {
        self.f_prepared(&self.prepare(x), a)
    }

    /// The forward simulation of ALGORITHM.md §1 for `steps` time steps (IF: `leak = 1`,
    /// LIF: `0 < leak < 1`); returns the firing rate `[n, d]`.
    ///
    /// Spikes fire when `u ≥ vth` (ties fire), reset is by subtraction, and the leak is
    /// applied after the reset; the rate is `Σ_t λ^(T−t) s_t / Σ_{k<T} λ^k`.
    pub fn forward_sim(&self, x: &[f64], steps: usize, leak: f64) -> Vec<f64> {
        assert!(steps > 0);
        let p = self.prepare(x);
        let len = p.x1.len();
        let mut u = vec![0.0; len];
        let mut s = vec![0.0; len];
        let mut acc = vec![0.0; len];
        for t in 0..steps {
            // The first step's feedback is of s = 0; skipping the product keeps it exactly 0.
            let fb = if t == 0 {
                vec![0.0; len]
            } else {
                self.feedback(&p, &s)
            };
            for i in 0..len {
                u[i] += fb[i] + p.x1[i];
                s[i] = if u[i] >= self.vth { 1.0 } else { 0.0 };
                u[i] = leak * (u[i] - self.vth * s[i]);
                acc[i] = leak * acc[i] + s[i];
            }
        }
        let denom: f64 = (0..steps).map(|k| leak.powi(k as i32)).sum();
        acc.iter().map(|a| a / denom).collect()
    }

    /// `‖f(rate) − rate‖ / ‖rate‖` over the batch: how far a simulated rate is from the
    /// equilibrium.
    pub fn fixed_point_residual(&self, x: &[f64], rate: &[f64]) -> f64 {
        norm(&sub(&self.f(x, rate), rate)) / norm(rate)
    }

    /// `J_f` of sample `s` as a dense row-major `d × d` matrix, for every sample, at `a`:
    /// `J_f[i][j] = 1[0 < z_i < 1] · m_fb_i · W_eff[i][j] / vth`.
    fn forward_jacobians(&self, p: &Prepared, a: &[f64]) -> Vec<Vec<f64>> {
        let d = self.arch.dim();
        let z = self.preactivation_prepared(p, a);
        let mut jac = vec![vec![0.0; d * d]; p.n];
        let mut e = vec![0.0; p.n * d];
        for j in 0..d {
            for s in 0..p.n {
                e[s * d + j] = 1.0;
            }
            // Column j of m_fb ⊙ W_eff, for every sample.
            let col = self.feedback(p, &e);
            for s in 0..p.n {
                e[s * d + j] = 0.0;
                for i in 0..d {
                    let k = s * d + i;
                    let on = z[k] > 0.0 && z[k] < 1.0;
                    jac[s][i * d + j] = if on { col[k] / self.vth } else { 0.0 };
                }
            }
        }
        jac
    }

    /// Solves `a = f(a)` to `max |f(a) − a| ≤ tol` (test ground truth, not the method's
    /// solver). Each iteration tries a Newton step on the piecewise-linear `f` (exact in one
    /// step once the active set is right) and falls back to the damped step
    /// `a ← ½a + ½f(a)` when Newton does not reduce the residual. Panics after 500
    /// iterations. Each Newton step costs `d` feedback products and a `d × d` LU per
    /// sample: meant for test-sized models.
    pub fn fixed_point(&self, x: &[f64], tol: f64) -> (Vec<f64>, FixedPointStats) {
        let p = self.prepare(x);
        let d = self.arch.dim();
        let mut a = self.f_prepared(&p, &vec![0.0; p.x1.len()]);
        for it in 0..500 {
            let r = sub(&self.f_prepared(&p, &a), &a);
            let res = max_abs(&r);
            if res <= tol {
                return (
                    a,
                    FixedPointStats {
                        iterations: it,
                        residual: res,
                    },
                );
            }
            let jac = self.forward_jacobians(&p, &a);
            let mut cand = a.clone();
            let mut ok = true;
            for (s, js) in jac.iter().enumerate() {
                let mut m: Vec<f64> = js.iter().map(|v| -v).collect();
                (0..d).for_each(|i| m[i * d + i] += 1.0);
                match lu_solve(&m, d, &r[s * d..(s + 1) * d]) {
                    Some(delta) => (0..d).for_each(|i| cand[s * d + i] += delta[i]),
                    None => ok = false,
                }
            }
            let better = ok && max_abs(&sub(&self.f_prepared(&p, &cand), &cand)) < res;
            if better {
                a = cand;
            } else {
                a.iter_mut().zip(&r).for_each(|(v, r)| *v += 0.5 * r);
            }
        }
        panic!("fixed_point did not reach tol {tol} in 500 iterations");
    }

    /// Classifier logits `W_c a + b_c`, `[n, classes]`.
    pub fn logits(&self, a: &[f64]) -> Vec<f64> {
        let d = self.arch.dim();
        let k = self.classes;
        let p = &self.params;
        let mut out = Vec::with_capacity(a.len() / d * k);
        for sample in a.chunks(d) {
            for c in 0..k {
                let w = &p.classifier_weight[c * d..(c + 1) * d];
                out.push(super::dense::dot(w, sample) + p.classifier_bias[c]);
            }
        }
        out
    }

    /// Mean softmax cross-entropy of the classifier on the rates `a`.
    pub fn loss(&self, a: &[f64], labels: &[usize]) -> f64 {
        softmax_cross_entropy(&self.logits(a), self.classes, labels).0
    }

    /// The loss with `a` the fixed point solved to `tol` — the function whose finite
    /// differences the implicit gradient must match.
    pub fn loss_at_fixed_point(&self, x: &[f64], labels: &[usize], tol: f64) -> f64 {
        self.loss(&self.fixed_point(x, tol).0, labels)
    }

    /// `(loss, ∂L/∂a, classifier grads)`: the classifier's own backward pass.
    fn classifier_backward(
        &self,
        a: &[f64],
        labels: &[usize],
    ) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
        let d = self.arch.dim();
        let k = self.classes;
        let (loss, dl) = softmax_cross_entropy(&self.logits(a), k, labels);
        let mut gw = vec![0.0; k * d];
        let mut gb = vec![0.0; k];
        let mut ga = vec![0.0; a.len()];
        for (s, sample) in a.chunks(d).enumerate() {
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

    /// `1[0 < z < 1] · m_fb / vth` at `rate`: the diagonal that, with `W_effᵀ`, makes up
    /// `J_fᵀ β = W_effᵀ (m_fb ⊙ σ'(z) ⊙ β) / vth`.
    fn adjoint_diagonal(&self, p: &Prepared, rate: &[f64]) -> Vec<f64> {
        let z = self.preactivation_prepared(p, rate);
        z.iter()
            .enumerate()
            .map(|(i, &z)| {
                if z > 0.0 && z < 1.0 {
                    mask_at(&self.mask_fb, i) / self.vth
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Solves `β = J_fᵀβ + gL` at `rate` with `solver`.
    pub fn adjoint(
        &self,
        x: &[f64],
        rate: &[f64],
        gl: &[f64],
        solver: Solver,
    ) -> (Vec<f64>, SolveStats) {
        let p = self.prepare(x);
        let diag = self.adjoint_diagonal(&p, rate);
        let op = |beta: &[f64]| -> Vec<f64> {
            let g: Vec<f64> = beta.iter().zip(&diag).map(|(b, m)| b * m).collect();
            self.arch.fb_transpose(p.n, &p.w_eff, &g)
        };
        adjoint::solve(solver, p.n, self.arch.dim(), &op, gl)
    }

    /// `(∂f(rate; θ)/∂θ)ᵀ β` for every parameter of `f` (classifier entries are 0): one
    /// backward pass of `f` at `rate`, including the batch-norm paths through the batch
    /// statistics and the spectral-norm path through σ̂.
    pub fn grads_from_adjoint(&self, x: &[f64], rate: &[f64], beta: &[f64]) -> Grads {
        let p = self.prepare(x);
        let n = p.n;
        let d = self.arch.dim();
        let c = self.arch.bn_channels();
        let z = self.preactivation_prepared(&p, rate);
        // ∂L/∂z through σ and the 1/vth scaling.
        let gz: Vec<f64> = beta
            .iter()
            .zip(&z)
            .map(|(b, &z)| {
                if z > 0.0 && z < 1.0 {
                    b / self.vth
                } else {
                    0.0
                }
            })
            .collect();
        let gy: Vec<f64> = (0..gz.len())
            .map(|i| gz[i] * mask_at(&self.mask_x, i))
            .collect();
        let gh: Vec<f64> = (0..gz.len())
            .map(|i| gz[i] * mask_at(&self.mask_fb, i))
            .collect();
        let prm = &self.params;
        let (g_pre, bn_weight, bn_bias) = bn_backward(&gy, n, c, d / c, &prm.bn_weight, &p.bn);
        let (fx_weight, fx_bias) = self.arch.fx_backward(n, x, &g_pre);
        let g_weff = self.arch.fb_weight_grad(n, rate, &gh);
        let (_, cols) = self.arch.fb_weight_shape();
        let (fb_weight, fb_scale) = spectral::backward(
            &prm.fb_weight,
            cols,
            prm.fb_scale,
            &self.fb_u,
            &self.fb_v,
            p.sigma,
            &g_weff,
        );
        Grads {
            fx_weight,
            fx_bias,
            bn_weight,
            bn_bias,
            fb_weight,
            fb_scale,
            classifier_weight: vec![0.0; prm.classifier_weight.len()],
            classifier_bias: vec![0.0; prm.classifier_bias.len()],
        }
    }

    /// The method's training gradient with the exact (dense) adjoint solve:
    /// `rate` (from [`Model::forward_sim`], or the fixed point) is taken as `a*`.
    pub fn loss_and_implicit_grads(
        &self,
        x: &[f64],
        labels: &[usize],
        rate: &[f64],
    ) -> (f64, Grads, SolveStats) {
        self.loss_and_implicit_grads_with(x, labels, rate, Solver::Dense)
    }

    /// [`Model::loss_and_implicit_grads`] with a chosen adjoint solver.
    pub fn loss_and_implicit_grads_with(
        &self,
        x: &[f64],
        labels: &[usize],
        rate: &[f64],
        solver: Solver,
    ) -> (f64, Grads, SolveStats) {
        assert_eq!(labels.len(), self.batch_size(x));
        assert_eq!(rate.len(), labels.len() * self.arch.dim());
        let (loss, gl, gw, gb) = self.classifier_backward(rate, labels);
        let (beta, stats) = self.adjoint(x, rate, &gl, solver);
        let mut grads = self.grads_from_adjoint(x, rate, &beta);
        grads.classifier_weight = gw;
        grads.classifier_bias = gb;
        (loss, grads, stats)
    }
}
