//! Datasets: MNIST-style IDX files (a registry with pinned checksums and fetching), CIFAR-10/100
//! binaries and `train/<class>/*` image folders loaded into [`ImageSet`] with the seeded CIFAR
//! augmentation, and N-MNIST event recordings.
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

mod augment;
mod cifar;
mod dataset;
mod fetch;
mod folder;
mod idx;
mod image_set;
mod mnist;
mod nmnist;

pub use augment::{augment_batch, transform_image, CropFlip, CIFAR_MEAN, CIFAR_STD, CROP_PADDING};
pub use cifar::{
    ensure_cifar, load_cifar, load_cifar_splits, Cifar, CIFAR_CHANNELS, CIFAR_IMAGE_BYTES,
    CIFAR_SIDE,
};
pub use folder::{load_image_folder, IMAGE_EXTENSIONS};
pub use image_set::{CoarseLabels, ImageSet};

pub use dataset::{DataFile, Dataset, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
pub use fetch::{ensure_dataset, OFFLINE_ENV};
pub use idx::{
    read_idx_images, read_idx_labels, Images, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, NUM_CLASSES,
};
pub use mnist::{load_split, Split, MNIST_MEAN, MNIST_STD};
pub use nmnist::{
    bin_sample, decode_events, ensure_nmnist, load_nmnist, mean_frame, rate_weights, read_events,
    BinMode, Event, FrameLayout, NmnistSplit, NmnistStats, PackedEvent, SampleStats,
    NMNIST_CHANNELS, NMNIST_FRAME_LEN, NMNIST_SIDE,
};
