// conv_event_sim.wgsl for adapters with subgroups (same Params, bindings and results). Finding a
// position's spiked taps means reading, for every input channel and kernel row, a window of one
// input row's spike bits, the same window for all 8 lanes of a column phase; on a CPU driver each
// of those loads costs a scalar load per lane. Here the 8 lanes read the windows of up to 8 kernel
// rows between them (one each) and pass them round with shuffles: kh× fewer such loads, and the
// sum keeps the dense convolution's (c, ky, kx) order.
#import conv_event_sim_body

fn exchange(mine: u32, lane: u32, cc: u32) -> u32 {
    return subgroupShuffle(mine, (lane & ~7u) + cc);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
    // Lanes 8k..8k+7 of a subgroup must be one column phase's 8 channel groups (CB = 8, lanes in
    // invocation order), as on lavapipe; otherwise (or with `unshared`, which tests set) every
    // lane reads its own windows.
    let share = p.unshared == 0u && sg_size % 8u == 0u && subgroupAll(lane % 8u == lid % 8u);
    simulate(wid, lid, lane, share);
}
