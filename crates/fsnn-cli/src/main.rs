//! The `fsnn` command line. Each subcommand lives in a module of its own with an `Args` (or
//! `Command`) type and a `run` function; adding one is a new module, one enum variant and one match
//! arm here.

mod bench;
mod device;
mod info;
mod inspect;
mod report;
mod signals;
mod train;
mod tune;

use anyhow::Result;
use clap::{Parser, Subcommand};
use fsnn::gpu::AdapterChoice;

#[derive(Parser)]
#[command(
    name = "fsnn",
    version,
    about = "Feedback spiking neural networks on any GPU"
)]
struct Cli {
    /// GPU adapter: a substring of its name or its index in `fsnn info --all` [env: FSNN_ADAPTER].
    /// Default: the most capable adapter.
    #[arg(long, global = true, value_name = "NAME|INDEX")]
    adapter: Option<String>,
    /// Compute backend: auto (a hardware GPU if the machine has one, else the native CPU
    /// backend), gpu (the adapter --adapter names, else the most capable, software ones
    /// included), cpu, or an adapter's name or index [env: FSNN_DEVICE].
    #[arg(long, global = true, value_name = "auto|gpu|cpu|ADAPTER")]
    device: Option<String>,
    /// Threads of the CPU backend (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// What every subcommand gets besides its own arguments.
pub struct Global {
    pub adapter: AdapterChoice,
    /// `--device` as given (resolved by the commands that run a network: train, eval, bench step).
    pub device: Option<String>,
    pub threads: Option<usize>,
}

impl Global {
    pub fn device(&self) -> Result<device::Device> {
        device::Device::choose(self.device.as_deref(), &self.adapter, self.threads)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Show the GPU adapter, its features and limits.
    Info(info::Args),
    /// Measure device peaks and kernel throughput.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Train a feedback SNN by implicit differentiation (default: fc400 on Fashion-MNIST).
    Train(Box<train::TrainArgs>),
    /// Evaluate a checkpoint on its test set.
    Eval(train::EvalArgs),
    /// List the model presets (each a model file; --show NAME prints one).
    Presets(train::PresetsArgs),
    /// Firing rates, silent/saturated neurons, the equilibrium residual against T, spike rasters
    /// and rate histograms of a checkpoint's network.
    Inspect(inspect::Args),
    /// Measure which kernel variants are fastest on this adapter and cache the choice.
    Tune(tune::Args),
}

fn main() {
    // Errors are for people: the cause chain on one line, no backtrace, exit code 1.
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    if let Some(n) = cli.threads.filter(|&n| n > 0) {
        // The CPU backend's GEMM pool reads this once; set here, while the process has one thread.
        std::env::set_var("MATMUL_NUM_THREADS", n.to_string());
    }
    // Ctrl-C, SIGTERM, SIGHUP: the first one lets a training run finish its step and write a
    // checkpoint; a second one (or one outside training) quits at once.
    signals::install()?;
    fsnn::variants::check_env()?;
    let global = Global {
        // FSNN_ADAPTER is read here rather than through clap so that an empty value means "unset".
        adapter: AdapterChoice::from_flag_or_env(cli.adapter.as_deref()),
        device: cli.device,
        threads: cli.threads,
    };
    match cli.command {
        Command::Info(args) => info::run(&global, &args),
        Command::Bench(cmd) => bench::run(&global, &cmd),
        Command::Train(args) => train::run_train(&global, &args),
        Command::Eval(args) => train::run_eval(&global, &args),
        Command::Presets(args) => train::run_presets(&args),
        Command::Inspect(args) => inspect::run(&global, &args),
        Command::Tune(args) => tune::run(&global, &args),
    }
}
