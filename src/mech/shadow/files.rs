//! The cheap way to know that no shadow account changed: when NSS reads `passwd` and
//! `shadow` from files first, the identity and times of /etc/passwd, /etc/shadow and
//! /etc/nsswitch.conf (plus the day, for expiry) are a [`StateVersion`]. While it is
//! unchanged, every account's state is too, and a cache hit needs no lookup.
//!
//! Two guards keep it honest:
//! - A file changed within the last [`RACY_SECS`] gives no version: the kernel stamps
//!   times at a coarse granularity, so a second change within the same tick could leave
//!   every field as it was (git's "racy clean" problem, solved the same way).
//! - A version vouches only for users found in the files themselves ([`Files::holds`]):
//!   with `files` first, such a user never reaches a later source (LDAP, systemd's
//!   userdb) while the files are unchanged.
#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::mech::StateVersion;

/// A file changed less than this many seconds ago gives no version.
pub const RACY_SECS: i64 = 2;

/// The files a version covers, under a root (`/` in the daemon, a temp dir in tests).
pub struct Files {
    nsswitch: PathBuf,
    passwd: PathBuf,
    shadow: PathBuf,
    /// The nsswitch.conf fields last parsed, and whether it puts `files` first for both
    /// `passwd` and `shadow`.
    parsed: Mutex<Option<(Vec<i64>, bool)>>,
}

impl Files {
    pub fn under(root: &Path) -> Files {
        let etc = root.join("etc");
        Files {
            nsswitch: etc.join("nsswitch.conf"),
            passwd: etc.join("passwd"),
            shadow: etc.join("shadow"),
            parsed: Mutex::new(None),
        }
    }

    /// The current version, or `None` (not files first, a file missing or just changed).
    pub fn version(&self, today: i64) -> Option<StateVersion> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
        let nsswitch = fields(&self.nsswitch, now)?;
        if !self.files_first(&nsswitch) {
            return None;
        }
        let mut version = nsswitch;
        version.extend(fields(&self.passwd, now)?);
        version.extend(fields(&self.shadow, now)?);
        version.push(today);
        Some(StateVersion(version))
    }

    /// Whether `login` has a line in both /etc/passwd and /etc/shadow. Reads the files;
    /// for the blocking paths only.
    pub fn holds(&self, login: &[u8]) -> bool {
        let has_line = |path: &Path| {
            // /etc/shadow holds every user's hash: wipe the copy.
            fs::read(path).map(Zeroizing::new).is_ok_and(|text| {
                text.split(|&b| b == b'\n').any(|line| {
                    line.len() > login.len() && line.starts_with(login) && line[login.len()] == b':'
                })
            })
        };
        !login.is_empty() && has_line(&self.passwd) && has_line(&self.shadow)
    }

    fn files_first(&self, nsswitch: &[i64]) -> bool {
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, first)) = parsed.as_ref()
            && seen.as_slice() == nsswitch
        {
            return *first;
        }
        let first = fs::read_to_string(&self.nsswitch)
            .is_ok_and(|text| files_first_for(&text, "passwd") && files_first_for(&text, "shadow"));
        *parsed = Some((nsswitch.to_vec(), first));
        first
    }
}

/// The identity and times of `path`; `None` if it can't be read or changed lately.
fn fields(path: &Path, now: i64) -> Option<Vec<i64>> {
    let meta = fs::metadata(path).ok()?;
    if now - meta.mtime().max(meta.ctime()) < RACY_SECS {
        return None;
    }
    Some(vec![
        meta.dev() as i64,
        meta.ino() as i64,
        meta.size() as i64,
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    ])
}

/// Whether nsswitch.conf's line for `database` names `files` as its first source.
fn files_first_for(nsswitch: &str, database: &str) -> bool {
    nsswitch
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim() == database)
        .is_some_and(|(_, sources)| sources.split_whitespace().next() == Some("files"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_must_come_first() {
        let conf = "# comment\npasswd:  files systemd\nshadow: files\ngroup: files\n";
        assert!(files_first_for(conf, "passwd"));
        assert!(files_first_for(conf, "shadow"));
        assert!(!files_first_for("passwd: ldap files\n", "passwd"));
        assert!(!files_first_for("passwd: compat\n", "passwd"));
        assert!(!files_first_for("group: files\n", "shadow"), "no line: no");
        assert!(!files_first_for("#shadow: files\n", "shadow"));
    }

    fn root_with(nsswitch: &str) -> (PathBuf, Files) {
        let root = std::env::temp_dir().join(format!(
            "saslauthd-rs-files-{}-{}",
            std::process::id(),
            nsswitch.len()
        ));
        let etc = root.join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("nsswitch.conf"), nsswitch).unwrap();
        fs::write(etc.join("passwd"), "alice:x:1000:1000::/:/bin/sh\n").unwrap();
        fs::write(etc.join("shadow"), "alice:$6$x$y:19000:0:99999:7:::\n").unwrap();
        let files = Files::under(&root);
        (root, files)
    }

    /// Backdates a file so it is not "racy".
    fn age(path: &Path) {
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn versions_follow_the_files() {
        let (root, files) = root_with("passwd: files\nshadow: files\n");
        // Just written: racy, no version.
        assert_eq!(files.version(1), None);
        assert!(files.holds(b"alice"));
        assert!(!files.holds(b"alic"));
        assert!(!files.holds(b"bob"));
        assert!(!files.holds(b""));
        // ctime can't be backdated, so the racy guard holds for this test's lifetime;
        // check the pieces instead.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let shadow = root.join("etc/shadow");
        age(&shadow);
        assert_eq!(fields(&shadow, now), None, "a fresh ctime is racy");
        let later = now + RACY_SECS + 1;
        let before = fields(&shadow, later).unwrap();
        fs::write(&shadow, "alice:!$6$x$y:19000:0:99999:7:::\n").unwrap();
        assert_ne!(fields(&shadow, later + 1).unwrap(), before);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn no_version_unless_files_come_first() {
        let (root, files) = root_with("passwd: ldap files\nshadow: files\n#1\n");
        assert_eq!(files.version(1), None);
        assert!(!files.files_first(&[1, 2, 3]));
        fs::remove_dir_all(root).unwrap();
    }
}
