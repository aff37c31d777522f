//! A file's stamp: its identity, size and times, as numbers for a [`StateVersion`]. While
//! the stamps of the files an account is read from are unchanged, so is the account, and a
//! credential-cache hit needs no lookup (shadow, getpwent: passwd, shadow, nsswitch.conf;
//! sasldb: the database file).
//!
//! A file changed within the last [`RACY_SECS`] has no stamp: the kernel stamps times at a
//! coarse granularity, so a second change within the same tick could leave every field as
//! it was (git's "racy clean" problem, solved the same way).
//!
//! [`StateVersion`]: super::StateVersion
#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// A file changed less than this many seconds ago has no stamp.
pub const RACY_SECS: i64 = 2;

/// Seconds since 1970-01-01 (UTC), or `None` before it.
pub fn now() -> Option<i64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

/// The stamp of `path` at time `now`; `None` if it can't be read or changed lately.
pub fn stamp(path: &Path, now: i64) -> Option<Vec<i64>> {
    let identity = identity(path)?;
    let (mtime, ctime) = (identity[3], identity[5]);
    if now - mtime.max(ctime) < RACY_SECS {
        return None;
    }
    Some(identity.to_vec())
}

/// Device, inode, size, mtime (s, ns) and ctime (s, ns) of `path`, however recent: equal
/// values mean an unchanged file, up to the kernel's time granularity (for uses where a
/// missed change only costs freshness, such as the dummy hash).
pub fn identity(path: &Path) -> Option<[i64; 7]> {
    let meta = fs::metadata(path).ok()?;
    Some([
        meta.dev() as i64,
        meta.ino() as i64,
        meta.size() as i64,
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_change_with_the_file_and_fresh_files_have_none() {
        let dir = std::env::temp_dir().join(format!("file-stamp-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        fs::write(&path, "one\n").unwrap();
        let now = now().unwrap();
        assert_eq!(stamp(&path, now), None, "a fresh ctime is racy");
        // ctime can't be backdated: look from the future instead.
        let later = now + RACY_SECS + 1;
        let before = stamp(&path, later).unwrap();
        assert_eq!(stamp(&path, later), Some(before.clone()));
        fs::write(&path, "two\n").unwrap();
        assert_ne!(stamp(&path, later + 1).unwrap(), before);
        assert_eq!(stamp(&dir.join("missing"), later), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
