// Steps t_begin..t_end of the spiking simulation of a linear feedback layer, event-driven and
// fused: one workgroup per sample keeps its membrane potentials and rates in registers and its
// spikes as a bit set in workgroup memory, and per step
//   fb_j = m_j · Σ_{i spiked at t−1} W[j, i]   (rows of Wᵀ added in increasing i: no products,
//                                               nothing done for silent inputs)
//   v = u + x + fb;  s = v >= vth;  u = (v − vth·s)·leak;  acc = leak·acc + s.
// Adding the active rows in increasing index order from 0 reproduces the dense GEMM's fma chain
// (fma(0, w, a) = a and fma(1, w, a) = a + w exactly), so both paths give the same potentials.
// An invocation owns groups of 4 consecutive neurons and reads their weights as one vec4: on the
// software driver every storage load is a gather, so 4 values per load matters more than anything.
// The walk over the spike bits is the same for all invocations (no divergence).
// The spike bits are read from and left in `bits` ([batch, ceil(n/32)] words), so a simulation
// can be split over several dispatches (per-step input).
#import fc_event_sim_body

// The spikes are walked as the bit set itself: the walk is the same for all invocations.
fn feedback(fb: ptr<function, array<vec4<f32>, PER>>, lid: u32, words: u32, nq: u32, nper: u32) {
    for (var w = 0u; w < words; w++) {
        var m = atomicLoad(&sbits[w]);
        while (m != 0u) {
            let i = w * 32u + countTrailingZeros(m);
            m = m & (m - 1u);
            add_row(fb, i, lid, nq, nper);
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    simulate(wid, lid);
}
