//! The native CPU backend (`fsnn-cpu`): its fast ops against the plain twins at odd sizes, and
//! whole training steps on it against the WGSL kernels on the GPU adapter (lavapipe here), for the
//! single-layer linear and conv models and a multi-layer model in both adjoint forms; plus
//! determinism (two runs, the same bits).

use fsnn::cpu as twins;
use fsnn::fsnn_core::shapes::{ConvShape, ConvTShape, FcEventSim, Op};
use fsnn::fsnn_core::Backend;
use fsnn::model::network::Network;
use fsnn::model::spec::{AdjointForm, NetworkSpec};
use fsnn::solver::SolverKind;
use fsnn_cpu::Cpu;
use fsnn_tests::{check, conv_spec, fc_spec, gpu, Rng};

#[test]
fn gemm_every_transpose_odd_sizes_matches_twin() {
    let cpu = Cpu::new(None);
    let mut rng = Rng::new(1);
    for (m, n, k) in [(37, 53, 29), (1, 7, 300), (129, 65, 1), (200, 400, 784)] {
        for ta in [Op::N, Op::T] {
            for tb in [Op::N, Op::T] {
                for (alpha, beta) in [(1.0, 0.0), (0.7, 0.5)] {
                    let a = rng.vec(m * k, -1.0, 1.0);
                    let b = rng.vec(k * n, -1.0, 1.0);
                    // beta = 0 must not read C: garbage (NaN) there stays out of the result.
                    let c0: Vec<f32> = if beta == 0.0 {
                        vec![f32::NAN; m * n]
                    } else {
                        rng.vec(m * n, -1.0, 1.0)
                    };
                    let mut want = c0.clone();
                    twins::gemm(ta, tb, m, n, k, alpha, &a, &b, beta, &mut want);
                    let (ta_, tb_, c) = (
                        cpu.upload(&[m * k], &a),
                        cpu.upload(&[k * n], &b),
                        cpu.upload(&[m * n], &c0),
                    );
                    cpu.gemm(ta, tb, m, n, k, alpha, &ta_, &tb_, beta, &c);
                    let got = cpu.read(&c);
                    check(
                        &format!("cpu gemm {m}x{n}x{k} {ta:?}{tb:?} a{alpha} b{beta}"),
                        &got,
                        &want,
                        2e-5,
                    );
                }
            }
        }
    }
}

#[test]
fn convolutions_and_gradients_odd_sizes_match_twins() {
    let cpu = Cpu::new(None);
    let mut rng = Rng::new(2);
    let shapes = [
        ConvShape {
            batch: 3,
            cin: 5,
            h: 11,
            w: 9,
            cout: 7,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: 1,
        },
        ConvShape {
            batch: 2,
            cin: 1,
            h: 28,
            w: 28,
            cout: 9,
            kh: 5,
            kw: 5,
            stride: 2,
            pad: 0,
        },
        ConvShape {
            batch: 1,
            cin: 3,
            h: 7,
            w: 13,
            cout: 4,
            kh: 5,
            kw: 3,
            stride: 2,
            pad: 2,
        },
        ConvShape {
            batch: 2,
            cin: 6,
            h: 6,
            w: 6,
            cout: 6,
            kh: 5,
            kw: 5,
            stride: 1,
            pad: 2,
        },
    ];
    for s in shapes {
        for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0)] {
            let x = rng.vec(s.input_len(), -1.0, 1.0);
            let w = rng.vec(s.weight_len(), -1.0, 1.0);
            let y0 = rng.vec(s.output_len(), -1.0, 1.0);
            let mut want = y0.clone();
            twins::conv2d(&s, &x, &w, beta, &mut want);
            let (xt, wt, yt) = (
                cpu.upload(&[x.len()], &x),
                cpu.upload(&[w.len()], &w),
                cpu.upload(&[y0.len()], &y0),
            );
            cpu.conv2d(&s, &xt, &wt, beta, &yt);
            check(
                &format!("cpu conv2d {s:?} b{beta}"),
                &cpu.read(&yt),
                &want,
                2e-5,
            );

            let dy = rng.vec(s.output_len(), -1.0, 1.0);
            let dx0 = rng.vec(s.input_len(), -1.0, 1.0);
            let mut want = dx0.clone();
            twins::conv2d_input_grad(&s, &dy, &w, alpha, beta, &mut want);
            let (dyt, dxt) = (cpu.upload(&[dy.len()], &dy), cpu.upload(&[dx0.len()], &dx0));
            cpu.conv2d_input_grad(&s, &dyt, &wt, alpha, beta, &dxt);
            check(
                &format!("cpu conv2d_input_grad {s:?}"),
                &cpu.read(&dxt),
                &want,
                2e-5,
            );

            let dw0 = rng.vec(s.weight_len(), -1.0, 1.0);
            let mut want = dw0.clone();
            twins::conv2d_weight_grad(&s, &dy, &x, alpha, beta, &mut want);
            let dwt = cpu.upload(&[dw0.len()], &dw0);
            cpu.conv2d_weight_grad(&s, &dyt, &xt, alpha, beta, &dwt);
            check(
                &format!("cpu conv2d_weight_grad {s:?}"),
                &cpu.read(&dwt),
                &want,
                2e-5,
            );
        }
    }
    // The transposed convolution of the CIFAR models' feedback, through the trait's defaults.
    let t = ConvTShape {
        batch: 2,
        cin: 5,
        h: 4,
        w: 4,
        cout: 3,
        k: 3,
        stride: 2,
        pad: 1,
        output_pad: 1,
    };
    let c = t.as_conv();
    let x = rng.vec(2 * 5 * 4 * 4, -1.0, 1.0);
    let w = rng.vec(5 * 3 * 3 * 3, -1.0, 1.0);
    let mut want = vec![0.0; c.input_len()];
    twins::conv_transpose2d(&t, &x, &w, 0.0, &mut want);
    let (xt, wt, yt) = (
        cpu.upload(&[x.len()], &x),
        cpu.upload(&[w.len()], &w),
        cpu.zeros(&[want.len()]),
    );
    cpu.conv_transpose2d(&t, &xt, &wt, 0.0, &yt);
    check("cpu conv_transpose2d", &cpu.read(&yt), &want, 2e-5);
}

#[test]
fn event_driven_linear_feedback_is_bit_identical_to_twin() {
    let cpu = Cpu::new(None);
    let mut rng = Rng::new(3);
    for (n, batch, steps, masked) in [(70, 5, 4, false), (33, 3, 6, true), (400, 2, 5, true)] {
        let words = fsnn::fsnn_core::events::spike_words(n);
        let ld = fsnn::fsnn_core::events::fc_event_ld(n);
        let s = FcEventSim {
            n,
            batch,
            t_begin: 0,
            t_end: steps,
            x_step: batch * n,
            x_off: 0,
            vth: 1.0,
            leak: 0.9,
        };
        let u0 = rng.vec(batch * n, -0.5, 0.5);
        let wt = rng.vec(n * ld, -0.3, 0.4);
        let x = rng.vec(steps * batch * n, -0.2, 0.9);
        let mask = masked.then(|| rng.vec(batch * n, 0.0, 1.25));
        let (mut u, mut acc, mut bits) =
            (u0.clone(), vec![0.0; batch * n], vec![0u32; batch * words]);
        twins::fc_event_sim(&s, &mut u, &mut acc, &mut bits, &wt, &x, mask.as_deref());
        let (ut, at, bt) = (
            cpu.upload(&[u0.len()], &u0),
            cpu.zeros(&[batch * n]),
            cpu.upload_u32(&[batch * words], &vec![0; batch * words]),
        );
        let (wtt, xt) = (cpu.upload(&[wt.len()], &wt), cpu.upload(&[x.len()], &x));
        let mt = mask.as_ref().map(|m| cpu.upload(&[m.len()], m));
        cpu.fc_event_sim(&s, &ut, &at, &bt, &wtt, &xt, mt.as_ref());
        assert_eq!(cpu.read(&ut), u, "membranes differ (n {n})");
        assert_eq!(cpu.read(&at), acc, "rates differ (n {n})");
        assert_eq!(cpu.read_u32(&bt), bits, "spikes differ (n {n})");
        let fired: u32 = bits.iter().map(|w| w.count_ones()).sum();
        println!("cpu fc_event_sim n {n}: bit-identical, {fired} spikes at the last step");
        assert!(fired > 0, "a test where nothing fires proves little");
    }
}

/// One training step (lr 0) on the CPU backend and on the GPU from the same initialisation:
/// rates, loss and every gradient agree within `tol`.
fn step_cpu_vs_gpu(name: &str, cfg: NetworkSpec, batch: usize, tol: f64) {
    let (cpu, g) = (Cpu::new(None), gpu());
    let mut rng = Rng::new(7);
    let x = rng.vec(batch * cfg.sample_len(), -1.0, 2.0);
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(cfg.classes as u32)).collect();
    let mut nc = Network::new(&cpu, cfg.clone(), 3).unwrap();
    let mut ng = Network::new(&g, cfg.clone(), 3).unwrap();
    let sc = nc
        .train_step(&cpu, &x, &labels, 0.0, SolverKind::Broyden, 60, 1)
        .unwrap();
    let sg = ng
        .train_step(&g, &x, &labels, 0.0, SolverKind::Broyden, 60, 1)
        .unwrap();
    check(
        &format!("{name}: rate, CPU vs GPU"),
        &nc.rate(&cpu),
        &ng.rate(&g),
        tol,
    );
    let (lc, lg) = (sc.loss_sum, sg.loss_sum);
    println!(
        "{name}: loss CPU {lc:.6} GPU {lg:.6}; iterations {} / {}",
        sc.solve.iterations, sg.solve.iterations
    );
    assert!(
        (lc - lg).abs() <= tol * lg.abs().max(1.0),
        "{name}: losses {lc} vs {lg}"
    );
    for (pc, pg) in nc.params.iter().zip(&ng.params) {
        let (gc, gg) = (cpu.read(&pc.grad), g.read(&pg.grad));
        let scale = gg.iter().fold(0f32, |m, v| m.max(v.abs()));
        if scale < 1e-5 {
            // A bias before a BN: its exact gradient is zero, what remains is rounding.
            let d = gc
                .iter()
                .zip(&gg)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            println!(
                "{name}: grad {} is rounding only (|g| < {scale:.1e}): max |difference| {d:.1e}",
                pc.name
            );
            assert!(d < 1e-5, "{name}: grad {} differs by {d}", pc.name);
        } else {
            check(&format!("{name}: grad {}", pc.name), &gc, &gg, tol);
        }
    }
    // Determinism: the same step again on a fresh CPU network gives the same bits.
    let mut again = Network::new(&cpu, cfg, 3).unwrap();
    again
        .train_step(&cpu, &x, &labels, 0.0, SolverKind::Broyden, 60, 1)
        .unwrap();
    for (a, b) in again.params.iter().zip(&nc.params) {
        assert_eq!(
            cpu.read(&a.grad),
            cpu.read(&b.grad),
            "{name}: {} not deterministic",
            a.name
        );
    }
    assert!(nc
        .params
        .iter()
        .any(|p| cpu.read(&p.grad).iter().any(|&v| v != 0.0)));
}

#[test]
fn linear_step_cpu_matches_gpu() {
    step_cpu_vs_gpu("fc 37→29", fc_spec(37, 29, 5, 6, 0.95, 0.0), 9, 2e-3);
}

#[test]
fn conv_step_cpu_matches_gpu() {
    step_cpu_vs_gpu(
        "conv 2×9×9→5",
        conv_spec((2, 9, 9), 5, (3, 2, 1), 3, 4, 8, 1.0, 0.0),
        4,
        2e-3,
    );
}

#[test]
fn multilayer_step_cpu_matches_gpu_in_both_adjoint_forms() {
    for form in [AdjointForm::Authors, AdjointForm::Consistent] {
        let mut cfg = NetworkSpec::from_toml(
            r#"
name = "multi-cpu"
classes = 4
[input]
shape = [2, 8, 8]
[neuron]
time_steps = 10
vth = 2.0
leak = 0.95
[[layers]]
ops = [{ kind = "conv", out = 3, k = 3, pad = 1 }, { kind = "batchnorm" }]
[[layers]]
ops = [{ kind = "conv", out = 4, k = 3, stride = 2, pad = 1 }, { kind = "batchnorm" }]
[feedback]
kind = "conv_transpose"
k = 3
stride = 2
pad = 1
output_pad = 1
"#,
        )
        .unwrap();
        cfg.adjoint = form;
        step_cpu_vs_gpu(&format!("multi-layer {form:?}"), cfg, 5, 5e-3);
    }
}

#[test]
fn event_driven_conv_feedback_is_bit_identical_to_twin() {
    use fsnn::fsnn_core::events::{conv_event_ld, conv_spike_words};
    use fsnn::fsnn_core::shapes::NeuronStep;
    let cpu = Cpu::new(None);
    let mut rng = Rng::new(4);
    for (batch, c, h, w, k, pad, masked) in [
        (3, 5, 9, 11, 3, 1, false),
        (2, 4, 12, 12, 5, 2, true),
        (1, 3, 7, 40, 5, 0, true),
    ] {
        let s = ConvShape {
            batch,
            cin: c,
            h,
            w,
            cout: c,
            kh: k,
            kw: k,
            stride: 1,
            pad,
        };
        let n = s.output_len();
        let ld = conv_event_ld(c);
        let step = NeuronStep {
            vth: 1.0,
            leak: 0.95,
            x_offset: 0,
            has_feedback: true,
        };
        let in_words = conv_spike_words(batch, c, h, w);
        let out_words = conv_spike_words(batch, c, s.oh(), s.ow());
        let in_bits: Vec<u32> = (0..in_words)
            .map(|_| rng.below(u32::MAX) & rng.below(u32::MAX))
            .collect();
        let u0 = rng.vec(n, -0.5, 0.5);
        let wt = rng.vec(c * k * k * ld, -0.3, 0.4);
        let x = rng.vec(n, -0.2, 0.9);
        let mask = masked.then(|| rng.vec(n, 0.0, 1.25));
        let (mut u, mut acc, mut out) = (u0.clone(), vec![0.0; n], vec![0u32; out_words]);
        twins::conv_event_sim(
            &s,
            step,
            &mut u,
            &mut acc,
            &in_bits,
            &mut out,
            &wt,
            &x,
            mask.as_deref(),
        );
        let (ut, at) = (cpu.upload(&[n], &u0), cpu.zeros(&[n]));
        let (ib, ob) = (
            cpu.upload_u32(&[in_words], &in_bits),
            cpu.zeros(&[out_words]),
        );
        let (wtt, xt) = (cpu.upload(&[wt.len()], &wt), cpu.upload(&[n], &x));
        let mt = mask.as_ref().map(|m| cpu.upload(&[m.len()], m));
        cpu.conv_event_sim(&s, step, &ut, &at, &ib, &ob, &wtt, &xt, mt.as_ref());
        assert_eq!(cpu.read(&ut), u, "membranes differ ({s:?})");
        assert_eq!(cpu.read(&at), acc, "rates differ ({s:?})");
        assert_eq!(cpu.read_u32(&ob), out, "spikes differ ({s:?})");
        let fired: u32 = out.iter().map(|w| w.count_ones()).sum();
        println!("cpu conv_event_sim {s:?}: bit-identical, {fired} spikes");
        assert!(fired > 0);
    }
}
