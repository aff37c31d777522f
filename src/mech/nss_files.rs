//! The cheap way to know that no local account changed: when NSS reads the databases a
//! mechanism uses (`passwd` and `shadow` for shadow, `passwd` for getpwent) from files
//! first, the [stamps](super::file_stamp) of those files and of /etc/nsswitch.conf (plus
//! the day, for expiry) are a [`StateVersion`]. While it is unchanged, every account's
//! state is too, and a cache hit needs no lookup.
//!
//! Two guards keep it honest:
//! - A file changed within the last [`RACY_SECS`](super::file_stamp::RACY_SECS) gives no
//!   version.
//! - A version vouches only for users found in the files themselves ([`Files::holds`]):
//!   with `files` first, such a user never reaches a later source (LDAP, systemd's
//!   userdb) while the files are unchanged.
#![forbid(unsafe_code)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use zeroize::Zeroizing;

use super::file_stamp::{now, stamp};
use crate::mech::StateVersion;
use crate::secret::Password;

/// The files a version covers, under a root (`/` in the daemon, a temp dir in tests).
pub struct Files {
    nsswitch: PathBuf,
    /// NSS database names (`passwd`, `shadow`) and their files.
    databases: Vec<(&'static str, PathBuf)>,
    /// The nsswitch.conf stamp last parsed, and whether it puts `files` first for every
    /// database.
    parsed: Mutex<Option<(Vec<i64>, bool)>>,
}

impl Files {
    /// The files of `databases` (names of NSS databases, each read from `/etc/<name>`).
    pub fn under(root: &Path, databases: &[&'static str]) -> Files {
        let etc = root.join("etc");
        Files {
            nsswitch: etc.join("nsswitch.conf"),
            databases: databases
                .iter()
                .map(|&name| (name, etc.join(name)))
                .collect(),
            parsed: Mutex::new(None),
        }
    }

    /// The current version, or `None` (not files first, a file missing or just changed).
    pub fn version(&self, today: i64) -> Option<StateVersion> {
        let now = now()?;
        let nsswitch = stamp(&self.nsswitch, now)?;
        if !self.files_first(&nsswitch) {
            return None;
        }
        let mut version = nsswitch;
        for (_, path) in &self.databases {
            version.extend(stamp(path, now)?);
        }
        version.push(today);
        Some(StateVersion(version))
    }

    /// Whether `login` has a line in every database's file. Reads the files; for the
    /// blocking paths only.
    pub fn holds(&self, login: &[u8]) -> bool {
        !login.is_empty() && self.databases.iter().all(|(_, path)| has_line(path, login))
    }

    fn files_first(&self, nsswitch: &[i64]) -> bool {
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, first)) = parsed.as_ref()
            && seen.as_slice() == nsswitch
        {
            return *first;
        }
        let first = fs::read_to_string(&self.nsswitch).is_ok_and(|text| {
            self.databases
                .iter()
                .all(|(name, _)| files_first_for(&text, name))
        });
        *parsed = Some((nsswitch.to_vec(), first));
        first
    }
}

/// How much of a file [`find_line`] reads at once.
const CHUNK: usize = 4096;
/// Lines longer than this are skipped (`sys::nss`'s lookups give up on longer entries).
const MAX_LINE: usize = 1 << 20;

/// Whether a line of `path` starts with `login:`.
fn has_line(path: &Path, login: &[u8]) -> bool {
    find_line(path, |line| is_line_of(line, login))
}

/// Whether `line` is `name`'s: it starts with `name:`.
fn is_line_of(line: &[u8], name: &[u8]) -> bool {
    line.strip_prefix(name)
        .is_some_and(|rest| rest.first() == Some(&b':'))
}

/// Calls `each` with the lines of `path` (without their `\n`) until it returns true;
/// whether it did. A file that can't be opened has no lines; a read error ends it.
///
/// For files that hold password hashes (/etc/shadow): the file is read a chunk at a time
/// through one buffer, never whole, and a line that spans two chunks is gathered in a
/// second one that grows without leaving copies behind; both are wiped afterwards. Lines
/// longer than [`MAX_LINE`] are skipped.
pub fn find_line(path: &Path, mut each: impl FnMut(&[u8]) -> bool) -> bool {
    let Ok(mut file) = fs::File::open(path) else {
        return false;
    };
    let mut buffer = Zeroizing::new([0u8; CHUNK]);
    let mut lines = Lines::default();
    loop {
        match file.read(&mut buffer[..]) {
            Ok(0) => return lines.finish(&mut each),
            Ok(n) if lines.feed(&buffer[..n], &mut each) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Splits text fed in pieces of any size into lines.
#[derive(Default)]
struct Lines {
    /// The start of a line that continues in a later piece (wiped when done with).
    partial: Password,
    /// The line being gathered is longer than [`MAX_LINE`]: skipped to its end.
    overlong: bool,
}

impl Lines {
    /// Takes the next piece: calls `each` with every line it completes until `each`
    /// returns true; whether it did.
    fn feed(&mut self, mut piece: &[u8], each: &mut impl FnMut(&[u8]) -> bool) -> bool {
        while let Some(end) = piece.iter().position(|&b| b == b'\n') {
            let found = if self.partial.is_empty() && !self.overlong {
                end <= MAX_LINE && each(&piece[..end])
            } else {
                self.gather(&piece[..end]);
                let found = !self.overlong && each(self.partial.as_bytes());
                self.partial.truncate(0);
                self.overlong = false;
                found
            };
            if found {
                return true;
            }
            piece = &piece[end + 1..];
        }
        self.gather(piece);
        false
    }

    /// The end of the text: a last line without `\n` counts too.
    fn finish(&mut self, each: &mut impl FnMut(&[u8]) -> bool) -> bool {
        let found = !self.overlong && !self.partial.is_empty() && each(self.partial.as_bytes());
        self.partial.truncate(0);
        found
    }

    fn gather(&mut self, bytes: &[u8]) {
        if self.overlong || bytes.is_empty() {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_LINE {
            self.partial.truncate(0);
            self.overlong = true;
            return;
        }
        self.partial.extend_from_slice(bytes);
    }
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

    fn root_with(nsswitch: &str, databases: &[&'static str]) -> (PathBuf, Files) {
        let root = std::env::temp_dir().join(format!(
            "saslauthd-rs-files-{}-{}-{}",
            std::process::id(),
            nsswitch.len(),
            databases.len()
        ));
        let etc = root.join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("nsswitch.conf"), nsswitch).unwrap();
        fs::write(etc.join("passwd"), "alice:x:1000:1000::/:/bin/sh\n").unwrap();
        fs::write(etc.join("shadow"), "alice:$6$x$y:19000:0:99999:7:::\n").unwrap();
        let files = Files::under(&root, databases);
        (root, files)
    }

    #[test]
    fn users_must_be_in_every_file() {
        let (root, files) = root_with("passwd: files\nshadow: files\n", &["passwd", "shadow"]);
        // Just written: racy, no version (file_stamp's tests cover the stamps).
        assert_eq!(files.version(1), None);
        assert!(files.holds(b"alice"));
        assert!(!files.holds(b"alic"));
        assert!(!files.holds(b"bob"));
        assert!(!files.holds(b""));
        fs::write(root.join("etc/shadow"), "bob:$6$x$y:19000:0:99999:7:::\n").unwrap();
        assert!(!files.holds(b"alice"), "not in shadow any more");
        let passwd_only = Files::under(&root, &["passwd"]);
        assert!(passwd_only.holds(b"alice"));
        fs::remove_dir_all(root).unwrap();
    }

    /// Whether a line of `text`, fed in pieces of `size`, is `name`'s.
    fn found_in_pieces(text: &[u8], size: usize, name: &[u8]) -> bool {
        let mut lines = Lines::default();
        let mut each = |line: &[u8]| is_line_of(line, name);
        text.chunks(size).any(|piece| lines.feed(piece, &mut each)) || lines.finish(&mut each)
    }

    #[test]
    fn a_line_is_found_in_any_split() {
        let text = b"root:x:0:\nalic:x:1\nalice2:y\nalice:z:1\n";
        for size in 1..text.len() {
            assert!(found_in_pieces(text, size, b"alice"), "pieces of {size}");
            assert!(!found_in_pieces(text, size, b"bob"));
            // Only at the start of a line.
            assert!(!found_in_pieces(text, size, b"x"));
            // Every line, whole, in order, the last one without its `\n` too.
            for text in [&text[..], &text[..text.len() - 1]] {
                let mut seen = Vec::new();
                let mut lines = Lines::default();
                let mut each = |line: &[u8]| {
                    seen.push(line.to_vec());
                    false
                };
                for piece in text.chunks(size) {
                    lines.feed(piece, &mut each);
                }
                lines.finish(&mut each);
                let expected: Vec<&[u8]> =
                    vec![b"root:x:0:", b"alic:x:1", b"alice2:y", b"alice:z:1"];
                assert_eq!(seen, expected, "pieces of {size}");
            }
        }
        assert!(!is_line_of(b"alice", b"alice"), "no colon yet");
        assert!(is_line_of(b"alice:", b"alice"));
        // A line too long to hold is skipped; the next one is read.
        let mut long = b"a:".to_vec();
        long.resize(MAX_LINE + 1, b'x');
        long.extend_from_slice(b"\nb:y\n");
        assert!(!found_in_pieces(&long, CHUNK, b"a"));
        assert!(found_in_pieces(&long, CHUNK, b"b"));
        // A name found only past the first chunk of a file.
        let (root, files) = root_with("passwd: files\nshadow: files\n#2\n", &["passwd", "shadow"]);
        let mut shadow = "x:!:1::::::\n".repeat(2 * CHUNK / 10);
        shadow.push_str("far:$6$x$y:19000:0:99999:7:::\n");
        fs::write(root.join("etc/shadow"), shadow).unwrap();
        fs::write(root.join("etc/passwd"), "far:x:1:1::/:/bin/sh\n").unwrap();
        assert!(files.holds(b"far"));
        assert!(!files.holds(b"fa"));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn no_version_unless_files_come_first_for_each_database() {
        let (root, files) = root_with("passwd: ldap files\nshadow: files\n#1\n", &["shadow"]);
        assert!(files.files_first(&[1]), "only shadow is asked about");
        let both = Files::under(&root, &["passwd", "shadow"]);
        assert!(!both.files_first(&[1]));
        assert_eq!(both.version(1), None);
        fs::remove_dir_all(root).unwrap();
    }
}
