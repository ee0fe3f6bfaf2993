//! The GPU training step against the f64 CPU twin of the whole method (reference module), and the
//! training loop's files: checkpoints, resume, bad input.

use fsnn::kernels::Kernels;
use fsnn::model::network::Network;
use fsnn::model::spec::NetworkSpec;
use fsnn::reference::adjoint::Solver;
use fsnn::reference::network as refnet;
use fsnn::reference::network::AdjointForm;
use fsnn::solver::SolverKind;
use fsnn_tests::{conv_spec, fc_spec, gpu, param, Rng};

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// The f64 reference built from the same description, holding the GPU network's tensors.
pub fn reference_of(cfg: &NetworkSpec, host: &fsnn::model::HostState) -> refnet::Model {
    let mut m = refnet::Model::init(cfg, 0);
    for (name, _, data) in &host.tensors {
        if !name.starts_with("optim.") {
            m.load_f32(name, data)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    m.refresh_spectral();
    m
}

/// Runs one GPU step (lr 0) and the reference's recipe on the same parameters and batch; returns
/// the worst relative gradient error over all parameters. Time-varying input: the reference
/// simulates frame by frame, and f sees the rate-weighted mean frame, as the GPU does.
fn compare_step(cfg: NetworkSpec, batch: usize, seed: u64, fb_scale: Option<f32>) -> f64 {
    let g = gpu();
    let mut net = Network::new(&g, cfg.clone(), seed).unwrap();
    if let Some(s) = fb_scale {
        // Below 1 the clamp is inactive and the scale's own gradient is exercised.
        g.write(&net.params[param(&net, "fb.scale")].value, &[s]);
    }
    let reference = reference_of(&cfg, &net.to_host(&g));
    let mut rng = Rng::new(seed);
    let x = rng.vec(batch * cfg.sample_len(), -1.0, 2.0);
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(cfg.classes as u32)).collect();
    let stats = net
        .train_step(&g, &x, &labels, 0.0, SolverKind::Broyden, 60, 1)
        .unwrap();
    let x64 = to_f64(&x);
    let rate = reference
        .forward_sim(&x64, cfg.neuron.time_steps, cfg.neuron.leak as f64)
        .pop()
        .unwrap();
    let gpu_rate = to_f64(&net.rate(&g));
    let worst = rate
        .iter()
        .zip(&gpu_rate)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!(
        "{}: simulated rate, GPU vs reference: max |difference| {worst:.2e}",
        cfg.name
    );
    assert!(worst < 1e-5, "simulations disagree");
    // The dense path on the same batch: the same spikes, so the same rate to the last bit.
    assert_eq!(net.kernels(), Kernels::Event);
    let mut dense = Network::new(&g, cfg.clone(), seed).unwrap();
    dense.select_kernels(Kernels::Dense);
    if let Some(s) = fb_scale {
        g.write(&dense.params[param(&dense, "fb.scale")].value, &[s]);
    }
    dense
        .train_step(&g, &x, &labels, 0.0, SolverKind::Broyden, 60, 1)
        .unwrap();
    let differ = count_differences(&net.rate(&g), &dense.rate(&g));
    println!(
        "{}: event vs dense simulation: {differ} of {} rates differ",
        cfg.name,
        batch * cfg.neurons()
    );
    assert_eq!(differ, 0, "event and dense simulations disagree");
    let labels_us: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    // One spiking layer: no BN inside the loop, and the consistent form is the implicit
    // gradient at the rate with layer 1's BN on batch statistics.
    let step = reference.loss_and_grads_paper(
        &x64,
        &labels_us,
        &rate,
        AdjointForm::Consistent,
        Solver::Dense,
    );
    let loss = step.loss;
    println!(
        "{}: loss gpu {:.6} reference {:.6}; GPU Broyden {} iterations, residual {:.2e}",
        cfg.name,
        stats.loss_sum / batch as f64,
        loss,
        stats.solve.iterations,
        stats.solve.rel_residual
    );
    assert!(
        (stats.loss_sum / batch as f64 - loss).abs() < 1e-4 * loss.abs().max(1.0),
        "loss differs"
    );
    let mut worst: f64 = 0.0;
    for (name, want) in step.grads.named() {
        let got = to_f64(&g.read(&net.params[param(&net, name)].grad));
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        if reference.bias_cancelled_by_bn(name, refnet::BnMode::Batch) {
            // Cancelled by the batch norm that follows: both are rounding noise.
            println!(
                "{}: {name:<18} max |gpu − reference| {err:.2e} (exactly cancelled by BN)",
                cfg.name
            );
            assert!(err < 1e-5);
            continue;
        }
        let rel = err / scale.max(1e-30);
        println!(
            "{}: {name:<18} worst relative error {rel:.3e} (|grad| max {scale:.3e})",
            cfg.name
        );
        if name != "fb.scale" || scale > 0.0 {
            worst = worst.max(rel);
        }
    }
    worst
}

fn count_differences(a: &[f32], b: &[f32]) -> usize {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count()
}

/// Event and dense forward simulations at the presets' shapes with dropout on (masks drawn from
/// the step's seed): bit-identical rates, loss and parameter gradients.
#[test]
fn event_and_dense_simulations_agree_with_dropout() {
    let g = gpu();
    let mut fc = fc_spec(49, 400, 10, 5, 0.95, 0.2);
    fc.name = "fc400-like".into();
    let mut conv = conv_spec((1, 28, 28), 8, (5, 2, 2), 5, 10, 8, 0.95, 0.2);
    conv.name = "conv64-like".into();
    for (cfg, batch) in [(fc, 32usize), (conv, 6)] {
        let mut rng = Rng::new(77);
        let x = rng.vec(batch * cfg.sample_len(), -1.0, 2.0);
        let labels: Vec<u32> = (0..batch).map(|_| rng.below(cfg.classes as u32)).collect();
        let mut out = Vec::new();
        for k in [Kernels::Event, Kernels::Dense] {
            let mut net = Network::new(&g, cfg.clone(), 4).unwrap();
            net.select_kernels(k);
            assert_eq!(net.kernels(), k);
            let mut losses = Vec::new();
            // Two steps: the second runs on weights the first one updated.
            for seed in [3, 4] {
                let st = net
                    .train_step(&g, &x, &labels, 0.05, SolverKind::Broyden, 30, seed)
                    .unwrap();
                losses.push(st.loss_sum);
            }
            let grads: Vec<f32> = net.params.iter().flat_map(|p| g.read(&p.grad)).collect();
            out.push((net.rate(&g), losses, grads));
        }
        let (e, d) = (&out[0], &out[1]);
        let rates = count_differences(&e.0, &d.0);
        let grads = count_differences(&e.2, &d.2);
        let mean_rate = e.0.iter().map(|&v| v as f64).sum::<f64>() / e.0.len() as f64;
        println!(
            "{}: event vs dense, dropout 0.2, 2 steps: {rates} of {} rates differ (mean rate {mean_rate:.3}), {grads} of {} gradient values differ, losses {:?} vs {:?}",
            cfg.name,
            e.0.len(),
            e.2.len(),
            e.1,
            d.1
        );
        assert_eq!(rates, 0);
        assert_eq!(e.1, d.1);
        assert_eq!(grads, 0);
    }
}

#[test]
fn fc_gpu_step_matches_reference_gradients() {
    let cfg = fc_spec(37, 23, 5, 12, 0.95, 0.0);
    let worst = compare_step(cfg, 9, 3, Some(0.8));
    assert!(worst < 1e-3, "worst relative gradient error {worst:.3e}");
}

/// Evaluation runs one spectral-norm power step, as the authors' hook does on every forward
/// (ALGORITHM.md §4): u, v after `eval_batch` are one CPU power step from u before.
#[test]
fn eval_runs_the_spectral_norm_power_step() {
    let g = gpu();
    let cfg = fc_spec(19, 13, 3, 4, 1.0, 0.0);
    let mut net = Network::new(&g, cfg.clone(), 5).unwrap();
    let w = g.read(&net.params[param(&net, "fb.weight")].value);
    let mut u = g.read(&net.sn.u);
    let mut v = g.read(&net.sn.v);
    let u0 = u.clone();
    fsnn::cpu::power_iteration(13, 13, &w, &mut u, &mut v);
    let mut rng = Rng::new(1);
    let x = rng.vec(4 * 19, -1.0, 2.0);
    net.eval_batch(&g, &x, &[0, 1, 2, 0]).unwrap();
    let (ug, vg) = (g.read(&net.sn.u), g.read(&net.sn.v));
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    println!(
        "eval power step: u moved {:.2e}; GPU vs CPU step: u {:.2e}, v {:.2e}",
        diff(&u0, &u),
        diff(&ug, &u),
        diff(&vg, &v)
    );
    assert!(
        diff(&u0, &u) > 1e-4,
        "the step should move u; vacuous otherwise"
    );
    assert!(diff(&ug, &u) < 1e-5 && diff(&vg, &v) < 1e-5);
}

#[test]
fn time_varying_input_gpu_step_matches_reference_gradients() {
    let mut cfg = conv_spec((2, 10, 10), 4, (5, 2, 2), 3, 3, 7, 0.9, 0.0);
    cfg.name = "nmnist-test".into();
    cfg.input.time_varying = true;
    let worst = compare_step(cfg, 5, 9, Some(0.6));
    assert!(worst < 1e-3, "worst relative gradient error {worst:.3e}");
}

#[test]
fn conv_gpu_step_matches_reference_gradients() {
    let cfg = conv_spec((2, 9, 11), 5, (5, 2, 2), 3, 4, 10, 1.0, 0.0);
    let worst = compare_step(cfg, 6, 5, Some(0.7));
    assert!(worst < 1e-3, "worst relative gradient error {worst:.3e}");
}

// ------------------------------------------------------------- training loop

use std::path::Path;

use fsnn::model::spec::{self, OpSpec};
use fsnn::train::{self, TrainConfig};

/// Writes a tiny learnable IDX dataset (class = which image quadrant is bright) into `dir`.
fn write_synthetic_idx(dir: &Path, n_train: usize, n_test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(77);
    for (images, labels, n) in [
        (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            n_train,
        ),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", n_test),
    ] {
        let mut img = vec![0, 0, 8, 3];
        img.extend((n as u32).to_be_bytes());
        img.extend(28u32.to_be_bytes());
        img.extend(28u32.to_be_bytes());
        let mut lab = vec![0, 0, 8, 1];
        lab.extend((n as u32).to_be_bytes());
        for _ in 0..n {
            let c = rng.below(4) as usize;
            lab.push(c as u8);
            for y in 0..28 {
                for x in 0..28 {
                    let q = (y / 14) * 2 + x / 14;
                    let base = if q == c { 180.0 } else { 20.0 };
                    img.push((base + rng.uniform(0.0, 60.0)) as u8);
                }
            }
        }
        std::fs::write(dir.join(images), img).unwrap();
        std::fs::write(dir.join(labels), lab).unwrap();
    }
}

fn tiny_config(data: &Path, out: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        dataset: "mnist".into(),
        data_dir: Some(data.to_path_buf()),
        epochs,
        lr: 0.05,
        batch_size: 32,
        schedule: vec![2],
        warmup: 3,
        solver: SolverKind::Broyden,
        threshold: 30,
        seed: 11,
        out: out.to_path_buf(),
        resume: false,
        limit_train: None,
        limit_test: None,
        eval_batch: 50,
        quiet: true,
        profile: false,
        trace: None,
        checkpoint_every: 0,
        force: false,
        resize: None,
        kernels: Kernels::Event,
    }
}

/// fc400 with 40 hidden neurons.
fn small_fc() -> NetworkSpec {
    fc_hidden(40)
}

fn fc_hidden(hidden: usize) -> NetworkSpec {
    let mut s = spec::preset("fc400").unwrap();
    s.layers[0].ops[0] = OpSpec::Linear {
        out: hidden,
        bias: true,
    };
    s.name = "fc40".into();
    s
}

#[test]
fn training_learns_writes_metrics_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_synthetic_idx(&data, 256, 100);
    let g = gpu();
    // Straight through: 3 epochs.
    let full = tmp.path().join("full");
    let m_full = train::train(&g, small_fc(), &tiny_config(&data, &full, 3)).unwrap();
    assert_eq!(m_full.len(), 3);
    let last = m_full.last().unwrap();
    println!(
        "synthetic 4-class task after 3 epochs: test acc {:.3}, loss {:.4}",
        last.test_acc, last.test_loss
    );
    assert!(
        last.test_acc > 0.9,
        "did not learn the synthetic task: {:?}",
        last
    );
    assert!(
        m_full[0].lr > 0.0 && (m_full[2].lr - 0.005).abs() < 1e-7,
        "schedule: {:?}",
        m_full.iter().map(|m| m.lr).collect::<Vec<_>>()
    );
    // Metrics file: one JSON object per epoch with the agreed fields.
    let lines = train::read_metrics(&full.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.len(), 3);
    let raw = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    for key in [
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "seconds",
        "samples_per_sec",
        "solver_iters_mean",
        "forward_residual_mean",
    ] {
        assert!(first.get(key).is_some(), "metrics line lacks {key}");
    }
    assert!(full.join("metrics.png").exists() && full.join("best.safetensors").exists());
    // 2 epochs, then --resume for the third: the same numbers.
    let split = tmp.path().join("split");
    train::train(&g, small_fc(), &tiny_config(&data, &split, 2)).unwrap();
    let mut cfg = tiny_config(&data, &split, 3);
    cfg.resume = true;
    let m_resumed = train::train(&g, small_fc(), &cfg).unwrap();
    assert_eq!(m_resumed.len(), 1);
    println!(
        "epoch 3 straight: loss {:.6} acc {:.4}; resumed: loss {:.6} acc {:.4}",
        last.train_loss, last.test_acc, m_resumed[0].train_loss, m_resumed[0].test_acc
    );
    assert_eq!(
        m_resumed[0].train_loss, last.train_loss,
        "resume is not exact"
    );
    assert_eq!(m_resumed[0].test_acc, last.test_acc);
}

#[test]
fn checkpoint_of_another_model_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_synthetic_idx(&data, 64, 50);
    let g = gpu();
    let out = tmp.path().join("run");
    train::train(&g, small_fc(), &tiny_config(&data, &out, 1)).unwrap();
    let other = fc_hidden(41);
    let mut cfg = tiny_config(&data, &out, 2);
    cfg.resume = true;
    let err = format!(
        "{:#}",
        train::train(&g, other.clone(), &cfg).expect_err("resumed a checkpoint of another shape")
    );
    println!("{err}");
    assert!(
        err.contains("last.safetensors")
            && err.contains("checkpoint is of another model")
            && err.contains("layers differ"),
        "{err}"
    );
    // Loading its tensors into a differently shaped net names the tensor and both shapes.
    let (_, _, host) = train::load_checkpoint(&out.join("last.safetensors")).unwrap();
    let mut net = Network::new(&g, other, 0).unwrap();
    let err = format!("{:#}", net.load_host(&g, &host, "ckpt").err().unwrap());
    assert!(
        err.contains("fx.weight") && err.contains("[40, 784]") && err.contains("[41, 784]"),
        "{err}"
    );
    // Not a checkpoint at all.
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let err = format!("{:#}", train::load_checkpoint(&junk).err().unwrap());
    assert!(err.contains("junk.safetensors"), "{err}");
}

#[test]
fn non_finite_loss_stops_and_keeps_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_synthetic_idx(&data, 96, 50);
    let g = gpu();
    let out = tmp.path().join("run");
    train::train(&g, small_fc(), &tiny_config(&data, &out, 1)).unwrap();
    let before = std::fs::read(out.join("last.safetensors")).unwrap();
    let mut cfg = tiny_config(&data, &out, 2);
    cfg.resume = true;
    cfg.lr = 1e30;
    // A changed --lr is refused on resume unless forced.
    cfg.force = true;
    let err = format!(
        "{:#}",
        train::train(&g, small_fc(), &cfg).expect_err("an exploding run must stop")
    );
    println!("{err}");
    assert!(
        err.contains("non-finite loss") && err.contains("last.safetensors"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("last.safetensors")).unwrap(),
        before,
        "the last good checkpoint was overwritten"
    );
}

#[test]
fn training_memory_does_not_grow_with_time_steps() {
    // A device of its own: the byte counter is per device, and other tests allocate concurrently.
    let g = fsnn_tests::private_gpu();
    let mut sizes = Vec::new();
    for t in [5usize, 30, 100] {
        let mut cfg = small_fc();
        cfg.neuron.time_steps = t;
        let before = g.memory_bytes().0;
        g.reset_peak_memory();
        let mut net = Network::new(&g, cfg.clone(), 1).unwrap();
        let mut rng = Rng::new(t as u64);
        let x = rng.vec(16 * 784, -1.0, 2.0);
        let labels: Vec<u32> = (0..16).map(|_| rng.below(10)).collect();
        net.train_step(&g, &x, &labels, 0.05, SolverKind::Broyden, 30, 1)
            .unwrap();
        net.train_step(&g, &x, &labels, 0.05, SolverKind::Broyden, 30, 2)
            .unwrap();
        let peak = g.memory_bytes().1 - before;
        println!("T={t:<4} peak GPU bytes of model + training step: {peak}");
        sizes.push(peak);
        drop(net);
    }
    assert!(
        sizes.iter().all(|&s| s == sizes[0]),
        "GPU memory depends on T: {sizes:?}"
    );
}

#[test]
fn trace_of_a_training_step_is_chrome_trace_json() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_synthetic_idx(&data, 64, 50);
    let g = gpu();
    let mut cfg = tiny_config(&data, &tmp.path().join("run"), 1);
    let trace = tmp.path().join("step.trace.json");
    cfg.trace = Some(trace.clone());
    cfg.profile = true;
    train::train(&g, small_fc(), &cfg).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = v["traceEvents"].as_array().expect("traceEvents array");
    let names: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    println!("trace: {} events, kernels {:?}", events.len(), names);
    for e in events {
        assert_eq!(e["ph"], "X");
        assert!(e["ts"].as_f64().unwrap() >= 0.0 && e["dur"].as_f64().unwrap() >= 0.0);
    }
    // tiny_config runs the event-driven simulation: one fc_event_sim per forward pass.
    for k in [
        "gemm",
        "fc_event_sim",
        "solver_dots",
        "solver_track",
        "solver_combine",
        "bn_stats",
        "power_iteration",
        "sgd",
        "softmax_xent",
    ] {
        // The kernel itself or one of its variants (gemm_coop, solver_dots_coop, …).
        let variant = format!("{k}_");
        assert!(
            names.iter().any(|n| *n == k || n.starts_with(&variant)),
            "kernel {k} missing from the trace: {names:?}"
        );
    }
    let total: f64 = events.iter().map(|e| e["dur"].as_f64().unwrap()).sum();
    assert!(total > 0.0);
}

/// The N-MNIST path end to end on real recordings: events binned into T frames, time-varying
/// input, checkpoints and metrics. `limits` caps the training and test samples.
fn nmnist_trains_end_to_end(dir: &Path, limits: (usize, usize)) {
    assert!(
        dir.join("Train").is_dir() && dir.join("Test").is_dir(),
        "N-MNIST recordings missing: expected Train/ and Test/ under {} (a relative path is taken from {})",
        dir.display(),
        std::env::current_dir().unwrap_or_default().display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let g = gpu();
    let cfg = NetworkSpec::from_toml(
        r#"
name = "nmnist-tiny"
classes = 10
[input]
shape = [2, 34, 34]
time_varying = true
[neuron]
time_steps = 4
vth = 2.0
leak = 0.95
dropout = 0.2
[[layers]]
ops = [{ kind = "conv", out = 4, k = 5, stride = 2, pad = 2 }, { kind = "batchnorm" }]
[feedback]
kind = "conv"
k = 3
pad = 1
"#,
    )
    .unwrap();
    let mut tc = tiny_config(dir, &tmp.path().join("run"), 1);
    tc.dataset = "nmnist".into();
    tc.limit_train = Some(limits.0);
    tc.limit_test = Some(limits.1);
    tc.solver = SolverKind::FixedPoint;
    let m = train::train(&g, cfg, &tc).unwrap();
    println!("nmnist tiny: {:?}", m[0]);
    assert!(m[0].train_loss.is_finite() && m[0].test_loss.is_finite());
    assert!(tmp.path().join("run/last.safetensors").exists());
}

/// On the recordings committed under tests/fixtures (20 training, 10 test), so that a clean
/// clone runs it.
#[test]
fn nmnist_fixture_trains_end_to_end_with_time_varying_input() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nmnist-mini");
    nmnist_trains_end_to_end(&dir, (20, 10));
}

/// The longer variant on the full subset, only where `FSNN_NMNIST_DIR` names it (the repository
/// does not ship it): without the variable it reports that it did not run.
#[test]
fn nmnist_full_subset_trains_end_to_end() {
    let Some(dir) = std::env::var_os("FSNN_NMNIST_DIR") else {
        println!("nmnist_full_subset_trains_end_to_end: not run (set FSNN_NMNIST_DIR to run it)");
        return;
    };
    nmnist_trains_end_to_end(Path::new(&dir), (64, 40));
}

/// `folder:PATH` end to end with a multi-layer model: PNG images in train/<class>/ and test/<class>/.
#[test]
fn image_folder_trains_a_multilayer_model_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("imgs");
    let mut rng = Rng::new(3);
    for split in ["train", "test"] {
        for (c, class) in ["dark", "light"].iter().enumerate() {
            let d = root.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..12 {
                let base = if c == 0 { 40.0 } else { 200.0 };
                let img = image::RgbImage::from_fn(8, 8, |_, _| {
                    let v = (base + rng.uniform(-30.0, 30.0)) as u8;
                    image::Rgb([v, v / 2, 255 - v])
                });
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    let g = gpu();
    let cfg = NetworkSpec::from_toml(
        r#"
name = "folder-tiny"
classes = 2
adjoint = "consistent"
[input]
shape = [3, 8, 8]
[neuron]
time_steps = 4
vth = 2.0
leak = 0.99
dropout = 0.0
[[layers]]
ops = [{ kind = "conv", out = 4, k = 3, pad = 1 }, { kind = "batchnorm" }]
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
    let mut tc = tiny_config(&root, &tmp.path().join("run"), 3);
    tc.dataset = format!("folder:{}", root.display());
    tc.data_dir = None;
    tc.batch_size = 8;
    let m = train::train(&g, cfg, &tc).unwrap();
    println!("folder tiny: {:?}", m.last().unwrap());
    assert!(m.iter().all(|e| e.train_loss.is_finite()));
}

/// Checkpoints written before model files (their description the old `ModelConfig` JSON, their
/// tensors the hand-built single- and multi-layer models', one training step in; written by those
/// models at commit 8f55ecf, before they were deleted, with the evaluation loss they gave): read
/// back as network descriptions, their tensors load into the Network by the same names, and they
/// evaluate as the old models did.
#[test]
fn checkpoints_from_before_model_files_load_into_the_network() {
    let g = gpu();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for name in ["fc40", "tiny"] {
        let path = dir.join(format!("legacy-{name}.safetensors"));
        let want: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("legacy-{name}.json"))).unwrap(),
        )
        .unwrap();
        let mut rng = Rng::new(9);
        let x = rng.vec(8 * 784, -0.5, 2.5);
        let y: Vec<u32> = (0..8).map(|_| rng.below(10)).collect();
        let ck = train::read_checkpoint(&path).unwrap();
        assert_eq!(ck.model.name, name);
        let mut net = fsnn::build(&ck.model, &g, 0).unwrap();
        net.load_host(&g, &ck.host, "old checkpoint").unwrap();
        let got = net.eval_batch(&g, &x, &y).unwrap();
        let want_loss = want["loss_sum"].as_f64().unwrap();
        println!(
            "{name}: old loss {:.6}, network loss {:.6}",
            want_loss / 8.0,
            got.loss_sum / 8.0
        );
        assert!(
            (got.loss_sum - want_loss).abs() <= 1e-4 * want_loss.abs().max(1.0),
            "{name}: {} vs {want_loss}",
            got.loss_sum
        );
        assert_eq!(got.correct as u64, want["correct"].as_u64().unwrap());
    }
}
