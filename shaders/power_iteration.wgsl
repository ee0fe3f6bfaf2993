// One power-iteration step for spectral normalisation of w viewed as [rows, cols]:
// v = normalize(wᵀu), u = normalize(w v), sigma = uᵀ w v. A single workgroup: the matrices are
// small (at most a few million entries) and this runs once per training step.
#import common
#import reduce

struct Params { rows: u32, cols: u32, _pad0: u32, _pad1: u32, eps: f32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> u: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> sigma: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        var t = 0.0;
        for (var r = 0u; r < p.rows; r++) {
            t = fma(w[r * p.cols + j], u[r], t);
        }
        v[j] = t;
        s += t * t;
    }
    let vn = max(sqrt(workgroup_sum(lid, s)), p.eps);
    storageBarrier();
    for (var j = lid; j < p.cols; j += WG) {
        v[j] = v[j] / vn;
    }
    storageBarrier();
    workgroupBarrier();
    var s2 = 0.0;
    for (var r = lid; r < p.rows; r += WG) {
        var t = 0.0;
        for (var j = 0u; j < p.cols; j++) {
            t = fma(w[r * p.cols + j], v[j], t);
        }
        u[r] = t;
        s2 += t * t;
    }
    let un2 = workgroup_sum(lid, s2);
    let un = max(sqrt(un2), p.eps);
    storageBarrier();
    for (var r = lid; r < p.rows; r += WG) {
        u[r] = u[r] / un;
    }
    if (lid == 0u) {
        // uᵀ(w v) with u = wv/|wv|.
        sigma[0] = un2 / un;
    }
}
