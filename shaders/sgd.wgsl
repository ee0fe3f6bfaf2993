// SGD with momentum and weight decay in place, as torch.optim.SGD (dampening 0, no Nesterov):
// d = g + wd · w;  v = momentum · v + d;  w = w − lr · v.
#import common

struct Params { n: u32, _pad: u32, lr: f32, momentum: f32, weight_decay: f32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let d = g[i] + p.weight_decay * w[i];
    let m = p.momentum * v[i] + d;
    v[i] = m;
    w[i] = w[i] - p.lr * m;
}
