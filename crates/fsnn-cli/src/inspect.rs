//! `fsnn inspect`: firing statistics, the equilibrium residual against T, spike rasters and
//! rate histograms of a trained network (the work is in `fsnn::inspect`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use fsnn::gpu::Gpu;
use fsnn::inspect::{self, Options};

use crate::Global;

#[derive(ClapArgs)]
pub struct Args {
    /// A checkpoint written by `fsnn train` (its model is built from the checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Default: the dataset the checkpoint's run trained on.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Read the dataset from DIR instead of datasets/<name>.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Samples whose spikes are recorded (rasters).
    #[arg(long, value_name = "K", default_value_t = 4)]
    pub samples: usize,
    /// Test samples in the inspected batch (the first of the test split).
    #[arg(long, value_name = "B", default_value_t = 64)]
    pub batch: usize,
    /// T values of the residual sweep, comma-separated (the trained T is always added).
    #[arg(long, value_delimiter = ',', default_value = "5,10,20,30,50")]
    pub time_steps: Vec<usize>,
    /// Resize every image of a folder: dataset to WxH.
    #[arg(long, value_name = "WxH", value_parser = crate::train::parse_size)]
    pub resize: Option<(u32, u32)>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write a spike raster and a firing-rate histogram per layer (PNG) into DIR.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
}

pub fn run(g: &Global, a: &Args) -> Result<()> {
    if a.batch == 0 {
        bail!("--batch must be at least 1, got 0");
    }
    if a.samples > a.batch {
        bail!(
            "--samples {} is more than --batch {}: the recorded samples are the batch's first",
            a.samples,
            a.batch
        );
    }
    let ck = fsnn::read_checkpoint(&a.checkpoint)?;
    let spec = &ck.model;
    let ds = a
        .dataset
        .clone()
        .unwrap_or_else(|| crate::train::checkpoint_dataset(&ck));
    let gpu = Gpu::new(&g.adapter)?;
    fsnn::checks::fits_gpu(&gpu, spec, a.batch, None, "--batch")?;
    let source = a.checkpoint.display().to_string();
    let mut data = |t: usize| -> Result<(Vec<f32>, Vec<u32>)> {
        // Event data is binned into T frames: the batch is loaded again for each T.
        let t = if spec.input.time_varying {
            t
        } else {
            spec.neuron.time_steps
        };
        let (_, test) = fsnn::batches::load_sources_sized(&ds, a.data_dir.as_deref(), t, a.resize)?;
        let mut s = spec.clone();
        s.neuron.time_steps = t;
        fsnn::train::check_eval_source(&ds, &a.checkpoint, &s, test.as_ref())?;
        Ok(inspect::first_batch(test.as_ref(), a.batch))
    };
    let opts = Options {
        batch: a.batch,
        samples: a.samples,
        time_steps: a.time_steps.clone(),
    };
    let (report, rec) = inspect::inspect(&gpu, spec, &ck.host, &source, &opts, &mut data)?;
    let plots = match &a.plot {
        Some(dir) => inspect::write_plots(&report, &rec, dir)?,
        None => Vec::new(),
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["checkpoint"] = serde_json::json!(a.checkpoint);
        v["dataset"] = serde_json::json!(ds);
        v["epoch"] = serde_json::json!(ck.state.epoch);
        v["plots"] = serde_json::json!(plots);
        println!("{v}");
    } else {
        println!(
            "{} (epoch {}), dataset {ds}",
            a.checkpoint.display(),
            ck.state.epoch
        );
        print!("{}", report.text());
        for p in &plots {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}
