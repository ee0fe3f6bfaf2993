// The body of conv_event_sim.wgsl and conv_event_sim_coop.wgsl (see their headers); each
// defines `exchange`, which passes a lane's input-row window to the others.
#import common

const VPL: u32 = 2u;             // vec4s of output channels per invocation
const CB: u32 = 8u;              // channel groups (of 4·VPL) per workgroup
const PH: u32 = 8u;              // column phases per workgroup; CB · PH = WG
const MAX_ROW_WORDS: u32 = 8u;   // output row width ≤ 32 · MAX_ROW_WORDS (checked on the host)

#import conv_event_sim_io

// The row's spikes of the workgroup's 4·VPL·CB channels, assembled from all column phases.
var<workgroup> obits: array<atomic<u32>, 512>; // 4 · VPL · CB · MAX_ROW_WORDS

#import conv_spike_rows

fn simulate(wid: vec3<u32>, lid: u32, lane: u32, share: bool) {
    let g = wid.x * CB + lid % CB;
    let phase = lid / CB;
    let oy = wid.y;
    let b = wid.z;
    // Channel groups past the last one read a clamped vec4 (keeping lanes uniform) and store
    // nothing.
    var qs: array<u32, VPL>;
    for (var v = 0u; v < VPL; v++) {
        qs[v] = min(g * VPL + v, p.ld4 - 1u);
    }
    let in_wpr = (p.w + 31u) / 32u;
    let out_wpr = (p.ow + 31u) / 32u;
    let kmask = select((1u << p.kw) - 1u, 0xffffffffu, p.kw >= 32u);
    let ohw = p.oh * p.ow;
    let nwords = 4u * VPL * CB * out_wpr;
    for (var i = lid; i < nwords; i += WG) {
        atomicStore(&obits[i], 0u);
    }
    workgroupBarrier();
    for (var ox = phase; ox < p.ow; ox += PH) {
        var f: array<vec4<f32>, VPL>;
        for (var v = 0u; v < VPL; v++) {
            f[v] = vec4<f32>(0.0);
        }
        if (p.has_fb != 0u) {
            let sx = i32(ox) - i32(p.pad);
            for (var c = 0u; c < p.cin; c++) {
                let cbase = (b * p.cin + c) * p.h;
                let tapc = c * p.kh;
                for (var ky0 = 0u; ky0 < p.kh; ky0 += 8u) {
                    // The 8 lanes of a column phase read the windows of 8 kernel rows between them
                    // (one each) and pass them round, instead of each reading all of them.
                    var mine = 0u;
                    if (share) {
                        let iy = i32(oy + ky0 + lane % 8u) - i32(p.pad);
                        if (ky0 + lane % 8u < p.kh && iy >= 0 && iy < i32(p.h)) {
                            mine = row_bits((cbase + u32(iy)) * in_wpr, in_wpr, sx) & kmask;
                        }
                    }
                    for (var kk = 0u; kk < min(8u, p.kh - ky0); kk++) {
                        let ky = ky0 + kk;
                        let iy = i32(oy + ky) - i32(p.pad);
                        var m = exchange(mine, lane, kk);
                        if (!share) {
                            m = 0u;
                            if (iy >= 0 && iy < i32(p.h)) {
                                m = row_bits((cbase + u32(iy)) * in_wpr, in_wpr, sx) & kmask;
                            }
                        }
                        let tap0 = (tapc + ky) * p.kw;
                        while (m != 0u) {
                            let kx = countTrailingZeros(m);
                            m = m & (m - 1u);
                            let row = (tap0 + kx) * p.ld4;
                            for (var v = 0u; v < VPL; v++) {
                                f[v] = f[v] + wt[row + qs[v]];
                            }
                        }
                    }
                }
            }
        }
        for (var k = 0u; k < 4u * VPL; k++) {
            let co_raw = 4u * VPL * g + k;
            let co = min(co_raw, p.cout - 1u);
            let i = (b * p.cout + co) * ohw + oy * p.ow + ox;
            var v = u[i] + x[p.x_off + i];
            if (p.has_fb != 0u) {
                let fm = f[k / 4u][k % 4u] * select(1.0, mask[i], p.has_mask != 0u);
                v = v + fm;
            }
            let s = select(0.0, 1.0, v >= p.vth);
            v = (v - p.vth * s) * p.leak;
            if (co_raw < p.cout) {
                u[i] = v;
                acc[i] = p.leak * acc[i] + s;
                if (s != 0.0) {
                    let lc = 4u * VPL * (lid % CB) + k;
                    atomicOr(&obits[lc * out_wpr + ox / 32u], 1u << (ox % 32u));
                }
            }
        }
    }
    workgroupBarrier();
    for (var i = lid; i < nwords; i += WG) {
        let co = wid.x * 4u * VPL * CB + i / out_wpr;
        if (co < p.cout) {
            out_bits[((b * p.cout + co) * p.oh + oy) * out_wpr + i % out_wpr] = atomicLoad(&obits[i]);
        }
    }
}
