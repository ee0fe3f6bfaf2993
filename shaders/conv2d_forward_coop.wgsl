// Variant of conv2d_forward.wgsl for CPU drivers (lavapipe), where every storage-buffer load an
// invocation makes costs a scalar, bounds-checked load per SIMD lane while arithmetic runs on all
// lanes at once (see gemm_coop.wgsl). Implicit GEMM with the output channels as the shared rows:
// the reduction runs over (cin, ky, kx) in the weight's own order, so the 8 invocations of a
// workgroup (one subgroup on lavapipe) load 8 consecutive reduction entries of each weight row
// with one contiguous load each and pass them round with constant-lane shuffles; each invocation
// gathers its own 8 output pixels' input values, which all rows then use. A workgroup covers
// 32 output channels × 64 output pixels. Where the subgroup cannot share (smaller than 8, lanes
// not in invocation order) or `unshared` is set (tests cover that path with it), every invocation
// loads its own weights instead: slower, same result. Same parameters and bindings as
// conv2d_forward.wgsl. Also the input-gradient of a transposed convolution.
struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, stride: u32, pad: u32, unshared: u32,
    alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const R: u32 = 32u;  // output channels per workgroup (the statements below are written out for each)
const C: u32 = 8u;  // output pixels per invocation, 8 apart

// Column j of this invocation is pixel pb + 8·j, whose output starts at yb[j] (channel 0).
fn store_row(n: u32, j0: u32, pb: u32, yb: array<u32, 8>, v: vec4<f32>) {
    let npix = p.batch * p.oh * p.ow;
    if (n >= p.cout) {
        return;
    }
    for (var i = 0u; i < 4u; i++) {
        let j = j0 / 8u + i;
        if (pb + 8u * j < npix) {
            let idx = yb[j] + n * p.oh * p.ow;
            var r = p.alpha * v[i];
            if (p.beta != 0.0) {
                r = r + p.beta * y[idx];
            }
            y[idx] = r;
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
    let ohw = p.oh * p.ow;
    let npix = p.batch * ohw;
    let hw = p.h * p.w;
    let kred = p.cin * p.kh * p.kw;
    let n0 = wid.y * R;
    let pb = wid.x * 8u * C + t;
    // Pixels past the end read the last one; their results are dropped at the store.
    let m0 = min(pb + 0u, npix - 1u);
    let xb0 = m0 / ohw * p.cin * hw;
    let iy0 = i32(m0 % ohw / p.ow * p.stride) - i32(p.pad);
    let ix0 = i32(m0 % ohw % p.ow * p.stride) - i32(p.pad);
    let m1 = min(pb + 8u, npix - 1u);
    let xb1 = m1 / ohw * p.cin * hw;
    let iy1 = i32(m1 % ohw / p.ow * p.stride) - i32(p.pad);
    let ix1 = i32(m1 % ohw % p.ow * p.stride) - i32(p.pad);
    let m2 = min(pb + 16u, npix - 1u);
    let xb2 = m2 / ohw * p.cin * hw;
    let iy2 = i32(m2 % ohw / p.ow * p.stride) - i32(p.pad);
    let ix2 = i32(m2 % ohw % p.ow * p.stride) - i32(p.pad);
    let m3 = min(pb + 24u, npix - 1u);
    let xb3 = m3 / ohw * p.cin * hw;
    let iy3 = i32(m3 % ohw / p.ow * p.stride) - i32(p.pad);
    let ix3 = i32(m3 % ohw % p.ow * p.stride) - i32(p.pad);
    let m4 = min(pb + 32u, npix - 1u);
    let xb4 = m4 / ohw * p.cin * hw;
    let iy4 = i32(m4 % ohw / p.ow * p.stride) - i32(p.pad);
    let ix4 = i32(m4 % ohw % p.ow * p.stride) - i32(p.pad);
    let m5 = min(pb + 40u, npix - 1u);
    let xb5 = m5 / ohw * p.cin * hw;
    let iy5 = i32(m5 % ohw / p.ow * p.stride) - i32(p.pad);
    let ix5 = i32(m5 % ohw % p.ow * p.stride) - i32(p.pad);
    let m6 = min(pb + 48u, npix - 1u);
    let xb6 = m6 / ohw * p.cin * hw;
    let iy6 = i32(m6 % ohw / p.ow * p.stride) - i32(p.pad);
    let ix6 = i32(m6 % ohw % p.ow * p.stride) - i32(p.pad);
    let m7 = min(pb + 56u, npix - 1u);
    let xb7 = m7 / ohw * p.cin * hw;
    let iy7 = i32(m7 % ohw / p.ow * p.stride) - i32(p.pad);
    let ix7 = i32(m7 % ohw % p.ow * p.stride) - i32(p.pad);
    let wr0 = min(n0 + 0u, p.cout - 1u) * kred;
    let wr1 = min(n0 + 1u, p.cout - 1u) * kred;
    let wr2 = min(n0 + 2u, p.cout - 1u) * kred;
    let wr3 = min(n0 + 3u, p.cout - 1u) * kred;
    let wr4 = min(n0 + 4u, p.cout - 1u) * kred;
    let wr5 = min(n0 + 5u, p.cout - 1u) * kred;
    let wr6 = min(n0 + 6u, p.cout - 1u) * kred;
    let wr7 = min(n0 + 7u, p.cout - 1u) * kred;
    let wr8 = min(n0 + 8u, p.cout - 1u) * kred;
    let wr9 = min(n0 + 9u, p.cout - 1u) * kred;
    let wr10 = min(n0 + 10u, p.cout - 1u) * kred;
    let wr11 = min(n0 + 11u, p.cout - 1u) * kred;
    let wr12 = min(n0 + 12u, p.cout - 1u) * kred;
    let wr13 = min(n0 + 13u, p.cout - 1u) * kred;
    let wr14 = min(n0 + 14u, p.cout - 1u) * kred;
    let wr15 = min(n0 + 15u, p.cout - 1u) * kred;
    let wr16 = min(n0 + 16u, p.cout - 1u) * kred;
    let wr17 = min(n0 + 17u, p.cout - 1u) * kred;
    let wr18 = min(n0 + 18u, p.cout - 1u) * kred;
    let wr19 = min(n0 + 19u, p.cout - 1u) * kred;
    let wr20 = min(n0 + 20u, p.cout - 1u) * kred;
    let wr21 = min(n0 + 21u, p.cout - 1u) * kred;
    let wr22 = min(n0 + 22u, p.cout - 1u) * kred;
    let wr23 = min(n0 + 23u, p.cout - 1u) * kred;
    let wr24 = min(n0 + 24u, p.cout - 1u) * kred;
    let wr25 = min(n0 + 25u, p.cout - 1u) * kred;
    let wr26 = min(n0 + 26u, p.cout - 1u) * kred;
    let wr27 = min(n0 + 27u, p.cout - 1u) * kred;
    let wr28 = min(n0 + 28u, p.cout - 1u) * kred;
    let wr29 = min(n0 + 29u, p.cout - 1u) * kred;
    let wr30 = min(n0 + 30u, p.cout - 1u) * kred;
    let wr31 = min(n0 + 31u, p.cout - 1u) * kred;
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
    // (c, ky, kx) of the reduction entry being accumulated, walked by all invocations together.
    var coff = 0u;
    var ky = 0;
    var kx = 0;
    for (var k0 = 0u; k0 < kfull; k0 += 8u) {
        let a0 = wt[wr0 + k0 + t];
        let a1 = wt[wr1 + k0 + t];
        let a2 = wt[wr2 + k0 + t];
        let a3 = wt[wr3 + k0 + t];
        let a4 = wt[wr4 + k0 + t];
        let a5 = wt[wr5 + k0 + t];
        let a6 = wt[wr6 + k0 + t];
        let a7 = wt[wr7 + k0 + t];
        let a8 = wt[wr8 + k0 + t];
        let a9 = wt[wr9 + k0 + t];
        let a10 = wt[wr10 + k0 + t];
        let a11 = wt[wr11 + k0 + t];
        let a12 = wt[wr12 + k0 + t];
        let a13 = wt[wr13 + k0 + t];
        let a14 = wt[wr14 + k0 + t];
        let a15 = wt[wr15 + k0 + t];
        let a16 = wt[wr16 + k0 + t];
        let a17 = wt[wr17 + k0 + t];
        let a18 = wt[wr18 + k0 + t];
        let a19 = wt[wr19 + k0 + t];
        let a20 = wt[wr20 + k0 + t];
        let a21 = wt[wr21 + k0 + t];
        let a22 = wt[wr22 + k0 + t];
        let a23 = wt[wr23 + k0 + t];
        let a24 = wt[wr24 + k0 + t];
        let a25 = wt[wr25 + k0 + t];
        let a26 = wt[wr26 + k0 + t];
        let a27 = wt[wr27 + k0 + t];
        let a28 = wt[wr28 + k0 + t];
        let a29 = wt[wr29 + k0 + t];
        let a30 = wt[wr30 + k0 + t];
        let a31 = wt[wr31 + k0 + t];
        for (var kk = 0u; kk < 8u; kk++) {
            let yy0 = iy0 + ky;
            let xx0 = ix0 + kx;
            let ok0 = (yy0 >= 0) & (yy0 < i32(p.h)) & (xx0 >= 0) & (xx0 < i32(p.w));
            let v0 = select(0.0, x[select(0u, xb0 + coff + u32(yy0) * p.w + u32(xx0), ok0)], ok0);
            let yy1 = iy1 + ky;
            let xx1 = ix1 + kx;
            let ok1 = (yy1 >= 0) & (yy1 < i32(p.h)) & (xx1 >= 0) & (xx1 < i32(p.w));
            let v1 = select(0.0, x[select(0u, xb1 + coff + u32(yy1) * p.w + u32(xx1), ok1)], ok1);
            let yy2 = iy2 + ky;
            let xx2 = ix2 + kx;
            let ok2 = (yy2 >= 0) & (yy2 < i32(p.h)) & (xx2 >= 0) & (xx2 < i32(p.w));
            let v2 = select(0.0, x[select(0u, xb2 + coff + u32(yy2) * p.w + u32(xx2), ok2)], ok2);
            let yy3 = iy3 + ky;
            let xx3 = ix3 + kx;
            let ok3 = (yy3 >= 0) & (yy3 < i32(p.h)) & (xx3 >= 0) & (xx3 < i32(p.w));
            let v3 = select(0.0, x[select(0u, xb3 + coff + u32(yy3) * p.w + u32(xx3), ok3)], ok3);
            let yy4 = iy4 + ky;
            let xx4 = ix4 + kx;
            let ok4 = (yy4 >= 0) & (yy4 < i32(p.h)) & (xx4 >= 0) & (xx4 < i32(p.w));
            let v4 = select(0.0, x[select(0u, xb4 + coff + u32(yy4) * p.w + u32(xx4), ok4)], ok4);
            let yy5 = iy5 + ky;
            let xx5 = ix5 + kx;
            let ok5 = (yy5 >= 0) & (yy5 < i32(p.h)) & (xx5 >= 0) & (xx5 < i32(p.w));
            let v5 = select(0.0, x[select(0u, xb5 + coff + u32(yy5) * p.w + u32(xx5), ok5)], ok5);
            let yy6 = iy6 + ky;
            let xx6 = ix6 + kx;
            let ok6 = (yy6 >= 0) & (yy6 < i32(p.h)) & (xx6 >= 0) & (xx6 < i32(p.w));
            let v6 = select(0.0, x[select(0u, xb6 + coff + u32(yy6) * p.w + u32(xx6), ok6)], ok6);
            let yy7 = iy7 + ky;
            let xx7 = ix7 + kx;
            let ok7 = (yy7 >= 0) & (yy7 < i32(p.h)) & (xx7 >= 0) & (xx7 < i32(p.w));
            let v7 = select(0.0, x[select(0u, xb7 + coff + u32(yy7) * p.w + u32(xx7), ok7)], ok7);
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
            kx += 1;
            if (kx == i32(p.kw)) {
                kx = 0;
                ky += 1;
                if (ky == i32(p.kh)) {
                    ky = 0;
                    coff += hw;
                }
            }
        }
    }
    // The last kred % 8 (all of it where the lanes cannot share): every invocation loads its own
    // weights.
    for (var k = kfull; k < kred; k++) {
        let yy0 = iy0 + ky;
        let xx0 = ix0 + kx;
        let ok0 = (yy0 >= 0) & (yy0 < i32(p.h)) & (xx0 >= 0) & (xx0 < i32(p.w));
        let v0 = select(0.0, x[select(0u, xb0 + coff + u32(yy0) * p.w + u32(xx0), ok0)], ok0);
        let yy1 = iy1 + ky;
        let xx1 = ix1 + kx;
        let ok1 = (yy1 >= 0) & (yy1 < i32(p.h)) & (xx1 >= 0) & (xx1 < i32(p.w));
        let v1 = select(0.0, x[select(0u, xb1 + coff + u32(yy1) * p.w + u32(xx1), ok1)], ok1);
        let yy2 = iy2 + ky;
        let xx2 = ix2 + kx;
        let ok2 = (yy2 >= 0) & (yy2 < i32(p.h)) & (xx2 >= 0) & (xx2 < i32(p.w));
        let v2 = select(0.0, x[select(0u, xb2 + coff + u32(yy2) * p.w + u32(xx2), ok2)], ok2);
        let yy3 = iy3 + ky;
        let xx3 = ix3 + kx;
        let ok3 = (yy3 >= 0) & (yy3 < i32(p.h)) & (xx3 >= 0) & (xx3 < i32(p.w));
        let v3 = select(0.0, x[select(0u, xb3 + coff + u32(yy3) * p.w + u32(xx3), ok3)], ok3);
        let yy4 = iy4 + ky;
        let xx4 = ix4 + kx;
        let ok4 = (yy4 >= 0) & (yy4 < i32(p.h)) & (xx4 >= 0) & (xx4 < i32(p.w));
        let v4 = select(0.0, x[select(0u, xb4 + coff + u32(yy4) * p.w + u32(xx4), ok4)], ok4);
        let yy5 = iy5 + ky;
        let xx5 = ix5 + kx;
        let ok5 = (yy5 >= 0) & (yy5 < i32(p.h)) & (xx5 >= 0) & (xx5 < i32(p.w));
        let v5 = select(0.0, x[select(0u, xb5 + coff + u32(yy5) * p.w + u32(xx5), ok5)], ok5);
        let yy6 = iy6 + ky;
        let xx6 = ix6 + kx;
        let ok6 = (yy6 >= 0) & (yy6 < i32(p.h)) & (xx6 >= 0) & (xx6 < i32(p.w));
        let v6 = select(0.0, x[select(0u, xb6 + coff + u32(yy6) * p.w + u32(xx6), ok6)], ok6);
        let yy7 = iy7 + ky;
        let xx7 = ix7 + kx;
        let ok7 = (yy7 >= 0) & (yy7 < i32(p.h)) & (xx7 >= 0) & (xx7 < i32(p.w));
        let v7 = select(0.0, x[select(0u, xb7 + coff + u32(yy7) * p.w + u32(xx7), ok7)], ok7);
        let bv0 = vec4<f32>(v0, v1, v2, v3);
        let bv1 = vec4<f32>(v4, v5, v6, v7);
        let s0 = vec4<f32>(wt[wr0 + k]);
        acc0_0 = fma(s0, bv0, acc0_0);
        acc0_1 = fma(s0, bv1, acc0_1);
        let s1 = vec4<f32>(wt[wr1 + k]);
        acc1_0 = fma(s1, bv0, acc1_0);
        acc1_1 = fma(s1, bv1, acc1_1);
        let s2 = vec4<f32>(wt[wr2 + k]);
        acc2_0 = fma(s2, bv0, acc2_0);
        acc2_1 = fma(s2, bv1, acc2_1);
        let s3 = vec4<f32>(wt[wr3 + k]);
        acc3_0 = fma(s3, bv0, acc3_0);
        acc3_1 = fma(s3, bv1, acc3_1);
        let s4 = vec4<f32>(wt[wr4 + k]);
        acc4_0 = fma(s4, bv0, acc4_0);
        acc4_1 = fma(s4, bv1, acc4_1);
        let s5 = vec4<f32>(wt[wr5 + k]);
        acc5_0 = fma(s5, bv0, acc5_0);
        acc5_1 = fma(s5, bv1, acc5_1);
        let s6 = vec4<f32>(wt[wr6 + k]);
        acc6_0 = fma(s6, bv0, acc6_0);
        acc6_1 = fma(s6, bv1, acc6_1);
        let s7 = vec4<f32>(wt[wr7 + k]);
        acc7_0 = fma(s7, bv0, acc7_0);
        acc7_1 = fma(s7, bv1, acc7_1);
        let s8 = vec4<f32>(wt[wr8 + k]);
        acc8_0 = fma(s8, bv0, acc8_0);
        acc8_1 = fma(s8, bv1, acc8_1);
        let s9 = vec4<f32>(wt[wr9 + k]);
        acc9_0 = fma(s9, bv0, acc9_0);
        acc9_1 = fma(s9, bv1, acc9_1);
        let s10 = vec4<f32>(wt[wr10 + k]);
        acc10_0 = fma(s10, bv0, acc10_0);
        acc10_1 = fma(s10, bv1, acc10_1);
        let s11 = vec4<f32>(wt[wr11 + k]);
        acc11_0 = fma(s11, bv0, acc11_0);
        acc11_1 = fma(s11, bv1, acc11_1);
        let s12 = vec4<f32>(wt[wr12 + k]);
        acc12_0 = fma(s12, bv0, acc12_0);
        acc12_1 = fma(s12, bv1, acc12_1);
        let s13 = vec4<f32>(wt[wr13 + k]);
        acc13_0 = fma(s13, bv0, acc13_0);
        acc13_1 = fma(s13, bv1, acc13_1);
        let s14 = vec4<f32>(wt[wr14 + k]);
        acc14_0 = fma(s14, bv0, acc14_0);
        acc14_1 = fma(s14, bv1, acc14_1);
        let s15 = vec4<f32>(wt[wr15 + k]);
        acc15_0 = fma(s15, bv0, acc15_0);
        acc15_1 = fma(s15, bv1, acc15_1);
        let s16 = vec4<f32>(wt[wr16 + k]);
        acc16_0 = fma(s16, bv0, acc16_0);
        acc16_1 = fma(s16, bv1, acc16_1);
        let s17 = vec4<f32>(wt[wr17 + k]);
        acc17_0 = fma(s17, bv0, acc17_0);
        acc17_1 = fma(s17, bv1, acc17_1);
        let s18 = vec4<f32>(wt[wr18 + k]);
        acc18_0 = fma(s18, bv0, acc18_0);
        acc18_1 = fma(s18, bv1, acc18_1);
        let s19 = vec4<f32>(wt[wr19 + k]);
        acc19_0 = fma(s19, bv0, acc19_0);
        acc19_1 = fma(s19, bv1, acc19_1);
        let s20 = vec4<f32>(wt[wr20 + k]);
        acc20_0 = fma(s20, bv0, acc20_0);
        acc20_1 = fma(s20, bv1, acc20_1);
        let s21 = vec4<f32>(wt[wr21 + k]);
        acc21_0 = fma(s21, bv0, acc21_0);
        acc21_1 = fma(s21, bv1, acc21_1);
        let s22 = vec4<f32>(wt[wr22 + k]);
        acc22_0 = fma(s22, bv0, acc22_0);
        acc22_1 = fma(s22, bv1, acc22_1);
        let s23 = vec4<f32>(wt[wr23 + k]);
        acc23_0 = fma(s23, bv0, acc23_0);
        acc23_1 = fma(s23, bv1, acc23_1);
        let s24 = vec4<f32>(wt[wr24 + k]);
        acc24_0 = fma(s24, bv0, acc24_0);
        acc24_1 = fma(s24, bv1, acc24_1);
        let s25 = vec4<f32>(wt[wr25 + k]);
        acc25_0 = fma(s25, bv0, acc25_0);
        acc25_1 = fma(s25, bv1, acc25_1);
        let s26 = vec4<f32>(wt[wr26 + k]);
        acc26_0 = fma(s26, bv0, acc26_0);
        acc26_1 = fma(s26, bv1, acc26_1);
        let s27 = vec4<f32>(wt[wr27 + k]);
        acc27_0 = fma(s27, bv0, acc27_0);
        acc27_1 = fma(s27, bv1, acc27_1);
        let s28 = vec4<f32>(wt[wr28 + k]);
        acc28_0 = fma(s28, bv0, acc28_0);
        acc28_1 = fma(s28, bv1, acc28_1);
        let s29 = vec4<f32>(wt[wr29 + k]);
        acc29_0 = fma(s29, bv0, acc29_0);
        acc29_1 = fma(s29, bv1, acc29_1);
        let s30 = vec4<f32>(wt[wr30 + k]);
        acc30_0 = fma(s30, bv0, acc30_0);
        acc30_1 = fma(s30, bv1, acc30_1);
        let s31 = vec4<f32>(wt[wr31 + k]);
        acc31_0 = fma(s31, bv0, acc31_0);
        acc31_1 = fma(s31, bv1, acc31_1);
        kx += 1;
        if (kx == i32(p.kw)) {
            kx = 0;
            ky += 1;
            if (ky == i32(p.kh)) {
                ky = 0;
                coff += hw;
            }
        }
    }
    let yb = array<u32, 8>(m0 / ohw * p.cout * ohw + m0 % ohw, m1 / ohw * p.cout * ohw + m1 % ohw, m2 / ohw * p.cout * ohw + m2 % ohw, m3 / ohw * p.cout * ohw + m3 % ohw, m4 / ohw * p.cout * ohw + m4 % ohw, m5 / ohw * p.cout * ohw + m5 % ohw, m6 / ohw * p.cout * ohw + m6 % ohw, m7 / ohw * p.cout * ohw + m7 % ohw);
    store_row(n0 + 0u, 0u, pb, yb, acc0_0);
    store_row(n0 + 0u, 32u, pb, yb, acc0_1);
    store_row(n0 + 1u, 0u, pb, yb, acc1_0);
    store_row(n0 + 1u, 32u, pb, yb, acc1_1);
    store_row(n0 + 2u, 0u, pb, yb, acc2_0);
    store_row(n0 + 2u, 32u, pb, yb, acc2_1);
    store_row(n0 + 3u, 0u, pb, yb, acc3_0);
    store_row(n0 + 3u, 32u, pb, yb, acc3_1);
    store_row(n0 + 4u, 0u, pb, yb, acc4_0);
    store_row(n0 + 4u, 32u, pb, yb, acc4_1);
    store_row(n0 + 5u, 0u, pb, yb, acc5_0);
    store_row(n0 + 5u, 32u, pb, yb, acc5_1);
    store_row(n0 + 6u, 0u, pb, yb, acc6_0);
    store_row(n0 + 6u, 32u, pb, yb, acc6_1);
    store_row(n0 + 7u, 0u, pb, yb, acc7_0);
    store_row(n0 + 7u, 32u, pb, yb, acc7_1);
    store_row(n0 + 8u, 0u, pb, yb, acc8_0);
    store_row(n0 + 8u, 32u, pb, yb, acc8_1);
    store_row(n0 + 9u, 0u, pb, yb, acc9_0);
    store_row(n0 + 9u, 32u, pb, yb, acc9_1);
    store_row(n0 + 10u, 0u, pb, yb, acc10_0);
    store_row(n0 + 10u, 32u, pb, yb, acc10_1);
    store_row(n0 + 11u, 0u, pb, yb, acc11_0);
    store_row(n0 + 11u, 32u, pb, yb, acc11_1);
    store_row(n0 + 12u, 0u, pb, yb, acc12_0);
    store_row(n0 + 12u, 32u, pb, yb, acc12_1);
    store_row(n0 + 13u, 0u, pb, yb, acc13_0);
    store_row(n0 + 13u, 32u, pb, yb, acc13_1);
    store_row(n0 + 14u, 0u, pb, yb, acc14_0);
    store_row(n0 + 14u, 32u, pb, yb, acc14_1);
    store_row(n0 + 15u, 0u, pb, yb, acc15_0);
    store_row(n0 + 15u, 32u, pb, yb, acc15_1);
    store_row(n0 + 16u, 0u, pb, yb, acc16_0);
    store_row(n0 + 16u, 32u, pb, yb, acc16_1);
    store_row(n0 + 17u, 0u, pb, yb, acc17_0);
    store_row(n0 + 17u, 32u, pb, yb, acc17_1);
    store_row(n0 + 18u, 0u, pb, yb, acc18_0);
    store_row(n0 + 18u, 32u, pb, yb, acc18_1);
    store_row(n0 + 19u, 0u, pb, yb, acc19_0);
    store_row(n0 + 19u, 32u, pb, yb, acc19_1);
    store_row(n0 + 20u, 0u, pb, yb, acc20_0);
    store_row(n0 + 20u, 32u, pb, yb, acc20_1);
    store_row(n0 + 21u, 0u, pb, yb, acc21_0);
    store_row(n0 + 21u, 32u, pb, yb, acc21_1);
    store_row(n0 + 22u, 0u, pb, yb, acc22_0);
    store_row(n0 + 22u, 32u, pb, yb, acc22_1);
    store_row(n0 + 23u, 0u, pb, yb, acc23_0);
    store_row(n0 + 23u, 32u, pb, yb, acc23_1);
    store_row(n0 + 24u, 0u, pb, yb, acc24_0);
    store_row(n0 + 24u, 32u, pb, yb, acc24_1);
    store_row(n0 + 25u, 0u, pb, yb, acc25_0);
    store_row(n0 + 25u, 32u, pb, yb, acc25_1);
    store_row(n0 + 26u, 0u, pb, yb, acc26_0);
    store_row(n0 + 26u, 32u, pb, yb, acc26_1);
    store_row(n0 + 27u, 0u, pb, yb, acc27_0);
    store_row(n0 + 27u, 32u, pb, yb, acc27_1);
    store_row(n0 + 28u, 0u, pb, yb, acc28_0);
    store_row(n0 + 28u, 32u, pb, yb, acc28_1);
    store_row(n0 + 29u, 0u, pb, yb, acc29_0);
    store_row(n0 + 29u, 32u, pb, yb, acc29_1);
    store_row(n0 + 30u, 0u, pb, yb, acc30_0);
    store_row(n0 + 30u, 32u, pb, yb, acc30_1);
    store_row(n0 + 31u, 0u, pb, yb, acc31_0);
    store_row(n0 + 31u, 32u, pb, yb, acc31_1);
}
