// Variant of gemm.wgsl for adapters with subgroup operations (wgpu `Features::SUBGROUP`; see
// crates/fsnn/src/variants.rs): the same parameters, grid and 8×8 register block per invocation,
// but the 8 invocations of one workgroup row, which need the same 8 rows of A, load one A element
// each per k and pass them round with `subgroupShuffle` (8 loads of A per k become 1).
// This needs those 8 invocations to be 8 aligned lanes of one subgroup, which holds on every
// driver we know of when the subgroup size is a multiple of 8; the kernel checks it and otherwise
// loads A as gemm.wgsl does. No invocation returns early: every lane must reach the shuffles.
// (No `enable subgroups;`: naga 30 rejects the directive and accepts the builtins without it.)

struct Params {
    m: u32, n: u32, k: u32, a_off: u32,
    a_sm: u32, a_sk: u32, b_off: u32, b_sk: u32,
    b_sn: u32, c_off: u32, ldc: u32, _pad: u32,
    alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// One-dimensional workgroup (subgroup builtins require it), laid out as gemm.wgsl's 8×8.
@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
    let gy = wid.y * 8u + t / 8u;
    let m0 = gy * 8u;
    let n0 = (wid.x * 8u + t % 8u) * 8u;
    var ra: array<u32, 8>;
    var cb: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        ra[i] = p.a_off + min(m0 + i, p.m - 1u) * p.a_sm;
        cb[i] = p.b_off + min(n0 + i, p.n - 1u) * p.b_sn;
    }
    let base = lane & ~7u;
    let own = ra[lane & 7u];
    // Lanes base..base+7 share this workgroup row (hence the same A rows)?
    let shared_rows = sg_size % 8u == 0u && subgroupAll(subgroupShuffle(gy, base) == gy);
    var acc: array<vec4<f32>, 16>;
    if (shared_rows) {
        for (var kk = 0u; kk < p.k; kk++) {
            let kb = kk * p.b_sk;
            let b0 = vec4<f32>(b[cb[0] + kb], b[cb[1] + kb], b[cb[2] + kb], b[cb[3] + kb]);
            let b1 = vec4<f32>(b[cb[4] + kb], b[cb[5] + kb], b[cb[6] + kb], b[cb[7] + kb]);
            let mine = a[own + kk * p.a_sk];
            for (var i = 0u; i < 8u; i++) {
                let av = subgroupShuffle(mine, base + i);
                acc[2u * i] = fma(vec4<f32>(av), b0, acc[2u * i]);
                acc[2u * i + 1u] = fma(vec4<f32>(av), b1, acc[2u * i + 1u]);
            }
        }
    } else {
        for (var kk = 0u; kk < p.k; kk++) {
            let ka = kk * p.a_sk;
            let kb = kk * p.b_sk;
            let b0 = vec4<f32>(b[cb[0] + kb], b[cb[1] + kb], b[cb[2] + kb], b[cb[3] + kb]);
            let b1 = vec4<f32>(b[cb[4] + kb], b[cb[5] + kb], b[cb[6] + kb], b[cb[7] + kb]);
            for (var i = 0u; i < 8u; i++) {
                let av = a[ra[i] + ka];
                acc[2u * i] = fma(vec4<f32>(av), b0, acc[2u * i]);
                acc[2u * i + 1u] = fma(vec4<f32>(av), b1, acc[2u * i + 1u]);
            }
        }
    }
    if (m0 >= p.m || n0 >= p.n) {
        return;
    }
    for (var i = 0u; i < 8u; i++) {
        let m = m0 + i;
        if (m >= p.m) {
            break;
        }
        for (var j = 0u; j < 8u; j++) {
            let n = n0 + j;
            if (n < p.n) {
                let idx = p.c_off + m * p.ldc + n;
                var v = p.alpha * acc[2u * i + j / 4u][j % 4u];
                if (p.beta != 0.0) {
                    v = v + p.beta * c[idx];
                }
                c[idx] = v;
            }
        }
    }
}
