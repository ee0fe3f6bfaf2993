//! Host side of every kernel: shape checks, parameters, bindings and the dispatch grid. Each
//! function records work on the [`Gpu`]; nothing runs until a flush or a read. The CPU twin of
//! each is the function of the same name in [`crate::cpu`].

use crate::gpu::{Binding, ConvEventForm, Gpu, Params, Sharing, SpikeWalk, Tensor};
use crate::variants::{Family, Problem, Variant};

pub use fsnn_core::events::{
    conv_event_ld, conv_event_supported, conv_spike_words, fc_event_ld, spike_words,
    FC_EVENT_MAX_NEURONS,
};
pub use fsnn_core::shapes::{
    BnShape, ConvShape, ConvTShape, FcEventSim, NeuronStep, Op, SolverIter, SolverLayout,
    SolverMode, ANDERSON_MAX_SLOTS, BN_EPS,
};

/// The convolution kernels' parameter words (the `unshared` word 11 zero).
fn conv_params(s: &ConvShape, oh: usize, ow: usize, alpha: f32, beta: f32) -> Params {
    Params::new()
        .u(s.batch)
        .u(s.cin)
        .u(s.h)
        .u(s.w)
        .u(s.cout)
        .u(oh)
        .u(ow)
        .u(s.kh)
        .u(s.kw)
        .u(s.stride)
        .u(s.pad)
        .u(0u32)
        .f(alpha)
        .f(beta)
}

fn check(t: &Tensor, len: usize, what: &str) {
    assert!(
        t.len() >= len,
        "{what}: tensor of shape {:?} holds {} elements, {len} needed",
        t.shape,
        t.len()
    );
}

fn assert_distinct(a: &Tensor, b: &Tensor, what: &str) {
    assert!(!a.same_buffer(b), "{what}: output must not alias an input");
}

// ------------------------------------------------------------------ neuron

/// The fused neuron update over `u.len()` neurons: charge, fire, reset by subtraction, leak,
/// accumulate. `fb` is ignored when `step.has_feedback` is false (pass any tensor).
pub fn neuron_step(
    gpu: &Gpu,
    u: &Tensor,
    acc: &Tensor,
    spikes: &Tensor,
    x: &Tensor,
    fb: &Tensor,
    step: NeuronStep,
) {
    let n = u.len();
    check(acc, n, "neuron_step acc");
    check(spikes, n, "neuron_step spikes");
    check(x, step.x_offset + n, "neuron_step x");
    if step.has_feedback {
        check(fb, n, "neuron_step fb");
    }
    gpu.dispatch(
        "neuron_step",
        Params::new()
            .u(n)
            .u(step.x_offset)
            .u(step.has_feedback as u32)
            .u(0u32)
            .f(step.vth)
            .f(step.leak),
        vec![
            gpu.bind(u),
            gpu.bind(acc),
            gpu.bind(spikes),
            gpu.bind(x),
            gpu.bind(fb),
        ],
        gpu.groups_1d(n),
    );
}

// ------------------------------------------------------------------- dense

/// `C[m×n] = alpha · op(A) · op(B) + beta · C`, all row-major. `op(A)` is m×k (A stored m×k for
/// `Op::N`, k×m for `Op::T`), `op(B)` is k×n. Rows of A and C are split over several dispatches
/// when either is larger than one storage binding.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    gpu: &Gpu,
    ta: Op,
    tb: Op,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &Tensor,
    b: &Tensor,
    beta: f32,
    c: &Tensor,
) {
    let v = gpu.variant_at(Family::Gemm, &Problem::Gemm { ta, tb, m, n, k });
    gemm_variant(gpu, v, ta, tb, m, n, k, alpha, a, b, beta, c);
}

/// Rows × columns of C per invocation of gemm_coop.wgsl (`R`, `C` there; tools/gen-coop-gemm.py).
const GEMM_COOP_BLOCK: (usize, usize) = (16, 4);

/// Workgroups of one GEMM dispatch: 64×64 of C each, except the cooperative variant's (8
/// invocations of [`GEMM_COOP_BLOCK`]).
fn gemm_groups(variant: Variant, rows: usize, n: usize) -> [u32; 3] {
    let (r, c) = gemm_tile(variant);
    [n.div_ceil(c) as u32, rows.div_ceil(r) as u32, 1]
}

/// Rows and columns of C one GEMM workgroup covers.
fn gemm_tile(variant: Variant) -> (usize, usize) {
    match variant {
        Variant::Coop => {
            let (r, c) = GEMM_COOP_BLOCK;
            (r, 8 * c)
        }
        _ => (64, 64),
    }
}

/// [`gemm`] with an explicit kernel variant (see [`crate::variants`]). Every variant takes the
/// same parameters.
#[allow(clippy::too_many_arguments)]
pub fn gemm_variant(
    gpu: &Gpu,
    variant: Variant,
    ta: Op,
    tb: Op,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &Tensor,
    b: &Tensor,
    beta: f32,
    c: &Tensor,
) {
    check(a, m * k, "gemm A");
    check(b, k * n, "gemm B");
    check(c, m * n, "gemm C");
    assert_distinct(c, a, "gemm");
    assert_distinct(c, b, "gemm");
    if m == 0 || n == 0 {
        return;
    }
    let (b_sk, b_sn) = match tb {
        Op::N => (n, 1),
        Op::T => (1, k),
    };
    // op(A) = A is split by rows into windows of one binding each; Aᵀ rows are strided through
    // all of A, so op(A) = Aᵀ is bound whole and split by offset.
    let rows_per = match ta {
        Op::N => gpu.rows_per_binding(k.max(n)),
        Op::T => m,
    };
    // Rows and columns are also split so that no grid dimension passes the device's limit.
    let max_groups = gpu.ctx.limits.max_compute_workgroups_per_dimension as usize;
    let (row_tile, col_tile) = gemm_tile(variant);
    let rows_per = rows_per.min(max_groups * row_tile).min(m).max(1);
    let cols_per = (max_groups * col_tile).min(n).max(1);
    let mut r0 = 0;
    while r0 < m {
        let rows = rows_per.min(m - r0);
        let (ab, a_off, a_sm, a_sk) = match ta {
            Op::N => {
                let (bd, off) = gpu.window(a, r0 * k, rows * k);
                (bd, off as usize, k, 1)
            }
            Op::T => (gpu.bind(a), r0, 1, m),
        };
        let (cb, c_off) = gpu.window(c, r0 * n, rows * n);
        let mut c0 = 0;
        while c0 < n {
            let cols = cols_per.min(n - c0);
            gpu.dispatch(
                Family::Gemm.kernel(variant),
                Params::new()
                    .u(rows)
                    .u(cols)
                    .u(k)
                    .u(a_off)
                    .u(a_sm)
                    .u(a_sk)
                    .u(c0 * b_sn)
                    .u(b_sk)
                    .u(b_sn)
                    .u(c_off as usize + c0)
                    .u(n)
                    .u(gpu.sharing().unshared_flag())
                    .f(alpha)
                    .f(beta),
                vec![ab.clone(), gpu.bind(b), cb.clone()],
                gemm_groups(variant, rows, cols),
            );
            c0 += cols;
        }
        r0 += rows;
    }
}

// -------------------------------------------------------------------- conv

/// `y = conv(x, w) + beta · y` (no bias).
pub fn conv2d(gpu: &Gpu, s: &ConvShape, x: &Tensor, w: &Tensor, beta: f32, y: &Tensor) {
    let v = gpu.variant_at(Family::Conv2d, &Problem::Conv(*s));
    conv2d_variant(gpu, v, s, x, w, 1.0, beta, y);
}

/// `y = alpha · conv(x, w) + beta · y` with an explicit kernel variant (see [`crate::variants`]).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_variant(
    gpu: &Gpu,
    variant: Variant,
    s: &ConvShape,
    x: &Tensor,
    w: &Tensor,
    alpha: f32,
    beta: f32,
    y: &Tensor,
) {
    conv_dispatch(gpu, Family::Conv2d, variant, s, x, w, alpha, beta, y);
}

/// Rows and columns of the result that one workgroup of a convolution kernel covers: 64 × 64,
/// except the cooperative kernels' shared rows × columns (`R` × `8·C` in their WGSL, measured per
/// family).
fn conv_tile(f: Family, variant: Variant) -> (usize, usize) {
    match (variant, f) {
        (Variant::Coop, Family::Conv2dInputGrad) => (32, 32),
        (Variant::Coop, _) => (32, 64),
        _ => (64, 64),
    }
}

/// Workgroups of one convolution dispatch. The blocked and tiled kernels take output pixels
/// (forward, input gradient) or output channels (weight gradient) along y; the cooperative ones
/// take the operand they share (channels) along y and the other along x.
fn conv_groups(f: Family, variant: Variant, s: &ConvShape) -> [u32; 3] {
    let (tr, tc) = conv_tile(f, variant);
    let g = |n: usize, t: usize| n.div_ceil(t) as u32;
    let coop = variant == Variant::Coop;
    match f {
        Family::Conv2d => {
            let pixels = s.batch * s.oh() * s.ow();
            if coop {
                [g(pixels, tc), g(s.cout, tr), 1]
            } else {
                [g(s.cout, tc), g(pixels, tr), 1]
            }
        }
        // One z-slice per stride parity class (see the kernels); the largest class has this many
        // pixels.
        Family::Conv2dInputGrad => {
            let pixels = s.batch * s.h.div_ceil(s.stride) * s.w.div_ceil(s.stride);
            let z = (s.stride * s.stride) as u32;
            if coop {
                [g(pixels, tc), g(s.cin, tr), z]
            } else {
                [g(s.cin, tc), g(pixels, tr), z]
            }
        }
        Family::Conv2dWeightGrad => [g(s.cin * s.kh * s.kw, tc), g(s.cout, tr), 1],
        Family::Gemm => unreachable!("not a convolution"),
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_dispatch(
    gpu: &Gpu,
    f: Family,
    variant: Variant,
    s: &ConvShape,
    a: &Tensor,
    b: &Tensor,
    alpha: f32,
    beta: f32,
    out: &Tensor,
) {
    let (input, weight, output) = (s.input_len(), s.weight_len(), s.output_len());
    let [(la, na), (lb, nb), (lo, no)] = match f {
        Family::Conv2d => [
            (input, "conv2d x"),
            (weight, "conv2d w"),
            (output, "conv2d y"),
        ],
        Family::Conv2dInputGrad => [
            (output, "conv2d_input_grad dy"),
            (weight, "conv2d_input_grad w"),
            (input, "conv2d_input_grad dx"),
        ],
        Family::Conv2dWeightGrad => [
            (output, "conv2d_weight_grad dy"),
            (input, "conv2d_weight_grad x"),
            (weight, "conv2d_weight_grad dw"),
        ],
        Family::Gemm => unreachable!("not a convolution"),
    };
    check(a, la, na);
    check(b, lb, nb);
    check(out, lo, no);
    if f != Family::Conv2dWeightGrad {
        assert_distinct(out, a, f.name());
    }
    // The weight gradient's grid does not grow with the batch; the others' does, and samples
    // are independent there, so a batch over the grid limit runs as several smaller batches.
    let (ia, io) = (la / s.batch.max(1), lo / s.batch.max(1));
    let ranges = if f == Family::Conv2dWeightGrad {
        vec![(0, s.batch)]
    } else {
        sample_ranges(gpu, s.batch, &[ia, io], |nb| {
            let g = conv_groups(f, variant, &ConvShape { batch: nb, ..*s });
            g[0].max(g[1]) as usize
        })
    };
    for (b0, nb) in ranges {
        let sub = ConvShape { batch: nb, ..*s };
        let (ab, ob) = if nb == s.batch {
            (gpu.bind(a), gpu.bind(out))
        } else {
            (
                aligned_window(gpu, a, b0 * ia, nb * ia),
                aligned_window(gpu, out, b0 * io, nb * io),
            )
        };
        let mut params = conv_params(&sub, s.oh(), s.ow(), alpha, beta);
        // Word 11 is the cooperative kernels' `unshared` flag (padding in the others).
        params.0[11] = gpu.sharing().unshared_flag();
        gpu.dispatch(
            f.kernel(variant),
            params,
            vec![ab, gpu.bind(b), ob],
            conv_groups(f, variant, &sub),
        );
    }
}

/// Sample ranges `(first, count)` for a dispatch whose grid grows with the batch: `groups(nb)`
/// (its largest grid dimension at `nb` samples) stays within the device's workgroups per
/// dimension, and every range starts each per-sample tensor (`words` per sample) at a storage
/// offset the device accepts, so the kernels run unchanged on windows of the tensors. One range
/// when the whole batch fits.
fn sample_ranges(
    gpu: &Gpu,
    batch: usize,
    words: &[usize],
    groups: impl Fn(usize) -> usize,
) -> Vec<(usize, usize)> {
    let max = gpu.ctx.limits.max_compute_workgroups_per_dimension as usize;
    if batch <= 1 || groups(batch) <= max {
        return vec![(0, batch)];
    }
    let align = gpu.ctx.limits.min_storage_buffer_offset_alignment as usize;
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    // Samples per range: a multiple of `quantum` keeps every range's byte offsets aligned.
    let quantum = words.iter().fold(1, |q, &w| {
        let qi = align / gcd(align, (w * 4).max(1));
        q / gcd(q, qi) * qi
    });
    assert!(
        groups(quantum) <= max,
        "{quantum} samples already need more than {max} workgroups in one dimension"
    );
    // The most whole quanta whose grid fits (the grid grows with the samples).
    let (mut lo, mut hi) = (1, batch / quantum);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if groups(mid * quantum) <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let per = lo * quantum;
    (0..batch.div_ceil(per))
        .map(|i| (i * per, per.min(batch - i * per)))
        .collect()
}

/// A window of `t` that starts exactly at `start` (a [`sample_ranges`] boundary).
fn aligned_window(gpu: &Gpu, t: &Tensor, start: usize, count: usize) -> Binding {
    let (b, off) = gpu.window(t, start, count);
    assert_eq!(off, 0, "window at {start} is not aligned");
    b
}

/// `dx = alpha · ∂conv/∂x (dy) + beta · dx`.
pub fn conv2d_input_grad(
    gpu: &Gpu,
    s: &ConvShape,
    dy: &Tensor,
    w: &Tensor,
    alpha: f32,
    beta: f32,
    dx: &Tensor,
) {
    let v = gpu.variant_at(Family::Conv2dInputGrad, &Problem::Conv(*s));
    conv2d_input_grad_variant(gpu, v, s, dy, w, alpha, beta, dx);
}

/// [`conv2d_input_grad`] with an explicit kernel variant (see [`crate::variants`]).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_input_grad_variant(
    gpu: &Gpu,
    variant: Variant,
    s: &ConvShape,
    dy: &Tensor,
    w: &Tensor,
    alpha: f32,
    beta: f32,
    dx: &Tensor,
) {
    if let (Variant::Flipped, Some(fs)) = (variant, s.input_grad_as_forward()) {
        // Flipped per call: the weights change every optimiser step, and this copy costs one
        // pass over the weights against a convolution's pass per pixel.
        check(dy, s.output_len(), "conv2d_input_grad dy");
        check(w, s.weight_len(), "conv2d_input_grad w");
        check(dx, s.input_len(), "conv2d_input_grad dx");
        let wf = gpu.uninit(&[s.weight_len()]);
        conv_weight_flip(gpu, s.cout, s.cin, s.kh, s.kw, w, &wf);
        let fv = gpu.variant_at(Family::Conv2d, &Problem::Conv(fs));
        conv_dispatch(gpu, Family::Conv2d, fv, &fs, dy, &wf, alpha, beta, dx);
        gpu.recycle(wf);
        return;
    }
    let variant = variant.fallback(&gpu.ctx.features);
    conv_dispatch(
        gpu,
        Family::Conv2dInputGrad,
        variant,
        s,
        dy,
        w,
        alpha,
        beta,
        dx,
    );
}

/// `wf[ci, co, ky, kx] = w[co, ci, kh-1-ky, kw-1-kx]` (twin: `cpu::conv_weight_flip`).
pub fn conv_weight_flip(
    gpu: &Gpu,
    cout: usize,
    cin: usize,
    kh: usize,
    kw: usize,
    w: &Tensor,
    wf: &Tensor,
) {
    let n = cout * cin * kh * kw;
    check(w, n, "conv_weight_flip w");
    check(wf, n, "conv_weight_flip wf");
    assert_distinct(wf, w, "conv_weight_flip");
    gpu.dispatch(
        "conv_weight_flip",
        Params::new().u(cout).u(cin).u(kh * kw),
        vec![gpu.bind(w), gpu.bind(wf)],
        gpu.groups_1d(cout * cin),
    );
}

/// `dw = alpha · ∂conv/∂w (dy, x) + beta · dw`.
pub fn conv2d_weight_grad(
    gpu: &Gpu,
    s: &ConvShape,
    dy: &Tensor,
    x: &Tensor,
    alpha: f32,
    beta: f32,
    dw: &Tensor,
) {
    let v = gpu.variant_at(Family::Conv2dWeightGrad, &Problem::Conv(*s));
    conv2d_weight_grad_variant(gpu, v, s, dy, x, alpha, beta, dw);
}

/// [`conv2d_weight_grad`] with an explicit kernel variant (see [`crate::variants`]).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_weight_grad_variant(
    gpu: &Gpu,
    variant: Variant,
    s: &ConvShape,
    dy: &Tensor,
    x: &Tensor,
    alpha: f32,
    beta: f32,
    dw: &Tensor,
) {
    conv_dispatch(
        gpu,
        Family::Conv2dWeightGrad,
        variant,
        s,
        dy,
        x,
        alpha,
        beta,
        dw,
    );
}

/// `y = convT(x, w) + beta · y` (weight `[cin, cout, k, k]`).
pub fn conv_transpose2d(gpu: &Gpu, s: &ConvTShape, x: &Tensor, w: &Tensor, beta: f32, y: &Tensor) {
    conv2d_input_grad(gpu, &s.as_conv(), x, w, 1.0, beta, y);
}

/// Input gradient of the transposed convolution: a plain convolution of `dy`.
pub fn conv_transpose2d_input_grad(
    gpu: &Gpu,
    s: &ConvTShape,
    dy: &Tensor,
    w: &Tensor,
    beta: f32,
    dx: &Tensor,
) {
    conv2d(gpu, &s.as_conv(), dy, w, beta, dx);
}

/// Weight gradient of the transposed convolution: the convolution weight gradient with the roles
/// of input and output gradient swapped.
pub fn conv_transpose2d_weight_grad(
    gpu: &Gpu,
    s: &ConvTShape,
    dy: &Tensor,
    x: &Tensor,
    alpha: f32,
    beta: f32,
    dw: &Tensor,
) {
    conv2d_weight_grad(gpu, &s.as_conv(), x, dy, alpha, beta, dw);
}

// -------------------------------------------------------------------- pool

/// 2×2 average pooling, stride 2, over `planes` planes of h×w.
pub fn avgpool2x2(gpu: &Gpu, planes: usize, h: usize, w: usize, x: &Tensor, y: &Tensor) {
    let (oh, ow) = (h / 2, w / 2);
    check(x, planes * h * w, "avgpool2x2 x");
    check(y, planes * oh * ow, "avgpool2x2 y");
    let n = planes * oh * ow;
    gpu.dispatch(
        "avgpool2x2",
        Params::new().u(n).u(h).u(w).u(oh).u(ow),
        vec![gpu.bind(x), gpu.bind(y)],
        gpu.groups_1d(n),
    );
}

pub fn avgpool2x2_grad(gpu: &Gpu, planes: usize, h: usize, w: usize, dy: &Tensor, dx: &Tensor) {
    let (oh, ow) = (h / 2, w / 2);
    check(dy, planes * oh * ow, "avgpool2x2_grad dy");
    check(dx, planes * h * w, "avgpool2x2_grad dx");
    let n = planes * h * w;
    gpu.dispatch(
        "avgpool2x2_grad",
        Params::new().u(n).u(h).u(w).u(oh).u(ow),
        vec![gpu.bind(dy), gpu.bind(dx)],
        gpu.groups_1d(n),
    );
}

// ---------------------------------------------------------------------- bn

/// Batch mean and biased variance per channel; with `update = Some(momentum)` also the
/// running-statistics update (otherwise the running tensors are bound but left alone).
#[allow(clippy::too_many_arguments)]
pub fn bn_stats(
    gpu: &Gpu,
    s: BnShape,
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    update: Option<f32>,
) {
    check(x, s.len(), "bn_stats x");
    for t in [mean, var, running_mean, running_var] {
        check(t, s.channels, "bn_stats statistics");
    }
    gpu.dispatch(
        "bn_stats",
        Params::new()
            .u(s.batch)
            .u(s.channels)
            .u(s.hw)
            .u(update.is_some() as u32)
            .f(update.unwrap_or(0.0)),
        vec![
            gpu.bind(x),
            gpu.bind(mean),
            gpu.bind(var),
            gpu.bind(running_mean),
            gpu.bind(running_var),
        ],
        [s.channels as u32, 1, 1],
    );
}

#[allow(clippy::too_many_arguments)]
pub fn bn_forward(
    gpu: &Gpu,
    s: BnShape,
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
) {
    check(x, s.len(), "bn_forward x");
    check(y, s.len(), "bn_forward y");
    assert_distinct(y, x, "bn_forward");
    gpu.dispatch(
        "bn_forward",
        Params::new()
            .u(s.len())
            .u(s.channels)
            .u(s.hw)
            .u(0u32)
            .f(BN_EPS),
        vec![
            gpu.bind(x),
            gpu.bind(mean),
            gpu.bind(var),
            gpu.bind(gamma),
            gpu.bind(beta),
            gpu.bind(y),
        ],
        gpu.groups_1d(s.len()),
    );
}

/// Batch-norm backward: writes `dgamma`, `dbeta` and `dx`. `batch_stats` says whether the forward
/// used the batch's own statistics (then they are differentiated through) or running ones.
#[allow(clippy::too_many_arguments)]
pub fn bn_backward(
    gpu: &Gpu,
    s: BnShape,
    x: &Tensor,
    dy: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    gamma: &Tensor,
    batch_stats: bool,
    dgamma: &Tensor,
    dbeta: &Tensor,
    dx: Option<&Tensor>,
) {
    check(x, s.len(), "bn_backward x");
    check(dy, s.len(), "bn_backward dy");
    gpu.dispatch(
        "bn_backward_reduce",
        Params::new()
            .u(s.batch)
            .u(s.channels)
            .u(s.hw)
            .u(0u32)
            .f(BN_EPS),
        vec![
            gpu.bind(x),
            gpu.bind(dy),
            gpu.bind(mean),
            gpu.bind(var),
            gpu.bind(dgamma),
            gpu.bind(dbeta),
        ],
        [s.channels as u32, 1, 1],
    );
    if let Some(dx) = dx {
        check(dx, s.len(), "bn_backward dx");
        assert_distinct(dx, dy, "bn_backward");
        gpu.dispatch(
            "bn_backward_input",
            Params::new()
                .u(s.len())
                .u(s.channels)
                .u(s.hw)
                .u(batch_stats as u32)
                .f(BN_EPS)
                .f((s.batch * s.hw) as f32),
            vec![
                gpu.bind(x),
                gpu.bind(dy),
                gpu.bind(mean),
                gpu.bind(var),
                gpu.bind(gamma),
                gpu.bind(dgamma),
                gpu.bind(dbeta),
                gpu.bind(dx),
            ],
            gpu.groups_1d(s.len()),
        );
    }
}

/// `y[b, c, ·] += bias[c]` in place.
pub fn bias_add(gpu: &Gpu, s: BnShape, bias: &Tensor, y: &Tensor) {
    check(y, s.len(), "bias_add y");
    check(bias, s.channels, "bias_add bias");
    gpu.dispatch(
        "bias_add",
        Params::new().u(s.len()).u(s.channels).u(s.hw),
        vec![gpu.bind(bias), gpu.bind(y)],
        gpu.groups_1d(s.len()),
    );
}

/// `out[c] = alpha · Σ x[·, c, ·] + beta · out[c]`.
pub fn channel_sum(gpu: &Gpu, s: BnShape, x: &Tensor, alpha: f32, beta: f32, out: &Tensor) {
    check(x, s.len(), "channel_sum x");
    check(out, s.channels, "channel_sum out");
    gpu.dispatch(
        "channel_sum",
        Params::new()
            .u(s.batch)
            .u(s.channels)
            .u(s.hw)
            .u(0u32)
            .f(alpha)
            .f(beta),
        vec![gpu.bind(x), gpu.bind(out)],
        [s.channels as u32, 1, 1],
    );
}

// ------------------------------------------------------------- elementwise

/// `y = clamp(scale · z, 0, 1)` and `mask = 1[0 < scale · z < 1]`.
pub fn clamp_mask(gpu: &Gpu, z: &Tensor, scale: f32, y: &Tensor, mask: &Tensor) {
    let n = z.len();
    check(y, n, "clamp_mask y");
    check(mask, n, "clamp_mask mask");
    gpu.dispatch(
        "clamp_mask",
        Params::new().u(n).u(0u32).f(scale),
        vec![gpu.bind(z), gpu.bind(y), gpu.bind(mask)],
        gpu.groups_1d(n),
    );
}

/// Runs `f(start, count)` over chunks of `n` elements small enough for one binding each.
fn chunked(gpu: &Gpu, n: usize, mut f: impl FnMut(usize, usize)) {
    let per = gpu.rows_per_binding(1);
    let mut s = 0;
    while s < n {
        let c = per.min(n - s);
        f(s, c);
        s += c;
    }
}

/// `y[yo..yo+n] = alpha · x[xo..xo+n] + beta · y[yo..yo+n]`.
#[allow(clippy::too_many_arguments)]
pub fn axpby_range(
    gpu: &Gpu,
    n: usize,
    alpha: f32,
    x: &Tensor,
    xo: usize,
    beta: f32,
    y: &Tensor,
    yo: usize,
) {
    check(x, xo + n, "axpby x");
    check(y, yo + n, "axpby y");
    assert!(
        !x.same_buffer(y) || xo == yo,
        "axpby: overlapping windows of one buffer"
    );
    chunked(gpu, n, |s, c| {
        let (yb, yoff) = gpu.window(y, yo + s, c);
        let (xb, xoff) = if x.same_buffer(y) {
            (yb.clone(), yoff)
        } else {
            gpu.window(x, xo + s, c)
        };
        if x.same_buffer(y) {
            // In place: one binding, x reads through y.
            gpu.dispatch(
                "scale",
                Params::new().u(c).u(yoff).f(alpha + beta),
                vec![yb],
                gpu.groups_1d(c),
            );
        } else {
            gpu.dispatch(
                "axpby",
                Params::new().u(c).u(xoff).u(yoff).u(0u32).f(alpha).f(beta),
                vec![xb, yb],
                gpu.groups_1d(c),
            );
        }
    });
}

/// `y = alpha · x + beta · y` over whole tensors.
pub fn axpby(gpu: &Gpu, alpha: f32, x: &Tensor, beta: f32, y: &Tensor) {
    assert_eq!(x.len(), y.len(), "axpby: {:?} vs {:?}", x.shape, y.shape);
    axpby_range(gpu, x.len(), alpha, x, 0, beta, y, 0);
}

/// `y = alpha · y` in place.
pub fn scale(gpu: &Gpu, alpha: f32, y: &Tensor) {
    chunked(gpu, y.len(), |s, c| {
        let (yb, yoff) = gpu.window(y, s, c);
        gpu.dispatch(
            "scale",
            Params::new().u(c).u(yoff).f(alpha),
            vec![yb],
            gpu.groups_1d(c),
        );
    });
}

/// `y = y ⊙ m` in place, `m` repeating every `m.len()` elements.
pub fn mask_mul(gpu: &Gpu, m: &Tensor, y: &Tensor) {
    let n = y.len();
    assert!(
        n.is_multiple_of(m.len()),
        "mask_mul: {:?} does not tile {:?}",
        m.shape,
        y.shape
    );
    gpu.dispatch(
        "mask_mul",
        Params::new().u(n).u(m.len()),
        vec![gpu.bind(m), gpu.bind(y)],
        gpu.groups_1d(n),
    );
}

/// Fills `mask` with a dropout mask: 0 with probability `prob`, else 1/(1 − prob).
pub fn dropout_mask(gpu: &Gpu, mask: &Tensor, prob: f32, seed: u32, stream: u32) {
    let n = mask.len();
    gpu.dispatch(
        "dropout_mask",
        Params::new()
            .u(n)
            .u(seed)
            .u(stream)
            .u(0u32)
            .f(prob)
            .f(1.0 / (1.0 - prob)),
        vec![gpu.bind(mask)],
        gpu.groups_1d(n),
    );
}

fn groups_rows(gpu: &Gpu, rows: usize) -> [u32; 3] {
    let max = gpu.ctx.limits.max_compute_workgroups_per_dimension as usize;
    if rows <= max {
        [rows as u32, 1, 1]
    } else {
        let y = rows.div_ceil(max);
        [rows.div_ceil(y) as u32, y as u32, 1]
    }
}

/// `out[r] = alpha · x[r]·y[r] + beta · out[r]` for `rows` rows of `dim` (split by rows when x or
/// y exceeds one binding).
#[allow(clippy::too_many_arguments)]
pub fn row_dot(
    gpu: &Gpu,
    rows: usize,
    dim: usize,
    x: &Tensor,
    y: &Tensor,
    alpha: f32,
    beta: f32,
    out: &Tensor,
) {
    check(x, rows * dim, "row_dot x");
    check(y, rows * dim, "row_dot y");
    check(out, rows, "row_dot out");
    let per = gpu.rows_per_binding(dim).min(rows).max(1);
    let mut r0 = 0;
    while r0 < rows {
        let r = per.min(rows - r0);
        let (xb, xo) = gpu.window(x, r0 * dim, r * dim);
        let (yb, yo) = gpu.window(y, r0 * dim, r * dim);
        gpu.dispatch(
            "row_dot",
            Params::new()
                .u(r)
                .u(dim)
                .u(xo)
                .u(yo)
                .u(r0)
                .u(0u32)
                .f(alpha)
                .f(beta),
            vec![xb, yb, gpu.bind(out)],
            groups_rows(gpu, r),
        );
        r0 += r;
    }
}

/// Elements reduced by one workgroup in the first level of [`sum`].
const SUM_PER_GROUP: usize = 4096;

/// Σ x (or Σ x² with `square`) into `out[0]`, in two levels; `partials` needs
/// `ceil(n / 4096) + 1` elements.
pub fn sum(gpu: &Gpu, x: &Tensor, square: bool, partials: &Tensor, out: &Tensor) {
    let n = x.len();
    let groups = n.div_ceil(SUM_PER_GROUP).max(1);
    check(partials, groups, "sum partials");
    // Chunks of whole groups, so each chunk's partials land at their final places.
    let per = (gpu.rows_per_binding(1) / SUM_PER_GROUP).max(1) * SUM_PER_GROUP;
    let mut s = 0;
    if n == 0 {
        gpu.fill_zero(out);
        return;
    }
    while s < n {
        let c = per.min(n - s);
        let (xb, xo) = gpu.window(x, s, c);
        gpu.dispatch(
            "reduce_sum",
            Params::new()
                .u(c)
                .u(xo)
                .u(s / SUM_PER_GROUP)
                .u(SUM_PER_GROUP)
                .u(square as u32),
            vec![xb, gpu.bind(partials)],
            groups_rows(gpu, c.div_ceil(SUM_PER_GROUP)),
        );
        s += c;
    }
    gpu.dispatch(
        "reduce_sum",
        Params::new().u(groups).u(0u32).u(0u32).u(groups).u(0u32),
        vec![gpu.bind(partials), gpu.bind(out)],
        [1, 1, 1],
    );
}

/// Elements the `partials` scratch of [`sum`] needs for `n` inputs.
pub fn sum_partials_len(n: usize) -> usize {
    n.div_ceil(SUM_PER_GROUP).max(1)
}

/// Softmax cross-entropy of `logits [rows, classes]` against `labels` (u32): per-row `loss`,
/// `dlogits = grad_scale · (softmax − onehot)` and `correct` (1 where the arg-max is the label).
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent(
    gpu: &Gpu,
    rows: usize,
    classes: usize,
    logits: &Tensor,
    labels: &Tensor,
    grad_scale: f32,
    loss: &Tensor,
    dlogits: &Tensor,
    correct: &Tensor,
) {
    check(logits, rows * classes, "softmax_xent logits");
    check(labels, rows, "softmax_xent labels");
    check(dlogits, rows * classes, "softmax_xent dlogits");
    gpu.dispatch(
        "softmax_xent",
        Params::new()
            .u(rows)
            .u(classes)
            .u(0u32)
            .u(0u32)
            .f(grad_scale),
        vec![
            gpu.bind(logits),
            gpu.bind(labels),
            gpu.bind(loss),
            gpu.bind(dlogits),
            gpu.bind(correct),
        ],
        gpu.groups_1d(rows),
    );
}

/// One SGD step in place (see shaders/sgd.wgsl).
pub fn sgd(
    gpu: &Gpu,
    w: &Tensor,
    g: &Tensor,
    v: &Tensor,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
) {
    let n = w.len();
    check(g, n, "sgd g");
    check(v, n, "sgd v");
    gpu.dispatch(
        "sgd",
        Params::new().u(n).u(0u32).f(lr).f(momentum).f(weight_decay),
        vec![gpu.bind(w), gpu.bind(g), gpu.bind(v)],
        gpu.groups_1d(n),
    );
}

/// One power-iteration step on `w [rows, cols]`, updating `u`, `v` and writing σ̂ to `sigma[0]`.
pub fn power_iteration(
    gpu: &Gpu,
    rows: usize,
    cols: usize,
    w: &Tensor,
    u: &Tensor,
    v: &Tensor,
    sigma: &Tensor,
) {
    check(w, rows * cols, "power_iteration w");
    check(u, rows, "power_iteration u");
    check(v, cols, "power_iteration v");
    gpu.dispatch(
        "power_iteration",
        Params::new().u(rows).u(cols).u(0u32).u(0u32).f(1e-12),
        vec![gpu.bind(w), gpu.bind(u), gpu.bind(v), gpu.bind(sigma)],
        [1, 1, 1],
    );
}

/// The register-only FMA probe of `fsnn bench peak` over `out.len()` invocations (see
/// shaders/peak_fma.wgsl); performs [`peak_fma_flops`] floating-point operations.
pub fn peak_fma(gpu: &Gpu, iters: u32, mul: f32, add: f32, out: &Tensor) {
    let n = out.len();
    gpu.dispatch(
        "peak_fma",
        Params::new().u(n).u(iters).f(mul).f(add),
        vec![gpu.bind(out)],
        gpu.groups_1d(n),
    );
}

/// FLOPs of one [`peak_fma`] dispatch: 8 chains of `iters` fused multiply-adds per invocation.
pub fn peak_fma_flops(n: usize, iters: u32) -> f64 {
    2.0 * 8.0 * n as f64 * iters as f64
}

// ------------------------------------------------------------------ solver

/// Sample ranges whose history and vectors fit in one binding each.
fn solver_chunks(l: &SolverLayout, gpu: &Gpu) -> Vec<(usize, usize)> {
    let row = (l.slots * 2 * l.dim).max(l.dim);
    // The cooperative kernels take one workgroup per sample along a grid dimension.
    let max_groups = gpu.ctx.limits.max_compute_workgroups_per_dimension as usize;
    let per = gpu
        .rows_per_binding(row)
        .min(max_groups)
        .min(l.batch)
        .max(1);
    (0..l.batch.div_ceil(per))
        .map(|i| (i * per, per.min(l.batch - i * per)))
        .collect()
}

/// The solver's per-element vectors on the GPU (see [`fsnn_core::SolverVectors`]).
pub type SolverVectors<'a> = fsnn_core::SolverVectors<'a, Tensor>;

fn check_vectors(v: &SolverVectors, n: usize) {
    for (t, what) in v.named() {
        check(t, n, &format!("solver {what}"));
    }
}

fn solver_hist_window(
    gpu: &Gpu,
    l: &SolverLayout,
    hist: &Tensor,
    b0: usize,
    nb: usize,
) -> (Binding, u32) {
    if l.slots == 0 {
        (gpu.bind(hist), 0)
    } else {
        gpu.window(hist, b0 * l.slots * 2 * l.dim, nb * l.slots * 2 * l.dim)
    }
}

/// Per-sample products of one iteration into `scal` (see shaders/solver_dots.wgsl).
pub fn solver_dots(
    gpu: &Gpu,
    l: &SolverLayout,
    i: SolverIter,
    hist: &Tensor,
    v: &SolverVectors,
    scal: &Tensor,
) {
    check_vectors(v, l.batch * l.dim);
    check(hist, l.hist_len(), "solver_dots hist");
    check(scal, l.scal_len(), "solver_dots scal");
    for (b0, nb) in solver_chunks(l, gpu) {
        let (hb, ho) = solver_hist_window(gpu, l, hist, b0, nb);
        let win = |t: &Tensor| gpu.window(t, b0 * l.dim, nb * l.dim);
        let (jb, vo) = win(v.jx);
        let ws = [win(v.x), win(v.gl), win(v.g), win(v.step)];
        assert!(
            ws.iter().all(|w| w.1 == vo),
            "solver vectors must share an alignment"
        );
        let [xb, lb, gb, sb] = ws.map(|w| w.0);
        let (kernel, groups) = if gpu.sharing() != Sharing::Plain {
            (
                "solver_dots_coop",
                [nb as u32, (i.count + 1).div_ceil(8) as u32, 1],
            )
        } else {
            ("solver_dots", gpu.groups_1d(nb * (i.count + 1)))
        };
        gpu.dispatch(
            kernel,
            Params::new()
                .u(nb)
                .u(l.dim)
                .u(l.slots)
                .u(i.count)
                .u(l.mode as u32)
                .u(i.slot)
                .u(ho)
                .u(vo)
                .u(b0),
            vec![hb, jb, xb, lb, gb, sb, gpu.bind(scal)],
            groups,
        );
    }
}

/// The batch-global step of one iteration: residual norm, best iterate, stopping rule, and
/// Anderson's per-sample least squares (see shaders/solver_track.wgsl). `eps2` is the squared
/// absolute tolerance on the global residual norm; `reg` Anderson's relative regularisation.
pub fn solver_track(
    gpu: &Gpu,
    l: &SolverLayout,
    i: SolverIter,
    threshold: usize,
    eps2: f32,
    reg: f32,
    scal: &Tensor,
) {
    check(scal, l.scal_len(), "solver_track scal");
    assert!(l.mode != SolverMode::Anderson || l.slots <= ANDERSON_MAX_SLOTS);
    gpu.dispatch(
        "solver_track",
        Params::new()
            .u(l.batch)
            .u(l.slots)
            .u(l.mode as u32)
            .u(i.it)
            .u(i.count)
            .u(i.slot)
            .u(threshold)
            .u(l.state_offset())
            .u(l.gram_offset())
            .u(l.gamma_offset())
            .f(eps2)
            .f(reg),
        vec![gpu.bind(scal)],
        [1, 1, 1],
    );
}

/// The per-element step of one iteration (see shaders/solver_combine.wgsl); `alpha` is the
/// fixed-point damping.
pub fn solver_combine(
    gpu: &Gpu,
    l: &SolverLayout,
    i: SolverIter,
    alpha: f32,
    hist: &Tensor,
    v: &SolverVectors,
    scal: &Tensor,
) {
    check_vectors(v, l.batch * l.dim);
    check(hist, l.hist_len(), "solver_combine hist");
    check(scal, l.scal_len(), "solver_combine scal");
    for (b0, nb) in solver_chunks(l, gpu) {
        let (hb, ho) = solver_hist_window(gpu, l, hist, b0, nb);
        let win = |t: &Tensor| gpu.window(t, b0 * l.dim, nb * l.dim);
        let (jb, vo) = win(v.jx);
        let ws = [win(v.x), win(v.gl), win(v.g), win(v.step), win(v.best)];
        assert!(
            ws.iter().all(|w| w.1 == vo),
            "solver vectors must share an alignment"
        );
        let [xb, lb, gb, sb, bb] = ws.map(|w| w.0);
        // The cooperative kernel takes 8 values a workgroup along x; wider vectors take the
        // plain kernel's folded 1-D grid.
        let max_groups = gpu.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let (kernel, groups) = if gpu.sharing() != Sharing::Plain && l.dim.div_ceil(8) <= max_groups
        {
            (
                "solver_combine_coop",
                [l.dim.div_ceil(8) as u32, nb as u32, 1],
            )
        } else {
            ("solver_combine", gpu.groups_1d(nb * l.dim))
        };
        gpu.dispatch(
            kernel,
            Params::new()
                .u(nb)
                .u(l.dim)
                .u(l.slots)
                .u(l.mode as u32)
                .u(i.count)
                .u(i.slot)
                .u(i.store as u32)
                .u(ho)
                .u(vo)
                .u(b0)
                .u(l.state_offset())
                .u(l.gamma_offset())
                .f(alpha),
            vec![hb, jb, xb, lb, gb, sb, bb, gpu.bind(scal)],
            groups,
        );
    }
}

// -------------------------------------------------------- spectral norm

/// `weff = clamp(g, −1, 1) · w / sigma[0]`.
pub fn sn_weight(gpu: &Gpu, w: &Tensor, g: &Tensor, sigma: &Tensor, weff: &Tensor) {
    let n = w.len();
    check(weff, n, "sn_weight weff");
    gpu.dispatch(
        "sn_weight",
        Params::new().u(n),
        vec![gpu.bind(w), gpu.bind(g), gpu.bind(sigma), gpu.bind(weff)],
        gpu.groups_1d(n),
    );
}

/// Backward of [`sn_weight`]; `scalars = [σ̂, ⟨G, w⟩]`, w viewed as `[rows, cols]`.
#[allow(clippy::too_many_arguments)]
pub fn sn_weight_grad(
    gpu: &Gpu,
    cols: usize,
    gw: &Tensor,
    u: &Tensor,
    v: &Tensor,
    g: &Tensor,
    scalars: &Tensor,
    dw: &Tensor,
    dg: &Tensor,
) {
    let n = gw.len();
    check(dw, n, "sn_weight_grad dw");
    check(v, cols, "sn_weight_grad v");
    check(u, n / cols, "sn_weight_grad u");
    gpu.dispatch(
        "sn_weight_grad",
        Params::new().u(n).u(cols),
        vec![
            gpu.bind(gw),
            gpu.bind(u),
            gpu.bind(v),
            gpu.bind(g),
            gpu.bind(scalars),
            gpu.bind(dw),
            gpu.bind(dg),
        ],
        gpu.groups_1d(n),
    );
}

// ------------------------------------------------------------------ events

/// `dst[c, r] = src[r, c]` for a `rows × cols` matrix.
pub fn transpose(gpu: &Gpu, rows: usize, cols: usize, src: &Tensor, dst: &Tensor) {
    transpose_padded(gpu, rows, cols, rows, src, dst);
}

/// `dst[c·ld + r] = src[r, c]`: the transpose with its rows `ld ≥ rows` apart; the padding is not
/// written.
pub fn transpose_padded(
    gpu: &Gpu,
    rows: usize,
    cols: usize,
    ld: usize,
    src: &Tensor,
    dst: &Tensor,
) {
    assert!(ld >= rows, "transpose: row stride {ld} below {rows} rows");
    check(src, rows * cols, "transpose src");
    check(dst, cols.saturating_sub(1) * ld + rows, "transpose dst");
    assert_distinct(dst, src, "transpose");
    gpu.dispatch(
        "transpose",
        Params::new().u(rows).u(cols).u(ld),
        vec![gpu.bind(src), gpu.bind(dst)],
        gpu.groups_1d(rows * cols),
    );
}

/// Steps `t_begin..t_end` of a linear feedback layer's simulation (see [`FcEventSim`]); the
/// recorder's [`SpikeWalk`] picks the bit-set or the list kernel. `bits` is
/// `[batch, spike_words(n)]` u32, `wt` has rows [`fc_event_ld`] apart.
#[allow(clippy::too_many_arguments)]
pub fn fc_event_sim(
    gpu: &Gpu,
    s: &FcEventSim,
    u: &Tensor,
    acc: &Tensor,
    bits: &Tensor,
    wt: &Tensor,
    x: &Tensor,
    mask: Option<&Tensor>,
) {
    let (n, batch) = (s.n, s.batch);
    assert!(
        n > 0 && n <= FC_EVENT_MAX_NEURONS,
        "fc_event_sim: {n} neurons per sample, at most {FC_EVENT_MAX_NEURONS} supported"
    );
    check(u, batch * n, "fc_event_sim u");
    check(acc, batch * n, "fc_event_sim acc");
    check(bits, batch * spike_words(n), "fc_event_sim bits");
    let ld = fc_event_ld(n);
    check(wt, n * ld, "fc_event_sim wt");
    let steps = s.t_end.saturating_sub(s.t_begin);
    if steps > 0 {
        check(
            x,
            s.x_off + (steps - 1) * s.x_step + batch * n,
            "fc_event_sim x",
        );
    }
    if let Some(m) = mask {
        check(m, batch * n, "fc_event_sim mask");
    }
    let kernel = match gpu.spike_walk() {
        SpikeWalk::Bits => "fc_event_sim",
        SpikeWalk::List => "fc_event_sim_list",
    };
    // One workgroup per sample: past the grid limit the samples run in ranges, each on windows
    // of the per-sample tensors and with x (bound whole) entered at its first sample.
    let words = spike_words(n);
    for (b0, nb) in sample_ranges(gpu, batch, &[n, words], |nb| nb) {
        let per_sample = |t: &Tensor, w: usize| {
            if nb == batch {
                gpu.bind(t)
            } else {
                aligned_window(gpu, t, b0 * w, nb * w)
            }
        };
        gpu.dispatch(
            kernel,
            Params::new()
                .u(n)
                .u(s.t_begin)
                .u(s.t_end)
                .u(s.x_step)
                .u(s.x_off + b0 * n)
                .u(mask.is_some() as u32)
                .u(ld / 4)
                .u(0u32)
                .f(s.vth)
                .f(s.leak),
            vec![
                per_sample(u, n),
                per_sample(acc, n),
                per_sample(bits, words),
                gpu.bind(wt),
                gpu.bind(x),
                mask.map_or_else(|| gpu.bind(wt), |m| per_sample(m, n)),
            ],
            [nb as u32, 1, 1],
        );
    }
}

/// Whether [`ConvEventForm::Lanes`] runs this shape (else the step runs the other form): output
/// rows of at most 32 columns (conv_event_sim_lanes.wgsl's tile).
pub fn conv_event_lanes_supported(s: &ConvShape) -> bool {
    conv_event_supported(s) && s.ow() <= 32
}

/// One step of a conv feedback layer's simulation, event-driven and fused (see
/// conv_event_sim.wgsl; the recorder's [`ConvEventForm`] and [`Sharing`] pick the kernel): the feedback current from `in_bits` (the previous step's spikes, when
/// `has_feedback`) through `wt` (the weight as `[cin·kh·kw, cout]`, rows [`conv_event_ld`] apart,
/// zero-padded), masked by `mask` when given,
/// the neuron update of `u`/`acc` with input `x[x_off..]`, and this step's spikes into `out_bits`.
#[allow(clippy::too_many_arguments)]
pub fn conv_event_sim(
    gpu: &Gpu,
    s: &ConvShape,
    step: NeuronStep,
    u: &Tensor,
    acc: &Tensor,
    in_bits: &Tensor,
    out_bits: &Tensor,
    wt: &Tensor,
    x: &Tensor,
    mask: Option<&Tensor>,
) {
    assert!(
        conv_event_supported(s),
        "conv_event_sim: unsupported shape {s:?} (stride 1, kw ≤ 32, pad < 32, width ≤ 256)"
    );
    let (oh, ow) = (s.oh(), s.ow());
    let out = s.output_len();
    check(u, out, "conv_event_sim u");
    check(acc, out, "conv_event_sim acc");
    check(
        in_bits,
        conv_spike_words(s.batch, s.cin, s.h, s.w),
        "conv_event_sim in_bits",
    );
    check(
        out_bits,
        conv_spike_words(s.batch, s.cout, oh, ow),
        "conv_event_sim out_bits",
    );
    assert_distinct(out_bits, in_bits, "conv_event_sim");
    let ld = conv_event_ld(s.cout);
    check(wt, s.cin * s.kh * s.kw * ld, "conv_event_sim wt");
    check(x, step.x_offset + out, "conv_event_sim x");
    if let Some(m) = mask {
        check(m, out, "conv_event_sim mask");
    }
    let kernel = match (gpu.conv_event_form(), gpu.sharing()) {
        (ConvEventForm::Lanes, _) if conv_event_lanes_supported(s) => "conv_event_sim_lanes",
        (_, Sharing::Plain) => "conv_event_sim",
        (_, Sharing::Shared | Sharing::Unshared) => "conv_event_sim_coop",
    };
    // One z-slice per sample: past the grid limit the samples run in ranges, each on windows of
    // the per-sample tensors and with x (bound whole) entered at its first sample.
    let (out_words, in_words) = (out / s.batch.max(1), conv_spike_words(1, s.cin, s.h, s.w));
    let out_bit_words = conv_spike_words(1, s.cout, oh, ow);
    let ranges = sample_ranges(gpu, s.batch, &[out_words, in_words, out_bit_words], |nb| nb);
    for (b0, nb) in ranges {
        let per_sample = |t: &Tensor, w: usize| {
            if nb == s.batch {
                gpu.bind(t)
            } else {
                aligned_window(gpu, t, b0 * w, nb * w)
            }
        };
        gpu.dispatch(
            kernel,
            Params::new()
                .u(s.cin)
                .u(s.h)
                .u(s.w)
                .u(s.cout)
                .u(oh)
                .u(ow)
                .u(s.kh)
                .u(s.kw)
                .u(s.pad)
                .u(step.has_feedback as u32)
                .u(mask.is_some() as u32)
                .u(step.x_offset + b0 * out_words)
                .u(ld / 4)
                .u(gpu.sharing().unshared_flag())
                .u(0u32)
                .u(0u32)
                .f(step.vth)
                .f(step.leak),
            vec![
                per_sample(u, out_words),
                per_sample(acc, out_words),
                per_sample(in_bits, in_words),
                per_sample(out_bits, out_bit_words),
                gpu.bind(wt),
                gpu.bind(x),
                mask.map_or_else(|| gpu.bind(wt), |m| per_sample(m, out_words)),
            ],
            // 64 output channels per workgroup (4 · VPL · CB in the kernel).
            [ld.div_ceil(64) as u32, oh as u32, nb as u32],
        );
    }
}
