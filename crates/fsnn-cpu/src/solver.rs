//! The adjoint solver's vector work on the CPU. The twins reduce each dot product in one
//! sequential chain of `mul_add`s (the order a GPU lane uses), which on a CPU is latency-bound and,
//! without FMA enabled at build time, a libm call per element. Here:
//!
//! - `solver_dots` keeps 16 partial sums per dot (one SIMD register's worth, summed in a fixed
//!   order at the end), so the loops vectorise; the sums differ from the twin's in the last bits,
//!   the same way the GPU's tree reductions do, and are the same on every run;
//! - `solver_combine` is the twin itself (`twins::solver_combine_samples`), compiled with FMA
//!   where the CPU has it (the same bits, without the libm calls).
//!
//! Both split the batch over threads in fixed ranges (samples are independent), so the bits do
//! not depend on the thread count.

use fsnn_core::shapes::{SolverIter, SolverLayout, SolverMode};
use fsnn_core::twins;

const LANES: usize = 16;

/// Σ f(i) over `0..n` in `LANES` partial sums, reduced in a fixed order.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indexing by lane keeps the loop vectorisable
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

/// Raw views shared by the threads of one op; each thread writes only its own samples' elements.
#[derive(Clone, Copy)]
pub(crate) struct Shared<T>(*mut T, usize);
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub(crate) fn new(s: &mut [T]) -> Self {
        Self(s.as_mut_ptr(), s.len())
    }
    /// SAFETY: the caller's threads touch disjoint elements of the slice.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn get(&self) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0, self.1)
    }
}

/// Runs `f` on `threads` fixed, contiguous ranges of `0..batch` (on the calling thread when one).
pub(crate) fn par_batches(threads: usize, batch: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    let t = threads.clamp(1, batch.max(1));
    if t == 1 {
        f(0..batch);
        return;
    }
    let per = batch.div_ceil(t);
    std::thread::scope(|sc| {
        for k in 1..t {
            let r = (k * per).min(batch)..((k + 1) * per).min(batch);
            let f = &f;
            sc.spawn(move || f(r));
        }
        f(0..per.min(batch));
    });
}

/// Semantics of `twins::solver_dots` (up to summation order).
#[allow(clippy::too_many_arguments)]
pub fn solver_dots(
    threads: usize,
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
    let d = l.dim;
    let out = Shared::new(scal);
    par_batches(threads, l.batch, |range| {
        let (mut g, mut dg) = (vec![0f32; d], vec![0f32; d]);
        // SAFETY: sample b writes only its own (slots + 1) · 3 scalars.
        let scal = unsafe { out.get() };
        for b in range {
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
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn combine_range_fma(
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
    twins::solver_combine_samples(range, l, it, alpha, hist, jx, x, gl, gold, step, best, scal)
}

/// `twins::solver_combine`, bit for bit, with hardware FMA where the CPU has it.
#[allow(clippy::too_many_arguments)]
pub fn solver_combine(
    threads: usize,
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
    let fma = std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let fma = false;
    let (h, xs, go, st, be) = (
        Shared::new(hist),
        Shared::new(x),
        Shared::new(gold),
        Shared::new(step),
        Shared::new(best),
    );
    par_batches(threads, l.batch, |r| {
        // SAFETY: sample b touches only its own history rows and its own vector elements.
        let (hist, x, gold, step, best) =
            unsafe { (h.get(), xs.get(), go.get(), st.get(), be.get()) };
        if fma {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has FMA (checked above).
            unsafe {
                combine_range_fma(r, l, it, alpha, hist, jx, x, gl, gold, step, best, scal)
            };
        } else {
            twins::solver_combine_samples(r, l, it, alpha, hist, jx, x, gl, gold, step, best, scal);
        }
    });
}
