//! Batch normalisation in training mode (batch statistics), f64, and the types that say
//! which statistics a BN uses and how running statistics follow the batch ones.
//!
//! Layout: a batch of `n` samples, each `channels × spatial` values channel-major (so a
//! linear layer's `[n, features]` is `channels = features, spatial = 1`, and NCHW is
//! `channels = C, spatial = H·W`). Statistics are per channel over `n · spatial` values,
//! with the biased variance, as PyTorch normalises in training mode.

/// PyTorch's default `eps`.
pub const BN_EPS: f64 = 1e-5;

/// What the backward pass needs from the forward pass.
#[derive(Clone, Debug)]
pub struct BnCache {
    /// Normalised input `(x − μ_c) / sqrt(var_c + eps)`, same layout as the input.
    pub xhat: Vec<f64>,
    /// `1 / sqrt(var_c + eps)` per channel.
    pub inv_std: Vec<f64>,
    /// Batch mean per channel.
    pub mean: Vec<f64>,
    /// Biased batch variance per channel.
    pub var: Vec<f64>,
}

/// Which statistics a batch norm normalises with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// The running statistics, as constants (PyTorch eval mode).
    Running,
    /// The batch statistics, biased variance (PyTorch training mode); couples the samples.
    Batch,
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
    /// PyTorch's initial statistics for `c` channels: mean 0, variance 1.
    pub fn fresh(c: usize) -> Self {
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

fn index(n: usize, channels: usize, spatial: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n * channels * spatial).map(move |i| (i, (i / spatial) % channels))
}

/// `y = γ_c · x̂ + β_c` with batch statistics.
pub fn bn_forward(
    x: &[f64],
    n: usize,
    channels: usize,
    spatial: usize,
    gamma: &[f64],
    beta: &[f64],
) -> (Vec<f64>, BnCache) {
    assert_eq!(x.len(), n * channels * spatial);
    assert_eq!(gamma.len(), channels);
    assert_eq!(beta.len(), channels);
    let count = (n * spatial) as f64;
    let mut mean = vec![0.0; channels];
    for (i, c) in index(n, channels, spatial) {
        mean[c] += x[i];
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let mut var = vec![0.0; channels];
    for (i, c) in index(n, channels, spatial) {
        var[c] += (x[i] - mean[c]).powi(2);
    }
    var.iter_mut().for_each(|v| *v /= count);
    let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()).collect();
    let mut xhat = vec![0.0; x.len()];
    let mut y = vec![0.0; x.len()];
    for (i, c) in index(n, channels, spatial) {
        xhat[i] = (x[i] - mean[c]) * inv_std[c];
        y[i] = gamma[c] * xhat[i] + beta[c];
    }
    (
        y,
        BnCache {
            xhat,
            inv_std,
            mean,
            var,
        },
    )
}

/// Returns `(∂L/∂x, ∂L/∂γ, ∂L/∂β)` given `gy = ∂L/∂y`.
///
/// The input gradient includes the paths through the batch mean and variance, which is
/// what couples the samples of a batch: `gx = γ·inv_std·(gy − mean(gy) − x̂·mean(gy·x̂))`.
pub fn bn_backward(
    gy: &[f64],
    n: usize,
    channels: usize,
    spatial: usize,
    gamma: &[f64],
    cache: &BnCache,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert_eq!(gy.len(), n * channels * spatial);
    let count = (n * spatial) as f64;
    let mut g_beta = vec![0.0; channels];
    let mut g_gamma = vec![0.0; channels];
    for (i, c) in index(n, channels, spatial) {
        g_beta[c] += gy[i];
        g_gamma[c] += gy[i] * cache.xhat[i];
    }
    let mut gx = vec![0.0; gy.len()];
    for (i, c) in index(n, channels, spatial) {
        gx[i] = gamma[c]
            * cache.inv_std[c]
            * (gy[i] - g_beta[c] / count - cache.xhat[i] * g_gamma[c] / count);
    }
    (gx, g_gamma, g_beta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::dense::{dot, Rng};

    #[test]
    fn bn_backward_matches_finite_differences() {
        let (n, c, s) = (3, 2, 4);
        let mut rng = Rng::new(3);
        let x = rng.vec_range(n * c * s, -1.0, 2.0);
        let gamma = rng.vec_range(c, 0.5, 1.5);
        let beta = rng.vec_range(c, -0.5, 0.5);
        let gy = rng.vec_range(n * c * s, -1.0, 1.0);
        let loss = |x: &[f64], g: &[f64], b: &[f64]| dot(&bn_forward(x, n, c, s, g, b).0, &gy);
        let (_, cache) = bn_forward(&x, n, c, s, &gamma, &beta);
        let (gx, gg, gb) = bn_backward(&gy, n, c, s, &gamma, &cache);
        let h = 1e-6;
        let fd = |v: &[f64], i: usize, f: &dyn Fn(&[f64]) -> f64| {
            let (mut p, mut m) = (v.to_vec(), v.to_vec());
            p[i] += h;
            m[i] -= h;
            (f(&p) - f(&m)) / (2.0 * h)
        };
        let mut worst: f64 = 0.0;
        for (i, g) in gx.iter().enumerate() {
            worst = worst.max((fd(&x, i, &|v| loss(v, &gamma, &beta)) - g).abs());
        }
        for i in 0..c {
            worst = worst.max((fd(&gamma, i, &|v| loss(&x, v, &beta)) - gg[i]).abs());
            worst = worst.max((fd(&beta, i, &|v| loss(&x, &gamma, v)) - gb[i]).abs());
        }
        println!("batch norm backward vs finite differences: worst abs err {worst:.3e}");
        assert!(worst < 1e-8);
    }
}
