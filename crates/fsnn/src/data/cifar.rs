//! CIFAR-10 and CIFAR-100, binary version, from the extracted folder or
//! straight from the official `.tar.gz`.
//!
//! Record layouts (no header, records back to back):
//! - CIFAR-10: 1 label byte, then 3072 pixel bytes (R, G, B planes of 32×32,
//!   row-major); `data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`.
//! - CIFAR-100: coarse label byte, fine label byte, 3072 pixel bytes;
//!   `train.bin`, `test.bin`. We train on the fine label and keep the coarse.

use super::fetch::{hex, http_agent};
use std::fmt;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Instant, SystemTime};

use anyhow::{anyhow, bail, Result};
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use super::image_set::{at, CoarseLabels, ImageSet};

pub const CIFAR_CHANNELS: usize = 3;
pub const CIFAR_SIDE: usize = 32;
pub const CIFAR_IMAGE_BYTES: usize = CIFAR_CHANNELS * CIFAR_SIDE * CIFAR_SIDE;

/// Same switch as `fetch::OFFLINE_ENV`: set to anything but empty, `0` or
/// `false` to forbid network access.
const OFFLINE_ENV: &str = "FSNN_DATA_OFFLINE";

/// The archives are ~170 MB; this only guards against a misbehaving server.
const MAX_DOWNLOAD: u64 = 512 << 20;

const CIFAR10_TRAIN: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const CIFAR10_TEST: [&str; 1] = ["test_batch.bin"];
const CIFAR100_TRAIN: [&str; 1] = ["train.bin"];
const CIFAR100_TEST: [&str; 1] = ["test.bin"];

/// Used when the archive's name files are absent (users often copy only the
/// `.bin` files); same order as `batches.meta.txt`.
const CIFAR10_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Same order as `fine_label_names.txt`.
const CIFAR100_FINE_NAMES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// Same order as `coarse_label_names.txt`.
const CIFAR100_COARSE_NAMES: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

const CIFAR100_COARSE_CLASSES: usize = 20;
const CIFAR100_COARSE_NAMES_FILE: &str = "coarse_label_names.txt";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cifar {
    Cifar10,
    Cifar100,
}

impl Cifar {
    pub const ALL: [Cifar; 2] = [Cifar::Cifar10, Cifar::Cifar100];

    /// Short name used on the command line and as the directory name.
    pub fn name(self) -> &'static str {
        match self {
            Cifar::Cifar10 => "cifar10",
            Cifar::Cifar100 => "cifar100",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Cifar::Cifar10 => "CIFAR-10",
            Cifar::Cifar100 => "CIFAR-100",
        }
    }

    /// Number of (fine) classes, the ones we train on.
    pub fn classes(self) -> usize {
        match self {
            Cifar::Cifar10 => 10,
            Cifar::Cifar100 => 100,
        }
    }

    fn label_bytes(self) -> usize {
        match self {
            Cifar::Cifar10 => 1,
            Cifar::Cifar100 => 2,
        }
    }

    /// Bytes per record: label byte(s) plus the 3072 pixel bytes.
    pub fn record_len(self) -> usize {
        self.label_bytes() + CIFAR_IMAGE_BYTES
    }

    /// File name of the official archive.
    pub fn archive_name(self) -> &'static str {
        match self {
            Cifar::Cifar10 => "cifar-10-binary.tar.gz",
            Cifar::Cifar100 => "cifar-100-binary.tar.gz",
        }
    }

    /// The dataset authors' download location.
    pub fn url(self) -> &'static str {
        match self {
            Cifar::Cifar10 => "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            Cifar::Cifar100 => "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        }
    }

    /// Lower-case hex SHA-256 of the official archive. The authors publish
    /// only MD5s (c32a1d4ab5d03f1284b67883e8d87530 for CIFAR-10,
    /// 03b5dce01913d631647c71ecec9e9cb8 for CIFAR-100, as listed by
    /// torchvision); these SHA-256 values are the ones pinned by several
    /// independent loaders (Julia MLDatasets, GoMLX, torch.rb), one of which
    /// records checking them against those MD5s. Pinning SHA-256 avoids an
    /// MD5 dependency.
    pub fn archive_sha256(self) -> &'static str {
        match self {
            Cifar::Cifar10 => "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            Cifar::Cifar100 => "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
        }
    }

    /// The folder the official archive unpacks to.
    pub fn inner_dir(self) -> &'static str {
        match self {
            Cifar::Cifar10 => "cifar-10-batches-bin",
            Cifar::Cifar100 => "cifar-100-binary",
        }
    }

    /// Data files of the training or test split, in load order.
    pub fn split_files(self, train: bool) -> &'static [&'static str] {
        match (self, train) {
            (Cifar::Cifar10, true) => &CIFAR10_TRAIN,
            (Cifar::Cifar10, false) => &CIFAR10_TEST,
            (Cifar::Cifar100, true) => &CIFAR100_TRAIN,
            (Cifar::Cifar100, false) => &CIFAR100_TEST,
        }
    }

    /// The optional text file with one class name per line.
    pub fn names_file(self) -> &'static str {
        match self {
            Cifar::Cifar10 => "batches.meta.txt",
            Cifar::Cifar100 => "fine_label_names.txt",
        }
    }

    /// `datasets/<name>`, relative to the working directory.
    pub fn default_dir(self) -> PathBuf {
        PathBuf::from("datasets").join(self.name())
    }

    fn builtin_names(self) -> &'static [&'static str] {
        match self {
            Cifar::Cifar10 => &CIFAR10_NAMES,
            Cifar::Cifar100 => &CIFAR100_FINE_NAMES,
        }
    }

    /// "data_batch_1.bin … data_batch_5.bin and test_batch.bin", for messages.
    fn expected_files(self) -> String {
        match self {
            Cifar::Cifar10 => "data_batch_1.bin … data_batch_5.bin and test_batch.bin".into(),
            Cifar::Cifar100 => "train.bin and test.bin".into(),
        }
    }

    fn all_data_files(self) -> impl Iterator<Item = &'static str> {
        self.split_files(true)
            .iter()
            .chain(self.split_files(false))
            .copied()
    }
}

impl fmt::Display for Cifar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cifar {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let key = s.trim().to_ascii_lowercase().replace(['-', '_'], "");
        match key.as_str() {
            "cifar10" => Ok(Cifar::Cifar10),
            "cifar100" => Ok(Cifar::Cifar100),
            _ => bail!("unknown CIFAR variant {s:?}; known: cifar10, cifar100"),
        }
    }
}

/// Where the files of one variant were found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Location {
    Folder(PathBuf),
    Archive(PathBuf),
}

/// Accepts the folder holding the `.bin` files, a folder holding the
/// archive's inner folder (`cifar-10-batches-bin/`, `cifar-100-binary/`), a
/// folder holding the official `.tar.gz`, or the `.tar.gz` itself.
fn locate(kind: Cifar, path: &Path) -> Result<Location> {
    if path.is_file() {
        return Ok(Location::Archive(path.to_path_buf()));
    }
    if !path.is_dir() {
        bail!(
            "{}: not found; expected a folder with the {} binary version ({}), its {}/ folder, or {}",
            path.display(),
            kind.title(),
            kind.expected_files(),
            kind.inner_dir(),
            kind.archive_name()
        );
    }
    let has_data = |dir: &Path| kind.all_data_files().any(|f| dir.join(f).is_file());
    if has_data(path) {
        return Ok(Location::Folder(path.to_path_buf()));
    }
    let inner = path.join(kind.inner_dir());
    if has_data(&inner) {
        return Ok(Location::Folder(inner));
    }
    let archive = path.join(kind.archive_name());
    if archive.is_file() {
        return Ok(Location::Archive(archive));
    }
    bail!(
        "{}: no {} files; expected {} here or in {}/, or {} (from {})",
        path.display(),
        kind.title(),
        kind.expected_files(),
        kind.inner_dir(),
        kind.archive_name(),
        kind.url()
    )
}

/// Loads the training (`train == true`) or test split. `path` may be the
/// folder with the `.bin` files, its parent (holding `cifar-10-batches-bin/`
/// or `cifar-100-binary/`), a folder with the official `.tar.gz`, or the
/// `.tar.gz` itself, which is read without extracting it to disk.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use fsnn::data::{load_cifar, Cifar};
/// let test = load_cifar(Cifar::Cifar10, "datasets/cifar10", false)?;
/// assert_eq!((test.n, test.classes), (10_000, 10));
/// # Ok(())
/// # }
/// ```
pub fn load_cifar(kind: Cifar, path: impl AsRef<Path>, train: bool) -> Result<ImageSet> {
    let mut sets = load(kind, path.as_ref(), &[train])?;
    Ok(sets.pop().expect("one split requested"))
}

/// Loads `(train, test)`; an archive is decompressed only once.
pub fn load_cifar_splits(kind: Cifar, path: impl AsRef<Path>) -> Result<(ImageSet, ImageSet)> {
    let mut sets = load(kind, path.as_ref(), &[true, false])?;
    let test = sets.pop().expect("two splits requested");
    let train = sets.pop().expect("two splits requested");
    Ok((train, test))
}

fn load(kind: Cifar, path: &Path, splits: &[bool]) -> Result<Vec<ImageSet>> {
    match locate(kind, path)? {
        Location::Folder(dir) => load_folder(kind, &dir, splits),
        Location::Archive(archive) => load_archive(kind, &archive, splits),
    }
}

/// Label and pixel arrays of one split as records are appended.
#[derive(Default)]
struct Records {
    pixels: Vec<u8>,
    labels: Vec<u16>,
    coarse: Vec<u16>,
}

impl Records {
    fn into_set(self, kind: Cifar, names: &Names) -> ImageSet {
        let n = self.labels.len();
        ImageSet {
            n,
            channels: CIFAR_CHANNELS,
            height: CIFAR_SIDE,
            width: CIFAR_SIDE,
            classes: kind.classes(),
            pixels: self.pixels,
            labels: self.labels,
            class_names: names.fine.clone(),
            coarse: (kind == Cifar::Cifar100).then(|| CoarseLabels {
                classes: CIFAR100_COARSE_CLASSES,
                labels: self.coarse,
                class_names: names.coarse.clone(),
            }),
        }
    }
}

/// Checks and appends the records of one data file. `what` names the file
/// (and the archive it came from) in errors.
fn append_records(kind: Cifar, bytes: &[u8], what: &str, out: &mut Records) -> Result<()> {
    let rec = kind.record_len();
    let title = kind.title();
    if bytes.is_empty() {
        bail!("{what}: empty file, expected {rec}-byte {title} records");
    }
    if !bytes.len().is_multiple_of(rec) {
        bail!(
            "{what}: {} bytes is not a whole number of {rec}-byte {title} records (truncated?)",
            bytes.len()
        );
    }
    let n = bytes.len() / rec;
    out.pixels.reserve(n * CIFAR_IMAGE_BYTES);
    out.labels.reserve(n);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let (fine, coarse) = match kind {
            Cifar::Cifar10 => (r[0], None),
            Cifar::Cifar100 => (r[1], Some(r[0])),
        };
        if let Some(c) = coarse {
            if c as usize >= CIFAR100_COARSE_CLASSES {
                bail!(
                    "{what}: record {i} (byte {}) has coarse label {c}, out of range 0..={}",
                    i * rec,
                    CIFAR100_COARSE_CLASSES - 1
                );
            }
            out.coarse.push(c.into());
        }
        if fine as usize >= kind.classes() {
            let which = if coarse.is_some() {
                "fine label"
            } else {
                "label"
            };
            bail!(
                "{what}: record {i} (byte {}) has {which} {fine}, out of range 0..={} for {title}",
                i * rec + kind.label_bytes() - 1,
                kind.classes() - 1
            );
        }
        out.labels.push(fine.into());
        out.pixels.extend_from_slice(&r[kind.label_bytes()..]);
    }
    Ok(())
}

struct Names {
    fine: Vec<String>,
    coarse: Vec<String>,
}

/// One name per non-empty line (`batches.meta.txt` ends in blank lines);
/// a wrong count means a wrong file, which would mislabel every report.
fn parse_names(text: &[u8], expected: usize, what: &str) -> Result<Vec<String>> {
    let text = String::from_utf8_lossy(text);
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != expected {
        bail!("{what}: {} class names, expected {expected}", names.len());
    }
    Ok(names)
}

/// `fine_text`/`coarse_text` with the name of their source, when present.
fn names(
    kind: Cifar,
    fine_text: Option<(&[u8], String)>,
    coarse_text: Option<(&[u8], String)>,
) -> Result<Names> {
    let fine = match fine_text {
        Some((text, what)) => parse_names(text, kind.classes(), &what)?,
        None => kind.builtin_names().iter().map(|s| s.to_string()).collect(),
    };
    let coarse = match (kind, coarse_text) {
        (Cifar::Cifar10, _) => Vec::new(),
        (Cifar::Cifar100, Some((text, what))) => parse_names(text, CIFAR100_COARSE_CLASSES, &what)?,
        (Cifar::Cifar100, None) => CIFAR100_COARSE_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    Ok(Names { fine, coarse })
}

fn load_folder(kind: Cifar, dir: &Path, splits: &[bool]) -> Result<Vec<ImageSet>> {
    let missing: Vec<&str> = splits
        .iter()
        .flat_map(|&train| kind.split_files(train))
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: missing {}; the {} binary version has {}",
            dir.display(),
            missing.join(", "),
            kind.title(),
            kind.expected_files()
        );
    }
    let read_opt = |name: &str| -> Result<Option<(Vec<u8>, String)>> {
        let path = dir.join(name);
        if !path.is_file() {
            return Ok(None);
        }
        let text = fs::read(&path).map_err(|e| at(&path, format_args!("cannot read: {e}")))?;
        Ok(Some((text, path.display().to_string())))
    };
    let fine = read_opt(kind.names_file())?;
    let coarse = match kind {
        Cifar::Cifar10 => None,
        Cifar::Cifar100 => read_opt(CIFAR100_COARSE_NAMES_FILE)?,
    };
    let names = names(
        kind,
        fine.as_ref().map(|(t, w)| (&t[..], w.clone())),
        coarse.as_ref().map(|(t, w)| (&t[..], w.clone())),
    )?;

    let mut sets = Vec::with_capacity(splits.len());
    for &train in splits {
        let mut records = Records::default();
        // One file at a time keeps the peak at the split plus one file.
        for name in kind.split_files(train) {
            let path = dir.join(name);
            let bytes = fs::read(&path).map_err(|e| at(&path, format_args!("cannot read: {e}")))?;
            append_records(kind, &bytes, &path.display().to_string(), &mut records)?;
        }
        sets.push(records.into_set(kind, &names));
    }
    Ok(sets)
}

/// Streams a `.tar.gz` (or plain `.tar`) once, keeping only the members that
/// are needed, matched by file name so any leading folder works.
fn load_archive(kind: Cifar, archive: &Path, splits: &[bool]) -> Result<Vec<ImageSet>> {
    let file =
        fs::File::open(archive).map_err(|e| at(archive, format_args!("cannot read: {e}")))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let gz = {
        let mut magic = [0u8; 2];
        let got = peek(&mut reader, &mut magic).map_err(|e| at(archive, e))?;
        got == 2 && magic == [0x1f, 0x8b]
    };
    let stream: Box<dyn Read> = if gz {
        Box::new(MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };

    let wanted: Vec<&str> = splits
        .iter()
        .flat_map(|&train| kind.split_files(train))
        .copied()
        .chain([kind.names_file()])
        .chain((kind == Cifar::Cifar100).then_some(CIFAR100_COARSE_NAMES_FILE))
        .collect();
    // Archive order is not load order (the official tar lists data_batch_*
    // unsorted), so members wait here until all have been seen.
    let mut found: Vec<Option<(Vec<u8>, String)>> = vec![None; wanted.len()];
    let broken = |e: io::Error| {
        at(
            archive,
            format_args!("cannot read archive: {e} (truncated or not a tar.gz?)"),
        )
    };
    let mut tar = tar::Archive::new(stream);
    for entry in tar.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let base = member.rsplit('/').next().unwrap_or(&member);
        let Some(i) = wanted.iter().position(|&w| w == base) else {
            continue;
        };
        let mut bytes = Vec::with_capacity(entry.size().min(1 << 30) as usize);
        entry.read_to_end(&mut bytes).map_err(broken)?;
        found[i] = Some((bytes, format!("{}: {member}", archive.display())));
        if found.iter().all(Option::is_some) {
            break;
        }
    }

    let data_files = wanted.len() - if kind == Cifar::Cifar100 { 2 } else { 1 };
    let absent: Vec<&str> = wanted[..data_files]
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(w, _)| *w)
        .collect();
    if !absent.is_empty() {
        bail!(
            "{}: archive lacks {}; the {} binary version has {} (in {}/)",
            archive.display(),
            absent.join(", "),
            kind.title(),
            kind.expected_files(),
            kind.inner_dir()
        );
    }

    let text = |i: usize| found[i].as_ref().map(|(b, w)| (&b[..], w.clone()));
    let names = names(
        kind,
        text(data_files),
        (kind == Cifar::Cifar100)
            .then(|| text(data_files + 1))
            .flatten(),
    )?;
    let mut sets = Vec::with_capacity(splits.len());
    let mut next = 0;
    for &train in splits {
        let mut records = Records::default();
        for _ in kind.split_files(train) {
            let (bytes, what) = found[next].take().expect("checked above");
            append_records(kind, &bytes, &what, &mut records)?;
            next += 1;
        }
        sets.push(records.into_set(kind, &names));
    }
    Ok(sets)
}

/// Fills `buf` from the start of the stream without consuming it.
fn peek(reader: &mut BufReader<fs::File>, buf: &mut [u8]) -> io::Result<usize> {
    use io::BufRead;
    let available = reader.fill_buf()?;
    let n = available.len().min(buf.len());
    buf[..n].copy_from_slice(&available[..n]);
    Ok(n)
}

/// Makes sure `dir` holds `kind`, as extracted `.bin` files (in `dir` or its
/// inner folder) or as the official archive, downloading the archive from
/// the authors' site when neither is there, and returns the path to pass to
/// [`load_cifar`]. The archive is checked against its pinned SHA-256 (once;
/// a stamp file remembers size and mtime). Extracted files are trusted, so
/// users can bring their own copy. With `FSNN_DATA_OFFLINE` set, never
/// touches the network.
pub fn ensure_cifar(kind: Cifar, dir: &Path) -> Result<PathBuf> {
    let origin = Origin {
        url: kind.url(),
        archive: kind.archive_name(),
        sha256: kind.archive_sha256(),
    };
    ensure_in(kind, dir, &origin, offline_from_env())
}

/// Download source, separate from [`Cifar`] so tests can pin fake archives.
struct Origin<'a> {
    url: &'a str,
    archive: &'a str,
    sha256: &'a str,
}

fn offline_from_env() -> bool {
    match std::env::var(OFFLINE_ENV) {
        Ok(v) => !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")),
        Err(_) => false,
    }
}

fn ensure_in(kind: Cifar, dir: &Path, origin: &Origin, offline: bool) -> Result<PathBuf> {
    let complete = |d: &Path| kind.all_data_files().all(|f| d.join(f).is_file());
    for candidate in [dir.to_path_buf(), dir.join(kind.inner_dir())] {
        if complete(&candidate) {
            return Ok(candidate);
        }
    }
    let archive = dir.join(origin.archive);
    let stamp = dir.join(format!(".{}.verified", origin.archive));
    let mut problem = format!("{}: missing", archive.display());
    if archive.is_file() {
        match verify_archive(&archive, &stamp, origin.sha256) {
            Ok(()) => return Ok(archive),
            Err(e) => problem = e.to_string(),
        }
    }
    let manual = format!(
        "Put {} (SHA-256 {}) or its extracted {}/ folder in {}; it is published at {}",
        origin.archive,
        origin.sha256,
        kind.inner_dir(),
        dir.display(),
        origin.url
    );
    if offline {
        bail!(
            "{} is not available in {} and {OFFLINE_ENV} forbids downloading:\n  {problem}\n{manual}",
            kind.title(),
            dir.display()
        );
    }
    if !problem.ends_with(": missing") {
        eprintln!("warning: {problem}; downloading it again");
    }
    fs::create_dir_all(dir).map_err(|e| at(dir, format_args!("cannot create directory: {e}")))?;
    eprintln!("fetching {} from {}", kind.title(), origin.url);
    download_verified(origin, &archive)
        .map_err(|e| anyhow!("could not fetch {}: {e:#}\n{manual}", kind.title()))?;
    write_stamp(&archive, &stamp, origin.sha256)?;
    Ok(archive)
}

fn stamp_line(archive: &Path, sha256: &str) -> Option<String> {
    let meta = fs::metadata(archive).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{sha256} {} {mtime}", meta.len()))
}

fn write_stamp(archive: &Path, stamp: &Path, sha256: &str) -> Result<()> {
    if let Some(line) = stamp_line(archive, sha256) {
        fs::write(stamp, line + "\n").map_err(|e| at(stamp, format_args!("cannot write: {e}")))?;
    }
    Ok(())
}

/// Hashing 170 MB takes seconds in a debug build, so a verified archive is
/// only re-hashed when its size or mtime changes.
fn verify_archive(archive: &Path, stamp: &Path, sha256: &str) -> Result<()> {
    let recorded = fs::read_to_string(stamp).unwrap_or_default();
    if stamp_line(archive, sha256).is_some_and(|l| recorded.lines().any(|r| r == l)) {
        return Ok(());
    }
    let mut hasher = Sha256::new();
    let mut file =
        fs::File::open(archive).map_err(|e| at(archive, format_args!("cannot read: {e}")))?;
    io::copy(&mut file, &mut hasher).map_err(|e| at(archive, format_args!("cannot read: {e}")))?;
    let actual = hex(&hasher.finalize());
    if actual != sha256 {
        bail!(
            "{}: SHA-256 mismatch: expected {sha256}, got {actual}",
            archive.display()
        );
    }
    write_stamp(archive, stamp, sha256)
}

/// Streams to a temp file next to `dest` while hashing, so 170 MB never sits
/// in memory and a failed or corrupt download never takes the final name.
fn download_verified(origin: &Origin, dest: &Path) -> Result<()> {
    let start = Instant::now();
    let tmp = dest.with_file_name(format!(".{}.tmp-{}", origin.archive, std::process::id()));
    let result = (|| -> Result<u64> {
        let mut response = http_agent()
            .get(origin.url)
            .call()
            .map_err(|e| anyhow!("{}: {e}", origin.url))?;
        let mut body = response
            .body_mut()
            .with_config()
            .limit(MAX_DOWNLOAD)
            .reader();
        let mut file =
            fs::File::create(&tmp).map_err(|e| at(&tmp, format_args!("cannot write: {e}")))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = body
                .read(&mut buf)
                .map_err(|e| anyhow!("{}: {e}", origin.url))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| at(&tmp, format_args!("cannot write: {e}")))?;
            total += n as u64;
        }
        file.sync_all()
            .map_err(|e| at(&tmp, format_args!("cannot write: {e}")))?;
        let actual = hex(&hasher.finalize());
        if actual != origin.sha256 {
            bail!(
                "{}: SHA-256 mismatch: expected {}, got {actual}",
                origin.url,
                origin.sha256
            );
        }
        fs::rename(&tmp, dest).map_err(|e| at(dest, format_args!("cannot write: {e}")))?;
        Ok(total)
    })();
    match result {
        Ok(total) => {
            eprintln!(
                "  {}: {:.1} MB in {:.1} s",
                origin.url,
                total as f64 / 1e6,
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    /// A pixel value that depends on record, channel and position, so plane
    /// order, row order and record order are all checked.
    fn pixel(record: usize, c: usize, y: usize, x: usize) -> u8 {
        (record * 7 + c * 85 + y * 3 + x * 5) as u8
    }

    fn planes(record: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(CIFAR_IMAGE_BYTES);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    v.push(pixel(record, c, y, x));
                }
            }
        }
        v
    }

    /// CIFAR-10 records for `labels`, record numbers starting at `first`.
    fn cifar10_file(first: usize, labels: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &l) in labels.iter().enumerate() {
            out.push(l);
            out.extend(planes(first + i));
        }
        out
    }

    fn cifar100_file(first: usize, labels: &[(u8, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &(coarse, fine)) in labels.iter().enumerate() {
            out.extend([coarse, fine]);
            out.extend(planes(first + i));
        }
        out
    }

    /// Train files of 2 records each (labels 0..=9), test file of 3.
    fn cifar10_files() -> Vec<(&'static str, Vec<u8>)> {
        let mut files: Vec<_> = CIFAR10_TRAIN
            .iter()
            .enumerate()
            .map(|(b, &name)| (name, cifar10_file(2 * b, &[2 * b as u8, 2 * b as u8 + 1])))
            .collect();
        files.push(("test_batch.bin", cifar10_file(100, &[9, 0, 4])));
        files
    }

    fn cifar100_files() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("train.bin", cifar100_file(0, &[(4, 0), (19, 99), (0, 57)])),
            ("test.bin", cifar100_file(50, &[(7, 42)])),
        ]
    }

    fn write_all(dir: &Path, files: &[(&str, Vec<u8>)]) {
        fs::create_dir_all(dir).unwrap();
        for (name, bytes) in files {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }

    /// A tar.gz with the given members, in the given order, built in memory.
    fn tar_gz(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Default::default()));
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, &data[..]).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn check_cifar10(train: &ImageSet, test: &ImageSet) {
        assert_eq!(
            (train.n, train.channels, train.height, train.width),
            (10, 3, 32, 32)
        );
        assert_eq!(train.classes, 10);
        assert_eq!(train.labels, (0..10).collect::<Vec<u16>>());
        assert_eq!(train.pixels.len(), 10 * 3072);
        for r in 0..10 {
            assert_eq!(train.image(r), &planes(r)[..]);
        }
        // Spot checks against the formula, not the test's own encoder.
        assert_eq!(train.image(3)[0], pixel(3, 0, 0, 0));
        assert_eq!(train.image(3)[1024 + 32 * 2 + 1], pixel(3, 1, 2, 1));
        assert_eq!(train.image(9)[2048 + 32 * 31 + 31], pixel(9, 2, 31, 31));
        assert_eq!(test.labels, [9, 0, 4]);
        assert_eq!(test.image(2), &planes(102)[..]);
        assert!(train.coarse.is_none());
    }

    #[test]
    fn cifar10_folder_inner_folder_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("cifar-10-batches-bin");
        write_all(&inner, &cifar10_files());
        // Without batches.meta.txt the built-in names are used.
        let (train, test) = load_cifar_splits(Cifar::Cifar10, dir.path()).unwrap();
        check_cifar10(&train, &test);
        assert_eq!(train.class_names[0], "airplane");
        assert_eq!(train.class_names[9], "truck");

        // The folder itself works too, and batches.meta.txt wins when present
        // (the official one ends with blank lines).
        let meta: String = (0..10).map(|i| format!("c{i}\n")).collect::<String>() + "\n\n";
        fs::write(inner.join("batches.meta.txt"), meta).unwrap();
        let test = load_cifar(Cifar::Cifar10, &inner, false).unwrap();
        assert_eq!(test.class_names[4], "c4");
        assert_eq!(test.class_names.len(), 10);

        fs::write(inner.join("batches.meta.txt"), "a\nb\n").unwrap();
        let e = load_cifar(Cifar::Cifar10, &inner, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("batches.meta.txt: 2 class names, expected 10"),
            "{e}"
        );
    }

    #[test]
    fn cifar10_from_tar_gz_in_any_member_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut entries: Vec<(String, Vec<u8>)> = cifar10_files()
            .into_iter()
            .map(|(n, b)| (format!("cifar-10-batches-bin/{n}"), b))
            .collect();
        entries.reverse();
        entries.push((
            "cifar-10-batches-bin/readme.html".into(),
            b"<html>".to_vec(),
        ));
        let archive = dir.path().join("cifar-10-binary.tar.gz");
        fs::write(&archive, tar_gz(&entries)).unwrap();

        // The archive itself, or the folder holding it.
        let (train, test) = load_cifar_splits(Cifar::Cifar10, &archive).unwrap();
        check_cifar10(&train, &test);
        let test = load_cifar(Cifar::Cifar10, dir.path(), false).unwrap();
        assert_eq!(test.labels, [9, 0, 4]);

        // A member missing from the archive is named.
        let short: Vec<_> = entries
            .into_iter()
            .filter(|(n, _)| !n.ends_with("_3.bin"))
            .collect();
        fs::write(&archive, tar_gz(&short)).unwrap();
        let e = load_cifar(Cifar::Cifar10, &archive, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("archive lacks data_batch_3.bin"), "{e}");
        assert!(e.starts_with(&archive.display().to_string()), "{e}");
        // ... but the test split alone still loads.
        assert_eq!(load_cifar(Cifar::Cifar10, &archive, false).unwrap().n, 3);

        // A cut-off download is reported as such, not as a missing member.
        let full = tar_gz(&short);
        fs::write(&archive, &full[..full.len() / 2]).unwrap();
        let e = load_cifar(Cifar::Cifar10, &archive, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read archive"), "{e}");
    }

    #[test]
    fn cifar100_folder_and_archive() {
        let dir = tempfile::tempdir().unwrap();
        let files = cifar100_files();
        write_all(dir.path(), &files);
        let (train, test) = load_cifar_splits(Cifar::Cifar100, dir.path()).unwrap();
        assert_eq!((train.n, train.classes), (3, 100));
        assert_eq!(train.labels, [0, 99, 57]);
        let coarse = train.coarse.as_ref().unwrap();
        assert_eq!((coarse.classes, &coarse.labels[..]), (20, &[4, 19, 0][..]));
        assert_eq!(train.class_names[99], "worm");
        assert_eq!(coarse.class_names[19], "vehicles_2");
        assert_eq!(train.image(2), &planes(2)[..]);
        assert_eq!(test.labels, [42]);
        assert_eq!(test.image(0), &planes(50)[..]);

        let mut entries: Vec<(String, Vec<u8>)> = files
            .into_iter()
            .map(|(n, b)| (format!("cifar-100-binary/{n}"), b))
            .collect();
        let fine: String = (0..100).map(|i| format!("f{i}\n")).collect();
        let coarse: String = (0..20).map(|i| format!("k{i}\n")).collect();
        entries.push(("cifar-100-binary/fine_label_names.txt".into(), fine.into()));
        entries.push((
            "cifar-100-binary/coarse_label_names.txt".into(),
            coarse.into(),
        ));
        let archive = dir.path().join("c100.tgz");
        fs::write(&archive, tar_gz(&entries)).unwrap();
        let (train2, test2) = load_cifar_splits(Cifar::Cifar100, &archive).unwrap();
        assert_eq!(train2.pixels, train.pixels);
        assert_eq!(test2.coarse.as_ref().unwrap().labels, [7]);
        assert_eq!(train2.class_names[57], "f57");
        assert_eq!(train2.coarse.as_ref().unwrap().class_names[3], "k3");
    }

    #[test]
    fn builtin_name_tables_are_complete() {
        for names in [
            &CIFAR100_FINE_NAMES[..],
            &CIFAR100_COARSE_NAMES,
            &CIFAR10_NAMES,
        ] {
            let mut sorted = names.to_vec();
            sorted.sort();
            sorted.dedup();
            // The official lists are alphabetical, which catches typos in order.
            assert_eq!(sorted, names);
        }
    }

    #[test]
    fn truncated_and_missized_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = cifar10_files();
        // One byte short of 2 records: the classic truncated download.
        files[2].1.pop();
        write_all(dir.path(), &files);
        let e = load_cifar(Cifar::Cifar10, dir.path(), true)
            .unwrap_err()
            .to_string();
        let want = format!(
            "{}: 6145 bytes is not a whole number of 3073-byte CIFAR-10 records (truncated?)",
            dir.path().join("data_batch_3.bin").display()
        );
        assert_eq!(e, want);

        // A CIFAR-100 file read as CIFAR-10 is mis-sized by one byte per record.
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path(), &cifar100_files());
        fs::rename(
            dir.path().join("test.bin"),
            dir.path().join("test_batch.bin"),
        )
        .unwrap();
        let e = load_cifar(Cifar::Cifar10, dir.path(), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("3074 bytes is not a whole number of 3073-byte CIFAR-10"),
            "{e}"
        );

        // An empty file.
        fs::write(dir.path().join("test_batch.bin"), b"").unwrap();
        let e = load_cifar(Cifar::Cifar10, dir.path(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("test_batch.bin: empty file"), "{e}");

        // Inside an archive the message names archive and member.
        let dir = tempfile::tempdir().unwrap();
        let mut bad = cifar100_file(0, &[(1, 1), (2, 2)]);
        bad.truncate(3074 + 1000);
        let entries = vec![
            ("cifar-100-binary/train.bin".to_string(), bad),
            (
                "cifar-100-binary/test.bin".to_string(),
                cifar100_file(0, &[(1, 1)]),
            ),
        ];
        let archive = dir.path().join("cifar-100-binary.tar.gz");
        fs::write(&archive, tar_gz(&entries)).unwrap();
        let e = load_cifar(Cifar::Cifar100, &archive, true)
            .unwrap_err()
            .to_string();
        let want = format!(
            "{}: cifar-100-binary/train.bin: 4074 bytes is not a whole number of 3074-byte CIFAR-100 records (truncated?)",
            archive.display()
        );
        assert_eq!(e, want);
    }

    #[test]
    fn labels_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = cifar10_files();
        files[5].1 = cifar10_file(0, &[3, 10]);
        write_all(dir.path(), &files);
        let e = load_cifar(Cifar::Cifar10, dir.path(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("test_batch.bin: record 1 (byte 3073) has label 10, out of range 0..=9 for CIFAR-10"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        write_all(
            dir.path(),
            &[
                ("train.bin", cifar100_file(0, &[(0, 0), (5, 100)])),
                ("test.bin", cifar100_file(0, &[(20, 0)])),
            ],
        );
        let e = load_cifar(Cifar::Cifar100, dir.path(), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train.bin: record 1 (byte 3075) has fine label 100, out of range 0..=99"),
            "{e}"
        );
        let e = load_cifar(Cifar::Cifar100, dir.path(), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test.bin: record 0 (byte 0) has coarse label 20, out of range 0..=19"),
            "{e}"
        );
    }

    #[test]
    fn missing_files_say_what_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_cifar(Cifar::Cifar10, dir.path(), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no CIFAR-10 files"), "{e}");
        assert!(
            e.contains("data_batch_1.bin … data_batch_5.bin and test_batch.bin"),
            "{e}"
        );
        assert!(
            e.contains("cifar-10-batches-bin/") && e.contains("cifar-10-binary.tar.gz"),
            "{e}"
        );

        let files = cifar10_files();
        write_all(dir.path(), &[files[0].clone(), files[5].clone()]);
        let e = load_cifar(Cifar::Cifar10, dir.path(), true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "{}: missing data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, data_batch_5.bin; \
                 the CIFAR-10 binary version has data_batch_1.bin … data_batch_5.bin and test_batch.bin",
                dir.path().display()
            )
        );
        // What is there still loads.
        assert_eq!(load_cifar(Cifar::Cifar10, dir.path(), false).unwrap().n, 3);

        let e = load_cifar(Cifar::Cifar100, dir.path().join("nope"), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nope: not found") && e.contains("train.bin and test.bin"),
            "{e}"
        );
    }

    #[test]
    fn ensure_finds_local_copies_and_verifies_archive() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let entries: Vec<(String, Vec<u8>)> = cifar10_files()
            .into_iter()
            .map(|(n, b)| (format!("cifar-10-batches-bin/{n}"), b))
            .collect();
        let tgz = tar_gz(&entries);
        let sum = hex(&Sha256::digest(&tgz));
        let origin = Origin {
            url: "http://127.0.0.1:9/cifar-10-binary.tar.gz",
            archive: "cifar-10-binary.tar.gz",
            sha256: &sum,
        };

        // Nothing there, offline: says where to put what.
        let e = ensure_in(Cifar::Cifar10, d, &origin, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains(OFFLINE_ENV), "{e}");
        assert!(
            e.contains(&format!("Put cifar-10-binary.tar.gz (SHA-256 {sum})")),
            "{e}"
        );
        assert!(
            e.contains(&d.display().to_string()) && e.contains("cifar-10-batches-bin/"),
            "{e}"
        );

        // Online but unreachable (port 9 refuses): a clean error, no temp litter.
        let e = ensure_in(Cifar::Cifar10, d, &origin, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("could not fetch CIFAR-10") && e.contains("127.0.0.1:9"),
            "{e}"
        );
        assert!(e.contains("Put cifar-10-binary.tar.gz"), "{e}");
        let litter: Vec<_> = fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(litter.is_empty(), "{litter:?}");

        // A matching archive is accepted, stamped, and loadable.
        let archive = d.join("cifar-10-binary.tar.gz");
        fs::write(&archive, &tgz).unwrap();
        assert_eq!(
            ensure_in(Cifar::Cifar10, d, &origin, true).unwrap(),
            archive
        );
        assert!(d.join(".cifar-10-binary.tar.gz.verified").is_file());
        assert_eq!(
            ensure_in(Cifar::Cifar10, d, &origin, true).unwrap(),
            archive
        );
        assert_eq!(load_cifar(Cifar::Cifar10, &archive, false).unwrap().n, 3);

        // A corrupt one is refused with both sums.
        let mut bad = tgz.clone();
        bad.push(0);
        fs::write(&archive, &bad).unwrap();
        let e = ensure_in(Cifar::Cifar10, d, &origin, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SHA-256 mismatch") && e.contains(&sum), "{e}");

        // Extracted files need no archive at all.
        write_all(&d.join("cifar-10-batches-bin"), &cifar10_files());
        assert_eq!(
            ensure_in(Cifar::Cifar10, d, &origin, true).unwrap(),
            d.join("cifar-10-batches-bin")
        );
    }

    #[test]
    fn names_parse() {
        for kind in Cifar::ALL {
            assert_eq!(kind.name().parse::<Cifar>().unwrap(), kind);
            assert_eq!(kind.title().parse::<Cifar>().unwrap(), kind);
            assert_eq!(kind.archive_sha256().len(), 64);
        }
        assert!("cifar1000".parse::<Cifar>().is_err());
    }
}
