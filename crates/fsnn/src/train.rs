//! The training loop: shuffled batches prepared on a host thread, IDE steps on the GPU, evaluation
//! each epoch, metrics, checkpoints and a plot.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::batches::{for_each_batch, load_sources, BatchSource};
use crate::gpu::Gpu;
use crate::kernels::Kernels;
use crate::model::{HostRng, HostState, Model, ModelConfig, StepStats};
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
    /// Forward simulation kernels (dense, event, or auto: measured once and cached).
    #[serde(default = "default_kernels")]
    pub kernels: Kernels,
}

fn default_kernels() -> Kernels {
    Kernels::Auto
}

/// Where training stands, stored in every checkpoint so `--resume` continues exactly.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    pub global_step: u64,
    pub best_test_acc: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f32,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    pub seconds: f64,
    pub samples_per_sec: f64,
    pub solver_iters_mean: f64,
    pub solver_residual_mean: f64,
    pub forward_residual_mean: f64,
    pub forward_ms_mean: f64,
    pub backward_ms_mean: f64,
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
pub fn evaluate(
    gpu: &Gpu,
    net: &mut dyn Model,
    source: &dyn BatchSource,
    batch: usize,
    limit: Option<usize>,
) -> Result<(f64, f64)> {
    let n = limit.unwrap_or(source.len()).min(source.len());
    let order: Vec<usize> = (0..n).collect();
    let (mut loss, mut correct) = (0.0, 0usize);
    for_each_batch(source, &order, batch, 0, |x, y| {
        let s = net.eval_batch(gpu, x, y)?;
        loss += s.loss_sum;
        correct += s.correct;
        Ok(true)
    })?;
    Ok((loss / n as f64, correct as f64 / n as f64))
}

// --------------------------------------------------------------- checkpoints

/// Writes a safetensors checkpoint atomically (temporary file in the same folder, then rename).
pub fn save_checkpoint(
    path: &Path,
    cfg: &ModelConfig,
    state: &TrainState,
    host: &HostState,
) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert("fsnn.model".to_string(), serde_json::to_string(cfg)?);
    meta.insert(
        "fsnn.train_state".to_string(),
        serde_json::to_string(state)?,
    );
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
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("{}: cannot create temporary file", dir.display()))?;
    tmp.write_all(&bytes)
        .with_context(|| format!("{}: write failed", path.display()))?;
    tmp.as_file().sync_all().ok();
    tmp.persist(path)
        .with_context(|| format!("{}: rename failed", path.display()))?;
    Ok(())
}

/// Reads a checkpoint: the model it belongs to, where training stood, and its tensors.
pub fn load_checkpoint(path: &Path) -> Result<(ModelConfig, TrainState, HostState)> {
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
    // Checkpoints written before multi-layer models existed hold a bare single-layer config.
    let cfg: ModelConfig = serde_json::from_str(meta_json)
        .or_else(|e| {
            serde_json::from_str::<crate::model::NetConfig>(meta_json)
                .map(ModelConfig::Single)
                .map_err(|_| e)
        })
        .with_context(|| format!("{}: bad model metadata", path.display()))?;
    let state: TrainState = m
        .get("fsnn.train_state")
        .map(|s| serde_json::from_str(s))
        .transpose()?
        .unwrap_or_default();
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
        tensors.push((name, view.shape().to_vec(), data));
    }
    Ok((cfg, state, HostState { tensors }))
}

// --------------------------------------------------------------------- loop

/// Trains a model as `cfg` says, writing metrics and checkpoints under `cfg.out`.
pub fn train(gpu: &Gpu, net_cfg: ModelConfig, cfg: &TrainConfig) -> Result<Vec<EpochMetrics>> {
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("{}: cannot create output folder", cfg.out.display()))?;
    let (train_src, test_src) =
        load_sources(&cfg.dataset, cfg.data_dir.as_deref(), net_cfg.time_steps())?;
    let expect = net_cfg.sample_len();
    if train_src.sample_len() != expect {
        bail!(
            "dataset {} gives {} values per sample ({}); preset {} needs {expect}",
            cfg.dataset,
            train_src.sample_len(),
            train_src.describe(),
            net_cfg.preset()
        );
    }
    if train_src.classes() > net_cfg.classes() {
        bail!(
            "dataset {} has {} classes; preset {} has {}",
            cfg.dataset,
            train_src.classes(),
            net_cfg.preset(),
            net_cfg.classes()
        );
    }
    let mut net = net_cfg.build(gpu, cfg.seed)?;
    let kernels = net.set_kernels(crate::kernels::resolve(
        gpu,
        &net_cfg,
        cfg.batch_size,
        cfg.kernels,
    )?);
    let last = cfg.out.join("last.safetensors");
    let best = cfg.out.join("best.safetensors");
    let metrics_path = cfg.out.join("metrics.jsonl");
    let mut state = TrainState::default();
    if cfg.resume {
        let (saved_cfg, saved_state, host) = load_checkpoint(&last)?;
        if saved_cfg != net_cfg {
            bail!(
                "{}: checkpoint is of model {:?}, this run asks for {:?}",
                last.display(),
                saved_cfg,
                net_cfg
            );
        }
        net.load_host(gpu, &host, &last.display().to_string())?;
        state = saved_state;
        eprintln!(
            "resuming {} after epoch {} (step {})",
            last.display(),
            state.epoch,
            state.global_step
        );
    } else {
        for f in [&metrics_path, &cfg.out.join("steps.jsonl")] {
            if f.exists() {
                std::fs::remove_file(f).with_context(|| {
                    format!("{}: cannot remove the previous run's log", f.display())
                })?;
            }
        }
    }
    eprintln!(
        "{}: {} parameters, {} neurons ({} spiking per sample), T={}, {} vth={} leak={}, solver {:?} (threshold {}); data: {}",
        net_cfg.preset(),
        net_cfg.param_count(),
        net_cfg.paper_neurons(),
        net_cfg.spiking_neurons(),
        net_cfg.time_steps(),
        if net_cfg.leak() == 1.0 { "IF" } else { "LIF" },
        net_cfg.vth(),
        net_cfg.leak(),
        cfg.solver,
        cfg.threshold,
        train_src.describe()
    );
    eprintln!("forward simulation kernels: {kernels}");
    let n_train = cfg
        .limit_train
        .unwrap_or(train_src.len())
        .min(train_src.len());
    let mut all = Vec::new();
    for epoch in state.epoch..cfg.epochs {
        let t0 = Instant::now();
        gpu.reset_peak_memory();
        let order: Vec<usize> = shuffled(train_src.len(), cfg.seed, epoch)
            .into_iter()
            .filter(|&i| i < n_train)
            .collect();
        let steps = order.len().div_ceil(cfg.batch_size);
        let bar = if cfg.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(steps as u64)
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
        let mut sums = StepStats::default();
        let (mut it_sum, mut res_sum, mut fr_sum, mut fms, mut bms, mut nsteps) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0usize);
        let mut lr = lr_at(cfg, epoch, state.global_step);
        let mut failure: Option<String> = None;
        // Per-step log, appended (a resumed run continues it) and unbuffered, so `tail -f` follows
        // a slow run step by step.
        let steps_path = cfg.out.join("steps.jsonl");
        let mut steps_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&steps_path)
            .with_context(|| format!("{}: cannot append", steps_path.display()))?;
        let mut trace_pending = cfg.trace.is_some() && epoch == state.epoch;
        gpu.set_profiling(cfg.profile || trace_pending);
        let aug_seed = cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (epoch as u64) << 32;
        for_each_batch(
            train_src.as_ref(),
            &order,
            cfg.batch_size,
            aug_seed,
            |x, y| {
                lr = lr_at(cfg, epoch, state.global_step);
                let seed = (cfg.seed as u32).wrapping_mul(0x9E37_79B9) ^ (state.global_step as u32);
                let s = net.train_step(gpu, x, y, lr, cfg.solver, cfg.threshold, seed)?;
                if trace_pending {
                    let prof = gpu.take_profile();
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
                sums.loss_sum += s.loss_sum;
                sums.correct += s.correct;
                sums.samples += s.samples;
                it_sum += s.solve.iterations as f64;
                res_sum += s.solve.rel_residual;
                fr_sum += s.forward_residual;
                fms += s.forward_ms;
                bms += s.backward_ms;
                nsteps += 1;
                let el = t0.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "loss {:.4} acc {:.4} {:.0} samples/s",
                    sums.loss_sum / sums.samples as f64,
                    sums.correct as f64 / sums.samples as f64,
                    sums.samples as f64 / el
                ));
                bar.inc(1);
                Ok(true)
            },
        )?;
        bar.finish_and_clear();
        steps_log.flush()?;
        drop(steps_log);
        if cfg.profile {
            let prof = gpu.take_profile();
            gpu.set_profiling(false);
            eprintln!(
                "epoch {} kernels ({} training steps):\n{}",
                epoch + 1,
                nsteps,
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
        let train_secs = t0.elapsed().as_secs_f64();
        let (test_loss, test_acc) = evaluate(
            gpu,
            net.as_mut(),
            test_src.as_ref(),
            cfg.eval_batch,
            cfg.limit_test,
        )?;
        let k = nsteps.max(1) as f64;
        let m = EpochMetrics {
            epoch: epoch + 1,
            lr,
            train_loss: sums.loss_sum / sums.samples.max(1) as f64,
            train_acc: sums.correct as f64 / sums.samples.max(1) as f64,
            test_loss,
            test_acc,
            seconds: t0.elapsed().as_secs_f64(),
            samples_per_sec: sums.samples as f64 / train_secs,
            solver_iters_mean: it_sum / k,
            solver_residual_mean: res_sum / k,
            forward_residual_mean: fr_sum / k,
            forward_ms_mean: fms / k,
            backward_ms_mean: bms / k,
            peak_gpu_bytes: gpu.memory_bytes().1,
        };
        state.epoch = epoch + 1;
        let improved = test_acc > state.best_test_acc;
        if improved {
            state.best_test_acc = test_acc;
        }
        let host = net.to_host(gpu);
        save_checkpoint(&last, &net_cfg, &state, &host)?;
        if improved {
            save_checkpoint(&best, &net_cfg, &state, &host)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("{}: cannot append", metrics_path.display()))?;
        writeln!(f, "{}", serde_json::to_string(&m)?)?;
        eprintln!(
            "epoch {}: train loss {:.4} acc {:.4} | test loss {:.4} acc {:.4} | {:.1} s, {:.0} samples/s, solver {:.1} it (res {:.1e}), forward residual {:.3}",
            m.epoch, m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.seconds, m.samples_per_sec, m.solver_iters_mean, m.solver_residual_mean, m.forward_residual_mean
        );
        all.push(m);
    }
    let history = read_metrics(&metrics_path)?;
    crate::plot::plot_metrics(&history, &cfg.out.join("metrics.png"))?;
    Ok(all)
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
