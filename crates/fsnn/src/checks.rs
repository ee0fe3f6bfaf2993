//! Up-front validation of everything a run is configured with: a model description (from a preset
//! and flags, or from a checkpoint's metadata) and the training settings. Each check fails with
//! one message naming where the value came from and the accepted range, before anything is
//! allocated, so a damaged or hostile checkpoint cannot make fsnn abort, hang or compute NaN.

use anyhow::{bail, Result};
use fsnn_core::backend::Backend;

use crate::model::spec::{FeedbackSpec, NetworkSpec, OpSpec};
use crate::solver::{solver_layout, SolverKind};

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

/// A model description as read from `source` (a checkpoint or a model file): neuron values in
/// range, every dimension bounded (so no product of them overflows), the description valid
/// ([`NetworkSpec::validate`]), and the whole network of bounded size.
pub fn model_spec(spec: &NetworkSpec, source: &str) -> Result<()> {
    let n = spec.neuron;
    neuron(Some(source), n.time_steps, n.vth, n.leak, n.dropout)?;
    in_range(source, "classes", spec.classes, 1, MAX_FEATURES)?;
    in_range(source, "layers", spec.layers.len(), 1, MAX_LAYERS)?;
    let dims = &spec.input.shape;
    match dims.len() {
        1 => in_range(source, "input features", dims[0], 1, MAX_FEATURES)?,
        3 => {
            in_range(source, "input channels", dims[0], 1, MAX_CHANNELS)?;
            in_range(source, "input height", dims[1], 1, MAX_SPATIAL)?;
            in_range(source, "input width", dims[2], 1, MAX_SPATIAL)?;
        }
        _ => bail!(
            "{source}: model metadata: input shape {dims:?} must be [features] or [channels, height, width]"
        ),
    }
    in_range(
        source,
        "input values",
        dims.iter().product(),
        1,
        MAX_FEATURES,
    )?;
    for (li, layer) in spec.layers.iter().enumerate() {
        in_range(
            source,
            &format!("layer {} operators", li + 1),
            layer.ops.len(),
            1,
            MAX_LAYERS,
        )?;
        for (oi, op) in layer.ops.iter().enumerate() {
            let at = format!("layer {}, op {} ({})", li + 1, oi + 1, op.kind());
            match *op {
                OpSpec::Linear { out, .. } => {
                    in_range(source, &format!("{at} out"), out, 1, MAX_FEATURES)?
                }
                OpSpec::Conv {
                    out,
                    k,
                    stride,
                    pad,
                    ..
                } => {
                    in_range(source, &format!("{at} channels"), out, 1, MAX_CHANNELS)?;
                    kernel(source, &at, k, stride, pad)?;
                }
                OpSpec::AvgPool { k } => in_range(source, &format!("{at} k"), k, 1, MAX_KERNEL)?,
                OpSpec::BatchNorm {} => {}
            }
        }
    }
    match spec.feedback {
        FeedbackSpec::Linear {} => {}
        FeedbackSpec::Conv { k, stride, pad } => kernel(source, "feedback", k, stride, pad)?,
        FeedbackSpec::ConvTranspose {
            k,
            stride,
            pad,
            output_pad,
        } => {
            kernel(source, "feedback", k, stride, pad)?;
            in_range(source, "feedback output_pad", output_pad, 0, MAX_KERNEL)?;
        }
    }
    spec.validate()
        .map_err(|e| anyhow::anyhow!("{source}: model metadata: {e:#}"))?;
    let bad = |msg: String| -> Result<()> { bail!("{source}: model metadata: {msg}") };
    // Every operator's output, not only each layer's, is bounded before parameters are counted.
    for ops in spec.resolve() {
        for op in ops {
            let len = op.output.len();
            if len > MAX_NEURONS {
                return bad(format!(
                    "an operator's output has {len} values per sample; at most {MAX_NEURONS} are supported"
                ));
            }
        }
    }
    let params = spec.param_count();
    if params > MAX_PARAMS {
        return bad(format!(
            "{params} parameters; at most {MAX_PARAMS} are supported"
        ));
    }
    let neurons = spec.neurons();
    if neurons > MAX_NEURONS {
        return bad(format!(
            "{neurons} spiking neurons per sample; at most {MAX_NEURONS} are supported"
        ));
    }
    Ok(())
}

fn kernel(source: &str, what: &str, k: usize, stride: usize, pad: usize) -> Result<()> {
    in_range(source, &format!("{what} kernel"), k, 1, MAX_KERNEL)?;
    in_range(source, &format!("{what} stride"), stride, 1, MAX_KERNEL)?;
    in_range(source, &format!("{what} padding"), pad, 0, MAX_KERNEL)
}

fn in_range(source: &str, what: &str, v: usize, lo: usize, hi: usize) -> Result<()> {
    if !(lo..=hi).contains(&v) {
        bail!("{source}: model metadata: {what} must be in {lo}..={hi}, got {v}");
    }
    Ok(())
}

/// Whether the buffers one step of the model allocates at `batch` samples fit the backend's
/// limits: no tensor bound whole over the storage-binding limit, no buffer over the device's
/// largest allocation (the solver's history, `solver` = its kind and threshold, is the largest:
/// 2 × 27 vectors per sample for Broyden), and no sample's history row over one binding (the
/// solver binds it per sample range). `None` for `solver`: evaluation, which has none. `flag`
/// names the batch-size flag the user can lower. Backends without such limits always fit.
pub fn fits_gpu<B: Backend>(
    gpu: &B,
    cfg: &NetworkSpec,
    batch: usize,
    solver: Option<(SolverKind, usize)>,
    flag: &str,
) -> Result<()> {
    let Some(limit) = gpu.max_tensor_bytes() else {
        return Ok(());
    };
    let buffer_limit = gpu.max_buffer_bytes().unwrap_or(limit).max(limit);
    let largest_param = cfg
        .param_shapes()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .max()
        .unwrap_or(0) as u64
        * 4;
    if largest_param > limit {
        bail!(
            "model {}: a parameter tensor of {largest_param} bytes exceeds the adapter's buffer limit of {limit} bytes",
            cfg.name
        );
    }
    let last = cfg.neurons_per_layer().last().copied().unwrap_or(0);
    // One sample's words in the tensors bound whole: a layer's values, a chain's intermediate
    // outputs (a conv before its pooling is wider than the layer), the sample's input frames.
    let chains = cfg.resolve();
    let bound = chains
        .iter()
        .flatten()
        .flat_map(|op| [op.input.len(), op.output.len()])
        .chain([cfg.neurons(), cfg.sample_len()])
        .max()
        .unwrap_or(0) as u64;
    check_batch(
        flag,
        batch,
        &cfg.name,
        "one batch of",
        bound * 4,
        limit,
        "adapter's binding limit",
    )?;
    if let Some((kind, threshold)) = solver {
        let hist = solver_layout(kind, threshold, 1, last).hist_len() as u64;
        if hist * 4 > limit {
            bail!(
                "model {}: the {kind:?} solver keeps {} bytes of history per sample, more than the \
                 adapter's binding limit of {limit} bytes (use --solver fixed-point)",
                cfg.name,
                hist * 4
            );
        }
        check_batch(
            flag,
            batch,
            &cfg.name,
            &format!("the {kind:?} solver's history over"),
            hist * 4,
            buffer_limit,
            "adapter's largest buffer",
        )?;
        // The per-sample scalars (state, Gram matrices, coefficients) are bound whole.
        let one = solver_layout(kind, threshold, 1, last).scal_len() as u64;
        let per = solver_layout(kind, threshold, 2, last).scal_len() as u64 - one;
        let bytes = (u128::from(per) * batch as u128 + u128::from(one - per)) * 4;
        if bytes > u128::from(limit) {
            bail!(
                "{flag} {batch}: the {kind:?} solver's per-sample scalars over {} need {bytes} \
                 bytes in one binding, more than the adapter's binding limit of {limit}; the most \
                 that fits is {}",
                cfg.name,
                (limit / 4).saturating_sub(one - per) / per.max(1)
            );
        }
    }
    Ok(())
}

/// `batch` × `per_sample` bytes against `limit`, with the largest batch that fits in the error.
fn check_batch(
    flag: &str,
    batch: usize,
    model: &str,
    what: &str,
    per_sample: u64,
    limit: u64,
    limit_name: &str,
) -> Result<()> {
    let bytes = u128::from(per_sample) * batch as u128;
    if bytes > u128::from(limit) {
        bail!(
            "{flag} {batch}: {what} {model} needs {bytes} bytes in one buffer, more than the \
             {limit_name} of {limit}; the most that fits is {}",
            limit / per_sample.max(1)
        );
    }
    Ok(())
}
