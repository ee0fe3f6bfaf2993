// Gradient of a 2-D convolution with respect to its input: dx = convᵀ(dy, w). The same product is
// the forward pass of a transposed convolution (the multi-layer feedback), with dy its input and
// (h, w) its output size. Implicit GEMM: rows are input pixels, columns input channels, the
// reduction runs over (cout, ky, kx); only taps with (pixel + pad - k) divisible by the stride
// contribute.
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

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let hw = p.h * p.w;
    let rows = p.batch * hw;
    let m0 = gid.y * 8u;
    let n0 = gid.x * 8u;
    if (m0 >= rows || n0 >= p.cin) {
        return;
    }
    let ohw = p.oh * p.ow;
    let khw = p.kh * p.kw;
    let s = i32(p.stride);
    var yb: array<u32, 8>;
    var ty0: array<i32, 8>;
    var tx0: array<i32, 8>;
    var wc: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let m = min(m0 + i, rows - 1u);
        let b = m / hw;
        let q = m % hw;
        yb[i] = b * p.cout * ohw;
        ty0[i] = i32(q / p.w) + i32(p.pad);
        tx0[i] = i32(q % p.w) + i32(p.pad);
        wc[i] = min(n0 + i, p.cin - 1u) * khw;
    }
    var acc: array<vec4<f32>, 16>;
    for (var oc = 0u; oc < p.cout; oc++) {
        let ocoff = oc * ohw;
        let wo = oc * p.cin * khw;
        for (var ky = 0u; ky < p.kh; ky++) {
            for (var kx = 0u; kx < p.kw; kx++) {
                let kidx = wo + ky * p.kw + kx;
                let b0 = vec4<f32>(wt[wc[0] + kidx], wt[wc[1] + kidx], wt[wc[2] + kidx], wt[wc[3] + kidx]);
                let b1 = vec4<f32>(wt[wc[4] + kidx], wt[wc[5] + kidx], wt[wc[6] + kidx], wt[wc[7] + kidx]);
                for (var i = 0u; i < 8u; i++) {
                    let ty = ty0[i] - i32(ky);
                    let tx = tx0[i] - i32(kx);
                    let oy = ty / s;
                    let ox = tx / s;
                    let ok = ty >= 0 && tx >= 0 && oy * s == ty && ox * s == tx
                        && oy < i32(p.oh) && ox < i32(p.ow);
                    let idx = select(0u, yb[i] + ocoff + u32(oy) * p.ow + u32(ox), ok);
                    let av = select(0.0, dy[idx], ok);
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
        let b = m / hw;
        let q = m % hw;
        for (var j = 0u; j < 8u; j++) {
            let n = n0 + j;
            if (n < p.cin) {
                let idx = (b * p.cin + n) * hw + q;
                var v = p.alpha * acc[2u * i + j / 4u][j % 4u];
                if (p.beta != 0.0) {
                    v = v + p.beta * dx[idx];
                }
                dx[idx] = v;
            }
        }
    }
}
