// Backward of w_eff = c · w / σ̂ (c = clamp(g, −1, 1), σ̂ = uᵀ w v with u, v constants), given
// G = ∂L/∂w_eff and dot = ⟨G, w⟩:
//   ∂L/∂w = (c/σ̂) · G − (c · dot/σ̂²) · u vᵀ,   ∂L/∂g = dot/σ̂ where |g| ≤ 1 (else 0).
// w is [rows, cols] with the first tensor dimension as rows.
#import common

struct Params { n: u32, cols: u32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gw: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;
@group(0) @binding(5) var<storage, read> scalars: array<f32>;   // [σ̂, dot]
@group(0) @binding(6) var<storage, read_write> dw: array<f32>;
@group(0) @binding(7) var<storage, read_write> dg: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let sigma = scalars[0];
    let dot = scalars[1];
    let c = clamp(g[0], -1.0, 1.0);
    dw[i] = c / sigma * gw[i] - c * dot / (sigma * sigma) * u[i / p.cols] * v[i % p.cols];
    if (i == 0u) {
        dg[0] = select(0.0, dot / sigma, abs(g[0]) <= 1.0);
    }
}
