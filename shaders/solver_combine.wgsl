// The per-element half of one adjoint-solver iteration, after solver_dots and solver_track:
// keeps β if it is the best iterate so far, then (unless the solve has stopped) forms the new
// residual g, takes the next step and stores this iteration's history pair.
//   fixed point: β += α g.
//   Broyden: vᵀ = −Δβ + Σ_j (U_j·Δβ) V_j,  u = (Δβ − BΔg)/(vᵀΔg) with BΔg = −Δg + Σ_j (V_j·Δg) U_j,
//     stored in ring slot `slot` (non-finite values become 0); step = −B_new g =
//     g − Σ_{j≠slot} (V_j·g) U_j − (vᵀ·g) u, with vᵀΔg and vᵀg assembled from solver_dots' scalars.
//   Anderson: step = g − Σ_j γ_j (ΔX_j + ΔG_j), the new pair (Δβ, Δg) stored in slot `slot`.
// History layout: [sample, slot, {U or ΔX, V or ΔG}, dim].
#import common

#import solver_combine_io

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = flat_id(wid, nwg, lid);
    if (k >= p.batch * p.dim) {
        return;
    }
    let b = k / p.dim;
    let i = k % p.dim;
    let e = p.v_off + k;
    let xv = x[e];
    if (scal[p.st_off + 2u] != 0.0) {
        best[e] = xv;
    }
    if (scal[p.st_off + 1u] != 0.0) {
        return;
    }
    let g = (jx[e] - xv) + gl[e];
    let g_prev = gold[e];
    gold[e] = g;
    if (p.mode == FIXED_POINT) {
        x[e] = p.alpha * g + xv;
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
            var t = -dg;
            var den = -scal[own + 1u];
            var cg = -scal[own + 2u];
            for (var j = 0u; j < p.count; j++) {
                let c1 = scal[db + j * 3u];
                let c2 = scal[db + j * 3u + 1u];
                let c3 = scal[db + j * 3u + 2u];
                let ha = p.h_off + (b * p.slots + j) * 2u * p.dim + i;
                let u = hist[ha];
                vt = fma(c1, hist[ha + p.dim], vt);
                t = fma(c2, u, t);
                den = fma(c1, c2, den);
                cg = fma(c1, c3, cg);
                if (j != p.slot) {
                    step = fma(-c3, u, step);
                }
            }
            let un = finite_or_zero((dx - t) / den);
            step = fma(-cg, un, step);
            hist[hs] = un;
            hist[hs + p.dim] = finite_or_zero(vt);
        } else {
            let gb = p.gam_off + (p.s_base + b) * p.slots;
            for (var j = 0u; j < p.count; j++) {
                let ha = p.h_off + (b * p.slots + j) * 2u * p.dim + i;
                var pair = hist[ha] + hist[ha + p.dim];
                if (j == p.slot) {
                    pair = dx + dg;
                }
                step = fma(-scal[gb + j], pair, step);
            }
            hist[hs] = dx;
            hist[hs + p.dim] = dg;
        }
    }
    x[e] = step + xv;
    upd[e] = step;
}
