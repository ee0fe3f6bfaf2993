//! Matrix products and convolutions as GEMMs (`matrixmultiply`).
//!
//! A convolution of one sample is `W [cout, cin·kh·kw] · cols [cin·kh·kw, oh·ow]`, where `cols`
//! (im2col) holds, for every output pixel, the input taps it reads (zeros in the padding). The
//! input gradient is `Wᵀ · dy` scattered back onto the pixels (col2im), and the weight gradient
//! `Σ_b dy_b · cols_bᵀ`. Semantics, `alpha`/`beta` included, are the twins' (`fsnn_core::twins`).

use fsnn_core::shapes::{ConvShape, Op};

/// `C = alpha · op(A) · op(B) + beta · C`, with A `[m, k]` (stored `[k, m]` for `Op::T`), B
/// `[k, n]` (stored `[n, k]` for `Op::T`), C `[m, n]`, all row-major. `beta = 0` does not read C.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    ta: Op,
    tb: Op,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm: operand sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // No products: C = beta · C (and exactly zero where beta is zero).
        for v in &mut c[..m * n] {
            *v = if beta != 0.0 { beta * *v } else { 0.0 };
        }
        return;
    }
    let (rsa, csa) = match ta {
        Op::N => (k as isize, 1),
        Op::T => (1, m as isize),
    };
    let (rsb, csb) = match tb {
        Op::N => (n as isize, 1),
        Op::T => (1, k as isize),
    };
    // SAFETY: the strides address A, B and C inside the slices checked above.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// im2col of sample `b`: `cols[(c·kh + ky)·kw + kx, oy·ow + ox]`.
fn im2col(s: &ConvShape, x: &[f32], b: usize, cols: &mut [f32]) {
    let (oh, ow) = (s.oh(), s.ow());
    let plane = s.h * s.w;
    for c in 0..s.cin {
        let xc = &x[(b * s.cin + c) * plane..][..plane];
        for ky in 0..s.kh {
            for kx in 0..s.kw {
                let row = &mut cols[((c * s.kh + ky) * s.kw + kx) * oh * ow..][..oh * ow];
                for oy in 0..oh {
                    let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                    let out = &mut row[oy * ow..][..ow];
                    if iy < 0 || iy >= s.h as isize {
                        out.fill(0.0);
                        continue;
                    }
                    let xr = &xc[iy as usize * s.w..][..s.w];
                    for (ox, o) in out.iter_mut().enumerate() {
                        let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                        *o = if ix < 0 || ix >= s.w as isize {
                            0.0
                        } else {
                            xr[ix as usize]
                        };
                    }
                }
            }
        }
    }
}

/// col2im of sample `b`, adding every column entry into the input pixel it came from.
fn col2im_add(s: &ConvShape, cols: &[f32], b: usize, g: &mut [f32]) {
    let (oh, ow) = (s.oh(), s.ow());
    let plane = s.h * s.w;
    for c in 0..s.cin {
        let gc = &mut g[(b * s.cin + c) * plane..][..plane];
        for ky in 0..s.kh {
            for kx in 0..s.kw {
                let row = &cols[((c * s.kh + ky) * s.kw + kx) * oh * ow..][..oh * ow];
                for oy in 0..oh {
                    let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                    if iy < 0 || iy >= s.h as isize {
                        continue;
                    }
                    for ox in 0..ow {
                        let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                        if ix >= 0 && ix < s.w as isize {
                            gc[iy as usize * s.w + ix as usize] += row[oy * ow + ox];
                        }
                    }
                }
            }
        }
    }
}

/// Scratch that convolutions reuse between calls (no allocation in the steady state).
#[derive(Default)]
pub struct ConvScratch {
    cols: Vec<f32>,
    grad: Vec<f32>,
}

impl ConvScratch {
    fn cols(&mut self, s: &ConvShape) -> &mut [f32] {
        let n = s.cin * s.kh * s.kw * s.oh() * s.ow();
        if self.cols.len() < n {
            self.cols.resize(n, 0.0);
        }
        &mut self.cols[..n]
    }
}

/// `y = conv(x, w) + beta · y`.
pub fn conv2d(
    scratch: &mut ConvScratch,
    s: &ConvShape,
    x: &[f32],
    w: &[f32],
    beta: f32,
    y: &mut [f32],
) {
    let (kk, ohw) = (s.cin * s.kh * s.kw, s.oh() * s.ow());
    for b in 0..s.batch {
        let cols = scratch.cols(s);
        im2col(s, x, b, cols);
        let yb = &mut y[b * s.cout * ohw..][..s.cout * ohw];
        gemm(Op::N, Op::N, s.cout, ohw, kk, 1.0, w, cols, beta, yb);
    }
}

/// `dx = alpha · ∂(conv)/∂x ᵀ dy + beta · dx`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_input_grad(
    scratch: &mut ConvScratch,
    s: &ConvShape,
    dy: &[f32],
    w: &[f32],
    alpha: f32,
    beta: f32,
    dx: &mut [f32],
) {
    let (kk, ohw) = (s.cin * s.kh * s.kw, s.oh() * s.ow());
    let n = s.input_len();
    let mut g = std::mem::take(&mut scratch.grad);
    g.clear();
    g.resize(n, 0.0);
    for b in 0..s.batch {
        let cols = scratch.cols(s);
        let dyb = &dy[b * s.cout * ohw..][..s.cout * ohw];
        gemm(Op::T, Op::N, kk, ohw, s.cout, 1.0, w, dyb, 0.0, cols);
        col2im_add(s, cols, b, &mut g);
    }
    for (o, v) in dx[..n].iter_mut().zip(&g) {
        *o = alpha * v + if beta != 0.0 { beta * *o } else { 0.0 };
    }
    scratch.grad = g;
}

/// `dw = alpha · Σ_b dy_b · cols_bᵀ + beta · dw`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_weight_grad(
    scratch: &mut ConvScratch,
    s: &ConvShape,
    dy: &[f32],
    x: &[f32],
    alpha: f32,
    beta: f32,
    dw: &mut [f32],
) {
    let (kk, ohw) = (s.cin * s.kh * s.kw, s.oh() * s.ow());
    let dw = &mut dw[..s.cout * kk];
    if s.batch == 0 {
        for v in dw.iter_mut() {
            *v = if beta != 0.0 { beta * *v } else { 0.0 };
        }
        return;
    }
    for b in 0..s.batch {
        let cols = scratch.cols(s);
        im2col(s, x, b, cols);
        let dyb = &dy[b * s.cout * ohw..][..s.cout * ohw];
        // The first sample applies beta; the rest accumulate.
        let (a, bt) = if b == 0 { (alpha, beta) } else { (alpha, 1.0) };
        gemm(Op::N, Op::T, s.cout, kk, ohw, a, dyb, cols, bt, dw);
    }
}
