//! What a trained network does inside: per spiking layer, how often its neurons fire (mean rate,
//! silent and saturated fractions), how close the simulation gets to the equilibrium
//! (‖f(a) − a‖ / ‖a‖ against T), spike rasters and firing-rate histograms. `fsnn inspect` is a thin
//! layer over [`inspect`], [`Report::text`] and [`write_plots`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fsnn_core::backend::Backend;
use image::{Rgb, RgbImage};
use serde::Serialize;

use crate::batches::BatchSource;
use crate::model::{build, HostState, NetworkSpec, Recording};
use crate::plot_font::{draw_text, text_width};

/// A rate this close to 1 counts as saturated (a spike at every step).
const SATURATED: f32 = 1.0 - 1e-4;

/// Firing statistics of one spiking layer over a batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerStats {
    /// 1-based, as model files count layers.
    pub layer: usize,
    /// Neuron shape, e.g. `[400]` or `[64, 14, 14]`.
    pub shape: String,
    pub neurons: usize,
    /// Mean firing rate over the batch's samples and the layer's neurons.
    pub mean_rate: f64,
    /// Fraction of (sample, neuron) rates that are 0.
    pub silent: f64,
    /// Fraction of (sample, neuron) rates that are 1 (a spike at every step).
    pub saturated: f64,
    /// Fraction of neurons silent for every sample of the batch.
    pub always_silent: f64,
    /// Fraction of neurons saturated for every sample of the batch.
    pub always_saturated: f64,
}

/// Statistics of every layer from the rates `[batch, neurons_l]` of each.
pub fn layer_stats(spec: &NetworkSpec, rates: &[Vec<f32>]) -> Vec<LayerStats> {
    let shapes = spec.layer_shapes();
    rates
        .iter()
        .enumerate()
        .map(|(l, r)| {
            let neurons = shapes.get(l).map(|s| s.len()).unwrap_or(r.len()).max(1);
            let n = r.len().max(1) as f64;
            let mut always_silent = vec![true; neurons];
            let mut always_sat = vec![true; neurons];
            let (mut sum, mut silent, mut sat) = (0.0f64, 0usize, 0usize);
            for (i, &v) in r.iter().enumerate() {
                sum += v as f64;
                let j = i % neurons;
                if v <= 0.0 {
                    silent += 1;
                } else {
                    always_silent[j] = false;
                }
                if v >= SATURATED {
                    sat += 1;
                } else {
                    always_sat[j] = false;
                }
            }
            let frac = |v: &[bool]| {
                if r.is_empty() {
                    0.0
                } else {
                    v.iter().filter(|&&b| b).count() as f64 / neurons as f64
                }
            };
            LayerStats {
                layer: l + 1,
                shape: shapes
                    .get(l)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("[{neurons}]")),
                neurons,
                mean_rate: sum / n,
                silent: silent as f64 / n,
                saturated: sat as f64 / n,
                always_silent: frac(&always_silent),
                always_saturated: frac(&always_sat),
            }
        })
        .collect()
}

/// The equilibrium residual of a simulation of `time_steps` steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResidualPoint {
    pub time_steps: usize,
    /// ‖f(a) − a‖ / ‖a‖ (absent where the model could not evaluate it).
    pub residual: Option<f64>,
    /// Per spiking layer: ‖f_l(a_N) − a_l‖ / ‖a_l‖, layer l's activation in f at the last
    /// layer's rate against its own simulated rate (the last entry is `residual`).
    pub layers: Vec<f64>,
    /// Accuracy on the batch with this T.
    pub accuracy: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything `fsnn inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub time_steps: usize,
    pub batch: usize,
    /// Samples whose spikes were recorded (0 when the model cannot record spikes).
    pub recorded_samples: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub layers: Vec<LayerStats>,
    /// The residual against T, the trained T among them.
    pub residuals: Vec<ResidualPoint>,
    /// Why spikes were not recorded, if they were not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What to inspect.
#[derive(Debug, Clone)]
pub struct Options {
    /// Samples of the batch (the first of the test split).
    pub batch: usize,
    /// Samples whose spikes are recorded for rasters.
    pub samples: usize,
    /// T values of the residual sweep (the model's own T is added).
    pub time_steps: Vec<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch: 64,
            samples: 4,
            time_steps: vec![5, 10, 20, 30, 50],
        }
    }
}

/// The first `batch` samples of a source, as a batch.
pub fn first_batch(source: &dyn BatchSource, batch: usize) -> (Vec<f32>, Vec<u32>) {
    let idx: Vec<usize> = (0..batch.min(source.len())).collect();
    let mut x = vec![0.0; idx.len() * source.sample_len()];
    source.fill(&idx, 0, &mut x);
    (x, idx.iter().map(|&i| source.label(i)).collect())
}

/// Runs the network `spec` with the weights `host` on one batch: records spikes (falling back to
/// rates alone where the model cannot record), then rebuilds it at each T of the sweep to measure
/// the equilibrium residual. `data(T)` gives the batch at T (event data is binned per T).
pub fn inspect<B: Backend>(
    gpu: &B,
    spec: &NetworkSpec,
    host: &HostState,
    source_name: &str,
    opts: &Options,
    data: &mut dyn FnMut(usize) -> Result<(Vec<f32>, Vec<u32>)>,
) -> Result<(Report, Recording)> {
    if opts.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let t0 = spec.neuron.time_steps;
    let (x, y) = data(t0)?;
    if y.is_empty() {
        bail!("the test split is empty");
    }
    let mut net = build(spec, gpu, 0)?;
    net.load_host(gpu, host, source_name)?;
    let samples = opts.samples.min(y.len());
    let (rec, note) = match net.record(gpu, &x, &y, samples) {
        Ok(r) => (r, None),
        Err(e) => {
            let stats = net.eval_batch(gpu, &x, &y)?;
            let rec = Recording {
                stats,
                spikes: Vec::new(),
                rates: net.layer_rates(gpu),
                logits: net.logits(gpu),
            };
            (rec, Some(format!("spikes not recorded: {e:#}")))
        }
    };
    let recorded_samples = if rec.spikes.is_empty() { 0 } else { samples };
    let mut ts: Vec<usize> = opts.time_steps.clone();
    ts.push(t0);
    ts.sort_unstable();
    ts.dedup();
    let mut residuals = Vec::new();
    for t in ts {
        crate::checks::neuron(None, t, spec.neuron.vth, spec.neuron.leak, 0.0)?;
        let mut s = spec.clone();
        s.neuron.time_steps = t;
        let (x, y) = data(t)?;
        let mut net = build(&s, gpu, 0)?;
        net.load_host(gpu, host, source_name)?;
        let stats = net.eval_batch(gpu, &x, &y)?;
        let (layers, error) = match net.residual(gpu) {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(format!("{e:#}"))),
        };
        residuals.push(ResidualPoint {
            time_steps: t,
            residual: layers.last().copied(),
            layers,
            accuracy: stats.correct as f64 / stats.samples.max(1) as f64,
            error,
        });
    }
    let n = rec.stats.samples.max(1) as f64;
    let report = Report {
        model: spec.name.clone(),
        time_steps: t0,
        batch: y.len(),
        recorded_samples,
        loss: rec.stats.loss_sum / n,
        accuracy: rec.stats.correct as f64 / n,
        layers: layer_stats(spec, &rec.rates),
        residuals,
        note,
    };
    Ok((report, rec))
}

impl Report {
    /// The report for people: one line per layer, then the residual against T.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{} (T={}) on {} test samples: loss {:.4}, accuracy {:.2}%\n",
            self.model,
            self.time_steps,
            self.batch,
            self.loss,
            self.accuracy * 100.0
        );
        s += &format!(
            "{:>5}  {:<16} {:>9} {:>9} {:>8} {:>10} {:>13} {:>16}\n",
            "layer",
            "shape",
            "neurons",
            "rate",
            "silent",
            "saturated",
            "always silent",
            "always saturated"
        );
        for l in &self.layers {
            s += &format!(
                "{:>5}  {:<16} {:>9} {:>9.4} {:>7.1}% {:>9.1}% {:>12.1}% {:>15.1}%\n",
                l.layer,
                l.shape,
                l.neurons,
                l.mean_rate,
                l.silent * 100.0,
                l.saturated * 100.0,
                l.always_silent * 100.0,
                l.always_saturated * 100.0
            );
        }
        s += "equilibrium residual ||f(a) - a|| / ||a|| against T:\n";
        for r in &self.residuals {
            let own = if r.time_steps == self.time_steps {
                "  (trained)"
            } else {
                ""
            };
            match (r.residual, &r.error) {
                (Some(v), _) => {
                    // Deeper networks: each layer's own residual after the fixed point's.
                    let per_layer = if r.layers.len() > 1 {
                        let v: Vec<String> = r.layers.iter().map(|x| format!("{x:.4}")).collect();
                        format!("   per layer {}", v.join(" "))
                    } else {
                        String::new()
                    };
                    s += &format!(
                        "  T={:<4} {:>10.4}   accuracy {:.2}%{own}{per_layer}\n",
                        r.time_steps,
                        v,
                        r.accuracy * 100.0
                    )
                }
                (None, e) => {
                    s += &format!(
                        "  T={:<4} {:>10}   accuracy {:.2}%{own} ({})\n",
                        r.time_steps,
                        "n/a",
                        r.accuracy * 100.0,
                        e.as_deref().unwrap_or("not available")
                    )
                }
            }
        }
        if let Some(n) = &self.note {
            s += &format!("note: {n}\n");
        }
        s
    }
}

// ------------------------------------------------------------------- plots

const INK: Rgb<u8> = Rgb([40, 40, 40]);
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
/// Most neuron rows a raster shows (more are subsampled evenly).
pub const RASTER_MAX_NEURONS: usize = 256;

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, c);
        }
    }
}

/// The neurons a raster of `n` neurons shows: all of them, or `max` evenly spaced.
pub fn raster_rows(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        (0..n).collect()
    } else {
        (0..max).map(|i| i * n / max).collect()
    }
}

/// A spike raster: one panel per recorded sample, time across (T columns), neurons down.
/// `spikes[t]` is `[samples, neurons]`.
pub fn raster_image(spikes: &[Vec<u8>], samples: usize, title: &str) -> RgbImage {
    let t_len = spikes.len().max(1);
    let neurons = spikes
        .first()
        .map(|s| s.len() / samples.max(1))
        .unwrap_or(0);
    let rows = raster_rows(neurons, RASTER_MAX_NEURONS);
    let cell_w = (160 / t_len as u32).clamp(2, 12);
    let cell_h = (512 / rows.len().max(1) as u32).clamp(1, 8);
    let (top, left, gap) = (36u32, 40u32, 16u32);
    let panel_w = cell_w * t_len as u32;
    let w = (left + samples.max(1) as u32 * (panel_w + gap)).max(text_width(title, 1) as u32 + 20);
    let h = top + cell_h * rows.len().max(1) as u32 + 24;
    let mut img = RgbImage::from_pixel(w, h, WHITE);
    draw_text(&mut img, 10, 8, title, 1, INK);
    draw_text(
        &mut img,
        4,
        top as i64,
        &format!("{}", rows.first().copied().unwrap_or(0)),
        1,
        INK,
    );
    if let Some(&last) = rows.last() {
        draw_text(&mut img, 4, (h - 32) as i64, &last.to_string(), 1, INK);
    }
    for s in 0..samples {
        let x0 = left + s as u32 * (panel_w + gap);
        fill(
            &mut img,
            x0,
            top,
            panel_w,
            cell_h * rows.len() as u32,
            Rgb([235, 240, 248]),
        );
        for (t, step) in spikes.iter().enumerate() {
            for (r, &j) in rows.iter().enumerate() {
                if step.get(s * neurons + j).copied().unwrap_or(0) != 0 {
                    fill(
                        &mut img,
                        x0 + t as u32 * cell_w,
                        top + r as u32 * cell_h,
                        cell_w.max(2) - 1,
                        cell_h,
                        Rgb([20, 30, 120]),
                    );
                }
            }
        }
        draw_text(
            &mut img,
            x0 as i64,
            (top - 12) as i64,
            &format!("sample {}", s + 1),
            1,
            INK,
        );
        draw_text(
            &mut img,
            x0 as i64,
            (h - 16) as i64,
            &format!("t 1..{t_len}"),
            1,
            INK,
        );
    }
    img
}

/// Counts of `rates` in `bins` equal bins over [0, 1] (1 falls in the last).
pub fn histogram(rates: &[f32], bins: usize) -> Vec<usize> {
    let mut h = vec![0; bins.max(1)];
    for &r in rates {
        let b = ((r.clamp(0.0, 1.0) * bins as f32) as usize).min(bins - 1);
        h[b] += 1;
    }
    h
}

/// A firing-rate histogram, 20 bins over [0, 1].
pub fn histogram_image(rates: &[f32], title: &str) -> RgbImage {
    let bins = 20;
    let h = histogram(rates, bins);
    let (w, ht, m) = (480u32, 280u32, 36u32);
    let mut img = RgbImage::from_pixel(w, ht, WHITE);
    draw_text(&mut img, 10, 8, title, 1, INK);
    let max = h.iter().copied().max().unwrap_or(0).max(1);
    let pw = w - 2 * m;
    let bar = pw / bins as u32;
    let base = ht - m;
    for (i, &c) in h.iter().enumerate() {
        let bh = ((ht - 2 * m - 10) as f64 * c as f64 / max as f64).round() as u32;
        fill(
            &mut img,
            m + i as u32 * bar,
            base - bh,
            bar - 1,
            bh,
            Rgb([30, 90, 200]),
        );
    }
    fill(&mut img, m, base, pw, 1, INK);
    fill(&mut img, m, m, 1, base - m, INK);
    draw_text(&mut img, m as i64 - 3, base as i64 + 6, "0", 1, INK);
    draw_text(&mut img, (m + pw) as i64 - 3, base as i64 + 6, "1", 1, INK);
    draw_text(
        &mut img,
        (w / 2 - 40) as i64,
        base as i64 + 14,
        "firing rate",
        1,
        INK,
    );
    draw_text(&mut img, 4, m as i64 - 2, &max.to_string(), 1, INK);
    draw_text(&mut img, 4, m as i64 - 12, "count", 1, INK);
    img
}

/// A shape as the plot font can draw it: `64×14×14` for `[64, 14, 14]`.
fn plot_shape(shape: &str) -> String {
    shape
        .trim_matches(|c| c == '[' || c == ']')
        .replace(", ", "×")
}

/// Writes `layer{l}_raster.png` (when spikes were recorded) and `layer{l}_rates.png` for every
/// layer into `dir`; returns the files written.
pub fn write_plots(report: &Report, rec: &Recording, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut out = Vec::new();
    for (l, stats) in report.layers.iter().enumerate() {
        if let Some(spikes) = rec.spikes.get(l) {
            let shown = stats.neurons.min(RASTER_MAX_NEURONS);
            let title = format!(
                "{} layer {} ({}) spikes, {} of {} neurons",
                report.model,
                stats.layer,
                plot_shape(&stats.shape),
                shown,
                stats.neurons
            );
            let p = dir.join(format!("layer{}_raster.png", stats.layer));
            crate::plot::save_png(&raster_image(spikes, report.recorded_samples, &title), &p)?;
            out.push(p);
        }
        if let Some(rates) = rec.rates.get(l) {
            let title = format!(
                "{} layer {} rates, mean {:.3}, {:.1}% silent",
                report.model,
                stats.layer,
                stats.mean_rate,
                stats.silent * 100.0
            );
            let p = dir.join(format!("layer{}_rates.png", stats.layer));
            crate::plot::save_png(&histogram_image(rates, &title), &p)?;
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two layers of a made-up 2-layer net: spikes for 2 samples over 4 steps, rates of a batch
    /// of 3.
    fn synthetic() -> (NetworkSpec, Recording) {
        let spec = NetworkSpec::from_toml(
            "name = \"two\"\nclasses = 2\n[input]\nshape = [3]\n[neuron]\ntime_steps = 4\nvth = 1.0\nleak = 1.0\n\
             [[layers]]\nops = [{ kind = \"linear\", out = 4 }]\n[[layers]]\nops = [{ kind = \"linear\", out = 2 }]\n\
             [feedback]\nkind = \"linear\"\n",
        )
        .unwrap();
        // Layer 1: neuron 0 never fires, neuron 3 always does, 1 and 2 in between.
        let l1_rates = vec![
            0.0, 0.5, 0.25, 1.0, //
            0.0, 0.75, 0.0, 1.0, //
            0.0, 1.0, 0.5, 1.0,
        ];
        let l2_rates = vec![0.0, 0.0, 0.5, 0.0, 1.0, 0.25];
        let spikes_l1: Vec<Vec<u8>> = (0..4)
            .map(|t| vec![0, (t % 2) as u8, (t == 0) as u8, 1, 0, 1, 0, 1])
            .collect();
        let spikes_l2: Vec<Vec<u8>> = (0..4).map(|t| vec![0, 0, (t > 1) as u8, 0]).collect();
        let rec = Recording {
            spikes: vec![spikes_l1, spikes_l2],
            rates: vec![l1_rates, l2_rates],
            ..Default::default()
        };
        (spec, rec)
    }

    #[test]
    fn rates_give_mean_silent_and_saturated_fractions() {
        let (spec, rec) = synthetic();
        let s = layer_stats(&spec, &rec.rates);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].layer, s[0].neurons, s[0].shape.as_str()),
            (1, 4, "[4]")
        );
        assert!(
            (s[0].mean_rate - 6.0 / 12.0).abs() < 1e-9,
            "{}",
            s[0].mean_rate
        );
        assert!((s[0].silent - 4.0 / 12.0).abs() < 1e-9);
        assert!((s[0].saturated - 4.0 / 12.0).abs() < 1e-9);
        assert!((s[0].always_silent - 0.25).abs() < 1e-9);
        assert!((s[0].always_saturated - 0.25).abs() < 1e-9);
        assert!((s[1].mean_rate - 1.75 / 6.0).abs() < 1e-9);
        assert!((s[1].silent - 3.0 / 6.0).abs() < 1e-9);
        assert!((s[1].saturated - 1.0 / 6.0).abs() < 1e-9);
        assert_eq!(s[1].always_silent, 0.0);
    }

    #[test]
    fn histograms_put_every_rate_in_one_bin() {
        let h = histogram(&[0.0, 0.04, 0.05, 0.5, 0.99, 1.0, 1.2, -0.1], 20);
        assert_eq!(h.iter().sum::<usize>(), 8);
        assert_eq!(h[0], 3);
        assert_eq!(h[1], 1);
        assert_eq!(h[10], 1);
        assert_eq!(h[19], 3);
    }

    #[test]
    fn rasters_subsample_large_layers_evenly() {
        assert_eq!(raster_rows(3, 256), vec![0, 1, 2]);
        let r = raster_rows(1000, 250);
        assert_eq!((r.len(), r[0], r[1], *r.last().unwrap()), (250, 0, 4, 996));
    }

    #[test]
    fn plots_are_written_per_layer_with_spikes_drawn() {
        let (spec, rec) = synthetic();
        let report = Report {
            model: spec.name.clone(),
            time_steps: 4,
            batch: 3,
            recorded_samples: 2,
            loss: 0.5,
            accuracy: 0.5,
            layers: layer_stats(&spec, &rec.rates),
            residuals: vec![ResidualPoint {
                time_steps: 4,
                residual: Some(0.01),
                layers: vec![0.01],
                accuracy: 0.5,
                error: None,
            }],
            note: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let files = write_plots(&report, &rec, dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "layer1_raster.png",
                "layer1_rates.png",
                "layer2_raster.png",
                "layer2_rates.png"
            ]
        );
        // The always-firing neuron 3 of layer 1 is a full row of spike colour in sample 1's
        // panel; the silent neuron 0 has none.
        let img = image::open(&files[0]).unwrap().to_rgb8();
        let spike = Rgb([20, 30, 120]);
        let count = |row_y: u32| {
            (0..img.width())
                .filter(|&x| *img.get_pixel(x, row_y) == spike)
                .count()
        };
        let cell_h = (512 / 4u32).clamp(1, 8);
        assert!(count(36 + 3 * cell_h + 1) > 0);
        assert_eq!(count(36 + 1), 0);
        let text = report.text();
        assert!(
            text.contains("layer") && text.contains("T=4") && text.contains("(trained)"),
            "{text}"
        );
        assert_eq!(plot_shape("[64, 14, 14]"), "64×14×14");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["layers"][0]["always_silent"], 0.25);
    }
}
