//! A small PNG chart of training curves, drawn with the image crate (no plotting dependency).

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};

use crate::metrics::EpochMetrics;
use crate::plot_font::{draw_text, text_width};

const W: u32 = 640;
const H: u32 = 360;
const M: u32 = 30;

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb<u8>) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        for dx in 0..2 {
            for dy in 0..2 {
                let (px, py) = (x as i64 + dx, y as i64 + dy);
                if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                    img.put_pixel(px as u32, py as u32, c);
                }
            }
        }
    }
}

/// Left half: train (blue) and test (red) loss; right half: train and test accuracy (0..1).
pub fn plot_metrics(history: &[EpochMetrics], path: &Path) -> Result<()> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let panel = |i: u32| (M + i * W / 2, W / 2 - 2 * M);
    let axis = Rgb([0, 0, 0]);
    for i in 0..2 {
        let (x0, pw) = panel(i);
        line(
            &mut img,
            (x0 as f64, (H - M) as f64),
            ((x0 + pw) as f64, (H - M) as f64),
            axis,
        );
        line(
            &mut img,
            (x0 as f64, M as f64),
            (x0 as f64, (H - M) as f64),
            axis,
        );
    }
    let n = history.len().max(2) - 1;
    let max_loss = history
        .iter()
        .map(|m| m.train_loss.max(m.test_loss))
        .fold(1e-9, f64::max);
    type Series = (usize, Box<dyn Fn(&EpochMetrics) -> f64>, f64, Rgb<u8>);
    let series: [Series; 4] = [
        (0, Box::new(|m| m.train_loss), max_loss, Rgb([30, 90, 200])),
        (0, Box::new(|m| m.test_loss), max_loss, Rgb([210, 40, 40])),
        (1, Box::new(|m| m.train_acc), 1.0, Rgb([30, 90, 200])),
        (1, Box::new(|m| m.test_acc), 1.0, Rgb([210, 40, 40])),
    ];
    for (p, f, top, c) in series.iter() {
        let (x0, pw) = panel(*p as u32);
        let pt = |i: usize, v: f64| {
            (
                x0 as f64 + pw as f64 * i as f64 / n as f64,
                (H - M) as f64 - (H - 2 * M) as f64 * (v / top).clamp(0.0, 1.0),
            )
        };
        if history.len() == 1 {
            let q = pt(0, f(&history[0]));
            line(&mut img, (q.0 - 3.0, q.1), (q.0 + 3.0, q.1), *c);
        }
        for i in 1..history.len() {
            line(
                &mut img,
                pt(i - 1, f(&history[i - 1])),
                pt(i, f(&history[i])),
                *c,
            );
        }
    }
    let ink = Rgb([40, 40, 40]);
    draw_text(
        &mut img,
        M as i64 + 4,
        8,
        &format!("loss (max {max_loss:.3})"),
        2,
        ink,
    );
    draw_text(
        &mut img,
        (M + W / 2) as i64 + 4,
        8,
        "accuracy (0..1)",
        2,
        ink,
    );
    draw_text(
        &mut img,
        M as i64,
        (H - M + 8) as i64,
        &format!("epochs 1..{}", history.len()),
        1,
        ink,
    );
    draw_text(
        &mut img,
        (W - 150) as i64,
        (H - M + 8) as i64,
        "train",
        1,
        Rgb([30, 90, 200]),
    );
    draw_text(
        &mut img,
        (W - 100) as i64,
        (H - M + 8) as i64,
        "test",
        1,
        Rgb([210, 40, 40]),
    );
    save_png(&img, path)
}

/// Writes a PNG atomically (temporary file, then rename), so a crash never leaves half a plot.
pub(crate) fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .with_context(|| format!("{}: cannot write plot", path.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("{}: cannot write plot", path.display()))?;
    Ok(())
}

/// One point of a sweep over T: time steps, ms per training step, peak GPU bytes.
pub struct SweepPoint {
    pub time_steps: usize,
    pub ms_per_step: f64,
    pub peak_gpu_bytes: u64,
}

/// Left: the kernels' shares of a training step's GPU time; right: ms per step and peak GPU
/// memory against T (memory should be flat: the method keeps no per-step history).
pub fn plot_step_report(
    title: &str,
    kernels: &[(String, f64)],
    sweep: &[SweepPoint],
    path: &Path,
) -> Result<()> {
    let (w, h) = (1000u32, 460u32);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let ink = Rgb([40, 40, 40]);
    let (red, green, blue) = (Rgb([210, 40, 40]), Rgb([30, 150, 60]), Rgb([70, 130, 180]));
    draw_text(&mut img, 12, 10, title, 2, ink);
    draw_text(
        &mut img,
        12,
        40,
        "share of kernel time (one profiled step)",
        1,
        ink,
    );
    let bar_x = 170.0;
    let bar_w = 300.0;
    for (i, (name, share)) in kernels.iter().take(14).enumerate() {
        let y = 60.0 + i as f64 * 26.0;
        draw_text(&mut img, 12, y as i64 + 4, name, 1, ink);
        let len = bar_w * share.clamp(0.0, 1.0);
        for dy in 0..16 {
            let yy = y + dy as f64;
            line(&mut img, (bar_x, yy), (bar_x + len.max(1.0), yy), blue);
        }
        draw_text(
            &mut img,
            (bar_x + len) as i64 + 6,
            y as i64 + 4,
            &format!("{:.1}%", share * 100.0),
            1,
            ink,
        );
    }
    let (x0, x1, y0, y1) = (560.0, 960.0, 400.0, 80.0);
    line(&mut img, (x0, y0), (x1, y0), ink);
    line(&mut img, (x0, y1), (x0, y0), ink);
    draw_text(&mut img, 560, 40, "against T:", 1, ink);
    draw_text(&mut img, 640, 40, "ms per step", 1, red);
    draw_text(&mut img, 740, 40, "peak GPU MB", 1, green);
    draw_text(&mut img, 880, 420, "time steps", 1, ink);
    if !sweep.is_empty() {
        let tmax = sweep.iter().map(|p| p.time_steps).max().unwrap().max(1) as f64;
        let msmax = sweep.iter().map(|p| p.ms_per_step).fold(1e-9, f64::max);
        let mbmax = sweep
            .iter()
            .map(|p| p.peak_gpu_bytes as f64 / 1e6)
            .fold(1e-9, f64::max);
        let px = |t: usize| x0 + (x1 - x0 - 40.0) * t as f64 / tmax;
        let py = |v: f64, top: f64| y0 - (y0 - y1) * (v / (top * 1.15));
        let mut prev: Option<((f64, f64), (f64, f64))> = None;
        for p in sweep {
            let mb = p.peak_gpu_bytes as f64 / 1e6;
            let a = (px(p.time_steps), py(p.ms_per_step, msmax));
            let b = (px(p.time_steps), py(mb, mbmax));
            if let Some((pa, pb)) = prev {
                line(&mut img, pa, a, red);
                line(&mut img, pb, b, green);
            }
            for (q, c) in [(a, red), (b, green)] {
                line(&mut img, (q.0 - 3.0, q.1), (q.0 + 3.0, q.1), c);
                line(&mut img, (q.0, q.1 - 3.0), (q.0, q.1 + 3.0), c);
            }
            draw_text(
                &mut img,
                a.0 as i64 - 20,
                a.1 as i64 - 14,
                &format!("{:.0}ms", p.ms_per_step),
                1,
                red,
            );
            draw_text(
                &mut img,
                b.0 as i64 - 20,
                b.1 as i64 + 8,
                &format!("{mb:.1}mb"),
                1,
                green,
            );
            let label = p.time_steps.to_string();
            draw_text(
                &mut img,
                a.0 as i64 - text_width(&label, 1) / 2,
                y0 as i64 + 8,
                &label,
                1,
                ink,
            );
            prev = Some((a, b));
        }
    }
    save_png(&img, path)
}
