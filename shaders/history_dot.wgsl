// Per-sample products with a low-rank history: c[b, j] = H[b, j, :] · x[b, :] for the `count`
// valid slots j of each sample's ring of `slots` vectors (Broyden's Vᵀx and xᵀU). One invocation
// per (sample, slot) with a serial loop over the dimension: no workgroup reduction, whose barriers
// dominated this kernel on CPU drivers; x[b] is shared by the slots of a sample.
#import common

struct Params {
    batch: u32, slots: u32, count: u32, dim: u32,
    h_off: u32, x_off: u32, c_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = flat_id(wid, nwg, lid);
    if (k >= p.batch * p.count) {
        return;
    }
    let b = k / p.count;
    let j = k % p.count;
    let hb = p.h_off + (b * p.slots + j) * p.dim;
    let xb = p.x_off + b * p.dim;
    // Four partial sums keep the FMA chains independent.
    var s = vec4<f32>(0.0);
    let d4 = p.dim / 4u * 4u;
    for (var i = 0u; i < d4; i += 4u) {
        s = fma(vec4<f32>(h[hb + i], h[hb + i + 1u], h[hb + i + 2u], h[hb + i + 3u]),
                vec4<f32>(x[xb + i], x[xb + i + 1u], x[xb + i + 2u], x[xb + i + 3u]), s);
    }
    var t = (s.x + s.y) + (s.z + s.w);
    for (var i = d4; i < p.dim; i++) {
        t = fma(h[hb + i], x[xb + i], t);
    }
    c[p.c_off + b * p.slots + j] = t;
}
