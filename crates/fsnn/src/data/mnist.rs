//! A loaded train or test split and its normalisation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::dataset::Dataset;
use super::idx::{read_idx_images, read_idx_labels};

/// MNIST pixel statistics (after scaling to [0, 1]). Used for Fashion-MNIST
/// too so both datasets see the same input transform; its own statistics
/// (0.2860, 0.3530) are close enough for a spiking encoder.
pub const MNIST_MEAN: f32 = 0.1307;
pub const MNIST_STD: f32 = 0.3081;

/// Images and labels of one split, with matching counts guaranteed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// `n * rows * cols` bytes, row-major, image after image.
    pub images: Vec<u8>,
    /// `n` class indices, each `< NUM_CLASSES`.
    pub labels: Vec<u8>,
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Split {
    pub fn pixels_per_image(&self) -> usize {
        self.rows * self.cols
    }

    pub fn image(&self, idx: usize) -> &[u8] {
        let len = self.pixels_per_image();
        &self.images[idx * len..(idx + 1) * len]
    }

    /// Writes image `idx` as `(p / 255 - mean) / std` into `out`, which must
    /// hold exactly `rows * cols` values.
    pub fn normalized(&self, idx: usize, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.pixels_per_image(),
            "normalized: output length must be rows * cols"
        );
        for (o, &p) in out.iter_mut().zip(self.image(idx)) {
            *o = (p as f32 / 255.0 - MNIST_MEAN) / MNIST_STD;
        }
    }

    /// Writes the images `indices` back to back into `out`, which must hold
    /// exactly `indices.len() * rows * cols` values.
    pub fn normalized_batch(&self, indices: &[usize], out: &mut [f32]) {
        let len = self.pixels_per_image();
        assert_eq!(
            out.len(),
            indices.len() * len,
            "normalized_batch: output length must be indices.len() * rows * cols"
        );
        for (&idx, chunk) in indices.iter().zip(out.chunks_exact_mut(len)) {
            self.normalized(idx, chunk);
        }
    }
}

/// Prefers the decompressed file, but also takes the `.gz` a user may have
/// downloaded by hand.
fn locate(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(name);
    // `exists` is false on any error: an unreadable path must not read as a missing file.
    for path in [plain.clone(), dir.join(format!("{name}.gz"))] {
        match std::fs::metadata(&path) {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("{}: cannot be read: {e}", path.display()),
        }
    }
    bail!(
        "{}: not found (nor {name}.gz); copy the dataset's IDX files into {} (without a data \
         folder, fsnn downloads them itself)",
        plain.display(),
        dir.display()
    )
}

/// Loads the training (`train == true`) or test split stored in `dir`.
pub fn load_split(dir: impl AsRef<Path>, train: bool) -> Result<Split> {
    let dir = dir.as_ref();
    let (images_name, labels_name) = Dataset::split_files(train);
    let images_path = locate(dir, images_name)?;
    let labels_path = locate(dir, labels_name)?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if images.n != labels.len() {
        bail!(
            "{}: {} images but {} has {} labels",
            images_path.display(),
            images.n,
            labels_path.display(),
            labels.len()
        );
    }
    Ok(Split {
        images: images.pixels,
        labels,
        n: images.n,
        rows: images.rows,
        cols: images.cols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::tests::{gzip, idx_images, idx_labels};
    use crate::data::{TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};

    #[test]
    fn loads_split_and_normalizes() {
        let dir = tempfile::tempdir().unwrap();
        let px: Vec<u8> = (0..2 * 3 * 3).map(|i| (i * 15) as u8).collect();
        std::fs::write(dir.path().join(TRAIN_IMAGES), idx_images(2, 3, 3, &px)).unwrap();
        // A hand-downloaded .gz next to a plain file works too.
        std::fs::write(
            dir.path().join(format!("{TRAIN_LABELS}.gz")),
            gzip(&idx_labels(&[4, 2])),
        )
        .unwrap();
        let s = load_split(dir.path(), true).unwrap();
        assert_eq!((s.n, s.rows, s.cols), (2, 3, 3));
        assert_eq!(s.labels, [4, 2]);

        let mut out = vec![0.0; 9];
        s.normalized(1, &mut out);
        for (o, &p) in out.iter().zip(&px[9..]) {
            let want = (p as f32 / 255.0 - 0.1307) / 0.3081;
            assert!((o - want).abs() < 1e-6);
        }
        assert!((out[0] - (135.0 / 255.0 - 0.1307) / 0.3081).abs() < 1e-6);

        let mut batch = vec![0.0; 18];
        s.normalized_batch(&[1, 0], &mut batch);
        assert_eq!(&batch[..9], &out[..]);
        assert!((batch[9] - (-0.1307 / 0.3081)).abs() < 1e-6);
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TEST_IMAGES), idx_images(3, 1, 2, &[0; 6])).unwrap();
        std::fs::write(dir.path().join(TEST_LABELS), idx_labels(&[1, 2])).unwrap();
        let e = load_split(dir.path(), false).unwrap_err().to_string();
        let want = format!(
            "{}: 3 images but {} has 2 labels",
            dir.path().join(TEST_IMAGES).display(),
            dir.path().join(TEST_LABELS).display()
        );
        assert_eq!(e, want);
    }

    #[test]
    fn missing_split_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_split(dir.path(), true).unwrap_err().to_string();
        assert!(e.contains(TRAIN_IMAGES) && e.contains("not found"), "{e}");
    }
}
