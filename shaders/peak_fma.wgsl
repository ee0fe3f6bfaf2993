// Register-only f32 FMA throughput probe for `fsnn bench peak`: every invocation runs 8 independent
// fma chains (independent so the driver can overlap them) and touches memory once, at the end, so
// that the chains are not optimised away. The multiplier and addend come from the uniform so that
// nothing can be folded at pipeline-creation time. FLOPs per invocation: 2 · 8 · iters.
#import common

struct Params { n: u32, iters: u32, mul: f32, add: f32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let s = f32(i % 1024u) * (1.0 / 1024.0);
    var a0 = s;
    var a1 = s + 0.125;
    var a2 = s + 0.25;
    var a3 = s + 0.375;
    var a4 = s + 0.5;
    var a5 = s + 0.625;
    var a6 = s + 0.75;
    var a7 = s + 0.875;
    for (var k = 0u; k < p.iters; k++) {
        a0 = fma(a0, p.mul, p.add);
        a1 = fma(a1, p.mul, p.add);
        a2 = fma(a2, p.mul, p.add);
        a3 = fma(a3, p.mul, p.add);
        a4 = fma(a4, p.mul, p.add);
        a5 = fma(a5, p.mul, p.add);
        a6 = fma(a6, p.mul, p.add);
        a7 = fma(a7, p.mul, p.add);
    }
    out[i] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
}
