// wf[ci, co, ky, kx] = w[co, ci, kh-1-ky, kw-1-kx]: the weights under which a stride-1
// convolution's input gradient is a plain forward convolution of dy (padding kh-1-pad). The
// `flipped` input-gradient variant runs the forward kernels, whose reduction reads each output
// channel's weight row contiguously, on this copy instead of the input-gradient kernels, whose
// weight reads stride over output channels (see ops::conv2d_input_grad_variant).
#import common

struct Params { cout: u32, cin: u32, taps: u32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> wf: array<f32>;

// One (ci, co) pair per invocation: flipping both tap axes reverses the kh·kw taps, so the pair's
// taps are one contiguous run in each buffer and the index arithmetic (a division per element
// made the first form, one invocation per weight, ~10 ms per 384×384×3×3 on lavapipe) is paid
// once per pair.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let j = flat_id(wid, nwg, lid);
    if (j >= p.cout * p.cin) {
        return;
    }
    // Consecutive invocations write consecutive runs.
    let co = j % p.cout;
    let ci = j / p.cout;
    let src = (co * p.cin + ci) * p.taps + p.taps - 1u;
    let dst = j * p.taps;
    for (var t = 0u; t < p.taps; t++) {
        wf[dst + t] = w[src - t];
    }
}
