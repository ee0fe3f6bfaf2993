// Batch-norm normalisation and affine transform with the given statistics (batch or running).
#import common

struct Params { n: u32, c: u32, hw: u32, _pad: u32, eps: f32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> var_: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let ch = (i / p.hw) % p.c;
    y[i] = (x[i] - mean[ch]) * inverseSqrt(var_[ch] + p.eps) * gamma[ch] + beta[ch];
}
