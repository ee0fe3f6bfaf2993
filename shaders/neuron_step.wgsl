// One time step of the fused neuron update for every neuron of the batch:
// charge (u += feedback + input), fire (u >= vth), reset by subtraction, leak, and accumulate the
// leaky spike count. Spikes are written as 0/1 floats for the feedback product of the next step.
#import common

struct Params {
    n: u32,          // neurons × batch
    x_off: u32,      // offset of this step's input (per-step input); 0 for constant input
    has_fb: u32,     // 0 on the first step, when there are no spikes yet
    _pad: u32,
    vth: f32,
    leak: f32,       // 1 for IF
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> u: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;
@group(0) @binding(3) var<storage, read_write> spikes: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> fb: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    var v = u[i] + x[p.x_off + i];
    if (p.has_fb != 0u) {
        v = v + fb[i];
    }
    let s = select(0.0, 1.0, v >= p.vth);
    v = (v - p.vth * s) * p.leak;
    u[i] = v;
    acc[i] = p.leak * acc[i] + s;
    spikes[i] = s;
}
