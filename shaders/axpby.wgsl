// y = alpha · x + beta · y over a window of each buffer (offsets let the host split tensors larger
// than one storage binding). beta = 0 never reads y, so garbage in y cannot leak in as NaN.
#import common

struct Params { n: u32, x_off: u32, y_off: u32, _pad: u32, alpha: f32, beta: f32, }

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
    var v = p.alpha * x[p.x_off + i];
    if (p.beta != 0.0) {
        v = v + p.beta * y[p.y_off + i];
    }
    y[p.y_off + i] = v;
}
