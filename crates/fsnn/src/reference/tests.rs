//! Model-level checks: implicit gradients against finite differences through the fixed
//! point, adjoint solvers against the dense solve, and the simulation against the
//! equilibrium. Run with `--nocapture` to see the measured errors.

use super::adjoint::{self, Solver};
use super::convnet::{self, Conv};
use super::dense::{max_abs, norm, sub, Rng};
use super::fc;
use super::feedback::{Arch, Model, Params};

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

/// Puts the model in the smooth regime: small γ and β ≈ vth/2 keep `x1/vth` near ½, and a
/// small spectral scale keeps the feedback current small. The scale stays inside (−1, 1)
/// so that its gradient is not clamped away.
fn make_smooth<A: Arch>(m: &mut Model<A>, rng: &mut Rng, gamma: (f64, f64)) {
    let c = m.arch.bn_channels();
    m.params.bn_weight = rng.vec_range(c, gamma.0, gamma.1);
    m.params.bn_bias = rng.vec_range(c, 0.4 * m.vth, 0.6 * m.vth);
    m.params.fx_bias = rng.vec_range(c, -0.5, 0.5);
    m.params.fb_scale = 0.3;
}

/// Smallest distance of the preactivation at the fixed point from σ's kinks, and the
/// fraction of neurons strictly inside (0, 1). Neurons whose both dropout masks are 0 are
/// skipped: their `z` is identically 0, not near a kink that a perturbation could cross.
fn regime<A: Arch>(m: &Model<A>, x: &[f64]) -> (f64, f64) {
    let (a, _) = m.fixed_point(x, 1e-13);
    let z = m.preactivation(x, &a);
    let at = |mask: &Option<Vec<f64>>, i: usize| mask.as_ref().map_or(1.0, |v| v[i]);
    let live: Vec<f64> = (0..z.len())
        .filter(|&i| at(&m.mask_x, i) != 0.0 || at(&m.mask_fb, i) != 0.0)
        .map(|i| z[i])
        .collect();
    let margin = live
        .iter()
        .map(|z| z.abs().min((z - 1.0).abs()))
        .fold(f64::INFINITY, f64::min);
    let inside = z.iter().filter(|&&z| z > 0.0 && z < 1.0).count() as f64 / z.len() as f64;
    (margin, inside)
}

struct FdReport {
    name: &'static str,
    /// `max |g_implicit − g_fd| / max |g_fd|` over the tensor.
    rel: f64,
    /// `max |g_implicit − g_fd|`.
    abs: f64,
    /// `max |g_fd|`.
    scale: f64,
}

/// Implicit gradients at the fixed point (dense adjoint) against central differences of the
/// loss through the fixed point solved to 1e-13, for every parameter element.
fn fd_check<A: Arch>(model: &Model<A>, x: &[f64], labels: &[usize]) -> Vec<FdReport> {
    const TOL: f64 = 1e-13;
    const H: f64 = 1e-5;
    let (a, st) = model.fixed_point(x, TOL);
    assert!(st.residual <= TOL);
    let (_, grads, stats) = model.loss_and_implicit_grads(x, labels, &a);
    assert!(
        stats.rel_residual < 1e-12,
        "dense adjoint residual {}",
        stats.rel_residual
    );
    let mut out = Vec::new();
    for (k, (name, g)) in grads.named().into_iter().enumerate() {
        let mut fd = vec![0.0; g.len()];
        for (i, fdi) in fd.iter_mut().enumerate() {
            let eval = |delta: f64| {
                let mut m = model.clone();
                m.params.named_mut()[k].1[i] += delta;
                m.loss_at_fixed_point(x, labels, TOL)
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

fn print_and_check(what: &str, reports: &[FdReport]) {
    println!("{what}: implicit gradient vs finite differences through the fixed point");
    for r in reports {
        if r.name == "fx.bias" {
            println!(
                "  {:<18} (cancelled by BN) max|g_implicit − g_fd| {:.3e}  max|g_fd| {:.3e}",
                r.name, r.abs, r.scale
            );
            // Both gradients are rounding noise around 0.
            assert!(r.scale < 1e-8 && r.abs < 1e-8, "fx.bias gradient not ~0");
        } else {
            println!(
                "  {:<18} rel {:.3e}  abs {:.3e}  max|g_fd| {:.3e}",
                r.name, r.rel, r.abs, r.scale
            );
            assert!(
                r.scale > 1e-6,
                "{} has a vanishing gradient; test is vacuous",
                r.name
            );
            assert!(r.rel < 1e-4, "{} relative error {}", r.name, r.rel);
        }
    }
}

fn smooth_fc() -> (fc::Model, Vec<f64>, Vec<usize>) {
    let (in_dim, hidden, classes, n) = (5, 6, 3, 4);
    let mut rng = Rng::new(11);
    let mut m = fc::Model::new(in_dim, hidden, classes, 2.0, 21);
    make_smooth(&mut m, &mut rng, (0.1, 0.3));
    m.mask_x = Some(dropout_mask(&mut rng, n * hidden, 0.2));
    m.mask_fb = Some(dropout_mask(&mut rng, n * hidden, 0.2));
    let x = rng.vec_range(n * in_dim, -1.0, 1.0);
    let y = labels(&mut rng, n, classes);
    (m, x, y)
}

fn small_conv_arch() -> Conv {
    Conv {
        cin: 1,
        h: 8,
        w: 8,
        channels: 3,
        k_in: 5,
        stride_in: 2,
        pad_in: 2,
        k_fb: 3,
    }
}

fn smooth_conv() -> (convnet::Model, Vec<f64>, Vec<usize>) {
    let (classes, n) = (3, 3);
    let mut rng = Rng::new(12);
    let mut m = convnet::Model::new(small_conv_arch(), classes, 2.0, 22);
    make_smooth(&mut m, &mut rng, (0.05, 0.15));
    let d = m.arch.dim();
    m.mask_x = Some(dropout_mask(&mut rng, n * d, 0.2));
    m.mask_fb = Some(dropout_mask(&mut rng, n * d, 0.2));
    let x = rng.vec_range(n * m.arch.in_dim(), -1.0, 1.0);
    let y = labels(&mut rng, n, classes);
    (m, x, y)
}

#[test]
fn fc_implicit_gradient_matches_finite_differences() {
    let (m, x, y) = smooth_fc();
    let (margin, inside) = regime(&m, &x);
    println!(
        "fc smooth regime: {:.0}% inside (0,1), min distance to a kink {margin:.3e}",
        inside * 100.0
    );
    assert!(margin > 1e-3 && inside > 0.8);
    print_and_check("fc", &fd_check(&m, &x, &y));
}

#[test]
fn conv_implicit_gradient_matches_finite_differences() {
    let (m, x, y) = smooth_conv();
    let (margin, inside) = regime(&m, &x);
    println!(
        "conv smooth regime: {:.0}% inside (0,1), min distance to a kink {margin:.3e}",
        inside * 100.0
    );
    assert!(margin > 1e-3 && inside > 0.8);
    print_and_check("conv", &fd_check(&m, &x, &y));
}

/// A training-like setting (initialisation as the authors', dropout on, rate from a short
/// simulation, many neurons saturated) where the adjoint is nontrivial.
fn realistic<A: Arch>(
    mut m: Model<A>,
    n: usize,
    steps: usize,
    seed: u64,
) -> (Model<A>, Vec<f64>, Vec<usize>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let d = m.arch.dim();
    m.mask_x = Some(dropout_mask(&mut rng, n * d, 0.2));
    m.mask_fb = Some(dropout_mask(&mut rng, n * d, 0.2));
    // Inputs with a per-sample offset so the batch statistics are not trivial.
    let k = m.arch.in_dim();
    let x: Vec<f64> = (0..n * k)
        .map(|i| rng.normal() + (i / k) as f64 * 0.3)
        .collect();
    let y = labels(&mut rng, n, m.classes);
    let rate = m.forward_sim(&x, steps, 1.0);
    (m, x, y, rate)
}

fn check_solvers<A: Arch>(what: &str, m: &Model<A>, x: &[f64], y: &[usize], rate: &[f64]) {
    let (_, g_dense, s_dense) = m.loss_and_implicit_grads(x, y, rate);
    let gl = classifier_gl(m, rate, y);
    let (b_dense, _) = m.adjoint(x, rate, &gl, Solver::Dense);
    println!(
        "{what}: dense adjoint rel residual {:.3e}",
        s_dense.rel_residual
    );
    assert!(s_dense.rel_residual < 1e-13);
    let cases = [
        ("broyden paper eps", Solver::PAPER_BROYDEN, 1e-6),
        (
            "broyden eps 1e-14",
            Solver::Broyden {
                threshold: 30,
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
    ];
    for (name, solver, bound) in cases {
        let (b, s) = m.adjoint(x, rate, &gl, solver);
        let diff = norm(&sub(&b, &b_dense)) / norm(&b_dense);
        let (_, g, _) = m.loss_and_implicit_grads_with(x, y, rate, solver);
        let gdiff = g
            .named()
            .iter()
            .zip(g_dense.named().iter())
            .filter(|((name, _), _)| *name != "fx.bias")
            .map(|((_, a), (_, b))| max_abs(&sub(a, b)) / max_abs(b).max(1e-300))
            .fold(0.0, f64::max);
        println!(
            "{what}: {name:<19} iters {:>3}  rel residual {:.3e}  ‖β−β_dense‖/‖β_dense‖ {diff:.3e}  worst param grad rel diff {gdiff:.3e}",
            s.iterations, s.rel_residual
        );
        assert!(diff < bound, "{name}: {diff}");
        assert!(gdiff < bound * 10.0, "{name}: grads {gdiff}");
    }
}

/// `∂L/∂rate` through the classifier alone.
fn classifier_gl<A: Arch>(m: &Model<A>, rate: &[f64], y: &[usize]) -> Vec<f64> {
    let (_, dl) = super::dense::softmax_cross_entropy(&m.logits(rate), m.classes, y);
    let d = m.arch.dim();
    let k = m.classes;
    let mut gl = vec![0.0; rate.len()];
    for s in 0..y.len() {
        for c in 0..k {
            for j in 0..d {
                gl[s * d + j] += dl[s * k + c] * m.params.classifier_weight[c * d + j];
            }
        }
    }
    gl
}

#[test]
fn adjoint_solvers_match_dense_fc() {
    let (m, x, y, rate) = realistic(fc::Model::new(20, 16, 4, 2.0, 31), 6, 5, 41);
    check_solvers("fc", &m, &x, &y, &rate);
}

#[test]
fn adjoint_solvers_match_dense_conv() {
    let arch = Conv {
        cin: 1,
        h: 10,
        w: 10,
        channels: 4,
        k_in: 5,
        stride_in: 2,
        pad_in: 2,
        k_fb: 5,
    };
    let (m, x, y, rate) = realistic(convnet::Model::new(arch, 4, 2.0, 32), 3, 30, 42);
    check_solvers("conv", &m, &x, &y, &rate);
}

#[test]
fn reference_half_iteration_solves_the_halved_system() {
    // With zero feedback J_f = 0, so the authors' iteration gives gL/2 and ours gL.
    let (mut m, x, y, rate) = realistic(fc::Model::new(8, 5, 3, 2.0, 33), 4, 5, 43);
    m.params.fb_scale = 0.0;
    let gl = classifier_gl(&m, &rate, &y);
    let (b, s) = m.adjoint(&x, &rate, &gl, Solver::FixedPointHalfRef { threshold: 30 });
    let half: Vec<f64> = gl.iter().map(|g| g / 2.0).collect();
    assert!(max_abs(&sub(&b, &half)) < 1e-15);
    assert!((s.rel_residual - 0.5).abs() < 1e-12);
}

fn sci(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.3e}")).collect();
    parts.join(", ")
}

#[test]
fn if_rate_approaches_the_fixed_point_as_t_grows() {
    let (m, x, _, _) = realistic(fc::Model::new(30, 20, 4, 2.0, 34), 8, 5, 44);
    let conv = Conv {
        cin: 1,
        h: 12,
        w: 12,
        channels: 4,
        k_in: 5,
        stride_in: 2,
        pad_in: 2,
        k_fb: 5,
    };
    let (mc, xc, _, _) = realistic(convnet::Model::new(conv, 4, 2.0, 35), 4, 5, 45);
    let fc_res: Vec<f64> = [5, 30, 100]
        .iter()
        .map(|&t| m.fixed_point_residual(&x, &m.forward_sim(&x, t, 1.0)))
        .collect();
    let conv_res: Vec<f64> = [5, 30, 100]
        .iter()
        .map(|&t| mc.fixed_point_residual(&xc, &mc.forward_sim(&xc, t, 1.0)))
        .collect();
    let lif: Vec<f64> = [5, 30, 100]
        .iter()
        .map(|&t| m.fixed_point_residual(&x, &m.forward_sim(&x, t, 0.95)))
        .collect();
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
    let mut m = fc::Model::new(3, 4, 2, 2.0, 36);
    m.params.fb_scale = 0.0;
    m.params.bn_weight = vec![0.0; 4];
    m.params.bn_bias = vec![1.0, 0.5, 2.0, 3.0];
    let x = Rng::new(1).vec_range(2 * 3, -1.0, 1.0);
    let t = 7;
    let rate = m.forward_sim(&x, t, 1.0);
    let want = [3.0 / 7.0, 1.0 / 7.0, 1.0, 1.0];
    for (s, chunk) in rate.chunks(4).enumerate() {
        for (r, w) in chunk.iter().zip(&want) {
            assert!((r - w).abs() < 1e-15, "sample {s}: {chunk:?}");
        }
    }
    let lif = m.forward_sim(&x, t, 0.9);
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
    let (m, x, _, _) = realistic(fc::Model::new(20, 16, 4, 2.0, 37), 6, 5, 47);
    let (a, s) = m.fixed_point(&x, 1e-12);
    println!(
        "fixed point: {} iterations, residual {:.3e}",
        s.iterations, s.residual
    );
    assert!(max_abs(&sub(&m.f(&x, &a), &a)) <= 1e-12);
}

#[test]
fn paper_parameter_counts() {
    let fc400 = fc::Model::new(784, 400, 10, 2.0, 1);
    assert_eq!(fc400.params.count(), 478_811);
    let conv64 = convnet::Model::new(Conv::paper(64), 10, 2.0, 1);
    assert_eq!(conv64.params.count(), 229_643);
    assert_eq!(conv64.arch.dim(), 64 * 14 * 14);
    // The scale starts at the weight's spectral norm, > 1, so clamp(g) = 1 at init.
    assert!(fc400.params.fb_scale > 1.0 && conv64.params.fb_scale > 1.0);
    assert_eq!(Params::NAMES[4], "fb.weight");
}

#[test]
fn broyden_paper_eps_formula() {
    assert!((adjoint::paper_eps(128, 400) - 2e-10 * 51_200f64.sqrt()).abs() < 1e-20);
}
