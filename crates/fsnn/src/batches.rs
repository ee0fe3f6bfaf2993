//! Dataset → batches: every dataset behind one interface that fills a batch of model inputs, and
//! the host thread that prepares the next batches while the GPU works on the current one.

use std::path::Path;
use std::sync::mpsc::sync_channel;

use anyhow::{bail, Result};

use crate::data::{self, BinMode, Cifar, Dataset, FrameLayout, ImageSet, NmnistSplit, Split};

/// A labelled set of samples that can fill batches of model input.
pub trait BatchSource: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// f32 values one sample contributes to a batch.
    fn sample_len(&self) -> usize;
    fn label(&self, i: usize) -> u32;
    fn classes(&self) -> usize;
    /// Fills `out` with the samples `indices`; `seed` draws augmentation (training sets only).
    fn fill(&self, indices: &[usize], seed: u64, out: &mut [f32]);
    /// What the source is, for messages.
    fn describe(&self) -> String;
}

impl BatchSource for Split {
    fn len(&self) -> usize {
        self.n
    }
    fn sample_len(&self) -> usize {
        self.pixels_per_image()
    }
    fn label(&self, i: usize) -> u32 {
        self.labels[i] as u32
    }
    fn classes(&self) -> usize {
        data::NUM_CLASSES as usize
    }
    fn fill(&self, indices: &[usize], _seed: u64, out: &mut [f32]) {
        self.normalized_batch(indices, out);
    }
    fn describe(&self) -> String {
        format!("{} images of {}×{}", self.n, self.rows, self.cols)
    }
}

/// Colour images with per-channel normalisation, and random crop + flip when `augment` is set.
pub struct Images {
    pub set: ImageSet,
    pub augment: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl BatchSource for Images {
    fn len(&self) -> usize {
        self.set.n
    }
    fn sample_len(&self) -> usize {
        self.set.pixels_per_image()
    }
    fn label(&self, i: usize) -> u32 {
        self.set.labels[i] as u32
    }
    fn classes(&self) -> usize {
        self.set.classes
    }
    fn fill(&self, indices: &[usize], seed: u64, out: &mut [f32]) {
        data::augment_batch(
            &self.set,
            indices,
            seed,
            self.augment,
            self.mean,
            self.std,
            out,
        );
    }
    fn describe(&self) -> String {
        format!(
            "{} images of {}×{}×{}, {} classes",
            self.set.n, self.set.channels, self.set.height, self.set.width, self.set.classes
        )
    }
}

/// N-MNIST recordings binned into `time_steps` frames, laid out `[T, batch, 2, 34, 34]`.
pub struct Events {
    pub split: NmnistSplit,
    pub time_steps: usize,
    pub mode: BinMode,
}

impl BatchSource for Events {
    fn len(&self) -> usize {
        self.split.len()
    }
    fn sample_len(&self) -> usize {
        self.time_steps * data::NMNIST_FRAME_LEN
    }
    fn label(&self, i: usize) -> u32 {
        self.split.labels()[i] as u32
    }
    fn classes(&self) -> usize {
        10
    }
    fn fill(&self, indices: &[usize], _seed: u64, out: &mut [f32]) {
        self.split.bin_batch(
            indices,
            self.time_steps,
            self.mode,
            None,
            FrameLayout::TimeMajor,
            out,
        );
    }
    fn describe(&self) -> String {
        format!(
            "{} N-MNIST recordings in {} frames",
            self.split.len(),
            self.time_steps
        )
    }
}

/// A source whose samples are stored sorted by class (N-MNIST, image folders), seen through a
/// fixed shuffle so that "the first N samples" (`--limit-train`, `--limit-test`) cover every
/// class.
pub struct Shuffled<S> {
    inner: S,
    perm: Vec<usize>,
}

impl<S: BatchSource> Shuffled<S> {
    pub fn new(inner: S) -> Self {
        let mut perm: Vec<usize> = (0..inner.len()).collect();
        let mut rng = crate::model::HostRng::new(0x5EED);
        for i in (1..perm.len()).rev() {
            perm.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        Self { inner, perm }
    }
}

impl<S: BatchSource> BatchSource for Shuffled<S> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn sample_len(&self) -> usize {
        self.inner.sample_len()
    }
    fn label(&self, i: usize) -> u32 {
        self.inner.label(self.perm[i])
    }
    fn classes(&self) -> usize {
        self.inner.classes()
    }
    fn fill(&self, indices: &[usize], seed: u64, out: &mut [f32]) {
        let mapped: Vec<usize> = indices.iter().map(|&i| self.perm[i]).collect();
        self.inner.fill(&mapped, seed, out);
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// A source seen through a subset of its samples (N-MNIST without its empty recordings).
pub struct Subset<S> {
    inner: S,
    keep: Vec<usize>,
}

impl<S: BatchSource> BatchSource for Subset<S> {
    fn len(&self) -> usize {
        self.keep.len()
    }
    fn sample_len(&self) -> usize {
        self.inner.sample_len()
    }
    fn label(&self, i: usize) -> u32 {
        self.inner.label(self.keep[i])
    }
    fn classes(&self) -> usize {
        self.inner.classes()
    }
    fn fill(&self, indices: &[usize], seed: u64, out: &mut [f32]) {
        let mapped: Vec<usize> = indices.iter().map(|&i| self.keep[i]).collect();
        self.inner.fill(&mapped, seed, out);
    }
    fn describe(&self) -> String {
        let dropped = self.inner.len() - self.keep.len();
        if dropped == 0 {
            self.inner.describe()
        } else {
            format!(
                "{} ({dropped} empty recordings skipped)",
                self.inner.describe()
            )
        }
    }
}

/// N-MNIST recordings with at least one event. An empty recording (a zero-byte `.bin`) carries
/// no information about its label, so it is skipped with a count on stderr rather than trained
/// on as a blank sample; a split with no events at all is an error.
fn non_empty_events(events: Events, split: &str) -> Result<Subset<Events>> {
    let keep: Vec<usize> = (0..events.split.len())
        .filter(|&i| !events.split.events(i).is_empty())
        .collect();
    let dropped = events.split.len() - keep.len();
    if keep.is_empty() {
        bail!(
            "{}: all {} N-MNIST {split} recordings are empty (no events)",
            events.split.source().display(),
            events.split.len()
        );
    }
    if dropped > 0 {
        eprintln!(
            "{}: skipping {dropped} empty N-MNIST {split} recording(s) of {} (no events)",
            events.split.source().display(),
            events.split.len()
        );
    }
    Ok(Subset {
        inner: events,
        keep,
    })
}

/// The train and test sources for a dataset name: `mnist`, `fashion-mnist`, `cifar10`,
/// `cifar100`, `nmnist` or `folder:PATH`. `dir` overrides where the data is read from (no
/// download then); `time_steps` bins event data.
pub fn load_sources(
    name: &str,
    dir: Option<&Path>,
    time_steps: usize,
) -> Result<(Box<dyn BatchSource>, Box<dyn BatchSource>)> {
    load_sources_sized(name, dir, time_steps, None)
}

/// What is wrong with a dataset path the user named, before any dataset reader looks inside it:
/// a missing path, a file where a folder belongs, or a folder that cannot be listed each get
/// their own message rather than "file not found" about a file inside it.
pub fn check_data_path(path: &Path, file_ok: bool) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such folder", path.display())
        }
        Err(e) => bail!("{}: cannot be read: {e}", path.display()),
    };
    if !meta.is_dir() {
        if file_ok {
            return Ok(());
        }
        bail!("{}: a file, not a folder", path.display());
    }
    if let Err(e) = std::fs::read_dir(path) {
        bail!("{}: the folder cannot be listed: {e}", path.display());
    }
    Ok(())
}

/// [`load_sources`], with every image of a `folder:` dataset resized to `resize` (width, height).
/// Without it, all images of both splits must have one size.
pub fn load_sources_sized(
    name: &str,
    dir: Option<&Path>,
    time_steps: usize,
    resize: Option<(u32, u32)>,
) -> Result<(Box<dyn BatchSource>, Box<dyn BatchSource>)> {
    if resize.is_some() && !name.starts_with("folder:") {
        bail!("--resize applies to folder: datasets only, not {name}");
    }
    // CIFAR's official archive may be named instead of its folder.
    let archive_ok = name.starts_with("cifar");
    if let Some(root) = name.strip_prefix("folder:") {
        let root = dir.unwrap_or(Path::new(root));
        check_data_path(root, false)?;
        let train = data::load_image_folder(root, "train", resize)?;
        let test = data::load_image_folder(root, "test", resize)?;
        // Both splits follow one rule: without --resize neither is resized, so a test image of
        // another size is the same error as a training image of another size.
        if (test.width, test.height) != (train.width, train.height) {
            bail!(
                "{}: test images are {}×{} but training images ({}) are {}×{}; resize them to one size (`--resize WxH`)",
                root.join("test").display(),
                test.width,
                test.height,
                root.join("train").display(),
                train.width,
                train.height
            );
        }
        // A user's own images: normalise with the training set's own channel statistics.
        let (mean, std) = train.channel_mean_std();
        if train.channels != 3 {
            bail!("{}: image folders are loaded as RGB", root.display());
        }
        let m = [mean[0] as f32, mean[1] as f32, mean[2] as f32];
        let s = [
            std[0].max(1e-3) as f32,
            std[1].max(1e-3) as f32,
            std[2].max(1e-3) as f32,
        ];
        return Ok((
            Box::new(Shuffled::new(Images {
                set: train,
                augment: true,
                mean: m,
                std: s,
            })),
            Box::new(Shuffled::new(Images {
                set: test,
                augment: false,
                mean: m,
                std: s,
            })),
        ));
    }
    if let Some(d) = dir {
        check_data_path(d, archive_ok)?;
    }
    match name {
        "cifar10" | "cifar-10" | "cifar100" | "cifar-100" => {
            let kind = if name.contains("100") {
                Cifar::Cifar100
            } else {
                Cifar::Cifar10
            };
            let dir = match dir {
                Some(d) => d.to_path_buf(),
                None => data::ensure_cifar(kind, &kind.default_dir())?,
            };
            let (train, test) = data::load_cifar_splits(kind, &dir)?;
            Ok((
                Box::new(Images {
                    set: train,
                    augment: true,
                    mean: data::CIFAR_MEAN,
                    std: data::CIFAR_STD,
                }),
                Box::new(Images {
                    set: test,
                    augment: false,
                    mean: data::CIFAR_MEAN,
                    std: data::CIFAR_STD,
                }),
            ))
        }
        "nmnist" | "n-mnist" => {
            let dir = match dir {
                Some(d) => d.to_path_buf(),
                None => data::ensure_nmnist(Path::new("datasets/nmnist"))?,
            };
            let train = data::load_nmnist(&dir, true)?;
            let test = data::load_nmnist(&dir, false)?;
            let events = |split| Events {
                split,
                time_steps,
                mode: BinMode::Clip,
            };
            Ok((
                Box::new(Shuffled::new(non_empty_events(events(train), "Train")?)),
                Box::new(Shuffled::new(non_empty_events(events(test), "Test")?)),
            ))
        }
        _ => {
            let ds: Dataset = name.parse().map_err(|e| {
                anyhow::anyhow!("{e} (also: cifar10, cifar100, nmnist, folder:PATH)")
            })?;
            let dir = match dir {
                Some(d) => d.to_path_buf(),
                None => data::ensure_dataset(ds, &ds.default_dir())?,
            };
            let train = data::load_split(&dir, true)?;
            let test = data::load_split(&dir, false)?;
            if (test.rows, test.cols) != (train.rows, train.cols) {
                bail!(
                    "{}: test images are {}×{} but the training images in {} are {}×{}",
                    dir.join(data::TEST_IMAGES).display(),
                    test.rows,
                    test.cols,
                    dir.join(data::TRAIN_IMAGES).display(),
                    train.rows,
                    train.cols
                );
            }
            Ok((Box::new(train), Box::new(test)))
        }
    }
}

/// Runs `consume` on consecutive batches of `order`, each prepared on a separate thread while the
/// previous one is consumed. `seed` seeds augmentation; `consume` returns false to stop early.
pub fn for_each_batch(
    source: &dyn BatchSource,
    order: &[usize],
    batch: usize,
    seed: u64,
    mut consume: impl FnMut(&[f32], &[u32]) -> Result<bool>,
) -> Result<()> {
    if batch == 0 {
        bail!("batch size must be at least 1");
    }
    let sl = source.sample_len();
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = sync_channel::<(Vec<f32>, Vec<u32>)>(2);
        scope.spawn(move || {
            for (k, chunk) in order.chunks(batch).enumerate() {
                let mut x = vec![0.0f32; chunk.len() * sl];
                source.fill(chunk, seed.wrapping_add(k as u64), &mut x);
                let y: Vec<u32> = chunk.iter().map(|&i| source.label(i)).collect();
                if tx.send((x, y)).is_err() {
                    break;
                }
            }
        });
        for (x, y) in rx {
            if !consume(&x, &y)? {
                break;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One recording per label with a single event, plus `empty` zero-byte recordings.
    fn write_nmnist(root: &Path, split: &str, empty: usize, events: bool) {
        for label in 0..10 {
            let d = root.join(split).join(label.to_string());
            std::fs::create_dir_all(&d).unwrap();
            let one_event: &[u8] = if events { &[3, 4, 0x80, 0, 9] } else { &[] };
            std::fs::write(d.join("1.bin"), one_event).unwrap();
            if label < empty {
                std::fs::write(d.join("2.bin"), b"").unwrap();
            }
        }
    }

    #[test]
    fn empty_nmnist_recordings_are_skipped_with_a_count() {
        let dir = tempfile::tempdir().unwrap();
        write_nmnist(dir.path(), "Train", 3, true);
        write_nmnist(dir.path(), "Test", 1, true);
        let (train, test) = load_sources("nmnist", Some(dir.path()), 3).unwrap();
        assert_eq!((train.len(), test.len()), (10, 10));
        assert!(
            train.describe().contains("3 empty recordings skipped"),
            "{}",
            train.describe()
        );
        // Every remaining sample has its event in some frame.
        let order: Vec<usize> = (0..train.len()).collect();
        let mut x = vec![0.0; train.len() * train.sample_len()];
        train.fill(&order, 0, &mut x);
        for s in 0..train.len() {
            let frames: f32 = (0..3)
                .map(|t| {
                    let at = (t * train.len() + s) * data::NMNIST_FRAME_LEN;
                    x[at..at + data::NMNIST_FRAME_LEN].iter().sum::<f32>()
                })
                .sum();
            assert_eq!(frames, 1.0, "sample {s}");
        }

        let dir = tempfile::tempdir().unwrap();
        write_nmnist(dir.path(), "Train", 0, false);
        write_nmnist(dir.path(), "Test", 0, true);
        let e = load_sources("nmnist", Some(dir.path()), 3)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("all 10 N-MNIST Train recordings are empty"),
            "{e}"
        );
    }

    #[test]
    fn zero_batch_size_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        write_nmnist(dir.path(), "Train", 0, true);
        write_nmnist(dir.path(), "Test", 0, true);
        let (train, _) = load_sources("nmnist", Some(dir.path()), 2).unwrap();
        let e = for_each_batch(train.as_ref(), &[0, 1], 0, 0, |_, _| Ok(true)).unwrap_err();
        assert!(
            e.to_string().contains("batch size must be at least 1"),
            "{e}"
        );
    }
}
