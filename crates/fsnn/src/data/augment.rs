//! Host-side CIFAR augmentation: random crop with zero padding, random
//! horizontal flip, per-channel normalisation (the paper's recipe,
//! torchvision's `RandomCrop(32, padding=4)`, `RandomHorizontalFlip()`,
//! `Normalize(mean, std)`).
//!
//! Randomness comes from a hash of `(seed, image index)`, not from a
//! sequential generator, so a batch can be split over any number of threads
//! (or prepared ahead, overlapped with GPU work) and still come out
//! bit-identical.

use super::image_set::ImageSet;

/// CIFAR-10 training-set channel means, on the [0, 1] scale.
pub const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// The standard deviations used by the paper (and most CIFAR code); they are
/// not the true per-pixel stds (~0.247, 0.243, 0.261) but are what the
/// published results were trained with.
pub const CIFAR_STD: [f32; 3] = [0.2023, 0.1994, 0.2010];
/// Zero border added on each side before the random crop.
pub const CROP_PADDING: usize = 4;

/// Where the crop window sits in the padded image and whether the crop is
/// mirrored. `dy == dx == CROP_PADDING` without flip is the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropFlip {
    /// Offset of the window's top row in the padded image, `0..=2 * CROP_PADDING`.
    pub dy: usize,
    /// Offset of the window's left column, `0..=2 * CROP_PADDING`.
    pub dx: usize,
    pub flip: bool,
}

impl CropFlip {
    pub const IDENTITY: CropFlip = CropFlip {
        dy: CROP_PADDING,
        dx: CROP_PADDING,
        flip: false,
    };

    /// The draw for image `idx` under `seed`: the same for the same pair,
    /// whatever the batch, its order or the threading. Vary the seed per
    /// epoch (or step) to get fresh augmentations.
    pub fn draw(seed: u64, idx: usize) -> CropFlip {
        let r = splitmix64(splitmix64(seed) ^ idx as u64);
        let range = 2 * CROP_PADDING as u64 + 1;
        // Multiply-shift maps 32 random bits onto 0..range without the bias
        // of `%` (negligible here, but free to avoid).
        let dy = ((r & 0xffff_ffff) * range) >> 32;
        let dx = ((r >> 32) * range) >> 32;
        let flip = splitmix64(r) >> 63 == 1;
        CropFlip {
            dy: dy as usize,
            dx: dx as usize,
            flip,
        }
    }
}

/// SplitMix64's output function: a bijective, well-mixed 64-bit hash.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `lut[c][p] = (p / 255 - mean[c]) / std[c]`. One table per call makes
/// the padded border (`lut[c][0]`) and the eval path bit-identical to the
/// normalised pixels of the training path.
fn luts(mean: [f32; 3], std: [f32; 3]) -> [[f32; 256]; 3] {
    let mut t = [[0.0; 256]; 3];
    for c in 0..3 {
        for (p, v) in t[c].iter_mut().enumerate() {
            *v = (p as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    t
}

/// Writes the images `indices` of `set` as f32 `[batch, 3, H, W]` into `out`
/// (`indices.len() * 3 * H * W` values). With `train`, each image gets the
/// random crop (H×W window of the image padded by [`CROP_PADDING`] zero
/// pixels on every side) and random horizontal flip drawn by
/// [`CropFlip::draw`]`(rng_seed, index)`; then, and always, per-channel
/// normalisation `(p / 255 - mean) / std`.
///
/// Panics if `set` does not have 3 channels, an index is out of range, or
/// `out` has the wrong length.
pub fn augment_batch(
    set: &ImageSet,
    indices: &[usize],
    rng_seed: u64,
    train: bool,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
) {
    let len = set.pixels_per_image();
    assert_eq!(
        out.len(),
        indices.len() * len,
        "augment_batch: output length must be indices.len() * 3 * height * width"
    );
    let lut = luts(mean, std);
    for (&idx, chunk) in indices.iter().zip(out.chunks_exact_mut(len)) {
        let t = train.then(|| CropFlip::draw(rng_seed, idx));
        write_image(set, idx, t, &lut, chunk);
    }
}

/// One image with an explicit transform (`None`: normalisation only); for
/// tests and for callers that choose their own crops, e.g. a centre crop.
pub fn transform_image(
    set: &ImageSet,
    idx: usize,
    t: Option<CropFlip>,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
) {
    assert_eq!(
        out.len(),
        set.pixels_per_image(),
        "transform_image: output length must be 3 * height * width"
    );
    write_image(set, idx, t, &luts(mean, std), out);
}

fn write_image(
    set: &ImageSet,
    idx: usize,
    t: Option<CropFlip>,
    lut: &[[f32; 256]; 3],
    out: &mut [f32],
) {
    assert_eq!(set.channels, 3, "augmentation needs 3-channel images");
    assert!(
        idx < set.n,
        "image index {idx} out of range for {} images",
        set.n
    );
    let (h, w) = (set.height, set.width);
    let img = set.image(idx);
    for c in 0..3 {
        let src = &img[c * h * w..(c + 1) * h * w];
        let dst = &mut out[c * h * w..(c + 1) * h * w];
        let lut = &lut[c];
        let Some(t) = t else {
            for (o, &p) in dst.iter_mut().zip(src) {
                *o = lut[p as usize];
            }
            continue;
        };
        let zero = lut[0];
        for (y, row) in dst.chunks_exact_mut(w).enumerate() {
            // Source row in the unpadded image; out of range = padding.
            let sy = (y + t.dy).wrapping_sub(CROP_PADDING);
            if sy >= h {
                row.fill(zero);
                continue;
            }
            let src_row = &src[sy * w..(sy + 1) * w];
            for (x, o) in row.iter_mut().enumerate() {
                // The flip mirrors the cropped window, as torchvision's
                // RandomHorizontalFlip does after RandomCrop.
                let xc = if t.flip { w - 1 - x } else { x };
                let sx = (xc + t.dx).wrapping_sub(CROP_PADDING);
                *o = if sx < w {
                    lut[src_row[sx] as usize]
                } else {
                    zero
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` random-looking 3×`h`×`w` images with no zero pixels, so padding
    /// is distinguishable from image content.
    fn set(n: usize, h: usize, w: usize) -> ImageSet {
        let pixels = (0..n * 3 * h * w)
            .map(|i| 1 + (splitmix64(i as u64) % 255) as u8)
            .collect();
        ImageSet {
            n,
            channels: 3,
            height: h,
            width: w,
            classes: 1,
            pixels,
            labels: vec![0; n],
            class_names: vec!["x".into()],
            coarse: None,
        }
    }

    fn normalised(p: u8, c: usize) -> f32 {
        (p as f32 / 255.0 - CIFAR_MEAN[c]) / CIFAR_STD[c]
    }

    #[test]
    fn eval_is_plain_normalisation_and_identity_crop_matches() {
        let s = set(3, 32, 32);
        let mut eval = vec![0.0; 2 * 3072];
        augment_batch(&s, &[2, 0], 7, false, CIFAR_MEAN, CIFAR_STD, &mut eval);
        for (i, &idx) in [2usize, 0].iter().enumerate() {
            for (j, &p) in s.image(idx).iter().enumerate() {
                let want = normalised(p, j / 1024);
                assert!((eval[i * 3072 + j] - want).abs() < 1e-6);
            }
        }
        let mut same = vec![0.0; 3072];
        transform_image(
            &s,
            2,
            Some(CropFlip::IDENTITY),
            CIFAR_MEAN,
            CIFAR_STD,
            &mut same,
        );
        assert_eq!(same, eval[..3072]);
    }

    #[test]
    fn crop_shifts_and_pads_with_normalised_zero() {
        let (h, w) = (5, 7);
        let s = set(1, h, w);
        let mut out = vec![0.0; 3 * h * w];
        // Window at the top-left corner of the padded image: the image moves
        // 4 right and 4 down, the rest is border.
        let t = CropFlip {
            dy: 0,
            dx: 0,
            flip: false,
        };
        transform_image(&s, 0, Some(t), CIFAR_MEAN, CIFAR_STD, &mut out);
        for c in 0..3 {
            let zero = (0.0 - CIFAR_MEAN[c]) / CIFAR_STD[c];
            for y in 0..h {
                for x in 0..w {
                    let got = out[c * h * w + y * w + x];
                    if y < 4 || x < 4 {
                        assert_eq!(got, zero, "c{c} y{y} x{x}");
                    } else {
                        let p = s.image(0)[c * h * w + (y - 4) * w + (x - 4)];
                        assert!((got - normalised(p, c)).abs() < 1e-6);
                    }
                }
            }
        }
        // Bottom-right window with flip: row y is source row y + 4, mirrored.
        let t = CropFlip {
            dy: 8,
            dx: 8,
            flip: true,
        };
        transform_image(&s, 0, Some(t), CIFAR_MEAN, CIFAR_STD, &mut out);
        for c in 0..3 {
            let zero = (0.0 - CIFAR_MEAN[c]) / CIFAR_STD[c];
            for y in 0..h {
                for x in 0..w {
                    let got = out[c * h * w + y * w + x];
                    let (sy, sx) = (y + 4, (w - 1 - x) + 4);
                    if sy >= h || sx >= w {
                        assert_eq!(got, zero, "c{c} y{y} x{x}");
                    } else {
                        let p = s.image(0)[c * h * w + sy * w + sx];
                        assert!((got - normalised(p, c)).abs() < 1e-6);
                    }
                }
            }
        }
    }

    #[test]
    fn flip_alone_mirrors_rows_and_keeps_pixels() {
        let s = set(1, 32, 32);
        let mut plain = vec![0.0; 3072];
        let mut flipped = vec![0.0; 3072];
        transform_image(&s, 0, None, CIFAR_MEAN, CIFAR_STD, &mut plain);
        let t = CropFlip {
            flip: true,
            ..CropFlip::IDENTITY
        };
        transform_image(&s, 0, Some(t), CIFAR_MEAN, CIFAR_STD, &mut flipped);
        for (a, b) in plain.chunks_exact(32).zip(flipped.chunks_exact(32)) {
            let mut rev = a.to_vec();
            rev.reverse();
            assert_eq!(rev, b);
        }
    }

    #[test]
    fn deterministic_and_independent_of_batch_layout() {
        let s = set(10, 32, 32);
        let mut a = vec![0.0; 4 * 3072];
        let mut b = vec![0.0; 4 * 3072];
        augment_batch(&s, &[3, 1, 4, 1], 42, true, CIFAR_MEAN, CIFAR_STD, &mut a);
        augment_batch(&s, &[3, 1, 4, 1], 42, true, CIFAR_MEAN, CIFAR_STD, &mut b);
        assert_eq!(a, b);
        // Image 4 alone, or from another thread, gets the same draw.
        let mut single = vec![0.0; 3072];
        std::thread::scope(|sc| {
            sc.spawn(|| augment_batch(&s, &[4], 42, true, CIFAR_MEAN, CIFAR_STD, &mut single));
        });
        assert_eq!(single, a[2 * 3072..3 * 3072]);
        // Another seed changes some draws.
        augment_batch(&s, &[3, 1, 4, 1], 43, true, CIFAR_MEAN, CIFAR_STD, &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn draws_cover_the_range_evenly() {
        let mut dy = [0usize; 9];
        let mut dx = [0usize; 9];
        let mut flips = 0;
        let n = 90_000;
        for i in 0..n {
            let t = CropFlip::draw(5, i);
            dy[t.dy] += 1;
            dx[t.dx] += 1;
            flips += t.flip as usize;
        }
        for k in 0..9 {
            // ±5% of the expected 10,000 (about 5 standard deviations).
            assert!(
                dy[k].abs_diff(n / 9) < 500 && dx[k].abs_diff(n / 9) < 500,
                "{dy:?} {dx:?}"
            );
        }
        assert!(flips.abs_diff(n / 2) < 1000, "{flips}");
        // Seed matters for the same index.
        assert!((0..64).any(|s| CropFlip::draw(s, 0) != CropFlip::draw(0, 0)));
    }
}
