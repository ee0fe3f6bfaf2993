//! The GPU adjoint solvers as a whole (fused kernels, GPU-side stopping rule, best iterate)
//! against the f64 reference on linear systems of the model's form, J_fᵀβ = Wᵀ(m ⊙ β) per sample,
//! and on one whose product couples the samples (as the multi-layer models' batch norm does).

use std::cell::Cell;

use fsnn::gpu::{Gpu, Tensor};
use fsnn::ops::{self, Op};
use fsnn::reference::adjoint;
use fsnn::solver::{Solver, SolverKind};
use fsnn_tests::{gpu, Rng};

struct System {
    batch: usize,
    dim: usize,
    w: Vec<f32>,
    mask: Vec<f32>,
    /// Weight of the batch mean added to every sample's product (0: independent samples).
    coupling: f32,
    gl: Vec<f32>,
}

impl System {
    fn new(rng: &mut Rng, batch: usize, dim: usize, norm: f32, coupling: f32) -> Self {
        // Entries uniform in ±a have spectral norm ≈ 2a√dim for a square matrix.
        let a = norm / (2.0 * (dim as f32).sqrt());
        Self {
            batch,
            dim,
            w: rng.vec(dim * dim, -a, a),
            mask: (0..batch * dim)
                .map(|_| (rng.below(10) < 7) as u32 as f32)
                .collect(),
            coupling,
            gl: rng.vec(batch * dim, -1e-3, 1e-3),
        }
    }

    fn op64(&self, beta: &[f64]) -> Vec<f64> {
        let (b, d) = (self.batch, self.dim);
        let mut out = vec![0.0; b * d];
        for n in 0..b {
            for i in 0..d {
                let v = beta[n * d + i] * self.mask[n * d + i] as f64;
                for j in 0..d {
                    out[n * d + j] += v * self.w[i * d + j] as f64;
                }
            }
        }
        if self.coupling != 0.0 {
            for j in 0..d {
                let mean: f64 = (0..b).map(|n| beta[n * d + j]).sum::<f64>() / b as f64;
                for n in 0..b {
                    out[n * d + j] += self.coupling as f64 * mean;
                }
            }
        }
        out
    }

    /// Solves on the GPU; returns β, the stats and how many products the solver asked for.
    fn solve_gpu(
        &self,
        g: &Gpu,
        kind: SolverKind,
        threshold: usize,
    ) -> (Vec<f64>, fsnn::solver::SolveStats, usize) {
        let (b, d) = (self.batch, self.dim);
        let w = g.upload(&[d, d], &self.w);
        let m = g.upload(&[b * d], &self.mask);
        // b × b: only for coupled systems (a large batch's would not fit a buffer).
        let avg = (self.coupling != 0.0).then(|| g.upload(&[b, b], &vec![1.0 / b as f32; b * b]));
        let tmp = g.zeros(&[b * d]);
        let gl = g.upload(&[b * d], &self.gl);
        let beta = g.zeros(&[b * d]);
        let calls = Cell::new(0);
        let mut jt = |x: &Tensor, out: &Tensor| {
            calls.set(calls.get() + 1);
            g.copy(x, 0, &tmp, 0, b * d);
            ops::mask_mul(g, &m, &tmp);
            ops::gemm(g, Op::N, Op::N, b, d, d, 1.0, &tmp, &w, 0.0, out);
            if let Some(avg) = &avg {
                ops::gemm(g, Op::N, Op::N, b, d, b, self.coupling, avg, x, 1.0, out);
            }
        };
        let mut s = Solver::new(g, kind, threshold, b, d);
        let stats = s.solve(g, &mut jt, &gl, &beta);
        let out = g.read(&beta).iter().map(|&v| v as f64).collect();
        (out, stats, calls.get())
    }
}

fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    d / b.iter().map(|y| y * y).sum::<f64>().sqrt()
}

#[test]
fn every_solver_matches_the_dense_solve() {
    let g = gpu();
    let mut rng = Rng::new(41);
    let sys = System::new(&mut rng, 5, 43, 0.8, 0.0);
    let gl64: Vec<f64> = sys.gl.iter().map(|&v| v as f64).collect();
    let op = |b: &[f64]| sys.op64(b);
    let exact = adjoint::solve_dense(sys.batch, sys.dim, &op, &gl64);
    for (kind, threshold, bound) in [
        (SolverKind::Broyden, 30, 2e-6),
        (SolverKind::Anderson, 30, 2e-6),
        (SolverKind::FixedPoint, 300, 2e-6),
    ] {
        let (beta, stats, calls) = sys.solve_gpu(&g, kind, threshold);
        let diff = rel_diff(&beta, &exact);
        let res = adjoint::relative_residual(&op, &beta, &gl64);
        println!(
            "{kind:?}: {} iterations ({calls} products), reported residual {:.3e}, f64 residual of β {res:.3e}, ‖β − β_dense‖/‖β_dense‖ {diff:.3e}",
            stats.iterations, stats.rel_residual
        );
        assert!(diff < bound, "{kind:?}: {diff:.3e}");
        // The reported residual is the one of the returned iterate, up to float32 rounding.
        assert!(
            (stats.rel_residual - res).abs() < 1e-6,
            "{kind:?}: reported {:.3e} vs {res:.3e}",
            stats.rel_residual
        );
        assert!(
            calls <= stats.iterations + 1,
            "{kind:?}: {calls} products for {} iterations",
            stats.iterations
        );
    }
    // The f64 Anderson twin converges to the same solution.
    let (b64, s64) = adjoint::solve(
        adjoint::Solver::Anderson {
            threshold: 60,
            memory: 5,
            eps: Some(1e-15),
        },
        sys.batch,
        sys.dim,
        &op,
        &gl64,
    );
    println!(
        "f64 Anderson: {} iterations, residual {:.3e}",
        s64.iterations, s64.rel_residual
    );
    assert!(rel_diff(&b64, &exact) < 1e-10);
}

/// Broyden and Anderson treat each sample separately but must still solve a batch whose product
/// couples the samples; the threshold caps the iterations and the lowest-residual iterate comes
/// back.
#[test]
fn coupled_batch_and_iteration_cap() {
    let g = gpu();
    let mut rng = Rng::new(42);
    let sys = System::new(&mut rng, 7, 31, 0.6, 0.3);
    let gl64: Vec<f64> = sys.gl.iter().map(|&v| v as f64).collect();
    let op = |b: &[f64]| sys.op64(b);
    for kind in [
        SolverKind::Broyden,
        SolverKind::Anderson,
        SolverKind::FixedPoint,
    ] {
        let threshold = if kind == SolverKind::FixedPoint {
            300
        } else {
            40
        };
        let (beta, stats, _) = sys.solve_gpu(&g, kind, threshold);
        let res = adjoint::relative_residual(&op, &beta, &gl64);
        println!(
            "{kind:?} coupled: {} iterations, f64 residual {res:.3e}",
            stats.iterations
        );
        assert!(res < 1e-5, "{kind:?}: residual {res:.3e}");
        let (beta3, stats3, calls3) = sys.solve_gpu(&g, kind, 3);
        let res3 = adjoint::relative_residual(&op, &beta3, &gl64);
        println!(
            "{kind:?} capped at 3: {} iterations, {calls3} products, residual {res3:.3e}",
            stats3.iterations
        );
        assert_eq!(stats3.iterations, 3);
        assert_eq!(calls3, 3);
        assert!((stats3.rel_residual - res3).abs() < 1e-5 * res3.max(1.0));
    }
}

/// With J_f = 0 the first Broyden step is exact: the solve stops after one iteration (at most one
/// more product recorded while its flag was read back) and returns gL.
#[test]
fn stops_on_the_tolerance() {
    let g = gpu();
    let mut rng = Rng::new(43);
    let mut sys = System::new(&mut rng, 3, 17, 0.5, 0.0);
    sys.mask.iter_mut().for_each(|m| *m = 0.0);
    for kind in [SolverKind::Broyden, SolverKind::Anderson] {
        let (beta, stats, calls) = sys.solve_gpu(&g, kind, 30);
        println!(
            "{kind:?} with J = 0: {} iterations, {calls} products",
            stats.iterations
        );
        assert_eq!(stats.iterations, 1);
        assert!(calls <= 2);
        assert_eq!(stats.rel_residual, 0.0);
        let want: Vec<f64> = sys.gl.iter().map(|&v| v as f64).collect();
        assert_eq!(beta, want);
    }
}

/// A batch past the device's 65,535 workgroups per dimension (the cooperative solver kernels
/// take one workgroup per sample along a grid dimension): every solver, with plain and
/// cooperative kernels, still matches the dense per-sample solve.
#[test]
fn batch_past_the_grid_limit_matches_the_dense_solve() {
    use fsnn::gpu::Sharing;
    let g = fsnn_tests::private_gpu();
    let max = g.ctx.limits.max_compute_workgroups_per_dimension as usize;
    let mut rng = Rng::new(44);
    let sys = System::new(&mut rng, max + 5, 3, 0.5, 0.0);
    let gl64: Vec<f64> = sys.gl.iter().map(|&v| v as f64).collect();
    let op = |b: &[f64]| sys.op64(b);
    let exact = adjoint::solve_dense(sys.batch, sys.dim, &op, &gl64);
    for sharing in [Sharing::Plain, Sharing::Shared, Sharing::Unshared] {
        g.set_sharing(sharing);
        // Broyden keeps min(threshold, 27) updates; 12 keep its per-sample scalars, which are
        // bound whole, within a 128 MiB binding at this batch (the up-front check refuses more).
        for (kind, threshold) in [
            (SolverKind::Broyden, 12),
            (SolverKind::Anderson, 30),
            (SolverKind::FixedPoint, 100),
        ] {
            let (beta, stats, _) = sys.solve_gpu(&g, kind, threshold);
            let diff = rel_diff(&beta, &exact);
            println!(
                "{sharing:?} {kind:?} batch {}: {} iterations, ‖β − β_dense‖/‖β_dense‖ {diff:.3e}",
                sys.batch, stats.iterations
            );
            assert!(diff < 1e-5, "{sharing:?} {kind:?}: {diff:.3e}");
        }
    }
}
