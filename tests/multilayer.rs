//! The multi-layer GPU model (transposed-conv feedback, BN inside the loop) against the f64
//! reference: simulation, the paper's gradient recipe, and the preset counts.

use fsnn::model::network::Network;
use fsnn::model::spec::{self, AdjointForm, NetworkSpec};
use fsnn::reference::adjoint::Solver;
use fsnn::reference::network as reference;
use fsnn::solver::SolverKind;
use fsnn_tests::{gpu, param, Rng};

/// Three conv layers with BN (2×8×8 → 3×8×8 → 4×4×4 → 3×4×4), ConvT feedback back to 3×8×8.
fn small(dropout: f32) -> NetworkSpec {
    spec::NetworkSpec::from_toml(&format!(
        r#"
name = "multi-test"
classes = 4
adjoint = "authors"
[input]
shape = [2, 8, 8]
[neuron]
time_steps = 12
vth = 2.0
leak = 0.95
dropout = {dropout}
[[layers]]
ops = [{{ kind = "conv", out = 3, k = 3, pad = 1 }}, {{ kind = "batchnorm" }}]
[[layers]]
ops = [{{ kind = "conv", out = 4, k = 3, stride = 2, pad = 1 }}, {{ kind = "batchnorm" }}]
[[layers]]
ops = [{{ kind = "conv", out = 3, k = 3, pad = 1 }}, {{ kind = "batchnorm" }}]
[feedback]
kind = "conv_transpose"
k = 3
stride = 2
pad = 1
output_pad = 1
"#
    ))
    .unwrap()
}

/// One GPU training step against the f64 reference's recipe in `form` (ALGORITHM.md §4): the
/// same simulated rate, loss and every parameter gradient. In the authors' form the adjoint's
/// BN backward couples the samples; the GPU's per-sample Broyden must still reach the dense
/// solution of the coupled system.
fn check_step(form: AdjointForm) {
    let g = gpu();
    let mut cfg = small(0.0);
    cfg.adjoint = form;
    let mut net = Network::new(&g, cfg.clone(), 4).unwrap();
    let mut rng = Rng::new(21);
    let batch = 5;
    // Running statistics away from (0, 1), so the simulation's BN differs from the batch BN.
    for l in 1..3 {
        let c = cfg.layer_shapes()[l].channels();
        g.write(&net.running[l].0, &rng.vec(c, -0.3, 0.3));
        g.write(&net.running[l].1, &rng.vec(c, 0.5, 2.0));
    }
    g.write(&net.params[param(&net, "fb.scale")].value, &[0.7]);
    let host = net.to_host(&g);
    let mut m = reference::Model::init(&cfg, 0);
    for (name, _, data) in &host.tensors {
        if !name.starts_with("optim.") {
            m.load_f32(name, data)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    m.refresh_spectral();
    let x = rng.vec(batch * cfg.input_len(), -1.0, 2.0);
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(cfg.classes as u32)).collect();
    let stats = net
        .train_step(&g, &x, &labels, 0.0, SolverKind::Broyden, 80, 1)
        .unwrap();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let rates = m.forward_sim(&x64, cfg.neuron.time_steps, cfg.neuron.leak as f64);
    let rate = rates.last().unwrap();
    let gpu_rate: Vec<f64> = net.rate(&g).iter().map(|&v| v as f64).collect();
    let dr = rate
        .iter()
        .zip(&gpu_rate)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!("multi: simulated last-layer rate, GPU vs reference: max |difference| {dr:.2e}");
    assert!(dr < 1e-5, "simulations disagree");
    let labels_us: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let step = m.loss_and_grads_paper(&x64, &labels_us, rate, form, Solver::Dense);
    let gl = stats.loss_sum / batch as f64;
    println!(
        "multi {form:?}: loss gpu {gl:.6} reference {:.6}; GPU Broyden {} iterations, residual {:.2e}",
        step.loss, stats.solve.iterations, stats.solve.rel_residual
    );
    assert!(
        stats.solve.rel_residual < 1e-4,
        "the GPU solve did not converge"
    );
    assert!((gl - step.loss).abs() < 1e-5);
    let mut worst: f64 = 0.0;
    for (i, (name, want)) in step.grads.named().into_iter().enumerate() {
        assert_eq!(net.params[i].name, name);
        let got: Vec<f64> = g
            .read(&net.params[i].grad)
            .iter()
            .map(|&v| v as f64)
            .collect();
        let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let err = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        if name.ends_with(".bias") && !name.starts_with("classifier") && scale < 1e-6 {
            // Followed by a batch-statistics BN: exactly cancelled, both are rounding noise.
            println!(
                "multi {form:?}: {name:<22} max |gpu − reference| {err:.2e} (cancelled by BN)"
            );
            assert!(err < 1e-5);
            continue;
        }
        let rel = err / scale.max(1e-30);
        println!(
            "multi {form:?}: {name:<22} worst relative error {rel:.3e} (|grad| max {scale:.3e})"
        );
        worst = worst.max(rel);
    }
    assert!(worst < 1e-3, "worst relative gradient error {worst:.3e}");
}

#[test]
fn multilayer_gpu_step_matches_reference_authors_adjoint() {
    check_step(AdjointForm::Authors);
}

#[test]
fn multilayer_gpu_step_matches_reference_consistent_adjoint() {
    check_step(AdjointForm::Consistent);
}

/// Evaluation runs the spectral-norm power step as the authors' hook does on every forward
/// (ALGORITHM.md §4): the GPU's eval loss matches the reference after one power step with
/// evaluation-mode BN everywhere, and u, v move to the reference's.
#[test]
fn multilayer_eval_runs_the_power_step_and_matches_reference() {
    let g = gpu();
    let cfg = small(0.2);
    let mut net = Network::new(&g, cfg.clone(), 9).unwrap();
    let mut rng = Rng::new(33);
    for l in 0..3 {
        let c = cfg.layer_shapes()[l].channels();
        g.write(&net.running[l].0, &rng.vec(c, -0.3, 0.3));
        g.write(&net.running[l].1, &rng.vec(c, 0.5, 2.0));
    }
    let host = net.to_host(&g);
    let mut m = reference::Model::init(&cfg, 0);
    for (name, _, data) in &host.tensors {
        if !name.starts_with("optim.") {
            m.load_f32(name, data).unwrap();
        }
    }
    m.input_bn = reference::BnMode::Running;
    let u_before = m.fb_u.clone();
    m.refresh_spectral();
    let batch = 6;
    let x = rng.vec(batch * cfg.input_len(), -1.0, 2.0);
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(cfg.classes as u32)).collect();
    let stats = net.eval_batch(&g, &x, &labels).unwrap();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let rate = m.forward_sim(&x64, cfg.neuron.time_steps, cfg.neuron.leak as f64);
    let labels_us: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let want = m.loss(rate.last().unwrap(), &labels_us);
    let got = stats.loss_sum / batch as f64;
    let u_gpu = g.read(&net.sn.u);
    let du = u_gpu
        .iter()
        .zip(&m.fb_u)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    let moved = u_before
        .iter()
        .zip(&m.fb_u)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!("multi eval: loss gpu {got:.6} reference {want:.6}; u after eval max |gpu − reference| {du:.2e} (the step moved u by {moved:.2e})");
    assert!(
        moved > 1e-4,
        "the power step should move u; vacuous otherwise"
    );
    assert!(du < 1e-5, "eval did not run the reference's power step");
    assert!((got - want).abs() < 1e-5, "eval loss differs");
}

/// The feedback ConvT weight is unit-norm per output channel (dim 1), so AlexNet-F starts with
/// σ(w) < 1: clamp(g) = g and g's gradient is live from the first step (ALGORITHM.md §4).
#[test]
fn alexnet_f_feedback_scale_is_learnable_from_the_first_step() {
    let g = gpu();
    let mut cfg = spec::preset("alexnet-f").unwrap();
    cfg.neuron.time_steps = 4;
    cfg.neuron.dropout = 0.0;
    let mut net = Network::new(&g, cfg.clone(), 0).unwrap();
    // At initialisation the deepest layer is silent (running statistics 0/1), and while its
    // rate is 0 so is ∂L/∂W_fb; inner BN shifts of vth/2 make every layer fire, as in training.
    for p in net
        .params
        .iter()
        .filter(|p| p.name.ends_with("bn.bias") && p.name != "bn.bias")
    {
        g.write(&p.value, &vec![1.0; p.value.len()]);
    }
    let fb = net
        .params
        .iter()
        .position(|p| p.name == "fb.weight")
        .unwrap();
    let w = g.read(&net.params[fb].value);
    let (cin, cout, kk) = (256, 96, 9);
    for o in [0, 37, 95] {
        let n2: f32 = (0..cin)
            .flat_map(|i| (0..kk).map(move |t| (i * cout + o) * kk + t))
            .map(|k| w[k] * w[k])
            .sum();
        assert!((n2 - 1.0).abs() < 1e-4, "output channel {o}: |w|² = {n2}");
    }
    let scale = g.read(&net.params[fb + 1].value)[0];
    println!("alexnet-f: feedback g at initialisation {scale:.4}");
    assert!(
        scale < 1.0 && scale > 0.5,
        "g = σ(w) should be below 1: {scale}"
    );
    let mut rng = Rng::new(2);
    let batch = 2;
    let x = rng.vec(batch * cfg.input_len(), -1.0, 2.0);
    net.train_step(&g, &x, &[3, 7], 0.0, SolverKind::Broyden, 4, 0)
        .unwrap();
    let dg = g.read(&net.params[fb + 1].grad)[0];
    let rate = net.rate(&g);
    let mean_rate = rate.iter().sum::<f32>() / rate.len() as f32;
    println!("alexnet-f: ∂L/∂g after one step {dg:.3e} (last layer's mean rate {mean_rate:.3})");
    assert!(
        mean_rate > 0.05,
        "the last layer should fire; vacuous otherwise"
    );
    assert!(dg != 0.0 && dg.is_finite(), "g receives no gradient");
}

#[test]
fn multilayer_training_with_dropout_lowers_the_loss() {
    let g = gpu();
    let cfg = small(0.2);
    let mut net = Network::new(&g, cfg.clone(), 1).unwrap();
    let mut rng = Rng::new(5);
    let batch = 16;
    let x = rng.vec(batch * cfg.input_len(), -1.0, 2.0);
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(cfg.classes as u32)).collect();
    let mut losses = Vec::new();
    for step in 0..25 {
        let s = net
            .train_step(&g, &x, &labels, 0.05, SolverKind::Broyden, 30, step)
            .unwrap();
        assert!(s.loss_sum.is_finite());
        losses.push(s.loss_sum / batch as f64);
    }
    println!(
        "multi: loss on a fixed batch: {:.4} → {:.4}",
        losses[0], losses[24]
    );
    assert!(losses[24] < 0.85 * losses[0], "{losses:?}");
}

#[test]
fn cifar_presets_have_the_papers_counts() {
    for (name, params, neurons) in [
        ("alexnet-f", 3_709_515, 158_720),
        ("alexnet-f-100", 5_184_165, 158_720),
        ("cifarnet-f", 11_840_011, 232_448),
        ("cifarnet-f-100", 14_789_221, 232_448),
    ] {
        let p = spec::preset(name).unwrap();
        println!(
            "{name}: {} parameters, {} neurons",
            p.param_count(),
            p.paper_neurons()
        );
        assert_eq!(p.param_count(), params, "{name} parameters");
        assert_eq!(
            p.paper_neurons(),
            neurons,
            "{name} neurons (with the 3×32×32 inputs)"
        );
    }
}

/// The `cifar10`/`cifar100` datasets are normalised with the published constants
/// (ALGORITHM.md §4), a `folder:` dataset with its training split's own channel statistics (both
/// splits alike), as the README says.
#[test]
fn cifar_uses_published_constants_and_folders_their_own_statistics() {
    use fsnn::batches::load_sources;
    use fsnn::data::{CIFAR_MEAN, CIFAR_STD};
    let dir = tempfile::tempdir().unwrap();
    let pixel = |r: usize, i: usize| ((r * 31 + i * 7) % 256) as u8;
    let record = |r: usize, label: u8| {
        let mut v = vec![label];
        v.extend((0..3072).map(|i| pixel(r, i)));
        v
    };
    for b in 1..=5 {
        std::fs::write(
            dir.path().join(format!("data_batch_{b}.bin")),
            record(b, b as u8),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("test_batch.bin"), record(9, 3)).unwrap();
    let (_, test) = load_sources("cifar10", Some(dir.path()), 1).unwrap();
    let mut out = vec![0.0f32; 3072];
    test.fill(&[0], 0, &mut out);
    let worst = (0..3072)
        .map(|i| {
            let c = i / 1024;
            let want = (pixel(9, i) as f32 / 255.0 - CIFAR_MEAN[c]) / CIFAR_STD[c];
            (out[i] - want).abs()
        })
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "cifar10 test split: {worst}");

    // An image folder: the test split uses the training split's mean and std.
    let root = tempfile::tempdir().unwrap();
    let mut train_px: Vec<[u8; 3]> = Vec::new();
    for (split, n) in [("train", 4), ("test", 1)] {
        for class in ["a", "b"] {
            let d = root.path().join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for k in 0..n {
                let img = image::RgbImage::from_fn(4, 4, |x, y| {
                    let v = (x * 40 + y * 9 + k * 17 + class.len() as u32 * 3) as u8;
                    image::Rgb([v, v / 2, 255 - v])
                });
                if split == "train" {
                    train_px.extend(img.pixels().map(|p| p.0));
                }
                img.save(d.join(format!("{k}.png"))).unwrap();
            }
        }
    }
    let name = format!("folder:{}", root.path().display());
    let (_, test) = load_sources(&name, None, 1).unwrap();
    let mut out = vec![0.0f32; 48];
    test.fill(&[0], 0, &mut out);
    let n = train_px.len() as f64;
    for c in 0..3 {
        let mean = train_px.iter().map(|p| p[c] as f64 / 255.0).sum::<f64>() / n;
        let var = train_px
            .iter()
            .map(|p| (p[c] as f64 / 255.0 - mean).powi(2))
            .sum::<f64>()
            / n;
        // Pixel (0, 0) of channel c; both test images are alike (k = 0, one-letter classes).
        let v = 3u8;
        let raw = [v, v / 2, 255 - v][c];
        let want = ((raw as f64 / 255.0 - mean) / var.sqrt()) as f32;
        let got = out[c * 16];
        assert!((got - want).abs() < 1e-4, "channel {c}: {got} vs {want}");
    }
}

/// The adjoint form travels with the model description into checkpoints; one written before the
/// choice existed was trained with the consistent form and reads back as such.
#[test]
fn adjoint_form_is_recorded_and_old_descriptions_read_as_consistent() {
    let cfg = spec::preset("alexnet-f").unwrap();
    let mut json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["adjoint"], "authors");
    let back: NetworkSpec = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, cfg);
    json.as_object_mut().unwrap().remove("adjoint");
    let old: NetworkSpec = serde_json::from_value(json).unwrap();
    assert_eq!(old.adjoint, AdjointForm::Consistent);
}
