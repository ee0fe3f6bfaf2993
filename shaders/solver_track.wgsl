// The global bookkeeping of one adjoint-solver iteration, in one workgroup, so the host never has
// to read a norm before recording the next iteration: the batch's squared residual norm Σ_b g·g,
// the lowest one seen (whose iterate the combine kernel copies out), and the stopping rule
// (‖g‖ < eps or `threshold` iterations), which, once met, turns later iterations into no-ops.
// For Anderson it also solves each sample's regularised least-squares problem
// min_γ ‖g − ΔG γ‖² on the Gram matrix ΔGᵀΔG, updated in one row and column per iteration.
//
// State words at st_off: 0 lowest Σg², 1 done, 2 improved (this iteration's β is the best so
// far), 3 iterations at stop, 4 Σ gL² (the iteration-0 residual).
#import common
#import reduce

struct Params {
    batch: u32, slots: u32, mode: u32, it: u32,
    count: u32, slot: u32, threshold: u32, st_off: u32,
    gram_off: u32, gam_off: u32, eps2: f32, reg: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> scal: array<f32>;

const FIXED_POINT: u32 = 0u;
const ANDERSON: u32 = 2u;
const MAXM: u32 = 8u;

fn finite_or_zero(v: f32) -> f32 {
    return select(0.0, v, abs(v) <= 0x1.fffffep+127f);
}

// Solves (D⁻¹HD⁻¹ + reg·I) y = D⁻¹r, γ = D⁻¹y with D = diag(H)^½ (Jacobi scaling makes `reg`
// relative), by Gaussian elimination with partial pivoting.
fn anderson_solve(b: u32) {
    let n = p.count;
    let rows = p.slots + 1u;
    let db = b * rows * 3u;
    let gb = p.gram_off + b * p.slots * p.slots;
    for (var j = 0u; j < n; j++) {
        let v = scal[db + j * 3u];
        scal[gb + p.slot * p.slots + j] = v;
        scal[gb + j * p.slots + p.slot] = v;
    }
    var a: array<array<f32, 8>, 8>;
    var y: array<f32, 8>;
    var d: array<f32, 8>;
    for (var i = 0u; i < n; i++) {
        let h = scal[gb + i * p.slots + i];
        d[i] = select(0.0, 1.0 / sqrt(h), h > 0.0);
    }
    for (var i = 0u; i < n; i++) {
        for (var j = 0u; j < n; j++) {
            a[i][j] = scal[gb + i * p.slots + j] * d[i] * d[j];
        }
        a[i][i] = a[i][i] + p.reg;
        y[i] = scal[db + i * 3u + 1u] * d[i];
    }
    for (var c = 0u; c < n; c++) {
        var piv = c;
        for (var i = c + 1u; i < n; i++) {
            if (abs(a[i][c]) > abs(a[piv][c])) {
                piv = i;
            }
        }
        if (piv != c) {
            let t = a[c];
            a[c] = a[piv];
            a[piv] = t;
            let ty = y[c];
            y[c] = y[piv];
            y[piv] = ty;
        }
        for (var i = c + 1u; i < n; i++) {
            let f = a[i][c] / a[c][c];
            for (var j = c; j < n; j++) {
                a[i][j] = a[i][j] - f * a[c][j];
            }
            y[i] = y[i] - f * y[c];
        }
    }
    for (var ii = 0u; ii < n; ii++) {
        let i = n - 1u - ii;
        var s = y[i];
        for (var j = i + 1u; j < n; j++) {
            s = s - a[i][j] * y[j];
        }
        y[i] = s / a[i][i];
    }
    for (var i = 0u; i < n; i++) {
        scal[p.gam_off + b * p.slots + i] = finite_or_zero(y[i] * d[i]);
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let rows = p.slots + 1u;
    var part = 0.0;
    for (var b = lid; b < p.batch; b += WG) {
        if (p.mode == ANDERSON && p.it > 0u && scal[p.st_off + 1u] == 0.0) {
            anderson_solve(b);
        }
        part = part + scal[(b * rows + p.slots) * 3u];
    }
    let total = workgroup_sum(lid, part);
    if (lid != 0u) {
        return;
    }
    let s = p.st_off;
    if (p.it == 0u) {
        scal[s] = total;
        scal[s + 1u] = select(0.0, 1.0,
            p.threshold == 0u || (p.mode == FIXED_POINT && total < p.eps2));
        scal[s + 2u] = 1.0;
        scal[s + 3u] = 0.0;
        scal[s + 4u] = total;
        return;
    }
    if (scal[s + 1u] != 0.0) {
        scal[s + 2u] = 0.0;
        return;
    }
    let better = total < scal[s];
    if (better) {
        scal[s] = total;
    }
    scal[s + 2u] = select(0.0, 1.0, better);
    if (total < p.eps2 || p.it >= p.threshold) {
        scal[s + 1u] = 1.0;
        scal[s + 3u] = f32(p.it);
    }
}
