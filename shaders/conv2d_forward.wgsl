// 2-D convolution (NCHW, weight [cout, cin, kh, kw], no bias) as an implicit GEMM:
// rows are output pixels (batch × oh × ow), columns output channels, the reduction runs over
// (cin, ky, kx) in nested loops so no index is ever divided inside the loop. Each invocation keeps
// an 8 pixel × 8 channel block in registers, as gemm.wgsl does.
// Also the input-gradient of a transposed convolution.
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

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ohw = p.oh * p.ow;
    let rows = p.batch * ohw;
    let m0 = gid.y * 8u;
    let n0 = gid.x * 8u;
    if (m0 >= rows || n0 >= p.cout) {
        return;
    }
    let hw = p.h * p.w;
    let khw = p.kh * p.kw;
    var xb: array<u32, 8>;
    var iy0: array<i32, 8>;
    var ix0: array<i32, 8>;
    var wb: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let m = min(m0 + i, rows - 1u);
        let b = m / ohw;
        let q = m % ohw;
        xb[i] = b * p.cin * hw;
        iy0[i] = i32((q / p.ow) * p.stride) - i32(p.pad);
        ix0[i] = i32((q % p.ow) * p.stride) - i32(p.pad);
        wb[i] = min(n0 + i, p.cout - 1u) * p.cin * khw;
    }
    var acc: array<vec4<f32>, 16>;
    for (var c = 0u; c < p.cin; c++) {
        for (var ky = 0u; ky < p.kh; ky++) {
            for (var kx = 0u; kx < p.kw; kx++) {
                let kidx = (c * p.kh + ky) * p.kw + kx;
                let b0 = vec4<f32>(wt[wb[0] + kidx], wt[wb[1] + kidx], wt[wb[2] + kidx], wt[wb[3] + kidx]);
                let b1 = vec4<f32>(wt[wb[4] + kidx], wt[wb[5] + kidx], wt[wb[6] + kidx], wt[wb[7] + kidx]);
                let coff = c * hw;
                for (var i = 0u; i < 8u; i++) {
                    let iy = iy0[i] + i32(ky);
                    let ix = ix0[i] + i32(kx);
                    let ok = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
                    let idx = select(0u, xb[i] + coff + u32(iy) * p.w + u32(ix), ok);
                    let av = select(0.0, x[idx], ok);
                    acc[2u * i] = fma(vec4<f32>(av), b0, acc[2u * i]);
                    acc[2u * i + 1u] = fma(vec4<f32>(av), b1, acc[2u * i + 1u]);
                }
            }
        }
    }
    for (var i = 0u; i < 8u; i++) {
        let m = m0 + i;
        if (m >= rows) {
            break;
        }
        let b = m / ohw;
        let q = m % ohw;
        for (var j = 0u; j < 8u; j++) {
            let n = n0 + j;
            if (n < p.cout) {
                let idx = (b * p.cout + n) * ohw + q;
                var v = p.alpha * acc[2u * i + j / 4u][j % 4u];
                if (p.beta != 0.0) {
                    v = v + p.beta * y[idx];
                }
                y[idx] = v;
            }
        }
    }
}
