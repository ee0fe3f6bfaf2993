// Parameters and bindings of the event-driven conv step's kernels (conv_event_sim[_coop|_lanes]).
struct Params {
    cin: u32, h: u32, w: u32, cout: u32,
    oh: u32, ow: u32, kh: u32, kw: u32,
    pad: u32, has_fb: u32, has_mask: u32, x_off: u32,
    ld4: u32, unshared: u32, _p1: u32, _p2: u32,
    vth: f32, leak: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> u: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;
@group(0) @binding(3) var<storage, read> in_bits: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_bits: array<u32>;
@group(0) @binding(5) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> x: array<f32>;
@group(0) @binding(7) var<storage, read> mask: array<f32>;
