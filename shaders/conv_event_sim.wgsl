// One step of the spiking simulation of a convolutional feedback layer (stride 1, weight
// [cout, cin, kh, kw]), event-driven and fused with the neuron update. Spikes are bit sets, one
// per (sample, channel, row), ceil(w/32) words each. One workgroup per (sample, output row,
// 4·VPL·CB output channels); an invocation owns 4·VPL consecutive output channels (VPL vec4s of
// weights per spike: on the software driver every per-invocation load is a gather, so each must
// feed several sums, and the walk over the spike bits is shared by more sums) and every PH-th
// output column of the row:
//   fb = m · Σ_{c, ky, kx: input spiked} W[co, c, ky, kx]
// where the spiked taps of a (c, ky) are the set bits of a kw-wide window of one input row, found
// with countTrailingZeros. Neighbouring invocations share their column, so SIMD lanes walk the
// same window and never diverge; the weights of one (c, ky, kx) for all output channels are
// contiguous in `wt` ([cin·kh·kw, ld], the transposed weight, rows padded to whole vec4s). The sum
// runs over (c, ky, kx) in the dense convolution's order from 0, which makes it equal to the dense
// kernel's fma chain on 0/1 input. Then v = u + x + fb; s = v >= vth; u = (v − vth·s)·leak;
// acc = leak·acc + s, and the row's spikes go to `out_bits`.
#import conv_event_sim_body

// Never called with sharing off; here for the shared body, on adapters without subgroups.
fn exchange(mine: u32, lane: u32, cc: u32) -> u32 {
    return mine;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    simulate(wid, lid, 0u, false);
}
