// Variant of conv2d_input_grad.wgsl for GPUs with fast workgroup memory (see
// crates/fsnn/src/variants.rs); same parameters, bindings, grid and result: dx = convᵀ(dy, w), also
// the forward pass of a transposed convolution. Implicit GEMM as in gemm_tiled.wgsl: rows are input
// pixels, columns input channels, the reduction over (cout, ky, kx) runs in steps of 16 through
// workgroup memory. As in conv2d_input_grad.wgsl, pixels are split into stride × stride parity
// classes (workgroup z), inside which the contributing taps are ky = ry + s·jy, kx = rx + s·jx: the
// reduction runs over exactly those, with no zero taps staged.
struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, stride: u32, pad: u32, _pad: u32,
    alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

#import tile

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
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
    let m0 = wid.y * TILE;
    let n0 = wid.x * TILE;
    if (m0 >= rows || n0 >= p.cin) {
        return;
    }
    let ohw = p.oh * p.ow;
    let khw = p.kh * p.kw;
    // Taps of this class and the output pixel the jy-th, jx-th reads: oy = qy + dy0 − jy.
    let ry = (cy + p.pad) % s;
    let rx = (cx + p.pad) % s;
    let dy0 = i32((cy + p.pad) / s);
    let dx0 = i32((cx + p.pad) / s);
    let nky = select(0u, (p.kh - ry + s - 1u) / s, ry < p.kh);
    let nkx = select(0u, (p.kw - rx + s - 1u) / s, rx < p.kw);
    let ntap = nky * nkx;
    let kdim = p.cout * ntap;
    let ka = t / 16u;
    let va = t % 16u;
    let kb = t % 16u;
    let vb = t / 16u;
    var yb: array<u32, 4>;
    var qy: array<i32, 4>;
    var qx: array<i32, 4>;
    var wc: array<u32, 4>;
    for (var j = 0u; j < 4u; j++) {
        let m = min(m0 + va * 4u + j, rows - 1u);
        let q = m % nq;
        yb[j] = (m / nq) * p.cout * ohw;
        qy[j] = i32(q / nx) + dy0;
        qx[j] = i32(q % nx) + dx0;
        wc[j] = min(n0 + vb * 4u + j, p.cin - 1u) * khw;
    }
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < kdim; k0 += KSTEP) {
        // One tap (oc, jy, jx) of four pixel rows.
        let ra = k0 + ka;
        let ok_a = ra < kdim;
        let rc = min(ra, kdim - 1u);
        let oc = rc / ntap;
        let rem = rc % ntap;
        let jy = i32(rem / nkx);
        let jx = i32(rem % nkx);
        let ocoff = oc * ohw;
        var pa = vec4<f32>(0.0);
        for (var j = 0u; j < 4u; j++) {
            let oy = qy[j] - jy;
            let ox = qx[j] - jx;
            let ok = ok_a && oy >= 0 && ox >= 0 && oy < i32(p.oh) && ox < i32(p.ow);
            let idx = select(0u, yb[j] + ocoff + u32(oy) * p.ow + u32(ox), ok);
            pa[j] = select(0.0, dy[idx], ok);
        }
        sa[ka * 16u + va] = pa;
        // Weight [oc, c, ky, kx] of four input channels c at one tap.
        let rb = k0 + kb;
        let ob = min(rb, kdim - 1u);
        let tb = ob % ntap;
        let wo = (ob / ntap) * p.cin * khw + (ry + s * (tb / nkx)) * p.kw + rx + s * (tb % nkx);
        let wv = vec4<f32>(wt[wc[0] + wo], wt[wc[1] + wo], wt[wc[2] + wo], wt[wc[3] + wo]);
        sb[kb * 16u + vb] = select(vec4<f32>(0.0), wv, rb < kdim);
        workgroupBarrier();
        tile_step(&acc, lid);
        workgroupBarrier();
    }
    let hw = p.h * p.w;
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y * 4u + i;
        if (m >= rows) {
            break;
        }
        let bi = m / nq;
        let q = m % nq;
        let pix = (s * (q / nx) + cy) * p.w + s * (q % nx) + cx;
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x * 4u + j;
            if (n < p.cin) {
                let idx = (bi * p.cin + n) * hw + pix;
                var v = p.alpha * acc[i][j];
                if (p.beta != 0.0) {
                    v = v + p.beta * dx[idx];
                }
                dx[idx] = v;
            }
        }
    }
}
