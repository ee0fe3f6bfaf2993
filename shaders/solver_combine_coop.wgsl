// solver_combine.wgsl for CPU drivers with subgroups (the same step, Params and bindings): there,
// each storage load costs a scalar load per SIMD lane, and solver_combine has every element's
// invocation load its sample's per-slot scalars (3 per history slot) again. Here a workgroup of 8
// invocations holds 8 consecutive elements of one sample; they load the scalars of 8 slots at a
// time between them and pass them round with shuffles. Same fma order as solver_combine.wgsl.
#import solver_combine_io

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    // No early exit before the shuffles: lanes past the end work on the last element and store
    // nothing.
    let b = wid.y;
    let i_raw = wid.x * 8u + t;
    let live = i_raw < p.dim;
    let i = min(i_raw, p.dim - 1u);
    let k = b * p.dim + i;
    let e = p.v_off + k;
    let xv = x[e];
    if (scal[p.st_off + 2u] != 0.0 && live) {
        best[e] = xv;
    }
    if (scal[p.st_off + 1u] != 0.0) {
        return;
    }
    let g = (jx[e] - xv) + gl[e];
    let g_prev = gold[e];
    if (live) {
        gold[e] = g;
    }
    if (p.mode == FIXED_POINT) {
        if (live) {
            x[e] = p.alpha * g + xv;
        }
        return;
    }
    var step = g;
    if (p.store != 0u) {
        let dx = upd[e];
        let dg = g - g_prev;
        let db = (p.s_base + b) * (p.slots + 1u) * 3u;
        let own = db + p.slots * 3u;
        let hs = p.h_off + (b * p.slots + p.slot) * 2u * p.dim + i;
        if (p.mode == BROYDEN) {
            var vt = -dx;
            var tt = -dg;
            var den = -scal[own + 1u];
            var cg = -scal[own + 2u];
            for (var j0 = 0u; j0 < p.count; j0 += 8u) {
                let jl = db + min(j0 + t, p.count - 1u) * 3u;
                let c1v = scal[jl];
                let c2v = scal[jl + 1u];
                let c3v = scal[jl + 2u];
                let jn = min(8u, p.count - j0);
                for (var jj = 0u; jj < jn; jj++) {
                    let j = j0 + jj;
                    let c1 = subgroupShuffle(c1v, jj);
                    let c2 = subgroupShuffle(c2v, jj);
                    let c3 = subgroupShuffle(c3v, jj);
                    let ha = p.h_off + (b * p.slots + j) * 2u * p.dim + i;
                    let u = hist[ha];
                    vt = fma(c1, hist[ha + p.dim], vt);
                    tt = fma(c2, u, tt);
                    den = fma(c1, c2, den);
                    cg = fma(c1, c3, cg);
                    step = select(step, fma(-c3, u, step), j != p.slot);
                }
            }
            let un = finite_or_zero((dx - tt) / den);
            step = fma(-cg, un, step);
            if (live) {
                hist[hs] = un;
                hist[hs + p.dim] = finite_or_zero(vt);
            }
        } else {
            let gb = p.gam_off + (p.s_base + b) * p.slots;
            for (var j0 = 0u; j0 < p.count; j0 += 8u) {
                let gv = scal[gb + min(j0 + t, p.count - 1u)];
                let jn = min(8u, p.count - j0);
                for (var jj = 0u; jj < jn; jj++) {
                    let j = j0 + jj;
                    let ha = p.h_off + (b * p.slots + j) * 2u * p.dim + i;
                    let pair = select(hist[ha] + hist[ha + p.dim], dx + dg, j == p.slot);
                    step = fma(-subgroupShuffle(gv, jj), pair, step);
                }
            }
            if (live) {
                hist[hs] = dx;
                hist[hs + p.dim] = dg;
            }
        }
    }
    if (live) {
        x[e] = step + xv;
        upd[e] = step;
    }
}
