//! Up-front validation of everything a run is configured with: a model description (from a preset
//! and flags, or from a checkpoint's metadata) and the training settings. Each check fails with
//! one message naming where the value came from and the accepted range, before anything is
//! allocated, so a damaged or hostile checkpoint cannot make fsnn abort, hang or compute NaN.

use anyhow::{bail, Result};

use crate::gpu::Gpu;
use crate::model::multi::{ConvSpec, MultiConfig};
use crate::model::{Arch, ModelConfig};

/// Most simulation time steps: the paper's longest runs use 100; a checkpoint claiming 10⁹ would
/// otherwise run for days per batch.
pub const MAX_TIME_STEPS: usize = 10_000;
/// Most parameters of one model (1 GiB of f32); the largest preset has 15 million.
pub const MAX_PARAMS: usize = 1 << 28;
/// Most spiking neurons per sample; the largest preset has under a million.
pub const MAX_NEURONS: usize = 1 << 26;
/// Bounds on single dimensions, small enough that no product of them overflows.
const MAX_CHANNELS: usize = 1 << 14;
const MAX_SPATIAL: usize = 1 << 14;
const MAX_KERNEL: usize = 1 << 8;
const MAX_FEATURES: usize = 1 << 24;
const MAX_LAYERS: usize = 64;

/// The neuron values a run uses, with the range each must lie in. `source` names where they came
/// from: `None` for command-line flags (`--vth must be ...`), or a checkpoint path
/// (`ckpt.safetensors: vth must be ...`).
pub fn neuron(
    source: Option<&str>,
    time_steps: usize,
    vth: f32,
    leak: f32,
    dropout: f32,
) -> Result<()> {
    let name = |flag: &str, field: &str| match source {
        None => format!("--{flag}"),
        Some(s) => format!("{s}: {field}"),
    };
    if !(1..=MAX_TIME_STEPS).contains(&time_steps) {
        bail!(
            "{} must be in 1..={MAX_TIME_STEPS}, got {time_steps}",
            name("time-steps", "time_steps")
        );
    }
    if !(vth.is_finite() && vth > 0.0) {
        bail!(
            "{} must be a finite number > 0, got {vth}",
            name("vth", "vth")
        );
    }
    if !(leak > 0.0 && leak <= 1.0) {
        bail!("{} must be in (0, 1], got {leak}", name("leak", "leak"));
    }
    if !(0.0..1.0).contains(&dropout) {
        bail!(
            "{} must be in [0, 1), got {dropout}",
            name("dropout", "dropout")
        );
    }
    Ok(())
}

/// A model description as read from `source` (a checkpoint): neuron values in range, every layer
/// geometry well-formed, and sizes bounded.
pub fn model_config(cfg: &ModelConfig, source: &str) -> Result<()> {
    let (t, v, l, d) = {
        let mut c = cfg.clone();
        let (t, v, l, d) = c.neuron_mut();
        (*t, *v, *l, *d)
    };
    neuron(Some(source), t, v, l, d)?;
    let bad = |msg: String| -> Result<()> { bail!("{source}: model metadata: {msg}") };
    match cfg {
        ModelConfig::Single(c) => {
            in_range(source, "classes", c.classes, 1, MAX_FEATURES)?;
            match c.arch {
                Arch::Fc { input, hidden } => {
                    in_range(source, "input", input, 1, MAX_FEATURES)?;
                    in_range(source, "hidden", hidden, 1, MAX_FEATURES)?;
                }
                Arch::Conv {
                    cin,
                    h,
                    w,
                    channels,
                    k_in,
                    stride_in,
                    pad_in,
                    k_fb,
                } => {
                    in_range(source, "cin", cin, 1, MAX_CHANNELS)?;
                    in_range(source, "channels", channels, 1, MAX_CHANNELS)?;
                    in_range(source, "k_fb", k_fb, 1, MAX_KERNEL)?;
                    if k_fb % 2 == 0 {
                        return bad(format!("k_fb must be odd (\"same\" padding), got {k_fb}"));
                    }
                    let spec = ConvSpec {
                        cout: channels,
                        k: k_in,
                        stride: stride_in,
                        pad: pad_in,
                    };
                    conv_out(source, "input conv", (h, w), &spec)?;
                }
            }
        }
        ModelConfig::Multi(c) => multi(c, source)?,
    }
    let params = cfg.param_count();
    if params > MAX_PARAMS {
        return bad(format!(
            "{params} parameters; at most {MAX_PARAMS} are supported"
        ));
    }
    let neurons = cfg.spiking_neurons();
    if neurons > MAX_NEURONS {
        return bad(format!(
            "{neurons} spiking neurons per sample; at most {MAX_NEURONS} are supported"
        ));
    }
    Ok(())
}

fn multi(c: &MultiConfig, source: &str) -> Result<()> {
    in_range(source, "classes", c.classes, 1, MAX_FEATURES)?;
    in_range(source, "cin", c.cin, 1, MAX_CHANNELS)?;
    in_range(source, "layers", c.layers.len(), 1, MAX_LAYERS)?;
    let mut hw = conv_out(source, "fx", (c.h, c.w), &c.fx)?;
    for (i, l) in c.layers.iter().enumerate() {
        hw = conv_out(source, &format!("layer {}", i + 2), hw, l)?;
    }
    in_range(source, "fb_k", c.fb_k, 1, MAX_KERNEL)?;
    in_range(source, "fb_stride", c.fb_stride, 1, MAX_KERNEL)?;
    in_range(source, "fb_pad", c.fb_pad, 0, MAX_KERNEL)?;
    in_range(source, "fb_output_pad", c.fb_output_pad, 0, MAX_KERNEL)?;
    for (h, what) in [(hw.0, "height"), (hw.1, "width")] {
        if (h - 1) * c.fb_stride + c.fb_k + c.fb_output_pad < 2 * c.fb_pad {
            bail!("{source}: model metadata: the feedback's output {what} is negative");
        }
    }
    c.validate()
        .map_err(|e| anyhow::anyhow!("{source}: model metadata: {e}"))
}

/// Output size of a convolution on `(h, w)`, after checking its parameters.
fn conv_out(
    source: &str,
    what: &str,
    (h, w): (usize, usize),
    s: &ConvSpec,
) -> Result<(usize, usize)> {
    in_range(source, &format!("{what} height"), h, 1, MAX_SPATIAL)?;
    in_range(source, &format!("{what} width"), w, 1, MAX_SPATIAL)?;
    in_range(source, &format!("{what} channels"), s.cout, 1, MAX_CHANNELS)?;
    in_range(source, &format!("{what} kernel"), s.k, 1, MAX_KERNEL)?;
    in_range(source, &format!("{what} stride"), s.stride, 1, MAX_KERNEL)?;
    in_range(source, &format!("{what} padding"), s.pad, 0, MAX_KERNEL)?;
    if h + 2 * s.pad < s.k || w + 2 * s.pad < s.k {
        bail!(
            "{source}: model metadata: {what}: kernel {} does not fit a {h}×{w} input with padding {}",
            s.k,
            s.pad
        );
    }
    Ok((
        (h + 2 * s.pad - s.k) / s.stride + 1,
        (w + 2 * s.pad - s.k) / s.stride + 1,
    ))
}

fn in_range(source: &str, what: &str, v: usize, lo: usize, hi: usize) -> Result<()> {
    if !(lo..=hi).contains(&v) {
        bail!("{source}: model metadata: {what} must be in {lo}..={hi}, got {v}");
    }
    Ok(())
}

/// Whether the model's per-batch buffers fit the adapter's storage-binding limit at `batch`
/// samples; `flag` names the batch-size flag the user can lower.
pub fn fits_gpu(gpu: &Gpu, cfg: &ModelConfig, batch: usize, flag: &str) -> Result<()> {
    let limit = gpu.ctx.max_binding_bytes();
    let largest_param = match cfg {
        ModelConfig::Single(c) => c
            .param_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .max(),
        ModelConfig::Multi(c) => c
            .param_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .max(),
    }
    .unwrap_or(0) as u64
        * 4;
    if largest_param > limit {
        bail!(
            "model {}: a parameter tensor of {largest_param} bytes exceeds the adapter's buffer limit of {limit} bytes",
            cfg.preset()
        );
    }
    let per_sample = cfg.spiking_neurons().max(cfg.sample_len()) as u64 * 4;
    let bytes = per_sample.saturating_mul(batch as u64);
    if bytes > limit {
        bail!(
            "{flag} {batch}: one batch of {} needs {bytes} bytes in one buffer, more than the \
             adapter's limit of {limit}; the most that fits is {}",
            cfg.preset(),
            limit / per_sample.max(1)
        );
    }
    Ok(())
}
