// Sum (or sum of squares) of x[off .. off + n), in per-workgroup partials: each workgroup reduces
// `per_group` consecutive elements into out[out_off + group]. Run again on the partials for one
// value; that two-level scheme is the global norm of the solvers' stopping test.
#import common
#import reduce

struct Params { n: u32, x_off: u32, out_off: u32, per_group: u32, square: u32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    let start = g * p.per_group;
    if (start >= p.n) {
        return;
    }
    let end = min(start + p.per_group, p.n);
    var s = 0.0;
    for (var k = start + lid; k < end; k += WG) {
        let v = x[p.x_off + k];
        s += select(v, v * v, p.square != 0u);
    }
    let t = workgroup_sum(lid, s);
    if (lid == 0u) {
        out[p.out_off + g] = t;
    }
}
