// σ(z) = clamp(scale · z, 0, 1) and its derivative mask 1[0 < scale · z < 1] (the fixed-point
// map's nonlinearity, scale = 1/vth).
#import common

struct Params { n: u32, _pad: u32, scale: f32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> mask: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let v = p.scale * z[i];
    y[i] = clamp(v, 0.0, 1.0);
    mask[i] = select(0.0, 1.0, v > 0.0 && v < 1.0);
}
