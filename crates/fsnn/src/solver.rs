//! Batched solvers for the adjoint equation β = J_fᵀβ + gL on the GPU (one independent system per
//! sample), as ALGORITHM.md §3 states them. The caller supplies J_fᵀ as a closure that records
//! `out = J_fᵀ · x` for a whole batch.

use crate::gpu::{Gpu, Tensor};
use crate::ops::{self, History};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SolverKind {
    /// Quasi-Newton with a low-rank inverse-Jacobian ring (the paper's default).
    Broyden,
    /// Damped fixed-point iteration β ← ½β + ½(J_fᵀβ + gL).
    FixedPoint,
}

impl std::str::FromStr for SolverKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "broyden" => Ok(Self::Broyden),
            "fixed-point" | "fixed_point" | "iter" => Ok(Self::FixedPoint),
            _ => Err(format!("unknown solver {s:?} (broyden | fixed-point)")),
        }
    }
}

/// Most Broyden updates kept per sample.
pub const BROYDEN_RING: usize = 27;

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SolveStats {
    pub iterations: usize,
    /// ‖(I − J_fᵀ)β − gL‖ / ‖gL‖ over the whole batch, at the returned β.
    pub rel_residual: f64,
}

/// Reusable GPU buffers of the solver for one batch size and dimension.
pub struct Solver {
    pub kind: SolverKind,
    pub threshold: usize,
    batch: usize,
    dim: usize,
    x: Tensor,
    gx: Tensor,
    gx_new: Tensor,
    update: Tensor,
    dx: Tensor,
    dgx: Tensor,
    vt: Tensor,
    num: Tensor,
    den: Tensor,
    coef: Tensor,
    best: Tensor,
    us: Option<Tensor>,
    vts: Option<Tensor>,
    partials: Tensor,
    scalar: Tensor,
}

impl Solver {
    pub fn new(gpu: &Gpu, kind: SolverKind, threshold: usize, batch: usize, dim: usize) -> Self {
        let n = batch * dim;
        let slots = BROYDEN_RING.min(threshold.max(1));
        let (us, vts) = match kind {
            SolverKind::Broyden => (
                Some(gpu.zeros(&[batch, slots, dim])),
                Some(gpu.zeros(&[batch, slots, dim])),
            ),
            SolverKind::FixedPoint => (None, None),
        };
        Self {
            kind,
            threshold,
            batch,
            dim,
            x: gpu.zeros(&[n]),
            gx: gpu.zeros(&[n]),
            gx_new: gpu.zeros(&[n]),
            update: gpu.zeros(&[n]),
            dx: gpu.zeros(&[n]),
            dgx: gpu.zeros(&[n]),
            vt: gpu.zeros(&[n]),
            num: gpu.zeros(&[n]),
            den: gpu.zeros(&[batch]),
            coef: gpu.zeros(&[batch * slots]),
            best: gpu.zeros(&[n]),
            us,
            vts,
            partials: gpu.zeros(&[ops::sum_partials_len(n)]),
            scalar: gpu.zeros(&[1]),
        }
    }

    /// Whether `have` (the solver a model's buffers were built with) can serve a step that asks
    /// for `want` (`None`: evaluation, which needs no solver).
    pub fn serves(have: Option<&Solver>, want: Option<(SolverKind, usize)>) -> bool {
        match (have, want) {
            (Some(s), Some((k, t))) => s.kind == k && s.threshold == t,
            (None, Some(_)) => false,
            (_, None) => true,
        }
    }

    fn norm(&self, gpu: &Gpu, t: &Tensor) -> f64 {
        ops::sum(gpu, t, true, &self.partials, &self.scalar);
        (gpu.read(&self.scalar)[0] as f64).max(0.0).sqrt()
    }

    /// `out = J_fᵀ x − x + gL`: the residual whose root is β.
    fn residual(
        &self,
        gpu: &Gpu,
        jt: &mut dyn FnMut(&Tensor, &Tensor),
        x: &Tensor,
        gl: &Tensor,
        out: &Tensor,
    ) {
        jt(x, out);
        ops::axpby(gpu, -1.0, x, 1.0, out);
        ops::axpby(gpu, 1.0, gl, 1.0, out);
    }

    /// Solves β = J_fᵀβ + gL into `beta`. Stops when the global residual norm falls under
    /// `eps = 2e-10 · sqrt(batch · dim)` or after `threshold` iterations, returning the
    /// lowest-residual iterate.
    pub fn solve(
        &mut self,
        gpu: &Gpu,
        jt: &mut dyn FnMut(&Tensor, &Tensor),
        gl: &Tensor,
        beta: &Tensor,
    ) -> SolveStats {
        let eps = 2e-10 * ((self.batch * self.dim) as f64).sqrt();
        let gl_norm = self.norm(gpu, gl).max(1e-30);
        gpu.fill_zero(&self.x);
        // At β = 0 the residual is gL itself.
        gpu.copy(gl, 0, &self.gx, 0, gl.len());
        gpu.copy(&self.x, 0, &self.best, 0, gl.len());
        let mut lowest = gl_norm;
        let mut iterations = 0;
        match self.kind {
            SolverKind::FixedPoint => {
                let mut res = gl_norm;
                while iterations < self.threshold && res >= eps {
                    // β ← β + ½ g(β)  ⇔  β ← ½β + ½(J_fᵀβ + gL).
                    ops::axpby(gpu, 0.5, &self.gx, 1.0, &self.x);
                    self.residual(gpu, jt, &self.x, gl, &self.gx);
                    iterations += 1;
                    res = self.norm(gpu, &self.gx);
                    if res < lowest {
                        lowest = res;
                        gpu.copy(&self.x, 0, &self.best, 0, self.x.len());
                    }
                }
            }
            SolverKind::Broyden => {
                let us = self.us.clone().unwrap();
                let vts = self.vts.clone().unwrap();
                let slots = us.shape[1];
                let h = History {
                    batch: self.batch,
                    slots,
                    dim: self.dim,
                };
                // The initial inverse-Jacobian estimate is −I, so the first step is +g.
                gpu.copy(&self.gx, 0, &self.update, 0, self.gx.len());
                while iterations < self.threshold {
                    // Step without line search.
                    ops::axpby(gpu, 1.0, &self.update, 1.0, &self.x);
                    self.residual(gpu, jt, &self.x, gl, &self.gx_new);
                    gpu.copy(&self.update, 0, &self.dx, 0, self.update.len());
                    gpu.copy(&self.gx_new, 0, &self.dgx, 0, self.gx.len());
                    ops::axpby(gpu, -1.0, &self.gx, 1.0, &self.dgx);
                    std::mem::swap(&mut self.gx, &mut self.gx_new);
                    iterations += 1;
                    let res = self.norm(gpu, &self.gx);
                    if res < lowest {
                        lowest = res;
                        gpu.copy(&self.x, 0, &self.best, 0, self.x.len());
                    }
                    if res < eps || iterations >= self.threshold {
                        break;
                    }
                    let count = (iterations - 1).min(slots);
                    // vᵀ = Δxᵀ(−I + U Vᵀ) = −Δx + (Δx·U) Vᵀ
                    ops::history_dot(gpu, h, count, &us, &self.dx, &self.coef);
                    ops::history_combine(gpu, h, count, &vts, -1.0, &self.dx, &self.coef, &self.vt);
                    // u = (Δx − (−I + U Vᵀ)Δg) / (vᵀ·Δg)
                    ops::history_dot(gpu, h, count, &vts, &self.dgx, &self.coef);
                    ops::history_combine(
                        gpu, h, count, &us, -1.0, &self.dgx, &self.coef, &self.num,
                    );
                    ops::axpby(gpu, 1.0, &self.dx, -1.0, &self.num);
                    ops::row_dot(
                        gpu, self.batch, self.dim, &self.vt, &self.dgx, 1.0, 0.0, &self.den,
                    );
                    let slot = (iterations - 1) % slots;
                    ops::broyden_update(gpu, h, slot, &self.num, &self.vt, &self.den, &us, &vts);
                    // update = −(−I + U Vᵀ) g = g − U (Vᵀ g)
                    let count = iterations.min(slots);
                    ops::history_dot(gpu, h, count, &vts, &self.gx, &self.coef);
                    ops::history_combine(
                        gpu,
                        h,
                        count,
                        &us,
                        -1.0,
                        &self.gx,
                        &self.coef,
                        &self.update,
                    );
                    ops::scale(gpu, -1.0, &self.update);
                }
            }
        }
        gpu.copy(&self.best, 0, beta, 0, beta.len());
        SolveStats {
            iterations,
            rel_residual: lowest / gl_norm,
        }
    }
}
