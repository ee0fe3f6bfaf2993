//! The event-driven linear feedback on the CPU: for every sample and step, the feedback current
//! is the sum of the `W_effᵀ` rows of the inputs that spiked at the previous step — contiguous
//! row adds that the compiler vectorises, and about 7× less work than the dense product at
//! fc400's firing rates. The rows are added in ascending input order, starting from zero, which
//! is exactly the twin's per-neuron fold: the result is bit-identical to `twins::fc_event_sim`.

use fsnn_core::events::{fc_event_ld, spike_words};
use fsnn_core::shapes::FcEventSim;

/// Semantics of `twins::fc_event_sim` (`wt` is `W_effᵀ`, `[n_in, n_out]`, rows
/// `fc_event_ld(n)` apart; `bits` the previous step's spikes in, the last step's out).
#[allow(clippy::too_many_arguments)]
pub fn fc_event_sim(
    s: &FcEventSim,
    u: &mut [f32],
    acc: &mut [f32],
    bits: &mut [u32],
    wt: &[f32],
    x: &[f32],
    mask: Option<&[f32]>,
    fb: &mut Vec<f32>,
) {
    let (n, words) = (s.n, spike_words(s.n));
    let ld = fc_event_ld(n);
    fb.clear();
    fb.resize(n, 0.0);
    for b in 0..s.batch {
        let bb = &mut bits[b * words..(b + 1) * words];
        let (u, acc) = (&mut u[b * n..][..n], &mut acc[b * n..][..n]);
        let m = mask.map(|m| &m[b * n..][..n]);
        for (k, t) in (s.t_begin..s.t_end).enumerate() {
            let xb = &x[s.x_off + k * s.x_step + b * n..][..n];
            let with_fb = t > 0;
            if with_fb {
                fb.fill(0.0);
                for (wi, &word) in bb.iter().enumerate() {
                    let mut w = word;
                    while w != 0 {
                        let i = wi * 32 + w.trailing_zeros() as usize;
                        w &= w - 1;
                        for (f, &r) in fb.iter_mut().zip(&wt[i * ld..][..n]) {
                            *f += r;
                        }
                    }
                }
            }
            bb.fill(0);
            for j in 0..n {
                let mut v = u[j] + xb[j];
                if with_fb {
                    v += fb[j] * m.map_or(1.0, |m| m[j]);
                }
                let sp = if v >= s.vth { 1.0 } else { 0.0 };
                u[j] = (v - s.vth * sp) * s.leak;
                acc[j] = s.leak * acc[j] + sp;
                if sp != 0.0 {
                    bb[j / 32] |= 1 << (j % 32);
                }
            }
        }
    }
}

/// Semantics of `twins::conv_event_sim`, bit for bit: the twin gathers, for each output neuron,
/// the weights of its active input taps in `(c, ky, kx)` order; here each tap's weight row (all
/// output channels, contiguous in `wt`) is scattered onto the outputs its active inputs reach,
/// looping over `(c, ky, kx)` in the same order, so every output receives the same additions in
/// the same order. Samples run in parallel, in fixed ranges.
#[allow(clippy::too_many_arguments)]
pub fn conv_event_sim(
    threads: usize,
    s: &fsnn_core::shapes::ConvShape,
    step: fsnn_core::shapes::NeuronStep,
    u: &mut [f32],
    acc: &mut [f32],
    in_bits: &[u32],
    out_bits: &mut [u32],
    wt: &[f32],
    x: &[f32],
    mask: Option<&[f32]>,
) {
    use crate::solver::{par_batches, Shared};
    let (oh, ow) = (s.oh(), s.ow());
    let (in_wpr, out_wpr) = (s.w.div_ceil(32), ow.div_ceil(32));
    let ld = fsnn_core::events::conv_event_ld(s.cout);
    let per_sample = s.cout * oh * ow;
    let (us, accs, outs) = (Shared::new(u), Shared::new(acc), Shared::new(out_bits));
    par_batches(threads, s.batch, |range| {
        // SAFETY: sample b touches only its own neurons and its own output bit rows.
        let (u, acc, out_bits) = unsafe { (us.get(), accs.get(), outs.get()) };
        let mut fb = vec![0f32; oh * ow * s.cout];
        let mut active: Vec<(usize, usize)> = Vec::new();
        for b in range {
            if step.has_feedback {
                fb.fill(0.0);
                for c in 0..s.cin {
                    active.clear();
                    for iy in 0..s.h {
                        let base = ((b * s.cin + c) * s.h + iy) * in_wpr;
                        for (wi, &word) in in_bits[base..base + in_wpr].iter().enumerate() {
                            let mut w = word;
                            while w != 0 {
                                let ix = wi * 32 + w.trailing_zeros() as usize;
                                w &= w - 1;
                                if ix < s.w {
                                    active.push((iy, ix));
                                }
                            }
                        }
                    }
                    if active.is_empty() {
                        continue;
                    }
                    for ky in 0..s.kh {
                        for kx in 0..s.kw {
                            let row = &wt[((c * s.kh + ky) * s.kw + kx) * ld..][..s.cout];
                            for &(iy, ix) in &active {
                                let (oy, ox) = (iy + s.pad, ix + s.pad);
                                if oy < ky || ox < kx || oy - ky >= oh || ox - kx >= ow {
                                    continue;
                                }
                                let o = ((oy - ky) * ow + (ox - kx)) * s.cout;
                                for (f, &r) in fb[o..o + s.cout].iter_mut().zip(row) {
                                    *f += r;
                                }
                            }
                        }
                    }
                }
            }
            for co in 0..s.cout {
                for oy in 0..oh {
                    let ob = ((b * s.cout + co) * oh + oy) * out_wpr;
                    let bits = &mut out_bits[ob..ob + out_wpr];
                    bits.fill(0);
                    for ox in 0..ow {
                        let i = b * per_sample + (co * oh + oy) * ow + ox;
                        let mut v = u[i] + x[step.x_offset + i];
                        if step.has_feedback {
                            v += fb[(oy * ow + ox) * s.cout + co] * mask.map_or(1.0, |m| m[i]);
                        }
                        let sp = if v >= step.vth { 1.0 } else { 0.0 };
                        u[i] = (v - step.vth * sp) * step.leak;
                        acc[i] = step.leak * acc[i] + sp;
                        if sp != 0.0 {
                            bits[ox / 32] |= 1 << (ox % 32);
                        }
                    }
                }
            }
        }
    });
}
