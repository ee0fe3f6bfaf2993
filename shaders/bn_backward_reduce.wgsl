// Per-channel sums for the batch-norm backward pass: dbeta = Σ dy and dgamma = Σ dy · x̂
// (which are also the two sums the input gradient needs). One workgroup per channel.
#import common
#import reduce

struct Params { batch: u32, c: u32, hw: u32, _pad: u32, eps: f32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> var_: array<f32>;
@group(0) @binding(5) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(6) var<storage, read_write> dbeta: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    let n = p.batch * p.hw;
    let mu = mean[ch];
    let istd = inverseSqrt(var_[ch] + p.eps);
    var sd = 0.0;
    var sdx = 0.0;
    for (var k = lid; k < n; k += WG) {
        let idx = ((k / p.hw) * p.c + ch) * p.hw + k % p.hw;
        let g = dy[idx];
        sd += g;
        sdx += g * (x[idx] - mu) * istd;
    }
    let tsd = workgroup_sum(lid, sd);
    let tsdx = workgroup_sum(lid, sdx);
    if (lid == 0u) {
        dbeta[ch] = tsd;
        dgamma[ch] = tsdx;
    }
}
