// out[b, :] = alpha · x[b, :] + Σ_j c[b, j] · H[b, j, :] over the `count` valid slots: with the
// coefficients from history_dot this applies Broyden's inverse-Jacobian estimate −I + U Vᵀ (or
// its transpose) to a batch of vectors.
#import common

struct Params {
    batch: u32, slots: u32, count: u32, dim: u32,
    h_off: u32, x_off: u32, c_off: u32, out_off: u32,
    alpha: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = flat_id(wid, nwg, lid);
    if (k >= p.batch * p.dim) {
        return;
    }
    let b = k / p.dim;
    let i = k % p.dim;
    var v = p.alpha * x[p.x_off + k];
    for (var j = 0u; j < p.count; j++) {
        v = fma(c[p.c_off + b * p.slots + j], h[p.h_off + (b * p.slots + j) * p.dim + i], v);
    }
    out[p.out_off + k] = v;
}
