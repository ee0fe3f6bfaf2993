//! Spectral normalisation of a feedback weight (ALGORITHM.md §4), shared by every model:
//! W_eff = clamp(g, −1, 1) · w / σ̂ with σ̂ = uᵀ w v from one power-iteration step per forward
//! pass (training and evaluation), and its backward pass (u, v constant; σ̂'s dependence on w
//! differentiated).

use super::HostRng;
use fsnn_core::backend::{Backend, TensorOps};

use crate::gpu::Gpu;

pub struct SpectralNorm<B: Backend = Gpu> {
    /// Persistent power-iteration vectors (saved in checkpoints as `fb.u`, `fb.v`).
    pub u: B::Tensor,
    pub v: B::Tensor,
    /// The effective weight the simulation and the adjoint use.
    pub weff: B::Tensor,
    /// ∂L/∂W_eff, filled by the model before [`SpectralNorm::backward`].
    pub grad_eff: B::Tensor,
    rows: usize,
    cols: usize,
    sigma: B::Tensor,
    /// [σ̂, ⟨∂L/∂W_eff, w⟩], read by the gradient kernel.
    scalars: B::Tensor,
    dot: B::Tensor,
}

/// U(−1, 1), then each output unit's weight vector scaled to unit L2 norm (\[ref\] initialisation).
pub fn unit_rows(rng: &mut HostRng, rows: usize, cols: usize) -> Vec<f32> {
    let mut w: Vec<f32> = (0..rows * cols).map(|_| rng.uniform(-1.0, 1.0)).collect();
    for r in 0..rows {
        let row = &mut w[r * cols..(r + 1) * cols];
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
    w
}

/// U(−1, 1) for a transposed convolution's weight `[cin, cout, k, k]`, then each output
/// channel's slice `weight[:, o]` scaled to unit L2 norm: the authors' per-output-unit rule
/// applied to the output dimension, which is dim 1 here (ALGORITHM.md §4). Normalising dim 0
/// instead gives AlexNet-F's feedback σ̂ ≈ 1.54, so clamp(g) = 1 and g never learns.
pub fn unit_output_channels(rng: &mut HostRng, cin: usize, cout: usize, kk: usize) -> Vec<f32> {
    let mut w: Vec<f32> = (0..cin * cout * kk)
        .map(|_| rng.uniform(-1.0, 1.0))
        .collect();
    for o in 0..cout {
        let idx = |i: usize, t: usize| (i * cout + o) * kk + t;
        let n = (0..cin)
            .flat_map(|i| (0..kk).map(move |t| (i, t)))
            .map(|(i, t)| w[idx(i, t)] * w[idx(i, t)])
            .sum::<f32>()
            .sqrt()
            .max(1e-12);
        for i in 0..cin {
            for t in 0..kk {
                w[idx(i, t)] /= n;
            }
        }
    }
    w
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

impl<B: Backend> SpectralNorm<B> {
    /// For the initial weight `w` (`rows` = its first dimension), as the authors'
    /// `WeightSpectralNorm.apply` does it (ALGORITHM.md §4): the scale g starts at σ(w) from a
    /// 10-step power iteration on vectors of its own, while the persistent u, v start from a
    /// fresh random normal u and one power step (the construction's own `compute_weight`), so
    /// the first training forward's σ̂ comes from two steps and underestimates σ(w).
    /// Returns the spectral norm and g's initial value σ(w).
    pub fn new(gpu: &B, rng: &mut HostRng, w: &[f32], rows: usize, cols: usize) -> (Self, f32) {
        let mut u = normalized((0..rows).map(|_| rng.normal()).collect());
        let mut v = normalized((0..cols).map(|_| rng.normal()).collect());
        let mut u0 = normalized((0..rows).map(|_| rng.normal()).collect());
        let mut v0 = vec![0.0; cols];
        let mut sigma = 0.0;
        for _ in 0..10 {
            sigma = fsnn_core::host::power_iteration(rows, cols, w, &mut u0, &mut v0);
        }
        fsnn_core::host::power_iteration(rows, cols, w, &mut u, &mut v);
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
        };
        (sn, sigma)
    }

    /// W_eff from the raw weight `w` and scale `g`, after one power-iteration step on the
    /// persistent u, v. The authors' hook runs that step on every forward pass, in evaluation
    /// too (ALGORITHM.md §4), so evaluation also moves u, v.
    pub fn refresh(&self, gpu: &B, w: &B::Tensor, g: &B::Tensor) {
        gpu.power_iteration(self.rows, self.cols, w, &self.u, &self.v, &self.sigma);
        gpu.sn_weight(w, g, &self.sigma, &self.weff);
    }

    /// ∂L/∂w into `dw` and ∂L/∂g into `dg`, from `grad_eff` = ∂L/∂W_eff.
    pub fn backward(&self, gpu: &B, w: &B::Tensor, g: &B::Tensor, dw: &B::Tensor, dg: &B::Tensor) {
        gpu.row_dot(1, w.len(), &self.grad_eff, w, 1.0, 0.0, &self.dot);
        gpu.copy(&self.sigma, 0, &self.scalars, 0, 1);
        gpu.copy(&self.dot, 0, &self.scalars, 1, 1);
        gpu.sn_weight_grad(
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
