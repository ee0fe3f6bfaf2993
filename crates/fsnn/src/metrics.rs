//! One epoch's line of `metrics.jsonl`: what the trainer writes and the plots and reports read
//! (a module of its own so that the plotting code does not import the trainer).

use serde::{Deserialize, Serialize};

/// One epoch's results and costs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f32,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    pub seconds: f64,
    pub samples_per_sec: f64,
    pub solver_iters_mean: f64,
    pub solver_residual_mean: f64,
    pub forward_residual_mean: f64,
    /// The median over the epoch's steps: multi-layer models start with silent deep layers whose
    /// first residuals (~1e15) swamp the mean.
    #[serde(default)]
    pub forward_residual_median: f64,
    pub forward_ms_mean: f64,
    pub backward_ms_mean: f64,
    pub peak_gpu_bytes: u64,
}
