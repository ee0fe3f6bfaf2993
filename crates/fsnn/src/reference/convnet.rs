//! The convolutional variant: `F_pre(x) = conv(x) + b` (paper: 1→64, k5 s2 p2 on 28×28),
//! feedback `W_s` a C→C convolution, stride 1, "same" padding `(k − 1)/2`, no bias.
//! Neurons are `C × OH × OW` per sample (channel-major), BN is per channel.
//!
//! ```ignore
//! let arch = reference::convnet::Conv::paper(64); // 1×28×28 → 64×14×14, feedback k5
//! let model = reference::convnet::Model::new(arch, 10, 2.0, seed);
//! ```

use super::conv::{conv2d, conv2d_bias_grad, conv2d_input_grad, conv2d_weight_grad, ConvShape};
use super::feedback::{self, Arch};

/// Geometry of the convolutional variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Neuron channels `C`.
    pub channels: usize,
    /// Input-layer kernel size.
    pub k_in: usize,
    /// Input-layer stride.
    pub stride_in: usize,
    /// Input-layer padding.
    pub pad_in: usize,
    /// Feedback kernel size (odd, so "same" padding keeps the shape).
    pub k_fb: usize,
}

/// The convolutional feedback model.
pub type Model = feedback::Model<Conv>;

impl feedback::Model<Conv> {
    /// A model with the authors' initialisation (see [`feedback::Model::init`]).
    pub fn new(arch: Conv, classes: usize, vth: f64, seed: u64) -> Self {
        Self::init(arch, classes, vth, seed)
    }
}

impl Conv {
    /// The paper's MNIST layout with `channels` neurons per position: 1×28×28 input,
    /// conv k5 s2 p2 (→ 14×14), feedback k5.
    pub fn paper(channels: usize) -> Self {
        Conv {
            cin: 1,
            h: 28,
            w: 28,
            channels,
            k_in: 5,
            stride_in: 2,
            pad_in: 2,
            k_fb: 5,
        }
    }

    /// The input convolution on a batch of `n`.
    pub fn input_shape(&self, n: usize) -> ConvShape {
        ConvShape {
            n,
            cin: self.cin,
            h: self.h,
            w: self.w,
            cout: self.channels,
            kh: self.k_in,
            kw: self.k_in,
            stride: self.stride_in,
            pad: self.pad_in,
        }
    }

    /// The feedback convolution on a batch of `n`.
    pub fn feedback_shape(&self, n: usize) -> ConvShape {
        assert!(self.k_fb % 2 == 1, "feedback kernel must be odd");
        let i = self.input_shape(n);
        ConvShape {
            n,
            cin: self.channels,
            h: i.oh(),
            w: i.ow(),
            cout: self.channels,
            kh: self.k_fb,
            kw: self.k_fb,
            stride: 1,
            pad: (self.k_fb - 1) / 2,
        }
    }
}

impl Arch for Conv {
    fn in_dim(&self) -> usize {
        self.cin * self.h * self.w
    }

    fn dim(&self) -> usize {
        let s = self.input_shape(1);
        self.channels * s.oh() * s.ow()
    }

    fn bn_channels(&self) -> usize {
        self.channels
    }

    fn fx_weight_shape(&self) -> (usize, usize) {
        (self.channels, self.cin * self.k_in * self.k_in)
    }

    fn fb_weight_shape(&self) -> (usize, usize) {
        (self.channels, self.channels * self.k_fb * self.k_fb)
    }

    fn fx_forward(&self, n: usize, x: &[f64], weight: &[f64], bias: &[f64]) -> Vec<f64> {
        conv2d(&self.input_shape(n), x, weight, Some(bias))
    }

    fn fx_backward(&self, n: usize, x: &[f64], g_pre: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let s = self.input_shape(n);
        (
            conv2d_weight_grad(&s, x, g_pre),
            conv2d_bias_grad(&s, g_pre),
        )
    }

    fn fb_forward(&self, n: usize, w: &[f64], a: &[f64]) -> Vec<f64> {
        conv2d(&self.feedback_shape(n), a, w, None)
    }

    fn fb_transpose(&self, n: usize, w: &[f64], g: &[f64]) -> Vec<f64> {
        conv2d_input_grad(&self.feedback_shape(n), w, g)
    }

    fn fb_weight_grad(&self, n: usize, a: &[f64], g: &[f64]) -> Vec<f64> {
        conv2d_weight_grad(&self.feedback_shape(n), a, g)
    }
}
