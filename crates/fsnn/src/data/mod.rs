//! MNIST-style datasets: IDX reading, a registry of known datasets with
//! pinned checksums, and fetching with checksum verification.
//!
//! Typical use:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use fsnn::data::{ensure_dataset, load_split, Dataset};
//! let ds: Dataset = "fashion-mnist".parse()?;
//! let dir = ensure_dataset(ds, &ds.default_dir())?;
//! let train = load_split(&dir, true)?;
//! let mut x = vec![0.0f32; train.pixels_per_image()];
//! train.normalized(0, &mut x);
//! # Ok(())
//! # }
//! ```

mod dataset;
mod fetch;
mod idx;
mod mnist;

pub use dataset::{DataFile, Dataset, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
pub use fetch::{ensure_dataset, OFFLINE_ENV};
pub use idx::{
    read_idx_images, read_idx_labels, Images, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, NUM_CLASSES,
};
pub use mnist::{load_split, Split, MNIST_MEAN, MNIST_STD};
