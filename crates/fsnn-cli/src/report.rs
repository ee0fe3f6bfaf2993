//! What every machine-readable report carries: the date, the commit it was built from, and helpers
//! for the terminal tables.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The current UTC time as ISO 8601 (no time-zone database needed for UTC).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The commit of the source tree, with `-dirty` when tracked files differ from it: looked up at run
/// time in the working directory, then in the tree the binary was built from.
pub fn git_commit() -> String {
    let dirs = [".", env!("CARGO_MANIFEST_DIR")];
    for dir in dirs {
        let out = Command::new("git")
            .args(["-C", dir, "rev-parse", "--short=12", "HEAD"])
            .output();
        if let Ok(o) = out {
            if o.status.success() {
                let mut c = String::from_utf8_lossy(&o.stdout).trim().to_string();
                let dirty = Command::new("git")
                    .args(["-C", dir, "status", "--porcelain", "--untracked-files=no"])
                    .output()
                    .map(|s| !s.stdout.is_empty())
                    .unwrap_or(false);
                if dirty {
                    c.push_str("-dirty");
                }
                return c;
            }
        }
    }
    "unknown".to_string()
}

/// Median, minimum and maximum of a non-empty sample.
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    };
    (med, s[0], s[n - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }
}
