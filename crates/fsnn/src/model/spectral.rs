//! Spectral normalisation of a feedback weight (ALGORITHM.md §4), shared by every model:
//! W_eff = clamp(g, −1, 1) · w / σ̂ with σ̂ = uᵀ w v from one power-iteration step per training
//! forward pass, and its backward pass (u, v constant; σ̂'s dependence on w differentiated).

use super::HostRng;
use crate::gpu::{Gpu, Tensor};
use crate::ops::{self, Op};

pub struct SpectralNorm {
    /// Persistent power-iteration vectors (saved in checkpoints as `fb.u`, `fb.v`).
    pub u: Tensor,
    pub v: Tensor,
    /// The effective weight the simulation and the adjoint use.
    pub weff: Tensor,
    /// ∂L/∂W_eff, filled by the model before [`SpectralNorm::backward`].
    pub grad_eff: Tensor,
    rows: usize,
    cols: usize,
    sigma: Tensor,
    /// [σ̂, ⟨∂L/∂W_eff, w⟩], read by the gradient kernel.
    scalars: Tensor,
    dot: Tensor,
    wv: Tensor,
}

/// U(−1, 1), then each output unit's weight vector scaled to unit L2 norm ([ref] initialisation).
pub fn unit_rows(rng: &mut HostRng, rows: usize, cols: usize) -> Vec<f32> {
    let mut w: Vec<f32> = (0..rows * cols).map(|_| rng.uniform(-1.0, 1.0)).collect();
    for r in 0..rows {
        let row = &mut w[r * cols..(r + 1) * cols];
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
    w
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

impl SpectralNorm {
    /// For the initial weight `w` (`rows` = its first dimension): u, v as torch's spectral_norm
    /// (random normal, normalised) after 10 power iterations. Returns the scale g's initial value,
    /// the spectral norm estimate σ(w).
    pub fn new(gpu: &Gpu, rng: &mut HostRng, w: &[f32], rows: usize, cols: usize) -> (Self, f32) {
        let mut u = normalized((0..rows).map(|_| rng.normal()).collect());
        let mut v = normalized((0..cols).map(|_| rng.normal()).collect());
        let mut sigma = 0.0;
        for _ in 0..10 {
            sigma = crate::cpu::power_iteration(rows, cols, w, &mut u, &mut v);
        }
        let sn = Self {
            u: gpu.upload(&[rows], &u),
            v: gpu.upload(&[cols], &v),
            weff: gpu.zeros(&[rows * cols]),
            grad_eff: gpu.zeros(&[rows * cols]),
            rows,
            cols,
            sigma: gpu.zeros(&[1]),
            scalars: gpu.zeros(&[2]),
            dot: gpu.zeros(&[1]),
            wv: gpu.zeros(&[rows]),
        };
        (sn, sigma)
    }

    /// W_eff from the raw weight `w` and scale `g`; `train` runs one power-iteration step
    /// (updating u, v), evaluation reuses u, v.
    pub fn refresh(&self, gpu: &Gpu, w: &Tensor, g: &Tensor, train: bool) {
        let (rows, cols) = (self.rows, self.cols);
        if train {
            ops::power_iteration(gpu, rows, cols, w, &self.u, &self.v, &self.sigma);
        } else {
            ops::gemm(
                gpu,
                Op::N,
                Op::N,
                rows,
                1,
                cols,
                1.0,
                w,
                &self.v,
                0.0,
                &self.wv,
            );
            ops::row_dot(gpu, 1, rows, &self.u, &self.wv, 1.0, 0.0, &self.sigma);
        }
        ops::sn_weight(gpu, w, g, &self.sigma, &self.weff);
    }

    /// ∂L/∂w into `dw` and ∂L/∂g into `dg`, from `grad_eff` = ∂L/∂W_eff.
    pub fn backward(&self, gpu: &Gpu, w: &Tensor, g: &Tensor, dw: &Tensor, dg: &Tensor) {
        ops::row_dot(gpu, 1, w.len(), &self.grad_eff, w, 1.0, 0.0, &self.dot);
        gpu.copy(&self.sigma, 0, &self.scalars, 0, 1);
        gpu.copy(&self.dot, 0, &self.scalars, 1, 1);
        ops::sn_weight_grad(
            gpu,
            self.cols,
            &self.grad_eff,
            &self.u,
            &self.v,
            g,
            &self.scalars,
            dw,
            dg,
        );
    }
}
