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
