//! A small PNG chart of training curves, drawn with the image crate (no plotting dependency).

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};

use crate::train::EpochMetrics;

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
                if px >= 0 && py >= 0 && (px as u32) < W && (py as u32) < H {
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
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .with_context(|| format!("{}: cannot write plot", path.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("{}: cannot write plot", path.display()))?;
    Ok(())
}
