// Variational dropout mask: 0 with probability `prob`, else 1/(1 − prob). Drawn from the
// counter-based generator, so (seed, stream) reproduce a mask exactly on any device.
#import common
#import rng

struct Params { n: u32, seed: u32, stream: u32, _pad: u32, prob: f32, keep_scale: f32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> mask: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    mask[i] = select(0.0, p.keep_scale, rng_uniform(p.seed, p.stream, i) >= p.prob);
}
