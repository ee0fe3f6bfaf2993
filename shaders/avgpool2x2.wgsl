// 2×2 average pooling with stride 2 (odd trailing rows/columns dropped, as PyTorch does).
#import common

struct Params { n: u32, h: u32, w: u32, oh: u32, ow: u32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let plane = i / (p.oh * p.ow);
    let q = i % (p.oh * p.ow);
    let base = plane * p.h * p.w + (q / p.ow) * 2u * p.w + (q % p.ow) * 2u;
    y[i] = 0.25 * (x[base] + x[base + 1u] + x[base + p.w] + x[base + p.w + 1u]);
}
