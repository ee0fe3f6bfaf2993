//! Small dense f64 helpers: vector ops, row-major matrix–vector products, an LU solve,
//! softmax cross-entropy and a deterministic RNG.
//!
//! Matrices are row-major `&[f64]` with explicit `rows`/`cols`; nothing here allocates more
//! than its result, so the functions can be read as the spec of the matching GPU kernels.

/// `Σ a_i b_i`.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Euclidean norm.
pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Largest absolute entry (0 for an empty slice).
pub fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// `y += alpha * x`.
pub fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `a - b`, elementwise.
pub fn sub(a: &[f64], b: &[f64]) -> Vec<f64> {
    debug_assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// `y = M x` for row-major `M` (`rows × cols`).
pub fn matvec(m: &[f64], rows: usize, cols: usize, x: &[f64]) -> Vec<f64> {
    assert_eq!(m.len(), rows * cols);
    assert_eq!(x.len(), cols);
    (0..rows)
        .map(|i| dot(&m[i * cols..(i + 1) * cols], x))
        .collect()
}

/// `y = Mᵀ x` for row-major `M` (`rows × cols`).
pub fn matvec_t(m: &[f64], rows: usize, cols: usize, x: &[f64]) -> Vec<f64> {
    assert_eq!(m.len(), rows * cols);
    assert_eq!(x.len(), rows);
    let mut y = vec![0.0; cols];
    for (i, &xi) in x.iter().enumerate() {
        axpy(xi, &m[i * cols..(i + 1) * cols], &mut y);
    }
    y
}

/// `x / max(‖x‖, 1e-12)`, PyTorch's `F.normalize` (the floor keeps a zero vector finite).
pub fn normalize(x: &[f64]) -> Vec<f64> {
    let n = norm(x).max(1e-12);
    x.iter().map(|v| v / n).collect()
}

/// Solves `A x = b` for a dense row-major `n × n` matrix by LU with partial pivoting.
///
/// Returns `None` when a pivot is exactly zero (singular matrix).
pub fn lu_solve(a: &[f64], n: usize, b: &[f64]) -> Option<Vec<f64>> {
    assert_eq!(a.len(), n * n);
    assert_eq!(b.len(), n);
    let mut m = a.to_vec();
    let mut x = b.to_vec();
    for k in 0..n {
        let p = (k..n)
            .max_by(|&i, &j| m[i * n + k].abs().total_cmp(&m[j * n + k].abs()))
            .unwrap_or(k);
        if m[p * n + k] == 0.0 {
            return None;
        }
        if p != k {
            for c in 0..n {
                m.swap(k * n + c, p * n + c);
            }
            x.swap(k, p);
        }
        let piv = m[k * n + k];
        for i in k + 1..n {
            let l = m[i * n + k] / piv;
            if l != 0.0 {
                for c in k..n {
                    m[i * n + c] -= l * m[k * n + c];
                }
                x[i] -= l * x[k];
            }
        }
    }
    for k in (0..n).rev() {
        let s: f64 = (k + 1..n).map(|c| m[k * n + c] * x[c]).sum();
        x[k] = (x[k] - s) / m[k * n + k];
    }
    Some(x)
}

/// Mean softmax cross-entropy over a batch of `logits` (`n × classes`), and its gradient
/// with respect to the logits, `(softmax − onehot) / n`.
pub fn softmax_cross_entropy(logits: &[f64], classes: usize, labels: &[usize]) -> (f64, Vec<f64>) {
    let n = labels.len();
    assert_eq!(logits.len(), n * classes);
    let mut loss = 0.0;
    let mut grad = vec![0.0; n * classes];
    for (s, &label) in labels.iter().enumerate() {
        assert!(label < classes, "label {label} out of range");
        let row = &logits[s * classes..(s + 1) * classes];
        // Shifting by the max keeps exp() from overflowing; it cancels in the ratio.
        let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|v| (v - mx).exp()).sum();
        loss += z.ln() + mx - row[label];
        for (c, g) in grad[s * classes..(s + 1) * classes].iter_mut().enumerate() {
            let p = (row[c] - mx).exp() / z;
            *g = (p - if c == label { 1.0 } else { 0.0 }) / n as f64;
        }
    }
    (loss / n as f64, grad)
}

/// Deterministic SplitMix64 generator, so tests and initialisations are reproducible
/// without an external crate.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        // 1 - uniform() is in (0, 1], so the log is finite.
        let r = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        r * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }

    /// `len` values uniform in `[lo, hi)`.
    pub fn vec_range(&mut self, len: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..len).map(|_| self.range(lo, hi)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lu_solves_random_system() {
        let mut rng = Rng::new(1);
        let n = 7;
        let a = rng.vec_range(n * n, -1.0, 1.0);
        let x = rng.vec_range(n, -1.0, 1.0);
        let b = matvec(&a, n, n, &x);
        let y = lu_solve(&a, n, &b).unwrap();
        assert!(max_abs(&sub(&x, &y)) < 1e-12);
    }

    #[test]
    fn cross_entropy_gradient_matches_differences() {
        let mut rng = Rng::new(2);
        let (n, k) = (3, 4);
        let logits = rng.vec_range(n * k, -2.0, 2.0);
        let labels = [0, 3, 1];
        let (_, g) = softmax_cross_entropy(&logits, k, &labels);
        let h = 1e-6;
        for i in 0..n * k {
            let mut p = logits.clone();
            p[i] += h;
            let mut m = logits.clone();
            m[i] -= h;
            let fd = (softmax_cross_entropy(&p, k, &labels).0
                - softmax_cross_entropy(&m, k, &labels).0)
                / (2.0 * h);
            assert!((fd - g[i]).abs() < 1e-9);
        }
    }
}
