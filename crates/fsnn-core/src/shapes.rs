//! Shapes and parameters of the ops every backend implements, with the pure helpers that go with
//! them (output sizes, the solver's `scal` layout). Plain data: no backend, no device.

use std::fmt;
use std::str::FromStr;

/// Shapes of a 2-D convolution (NCHW; weight `[cout, cin, kh, kw]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConvShape {
    pub batch: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvShape {
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.cin * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.cout * self.oh() * self.ow()
    }
    pub fn weight_len(&self) -> usize {
        self.cout * self.cin * self.kh * self.kw
    }
    pub fn flops(&self) -> f64 {
        2.0 * self.output_len() as f64 * (self.cin * self.kh * self.kw) as f64
    }
    /// The forward convolution whose output is this one's input gradient, where there is one:
    /// stride 1 and a square kernel no smaller than `pad + 1`; `dy` convolved with the weights
    /// flipped in both taps and transposed in channels (`cpu::conv_weight_flip`), padded by
    /// `kh - 1 - pad`.
    pub fn input_grad_as_forward(&self) -> Option<ConvShape> {
        (self.stride == 1 && self.kh == self.kw && self.pad < self.kh).then(|| ConvShape {
            batch: self.batch,
            cin: self.cout,
            h: self.oh(),
            w: self.ow(),
            cout: self.cin,
            kh: self.kh,
            kw: self.kw,
            stride: 1,
            pad: self.kh - 1 - self.pad,
        })
    }
}

/// Shapes of a transposed convolution (PyTorch `ConvTranspose2d`; weight `[cin, cout, kh, kw]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConvTShape {
    pub batch: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub output_pad: usize,
}

impl ConvTShape {
    pub fn oh(&self) -> usize {
        (self.h - 1) * self.stride + self.k + self.output_pad - 2 * self.pad
    }
    pub fn ow(&self) -> usize {
        (self.w - 1) * self.stride + self.k + self.output_pad - 2 * self.pad
    }
    /// The convolution whose input gradient this transposed convolution is: it maps the
    /// transposed convolution's output (cout channels, oh × ow) back to its input.
    pub fn as_conv(&self) -> ConvShape {
        ConvShape {
            batch: self.batch,
            cin: self.cout,
            h: self.oh(),
            w: self.ow(),
            cout: self.cin,
            kh: self.k,
            kw: self.k,
            stride: self.stride,
            pad: self.pad,
        }
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.cin * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.cout * self.oh() * self.ow()
    }
    pub fn weight_len(&self) -> usize {
        self.cin * self.cout * self.k * self.k
    }
}

/// Neuron parameters of one simulation step.
#[derive(Debug, Clone, Copy)]
pub struct NeuronStep {
    pub vth: f32,
    /// 1 for IF, λ ∈ (0, 1) for LIF.
    pub leak: f32,
    /// Whether `fb` holds the feedback current (false on the first step).
    pub has_feedback: bool,
    /// Element offset of this step's input in `x` (per-step input); 0 for constant input.
    pub x_offset: usize,
}

/// Whether an operand is used as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    N,
    T,
}

/// Layout `[batch, channels, hw]` of a batch-normalised tensor (hw = 1 for dense layers).
#[derive(Debug, Clone, Copy)]
pub struct BnShape {
    pub batch: usize,
    pub channels: usize,
    pub hw: usize,
}

impl BnShape {
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.hw
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub const BN_EPS: f32 = 1e-5;

/// Which adjoint solver the fused solver kernels run (their `mode` word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverMode {
    FixedPoint = 0,
    Broyden = 1,
    Anderson = 2,
}

/// Shapes of the fused solver kernels: `batch` samples of `dim` values, a history of `slots`
/// pairs per sample laid out `[batch, slots, 2, dim]` (Broyden: u and vᵀ; Anderson: Δβ and Δg),
/// and one small `scal` buffer holding the per-sample products, the solve's state words and,
/// for Anderson, the per-sample Gram matrices and coefficients.
#[derive(Debug, Clone, Copy)]
pub struct SolverLayout {
    pub mode: SolverMode,
    pub batch: usize,
    pub dim: usize,
    pub slots: usize,
}

impl SolverLayout {
    pub fn hist_len(&self) -> usize {
        self.batch * self.slots * 2 * self.dim
    }
    /// Start of the state words: 0 lowest Σg², 1 done, 2 improved, 3 iterations, 4 Σ gL².
    pub fn state_offset(&self) -> usize {
        self.batch * (self.slots + 1) * 3
    }
    /// Start of Anderson's per-sample Gram matrices (`slots × slots` each).
    pub fn gram_offset(&self) -> usize {
        self.state_offset() + 8
    }
    /// Start of Anderson's per-sample coefficients (`slots` each).
    pub fn gamma_offset(&self) -> usize {
        self.gram_offset() + self.batch * self.slots * self.slots
    }
    pub fn scal_len(&self) -> usize {
        self.gamma_offset() + self.batch * self.slots
    }
}

/// Most Anderson history pairs the per-sample least-squares solve supports.
pub const ANDERSON_MAX_SLOTS: usize = 8;

/// What iteration `it` of a solve does (0: the setup at β = 0, which takes the first step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SolverIter {
    pub it: usize,
    /// History rows in use by this iteration's products.
    pub count: usize,
    /// Ring slot this iteration's pair goes to.
    pub slot: usize,
    /// Whether this iteration stores a pair (every iteration after the setup).
    pub store: bool,
}

impl SolverIter {
    pub fn new(l: &SolverLayout, it: usize) -> Self {
        let slot = if it > 0 && l.slots > 0 {
            (it - 1) % l.slots
        } else {
            0
        };
        // Broyden's products use the history before this iteration's pair; Anderson's
        // least-squares problem already includes it.
        let count = match l.mode {
            SolverMode::FixedPoint => 0,
            SolverMode::Broyden => it.saturating_sub(1).min(l.slots),
            SolverMode::Anderson => it.min(l.slots),
        };
        Self {
            it,
            count,
            slot,
            store: it > 0 && l.mode != SolverMode::FixedPoint,
        }
    }
}

/// The solver's per-element vectors (all `batch · dim`): `jx = J_fᵀβ`, β, gL, the previous
/// residual, the previous step and the best β so far; `T` is the backend's tensor.
pub struct SolverVectors<'a, T> {
    pub jx: &'a T,
    pub x: &'a T,
    pub gl: &'a T,
    pub g: &'a T,
    pub step: &'a T,
    pub best: &'a T,
}

impl<'a, T> SolverVectors<'a, T> {
    /// The vectors with their names, for argument checks.
    pub fn named(&self) -> [(&'a T, &'static str); 6] {
        [
            (self.jx, "jx"),
            (self.x, "x"),
            (self.gl, "gl"),
            (self.g, "g"),
            (self.step, "step"),
            (self.best, "best"),
        ]
    }
}

/// Steps `t_begin..t_end` of a linear feedback layer's simulation over `n` neurons per sample,
/// event-driven and fused. `bits` (`[batch, spike_words(n)]` u32 in the backend's layout) holds
/// the previous step's spikes and receives the last step's; `wt` is `W_effᵀ` (`[n_in, n_out]`,
/// rows `fc_event_ld(n)` apart, zero-padded); step t's input is
/// `x[x_off + (t − t_begin)·x_step + b·n + j]`; `mask` multiplies the feedback current when given.
#[derive(Debug, Clone, Copy)]
pub struct FcEventSim {
    pub n: usize,
    pub batch: usize,
    pub t_begin: usize,
    pub t_end: usize,
    pub x_step: usize,
    pub x_off: usize,
    pub vth: f32,
    pub leak: f32,
}

/// Which kernels the forward simulation runs: dense products on 0/1 spike tensors, or the
/// event-driven ones that add weight rows for the spikes only; `Auto` lets the backend measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    Dense,
    Event,
    Auto,
}

impl FromStr for Kernels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dense" => Ok(Kernels::Dense),
            "event" => Ok(Kernels::Event),
            "auto" => Ok(Kernels::Auto),
            _ => Err(format!("unknown kernels {s:?} (dense | event | auto)")),
        }
    }
}

impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kernels::Dense => "dense",
            Kernels::Event => "event",
            Kernels::Auto => "auto",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(h: usize, w: usize, k: usize, stride: usize, pad: usize) -> ConvShape {
        ConvShape {
            batch: 3,
            cin: 5,
            h,
            w,
            cout: 7,
            kh: k,
            kw: k,
            stride,
            pad,
        }
    }

    #[test]
    fn input_grad_as_forward_maps_the_output_back_onto_the_input() {
        for (h, w, k, pad) in [(9, 7, 3, 1), (8, 11, 5, 2), (6, 6, 3, 0), (5, 9, 1, 0)] {
            let s = conv(h, w, k, 1, pad);
            let f = s.input_grad_as_forward().expect("stride 1, square kernel");
            assert_eq!((f.h, f.w, f.cin, f.cout), (s.oh(), s.ow(), s.cout, s.cin));
            assert_eq!((f.oh(), f.ow()), (h, w), "{s:?}");
            assert_eq!(f.output_len(), s.input_len());
        }
        assert!(conv(9, 9, 3, 2, 1).input_grad_as_forward().is_none());
    }

    #[test]
    fn a_transposed_convolution_is_the_input_gradient_of_its_convolution() {
        let t = ConvTShape {
            batch: 2,
            cin: 4,
            h: 5,
            w: 7,
            cout: 3,
            k: 4,
            stride: 2,
            pad: 1,
            output_pad: 1,
        };
        let c = t.as_conv();
        assert_eq!((c.oh(), c.ow()), (t.h, t.w));
        assert_eq!(c.input_len(), t.output_len());
        assert_eq!(c.output_len(), t.input_len());
        assert_eq!(c.weight_len(), t.weight_len());
    }

    #[test]
    fn solver_scal_regions_follow_each_other_without_overlap() {
        let l = SolverLayout {
            mode: SolverMode::Anderson,
            batch: 3,
            dim: 10,
            slots: 5,
        };
        assert_eq!(l.state_offset(), 3 * 6 * 3);
        assert_eq!(l.gram_offset(), l.state_offset() + 8);
        assert_eq!(l.gamma_offset(), l.gram_offset() + 3 * 25);
        assert_eq!(l.scal_len(), l.gamma_offset() + 3 * 5);
        assert_eq!(l.hist_len(), 3 * 5 * 2 * 10);
        let i = SolverIter::new(&l, 7);
        assert_eq!((i.slot, i.count, i.store), (1, 5, true));
    }

    #[test]
    fn kernels_names_round_trip() {
        for k in [Kernels::Dense, Kernels::Event, Kernels::Auto] {
            assert_eq!(k.to_string().parse::<Kernels>(), Ok(k));
        }
        assert!("sparse".parse::<Kernels>().is_err());
    }
}
