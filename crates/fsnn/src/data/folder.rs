//! Image-folder datasets: `root/train/<class>/*.{png,jpg,jpeg}` and
//! `root/test/<class>/*`, so users can train on their own images.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Result};
use image::imageops::FilterType;
use image::{ImageReader, RgbImage};

use super::image_set::{at, ImageSet};

/// File extensions (compared case-insensitively) taken as images; anything
/// else in a class folder (`.DS_Store`, `Thumbs.db`, notes) is skipped.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Images per work item: small enough to balance two threads, large enough
/// that the queue lock is never contended.
const CHUNK: usize = 64;

const PROGRESS_EVERY: usize = 10_000;

/// Loads split `"train"` or `"test"` of an image-folder dataset as 3-channel
/// RGB (greyscale and alpha images are converted).
///
/// Classes are the sorted subfolder names of `root/train`, also when loading
/// the test split, so labels agree between splits; `root/test` must have the
/// same class folders. `size` is `(width, height)`: every image is resized to
/// it (triangle filter); with `None` every image must have the first image's
/// size. Decoding runs on all cores and reports progress every 10,000 images
/// on stderr.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use fsnn::data::load_image_folder;
/// let train = load_image_folder("my-images", "train", Some((32, 32)))?;
/// let test = load_image_folder("my-images", "test", Some((32, 32)))?;
/// assert_eq!(train.class_names, test.class_names);
/// # Ok(())
/// # }
/// ```
pub fn load_image_folder(
    root: impl AsRef<Path>,
    split: &str,
    size: Option<(u32, u32)>,
) -> Result<ImageSet> {
    let root = root.as_ref();
    if split != "train" && split != "test" {
        bail!("image folder split must be \"train\" or \"test\", got {split:?}");
    }
    if size.is_some_and(|(w, h)| w == 0 || h == 0) {
        bail!("image size must be positive, got {size:?}");
    }
    let train_dir = root.join("train");
    let class_names = class_folders(&train_dir)?;
    if class_names.len() > 1 << 16 {
        bail!(
            "{}: {} classes; at most 65536 are supported",
            train_dir.display(),
            class_names.len()
        );
    }
    let split_dir = root.join(split);
    if split == "test" {
        let test_names = class_folders(&split_dir)?;
        if test_names != class_names {
            let missing: Vec<_> = class_names
                .iter()
                .filter(|c| !test_names.contains(c))
                .collect();
            let extra: Vec<_> = test_names
                .iter()
                .filter(|c| !class_names.contains(c))
                .collect();
            bail!(
                "{}: class folders differ from {}: missing in test: {missing:?}; only in test: {extra:?}",
                split_dir.display(),
                train_dir.display()
            );
        }
    }

    let mut files: Vec<(PathBuf, u16)> = Vec::new();
    for (label, class) in class_names.iter().enumerate() {
        let dir = split_dir.join(class);
        let images = image_files(&dir)?;
        // A class without training images can never be predicted; a test
        // split may legitimately lack some classes.
        if images.is_empty() && split == "train" {
            bail!(
                "{}: no images ({}); every class needs training images",
                dir.display(),
                IMAGE_EXTENSIONS.join(", ")
            );
        }
        files.extend(images.into_iter().map(|p| (p, label as u16)));
    }
    if files.is_empty() {
        bail!(
            "{}: no images ({}) in any class folder",
            split_dir.display(),
            IMAGE_EXTENSIONS.join(", ")
        );
    }

    let (width, height) = match size {
        Some(s) => s,
        None => {
            let first = &files[0].0;
            ImageReader::open(first)
                .and_then(|r| r.with_guessed_format())
                .map_err(|e| at(first, format_args!("cannot read: {e}")))?
                .into_dimensions()
                .map_err(|e| at(first, format_args!("cannot decode: {e}")))?
        }
    };
    let target = Target {
        width,
        height,
        resize: size.is_some(),
        first: &files[0].0,
    };
    let pixels = decode_all(&files, &target, split)?;
    Ok(ImageSet {
        n: files.len(),
        channels: 3,
        height: height as usize,
        width: width as usize,
        classes: class_names.len(),
        pixels,
        labels: files.iter().map(|&(_, l)| l).collect(),
        class_names,
        coarse: None,
    })
}

/// Sorted names of the non-hidden subfolders of `dir`.
fn class_folders(dir: &Path) -> Result<Vec<String>> {
    let entries = fs::read_dir(dir).map_err(|e| {
        at(
            dir,
            format_args!(
                "cannot list: {e}; an image folder dataset is train/<class>/*.png|jpg and test/<class>/*"
            ),
        )
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| at(dir, format_args!("cannot list: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `is_dir` on the path follows symlinks, so linked class folders work.
        if !name.starts_with('.') && entry.path().is_dir() {
            names.push(name);
        }
    }
    if names.is_empty() {
        bail!(
            "{}: no class subfolders; expected {}/<class>/*.png|jpg",
            dir.display(),
            dir.display()
        );
    }
    names.sort();
    Ok(names)
}

/// Image files of one class folder, sorted by name so loads are reproducible.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|e| at(dir, format_args!("cannot list: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| at(dir, format_args!("cannot list: {e}")))?;
        let path = entry.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)));
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if is_image && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

struct Target<'a> {
    width: u32,
    height: u32,
    resize: bool,
    /// Named in size-mismatch errors, as the image that set the size.
    first: &'a Path,
}

/// Decodes every file into its slot of one preallocated buffer. Threads pull
/// chunks from a shared queue, so a few large images do not stall one thread.
fn decode_all(files: &[(PathBuf, u16)], target: &Target, split: &str) -> Result<Vec<u8>> {
    let len = 3 * target.width as usize * target.height as usize;
    let mut pixels = vec![0u8; files.len() * len];
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
        .min(files.len().div_ceil(CHUNK));
    let queue = Mutex::new(
        pixels
            .chunks_mut(CHUNK * len)
            .zip(files.chunks(CHUNK))
            .enumerate(),
    );
    let failed = AtomicBool::new(false);
    // The error of the lowest-numbered failing file, so the report does not
    // depend on thread timing.
    let error: Mutex<Option<(usize, anyhow::Error)>> = Mutex::new(None);
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let Some((k, (out, batch))) = queue.lock().unwrap().next() else {
                    return;
                };
                for (j, ((path, _), slot)) in
                    batch.iter().zip(out.chunks_exact_mut(len)).enumerate()
                {
                    if let Err(e) = decode_into(path, target, slot) {
                        let i = k * CHUNK + j;
                        let mut first = error.lock().unwrap();
                        if first.as_ref().is_none_or(|(fi, _)| i < *fi) {
                            *first = Some((i, e));
                        }
                        failed.store(true, Ordering::Relaxed);
                        return;
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_multiple_of(PROGRESS_EVERY) {
                        eprintln!(
                            "{split}: {n}/{} images decoded ({:.1} s)",
                            files.len(),
                            start.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    match error.into_inner().unwrap() {
        Some((_, e)) => Err(e),
        None => Ok(pixels),
    }
}

/// Decodes one image (format sniffed from content, not the extension) into
/// channel-major RGB planes in `out`.
fn decode_into(path: &Path, target: &Target, out: &mut [u8]) -> Result<()> {
    let bytes = fs::read(path).map_err(|e| at(path, format_args!("cannot read: {e}")))?;
    let format = image::guess_format(&bytes).ok();
    if format == Some(image::ImageFormat::Jpeg) {
        check_jpeg_complete(&bytes).map_err(|e| at(path, format_args!("cannot decode: {e}")))?;
    }
    let img = match format {
        Some(f) => image::load_from_memory_with_format(&bytes, f),
        None => ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(image::ImageError::IoError)
            .and_then(|r| r.decode()),
    }
    .map_err(|e| at(path, format_args!("cannot decode: {e}")))?;
    let mut rgb: RgbImage = img.into_rgb8();
    if rgb.dimensions() != (target.width, target.height) {
        if !target.resize {
            bail!(
                "{}: {}×{} pixels, but {} (the first image) is {}×{}; resize all images to one size (`fsnn train --resize WxH`)",
                path.display(),
                rgb.width(),
                rgb.height(),
                target.first.display(),
                target.width,
                target.height
            );
        }
        rgb = image::imageops::resize(&rgb, target.width, target.height, FilterType::Triangle);
    }
    let plane = out.len() / 3;
    let (r, gb) = out.split_at_mut(plane);
    let (g, b) = gb.split_at_mut(plane);
    for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
        r[i] = px[0];
        g[i] = px[1];
        b[i] = px[2];
    }
    Ok(())
}

/// The `image` crate's JPEG decoder renders what it can of a damaged file (a truncated file
/// becomes grey below the cut) and reports success, so JPEGs are first decoded strictly: any
/// premature end, corrupt entropy data or stray marker is an error.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), String> {
    let options = zune_core::options::DecoderOptions::default().set_strict_mode(true);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    decoder.decode().map_err(|e| {
        let msg = format!("{e:?}");
        let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
        format!("damaged or truncated JPEG: {msg}")
    })?;
    // Strict decoding stops at the last scan; a cut inside the final marker still leaves the
    // end-of-image marker missing.
    if !bytes.ends_with(&[0xFF, 0xD9]) && !has_eoi_before_trailer(bytes) {
        return Err("damaged or truncated JPEG: no end-of-image marker".into());
    }
    Ok(())
}

/// Some writers append padding or metadata after the end-of-image marker; accept an EOI within
/// the last 4 KiB followed only by such bytes.
fn has_eoi_before_trailer(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb};

    /// A solid image whose colour encodes class and index.
    fn colour(class: usize, i: usize) -> [u8; 3] {
        [(class * 60) as u8, (i * 40) as u8, 200]
    }

    /// Writes `n_per_class` images per class, alternating PNG and JPEG.
    fn make_tree(root: &Path, split: &str, classes: &[&str], n_per_class: usize, side: u32) {
        for (c, class) in classes.iter().enumerate() {
            let dir = root.join(split).join(class);
            fs::create_dir_all(&dir).unwrap();
            for i in 0..n_per_class {
                let img = RgbImage::from_pixel(side, side, Rgb(colour(c, i)));
                let ext = if i % 2 == 0 { "png" } else { "JPG" };
                img.save(dir.join(format!("{i:03}.{ext}"))).unwrap();
            }
        }
    }

    #[test]
    fn loads_png_and_jpeg_with_sorted_classes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let classes = ["zebra", "ant", "moth"];
        make_tree(root, "train", &classes, 3, 8);
        make_tree(root, "test", &classes, 2, 8);
        fs::write(root.join("train/ant/notes.txt"), "not an image").unwrap();
        fs::create_dir_all(root.join("train/.cache")).unwrap();

        let train = load_image_folder(root, "train", None).unwrap();
        assert_eq!(train.class_names, ["ant", "moth", "zebra"]);
        assert_eq!(
            (train.n, train.channels, train.height, train.width),
            (9, 3, 8, 8)
        );
        assert_eq!(train.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
        // Image 7 is zebra (written as class 0), file 001.JPG: lossy, so compare loosely.
        for (idx, class, i) in [(6, 0, 0), (7, 0, 1), (3, 2, 0)] {
            let img = train.image(idx);
            for c in 0..3 {
                let want = colour(class, i)[c] as i32;
                for &p in &img[c * 64..(c + 1) * 64] {
                    assert!(
                        (p as i32 - want).abs() <= 3,
                        "image {idx} ch {c}: {p} vs {want}"
                    );
                }
            }
        }
        // PNG is lossless: exact planes.
        assert!(train.image(6)[..64].iter().all(|&p| p == 0));
        assert!(train.image(6)[128..].iter().all(|&p| p == 200));

        let test = load_image_folder(root, "test", None).unwrap();
        assert_eq!(test.class_names, train.class_names);
        assert_eq!(test.labels, [0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn greyscale_becomes_rgb_and_resize_applies() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        make_tree(root, "train", &["a"], 1, 6);
        let grey = GrayImage::from_pixel(12, 10, Luma([77]));
        grey.save(root.join("train/a/grey.png")).unwrap();

        // Without a size the odd one is named with both sizes.
        let e = load_image_folder(root, "train", None)
            .unwrap_err()
            .to_string();
        let want = format!(
            "{}: 12×10 pixels, but {} (the first image) is 6×6; resize all images to one size (`fsnn train --resize WxH`)",
            root.join("train/a/grey.png").display(),
            root.join("train/a/000.png").display()
        );
        assert_eq!(e, want);

        let set = load_image_folder(root, "train", Some((4, 3))).unwrap();
        assert_eq!((set.n, set.width, set.height), (2, 4, 3));
        assert_eq!(set.pixels.len(), 2 * 3 * 12);
        // A constant image stays constant under resizing, in all 3 channels.
        assert!(set.image(1).iter().all(|&p| p == 77), "{:?}", set.image(1));
        assert!(set.image(0)[24..].iter().all(|&p| p == 200));
    }

    #[test]
    fn class_sets_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        make_tree(root, "train", &["cat", "dog"], 1, 4);
        make_tree(root, "test", &["cat", "emu"], 1, 4);
        let e = load_image_folder(root, "test", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("class folders differ"), "{e}");
        assert!(
            e.contains(r#"missing in test: ["dog"]; only in test: ["emu"]"#),
            "{e}"
        );
        // Train alone is fine.
        assert_eq!(load_image_folder(root, "train", None).unwrap().n, 2);
    }

    #[test]
    fn layout_errors_are_specific() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let e = load_image_folder(root, "valid", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"train\" or \"test\""), "{e}");
        let e = load_image_folder(root, "train", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train: cannot list") && e.contains("train/<class>/"),
            "{e}"
        );

        make_tree(root, "train", &["a", "b"], 1, 4);
        fs::remove_file(root.join("train/b/000.png")).unwrap();
        let e = load_image_folder(root, "train", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no images") && e.contains("b:"), "{e}");

        // A corrupt file is named.
        fs::write(root.join("train/b/000.png"), b"\x89PNG garbage").unwrap();
        let e = load_image_folder(root, "train", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("000.png: cannot decode"), "{e}");
    }

    #[test]
    fn damaged_jpegs_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let class_dir = root.join("train/a");
        fs::create_dir_all(&class_dir).unwrap();
        // A textured image, so the entropy-coded data is long enough to cut in many places.
        let img = RgbImage::from_fn(24, 16, |x, y| {
            Rgb([(x * 10) as u8, (y * 15) as u8, (x * y) as u8])
        });
        let path = class_dir.join("img.jpg");
        img.save(&path).unwrap();
        let good = fs::read(&path).unwrap();
        assert_eq!(load_image_folder(root, "train", None).unwrap().n, 1);
        let mut cuts = 0;
        for cut in (20..good.len()).step_by(7).chain([good.len() - 1]) {
            fs::write(&path, &good[..cut]).unwrap();
            let e = load_image_folder(root, "train", None)
                .expect_err(&format!(
                    "JPEG cut to {cut} of {} bytes was accepted",
                    good.len()
                ))
                .to_string();
            assert!(e.contains("img.jpg: cannot"), "{e}");
            cuts += 1;
        }
        println!("{cuts} truncated JPEGs rejected, e.g. at 1/2 the length");
    }

    #[test]
    fn parallel_decode_keeps_order() {
        // More than one chunk so several threads take part.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let class_dir = root.join("train/only");
        fs::create_dir_all(&class_dir).unwrap();
        let n = 3 * CHUNK + 5;
        for i in 0..n {
            let img = RgbImage::from_pixel(2, 2, Rgb([i as u8, (i / 256) as u8, 9]));
            img.save(class_dir.join(format!("{i:04}.png"))).unwrap();
        }
        let set = load_image_folder(root, "train", None).unwrap();
        assert_eq!(set.n, n);
        for i in 0..n {
            assert_eq!(set.image(i)[0], i as u8);
            assert_eq!(set.image(i)[4], (i / 256) as u8);
        }
    }

    /// Loads a real image-folder dataset, e.g. the CIFAR-10 JPEG proxy:
    /// `FSNN_IMAGE_FOLDER=/tmp/cifar10-jpeg cargo test --release -- --ignored
    /// image_folder_benchmark --nocapture`.
    #[test]
    #[ignore = "needs FSNN_IMAGE_FOLDER pointing at an image-folder dataset"]
    fn image_folder_benchmark() {
        let root = std::env::var("FSNN_IMAGE_FOLDER").expect("set FSNN_IMAGE_FOLDER");
        for split in ["train", "test"] {
            let start = Instant::now();
            let set = load_image_folder(&root, split, None).unwrap();
            let secs = start.elapsed().as_secs_f64();
            let (mean, std) = set.channel_mean_std();
            eprintln!(
                "{split}: {} images, {} classes, {}×{} in {secs:.2} s ({:.0} images/s); \
                 mean {mean:.4?}, std {std:.4?}; per class {:?}",
                set.n,
                set.classes,
                set.width,
                set.height,
                set.n as f64 / secs,
                set.class_counts()
            );
        }
    }
}
