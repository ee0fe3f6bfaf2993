// conv_event_sim.wgsl written for GPUs (same Params, bindings and results; output rows of at most
// 32 columns, checked on the host). There, an invocation owns 8 output channels and every 8th
// column, so a 32- or 64-wide hardware subgroup holds several columns whose spike walks differ
// (divergence), and the neuron update reads u, x, mask and acc a channel plane apart per lane
// (uncoalesced). Here every invocation owns one output channel and the workgroup walks the row's
// columns together:
//  1. per column, all invocations walk the same spiked taps (uniform control flow, the window
//     read is one broadcast), each adding its channel's weight: consecutive invocations read
//     consecutive floats of the tap's weight row (coalesced); the sums go to a channel × column
//     tile in workgroup memory;
//  2. the neuron update runs over the tile with consecutive invocations on consecutive columns
//     of a channel, so its global reads and writes are contiguous.
// The sums run over (c, ky, kx) from 0, as in conv_event_sim.wgsl: the results are bit-identical.
#import common

const MAX_OW: u32 = 32u;  // output row width ≤ 32 (one spike word per row)

#import conv_event_sim_io

// Feedback sums of the workgroup's WG channels × the row's columns.
var<workgroup> fb: array<f32, 2048>; // WG · MAX_OW
// The row's spikes of the workgroup's channels.
var<workgroup> obits: array<atomic<u32>, WG>;

#import conv_spike_rows

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let oy = wid.y;
    let b = wid.z;
    let c0 = wid.x * WG;
    // Channels past the padded row read its last entry and their sums are never used.
    let co_w = min(c0 + lid, p.ld4 * 4u - 1u);
    let q = co_w / 4u;
    let comp = co_w % 4u;
    let in_wpr = (p.w + 31u) / 32u;
    let kmask = select((1u << p.kw) - 1u, 0xffffffffu, p.kw >= 32u);
    let ohw = p.oh * p.ow;
    atomicStore(&obits[lid], 0u);
    if (p.has_fb != 0u) {
        for (var ox = 0u; ox < p.ow; ox++) {
            let sx = i32(ox) - i32(p.pad);
            var f = 0.0;
            for (var c = 0u; c < p.cin; c++) {
                let cbase = (b * p.cin + c) * p.h;
                for (var ky = 0u; ky < p.kh; ky++) {
                    let iy = i32(oy + ky) - i32(p.pad);
                    if (iy < 0 || iy >= i32(p.h)) {
                        continue;
                    }
                    var m = row_bits((cbase + u32(iy)) * in_wpr, in_wpr, sx) & kmask;
                    let tap0 = (c * p.kh + ky) * p.kw;
                    while (m != 0u) {
                        let kx = countTrailingZeros(m);
                        m = m & (m - 1u);
                        f = f + wt[(tap0 + kx) * p.ld4 + q][comp];
                    }
                }
            }
            fb[lid * MAX_OW + ox] = f;
        }
    }
    workgroupBarrier();
    let chans = min(WG, p.cout - min(c0, p.cout));
    for (var e = lid; e < chans * p.ow; e += WG) {
        let k = e / p.ow;
        let ox = e % p.ow;
        let co = c0 + k;
        let i = (b * p.cout + co) * ohw + oy * p.ow + ox;
        var v = u[i] + x[p.x_off + i];
        if (p.has_fb != 0u) {
            let fm = fb[k * MAX_OW + ox] * select(1.0, mask[i], p.has_mask != 0u);
            v = v + fm;
        }
        let s = select(0.0, 1.0, v >= p.vth);
        v = (v - p.vth * s) * p.leak;
        u[i] = v;
        acc[i] = p.leak * acc[i] + s;
        if (s != 0.0) {
            atomicOr(&obits[k], 1u << ox);
        }
    }
    workgroupBarrier();
    if (lid < chans) {
        out_bits[(b * p.cout + c0 + lid) * p.oh + oy] = atomicLoad(&obits[lid]);
    }
}
