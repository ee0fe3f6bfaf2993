//! Solvers for the adjoint system of implicit differentiation (ALGORITHM.md §3):
//! `β = J_fᵀβ + gL`, i.e. `(I − J_fᵀ)β = gL`, one independent system per sample.
//!
//! Every solver sees the Jacobian only through a batched vector–Jacobian product
//! `op(β)[n] = J_fᵀ β[n]` on `n × dim` row-major arrays, exactly the one operation a GPU
//! implementation has (one transposed feedback product plus masks).

use super::dense::{axpy, dot, lu_solve, norm};

/// Which solver computes β.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Solver {
    /// Builds `I − J_fᵀ` per sample from `dim` products with unit vectors and solves it by LU.
    /// Exact up to rounding; the ground truth for the others.
    Dense,
    /// Batched limited-memory Broyden (the paper's default, threshold 30). `eps` is the
    /// absolute stopping threshold on the global residual norm; `None` means the paper's
    /// `2e-10 · sqrt(batch · dim)`.
    Broyden {
        /// Maximum iterations.
        threshold: usize,
        /// Absolute threshold on the global residual norm.
        eps: Option<f64>,
    },
    /// Damped fixed-point iteration `β ← ½β + ½(J_fᵀβ + gL)` for at most `threshold`
    /// iterations, stopping early under the same `eps` rule as Broyden.
    FixedPoint {
        /// Maximum iterations.
        threshold: usize,
        /// Absolute threshold on the global residual norm.
        eps: Option<f64>,
    },
    /// Anderson acceleration (type II) with `memory` pairs per sample and the regularised
    /// least squares of [`anderson`], stopping under the same `eps` rule as Broyden.
    Anderson {
        /// Maximum iterations.
        threshold: usize,
        /// History length m.
        memory: usize,
        /// Absolute threshold on the global residual norm.
        eps: Option<f64>,
    },
    /// **\[ref\]** The authors' "iter" solver, `β ← (J_fᵀβ + gL)/2`, run for exactly
    /// `threshold` iterations. It converges to `(2I − J_fᵀ)⁻¹gL`, not the adjoint; offered only
    /// to reproduce their N-MNIST numbers. Its reported residual is against the true system.
    FixedPointHalfRef {
        /// Iterations.
        threshold: usize,
    },
}

impl Solver {
    /// Broyden with the paper's settings: threshold 30, eps `2e-10 · sqrt(batch · dim)`.
    pub const PAPER_BROYDEN: Solver = Solver::Broyden {
        threshold: 30,
        eps: None,
    };
}

/// The paper's Broyden stopping threshold, `2e-10 · sqrt(batch · dim)`.
pub fn paper_eps(batch: usize, dim: usize) -> f64 {
    2e-10 * ((batch * dim) as f64).sqrt()
}

/// What a solve did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolveStats {
    /// Products with `J_fᵀ` spent in iterations (for `Dense`: the `dim` products that built
    /// the matrices).
    pub iterations: usize,
    /// `‖(I − J_fᵀ)β − gL‖ / ‖gL‖` over the whole batch (0 when `gL = 0`).
    pub rel_residual: f64,
}

/// `‖(I − J_fᵀ)β − gL‖ / ‖gL‖` over the whole batch.
pub fn relative_residual(op: &dyn Fn(&[f64]) -> Vec<f64>, beta: &[f64], gl: &[f64]) -> f64 {
    let jb = op(beta);
    let r: Vec<f64> = beta
        .iter()
        .zip(jb.iter().zip(gl))
        .map(|(b, (j, g))| b - j - g)
        .collect();
    let d = norm(gl);
    if d == 0.0 {
        0.0
    } else {
        norm(&r) / d
    }
}

/// Solves `(I − J_fᵀ)β = gL` for a batch of `batch` samples of `dim` values with `solver`.
pub fn solve(
    solver: Solver,
    batch: usize,
    dim: usize,
    op: &dyn Fn(&[f64]) -> Vec<f64>,
    gl: &[f64],
) -> (Vec<f64>, SolveStats) {
    assert_eq!(gl.len(), batch * dim);
    let eps = |e: Option<f64>| e.unwrap_or_else(|| paper_eps(batch, dim));
    let (beta, iterations) = match solver {
        Solver::Dense => (solve_dense(batch, dim, op, gl), dim),
        Solver::Broyden { threshold, eps: e } => broyden(batch, dim, op, gl, threshold, eps(e)),
        Solver::FixedPoint { threshold, eps: e } => {
            damped_fixed_point(batch, dim, op, gl, threshold, eps(e))
        }
        Solver::Anderson {
            threshold,
            memory,
            eps: e,
        } => anderson(batch, dim, op, gl, threshold, memory, eps(e)),
        Solver::FixedPointHalfRef { threshold } => half_fixed_point_ref(op, gl, threshold),
    };
    let rel_residual = relative_residual(op, &beta, gl);
    (
        beta,
        SolveStats {
            iterations,
            rel_residual,
        },
    )
}

/// Dense LU solve per sample.
///
/// `op` applied to the batch whose every sample is the unit vector `e_j` returns column `j`
/// of each sample's `J_fᵀ`, so `dim` products assemble all the matrices at once
/// (`batch · dim²` memory and an O(dim³) LU per sample: test-sized models only).
pub fn solve_dense(
    batch: usize,
    dim: usize,
    op: &dyn Fn(&[f64]) -> Vec<f64>,
    gl: &[f64],
) -> Vec<f64> {
    // a[n][i*dim + j] = (I − J_fᵀ)[i][j] for sample n.
    let mut a = vec![vec![0.0; dim * dim]; batch];
    let mut e = vec![0.0; batch * dim];
    for j in 0..dim {
        for n in 0..batch {
            e[n * dim + j] = 1.0;
        }
        let col = op(&e);
        for n in 0..batch {
            e[n * dim + j] = 0.0;
            for i in 0..dim {
                a[n][i * dim + j] = f64::from(u8::from(i == j)) - col[n * dim + i];
            }
        }
    }
    let mut beta = vec![0.0; batch * dim];
    for n in 0..batch {
        let x = lu_solve(&a[n], dim, &gl[n * dim..(n + 1) * dim])
            .expect("I - J_f^T is singular for a sample");
        beta[n * dim..(n + 1) * dim].copy_from_slice(&x);
    }
    beta
}

/// Most `(u, vᵀ)` pairs the Broyden inverse-Jacobian estimate keeps (the DEQ code's
/// `LBFGS_thres = min(threshold, 27)`).
pub const BROYDEN_MEMORY: usize = 27;

/// Batched limited-memory ("good") Broyden for the root of `g(β) = J_fᵀβ − β + gL`.
/// Returns `(β, iterations)`.
///
/// Derivation. Newton's step for a root of `g` is `−J_g⁻¹ g`. Broyden keeps an estimate
/// `B ≈ J_g⁻¹`, starting at `B₀ = −I` (exact if `J_f = 0`), as `B = −I + Σ_k u_k v_kᵀ`
/// per sample (at most [`BROYDEN_MEMORY`] pairs, oldest overwritten in a ring). After a
/// step `s = Δβ` that changed the residual by `y = Δg`, the rank-one update that makes the
/// new estimate satisfy the secant condition `B_new y = s` while leaving `B` unchanged on
/// vectors orthogonal to `Bᵀs` (Sherman–Morrison applied to Broyden's Jacobian update) is
/// `B_new = B + (s − B y)(sᵀB) / (sᵀB y)`, i.e. `u = (s − B y)/(vᵀy)`, `vᵀ = sᵀB`.
/// For a linear `g` (as here) and a contractive `J_f` this converges to the exact solution;
/// the tests check it against [`solve_dense`].
///
/// Steps, all per sample `n` unless marked global (each line is one batched kernel):
/// 1. `β = 0`; `g = op(β) − β + gL` (= `gL`); `update = g` (that is `−B₀g`).
/// 2. Loop while `‖g‖ ≥ eps` (global norm) and `it < threshold`:
///    1. `s = update`; `β += s`; `g_new = op(β) − β + gL`; `y = g_new − g`; `g = g_new`; `it += 1`.
///    2. Global `‖g‖`; if it is the lowest seen, copy `β` to `β_best`. Stop if `‖g‖ < eps`.
///    3. `vᵀ = sᵀB = −s + Σ_k (s·u_k) v_k` — `m` dot products, then an axpy over the history
///       (`rmatvec`).
///    4. `By = −y + Σ_k u_k (v_k·y)` — `m` dot products, then an axpy over the history
///       (`matvec`).
///    5. `den = vᵀ·y`; `u = (s − By)/den`. Non-finite entries of `u` and `vᵀ` are set to 0
///       (the DEQ code's NaN→0 guard; we also zero ±∞, which `den = 0` with `s − By ≠ 0`
///       would give, so a sample that stalls contributes no update instead of poisoning `β`).
///    6. Store `(u, vᵀ)` in ring slot `(it − 1) mod m`.
///    7. `update = −B g = g − Σ_k u_k (v_k·g)` (a `matvec` with the updated history).
/// 3. Return `β_best` (the iterate with the lowest global residual norm).
///
/// Differences from the DEQ code: no line search (as ALGORITHM.md says), no "little
/// progress" or divergence breaks, and steps 3–4 use all stored pairs (the DEQ code slices
/// `[:(nstep−1) % m]`, which after the ring wraps drops pairs; with threshold 30 ≤ m + 3 that
/// only matters in the last iterations).
pub fn broyden(
    batch: usize,
    dim: usize,
    op: &dyn Fn(&[f64]) -> Vec<f64>,
    gl: &[f64],
    threshold: usize,
    eps: f64,
) -> (Vec<f64>, usize) {
    let mem = BROYDEN_MEMORY.min(threshold.max(1));
    let residual = |beta: &[f64]| -> Vec<f64> {
        let jb = op(beta);
        jb.iter()
            .zip(beta.iter().zip(gl))
            .map(|(j, (b, g))| j - b + g)
            .collect()
    };
    let mut beta = vec![0.0; batch * dim];
    let mut g = residual(&beta);
    let mut update = g.clone();
    // us[n][k] and vs[n][k] are the k-th history pair of sample n.
    let mut us = vec![vec![vec![0.0; dim]; mem]; batch];
    let mut vs = vec![vec![vec![0.0; dim]; mem]; batch];
    let mut stored = 0;
    let mut lowest = norm(&g);
    let mut best = beta.clone();
    let mut it = 0;
    let mut objective = lowest;
    while objective >= eps && it < threshold {
        // 2.1: full step, no line search.
        let s = update.clone();
        axpy(1.0, &s, &mut beta);
        let g_new = residual(&beta);
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        g = g_new;
        it += 1;
        // 2.2
        objective = norm(&g);
        if objective < lowest {
            lowest = objective;
            best.copy_from_slice(&beta);
        }
        if objective < eps {
            break;
        }
        let slot = (it - 1) % mem;
        for n in 0..batch {
            let r = n * dim..(n + 1) * dim;
            let (sn, yn) = (&s[r.clone()], &y[r.clone()]);
            let (un, vn) = (&us[n][..stored], &vs[n][..stored]);
            // 2.3: vᵀ = −s + Σ_k (s·u_k) v_k
            let mut vt: Vec<f64> = sn.iter().map(|x| -x).collect();
            for (uk, vk) in un.iter().zip(vn) {
                axpy(dot(sn, uk), vk, &mut vt);
            }
            // 2.4: By = −y + Σ_k u_k (v_k·y)
            let mut by: Vec<f64> = yn.iter().map(|x| -x).collect();
            for (uk, vk) in un.iter().zip(vn) {
                axpy(dot(vk, yn), uk, &mut by);
            }
            // 2.5
            let den = dot(&vt, yn);
            let mut u: Vec<f64> = sn.iter().zip(&by).map(|(a, b)| (a - b) / den).collect();
            u.iter_mut()
                .chain(vt.iter_mut())
                .filter(|x| !x.is_finite())
                .for_each(|x| *x = 0.0);
            // 2.6
            us[n][slot] = u;
            vs[n][slot] = vt;
        }
        stored = (stored + 1).min(mem);
        // 2.7: update = g − Σ_k u_k (v_k·g)
        update.copy_from_slice(&g);
        for n in 0..batch {
            let r = n * dim..(n + 1) * dim;
            for k in 0..stored {
                let c = dot(&vs[n][k], &g[r.clone()]);
                axpy(-c, &us[n][k], &mut update[r.clone()]);
            }
        }
    }
    (best, it)
}

/// Damped fixed-point iteration `β ← (1 − α)β + α(J_fᵀβ + gL)`, `α = ½`; stops when the
/// global norm of `J_fᵀβ − β + gL` is below `eps` or after `threshold` iterations.
/// Returns `(β, iterations)`.
pub fn damped_fixed_point(
    batch: usize,
    dim: usize,
    op: &dyn Fn(&[f64]) -> Vec<f64>,
    gl: &[f64],
    threshold: usize,
    eps: f64,
) -> (Vec<f64>, usize) {
    const ALPHA: f64 = 0.5;
    let mut beta = vec![0.0; batch * dim];
    let mut it = 0;
    while it < threshold {
        let jb = op(&beta);
        it += 1;
        let mut res2 = 0.0;
        for ((b, j), g) in beta.iter_mut().zip(&jb).zip(gl) {
            // The residual of the current iterate comes for free with the product.
            let r = j + g - *b;
            res2 += r * r;
            *b += ALPHA * r;
        }
        if res2.sqrt() < eps {
            // β met the tolerance before this step; the stepped one is no worse to return.
            break;
        }
    }
    (beta, it)
}

/// Anderson's Tikhonov term relative to the Jacobi-scaled Gram matrix (the GPU solver's
/// `ANDERSON_REG`).
pub const ANDERSON_REG: f64 = 1e-6;

/// Batched Anderson acceleration (type II, mixing 1) for the fixed point of
/// `G(β) = J_fᵀβ + gL`, i.e. the root of `g(β) = G(β) − β`. Returns `(β, iterations)`.
///
/// With the last `m ≤ memory` differences of iterates `ΔX = [Δβ_j]` and of residuals
/// `ΔG = [Δg_j]` of one sample, the step is `Δβ = g − (ΔX + ΔG)γ` where `γ` minimises
/// `‖g − ΔG γ‖²`: the combination of past iterates whose linearised residual is smallest, then
/// one fixed-point step from it. `γ` comes from the normal equations `ΔGᵀΔG γ = ΔGᵀg`, scaled to
/// unit diagonal and regularised by [`ANDERSON_REG`] (late differences are tiny and nearly
/// parallel, so the unscaled system is singular in float32). Same stopping rule and best-iterate
/// return as [`broyden`]; the tests check it against [`solve_dense`].
pub fn anderson(
    batch: usize,
    dim: usize,
    op: &dyn Fn(&[f64]) -> Vec<f64>,
    gl: &[f64],
    threshold: usize,
    memory: usize,
    eps: f64,
) -> (Vec<f64>, usize) {
    let mem = memory.max(1);
    let residual = |beta: &[f64]| -> Vec<f64> {
        let jb = op(beta);
        jb.iter()
            .zip(beta.iter().zip(gl))
            .map(|(j, (b, g))| j - b + g)
            .collect()
    };
    let mut beta = vec![0.0; batch * dim];
    let mut g = gl.to_vec();
    let mut lowest = norm(&g);
    let mut best = beta.clone();
    let mut step = g.clone();
    axpy(1.0, &step, &mut beta);
    // dxs[n][k], dgs[n][k]: the k-th pair of sample n.
    let mut dxs = vec![vec![vec![0.0; dim]; mem]; batch];
    let mut dgs = vec![vec![vec![0.0; dim]; mem]; batch];
    let mut it = 0;
    while it < threshold {
        let g_new = residual(&beta);
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        g = g_new;
        it += 1;
        let objective = norm(&g);
        if objective < lowest {
            lowest = objective;
            best.copy_from_slice(&beta);
        }
        if objective < eps || it >= threshold {
            break;
        }
        let slot = (it - 1) % mem;
        let count = it.min(mem);
        for n in 0..batch {
            let r = n * dim..(n + 1) * dim;
            dxs[n][slot].copy_from_slice(&step[r.clone()]);
            dgs[n][slot].copy_from_slice(&y[r.clone()]);
            let gn = &g[r.clone()];
            let dg = &dgs[n][..count];
            let d: Vec<f64> = dg
                .iter()
                .map(|v| {
                    let h = dot(v, v);
                    if h > 0.0 {
                        1.0 / h.sqrt()
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut a = vec![0.0; count * count];
            for i in 0..count {
                for j in 0..count {
                    a[i * count + j] = dot(&dg[i], &dg[j]) * d[i] * d[j];
                }
                a[i * count + i] += ANDERSON_REG;
            }
            let rhs: Vec<f64> = (0..count).map(|j| dot(&dg[j], gn) * d[j]).collect();
            let gamma = lu_solve(&a, count, &rhs).unwrap_or_else(|| vec![0.0; count]);
            let sn = &mut step[r.clone()];
            sn.copy_from_slice(gn);
            for j in 0..count {
                let c = gamma[j] * d[j];
                if c.is_finite() {
                    axpy(-c, &dxs[n][j], sn);
                    axpy(-c, &dgs[n][j], sn);
                }
            }
            axpy(1.0, sn, &mut beta[r]);
        }
    }
    (best, it)
}

/// **\[ref\]** `β ← (J_fᵀβ + gL)/2` for `threshold` iterations (see [`Solver::FixedPointHalfRef`]).
fn half_fixed_point_ref(
    op: &dyn Fn(&[f64]) -> Vec<f64>,
    gl: &[f64],
    threshold: usize,
) -> (Vec<f64>, usize) {
    let mut beta = vec![0.0; gl.len()];
    for _ in 0..threshold {
        let jb = op(&beta);
        for ((b, j), g) in beta.iter_mut().zip(&jb).zip(gl) {
            *b = 0.5 * (j + g);
        }
    }
    (beta, threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broyden_paper_eps_formula() {
        assert!((paper_eps(128, 400) - 2e-10 * 51_200f64.sqrt()).abs() < 1e-20);
    }
}
