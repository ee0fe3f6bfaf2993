//! `fsnn bench step`: one IDE training step of a preset on random data or on real batches of a
//! dataset, split into its phases, with peak GPU memory, per-kernel GPU time, and a sweep over T.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use fsnn::gpu::Gpu;
use fsnn::model::spec::NetworkSpec;
use fsnn::model::HostRng;
use fsnn::solver::SolverKind;
use serde_json::json;

use crate::Global;

#[derive(ClapArgs)]
pub struct Args {
    #[arg(long, default_value = "fc400", conflicts_with = "model")]
    pub preset: String,
    /// Time a model file's network instead of a preset's.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// One or more T, comma-separated (a sweep shows whether memory stays flat).
    #[arg(long, value_delimiter = ',')]
    pub time_steps: Vec<usize>,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Timed steps after one warm-up step.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    #[arg(long, default_value = "broyden")]
    pub solver: SolverKind,
    #[arg(long, default_value_t = 30)]
    pub threshold: usize,
    /// if | lif
    #[arg(long, default_value = "lif")]
    pub neuron: String,
    /// Write one profiled step as a Chrome trace (Perfetto, chrome://tracing).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Write a PNG chart: kernel time shares, and ms per step and peak memory against T.
    #[arg(long, value_name = "FILE")]
    pub chart: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    /// Time steps on real training batches of this dataset (as `fsnn train --dataset` names it;
    /// each timed step gets its own batch) instead of random inputs: spike density and solver
    /// iterations depend on the data.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Read the dataset from DIR instead of datasets/<name>.
    #[arg(long, value_name = "DIR", requires = "dataset")]
    pub data_dir: Option<PathBuf>,
    /// Multi-layer presets: authors | consistent adjoint (as `fsnn train --adjoint`).
    #[arg(long, value_name = "authors|consistent")]
    pub adjoint: Option<fsnn::model::spec::AdjointForm>,
    /// Forward simulation: dense | event | auto (measured once per adapter and shape, cached).
    #[arg(long, default_value = "auto")]
    pub kernels: fsnn::kernels::Kernels,
}

/// `count` batches of `batch` samples: real training samples of `--dataset` (a fixed shuffle, the
/// same for every T and every run of the command), or uniform random inputs with random labels.
/// Whether `path` can be written: its folder exists and it is not itself a folder.
fn check_output(flag: &str, path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!(
            "{flag} {}: the folder {} does not exist",
            path.display(),
            parent.display()
        );
    }
    if path.is_dir() {
        bail!("{flag} {}: a folder, not a file", path.display());
    }
    Ok(())
}

/// Writes through a temporary file beside `path`, so a failed write leaves no half file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let done = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(done?)
}

/// Most timed steps of one `bench step`.
const MAX_RUNS: usize = 10_000;

fn batches(
    a: &Args,
    cfg: &NetworkSpec,
    t: usize,
    count: usize,
) -> Result<Vec<(Vec<f32>, Vec<u32>)>> {
    let b = a.batch_size;
    let mut rng = HostRng::new(t as u64);
    let Some(name) = &a.dataset else {
        return Ok((0..count)
            .map(|_| {
                let x = (0..b * cfg.sample_len())
                    .map(|_| rng.uniform(-0.5, 2.5))
                    .collect();
                let y = (0..b)
                    .map(|_| (rng.next_u64() % cfg.classes as u64) as u32)
                    .collect();
                (x, y)
            })
            .collect());
    };
    let (train, _) = fsnn::batches::load_sources(name, a.data_dir.as_deref(), t)?;
    if train.sample_len() != cfg.sample_len() {
        bail!(
            "--dataset {name}: {} gives {} values per sample; model {} needs {}",
            train.describe(),
            train.sample_len(),
            cfg.name,
            cfg.sample_len()
        );
    }
    if train.classes() > cfg.classes {
        bail!(
            "--dataset {name} has {} classes; model {} has {}",
            train.classes(),
            cfg.name,
            cfg.classes
        );
    }
    if train.len() < b {
        bail!(
            "--dataset {name}: {} training samples, fewer than --batch-size {b}",
            train.len()
        );
    }
    let mut order: Vec<usize> = (0..train.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    Ok((0..count)
        .map(|k| {
            let idx: Vec<usize> = (0..b).map(|j| order[(k * b + j) % order.len()]).collect();
            let mut x = vec![0.0; b * train.sample_len()];
            train.fill(&idx, k as u64, &mut x);
            let y = idx.iter().map(|&i| train.label(i)).collect();
            (x, y)
        })
        .collect())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

pub fn run(global: &Global, a: &Args) -> Result<()> {
    let device = global.device()?;
    match &device {
        crate::device::Device::Cpu { threads } => run_on(&fsnn_cpu::Cpu::new(*threads), a),
        crate::device::Device::Gpu(adapter) => run_on(&Gpu::new(adapter)?, a),
    }
}

/// The measurement on one backend; the per-kernel profile (and `--trace`) where it is the GPU.
fn run_on<B: fsnn::Backend>(dev: &B, a: &Args) -> Result<()> {
    let gpu = fsnn::gpu::backend::as_gpu(dev);
    let base = crate::train::base_spec(Some(&a.preset), a.model.as_deref(), "fc400")?;
    if gpu.is_none() && a.trace.is_some() {
        bail!("--trace records GPU kernel timestamps: run it with --device gpu");
    }
    let ts = if a.time_steps.is_empty() {
        vec![base.neuron.time_steps]
    } else {
        a.time_steps.clone()
    };
    // Each run gets a batch of its own, held in memory, and its index rides in a u32 seed.
    if !(1..=MAX_RUNS).contains(&a.runs) {
        bail!("--runs must be 1 to {MAX_RUNS}, got {}", a.runs);
    }
    // Before the steps run, so a typo in a path does not cost the whole measurement.
    for (flag, path) in [("--trace", &a.trace), ("--chart", &a.chart)] {
        if let Some(p) = path {
            check_output(flag, p)?;
        }
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1, got 0");
    }
    // 0 solver iterations would time a step that never solves the fixed point.
    if a.threshold == 0 {
        bail!("--threshold must be at least 1, got 0");
    }
    for &t in &ts {
        let n = &base.neuron;
        fsnn::checks::neuron(None, t, n.vth, n.leak, 0.0)?;
    }
    let mut sweep = Vec::new();
    for &t in &ts {
        let mut cfg = base.clone();
        cfg.neuron.time_steps = t;
        // Per T: event input holds T frames per sample.
        fsnn::checks::fits_gpu(
            dev,
            &cfg,
            a.batch_size,
            Some((a.solver, a.threshold)),
            "--batch-size",
        )?;
        match a.neuron.as_str() {
            "if" => cfg.neuron.leak = 1.0,
            "lif" => {}
            n => bail!("unknown neuron {n:?} (if | lif)"),
        }
        crate::train::apply_adjoint(&mut cfg, a.adjoint)?;
        // `auto` may time both simulations on models of their own first: that is not the step's
        // memory, so it happens before the peak is reset.
        let choice = match gpu {
            Some(g) => fsnn::kernels::resolve(g, &cfg, a.batch_size, a.kernels)?,
            // Another backend's model takes the event path wherever it supports one.
            None => a.kernels,
        };
        let base = dev.memory_bytes().0;
        dev.reset_peak_memory();
        let b = a.batch_size;
        // Warm-up, timed runs, profiled run.
        let data = batches(a, &cfg, t, a.runs + 2)?;
        let mut net = fsnn::build(&cfg, dev, 0)?;
        let kernels = net.set_kernels(choice);
        // Warm-up: pipelines, buffers and the solver's history are created here.
        let (x, y) = &data[0];
        net.train_step(dev, x, y, 0.01, a.solver, a.threshold, 0)?;
        let (mut total, mut fwd, mut bwd, mut solve, mut opt, mut iters, mut resid) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut last = None;
        for r in 0..a.runs {
            let (x, y) = &data[r + 1];
            let t0 = std::time::Instant::now();
            let s = net.train_step(dev, x, y, 0.01, a.solver, a.threshold, r as u32 + 1)?;
            total.push(t0.elapsed().as_secs_f64() * 1e3);
            fwd.push(s.forward_ms);
            bwd.push(s.backward_ms);
            solve.push(s.solve_ms);
            opt.push(s.optimizer_ms);
            iters.push(s.solve.iterations as f64);
            resid.push(s.solve.rel_residual);
            last = Some(s);
        }
        let peak = dev.memory_bytes().1 - base;
        // One more step with per-kernel timing on (timestamps cost a little, so it is not timed above).
        dev.set_profiling(true);
        let t0 = std::time::Instant::now();
        let (x, y) = &data[a.runs + 1];
        net.train_step(dev, x, y, 0.01, a.solver, a.threshold, 99)?;
        let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
        // No per-kernel timestamps off the GPU: the profile is empty there.
        let prof = gpu.map(|g| g.take_profile()).unwrap_or_default();
        dev.set_profiling(false);
        if let Some(path) = &a.trace {
            write_atomic(path, &serde_json::to_vec(&prof.chrome_trace())?)
                .with_context(|| format!("--trace {}", path.display()))?;
        }
        let kernel_ms = prof.kernel_ns() as f64 / 1e6;
        let ms = median(&mut total);
        let s = last.unwrap();
        let fwd_ms = median(&mut fwd);
        let bwd_ms = median(&mut bwd);
        let solve_ms = median(&mut solve);
        sweep.push(json!({
            "time_steps": t,
            "batch_size": b,
            "kernels": kernels.to_string(),
            "ms_per_step": ms,
            "forward_ms": fwd_ms,
            "backward_ms": bwd_ms,
            "adjoint_solve_ms": solve_ms,
            "param_grad_ms": bwd_ms - solve_ms,
            "optimizer_ms": median(&mut opt),
            "samples_per_sec": b as f64 / (ms / 1e3),
            "solver_iters": median(&mut iters),
            "solver_rel_residual": s.solve.rel_residual,
            "solver_rel_residual_median": median(&mut resid),
            "forward_residual": s.forward_residual,
            "peak_gpu_bytes": peak,
            "profiled_step": {
                "wall_ms": wall_ms,
                "kernel_ms": kernel_ms,
                "kernel_share_of_wall": kernel_ms / wall_ms,
                "other_ms": wall_ms - kernel_ms,
                "submits": prof.submits,
                "gpu_timestamps": prof.gpu_timestamps,
                "kernels": prof.totals(),
            },
        }));
        drop(net);
    }
    let first = sweep[0].clone();
    let adapter = match gpu {
        Some(g) => json!({
            "name": g.ctx.info.name, "backend": g.ctx.info.backend,
            "device_type": g.ctx.info.device_type, "driver": g.ctx.info.driver,
            "driver_info": g.ctx.info.driver_info,
        }),
        None => json!({
            "name": dev.describe(), "backend": "native", "device_type": "Cpu",
            "driver": "fsnn-cpu", "driver_info": "",
        }),
    };
    let mut out = json!({
        "adapter": adapter,
        "preset": base.name,
        "solver": format!("{:?}", a.solver),
        "adjoint": a.adjoint.map(|f| f.name()),
        "neuron": a.neuron,
        "dataset": a.dataset,
        "sweep": sweep,
    });
    // The first T's figures also at the top level, for the common single-T call.
    for k in [
        "time_steps",
        "batch_size",
        "kernels",
        "ms_per_step",
        "forward_ms",
        "backward_ms",
        "adjoint_solve_ms",
        "param_grad_ms",
        "optimizer_ms",
        "samples_per_sec",
        "solver_iters",
        "solver_rel_residual_median",
        "peak_gpu_bytes",
    ] {
        out[k] = first[k].clone();
    }
    if let Some(path) = &a.chart {
        let first = &out["sweep"][0]["profiled_step"]["kernels"];
        let kernels: Vec<(String, f64)> = first
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["name"].as_str().unwrap().to_string(),
                    k["share"].as_f64().unwrap(),
                )
            })
            .collect();
        let sweep: Vec<fsnn::plot::SweepPoint> = out["sweep"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| fsnn::plot::SweepPoint {
                time_steps: s["time_steps"].as_u64().unwrap() as usize,
                ms_per_step: s["ms_per_step"].as_f64().unwrap(),
                peak_gpu_bytes: s["peak_gpu_bytes"].as_u64().unwrap(),
            })
            .collect();
        let title = format!(
            "{} batch {} on {}",
            base.name,
            a.batch_size,
            adapter["name"].as_str().unwrap_or_default()
        );
        fsnn::plot::plot_step_report(&title, &kernels, &sweep, path)?;
    }
    if a.json {
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} on {} ({}), batch {}, solver {:?}, inputs: {}, {} forward kernels",
        base.name,
        adapter["name"].as_str().unwrap_or_default(),
        adapter["driver_info"].as_str().unwrap_or_default(),
        a.batch_size,
        a.solver,
        a.dataset.as_deref().unwrap_or("random"),
        first["kernels"].as_str().unwrap_or("?")
    );
    println!(
        "{:>5} {:>10} {:>10} {:>10} {:>10} {:>9} {:>7} {:>9} {:>10} {:>14}",
        "T",
        "ms/step",
        "forward",
        "solve",
        "grads",
        "optim",
        "iters",
        "residual",
        "samples/s",
        "peak GPU bytes"
    );
    for s in out["sweep"].as_array().unwrap() {
        println!(
            "{:>5} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>9.2} {:>7.1} {:>9.2e} {:>10.0} {:>14}",
            s["time_steps"].as_u64().unwrap(),
            s["ms_per_step"].as_f64().unwrap(),
            s["forward_ms"].as_f64().unwrap(),
            s["adjoint_solve_ms"].as_f64().unwrap(),
            s["param_grad_ms"].as_f64().unwrap(),
            s["optimizer_ms"].as_f64().unwrap(),
            s["solver_iters"].as_f64().unwrap(),
            s["solver_rel_residual_median"].as_f64().unwrap(),
            s["samples_per_sec"].as_f64().unwrap(),
            s["peak_gpu_bytes"].as_u64().unwrap()
        );
    }
    for s in out["sweep"].as_array().unwrap() {
        let p = &s["profiled_step"];
        println!(
            "\nT={}: one profiled step, {:.1} ms wall, kernels {:.1} ms ({:.0}%), other (submit, readback, host) {:.1} ms",
            s["time_steps"], p["wall_ms"].as_f64().unwrap(), p["kernel_ms"].as_f64().unwrap(),
            100.0 * p["kernel_share_of_wall"].as_f64().unwrap(), p["other_ms"].as_f64().unwrap()
        );
        println!(
            "{:<24} {:>6} {:>10} {:>7}",
            "kernel", "calls", "total ms", "share"
        );
        for k in p["kernels"].as_array().unwrap() {
            println!(
                "{:<24} {:>6} {:>10.2} {:>6.1}%",
                k["name"].as_str().unwrap(),
                k["calls"],
                k["total_ms"].as_f64().unwrap(),
                100.0 * k["share"].as_f64().unwrap()
            );
        }
    }
    Ok(())
}
