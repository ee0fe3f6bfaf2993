// solver_dots.wgsl for CPU drivers with subgroups (the same products, Params and bindings): there,
// each storage load costs a scalar load per SIMD lane, and solver_dots has every (sample, row)
// invocation load the sample's five vectors again (7 loads per element and row). Here one
// workgroup of 8 invocations holds 8 rows of one sample (lane t ↔ row 8·wid.y + t): they load the
// five vectors once between them, 8 consecutive elements at a time, and pass g, Δg, Δβ round
// with shuffles, so a row costs its own 2 history loads per element plus 5/8. Rows past `count`
// (idle lanes) compute and discard. The sums run over elements in the same order, with the same
// fma, as solver_dots.wgsl.
#import solver_dots_io

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let b = wid.x;
    let r = wid.y * 8u + t;
    let own = r == p.count;
    let broyden = p.mode == BROYDEN;
    let fresh = r == p.slot;
    let hr = min(r, max(p.slots, 1u) - 1u);
    let ha = p.h_off + (b * max(p.slots, 1u) + hr) * 2u * p.dim;
    let hb = ha + p.dim;
    let vb = p.v_off + b * p.dim;
    var d0 = 0.0;
    var d1 = 0.0;
    var d2 = 0.0;
    for (var i0 = 0u; i0 < p.dim; i0 += 8u) {
        let mine = i0 + t < p.dim;
        let e = vb + min(i0 + t, p.dim - 1u);
        let gv = (jx[e] - x[e]) + gl[e];
        let g = select(0.0, gv, mine);
        let dg = select(0.0, gv - gold[e], mine);
        let dx = select(0.0, upd[e], mine);
        for (var kk = 0u; kk < 8u; kk++) {
            let gk = subgroupShuffle(g, kk);
            let dgk = subgroupShuffle(dg, kk);
            let dxk = subgroupShuffle(dx, kk);
            let i = min(i0 + kk, p.dim - 1u);
            let u = hist[ha + i];
            let v = hist[hb + i];
            // Anderson's ΔG for the slot being replaced is the new Δg.
            let q = select(v, dgk, fresh);
            // own row: (g·g, Δβ·Δg, Δβ·g); Broyden row: (U·Δβ, V·Δg, V·g); Anderson: (q·Δg, q·g, 0).
            let a0 = select(select(q, u, broyden), gk, own);
            let b0 = select(select(dgk, dxk, broyden), gk, own);
            let a1 = select(select(q, v, broyden), dxk, own);
            let b1 = select(select(gk, dgk, broyden), dgk, own);
            let a2 = select(select(0.0, v, broyden), dxk, own);
            d0 = fma(a0, b0, d0);
            d1 = fma(a1, b1, d1);
            d2 = fma(a2, gk, d2);
        }
    }
    if (r <= p.count) {
        let row = select(r, p.slots, own);
        let o = ((p.s_base + b) * (p.slots + 1u) + row) * 3u;
        scal[o] = d0;
        scal[o + 1u] = d1;
        scal[o + 2u] = d2;
    }
}
