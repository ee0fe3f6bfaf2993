//! What keeps a run folder's promises: one process per folder (an OS file lock), running sums
//! carried bit for bit through checkpoints, the tensors an epoch's evaluation started from, an
//! ETA that waits for measurements, and shared cache files that merge their writers.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use fsnn_core::host::HostState;

// ------------------------------------------------------------------ lock

/// The lock file inside a run folder. It stays after the run: removing it would let a third
/// process lock a new file while a second still holds the old one.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on a run folder, held until dropped or until the process dies (the kernel
/// releases `flock` locks of a dead process, so a SIGKILL never leaves the folder locked).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    /// The folder, when this process created it: a run that fails before writing anything
    /// leaves no empty folder behind.
    created: Option<PathBuf>,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let Some(dir) = &self.created else { return };
        let only_lock = std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .all(|e| e.file_name().to_string_lossy() == LOCK_FILE)
        });
        // Removed while the lock is still held, so no other process can be inside.
        if only_lock && std::fs::remove_file(dir.join(LOCK_FILE)).is_ok() {
            std::fs::remove_dir(dir).ok();
        }
    }
}

impl RunLock {
    /// Locks `dir` (creating it) for this process, or fails naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let created = (!dir.exists()).then(|| dir.to_path_buf());
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create output folder", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("{}: cannot open the run folder's lock", path.display()))?;
        if !try_lock(&file).with_context(|| format!("{}: cannot lock", path.display()))? {
            let mut holder = String::new();
            file.read_to_string(&mut holder).ok();
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_string()
            } else {
                format!("another fsnn process (pid {holder})")
            };
            bail!(
                "{}: {who} is running in this folder; wait for it to end or stop it (Ctrl-C, or kill {}), or choose another --out",
                dir.display(),
                if holder.is_empty() { "it" } else { holder }
            );
        }
        // The holder's pid, for the message a second process gives.
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|_| file.flush())
            .with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(RunLock {
            _file: file,
            created,
        })
    }
}

/// An exclusive, non-blocking `flock`: Ok(false) when another open file description holds it.
#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock(2) on a descriptor this File owns for the duration of the call.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Elsewhere the folder is not locked (no `flock`; the std lock needs a newer Rust than ours).
#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

/// Blocks until `file` is locked exclusively (for short critical sections on cache files).
#[cfg(unix)]
fn lock_blocking(file: &File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: flock(2) on a descriptor this File owns for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(not(unix))]
fn lock_blocking(_file: &File) -> std::io::Result<()> {
    Ok(())
}

// --------------------------------------------------------- shared caches

/// Adds `entries` to the JSON map in `path` (a cache that several processes may write at once):
/// under an exclusive lock on `<path>.lock` the file is read again, the entries merged into what
/// it holds now, and the result renamed over it, so that no writer drops another's entries and a
/// reader never sees half a file. The error names the path.
pub fn merge_into_json_map<V: Serialize + DeserializeOwned>(
    path: &Path,
    entries: BTreeMap<String, V>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the cache folder", dir.display()))?;
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .with_context(|| format!("{}: cannot open", lock_path.display()))?;
    lock_blocking(&lock).with_context(|| format!("{}: cannot lock", lock_path.display()))?;
    // Entries this version cannot read are kept as they are (another version's cache).
    let mut map: BTreeMap<String, serde_json::Value> = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    for (k, v) in entries {
        map.insert(k, serde_json::to_value(v)?);
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".fsnn-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    tmp.write_all(&serde_json::to_vec_pretty(&map)?)
        .with_context(|| format!("{}: write failed", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("{}: rename failed", path.display()))?;
    Ok(())
}

// -------------------------------------------------- exact running sums

/// Serde for an `f64` as the integer of its bits: JSON's decimal text would round-trip too, but
/// serde_json's default float parser is not correctly rounded (off by an ulp now and then), and a
/// resumed run must sum from exactly the value it stopped at. Decimal numbers (checkpoints of
/// earlier versions) are still read.
pub mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Bits(u64),
        Decimal(f64),
    }

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(match Num::deserialize(d)? {
            Num::Bits(b) => f64::from_bits(b),
            Num::Decimal(v) => v,
        })
    }
}

/// [`f64_bits`] for a list.
pub mod f64_bits_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Bits(u64),
        Decimal(f64),
    }

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.to_bits()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<Num>::deserialize(d)?
            .into_iter()
            .map(|n| match n {
                Num::Bits(b) => f64::from_bits(b),
                Num::Decimal(v) => v,
            })
            .collect())
    }
}

/// [`f64_bits`] for an `f32`.
pub mod f32_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Bits(u32),
        Decimal(f32),
    }

    pub fn serialize<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(v.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        Ok(match Num::deserialize(d)? {
            Num::Bits(b) => f32::from_bits(b),
            Num::Decimal(v) => v,
        })
    }
}

// ------------------------------------------- the state evaluation starts from

/// Prefix of the tensors an epoch-end checkpoint carries for `--resume` only: evaluation moves
/// the spectral norm's power-iteration vectors (ALGORITHM.md §4), so the checkpoint's own tensors
/// are the ones the logged evaluation started from (`fsnn eval` of it reproduces the logged test
/// metrics), and these are the moved ones training continued with.
pub const AFTER_EVAL: &str = "after_eval.";

/// The checkpoint of an epoch end: the tensors before evaluation, plus under [`AFTER_EVAL`] those
/// that evaluation changed, as they were after it.
pub fn with_after_eval(before: &HostState, after: &HostState) -> HostState {
    let mut tensors = before.tensors.clone();
    for (name, shape, data) in &after.tensors {
        let same = before
            .tensors
            .iter()
            .any(|(n, s, d)| n == name && s == shape && bits_equal(d, data));
        if !same {
            tensors.push((format!("{AFTER_EVAL}{name}"), shape.clone(), data.clone()));
        }
    }
    HostState { tensors }
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The tensors training continues from: [`AFTER_EVAL`] entries replace their namesakes.
pub fn for_resume(host: &HostState) -> HostState {
    let mut tensors: Vec<_> = host
        .tensors
        .iter()
        .filter(|(n, _, _)| !n.starts_with(AFTER_EVAL))
        .cloned()
        .collect();
    for (name, shape, data) in &host.tensors {
        if let Some(base) = name.strip_prefix(AFTER_EVAL) {
            if let Some(t) = tensors.iter_mut().find(|(n, _, _)| n == base) {
                *t = (base.to_string(), shape.clone(), data.clone());
            }
        }
    }
    HostState { tensors }
}

// --------------------------------------------------------------- ETA

/// Seconds per training step for the ETA, from measured steps only: the first step of a
/// session compiles pipelines and fills caches (tens of times a later step: it made the first
/// ETA say 87 h), so it is left out, and nothing is estimated before [`EtaClock::MIN_STEPS`]
/// further steps are measured.
#[derive(Debug, Default, Clone)]
pub struct EtaClock {
    seen: usize,
    measured: usize,
    secs: f64,
}

impl EtaClock {
    /// Steps measured (after the warm-up step) before an estimate is given.
    pub const MIN_STEPS: usize = 3;

    pub fn record(&mut self, step_secs: f64) {
        self.seen += 1;
        if self.seen > 1 {
            self.measured += 1;
            self.secs += step_secs;
        }
    }

    /// Mean seconds per step, once it means something.
    pub fn per_step(&self) -> Option<f64> {
        (self.measured >= Self::MIN_STEPS).then(|| self.secs / self.measured as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_sums_survive_json_bit_for_bit() {
        #[derive(Serialize, serde::Deserialize)]
        struct S {
            #[serde(with = "f64_bits")]
            a: f64,
            #[serde(with = "f64_bits_vec")]
            v: Vec<f64>,
            #[serde(with = "f32_bits")]
            l: f32,
        }
        // Sums of many small residuals: long mantissas where a decimal parser may miss an ulp.
        let mut x = 0.0f64;
        let mut v = Vec::new();
        for i in 1..2000 {
            x += 1.0 / (i as f64 * 7.3);
            v.push(x.sin() * 1e-7 + i as f64 * 0.1);
        }
        let s = S {
            a: x,
            v: v.clone(),
            l: 0.1f32 * 3.0,
        };
        let back: S = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.a.to_bits(), x.to_bits());
        assert!(bits_equal64(&back.v, &v));
        assert_eq!(back.l.to_bits(), (0.1f32 * 3.0).to_bits());
        // Checkpoints of earlier versions wrote decimals.
        let old: S = serde_json::from_str(r#"{"a": 0.5, "v": [1.25, 2.0], "l": 0.05}"#).unwrap();
        assert_eq!((old.a, old.v, old.l), (0.5, vec![1.25, 2.0], 0.05));
    }

    fn bits_equal64(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn resume_takes_the_tensors_evaluation_moved_and_eval_the_ones_before() {
        let t = |n: &str, d: Vec<f32>| (n.to_string(), vec![d.len()], d);
        let before = HostState {
            tensors: vec![t("w", vec![1.0, 2.0]), t("fb.u", vec![0.6, 0.8])],
        };
        let after = HostState {
            tensors: vec![t("w", vec![1.0, 2.0]), t("fb.u", vec![0.8, 0.6])],
        };
        let saved = with_after_eval(&before, &after);
        let names: Vec<&str> = saved.tensors.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["w", "fb.u", "after_eval.fb.u"]);
        assert_eq!(saved.tensors[1].2, vec![0.6, 0.8]);
        let resumed = for_resume(&saved);
        assert_eq!(resumed.tensors, after.tensors);
        // Nothing moved (or a mid-epoch checkpoint): the tensors as they are.
        assert_eq!(for_resume(&before).tensors, before.tensors);
        assert_eq!(with_after_eval(&before, &before).tensors, before.tensors);
    }

    #[test]
    fn eta_waits_for_measured_steps_and_ignores_the_warm_up_step() {
        let mut c = EtaClock::default();
        c.record(300.0); // pipeline compilation
        assert_eq!(c.per_step(), None);
        c.record(1.0);
        c.record(1.5);
        assert_eq!(c.per_step(), None);
        c.record(0.5);
        assert_eq!(c.per_step(), Some(1.0));
    }

    #[test]
    fn a_second_process_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let held = RunLock::acquire(&run).unwrap();
        let pid = std::fs::read_to_string(run.join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // flock locks belong to the open file description: a second open in this process
        // contends like another process would.
        #[cfg(unix)]
        {
            let err = format!("{:#}", RunLock::acquire(&run).unwrap_err());
            assert!(
                err.contains(&format!("pid {}", std::process::id()))
                    && err.contains(&run.display().to_string()),
                "{err}"
            );
        }
        // The folder holds nothing but the lock: the one who created it takes it away.
        drop(held);
        assert!(!run.exists());
        // A folder that was there, or that got files, stays.
        std::fs::create_dir_all(&run).unwrap();
        drop(RunLock::acquire(&run).unwrap());
        assert!(run.join(LOCK_FILE).exists());
        let fresh = dir.path().join("fresh");
        let lock = RunLock::acquire(&fresh).unwrap();
        std::fs::write(fresh.join("metrics.jsonl"), b"").unwrap();
        drop(lock);
        assert!(fresh.join("metrics.jsonl").exists());
    }

    #[test]
    fn concurrent_cache_writers_keep_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("cache.json");
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..10 {
                        let mut e = BTreeMap::new();
                        e.insert(format!("{t}-{i}"), i);
                        merge_into_json_map(path, e).unwrap();
                    }
                });
            }
        });
        let map: BTreeMap<String, i32> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(map.len(), 40);
        // A cache folder that cannot be made: the error names it.
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let bad = file.join("cache.json");
        let err = format!(
            "{:#}",
            merge_into_json_map(&bad, BTreeMap::from([("k".to_string(), 1)])).unwrap_err()
        );
        assert!(err.contains(&file.display().to_string()), "{err}");
    }
}
