//! The fully connected variant: `F_pre(x) = W_in x + b_in` (784→H in real use), feedback
//! `W_s` an `H × H` matrix.
//!
//! ```ignore
//! let model = reference::fc::Model::new(784, 400, 10, 2.0, seed);
//! let rate = model.forward_sim(&x, 5, 1.0);
//! let (loss, grads, stats) = model.loss_and_implicit_grads(&x, &labels, &rate);
//! ```

use super::dense::{matvec, matvec_t};
use super::feedback::{self, Arch};

/// Sizes of the fully connected variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fc {
    /// Input features per sample.
    pub in_dim: usize,
    /// Neurons `H` (also the BN channels).
    pub hidden: usize,
}

/// The fully connected feedback model.
pub type Model = feedback::Model<Fc>;

impl feedback::Model<Fc> {
    /// A model with the authors' initialisation (see [`feedback::Model::init`]).
    pub fn new(in_dim: usize, hidden: usize, classes: usize, vth: f64, seed: u64) -> Self {
        Self::init(Fc { in_dim, hidden }, classes, vth, seed)
    }
}

impl Arch for Fc {
    fn in_dim(&self) -> usize {
        self.in_dim
    }

    fn dim(&self) -> usize {
        self.hidden
    }

    fn bn_channels(&self) -> usize {
        self.hidden
    }

    fn fx_weight_shape(&self) -> (usize, usize) {
        (self.hidden, self.in_dim)
    }

    fn fb_weight_shape(&self) -> (usize, usize) {
        (self.hidden, self.hidden)
    }

    fn fx_forward(&self, _n: usize, x: &[f64], weight: &[f64], bias: &[f64]) -> Vec<f64> {
        x.chunks(self.in_dim)
            .flat_map(|xs| {
                let mut y = matvec(weight, self.hidden, self.in_dim, xs);
                y.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                y
            })
            .collect()
    }

    fn fx_backward(&self, _n: usize, x: &[f64], g_pre: &[f64]) -> (Vec<f64>, Vec<f64>) {
        (
            outer_sum(g_pre, self.hidden, x, self.in_dim),
            column_sum(g_pre, self.hidden),
        )
    }

    fn fb_forward(&self, _n: usize, w: &[f64], a: &[f64]) -> Vec<f64> {
        let h = self.hidden;
        a.chunks(h).flat_map(|s| matvec(w, h, h, s)).collect()
    }

    fn fb_transpose(&self, _n: usize, w: &[f64], g: &[f64]) -> Vec<f64> {
        let h = self.hidden;
        g.chunks(h).flat_map(|s| matvec_t(w, h, h, s)).collect()
    }

    fn fb_weight_grad(&self, _n: usize, a: &[f64], g: &[f64]) -> Vec<f64> {
        outer_sum(g, self.hidden, a, self.hidden)
    }
}

/// `Σ_n g_n x_nᵀ` (`rows × cols`) for batches `g` (`[n, rows]`) and `x` (`[n, cols]`).
fn outer_sum(g: &[f64], rows: usize, x: &[f64], cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for (gs, xs) in g.chunks(rows).zip(x.chunks(cols)) {
        for (i, gi) in gs.iter().enumerate() {
            super::dense::axpy(*gi, xs, &mut out[i * cols..(i + 1) * cols]);
        }
    }
    out
}

/// `Σ_n g_n` for a batch `g` (`[n, len]`).
fn column_sum(g: &[f64], len: usize) -> Vec<f64> {
    let mut out = vec![0.0; len];
    for gs in g.chunks(len) {
        super::dense::axpy(1.0, gs, &mut out);
    }
    out
}
