// Per-sample products with a low-rank history: c[b, j] = H[b, j, :] · x[b, :] for the `count`
// valid slots j of each sample's ring of `slots` vectors (Broyden's Vᵀx and xᵀU). One workgroup per
// (slot, sample).
#import common
#import reduce

struct Params {
    batch: u32, slots: u32, count: u32, dim: u32,
    h_off: u32, x_off: u32, c_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = wid.x;
    let b = wid.y;
    if (j >= p.count || b >= p.batch) {
        return;
    }
    let hb = p.h_off + (b * p.slots + j) * p.dim;
    let xb = p.x_off + b * p.dim;
    var s = 0.0;
    for (var i = lid; i < p.dim; i += WG) {
        s = fma(h[hb + i], x[xb + i], s);
    }
    let t = workgroup_sum(lid, s);
    if (lid == 0u) {
        c[p.c_off + b * p.slots + j] = t;
    }
}
