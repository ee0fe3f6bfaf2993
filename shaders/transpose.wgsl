// out[c, r] = in[r, c] for a rows × cols matrix, out rows `ld` ≥ rows apart (the padding is
// left alone). The event-driven feedback kernels read the
// feedback weight transposed, so the weights one input spike adds to all its outputs are
// contiguous (for conv: all output channels of one input channel and tap).
#import common

struct Params {
    rows: u32,
    cols: u32,
    ld: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.rows * p.cols) {
        return;
    }
    // Consecutive invocations write consecutive outputs (within a row).
    let c = i / p.rows;
    let r = i % p.rows;
    dst[c * p.ld + r] = src[r * p.cols + c];
}
