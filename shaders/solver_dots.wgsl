// Per-sample inner products of one adjoint-solver iteration (Broyden, Anderson, fixed point), all
// in one pass over each sample's vectors: the residual g = J_fᵀβ − β + gL and its change
// Δg = g − g_old are formed on the fly from jx = J_fᵀβ, so no kernel materialises them first.
// One invocation per (sample, row) with a serial loop over the dimension (workgroup reductions'
// barriers dominate on CPU drivers). Row r < count dots history slot r; row `count` (stored at
// row index `slots`) holds the sample's own products. Output: scal[(s_base + b, row), 0..3].
//   Broyden:  (U_r·Δβ, V_r·Δg, V_r·g);   own row (g·g, Δβ·Δg, Δβ·g)
//   Anderson: (ΔG_r·Δg, ΔG_r·g, 0) with ΔG_slot read as the new Δg;   own row (g·g, ·, ·)
//   fixed point: own row only.
#import common

#import solver_dots_io

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = flat_id(wid, nwg, lid);
    let rows = p.count + 1u;
    if (k >= p.batch * rows) {
        return;
    }
    let b = k / rows;
    let r = k % rows;
    let vb = p.v_off + b * p.dim;
    var d0 = 0.0;
    var d1 = 0.0;
    var d2 = 0.0;
    var row = r;
    if (r == p.count) {
        row = p.slots;
        for (var i = 0u; i < p.dim; i++) {
            let e = vb + i;
            let g = (jx[e] - x[e]) + gl[e];
            let dg = g - gold[e];
            let dx = upd[e];
            d0 = fma(g, g, d0);
            d1 = fma(dx, dg, d1);
            d2 = fma(dx, g, d2);
        }
    } else {
        let ha = p.h_off + (b * p.slots + r) * 2u * p.dim;
        let hb = ha + p.dim;
        if (p.mode == BROYDEN) {
            for (var i = 0u; i < p.dim; i++) {
                let e = vb + i;
                let g = (jx[e] - x[e]) + gl[e];
                let dg = g - gold[e];
                let v = hist[hb + i];
                d0 = fma(hist[ha + i], upd[e], d0);
                d1 = fma(v, dg, d1);
                d2 = fma(v, g, d2);
            }
        } else {
            let fresh = r == p.slot;
            for (var i = 0u; i < p.dim; i++) {
                let e = vb + i;
                let g = (jx[e] - x[e]) + gl[e];
                let dg = g - gold[e];
                let q = select(hist[hb + i], dg, fresh);
                d0 = fma(q, dg, d0);
                d1 = fma(q, g, d1);
            }
        }
    }
    let o = ((p.s_base + b) * (p.slots + 1u) + row) * 3u;
    scal[o] = d0;
    scal[o + 1u] = d1;
    scal[o + 2u] = d2;
}
