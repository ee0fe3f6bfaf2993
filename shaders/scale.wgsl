// y = alpha · y in place, over a window (see axpby.wgsl for the offsets).
#import common

struct Params { n: u32, y_off: u32, alpha: f32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    y[p.y_off + i] = p.alpha * y[p.y_off + i];
}
