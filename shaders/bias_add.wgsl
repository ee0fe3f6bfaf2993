// y[b, c, ·] += bias[c] in place, for [batch, C, HW] (HW = 1 for dense layers).
#import common

struct Params { n: u32, c: u32, hw: u32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    y[i] = y[i] + bias[(i / p.hw) % p.c];
}
