// Variant of gemm.wgsl for GPUs with fast workgroup memory (see crates/fsnn/src/variants.rs):
// C = alpha · op(A) · op(B) + beta · C with the same parameters and strides. A workgroup of
// 16×16 invocations computes a 64×64 tile of C, each invocation a 4×4 block; the reduction runs in
// steps of 16 through workgroup memory, where every invocation stages one vec4 of A and one of B
// per step. Each staged vec4 holds 4 consecutive rows (of A) or columns (of B) at one k; which
// invocation loads which vec4 depends on the operand's layout, so that neighbouring invocations
// read neighbouring addresses whichever operand is transposed.
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

#import tile

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let m0 = wid.y * TILE;
    let n0 = wid.x * TILE;
    // Load roles: (k within the step, vec4 index within the tile). Contiguous along m (A) or n (B)
    // when that is the unit-stride direction, else contiguous along k.
    var ka = t / 16u;
    var va = t % 16u;
    if (p.a_sk == 1u) {
        ka = t % 16u;
        va = t / 16u;
    }
    var kb = t / 16u;
    var vb = t % 16u;
    if (p.b_sn != 1u) {
        kb = t % 16u;
        vb = t / 16u;
    }
    // Row (A) and column (B) offsets of the four elements this invocation stages, clamped to valid
    // addresses (the extra rows and columns are dropped at the store).
    var ar: array<u32, 4>;
    var bc: array<u32, 4>;
    for (var j = 0u; j < 4u; j++) {
        ar[j] = p.a_off + min(m0 + va * 4u + j, p.m - 1u) * p.a_sm;
        bc[j] = p.b_off + min(n0 + vb * 4u + j, p.n - 1u) * p.b_sn;
    }
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += KSTEP) {
        let kla = k0 + ka;
        let ok_a = kla < p.k;
        let oa = min(kla, p.k - 1u) * p.a_sk;
        let va4 = vec4<f32>(a[ar[0] + oa], a[ar[1] + oa], a[ar[2] + oa], a[ar[3] + oa]);
        sa[ka * 16u + va] = select(vec4<f32>(0.0), va4, ok_a);
        let klb = k0 + kb;
        let ob = min(klb, p.k - 1u) * p.b_sk;
        let vb4 = vec4<f32>(b[bc[0] + ob], b[bc[1] + ob], b[bc[2] + ob], b[bc[3] + ob]);
        sb[kb * 16u + vb] = select(vec4<f32>(0.0), vb4, klb < p.k);
        workgroupBarrier();
        tile_step(&acc, lid);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y * 4u + i;
        if (m >= p.m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x * 4u + j;
            if (n < p.n) {
                let idx = p.c_off + m * p.ldc + n;
                var v = p.alpha * acc[i][j];
                if (p.beta != 0.0) {
                    v = v + p.beta * c[idx];
                }
                c[idx] = v;
            }
        }
    }
}
