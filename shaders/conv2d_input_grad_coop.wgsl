// Variant of conv2d_input_grad.wgsl for CPU drivers (lavapipe), where every storage-buffer load
// an invocation makes costs a scalar, bounds-checked load per SIMD lane while arithmetic runs on
// all lanes at once (see gemm_coop.wgsl). Same stride parity classes (workgroup z) as
// conv2d_input_grad.wgsl, with the input channels as the shared rows: for each contributing tap
// the reduction runs over the output channels, so the 8 invocations of a workgroup (one subgroup
// on lavapipe) load the weights of 8 consecutive output channels of each row once between them
// and pass them round with constant-lane shuffles; each invocation loads its own 4 pixels' dy
// values, whose offsets and bounds are worked out once per tap. A workgroup covers 32 input
// channels × 32 pixels of one class. Where the subgroup cannot share (smaller than 8, lanes not
// in invocation order) or `unshared` is set (tests cover that path with it), every invocation
// loads its own weights instead: slower, same result. Same parameters and bindings as
// conv2d_input_grad.wgsl. Also the forward pass of a transposed convolution.
struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, stride: u32, pad: u32, unshared: u32,
    alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

const R: u32 = 32u;  // input channels per workgroup (the statements below are written out for each)
const C: u32 = 4u;  // pixels of the class per invocation, 8 apart

// Column j of this invocation is class row pb + 8·j (of `rows`), whose dx starts at xb[j].
fn store_row(c: u32, j0: u32, pb: u32, rows: u32, xb: array<u32, 4>, v: vec4<f32>) {
    if (c >= p.cin) {
        return;
    }
    for (var i = 0u; i < 4u; i++) {
        let j = j0 / 8u + i;
        if (pb + 8u * j < rows) {
            let idx = xb[j] + c * p.h * p.w;
            var r = p.alpha * v[i];
            if (p.beta != 0.0) {
                r = r + p.beta * dx[idx];
            }
            dx[idx] = r;
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
    let s = p.stride;
    let cy = wid.z / s;
    let cx = wid.z % s;
    if (cy >= p.h || cx >= p.w) {
        return;
    }
    // Pixels of this class: y = s·qy + cy, x = s·qx + cx.
    let ny = (p.h - cy + s - 1u) / s;
    let nx = (p.w - cx + s - 1u) / s;
    let nq = ny * nx;
    let rows = p.batch * nq;
    let ohw = p.oh * p.ow;
    let khw = p.kh * p.kw;
    let wstep = p.cin * khw;
    // First contributing tap, and the output row it reads: oy = qy + dy0 − j for the j-th tap.
    let ry = (cy + p.pad) % s;
    let rx = (cx + p.pad) % s;
    let dy0 = i32((cy + p.pad) / s);
    let dx0 = i32((cx + p.pad) / s);
    let c0 = wid.y * R;
    let pb = wid.x * 8u * C + t;
    // Rows past the end of the class read its last one; their results are dropped at the store.
    let m0 = min(pb + 0u, rows - 1u);
    let yb0 = m0 / nq * p.cout * ohw;
    let qy0 = i32(m0 % nq / nx) + dy0;
    let qx0 = i32(m0 % nq % nx) + dx0;
    let m1 = min(pb + 8u, rows - 1u);
    let yb1 = m1 / nq * p.cout * ohw;
    let qy1 = i32(m1 % nq / nx) + dy0;
    let qx1 = i32(m1 % nq % nx) + dx0;
    let m2 = min(pb + 16u, rows - 1u);
    let yb2 = m2 / nq * p.cout * ohw;
    let qy2 = i32(m2 % nq / nx) + dy0;
    let qx2 = i32(m2 % nq % nx) + dx0;
    let m3 = min(pb + 24u, rows - 1u);
    let yb3 = m3 / nq * p.cout * ohw;
    let qy3 = i32(m3 % nq / nx) + dy0;
    let qx3 = i32(m3 % nq % nx) + dx0;
    let wc0 = min(c0 + 0u, p.cin - 1u) * khw;
    let wc1 = min(c0 + 1u, p.cin - 1u) * khw;
    let wc2 = min(c0 + 2u, p.cin - 1u) * khw;
    let wc3 = min(c0 + 3u, p.cin - 1u) * khw;
    let wc4 = min(c0 + 4u, p.cin - 1u) * khw;
    let wc5 = min(c0 + 5u, p.cin - 1u) * khw;
    let wc6 = min(c0 + 6u, p.cin - 1u) * khw;
    let wc7 = min(c0 + 7u, p.cin - 1u) * khw;
    let wc8 = min(c0 + 8u, p.cin - 1u) * khw;
    let wc9 = min(c0 + 9u, p.cin - 1u) * khw;
    let wc10 = min(c0 + 10u, p.cin - 1u) * khw;
    let wc11 = min(c0 + 11u, p.cin - 1u) * khw;
    let wc12 = min(c0 + 12u, p.cin - 1u) * khw;
    let wc13 = min(c0 + 13u, p.cin - 1u) * khw;
    let wc14 = min(c0 + 14u, p.cin - 1u) * khw;
    let wc15 = min(c0 + 15u, p.cin - 1u) * khw;
    let wc16 = min(c0 + 16u, p.cin - 1u) * khw;
    let wc17 = min(c0 + 17u, p.cin - 1u) * khw;
    let wc18 = min(c0 + 18u, p.cin - 1u) * khw;
    let wc19 = min(c0 + 19u, p.cin - 1u) * khw;
    let wc20 = min(c0 + 20u, p.cin - 1u) * khw;
    let wc21 = min(c0 + 21u, p.cin - 1u) * khw;
    let wc22 = min(c0 + 22u, p.cin - 1u) * khw;
    let wc23 = min(c0 + 23u, p.cin - 1u) * khw;
    let wc24 = min(c0 + 24u, p.cin - 1u) * khw;
    let wc25 = min(c0 + 25u, p.cin - 1u) * khw;
    let wc26 = min(c0 + 26u, p.cin - 1u) * khw;
    let wc27 = min(c0 + 27u, p.cin - 1u) * khw;
    let wc28 = min(c0 + 28u, p.cin - 1u) * khw;
    let wc29 = min(c0 + 29u, p.cin - 1u) * khw;
    let wc30 = min(c0 + 30u, p.cin - 1u) * khw;
    let wc31 = min(c0 + 31u, p.cin - 1u) * khw;
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
    var acc16 = vec4<f32>(0.0);
    var acc17 = vec4<f32>(0.0);
    var acc18 = vec4<f32>(0.0);
    var acc19 = vec4<f32>(0.0);
    var acc20 = vec4<f32>(0.0);
    var acc21 = vec4<f32>(0.0);
    var acc22 = vec4<f32>(0.0);
    var acc23 = vec4<f32>(0.0);
    var acc24 = vec4<f32>(0.0);
    var acc25 = vec4<f32>(0.0);
    var acc26 = vec4<f32>(0.0);
    var acc27 = vec4<f32>(0.0);
    var acc28 = vec4<f32>(0.0);
    var acc29 = vec4<f32>(0.0);
    var acc30 = vec4<f32>(0.0);
    var acc31 = vec4<f32>(0.0);
    let coop = p.unshared == 0u && sg_size >= 8u && subgroupAll(lane == t);
    var ocfull = 0u;
    if (coop) {
        ocfull = p.cout / 8u * 8u;
    }
    var j = 0;
    for (var ky = ry; ky < p.kh; ky += s) {
        var l = 0;
        for (var kx = rx; kx < p.kw; kx += s) {
            let tap = ky * p.kw + kx;
            let oy0 = qy0 - j;
            let ox0 = qx0 - l;
            let ok0 = (oy0 >= 0) & (ox0 >= 0) & (oy0 < i32(p.oh)) & (ox0 < i32(p.ow));
            let o0 = select(0u, yb0 + u32(oy0) * p.ow + u32(ox0), ok0);
            let oy1 = qy1 - j;
            let ox1 = qx1 - l;
            let ok1 = (oy1 >= 0) & (ox1 >= 0) & (oy1 < i32(p.oh)) & (ox1 < i32(p.ow));
            let o1 = select(0u, yb1 + u32(oy1) * p.ow + u32(ox1), ok1);
            let oy2 = qy2 - j;
            let ox2 = qx2 - l;
            let ok2 = (oy2 >= 0) & (ox2 >= 0) & (oy2 < i32(p.oh)) & (ox2 < i32(p.ow));
            let o2 = select(0u, yb2 + u32(oy2) * p.ow + u32(ox2), ok2);
            let oy3 = qy3 - j;
            let ox3 = qx3 - l;
            let ok3 = (oy3 >= 0) & (ox3 >= 0) & (oy3 < i32(p.oh)) & (ox3 < i32(p.ow));
            let o3 = select(0u, yb3 + u32(oy3) * p.ow + u32(ox3), ok3);
            for (var oc0 = 0u; oc0 < ocfull; oc0 += 8u) {
                let wl = tap + (oc0 + t) * wstep;
                let a0 = wt[wc0 + wl];
                let a1 = wt[wc1 + wl];
                let a2 = wt[wc2 + wl];
                let a3 = wt[wc3 + wl];
                let a4 = wt[wc4 + wl];
                let a5 = wt[wc5 + wl];
                let a6 = wt[wc6 + wl];
                let a7 = wt[wc7 + wl];
                let a8 = wt[wc8 + wl];
                let a9 = wt[wc9 + wl];
                let a10 = wt[wc10 + wl];
                let a11 = wt[wc11 + wl];
                let a12 = wt[wc12 + wl];
                let a13 = wt[wc13 + wl];
                let a14 = wt[wc14 + wl];
                let a15 = wt[wc15 + wl];
                let a16 = wt[wc16 + wl];
                let a17 = wt[wc17 + wl];
                let a18 = wt[wc18 + wl];
                let a19 = wt[wc19 + wl];
                let a20 = wt[wc20 + wl];
                let a21 = wt[wc21 + wl];
                let a22 = wt[wc22 + wl];
                let a23 = wt[wc23 + wl];
                let a24 = wt[wc24 + wl];
                let a25 = wt[wc25 + wl];
                let a26 = wt[wc26 + wl];
                let a27 = wt[wc27 + wl];
                let a28 = wt[wc28 + wl];
                let a29 = wt[wc29 + wl];
                let a30 = wt[wc30 + wl];
                let a31 = wt[wc31 + wl];
                for (var kk = 0u; kk < 8u; kk++) {
                    let yo = (oc0 + kk) * ohw;
                    let bv0 = vec4<f32>(select(0.0, dy[o0 + yo], ok0), select(0.0, dy[o1 + yo], ok1), select(0.0, dy[o2 + yo], ok2), select(0.0, dy[o3 + yo], ok3));
                    acc0 = fma(vec4<f32>(subgroupShuffle(a0, kk)), bv0, acc0);
                    acc1 = fma(vec4<f32>(subgroupShuffle(a1, kk)), bv0, acc1);
                    acc2 = fma(vec4<f32>(subgroupShuffle(a2, kk)), bv0, acc2);
                    acc3 = fma(vec4<f32>(subgroupShuffle(a3, kk)), bv0, acc3);
                    acc4 = fma(vec4<f32>(subgroupShuffle(a4, kk)), bv0, acc4);
                    acc5 = fma(vec4<f32>(subgroupShuffle(a5, kk)), bv0, acc5);
                    acc6 = fma(vec4<f32>(subgroupShuffle(a6, kk)), bv0, acc6);
                    acc7 = fma(vec4<f32>(subgroupShuffle(a7, kk)), bv0, acc7);
                    acc8 = fma(vec4<f32>(subgroupShuffle(a8, kk)), bv0, acc8);
                    acc9 = fma(vec4<f32>(subgroupShuffle(a9, kk)), bv0, acc9);
                    acc10 = fma(vec4<f32>(subgroupShuffle(a10, kk)), bv0, acc10);
                    acc11 = fma(vec4<f32>(subgroupShuffle(a11, kk)), bv0, acc11);
                    acc12 = fma(vec4<f32>(subgroupShuffle(a12, kk)), bv0, acc12);
                    acc13 = fma(vec4<f32>(subgroupShuffle(a13, kk)), bv0, acc13);
                    acc14 = fma(vec4<f32>(subgroupShuffle(a14, kk)), bv0, acc14);
                    acc15 = fma(vec4<f32>(subgroupShuffle(a15, kk)), bv0, acc15);
                    acc16 = fma(vec4<f32>(subgroupShuffle(a16, kk)), bv0, acc16);
                    acc17 = fma(vec4<f32>(subgroupShuffle(a17, kk)), bv0, acc17);
                    acc18 = fma(vec4<f32>(subgroupShuffle(a18, kk)), bv0, acc18);
                    acc19 = fma(vec4<f32>(subgroupShuffle(a19, kk)), bv0, acc19);
                    acc20 = fma(vec4<f32>(subgroupShuffle(a20, kk)), bv0, acc20);
                    acc21 = fma(vec4<f32>(subgroupShuffle(a21, kk)), bv0, acc21);
                    acc22 = fma(vec4<f32>(subgroupShuffle(a22, kk)), bv0, acc22);
                    acc23 = fma(vec4<f32>(subgroupShuffle(a23, kk)), bv0, acc23);
                    acc24 = fma(vec4<f32>(subgroupShuffle(a24, kk)), bv0, acc24);
                    acc25 = fma(vec4<f32>(subgroupShuffle(a25, kk)), bv0, acc25);
                    acc26 = fma(vec4<f32>(subgroupShuffle(a26, kk)), bv0, acc26);
                    acc27 = fma(vec4<f32>(subgroupShuffle(a27, kk)), bv0, acc27);
                    acc28 = fma(vec4<f32>(subgroupShuffle(a28, kk)), bv0, acc28);
                    acc29 = fma(vec4<f32>(subgroupShuffle(a29, kk)), bv0, acc29);
                    acc30 = fma(vec4<f32>(subgroupShuffle(a30, kk)), bv0, acc30);
                    acc31 = fma(vec4<f32>(subgroupShuffle(a31, kk)), bv0, acc31);
                }
            }
            // The last cout % 8 (all of them where the lanes cannot share): every invocation loads
            // its own weights.
            for (var oc = ocfull; oc < p.cout; oc++) {
                let yo = oc * ohw;
                let wl = tap + oc * wstep;
                let bv0 = vec4<f32>(select(0.0, dy[o0 + yo], ok0), select(0.0, dy[o1 + yo], ok1), select(0.0, dy[o2 + yo], ok2), select(0.0, dy[o3 + yo], ok3));
                acc0 = fma(vec4<f32>(wt[wc0 + wl]), bv0, acc0);
                acc1 = fma(vec4<f32>(wt[wc1 + wl]), bv0, acc1);
                acc2 = fma(vec4<f32>(wt[wc2 + wl]), bv0, acc2);
                acc3 = fma(vec4<f32>(wt[wc3 + wl]), bv0, acc3);
                acc4 = fma(vec4<f32>(wt[wc4 + wl]), bv0, acc4);
                acc5 = fma(vec4<f32>(wt[wc5 + wl]), bv0, acc5);
                acc6 = fma(vec4<f32>(wt[wc6 + wl]), bv0, acc6);
                acc7 = fma(vec4<f32>(wt[wc7 + wl]), bv0, acc7);
                acc8 = fma(vec4<f32>(wt[wc8 + wl]), bv0, acc8);
                acc9 = fma(vec4<f32>(wt[wc9 + wl]), bv0, acc9);
                acc10 = fma(vec4<f32>(wt[wc10 + wl]), bv0, acc10);
                acc11 = fma(vec4<f32>(wt[wc11 + wl]), bv0, acc11);
                acc12 = fma(vec4<f32>(wt[wc12 + wl]), bv0, acc12);
                acc13 = fma(vec4<f32>(wt[wc13 + wl]), bv0, acc13);
                acc14 = fma(vec4<f32>(wt[wc14 + wl]), bv0, acc14);
                acc15 = fma(vec4<f32>(wt[wc15 + wl]), bv0, acc15);
                acc16 = fma(vec4<f32>(wt[wc16 + wl]), bv0, acc16);
                acc17 = fma(vec4<f32>(wt[wc17 + wl]), bv0, acc17);
                acc18 = fma(vec4<f32>(wt[wc18 + wl]), bv0, acc18);
                acc19 = fma(vec4<f32>(wt[wc19 + wl]), bv0, acc19);
                acc20 = fma(vec4<f32>(wt[wc20 + wl]), bv0, acc20);
                acc21 = fma(vec4<f32>(wt[wc21 + wl]), bv0, acc21);
                acc22 = fma(vec4<f32>(wt[wc22 + wl]), bv0, acc22);
                acc23 = fma(vec4<f32>(wt[wc23 + wl]), bv0, acc23);
                acc24 = fma(vec4<f32>(wt[wc24 + wl]), bv0, acc24);
                acc25 = fma(vec4<f32>(wt[wc25 + wl]), bv0, acc25);
                acc26 = fma(vec4<f32>(wt[wc26 + wl]), bv0, acc26);
                acc27 = fma(vec4<f32>(wt[wc27 + wl]), bv0, acc27);
                acc28 = fma(vec4<f32>(wt[wc28 + wl]), bv0, acc28);
                acc29 = fma(vec4<f32>(wt[wc29 + wl]), bv0, acc29);
                acc30 = fma(vec4<f32>(wt[wc30 + wl]), bv0, acc30);
                acc31 = fma(vec4<f32>(wt[wc31 + wl]), bv0, acc31);
            }
            l += 1;
        }
        j += 1;
    }
    let hw = p.h * p.w;
    let xb = array<u32, 4>(m0 / nq * p.cin * hw + (s * (m0 % nq / nx) + cy) * p.w + s * (m0 % nq % nx) + cx, m1 / nq * p.cin * hw + (s * (m1 % nq / nx) + cy) * p.w + s * (m1 % nq % nx) + cx, m2 / nq * p.cin * hw + (s * (m2 % nq / nx) + cy) * p.w + s * (m2 % nq % nx) + cx, m3 / nq * p.cin * hw + (s * (m3 % nq / nx) + cy) * p.w + s * (m3 % nq % nx) + cx);
    store_row(c0 + 0u, 0u, pb, rows, xb, acc0);
    store_row(c0 + 1u, 0u, pb, rows, xb, acc1);
    store_row(c0 + 2u, 0u, pb, rows, xb, acc2);
    store_row(c0 + 3u, 0u, pb, rows, xb, acc3);
    store_row(c0 + 4u, 0u, pb, rows, xb, acc4);
    store_row(c0 + 5u, 0u, pb, rows, xb, acc5);
    store_row(c0 + 6u, 0u, pb, rows, xb, acc6);
    store_row(c0 + 7u, 0u, pb, rows, xb, acc7);
    store_row(c0 + 8u, 0u, pb, rows, xb, acc8);
    store_row(c0 + 9u, 0u, pb, rows, xb, acc9);
    store_row(c0 + 10u, 0u, pb, rows, xb, acc10);
    store_row(c0 + 11u, 0u, pb, rows, xb, acc11);
    store_row(c0 + 12u, 0u, pb, rows, xb, acc12);
    store_row(c0 + 13u, 0u, pb, rows, xb, acc13);
    store_row(c0 + 14u, 0u, pb, rows, xb, acc14);
    store_row(c0 + 15u, 0u, pb, rows, xb, acc15);
    store_row(c0 + 16u, 0u, pb, rows, xb, acc16);
    store_row(c0 + 17u, 0u, pb, rows, xb, acc17);
    store_row(c0 + 18u, 0u, pb, rows, xb, acc18);
    store_row(c0 + 19u, 0u, pb, rows, xb, acc19);
    store_row(c0 + 20u, 0u, pb, rows, xb, acc20);
    store_row(c0 + 21u, 0u, pb, rows, xb, acc21);
    store_row(c0 + 22u, 0u, pb, rows, xb, acc22);
    store_row(c0 + 23u, 0u, pb, rows, xb, acc23);
    store_row(c0 + 24u, 0u, pb, rows, xb, acc24);
    store_row(c0 + 25u, 0u, pb, rows, xb, acc25);
    store_row(c0 + 26u, 0u, pb, rows, xb, acc26);
    store_row(c0 + 27u, 0u, pb, rows, xb, acc27);
    store_row(c0 + 28u, 0u, pb, rows, xb, acc28);
    store_row(c0 + 29u, 0u, pb, rows, xb, acc29);
    store_row(c0 + 30u, 0u, pb, rows, xb, acc30);
    store_row(c0 + 31u, 0u, pb, rows, xb, acc31);
}
