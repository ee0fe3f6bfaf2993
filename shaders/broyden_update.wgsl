// Stores one Broyden rank-one update in slot `slot` of each sample's ring:
// U[b, slot] = num[b] / den[b] and Vᵀ[b, slot] = vt[b], with NaN or ±∞ replaced by 0 (a zero
// denominator means that sample has already converged; its update must vanish, not poison the
// history).
#import common

struct Params { batch: u32, slots: u32, slot: u32, dim: u32, h_off: u32, x_off: u32, d_off: u32, }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> num: array<f32>;
@group(0) @binding(2) var<storage, read> vt: array<f32>;
@group(0) @binding(3) var<storage, read> den: array<f32>;
@group(0) @binding(4) var<storage, read_write> us: array<f32>;
@group(0) @binding(5) var<storage, read_write> vts: array<f32>;

fn finite_or_zero(v: f32) -> f32 {
    // NaN fails every comparison; ±∞ exceeds the largest finite f32.
    return select(0.0, v, abs(v) <= 3.4028235e38);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = flat_id(wid, nwg, lid);
    if (k >= p.batch * p.dim) {
        return;
    }
    let b = k / p.dim;
    let i = k % p.dim;
    let dst = p.h_off + (b * p.slots + p.slot) * p.dim + i;
    us[dst] = finite_or_zero(num[p.x_off + k] / den[p.d_off + b]);
    vts[dst] = finite_or_zero(vt[p.x_off + k]);
}
