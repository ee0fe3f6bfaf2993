// Variant of conv2d_forward.wgsl for GPUs with fast workgroup memory (see
// crates/fsnn/src/variants.rs); same parameters, bindings and result. Implicit GEMM as in
// gemm_tiled.wgsl: a workgroup of 16×16 invocations computes 64 output pixels × 64 output
// channels, each invocation 4 × 4; the reduction over (cin, ky, kx) runs in steps of 16 through
// workgroup memory, which holds a 16-tap slab of input patches (im2col on the fly, zero outside the
// image) and of weights. Also the input-gradient of a transposed convolution.
struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, stride: u32, pad: u32, _pad: u32,
    alpha: f32, beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

#import tile

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let ohw = p.oh * p.ow;
    let rows = p.batch * ohw;
    let m0 = wid.y * TILE;
    let n0 = wid.x * TILE;
    let hw = p.h * p.w;
    let khw = p.kh * p.kw;
    let kdim = p.cin * khw;
    // Patch rows: neighbouring invocations stage neighbouring output pixels. Weight columns:
    // neighbouring invocations stage neighbouring taps of one output channel.
    let ka = t / 16u;
    let va = t % 16u;
    let kb = t % 16u;
    let vb = t / 16u;
    var xb: array<u32, 4>;
    var iy0: array<i32, 4>;
    var ix0: array<i32, 4>;
    var wb: array<u32, 4>;
    for (var j = 0u; j < 4u; j++) {
        let m = min(m0 + va * 4u + j, rows - 1u);
        let bi = m / ohw;
        let q = m % ohw;
        xb[j] = bi * p.cin * hw;
        iy0[j] = i32((q / p.ow) * p.stride) - i32(p.pad);
        ix0[j] = i32((q % p.ow) * p.stride) - i32(p.pad);
        wb[j] = min(n0 + vb * 4u + j, p.cout - 1u) * kdim;
    }
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < kdim; k0 += KSTEP) {
        // One tap (c, ky, kx) of four patch rows.
        let ra = k0 + ka;
        let ok_a = ra < kdim;
        let rc = min(ra, kdim - 1u);
        let c = rc / khw;
        let rem = rc % khw;
        let ky = i32(rem / p.kw);
        let kx = i32(rem % p.kw);
        let coff = c * hw;
        var pa = vec4<f32>(0.0);
        for (var j = 0u; j < 4u; j++) {
            let iy = iy0[j] + ky;
            let ix = ix0[j] + kx;
            let ok = ok_a && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
            let idx = select(0u, xb[j] + coff + u32(iy) * p.w + u32(ix), ok);
            pa[j] = select(0.0, x[idx], ok);
        }
        sa[ka * 16u + va] = pa;
        // One tap of four output channels' weights.
        let rb = k0 + kb;
        let ob = min(rb, kdim - 1u);
        let wv = vec4<f32>(wt[wb[0] + ob], wt[wb[1] + ob], wt[wb[2] + ob], wt[wb[3] + ob]);
        sb[kb * 16u + vb] = select(vec4<f32>(0.0), wv, rb < kdim);
        workgroupBarrier();
        tile_step(&acc, lid);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y * 4u + i;
        if (m >= rows) {
            break;
        }
        let bi = m / ohw;
        let q = m % ohw;
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x * 4u + j;
            if (n < p.cout) {
                let idx = (bi * p.cout + n) * ohw + q;
                var v = p.alpha * acc[i][j];
                if (p.beta != 0.0) {
                    v = v + p.beta * y[idx];
                }
                y[idx] = v;
            }
        }
    }
}
