//! `fsnn bench kernels`: every kernel at the shapes of the paper's models.
//!
//! FLOPs count multiply and add separately (an FMA is 2) over the mathematically required
//! operations: a GEMM is 2·M·N·K, a convolution 2 · outputs · Cin·kh·kw (padding taps included,
//! as is conventional). GB/s counts compulsory traffic: every input read once and every output
//! written once, whatever the kernel re-reads; the per-kernel figures are in `Case::note` and in
//! docs/BENCHMARKS.md.

use anyhow::Result;
use fsnn::gpu::{ConvEventForm, Gpu, Sharing, SpikeWalk, Tensor};
use fsnn::ops::{self, BnShape, ConvShape, ConvTShape, NeuronStep, Op};
use fsnn::variants::{Family, Variant};
use serde::Serialize;

use super::peak::{self, Peak};
use super::{data, time_ms, Clock};
use crate::report::{git_commit, stats, utc_now};
use crate::Global;

#[derive(clap::Args)]
pub struct Args {
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Timed runs per kernel, after one warm-up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Shrink every shape so the suite takes seconds (for tests; figures are not representative).
    #[arg(long)]
    quick: bool,
    /// Skip measuring the device peaks (no % of peak columns).
    #[arg(long)]
    no_peak: bool,
    /// Only kernels whose name contains this.
    #[arg(long)]
    filter: Option<String>,
}

struct Case {
    name: &'static str,
    shape: String,
    note: &'static str,
    flops: f64,
    bytes: f64,
    record: Box<dyn Fn(&Gpu)>,
}

#[derive(Serialize)]
struct Row {
    name: &'static str,
    shape: String,
    note: &'static str,
    ms: f64,
    ms_min: f64,
    ms_max: f64,
    gflops: f64,
    gbps: f64,
    flops: f64,
    bytes: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pct_peak_flops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pct_peak_bandwidth: Option<f64>,
}

fn tensor(gpu: &Gpu, n: usize, seed: u64) -> Tensor {
    gpu.upload(&[n], &data(n, seed))
}

fn gemm_case(
    gpu: &Gpu,
    name: &'static str,
    note: &'static str,
    (ta, tb): (Op, Op),
    (m, n, k): (usize, usize, usize),
) -> Case {
    let (a, b, c) = (
        tensor(gpu, m * k, 1),
        tensor(gpu, k * n, 2),
        gpu.zeros(&[m * n]),
    );
    Case {
        name,
        shape: format!("{m}x{n}x{k}"),
        note,
        flops: 2.0 * (m * n * k) as f64,
        bytes: 4.0 * (m * k + k * n + m * n) as f64,
        record: Box::new(move |g| ops::gemm(g, ta, tb, m, n, k, 1.0, &a, &b, 0.0, &c)),
    }
}

fn conv_tag(s: &ConvShape) -> String {
    format!(
        "{}x{}x{}x{} k{}x{} s{} p{} -> {}x{}x{}",
        s.batch,
        s.cin,
        s.h,
        s.w,
        s.kh,
        s.kw,
        s.stride,
        s.pad,
        s.cout,
        s.oh(),
        s.ow()
    )
}

/// Forward, input gradient and weight gradient of one convolution (`which` picks among them).
fn conv_cases(gpu: &Gpu, s: ConvShape, note: &'static str, which: [bool; 3]) -> Vec<Case> {
    let (x, w, y) = (
        tensor(gpu, s.input_len(), 3),
        tensor(gpu, s.weight_len(), 4),
        tensor(gpu, s.output_len(), 5),
    );
    let bytes = 4.0 * (s.input_len() + s.weight_len() + s.output_len()) as f64;
    let mut v = Vec::new();
    if which[0] {
        let (x, w, y) = (x.clone(), w.clone(), y.clone());
        v.push(Case {
            name: "conv2d",
            shape: conv_tag(&s),
            note,
            flops: s.flops(),
            bytes,
            record: Box::new(move |g| ops::conv2d(g, &s, &x, &w, 0.0, &y)),
        });
    }
    if which[1] {
        let (dx, w, dy) = (gpu.zeros(&[s.input_len()]), w.clone(), y.clone());
        v.push(Case {
            name: "conv2d_input_grad",
            shape: conv_tag(&s),
            note,
            flops: s.flops(),
            bytes,
            record: Box::new(move |g| ops::conv2d_input_grad(g, &s, &dy, &w, 1.0, 0.0, &dx)),
        });
    }
    if which[2] {
        let dw = gpu.zeros(&[s.weight_len()]);
        v.push(Case {
            name: "conv2d_weight_grad",
            shape: conv_tag(&s),
            note,
            flops: s.flops(),
            bytes,
            record: Box::new(move |g| ops::conv2d_weight_grad(g, &s, &y, &x, 1.0, 0.0, &dw)),
        });
    }
    v
}

fn cases(gpu: &Gpu, quick: bool) -> Vec<Case> {
    // Quick mode keeps every kernel and code path but divides batch and widths.
    let b = if quick { 2 } else { 128 };
    let c = |n: usize| if quick { n.div_ceil(8) } else { n };
    let g1024 = if quick { 96 } else { 1024 };
    let mut v = vec![
        gemm_case(
            gpu,
            "gemm",
            "square GEMM, C = A·B",
            (Op::N, Op::N),
            (g1024, g1024, g1024),
        ),
        gemm_case(
            gpu,
            "gemm_nt",
            "fc400 forward / feedback: [128x400]·W[400x400]ᵀ",
            (Op::N, Op::T),
            (b, c(400), c(400)),
        ),
        gemm_case(
            gpu,
            "gemm_nt",
            "fc input layer: x[128x784]·W[400x784]ᵀ",
            (Op::N, Op::T),
            (b, c(400), c(784)),
        ),
        gemm_case(
            gpu,
            "gemm_tn",
            "fc input layer weight gradient: δ[128x400]ᵀ·x[128x784]",
            (Op::T, Op::N),
            (c(400), c(784), b),
        ),
    ];
    let conv64 = conv64_feedback(b, c(64));
    v.extend(conv_cases(
        gpu,
        conv64,
        "conv64 5x5 64->64 layer",
        [true; 3],
    ));
    let conv_in = ConvShape {
        batch: b,
        cin: 1,
        h: 28,
        w: 28,
        cout: c(64),
        kh: 5,
        kw: 5,
        stride: 2,
        pad: 2,
    };
    v.extend(conv_cases(
        gpu,
        conv_in,
        "conv64 input layer 1->64 5x5 s2",
        [true, false, true],
    ));
    // AlexNet-F's four 3×3 layers inside the feedback loop (forward and the input gradient the
    // adjoint solve repeats every iteration).
    for (cin, cout, hw, stride, note) in [
        (96, 256, 16, 1, "AlexNet-F layer 96->256 3x3 on 16x16"),
        (
            256,
            384,
            16,
            2,
            "AlexNet-F layer 256->384 3x3 s2 16x16->8x8",
        ),
        (384, 384, 8, 1, "AlexNet-F layer 384->384 3x3 on 8x8"),
        (384, 256, 8, 1, "AlexNet-F layer 384->256 3x3 on 8x8"),
    ] {
        let s = ConvShape {
            batch: b,
            cin: c(cin),
            h: hw,
            w: hw,
            cout: c(cout),
            kh: 3,
            kw: 3,
            stride,
            pad: 1,
        };
        v.extend(conv_cases(gpu, s, note, [true, true, false]));
    }

    let ct = ConvTShape {
        batch: b,
        cin: c(256),
        h: 8,
        w: 8,
        cout: c(96),
        k: 3,
        stride: 2,
        pad: 1,
        output_pad: 1,
    };
    {
        let (x, w, y) = (
            tensor(gpu, ct.input_len(), 6),
            tensor(gpu, ct.weight_len(), 7),
            gpu.zeros(&[ct.output_len()]),
        );
        v.push(Case {
            name: "conv_transpose2d",
            shape: format!(
                "{}x{}x{}x{} k3 s2 p1 op1 -> {}x{}x{}",
                ct.batch,
                ct.cin,
                ct.h,
                ct.w,
                ct.cout,
                ct.oh(),
                ct.ow()
            ),
            note: "AlexNet-F feedback 256->96, 8x8 -> 16x16",
            flops: ct.as_conv().flops(),
            bytes: 4.0 * (ct.input_len() + ct.weight_len() + ct.output_len()) as f64,
            record: Box::new(move |g| ops::conv_transpose2d(g, &ct, &x, &w, 0.0, &y)),
        });
    }

    {
        // The `flipped` input gradient's weight copy, at AlexNet-F's largest stride-1 layer.
        let (cout, cin) = (c(384), c(384));
        let n = cout * cin * 9;
        let (w, wf) = (tensor(gpu, n, 10), gpu.zeros(&[n]));
        v.push(Case {
            name: "conv_weight_flip",
            shape: format!("{cout}x{cin}x3x3"),
            note: "flipped input gradient's weight copy, AlexNet-F 384->384 (no flops)",
            flops: 0.0,
            bytes: 8.0 * n as f64,
            record: Box::new(move |g| ops::conv_weight_flip(g, cout, cin, 3, 3, &w, &wf)),
        });
    }

    {
        let n = b * c(12544);
        let (u, acc, s, x, fb) = (
            gpu.zeros(&[n]),
            gpu.zeros(&[n]),
            gpu.zeros(&[n]),
            tensor(gpu, n, 8),
            tensor(gpu, n, 9),
        );
        let step = NeuronStep {
            vth: 1.0,
            leak: 0.95,
            has_feedback: true,
            x_offset: 0,
        };
        v.push(Case {
            name: "neuron_step",
            shape: format!("{b}x{}", c(12544)),
            note: "conv64 layer neurons (64x14x14); 7 flops, 28 bytes per neuron",
            flops: 7.0 * n as f64,
            bytes: 28.0 * n as f64,
            record: Box::new(move |g| ops::neuron_step(g, &u, &acc, &s, &x, &fb, step)),
        });
    }
    v.extend(event_cases(gpu, b, c));
    v.extend(variant_cases(gpu, b, &c));

    {
        let s = BnShape {
            batch: b,
            channels: c(64),
            hw: 196,
        };
        let ch = s.channels;
        let x = tensor(gpu, s.len(), 10);
        let dy = tensor(gpu, s.len(), 11);
        let (y, dx) = (gpu.zeros(&[s.len()]), gpu.zeros(&[s.len()]));
        let [mean, var, rm, rv, dgamma, dbeta] = std::array::from_fn(|_| gpu.zeros(&[ch]));
        let gamma = gpu.upload(&[ch], &vec![1.0; ch]);
        let beta = gpu.zeros(&[ch]);
        let shape = format!("{}x{}x{}", s.batch, s.channels, s.hw);
        {
            let (x, y, mean, var, gamma, beta) = (
                x.clone(),
                y.clone(),
                mean.clone(),
                var.clone(),
                gamma.clone(),
                beta.clone(),
            );
            v.push(Case {
                name: "bn_forward_train",
                shape: shape.clone(),
                note: "bn_stats + bn_forward; 7 flops, 8 bytes per element",
                flops: 7.0 * s.len() as f64,
                bytes: 8.0 * s.len() as f64,
                record: Box::new(move |g| {
                    ops::bn_stats(g, s, &x, &mean, &var, &rm, &rv, Some(0.1));
                    ops::bn_forward(g, s, &x, &mean, &var, &gamma, &beta, &y);
                }),
            });
        }
        v.push(Case {
            name: "bn_backward",
            shape,
            note: "bn_backward_reduce + bn_backward_input; 10 flops, 12 bytes per element",
            flops: 10.0 * s.len() as f64,
            bytes: 12.0 * s.len() as f64,
            record: Box::new(move |g| {
                ops::bn_backward(
                    g,
                    s,
                    &x,
                    &dy,
                    &mean,
                    &var,
                    &gamma,
                    true,
                    &dgamma,
                    &dbeta,
                    Some(&dx),
                )
            }),
        });
    }

    {
        let (rows, dim) = (b, c(16384));
        let (x, y, out) = (
            tensor(gpu, rows * dim, 12),
            tensor(gpu, rows * dim, 13),
            gpu.zeros(&[rows]),
        );
        v.push(Case {
            name: "row_dot",
            shape: format!("{rows}x{dim}"),
            note: "per-sample dot products of the solver; 2 flops, 8 bytes per element",
            flops: 2.0 * (rows * dim) as f64,
            bytes: 8.0 * (rows * dim) as f64,
            record: Box::new(move |g| ops::row_dot(g, rows, dim, &x, &y, 1.0, 0.0, &out)),
        });
    }

    {
        let n = if quick { 1 << 15 } else { 2 << 20 };
        let (x, y) = (tensor(gpu, n, 14), tensor(gpu, n, 15));
        v.push(Case {
            name: "axpby",
            shape: format!("{n}"),
            note: "solver vector update; 3 flops, 12 bytes per element",
            flops: 3.0 * n as f64,
            bytes: 12.0 * n as f64,
            record: Box::new(move |g| ops::axpby(g, 0.5, &x, 0.5, &y)),
        });
    }

    {
        let (rows, cols) = (c(64), c(1600));
        let (w, u, vv, sigma) = (
            tensor(gpu, rows * cols, 16),
            tensor(gpu, rows, 17),
            gpu.zeros(&[cols]),
            gpu.zeros(&[1]),
        );
        v.push(Case {
            name: "power_iteration",
            shape: format!("{rows}x{cols}"),
            note: "spectral norm of a 64x64x5x5 weight; W·v and Wᵀ·u: 4 flops, 8 bytes per weight",
            flops: 4.0 * (rows * cols) as f64,
            bytes: 8.0 * (rows * cols) as f64,
            record: Box::new(move |g| ops::power_iteration(g, rows, cols, &w, &u, &vv, &sigma)),
        });
    }
    v
}

pub fn run(global: &Global, args: &Args) -> Result<()> {
    let gpu = Gpu::new(&global.adapter)?;
    let clock = Clock::of(&gpu);
    let runs = args.runs as usize;
    let peak: Option<Peak> = (!args.no_peak).then(|| peak::measure(&gpu, runs, args.quick));
    let mut rows = Vec::new();
    for case in cases(&gpu, args.quick) {
        if let Some(f) = &args.filter {
            if !case.name.contains(f.as_str()) {
                continue;
            }
        }
        let ms = time_ms(&gpu, clock, runs, &*case.record);
        let (med, lo, hi) = stats(&ms);
        let gflops = case.flops / (med * 1e6);
        let gbps = case.bytes / (med * 1e6);
        rows.push(Row {
            name: case.name,
            shape: case.shape,
            note: case.note,
            ms: med,
            ms_min: lo,
            ms_max: hi,
            gflops,
            gbps,
            flops: case.flops,
            bytes: case.bytes,
            pct_peak_flops: peak.as_ref().map(|p| 100.0 * gflops / p.fma_gflops),
            pct_peak_bandwidth: peak.as_ref().map(|p| 100.0 * gbps / p.copy_gbps),
        });
        if !args.json {
            eprint!(".");
        }
    }
    if args.json {
        let report = serde_json::json!({
            "adapter": gpu.ctx.info,
            "date": utc_now(),
            "git_commit": git_commit(),
            "timing": clock.name(),
            "runs": runs,
            "quick": args.quick,
            "peak": peak,
            "kernels": rows,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    eprintln!();
    let a = &gpu.ctx.info;
    println!(
        "{} ({}, driver {} {}), timing: {}, median of {runs} run(s) after a warm-up",
        a.name,
        a.backend,
        a.driver,
        a.driver_info,
        clock.name()
    );
    if let Some(p) = &peak {
        println!(
            "measured peaks (the %FLOP and %BW denominators): {:.1} GFLOP/s FMA, {:.1} GB/s copy",
            p.fma_gflops, p.copy_gbps
        );
    }
    println!(
        "{:<27} {:<38} {:>10} {:>10} {:>10} {:>9} {:>8} {:>7} {:>7}",
        "kernel", "shape", "ms", "min", "max", "GFLOP/s", "GB/s", "%FLOP", "%BW"
    );
    let pct = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    for r in &rows {
        println!(
            "{:<27} {:<38} {:>10.3} {:>10.3} {:>10.3} {:>9.2} {:>8.2} {:>7} {:>7}",
            r.name,
            r.shape,
            r.ms,
            r.ms_min,
            r.ms_max,
            r.gflops,
            r.gbps,
            pct(r.pct_peak_flops),
            pct(r.pct_peak_bandwidth)
        );
    }
    Ok(())
}

/// Random spike bit sets of `rows` rows of `width` neurons at `percent` % density.
fn spike_bits(rows: usize, width: usize, percent: u64, seed: u64) -> Vec<u32> {
    let mut r = fsnn::model::HostRng::new(seed);
    let spikes: Vec<f32> = (0..rows * width)
        .map(|_| {
            if r.next_u64() % 100 < percent {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    fsnn::cpu::pack_rows(&spikes, width)
}

/// Spike density of the event cases: fc400 and conv64 on real data fire about this often.
const EVENT_DENSITY: u64 = 14;

/// One simulation step of fc400 and conv64 on the event path (feedback from the previous step's
/// spikes at 14 % density, masked, plus the neuron update), with the dense path's step beside it
/// (GEMM or conv on a 0/1 float tensor, mask_mul, neuron_step). FLOPs are the dense product's
/// (2·M·N·K), so GFLOP/s and % of peak of the event rows are effective rates.
fn event_cases(gpu: &Gpu, b: usize, c: impl Fn(usize) -> usize) -> Vec<Case> {
    let mut v = Vec::new();
    let density = EVENT_DENSITY;
    // fc400: one step of the fused linear kernel (bits restored before each run, since the kernel
    // replaces them with the step's own spikes).
    let n = c(400);
    let ld = ops::fc_event_ld(n);
    let pristine = spike_bits(b, n, density, 21);
    let bits0 = gpu.upload_u32(&[pristine.len()], &pristine);
    let bits = gpu.zeros(&[pristine.len()]);
    let (u, acc) = (gpu.zeros(&[b * n]), gpu.zeros(&[b * n]));
    let (wt, x, m) = (
        tensor(gpu, n * ld, 22),
        tensor(gpu, b * n, 23),
        tensor(gpu, b * n, 24),
    );
    let sim = ops::FcEventSim {
        n,
        batch: b,
        t_begin: 1,
        t_end: 2,
        x_step: 0,
        x_off: 0,
        vth: 1.0,
        leak: 0.95,
    };
    let dense_flops = 2.0 * (b * n * n) as f64;
    // Both ways of walking the spikes, so a reader sees which this adapter prefers.
    for walk in SpikeWalk::ALL {
        let (bits0, bits, u, acc, wt, x, m) = (
            bits0.clone(),
            bits.clone(),
            u.clone(),
            acc.clone(),
            wt.clone(),
            x.clone(),
            m.clone(),
        );
        v.push(Case {
            name: match walk {
                SpikeWalk::Bits => "fc_event_sim[bits]",
                SpikeWalk::List => "fc_event_sim[list]",
            },
            shape: format!("{b}x{n}, 1 step"),
            note: "fc400 step, event path (one fused dispatch), 14% spikes",
            flops: dense_flops,
            bytes: 4.0 * (n * n + 4 * b * n) as f64,
            record: Box::new(move |g| {
                let before = g.spike_walk();
                g.set_spike_walk(walk);
                g.copy(&bits0, 0, &bits, 0, bits0.len());
                ops::fc_event_sim(g, &sim, &u, &acc, &bits, &wt, &x, Some(&m));
                g.set_spike_walk(before);
            }),
        });
    }
    let spikes: Vec<f32> = (0..b * n)
        .map(|i| (pristine[i / n * n.div_ceil(32) + (i % n) / 32] >> (i % 32) & 1) as f32)
        .collect();
    let (sp, w, fb) = (
        gpu.upload(&[b * n], &spikes),
        tensor(gpu, n * n, 25),
        gpu.zeros(&[b * n]),
    );
    let (u, acc, x, m, s_out) = (
        gpu.zeros(&[b * n]),
        gpu.zeros(&[b * n]),
        tensor(gpu, b * n, 23),
        tensor(gpu, b * n, 24),
        gpu.zeros(&[b * n]),
    );
    let step = NeuronStep {
        vth: 1.0,
        leak: 0.95,
        has_feedback: true,
        x_offset: 0,
    };
    v.push(Case {
        name: "fc_dense_step",
        shape: format!("{b}x{n}, 1 step"),
        note: "fc400 step, dense path: gemm_nt + mask_mul + neuron_step",
        flops: dense_flops,
        bytes: 4.0 * (n * n + 4 * b * n) as f64,
        record: Box::new(move |g| {
            ops::gemm(g, Op::N, Op::T, b, n, n, 1.0, &sp, &w, 0.0, &fb);
            ops::mask_mul(g, &m, &fb);
            ops::neuron_step(g, &u, &acc, &s_out, &x, &fb, step);
        }),
    });

    // conv64: one fused step against conv2d + mask_mul + neuron_step.
    let s = conv64_feedback(b, c(64));
    let out = s.output_len();
    let rows = s.batch * s.cin * s.h;
    let in_bits = spike_bits(rows, s.w, density, 26);
    let spikes: Vec<f32> = (0..s.input_len())
        .map(|i| (in_bits[i / s.w] >> (i % s.w) & 1) as f32)
        .collect();
    let gin = gpu.upload_u32(&[in_bits.len()], &in_bits);
    let gout = gpu.zeros(&[ops::conv_spike_words(b, s.cout, s.oh(), s.ow())]);
    let (u, acc, x, m, wt) = (
        gpu.zeros(&[out]),
        gpu.zeros(&[out]),
        tensor(gpu, out, 27),
        tensor(gpu, out, 28),
        tensor(gpu, s.cin * s.kh * s.kw * ops::conv_event_ld(s.cout), 29),
    );
    let bytes = 4.0 * (s.weight_len() + 4 * out) as f64;
    // Both kernels of the event step, so a reader sees what sharing loads in a subgroup buys.
    let mut forms = vec![(
        "conv_event_sim[plain]",
        Sharing::Plain,
        ConvEventForm::Phases,
    )];
    if gpu.ctx.features.contains(wgpu::Features::SUBGROUP) {
        forms.push((
            "conv_event_sim[coop]",
            Sharing::Shared,
            ConvEventForm::Phases,
        ));
    }
    if ops::conv_event_lanes_supported(&s) {
        forms.push((
            "conv_event_sim[lanes]",
            Sharing::Plain,
            ConvEventForm::Lanes,
        ));
    }
    for (name, form, layout) in forms {
        let (u, acc, gin, gout, wt, x, m) = (
            u.clone(),
            acc.clone(),
            gin.clone(),
            gout.clone(),
            wt.clone(),
            x.clone(),
            m.clone(),
        );
        v.push(Case {
            name,
            shape: conv_tag(&s),
            note: "conv64 step, event path (one fused dispatch), 14% spikes",
            flops: s.flops(),
            bytes,
            record: Box::new(move |g| {
                // The recorder's setting picks the kernel when recorded; restore it for the
                // rows after this one.
                let before = (g.sharing(), g.conv_event_form());
                g.set_sharing(form);
                g.set_conv_event_form(layout);
                ops::conv_event_sim(g, &s, step, &u, &acc, &gin, &gout, &wt, &x, Some(&m));
                g.set_sharing(before.0);
                g.set_conv_event_form(before.1);
            }),
        });
    }
    let (sp, w, fb, u, acc, x, m, s_out) = (
        gpu.upload(&[s.input_len()], &spikes),
        tensor(gpu, s.weight_len(), 29),
        gpu.zeros(&[out]),
        gpu.zeros(&[out]),
        gpu.zeros(&[out]),
        tensor(gpu, out, 27),
        tensor(gpu, out, 28),
        gpu.zeros(&[out]),
    );
    v.push(Case {
        name: "conv_dense_step",
        shape: conv_tag(&s),
        note: "conv64 step, dense path: conv2d + mask_mul + neuron_step",
        flops: s.flops(),
        bytes,
        record: Box::new(move |g| {
            ops::conv2d(g, &s, &sp, &w, 0.0, &fb);
            ops::mask_mul(g, &m, &fb);
            ops::neuron_step(g, &u, &acc, &s_out, &x, &fb, step);
        }),
    });
    v
}

/// conv64's feedback convolution: `ch` → `ch` channels, 5×5, stride 1, "same" padding on 14×14.
fn conv64_feedback(batch: usize, ch: usize) -> ConvShape {
    ConvShape {
        batch,
        cin: ch,
        h: 14,
        w: 14,
        cout: ch,
        kh: 5,
        kw: 5,
        stride: 1,
        pad: 2,
    }
}

/// One row per kernel variant (`fsnn::variants`) at the dominant shapes: the fc400 feedback GEMM,
/// conv64's 5×5 layer and AlexNet-F's 384→384 and strided 256→384 layers, forward and both
/// gradients. Named `<family>[<variant>]`; the plain rows above run the adapter's chosen variant.
fn variant_cases(gpu: &Gpu, b: usize, c: &impl Fn(usize) -> usize) -> Vec<Case> {
    let name = |f: Family, v: Variant| -> &'static str {
        Box::leak(format!("{}[{}]", f.name(), v.name()).into_boxed_str())
    };
    let mut out = Vec::new();
    let (m, n, k) = (b, c(400), c(400));
    let (ga, gb, gc) = (
        tensor(gpu, m * k, 1),
        tensor(gpu, k * n, 2),
        gpu.zeros(&[m * n]),
    );
    for v in Family::Gemm.available(gpu) {
        let (ga, gb, gc) = (ga.clone(), gb.clone(), gc.clone());
        out.push(Case {
            name: name(Family::Gemm, v),
            shape: format!("NT {m}x{n}x{k}"),
            note: "fc400 forward / feedback: [128x400]·W[400x400]ᵀ",
            flops: 2.0 * (m * n * k) as f64,
            bytes: 4.0 * (m * k + k * n + m * n) as f64,
            record: Box::new(move |g| {
                ops::gemm_variant(g, v, Op::N, Op::T, m, n, k, 1.0, &ga, &gb, 0.0, &gc)
            }),
        });
    }
    let conv = |cin: usize, cout: usize, hw: usize, k: usize, stride: usize| ConvShape {
        batch: b,
        cin: c(cin),
        h: hw,
        w: hw,
        cout: c(cout),
        kh: k,
        kw: k,
        stride,
        pad: k / 2,
    };
    for (s, note) in [
        (conv(64, 64, 14, 5, 1), "conv64 5x5 64->64 layer"),
        (
            conv(384, 384, 8, 3, 1),
            "AlexNet-F layer 384->384 3x3 on 8x8",
        ),
        (conv(256, 384, 16, 3, 2), "AlexNet-F layer 256->384 3x3 s2"),
    ] {
        let (x, w, y) = (
            tensor(gpu, s.input_len(), 3),
            tensor(gpu, s.weight_len(), 4),
            tensor(gpu, s.output_len(), 5),
        );
        let dx = gpu.zeros(&[s.input_len()]);
        let dw = gpu.zeros(&[s.weight_len()]);
        let bytes = 4.0 * (s.input_len() + s.weight_len() + s.output_len()) as f64;
        for v in Family::Conv2d.available(gpu) {
            let (x, w, y) = (x.clone(), w.clone(), y.clone());
            out.push(Case {
                name: name(Family::Conv2d, v),
                shape: conv_tag(&s),
                note,
                flops: s.flops(),
                bytes,
                record: Box::new(move |g| ops::conv2d_variant(g, v, &s, &x, &w, 1.0, 0.0, &y)),
            });
        }
        for v in Family::Conv2dInputGrad.available(gpu) {
            let (dx, w, y) = (dx.clone(), w.clone(), y.clone());
            out.push(Case {
                name: name(Family::Conv2dInputGrad, v),
                shape: conv_tag(&s),
                note,
                flops: s.flops(),
                bytes,
                record: Box::new(move |g| {
                    ops::conv2d_input_grad_variant(g, v, &s, &y, &w, 1.0, 0.0, &dx)
                }),
            });
        }
        for v in Family::Conv2dWeightGrad.available(gpu) {
            let (dw, x, y) = (dw.clone(), x.clone(), y.clone());
            out.push(Case {
                name: name(Family::Conv2dWeightGrad, v),
                shape: conv_tag(&s),
                note,
                flops: s.flops(),
                bytes,
                record: Box::new(move |g| {
                    ops::conv2d_weight_grad_variant(g, v, &s, &y, &x, 1.0, 0.0, &dw)
                }),
            });
        }
    }
    out
}
