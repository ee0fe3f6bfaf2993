// Spectral normalisation: w_eff = clamp(g, −1, 1) · w / σ̂, with g and σ̂ read from the GPU so the
// step needs no round trip to the host.
#import common

struct Params { n: u32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> sigma: array<f32>;
@group(0) @binding(4) var<storage, read_write> weff: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    weff[i] = clamp(g[0], -1.0, 1.0) * w[i] / sigma[0];
}
