// Per-channel batch mean and biased variance of x [batch, C, HW] (two passes, for accuracy), and
// optionally the running-statistics update (unbiased variance, as PyTorch). One workgroup per
// channel.
#import common
#import reduce

struct Params { batch: u32, c: u32, hw: u32, update_running: u32, momentum: f32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> var_: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    let n = p.batch * p.hw;
    var s = 0.0;
    for (var k = lid; k < n; k += WG) {
        let b = k / p.hw;
        s += x[(b * p.c + ch) * p.hw + k % p.hw];
    }
    let mu = workgroup_sum(lid, s) / f32(n);
    var s2 = 0.0;
    for (var k = lid; k < n; k += WG) {
        let b = k / p.hw;
        let d = x[(b * p.c + ch) * p.hw + k % p.hw] - mu;
        s2 += d * d;
    }
    let var_b = workgroup_sum(lid, s2) / f32(n);
    if (lid == 0u) {
        mean[ch] = mu;
        var_[ch] = var_b;
        if (p.update_running != 0u) {
            let unbiased = var_b * f32(n) / f32(max(n, 2u) - 1u);
            running_mean[ch] = (1.0 - p.momentum) * running_mean[ch] + p.momentum * mu;
            running_var[ch] = (1.0 - p.momentum) * running_var[ch] + p.momentum * unbiased;
        }
    }
}
