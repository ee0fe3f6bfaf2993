//! `fsnn bench`: device ceilings (`peak`) and the kernel suite (`kernels`). Each benchmark is a
//! module of its own; all share the timing loop below.

mod kernels;
pub(crate) mod peak;
mod step;

use std::time::Instant;

use anyhow::Result;
use fsnn::Gpu;

use crate::Global;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Time every kernel at the shapes of the paper's models.
    Kernels(kernels::Args),
    /// Measure this adapter's f32 FMA throughput, copy bandwidth and dispatch overhead.
    Peak(peak::Args),
    /// Time one IDE training step of a preset, split into phases, with peak GPU memory.
    Step(step::Args),
}

pub fn run(global: &Global, cmd: &Command) -> Result<()> {
    match cmd {
        Command::Kernels(a) => kernels::run(global, a),
        Command::Peak(a) => peak::run(global, a),
        Command::Step(a) => step::run(global, a),
    }
}

/// How a run was timed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Sum of the per-dispatch GPU timestamp spans: host encoding and submit are excluded.
    GpuTimestamps,
    /// Wall time around the flush: includes encoding, submit and the wait.
    Wall,
}

impl Clock {
    pub fn of(gpu: &Gpu) -> Self {
        if gpu.ctx.has_pass_timestamps() {
            Clock::GpuTimestamps
        } else {
            Clock::Wall
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Clock::GpuTimestamps => "gpu-timestamps",
            Clock::Wall => "wall-clock",
        }
    }
}

/// Milliseconds of `runs` executions of `record` after one untimed warm-up (which creates the
/// pipelines, lets the driver compile them and fills the buffer pool).
pub fn time_ms(gpu: &Gpu, clock: Clock, runs: usize, record: &dyn Fn(&Gpu)) -> Vec<f64> {
    record(gpu);
    gpu.flush();
    (0..runs)
        .map(|_| match clock {
            Clock::GpuTimestamps => {
                gpu.set_profiling(true);
                record(gpu);
                let p = gpu.take_profile();
                gpu.set_profiling(false);
                p.kernel_ns() as f64 / 1e6
            }
            Clock::Wall => {
                let t = Instant::now();
                record(gpu);
                gpu.flush();
                t.elapsed().as_secs_f64() * 1e3
            }
        })
        .collect()
}

/// Deterministic data in [-1, 1) without a dependency: the values only have to be ordinary floats
/// (no denormals, NaNs or all-zero inputs that could take fast paths).
pub fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}
