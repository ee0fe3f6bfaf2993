// Per-row dot products out[r] = alpha · Σ_j x[r, j] · y[r, j] + beta · out[r], one workgroup per
// row: the per-sample inner products and norms of the batched fixed-point solvers.
#import common
#import reduce

struct Params {
    rows: u32, dim: u32, x_off: u32, y_off: u32,
    out_off: u32, _pad: u32, alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) {
        return;
    }
    let xb = p.x_off + r * p.dim;
    let yb = p.y_off + r * p.dim;
    var s = 0.0;
    for (var j = lid; j < p.dim; j += WG) {
        s = fma(x[xb + j], y[yb + j], s);
    }
    let t = workgroup_sum(lid, s);
    if (lid == 0u) {
        var v = p.alpha * t;
        if (p.beta != 0.0) {
            v = v + p.beta * out[p.out_off + r];
        }
        out[p.out_off + r] = v;
    }
}
