// Gradient of 2×2 average pooling: each input pixel receives a quarter of its window's gradient
// (zero for rows/columns the pooling dropped). One invocation per input pixel, so no atomics.
#import common

struct Params { n: u32, h: u32, w: u32, oh: u32, ow: u32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let plane = i / (p.h * p.w);
    let q = i % (p.h * p.w);
    let oy = (q / p.w) / 2u;
    let ox = (q % p.w) / 2u;
    var v = 0.0;
    if (oy < p.oh && ox < p.ow) {
        v = 0.25 * dy[plane * p.oh * p.ow + oy * p.ow + ox];
    }
    dx[i] = v;
}
