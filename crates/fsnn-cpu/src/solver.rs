//! The adjoint solver's vector work on the CPU. The twins reduce each dot product in one
//! sequential chain of `mul_add`s (the order a GPU lane uses), which on a CPU is latency-bound and,
//! without FMA enabled at build time, a libm call per element. Here:
//!
//! - `solver_dots` keeps 16 partial sums per dot (one SIMD register's worth, summed in a fixed
//!   order at the end), so the loops vectorise; the sums differ from the twin's in the last bits,
//!   the same way the GPU's tree reductions do, and are the same on every run;
//! - `solver_combine` is the twin itself, compiled with FMA where the CPU has it (the same bits as
//!   the twin, without the libm calls).

use fsnn_core::shapes::{SolverIter, SolverLayout, SolverMode};
use fsnn_core::twins;

const LANES: usize = 16;

/// Σ f(i) over `0..n` in `LANES` partial sums, reduced in a fixed order.
#[inline(always)]
fn lanes_sum<const K: usize>(n: usize, f: impl Fn(usize) -> [f32; K]) -> [f32; K] {
    let mut acc = [[0f32; LANES]; K];
    let full = n / LANES * LANES;
    for c in (0..full).step_by(LANES) {
        for l in 0..LANES {
            let v = f(c + l);
            for k in 0..K {
                acc[k][l] += v[k];
            }
        }
    }
    let mut out = [0f32; K];
    for k in 0..K {
        let mut s = 0f32;
        for a in acc[k] {
            s += a;
        }
        out[k] = s;
    }
    for i in full..n {
        let v = f(i);
        for k in 0..K {
            out[k] += v[k];
        }
    }
    out
}

/// Semantics of `twins::solver_dots` (up to summation order); `g`/`dg` are per-sample scratch.
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
    scratch: &mut Vec<f32>,
) {
    let d = l.dim;
    scratch.resize(2 * d, 0.0);
    let (g, dg) = scratch.split_at_mut(d);
    for b in 0..l.batch {
        let vb = b * d;
        for i in 0..d {
            let e = vb + i;
            g[i] = (jx[e] - x[e]) + gl[e];
            dg[i] = g[i] - gold[e];
        }
        let st = &step[vb..vb + d];
        for r in 0..=it.count {
            let (vals, row) = if r == it.count {
                let v = lanes_sum(d, |i| [g[i] * g[i], st[i] * dg[i], st[i] * g[i]]);
                (v, l.slots)
            } else {
                let a = (b * l.slots + r) * 2 * d;
                let (ha, hb) = (&hist[a..a + d], &hist[a + d..a + 2 * d]);
                let v = if l.mode == SolverMode::Broyden {
                    lanes_sum(d, |i| [ha[i] * st[i], hb[i] * dg[i], hb[i] * g[i]])
                } else if r == it.slot {
                    lanes_sum(d, |i| [dg[i] * dg[i], dg[i] * g[i], 0.0])
                } else {
                    lanes_sum(d, |i| [hb[i] * dg[i], hb[i] * g[i], 0.0])
                };
                (v, r)
            };
            let o = (b * (l.slots + 1) + row) * 3;
            scal[o..o + 3].copy_from_slice(&vals);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn combine_fma(
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
    twins::solver_combine(l, it, alpha, hist, jx, x, gl, gold, step, best, scal)
}

/// `twins::solver_combine`, bit for bit, with hardware FMA where the CPU has it.
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
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked just above).
        unsafe { combine_fma(l, it, alpha, hist, jx, x, gl, gold, step, best, scal) };
        return;
    }
    twins::solver_combine(l, it, alpha, hist, jx, x, gl, gold, step, best, scal)
}
