//! The runtime around the kernels: tensors larger than one storage binding, the buffer pool, and
//! per-kernel profiling.

use fsnn::cpu;
use fsnn::gpu::Gpu;
use fsnn::ops::{self, Op};
use fsnn::variants::{Family, Problem};
use fsnn_tests::{check, gpu, private_gpu, Rng};

/// The GEMM kernel this device dispatches for one problem (its variant's file): after `fsnn tune`
/// a shape may have a variant of its own, other than the family's.
fn gemm_kernel(g: &Gpu, ta: Op, tb: Op, m: usize, n: usize, k: usize) -> &'static str {
    Family::Gemm.kernel(g.variant_at(Family::Gemm, &Problem::Gemm { ta, tb, m, n, k }))
}

/// The binding cap the chunking tests run under: small, so modest tensors need several chunks.
const CAP: u64 = 1 << 16;

fn capped_gpu() -> Gpu {
    let g = private_gpu();
    g.ctx.set_max_binding_bytes(CAP);
    assert!(
        g.ctx.max_binding_bytes() <= CAP,
        "binding cap not lowered: {}",
        g.ctx.max_binding_bytes()
    );
    g
}

/// Runs `f` with profiling on and returns how many dispatches of `kernel` it recorded, so each test
/// can prove it went through more than one chunk.
fn dispatches_of(g: &Gpu, kernel: &str, f: impl FnOnce()) -> usize {
    g.set_profiling(true);
    f();
    let p = g.take_profile();
    g.set_profiling(false);
    p.spans.iter().filter(|s| s.name == kernel).count()
}

#[test]
fn chunked_gemm_over_the_binding_cap() {
    let g = capped_gpu();
    let mut rng = Rng::new(21);
    // A and C are several bindings long; B fits in one (only rows of op(A) and C are split).
    let (m, n, k) = (701usize, 97usize, 103usize);
    assert!((m * k * 4) as u64 > 4 * CAP && (k * n * 4) as u64 <= CAP);
    for tb in [Op::N, Op::T] {
        let a = rng.vec(m * k, -1.0, 1.0);
        let b = rng.vec(k * n, -1.0, 1.0);
        let c0 = rng.vec(m * n, -1.0, 1.0);
        let (ga, gb, gc) = (
            g.upload(&[m * k], &a),
            g.upload(&[k * n], &b),
            g.upload(&[m * n], &c0),
        );
        let chunks = dispatches_of(&g, gemm_kernel(&g, Op::N, tb, m, n, k), || {
            ops::gemm(&g, Op::N, tb, m, n, k, 0.5, &ga, &gb, 1.0, &gc)
        });
        assert!(chunks >= 4, "gemm ran in {chunks} dispatch(es)");
        let mut c = c0;
        cpu::gemm(Op::N, tb, m, n, k, 0.5, &a, &b, 1.0, &mut c);
        check(
            &format!("chunked gemm N{tb:?} {m}x{n}x{k} in {chunks} chunks"),
            &g.read(&gc),
            &c,
            1e-5,
        );
    }
}

#[test]
fn chunked_elementwise_over_the_binding_cap() {
    let g = capped_gpu();
    let mut rng = Rng::new(22);
    let n = 3 * (CAP as usize / 4) + 1001;
    let x = rng.vec(n, -1.0, 1.0);
    let y0 = rng.vec(n, -1.0, 1.0);
    let (gx, gy) = (g.upload(&[n], &x), g.upload(&[n], &y0));

    let chunks = dispatches_of(&g, "axpby", || ops::axpby(&g, 0.75, &gx, -0.5, &gy));
    assert!(chunks >= 3, "axpby ran in {chunks} dispatch(es)");
    let mut y = y0.clone();
    cpu::axpby(0.75, &x, -0.5, &mut y);
    check(
        &format!("chunked axpby n={n} in {chunks} chunks"),
        &g.read(&gy),
        &y,
        1e-6,
    );

    // Unaligned windows at different offsets of each tensor.
    let (xo, yo, len) = (3usize, 17usize, n - 40);
    ops::axpby_range(&g, len, 2.0, &gx, xo, 1.0, &gy, yo);
    for (yv, xv) in y[yo..yo + len].iter_mut().zip(&x[xo..xo + len]) {
        *yv += 2.0 * xv;
    }
    check(
        "chunked axpby_range at offsets 3 / 17",
        &g.read(&gy),
        &y,
        1e-6,
    );

    let chunks = dispatches_of(&g, "scale", || ops::scale(&g, -3.0, &gx));
    assert!(chunks >= 3, "scale ran in {chunks} dispatch(es)");
    let mut xs = x.clone();
    cpu::scale(-3.0, &mut xs);
    check(
        &format!("chunked scale n={n} in {chunks} chunks"),
        &g.read(&gx),
        &xs,
        1e-6,
    );
}

#[test]
fn chunked_row_dot_and_sum_over_the_binding_cap() {
    let g = capped_gpu();
    let mut rng = Rng::new(23);
    let (rows, dim) = (37usize, 1999usize);
    let x = rng.vec(rows * dim, -1.0, 1.0);
    let y = rng.vec(rows * dim, -1.0, 1.0);
    let o0 = rng.vec(rows, -1.0, 1.0);
    let (gx, gy, go) = (
        g.upload(&[x.len()], &x),
        g.upload(&[y.len()], &y),
        g.upload(&[rows], &o0),
    );
    let chunks = dispatches_of(&g, "row_dot", || {
        ops::row_dot(&g, rows, dim, &gx, &gy, 1.5, 1.0, &go)
    });
    assert!(chunks >= 4, "row_dot ran in {chunks} dispatch(es)");
    let mut o = o0;
    cpu::row_dot(rows, dim, &x, &y, 1.5, 1.0, &mut o);
    check(
        &format!("chunked row_dot {rows}x{dim} in {chunks} chunks"),
        &g.read(&go),
        &o,
        1e-5,
    );

    let n = x.len();
    let part = g.zeros(&[ops::sum_partials_len(n)]);
    for square in [false, true] {
        let out = g.zeros(&[1]);
        // One dispatch per chunk plus the final one over the partials.
        let chunks = dispatches_of(&g, "reduce_sum", || ops::sum(&g, &gx, square, &part, &out));
        assert!(chunks >= 4, "sum ran in {chunks} dispatch(es)");
        let want = cpu::sum(&x, square) as f64;
        let scale = cpu::sum(&x.iter().map(|v| v.abs()).collect::<Vec<_>>(), square) as f64;
        let got = g.read(&out)[0] as f64;
        let e = ((got - want) / scale).abs();
        println!(
            "chunked sum n={n} square={square} in {chunks} dispatches: relative error {e:.3e}"
        );
        assert!(e < 1e-5, "chunked sum: {got} vs {want}");
    }
}

#[test]
#[should_panic(expected = "exceeds the storage binding limit")]
fn binding_an_over_cap_tensor_panics_instead_of_truncating() {
    let g = capped_gpu();
    let t = g.zeros(&[CAP as usize / 4 + 1]);
    let _ = g.bind(&t);
}

#[test]
fn pool_allocates_nothing_after_the_first_step() {
    let g = private_gpu();
    let mut rng = Rng::new(24);
    let data = rng.vec(1000, -1.0, 1.0);
    let step = |g: &Gpu| {
        let a = g.upload(&[1000], &data);
        let b = g.zeros(&[1000]);
        let c = g.uninit(&[37, 3]);
        let d = g.zeros(&[1]);
        ops::axpby(g, 1.0, &a, 0.0, &b);
        ops::scale(g, 2.0, &c);
        ops::sum(g, &b, false, &c, &d);
        let total = g.read(&d)[0];
        for t in [a, b, c, d] {
            g.recycle(t);
        }
        total
    };
    let before = g.ctx.memory.allocations();
    let first = step(&g);
    let warm = g.ctx.memory.allocations();
    assert!(
        warm > before,
        "the first step should allocate (the counter is not counting)"
    );
    let (live, _) = g.memory_bytes();
    for i in 0..5 {
        assert_eq!(step(&g), first, "step {i} computed something else");
        assert_eq!(
            g.ctx.memory.allocations(),
            warm,
            "step {} allocated new buffers",
            i + 2
        );
    }
    assert_eq!(g.memory_bytes().0, live, "live bytes grew");
    println!(
        "{} buffer(s), {live} bytes on the first step; none after",
        warm - before
    );
}

#[test]
fn profiling_names_every_dispatch_and_writes_a_chrome_trace() {
    let g = gpu();
    let mut rng = Rng::new(25);
    let x = g.upload(&[4099], &rng.vec(4099, -1.0, 1.0));
    let y = g.zeros(&[4099]);
    let (a, b, c) = (
        g.upload(&[33 * 17], &rng.vec(33 * 17, -1.0, 1.0)),
        g.upload(&[17 * 9], &rng.vec(17 * 9, -1.0, 1.0)),
        g.zeros(&[33 * 9]),
    );
    g.set_profiling(true);
    ops::scale(&g, 2.0, &x);
    ops::axpby(&g, 1.0, &x, 0.5, &y);
    g.flush();
    ops::gemm(&g, Op::N, Op::N, 33, 9, 17, 1.0, &a, &b, 0.0, &c);
    let p = g.take_profile();
    g.set_profiling(false);
    print!("{}", p.table());
    assert_eq!(p.gpu_timestamps, g.ctx.has_pass_timestamps());
    let names: Vec<&str> = p.spans.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["scale", "axpby", gemm_kernel(&g, Op::N, Op::N, 33, 9, 17)]
    );
    assert_eq!(p.submits, 2);
    for s in &p.spans {
        assert!(s.dur_ns > 0, "{} has no duration", s.name);
    }
    for w in p.spans.windows(2) {
        assert!(w[1].start_ns >= w[0].start_ns, "spans out of order");
    }

    let trace = p.chrome_trace();
    let text = serde_json::to_string(&trace).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let events = parsed["traceEvents"].as_array().expect("traceEvents array");
    assert_eq!(events.len(), 3);
    for (e, want) in events.iter().zip(names) {
        assert_eq!(e["name"].as_str(), Some(want));
        assert_eq!(e["ph"].as_str(), Some("X"));
        assert!(e["ts"].as_f64().is_some_and(|t| t >= 0.0), "{e}");
        assert!(e["dur"].as_f64().is_some_and(|d| d > 0.0), "{e}");
    }

    // Turning profiling off records nothing more.
    ops::scale(&g, 1.0, &x);
    assert!(g.take_profile().spans.is_empty());
}

/// Broyden's low-rank history is the largest tensor of the multi-layer models (AlexNet-F at batch
/// 128: 27 × 128 × 16384 floats, over the 128 MiB binding cap of many devices): the solver's
/// per-sample kernels split it by samples.
#[test]
fn chunked_solver_history_over_the_binding_cap() {
    use ops::{SolverIter, SolverLayout, SolverMode};
    let g = capped_gpu();
    let mut rng = Rng::new(31);
    let l = SolverLayout {
        mode: SolverMode::Broyden,
        batch: 9,
        slots: 5,
        dim: 1000,
    };
    assert!((l.hist_len() * 4) as u64 > 4 * CAP);
    let i = SolverIter::new(&l, 7);
    let n = l.batch * l.dim;
    let mut hist = rng.vec(l.hist_len(), -1.0, 1.0);
    let vecs: Vec<Vec<f32>> = (0..6).map(|_| rng.vec(n, -1.0, 1.0)).collect();
    let mut scal = rng.vec(l.scal_len(), -1.0, 1.0);
    let up = |v: &[f32]| g.upload(&[v.len()], v);
    let (gh, gs) = (up(&hist), up(&scal));
    let t: Vec<_> = vecs.iter().map(|v| up(v)).collect();
    let v = ops::SolverVectors {
        jx: &t[0],
        x: &t[1],
        gl: &t[2],
        g: &t[3],
        step: &t[4],
        best: &t[5],
    };
    let dots = if g.sharing() != fsnn::gpu::Sharing::Plain {
        "solver_dots_coop"
    } else {
        "solver_dots"
    };
    let nd = dispatches_of(&g, dots, || ops::solver_dots(&g, &l, i, &gh, &v, &gs));
    let [jx, x, gl, gold, step, best] = vecs.clone().try_into().unwrap();
    cpu::solver_dots(&l, i, &hist, &jx, &x, &gl, &gold, &step, &mut scal);
    check(
        &format!("solver_dots in {nd} chunks"),
        &g.read(&gs),
        &scal,
        1e-5,
    );
    assert!(nd >= 3, "solver_dots ran in {nd} dispatch(es)");
    cpu::solver_track(&l, i, 30, 0.0, 1e-6, &mut scal);
    let gs = up(&scal);
    let combine = if g.sharing() != fsnn::gpu::Sharing::Plain {
        "solver_combine_coop"
    } else {
        "solver_combine"
    };
    let nc = dispatches_of(&g, combine, || {
        ops::solver_combine(&g, &l, i, 0.5, &gh, &v, &gs)
    });
    let (mut x, mut gold, mut step, mut best) = (x, gold, step, best);
    cpu::solver_combine(
        &l, i, 0.5, &mut hist, &jx, &mut x, &gl, &mut gold, &mut step, &mut best, &scal,
    );
    for (name, gt, want) in [
        ("hist", &gh, &hist),
        ("x", &t[1], &x),
        ("step", &t[4], &step),
    ] {
        check(
            &format!("solver_combine {name} in {nc} chunks"),
            &g.read(gt),
            want,
            1e-4,
        );
    }
    assert!(nc >= 3);
}

/// The up-front memory check counts the solver's history (the largest buffer of a step) against
/// the device's largest buffer: the batch it names as the most that fits passes, one more is
/// refused with that number, and a tensor over the limit is an error, not a wgpu panic.
#[test]
fn memory_check_counts_the_solver_history_at_the_edge() {
    use fsnn::checks::fits_gpu;
    use fsnn::model::spec::preset;
    use fsnn::solver::{solver_layout, SolverKind};
    let g = gpu();
    let max_buffer = g.ctx.limits.max_buffer_size;
    let binding = g.ctx.max_binding_bytes();
    let spec = preset("fc400").unwrap();
    let broyden = Some((SolverKind::Broyden, 30));
    let per_sample = solver_layout(SolverKind::Broyden, 30, 1, 400).hist_len() as u64 * 4;
    assert_eq!(per_sample, 54 * 400 * 4);
    let edge = (max_buffer / per_sample) as usize;
    // The batch's input (784 values a sample) must fit one binding for the history to be the
    // limit that bites; it does on every adapter whose binding limit is a sixteenth of its
    // largest buffer or more (lavapipe: 128 MiB of 2 GiB).
    if (edge as u64 + 1) * 784 * 4 > binding {
        println!("not run: the binding limit bites before the largest buffer on this adapter");
        return;
    }
    fits_gpu(&g, &spec, edge, broyden, "--batch-size").unwrap();
    let e = fits_gpu(&g, &spec, edge + 1, broyden, "--batch-size")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("--batch-size {}", edge + 1))
            && e.contains("solver's history")
            && e.contains(&format!("the most that fits is {edge}")),
        "{e}"
    );
    // The fixed-point solver keeps no history: the same batch passes.
    fits_gpu(
        &g,
        &spec,
        edge + 1,
        Some((SolverKind::FixedPoint, 30)),
        "--batch-size",
    )
    .unwrap();
    // Counts that overflow usize arithmetic are refused, not wrapped.
    assert!(fits_gpu(&g, &spec, usize::MAX, broyden, "--batch-size").is_err());

    let words = (max_buffer / 4 + 1) as usize;
    let e = format!(
        "{:#}",
        g.try_uninit(&[words])
            .err()
            .expect("allocated past the limit")
    );
    assert!(e.contains("exceeds the device's largest buffer"), "{e}");
    let e = format!(
        "{:#}",
        g.try_uninit(&[usize::MAX, 2])
            .err()
            .expect("overflow allocated")
    );
    assert!(e.contains("overflows"), "{e}");
}

// ------------------------------------------------------- grids past 65,535 workgroups

/// The device's workgroups per grid dimension (65,535 on every adapter wgpu knows).
fn max_groups(g: &Gpu) -> usize {
    g.ctx.limits.max_compute_workgroups_per_dimension as usize
}

/// GEMMs whose rows (op(A) = A and Aᵀ) or columns need more workgroups than one grid dimension
/// holds run as several dispatches and match the twin.
#[test]
fn gemm_past_the_grid_limit_matches_twin() {
    let g = gpu();
    let mut rng = Rng::new(41);
    let tall = 64 * max_groups(&g) + 37;
    // (m, n, k): rows past the limit, then columns past it.
    for (m, n, k) in [(tall, 3usize, 2usize), (1, tall, 1)] {
        for (ta, v) in [Op::N, Op::T]
            .into_iter()
            .flat_map(|ta| Family::Gemm.available(&g).into_iter().map(move |v| (ta, v)))
        {
            let a = rng.vec(m * k, -1.0, 1.0);
            let b = rng.vec(k * n, -1.0, 1.0);
            let c0 = rng.vec(m * n, -1.0, 1.0);
            let (ga, gb, gc) = (
                g.upload(&[m * k], &a),
                g.upload(&[k * n], &b),
                g.upload(&[m * n], &c0),
            );
            let runs = dispatches_of(&g, Family::Gemm.kernel(v), || {
                ops::gemm_variant(&g, v, ta, Op::N, m, n, k, 0.5, &ga, &gb, 1.0, &gc)
            });
            assert!(runs >= 2, "gemm {m}×{n}×{k} ran in {runs} dispatch(es)");
            let mut c = c0;
            cpu::gemm(ta, Op::N, m, n, k, 0.5, &a, &b, 1.0, &mut c);
            check(
                &format!("gemm {v:?} {ta:?} {m}×{n}×{k} past the grid limit"),
                &g.read(&gc),
                &c,
                1e-5,
            );
        }
    }
}

/// Convolutions (forward and input gradient) over more output pixels than one grid dimension
/// holds, at a per-sample size (7×7) whose sample ranges need a multiple of samples to stay
/// aligned.
#[test]
fn conv_past_the_grid_limit_matches_twin() {
    use fsnn::fsnn_core::shapes::ConvShape;
    let g = gpu();
    let mut rng = Rng::new(42);
    let batch = 64 * max_groups(&g) / 49 + 3;
    let s = ConvShape {
        batch,
        cin: 1,
        h: 7,
        w: 7,
        cout: 3,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: 1,
    };
    let x = rng.vec(s.input_len(), -1.0, 1.0);
    let w = rng.vec(s.weight_len(), -1.0, 1.0);
    let gx = g.upload(&[x.len()], &x);
    let gw = g.upload(&[w.len()], &w);
    for v in Family::Conv2d.available(&g) {
        let y0 = rng.vec(s.output_len(), -1.0, 1.0);
        let gy = g.upload(&[y0.len()], &y0);
        let runs = dispatches_of(&g, Family::Conv2d.kernel(v), || {
            ops::conv2d_variant(&g, v, &s, &gx, &gw, 1.0, 0.5, &gy)
        });
        assert!(
            runs >= 2,
            "conv2d {v:?} batch {batch} ran in {runs} dispatch(es)"
        );
        let mut y = y0;
        cpu::conv2d(&s, &x, &w, 0.5, &mut y);
        let name = format!("conv2d {v:?} batch {batch} past the grid limit");
        check(&name, &g.read(&gy), &y, 1e-5);
    }
    let dy = rng.vec(s.output_len(), -1.0, 1.0);
    let gdy = g.upload(&[dy.len()], &dy);
    for v in Family::Conv2dInputGrad.available(&g) {
        let dx0 = rng.vec(s.input_len(), -1.0, 1.0);
        let gdx = g.upload(&[dx0.len()], &dx0);
        // The flipped form runs the forward kernel on flipped weights.
        let kernel = match s.input_grad_as_forward() {
            Some(fs) if v == fsnn::variants::Variant::Flipped => {
                Family::Conv2d.kernel(g.variant_at(Family::Conv2d, &Problem::Conv(fs)))
            }
            _ => Family::Conv2dInputGrad.kernel(v),
        };
        let runs = dispatches_of(&g, kernel, || {
            ops::conv2d_input_grad_variant(&g, v, &s, &gdy, &gw, 1.0, 0.5, &gdx)
        });
        assert!(
            runs >= 2,
            "conv2d_input_grad {v:?} batch {batch} ran in {runs} dispatch(es)"
        );
        let mut dx = dx0;
        cpu::conv2d_input_grad(&s, &dy, &w, 1.0, 0.5, &mut dx);
        let name = format!("conv2d_input_grad {v:?} batch {batch} past the grid limit");
        check(&name, &g.read(&gdx), &dx, 1e-5);
    }
}

/// The fused event-driven steps take one workgroup (fc) or one z-slice (conv) per sample: a
/// batch past the grid limit runs in sample ranges and matches the twins, spikes exactly.
#[test]
fn event_sims_past_the_grid_limit_match_twins() {
    use fsnn::fsnn_core::shapes::{ConvShape, FcEventSim, NeuronStep};
    use fsnn::gpu::{ConvEventForm, SpikeWalk};
    let g = gpu();
    let mut rng = Rng::new(43);
    let batch = max_groups(&g) + 5;

    // fc: 37 neurons (an odd per-sample size), two steps with feedback, masked.
    let n = 37;
    let ld = ops::fc_event_ld(n);
    let mut wt = vec![0.0; n * ld];
    let w = rng.vec(n * n, -0.6, 0.6);
    cpu::transpose_padded(n, n, ld, &w, &mut wt);
    let bn = batch * n;
    let x = rng.vec(bn, -0.5, 2.5);
    let mask: Vec<f32> = rng
        .vec(bn, 0.0, 1.0)
        .iter()
        .map(|&v| if v < 0.2 { 0.0 } else { 1.25 })
        .collect();
    let words = ops::spike_words(n);
    let sim = FcEventSim {
        n,
        batch,
        t_begin: 0,
        t_end: 3,
        x_step: 0,
        x_off: 0,
        vth: 2.0,
        leak: 0.95,
    };
    let (mut u, mut a, mut bits) = (vec![0.0; bn], vec![0.0; bn], vec![0u32; batch * words]);
    cpu::fc_event_sim(&sim, &mut u, &mut a, &mut bits, &wt, &x, Some(&mask));
    let (gwt, gx, gm) = (
        g.upload(&[wt.len()], &wt),
        g.upload(&[bn], &x),
        g.upload(&[bn], &mask),
    );
    for walk in SpikeWalk::ALL {
        g.set_spike_walk(walk);
        let (gu, ga, gb) = (g.zeros(&[bn]), g.zeros(&[bn]), g.zeros(&[batch * words]));
        ops::fc_event_sim(&g, &sim, &gu, &ga, &gb, &gwt, &gx, Some(&gm));
        let name = format!("fc_event_sim batch {batch} walk={}", walk.name());
        check(&format!("{name} u"), &g.read(&gu), &u, 1e-5);
        check(&format!("{name} acc"), &g.read(&ga), &a, 1e-5);
        assert_eq!(g.read_u32(&gb), bits, "{name}: spikes differ");
    }
    g.set_spike_walk(SpikeWalk::Bits);

    // conv: 2 → 3 channels on 5×5, one step with feedback from random input spikes.
    let s = ConvShape {
        batch,
        cin: 2,
        h: 5,
        w: 5,
        cout: 3,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: 1,
    };
    let out = s.output_len();
    let ld = ops::conv_event_ld(s.cout);
    let wt = rng.vec(s.cin * s.kh * s.kw * ld, -0.6, 0.6);
    let in_spikes: Vec<f32> = rng
        .vec(s.input_len(), 0.0, 1.0)
        .iter()
        .map(|&v| (v < 0.3) as u8 as f32)
        .collect();
    let in_bits = cpu::pack_rows(&in_spikes, s.w);
    let x = rng.vec(out, -0.5, 2.5);
    let u0 = rng.vec(out, 0.0, 1.5);
    let step = NeuronStep {
        vth: 2.0,
        leak: 0.9,
        has_feedback: true,
        x_offset: 0,
    };
    let out_words = ops::conv_spike_words(batch, s.cout, s.oh(), s.ow());
    let (mut u, mut a, mut ob) = (u0.clone(), vec![0.0; out], vec![0u32; out_words]);
    cpu::conv_event_sim(&s, step, &mut u, &mut a, &in_bits, &mut ob, &wt, &x, None);
    let (gwt, gx, gib) = (
        g.upload(&[wt.len()], &wt),
        g.upload(&[out], &x),
        g.upload_u32(&[in_bits.len()], &in_bits),
    );
    for form in ConvEventForm::ALL {
        g.set_conv_event_form(form);
        let (gu, ga, gob) = (
            g.upload(&[out], &u0),
            g.zeros(&[out]),
            g.zeros(&[out_words]),
        );
        ops::conv_event_sim(&g, &s, step, &gu, &ga, &gib, &gob, &gwt, &gx, None);
        let name = format!("conv_event_sim batch {batch} form={form:?}");
        check(&format!("{name} u"), &g.read(&gu), &u, 1e-5);
        check(&format!("{name} acc"), &g.read(&ga), &a, 1e-5);
        assert_eq!(g.read_u32(&gob), ob, "{name}: spikes differ");
    }
}
