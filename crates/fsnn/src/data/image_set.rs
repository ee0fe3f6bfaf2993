//! An in-memory stack of 8-bit colour images with class labels, shared by the
//! CIFAR readers and the image-folder loader.

use std::path::Path;

use anyhow::anyhow;

/// The path goes into the message itself (not an anyhow context) so that it
/// survives `{}` formatting, which drops the context chain. Same convention
/// as `idx::at`.
pub(crate) fn at(path: &Path, problem: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{}: {problem}", path.display())
}

/// Second label level of a dataset (CIFAR-100's 20 superclasses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoarseLabels {
    pub classes: usize,
    /// One per image, each `< classes`.
    pub labels: Vec<u16>,
    pub class_names: Vec<String>,
}

/// `n` images of `channels × height × width` bytes each, stored
/// channel-major (all of R, then all of G, then all of B, each plane
/// row-major) exactly like a CIFAR record, so CIFAR loads are plain copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSet {
    pub n: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
    /// `n * channels * height * width` bytes, image after image.
    pub pixels: Vec<u8>,
    /// One class index per image, each `< classes`. `u16` because folder
    /// datasets may have more than 256 classes.
    pub labels: Vec<u16>,
    /// `classes` names, index = label.
    pub class_names: Vec<String>,
    /// CIFAR-100's coarse labels; `None` for other datasets.
    pub coarse: Option<CoarseLabels>,
}

impl ImageSet {
    pub fn pixels_per_image(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The `channels` planes of image `idx`.
    pub fn image(&self, idx: usize) -> &[u8] {
        let len = self.pixels_per_image();
        &self.pixels[idx * len..(idx + 1) * len]
    }

    /// Per-channel mean and standard deviation over all pixels, scaled to
    /// [0, 1]: the normalisation constants for a user's own image folder.
    pub fn channel_mean_std(&self) -> (Vec<f64>, Vec<f64>) {
        let plane = self.height * self.width;
        let mut sum = vec![0u64; self.channels];
        let mut sum_sq = vec![0u64; self.channels];
        for image in self.pixels.chunks_exact(self.pixels_per_image()) {
            for (c, p) in image.chunks_exact(plane).enumerate() {
                // Integer sums are exact; u64 cannot overflow below ~2^47 pixels.
                sum[c] += p.iter().map(|&v| v as u64).sum::<u64>();
                sum_sq[c] += p.iter().map(|&v| (v as u64) * (v as u64)).sum::<u64>();
            }
        }
        let count = (self.n * plane).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|&s| s as f64 / count / 255.0).collect();
        let std = sum_sq
            .iter()
            .zip(&mean)
            .map(|(&s2, &m)| {
                (s2 as f64 / count / (255.0 * 255.0) - m * m)
                    .max(0.0)
                    .sqrt()
            })
            .collect();
        (mean, std)
    }

    /// Number of images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_slices() {
        // Two 1×2 RGB images; channel c of image i holds constant values.
        let set = ImageSet {
            n: 2,
            channels: 3,
            height: 1,
            width: 2,
            classes: 2,
            pixels: vec![0, 0, 255, 255, 51, 51, /**/ 255, 255, 255, 255, 51, 51],
            labels: vec![1, 1],
            class_names: vec!["a".into(), "b".into()],
            coarse: None,
        };
        assert_eq!(set.image(1), &[255, 255, 255, 255, 51, 51]);
        let (mean, std) = set.channel_mean_std();
        assert!((mean[0] - 0.5).abs() < 1e-12 && (std[0] - 0.5).abs() < 1e-12);
        assert!((mean[1] - 1.0).abs() < 1e-12 && std[1].abs() < 1e-6);
        assert!((mean[2] - 0.2).abs() < 1e-12 && std[2].abs() < 1e-6);
        assert_eq!(set.class_counts(), [0, 2]);
    }
}
