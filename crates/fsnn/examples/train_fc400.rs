//! fc400 on Fashion-MNIST through the library: build the preset's network, train a few hundred
//! IDE steps, evaluate, look at the layer's firing rates, save a checkpoint and load it back.
//!
//! ```sh
//! cargo run --release -p fsnn --example train_fc400 -- 300
//! ```
//! (The dataset is downloaded into datasets/fashion-mnist on first use.)

use anyhow::Result;
use fsnn::batches::BatchSource;
use fsnn::gpu::AdapterChoice;
use fsnn::model::HostRng;
use fsnn::solver::SolverKind;
use fsnn::{Gpu, NetworkSpec};

fn batch(src: &dyn BatchSource, idx: &[usize], seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut x = vec![0.0; idx.len() * src.sample_len()];
    src.fill(idx, seed, &mut x);
    (x, idx.iter().map(|&i| src.label(i)).collect())
}

fn main() -> Result<()> {
    let steps: usize = std::env::args().nth(1).map_or(Ok(300), |s| s.parse())?;
    let gpu = Gpu::new(&AdapterChoice::from_flag_or_env(None))?;
    // A preset, or any model file: NetworkSpec::from_file("models/fc400.toml".as_ref())?
    let spec: NetworkSpec = fsnn::model::spec::preset("fc400")?;
    println!("{}: {} parameters", spec.name, spec.param_count());
    let (train, test) = fsnn::load_sources(&spec.train.dataset, None, spec.neuron.time_steps)?;
    let mut net = fsnn::build(&spec, &gpu, 0)?;

    let b = 128;
    let mut rng = HostRng::new(1);
    let (mut loss, mut correct, mut seen) = (0.0, 0, 0);
    for step in 0..steps {
        let idx: Vec<usize> = (0..b)
            .map(|_| (rng.next_u64() % train.len() as u64) as usize)
            .collect();
        let (x, y) = batch(train.as_ref(), &idx, step as u64);
        let s = net.train_step(&gpu, &x, &y, 0.05, SolverKind::Broyden, 30, step as u32)?;
        (loss, correct, seen) = (loss + s.loss_sum, correct + s.correct, seen + s.samples);
        if (step + 1) % 50 == 0 {
            println!(
                "step {:>4}: train loss {:.4}, accuracy {:.3}",
                step + 1,
                loss / seen as f64,
                correct as f64 / seen as f64
            );
            (loss, correct, seen) = (0.0, 0, 0);
        }
    }

    // Save the trained network (weights, optimizer state and its description).
    let path = std::env::temp_dir().join("fc400-example.safetensors");
    fsnn::save_checkpoint(&path, &spec, &Default::default(), &net.to_host(&gpu))?;

    // Evaluation on the first 1000 test samples, then the layer's rates on the last batch.
    let (test_loss, test_acc) =
        fsnn::train::evaluate(&gpu, net.as_mut(), test.as_ref(), 200, Some(1000))?;
    println!(
        "test loss {test_loss:.4}, accuracy {:.2}%",
        test_acc * 100.0
    );
    for (l, rates) in net.layer_rates(&gpu).iter().enumerate() {
        let n = rates.len().max(1) as f32;
        let mean = rates.iter().sum::<f32>() / n;
        let silent = rates.iter().filter(|&&r| r == 0.0).count() as f32 / n;
        println!(
            "layer {}: mean rate {mean:.3}, {:.1}% silent",
            l + 1,
            silent * 100.0
        );
    }
    let logits = net.logits(&gpu);
    println!(
        "logits of the last test sample: {:?}",
        &logits[logits.len().saturating_sub(spec.classes)..]
    );

    // Rebuild from the checkpoint alone: the same evaluation gives the same numbers.
    let ck = fsnn::read_checkpoint(&path)?;
    let mut again = fsnn::build(&ck.model, &gpu, 0)?;
    again.load_host(&gpu, &ck.host, &path.display().to_string())?;
    let (loss2, acc2) =
        fsnn::train::evaluate(&gpu, again.as_mut(), test.as_ref(), 200, Some(1000))?;
    println!(
        "reloaded from {}: test loss {loss2:.4}, accuracy {:.2}%",
        path.display(),
        acc2 * 100.0
    );
    Ok(())
}
