//! Spectral normalisation of the feedback weight as the method uses it:
//! `W_eff = clamp(g, −1, 1) · w / σ̂`, `σ̂ = uᵀ w v`, with `w` viewed as a matrix whose rows
//! are the first tensor dimension and whose columns are the rest flattened.
//!
//! `u` and `v` come from one power-iteration step done before the forward pass and are
//! constants for the gradient; the gradient does flow through σ̂'s dependence on `w`.

use super::dense::{dot, matvec, matvec_t, normalize};

/// One power-iteration step from `u0`: `v = normalize(wᵀu0)`, `u = normalize(w v)`.
/// Returns `(u, v)`; `σ̂ = uᵀ w v` is then [`sigma`].
pub fn power_step(w: &[f64], rows: usize, cols: usize, u0: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let v = normalize(&matvec_t(w, rows, cols, u0));
    let u = normalize(&matvec(w, rows, cols, &v));
    (u, v)
}

/// Spectral-norm estimate after `iters` power-iteration steps from `u0` (the method
/// initialises the scale `g` with 10 steps).
pub fn norm_estimate(w: &[f64], rows: usize, cols: usize, u0: &[f64], iters: usize) -> f64 {
    let mut u = u0.to_vec();
    let mut v = vec![0.0; cols];
    for _ in 0..iters {
        (u, v) = power_step(w, rows, cols, &u);
    }
    sigma(w, rows, cols, &u, &v)
}

/// `σ̂ = uᵀ w v`.
pub fn sigma(w: &[f64], rows: usize, cols: usize, u: &[f64], v: &[f64]) -> f64 {
    dot(u, &matvec(w, rows, cols, v))
}

/// `clamp(g, −1, 1)`.
pub fn clamped_scale(g: f64) -> f64 {
    g.clamp(-1.0, 1.0)
}

/// `W_eff = clamp(g, −1, 1) · w / σ̂`; returns `(W_eff, σ̂)`.
pub fn effective_weight(
    w: &[f64],
    rows: usize,
    cols: usize,
    g: f64,
    u: &[f64],
    v: &[f64],
) -> (Vec<f64>, f64) {
    let s = sigma(w, rows, cols, u, v);
    let c = clamped_scale(g) / s;
    (w.iter().map(|x| c * x).collect(), s)
}

/// Pulls `gw_eff = ∂L/∂W_eff` back to `(∂L/∂w, ∂L/∂g)`.
///
/// With `c = clamp(g)` and `k = ⟨gw_eff, w⟩`:
/// `∂L/∂w = (c/σ̂)·gw_eff − (c·k/σ̂²)·u vᵀ` (the second term is the path through σ̂),
/// `∂L/∂g = k/σ̂` where `−1 ≤ g ≤ 1` and 0 elsewhere (PyTorch's clamp passes the gradient
/// at the bounds too).
pub fn backward(
    w: &[f64],
    cols: usize,
    g: f64,
    u: &[f64],
    v: &[f64],
    sigma: f64,
    gw_eff: &[f64],
) -> (Vec<f64>, f64) {
    let c = clamped_scale(g);
    let k = dot(gw_eff, w);
    let gw = gw_eff
        .iter()
        .enumerate()
        .map(|(i, ge)| c / sigma * ge - c * k / (sigma * sigma) * u[i / cols] * v[i % cols])
        .collect();
    let gg = if (-1.0..=1.0).contains(&g) {
        k / sigma
    } else {
        0.0
    };
    (gw, gg)
}

/// The authors' spectral-norm construction (ALGORITHM.md §4): the scale `g` is σ(w) from a
/// 10-step power iteration on vectors of its own, and the persistent `u`, `v` start from a
/// fresh random normal `u` and one power step. Returns `(u, v, g)`.
pub fn init_authors(
    rng: &mut super::dense::Rng,
    w: &[f64],
    rows: usize,
    cols: usize,
) -> (Vec<f64>, Vec<f64>, f64) {
    let u = super::dense::normalize(&(0..rows).map(|_| rng.normal()).collect::<Vec<_>>());
    let u0 = super::dense::normalize(&(0..rows).map(|_| rng.normal()).collect::<Vec<_>>());
    let g = norm_estimate(w, rows, cols, &u0, 10);
    let (u, v) = power_step(w, rows, cols, &u);
    (u, v, g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::dense::Rng;

    #[test]
    fn power_iteration_finds_the_norm_of_a_diagonal_matrix() {
        let w = [3.0, 0.0, 0.0, 0.0, -5.0, 0.0];
        let s = norm_estimate(&w, 2, 3, &[1.0, 1.0], 30);
        assert!((s - 5.0).abs() < 1e-9);
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (rows, cols) = (3, 4);
        let mut rng = Rng::new(4);
        let w = rng.vec_range(rows * cols, -1.0, 1.0);
        let (u, v) = power_step(&w, rows, cols, &rng.vec_range(rows, -1.0, 1.0));
        let gy = rng.vec_range(rows * cols, -1.0, 1.0);
        let g = 0.6;
        let loss = |w: &[f64], g: f64| dot(&effective_weight(w, rows, cols, g, &u, &v).0, &gy);
        let s = sigma(&w, rows, cols, &u, &v);
        let (gw, gg) = backward(&w, cols, g, &u, &v, s, &gy);
        let h = 1e-6;
        let mut worst: f64 = 0.0;
        for i in 0..w.len() {
            let (mut p, mut m) = (w.clone(), w.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (loss(&p, g) - loss(&m, g)) / (2.0 * h);
            worst = worst.max((fd - gw[i]).abs());
        }
        let fd = (loss(&w, g + h) - loss(&w, g - h)) / (2.0 * h);
        worst = worst.max((fd - gg).abs());
        assert!(worst < 1e-8, "{worst}");
        // Outside [-1, 1] the clamp is flat.
        assert_eq!(backward(&w, cols, 1.5, &u, &v, s, &gy).1, 0.0);
    }
}
