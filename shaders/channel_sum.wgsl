// out[c] = alpha · Σ_{b, q} x[b, c, q] + beta · out[c]: bias gradients. One workgroup per channel.
#import common
#import reduce

struct Params { batch: u32, c: u32, hw: u32, _pad: u32, alpha: f32, beta: f32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    let n = p.batch * p.hw;
    var s = 0.0;
    for (var k = lid; k < n; k += WG) {
        s += x[((k / p.hw) * p.c + ch) * p.hw + k % p.hw];
    }
    let t = workgroup_sum(lid, s);
    if (lid == 0u) {
        var v = p.alpha * t;
        if (p.beta != 0.0) {
            v = v + p.beta * out[ch];
        }
        out[ch] = v;
    }
}
