//! The training loop: shuffled batches prepared on a host thread, IDE steps on the GPU, evaluation
//! each epoch, metrics, checkpoints and a plot.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use fsnn_core::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::batches::{for_each_batch, load_sources_sized, BatchSource};
use crate::gpu::backend::as_gpu;
use crate::kernels::Kernels;
pub use crate::metrics::EpochMetrics;
use crate::model::spec::NetworkSpec;
use crate::model::{HostRng, HostState, Model};
use crate::solver::SolverKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub dataset: String,
    pub data_dir: Option<PathBuf>,
    pub epochs: usize,
    pub lr: f32,
    pub batch_size: usize,
    /// Epochs at which the learning rate is multiplied by 0.1.
    pub schedule: Vec<usize>,
    /// Iterations of linear learning-rate warm-up.
    pub warmup: usize,
    pub solver: SolverKind,
    pub threshold: usize,
    pub seed: u64,
    pub out: PathBuf,
    pub resume: bool,
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    pub eval_batch: usize,
    pub quiet: bool,
    /// Print a per-kernel GPU time table at the end of each epoch.
    pub profile: bool,
    /// Write the run's first training step as a Chrome trace to this file.
    pub trace: Option<PathBuf>,
    /// Also write `last.safetensors` every this many training steps (0: at epoch ends only).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Replace the run already in `out`, or resume it although training flags changed.
    #[serde(default)]
    pub force: bool,
    /// Resize every image of a `folder:` dataset to (width, height).
    #[serde(default)]
    pub resize: Option<(u32, u32)>,
    /// Forward simulation kernels (dense, event, or auto: measured once and cached).
    #[serde(default = "default_kernels")]
    pub kernels: Kernels,
}

fn default_kernels() -> Kernels {
    Kernels::Auto
}

/// Training settings that may change between a run and its `--resume` without changing what it
/// computes (where output goes, how it is shown, when checkpoints are written).
const RESUMABLE_KEYS: &[&str] = &[
    "epochs",
    "out",
    "resume",
    "quiet",
    "profile",
    "trace",
    "data_dir",
    "checkpoint_every",
    "force",
    "eval_batch",
    // Both simulation kernels give bit-identical spikes, rates and gradients.
    "kernels",
];

impl TrainConfig {
    /// Every setting in its accepted range, with the flag's name in the message.
    pub fn validate(&self) -> Result<()> {
        let at_least_1 = [
            ("--epochs", Some(self.epochs)),
            ("--batch-size", Some(self.batch_size)),
            ("--eval-batch", Some(self.eval_batch)),
            ("--threshold", Some(self.threshold)),
            ("--limit-train", self.limit_train),
            ("--limit-test", self.limit_test),
        ];
        for (flag, v) in at_least_1 {
            if v == Some(0) {
                bail!("{flag} must be at least 1, got 0");
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a finite number > 0, got {}", self.lr);
        }
        // Steps no run reaches: a warm-up this long keeps lr near 0 for the whole run.
        if self.warmup > MAX_WARMUP {
            bail!(
                "--warmup must be at most {MAX_WARMUP} iterations (a run's whole length), got {}",
                self.warmup
            );
        }
        if let Some(&0) = self.schedule.first() {
            bail!("--schedule: epoch 0 is before training starts; milestones must be at least 1");
        }
        if let Some(w) = self.schedule.windows(2).find(|w| w[0] >= w[1]) {
            bail!(
                "--schedule must be strictly increasing epochs, got {} then {}",
                w[0],
                w[1]
            );
        }
        if let Some((w, h)) = self.resize {
            if w == 0 || h == 0 || w > 1 << 14 || h > 1 << 14 {
                bail!("--resize must be WxH with both in 1..=16384, got {w}x{h}");
            }
        }
        Ok(())
    }
}

/// Most warm-up iterations: 10⁸ steps are more than any run of the paper's models takes.
pub const MAX_WARMUP: usize = 100_000_000;

/// The settings checked against the model they train, before the device starts: an error where
/// a value cannot work, and otherwise the settings that are legal but almost surely a mistake,
/// one line each, for the caller to print as warnings.
pub fn check_for_model(cfg: &TrainConfig, spec: &NetworkSpec) -> Result<Vec<String>> {
    if cfg.batch_size == 1 && spec.has_batch_norm() {
        bail!(
            "--batch-size 1: model {} has batch norm, which normalises each channel over the \
             batch; one sample has variance 0 there and every output collapses to the bias",
            spec.name
        );
    }
    let mut out = Vec::new();
    if let Some(&e) = cfg.schedule.iter().find(|&&e| e >= cfg.epochs) {
        out.push(format!(
            "--schedule {e}: the run ends after {} epochs, so this milestone never applies (fine \
             only if you will --resume with more --epochs)",
            cfg.epochs
        ));
    }
    if cfg.batch_size < 8 && spec.has_batch_norm() {
        out.push(format!(
            "--batch-size {}: batch norm estimates each channel's statistics from the batch; \
             under 8 samples they are mostly noise",
            cfg.batch_size
        ));
    }
    Ok(out)
}

/// Set by [`request_stop`] (the command line's handler of Ctrl-C, SIGTERM and SIGHUP): training finishes the step in
/// progress, writes a checkpoint and returns [`Interrupted`].
static STOP: AtomicBool = AtomicBool::new(false);
/// True while a training loop runs, i.e. while a stop request can still be honoured gracefully.
static TRAINING: AtomicBool = AtomicBool::new(false);

/// Asks a running training loop to stop after its current step. Returns false when there is
/// nothing to stop gracefully (no loop running, or a stop was already requested), in which case
/// the caller should exit at once.
pub fn request_stop() -> bool {
    let first = !STOP.swap(true, Ordering::SeqCst);
    first && TRAINING.load(Ordering::SeqCst)
}

/// The error a training run stopped by [`request_stop`] returns, after writing its checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("stopped after step {step} (epoch {epoch}); checkpoint {}", checkpoint.display())]
pub struct Interrupted {
    pub epoch: usize,
    pub step: u64,
    pub checkpoint: PathBuf,
}

/// Where training stands, stored in every checkpoint so `--resume` continues exactly.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    pub global_step: u64,
    #[serde(with = "crate::runs::f64_bits")]
    pub best_test_acc: f64,
    /// In a mid-epoch checkpoint: how far epoch `epoch + 1` got.
    #[serde(default)]
    pub partial: Option<EpochProgress>,
}

/// Running sums of an epoch in progress, carried by mid-epoch checkpoints so that a resumed
/// epoch reports the same metrics as an uninterrupted one: each is stored as its bits (see
/// [`crate::runs::f64_bits`]) and summed on in the order the uninterrupted run sums it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct EpochProgress {
    pub steps_done: usize,
    #[serde(with = "crate::runs::f64_bits")]
    pub loss_sum: f64,
    pub correct: usize,
    pub samples: usize,
    #[serde(with = "crate::runs::f64_bits")]
    pub iters_sum: f64,
    #[serde(with = "crate::runs::f64_bits")]
    pub residual_sum: f64,
    #[serde(with = "crate::runs::f64_bits_vec")]
    pub forward_residuals: Vec<f64>,
    #[serde(with = "crate::runs::f64_bits")]
    pub forward_ms_sum: f64,
    #[serde(with = "crate::runs::f64_bits")]
    pub backward_ms_sum: f64,
    /// Training seconds spent on the epoch before the checkpoint.
    #[serde(with = "crate::runs::f64_bits")]
    pub seconds: f64,
    #[serde(with = "crate::runs::f32_bits")]
    pub lr: f32,
    /// The epoch's peak GPU memory before the checkpoint: a resumed epoch that only evaluates
    /// never allocates the training step's buffers, yet the epoch's peak includes them.
    #[serde(default)]
    pub peak_gpu_bytes: u64,
}

pub fn lr_at(cfg: &TrainConfig, epoch: usize, global_step: u64) -> f32 {
    let decays = cfg.schedule.iter().filter(|&&e| epoch >= e).count();
    let mut lr = cfg.lr * 0.1f32.powi(decays as i32);
    if cfg.warmup > 0 && (global_step as usize) < cfg.warmup {
        lr *= (global_step + 1) as f32 / cfg.warmup as f32;
    }
    lr
}

fn shuffled(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = HostRng::new(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx
}

/// Test-set loss and accuracy.
pub fn evaluate<B: Backend>(
    gpu: &B,
    net: &mut dyn Model<B>,
    source: &dyn BatchSource,
    batch: usize,
    limit: Option<usize>,
) -> Result<(f64, f64)> {
    evaluate_until(gpu, net, source, batch, limit, &|| false)?.context("evaluation stopped early")
}

/// [`evaluate`], giving up (`None`) as soon as `stop` says so.
fn evaluate_until<B: Backend>(
    gpu: &B,
    net: &mut dyn Model<B>,
    source: &dyn BatchSource,
    batch: usize,
    limit: Option<usize>,
    stop: &dyn Fn() -> bool,
) -> Result<Option<(f64, f64)>> {
    if batch == 0 {
        bail!("evaluation batch size must be at least 1");
    }
    let n = limit.unwrap_or(source.len()).min(source.len());
    if n == 0 {
        bail!("the test split is empty ({})", source.describe());
    }
    let order: Vec<usize> = (0..n).collect();
    let (mut loss, mut correct, mut seen) = (0.0, 0usize, 0usize);
    for_each_batch(source, &order, batch, 0, |x, y| {
        let s = net.eval_batch(gpu, x, y)?;
        loss += s.loss_sum;
        correct += s.correct;
        seen += y.len();
        Ok(!stop())
    })?;
    if seen < n {
        return Ok(None);
    }
    Ok(Some((loss / n as f64, correct as f64 / n as f64)))
}

// --------------------------------------------------------------- checkpoints

/// Temporary files in a run folder start with this, so a later start can remove the ones a kill
/// left behind.
const TEMP_PREFIX: &str = ".fsnn-tmp-";

/// Writes `bytes` to `path` atomically (temporary file in the same folder, then rename).
fn write_atomic(path: &Path, bytes: &[u8], fault: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create temporary file", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("{}: write failed", path.display()))?;
    tmp.as_file().sync_all().ok();
    fault_point(fault);
    tmp.persist(path)
        .with_context(|| format!("{}: rename failed", path.display()))?;
    Ok(())
}

/// Writes a safetensors checkpoint atomically (temporary file in the same folder, then rename):
/// the tensors of `host` ([`Model::to_host`]), the model's description (so that
/// [`read_checkpoint`] alone can rebuild it) and where training stood.
pub fn save_checkpoint(
    path: &Path,
    cfg: &NetworkSpec,
    state: &TrainState,
    host: &HostState,
) -> Result<()> {
    save_checkpoint_with(path, cfg, state, host, &[])
}

/// [`save_checkpoint`] with extra metadata entries (the run's settings and metrics history).
pub fn save_checkpoint_with(
    path: &Path,
    cfg: &NetworkSpec,
    state: &TrainState,
    host: &HostState,
    extra: &[(&str, String)],
) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert("fsnn.model".to_string(), serde_json::to_string(cfg)?);
    meta.insert(
        "fsnn.train_state".to_string(),
        serde_json::to_string(state)?,
    );
    for (k, v) in extra {
        meta.insert(k.to_string(), v.clone());
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = host
        .tensors
        .iter()
        .map(|(name, shape, data)| {
            let bytes: &[u8] = bytemuck::cast_slice(data);
            (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, &Some(meta)).context("serialising checkpoint")?;
    write_atomic(path, &bytes, "checkpoint-write")
}

/// Reads a checkpoint: the model it belongs to, where training stood, and its tensors.
pub fn load_checkpoint(path: &Path) -> Result<(NetworkSpec, TrainState, HostState)> {
    let c = read_checkpoint(path)?;
    Ok((c.model, c.state, c.host))
}

/// Everything a checkpoint holds.
pub struct Checkpoint {
    /// The network's description (checkpoints written before model files are converted).
    pub model: NetworkSpec,
    pub state: TrainState,
    pub host: HostState,
    /// The settings of the run that wrote it (absent in checkpoints of older versions).
    pub train_config: Option<serde_json::Value>,
    /// The metrics lines of the epochs it has completed (absent in older checkpoints).
    pub metrics: Option<Vec<String>>,
}

/// Reads and validates a checkpoint: its model description must be well-formed and of bounded
/// size before anything is built from it.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("{}: cannot read checkpoint", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors checkpoint: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: corrupt checkpoint: {e}", path.display()))?;
    let m = meta.metadata().clone().unwrap_or_default();
    let meta_json = m.get("fsnn.model").with_context(|| {
        format!(
            "{}: no fsnn model metadata (not an fsnn checkpoint)",
            path.display()
        )
    })?;
    // Checkpoints written before model files hold the old engine's description: it converts to
    // the network description that names the same parameters.
    let cfg: NetworkSpec = if crate::model::legacy::is_legacy(meta_json) {
        crate::model::legacy::to_spec(meta_json)
    } else {
        serde_json::from_str(meta_json).map_err(anyhow::Error::from)
    }
    .with_context(|| format!("{}: bad model metadata", path.display()))?;
    crate::checks::model_spec(&cfg, &path.display().to_string())?;
    let state: TrainState = m
        .get("fsnn.train_state")
        .map(|s| serde_json::from_str(s))
        .transpose()
        .with_context(|| format!("{}: bad training-state metadata", path.display()))?
        .unwrap_or_default();
    let train_config = m
        .get("fsnn.train_config")
        .map(|s| serde_json::from_str::<serde_json::Value>(s))
        .transpose()
        .with_context(|| format!("{}: bad training-settings metadata", path.display()))?;
    let metrics = m
        .get("fsnn.metrics")
        .map(|s| serde_json::from_str::<Vec<String>>(s))
        .transpose()
        .with_context(|| format!("{}: bad metrics-history metadata", path.display()))?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            bail!(
                "{}: tensor {name} is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // A NaN or infinite value would turn every later loss into NaN while `eval` still
        // exits 0, so a damaged checkpoint is refused here, naming the tensor.
        if let Some((i, v)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            bail!(
                "{}: tensor {name} holds {v} at index {i}; a checkpoint's values must be finite",
                path.display()
            );
        }
        tensors.push((name, view.shape().to_vec(), data));
    }
    Ok(Checkpoint {
        model: cfg,
        state,
        host: HostState { tensors },
        train_config,
        metrics,
    })
}

/// Fault injection for the kill-and-resume test: with `FSNN_FAULT=<point>:<n>` the process kills
/// itself with SIGKILL the n-th time it reaches `point` (`step`, `checkpoint-write`,
/// `after-checkpoint`); points named `stop-…` (`stop-in-eval`: after each evaluation batch)
/// instead request a graceful stop there, as a Ctrl-C arriving at that moment would.
/// Unset, this is one relaxed load.
fn fault_point(point: &str) {
    use std::sync::atomic::AtomicUsize;
    use std::sync::OnceLock;
    static PLAN: OnceLock<Option<(String, usize)>> = OnceLock::new();
    static HITS: AtomicUsize = AtomicUsize::new(0);
    let plan = PLAN.get_or_init(|| {
        let v = std::env::var("FSNN_FAULT").ok()?;
        let (p, n) = v.rsplit_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    });
    let Some((p, n)) = plan else { return };
    if p != point || HITS.fetch_add(1, Ordering::SeqCst) + 1 != *n {
        return;
    }
    if point.starts_with("stop-") {
        STOP.store(true, Ordering::SeqCst);
        return;
    }
    // SIGKILL, as a crash or an OOM killer would: no destructors, no flushing.
    #[cfg(unix)]
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort();
}

// ------------------------------------------------------------- run folders

/// Files that make a folder hold a run.
const RUN_FILES: &[&str] = &[
    "metrics.jsonl",
    "steps.jsonl",
    "last.safetensors",
    "best.safetensors",
];

/// Removes temporary files a killed run left in `dir` (ours, and the unnamed ones older
/// versions wrote).
fn remove_orphan_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let old_style = name.len() == 10 && name.starts_with(".tmp");
        if (name.starts_with(TEMP_PREFIX) || old_style) && std::fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// The settings that differ between a checkpoint's run and this one, as `--flag old → new`.
fn changed_flags(saved: &serde_json::Value, now: &TrainConfig) -> Vec<String> {
    // Through text, as the checkpoint stores it: `to_value` widens f32 fields (0.05 becomes
    // 0.05000000074505806), text keeps their shortest form.
    let now: serde_json::Value = serde_json::to_string(now)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let (Some(saved), Some(now)) = (saved.as_object(), now.as_object()) else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = saved.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    let null = serde_json::Value::Null;
    keys.into_iter()
        .filter(|k| !RESUMABLE_KEYS.contains(&k.as_str()))
        .filter_map(|k| {
            let (a, b) = (saved.get(k).unwrap_or(&null), now.get(k).unwrap_or(&null));
            (a != b).then(|| format!("--{} {a} → {b}", k.replace('_', "-")))
        })
        .collect()
}

/// Keeps the lines of `steps.jsonl` up to step `last_step`, dropping what a killed run logged
/// after its checkpoint (and a torn last line).
fn truncate_steps_log(path: &Path, last_step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let mut keep = String::new();
    for line in text.lines() {
        let step = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["step"].as_u64());
        match step {
            Some(s) if s <= last_step => {
                keep.push_str(line);
                keep.push('\n');
            }
            _ => {}
        }
    }
    write_atomic(path, keep.as_bytes(), "")
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Checks that the dataset's splits fit each other and the model, before any training.
fn check_sources(
    dataset: &str,
    net_cfg: &NetworkSpec,
    train: &dyn BatchSource,
    test: &dyn BatchSource,
) -> Result<()> {
    if train.is_empty() {
        bail!("dataset {dataset}: the training split is empty");
    }
    if test.is_empty() {
        bail!("dataset {dataset}: the test split is empty");
    }
    if test.sample_len() != train.sample_len() {
        bail!(
            "dataset {dataset}: test samples have {} values ({}), training samples {} ({})",
            test.sample_len(),
            test.describe(),
            train.sample_len(),
            train.describe()
        );
    }
    let expect = net_cfg.sample_len();
    if train.sample_len() != expect {
        bail!(
            "dataset {dataset} gives {} values per sample ({}); model {} needs {expect}",
            train.sample_len(),
            train.describe(),
            net_cfg.name
        );
    }
    for (split, src) in [("training", train), ("test", test)] {
        if src.classes() > net_cfg.classes {
            bail!(
                "dataset {dataset} ({split} split) has {} classes; model {} has {}",
                src.classes(),
                net_cfg.name,
                net_cfg.classes
            );
        }
    }
    Ok(())
}

/// Checks that a test split fits a model loaded from a checkpoint (for `fsnn eval`).
pub fn check_eval_source(
    dataset: &str,
    checkpoint: &Path,
    net_cfg: &NetworkSpec,
    test: &dyn BatchSource,
) -> Result<()> {
    if test.is_empty() {
        bail!("dataset {dataset}: the test split is empty");
    }
    if test.sample_len() != net_cfg.sample_len() || test.classes() > net_cfg.classes {
        bail!(
            "{}: model {} takes {} values per sample and {} classes; dataset {dataset} gives {} values ({}) and {} classes",
            checkpoint.display(),
            net_cfg.name,
            net_cfg.sample_len(),
            net_cfg.classes,
            test.sample_len(),
            test.describe(),
            test.classes()
        );
    }
    Ok(())
}

// --------------------------------------------------------------------- loop

/// Clears [`TRAINING`] when a training loop ends, however it ends.
struct TrainingFlag;
impl TrainingFlag {
    fn new() -> Self {
        STOP.store(false, Ordering::SeqCst);
        TRAINING.store(true, Ordering::SeqCst);
        TrainingFlag
    }
}
impl Drop for TrainingFlag {
    fn drop(&mut self) {
        TRAINING.store(false, Ordering::SeqCst);
    }
}

/// Trains the network `net_cfg` describes as `cfg` says, writing metrics and checkpoints under
/// `cfg.out`.
pub fn train<B: Backend>(
    gpu: &B,
    net_cfg: NetworkSpec,
    cfg: &TrainConfig,
) -> Result<Vec<EpochMetrics>> {
    cfg.validate()?;
    if (cfg.profile || cfg.trace.is_some()) && as_gpu(gpu).is_none() {
        bail!(
            "--profile and --trace time the GPU's kernels; the {} backend has no kernel profile",
            gpu.describe()
        );
    }
    crate::checks::model_spec(&net_cfg, &format!("model {}", net_cfg.name))?;
    let solver = Some((cfg.solver, cfg.threshold));
    crate::checks::fits_gpu(gpu, &net_cfg, cfg.batch_size, solver, "--batch-size")?;
    crate::checks::fits_gpu(gpu, &net_cfg, cfg.eval_batch, None, "--eval-batch")?;
    let last = cfg.out.join("last.safetensors");
    let best = cfg.out.join("best.safetensors");
    let metrics_path = cfg.out.join("metrics.jsonl");
    let steps_path = cfg.out.join("steps.jsonl");
    // One process per run folder, before anything in it is looked at (a folder to resume that
    // does not exist is reported below).
    let _lock = if cfg.resume && !cfg.out.is_dir() {
        None
    } else {
        Some(crate::runs::RunLock::acquire(&cfg.out)?)
    };
    let existing: Vec<&str> = RUN_FILES
        .iter()
        .copied()
        .filter(|f| cfg.out.join(f).exists())
        .collect();
    if cfg.resume {
        if !last.exists() {
            bail!(
                "{}: nothing to resume (no last.safetensors in {}: the run stopped before its first checkpoint); start it again with --force instead of --resume",
                last.display(),
                cfg.out.display()
            );
        }
    } else if !existing.is_empty() && !cfg.force {
        bail!(
            "{} already holds a run ({}); continue it with --resume, replace it with --force, or choose another --out",
            cfg.out.display(),
            existing.join(", ")
        );
    }
    // Everything checkable is checked before a previous run's files are touched.
    let (train_src, test_src) = load_sources_sized(
        &cfg.dataset,
        cfg.data_dir.as_deref(),
        net_cfg.neuron.time_steps,
        cfg.resize,
    )?;
    check_sources(
        &cfg.dataset,
        &net_cfg,
        train_src.as_ref(),
        test_src.as_ref(),
    )?;
    let n_train = cfg
        .limit_train
        .unwrap_or(train_src.len())
        .min(train_src.len());

    let mut net = crate::model::build(&net_cfg, gpu, cfg.seed)?;
    // Auto is measured per adapter on the GPU; another backend's model takes the event path
    // wherever that backend supports it.
    let requested = match as_gpu(gpu) {
        Some(g) => crate::kernels::resolve(g, &net_cfg, cfg.batch_size, cfg.kernels)?,
        None => cfg.kernels,
    };
    let kernels = net.set_kernels(requested);
    let mut state = TrainState::default();
    let mut history: Vec<String> = Vec::new();
    if cfg.resume {
        let ck = read_checkpoint(&last)?;
        {
            let (saved, now) = (&ck.model, &net_cfg);
            let same_otherwise = {
                let mut n = now.clone();
                n.adjoint = saved.adjoint;
                &n == saved
            };
            if saved.adjoint != now.adjoint && same_otherwise {
                bail!(
                    "{}: the checkpoint was trained with --adjoint {}, this run asks for --adjoint {}; pass --adjoint {} to resume it",
                    last.display(),
                    saved.adjoint.name(),
                    now.adjoint.name(),
                    saved.adjoint.name()
                );
            }
        }
        // The description and the [train] defaults do not change what is computed.
        let network = |s: &NetworkSpec| NetworkSpec {
            description: String::new(),
            train: Default::default(),
            ..s.clone()
        };
        if network(&ck.model) != network(&net_cfg) {
            bail!(
                "{}: the checkpoint is of another model ({}) than this run asks for ({}){}",
                last.display(),
                ck.model.name,
                net_cfg.name,
                spec_difference(&ck.model, &net_cfg)
            );
        }
        if let Some(saved) = &ck.train_config {
            let changed = changed_flags(saved, cfg);
            if !changed.is_empty() {
                if !cfg.force {
                    bail!(
                        "{}: this run's settings differ from the checkpoint's: {}; resume with the same flags, or add --force to continue with the new ones",
                        last.display(),
                        changed.join(", ")
                    );
                }
                eprintln!(
                    "warning: --force: continuing {} with changed settings: {}",
                    last.display(),
                    changed.join(", ")
                );
            }
        }
        if let Some(p) = &ck.state.partial {
            let steps = n_train.div_ceil(cfg.batch_size);
            if p.samples > n_train || p.steps_done > steps {
                bail!(
                    "{}: the checkpoint is {} samples into an epoch of {n_train}",
                    last.display(),
                    p.samples
                );
            }
        }
        net.load_host(
            gpu,
            &crate::runs::for_resume(&ck.host),
            &last.display().to_string(),
        )?;
        state = ck.state;
        history = ck.metrics.unwrap_or_else(|| {
            std::fs::read_to_string(&metrics_path)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(state.epoch)
                .map(str::to_string)
                .collect()
        });
        let orphans = remove_orphan_temps(&cfg.out);
        if orphans > 0 {
            eprintln!(
                "removed {orphans} temporary file(s) a killed run left in {}",
                cfg.out.display()
            );
        }
        // The logs say exactly what the checkpoint holds: finished epochs' metrics, and steps
        // up to its step; whatever a killed run wrote after it is dropped.
        write_atomic(&metrics_path, lines_text(&history).as_bytes(), "")?;
        truncate_steps_log(&steps_path, state.global_step)?;
        match &state.partial {
            Some(p) => eprintln!(
                "resuming {} in epoch {} after step {} ({} of its steps done)",
                last.display(),
                state.epoch + 1,
                state.global_step,
                p.steps_done
            ),
            None => eprintln!(
                "resuming {} after epoch {} (step {})",
                last.display(),
                state.epoch,
                state.global_step
            ),
        }
    } else {
        std::fs::create_dir_all(&cfg.out)
            .with_context(|| format!("{}: cannot create output folder", cfg.out.display()))?;
        remove_orphan_temps(&cfg.out);
        for f in RUN_FILES.iter().chain(&["metrics.png"]) {
            let f = cfg.out.join(f);
            if f.exists() {
                std::fs::remove_file(&f).with_context(|| {
                    format!("{}: cannot remove the previous run's file", f.display())
                })?;
            }
        }
    }
    let saved_cfg = serde_json::to_string(cfg)?;
    eprintln!(
        "{}: {} parameters, {} neurons ({} spiking per sample), T={}, {} vth={} leak={}, solver {:?} (threshold {}{}); data: {}",
        net_cfg.name,
        net_cfg.param_count(),
        net_cfg.paper_neurons(),
        net_cfg.neurons(),
        net_cfg.neuron.time_steps,
        if net_cfg.neuron.leak == 1.0 { "IF" } else { "LIF" },
        net_cfg.neuron.vth,
        net_cfg.neuron.leak,
        cfg.solver,
        cfg.threshold,
        if net_cfg.depth() > 1 {
            format!(", adjoint {}", net_cfg.adjoint.name())
        } else {
            String::new()
        },
        train_src.describe()
    );
    let _training = TrainingFlag::new();
    let stop_requested = || STOP.load(Ordering::SeqCst);
    let steps_per_epoch = n_train.div_ceil(cfg.batch_size);
    // For the whole-run ETA: measured seconds per training step and per evaluation.
    let run_t0 = Instant::now();
    let mut eta = crate::runs::EtaClock::default();
    let mut eval_secs: Option<f64> = None;
    eprintln!("forward simulation kernels: {kernels}");
    let mut all = Vec::new();
    for epoch in state.epoch..cfg.epochs {
        let t0 = Instant::now();
        gpu.reset_peak_memory();
        let order: Vec<usize> = shuffled(train_src.len(), cfg.seed, epoch)
            .into_iter()
            .filter(|&i| i < n_train)
            .collect();
        let mut acc = state.partial.take().unwrap_or_default();
        let skip_steps = acc.steps_done;
        let bar = if cfg.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(steps_per_epoch as u64)
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
        bar.set_position(skip_steps as u64);
        bar.set_message("eta: measuring");
        let mut lr = if skip_steps > 0 {
            acc.lr
        } else {
            lr_at(cfg, epoch, state.global_step)
        };
        let mut failure: Option<String> = None;
        let mut interrupted = false;
        // Per-step log, appended (a resumed run continues it) and unbuffered, so `tail -f` follows
        // a slow run step by step.
        let mut steps_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&steps_path)
            .with_context(|| format!("{}: cannot append", steps_path.display()))?;
        let mut trace_pending = cfg.trace.is_some() && epoch == state.epoch && skip_steps == 0;
        gpu.set_profiling(cfg.profile || trace_pending);
        let aug_seed = cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (epoch as u64) << 32;
        let resumed_secs = acc.seconds;
        let save_progress = |host: &HostState, state: &TrainState, history: &[String]| {
            let extra = [
                ("fsnn.train_config", saved_cfg.clone()),
                ("fsnn.metrics", serde_json::to_string(history)?),
            ];
            save_checkpoint_with(&last, &net_cfg, state, host, &extra)
        };
        let start = acc.samples.min(order.len());
        for_each_batch(
            train_src.as_ref(),
            &order[start..],
            cfg.batch_size,
            aug_seed.wrapping_add(skip_steps as u64),
            |x, y| {
                lr = lr_at(cfg, epoch, state.global_step);
                let seed = (cfg.seed as u32).wrapping_mul(0x9E37_79B9) ^ (state.global_step as u32);
                let step_t0 = Instant::now();
                let s = net.train_step(gpu, x, y, lr, cfg.solver, cfg.threshold, seed)?;
                fault_point("step");
                if let Some(g) = as_gpu(gpu).filter(|_| trace_pending) {
                    let prof = g.take_profile();
                    let path = cfg.trace.as_ref().unwrap();
                    std::fs::write(path, serde_json::to_vec(&prof.chrome_trace())?)
                        .with_context(|| format!("{}: cannot write trace", path.display()))?;
                    trace_pending = false;
                    gpu.set_profiling(cfg.profile);
                }
                if !s.loss_sum.is_finite() {
                    failure = Some(format!(
                        "non-finite loss at epoch {} step {}",
                        epoch + 1,
                        state.global_step
                    ));
                    return Ok(false);
                }
                state.global_step += 1;
                writeln!(
                    steps_log,
                    "{}",
                    serde_json::json!({
                        "epoch": epoch + 1, "step": state.global_step, "lr": lr,
                        "loss": s.loss_sum / s.samples as f64, "acc": s.correct as f64 / s.samples as f64,
                        "solver_iters": s.solve.iterations, "solver_rel_residual": s.solve.rel_residual,
                        "forward_residual": s.forward_residual, "forward_ms": s.forward_ms,
                        "backward_ms": s.backward_ms, "optimizer_ms": s.optimizer_ms,
                    })
                )?;
                acc.steps_done += 1;
                acc.loss_sum += s.loss_sum;
                acc.correct += s.correct;
                acc.samples += s.samples;
                acc.iters_sum += s.solve.iterations as f64;
                acc.residual_sum += s.solve.rel_residual;
                acc.forward_residuals.push(s.forward_residual);
                acc.forward_ms_sum += s.forward_ms;
                acc.backward_ms_sum += s.backward_ms;
                acc.lr = lr;
                eta.record(step_t0.elapsed().as_secs_f64());
                let el = t0.elapsed().as_secs_f64();
                let eta_text = match eta.per_step() {
                    Some(per_step) => {
                        let left_epoch =
                            steps_per_epoch.saturating_sub(acc.steps_done) as f64 * per_step;
                        let later = cfg.epochs - epoch - 1;
                        let eval = eval_secs.unwrap_or(0.0);
                        let left_run = left_epoch
                            + later as f64 * (steps_per_epoch as f64 * per_step + eval)
                            + eval;
                        format!(
                            "eta epoch {}, run {}{}",
                            fmt_secs(left_epoch),
                            fmt_secs(left_run),
                            if eval_secs.is_none() { " + evals" } else { "" }
                        )
                    }
                    None => "eta: measuring".to_string(),
                };
                bar.set_message(format!(
                    "loss {:.4} acc {:.4} {:.0} samples/s | {eta_text}",
                    acc.loss_sum / acc.samples as f64,
                    acc.correct as f64 / acc.samples as f64,
                    (acc.samples - start) as f64 / el,
                ));
                bar.inc(1);
                let stop = stop_requested();
                let periodic = cfg.checkpoint_every > 0
                    && acc.steps_done % cfg.checkpoint_every == 0
                    && acc.steps_done < steps_per_epoch;
                if stop || periodic {
                    acc.seconds = resumed_secs + t0.elapsed().as_secs_f64();
                    acc.peak_gpu_bytes = acc.peak_gpu_bytes.max(gpu.memory_bytes().1);
                    let mut st = state.clone();
                    st.partial = Some(acc.clone());
                    steps_log.flush()?;
                    save_progress(&net.to_host(gpu), &st, &history)?;
                }
                if stop {
                    interrupted = true;
                    return Ok(false);
                }
                Ok(true)
            },
        )?;
        bar.finish_and_clear();
        steps_log.flush()?;
        drop(steps_log);
        if let Some(g) = as_gpu(gpu).filter(|_| cfg.profile) {
            let prof = g.take_profile();
            gpu.set_profiling(false);
            eprintln!(
                "epoch {} kernels ({} training steps):\n{}",
                epoch + 1,
                acc.steps_done - skip_steps,
                prof.table()
            );
        }
        if let Some(f) = failure {
            bail!(
                "{f}: training stopped; the last good checkpoint is {} (epoch {})",
                last.display(),
                state.epoch
            );
        }
        let stopped = |state: &TrainState| Interrupted {
            epoch: state.epoch + 1,
            step: state.global_step,
            checkpoint: last.clone(),
        };
        if interrupted {
            return Err(stopped(&state).into());
        }
        let train_secs = resumed_secs + t0.elapsed().as_secs_f64();
        // Evaluation moves the spectral norm's u, v: checkpoints keep what it started from.
        let before_eval = net.to_host(gpu);
        let eval_t0 = Instant::now();
        let Some((test_loss, test_acc)) = evaluate_until(
            gpu,
            net.as_mut(),
            test_src.as_ref(),
            cfg.eval_batch,
            cfg.limit_test,
            &|| {
                fault_point("stop-in-eval");
                stop_requested()
            },
        )?
        else {
            // Stopped during evaluation: the epoch's training is complete; a resume only
            // evaluates.
            acc.seconds = train_secs;
            acc.peak_gpu_bytes = acc.peak_gpu_bytes.max(gpu.memory_bytes().1);
            let mut st = state.clone();
            st.partial = Some(acc);
            save_progress(&before_eval, &st, &history)?;
            return Err(stopped(&state).into());
        };
        eval_secs = Some(eval_t0.elapsed().as_secs_f64());
        let k = acc.steps_done.max(1) as f64;
        let m = EpochMetrics {
            epoch: epoch + 1,
            lr,
            train_loss: acc.loss_sum / acc.samples.max(1) as f64,
            train_acc: acc.correct as f64 / acc.samples.max(1) as f64,
            test_loss,
            test_acc,
            seconds: train_secs + eval_secs.unwrap_or(0.0),
            samples_per_sec: acc.samples as f64 / train_secs,
            solver_iters_mean: acc.iters_sum / k,
            solver_residual_mean: acc.residual_sum / k,
            forward_residual_mean: acc.forward_residuals.iter().sum::<f64>() / k,
            forward_residual_median: median(&acc.forward_residuals),
            forward_ms_mean: acc.forward_ms_sum / k,
            backward_ms_mean: acc.backward_ms_sum / k,
            peak_gpu_bytes: gpu.memory_bytes().1.max(acc.peak_gpu_bytes),
        };
        state.epoch = epoch + 1;
        state.partial = None;
        let improved = test_acc > state.best_test_acc;
        if improved {
            state.best_test_acc = test_acc;
        }
        let line = serde_json::to_string(&m)?;
        history.push(line.clone());
        let host = crate::runs::with_after_eval(&before_eval, &net.to_host(gpu));
        let extra = [
            ("fsnn.train_config", saved_cfg.clone()),
            ("fsnn.metrics", serde_json::to_string(&history)?),
        ];
        // best before last: a kill between them resumes from the previous epoch and redoes
        // this one, rewriting best; the other order could leave a stale best for good.
        if improved {
            save_checkpoint_with(&best, &net_cfg, &state, &host, &extra)?;
        }
        save_checkpoint_with(&last, &net_cfg, &state, &host, &extra)?;
        fault_point("after-checkpoint");
        // The checkpoint carries the metrics history, so a kill before this append loses
        // nothing: a resume rewrites metrics.jsonl from it.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("{}: cannot append", metrics_path.display()))?;
        writeln!(f, "{line}")?;
        drop(f);
        // Every epoch, so a long run can be watched (and a stopped one has its plot).
        crate::plot::plot_metrics(&read_metrics(&metrics_path)?, &cfg.out.join("metrics.png"))?;
        eprintln!(
            "epoch {}: train loss {:.4} acc {:.4} | test loss {:.4} acc {:.4} | {:.1} s, {:.0} samples/s, solver {:.1} it (res {:.1e}), forward residual {:.3} (median)",
            m.epoch, m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.seconds, m.samples_per_sec, m.solver_iters_mean, m.solver_residual_mean, m.forward_residual_median
        );
        if epoch + 1 < cfg.epochs && !cfg.quiet {
            let done = all.len() + 1;
            let per_epoch = run_t0.elapsed().as_secs_f64() / done as f64;
            eprintln!(
                "  {} of {} epochs left, about {}",
                cfg.epochs - epoch - 1,
                cfg.epochs,
                fmt_secs(per_epoch * (cfg.epochs - epoch - 1) as f64)
            );
        }
        all.push(m);
        if stop_requested() {
            // Ctrl-C during the checkpoint write: the epoch is complete and saved.
            if epoch + 1 < cfg.epochs {
                return Err(stopped(&state).into());
            }
        }
    }
    if all.is_empty() {
        // A resume of a run whose epochs were all done (killed after its last checkpoint).
        let history = read_metrics(&metrics_path)?;
        crate::plot::plot_metrics(&history, &cfg.out.join("metrics.png"))?;
    }
    Ok(all)
}

/// What differs between two descriptions, as `; neuron.vth 2 → 1.5`-style text (top-level
/// sections compared as JSON).
fn spec_difference(saved: &NetworkSpec, now: &NetworkSpec) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(saved), serde_json::to_value(now))
    else {
        return String::new();
    };
    let mut diffs = Vec::new();
    for (k, va) in &a {
        if k == "description" || k == "train" {
            continue;
        }
        let vb = b.get(k).unwrap_or(&serde_json::Value::Null);
        match (va, vb) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                for (kk, xa) in x {
                    let yb = y.get(kk).unwrap_or(&serde_json::Value::Null);
                    if xa != yb {
                        diffs.push(format!("{k}.{kk} {xa} → {yb}"));
                    }
                }
            }
            _ if va != vb => diffs.push(if k == "layers" {
                "layers differ".to_string()
            } else {
                format!("{k} {va} → {vb}")
            }),
            _ => {}
        }
    }
    if diffs.is_empty() {
        String::new()
    } else {
        format!(": {}", diffs.join(", "))
    }
}

fn lines_text(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: bad metrics line", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_ignores_a_few_huge_early_residuals() {
        // What multi-layer runs see: the first steps' residuals are enormous while deep layers
        // are silent; the mean reports them, the median the typical step.
        let r = [1e15, 3e14, 0.2, 0.3, 0.25, 0.28, 0.22];
        assert_eq!(median(&r), 0.28);
        assert_eq!(median(&[1.0, 3.0]), 2.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn durations_read_in_the_largest_sensible_unit() {
        assert_eq!(fmt_secs(42.4), "42s");
        assert_eq!(fmt_secs(125.0), "2m05s");
        assert_eq!(fmt_secs(7_600.0), "2h06m");
    }

    #[test]
    fn changed_flags_are_named_and_output_flags_may_change() {
        let cfg = TrainConfig {
            dataset: "mnist".into(),
            data_dir: None,
            epochs: 3,
            lr: 0.05,
            batch_size: 128,
            schedule: vec![2],
            warmup: 0,
            solver: SolverKind::Broyden,
            threshold: 30,
            seed: 0,
            out: "a".into(),
            resume: false,
            limit_train: None,
            limit_test: None,
            eval_batch: 200,
            quiet: false,
            profile: false,
            trace: None,
            checkpoint_every: 100,
            force: false,
            resize: None,
            kernels: Kernels::Auto,
        };
        let saved: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        let mut now = cfg.clone();
        now.epochs = 9;
        now.out = "b".into();
        now.resume = true;
        now.checkpoint_every = 7;
        assert!(changed_flags(&saved, &now).is_empty());
        now.seed = 4;
        now.limit_train = Some(10);
        assert_eq!(
            changed_flags(&saved, &now),
            ["--limit-train null → 10", "--seed 0 → 4"]
        );
    }
}
