//! Batched solvers for the adjoint equation β = J_fᵀβ + gL on the GPU (one system per sample,
//! one global stopping rule), as ALGORITHM.md §3 states them. The caller supplies J_fᵀ as a
//! closure that records `out = J_fᵀ · x` for a whole batch; it may couple the samples (batch-norm
//! statistics do in the multi-layer models), so the solver only ever applies it to the batch.
//!
//! Every iteration is the product plus three fused kernels (shaders/solver_*.wgsl): the
//! per-sample products, one workgroup for the batch-global norm, best iterate and stopping rule,
//! and the per-element step. The stopping decision lives on the GPU: once met, later iterations
//! change nothing, so the host reads the flag one iteration late (asynchronously, while the next
//! iteration runs) instead of waiting for every norm; at most one product is wasted per solve.

use fsnn_core::backend::{Backend, TensorOps};
use fsnn_core::shapes::{SolverIter, SolverLayout, SolverMode, SolverVectors};

use crate::gpu::Gpu;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SolverKind {
    /// Quasi-Newton with a low-rank inverse-Jacobian ring (the paper's default).
    Broyden,
    /// Damped fixed-point iteration β ← ½β + ½(J_fᵀβ + gL).
    FixedPoint,
    /// Anderson acceleration (type II) with [`ANDERSON_MEMORY`] pairs and regularised least
    /// squares per sample.
    Anderson,
}

impl std::str::FromStr for SolverKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "broyden" => Ok(Self::Broyden),
            "fixed-point" | "fixed_point" | "iter" => Ok(Self::FixedPoint),
            "anderson" => Ok(Self::Anderson),
            _ => Err(format!(
                "unknown solver {s:?} (broyden | fixed-point | anderson)"
            )),
        }
    }
}

/// Most Broyden updates kept per sample.
pub const BROYDEN_RING: usize = 27;
/// Anderson's history length m.
pub const ANDERSON_MEMORY: usize = 5;
/// Anderson's Tikhonov term, relative to the Jacobi-scaled Gram matrix (unit diagonal).
pub const ANDERSON_REG: f32 = 1e-6;
/// Damping α of the fixed-point iteration.
const FIXED_POINT_ALPHA: f32 = 0.5;

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SolveStats {
    pub iterations: usize,
    /// ‖(I − J_fᵀ)β − gL‖ / ‖gL‖ over the whole batch, at the returned β.
    pub rel_residual: f64,
}

/// Reusable buffers of the solver for one batch size and dimension.
pub struct Solver<B: Backend = Gpu> {
    pub kind: SolverKind,
    pub threshold: usize,
    layout: SolverLayout,
    x: B::Tensor,
    jx: B::Tensor,
    g: B::Tensor,
    step: B::Tensor,
    best: B::Tensor,
    hist: B::Tensor,
    scal: B::Tensor,
}

/// The history layout of a solver of `kind` over `batch` samples of `dim` values (what
/// [`Solver::new`] allocates, and what the up-front memory check counts).
pub fn solver_layout(kind: SolverKind, threshold: usize, batch: usize, dim: usize) -> SolverLayout {
    let (mode, slots) = match kind {
        SolverKind::Broyden => (SolverMode::Broyden, BROYDEN_RING.min(threshold.max(1))),
        SolverKind::Anderson => (SolverMode::Anderson, ANDERSON_MEMORY),
        SolverKind::FixedPoint => (SolverMode::FixedPoint, 0),
    };
    SolverLayout {
        mode,
        batch,
        dim,
        slots,
    }
}

impl<B: Backend> Solver<B> {
    pub fn new(gpu: &B, kind: SolverKind, threshold: usize, batch: usize, dim: usize) -> Self {
        let n = batch * dim;
        let layout = solver_layout(kind, threshold, batch, dim);
        Self {
            kind,
            threshold,
            layout,
            x: gpu.zeros(&[n]),
            jx: gpu.zeros(&[n]),
            g: gpu.zeros(&[n]),
            step: gpu.zeros(&[n]),
            best: gpu.zeros(&[n]),
            hist: gpu.zeros(&[layout.hist_len().max(1)]),
            scal: gpu.zeros(&[layout.scal_len()]),
        }
    }

    /// Whether `have` (the solver a model's buffers were built with) can serve a step that asks
    /// for `want` (`None`: evaluation, which needs no solver).
    pub fn serves(have: Option<&Solver<B>>, want: Option<(SolverKind, usize)>) -> bool {
        match (have, want) {
            (Some(s), Some((k, t))) => s.kind == k && s.threshold == t,
            (None, Some(_)) => false,
            (_, None) => true,
        }
    }

    /// Records iteration `it` after the product `jx = J_fᵀx` (iteration 0: the setup at β = 0).
    fn iterate(&self, gpu: &B, gl: &B::Tensor, it: usize, eps2: f32) {
        let l = &self.layout;
        let i = SolverIter::new(l, it);
        let v = SolverVectors {
            jx: &self.jx,
            x: &self.x,
            gl,
            g: &self.g,
            step: &self.step,
            best: &self.best,
        };
        gpu.solver_dots(l, i, &self.hist, &v, &self.scal);
        gpu.solver_track(l, i, self.threshold, eps2, ANDERSON_REG, &self.scal);
        gpu.solver_combine(l, i, FIXED_POINT_ALPHA, &self.hist, &v, &self.scal);
    }

    /// Solves β = J_fᵀβ + gL into `beta`. Stops when the global residual norm falls under
    /// `eps = 2e-10 · sqrt(batch · dim)` or after `threshold` iterations, returning the
    /// lowest-residual iterate.
    pub fn solve(
        &mut self,
        gpu: &B,
        jt: &mut dyn FnMut(&B::Tensor, &B::Tensor),
        gl: &B::Tensor,
        beta: &B::Tensor,
    ) -> SolveStats {
        let l = self.layout;
        assert_eq!(
            gl.len(),
            l.batch * l.dim,
            "solver: gL of shape {:?}",
            gl.shape()
        );
        let eps = 2e-10 * ((l.batch * l.dim) as f64).sqrt();
        let eps2 = (eps * eps) as f32;
        // At β = 0, J_fᵀβ = 0 and the residual is gL itself.
        for t in [&self.x, &self.jx, &self.g, &self.step, &self.best] {
            gpu.fill_zero(t);
        }
        self.iterate(gpu, gl, 0, eps2);
        let st = l.state_offset();
        let mut previous: Option<B::PendingRead> = None;
        for it in 1..=self.threshold {
            jt(&self.x, &self.jx);
            self.iterate(gpu, gl, it, eps2);
            if it == self.threshold {
                break;
            }
            let this = gpu.read_async(&self.scal, st + 1, 1);
            // The previous iteration's flag is ready (or nearly) while this one runs.
            let stop = previous.take().is_some_and(|p| gpu.wait_read(p)[0] != 0.0);
            if stop {
                gpu.wait_read(this);
                break;
            }
            previous = Some(this);
        }
        if let Some(p) = previous {
            gpu.wait_read(p);
        }
        gpu.copy(&self.best, 0, beta, 0, beta.len());
        let s = gpu.wait_read(gpu.read_async(&self.scal, st, 5));
        SolveStats {
            iterations: s[3] as usize,
            rel_residual: (s[0].max(0.0) as f64).sqrt() / (s[4].max(0.0) as f64).sqrt().max(1e-30),
        }
    }
}
