//! Equal work for users that can't be verified (OpenSSH's fix for CVE-2016-6210): an
//! unknown user, or an account without a usable hash, costs one verification of the
//! password against a hash of the scheme and cost most accounts use, so the reply time
//! does not tell a client which logins exist. It is the same call an account's hash gets
//! ([`hash::verify`]): a password the hashing library refuses without hashing (libxcrypt:
//! longer than 511 bytes, a NUL) costs an unknown user as little as an account.
//!
//! The dummy is the stored hash of an account of the prevailing kind: the usable hashes
//! in `/etc/shadow` are grouped by scheme and cost (`$y$j9T`, `$6$`, `$6$rounds=65536`,
//! `$2b$12`, ...), and the first hash of the largest group is used as the setting
//! (libxcrypt takes a whole hash as a setting; the result is thrown away, the reply is
//! always the unknown user's). It is re-derived when the file's identity, size or times
//! change; when the file holds no usable hash (accounts in LDAP, a fresh system), the
//! system's default scheme and cost with a random salt stand in.
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::file_stamp::identity;
use super::nss_files::find_line;
use crate::hash;
use crate::secret::Password;

/// The dummy hash of one version of the file.
#[derive(Debug)]
struct Derived {
    /// Identity, size and times of the file it was derived from (`None`: unreadable).
    file: Option<[i64; 7]>,
    setting: Arc<Password>,
    /// What the log says about it: the scheme and cost, and how many accounts share it.
    kind: String,
}

/// The setting unknown users are hashed with, kept in step with the file the accounts'
/// hashes are in (`/etc/shadow`; `-a getpwent`: `/etc/passwd`).
#[derive(Debug)]
pub struct DummyHash {
    shadow: PathBuf,
    current: Mutex<Option<Derived>>,
}

impl DummyHash {
    /// For `<root>/etc/shadow` (`/` in the daemon, a temp dir in tests).
    pub fn under(root: &Path) -> DummyHash {
        DummyHash::of_file(root.join("etc").join("shadow"))
    }

    /// For a file of `name:hash:...` lines (shadow(5), passwd(5)).
    pub fn of_file(path: PathBuf) -> DummyHash {
        DummyHash {
            shadow: path,
            current: Mutex::new(None),
        }
    }

    /// Verifies `password` against the dummy and throws the verdict away: exactly what
    /// verifying it against an account's hash does, so a password the hashing library
    /// refuses at once (too long, a NUL) is refused at once here too.
    pub fn spend(&self, password: &Password) {
        let (setting, _) = self.setting();
        let _ = hash::verify(password, setting.as_bytes());
    }

    /// Derives the dummy now and logs what `who` (e.g. "unknown users and locked accounts")
    /// will cost, for mechanism `mech`.
    pub fn announce(&self, mech: &str, who: &str) {
        let (took, kind) = self.measure();
        crate::log_info!(
            "{mech}: {who} cost one hash like the accounts': {kind}, {} ms",
            took.as_millis()
        );
    }

    /// How long one dummy hash takes now (for PAM's padding before it has seen a
    /// success), and what kind of hash it is.
    pub fn measure(&self) -> (Duration, String) {
        let (setting, kind) = self.setting();
        let started = Instant::now();
        let _ = hash::verify(&Password::new(b"measure".to_vec()), setting.as_bytes());
        (started.elapsed(), kind)
    }

    /// The current setting (re-derived if the file changed) and its description. The
    /// lock is held only to compare and store: deriving (reading the file, hashing) runs
    /// outside it, so requests meanwhile don't queue behind it.
    fn setting(&self) -> (Arc<Password>, String) {
        let file = identity(&self.shadow);
        if let Some(derived) = self.current().as_ref()
            && file.is_some()
            && derived.file == file
        {
            return (Arc::clone(&derived.setting), derived.kind.clone());
        }
        let derived = derive(&self.shadow, file);
        let setting = (Arc::clone(&derived.setting), derived.kind.clone());
        *self.current() = Some(derived);
        setting
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<Derived>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The dummy for the file as it is now.
fn derive(shadow: &Path, file: Option<[i64; 7]>) -> Derived {
    if let Some((setting, kind)) = prevailing_hash(shadow) {
        return Derived {
            file,
            setting: Arc::new(setting),
            kind,
        };
    }
    let setting = hash::default_setting().unwrap_or_else(|| Password::new(b"*".to_vec()));
    let kind = format!(
        "{} (the system default: no usable hash in {})",
        params(setting.as_bytes()),
        shadow.display()
    );
    Derived {
        file,
        setting: Arc::new(setting),
        kind,
    }
}

/// The first hash of the most common scheme and cost among the usable hashes of
/// `shadow`, with a description; `None` if there is none. The file is read a line at a
/// time through buffers that wipe themselves ([`find_line`]).
fn prevailing_hash(shadow: &Path) -> Option<(Password, String)> {
    // params -> (count, order of first appearance, first hash)
    let mut groups: HashMap<String, (usize, usize, Password)> = HashMap::new();
    let mut usable = 0;
    find_line(shadow, |line| {
        if let Some(stored) = line.split(|&b| b == b':').nth(1)
            && is_hash(stored)
        {
            usable += 1;
            let order = groups.len();
            groups
                .entry(params(stored))
                .or_insert_with(|| (0, order, Password::new(stored.to_vec())))
                .0 += 1;
        }
        false
    });
    // The largest group first, the one seen first among equals; the first whose hash the
    // hashing library takes.
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_unstable_by_key(|(_, (count, order, _))| (Reverse(*count), *order));
    let (params, (count, _, first)) = groups
        .into_iter()
        .find(|(_, (_, _, first))| hash::usable(first.as_bytes()))?;
    Some((
        first,
        format!(
            "{params} ({count} of {usable} usable hashes in {})",
            shadow.display()
        ),
    ))
}

/// Whether a password field holds a hash: not locked (`!…`), empty or a marker (`*…`,
/// passwd's `x`). Every crypt(5) hash is 13 characters (DES) or starts with `$` or `_`.
pub fn is_hash(stored: &[u8]) -> bool {
    match stored.first() {
        None | Some(b'!' | b'*') => false,
        Some(b'$' | b'_') => true,
        Some(_) => stored.len() == 13,
    }
}

/// The scheme and cost of a hash, without salt or digest: `$y$j9T`, `$6$`,
/// `$6$rounds=5000`, `$2b$12`, `$1$`, `DES`. Never secret (the same for many accounts).
pub fn params(stored: &[u8]) -> String {
    let text = String::from_utf8_lossy(stored);
    let mut fields = text.split('$');
    match (fields.next(), fields.next(), fields.next()) {
        (Some(""), Some(id), second) => {
            let cost = match (id, second) {
                ("y" | "gy" | "2a" | "2b" | "2y" | "2x", Some(cost)) => cost,
                ("5" | "6", Some(rounds)) if rounds.starts_with("rounds=") => rounds,
                _ => "",
            };
            format!("${id}${cost}")
        }
        _ if text.starts_with('_') => format!("BSDi {}", text.get(1..5).unwrap_or("")),
        _ => "DES".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // crypt("Sasl-Lab-pw1", ...) from libxcrypt: two settings of sha512crypt, one bcrypt.
    const SHA512: &str = "$6$3wRZf6ivvq.xq9Ko$VbpQMAHpk6DeQdugX/TzITp6iLE3wjIf/CHVH0GSKdRs/nNXdFFZPV06uBryO0NvjkkjntsPBq06E0cYYH5yP1";
    const BCRYPT: &str = "$2b$05$APJKVbBKC3IiNiJ8.Vi5/OVHpQJP3m0PR7TPEpckIRTW7ZiPbfO0e";

    #[test]
    fn params_leave_out_salt_and_digest() {
        assert_eq!(params(SHA512.as_bytes()), "$6$");
        assert_eq!(params(b"$6$rounds=65536$salt$digest"), "$6$rounds=65536");
        assert_eq!(params(b"$y$j9T$salt$digest"), "$y$j9T");
        assert_eq!(params(b"$gy$jCT$salt$digest"), "$gy$jCT");
        assert_eq!(params(BCRYPT.as_bytes()), "$2b$05");
        assert_eq!(params(b"$1$salt$digest"), "$1$");
        assert_eq!(params(b"abJnggxhB/yWI"), "DES");
        assert_eq!(params(b"_J9..salt"), "BSDi J9..");
        assert!(is_hash(SHA512.as_bytes()));
        assert!(is_hash(b"abJnggxhB/yWI"));
        for marker in ["", "!", "!!", "*", "*NP*", "!$6$x$y", "x", "LOCKED"] {
            assert!(!is_hash(marker.as_bytes()), "{marker}");
        }
    }

    fn root_with(tag: &str, shadow: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("saslauthd-rs-dummy-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/shadow"), shadow).unwrap();
        root
    }

    #[test]
    fn the_prevailing_kind_wins_and_a_change_is_seen() {
        let root = root_with(
            "prevailing",
            &format!(
                "root:*:19000::::::\nb1:{BCRYPT}:1::::::\na:{SHA512}:1::::::\n\
                 locked:!{BCRYPT}:1::::::\nb2:{BCRYPT}x:1::::::\nc:{SHA512}:1::::::\n\
                 d:$6$other$x:1::::::\nnohash::1::::::\n"
            ),
        );
        let dummy = DummyHash::under(&root);
        let (setting, kind) = dummy.setting();
        assert_eq!(setting.as_bytes(), SHA512.as_bytes());
        assert!(kind.starts_with("$6$ (3 of 5 usable hashes in "), "{kind}");
        // The file changes: bcrypt prevails now.
        std::fs::write(
            root.join("etc/shadow"),
            format!("b1:{BCRYPT}:1::::::\nb2:{BCRYPT}:1::::::\na:{SHA512}:1::::::\n"),
        )
        .unwrap();
        let (setting, kind) = dummy.setting();
        assert_eq!(setting.as_bytes(), BCRYPT.as_bytes());
        assert!(kind.starts_with("$2b$05 (2 of 3 usable"), "{kind}");
        // Equal counts: the kind seen first.
        std::fs::write(
            root.join("etc/shadow"),
            format!("a:{SHA512}:1::::::\nb1:{BCRYPT}:1::::::\n"),
        )
        .unwrap();
        assert_eq!(dummy.setting().0.as_bytes(), SHA512.as_bytes());
        std::fs::remove_dir_all(root).unwrap();
    }

    /// The least of a few timings of `work`: the cost itself, without the noise of a
    /// busy machine.
    fn fastest(work: &dyn Fn()) -> Duration {
        (0..5)
            .map(|_| {
                let started = Instant::now();
                work();
                started.elapsed()
            })
            .min()
            .expect("timed")
    }

    #[test]
    fn a_password_an_account_refuses_at_once_costs_the_dummy_nothing_either() {
        // crypt("Sasl-Lab-pw1", ...) from libxcrypt: a costly setting (tens of ms).
        const COSTLY: &str = "$6$rounds=50000$costlysaltsalt12$e48oGvxX/ixRogKUKOnHnBOsPB8fuLxt25vMvOhslcU8RlJH4G4Ixwnh2S8.4ogZr3td3CuzNtSczgqx5K6qU.";
        let root = root_with("long", &format!("a:{COSTLY}:1::::::\n"));
        let dummy = DummyHash::under(&root);
        assert_eq!(dummy.setting().0.as_bytes(), COSTLY.as_bytes());
        let short = Password::new(b"Sasl-Lab-pw2".to_vec());
        // Longer than the hashing library takes, but within the protocol's 1024 bytes.
        let long = Password::new(vec![b'p'; 600]);
        let full = fastest(&|| dummy.spend(&short));
        let account = fastest(&|| assert!(!hash::verify(&long, COSTLY.as_bytes())));
        let unknown = fastest(&|| dummy.spend(&long));
        assert!(
            account * 10 < full,
            "an account refuses at once: {account:?}, a full hash {full:?}"
        );
        assert!(
            unknown * 10 < full,
            "an unknown user must be refused as fast as an account: {unknown:?}, \
             a full hash {full:?}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn without_a_usable_hash_the_system_default_stands_in() {
        let root = root_with("default", "root:*:19000::::::\nx:!:1::::::\ngarbage\n");
        let dummy = DummyHash::under(&root);
        let (setting, kind) = dummy.setting();
        assert!(setting.as_bytes().starts_with(b"$"), "a real setting");
        assert!(kind.contains("the system default"), "{kind}");
        assert!(hash::usable(setting.as_bytes()));
        let (took, _) = dummy.measure();
        assert!(took > Duration::ZERO);
        // An unreadable file too (re-derived on every call: nothing to compare).
        let missing = DummyHash::under(Path::new("/nonexistent"));
        assert!(missing.setting().1.contains("the system default"));
        std::fs::remove_dir_all(root).unwrap();
    }
}
