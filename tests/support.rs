//! Shared helpers of the test suite: one GPU device for all tests, seeded random data, and error
//! measures that print what they measured.

use std::sync::{Arc, OnceLock};

use fsnn::gpu::{AdapterChoice, Gpu, GpuContext};

static CONTEXT: OnceLock<Arc<GpuContext>> = OnceLock::new();

/// A fresh recorder on the shared device. Fails (never skips) when no adapter exists, with the
/// message that says how to install one.
pub fn gpu() -> Gpu {
    let ctx =
        CONTEXT.get_or_init(
            || match GpuContext::new(&AdapterChoice::from_flag_or_env(None)) {
                Ok(c) => c,
                Err(e) => panic!("GPU tests need an adapter: {e:#}"),
            },
        );
    Gpu::from_context(ctx.clone())
}

/// A device of its own, for tests that change device-wide settings (the binding cap).
pub fn private_gpu() -> Gpu {
    Gpu::new(&AdapterChoice::from_flag_or_env(None))
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e:#}"))
}

/// SplitMix64: small, seeded, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

/// max |got − want| / max(max |want|, 1e-30): the error relative to the result's scale.
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs() as f64))
        .max(1e-30);
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| {
            if g.is_nan() != w.is_nan() {
                f64::INFINITY
            } else {
                (*g as f64 - *w as f64).abs()
            }
        })
        .fold(0.0f64, f64::max);
    worst / scale
}

/// Prints the worst relative error of a GPU-vs-CPU comparison and fails above `tol`.
pub fn check(name: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_err(got, want);
    println!(
        "{name:<48} worst relative error {e:.3e} (tolerance {tol:.0e}, {} values)",
        want.len()
    );
    assert!(
        e <= tol,
        "{name}: worst relative error {e:.3e} exceeds {tol:.0e}"
    );
}

use fsnn::model::spec::{FeedbackSpec, InputSpec, LayerSpec, NetworkSpec, NeuronSpec, OpSpec};

/// A single-layer network: `first` (linear or conv) + BN into one spiking layer with feedback
/// `fb` onto itself, as the paper's FC and conv models.
#[allow(clippy::too_many_arguments)]
pub fn single_layer(
    name: &str,
    input: &[usize],
    first: OpSpec,
    fb: FeedbackSpec,
    classes: usize,
    time_steps: usize,
    leak: f32,
    dropout: f32,
) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        description: String::new(),
        classes,
        input: InputSpec {
            shape: input.to_vec(),
            time_varying: false,
        },
        neuron: NeuronSpec {
            time_steps,
            vth: 2.0,
            leak,
            dropout,
        },
        layers: vec![LayerSpec {
            ops: vec![first, OpSpec::BatchNorm {}],
        }],
        feedback: fb,
        adjoint: fsnn::model::spec::AdjointForm::Consistent,
        train: Default::default(),
    }
}

/// `linear input → hidden` + BN, linear feedback.
pub fn fc_spec(
    input: usize,
    hidden: usize,
    classes: usize,
    time_steps: usize,
    leak: f32,
    dropout: f32,
) -> NetworkSpec {
    single_layer(
        "fc-test",
        &[input],
        OpSpec::Linear {
            out: hidden,
            bias: true,
        },
        FeedbackSpec::Linear {},
        classes,
        time_steps,
        leak,
        dropout,
    )
}

/// Conv `cin → channels` (k_in, stride_in, pad_in) + BN on `h × w`, conv feedback k_fb "same".
#[allow(clippy::too_many_arguments)]
pub fn conv_spec(
    (cin, h, w): (usize, usize, usize),
    channels: usize,
    (k_in, stride_in, pad_in): (usize, usize, usize),
    k_fb: usize,
    classes: usize,
    time_steps: usize,
    leak: f32,
    dropout: f32,
) -> NetworkSpec {
    single_layer(
        "conv-test",
        &[cin, h, w],
        OpSpec::Conv {
            out: channels,
            k: k_in,
            stride: stride_in,
            pad: pad_in,
            bias: true,
        },
        FeedbackSpec::Conv {
            k: k_fb,
            stride: 1,
            pad: k_fb / 2,
        },
        classes,
        time_steps,
        leak,
        dropout,
    )
}

/// Index of a named parameter.
pub fn param(net: &fsnn::model::network::Network, name: &str) -> usize {
    net.params
        .iter()
        .position(|p| p.name == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
}
