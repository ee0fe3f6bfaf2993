//! 2-D convolution in f64, NCHW layout, PyTorch `Conv2d` semantics (cross-correlation, zero
//! padding, no dilation, no groups), with its input and weight gradients, and the transposed
//! convolution (PyTorch `ConvTranspose2d`) expressed through the same loops.
//!
//! Weights are `[cout, cin, kh, kw]` row-major. Everything is written as direct loops over
//! output positions so that each function is the obvious ground truth for a GPU kernel.

/// Geometry of one `Conv2d` call on a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes).
    pub pad: usize,
}

impl ConvShape {
    /// Output height, `⌊(h + 2·pad − kh)/stride⌋ + 1`.
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }

    /// Output width, `⌊(w + 2·pad − kw)/stride⌋ + 1`.
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }

    /// Elements of the input batch.
    pub fn input_len(&self) -> usize {
        self.n * self.cin * self.h * self.w
    }

    /// Elements of the output batch.
    pub fn output_len(&self) -> usize {
        self.n * self.cout * self.oh() * self.ow()
    }

    /// Elements of the weight.
    pub fn weight_len(&self) -> usize {
        self.cout * self.cin * self.kh * self.kw
    }

    fn check(&self) {
        assert!(self.stride > 0, "stride must be positive");
        assert!(
            self.h + 2 * self.pad >= self.kh && self.w + 2 * self.pad >= self.kw,
            "kernel larger than padded input"
        );
    }

    /// Calls `visit(x_index, w_index, y_index)` for every multiply-accumulate of the
    /// convolution; the three functions below are this one loop nest read three ways,
    /// which is what keeps them exact adjoints of each other.
    fn for_each_tap(&self, mut visit: impl FnMut(usize, usize, usize)) {
        self.check();
        let (oh, ow) = (self.oh(), self.ow());
        for b in 0..self.n {
            for co in 0..self.cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let yi = ((b * self.cout + co) * oh + oy) * ow + ox;
                        for ci in 0..self.cin {
                            for ky in 0..self.kh {
                                let iy = (oy * self.stride + ky) as isize - self.pad as isize;
                                if iy < 0 || iy >= self.h as isize {
                                    continue;
                                }
                                for kx in 0..self.kw {
                                    let ix = (ox * self.stride + kx) as isize - self.pad as isize;
                                    if ix < 0 || ix >= self.w as isize {
                                        continue;
                                    }
                                    let xi = ((b * self.cin + ci) * self.h + iy as usize) * self.w
                                        + ix as usize;
                                    let wi = ((co * self.cin + ci) * self.kh + ky) * self.kw + kx;
                                    visit(xi, wi, yi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `y = conv(x, weight) + bias` (bias per output channel, optional).
pub fn conv2d(s: &ConvShape, x: &[f64], weight: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    assert_eq!(x.len(), s.input_len());
    assert_eq!(weight.len(), s.weight_len());
    let plane = s.oh() * s.ow();
    let mut y = vec![0.0; s.output_len()];
    if let Some(b) = bias {
        assert_eq!(b.len(), s.cout);
        for (i, v) in y.iter_mut().enumerate() {
            *v = b[(i / plane) % s.cout];
        }
    }
    s.for_each_tap(|xi, wi, yi| y[yi] += x[xi] * weight[wi]);
    y
}

/// `∂L/∂x` given `gy = ∂L/∂y` (the transposed convolution of `gy` with `weight`).
pub fn conv2d_input_grad(s: &ConvShape, weight: &[f64], gy: &[f64]) -> Vec<f64> {
    assert_eq!(weight.len(), s.weight_len());
    assert_eq!(gy.len(), s.output_len());
    let mut gx = vec![0.0; s.input_len()];
    s.for_each_tap(|xi, wi, yi| gx[xi] += gy[yi] * weight[wi]);
    gx
}

/// `∂L/∂weight` given the input `x` and `gy = ∂L/∂y`, summed over the batch.
pub fn conv2d_weight_grad(s: &ConvShape, x: &[f64], gy: &[f64]) -> Vec<f64> {
    assert_eq!(x.len(), s.input_len());
    assert_eq!(gy.len(), s.output_len());
    let mut gw = vec![0.0; s.weight_len()];
    s.for_each_tap(|xi, wi, yi| gw[wi] += gy[yi] * x[xi]);
    gw
}

/// `∂L/∂bias` given `gy = ∂L/∂y`: the sum over batch and positions per output channel.
pub fn conv2d_bias_grad(s: &ConvShape, gy: &[f64]) -> Vec<f64> {
    assert_eq!(gy.len(), s.output_len());
    let plane = s.oh() * s.ow();
    let mut gb = vec![0.0; s.cout];
    for (i, g) in gy.iter().enumerate() {
        gb[(i / plane) % s.cout] += g;
    }
    gb
}

/// Geometry of one `ConvTranspose2d` call (PyTorch semantics, weight `[cin, cout, kh, kw]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTransposeShape {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Padding removed from each side of the output (both axes).
    pub pad: usize,
    /// Extra rows/columns added at the bottom/right of the output (must be `< stride`).
    pub output_padding: usize,
}

impl ConvTransposeShape {
    /// `(h − 1)·stride − 2·pad + kh + output_padding`.
    pub fn oh(&self) -> usize {
        (self.h - 1) * self.stride + self.kh + self.output_padding - 2 * self.pad
    }

    /// `(w − 1)·stride − 2·pad + kw + output_padding`.
    pub fn ow(&self) -> usize {
        (self.w - 1) * self.stride + self.kw + self.output_padding - 2 * self.pad
    }

    /// The forward convolution whose input gradient this transposed convolution is: it maps
    /// `[n, cout, oh, ow]` to `[n, cin, h, w]`, and its `[cout', cin', kh, kw]` weight is the
    /// transposed convolution's `[cin, cout, kh, kw]` weight unchanged.
    pub fn adjoint_conv(&self) -> ConvShape {
        assert!(
            self.output_padding < self.stride,
            "output_padding must be smaller than stride"
        );
        let s = ConvShape {
            n: self.n,
            cin: self.cout,
            h: self.oh(),
            w: self.ow(),
            cout: self.cin,
            kh: self.kh,
            kw: self.kw,
            stride: self.stride,
            pad: self.pad,
        };
        debug_assert_eq!((s.oh(), s.ow()), (self.h, self.w));
        s
    }
}

/// `ConvTranspose2d`: `y = convᵀ(x, weight) + bias`.
pub fn conv_transpose2d(
    s: &ConvTransposeShape,
    x: &[f64],
    weight: &[f64],
    bias: Option<&[f64]>,
) -> Vec<f64> {
    let c = s.adjoint_conv();
    let mut y = conv2d_input_grad(&c, weight, x);
    if let Some(b) = bias {
        assert_eq!(b.len(), s.cout);
        let plane = s.oh() * s.ow();
        for (i, v) in y.iter_mut().enumerate() {
            *v += b[(i / plane) % s.cout];
        }
    }
    y
}

/// `∂L/∂x` of [`conv_transpose2d`]: the forward convolution of `gy`.
pub fn conv_transpose2d_input_grad(s: &ConvTransposeShape, weight: &[f64], gy: &[f64]) -> Vec<f64> {
    conv2d(&s.adjoint_conv(), gy, weight, None)
}

/// `∂L/∂weight` of [`conv_transpose2d`].
pub fn conv_transpose2d_weight_grad(s: &ConvTransposeShape, x: &[f64], gy: &[f64]) -> Vec<f64> {
    // In the adjoint convolution gy is the input and x the output gradient.
    conv2d_weight_grad(&s.adjoint_conv(), gy, x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::dense::{dot, max_abs, Rng};

    type Bilinear<'a> = &'a dyn Fn(&[f64], &[f64]) -> Vec<f64>;

    /// Checks `<gy, y(x, w)>` is differentiated right: since the map is bilinear, central
    /// differences are exact up to rounding, so a tight bound is fair.
    fn check_bilinear(
        fwd: Bilinear,
        gx: Bilinear,
        gw: Bilinear,
        nx: usize,
        nw: usize,
        seed: u64,
    ) -> f64 {
        let mut rng = Rng::new(seed);
        let x = rng.vec_range(nx, -1.0, 1.0);
        let w = rng.vec_range(nw, -1.0, 1.0);
        let gy = rng.vec_range(fwd(&x, &w).len(), -1.0, 1.0);
        let loss = |x: &[f64], w: &[f64]| dot(&fwd(x, w), &gy);
        let (ax, aw) = (gx(&w, &gy), gw(&x, &gy));
        let h = 1e-4;
        let mut worst: f64 = 0.0;
        for (i, a) in ax.iter().enumerate() {
            let (mut p, mut m) = (x.clone(), x.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (loss(&p, &w) - loss(&m, &w)) / (2.0 * h);
            worst = worst.max((fd - a).abs() / max_abs(&ax));
        }
        for (i, a) in aw.iter().enumerate() {
            let (mut p, mut m) = (w.clone(), w.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (loss(&x, &p) - loss(&x, &m)) / (2.0 * h);
            worst = worst.max((fd - a).abs() / max_abs(&aw));
        }
        worst
    }

    #[test]
    fn conv2d_matches_hand_computed() {
        // 1×1×3×3 input, 2×2 kernel of ones, stride 1, pad 0: each output is a 2×2 sum.
        let s = ConvShape {
            n: 1,
            cin: 1,
            h: 3,
            w: 3,
            cout: 1,
            kh: 2,
            kw: 2,
            stride: 1,
            pad: 0,
        };
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        let y = conv2d(&s, &x, &[1.0; 4], Some(&[0.5]));
        assert_eq!(y, vec![12.5, 16.5, 24.5, 28.5]);
    }

    #[test]
    fn conv2d_gradients_match_finite_differences() {
        let shapes = [
            // The fsnn input layer in miniature: 1→3, k5 s2 p2 on an odd-sized image.
            ConvShape {
                n: 2,
                cin: 1,
                h: 9,
                w: 7,
                cout: 3,
                kh: 5,
                kw: 5,
                stride: 2,
                pad: 2,
            },
            // Feedback layer shape: C→C, k3 s1 p1, plus a non-square kernel.
            ConvShape {
                n: 2,
                cin: 3,
                h: 5,
                w: 4,
                cout: 3,
                kh: 3,
                kw: 3,
                stride: 1,
                pad: 1,
            },
            ConvShape {
                n: 1,
                cin: 2,
                h: 6,
                w: 5,
                cout: 4,
                kh: 3,
                kw: 2,
                stride: 3,
                pad: 1,
            },
        ];
        let mut worst: f64 = 0.0;
        for (k, s) in shapes.iter().enumerate() {
            let e = check_bilinear(
                &|x, w| conv2d(s, x, w, None),
                &|w, gy| conv2d_input_grad(s, w, gy),
                &|x, gy| conv2d_weight_grad(s, x, gy),
                s.input_len(),
                s.weight_len(),
                10 + k as u64,
            );
            worst = worst.max(e);
        }
        println!("conv2d input/weight grad vs finite differences: worst rel err {worst:.3e}");
        assert!(worst < 1e-8);
    }

    #[test]
    fn conv2d_bias_grad_is_channel_sum() {
        let s = ConvShape {
            n: 2,
            cin: 1,
            h: 4,
            w: 4,
            cout: 3,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: 1,
        };
        let mut rng = Rng::new(5);
        let x = rng.vec_range(s.input_len(), -1.0, 1.0);
        let w = rng.vec_range(s.weight_len(), -1.0, 1.0);
        let b = rng.vec_range(3, -1.0, 1.0);
        let gy = rng.vec_range(s.output_len(), -1.0, 1.0);
        let gb = conv2d_bias_grad(&s, &gy);
        let y0 = conv2d(&s, &x, &w, None);
        let y1 = conv2d(&s, &x, &w, Some(&b));
        // <gy, y1 - y0> = <gb, b> because the bias enters linearly.
        let lhs: f64 = gy
            .iter()
            .zip(y1.iter().zip(&y0))
            .map(|(g, (a, c))| g * (a - c))
            .sum();
        assert!((lhs - dot(&gb, &b)).abs() < 1e-12);
    }

    #[test]
    fn conv_transpose2d_matches_definition_and_gradients() {
        let t = ConvTransposeShape {
            n: 2,
            cin: 3,
            h: 3,
            w: 4,
            cout: 2,
            kh: 3,
            kw: 3,
            stride: 2,
            pad: 1,
            output_padding: 1,
        };
        assert_eq!((t.oh(), t.ow()), (6, 8));
        let mut rng = Rng::new(7);
        let x = rng.vec_range(t.n * t.cin * t.h * t.w, -1.0, 1.0);
        let w = rng.vec_range(t.cin * t.cout * t.kh * t.kw, -1.0, 1.0);
        // Scatter definition: every input pixel adds weight-scaled copies of the kernel.
        let (oh, ow) = (t.oh(), t.ow());
        let mut want = vec![0.0; t.n * t.cout * oh * ow];
        for b in 0..t.n {
            for ci in 0..t.cin {
                for iy in 0..t.h {
                    for ix in 0..t.w {
                        let xv = x[((b * t.cin + ci) * t.h + iy) * t.w + ix];
                        for co in 0..t.cout {
                            for ky in 0..t.kh {
                                for kx in 0..t.kw {
                                    let oy = (iy * t.stride + ky) as isize - t.pad as isize;
                                    let ox = (ix * t.stride + kx) as isize - t.pad as isize;
                                    if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                        continue;
                                    }
                                    let wv = w[((ci * t.cout + co) * t.kh + ky) * t.kw + kx];
                                    want[((b * t.cout + co) * oh + oy as usize) * ow
                                        + ox as usize] += xv * wv;
                                }
                            }
                        }
                    }
                }
            }
        }
        let got = conv_transpose2d(&t, &x, &w, None);
        let diff: Vec<f64> = got.iter().zip(&want).map(|(a, b)| a - b).collect();
        assert!(max_abs(&diff) < 1e-12);
        let e = check_bilinear(
            &|x, w| conv_transpose2d(&t, x, w, None),
            &|w, gy| conv_transpose2d_input_grad(&t, w, gy),
            &|x, gy| conv_transpose2d_weight_grad(&t, x, gy),
            x.len(),
            w.len(),
            8,
        );
        println!("conv_transpose2d grads vs finite differences: worst rel err {e:.3e}");
        assert!(e < 1e-8);
    }
}
