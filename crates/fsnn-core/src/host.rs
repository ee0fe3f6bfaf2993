//! Host computations the model needs whatever the backend: the spectral norm's initial σ comes
//! from power iterations on the host copy of the weight before any backend tensor exists.

/// One power-iteration step on `w [rows, cols]`: `v = normalize(wᵀu)`, `u = normalize(w v)`;
/// returns σ̂ = ‖w v‖ as `‖wv‖² / max(‖wv‖, 1e-12)` (the kernel's form, so the twin matches it).
pub fn power_iteration(rows: usize, cols: usize, w: &[f32], u: &mut [f32], v: &mut [f32]) -> f32 {
    for j in 0..cols {
        v[j] = (0..rows).map(|r| w[r * cols + j] * u[r]).sum();
    }
    let vn = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= vn);
    let t: Vec<f32> = (0..rows)
        .map(|r| (0..cols).map(|j| w[r * cols + j] * v[j]).sum())
        .collect();
    let un2: f32 = t.iter().map(|x| x * x).sum();
    let un = un2.sqrt().max(1e-12);
    for r in 0..rows {
        u[r] = t[r] / un;
    }
    un2 / un
}

/// Host-side copy of every tensor a checkpoint holds: `(name, shape, values)`. Backend-neutral:
/// a checkpoint written from one backend loads into another.
pub struct HostState {
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}
