// Parameters, bindings and helpers of solver_combine.wgsl and solver_combine_coop.wgsl.
struct Params {
    batch: u32, dim: u32, slots: u32, mode: u32,
    count: u32, slot: u32, store: u32, h_off: u32,
    v_off: u32, s_base: u32, st_off: u32, gam_off: u32,
    alpha: f32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> hist: array<f32>;
@group(0) @binding(2) var<storage, read> jx: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read> gl: array<f32>;
@group(0) @binding(5) var<storage, read_write> gold: array<f32>;
@group(0) @binding(6) var<storage, read_write> upd: array<f32>;
@group(0) @binding(7) var<storage, read_write> best: array<f32>;
@group(0) @binding(8) var<storage, read> scal: array<f32>;

const FIXED_POINT: u32 = 0u;
const BROYDEN: u32 = 1u;

fn finite_or_zero(v: f32) -> f32 {
    // NaN fails every comparison; ±∞ exceeds the largest finite f32.
    return select(0.0, v, abs(v) <= 0x1.fffffep+127f);
}
