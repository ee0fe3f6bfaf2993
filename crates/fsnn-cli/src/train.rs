//! `fsnn train`, `fsnn eval` and `fsnn presets`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use fsnn::gpu::Gpu;
use fsnn::model::presets;
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
    /// broyden | fixed-point. Default: the solver the paper used for the preset.
    #[arg(long)]
    pub solver: Option<SolverKind>,
    /// Most solver iterations per adjoint solve.
    #[arg(long, default_value_t = 30)]
    pub threshold: usize,
    /// Variational dropout probability.
    #[arg(long)]
    pub dropout: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (metrics.jsonl, checkpoints, metrics.png).
    #[arg(long, default_value = "runs/latest")]
    pub out: PathBuf,
    /// Continue from OUT/last.safetensors.
    #[arg(long)]
    pub resume: bool,
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

pub fn net_config(a: &TrainArgs) -> Result<(fsnn::model::ModelConfig, &'static str, SolverKind)> {
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
        if !(0.0..1.0).contains(&d) {
            bail!("--dropout must be in [0, 1), got {d}");
        }
        *dropout = d;
    }
    Ok((cfg, p.default_dataset, a.solver.unwrap_or(p.default_solver)))
}

pub fn run_train(g: &Global, a: &TrainArgs) -> Result<()> {
    let (net_cfg, default_ds, solver) = net_config(a)?;
    let preset = presets::find(&a.preset)?;
    let gpu = Gpu::new(&g.adapter)?;
    eprintln!(
        "adapter: {} ({}, {})",
        gpu.ctx.info.name, gpu.ctx.info.backend, gpu.ctx.info.driver
    );
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
        out: a.out.clone(),
        resume: a.resume,
        limit_train: a.limit_train,
        limit_test: a.limit_test,
        eval_batch: a.eval_batch,
        quiet: a.quiet,
        profile: a.profile,
        trace: a.trace.clone(),
        kernels: a.kernels,
    };
    train::train(&gpu, net_cfg, &cfg)?;
    eprintln!("metrics: {}", a.out.join("metrics.jsonl").display());
    Ok(())
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
    #[arg(long)]
    pub json: bool,
}

pub fn run_eval(g: &Global, a: &EvalArgs) -> Result<()> {
    let (cfg, state, host) = train::load_checkpoint(&a.checkpoint)?;
    let ds = a.dataset.clone().unwrap_or_else(|| {
        presets::find(cfg.preset())
            .map(|p| p.default_dataset.to_string())
            .unwrap_or_else(|_| "mnist".into())
    });
    let gpu = Gpu::new(&g.adapter)?;
    let mut net = cfg.build(&gpu, 0)?;
    net.load_host(&gpu, &host, &a.checkpoint.display().to_string())?;
    let (_, test) = fsnn::batches::load_sources(&ds, a.data_dir.as_deref(), cfg.time_steps())?;
    let (loss, acc) = train::evaluate(&gpu, net.as_mut(), test.as_ref(), a.eval_batch, None)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"checkpoint": a.checkpoint, "preset": cfg.preset(), "dataset": ds, "epoch": state.epoch, "test_loss": loss, "test_acc": acc})
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
        for p in presets::all() {
            println!(
                "{:<17} {:>11} params {:>7} neurons  {}",
                p.name,
                p.config.param_count(),
                p.config.paper_neurons(),
                p.description
            );
        }
    }
    Ok(())
}
