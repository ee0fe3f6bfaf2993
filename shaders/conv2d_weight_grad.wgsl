// Gradient of a 2-D convolution with respect to its weight:
// dw[oc, c, ky, kx] = Σ_{b, oy, ox} dy[b, oc, oy, ox] · x[b, c, oy·s + ky − pad, ox·s + kx − pad].
// Rows are output channels, columns (c, ky, kx); the long reduction over batch and pixels runs
// inside each invocation. With dy and x swapped in role it is also the weight gradient of a
// transposed convolution.
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

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let khw = p.kh * p.kw;
    let cols = p.cin * khw;
    let m0 = gid.y * 8u;
    let n0 = gid.x * 8u;
    if (m0 >= p.cout || n0 >= cols) {
        return;
    }
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    var ro: array<u32, 8>;
    var xo: array<u32, 8>;
    var ky: array<i32, 8>;
    var kx: array<i32, 8>;
    for (var i = 0u; i < 8u; i++) {
        ro[i] = min(m0 + i, p.cout - 1u) * ohw;
        let n = min(n0 + i, cols - 1u);
        xo[i] = (n / khw) * hw;
        let r = n % khw;
        ky[i] = i32(r / p.kw) - i32(p.pad);
        kx[i] = i32(r % p.kw) - i32(p.pad);
    }
    var acc: array<vec4<f32>, 16>;
    for (var b = 0u; b < p.batch; b++) {
        let yb = b * p.cout * ohw;
        let xb = b * p.cin * hw;
        for (var oy = 0u; oy < p.oh; oy++) {
            let iys = i32(oy * p.stride);
            for (var ox = 0u; ox < p.ow; ox++) {
                let ixs = i32(ox * p.stride);
                let q = oy * p.ow + ox;
                var bv: array<f32, 8>;
                for (var j = 0u; j < 8u; j++) {
                    let iy = iys + ky[j];
                    let ix = ixs + kx[j];
                    let ok = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
                    let idx = select(0u, xb + xo[j] + u32(iy) * p.w + u32(ix), ok);
                    bv[j] = select(0.0, x[idx], ok);
                }
                let b0 = vec4<f32>(bv[0], bv[1], bv[2], bv[3]);
                let b1 = vec4<f32>(bv[4], bv[5], bv[6], bv[7]);
                for (var i = 0u; i < 8u; i++) {
                    let av = dy[yb + ro[i] + q];
                    acc[2u * i] = fma(vec4<f32>(av), b0, acc[2u * i]);
                    acc[2u * i + 1u] = fma(vec4<f32>(av), b1, acc[2u * i + 1u]);
                }
            }
        }
    }
    for (var i = 0u; i < 8u; i++) {
        let m = m0 + i;
        if (m >= p.cout) {
            break;
        }
        for (var j = 0u; j < 8u; j++) {
            let n = n0 + j;
            if (n < cols) {
                let idx = m * cols + n;
                var v = p.alpha * acc[2u * i + j / 4u][j % 4u];
                if (p.beta != 0.0) {
                    v = v + p.beta * dw[idx];
                }
                dw[idx] = v;
            }
        }
    }
}
