//! Where fsnn keeps what it measured about a machine (kernel choices per adapter and shape), so
//! that every backend's tuning shares one folder.

use std::path::PathBuf;

/// `$FSNN_CACHE_DIR`, else `$XDG_CACHE_HOME/fsnn`, else `~/.cache/fsnn`, else the system's
/// temporary directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("FSNN_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(|d| PathBuf::from(d).join("fsnn"))
        })
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache").join("fsnn"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("fsnn"))
}
