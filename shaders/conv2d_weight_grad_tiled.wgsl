// Variant of conv2d_weight_grad.wgsl for GPUs with fast workgroup memory (see
// crates/fsnn/src/variants.rs); same parameters, bindings and result:
// dw[oc, c, ky, kx] = Σ_{b, oy, ox} dy[b, oc, oy, ox] · x[b, c, oy·s + ky − pad, ox·s + kx − pad].
// Implicit GEMM as in gemm_tiled.wgsl: rows are output channels, columns (c, ky, kx), and the long
// reduction over (b, oy, ox) runs in steps of 16 through workgroup memory, which holds 16 pixels
// of dy for 64 channels and the matching 16 input taps for 64 columns.
struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, stride: u32, pad: u32, _pad: u32,
    alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;

#import tile

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let khw = p.kh * p.kw;
    let cols = p.cin * khw;
    let m0 = wid.y * TILE;
    let n0 = wid.x * TILE;
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let kdim = p.batch * ohw;
    // Both operands: neighbouring invocations stage neighbouring pixels of the reduction.
    let kk_l = t % 16u;
    let v = t / 16u;
    var ro: array<u32, 4>;
    var xo: array<u32, 4>;
    var kyp: array<i32, 4>;
    var kxp: array<i32, 4>;
    for (var j = 0u; j < 4u; j++) {
        ro[j] = min(m0 + v * 4u + j, p.cout - 1u) * ohw;
        let n = min(n0 + v * 4u + j, cols - 1u);
        xo[j] = (n / khw) * hw;
        let r = n % khw;
        kyp[j] = i32(r / p.kw) - i32(p.pad);
        kxp[j] = i32(r % p.kw) - i32(p.pad);
    }
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < kdim; k0 += KSTEP) {
        let r = k0 + kk_l;
        let ok_r = r < kdim;
        let rc = min(r, kdim - 1u);
        let bi = rc / ohw;
        let q = rc % ohw;
        let yb = bi * p.cout * ohw + q;
        let da = vec4<f32>(dy[yb + ro[0]], dy[yb + ro[1]], dy[yb + ro[2]], dy[yb + ro[3]]);
        sa[kk_l * 16u + v] = select(vec4<f32>(0.0), da, ok_r);
        let xb = bi * p.cin * hw;
        let iys = i32((q / p.ow) * p.stride);
        let ixs = i32((q % p.ow) * p.stride);
        var xv = vec4<f32>(0.0);
        for (var j = 0u; j < 4u; j++) {
            let iy = iys + kyp[j];
            let ix = ixs + kxp[j];
            let ok = ok_r && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
            let idx = select(0u, xb + xo[j] + u32(iy) * p.w + u32(ix), ok);
            xv[j] = select(0.0, x[idx], ok);
        }
        sb[kk_l * 16u + v] = xv;
        workgroupBarrier();
        tile_step(&acc, lid);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y * 4u + i;
        if (m >= p.cout) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x * 4u + j;
            if (n < cols) {
                let idx = m * cols + n;
                var val = p.alpha * acc[i][j];
                if (p.beta != 0.0) {
                    val = val + p.beta * dw[idx];
                }
                dw[idx] = val;
            }
        }
    }
}
