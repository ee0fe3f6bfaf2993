#!/usr/bin/env python3
"""Generates shaders/conv2d_*_coop.wgsl, whose per-row statements are written out (lavapipe keeps
arrays indexed in loops in memory; see docs/BENCHMARKS.md, "what a kernel costs on lavapipe").

    tools/gen-coop-conv.py [OUTDIR]            # every kernel at its measured block shape
    tools/gen-coop-conv.py OUTDIR R C          # every kernel at R rows x C columns (to measure)

Edit this file, not the generated kernels, and commit both.
"""
import sys, os

# Rows x columns per invocation, chosen by measurement (docs/BENCHMARKS.md).
SHAPES = {
    "conv2d_forward_coop": (32, 8),
    "conv2d_input_grad_coop": (32, 4),
    "conv2d_weight_grad_coop": (32, 8),
}
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "shaders")
FORCED = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else None
R = C = CV = 0


def set_shape(r, c):
    global R, C, CV
    assert c % 4 == 0 and r % 8 == 0
    R, C, CV = r, c, c // 4

PARAMS = """struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, stride: u32, pad: u32, unshared: u32,
    alpha: f32, beta: f32,
}
"""

ENTRY = """@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
"""

COOP = """    let coop = p.unshared == 0u && sg_size >= 8u && subgroupAll(lane == t);
"""


def ind(n):
    return "    " * n


def consts(rows_what, cols_what):
    return (f"const R: u32 = {R}u;  // {rows_what} per workgroup (the statements below are written out for each)\n"
            f"const C: u32 = {C}u;  // {cols_what} per invocation, 8 apart\n")


def accs():
    s = ""
    for r in range(R):
        for v in range(CV):
            s += f"    var acc{r}{'_' + str(v) if CV > 1 else ''} = vec4<f32>(0.0);\n"
    return s


def accname(r, v):
    return f"acc{r}{'_' + str(v) if CV > 1 else ''}"


def fma_lines(n, aexpr):
    """aexpr(r) -> scalar expression of row r's shared value."""
    s = ""
    for r in range(R):
        a = aexpr(r)
        if CV == 1:
            s += f"{ind(n)}{accname(r,0)} = fma(vec4<f32>({a}), bv0, {accname(r,0)});\n"
        else:
            s += f"{ind(n)}let s{r} = vec4<f32>({a});\n"
            for v in range(CV):
                s += f"{ind(n)}{accname(r,v)} = fma(s{r}, bv{v}, {accname(r,v)});\n"
    return s


def bvs(n, val):
    """val(j) -> scalar expression of column j's own value."""
    s = ""
    for v in range(CV):
        s += f"{ind(n)}let bv{v} = vec4<f32>({', '.join(val(4*v+i) for i in range(4))});\n"
    return s


def stores(n, row_expr):
    s = ""
    for r in range(R):
        for v in range(CV):
            s += f"{ind(n)}store_row({row_expr(r)}, {v * 32}u, {accname(r,v)});\n"
    return s


# ----------------------------------------------------------------------------- forward
def forward():
    s = f"""// Variant of conv2d_forward.wgsl for CPU drivers (lavapipe), where every storage-buffer load an
// invocation makes costs a scalar, bounds-checked load per SIMD lane while arithmetic runs on all
// lanes at once (see gemm_coop.wgsl). Implicit GEMM with the output channels as the shared rows:
// the reduction runs over (cin, ky, kx) in the weight's own order, so the 8 invocations of a
// workgroup (one subgroup on lavapipe) load 8 consecutive reduction entries of each weight row
// with one contiguous load each and pass them round with constant-lane shuffles; each invocation
// gathers its own {C} output pixels' input values, which all rows then use. A workgroup covers
// {R} output channels × {8*C} output pixels. Where the subgroup cannot share (smaller than 8, lanes
// not in invocation order) or `unshared` is set (tests cover that path with it), every invocation
// loads its own weights instead: slower, same result. Same parameters and bindings as
// conv2d_forward.wgsl. Also the input-gradient of a transposed convolution.
{PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

{consts("output channels", "output pixels")}
// Column j of this invocation is pixel pb + 8·j, whose output starts at yb[j] (channel 0).
fn store_row(n: u32, j0: u32, pb: u32, yb: array<u32, {C}>, v: vec4<f32>) {{
    let npix = p.batch * p.oh * p.ow;
    if (n >= p.cout) {{
        return;
    }}
    for (var i = 0u; i < 4u; i++) {{
        let j = j0 / 8u + i;
        if (pb + 8u * j < npix) {{
            let idx = yb[j] + n * p.oh * p.ow;
            var r = p.alpha * v[i];
            if (p.beta != 0.0) {{
                r = r + p.beta * y[idx];
            }}
            y[idx] = r;
        }}
    }}
}}

{ENTRY}    let ohw = p.oh * p.ow;
    let npix = p.batch * ohw;
    let hw = p.h * p.w;
    let kred = p.cin * p.kh * p.kw;
    let n0 = wid.y * R;
    let pb = wid.x * 8u * C + t;
    // Pixels past the end read the last one; their results are dropped at the store.
"""
    for j in range(C):
        s += f"""    let m{j} = min(pb + {8*j}u, npix - 1u);
    let xb{j} = m{j} / ohw * p.cin * hw;
    let iy{j} = i32(m{j} % ohw / p.ow * p.stride) - i32(p.pad);
    let ix{j} = i32(m{j} % ohw % p.ow * p.stride) - i32(p.pad);
"""
    for r in range(R):
        s += f"    let wr{r} = min(n0 + {r}u, p.cout - 1u) * kred;\n"
    s += accs()
    s += COOP
    s += """    var kfull = 0u;
    if (coop) {
        kfull = kred / 8u * 8u;
    }
    // (c, ky, kx) of the reduction entry being accumulated, walked by all invocations together.
    var coff = 0u;
    var ky = 0;
    var kx = 0;
"""
    def own(n):
        o = ""
        for j in range(C):
            o += f"{ind(n)}let yy{j} = iy{j} + ky;\n{ind(n)}let xx{j} = ix{j} + kx;\n"
            o += f"{ind(n)}let ok{j} = (yy{j} >= 0) & (yy{j} < i32(p.h)) & (xx{j} >= 0) & (xx{j} < i32(p.w));\n"
            o += f"{ind(n)}let v{j} = select(0.0, x[select(0u, xb{j} + coff + u32(yy{j}) * p.w + u32(xx{j}), ok{j})], ok{j});\n"
        o += bvs(n, lambda j: f"v{j}")
        return o
    def advance(n):
        return f"""{ind(n)}kx += 1;
{ind(n)}if (kx == i32(p.kw)) {{
{ind(n)}    kx = 0;
{ind(n)}    ky += 1;
{ind(n)}    if (ky == i32(p.kh)) {{
{ind(n)}        ky = 0;
{ind(n)}        coff += hw;
{ind(n)}    }}
{ind(n)}}}
"""
    s += "    for (var k0 = 0u; k0 < kfull; k0 += 8u) {\n"
    for r in range(R):
        s += f"        let a{r} = wt[wr{r} + k0 + t];\n"
    s += "        for (var kk = 0u; kk < 8u; kk++) {\n"
    s += own(3)
    s += fma_lines(3, lambda r: f"subgroupShuffle(a{r}, kk)")
    s += advance(3)
    s += "        }\n    }\n"
    s += "    // The last kred % 8 (all of it where the lanes cannot share): every invocation loads its own\n    // weights.\n"
    s += "    for (var k = kfull; k < kred; k++) {\n"
    s += own(2)
    s += fma_lines(2, lambda r: f"wt[wr{r} + k]")
    s += advance(2)
    s += "    }\n"
    s += f"    let yb = array<u32, {C}>({', '.join(f'm{j} / ohw * p.cout * ohw + m{j} % ohw' for j in range(C))});\n"
    for r in range(R):
        for v in range(CV):
            s += f"    store_row(n0 + {r}u, {v*32}u, pb, yb, {accname(r,v)});\n"
    s += "}\n"
    return s


# -------------------------------------------------------------------------- input grad
def input_grad():
    s = f"""// Variant of conv2d_input_grad.wgsl for CPU drivers (lavapipe), where every storage-buffer load
// an invocation makes costs a scalar, bounds-checked load per SIMD lane while arithmetic runs on
// all lanes at once (see gemm_coop.wgsl). Same stride parity classes (workgroup z) as
// conv2d_input_grad.wgsl, with the input channels as the shared rows: for each contributing tap
// the reduction runs over the output channels, so the 8 invocations of a workgroup (one subgroup
// on lavapipe) load the weights of 8 consecutive output channels of each row once between them
// and pass them round with constant-lane shuffles; each invocation loads its own {C} pixels' dy
// values, whose offsets and bounds are worked out once per tap. A workgroup covers {R} input
// channels × {8*C} pixels of one class. Where the subgroup cannot share (smaller than 8, lanes not
// in invocation order) or `unshared` is set (tests cover that path with it), every invocation
// loads its own weights instead: slower, same result. Same parameters and bindings as
// conv2d_input_grad.wgsl. Also the forward pass of a transposed convolution.
{PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

{consts("input channels", "pixels of the class")}
// Column j of this invocation is class row pb + 8·j (of `rows`), whose dx starts at xb[j].
fn store_row(c: u32, j0: u32, pb: u32, rows: u32, xb: array<u32, {C}>, v: vec4<f32>) {{
    if (c >= p.cin) {{
        return;
    }}
    for (var i = 0u; i < 4u; i++) {{
        let j = j0 / 8u + i;
        if (pb + 8u * j < rows) {{
            let idx = xb[j] + c * p.h * p.w;
            var r = p.alpha * v[i];
            if (p.beta != 0.0) {{
                r = r + p.beta * dx[idx];
            }}
            dx[idx] = r;
        }}
    }}
}}

{ENTRY}    let s = p.stride;
    let cy = wid.z / s;
    let cx = wid.z % s;
    if (cy >= p.h || cx >= p.w) {{
        return;
    }}
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
"""
    for j in range(C):
        s += f"""    let m{j} = min(pb + {8*j}u, rows - 1u);
    let yb{j} = m{j} / nq * p.cout * ohw;
    let qy{j} = i32(m{j} % nq / nx) + dy0;
    let qx{j} = i32(m{j} % nq % nx) + dx0;
"""
    for r in range(R):
        s += f"    let wc{r} = min(c0 + {r}u, p.cin - 1u) * khw;\n"
    s += accs()
    s += COOP
    s += """    var ocfull = 0u;
    if (coop) {
        ocfull = p.cout / 8u * 8u;
    }
    var j = 0;
    for (var ky = ry; ky < p.kh; ky += s) {
        var l = 0;
        for (var kx = rx; kx < p.kw; kx += s) {
            let tap = ky * p.kw + kx;
"""
    for jj in range(C):
        s += f"""            let oy{jj} = qy{jj} - j;
            let ox{jj} = qx{jj} - l;
            let ok{jj} = (oy{jj} >= 0) & (ox{jj} >= 0) & (oy{jj} < i32(p.oh)) & (ox{jj} < i32(p.ow));
            let o{jj} = select(0u, yb{jj} + u32(oy{jj}) * p.ow + u32(ox{jj}), ok{jj});
"""
    own = lambda n: bvs(n, lambda jj: f"select(0.0, dy[o{jj} + yo], ok{jj})")
    s += "            for (var oc0 = 0u; oc0 < ocfull; oc0 += 8u) {\n"
    s += "                let wl = tap + (oc0 + t) * wstep;\n"
    for r in range(R):
        s += f"                let a{r} = wt[wc{r} + wl];\n"
    s += "                for (var kk = 0u; kk < 8u; kk++) {\n"
    s += "                    let yo = (oc0 + kk) * ohw;\n"
    s += own(5)
    s += fma_lines(5, lambda r: f"subgroupShuffle(a{r}, kk)")
    s += "                }\n            }\n"
    s += "            // The last cout % 8 (all of them where the lanes cannot share): every invocation loads\n            // its own weights.\n"
    s += "            for (var oc = ocfull; oc < p.cout; oc++) {\n"
    s += "                let yo = oc * ohw;\n                let wl = tap + oc * wstep;\n"
    s += own(4)
    s += fma_lines(4, lambda r: f"wt[wc{r} + wl]")
    s += "            }\n            l += 1;\n        }\n        j += 1;\n    }\n"
    s += "    let hw = p.h * p.w;\n"
    s += f"    let xb = array<u32, {C}>({', '.join(f'm{jj} / nq * p.cin * hw + (s * (m{jj} % nq / nx) + cy) * p.w + s * (m{jj} % nq % nx) + cx' for jj in range(C))});\n"
    for r in range(R):
        for v in range(CV):
            s += f"    store_row(c0 + {r}u, {v*32}u, pb, rows, xb, {accname(r,v)});\n"
    s += "}\n"
    return s


# ------------------------------------------------------------------------- weight grad
def weight_grad():
    s = f"""// Variant of conv2d_weight_grad.wgsl for CPU drivers (lavapipe), where every storage-buffer
// load an invocation makes costs a scalar, bounds-checked load per SIMD lane while arithmetic runs
// on all lanes at once (see gemm_coop.wgsl). Rows are output channels, columns (c, ky, kx), the
// reduction runs over (batch, oy, ox) as one index: the 8 invocations of a workgroup (one subgroup
// on lavapipe) load 8 consecutive entries of each row of dy once between them (each invocation
// carrying its own (batch, pixel) position) and pass them round with constant-lane shuffles; each
// invocation gathers its own {C} columns' input values. A workgroup covers {R} output channels × {8*C}
// columns. Where the subgroup cannot share (smaller than 8, lanes not in invocation order) or
// `unshared` is set (tests cover that path with it), every invocation loads its own dy instead:
// slower, same result. Same parameters and bindings as conv2d_weight_grad.wgsl; with dy and x
// swapped in role it is also the weight gradient of a transposed convolution.
{PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;

{consts("output channels", "(c, ky, kx) columns")}
fn store_row(o: u32, nb: u32, v: vec4<f32>) {{
    let cols = p.cin * p.kh * p.kw;
    if (o >= p.cout) {{
        return;
    }}
    for (var i = 0u; i < 4u; i++) {{
        let n = nb + 8u * i;
        if (n < cols) {{
            let idx = o * cols + n;
            var r = p.alpha * v[i];
            if (p.beta != 0.0) {{
                r = r + p.beta * dw[idx];
            }}
            dw[idx] = r;
        }}
    }}
}}

{ENTRY}    let khw = p.kh * p.kw;
    let cols = p.cin * khw;
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let kred = p.batch * ohw;
    let o0 = wid.y * R;
    let nb = wid.x * 8u * C + t;
    // Columns past the end read the last one; their results are dropped at the store.
"""
    for j in range(C):
        s += f"""    let n{j} = min(nb + {8*j}u, cols - 1u);
    let xo{j} = n{j} / khw * hw;
    let kyp{j} = i32(n{j} % khw / p.kw) - i32(p.pad);
    let kxp{j} = i32(n{j} % khw % p.kw) - i32(p.pad);
"""
    for r in range(R):
        s += f"    let ro{r} = min(o0 + {r}u, p.cout - 1u) * ohw;\n"
    s += accs()
    s += COOP
    s += """    var kfull = 0u;
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
"""
    def own(n):
        o = f"{ind(n)}let iys = i32(oy * p.stride);\n{ind(n)}let ixs = i32(ox * p.stride);\n"
        for j in range(C):
            o += f"{ind(n)}let yy{j} = iys + kyp{j};\n{ind(n)}let xx{j} = ixs + kxp{j};\n"
            o += f"{ind(n)}let ok{j} = (yy{j} >= 0) & (yy{j} < i32(p.h)) & (xx{j} >= 0) & (xx{j} < i32(p.w));\n"
            o += f"{ind(n)}let v{j} = select(0.0, x[select(0u, xb + xo{j} + u32(yy{j}) * p.w + u32(xx{j}), ok{j})], ok{j});\n"
        o += bvs(n, lambda j: f"v{j}")
        return o
    def advance(n):
        return f"""{ind(n)}yl += 1u;
{ind(n)}ox += 1u;
{ind(n)}if (ox == p.ow) {{
{ind(n)}    ox = 0u;
{ind(n)}    oy += 1u;
{ind(n)}    if (oy == p.oh) {{
{ind(n)}        oy = 0u;
{ind(n)}        xb += p.cin * hw;
{ind(n)}        yl += bstep;
{ind(n)}    }}
{ind(n)}}}
"""
    s += "    for (var k0 = 0u; k0 < kfull; k0 += 8u) {\n"
    for r in range(R):
        s += f"        let a{r} = dy[ro{r} + lyl];\n"
    s += """        lq += 8u;
        lyl += 8u;
        while (lq >= ohw) {
            lq -= ohw;
            lyl += bstep;
        }
"""
    s += "        for (var kk = 0u; kk < 8u; kk++) {\n"
    s += own(3)
    s += fma_lines(3, lambda r: f"subgroupShuffle(a{r}, kk)")
    s += advance(3)
    s += "        }\n    }\n"
    s += "    // The last kred % 8 (all of it where the lanes cannot share): every invocation loads its own dy.\n"
    s += "    for (var k = kfull; k < kred; k++) {\n"
    s += own(2)
    s += fma_lines(2, lambda r: f"dy[ro{r} + yl]")
    s += advance(2)
    s += "    }\n"
    for r in range(R):
        for v in range(CV):
            s += f"    store_row(o0 + {r}u, nb + {v*32}u, {accname(r,v)});\n"
    s += "}\n"
    return s


os.makedirs(OUT, exist_ok=True)
for name, f in [("conv2d_forward_coop", forward), ("conv2d_input_grad_coop", input_grad), ("conv2d_weight_grad_coop", weight_grad)]:
    set_shape(*(FORCED or SHAPES[name]))
    with open(os.path.join(OUT, name + ".wgsl"), "w") as fh:
        fh.write("// Generated by tools/gen-coop-conv.py: edit that, not this file.\n" + f())
