//! Every kernel against its CPU twin on random data, with sizes that are not multiples of any
//! tile or workgroup size. Each test prints its worst relative error.

use fsnn::cpu;
use fsnn::gpu::{ConvEventForm, Sharing, SpikeWalk};
use fsnn::ops::{self, BnShape, ConvShape, ConvTShape, NeuronStep, Op};
use fsnn::variants::{Family, Variant};
use fsnn_tests::{check, gpu, Rng};

#[test]
fn neuron_step_if_and_lif_constant_and_per_step_input() {
    let g = gpu();
    let mut rng = Rng::new(1);
    for &(n, leak, steps, per_step) in &[
        (1usize, 1.0f32, 3usize, false),
        (1237, 1.0, 6, false),
        (1237, 0.95, 6, true),
        (4099, 0.9, 4, true),
    ] {
        let xs = rng.vec(n * if per_step { steps } else { 1 }, -0.5, 2.5);
        let fbs: Vec<Vec<f32>> = (0..steps).map(|_| rng.vec(n, -1.0, 1.0)).collect();
        let (mut u, mut a, mut s) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let gx = g.upload(&[xs.len()], &xs);
        let (gu, ga, gs) = (g.zeros(&[n]), g.zeros(&[n]), g.zeros(&[n]));
        for (t, fb) in fbs.iter().enumerate() {
            let step = NeuronStep {
                vth: 2.0,
                leak,
                has_feedback: t > 0,
                x_offset: if per_step { t * n } else { 0 },
            };
            let gfb = g.upload(&[n], fb);
            ops::neuron_step(&g, &gu, &ga, &gs, &gx, &gfb, step);
            cpu::neuron_step(&mut u, &mut a, &mut s, &xs, fb, step);
        }
        let name = format!("neuron_step n={n} leak={leak} per_step={per_step}");
        check(&format!("{name} u"), &g.read(&gu), &u, 1e-6);
        check(&format!("{name} rate acc"), &g.read(&ga), &a, 1e-6);
        check(&format!("{name} spikes"), &g.read(&gs), &s, 0.0);
    }
}

#[test]
fn gemm_all_transposes_odd_sizes_and_accumulate() {
    let g = gpu();
    let mut rng = Rng::new(2);
    for &(m, n, k) in &[
        (1usize, 1usize, 1usize),
        (37, 53, 29),
        (130, 67, 200),
        (9, 400, 17),
    ] {
        for (ta, tb) in [(Op::N, Op::N), (Op::N, Op::T), (Op::T, Op::N)] {
            for &(alpha, beta) in &[(1.0f32, 0.0f32), (0.5, 1.0)] {
                let a = rng.vec(m * k, -1.0, 1.0);
                let b = rng.vec(k * n, -1.0, 1.0);
                let c0 = rng.vec(m * n, -1.0, 1.0);
                let (ga, gb, gc) = (
                    g.upload(&[m * k], &a),
                    g.upload(&[k * n], &b),
                    g.upload(&[m * n], &c0),
                );
                ops::gemm(&g, ta, tb, m, n, k, alpha, &ga, &gb, beta, &gc);
                let mut c = c0.clone();
                cpu::gemm(ta, tb, m, n, k, alpha, &a, &b, beta, &mut c);
                check(
                    &format!("gemm {ta:?}{tb:?} {m}x{n}x{k} a={alpha} b={beta}"),
                    &g.read(&gc),
                    &c,
                    1e-5,
                );
            }
        }
    }
}

fn conv_shapes() -> Vec<ConvShape> {
    vec![
        ConvShape {
            batch: 3,
            cin: 5,
            h: 11,
            w: 9,
            cout: 7,
            kh: 5,
            kw: 5,
            stride: 2,
            pad: 2,
        },
        ConvShape {
            batch: 2,
            cin: 3,
            h: 7,
            w: 7,
            cout: 13,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: 1,
        },
        ConvShape {
            batch: 1,
            cin: 9,
            h: 6,
            w: 5,
            cout: 10,
            kh: 5,
            kw: 5,
            stride: 1,
            pad: 2,
        },
        ConvShape {
            batch: 2,
            cin: 4,
            h: 9,
            w: 10,
            cout: 3,
            kh: 3,
            kw: 3,
            stride: 2,
            pad: 0,
        },
    ]
}

#[test]
fn conv2d_forward_input_grad_weight_grad() {
    let g = gpu();
    let mut rng = Rng::new(3);
    for s in conv_shapes() {
        let x = rng.vec(s.input_len(), -1.0, 1.0);
        let w = rng.vec(s.weight_len(), -1.0, 1.0);
        let dy = rng.vec(s.output_len(), -1.0, 1.0);
        let y0 = rng.vec(s.output_len(), -1.0, 1.0);
        let (gx, gw, gdy) = (
            g.upload(&[x.len()], &x),
            g.upload(&[w.len()], &w),
            g.upload(&[dy.len()], &dy),
        );
        let tag = format!(
            "{}x{}x{}x{} k{} s{} p{} -> {}",
            s.batch, s.cin, s.h, s.w, s.kh, s.stride, s.pad, s.cout
        );
        for beta in [0.0f32, 1.0] {
            let gy = g.upload(&[y0.len()], &y0);
            ops::conv2d(&g, &s, &gx, &gw, beta, &gy);
            let mut y = y0.clone();
            cpu::conv2d(&s, &x, &w, beta, &mut y);
            check(
                &format!("conv2d forward {tag} beta={beta}"),
                &g.read(&gy),
                &y,
                1e-5,
            );
        }
        let dx0 = rng.vec(s.input_len(), -1.0, 1.0);
        let gdx = g.upload(&[dx0.len()], &dx0);
        ops::conv2d_input_grad(&g, &s, &gdy, &gw, 0.5, 1.0, &gdx);
        let mut dx = dx0.clone();
        cpu::conv2d_input_grad(&s, &dy, &w, 0.5, 1.0, &mut dx);
        check(
            &format!("conv2d input grad {tag}"),
            &g.read(&gdx),
            &dx,
            1e-5,
        );
        let gdw = g.zeros(&[s.weight_len()]);
        ops::conv2d_weight_grad(&g, &s, &gdy, &gx, 1.0, 0.0, &gdw);
        let mut dw = vec![0.0; s.weight_len()];
        cpu::conv2d_weight_grad(&s, &dy, &x, 1.0, 0.0, &mut dw);
        check(
            &format!("conv2d weight grad {tag}"),
            &g.read(&gdw),
            &dw,
            1e-5,
        );
    }
}

#[test]
fn conv_transpose2d_forward_and_grads() {
    let g = gpu();
    let mut rng = Rng::new(4);
    for s in [
        ConvTShape {
            batch: 2,
            cin: 6,
            h: 5,
            w: 7,
            cout: 5,
            k: 3,
            stride: 2,
            pad: 1,
            output_pad: 1,
        },
        ConvTShape {
            batch: 3,
            cin: 4,
            h: 4,
            w: 4,
            cout: 9,
            k: 3,
            stride: 1,
            pad: 1,
            output_pad: 0,
        },
        ConvTShape {
            batch: 1,
            cin: 3,
            h: 3,
            w: 5,
            cout: 2,
            k: 5,
            stride: 2,
            pad: 2,
            output_pad: 1,
        },
    ] {
        let x = rng.vec(s.input_len(), -1.0, 1.0);
        let w = rng.vec(s.weight_len(), -1.0, 1.0);
        let dy = rng.vec(s.output_len(), -1.0, 1.0);
        let (gx, gw, gdy) = (
            g.upload(&[x.len()], &x),
            g.upload(&[w.len()], &w),
            g.upload(&[dy.len()], &dy),
        );
        let tag = format!(
            "{}x{}x{}x{} k{} s{} p{} op{} -> {}",
            s.batch, s.cin, s.h, s.w, s.k, s.stride, s.pad, s.output_pad, s.cout
        );
        let gy = g.zeros(&[s.output_len()]);
        ops::conv_transpose2d(&g, &s, &gx, &gw, 0.0, &gy);
        let mut y = vec![0.0; s.output_len()];
        cpu::conv_transpose2d(&s, &x, &w, 0.0, &mut y);
        check(
            &format!("conv_transpose2d forward {tag}"),
            &g.read(&gy),
            &y,
            1e-5,
        );
        let gdx = g.zeros(&[s.input_len()]);
        ops::conv_transpose2d_input_grad(&g, &s, &gdy, &gw, 0.0, &gdx);
        let mut dx = vec![0.0; s.input_len()];
        cpu::conv_transpose2d_input_grad(&s, &dy, &w, 0.0, &mut dx);
        check(
            &format!("conv_transpose2d input grad {tag}"),
            &g.read(&gdx),
            &dx,
            1e-5,
        );
        let gdw = g.zeros(&[s.weight_len()]);
        ops::conv_transpose2d_weight_grad(&g, &s, &gdy, &gx, 1.0, 0.0, &gdw);
        let mut dw = vec![0.0; s.weight_len()];
        cpu::conv_transpose2d_weight_grad(&s, &dy, &x, 1.0, 0.0, &mut dw);
        check(
            &format!("conv_transpose2d weight grad {tag}"),
            &g.read(&gdw),
            &dw,
            1e-5,
        );
    }
}

#[test]
fn avgpool2x2_and_grad_odd_planes() {
    let g = gpu();
    let mut rng = Rng::new(5);
    for &(planes, h, w) in &[(1usize, 2usize, 2usize), (7, 9, 11), (13, 28, 28)] {
        let (oh, ow) = (h / 2, w / 2);
        let x = rng.vec(planes * h * w, -1.0, 1.0);
        let dy = rng.vec(planes * oh * ow, -1.0, 1.0);
        let (gx, gy) = (g.upload(&[x.len()], &x), g.zeros(&[dy.len()]));
        ops::avgpool2x2(&g, planes, h, w, &gx, &gy);
        let mut y = vec![0.0; dy.len()];
        cpu::avgpool2x2(planes, h, w, &x, &mut y);
        check(
            &format!("avgpool2x2 {planes}x{h}x{w}"),
            &g.read(&gy),
            &y,
            1e-6,
        );
        let (gdy, gdx) = (g.upload(&[dy.len()], &dy), g.upload(&[x.len()], &x));
        ops::avgpool2x2_grad(&g, planes, h, w, &gdy, &gdx);
        let mut dx = vec![0.0; x.len()];
        cpu::avgpool2x2_grad(planes, h, w, &dy, &mut dx);
        check(
            &format!("avgpool2x2 grad {planes}x{h}x{w}"),
            &g.read(&gdx),
            &dx,
            1e-6,
        );
    }
}

#[test]
fn batch_norm_stats_forward_backward_both_modes() {
    let g = gpu();
    let mut rng = Rng::new(6);
    for s in [
        BnShape {
            batch: 3,
            channels: 5,
            hw: 37,
        },
        BnShape {
            batch: 129,
            channels: 401,
            hw: 1,
        },
        BnShape {
            batch: 2,
            channels: 64,
            hw: 196,
        },
    ] {
        let x = rng.vec(s.len(), -2.0, 3.0);
        let dy = rng.vec(s.len(), -1.0, 1.0);
        let gamma = rng.vec(s.channels, 0.5, 1.5);
        let beta = rng.vec(s.channels, -0.5, 0.5);
        let rm0 = rng.vec(s.channels, -0.1, 0.1);
        let rv0 = rng.vec(s.channels, 0.9, 1.1);
        let c = s.channels;
        let (gx, gdy, gg, gb) = (
            g.upload(&[s.len()], &x),
            g.upload(&[s.len()], &dy),
            g.upload(&[c], &gamma),
            g.upload(&[c], &beta),
        );
        let (gm, gv, grm, grv) = (
            g.zeros(&[c]),
            g.zeros(&[c]),
            g.upload(&[c], &rm0),
            g.upload(&[c], &rv0),
        );
        ops::bn_stats(&g, s, &gx, &gm, &gv, &grm, &grv, Some(0.1));
        let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
        let (mean, var) = cpu::bn_stats(s, &x, &mut rm, &mut rv, Some(0.1));
        let tag = format!("{}x{}x{}", s.batch, s.channels, s.hw);
        check(&format!("bn_stats mean {tag}"), &g.read(&gm), &mean, 1e-5);
        check(&format!("bn_stats var {tag}"), &g.read(&gv), &var, 1e-5);
        check(
            &format!("bn_stats running mean {tag}"),
            &g.read(&grm),
            &rm,
            1e-5,
        );
        check(
            &format!("bn_stats running var {tag}"),
            &g.read(&grv),
            &rv,
            1e-5,
        );
        // Statistics alone leave the running values untouched.
        let (before_m, before_v) = (g.read(&grm), g.read(&grv));
        ops::bn_stats(&g, s, &gx, &gm, &gv, &grm, &grv, None);
        check(
            &format!("bn_stats no update, running mean {tag}"),
            &g.read(&grm),
            &before_m,
            0.0,
        );
        check(
            &format!("bn_stats no update, running var {tag}"),
            &g.read(&grv),
            &before_v,
            0.0,
        );
        let gy = g.zeros(&[s.len()]);
        ops::bn_forward(&g, s, &gx, &gm, &gv, &gg, &gb, &gy);
        let mut y = vec![0.0; s.len()];
        cpu::bn_forward(s, &x, &mean, &var, &gamma, &beta, &mut y);
        check(&format!("bn_forward {tag}"), &g.read(&gy), &y, 1e-5);
        for batch_stats in [true, false] {
            let (gdg, gdb, gdx) = (g.zeros(&[c]), g.zeros(&[c]), g.zeros(&[s.len()]));
            ops::bn_backward(
                &g,
                s,
                &gx,
                &gdy,
                &gm,
                &gv,
                &gg,
                batch_stats,
                &gdg,
                &gdb,
                Some(&gdx),
            );
            let (dg, db, dx) = cpu::bn_backward(s, &x, &dy, &mean, &var, &gamma, batch_stats);
            check(
                &format!("bn_backward dgamma {tag}"),
                &g.read(&gdg),
                &dg,
                1e-4,
            );
            check(
                &format!("bn_backward dbeta {tag}"),
                &g.read(&gdb),
                &db,
                1e-4,
            );
            check(
                &format!("bn_backward dx {tag} batch_stats={batch_stats}"),
                &g.read(&gdx),
                &dx,
                1e-4,
            );
        }
    }
}

#[test]
fn bias_add_and_channel_sum() {
    let g = gpu();
    let mut rng = Rng::new(7);
    for s in [
        BnShape {
            batch: 3,
            channels: 7,
            hw: 13,
        },
        BnShape {
            batch: 131,
            channels: 10,
            hw: 1,
        },
    ] {
        let y0 = rng.vec(s.len(), -1.0, 1.0);
        let bias = rng.vec(s.channels, -1.0, 1.0);
        let (gy, gbias) = (g.upload(&[s.len()], &y0), g.upload(&[s.channels], &bias));
        ops::bias_add(&g, s, &gbias, &gy);
        let mut y = y0.clone();
        cpu::bias_add(s, &bias, &mut y);
        check(
            &format!("bias_add {}x{}x{}", s.batch, s.channels, s.hw),
            &g.read(&gy),
            &y,
            1e-6,
        );
        let out0 = rng.vec(s.channels, -1.0, 1.0);
        let gout = g.upload(&[s.channels], &out0);
        ops::channel_sum(&g, s, &gy, 0.5, 1.0, &gout);
        let mut out = out0.clone();
        cpu::channel_sum(s, &y, 0.5, 1.0, &mut out);
        check(
            &format!("channel_sum {}x{}x{}", s.batch, s.channels, s.hw),
            &g.read(&gout),
            &out,
            1e-5,
        );
    }
}

#[test]
fn elementwise_clamp_axpby_scale_mask() {
    let g = gpu();
    let mut rng = Rng::new(8);
    for n in [1usize, 63, 65, 10007] {
        let z = rng.vec(n, -3.0, 5.0);
        let (gz, gy, gm) = (g.upload(&[n], &z), g.zeros(&[n]), g.zeros(&[n]));
        ops::clamp_mask(&g, &gz, 0.5, &gy, &gm);
        let (mut y, mut m) = (vec![0.0; n], vec![0.0; n]);
        cpu::clamp_mask(&z, 0.5, &mut y, &mut m);
        check(&format!("clamp_mask n={n} value"), &g.read(&gy), &y, 0.0);
        check(&format!("clamp_mask n={n} mask"), &g.read(&gm), &m, 0.0);

        let x = rng.vec(n, -1.0, 1.0);
        let y0 = rng.vec(n, -1.0, 1.0);
        let (gx, gy) = (g.upload(&[n], &x), g.upload(&[n], &y0));
        ops::axpby(&g, 0.7, &gx, -1.3, &gy);
        let mut y = y0.clone();
        cpu::axpby(0.7, &x, -1.3, &mut y);
        check(&format!("axpby n={n}"), &g.read(&gy), &y, 1e-6);
        ops::scale(&g, 2.5, &gy);
        cpu::scale(2.5, &mut y);
        check(&format!("scale n={n}"), &g.read(&gy), &y, 1e-6);
    }
    let m = rng.vec(37, 0.0, 2.0);
    let y0 = rng.vec(37 * 5, -1.0, 1.0);
    let (gmask, gy) = (g.upload(&[37], &m), g.upload(&[y0.len()], &y0));
    ops::mask_mul(&g, &gmask, &gy);
    let mut y = y0.clone();
    cpu::mask_mul(&m, &mut y);
    check("mask_mul 37 repeated 5 times", &g.read(&gy), &y, 0.0);
}

#[test]
fn dropout_mask_matches_twin_and_rate() {
    let g = gpu();
    for &(n, p, seed, stream) in &[
        (1usize, 0.2f32, 1u32, 0u32),
        (100_003, 0.2, 42, 7),
        (5_001, 0.5, 9, 3),
    ] {
        let gm = g.zeros(&[n]);
        ops::dropout_mask(&g, &gm, p, seed, stream);
        let mut m = vec![0.0; n];
        cpu::dropout_mask(&mut m, p, seed, stream);
        let got = g.read(&gm);
        check(&format!("dropout_mask n={n} p={p}"), &got, &m, 0.0);
        if n > 1000 {
            let dropped = got.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
            println!("dropout_mask n={n} p={p}: dropped fraction {dropped:.4}");
            assert!(
                (dropped - p as f64).abs()
                    < 4.0 * (p as f64 * (1.0 - p as f64) / n as f64).sqrt() + 1e-3
            );
        }
    }
    // Another seed gives another mask.
    let (a, b) = (g.zeros(&[1000]), g.zeros(&[1000]));
    ops::dropout_mask(&g, &a, 0.5, 1, 0);
    ops::dropout_mask(&g, &b, 0.5, 2, 0);
    assert_ne!(g.read(&a), g.read(&b));
}

#[test]
fn row_dot_and_global_sum() {
    let g = gpu();
    let mut rng = Rng::new(9);
    for &(rows, dim) in &[(1usize, 1usize), (7, 401), (129, 65), (3, 12_545)] {
        let x = rng.vec(rows * dim, -1.0, 1.0);
        let y = rng.vec(rows * dim, -1.0, 1.0);
        let o0 = rng.vec(rows, -1.0, 1.0);
        let (gx, gy, go) = (
            g.upload(&[x.len()], &x),
            g.upload(&[y.len()], &y),
            g.upload(&[rows], &o0),
        );
        ops::row_dot(&g, rows, dim, &gx, &gy, 2.0, 1.0, &go);
        let mut o = o0.clone();
        cpu::row_dot(rows, dim, &x, &y, 2.0, 1.0, &mut o);
        check(&format!("row_dot {rows}x{dim}"), &g.read(&go), &o, 1e-5);
    }
    for n in [1usize, 4095, 4097, 300_001] {
        let x = rng.vec(n, -1.0, 1.0);
        let gx = g.upload(&[n], &x);
        let part = g.zeros(&[ops::sum_partials_len(n)]);
        for square in [false, true] {
            let out = g.zeros(&[1]);
            ops::sum(&g, &gx, square, &part, &out);
            let want = cpu::sum(&x, square);
            // A plain sum of random signs can be near zero: measure against Σ|x|.
            let scale = cpu::sum(&x.iter().map(|v| v.abs()).collect::<Vec<_>>(), square);
            let got = g.read(&out)[0];
            let e = ((got - want) / scale).abs() as f64;
            println!("sum n={n} square={square:<5} worst relative error {e:.3e}");
            assert!(e < 1e-5, "sum n={n}: {got} vs {want}");
        }
    }
}

#[test]
fn softmax_cross_entropy_forward_backward() {
    let g = gpu();
    let mut rng = Rng::new(10);
    for &(rows, classes) in &[(1usize, 2usize), (131, 10), (7, 100)] {
        let logits = rng.vec(rows * classes, -5.0, 5.0);
        let labels: Vec<u32> = (0..rows).map(|_| rng.below(classes as u32)).collect();
        let gl = g.upload(&[logits.len()], &logits);
        let glab = g.upload_u32(&[rows], &labels);
        let (gloss, gd, gc) = (
            g.zeros(&[rows]),
            g.zeros(&[rows * classes]),
            g.zeros(&[rows]),
        );
        let scale = 1.0 / rows as f32;
        ops::softmax_xent(&g, rows, classes, &gl, &glab, scale, &gloss, &gd, &gc);
        let (loss, d, c) = cpu::softmax_xent(rows, classes, &logits, &labels, scale);
        check(
            &format!("softmax_xent loss {rows}x{classes}"),
            &g.read(&gloss),
            &loss,
            1e-5,
        );
        check(
            &format!("softmax_xent dlogits {rows}x{classes}"),
            &g.read(&gd),
            &d,
            2e-4,
        );
        check(
            &format!("softmax_xent correct {rows}x{classes}"),
            &g.read(&gc),
            &c,
            0.0,
        );
    }
}

#[test]
fn sgd_momentum_weight_decay() {
    let g = gpu();
    let mut rng = Rng::new(11);
    let n = 4_111;
    let w0 = rng.vec(n, -1.0, 1.0);
    let grads: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(n, -1.0, 1.0)).collect();
    let (gw, gv) = (g.upload(&[n], &w0), g.zeros(&[n]));
    let (mut w, mut v) = (w0.clone(), vec![0.0; n]);
    for gr in &grads {
        let gg = g.upload(&[n], gr);
        ops::sgd(&g, &gw, &gg, &gv, 0.05, 0.9, 5e-4);
        cpu::sgd(&mut w, gr, &mut v, 0.05, 0.9, 5e-4);
    }
    check("sgd weights after 3 steps", &g.read(&gw), &w, 1e-6);
    check("sgd momentum after 3 steps", &g.read(&gv), &v, 1e-6);
}

#[test]
fn power_iteration_step_and_convergence() {
    let g = gpu();
    let mut rng = Rng::new(12);
    for &(rows, cols) in &[(1usize, 1usize), (64, 1600), (400, 400), (37, 5)] {
        let w = rng.vec(rows * cols, -1.0, 1.0);
        let u0 = rng.vec(rows, -1.0, 1.0);
        let (gw, gu, gv, gs) = (
            g.upload(&[w.len()], &w),
            g.upload(&[rows], &u0),
            g.zeros(&[cols]),
            g.zeros(&[1]),
        );
        ops::power_iteration(&g, rows, cols, &gw, &gu, &gv, &gs);
        let (mut u, mut v) = (u0.clone(), vec![0.0; cols]);
        let sigma = cpu::power_iteration(rows, cols, &w, &mut u, &mut v);
        check(
            &format!("power_iteration u {rows}x{cols}"),
            &g.read(&gu),
            &u,
            1e-4,
        );
        check(
            &format!("power_iteration v {rows}x{cols}"),
            &g.read(&gv),
            &v,
            1e-4,
        );
        check(
            &format!("power_iteration sigma {rows}x{cols}"),
            &g.read(&gs),
            &[sigma],
            1e-4,
        );
    }
}

#[test]
fn peak_fma_probe_matches_twin() {
    let g = gpu();
    // A multiplier below 1 keeps the chains bounded, so rounding differences between fused and
    // unfused drivers stay near machine precision instead of growing with the iteration count.
    for &(n, iters, mul, add) in &[
        (1usize, 1u32, 0.5f32, 0.25f32),
        (1237, 100, 0.999, 0.01),
        (70_001, 37, -0.75, 1.5),
    ] {
        let gout = g.zeros(&[n]);
        ops::peak_fma(&g, iters, mul, add, &gout);
        let mut out = vec![0.0; n];
        cpu::peak_fma(iters, mul, add, &mut out);
        check(
            &format!("peak_fma n={n} iters={iters} mul={mul}"),
            &g.read(&gout),
            &out,
            1e-5,
        );
    }
}

/// The three fused solver kernels against their twins, for every solver, at the setup, while the
/// ring fills, once it has wrapped (the overwritten slot inside the products), on convergence and
/// after the stop.
#[test]
fn solver_dots_track_combine() {
    use ops::{SolverIter, SolverLayout, SolverMode};
    let g = gpu();
    let mut rng = Rng::new(13);
    let cases = [
        (SolverMode::FixedPoint, 3usize, 37usize, 0usize, 0usize),
        (SolverMode::FixedPoint, 5, 401, 0, 4),
        (SolverMode::Broyden, 1, 1, 1, 1),
        (SolverMode::Broyden, 3, 37, 5, 0),
        (SolverMode::Broyden, 3, 37, 5, 3),
        (SolverMode::Broyden, 7, 67, 5, 9),
        (SolverMode::Broyden, 3, 401, 27, 29),
        (SolverMode::Anderson, 3, 37, 5, 0),
        (SolverMode::Anderson, 3, 37, 5, 2),
        (SolverMode::Anderson, 7, 67, 5, 12),
    ];
    for &(mode, batch, dim, slots, it) in &cases {
        let l = SolverLayout {
            mode,
            batch,
            dim,
            slots,
        };
        let i = SolverIter::new(&l, it);
        let n = batch * dim;
        let hist = rng.vec(l.hist_len().max(1), -1.0, 1.0);
        let jx = rng.vec(n, -1.0, 1.0);
        let x = rng.vec(n, -1.0, 1.0);
        let gl = rng.vec(n, -1.0, 1.0);
        let gold = rng.vec(n, -1.0, 1.0);
        let step = rng.vec(n, -1.0, 1.0);
        let best = rng.vec(n, -1.0, 1.0);
        let mut scal = rng.vec(l.scal_len(), -1.0, 1.0);
        let st = l.state_offset();
        if mode == SolverMode::Anderson {
            // A consistent Gram matrix of the stored Δg rows, so the least squares are well posed.
            let gram0 = st + 8;
            for b in 0..batch {
                for p in 0..slots {
                    for q in 0..slots {
                        let row = |j: usize| ((b * slots + j) * 2 + 1) * dim;
                        let v: f32 = (0..dim).map(|e| hist[row(p) + e] * hist[row(q) + e]).sum();
                        scal[gram0 + (b * slots + p) * slots + q] = v;
                    }
                }
            }
        }
        let tag = format!("{mode:?} {batch}x{dim} slots={slots} it={it}");
        let up = |v: &[f32]| g.upload(&[v.len()], v);
        let (ghist, gjx, gx, ggl, ggold, gstep, gbest) = (
            up(&hist),
            up(&jx),
            up(&x),
            up(&gl),
            up(&gold),
            up(&step),
            up(&best),
        );
        let v = ops::SolverVectors {
            jx: &gjx,
            x: &gx,
            gl: &ggl,
            g: &ggold,
            step: &gstep,
            best: &gbest,
        };
        // Products.
        let mut modes = vec![Sharing::Plain];
        if g.ctx.features.contains(wgpu::Features::SUBGROUP) {
            modes.push(Sharing::Shared);
        }
        let before = scal.clone();
        cpu::solver_dots(&l, i, &hist, &jx, &x, &gl, &gold, &step, &mut scal);
        for &mode in &modes {
            let gscal = up(&before);
            g.set_sharing(mode);
            ops::solver_dots(&g, &l, i, &ghist, &v, &gscal);
            check(
                &format!("solver_dots {mode:?} {tag}"),
                &g.read(&gscal),
                &scal,
                1e-5,
            );
        }
        // Global step, from each state the stopping rule distinguishes.
        let eps2 = 0.5 * scal[slots * 3];
        for (what, lowest, done, threshold, e2) in [
            ("improves", 1e9f32, 0.0f32, 30usize, 0.0f32),
            ("no better", 1e-9, 0.0, 30, 0.0),
            ("converges", 1e9, 0.0, 30, 1e9),
            ("threshold", 1e9, 0.0, it.max(1), 0.0),
            ("stopped", 1e9, 1.0, 30, 0.0),
            ("eps", 1e9, 0.0, 30, eps2),
        ] {
            let mut s = scal.clone();
            s[st] = lowest;
            s[st + 1] = done;
            let gs = up(&s);
            ops::solver_track(&g, &l, i, threshold, e2, 1e-6, &gs);
            cpu::solver_track(&l, i, threshold, e2, 1e-6, &mut s);
            let got = g.read(&gs);
            check(&format!("solver_track {tag} {what}"), &got, &s, 2e-4);
            assert_eq!(
                got[st + 1..st + 4],
                s[st + 1..st + 4],
                "{tag} {what}: state words"
            );
        }
        // Per-element step: with the coefficients of a live solve, and after the stop.
        for (what, improved, done) in [
            ("step", 1.0f32, 0.0f32),
            ("stopped", 1.0, 1.0),
            ("no copy", 0.0, 0.0),
        ] {
            let mut s = scal.clone();
            cpu::solver_track(&l, i, 30, 0.0, 1e-6, &mut s);
            s[st + 1] = done;
            s[st + 2] = improved;
            for &mode in &modes {
                let (mut h, mut xx, mut go, mut sp, mut bs) = (
                    hist.clone(),
                    x.clone(),
                    gold.clone(),
                    step.clone(),
                    best.clone(),
                );
                let (gh, gxx, ggo, gsp, gbs) = (up(&h), up(&xx), up(&go), up(&sp), up(&bs));
                let v = ops::SolverVectors {
                    jx: &gjx,
                    x: &gxx,
                    gl: &ggl,
                    g: &ggo,
                    step: &gsp,
                    best: &gbs,
                };
                g.set_sharing(mode);
                ops::solver_combine(&g, &l, i, 0.5, &gh, &v, &up(&s));
                cpu::solver_combine(
                    &l, i, 0.5, &mut h, &jx, &mut xx, &gl, &mut go, &mut sp, &mut bs, &s,
                );
                for (name, gt, want) in [
                    ("hist", &gh, &h),
                    ("x", &gxx, &xx),
                    ("g", &ggo, &go),
                    ("step", &gsp, &sp),
                    ("best", &gbs, &bs),
                ] {
                    let got = g.read(gt);
                    assert!(
                        got.iter().all(|v| v.is_finite()),
                        "{tag}: non-finite {name}"
                    );
                    check(
                        &format!("solver_combine {mode:?} {tag} {what} {name}"),
                        &got,
                        want,
                        1e-4,
                    );
                }
                if done != 0.0 {
                    assert_eq!(xx, x, "a stopped solve must not move β");
                }
            }
        }
    }
}

#[test]
fn spectral_norm_weight_and_grad() {
    let g = gpu();
    let mut rng = Rng::new(14);
    for &(rows, cols, scale) in &[(1usize, 1usize, 0.5f32), (64, 1600, 1.7), (37, 11, -0.3)] {
        let n = rows * cols;
        let w = rng.vec(n, -1.0, 1.0);
        let gw = rng.vec(n, -1.0, 1.0);
        let u = rng.vec(rows, -1.0, 1.0);
        let v = rng.vec(cols, -1.0, 1.0);
        let (sigma, dot) = (2.3f32, 0.7f32);
        let (gwt, gs) = (g.upload(&[n], &w), g.upload(&[1], &[scale]));
        let gsc = g.upload(&[2], &[sigma, dot]);
        let weff_g = g.zeros(&[n]);
        ops::sn_weight(&g, &gwt, &gs, &gsc, &weff_g);
        let mut weff = vec![0.0; n];
        cpu::sn_weight(&w, scale, sigma, &mut weff);
        check(
            &format!("sn_weight {rows}x{cols} g={scale}"),
            &g.read(&weff_g),
            &weff,
            1e-6,
        );
        let (gdw, gdg) = (g.zeros(&[n]), g.zeros(&[1]));
        ops::sn_weight_grad(
            &g,
            cols,
            &g.upload(&[n], &gw),
            &g.upload(&[rows], &u),
            &g.upload(&[cols], &v),
            &gs,
            &gsc,
            &gdw,
            &gdg,
        );
        let (dw, dg) = cpu::sn_weight_grad(cols, &gw, &u, &v, scale, sigma, dot);
        check(
            &format!("sn_weight_grad dw {rows}x{cols} g={scale}"),
            &g.read(&gdw),
            &dw,
            1e-5,
        );
        check(
            &format!("sn_weight_grad dg {rows}x{cols} g={scale}"),
            &g.read(&gdg),
            &[dg],
            1e-6,
        );
    }
}

/// Dropout-like masks: 0 or 1/(1−p).
fn drop_mask(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| if rng.below(5) == 0 { 0.0 } else { 1.25 })
        .collect()
}

fn random_spikes(rng: &mut Rng, n: usize, density: u32) -> Vec<f32> {
    (0..n)
        .map(|_| if rng.below(100) < density { 1.0 } else { 0.0 })
        .collect()
}

fn check_bits(name: &str, got: &[u32], want: &[u32]) {
    let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
    let ones: u32 = want.iter().map(|w| w.count_ones()).sum();
    println!(
        "{name:<48} {differ} of {} spike words differ ({ones} spikes)",
        want.len()
    );
    assert_eq!(got, want, "{name}: spike bits differ");
}

#[test]
fn transpose_odd_sizes() {
    let g = gpu();
    let mut rng = Rng::new(31);
    for &(r, c) in &[(1usize, 1usize), (37, 53), (64, 1600), (129, 65)] {
        let a = rng.vec(r * c, -1.0, 1.0);
        let (ga, gt) = (g.upload(&[r * c], &a), g.zeros(&[r * c]));
        ops::transpose(&g, r, c, &ga, &gt);
        let mut t = vec![0.0; r * c];
        cpu::transpose(r, c, &a, &mut t);
        check(&format!("transpose {r}x{c}"), &g.read(&gt), &t, 0.0);
    }
}

/// The fused linear event simulation, walking the spikes as a bit set and as a list, against its
/// twin and against the dense path (GEMM on 0/1 spike tensors, mask_mul, neuron_step): the same
/// spikes and bit-identical potentials.
#[test]
fn fc_event_sim_matches_twin_and_dense_path() {
    let g = gpu();
    let mut rng = Rng::new(32);
    for &(batch, n, steps, leak, masked, per_step) in &[
        (1usize, 1usize, 3usize, 1.0f32, false, false),
        (3, 37, 5, 0.95, true, false),
        (2, 258, 4, 0.9, false, false),
        (5, 400, 6, 0.9, true, true),
        (2, 1000, 4, 1.0, false, true),
        (2, 1024, 3, 0.95, true, false),
    ] {
        let name =
            format!("fc_event_sim b={batch} n={n} T={steps} mask={masked} per_step={per_step}");
        // Wᵀ with rows padded to whole vec4s (zeros), as the kernel reads it.
        let ld = ops::fc_event_ld(n);
        let w = rng.vec(n * n, -0.6, 0.6);
        let mut wt = vec![0.0; n * ld];
        cpu::transpose_padded(n, n, ld, &w, &mut wt);
        let x = rng.vec(batch * n * if per_step { steps } else { 1 }, -0.5, 2.5);
        let mask = masked.then(|| drop_mask(&mut rng, batch * n));
        let words = ops::spike_words(n);
        let bn = batch * n;
        let gw = g.upload(&[n * n], &w);
        let gwt = g.zeros(&[n * ld]);
        ops::transpose_padded(&g, n, n, ld, &gw, &gwt);
        check(&format!("{name} transpose_padded"), &g.read(&gwt), &wt, 0.0);
        let gx = g.upload(&[x.len()], &x);
        let gmask = mask.as_ref().map(|m| g.upload(&[bn], m));
        let sim = |t_begin: usize, t_end: usize| ops::FcEventSim {
            n,
            batch,
            t_begin,
            t_end,
            x_step: if per_step { bn } else { 0 },
            x_off: if per_step { t_begin * bn } else { 0 },
            vth: 2.0,
            leak,
        };
        // Per-step input is run one dispatch per step, constant input in one.
        let chunks: Vec<(usize, usize)> = if per_step {
            (0..steps).map(|t| (t, t + 1)).collect()
        } else {
            vec![(0, steps)]
        };
        let (mut u, mut a, mut bits) = (vec![0.0; bn], vec![0.0; bn], vec![0u32; batch * words]);
        for &(t0, t1) in &chunks {
            cpu::fc_event_sim(
                &sim(t0, t1),
                &mut u,
                &mut a,
                &mut bits,
                &wt,
                &x,
                mask.as_deref(),
            );
        }

        // The dense path on the GPU.
        let (du, da, ds, dfb) = (
            g.zeros(&[bn]),
            g.zeros(&[bn]),
            g.zeros(&[bn]),
            g.zeros(&[bn]),
        );
        for t in 0..steps {
            if t > 0 {
                ops::gemm(&g, Op::N, Op::T, batch, n, n, 1.0, &ds, &gw, 0.0, &dfb);
                if let Some(m) = &gmask {
                    ops::mask_mul(&g, m, &dfb);
                }
            }
            let step = NeuronStep {
                vth: 2.0,
                leak,
                has_feedback: t > 0,
                x_offset: if per_step { t * bn } else { 0 },
            };
            ops::neuron_step(&g, &du, &da, &ds, &gx, &dfb, step);
        }
        let dense_bits = cpu::pack_rows(&g.read(&ds), n);

        // Both ways of walking the spikes (bit set, list) against both.
        for walk in SpikeWalk::ALL {
            let name = format!("{name} walk={}", walk.name());
            g.set_spike_walk(walk);
            let (gu, ga, gbits) = (g.zeros(&[bn]), g.zeros(&[bn]), g.zeros(&[batch * words]));
            for &(t0, t1) in &chunks {
                ops::fc_event_sim(
                    &g,
                    &sim(t0, t1),
                    &gu,
                    &ga,
                    &gbits,
                    &gwt,
                    &gx,
                    gmask.as_ref(),
                );
            }
            check(&format!("{name} u"), &g.read(&gu), &u, 1e-6);
            check(&format!("{name} rate acc"), &g.read(&ga), &a, 1e-6);
            check_bits(&format!("{name} spikes"), &g.read_u32(&gbits), &bits);
            check(
                &format!("{name} u, dense path"),
                &g.read(&gu),
                &g.read(&du),
                0.0,
            );
            check(
                &format!("{name} acc, dense path"),
                &g.read(&ga),
                &g.read(&da),
                0.0,
            );
            check_bits(
                &format!("{name} spikes, dense path"),
                &g.read_u32(&gbits),
                &dense_bits,
            );
        }
        g.set_spike_walk(SpikeWalk::Bits);
    }
}

/// The fused conv event step against its twin, and a few steps against the dense path (conv2d on
/// 0/1 spike tensors, mask_mul, neuron_step) where input and output shapes agree.
#[test]
fn conv_event_sim_matches_twin_and_dense_path() {
    let g = gpu();
    let mut rng = Rng::new(33);
    let shape = |batch, cin, h, w, cout, k, pad| ConvShape {
        batch,
        cin,
        h,
        w,
        cout,
        kh: k,
        kw: k,
        stride: 1,
        pad,
    };
    let mut forms = vec![
        (Sharing::Plain, ConvEventForm::Phases),
        (Sharing::Plain, ConvEventForm::Lanes),
    ];
    if g.ctx.features.contains(wgpu::Features::SUBGROUP) {
        forms.extend([
            (Sharing::Shared, ConvEventForm::Phases),
            (Sharing::Unshared, ConvEventForm::Phases),
        ]);
    }
    let cases = [
        (shape(2, 5, 9, 11, 5, 5, 2), 4usize, true),
        (shape(1, 3, 6, 37, 70, 3, 1), 1, false),
        (shape(2, 6, 8, 9, 6, 3, 1), 3, true),
        (shape(1, 4, 5, 33, 3, 3, 0), 1, true),
        (shape(2, 70, 7, 40, 70, 3, 1), 3, false),
        (shape(3, 64, 14, 14, 64, 5, 2), 3, true),
        // More kernel rows than a subgroup shares at once.
        (shape(1, 3, 12, 13, 3, 9, 4), 3, true),
        // The widest row the lanes form takes, and channels past one workgroup's 64.
        (shape(2, 70, 6, 32, 70, 3, 1), 2, true),
    ];
    for ((form, layout), (s, steps, masked)) in forms
        .iter()
        .flat_map(|&f| cases.iter().map(move |&c| (f, c)))
    {
        let name = format!(
            "conv_event_sim[{form:?} {}] b={} {}→{} {}x{} k={} p={} T={steps} mask={masked}",
            layout.name(),
            s.batch,
            s.cin,
            s.cout,
            s.h,
            s.w,
            s.kh,
            s.pad
        );
        // Rows wider than the lanes form's tile run the other form.
        let kernel = match (layout, form) {
            (ConvEventForm::Lanes, _) if s.ow() <= 32 => "conv_event_sim_lanes",
            (_, Sharing::Plain) => "conv_event_sim",
            _ => "conv_event_sim_coop",
        };
        let (oh, ow) = (s.oh(), s.ow());
        let out = s.output_len();
        // The weight [cout, cin·kh·kw] and its transpose with rows padded to whole vec4s.
        let taps = s.cin * s.kh * s.kw;
        let ld = ops::conv_event_ld(s.cout);
        let w = rng.vec(s.weight_len(), -0.6, 0.6);
        let mut wt = vec![0.0; taps * ld];
        cpu::transpose_padded(s.cout, taps, ld, &w, &mut wt);
        let x = rng.vec(out, -0.5, 2.5);
        let mask = masked.then(|| drop_mask(&mut rng, out));
        let s0 = random_spikes(&mut rng, s.input_len(), 20);
        let bits0 = cpu::pack_rows(&s0, s.w);
        let out_words = ops::conv_spike_words(s.batch, s.cout, oh, ow);
        let (gu, ga) = (g.zeros(&[out]), g.zeros(&[out]));
        let gb = [
            g.upload_u32(&[bits0.len().max(out_words)], &{
                let mut b = bits0.clone();
                b.resize(bits0.len().max(out_words), 0);
                b
            }),
            g.zeros(&[bits0.len().max(out_words)]),
        ];
        let gw = g.upload(&[w.len()], &w);
        let gwt = g.zeros(&[wt.len()]);
        ops::transpose_padded(&g, s.cout, taps, ld, &gw, &gwt);
        check(&format!("{name} transpose_padded"), &g.read(&gwt), &wt, 0.0);
        let gx = g.upload(&[out], &x);
        let gmask = mask.as_ref().map(|m| g.upload(&[out], m));
        let (mut u, mut a) = (vec![0.0; out], vec![0.0; out]);
        let mut cb = [bits0.clone(), vec![0u32; out_words]];
        let step = NeuronStep {
            vth: 2.0,
            leak: 0.95,
            has_feedback: true,
            x_offset: 0,
        };
        for t in 0..steps {
            let (i, o) = (t % 2, (t + 1) % 2);
            g.set_sharing(form);
            g.set_conv_event_form(layout);
            g.set_profiling(true);
            ops::conv_event_sim(
                &g,
                &s,
                step,
                &gu,
                &ga,
                &gb[i],
                &gb[o],
                &gwt,
                &gx,
                gmask.as_ref(),
            );
            let ran: Vec<&str> = g.take_profile().spans.iter().map(|s| s.name).collect();
            g.set_profiling(false);
            assert_eq!(ran, [kernel], "{name}");
            let inb = cb[i].clone();
            cb[o].resize(out_words, 0);
            cpu::conv_event_sim(
                &s,
                step,
                &mut u,
                &mut a,
                &inb,
                &mut cb[o],
                &wt,
                &x,
                mask.as_deref(),
            );
        }
        let last = steps % 2;
        check(&format!("{name} u"), &g.read(&gu), &u, 1e-6);
        check(&format!("{name} rate acc"), &g.read(&ga), &a, 1e-6);
        check_bits(
            &format!("{name} spikes"),
            &g.read_u32(&gb[last])[..out_words],
            &cb[last][..out_words],
        );
        if steps == 1 && (s.cin != s.cout || oh != s.h || ow != s.w) {
            continue;
        }
        // The dense path.
        let (du, da, dfb) = (g.zeros(&[out]), g.zeros(&[out]), g.zeros(&[out]));
        let ds = g.upload(&[out], &s0);
        for _ in 0..steps {
            ops::conv2d(&g, &s, &ds, &gw, 0.0, &dfb);
            if let Some(m) = &gmask {
                ops::mask_mul(&g, m, &dfb);
            }
            ops::neuron_step(&g, &du, &da, &ds, &gx, &dfb, step);
        }
        check(
            &format!("{name} u, dense path"),
            &g.read(&gu),
            &g.read(&du),
            0.0,
        );
        check_bits(
            &format!("{name} spikes, dense path"),
            &g.read_u32(&gb[last])[..out_words],
            &cpu::pack_rows(&g.read(&ds), ow),
        );
    }
}

// ----------------------------------------------------------------- variants

/// A measurement with a different winner per shape (as `fsnn tune` stores it) makes each GEMM
/// dispatch the variant of its nearest measured shape, and each still matches the twin.
#[test]
fn gemm_per_shape_choice_dispatches_each_shapes_variant() {
    use fsnn::variants::{FamilyChoice, Problem, ShapeChoice, Variant};
    let g = gpu();
    let shape = |ta, tb, m, n, k, v| ShapeChoice::new(&Problem::Gemm { ta, tb, m, n, k }, v);
    let fc = FamilyChoice {
        chosen: Variant::Blocked,
        timings: vec![],
        per_shape: vec![
            shape(Op::N, Op::T, 8, 8, 8, Variant::Tiled),
            shape(Op::N, Op::T, 256, 256, 256, Variant::Blocked),
        ],
    };
    g.set_measured_variants(Family::Gemm, &fc);
    let mut rng = Rng::new(41);
    for &(m, n, k, want) in &[
        (7usize, 9usize, 5usize, Variant::Tiled),
        (200, 300, 100, Variant::Blocked),
    ] {
        let (a, b) = (rng.vec(m * k, -1.0, 1.0), rng.vec(k * n, -1.0, 1.0));
        let (ga, gb, gc) = (
            g.upload(&[m * k], &a),
            g.upload(&[k * n], &b),
            g.zeros(&[m * n]),
        );
        g.set_profiling(true);
        ops::gemm(&g, Op::N, Op::T, m, n, k, 1.0, &ga, &gb, 0.0, &gc);
        let names: Vec<&str> = g.take_profile().spans.iter().map(|s| s.name).collect();
        g.set_profiling(false);
        assert_eq!(names, [Family::Gemm.kernel(want)], "{m}x{n}x{k}");
        let mut c = vec![0.0; m * n];
        cpu::gemm(Op::N, Op::T, m, n, k, 1.0, &a, &b, 0.0, &mut c);
        check(
            &format!("gemm per shape {m}x{n}x{k}"),
            &g.read(&gc),
            &c,
            1e-5,
        );
    }
    // Forcing a variant overrides the per-shape choice.
    g.set_variant(Family::Gemm, Variant::Blocked);
    assert!(g.variant_shapes(Family::Gemm).is_empty());
}

/// Every variant of every family (forced on its recorder, as `FSNN_VARIANT_*` or the tuned cache
/// would choose it) against the CPU twin, at sizes that are multiples of no tile: 1×1, tiles cut
/// in every dimension, and reductions that end inside a 16-step.
#[test]
fn gemm_every_variant_odd_sizes_all_transposes() {
    let mut rng = Rng::new(40);
    let variants = Family::Gemm.available(&gpu());
    println!("gemm variants on this adapter: {variants:?}");
    for v in variants {
        let g = gpu();
        g.set_variant(Family::Gemm, v);
        assert_eq!(g.variant(Family::Gemm), v);
        for &(m, n, k) in &[
            (1usize, 1usize, 1usize),
            (17, 33, 29),
            (130, 70, 257),
            (65, 129, 16),
            (9, 400, 17),
        ] {
            for (ta, tb) in [(Op::N, Op::N), (Op::N, Op::T), (Op::T, Op::N)] {
                for &(alpha, beta) in &[(1.0f32, 0.0f32), (0.5, 1.0)] {
                    let a = rng.vec(m * k, -1.0, 1.0);
                    let b = rng.vec(k * n, -1.0, 1.0);
                    let c0 = rng.vec(m * n, -1.0, 1.0);
                    let (ga, gb, gc) = (
                        g.upload(&[m * k], &a),
                        g.upload(&[k * n], &b),
                        g.upload(&[m * n], &c0),
                    );
                    ops::gemm(&g, ta, tb, m, n, k, alpha, &ga, &gb, beta, &gc);
                    let mut c = c0.clone();
                    cpu::gemm(ta, tb, m, n, k, alpha, &a, &b, beta, &mut c);
                    check(
                        &format!("gemm[{v}] {ta:?}{tb:?} {m}x{n}x{k} a={alpha} b={beta}"),
                        &g.read(&gc),
                        &c,
                        1e-5,
                    );
                }
            }
        }
    }
}

fn variant_conv_shapes() -> Vec<ConvShape> {
    let mut v = conv_shapes();
    v.extend([
        ConvShape {
            batch: 1,
            cin: 1,
            h: 1,
            w: 1,
            cout: 1,
            kh: 1,
            kw: 1,
            stride: 1,
            pad: 0,
        },
        // 286 pixel rows, 70 channels, a 171-long reduction: every tile edge is cut.
        ConvShape {
            batch: 2,
            cin: 19,
            h: 13,
            w: 11,
            cout: 70,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: 1,
        },
        ConvShape {
            batch: 3,
            cin: 17,
            h: 15,
            w: 14,
            cout: 67,
            kh: 5,
            kw: 5,
            stride: 2,
            pad: 2,
        },
    ]);
    v
}

/// AlexNet-F's feedback, cut down to odd sizes: a stride-2 transposed convolution.
fn variant_convt_shape() -> ConvTShape {
    ConvTShape {
        batch: 2,
        cin: 21,
        h: 5,
        w: 7,
        cout: 66,
        k: 3,
        stride: 2,
        pad: 1,
        output_pad: 1,
    }
}

#[test]
fn conv2d_and_its_gradients_every_variant_odd_sizes() {
    let mut rng = Rng::new(41);
    let g0 = gpu();
    let (fwd, grad, wgrad) = (
        Family::Conv2d.available(&g0),
        Family::Conv2dInputGrad.available(&g0),
        Family::Conv2dWeightGrad.available(&g0),
    );
    // `flipped` runs the forward kernels, so it has its own test below.
    let grad: Vec<Variant> = grad.into_iter().filter(|v| fwd.contains(v)).collect();
    assert!(fwd.len() == grad.len() && fwd.len() == wgrad.len());
    for ((&v, &vg), &vw) in fwd.iter().zip(&grad).zip(&wgrad) {
        let g = gpu();
        g.set_variant(Family::Conv2d, v);
        g.set_variant(Family::Conv2dWeightGrad, vw);
        g.set_variant(Family::Conv2dInputGrad, vg);
        for s in variant_conv_shapes() {
            let x = rng.vec(s.input_len(), -1.0, 1.0);
            let w = rng.vec(s.weight_len(), -1.0, 1.0);
            let dy = rng.vec(s.output_len(), -1.0, 1.0);
            let (gx, gw, gdy) = (
                g.upload(&[x.len()], &x),
                g.upload(&[w.len()], &w),
                g.upload(&[dy.len()], &dy),
            );
            let tag = format!(
                "{}x{}x{}x{} k{} s{} p{} -> {}",
                s.batch, s.cin, s.h, s.w, s.kh, s.stride, s.pad, s.cout
            );
            for beta in [0.0f32, 1.0] {
                let y0 = rng.vec(s.output_len(), -1.0, 1.0);
                let gy = g.upload(&[y0.len()], &y0);
                ops::conv2d(&g, &s, &gx, &gw, beta, &gy);
                let mut y = y0.clone();
                cpu::conv2d(&s, &x, &w, beta, &mut y);
                check(
                    &format!("conv2d[{v}] {tag} beta={beta}"),
                    &g.read(&gy),
                    &y,
                    1e-5,
                );
            }
            let dx0 = rng.vec(s.input_len(), -1.0, 1.0);
            let gdx = g.upload(&[dx0.len()], &dx0);
            ops::conv2d_input_grad(&g, &s, &gdy, &gw, 0.5, 1.0, &gdx);
            let mut dx = dx0.clone();
            cpu::conv2d_input_grad(&s, &dy, &w, 0.5, 1.0, &mut dx);
            check(
                &format!("conv2d_input_grad[{vg}] {tag}"),
                &g.read(&gdx),
                &dx,
                1e-5,
            );
            let dw0 = rng.vec(s.weight_len(), -1.0, 1.0);
            let gdw = g.upload(&[dw0.len()], &dw0);
            ops::conv2d_weight_grad(&g, &s, &gdy, &gx, 0.5, 1.0, &gdw);
            let mut dw = dw0.clone();
            cpu::conv2d_weight_grad(&s, &dy, &x, 0.5, 1.0, &mut dw);
            check(
                &format!("conv2d_weight_grad[{vw}] {tag}"),
                &g.read(&gdw),
                &dw,
                1e-5,
            );
        }
        // The transposed convolution runs on the same two families.
        let s = variant_convt_shape();
        let x = rng.vec(s.input_len(), -1.0, 1.0);
        let w = rng.vec(s.weight_len(), -1.0, 1.0);
        let dy = rng.vec(s.output_len(), -1.0, 1.0);
        let (gx, gw, gdy) = (
            g.upload(&[x.len()], &x),
            g.upload(&[w.len()], &w),
            g.upload(&[dy.len()], &dy),
        );
        let gy = g.zeros(&[s.output_len()]);
        ops::conv_transpose2d(&g, &s, &gx, &gw, 0.0, &gy);
        let mut y = vec![0.0; s.output_len()];
        cpu::conv_transpose2d(&s, &x, &w, 0.0, &mut y);
        check(&format!("conv_transpose2d[{vg}]"), &g.read(&gy), &y, 1e-5);
        let gdx = g.zeros(&[s.input_len()]);
        ops::conv_transpose2d_input_grad(&g, &s, &gdy, &gw, 0.0, &gdx);
        let mut dx = vec![0.0; s.input_len()];
        cpu::conv_transpose2d_input_grad(&s, &dy, &w, 0.0, &mut dx);
        check(
            &format!("conv_transpose2d input grad[{v}]"),
            &g.read(&gdx),
            &dx,
            1e-5,
        );
        let gdw = g.zeros(&[s.weight_len()]);
        ops::conv_transpose2d_weight_grad(&g, &s, &gdy, &gx, 1.0, 0.0, &gdw);
        let mut dw = vec![0.0; s.weight_len()];
        cpu::conv_transpose2d_weight_grad(&s, &dy, &x, 1.0, 0.0, &mut dw);
        check(
            &format!("conv_transpose2d weight grad[{vw}]"),
            &g.read(&gdw),
            &dw,
            1e-5,
        );
    }
}

#[test]
fn conv_weight_flip_matches_twin_odd_sizes() {
    let g = gpu();
    let mut rng = Rng::new(43);
    for (cout, cin, kh, kw) in [(1, 1, 1, 1), (7, 5, 3, 3), (67, 17, 5, 5), (3, 70, 3, 5)] {
        let n = cout * cin * kh * kw;
        let w = rng.vec(n, -1.0, 1.0);
        let (gw, gwf) = (g.upload(&[n], &w), g.zeros(&[n]));
        ops::conv_weight_flip(&g, cout, cin, kh, kw, &gw, &gwf);
        let want = cpu::conv_weight_flip(cout, cin, kh, kw, &w);
        // A copy: exact.
        check(
            &format!("conv_weight_flip {cout}x{cin}x{kh}x{kw}"),
            &g.read(&gwf),
            &want,
            0.0,
        );
    }
}

/// The `flipped` input gradient runs the weight flip and the forward kernel (each forward variant
/// in turn) where the convolution has stride 1 and a square kernel, its fallback elsewhere, and
/// matches the twin either way; so does the transposed convolution, which it serves too.
#[test]
fn conv2d_input_grad_flipped_every_forward_variant_odd_sizes() {
    let mut rng = Rng::new(47);
    let g0 = gpu();
    let fallback = Family::Conv2dInputGrad.kernel(Variant::Flipped.fallback(&g0.ctx.features));
    let mut shapes = variant_conv_shapes();
    shapes.extend([
        // Not square: falls back.
        ConvShape {
            batch: 2,
            cin: 6,
            h: 9,
            w: 8,
            cout: 11,
            kh: 3,
            kw: 5,
            stride: 1,
            pad: 1,
        },
        // Padding as wide as the kernel: falls back.
        ConvShape {
            batch: 1,
            cin: 3,
            h: 4,
            w: 5,
            cout: 2,
            kh: 1,
            kw: 1,
            stride: 1,
            pad: 1,
        },
        // AlexNet-F's 384→256 layer, cut down: 130 output, 70 input channels.
        ConvShape {
            batch: 3,
            cin: 130,
            h: 8,
            w: 8,
            cout: 70,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: 1,
        },
    ]);
    let mut applied = 0;
    for v in Family::Conv2d.available(&g0) {
        let g = gpu();
        g.set_variant(Family::Conv2d, v);
        g.set_variant(Family::Conv2dInputGrad, Variant::Flipped);
        for s in &shapes {
            let w = rng.vec(s.weight_len(), -1.0, 1.0);
            let dy = rng.vec(s.output_len(), -1.0, 1.0);
            let (gw, gdy) = (g.upload(&[w.len()], &w), g.upload(&[dy.len()], &dy));
            let tag = format!(
                "{}x{}x{}x{} k{}x{} s{} p{} -> {}",
                s.batch, s.cin, s.h, s.w, s.kh, s.kw, s.stride, s.pad, s.cout
            );
            for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 1.0)] {
                let dx0 = rng.vec(s.input_len(), -1.0, 1.0);
                let gdx = g.upload(&[dx0.len()], &dx0);
                g.set_profiling(true);
                ops::conv2d_input_grad(&g, s, &gdy, &gw, alpha, beta, &gdx);
                let ran: Vec<&str> = g.take_profile().spans.iter().map(|s| s.name).collect();
                g.set_profiling(false);
                match s.input_grad_as_forward() {
                    Some(_) => {
                        applied += 1;
                        assert_eq!(ran, ["conv_weight_flip", Family::Conv2d.kernel(v)], "{tag}")
                    }
                    None => assert_eq!(ran, [fallback], "{tag}"),
                }
                let mut dx = dx0.clone();
                cpu::conv2d_input_grad(s, &dy, &w, alpha, beta, &mut dx);
                check(
                    &format!("conv2d_input_grad[flipped, forward {v}] {tag} a={alpha} b={beta}"),
                    &g.read(&gdx),
                    &dx,
                    1e-5,
                );
            }
        }
        // The transposed convolution's forward pass is this family at stride 2: the fallback.
        let s = variant_convt_shape();
        let x = rng.vec(s.input_len(), -1.0, 1.0);
        let w = rng.vec(s.weight_len(), -1.0, 1.0);
        let gy = g.zeros(&[s.output_len()]);
        ops::conv_transpose2d(
            &g,
            &s,
            &g.upload(&[x.len()], &x),
            &g.upload(&[w.len()], &w),
            0.0,
            &gy,
        );
        let mut y = vec![0.0; s.output_len()];
        cpu::conv_transpose2d(&s, &x, &w, 0.0, &mut y);
        check("conv_transpose2d[flipped]", &g.read(&gy), &y, 1e-5);
    }
    assert!(applied > 0, "no shape took the flipped path");
}

/// The cooperative GEMM's path for subgroups that cannot share loads (smaller than 8, or lanes
/// not in invocation order), which lavapipe never takes by itself.
#[test]
fn gemm_coop_unshared_path_matches_twin() {
    let g = gpu();
    if !Variant::Coop.supported(&g.ctx.features) {
        panic!("gemm coop needs subgroup operations, which this adapter lacks");
    }
    g.set_sharing(Sharing::Unshared);
    let mut rng = Rng::new(43);
    for &(m, n, k) in &[(1usize, 1usize, 1usize), (17, 33, 29), (130, 70, 257)] {
        for (ta, tb) in [(Op::N, Op::N), (Op::N, Op::T), (Op::T, Op::N)] {
            let a = rng.vec(m * k, -1.0, 1.0);
            let b = rng.vec(k * n, -1.0, 1.0);
            let c0 = rng.vec(m * n, -1.0, 1.0);
            let (ga, gb, gc) = (
                g.upload(&[m * k], &a),
                g.upload(&[k * n], &b),
                g.upload(&[m * n], &c0),
            );
            ops::gemm_variant(&g, Variant::Coop, ta, tb, m, n, k, 0.5, &ga, &gb, 1.0, &gc);
            let mut c = c0.clone();
            cpu::gemm(ta, tb, m, n, k, 0.5, &a, &b, 1.0, &mut c);
            check(
                &format!("gemm[coop, unshared] {ta:?}{tb:?} {m}x{n}x{k}"),
                &g.read(&gc),
                &c,
                1e-5,
            );
        }
    }
}

/// The cooperative convolution kernels, both with the subgroup sharing their loads and on the
/// path for subgroups that cannot (smaller than 8, or lanes not in invocation order), which
/// lavapipe never takes by itself. The shapes cut every tile edge, leave reductions that are not
/// multiples of 8, and (3×3 output planes) make the weight gradient's shared loads cross batch
/// items inside one group of 8.
#[test]
fn conv_coop_shared_and_unshared_paths_match_twin() {
    let g = gpu();
    if !Variant::Coop.supported(&g.ctx.features) {
        panic!("the coop convolutions need subgroup operations, which this adapter lacks");
    }
    let mut rng = Rng::new(44);
    let shape = |batch, cin, h, w, cout, k, stride, pad| ConvShape {
        batch,
        cin,
        h,
        w,
        cout,
        kh: k,
        kw: k,
        stride,
        pad,
    };
    for s in [
        shape(2, 19, 13, 11, 37, 3, 1, 1),
        shape(3, 9, 15, 14, 17, 5, 2, 2),
        shape(5, 11, 5, 6, 9, 3, 2, 1),
        shape(2, 3, 7, 7, 5, 3, 1, 0),
    ] {
        let tag = format!(
            "{}x{}x{}x{} k{} s{} p{} -> {}",
            s.batch, s.cin, s.h, s.w, s.kh, s.stride, s.pad, s.cout
        );
        let x = rng.vec(s.input_len(), -1.0, 1.0);
        let w = rng.vec(s.weight_len(), -1.0, 1.0);
        let dy = rng.vec(s.output_len(), -1.0, 1.0);
        let (gx, gw, gdy) = (
            g.upload(&[x.len()], &x),
            g.upload(&[w.len()], &w),
            g.upload(&[dy.len()], &dy),
        );
        let y0 = rng.vec(s.output_len(), -1.0, 1.0);
        let mut y = y0.clone();
        cpu::conv2d(&s, &x, &w, 1.0, &mut y);
        y.iter_mut()
            .zip(&y0)
            .for_each(|(v, v0)| *v = 0.5 * (*v - v0) + v0);
        let dx0 = rng.vec(s.input_len(), -1.0, 1.0);
        let mut dx = dx0.clone();
        cpu::conv2d_input_grad(&s, &dy, &w, 0.5, 1.0, &mut dx);
        let dw0 = rng.vec(s.weight_len(), -1.0, 1.0);
        let mut dw = dw0.clone();
        cpu::conv2d_weight_grad(&s, &dy, &x, 0.5, 1.0, &mut dw);
        for unshared in [false, true] {
            let path = if unshared { "coop, unshared" } else { "coop" };
            let run = |f: Family, a: &fsnn::Tensor, b: &fsnn::Tensor, init: &[f32]| {
                let out = g.upload(&[init.len()], init);
                g.set_sharing(if unshared {
                    Sharing::Unshared
                } else {
                    Sharing::Shared
                });
                match f {
                    Family::Conv2d => {
                        ops::conv2d_variant(&g, Variant::Coop, &s, a, b, 0.5, 1.0, &out)
                    }
                    Family::Conv2dInputGrad => {
                        ops::conv2d_input_grad_variant(&g, Variant::Coop, &s, a, b, 0.5, 1.0, &out)
                    }
                    _ => {
                        ops::conv2d_weight_grad_variant(&g, Variant::Coop, &s, a, b, 0.5, 1.0, &out)
                    }
                }
                g.read(&out)
            };
            check(
                &format!("conv2d[{path}] {tag}"),
                &run(Family::Conv2d, &gx, &gw, &y0),
                &y,
                1e-5,
            );
            check(
                &format!("conv2d_input_grad[{path}] {tag}"),
                &run(Family::Conv2dInputGrad, &gdy, &gw, &dx0),
                &dx,
                1e-5,
            );
            check(
                &format!("conv2d_weight_grad[{path}] {tag}"),
                &run(Family::Conv2dWeightGrad, &gdy, &gx, &dw0),
                &dw,
                1e-5,
            );
        }
    }
}

/// `ops::gemm_variant` (what the measurement dispatches) ignores the recorder's choice.
#[test]
fn gemm_explicit_variant_matches_twin() {
    let g = gpu();
    let mut rng = Rng::new(42);
    let (m, n, k) = (70usize, 37usize, 45usize);
    let a = rng.vec(m * k, -1.0, 1.0);
    let b = rng.vec(k * n, -1.0, 1.0);
    let (ga, gb) = (g.upload(&[m * k], &a), g.upload(&[k * n], &b));
    let mut want = vec![0.0; m * n];
    cpu::gemm(Op::N, Op::T, m, n, k, 1.0, &a, &b, 0.0, &mut want);
    for v in Family::Gemm.available(&g) {
        let gc = g.zeros(&[m * n]);
        ops::gemm_variant(&g, v, Op::N, Op::T, m, n, k, 1.0, &ga, &gb, 0.0, &gc);
        check(&format!("gemm_variant[{v}]"), &g.read(&gc), &want, 1e-5);
    }
}

/// Reports whether the adapter offers subgroup operations (the subgroup and coop GEMMs need them).
#[test]
fn adapter_subgroup_feature_reported() {
    let g = gpu();
    let f = g.ctx.adapter.features();
    let info = g.ctx.adapter.get_info();
    println!(
        "{}: SUBGROUP {}, SUBGROUP_BARRIER {}, subgroup size {}..={}, enabled on the device: {}",
        g.ctx.info.name,
        f.contains(wgpu::Features::SUBGROUP),
        f.contains(wgpu::Features::SUBGROUP_BARRIER),
        info.subgroup_min_size,
        info.subgroup_max_size,
        g.ctx.features.contains(wgpu::Features::SUBGROUP)
    );
    assert_eq!(
        f.contains(wgpu::Features::SUBGROUP),
        g.ctx.features.contains(wgpu::Features::SUBGROUP)
    );
}
