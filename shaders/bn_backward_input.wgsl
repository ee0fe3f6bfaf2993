// Batch-norm input gradient. With batch statistics the statistics depend on x:
// dx = γ·istd·(dy − Σdy/n − x̂·Σ(dy·x̂)/n); with running statistics they are constants: dx = γ·istd·dy.
#import common

struct Params { n: u32, c: u32, hw: u32, batch_stats: u32, eps: f32, count: f32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> var_: array<f32>;
@group(0) @binding(5) var<storage, read> gamma: array<f32>;
@group(0) @binding(6) var<storage, read> dgamma: array<f32>;
@group(0) @binding(7) var<storage, read> dbeta: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let ch = (i / p.hw) % p.c;
    let istd = inverseSqrt(var_[ch] + p.eps);
    var g = dy[i];
    if (p.batch_stats != 0u) {
        let xhat = (x[i] - mean[ch]) * istd;
        g = g - dbeta[ch] / p.count - xhat * dgamma[ch] / p.count;
    }
    dx[i] = gamma[ch] * istd * g;
}
