// Parameters and bindings of solver_dots.wgsl and solver_dots_coop.wgsl.
struct Params {
    batch: u32, dim: u32, slots: u32, count: u32,
    mode: u32, slot: u32, h_off: u32, v_off: u32,
    s_base: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> hist: array<f32>;
@group(0) @binding(2) var<storage, read> jx: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> gl: array<f32>;
@group(0) @binding(5) var<storage, read> gold: array<f32>;
@group(0) @binding(6) var<storage, read> upd: array<f32>;
@group(0) @binding(7) var<storage, read_write> scal: array<f32>;

const BROYDEN: u32 = 1u;
