//! Models that are not presets, from their model files: they build, train (the loss falls and
//! held-out accuracy rises well above chance on a learnable synthetic task), and record spikes.

use fsnn::model::network::Network;
use fsnn::model::spec::NetworkSpec;
use fsnn::model::Model;
use fsnn::solver::SolverKind;
use fsnn_tests::{gpu, Rng};

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
    println!("fc2-256: {fired} spikes recorded; evaluation residual ‖f(a)−a‖/‖a‖ = {r:.3}");
    assert!(r.is_finite() && r >= 0.0);
}
