//! Plain Rust twins of every GPU kernel, written for clarity rather than speed: the definition
//! the kernels are tested against. Names and argument orders follow the GPU launch code
//! (`crate::ops`); shapes and layouts come from this crate, so the twins import nothing of the GPU.

use crate::shapes::{
    BnShape, ConvShape, ConvTShape, NeuronStep, Op, SolverIter, SolverLayout, SolverMode, BN_EPS,
};

pub fn neuron_step(
    u: &mut [f32],
    acc: &mut [f32],
    spikes: &mut [f32],
    x: &[f32],
    fb: &[f32],
    step: NeuronStep,
) {
    for i in 0..u.len() {
        let mut v = u[i] + x[step.x_offset + i];
        if step.has_feedback {
            v += fb[i];
        }
        let s = if v >= step.vth { 1.0 } else { 0.0 };
        v = (v - step.vth * s) * step.leak;
        u[i] = v;
        acc[i] = step.leak * acc[i] + s;
        spikes[i] = s;
    }
}

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
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f32;
            for p in 0..k {
                let av = match ta {
                    Op::N => a[i * k + p],
                    Op::T => a[p * m + i],
                };
                let bv = match tb {
                    Op::N => b[p * n + j],
                    Op::T => b[j * k + p],
                };
                s += av * bv;
            }
            let prev = if beta != 0.0 {
                beta * c[i * n + j]
            } else {
                0.0
            };
            c[i * n + j] = alpha * s + prev;
        }
    }
}

fn x_at(s: &ConvShape, x: &[f32], b: usize, c: usize, iy: isize, ix: isize) -> f32 {
    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
        0.0
    } else {
        x[((b * s.cin + c) * s.h + iy as usize) * s.w + ix as usize]
    }
}

pub fn conv2d(s: &ConvShape, x: &[f32], w: &[f32], beta: f32, y: &mut [f32]) {
    let (oh, ow) = (s.oh(), s.ow());
    for b in 0..s.batch {
        for oc in 0..s.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0f32;
                    for c in 0..s.cin {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                                acc += x_at(s, x, b, c, iy, ix)
                                    * w[((oc * s.cin + c) * s.kh + ky) * s.kw + kx];
                            }
                        }
                    }
                    let idx = ((b * s.cout + oc) * oh + oy) * ow + ox;
                    y[idx] = acc + if beta != 0.0 { beta * y[idx] } else { 0.0 };
                }
            }
        }
    }
}

/// Scatter form (each output-gradient tap adds into the input pixels it read), independent of the
/// gather form the kernel uses.
pub fn conv2d_input_grad(
    s: &ConvShape,
    dy: &[f32],
    w: &[f32],
    alpha: f32,
    beta: f32,
    dx: &mut [f32],
) {
    let (oh, ow) = (s.oh(), s.ow());
    let mut g = vec![0.0f32; s.input_len()];
    for b in 0..s.batch {
        for oc in 0..s.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((b * s.cout + oc) * oh + oy) * ow + ox];
                    for c in 0..s.cin {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < s.h && (ix as usize) < s.w
                                {
                                    g[((b * s.cin + c) * s.h + iy as usize) * s.w + ix as usize] +=
                                        d * w[((oc * s.cin + c) * s.kh + ky) * s.kw + kx];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for (o, v) in dx.iter_mut().zip(g) {
        *o = alpha * v + if beta != 0.0 { beta * *o } else { 0.0 };
    }
}

/// Twin of `conv_weight_flip.wgsl`: `wf[ci, co, ky, kx] = w[co, ci, kh-1-ky, kw-1-kx]`.
pub fn conv_weight_flip(cout: usize, cin: usize, kh: usize, kw: usize, w: &[f32]) -> Vec<f32> {
    let mut wf = vec![0.0; cout * cin * kh * kw];
    for ci in 0..cin {
        for co in 0..cout {
            for ky in 0..kh {
                for kx in 0..kw {
                    wf[((ci * cout + co) * kh + ky) * kw + kx] =
                        w[((co * cin + ci) * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)];
                }
            }
        }
    }
    wf
}

pub fn conv2d_weight_grad(
    s: &ConvShape,
    dy: &[f32],
    x: &[f32],
    alpha: f32,
    beta: f32,
    dw: &mut [f32],
) {
    let (oh, ow) = (s.oh(), s.ow());
    for oc in 0..s.cout {
        for c in 0..s.cin {
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let mut acc = 0.0f32;
                    for b in 0..s.batch {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                                acc += dy[((b * s.cout + oc) * oh + oy) * ow + ox]
                                    * x_at(s, x, b, c, iy, ix);
                            }
                        }
                    }
                    let idx = ((oc * s.cin + c) * s.kh + ky) * s.kw + kx;
                    dw[idx] = alpha * acc + if beta != 0.0 { beta * dw[idx] } else { 0.0 };
                }
            }
        }
    }
}

/// Transposed convolution from its definition (PyTorch `ConvTranspose2d`): every input pixel
/// scatters `x · w[cin, cout]` into the output window at `i · stride − pad + k`.
pub fn conv_transpose2d(s: &ConvTShape, x: &[f32], w: &[f32], beta: f32, y: &mut [f32]) {
    let (oh, ow) = (s.oh(), s.ow());
    let mut out = vec![0.0f32; s.output_len()];
    for b in 0..s.batch {
        for ci in 0..s.cin {
            for iy in 0..s.h {
                for ix in 0..s.w {
                    let v = x[((b * s.cin + ci) * s.h + iy) * s.w + ix];
                    for co in 0..s.cout {
                        for ky in 0..s.k {
                            for kx in 0..s.k {
                                let oy = (iy * s.stride + ky) as isize - s.pad as isize;
                                let ox = (ix * s.stride + kx) as isize - s.pad as isize;
                                if oy >= 0 && ox >= 0 && (oy as usize) < oh && (ox as usize) < ow {
                                    out[((b * s.cout + co) * oh + oy as usize) * ow
                                        + ox as usize] +=
                                        v * w[((ci * s.cout + co) * s.k + ky) * s.k + kx];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for (o, v) in y.iter_mut().zip(out) {
        *o = v + if beta != 0.0 { beta * *o } else { 0.0 };
    }
}

pub fn conv_transpose2d_input_grad(
    s: &ConvTShape,
    dy: &[f32],
    w: &[f32],
    beta: f32,
    dx: &mut [f32],
) {
    let (oh, ow) = (s.oh(), s.ow());
    for b in 0..s.batch {
        for ci in 0..s.cin {
            for iy in 0..s.h {
                for ix in 0..s.w {
                    let mut acc = 0.0f32;
                    for co in 0..s.cout {
                        for ky in 0..s.k {
                            for kx in 0..s.k {
                                let oy = (iy * s.stride + ky) as isize - s.pad as isize;
                                let ox = (ix * s.stride + kx) as isize - s.pad as isize;
                                if oy >= 0 && ox >= 0 && (oy as usize) < oh && (ox as usize) < ow {
                                    acc += dy
                                        [((b * s.cout + co) * oh + oy as usize) * ow + ox as usize]
                                        * w[((ci * s.cout + co) * s.k + ky) * s.k + kx];
                                }
                            }
                        }
                    }
                    let idx = ((b * s.cin + ci) * s.h + iy) * s.w + ix;
                    dx[idx] = acc + if beta != 0.0 { beta * dx[idx] } else { 0.0 };
                }
            }
        }
    }
}

pub fn conv_transpose2d_weight_grad(
    s: &ConvTShape,
    dy: &[f32],
    x: &[f32],
    alpha: f32,
    beta: f32,
    dw: &mut [f32],
) {
    let (oh, ow) = (s.oh(), s.ow());
    let mut g = vec![0.0f32; s.weight_len()];
    for b in 0..s.batch {
        for ci in 0..s.cin {
            for iy in 0..s.h {
                for ix in 0..s.w {
                    let v = x[((b * s.cin + ci) * s.h + iy) * s.w + ix];
                    for co in 0..s.cout {
                        for ky in 0..s.k {
                            for kx in 0..s.k {
                                let oy = (iy * s.stride + ky) as isize - s.pad as isize;
                                let ox = (ix * s.stride + kx) as isize - s.pad as isize;
                                if oy >= 0 && ox >= 0 && (oy as usize) < oh && (ox as usize) < ow {
                                    g[((ci * s.cout + co) * s.k + ky) * s.k + kx] += v * dy
                                        [((b * s.cout + co) * oh + oy as usize) * ow + ox as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for (o, v) in dw.iter_mut().zip(g) {
        *o = alpha * v + if beta != 0.0 { beta * *o } else { 0.0 };
    }
}

pub fn avgpool2x2(planes: usize, h: usize, w: usize, x: &[f32], y: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    for p in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let at = |dy: usize, dx: usize| x[p * h * w + (2 * oy + dy) * w + 2 * ox + dx];
                y[p * oh * ow + oy * ow + ox] = 0.25 * (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1));
            }
        }
    }
}

pub fn avgpool2x2_grad(planes: usize, h: usize, w: usize, dy: &[f32], dx: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    dx.iter_mut().for_each(|v| *v = 0.0);
    for p in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let g = 0.25 * dy[p * oh * ow + oy * ow + ox];
                for d in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    dx[p * h * w + (2 * oy + d.0) * w + 2 * ox + d.1] += g;
                }
            }
        }
    }
}

fn channel_values(s: BnShape, x: &[f32], c: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
    (0..s.batch).flat_map(move |b| {
        (0..s.hw).map(move |q| {
            let i = (b * s.channels + c) * s.hw + q;
            (i, x[i])
        })
    })
}

/// Returns (mean, biased variance); updates the running statistics when `update` is given.
pub fn bn_stats(
    s: BnShape,
    x: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    update: Option<f32>,
) -> (Vec<f32>, Vec<f32>) {
    let n = (s.batch * s.hw) as f64;
    let mut mean = vec![0.0; s.channels];
    let mut var = vec![0.0; s.channels];
    for c in 0..s.channels {
        let mu = channel_values(s, x, c).map(|(_, v)| v as f64).sum::<f64>() / n;
        let va = channel_values(s, x, c)
            .map(|(_, v)| (v as f64 - mu).powi(2))
            .sum::<f64>()
            / n;
        mean[c] = mu as f32;
        var[c] = va as f32;
        if let Some(m) = update {
            let unbiased = va * n / (n - 1.0).max(1.0);
            running_mean[c] = (1.0 - m) * running_mean[c] + m * mu as f32;
            running_var[c] = (1.0 - m) * running_var[c] + m * unbiased as f32;
        }
    }
    (mean, var)
}

pub fn bn_forward(
    s: BnShape,
    x: &[f32],
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
) {
    for i in 0..s.len() {
        let c = (i / s.hw) % s.channels;
        y[i] = (x[i] - mean[c]) / (var[c] + BN_EPS).sqrt() * gamma[c] + beta[c];
    }
}

/// Returns (dgamma, dbeta, dx).
#[allow(clippy::too_many_arguments)]
pub fn bn_backward(
    s: BnShape,
    x: &[f32],
    dy: &[f32],
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    batch_stats: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = (s.batch * s.hw) as f32;
    let mut dgamma = vec![0.0; s.channels];
    let mut dbeta = vec![0.0; s.channels];
    for c in 0..s.channels {
        let istd = 1.0 / (var[c] + BN_EPS).sqrt();
        for (i, v) in channel_values(s, x, c) {
            dbeta[c] += dy[i];
            dgamma[c] += dy[i] * (v - mean[c]) * istd;
        }
    }
    let mut dx = vec![0.0; s.len()];
    for i in 0..s.len() {
        let c = (i / s.hw) % s.channels;
        let istd = 1.0 / (var[c] + BN_EPS).sqrt();
        let mut g = dy[i];
        if batch_stats {
            let xhat = (x[i] - mean[c]) * istd;
            g = g - dbeta[c] / n - xhat * dgamma[c] / n;
        }
        dx[i] = gamma[c] * istd * g;
    }
    (dgamma, dbeta, dx)
}

pub fn bias_add(s: BnShape, bias: &[f32], y: &mut [f32]) {
    for (i, v) in y.iter_mut().enumerate().take(s.len()) {
        *v += bias[(i / s.hw) % s.channels];
    }
}

pub fn channel_sum(s: BnShape, x: &[f32], alpha: f32, beta: f32, out: &mut [f32]) {
    for (c, o) in out.iter_mut().enumerate().take(s.channels) {
        let t: f32 = channel_values(s, x, c).map(|(_, v)| v).sum();
        *o = alpha * t + if beta != 0.0 { beta * *o } else { 0.0 };
    }
}

pub fn clamp_mask(z: &[f32], scale: f32, y: &mut [f32], mask: &mut [f32]) {
    for i in 0..z.len() {
        let v = scale * z[i];
        y[i] = v.clamp(0.0, 1.0);
        mask[i] = if v > 0.0 && v < 1.0 { 1.0 } else { 0.0 };
    }
}

pub fn axpby(alpha: f32, x: &[f32], beta: f32, y: &mut [f32]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv = alpha * xv + if beta != 0.0 { beta * *yv } else { 0.0 };
    }
}

pub fn scale(alpha: f32, y: &mut [f32]) {
    y.iter_mut().for_each(|v| *v *= alpha);
}

pub fn mask_mul(m: &[f32], y: &mut [f32]) {
    for (i, v) in y.iter_mut().enumerate() {
        *v *= m[i % m.len()];
    }
}

fn pcg_hash(x: u32) -> u32 {
    let state = x.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// The counter-based generator of shaders/shared/rng.wgsl.
pub fn rng_u32(seed: u32, stream: u32, counter: u32) -> u32 {
    pcg_hash(pcg_hash(pcg_hash(seed) ^ stream) ^ counter)
}

pub fn rng_uniform(seed: u32, stream: u32, counter: u32) -> f32 {
    (rng_u32(seed, stream, counter) >> 8) as f32 * (1.0 / 16777216.0)
}

pub fn dropout_mask(mask: &mut [f32], prob: f32, seed: u32, stream: u32) {
    let keep = 1.0 / (1.0 - prob);
    for (i, m) in mask.iter_mut().enumerate() {
        *m = if rng_uniform(seed, stream, i as u32) >= prob {
            keep
        } else {
            0.0
        };
    }
}

pub fn row_dot(
    rows: usize,
    dim: usize,
    x: &[f32],
    y: &[f32],
    alpha: f32,
    beta: f32,
    out: &mut [f32],
) {
    for r in 0..rows {
        let t: f32 = (0..dim).map(|j| x[r * dim + j] * y[r * dim + j]).sum();
        out[r] = alpha * t + if beta != 0.0 { beta * out[r] } else { 0.0 };
    }
}

pub fn sum(x: &[f32], square: bool) -> f32 {
    x.iter()
        .map(|&v| {
            if square {
                (v as f64) * (v as f64)
            } else {
                v as f64
            }
        })
        .sum::<f64>() as f32
}

/// Returns (per-row loss, dlogits, correct).
pub fn softmax_xent(
    rows: usize,
    classes: usize,
    logits: &[f32],
    labels: &[u32],
    grad_scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut loss = vec![0.0; rows];
    let mut dl = vec![0.0; rows * classes];
    let mut correct = vec![0.0; rows];
    for r in 0..rows {
        let row = &logits[r * classes..(r + 1) * classes];
        let mut arg = 0;
        for j in 1..classes {
            if row[j] > row[arg] {
                arg = j;
            }
        }
        let mx = row[arg];
        let lse = mx + row.iter().map(|v| (v - mx).exp()).sum::<f32>().ln();
        let label = labels[r] as usize;
        loss[r] = lse - row[label];
        for j in 0..classes {
            dl[r * classes + j] =
                grad_scale * ((row[j] - lse).exp() - if j == label { 1.0 } else { 0.0 });
        }
        correct[r] = if arg == label { 1.0 } else { 0.0 };
    }
    (loss, dl, correct)
}

pub fn sgd(w: &mut [f32], g: &[f32], v: &mut [f32], lr: f32, momentum: f32, weight_decay: f32) {
    for i in 0..w.len() {
        let d = g[i] + weight_decay * w[i];
        v[i] = momentum * v[i] + d;
        w[i] -= lr * v[i];
    }
}

/// One power-iteration step; returns σ̂ (in core: the spectral norm's setup runs it on the host).
pub use crate::host::power_iteration;

/// The FMA probe of shaders/peak_fma.wgsl. `mul_add` rounds once, like WGSL's `fma` where the
/// hardware fuses; drivers that do not fuse differ only in the last bits.
pub fn peak_fma(iters: u32, mul: f32, add: f32, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        let s = (i % 1024) as f32 * (1.0 / 1024.0);
        let mut a = [
            s,
            s + 0.125,
            s + 0.25,
            s + 0.375,
            s + 0.5,
            s + 0.625,
            s + 0.75,
            s + 0.875,
        ];
        for _ in 0..iters {
            for v in a.iter_mut() {
                *v = v.mul_add(mul, add);
            }
        }
        *o = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    }
}

#[inline(always)]
fn finite_or_zero(v: f32) -> f32 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// `(ΔG_r or U/V)`-row offsets of sample `b`, slot `j` in the `[batch, slots, 2, dim]` history.
#[inline(always)]
fn hist_rows(l: &SolverLayout, b: usize, j: usize) -> (usize, usize) {
    let a = (b * l.slots + j) * 2 * l.dim;
    (a, a + l.dim)
}

#[allow(clippy::too_many_arguments)]
pub fn solver_dots(
    l: &SolverLayout,
    it: SolverIter,
    hist: &[f32],
    jx: &[f32],
    x: &[f32],
    gl: &[f32],
    gold: &[f32],
    step: &[f32],
    scal: &mut [f32],
) {
    let res = |e: usize| (jx[e] - x[e]) + gl[e];
    for b in 0..l.batch {
        let vb = b * l.dim;
        for r in 0..=it.count {
            let (mut d0, mut d1, mut d2) = (0f32, 0f32, 0f32);
            let row = if r == it.count {
                for e in vb..vb + l.dim {
                    let g = res(e);
                    let dg = g - gold[e];
                    d0 = g.mul_add(g, d0);
                    d1 = step[e].mul_add(dg, d1);
                    d2 = step[e].mul_add(g, d2);
                }
                l.slots
            } else {
                let (ha, hb) = hist_rows(l, b, r);
                for i in 0..l.dim {
                    let e = vb + i;
                    let g = res(e);
                    let dg = g - gold[e];
                    if l.mode == SolverMode::Broyden {
                        d0 = hist[ha + i].mul_add(step[e], d0);
                        d1 = hist[hb + i].mul_add(dg, d1);
                        d2 = hist[hb + i].mul_add(g, d2);
                    } else {
                        let q = if r == it.slot { dg } else { hist[hb + i] };
                        d0 = q.mul_add(dg, d0);
                        d1 = q.mul_add(g, d1);
                    }
                }
                r
            };
            let o = (b * (l.slots + 1) + row) * 3;
            scal[o..o + 3].copy_from_slice(&[d0, d1, d2]);
        }
    }
}

/// Anderson's coefficients for one sample: the Jacobi-scaled, `reg`-regularised normal equations
/// solved by Gaussian elimination with partial pivoting, in the kernel's order.
// Index loops on purpose: they mirror the WGSL line for line.
#[allow(clippy::needless_range_loop)]
fn anderson_coefficients(gram: &[f32], slots: usize, n: usize, rhs: &[f32], reg: f32) -> Vec<f32> {
    let d: Vec<f32> = (0..n)
        .map(|i| {
            let h = gram[i * slots + i];
            if h > 0.0 {
                1.0 / h.sqrt()
            } else {
                0.0
            }
        })
        .collect();
    let mut a: Vec<Vec<f32>> = (0..n)
        .map(|i| (0..n).map(|j| gram[i * slots + j] * d[i] * d[j]).collect())
        .collect();
    let mut y: Vec<f32> = (0..n).map(|i| rhs[i] * d[i]).collect();
    for i in 0..n {
        a[i][i] += reg;
    }
    for c in 0..n {
        let mut piv = c;
        for i in c + 1..n {
            if a[i][c].abs() > a[piv][c].abs() {
                piv = i;
            }
        }
        a.swap(c, piv);
        y.swap(c, piv);
        for i in c + 1..n {
            let f = a[i][c] / a[c][c];
            for j in c..n {
                a[i][j] -= f * a[c][j];
            }
            y[i] -= f * y[c];
        }
    }
    for i in (0..n).rev() {
        let mut s = y[i];
        for j in i + 1..n {
            s -= a[i][j] * y[j];
        }
        y[i] = s / a[i][i];
    }
    (0..n).map(|i| finite_or_zero(y[i] * d[i])).collect()
}

pub fn solver_track(
    l: &SolverLayout,
    it: SolverIter,
    threshold: usize,
    eps2: f32,
    reg: f32,
    scal: &mut [f32],
) {
    let rows = l.slots + 1;
    let s = l.state_offset();
    let gram0 = s + 8;
    let gam0 = gram0 + l.batch * l.slots * l.slots;
    if l.mode == SolverMode::Anderson && it.it > 0 && scal[s + 1] == 0.0 {
        for b in 0..l.batch {
            let db = b * rows * 3;
            let gb = gram0 + b * l.slots * l.slots;
            for j in 0..it.count {
                let v = scal[db + j * 3];
                scal[gb + it.slot * l.slots + j] = v;
                scal[gb + j * l.slots + it.slot] = v;
            }
            let rhs: Vec<f32> = (0..it.count).map(|j| scal[db + j * 3 + 1]).collect();
            let gam = anderson_coefficients(
                &scal[gb..gb + l.slots * l.slots],
                l.slots,
                it.count,
                &rhs,
                reg,
            );
            scal[gam0 + b * l.slots..gam0 + b * l.slots + it.count].copy_from_slice(&gam);
        }
    }
    let total: f32 = (0..l.batch).map(|b| scal[(b * rows + l.slots) * 3]).sum();
    let flag = |c: bool| if c { 1.0 } else { 0.0 };
    if it.it == 0 {
        scal[s] = total;
        scal[s + 1] = flag(threshold == 0 || (l.mode == SolverMode::FixedPoint && total < eps2));
        scal[s + 2] = 1.0;
        scal[s + 3] = 0.0;
        scal[s + 4] = total;
        return;
    }
    if scal[s + 1] != 0.0 {
        scal[s + 2] = 0.0;
        return;
    }
    let better = total < scal[s];
    if better {
        scal[s] = total;
    }
    scal[s + 2] = flag(better);
    if total < eps2 || it.it >= threshold {
        scal[s + 1] = 1.0;
        scal[s + 3] = it.it as f32;
    }
}

#[allow(clippy::too_many_arguments)]
pub fn solver_combine(
    l: &SolverLayout,
    it: SolverIter,
    alpha: f32,
    hist: &mut [f32],
    jx: &[f32],
    x: &mut [f32],
    gl: &[f32],
    gold: &mut [f32],
    step: &mut [f32],
    best: &mut [f32],
    scal: &[f32],
) {
    solver_combine_samples(
        0..l.batch,
        l,
        it,
        alpha,
        hist,
        jx,
        x,
        gl,
        gold,
        step,
        best,
        scal,
    )
}

/// [`solver_combine`] for the samples in `range` only (samples are independent), so that a
/// backend can split the batch over threads. Always inlined: the CPU backend compiles it into a
/// caller with FMA enabled, where `mul_add` is one instruction rather than a libm call.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn solver_combine_samples(
    range: std::ops::Range<usize>,
    l: &SolverLayout,
    it: SolverIter,
    alpha: f32,
    hist: &mut [f32],
    jx: &[f32],
    x: &mut [f32],
    gl: &[f32],
    gold: &mut [f32],
    step: &mut [f32],
    best: &mut [f32],
    scal: &[f32],
) {
    let st = l.state_offset();
    let gam0 = st + 8 + l.batch * l.slots * l.slots;
    let (improved, done) = (scal[st + 2] != 0.0, scal[st + 1] != 0.0);
    for b in range {
        let db = b * (l.slots + 1) * 3;
        let own = db + l.slots * 3;
        for i in 0..l.dim {
            let e = b * l.dim + i;
            let xv = x[e];
            if improved {
                best[e] = xv;
            }
            if done {
                continue;
            }
            let g = (jx[e] - xv) + gl[e];
            let g_prev = gold[e];
            gold[e] = g;
            if l.mode == SolverMode::FixedPoint {
                x[e] = alpha * g + xv;
                continue;
            }
            let mut s = g;
            if it.store {
                let dx = step[e];
                let dg = g - g_prev;
                let (hs, hs2) = hist_rows(l, b, it.slot);
                if l.mode == SolverMode::Broyden {
                    let (mut vt, mut t) = (-dx, -dg);
                    let (mut den, mut cg) = (-scal[own + 1], -scal[own + 2]);
                    for j in 0..it.count {
                        let (c1, c2, c3) =
                            (scal[db + j * 3], scal[db + j * 3 + 1], scal[db + j * 3 + 2]);
                        let (ha, hb) = hist_rows(l, b, j);
                        let u = hist[ha + i];
                        vt = c1.mul_add(hist[hb + i], vt);
                        t = c2.mul_add(u, t);
                        den = c1.mul_add(c2, den);
                        cg = c1.mul_add(c3, cg);
                        if j != it.slot {
                            s = (-c3).mul_add(u, s);
                        }
                    }
                    let un = finite_or_zero((dx - t) / den);
                    s = (-cg).mul_add(un, s);
                    hist[hs + i] = un;
                    hist[hs2 + i] = finite_or_zero(vt);
                } else {
                    for j in 0..it.count {
                        let (ha, hb) = hist_rows(l, b, j);
                        let pair = if j == it.slot {
                            dx + dg
                        } else {
                            hist[ha + i] + hist[hb + i]
                        };
                        s = (-scal[gam0 + b * l.slots + j]).mul_add(pair, s);
                    }
                    hist[hs + i] = dx;
                    hist[hs2 + i] = dg;
                }
            }
            x[e] = s + xv;
            step[e] = s;
        }
    }
}

pub fn sn_weight(w: &[f32], g: f32, sigma: f32, weff: &mut [f32]) {
    for (o, &x) in weff.iter_mut().zip(w) {
        *o = g.clamp(-1.0, 1.0) * x / sigma;
    }
}

/// Returns (dw, dg).
pub fn sn_weight_grad(
    cols: usize,
    gw: &[f32],
    u: &[f32],
    v: &[f32],
    g: f32,
    sigma: f32,
    dot: f32,
) -> (Vec<f32>, f32) {
    let c = g.clamp(-1.0, 1.0);
    let dw = (0..gw.len())
        .map(|i| c / sigma * gw[i] - c * dot / (sigma * sigma) * u[i / cols] * v[i % cols])
        .collect();
    (dw, if g.abs() <= 1.0 { dot / sigma } else { 0.0 })
}

pub fn transpose(rows: usize, cols: usize, src: &[f32], dst: &mut [f32]) {
    transpose_padded(rows, cols, rows, src, dst);
}

pub fn transpose_padded(rows: usize, cols: usize, ld: usize, src: &[f32], dst: &mut [f32]) {
    for r in 0..rows {
        for c in 0..cols {
            dst[c * ld + r] = src[r * cols + c];
        }
    }
}

/// The neuron update shared by the event-driven simulations; `fb` is the unmasked feedback sum.
fn event_neuron(
    u: &mut f32,
    acc: &mut f32,
    x: f32,
    fb: Option<f32>,
    m: f32,
    vth: f32,
    leak: f32,
) -> bool {
    let mut v = *u + x;
    if let Some(f) = fb {
        v += f * m;
    }
    let s = if v >= vth { 1.0 } else { 0.0 };
    *u = (v - vth * s) * leak;
    *acc = leak * *acc + s;
    s != 0.0
}

fn bit(bits: &[u32], i: usize) -> bool {
    bits[i / 32] >> (i % 32) & 1 == 1
}

/// Twin of `ops::fc_event_sim`: `wt` is `W_effᵀ` (`[n_in, n_out]`, rows `fc_event_ld(n)` apart).
#[allow(clippy::too_many_arguments)]
pub fn fc_event_sim(
    s: &crate::shapes::FcEventSim,
    u: &mut [f32],
    acc: &mut [f32],
    bits: &mut [u32],
    wt: &[f32],
    x: &[f32],
    mask: Option<&[f32]>,
) {
    let (n, words) = (s.n, crate::events::spike_words(s.n));
    let ld = crate::events::fc_event_ld(n);
    for b in 0..s.batch {
        for (k, t) in (s.t_begin..s.t_end).enumerate() {
            let prev = bits[b * words..(b + 1) * words].to_vec();
            let mut next = vec![0u32; words];
            for j in 0..n {
                let fb = (t > 0).then(|| {
                    (0..n)
                        .filter(|&i| bit(&prev, i))
                        .fold(0.0f32, |a, i| a + wt[i * ld + j])
                });
                let m = mask.map_or(1.0, |m| m[b * n + j]);
                let xv = x[s.x_off + k * s.x_step + b * n + j];
                let o = b * n + j;
                if event_neuron(&mut u[o], &mut acc[o], xv, fb, m, s.vth, s.leak) {
                    next[j / 32] |= 1 << (j % 32);
                }
            }
            bits[b * words..(b + 1) * words].copy_from_slice(&next);
        }
    }
}

/// Twin of `ops::conv_event_sim`: `wt` is the weight as `[cin·kh·kw, cout]`, rows
/// `conv_event_ld(cout)` apart.
#[allow(clippy::too_many_arguments)]
pub fn conv_event_sim(
    s: &ConvShape,
    step: NeuronStep,
    u: &mut [f32],
    acc: &mut [f32],
    in_bits: &[u32],
    out_bits: &mut [u32],
    wt: &[f32],
    x: &[f32],
    mask: Option<&[f32]>,
) {
    let (oh, ow) = (s.oh(), s.ow());
    let (in_wpr, out_wpr) = (s.w.div_ceil(32), ow.div_ceil(32));
    let ld = crate::events::conv_event_ld(s.cout);
    for b in 0..s.batch {
        for co in 0..s.cout {
            for oy in 0..oh {
                let mut row = vec![0u32; out_wpr];
                for ox in 0..ow {
                    let fb = step.has_feedback.then(|| {
                        let mut f = 0.0f32;
                        for c in 0..s.cin {
                            for ky in 0..s.kh {
                                for kx in 0..s.kw {
                                    let iy = (oy + ky) as isize - s.pad as isize;
                                    let ix = (ox + kx) as isize - s.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize
                                    {
                                        continue;
                                    }
                                    let base = ((b * s.cin + c) * s.h + iy as usize) * in_wpr;
                                    if bit(&in_bits[base..base + in_wpr], ix as usize) {
                                        f += wt[((c * s.kh + ky) * s.kw + kx) * ld + co];
                                    }
                                }
                            }
                        }
                        f
                    });
                    let i = ((b * s.cout + co) * oh + oy) * ow + ox;
                    let m = mask.map_or(1.0, |m| m[i]);
                    let xv = x[step.x_offset + i];
                    if event_neuron(&mut u[i], &mut acc[i], xv, fb, m, step.vth, step.leak) {
                        row[ox / 32] |= 1 << (ox % 32);
                    }
                }
                let ob = ((b * s.cout + co) * oh + oy) * out_wpr;
                out_bits[ob..ob + out_wpr].copy_from_slice(&row);
            }
        }
    }
}

/// Packs 0/1 spikes of `[rows, width]` into bit sets of `ceil(width/32)` words per row.
pub fn pack_rows(spikes: &[f32], width: usize) -> Vec<u32> {
    let wpr = width.div_ceil(32);
    let rows = spikes.len() / width;
    let mut out = vec![0u32; rows * wpr];
    for r in 0..rows {
        for c in 0..width {
            if spikes[r * width + c] != 0.0 {
                out[r * wpr + c / 32] |= 1 << (c % 32);
            }
        }
    }
    out
}
