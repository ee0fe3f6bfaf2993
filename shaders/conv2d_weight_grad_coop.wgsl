// Variant of conv2d_weight_grad.wgsl for CPU drivers (lavapipe), where every storage-buffer
// load an invocation makes costs a scalar, bounds-checked load per SIMD lane while arithmetic runs
// on all lanes at once (see gemm_coop.wgsl). Rows are output channels, columns (c, ky, kx), the
// reduction runs over (batch, oy, ox) as one index: the 8 invocations of a workgroup (one subgroup
// on lavapipe) load 8 consecutive entries of each row of dy once between them (each invocation
// carrying its own (batch, pixel) position) and pass them round with constant-lane shuffles; each
// invocation gathers its own 8 columns' input values. A workgroup covers 32 output channels × 64
// columns. Where the subgroup cannot share (smaller than 8, lanes not in invocation order) or
// `unshared` is set (tests cover that path with it), every invocation loads its own dy instead:
// slower, same result. Same parameters and bindings as conv2d_weight_grad.wgsl; with dy and x
// swapped in role it is also the weight gradient of a transposed convolution.
struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, stride: u32, pad: u32, unshared: u32,
    alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;

const R: u32 = 32u;  // output channels per workgroup (the statements below are written out for each)
const C: u32 = 8u;  // (c, ky, kx) columns per invocation, 8 apart

fn store_row(o: u32, nb: u32, v: vec4<f32>) {
    let cols = p.cin * p.kh * p.kw;
    if (o >= p.cout) {
        return;
    }
    for (var i = 0u; i < 4u; i++) {
        let n = nb + 8u * i;
        if (n < cols) {
            let idx = o * cols + n;
            var r = p.alpha * v[i];
            if (p.beta != 0.0) {
                r = r + p.beta * dw[idx];
            }
            dw[idx] = r;
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
    let khw = p.kh * p.kw;
    let cols = p.cin * khw;
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let kred = p.batch * ohw;
    let o0 = wid.y * R;
    let nb = wid.x * 8u * C + t;
    // Columns past the end read the last one; their results are dropped at the store.
    let n0 = min(nb + 0u, cols - 1u);
    let xo0 = n0 / khw * hw;
    let kyp0 = i32(n0 % khw / p.kw) - i32(p.pad);
    let kxp0 = i32(n0 % khw % p.kw) - i32(p.pad);
    let n1 = min(nb + 8u, cols - 1u);
    let xo1 = n1 / khw * hw;
    let kyp1 = i32(n1 % khw / p.kw) - i32(p.pad);
    let kxp1 = i32(n1 % khw % p.kw) - i32(p.pad);
    let n2 = min(nb + 16u, cols - 1u);
    let xo2 = n2 / khw * hw;
    let kyp2 = i32(n2 % khw / p.kw) - i32(p.pad);
    let kxp2 = i32(n2 % khw % p.kw) - i32(p.pad);
    let n3 = min(nb + 24u, cols - 1u);
    let xo3 = n3 / khw * hw;
    let kyp3 = i32(n3 % khw / p.kw) - i32(p.pad);
    let kxp3 = i32(n3 % khw % p.kw) - i32(p.pad);
    let n4 = min(nb + 32u, cols - 1u);
    let xo4 = n4 / khw * hw;
    let kyp4 = i32(n4 % khw / p.kw) - i32(p.pad);
    let kxp4 = i32(n4 % khw % p.kw) - i32(p.pad);
    let n5 = min(nb + 40u, cols - 1u);
    let xo5 = n5 / khw * hw;
    let kyp5 = i32(n5 % khw / p.kw) - i32(p.pad);
    let kxp5 = i32(n5 % khw % p.kw) - i32(p.pad);
    let n6 = min(nb + 48u, cols - 1u);
    let xo6 = n6 / khw * hw;
    let kyp6 = i32(n6 % khw / p.kw) - i32(p.pad);
    let kxp6 = i32(n6 % khw % p.kw) - i32(p.pad);
    let n7 = min(nb + 56u, cols - 1u);
    let xo7 = n7 / khw * hw;
    let kyp7 = i32(n7 % khw / p.kw) - i32(p.pad);
    let kxp7 = i32(n7 % khw % p.kw) - i32(p.pad);
    let ro0 = min(o0 + 0u, p.cout - 1u) * ohw;
    let ro1 = min(o0 + 1u, p.cout - 1u) * ohw;
    let ro2 = min(o0 + 2u, p.cout - 1u) * ohw;
    let ro3 = min(o0 + 3u, p.cout - 1u) * ohw;
    let ro4 = min(o0 + 4u, p.cout - 1u) * ohw;
    let ro5 = min(o0 + 5u, p.cout - 1u) * ohw;
    let ro6 = min(o0 + 6u, p.cout - 1u) * ohw;
    let ro7 = min(o0 + 7u, p.cout - 1u) * ohw;
    let ro8 = min(o0 + 8u, p.cout - 1u) * ohw;
    let ro9 = min(o0 + 9u, p.cout - 1u) * ohw;
    let ro10 = min(o0 + 10u, p.cout - 1u) * ohw;
    let ro11 = min(o0 + 11u, p.cout - 1u) * ohw;
    let ro12 = min(o0 + 12u, p.cout - 1u) * ohw;
    let ro13 = min(o0 + 13u, p.cout - 1u) * ohw;
    let ro14 = min(o0 + 14u, p.cout - 1u) * ohw;
    let ro15 = min(o0 + 15u, p.cout - 1u) * ohw;
    let ro16 = min(o0 + 16u, p.cout - 1u) * ohw;
    let ro17 = min(o0 + 17u, p.cout - 1u) * ohw;
    let ro18 = min(o0 + 18u, p.cout - 1u) * ohw;
    let ro19 = min(o0 + 19u, p.cout - 1u) * ohw;
    let ro20 = min(o0 + 20u, p.cout - 1u) * ohw;
    let ro21 = min(o0 + 21u, p.cout - 1u) * ohw;
    let ro22 = min(o0 + 22u, p.cout - 1u) * ohw;
    let ro23 = min(o0 + 23u, p.cout - 1u) * ohw;
    let ro24 = min(o0 + 24u, p.cout - 1u) * ohw;
    let ro25 = min(o0 + 25u, p.cout - 1u) * ohw;
    let ro26 = min(o0 + 26u, p.cout - 1u) * ohw;
    let ro27 = min(o0 + 27u, p.cout - 1u) * ohw;
    let ro28 = min(o0 + 28u, p.cout - 1u) * ohw;
    let ro29 = min(o0 + 29u, p.cout - 1u) * ohw;
    let ro30 = min(o0 + 30u, p.cout - 1u) * ohw;
    let ro31 = min(o0 + 31u, p.cout - 1u) * ohw;
    var acc0_0 = vec4<f32>(0.0);
    var acc0_1 = vec4<f32>(0.0);
    var acc1_0 = vec4<f32>(0.0);
    var acc1_1 = vec4<f32>(0.0);
    var acc2_0 = vec4<f32>(0.0);
    var acc2_1 = vec4<f32>(0.0);
    var acc3_0 = vec4<f32>(0.0);
    var acc3_1 = vec4<f32>(0.0);
    var acc4_0 = vec4<f32>(0.0);
    var acc4_1 = vec4<f32>(0.0);
    var acc5_0 = vec4<f32>(0.0);
    var acc5_1 = vec4<f32>(0.0);
    var acc6_0 = vec4<f32>(0.0);
    var acc6_1 = vec4<f32>(0.0);
    var acc7_0 = vec4<f32>(0.0);
    var acc7_1 = vec4<f32>(0.0);
    var acc8_0 = vec4<f32>(0.0);
    var acc8_1 = vec4<f32>(0.0);
    var acc9_0 = vec4<f32>(0.0);
    var acc9_1 = vec4<f32>(0.0);
    var acc10_0 = vec4<f32>(0.0);
    var acc10_1 = vec4<f32>(0.0);
    var acc11_0 = vec4<f32>(0.0);
    var acc11_1 = vec4<f32>(0.0);
    var acc12_0 = vec4<f32>(0.0);
    var acc12_1 = vec4<f32>(0.0);
    var acc13_0 = vec4<f32>(0.0);
    var acc13_1 = vec4<f32>(0.0);
    var acc14_0 = vec4<f32>(0.0);
    var acc14_1 = vec4<f32>(0.0);
    var acc15_0 = vec4<f32>(0.0);
    var acc15_1 = vec4<f32>(0.0);
    var acc16_0 = vec4<f32>(0.0);
    var acc16_1 = vec4<f32>(0.0);
    var acc17_0 = vec4<f32>(0.0);
    var acc17_1 = vec4<f32>(0.0);
    var acc18_0 = vec4<f32>(0.0);
    var acc18_1 = vec4<f32>(0.0);
    var acc19_0 = vec4<f32>(0.0);
    var acc19_1 = vec4<f32>(0.0);
    var acc20_0 = vec4<f32>(0.0);
    var acc20_1 = vec4<f32>(0.0);
    var acc21_0 = vec4<f32>(0.0);
    var acc21_1 = vec4<f32>(0.0);
    var acc22_0 = vec4<f32>(0.0);
    var acc22_1 = vec4<f32>(0.0);
    var acc23_0 = vec4<f32>(0.0);
    var acc23_1 = vec4<f32>(0.0);
    var acc24_0 = vec4<f32>(0.0);
    var acc24_1 = vec4<f32>(0.0);
    var acc25_0 = vec4<f32>(0.0);
    var acc25_1 = vec4<f32>(0.0);
    var acc26_0 = vec4<f32>(0.0);
    var acc26_1 = vec4<f32>(0.0);
    var acc27_0 = vec4<f32>(0.0);
    var acc27_1 = vec4<f32>(0.0);
    var acc28_0 = vec4<f32>(0.0);
    var acc28_1 = vec4<f32>(0.0);
    var acc29_0 = vec4<f32>(0.0);
    var acc29_1 = vec4<f32>(0.0);
    var acc30_0 = vec4<f32>(0.0);
    var acc30_1 = vec4<f32>(0.0);
    var acc31_0 = vec4<f32>(0.0);
    var acc31_1 = vec4<f32>(0.0);
    let coop = p.unshared == 0u && sg_size >= 8u && subgroupAll(lane == t);
    var kfull = 0u;
    if (coop) {
        kfull = kred / 8u * 8u;
    }
    // From (b, ohw − 1) to (b + 1, 0), dy's offset moves by this much more than 1.
    let bstep = (p.cout - 1u) * ohw;
    // This invocation's share of dy: entry k0 + t, at pixel lq of its batch item, offset lyl (row 0).
    var lq = t % ohw;
    var lyl = t / ohw * p.cout * ohw + lq;
    // The reduction entry being accumulated, walked by all invocations together: batch item at
    // x offset xb and dy offset yl (row 0), pixel (oy, ox).
    var xb = 0u;
    var yl = 0u;
    var oy = 0u;
    var ox = 0u;
    for (var k0 = 0u; k0 < kfull; k0 += 8u) {
        let a0 = dy[ro0 + lyl];
        let a1 = dy[ro1 + lyl];
        let a2 = dy[ro2 + lyl];
        let a3 = dy[ro3 + lyl];
        let a4 = dy[ro4 + lyl];
        let a5 = dy[ro5 + lyl];
        let a6 = dy[ro6 + lyl];
        let a7 = dy[ro7 + lyl];
        let a8 = dy[ro8 + lyl];
        let a9 = dy[ro9 + lyl];
        let a10 = dy[ro10 + lyl];
        let a11 = dy[ro11 + lyl];
        let a12 = dy[ro12 + lyl];
        let a13 = dy[ro13 + lyl];
        let a14 = dy[ro14 + lyl];
        let a15 = dy[ro15 + lyl];
        let a16 = dy[ro16 + lyl];
        let a17 = dy[ro17 + lyl];
        let a18 = dy[ro18 + lyl];
        let a19 = dy[ro19 + lyl];
        let a20 = dy[ro20 + lyl];
        let a21 = dy[ro21 + lyl];
        let a22 = dy[ro22 + lyl];
        let a23 = dy[ro23 + lyl];
        let a24 = dy[ro24 + lyl];
        let a25 = dy[ro25 + lyl];
        let a26 = dy[ro26 + lyl];
        let a27 = dy[ro27 + lyl];
        let a28 = dy[ro28 + lyl];
        let a29 = dy[ro29 + lyl];
        let a30 = dy[ro30 + lyl];
        let a31 = dy[ro31 + lyl];
        lq += 8u;
        lyl += 8u;
        while (lq >= ohw) {
            lq -= ohw;
            lyl += bstep;
        }
        for (var kk = 0u; kk < 8u; kk++) {
            let iys = i32(oy * p.stride);
            let ixs = i32(ox * p.stride);
            let yy0 = iys + kyp0;
            let xx0 = ixs + kxp0;
            let ok0 = (yy0 >= 0) & (yy0 < i32(p.h)) & (xx0 >= 0) & (xx0 < i32(p.w));
            let v0 = select(0.0, x[select(0u, xb + xo0 + u32(yy0) * p.w + u32(xx0), ok0)], ok0);
            let yy1 = iys + kyp1;
            let xx1 = ixs + kxp1;
            let ok1 = (yy1 >= 0) & (yy1 < i32(p.h)) & (xx1 >= 0) & (xx1 < i32(p.w));
            let v1 = select(0.0, x[select(0u, xb + xo1 + u32(yy1) * p.w + u32(xx1), ok1)], ok1);
            let yy2 = iys + kyp2;
            let xx2 = ixs + kxp2;
            let ok2 = (yy2 >= 0) & (yy2 < i32(p.h)) & (xx2 >= 0) & (xx2 < i32(p.w));
            let v2 = select(0.0, x[select(0u, xb + xo2 + u32(yy2) * p.w + u32(xx2), ok2)], ok2);
            let yy3 = iys + kyp3;
            let xx3 = ixs + kxp3;
            let ok3 = (yy3 >= 0) & (yy3 < i32(p.h)) & (xx3 >= 0) & (xx3 < i32(p.w));
            let v3 = select(0.0, x[select(0u, xb + xo3 + u32(yy3) * p.w + u32(xx3), ok3)], ok3);
            let yy4 = iys + kyp4;
            let xx4 = ixs + kxp4;
            let ok4 = (yy4 >= 0) & (yy4 < i32(p.h)) & (xx4 >= 0) & (xx4 < i32(p.w));
            let v4 = select(0.0, x[select(0u, xb + xo4 + u32(yy4) * p.w + u32(xx4), ok4)], ok4);
            let yy5 = iys + kyp5;
            let xx5 = ixs + kxp5;
            let ok5 = (yy5 >= 0) & (yy5 < i32(p.h)) & (xx5 >= 0) & (xx5 < i32(p.w));
            let v5 = select(0.0, x[select(0u, xb + xo5 + u32(yy5) * p.w + u32(xx5), ok5)], ok5);
            let yy6 = iys + kyp6;
            let xx6 = ixs + kxp6;
            let ok6 = (yy6 >= 0) & (yy6 < i32(p.h)) & (xx6 >= 0) & (xx6 < i32(p.w));
            let v6 = select(0.0, x[select(0u, xb + xo6 + u32(yy6) * p.w + u32(xx6), ok6)], ok6);
            let yy7 = iys + kyp7;
            let xx7 = ixs + kxp7;
            let ok7 = (yy7 >= 0) & (yy7 < i32(p.h)) & (xx7 >= 0) & (xx7 < i32(p.w));
            let v7 = select(0.0, x[select(0u, xb + xo7 + u32(yy7) * p.w + u32(xx7), ok7)], ok7);
            let bv0 = vec4<f32>(v0, v1, v2, v3);
            let bv1 = vec4<f32>(v4, v5, v6, v7);
            let s0 = vec4<f32>(subgroupShuffle(a0, kk));
            acc0_0 = fma(s0, bv0, acc0_0);
            acc0_1 = fma(s0, bv1, acc0_1);
            let s1 = vec4<f32>(subgroupShuffle(a1, kk));
            acc1_0 = fma(s1, bv0, acc1_0);
            acc1_1 = fma(s1, bv1, acc1_1);
            let s2 = vec4<f32>(subgroupShuffle(a2, kk));
            acc2_0 = fma(s2, bv0, acc2_0);
            acc2_1 = fma(s2, bv1, acc2_1);
            let s3 = vec4<f32>(subgroupShuffle(a3, kk));
            acc3_0 = fma(s3, bv0, acc3_0);
            acc3_1 = fma(s3, bv1, acc3_1);
            let s4 = vec4<f32>(subgroupShuffle(a4, kk));
            acc4_0 = fma(s4, bv0, acc4_0);
            acc4_1 = fma(s4, bv1, acc4_1);
            let s5 = vec4<f32>(subgroupShuffle(a5, kk));
            acc5_0 = fma(s5, bv0, acc5_0);
            acc5_1 = fma(s5, bv1, acc5_1);
            let s6 = vec4<f32>(subgroupShuffle(a6, kk));
            acc6_0 = fma(s6, bv0, acc6_0);
            acc6_1 = fma(s6, bv1, acc6_1);
            let s7 = vec4<f32>(subgroupShuffle(a7, kk));
            acc7_0 = fma(s7, bv0, acc7_0);
            acc7_1 = fma(s7, bv1, acc7_1);
            let s8 = vec4<f32>(subgroupShuffle(a8, kk));
            acc8_0 = fma(s8, bv0, acc8_0);
            acc8_1 = fma(s8, bv1, acc8_1);
            let s9 = vec4<f32>(subgroupShuffle(a9, kk));
            acc9_0 = fma(s9, bv0, acc9_0);
            acc9_1 = fma(s9, bv1, acc9_1);
            let s10 = vec4<f32>(subgroupShuffle(a10, kk));
            acc10_0 = fma(s10, bv0, acc10_0);
            acc10_1 = fma(s10, bv1, acc10_1);
            let s11 = vec4<f32>(subgroupShuffle(a11, kk));
            acc11_0 = fma(s11, bv0, acc11_0);
            acc11_1 = fma(s11, bv1, acc11_1);
            let s12 = vec4<f32>(subgroupShuffle(a12, kk));
            acc12_0 = fma(s12, bv0, acc12_0);
            acc12_1 = fma(s12, bv1, acc12_1);
            let s13 = vec4<f32>(subgroupShuffle(a13, kk));
            acc13_0 = fma(s13, bv0, acc13_0);
            acc13_1 = fma(s13, bv1, acc13_1);
            let s14 = vec4<f32>(subgroupShuffle(a14, kk));
            acc14_0 = fma(s14, bv0, acc14_0);
            acc14_1 = fma(s14, bv1, acc14_1);
            let s15 = vec4<f32>(subgroupShuffle(a15, kk));
            acc15_0 = fma(s15, bv0, acc15_0);
            acc15_1 = fma(s15, bv1, acc15_1);
            let s16 = vec4<f32>(subgroupShuffle(a16, kk));
            acc16_0 = fma(s16, bv0, acc16_0);
            acc16_1 = fma(s16, bv1, acc16_1);
            let s17 = vec4<f32>(subgroupShuffle(a17, kk));
            acc17_0 = fma(s17, bv0, acc17_0);
            acc17_1 = fma(s17, bv1, acc17_1);
            let s18 = vec4<f32>(subgroupShuffle(a18, kk));
            acc18_0 = fma(s18, bv0, acc18_0);
            acc18_1 = fma(s18, bv1, acc18_1);
            let s19 = vec4<f32>(subgroupShuffle(a19, kk));
            acc19_0 = fma(s19, bv0, acc19_0);
            acc19_1 = fma(s19, bv1, acc19_1);
            let s20 = vec4<f32>(subgroupShuffle(a20, kk));
            acc20_0 = fma(s20, bv0, acc20_0);
            acc20_1 = fma(s20, bv1, acc20_1);
            let s21 = vec4<f32>(subgroupShuffle(a21, kk));
            acc21_0 = fma(s21, bv0, acc21_0);
            acc21_1 = fma(s21, bv1, acc21_1);
            let s22 = vec4<f32>(subgroupShuffle(a22, kk));
            acc22_0 = fma(s22, bv0, acc22_0);
            acc22_1 = fma(s22, bv1, acc22_1);
            let s23 = vec4<f32>(subgroupShuffle(a23, kk));
            acc23_0 = fma(s23, bv0, acc23_0);
            acc23_1 = fma(s23, bv1, acc23_1);
            let s24 = vec4<f32>(subgroupShuffle(a24, kk));
            acc24_0 = fma(s24, bv0, acc24_0);
            acc24_1 = fma(s24, bv1, acc24_1);
            let s25 = vec4<f32>(subgroupShuffle(a25, kk));
            acc25_0 = fma(s25, bv0, acc25_0);
            acc25_1 = fma(s25, bv1, acc25_1);
            let s26 = vec4<f32>(subgroupShuffle(a26, kk));
            acc26_0 = fma(s26, bv0, acc26_0);
            acc26_1 = fma(s26, bv1, acc26_1);
            let s27 = vec4<f32>(subgroupShuffle(a27, kk));
            acc27_0 = fma(s27, bv0, acc27_0);
            acc27_1 = fma(s27, bv1, acc27_1);
            let s28 = vec4<f32>(subgroupShuffle(a28, kk));
            acc28_0 = fma(s28, bv0, acc28_0);
            acc28_1 = fma(s28, bv1, acc28_1);
            let s29 = vec4<f32>(subgroupShuffle(a29, kk));
            acc29_0 = fma(s29, bv0, acc29_0);
            acc29_1 = fma(s29, bv1, acc29_1);
            let s30 = vec4<f32>(subgroupShuffle(a30, kk));
            acc30_0 = fma(s30, bv0, acc30_0);
            acc30_1 = fma(s30, bv1, acc30_1);
            let s31 = vec4<f32>(subgroupShuffle(a31, kk));
            acc31_0 = fma(s31, bv0, acc31_0);
            acc31_1 = fma(s31, bv1, acc31_1);
            yl += 1u;
            ox += 1u;
            if (ox == p.ow) {
                ox = 0u;
                oy += 1u;
                if (oy == p.oh) {
                    oy = 0u;
                    xb += p.cin * hw;
                    yl += bstep;
                }
            }
        }
    }
    // The last kred % 8 (all of it where the lanes cannot share): every invocation loads its own dy.
    for (var k = kfull; k < kred; k++) {
        let iys = i32(oy * p.stride);
        let ixs = i32(ox * p.stride);
        let yy0 = iys + kyp0;
        let xx0 = ixs + kxp0;
        let ok0 = (yy0 >= 0) & (yy0 < i32(p.h)) & (xx0 >= 0) & (xx0 < i32(p.w));
        let v0 = select(0.0, x[select(0u, xb + xo0 + u32(yy0) * p.w + u32(xx0), ok0)], ok0);
        let yy1 = iys + kyp1;
        let xx1 = ixs + kxp1;
        let ok1 = (yy1 >= 0) & (yy1 < i32(p.h)) & (xx1 >= 0) & (xx1 < i32(p.w));
        let v1 = select(0.0, x[select(0u, xb + xo1 + u32(yy1) * p.w + u32(xx1), ok1)], ok1);
        let yy2 = iys + kyp2;
        let xx2 = ixs + kxp2;
        let ok2 = (yy2 >= 0) & (yy2 < i32(p.h)) & (xx2 >= 0) & (xx2 < i32(p.w));
        let v2 = select(0.0, x[select(0u, xb + xo2 + u32(yy2) * p.w + u32(xx2), ok2)], ok2);
        let yy3 = iys + kyp3;
        let xx3 = ixs + kxp3;
        let ok3 = (yy3 >= 0) & (yy3 < i32(p.h)) & (xx3 >= 0) & (xx3 < i32(p.w));
        let v3 = select(0.0, x[select(0u, xb + xo3 + u32(yy3) * p.w + u32(xx3), ok3)], ok3);
        let yy4 = iys + kyp4;
        let xx4 = ixs + kxp4;
        let ok4 = (yy4 >= 0) & (yy4 < i32(p.h)) & (xx4 >= 0) & (xx4 < i32(p.w));
        let v4 = select(0.0, x[select(0u, xb + xo4 + u32(yy4) * p.w + u32(xx4), ok4)], ok4);
        let yy5 = iys + kyp5;
        let xx5 = ixs + kxp5;
        let ok5 = (yy5 >= 0) & (yy5 < i32(p.h)) & (xx5 >= 0) & (xx5 < i32(p.w));
        let v5 = select(0.0, x[select(0u, xb + xo5 + u32(yy5) * p.w + u32(xx5), ok5)], ok5);
        let yy6 = iys + kyp6;
        let xx6 = ixs + kxp6;
        let ok6 = (yy6 >= 0) & (yy6 < i32(p.h)) & (xx6 >= 0) & (xx6 < i32(p.w));
        let v6 = select(0.0, x[select(0u, xb + xo6 + u32(yy6) * p.w + u32(xx6), ok6)], ok6);
        let yy7 = iys + kyp7;
        let xx7 = ixs + kxp7;
        let ok7 = (yy7 >= 0) & (yy7 < i32(p.h)) & (xx7 >= 0) & (xx7 < i32(p.w));
        let v7 = select(0.0, x[select(0u, xb + xo7 + u32(yy7) * p.w + u32(xx7), ok7)], ok7);
        let bv0 = vec4<f32>(v0, v1, v2, v3);
        let bv1 = vec4<f32>(v4, v5, v6, v7);
        let s0 = vec4<f32>(dy[ro0 + yl]);
        acc0_0 = fma(s0, bv0, acc0_0);
        acc0_1 = fma(s0, bv1, acc0_1);
        let s1 = vec4<f32>(dy[ro1 + yl]);
        acc1_0 = fma(s1, bv0, acc1_0);
        acc1_1 = fma(s1, bv1, acc1_1);
        let s2 = vec4<f32>(dy[ro2 + yl]);
        acc2_0 = fma(s2, bv0, acc2_0);
        acc2_1 = fma(s2, bv1, acc2_1);
        let s3 = vec4<f32>(dy[ro3 + yl]);
        acc3_0 = fma(s3, bv0, acc3_0);
        acc3_1 = fma(s3, bv1, acc3_1);
        let s4 = vec4<f32>(dy[ro4 + yl]);
        acc4_0 = fma(s4, bv0, acc4_0);
        acc4_1 = fma(s4, bv1, acc4_1);
        let s5 = vec4<f32>(dy[ro5 + yl]);
        acc5_0 = fma(s5, bv0, acc5_0);
        acc5_1 = fma(s5, bv1, acc5_1);
        let s6 = vec4<f32>(dy[ro6 + yl]);
        acc6_0 = fma(s6, bv0, acc6_0);
        acc6_1 = fma(s6, bv1, acc6_1);
        let s7 = vec4<f32>(dy[ro7 + yl]);
        acc7_0 = fma(s7, bv0, acc7_0);
        acc7_1 = fma(s7, bv1, acc7_1);
        let s8 = vec4<f32>(dy[ro8 + yl]);
        acc8_0 = fma(s8, bv0, acc8_0);
        acc8_1 = fma(s8, bv1, acc8_1);
        let s9 = vec4<f32>(dy[ro9 + yl]);
        acc9_0 = fma(s9, bv0, acc9_0);
        acc9_1 = fma(s9, bv1, acc9_1);
        let s10 = vec4<f32>(dy[ro10 + yl]);
        acc10_0 = fma(s10, bv0, acc10_0);
        acc10_1 = fma(s10, bv1, acc10_1);
        let s11 = vec4<f32>(dy[ro11 + yl]);
        acc11_0 = fma(s11, bv0, acc11_0);
        acc11_1 = fma(s11, bv1, acc11_1);
        let s12 = vec4<f32>(dy[ro12 + yl]);
        acc12_0 = fma(s12, bv0, acc12_0);
        acc12_1 = fma(s12, bv1, acc12_1);
        let s13 = vec4<f32>(dy[ro13 + yl]);
        acc13_0 = fma(s13, bv0, acc13_0);
        acc13_1 = fma(s13, bv1, acc13_1);
        let s14 = vec4<f32>(dy[ro14 + yl]);
        acc14_0 = fma(s14, bv0, acc14_0);
        acc14_1 = fma(s14, bv1, acc14_1);
        let s15 = vec4<f32>(dy[ro15 + yl]);
        acc15_0 = fma(s15, bv0, acc15_0);
        acc15_1 = fma(s15, bv1, acc15_1);
        let s16 = vec4<f32>(dy[ro16 + yl]);
        acc16_0 = fma(s16, bv0, acc16_0);
        acc16_1 = fma(s16, bv1, acc16_1);
        let s17 = vec4<f32>(dy[ro17 + yl]);
        acc17_0 = fma(s17, bv0, acc17_0);
        acc17_1 = fma(s17, bv1, acc17_1);
        let s18 = vec4<f32>(dy[ro18 + yl]);
        acc18_0 = fma(s18, bv0, acc18_0);
        acc18_1 = fma(s18, bv1, acc18_1);
        let s19 = vec4<f32>(dy[ro19 + yl]);
        acc19_0 = fma(s19, bv0, acc19_0);
        acc19_1 = fma(s19, bv1, acc19_1);
        let s20 = vec4<f32>(dy[ro20 + yl]);
        acc20_0 = fma(s20, bv0, acc20_0);
        acc20_1 = fma(s20, bv1, acc20_1);
        let s21 = vec4<f32>(dy[ro21 + yl]);
        acc21_0 = fma(s21, bv0, acc21_0);
        acc21_1 = fma(s21, bv1, acc21_1);
        let s22 = vec4<f32>(dy[ro22 + yl]);
        acc22_0 = fma(s22, bv0, acc22_0);
        acc22_1 = fma(s22, bv1, acc22_1);
        let s23 = vec4<f32>(dy[ro23 + yl]);
        acc23_0 = fma(s23, bv0, acc23_0);
        acc23_1 = fma(s23, bv1, acc23_1);
        let s24 = vec4<f32>(dy[ro24 + yl]);
        acc24_0 = fma(s24, bv0, acc24_0);
        acc24_1 = fma(s24, bv1, acc24_1);
        let s25 = vec4<f32>(dy[ro25 + yl]);
        acc25_0 = fma(s25, bv0, acc25_0);
        acc25_1 = fma(s25, bv1, acc25_1);
        let s26 = vec4<f32>(dy[ro26 + yl]);
        acc26_0 = fma(s26, bv0, acc26_0);
        acc26_1 = fma(s26, bv1, acc26_1);
        let s27 = vec4<f32>(dy[ro27 + yl]);
        acc27_0 = fma(s27, bv0, acc27_0);
        acc27_1 = fma(s27, bv1, acc27_1);
        let s28 = vec4<f32>(dy[ro28 + yl]);
        acc28_0 = fma(s28, bv0, acc28_0);
        acc28_1 = fma(s28, bv1, acc28_1);
        let s29 = vec4<f32>(dy[ro29 + yl]);
        acc29_0 = fma(s29, bv0, acc29_0);
        acc29_1 = fma(s29, bv1, acc29_1);
        let s30 = vec4<f32>(dy[ro30 + yl]);
        acc30_0 = fma(s30, bv0, acc30_0);
        acc30_1 = fma(s30, bv1, acc30_1);
        let s31 = vec4<f32>(dy[ro31 + yl]);
        acc31_0 = fma(s31, bv0, acc31_0);
        acc31_1 = fma(s31, bv1, acc31_1);
        yl += 1u;
        ox += 1u;
        if (ox == p.ow) {
            ox = 0u;
            oy += 1u;
            if (oy == p.oh) {
                oy = 0u;
                xb += p.cin * hw;
                yl += bstep;
            }
        }
    }
    store_row(o0 + 0u, nb + 0u, acc0_0);
    store_row(o0 + 0u, nb + 32u, acc0_1);
    store_row(o0 + 1u, nb + 0u, acc1_0);
    store_row(o0 + 1u, nb + 32u, acc1_1);
    store_row(o0 + 2u, nb + 0u, acc2_0);
    store_row(o0 + 2u, nb + 32u, acc2_1);
    store_row(o0 + 3u, nb + 0u, acc3_0);
    store_row(o0 + 3u, nb + 32u, acc3_1);
    store_row(o0 + 4u, nb + 0u, acc4_0);
    store_row(o0 + 4u, nb + 32u, acc4_1);
    store_row(o0 + 5u, nb + 0u, acc5_0);
    store_row(o0 + 5u, nb + 32u, acc5_1);
    store_row(o0 + 6u, nb + 0u, acc6_0);
    store_row(o0 + 6u, nb + 32u, acc6_1);
    store_row(o0 + 7u, nb + 0u, acc7_0);
    store_row(o0 + 7u, nb + 32u, acc7_1);
    store_row(o0 + 8u, nb + 0u, acc8_0);
    store_row(o0 + 8u, nb + 32u, acc8_1);
    store_row(o0 + 9u, nb + 0u, acc9_0);
    store_row(o0 + 9u, nb + 32u, acc9_1);
    store_row(o0 + 10u, nb + 0u, acc10_0);
    store_row(o0 + 10u, nb + 32u, acc10_1);
    store_row(o0 + 11u, nb + 0u, acc11_0);
    store_row(o0 + 11u, nb + 32u, acc11_1);
    store_row(o0 + 12u, nb + 0u, acc12_0);
    store_row(o0 + 12u, nb + 32u, acc12_1);
    store_row(o0 + 13u, nb + 0u, acc13_0);
    store_row(o0 + 13u, nb + 32u, acc13_1);
    store_row(o0 + 14u, nb + 0u, acc14_0);
    store_row(o0 + 14u, nb + 32u, acc14_1);
    store_row(o0 + 15u, nb + 0u, acc15_0);
    store_row(o0 + 15u, nb + 32u, acc15_1);
    store_row(o0 + 16u, nb + 0u, acc16_0);
    store_row(o0 + 16u, nb + 32u, acc16_1);
    store_row(o0 + 17u, nb + 0u, acc17_0);
    store_row(o0 + 17u, nb + 32u, acc17_1);
    store_row(o0 + 18u, nb + 0u, acc18_0);
    store_row(o0 + 18u, nb + 32u, acc18_1);
    store_row(o0 + 19u, nb + 0u, acc19_0);
    store_row(o0 + 19u, nb + 32u, acc19_1);
    store_row(o0 + 20u, nb + 0u, acc20_0);
    store_row(o0 + 20u, nb + 32u, acc20_1);
    store_row(o0 + 21u, nb + 0u, acc21_0);
    store_row(o0 + 21u, nb + 32u, acc21_1);
    store_row(o0 + 22u, nb + 0u, acc22_0);
    store_row(o0 + 22u, nb + 32u, acc22_1);
    store_row(o0 + 23u, nb + 0u, acc23_0);
    store_row(o0 + 23u, nb + 32u, acc23_1);
    store_row(o0 + 24u, nb + 0u, acc24_0);
    store_row(o0 + 24u, nb + 32u, acc24_1);
    store_row(o0 + 25u, nb + 0u, acc25_0);
    store_row(o0 + 25u, nb + 32u, acc25_1);
    store_row(o0 + 26u, nb + 0u, acc26_0);
    store_row(o0 + 26u, nb + 32u, acc26_1);
    store_row(o0 + 27u, nb + 0u, acc27_0);
    store_row(o0 + 27u, nb + 32u, acc27_1);
    store_row(o0 + 28u, nb + 0u, acc28_0);
    store_row(o0 + 28u, nb + 32u, acc28_1);
    store_row(o0 + 29u, nb + 0u, acc29_0);
    store_row(o0 + 29u, nb + 32u, acc29_1);
    store_row(o0 + 30u, nb + 0u, acc30_0);
    store_row(o0 + 30u, nb + 32u, acc30_1);
    store_row(o0 + 31u, nb + 0u, acc31_0);
    store_row(o0 + 31u, nb + 32u, acc31_1);
}
