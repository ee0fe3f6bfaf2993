//! `fsnn bench peak`: this adapter's own ceilings, the denominators of every efficiency figure.
//!
//! - FMA throughput: shaders/peak_fma.wgsl, registers only; FLOPs = 2 · 8 chains · iters per
//!   invocation. The iteration count doubles until one run is long enough to time.
//! - Copy bandwidth: `copy_buffer_to_buffer`; bytes moved = read + written (2 × size). Copies get
//!   no timestamps, so this is wall clock around the submit.
//! - Stream bandwidth: the `axpby` kernel, bytes = 12 per element (x, y read; y written).
//! - Dispatch overhead: many tiny dispatches in one compute pass, wall clock per dispatch (host
//!   encoding, bind groups and the driver's launch); and one tiny dispatch per submit, wall clock
//!   per submit including the wait.

use std::time::Instant;

use anyhow::Result;
use fsnn::gpu::Gpu;
use fsnn::ops;
use serde::Serialize;

use super::{time_ms, Clock};
use crate::report::{git_commit, stats, utc_now};
use crate::Global;

#[derive(clap::Args)]
pub struct Args {
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Timed runs of each measurement (after one warm-up).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Small sizes, for tests and smoke checks (figures are not representative).
    #[arg(long)]
    quick: bool,
}

#[derive(Serialize, Clone)]
pub struct Peak {
    pub clock: &'static str,
    /// Median over the runs.
    pub fma_gflops: f64,
    pub fma_gflops_best: f64,
    pub fma_invocations: usize,
    pub fma_iters: u32,
    pub copy_gbps: f64,
    pub copy_bytes: u64,
    pub stream_gbps: f64,
    pub stream_elements: usize,
    /// Host wall time per dispatch, many dispatches in one compute pass.
    pub dispatch_us: f64,
    /// Mean GPU timestamp span of the same tiny dispatch (absent without pass timestamps).
    pub dispatch_gpu_us: Option<f64>,
    /// Host wall time of one submit holding one tiny dispatch, waited for.
    pub submit_us: f64,
}

fn median(v: &[f64]) -> f64 {
    stats(v).0
}

pub fn measure(gpu: &Gpu, runs: usize, quick: bool) -> Peak {
    let clock = Clock::of(gpu);

    // Enough invocations to fill a large discrete GPU; lavapipe just runs them in turn.
    let n = if quick { 8192 } else { 1 << 18 };
    let out = gpu.zeros(&[n]);
    let target_ms = if quick { 1.0 } else { 25.0 };
    let mut iters = 16u32;
    let fma_ms = loop {
        let t = time_ms(gpu, clock, runs, &|g| {
            ops::peak_fma(g, iters, 0.999, 1e-3, &out)
        });
        if median(&t) >= target_ms || iters >= 1 << 16 {
            break t;
        }
        // Jump close to the target in one step once the time is measurable.
        let m = median(&t).max(1e-3);
        let factor = ((target_ms / m).ceil() as u32)
            .clamp(2, 16)
            .next_power_of_two();
        iters = (iters * factor).min(1 << 16);
    };
    let flops = ops::peak_fma_flops(n, iters);
    let (fma_med, fma_min, _) = stats(&fma_ms);

    let copy_elems = if quick { 1 << 20 } else { 16 << 20 };
    let src = gpu.upload(&[copy_elems], &super::data(copy_elems, 1));
    let dst = gpu.zeros(&[copy_elems]);
    const COPIES: usize = 4;
    let copy_ms = time_ms(gpu, Clock::Wall, runs, &|g| {
        for _ in 0..COPIES {
            g.copy(&src, 0, &dst, 0, copy_elems);
        }
    });
    let copy_bytes = copy_elems as u64 * 4;
    let copy_gbps = (2 * COPIES) as f64 * copy_bytes as f64 / (median(&copy_ms) * 1e6);

    let stream_ms = time_ms(gpu, clock, runs, &|g| ops::axpby(g, 0.5, &src, 0.5, &dst));
    let stream_gbps = 12.0 * copy_elems as f64 / (median(&stream_ms) * 1e6);
    gpu.recycle(src);
    gpu.recycle(dst);

    let tiny = gpu.zeros(&[64]);
    let k = if quick { 64 } else { 1000 };
    let pass_ms = time_ms(gpu, Clock::Wall, runs, &|g| {
        for _ in 0..k {
            ops::scale(g, 1.0, &tiny);
        }
    });
    let dispatch_gpu_us = (clock == Clock::GpuTimestamps).then(|| {
        gpu.set_profiling(true);
        for _ in 0..k {
            ops::scale(gpu, 1.0, &tiny);
        }
        let p = gpu.take_profile();
        gpu.set_profiling(false);
        p.kernel_ns() as f64 / 1e3 / p.spans.len().max(1) as f64
    });
    let submits = if quick { 16 } else { 200 };
    let submit_ms: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..submits {
                ops::scale(gpu, 1.0, &tiny);
                gpu.flush();
            }
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();

    Peak {
        clock: clock.name(),
        fma_gflops: flops / (fma_med * 1e6),
        fma_gflops_best: flops / (fma_min * 1e6),
        fma_invocations: n,
        fma_iters: iters,
        copy_gbps,
        copy_bytes,
        stream_gbps,
        stream_elements: copy_elems,
        dispatch_us: median(&pass_ms) * 1e3 / k as f64,
        dispatch_gpu_us,
        submit_us: median(&submit_ms) * 1e3 / submits as f64,
    }
}

pub fn run(global: &Global, args: &Args) -> Result<()> {
    let gpu = Gpu::new(&global.adapter)?;
    let peak = measure(&gpu, args.runs as usize, args.quick);
    if args.json {
        let report = serde_json::json!({
            "adapter": gpu.ctx.info,
            "date": utc_now(),
            "git_commit": git_commit(),
            "runs": args.runs,
            "quick": args.quick,
            "peak": peak,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let a = &gpu.ctx.info;
    println!(
        "{} ({}, driver {} {}), timing: {}",
        a.name, a.backend, a.driver, a.driver_info, peak.clock
    );
    println!(
        "f32 FMA throughput     {:>10.1} GFLOP/s  (best {:.1}; {} invocations x {} iterations)",
        peak.fma_gflops, peak.fma_gflops_best, peak.fma_invocations, peak.fma_iters
    );
    println!(
        "copy bandwidth         {:>10.1} GB/s     (copy_buffer_to_buffer of {} MiB, read + write)",
        peak.copy_gbps,
        peak.copy_bytes >> 20
    );
    println!(
        "stream bandwidth       {:>10.1} GB/s     (axpby kernel, {} elements)",
        peak.stream_gbps, peak.stream_elements
    );
    println!(
        "dispatch in one pass   {:>10.1} µs       (host wall per dispatch{})",
        peak.dispatch_us,
        peak.dispatch_gpu_us
            .map(|g| format!("; GPU span {g:.1} µs"))
            .unwrap_or_default()
    );
    println!(
        "submit + wait          {:>10.1} µs       (one tiny dispatch per submit)",
        peak.submit_us
    );
    Ok(())
}
