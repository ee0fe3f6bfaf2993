//! `fsnn tune`: every per-adapter kernel measurement, run now rather than on first use. The kernel
//! variants of each hot family (`fsnn::variants`) at the presets' shapes, and the forward
//! simulation's dense/event choice (`fsnn::kernels`) for each single-layer preset; both results go
//! to the cache the trainer reads.

use anyhow::Result;
use fsnn::gpu::Gpu;
use fsnn::variants::{self, Family};

use crate::bench::peak;
use crate::report::utc_now;
use crate::Global;

#[derive(clap::Args)]
pub struct Args {
    /// Skip the FMA peak (no share-of-peak column).
    #[arg(long)]
    no_peak: bool,
    /// Skip the dense/event measurement of the presets' forward simulation.
    #[arg(long)]
    no_simulation: bool,
    /// Batch size of the dense/event measurement.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Shrunk shapes, nothing cached (for tests; the choice is not representative).
    #[arg(long)]
    quick: bool,
}

pub fn run(global: &Global, args: &Args) -> Result<()> {
    let gpu = Gpu::new(&global.adapter)?;
    let a = &gpu.ctx.info;
    println!(
        "{} ({}, driver {} {}), {}",
        a.name,
        a.backend,
        a.driver,
        a.driver_info,
        utc_now()
    );
    let peak = (!args.no_peak).then(|| peak::measure(&gpu, 5, args.quick));
    if let Some(p) = &peak {
        println!(
            "FMA peak (`fsnn bench peak`): {:.1} GFLOP/s, the denominator of %peak",
            p.fma_gflops
        );
    }
    eprintln!(
        "timing every available variant per family, median of {} runs per shape ...",
        variants::RUNS
    );
    let (m, path) = variants::tune(&gpu, args.quick)?;
    println!(
        "{:<18} {:<26} {:<8} {:>10} {:>9} {:>7}  chosen",
        "family", "shape", "variant", "ms", "GFLOP/s", "%peak"
    );
    for (f, fc) in &m {
        for t in &fc.timings {
            let pct = peak
                .as_ref()
                .map(|p| format!("{:.1}", 100.0 * t.gflops / p.fma_gflops))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<18} {:<26} {:<8} {:>10.3} {:>9.2} {:>7}  {}",
                f.name(),
                t.shape,
                t.variant.name(),
                t.ms,
                t.gflops,
                pct,
                if fc
                    .per_shape
                    .iter()
                    .any(|c| c.shape == t.shape && c.variant == t.variant)
                {
                    "*"
                } else {
                    ""
                }
            );
        }
    }
    for f in Family::ALL {
        let forced = variants::env_override(f)?
            .map(|v| format!(" (forced by {}={v})", f.env_var()))
            .unwrap_or_default();
        let total = |v| -> f64 {
            m[&f]
                .timings
                .iter()
                .filter(|t| t.variant == v)
                .map(|t| t.ms)
                .sum()
        };
        let parts: Vec<String> = f
            .available(&gpu)
            .into_iter()
            .map(|v| format!("{v} {:.2} ms", total(v)))
            .collect();
        let shapes = gpu_shapes(&gpu, f);
        println!(
            "{}: {} in all -> {}{forced}{shapes}",
            f.name(),
            parts.join(", "),
            gpu.variant(f)
        );
    }
    match path {
        Some(Ok(p)) => println!("variants cached in {}", p.display()),
        Some(Err(e)) => {
            println!("variants not cached");
            eprintln!("warning: cannot cache the variant choice: {e:#}");
        }
        None => println!("variants not cached (--quick)"),
    }

    if !args.no_simulation && !args.quick {
        println!(
            "\nforward simulation, dense vs event path (batch {}, at most {} steps per pass):",
            args.batch,
            fsnn::kernels::MEASURE_STEPS
        );
        println!(
            "{:<20} {:>10} {:>10} {:>16}  chosen",
            "preset", "dense ms", "event ms", "other form ms"
        );
        let mut cache_error: Option<anyhow::Error> = None;
        for p in fsnn::model::spec::presets() {
            if let Some((c, stored)) = fsnn::kernels::remeasure(&gpu, &p, args.batch)? {
                if let Err(e) = stored {
                    cache_error.get_or_insert(e);
                }
                // The event path's other form, where one was measured, and the form kept.
                let (other, form) = match (c.event_list_ms, c.event_lanes_ms) {
                    (Some(l), _) => (format!("list {l:.2}"), format!(" ({} walk)", c.walk.name())),
                    (_, Some(l)) => (
                        format!("lanes {l:.2}"),
                        format!(" ({} form)", c.conv_form.name()),
                    ),
                    _ => ("-".into(), String::new()),
                };
                println!(
                    "{:<20} {:>10.2} {:>10.2} {:>16}  {}{form}",
                    p.name, c.dense_ms, c.event_ms, other, c.kernels
                );
            }
        }
        match cache_error {
            None => println!("cached in {}", fsnn::kernels::cache_path().display()),
            Some(e) => {
                println!("not cached");
                eprintln!("warning: cannot cache the dense/event choices: {e:#}");
            }
        }
    }
    Ok(())
}

/// ", per shape: …" where the recorder's per-shape choices of `f` differ from its overall one.
fn gpu_shapes(gpu: &fsnn::gpu::Gpu, f: Family) -> String {
    let overall = gpu.variant(f);
    let differ: Vec<String> = gpu
        .variant_shapes(f)
        .iter()
        .filter(|c| c.variant != overall)
        .map(|c| format!("{} at {}", c.variant, c.shape))
        .collect();
    if differ.is_empty() {
        String::new()
    } else {
        format!(", but {}", differ.join(", "))
    }
}
