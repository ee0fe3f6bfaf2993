//! Models that are not presets, from their model files: they build, train (the loss falls and
//! held-out accuracy rises well above chance on a learnable synthetic task), record spikes, and
//! their GPU steps match the f64 reference built from the same description.

use fsnn::model::network::Network;
use fsnn::model::spec::{AdjointForm, NetworkSpec};
use fsnn::model::Model;
use fsnn::reference::adjoint::Solver;
use fsnn::reference::network as refnet;
use fsnn::solver::SolverKind;
use fsnn_tests::{gpu, param, Rng};

fn example(name: &str) -> NetworkSpec {
    let path = format!(
        "{}/../models/examples/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    NetworkSpec::from_file(std::path::Path::new(&path)).unwrap()
}

/// Images whose class is which of `classes` horizontal bands is bright, plus noise.
fn bands(rng: &mut Rng, spec: &NetworkSpec, n: usize) -> (Vec<f32>, Vec<u32>) {
    let len = spec.input_len();
    let classes = spec.classes as u32;
    let mut x = Vec::with_capacity(n * len);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.below(classes);
        labels.push(c);
        for i in 0..len {
            let band = (i * classes as usize / len) as u32;
            x.push(rng.uniform(-0.5, 0.5) + if band == c { 1.5 } else { 0.0 });
        }
    }
    (x, labels)
}

fn trains(mut spec: NetworkSpec, steps: u32, batch: usize) {
    spec.classes = 4;
    let g = gpu();
    let mut net = Network::new(&g, spec.clone(), 3).unwrap();
    let mut rng = Rng::new(8);
    let (tx, tl) = bands(&mut rng, &spec, 64);
    let mut first = None;
    let mut last = 0.0;
    for step in 0..steps {
        let (x, l) = bands(&mut rng, &spec, batch);
        let s = net
            .train_step(&g, &x, &l, 0.05, SolverKind::Broyden, 30, step)
            .unwrap();
        let loss = s.loss_sum / batch as f64;
        assert!(loss.is_finite(), "step {step}: loss {loss}");
        first.get_or_insert(loss);
        last = loss;
    }
    let held = net.eval_batch(&g, &tx, &tl).unwrap();
    let acc = held.correct as f64 / held.samples as f64;
    let rates = net.layer_rates(&g);
    let means: Vec<String> = rates
        .iter()
        .map(|r| format!("{:.3}", r.iter().sum::<f32>() / r.len() as f32))
        .collect();
    println!(
        "{}: loss {:.4} → {last:.4} in {steps} steps; held-out accuracy {acc:.3} (chance 0.25); layer rates {}",
        spec.name,
        first.unwrap(),
        means.join(", ")
    );
    assert_eq!(rates.len(), spec.depth());
    assert!(last < 0.7 * first.unwrap(), "loss did not fall");
    assert!(acc > 0.6, "held-out accuracy {acc}");
}

#[test]
fn two_fc_spiking_layers_train_from_their_model_file() {
    let spec = example("fc2-256");
    assert_eq!(spec.depth(), 2);
    assert_eq!(spec.neurons_per_layer(), vec![256, 256]);
    trains(spec, 30, 32);
}

#[test]
fn conv_model_with_pooling_in_the_loop_trains_from_its_model_file() {
    let mut spec = example("conv-pool");
    spec.neuron.time_steps = 4;
    assert_eq!(spec.neurons_per_layer(), vec![16 * 14 * 14, 16 * 7 * 7]);
    trains(spec, 25, 16);
}

/// `record` returns every layer's spikes for the first samples, and they are the spikes whose
/// weighted sum is the rate the same evaluation reports.
#[test]
fn recorded_spikes_sum_to_the_rates() {
    let mut spec = example("fc2-256");
    spec.classes = 4;
    let g = gpu();
    let mut net = Network::new(&g, spec.clone(), 1).unwrap();
    let mut rng = Rng::new(2);
    let (x, l) = bands(&mut rng, &spec, 8);
    let rec = net.record(&g, &x, &l, 3).unwrap();
    let steps = spec.neuron.time_steps;
    assert_eq!(rec.spikes.len(), 2);
    let mut fired = 0usize;
    for (layer, spikes) in rec.spikes.iter().enumerate() {
        assert_eq!(spikes.len(), steps);
        let n = spec.neurons_per_layer()[layer];
        for i in 0..3 * n {
            let want: f32 = (0..steps)
                .map(|t| spikes[t][i] as f32 * spec.step_weight(t))
                .sum();
            fired += spikes.iter().map(|s| s[i] as usize).sum::<usize>();
            let got = rec.rates[layer][i];
            assert!(
                (got - want).abs() < 1e-5,
                "layer {layer} neuron {i}: {got} vs {want}"
            );
        }
    }
    assert!(fired > 0, "no spikes recorded; vacuous otherwise");
    let r = net.residual(&g).unwrap();
    println!("fc2-256: {fired} spikes recorded; evaluation residual per layer ‖f_l(a)−a_l‖/‖a_l‖ = {r:.3?}");
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|v| v.is_finite() && *v >= 0.0));
}

/// One GPU step (lr 0) against the f64 reference built from the same description, in `form`:
/// the simulated rate, the loss and every parameter gradient.
fn gpu_step_matches_reference(spec: &NetworkSpec, form: AdjointForm, batch: usize) {
    let mut spec = spec.clone();
    spec.adjoint = form;
    let g = gpu();
    let mut net = Network::new(&g, spec.clone(), 4).unwrap();
    let mut rng = Rng::new(21);
    // Running statistics away from (0, 1), so that the simulation's BNs differ from batch BNs.
    for (m, v) in &net.running {
        g.write(m, &rng.vec(m.len(), -0.3, 0.3));
        g.write(v, &rng.vec(v.len(), 0.5, 2.0));
    }
    g.write(&net.params[param(&net, "fb.scale")].value, &[0.7]);
    let host = net.to_host(&g);
    let mut m = refnet::Model::init(&spec, 0);
    for (name, _, data) in &host.tensors {
        if !name.starts_with("optim.") {
            m.load_f32(name, data)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    m.refresh_spectral();
    let x = rng.vec(batch * spec.input_len(), -1.0, 2.0);
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(spec.classes as u32)).collect();
    let stats = net
        .train_step(&g, &x, &labels, 0.0, SolverKind::Broyden, 80, 1)
        .unwrap();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let rate = m
        .forward_sim(&x64, spec.neuron.time_steps, spec.neuron.leak as f64)
        .pop()
        .unwrap();
    let gpu_rate = net.rate(&g);
    let dr = rate
        .iter()
        .zip(&gpu_rate)
        .map(|(a, b)| (a - *b as f64).abs())
        .fold(0.0, f64::max);
    let labels_us: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let step = m.loss_and_grads_paper(&x64, &labels_us, &rate, form, Solver::Dense);
    let gl = stats.loss_sum / batch as f64;
    println!(
        "{} {form:?}: rate max |gpu − reference| {dr:.2e}; loss gpu {gl:.6} reference {:.6}; GPU Broyden {} iterations, residual {:.2e}",
        spec.name, step.loss, stats.solve.iterations, stats.solve.rel_residual
    );
    assert!(dr < 1e-5, "simulations disagree");
    assert!(
        stats.solve.rel_residual < 1e-4,
        "the GPU solve did not converge"
    );
    assert!((gl - step.loss).abs() < 1e-5);
    let mut worst: f64 = 0.0;
    for (name, want) in step.grads.named() {
        let got = g.read(&net.params[param(&net, name)].grad);
        let err = got
            .iter()
            .zip(want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        if m.bias_cancelled_by_bn(name, refnet::BnMode::Batch) && scale < 1e-6 {
            assert!(err < 1e-5, "{name}: {err}");
            continue;
        }
        let rel = err / scale.max(1e-30);
        worst = worst.max(rel);
        assert!(scale > 0.0, "{name} has no gradient; vacuous otherwise");
    }
    println!(
        "{} {form:?}: worst relative gradient error {worst:.2e}",
        spec.name
    );
    assert!(worst < 1e-3, "worst relative gradient error {worst:.3e}");
}

fn small(name: &str, text: &str) -> NetworkSpec {
    NetworkSpec::from_toml(&format!(
        "name = \"{name}\"\nclasses = 4\n[neuron]\ntime_steps = 10\nvth = 2.0\nleak = 0.95\ndropout = 0.0\n{text}"
    ))
    .unwrap()
}

/// fc2-256's shape at a testable size: two FC spiking layers, feedback from the second.
fn small_fc2() -> NetworkSpec {
    small(
        "small-fc2",
        r#"[input]
shape = [12]
[[layers]]
ops = [{ kind = "linear", out = 9 }, { kind = "batchnorm" }]
[[layers]]
ops = [{ kind = "linear", out = 7 }, { kind = "batchnorm" }]
[feedback]
kind = "linear"
"#,
    )
}

/// conv-pool's shape at a testable size: pooling inside the loop, ConvT feedback.
fn small_conv_pool() -> NetworkSpec {
    small(
        "small-conv-pool",
        r#"[input]
shape = [1, 8, 8]
[[layers]]
ops = [{ kind = "conv", out = 3, k = 3, pad = 1 }, { kind = "batchnorm" }]
[[layers]]
ops = [{ kind = "conv", out = 4, k = 3, pad = 1 }, { kind = "batchnorm" }, { kind = "avgpool" }]
[feedback]
kind = "conv_transpose"
k = 2
stride = 2
pad = 0
"#,
    )
}

#[test]
fn two_fc_layers_gpu_step_matches_reference_in_both_forms() {
    for form in [AdjointForm::Authors, AdjointForm::Consistent] {
        gpu_step_matches_reference(&small_fc2(), form, 6);
    }
}

#[test]
fn conv_pool_gpu_step_matches_reference_in_both_forms() {
    for form in [AdjointForm::Authors, AdjointForm::Consistent] {
        gpu_step_matches_reference(&small_conv_pool(), form, 5);
    }
}
