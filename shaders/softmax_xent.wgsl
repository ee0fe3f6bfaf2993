// Softmax cross-entropy per row, with its gradient scaled by `grad_scale` (1/batch for a mean
// loss) and whether the arg-max equals the label. One invocation per row.
#import common

struct Params { rows: u32, classes: u32, _pad0: u32, _pad1: u32, grad_scale: f32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> correct: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = flat_id(wid, nwg, lid);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.classes;
    var mx = logits[base];
    var arg = 0u;
    for (var j = 1u; j < p.classes; j++) {
        let v = logits[base + j];
        if (v > mx) {
            mx = v;
            arg = j;
        }
    }
    var se = 0.0;
    for (var j = 0u; j < p.classes; j++) {
        se += exp(logits[base + j] - mx);
    }
    let lse = mx + log(se);
    let label = labels[r];
    loss[r] = lse - logits[base + label];
    for (var j = 0u; j < p.classes; j++) {
        let prob = exp(logits[base + j] - lse);
        dlogits[base + j] = p.grad_scale * (prob - select(0.0, 1.0, j == label));
    }
    correct[r] = select(0.0, 1.0, arg == label);
}
