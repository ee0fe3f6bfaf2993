//! `fsnn train`, `fsnn eval` and `fsnn presets`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use fsnn::gpu::Gpu;

use crate::device::Device;
use fsnn::model::spec::{self, AdjointForm, NetworkSpec, TrainDefaults};
use fsnn::solver::SolverKind;
use fsnn::train::{self, TrainConfig};

use crate::Global;

#[derive(ClapArgs)]
pub struct TrainArgs {
    /// Model preset (see `fsnn presets`). Default: fc400, or with --resume the checkpoint's model.
    #[arg(long, conflicts_with = "model")]
    pub preset: Option<String>,
    /// Train the network a model file describes (TOML; see README "Writing a model file").
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// mnist | fashion-mnist | cifar10 | cifar100 | nmnist | folder:PATH. Default: the model's.
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
    /// Multi-layer models: how the adjoint solve linearises f. `authors`: inner BNs in training
    /// mode, at f(rate), as the authors' code and the published CIFAR numbers; `consistent`:
    /// running statistics, at the rate. Default: the model's `adjoint`. Recorded in the
    /// checkpoint.
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
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
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

/// The model a command names: `--model FILE`, else `--preset NAME`, else `default`.
pub fn base_spec(preset: Option<&str>, model: Option<&Path>, default: &str) -> Result<NetworkSpec> {
    match (model, preset) {
        (Some(path), _) => {
            let spec = NetworkSpec::from_file(path)?;
            // Sizes the engine supports (a file may state a valid but enormous network).
            fsnn::checks::model_spec(&spec, &format!("model file {}", path.display()))?;
            Ok(spec)
        }
        (None, Some(name)) => spec::preset(name),
        (None, None) => spec::preset(default),
    }
}

/// Command-line neuron overrides (`--neuron`, `--leak`, `--time-steps`, `--vth`, `--dropout`)
/// applied to a description.
pub struct NeuronFlags {
    pub neuron: Option<String>,
    pub leak: Option<f32>,
    pub time_steps: Option<usize>,
    pub vth: Option<f32>,
    pub dropout: Option<f32>,
}

impl NeuronFlags {
    pub fn apply(&self, spec: &mut NetworkSpec) -> Result<()> {
        let n = &mut spec.neuron;
        if let Some(kind) = &self.neuron {
            match kind.as_str() {
                "if" => n.leak = 1.0,
                "lif" => {
                    if n.leak == 1.0 {
                        n.leak = 0.95
                    }
                }
                _ => bail!("unknown neuron {kind:?} (if | lif)"),
            }
        }
        if let Some(l) = self.leak {
            if !(l > 0.0 && l <= 1.0) {
                bail!("--leak must be in (0, 1], got {l}");
            }
            if self.neuron.as_deref() == Some("if") && l != 1.0 {
                bail!("--neuron if has no leak; drop --leak or use --neuron lif");
            }
            n.leak = l;
        }
        if let Some(t) = self.time_steps {
            if t == 0 {
                bail!("--time-steps must be at least 1");
            }
            n.time_steps = t;
        }
        if let Some(v) = self.vth {
            n.vth = v;
        }
        if let Some(d) = self.dropout {
            n.dropout = d;
        }
        fsnn::checks::neuron(None, n.time_steps, n.vth, n.leak, n.dropout)
    }
}

/// `--adjoint` applied to a description: only models with BN inside the loop (N ≥ 2) have a
/// choice.
pub fn apply_adjoint(spec: &mut NetworkSpec, form: Option<AdjointForm>) -> Result<()> {
    if let Some(form) = form {
        if spec.depth() < 2 {
            bail!(
                "--adjoint applies to multi-layer models (alexnet-f, cifarnet-f); {} has one \
                 spiking layer and no BN inside its loop",
                spec.name
            );
        }
        spec.adjoint = form;
    }
    Ok(())
}

/// The run's model with the command line's overrides, and the training defaults to use: the
/// model's `[train]` section, or, resuming without --preset/--model, the checkpoint's model and
/// the settings that run was started with.
pub fn net_config(a: &TrainArgs) -> Result<(NetworkSpec, TrainDefaults)> {
    let checkpoint = a
        .out
        .as_ref()
        .map(|o| o.join("last.safetensors"))
        .filter(|p| a.resume && a.preset.is_none() && a.model.is_none() && p.exists());
    let (mut cfg, defaults) = match checkpoint {
        Some(path) => {
            let ck = train::read_checkpoint(&path)?;
            let mut d = ck.model.train.clone();
            if let Some(saved) = &ck.train_config {
                if let Some(v) = saved["dataset"].as_str() {
                    d.dataset = v.to_string();
                }
                if let Ok(v) = serde_json::from_value(saved["solver"].clone()) {
                    d.solver = v;
                }
                if let Ok(v) = serde_json::from_value(saved["schedule"].clone()) {
                    d.schedule = v;
                }
                if let Some(v) = saved["warmup"].as_u64() {
                    d.warmup = v as usize;
                }
            }
            (ck.model, d)
        }
        None => {
            let s = base_spec(a.preset.as_deref(), a.model.as_deref(), "fc400")?;
            let d = s.train.clone();
            (s, d)
        }
    };
    NeuronFlags {
        neuron: a.neuron.clone(),
        leak: a.leak,
        time_steps: a.time_steps,
        vth: a.vth,
        dropout: a.dropout,
    }
    .apply(&mut cfg)?;
    apply_adjoint(&mut cfg, a.adjoint)?;
    Ok((cfg, defaults))
}

pub fn run_train(g: &Global, a: &TrainArgs) -> Result<()> {
    let out = match &a.out {
        Some(o) => o.clone(),
        None if a.resume => bail!("--resume needs --out: the folder of the run to continue"),
        None => fresh_run_folder(),
    };
    let (net_cfg, defaults) = net_config(a)?;
    let cfg = TrainConfig {
        dataset: a.dataset.clone().unwrap_or(defaults.dataset),
        data_dir: a.data_dir.clone(),
        epochs: a.epochs,
        lr: a.lr,
        batch_size: a.batch_size,
        schedule: a.schedule.clone().unwrap_or(defaults.schedule),
        warmup: a.warmup.unwrap_or(defaults.warmup),
        solver: a.solver.unwrap_or(defaults.solver),
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
    for warning in train::check_for_model(&cfg, &net_cfg)? {
        eprintln!("warning: {warning}");
    }
    let device = g.device()?;
    let result = match &device {
        Device::Cpu { threads } => {
            let cpu = fsnn_cpu::Cpu::new(*threads);
            eprintln!("device: {}", fsnn::Backend::describe(&cpu));
            eprintln!("run folder: {}", out.display());
            train::train(&cpu, net_cfg, &cfg)
        }
        Device::Gpu(adapter) => {
            let gpu = Gpu::new(adapter)?;
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
            train::train(&gpu, net_cfg, &cfg)
        }
    };
    match result {
        Ok(_) => {}
        Err(e) => {
            if let Some(i) = e.downcast_ref::<train::Interrupted>() {
                use std::io::Write;
                // After SIGHUP stderr may be gone: the checkpoint is written, the status says it.
                let _ = writeln!(
                    std::io::stderr(),
                    "interrupted ({}): {i}\nresume with: {}",
                    crate::signals::name(),
                    resume_command(a, &out)
                );
                std::process::exit(crate::signals::exit_status());
            }
            return Err(e);
        }
    }
    eprintln!("metrics: {}", out.join("metrics.jsonl").display());
    Ok(())
}

/// This run's own command line with `--resume` (and `--out` when it was chosen automatically),
/// started the way this one was: through `cargo run` (cargo sets `CARGO` and the package's name
/// in the environment of what it runs), by the path typed, or as `fsnn` from the PATH.
fn resume_command(a: &TrainArgs, out: &std::path::Path) -> String {
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    let mut words: Vec<String> = args.collect();
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
    let mut cmd: Vec<String> = launcher(&argv0).iter().map(quote).collect();
    cmd.extend(words.iter().map(quote));
    cmd.join(" ")
}

/// The words that start fsnn as this process was started (see [`resume_command`]).
fn launcher(argv0: &str) -> Vec<String> {
    let via_cargo = std::env::var_os("CARGO").is_some()
        && std::env::var("CARGO_PKG_NAME").as_deref() == Ok(env!("CARGO_PKG_NAME"));
    if via_cargo {
        // The build profile is the folder the binary lies in (target/<profile>/fsnn).
        let exe = std::env::current_exe().ok();
        let profile = exe
            .as_ref()
            .and_then(|p| p.parent()?.file_name()?.to_str().map(str::to_string))
            .unwrap_or_default();
        let mut cmd = vec!["cargo".to_string(), "run".to_string()];
        match profile.as_str() {
            "release" => cmd.push("--release".into()),
            // The dev profile's folder is `debug`; no folder name: cargo's default.
            "debug" | "" => {}
            p => {
                cmd.push("--profile".into());
                cmd.push(p.to_string());
            }
        }
        cmd.extend(["-p", env!("CARGO_PKG_NAME"), "--"].map(String::from));
        return cmd;
    }
    if argv0.contains(std::path::MAIN_SEPARATOR) || argv0.contains('/') {
        vec![argv0.to_string()]
    } else {
        vec!["fsnn".to_string()]
    }
}

#[derive(ClapArgs)]
pub struct EvalArgs {
    /// A checkpoint written by `fsnn train` (last.safetensors or best.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Default: the dataset the checkpoint's run trained on (else the model's).
    #[arg(long)]
    pub dataset: Option<String>,
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Evaluation batch size. Default: the one the checkpoint's run evaluated with (else 200);
    /// evaluation moves the spectral norm's u, v once per batch, so only that size reproduces
    /// the logged test metrics exactly.
    #[arg(long)]
    pub eval_batch: Option<usize>,
    /// Evaluate on only the first N test samples.
    #[arg(long, value_name = "N")]
    pub limit_test: Option<usize>,
    /// Resize every image of a folder: dataset to WxH.
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub resize: Option<(u32, u32)>,
    #[arg(long)]
    pub json: bool,
}

/// Evaluates the checkpoint on one backend: (loss, accuracy, test split size).
fn eval_on<B: fsnn::Backend>(
    b: &B,
    a: &EvalArgs,
    ck: &fsnn::Checkpoint,
    ds: &str,
    eval_batch: usize,
) -> Result<(f64, f64, usize)> {
    let (cfg, host) = (&ck.model, &ck.host);
    fsnn::checks::fits_gpu(b, cfg, eval_batch, None, "--eval-batch")?;
    let (_, test) = fsnn::batches::load_sources_sized(
        ds,
        a.data_dir.as_deref(),
        cfg.neuron.time_steps,
        a.resize,
    )?;
    train::check_eval_source(ds, &a.checkpoint, cfg, test.as_ref())?;
    let mut net = fsnn::build(cfg, b, 0)?;
    net.load_host(b, host, &a.checkpoint.display().to_string())?;
    let (loss, acc) = train::evaluate(b, net.as_mut(), test.as_ref(), eval_batch, a.limit_test)?;
    Ok((loss, acc, test.len()))
}

pub fn run_eval(g: &Global, a: &EvalArgs) -> Result<()> {
    if a.eval_batch == Some(0) {
        bail!("--eval-batch must be at least 1, got 0");
    }
    if a.limit_test == Some(0) {
        bail!("--limit-test must be at least 1, got 0");
    }
    let ck = train::read_checkpoint(&a.checkpoint)?;
    let (cfg, state) = (&ck.model, &ck.state);
    let ds = a.dataset.clone().unwrap_or_else(|| checkpoint_dataset(&ck));
    let eval_batch = a
        .eval_batch
        .or_else(|| {
            let saved = ck.train_config.as_ref()?["eval_batch"].as_u64()?;
            usize::try_from(saved).ok().filter(|&b| b > 0)
        })
        .unwrap_or(200);
    let device = g.device()?;
    let (loss, acc, test_len) = match &device {
        Device::Cpu { threads } => eval_on(&fsnn_cpu::Cpu::new(*threads), a, &ck, &ds, eval_batch)?,
        Device::Gpu(adapter) => eval_on(&Gpu::new(adapter)?, a, &ck, &ds, eval_batch)?,
    };
    if a.json {
        println!(
            "{}",
            serde_json::json!({"checkpoint": a.checkpoint, "preset": cfg.name, "model": cfg.name, "dataset": ds, "epoch": state.epoch, "test_loss": loss, "test_acc": acc, "samples": a.limit_test.unwrap_or(test_len).min(test_len)})
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

/// The dataset a checkpoint's run trained on, else its model's default.
pub fn checkpoint_dataset(ck: &train::Checkpoint) -> String {
    ck.train_config
        .as_ref()
        .and_then(|c| c["dataset"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| ck.model.train.dataset.clone())
}

#[derive(ClapArgs)]
pub struct PresetsArgs {
    #[arg(long)]
    pub json: bool,
    /// Print this preset's model file (a starting point for one of your own).
    #[arg(long, value_name = "PRESET")]
    pub show: Option<String>,
}

pub fn run_presets(a: &PresetsArgs) -> Result<()> {
    if let Some(name) = &a.show {
        spec::preset(name)?;
        let (_, text) = spec::PRESET_FILES
            .iter()
            .find(|(n, _)| n == name)
            .expect("a preset has a file");
        print!("{text}");
        return Ok(());
    }
    let presets = spec::presets();
    let list: Vec<serde_json::Value> = presets
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "description": p.description,
                "dataset": p.train.dataset,
                "file": format!("models/{}.toml", p.name),
                "layers": p.depth(),
                "neurons": p.paper_neurons(),
                "spiking_neurons": p.neurons(),
                "params": p.param_count(),
                "time_steps": p.neuron.time_steps,
                "classes": p.classes,
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
        for p in &presets {
            println!(
                "{:<17} {:<14} {:>11} {:>8}  {}",
                p.name,
                p.train.dataset,
                p.param_count(),
                p.paper_neurons(),
                p.description
            );
        }
        println!(
            "\nEach preset is a model file, models/<preset>.toml in the repository (built into \
             fsnn; print one with `fsnn presets --show NAME`).\nTrain a file of your own with \
             `fsnn train --model FILE`."
        );
    }
    Ok(())
}
