//! Reader for the IDX format used by MNIST and Fashion-MNIST.
//!
//! Format: a big-endian u32 magic (`0x00 0x00 <type> <ndims>`), one big-endian
//! u32 per dimension, then the data. Files may be gzip-compressed; that is
//! detected from the content, not the file name, because mirrors and users
//! rename files freely.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, Result};
use flate2::read::MultiGzDecoder;

/// Unsigned bytes, 3 dimensions (count, rows, cols).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Unsigned bytes, 1 dimension (count).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// Both supported datasets have ten classes; anything else means a wrong or
/// corrupted file, and would index out of bounds in a one-hot encoding.
pub const NUM_CLASSES: u8 = 10;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A stack of 8-bit greyscale images, row-major, image after image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

impl Images {
    pub fn pixels_per_image(&self) -> usize {
        self.rows * self.cols
    }

    pub fn image(&self, idx: usize) -> &[u8] {
        let len = self.pixels_per_image();
        &self.pixels[idx * len..(idx + 1) * len]
    }
}

/// Reads an IDX image file (raw or gzip). Every error names the file.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<Images> {
    let path = path.as_ref();
    let (bytes, gz) = read_maybe_gzip(path)?;
    parse_images(bytes, gz).map_err(|e| at(path, e))
}

/// Reads an IDX label file (raw or gzip) and checks every label is a class
/// index below [`NUM_CLASSES`]. Every error names the file.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let (bytes, gz) = read_maybe_gzip(path)?;
    parse_labels(bytes, gz).map_err(|e| at(path, e))
}

/// The path goes into the message itself (not an anyhow context) so that it
/// survives `{}` formatting, which drops the context chain.
pub(crate) fn at(path: &Path, problem: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{}: {problem}", path.display())
}

/// Returns the file's (decompressed) content and whether it was gzip.
pub(crate) fn read_maybe_gzip(path: &Path) -> Result<(Vec<u8>, bool)> {
    let raw = std::fs::read(path).map_err(|e| at(path, format_args!("cannot read: {e}")))?;
    gunzip_if_gzip(raw).map_err(|e| at(path, e))
}

/// Decompresses `data` if it starts with the gzip magic, else returns it as is.
pub(crate) fn gunzip_if_gzip(data: Vec<u8>) -> Result<(Vec<u8>, bool), String> {
    if !data.starts_with(&GZIP_MAGIC) {
        return Ok((data, false));
    }
    // The gzip trailer holds the uncompressed size mod 2^32; good enough as a
    // capacity hint for these files and it avoids repeated regrowth of ~47 MB.
    let hint = data
        .len()
        .checked_sub(4)
        .map(|i| u32::from_le_bytes(data[i..].try_into().unwrap()) as usize)
        .unwrap_or(0)
        .min(1 << 30);
    let mut out = Vec::with_capacity(hint);
    // Multi-member aware: `gzip -c a b > c` style files are valid gzip too.
    MultiGzDecoder::new(&data[..])
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip decompression failed: {e}"))?;
    Ok((out, true))
}

fn describe_magic(magic: u32) -> &'static str {
    match magic {
        IDX_IMAGES_MAGIC => "IDX images",
        IDX_LABELS_MAGIC => "IDX labels",
        _ => "not an IDX u8 file",
    }
}

fn be_u32(bytes: &[u8], word: usize) -> u32 {
    u32::from_be_bytes(bytes[word * 4..word * 4 + 4].try_into().unwrap())
}

/// Checks magic and header length and returns the header dimensions.
fn parse_header(bytes: &[u8], magic: u32, ndims: usize) -> Result<Vec<u32>, String> {
    let header_len = 4 * (1 + ndims);
    if bytes.len() < header_len {
        return Err(format!(
            "truncated: {} header is {header_len} bytes, file has {}",
            describe_magic(magic),
            bytes.len()
        ));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(format!(
            "wrong magic number {found:#010x}, expected {magic:#010x} ({}){}",
            describe_magic(magic),
            if found == IDX_IMAGES_MAGIC || found == IDX_LABELS_MAGIC {
                format!("; this is an {} file", describe_magic(found))
            } else {
                String::new()
            }
        ));
    }
    Ok((1..=ndims).map(|i| be_u32(bytes, i)).collect())
}

/// Checks that the payload after the header is exactly `promised` bytes.
fn check_payload_len(
    payload: usize,
    promised: u64,
    what: &str,
    shape: &str,
    gz: bool,
) -> Result<(), String> {
    let note = if gz { " (after gunzip)" } else { "" };
    let payload = payload as u64;
    if payload < promised {
        Err(format!(
            "truncated: header promises {promised} {what} bytes ({shape}), file has {payload}{note}"
        ))
    } else if payload > promised {
        Err(format!(
            "trailing data: header promises {promised} {what} bytes ({shape}), file has {payload}{note}"
        ))
    } else {
        Ok(())
    }
}

fn parse_images(mut bytes: Vec<u8>, gz: bool) -> Result<Images, String> {
    let dims = parse_header(&bytes, IDX_IMAGES_MAGIC, 3)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if n == 0 || rows == 0 || cols == 0 {
        return Err(format!(
            "empty image set: header says {n} x {rows} x {cols}"
        ));
    }
    // u32^3 fits in u128 but not u64; only the product matters for the check.
    let promised = u64::try_from(n as u128 * rows as u128 * cols as u128).unwrap_or(u64::MAX);
    let shape = format!("{n} x {rows} x {cols}");
    check_payload_len(bytes.len() - 16, promised, "pixel", &shape, gz)?;
    bytes.drain(..16);
    Ok(Images {
        n: n as usize,
        rows: rows as usize,
        cols: cols as usize,
        pixels: bytes,
    })
}

fn parse_labels(mut bytes: Vec<u8>, gz: bool) -> Result<Vec<u8>, String> {
    let n = parse_header(&bytes, IDX_LABELS_MAGIC, 1)?[0];
    if n == 0 {
        return Err("empty label set: header says 0 labels".into());
    }
    check_payload_len(
        bytes.len() - 8,
        n.into(),
        "label",
        &format!("{n} labels"),
        gz,
    )?;
    bytes.drain(..8);
    if let Some((i, &l)) = bytes.iter().enumerate().find(|(_, &l)| l >= NUM_CLASSES) {
        return Err(format!(
            "label {l} at index {i} is out of range (expected 0..={})",
            NUM_CLASSES - 1
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    pub(crate) fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [IDX_IMAGES_MAGIC, n, rows, cols] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    pub(crate) fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&IDX_LABELS_MAGIC.to_be_bytes());
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn err_text(r: Result<impl std::fmt::Debug>) -> String {
        // `{}` on purpose: the message must be complete without the `{:#}` chain.
        r.unwrap_err().to_string()
    }

    fn sample_pixels() -> Vec<u8> {
        (0..3 * 2 * 4).map(|i| (i * 10) as u8).collect()
    }

    #[test]
    fn reads_raw_and_gzip_images() {
        let dir = tempfile::tempdir().unwrap();
        let px = sample_pixels();
        let raw = idx_images(3, 2, 4, &px);
        let p_raw = dir.path().join("imgs");
        // Deliberately no ".gz" suffix: detection must be by content.
        let p_gz = dir.path().join("imgs-compressed");
        std::fs::write(&p_raw, &raw).unwrap();
        std::fs::write(&p_gz, gzip(&raw)).unwrap();
        for p in [&p_raw, &p_gz] {
            let im = read_idx_images(p).unwrap();
            assert_eq!((im.n, im.rows, im.cols), (3, 2, 4));
            assert_eq!(im.pixels, px);
            assert_eq!(im.image(2), &px[16..24]);
        }
    }

    #[test]
    fn reads_raw_and_gzip_labels() {
        let dir = tempfile::tempdir().unwrap();
        let labels = [0u8, 9, 3, 3, 7];
        let p_raw = dir.path().join("labels");
        let p_gz = dir.path().join("labels.gz");
        std::fs::write(&p_raw, idx_labels(&labels)).unwrap();
        std::fs::write(&p_gz, gzip(&idx_labels(&labels))).unwrap();
        assert_eq!(read_idx_labels(&p_raw).unwrap(), labels);
        assert_eq!(read_idx_labels(&p_gz).unwrap(), labels);
    }

    #[test]
    fn truncated_images_name_file_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train-images-idx3-ubyte");
        std::fs::write(&p, idx_images(60000, 28, 28, &[0; 1000])).unwrap();
        let e = err_text(read_idx_images(&p));
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(
            e.contains("truncated: header promises 47040000 pixel bytes")
                && e.contains("file has 1000"),
            "{e}"
        );

        // A gzip stream cut short is also reported against the file.
        let gz = gzip(&idx_images(3, 2, 4, &sample_pixels()));
        std::fs::write(&p, &gz[..gz.len() - 10]).unwrap();
        let e = err_text(read_idx_images(&p));
        assert!(
            e.contains(&p.display().to_string()) && e.contains("gzip"),
            "{e}"
        );

        // Shorter than the header itself.
        std::fs::write(&p, [0u8, 0, 8]).unwrap();
        let e = err_text(read_idx_images(&p));
        assert!(e.contains("truncated") && e.contains("file has 3"), "{e}");
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels");
        let mut bytes = idx_labels(&[1, 2, 3]);
        bytes.push(4);
        std::fs::write(&p, bytes).unwrap();
        let e = err_text(read_idx_labels(&p));
        assert!(
            e.contains("labels: trailing data") && e.contains("file has 4"),
            "{e}"
        );
    }

    #[test]
    fn wrong_magic_names_both_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train-images-idx3-ubyte");
        std::fs::write(&p, idx_labels(&[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
        let e = err_text(read_idx_images(&p));
        assert!(
            e.contains(&format!(
                "{}: wrong magic number 0x00000801, expected 0x00000803 (IDX images)",
                p.display()
            )),
            "{e}"
        );
        let p2 = dir.path().join("labels");
        std::fs::write(&p2, idx_images(1, 1, 1, &[0])).unwrap();
        let e = err_text(read_idx_labels(&p2));
        assert!(e.contains("0x00000803, expected 0x00000801"), "{e}");
    }

    #[test]
    fn label_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t10k-labels-idx1-ubyte");
        std::fs::write(&p, gzip(&idx_labels(&[0, 1, 2, 12, 3]))).unwrap();
        let e = err_text(read_idx_labels(&p));
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains("label 12 at index 3 is out of range"), "{e}");
    }

    #[test]
    fn missing_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope");
        let e = err_text(read_idx_labels(&p));
        assert!(
            e.contains(&p.display().to_string()) && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn absurd_dims_do_not_overflow() {
        let bytes = idx_images(u32::MAX, u32::MAX, u32::MAX, &[0; 4]);
        let e = parse_images(bytes, false).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
    }
}
