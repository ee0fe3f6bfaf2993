// The body of fc_event_sim.wgsl and fc_event_sim_list.wgsl (see their headers); each defines
// `feedback`, which walks the previous step's spikes.
#import common

// vec4 groups per invocation; n ≤ 4 · WG · PER (checked on the host).
const PER: u32 = 4u;
const MAX_WORDS: u32 = 32u; // 4 · WG · PER / 32

struct Params {
    n: u32,          // neurons per sample
    t_begin: u32,
    t_end: u32,
    x_step: u32,     // elements between the inputs of consecutive steps (0: constant input)
    x_off: u32,      // element offset of step t_begin's input
    has_mask: u32,
    ld: u32,         // row stride of wt in vec4s: ceil(n/4), rows zero-padded
    _pad: u32,
    vth: f32,
    leak: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> u: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;
@group(0) @binding(3) var<storage, read_write> bits: array<u32>;
@group(0) @binding(4) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> x: array<f32>;
@group(0) @binding(6) var<storage, read> mask: array<f32>;

var<workgroup> sbits: array<atomic<u32>, MAX_WORDS>;

// Adds row i of Wᵀ (input i spiked) to this invocation's vec4 groups lid + k·WG (k < nper) of
// `fb`. `feedback` calls it for the spiked inputs in increasing i.
fn add_row(fb: ptr<function, array<vec4<f32>, PER>>, i: u32, lid: u32, nq: u32, nper: u32) {
    let row = i * nq;
    for (var k = 0u; k < PER; k++) {
        if (k < nper) {
            (*fb)[k] = (*fb)[k] + wt[row + min(lid + k * WG, nq - 1u)];
        }
    }
}

fn simulate(wid: vec3<u32>, lid: u32) {
    let b = wid.x;
    let n = p.n;
    let words = (n + 31u) / 32u;
    let nq = p.ld;
    let nper = (nq + WG - 1u) / WG;
    let base = b * n;
    var uv: array<vec4<f32>, PER>;
    var av: array<vec4<f32>, PER>;
    var mv: array<vec4<f32>, PER>;
    for (var k = 0u; k < PER; k++) {
        let q = lid + k * WG;
        for (var c = 0u; c < 4u; c++) {
            let j = min(4u * q + c, n - 1u);
            uv[k][c] = u[base + j];
            av[k][c] = acc[base + j];
            mv[k][c] = select(1.0, mask[base + j], p.has_mask != 0u);
        }
    }
    if (lid < words) {
        atomicStore(&sbits[lid], bits[b * words + lid]);
    }
    workgroupBarrier();
    var xo = p.x_off + base;
    for (var t = p.t_begin; t < p.t_end; t++) {
        var fb: array<vec4<f32>, PER>;
        for (var k = 0u; k < PER; k++) {
            fb[k] = vec4<f32>(0.0);
        }
        if (t > 0u) {
            feedback(&fb, lid, words, nq, nper);
        }
        workgroupBarrier();
        if (lid < words) {
            atomicStore(&sbits[lid], 0u);
        }
        workgroupBarrier();
        for (var k = 0u; k < PER; k++) {
            let q = lid + k * WG;
            if (k < nper && q < nq) {
                var v = uv[k] + vec4<f32>(x[xo + min(4u * q, n - 1u)], x[xo + min(4u * q + 1u, n - 1u)],
                                          x[xo + min(4u * q + 2u, n - 1u)], x[xo + min(4u * q + 3u, n - 1u)]);
                if (t > 0u) {
                    // Two statements, as the dense path's mask_mul and neuron_step.
                    let f = fb[k] * mv[k];
                    v = v + f;
                }
                let s = select(vec4<f32>(0.0), vec4<f32>(1.0), v >= vec4<f32>(p.vth));
                v = (v - p.vth * s) * p.leak;
                uv[k] = v;
                av[k] = p.leak * av[k] + s;
                // Neurons 4q..4q+3 are 4 adjacent bits of one word; padding neurons never count.
                var nib = 0u;
                for (var c = 0u; c < 4u; c++) {
                    if (s[c] != 0.0 && 4u * q + c < n) {
                        nib = nib | (1u << c);
                    }
                }
                if (nib != 0u) {
                    atomicOr(&sbits[(4u * q) / 32u], nib << ((4u * q) % 32u));
                }
            }
        }
        workgroupBarrier();
        xo = xo + p.x_step;
    }
    for (var k = 0u; k < PER; k++) {
        let q = lid + k * WG;
        for (var c = 0u; c < 4u; c++) {
            let j = 4u * q + c;
            if (k < nper && j < n) {
                u[base + j] = uv[k][c];
                acc[base + j] = av[k][c];
            }
        }
    }
    if (lid < words) {
        bits[b * words + lid] = atomicLoad(&sbits[lid]);
    }
}
