// wf[ci, co, ky, kx] = w[co, ci, kh-1-ky, kw-1-kx]: the weights under which a stride-1
// convolution's input gradient is a plain forward convolution of dy (padding kh-1-pad). The
// `flipped` input-gradient variant runs the forward kernels, whose reduction reads each output
// channel's weight row contiguously, on this copy instead of the input-gradient kernels, whose
// weight reads stride over output channels (see ops::conv2d_input_grad_variant).
#import common

struct Params { cout: u32, cin: u32, kh: u32, kw: u32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> wf: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    let taps = p.kh * p.kw;
    if (i >= p.cout * p.cin * taps) {
        return;
    }
    // Consecutive invocations write consecutive outputs.
    let tap = i % taps;
    let co = (i / taps) % p.cout;
    let ci = i / (taps * p.cout);
    let ky = tap / p.kw;
    let kx = tap % p.kw;
    wf[i] = w[((co * p.cin + ci) * p.kh + (p.kh - 1u - ky)) * p.kw + (p.kw - 1u - kx)];
}
