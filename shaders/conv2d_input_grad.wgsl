// Gradient of a 2-D convolution with respect to its input: dx = convᵀ(dy, w). The same product is
// the forward pass of a transposed convolution (the multi-layer feedback), with dy its input and
// (h, w) its output size. Implicit GEMM: rows are input pixels, columns input channels, the
// reduction runs over (cout, ky, kx).
//
// With stride s only the taps ky ≡ (y + pad) mod s reach pixel y. Pixels are therefore split into
// s × s parity classes (workgroup z): inside one class every row of a tile takes the same taps, so
// the loops step by s over exactly the contributing taps, with no division and no wasted work.
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
    let s = p.stride;
    let cy = gid.z / s;
    let cx = gid.z % s;
    if (cy >= p.h || cx >= p.w) {
        return;
    }
    // Pixels of this class: y = s·qy + cy, x = s·qx + cx.
    let ny = (p.h - cy + s - 1u) / s;
    let nx = (p.w - cx + s - 1u) / s;
    let nq = ny * nx;
    let rows = p.batch * nq;
    let m0 = gid.y * 8u;
    let n0 = gid.x * 8u;
    if (m0 >= rows || n0 >= p.cin) {
        return;
    }
    let ohw = p.oh * p.ow;
    let khw = p.kh * p.kw;
    // First contributing tap, and the output row it reads: oy = qy + dy0 − j for the j-th tap.
    let ry = (cy + p.pad) % s;
    let rx = (cx + p.pad) % s;
    let dy0 = i32((cy + p.pad) / s);
    let dx0 = i32((cx + p.pad) / s);
    var yb: array<u32, 8>;
    var qy: array<i32, 8>;
    var qx: array<i32, 8>;
    var wc: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let m = min(m0 + i, rows - 1u);
        let q = m % nq;
        yb[i] = (m / nq) * p.cout * ohw;
        qy[i] = i32(q / nx) + dy0;
        qx[i] = i32(q % nx) + dx0;
        wc[i] = min(n0 + i, p.cin - 1u) * khw;
    }
    var acc: array<vec4<f32>, 16>;
    for (var oc = 0u; oc < p.cout; oc++) {
        let ocoff = oc * ohw;
        let wo = oc * p.cin * khw;
        var j = 0;
        for (var ky = ry; ky < p.kh; ky += s) {
            var l = 0;
            for (var kx = rx; kx < p.kw; kx += s) {
                let kidx = wo + ky * p.kw + kx;
                let b0 = vec4<f32>(wt[wc[0] + kidx], wt[wc[1] + kidx], wt[wc[2] + kidx], wt[wc[3] + kidx]);
                let b1 = vec4<f32>(wt[wc[4] + kidx], wt[wc[5] + kidx], wt[wc[6] + kidx], wt[wc[7] + kidx]);
                for (var i = 0u; i < 8u; i++) {
                    let oy = qy[i] - j;
                    let ox = qx[i] - l;
                    let ok = oy >= 0 && ox >= 0 && oy < i32(p.oh) && ox < i32(p.ow);
                    let idx = select(0u, yb[i] + ocoff + u32(oy) * p.ow + u32(ox), ok);
                    let av = select(0.0, dy[idx], ok);
                    acc[2u * i] = fma(vec4<f32>(av), b0, acc[2u * i]);
                    acc[2u * i + 1u] = fma(vec4<f32>(av), b1, acc[2u * i + 1u]);
                }
                l += 1;
            }
            j += 1;
        }
    }
    let hw = p.h * p.w;
    for (var i = 0u; i < 8u; i++) {
        let m = m0 + i;
        if (m >= rows) {
            break;
        }
        let b = m / nq;
        let q = m % nq;
        let pix = (s * (q / nx) + cy) * p.w + s * (q % nx) + cx;
        for (var jj = 0u; jj < 8u; jj++) {
            let n = n0 + jj;
            if (n < p.cin) {
                let idx = (b * p.cin + n) * hw + pix;
                var v = p.alpha * acc[2u * i + jj / 4u][jj % 4u];
                if (p.beta != 0.0) {
                    v = v + p.beta * dx[idx];
                }
                dx[idx] = v;
            }
        }
    }
}
