// Variant of gemm.wgsl for CPU drivers (lavapipe), where each storage-buffer load an invocation
// makes costs a scalar, bounds-checked load per SIMD lane (about ten cycles), while arithmetic
// runs on all lanes at once: a kernel there is bound by its loads, not its FMAs. So the 8
// invocations of a workgroup (one subgroup on lavapipe) load each row of A once between them, 8
// consecutive k each, and pass the values round with constant-lane shuffles (register moves),
// instead of each loading all of them: per k an invocation loads R/8 values of A and C of B for
// R·C FMAs (gemm.wgsl: 8 and 8 for 64). Same parameters as gemm.wgsl; a workgroup covers R rows
// × 8·C columns of C. Where the subgroup does not hold the 8 invocations as lanes 0..7 (or is
// smaller than 8), or `unshared` is set (tests cover that path with it), every invocation loads
// its own A values instead: slower, same result.
struct Params {
    m: u32, n: u32, k: u32, a_off: u32,
    a_sm: u32, a_sk: u32, b_off: u32, b_sk: u32,
    b_sn: u32, c_off: u32, ldc: u32, unshared: u32,
    alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const R: u32 = 16u;  // rows of C per workgroup (the statements below are written out for each)
const C: u32 = 4u;   // columns of C per invocation (one vec4 of accumulators per row)


fn store_row(m: u32, nb: u32, v: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    for (var j = 0u; j < C; j++) {
        let n = nb + 8u * j;
        if (n < p.n) {
            let idx = p.c_off + m * p.ldc + n;
            var r = p.alpha * v[j];
            if (p.beta != 0.0) {
                r = r + p.beta * c[idx];
            }
            c[idx] = r;
        }
    }
}

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
    let m0 = wid.y * R;
    let nb = wid.x * 8u * C + t;   // this invocation's columns: nb, nb + 8, nb + 16, nb + 24
    let cb0 = p.b_off + min(nb, p.n - 1u) * p.b_sn;
    let cb1 = p.b_off + min(nb + 8u, p.n - 1u) * p.b_sn;
    let cb2 = p.b_off + min(nb + 16u, p.n - 1u) * p.b_sn;
    let cb3 = p.b_off + min(nb + 24u, p.n - 1u) * p.b_sn;
    // Rows past the end of A read its last row; their results are dropped at the store.
    let ra0 = p.a_off + min(m0 + 0u, p.m - 1u) * p.a_sm;
    let ra1 = p.a_off + min(m0 + 1u, p.m - 1u) * p.a_sm;
    let ra2 = p.a_off + min(m0 + 2u, p.m - 1u) * p.a_sm;
    let ra3 = p.a_off + min(m0 + 3u, p.m - 1u) * p.a_sm;
    let ra4 = p.a_off + min(m0 + 4u, p.m - 1u) * p.a_sm;
    let ra5 = p.a_off + min(m0 + 5u, p.m - 1u) * p.a_sm;
    let ra6 = p.a_off + min(m0 + 6u, p.m - 1u) * p.a_sm;
    let ra7 = p.a_off + min(m0 + 7u, p.m - 1u) * p.a_sm;
    let ra8 = p.a_off + min(m0 + 8u, p.m - 1u) * p.a_sm;
    let ra9 = p.a_off + min(m0 + 9u, p.m - 1u) * p.a_sm;
    let ra10 = p.a_off + min(m0 + 10u, p.m - 1u) * p.a_sm;
    let ra11 = p.a_off + min(m0 + 11u, p.m - 1u) * p.a_sm;
    let ra12 = p.a_off + min(m0 + 12u, p.m - 1u) * p.a_sm;
    let ra13 = p.a_off + min(m0 + 13u, p.m - 1u) * p.a_sm;
    let ra14 = p.a_off + min(m0 + 14u, p.m - 1u) * p.a_sm;
    let ra15 = p.a_off + min(m0 + 15u, p.m - 1u) * p.a_sm;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    var acc8 = vec4<f32>(0.0);
    var acc9 = vec4<f32>(0.0);
    var acc10 = vec4<f32>(0.0);
    var acc11 = vec4<f32>(0.0);
    var acc12 = vec4<f32>(0.0);
    var acc13 = vec4<f32>(0.0);
    var acc14 = vec4<f32>(0.0);
    var acc15 = vec4<f32>(0.0);
    // Written out per row, not as arrays indexed in loops: lavapipe keeps such arrays in memory
    // and pays a load and a store per access.
    let coop = p.unshared == 0u && sg_size >= 8u && subgroupAll(lane == t);
    var kfull = 0u;
    if (coop) {
        kfull = p.k / 8u * 8u;
    }
    for (var k0 = 0u; k0 < kfull; k0 += 8u) {
        let ka = (k0 + t) * p.a_sk;
        let a0 = a[ra0 + ka];
        let a1 = a[ra1 + ka];
        let a2 = a[ra2 + ka];
        let a3 = a[ra3 + ka];
        let a4 = a[ra4 + ka];
        let a5 = a[ra5 + ka];
        let a6 = a[ra6 + ka];
        let a7 = a[ra7 + ka];
        let a8 = a[ra8 + ka];
        let a9 = a[ra9 + ka];
        let a10 = a[ra10 + ka];
        let a11 = a[ra11 + ka];
        let a12 = a[ra12 + ka];
        let a13 = a[ra13 + ka];
        let a14 = a[ra14 + ka];
        let a15 = a[ra15 + ka];
        for (var kk = 0u; kk < 8u; kk++) {
            let kb = (k0 + kk) * p.b_sk;
            let bv = vec4<f32>(b[cb0 + kb], b[cb1 + kb], b[cb2 + kb], b[cb3 + kb]);
            acc0 = fma(vec4<f32>(subgroupShuffle(a0, kk)), bv, acc0);
            acc1 = fma(vec4<f32>(subgroupShuffle(a1, kk)), bv, acc1);
            acc2 = fma(vec4<f32>(subgroupShuffle(a2, kk)), bv, acc2);
            acc3 = fma(vec4<f32>(subgroupShuffle(a3, kk)), bv, acc3);
            acc4 = fma(vec4<f32>(subgroupShuffle(a4, kk)), bv, acc4);
            acc5 = fma(vec4<f32>(subgroupShuffle(a5, kk)), bv, acc5);
            acc6 = fma(vec4<f32>(subgroupShuffle(a6, kk)), bv, acc6);
            acc7 = fma(vec4<f32>(subgroupShuffle(a7, kk)), bv, acc7);
            acc8 = fma(vec4<f32>(subgroupShuffle(a8, kk)), bv, acc8);
            acc9 = fma(vec4<f32>(subgroupShuffle(a9, kk)), bv, acc9);
            acc10 = fma(vec4<f32>(subgroupShuffle(a10, kk)), bv, acc10);
            acc11 = fma(vec4<f32>(subgroupShuffle(a11, kk)), bv, acc11);
            acc12 = fma(vec4<f32>(subgroupShuffle(a12, kk)), bv, acc12);
            acc13 = fma(vec4<f32>(subgroupShuffle(a13, kk)), bv, acc13);
            acc14 = fma(vec4<f32>(subgroupShuffle(a14, kk)), bv, acc14);
            acc15 = fma(vec4<f32>(subgroupShuffle(a15, kk)), bv, acc15);
        }
    }
    // The last k % 8 (all of k where the lanes cannot share): every invocation loads its own A.
    for (var kk = kfull; kk < p.k; kk++) {
        let ka = kk * p.a_sk;
        let kb = kk * p.b_sk;
        let bv = vec4<f32>(b[cb0 + kb], b[cb1 + kb], b[cb2 + kb], b[cb3 + kb]);
        acc0 = fma(vec4<f32>(a[ra0 + ka]), bv, acc0);
        acc1 = fma(vec4<f32>(a[ra1 + ka]), bv, acc1);
        acc2 = fma(vec4<f32>(a[ra2 + ka]), bv, acc2);
        acc3 = fma(vec4<f32>(a[ra3 + ka]), bv, acc3);
        acc4 = fma(vec4<f32>(a[ra4 + ka]), bv, acc4);
        acc5 = fma(vec4<f32>(a[ra5 + ka]), bv, acc5);
        acc6 = fma(vec4<f32>(a[ra6 + ka]), bv, acc6);
        acc7 = fma(vec4<f32>(a[ra7 + ka]), bv, acc7);
        acc8 = fma(vec4<f32>(a[ra8 + ka]), bv, acc8);
        acc9 = fma(vec4<f32>(a[ra9 + ka]), bv, acc9);
        acc10 = fma(vec4<f32>(a[ra10 + ka]), bv, acc10);
        acc11 = fma(vec4<f32>(a[ra11 + ka]), bv, acc11);
        acc12 = fma(vec4<f32>(a[ra12 + ka]), bv, acc12);
        acc13 = fma(vec4<f32>(a[ra13 + ka]), bv, acc13);
        acc14 = fma(vec4<f32>(a[ra14 + ka]), bv, acc14);
        acc15 = fma(vec4<f32>(a[ra15 + ka]), bv, acc15);
    }
    store_row(m0 + 0u, nb, acc0);
    store_row(m0 + 1u, nb, acc1);
    store_row(m0 + 2u, nb, acc2);
    store_row(m0 + 3u, nb, acc3);
    store_row(m0 + 4u, nb, acc4);
    store_row(m0 + 5u, nb, acc5);
    store_row(m0 + 6u, nb, acc6);
    store_row(m0 + 7u, nb, acc7);
    store_row(m0 + 8u, nb, acc8);
    store_row(m0 + 9u, nb, acc9);
    store_row(m0 + 10u, nb, acc10);
    store_row(m0 + 11u, nb, acc11);
    store_row(m0 + 12u, nb, acc12);
    store_row(m0 + 13u, nb, acc13);
    store_row(m0 + 14u, nb, acc14);
    store_row(m0 + 15u, nb, acc15);
}
