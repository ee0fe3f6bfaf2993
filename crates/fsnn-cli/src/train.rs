//! `fsnn train`, `fsnn eval` and `fsnn presets`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use fsnn::gpu::Gpu;
use fsnn::model::multi::AdjointForm;
use fsnn::model::{presets, ModelConfig};
use fsnn::solver::SolverKind;
use fsnn::train::{self, TrainConfig};

use crate::Global;

#[derive(ClapArgs)]
pub struct TrainArgs {
    /// Model preset (see `fsnn presets`).
    #[arg(long, default_value = "fc400")]
    pub preset: String,
    /// mnist | fashion-mnist | cifar10 | cifar100 | nmnist | folder:PATH. Default: the preset's.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Read the dataset from DIR instead of datasets/<name> (no download).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// if | lif
    #[arg(long)]
    pub neuron: Option<String>,
    /// Membrane leak λ of LIF neurons.
    #[arg(long)]
    pub leak: Option<f32>,
    /// Simulation time steps T. Default: the preset's.
    #[arg(long)]
    pub time_steps: Option<usize>,
    /// Firing threshold. Default: 2.
    #[arg(long)]
    pub vth: Option<f32>,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Epochs at which lr is multiplied by 0.1, comma-separated. Default: the paper's for the
    /// preset (30,60,90; CIFAR 50,75).
    #[arg(long, value_delimiter = ',')]
    pub schedule: Option<Vec<usize>>,
    /// Iterations of linear lr warm-up. Default: the paper's (0; CIFAR 400).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// broyden | fixed-point | anderson. Default: the solver the paper used for the preset.
    #[arg(long)]
    pub solver: Option<SolverKind>,
    /// Most solver iterations per adjoint solve.
    #[arg(long, default_value_t = 30)]
    pub threshold: usize,
    /// Variational dropout probability.
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Multi-layer models: how the adjoint solve linearises f. `authors` (default): inner BNs
    /// in training mode, at f(rate), as the authors' code and the published CIFAR numbers;
    /// `consistent`: running statistics, at the rate. Recorded in the checkpoint.
    #[arg(long, value_name = "authors|consistent")]
    pub adjoint: Option<AdjointForm>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (metrics.jsonl, checkpoints, metrics.png). Default: a new folder
    /// runs/<start time>. A folder holding another run is refused without --resume or --force.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from OUT/last.safetensors (refused if training flags changed, unless --force).
    #[arg(long)]
    pub resume: bool,
    /// Replace the run in --out; with --resume, continue although training flags changed.
    #[arg(long)]
    pub force: bool,
    /// Also checkpoint every N training steps, so a crash loses at most N steps (0: at epoch
    /// ends only).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub checkpoint_every: usize,
    /// Resize every image of a folder: dataset to WxH (e.g. 32x32).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub resize: Option<(u32, u32)>,
    /// Use only the first N training samples.
    #[arg(long, value_name = "N")]
    pub limit_train: Option<usize>,
    /// Evaluate on only the first N test samples.
    #[arg(long, value_name = "N")]
    pub limit_test: Option<usize>,
    /// Evaluation batch size.
    #[arg(long, default_value_t = 200)]
    pub eval_batch: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print a table of kernels by GPU time at the end of each epoch.
    #[arg(long)]
    pub profile: bool,
    /// Write the first training step as a Chrome trace (open in Perfetto or chrome://tracing).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Forward simulation: dense products on spike tensors, event-driven (weight rows added for
    /// the spikes only), or auto (both timed once per adapter, driver and shape; cached).
    #[arg(long, default_value = "auto")]
    pub kernels: fsnn::kernels::Kernels,
}

/// `WxH` → (width, height).
fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X', '×'])
        .ok_or_else(|| format!("expected WxH such as 32x32, got {s:?}"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("expected WxH such as 32x32, got {s:?}"))
    };
    Ok((n(w)?, n(h)?))
}

/// A folder of its own for a run started without --out: runs/<UTC start time>, with a suffix if
/// two runs start within the same second.
fn fresh_run_folder() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let stamp = format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let base = PathBuf::from("runs").join(&stamp);
    let mut dir = base.clone();
    let mut k = 2;
    while dir.exists() {
        dir = PathBuf::from("runs").join(format!("{stamp}-{k}"));
        k += 1;
    }
    dir
}

pub fn net_config(a: &TrainArgs) -> Result<(ModelConfig, &'static str, SolverKind)> {
    let p = presets::find(&a.preset)?;
    let mut cfg = p.config;
    let (time_steps, vth, leak, dropout) = cfg.neuron_mut();
    if let Some(n) = &a.neuron {
        match n.as_str() {
            "if" => *leak = 1.0,
            "lif" => {
                if *leak == 1.0 {
                    *leak = 0.95
                }
            }
            _ => bail!("unknown neuron {n:?} (if | lif)"),
        }
    }
    if let Some(l) = a.leak {
        if !(l > 0.0 && l <= 1.0) {
            bail!("--leak must be in (0, 1], got {l}");
        }
        if a.neuron.as_deref() == Some("if") && l != 1.0 {
            bail!("--neuron if has no leak; drop --leak or use --neuron lif");
        }
        *leak = l;
    }
    if let Some(t) = a.time_steps {
        if t == 0 {
            bail!("--time-steps must be at least 1");
        }
        *time_steps = t;
    }
    if let Some(v) = a.vth {
        *vth = v;
    }
    if let Some(d) = a.dropout {
        *dropout = d;
    }
    fsnn::checks::neuron(None, *time_steps, *vth, *leak, *dropout)?;
    if let Some(form) = a.adjoint {
        match &mut cfg {
            ModelConfig::Multi(m) => m.adjoint = form,
            ModelConfig::Single(_) => bail!(
                "--adjoint applies to multi-layer models (alexnet-f, cifarnet-f); {} has one \
                 spiking layer and no BN inside its loop",
                a.preset
            ),
        }
    }
    Ok((cfg, p.default_dataset, a.solver.unwrap_or(p.default_solver)))
}

pub fn run_train(g: &Global, a: &TrainArgs) -> Result<()> {
    let (net_cfg, default_ds, solver) = net_config(a)?;
    let preset = presets::find(&a.preset)?;
    let out = match &a.out {
        Some(o) => o.clone(),
        None if a.resume => bail!("--resume needs --out: the folder of the run to continue"),
        None => fresh_run_folder(),
    };
    let cfg = TrainConfig {
        dataset: a.dataset.clone().unwrap_or_else(|| default_ds.to_string()),
        data_dir: a.data_dir.clone(),
        epochs: a.epochs,
        lr: a.lr,
        batch_size: a.batch_size,
        schedule: a
            .schedule
            .clone()
            .unwrap_or_else(|| preset.schedule.to_vec()),
        warmup: a.warmup.unwrap_or(preset.warmup),
        solver,
        threshold: a.threshold,
        seed: a.seed,
        out: out.clone(),
        resume: a.resume,
        checkpoint_every: a.checkpoint_every,
        force: a.force,
        resize: a.resize,
        limit_train: a.limit_train,
        limit_test: a.limit_test,
        eval_batch: a.eval_batch,
        quiet: a.quiet,
        profile: a.profile,
        trace: a.trace.clone(),
        kernels: a.kernels,
    };
    // Flags are checked before the adapter starts, so a typo fails at once.
    cfg.validate()?;
    let gpu = Gpu::new(&g.adapter)?;
    eprintln!(
        "adapter: {} ({}, {})",
        gpu.ctx.info.name, gpu.ctx.info.backend, gpu.ctx.info.driver
    );
    if fsnn::variants::cached(&gpu.ctx.info).is_none() {
        eprintln!(
            "kernel variants: not measured on this adapter, the defaults run (`fsnn tune` measures them once)"
        );
    }
    eprintln!("run folder: {}", out.display());
    match train::train(&gpu, net_cfg, &cfg) {
        Ok(_) => {}
        Err(e) => {
            if let Some(i) = e.downcast_ref::<train::Interrupted>() {
                eprintln!("interrupted: {i}\nresume with: {}", resume_command(a, &out));
                std::process::exit(130);
            }
            return Err(e);
        }
    }
    eprintln!("metrics: {}", out.join("metrics.jsonl").display());
    Ok(())
}

/// This run's own command line with `--resume` (and `--out` when it was chosen automatically).
fn resume_command(a: &TrainArgs, out: &std::path::Path) -> String {
    let mut words: Vec<String> = std::env::args().skip(1).collect();
    if !a.resume {
        words.push("--resume".into());
    }
    if a.out.is_none() {
        words.push("--out".into());
        words.push(out.display().to_string());
    }
    let quote = |w: &String| {
        if !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
        {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    let mut cmd = vec!["fsnn".to_string()];
    cmd.extend(words.iter().map(quote));
    cmd.join(" ")
}

#[derive(ClapArgs)]
pub struct EvalArgs {
    /// A checkpoint written by `fsnn train` (last.safetensors or best.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Default: the preset's dataset.
    #[arg(long)]
    pub dataset: Option<String>,
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 200)]
    pub eval_batch: usize,
    /// Evaluate on only the first N test samples.
    #[arg(long, value_name = "N")]
    pub limit_test: Option<usize>,
    /// Resize every image of a folder: dataset to WxH.
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub resize: Option<(u32, u32)>,
    #[arg(long)]
    pub json: bool,
}

pub fn run_eval(g: &Global, a: &EvalArgs) -> Result<()> {
    if a.eval_batch == 0 {
        bail!("--eval-batch must be at least 1, got 0");
    }
    if a.limit_test == Some(0) {
        bail!("--limit-test must be at least 1, got 0");
    }
    let (cfg, state, host) = train::load_checkpoint(&a.checkpoint)?;
    let ds = a.dataset.clone().unwrap_or_else(|| {
        presets::find(cfg.preset())
            .map(|p| p.default_dataset.to_string())
            .unwrap_or_else(|_| "mnist".into())
    });
    let gpu = Gpu::new(&g.adapter)?;
    fsnn::checks::fits_gpu(&gpu, &cfg, a.eval_batch, "--eval-batch")?;
    let (_, test) =
        fsnn::batches::load_sources_sized(&ds, a.data_dir.as_deref(), cfg.time_steps(), a.resize)?;
    train::check_eval_source(&ds, &a.checkpoint, &cfg, test.as_ref())?;
    let mut net = cfg.build(&gpu, 0)?;
    net.load_host(&gpu, &host, &a.checkpoint.display().to_string())?;
    let (loss, acc) = train::evaluate(
        &gpu,
        net.as_mut(),
        test.as_ref(),
        a.eval_batch,
        a.limit_test,
    )?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"checkpoint": a.checkpoint, "preset": cfg.preset(), "dataset": ds, "epoch": state.epoch, "test_loss": loss, "test_acc": acc, "samples": a.limit_test.unwrap_or(test.len()).min(test.len())})
        );
    } else {
        println!(
            "{} (epoch {}) on {ds}: test loss {loss:.4}, test accuracy {:.2}%",
            a.checkpoint.display(),
            state.epoch,
            acc * 100.0
        );
    }
    Ok(())
}

#[derive(ClapArgs)]
pub struct PresetsArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn run_presets(a: &PresetsArgs) -> Result<()> {
    let list: Vec<serde_json::Value> = presets::all()
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "description": p.description,
                "dataset": p.default_dataset,
                "neurons": p.config.paper_neurons(),
                "spiking_neurons": p.config.spiking_neurons(),
                "params": p.config.param_count(),
                "time_steps": p.config.time_steps(),
                "classes": p.config.classes(),
            })
        })
        .collect();
    if a.json {
        println!("{}", serde_json::json!({ "presets": list }));
    } else {
        println!(
            "{:<17} {:<14} {:>11} {:>8}  model",
            "preset", "dataset", "params", "neurons"
        );
        for p in presets::all() {
            println!(
                "{:<17} {:<14} {:>11} {:>8}  {}",
                p.name,
                p.default_dataset,
                p.config.param_count(),
                p.config.paper_neurons(),
                p.description
            );
        }
    }
    Ok(())
}
