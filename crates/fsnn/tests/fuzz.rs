//! Seeded mutation fuzzing of every file parser: IDX, N-MNIST, CIFAR, safetensors checkpoints and
//! PNG/JPEG image folders. Each parser gets a valid file, then a few hundred mutations of it
//! (truncations, byte flips, inserted and appended bytes, overwritten header bytes). A panic, a
//! hang (a case over 20 s) or accepting a structurally damaged file (here: a truncation the
//! format can detect) fails the test; a flipped bit inside pixel data cannot be detected and is
//! not a failure.
//!
//! `FSNN_FUZZ_CASES` (default 300 per parser) and `FSNN_FUZZ_SEED` (default fixed) scale it up;
//! `tools/fuzz.sh` runs long campaigns.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fsnn::data;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn cases() -> usize {
    std::env::var("FSNN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn base_seed() -> u64 {
    std::env::var("FSNN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_F022)
}

/// One mutation of `good` and whether it is a truncation (which every parser must reject when
/// `detectable` says the cut is visible to the format).
fn mutate(good: &[u8], rng: &mut Rng, header: usize) -> (Vec<u8>, Option<usize>) {
    let mut b = good.to_vec();
    match rng.below(6) {
        0 => {
            let cut = rng.below(good.len());
            b.truncate(cut);
            return (b, Some(cut));
        }
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            // Overwrite header bytes with extreme values (sizes, counts, magic).
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(header.min(b.len()));
                b[i] = [0x00, 0xFF, 0x7F, 0x80][rng.below(4)];
            }
        }
        3 => {
            let i = rng.below(b.len());
            let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
            b.splice(i..i, extra);
        }
        4 => {
            let i = rng.below(b.len());
            let n = (1 + rng.below(64)).min(b.len() - i);
            b.drain(i..i + n);
        }
        _ => b.extend((0..1 + rng.below(64)).map(|_| rng.next() as u8)),
    }
    (b, None)
}

/// Runs `parse` on a worker thread: Err(message) on panic or timeout, else its result.
fn guarded<T: Send + 'static>(
    what: &str,
    parse: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(p)) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("{what}: panicked: {msg}"))
        }
        Err(_) => Err(format!("{what}: no answer in 20 s (hang)")),
    }
}

/// Fuzzes one parser: `write` puts mutated bytes where `parse` reads them; `parse` returns
/// Ok(()) when it accepted the file; `must_reject(cut)` says whether a truncation at `cut` bytes
/// is structurally visible.
fn fuzz(
    name: &str,
    good: Vec<u8>,
    header: usize,
    dir: &Path,
    write: impl Fn(&Path, &[u8]),
    parse: impl Fn(PathBuf) -> anyhow::Result<()> + Clone + Send + 'static,
    must_reject: impl Fn(usize) -> bool,
) {
    write(dir, &good);
    let p = parse.clone();
    let d = dir.to_path_buf();
    guarded(name, move || p(d))
        .unwrap()
        .unwrap_or_else(|e| panic!("{name}: the unmutated file is refused: {e:#}"));
    let t0 = Instant::now();
    let seed = base_seed()
        ^ name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) ^ b as u64);
    let mut rng = Rng(seed | 1);
    let (mut rejected, mut accepted, mut failures) = (0, 0, Vec::new());
    for case in 0..cases() {
        let (bytes, cut) = mutate(&good, &mut rng, header);
        write(dir, &bytes);
        let p = parse.clone();
        let d = dir.to_path_buf();
        let what = format!("{name} case {case} (seed {seed:#x}, {} bytes)", bytes.len());
        match guarded(&what, move || p(d)) {
            Err(e) => failures.push(e),
            Ok(Err(e)) => {
                rejected += 1;
                let msg = format!("{e:#}");
                if msg.is_empty() || msg.contains('\n') {
                    failures.push(format!("{what}: error is not one line: {msg:?}"));
                }
            }
            Ok(Ok(())) => {
                accepted += 1;
                if let Some(c) = cut.filter(|&c| must_reject(c)) {
                    failures.push(format!("{what}: accepted the file cut to {c} bytes"));
                }
            }
        }
    }
    println!(
        "{name}: {} mutations in {:.1} s: {rejected} rejected, {accepted} accepted (undetectable changes)",
        cases(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failures, first: {}",
        failures.len(),
        failures[0]
    );
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn fuzz_idx() {
    let dir = tmp();
    let (n, side) = (5u32, 7u32);
    let mut good = vec![0, 0, 8, 3];
    for v in [n, side, side] {
        good.extend(v.to_be_bytes());
    }
    good.extend((0..n * side * side).map(|i| (i * 37) as u8));
    let len = good.len();
    fuzz(
        "idx images",
        good,
        16,
        dir.path(),
        |d, b| std::fs::write(d.join("img"), b).unwrap(),
        |d| {
            let im = data::read_idx_images(d.join("img"))?;
            assert_eq!(im.pixels.len(), im.n * im.rows * im.cols);
            Ok(())
        },
        |cut| cut < len,
    );
    let mut labels = vec![0, 0, 8, 1];
    labels.extend(9u32.to_be_bytes());
    labels.extend([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let len = labels.len();
    fuzz(
        "idx labels",
        labels,
        8,
        dir.path(),
        |d, b| std::fs::write(d.join("lab"), b).unwrap(),
        |d| {
            let l = data::read_idx_labels(d.join("lab"))?;
            assert!(l.iter().all(|&c| c < 10), "label out of range accepted");
            Ok(())
        },
        |cut| cut < len,
    );
}

#[test]
fn fuzz_nmnist() {
    let dir = tmp();
    let mut good = Vec::new();
    for i in 0..40u32 {
        let t = i * 7000;
        // x, y, polarity bit + 23-bit timestamp.
        good.extend([
            (i % 34) as u8,
            (i * 3 % 34) as u8,
            ((i % 2) << 7) as u8 | (t >> 16) as u8,
            (t >> 8) as u8,
            t as u8,
        ]);
    }
    fuzz(
        "n-mnist",
        good,
        10,
        dir.path(),
        |d, b| std::fs::write(d.join("s.bin"), b).unwrap(),
        |d| {
            let (events, stats) = data::read_events(d.join("s.bin"))?;
            assert_eq!(events.len(), stats.events);
            assert!(events
                .iter()
                .all(|e| (e.x as usize) < data::NMNIST_SIDE && (e.y as usize) < data::NMNIST_SIDE));
            Ok(())
        },
        |cut| cut % 5 != 0,
    );
}

#[test]
fn fuzz_cifar() {
    let dir = tmp();
    let rec = 2 + 3072;
    let record = |coarse: u8, fine: u8| {
        let mut r = vec![coarse, fine];
        r.extend((0..3072).map(|i| (i * 7 + fine as usize) as u8));
        r
    };
    let mut good = Vec::new();
    for k in 0..3u8 {
        good.extend(record(k, k * 30));
    }
    std::fs::write(dir.path().join("test.bin"), record(1, 2)).unwrap();
    fuzz(
        "cifar-100",
        good,
        rec + 2,
        dir.path(),
        |d, b| std::fs::write(d.join("train.bin"), b).unwrap(),
        |d| {
            let s = data::load_cifar(data::Cifar::Cifar100, &d, true)?;
            assert_eq!(s.pixels.len(), s.n * 3072);
            assert!(s.labels.iter().all(|&l| (l as usize) < s.classes));
            Ok(())
        },
        move |cut| cut % rec != 0,
    );
}

#[test]
fn fuzz_checkpoint() {
    use fsnn::model::spec::OpSpec;
    use fsnn::model::HostState;
    let dir = tmp();
    let mut cfg = fsnn::model::spec::preset("fc400").unwrap();
    cfg.layers[0].ops[0] = OpSpec::Linear { out: 8, bias: true };
    let host = HostState {
        tensors: vec![
            (
                "fx.weight".into(),
                vec![8, 4],
                (0..32).map(|i| i as f32).collect(),
            ),
            ("bn.gamma".into(), vec![8], vec![1.0; 8]),
        ],
    };
    let state = fsnn::train::TrainState {
        epoch: 2,
        global_step: 40,
        best_test_acc: 0.5,
        partial: None,
    };
    let path = dir.path().join("ck.safetensors");
    fsnn::train::save_checkpoint(&path, &cfg, &state, &host).unwrap();
    let good = std::fs::read(&path).unwrap();
    let header = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let len = good.len();
    fuzz(
        "checkpoint",
        good,
        header,
        dir.path(),
        |d, b| std::fs::write(d.join("ck.safetensors"), b).unwrap(),
        |d| {
            let ck = fsnn::train::read_checkpoint(&d.join("ck.safetensors"))?;
            // Whatever is accepted is a valid model description.
            fsnn::checks::model_spec(&ck.model, "accepted")?;
            for (_, shape, data) in &ck.host.tensors {
                assert_eq!(shape.iter().product::<usize>(), data.len());
            }
            Ok(())
        },
        |cut| cut < len,
    );
}

/// A folder dataset whose one training image is the fuzzed file.
fn fuzz_image(name: &str, ext: &str, format: image::ImageFormat) {
    let dir = tmp();
    let root = dir.path().to_path_buf();
    for split in ["train", "test"] {
        for class in ["a", "b"] {
            let d = root.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            image::RgbImage::from_pixel(12, 10, image::Rgb([10, 200, 30]))
                .save(d.join("base.png"))
                .unwrap();
        }
    }
    let img = image::RgbImage::from_fn(12, 10, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 25) as u8, ((x * y) % 256) as u8])
    });
    let mut good = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut good), format)
        .unwrap();
    let len = good.len();
    let file = format!("x.{ext}");
    let f2 = file.clone();
    // PNG's last 12 bytes are the empty IEND chunk, which decoders do not need.
    let visible = if ext == "png" { len - 12 } else { len };
    fuzz(
        name,
        good,
        if ext == "png" { 64 } else { 200 },
        &root,
        move |d, b| std::fs::write(d.join("train/a").join(&f2), b).unwrap(),
        |d| {
            let s = data::load_image_folder(&d, "train", None)?;
            assert_eq!(s.pixels.len(), s.n * 3 * s.width * s.height);
            Ok(())
        },
        move |cut| cut < visible,
    );
}

#[test]
fn fuzz_png_folder() {
    fuzz_image("png folder", "png", image::ImageFormat::Png);
}

#[test]
fn fuzz_jpeg_folder() {
    fuzz_image("jpeg folder", "jpg", image::ImageFormat::Jpeg);
}
