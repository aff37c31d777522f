//! The secrets scan: no password and no stored hash in any log our binaries wrote during
//! the test suite.
//!
//! `scripts/test.sh` runs the whole suite with `SASLAUTHD_TEST_SECRETS_DIR` set: the harness
//! (`tests/common/secrets.rs`) then starts our daemons verbose (`-d`, else `-V`, with their
//! syslog lines captured in daemon mode), keeps a copy of every log of ours in
//! `<dir>/logs/`, and records every password it sends in `<dir>/secrets.list`. After the
//! suite, the script runs the ignored test here:
//!
//! ```text
//! cargo test --test secrets_scan -- --ignored
//! ```
//!
//! which searches every kept log for every recorded password, the fixture users' passwords
//! and the fixture shadow hashes (raw, as `log::sanitize` would escape them, and in their
//! `{:?}` form: `common::secrets::Matcher`, which `Daemon::assert_log_free_of` uses too), and fails
//! listing each log file and the secret found in it. Upstream's logs are not kept, so not
//! scanned: Cyrus saslauthd logs passwords and hashes with `-d`.
//!
//! A secret is searched by its first [`KEY_LEN`] bytes (our log lines cut long values, so a
//! leak of a long password would only show its start); secrets shorter than
//! [`MIN_SECRET_LEN`] bytes are skipped (`x` or `pw` would match ordinary log text).
#![forbid(unsafe_code)]

mod common;

use common::fixtures::{FIXTURE_PASSWORDS, long_pw};
use common::secrets::{self, ENV, Form, KEY_LEN, LIST, LOGS, Matcher};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Shorter secrets are not searched for.
const MIN_SECRET_LEN: usize = 6;

/// A secret and where it came from (the tests that sent it, or "fixture").
#[derive(Debug, Default)]
struct Secrets {
    origins: BTreeMap<Vec<u8>, BTreeSet<String>>,
}

impl Secrets {
    fn add(&mut self, secret: &[u8], origin: &str) {
        self.origins
            .entry(secret.to_vec())
            .or_default()
            .insert(origin.to_string());
    }

    /// Parses `secrets.list` (`<hex>\t<origin>` lines).
    fn add_list(&mut self, list: &str) {
        for (n, line) in list.lines().enumerate() {
            let (hex, origin) = line.split_once('\t').unwrap_or((line, "?"));
            let secret = secrets::from_hex(hex)
                .unwrap_or_else(|| panic!("{LIST} line {}: not hex: {line:?}", n + 1));
            self.add(&secret, origin);
        }
    }

    /// The fixture users' passwords and every non-trivial stored hash in
    /// `tests/fixtures/shadow` and `tests/fixtures/getpwent/passwd` (with and without a
    /// leading `!`, and the digest alone).
    fn add_fixtures(&mut self) {
        for pw in FIXTURE_PASSWORDS {
            self.add(pw.as_bytes(), "fixture password");
        }
        self.add(long_pw().as_bytes(), "fixture password (long)");
        let read = |name: &str| {
            fs::read_to_string(common::fixtures_dir().join(name))
                .unwrap_or_else(|e| panic!("read tests/fixtures/{name}: {e}"))
        };
        let hash_files = read("shadow") + &read("getpwent/passwd");
        for line in hash_files.lines() {
            let hash = line.split(':').nth(1).unwrap_or("");
            let hash = hash.trim_start_matches('!');
            if hash.len() > 8 {
                self.add(hash.as_bytes(), "fixture shadow hash");
                if let Some((_, digest)) = hash.rsplit_once('$')
                    && digest.len() >= 16
                {
                    self.add(digest.as_bytes(), "fixture shadow hash (digest)");
                }
            }
        }
    }
}

fn logs_in(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("log dir entry").path())
        .filter(|path| path.is_file())
        .collect();
    logs.sort();
    logs
}

#[test]
#[ignore = "run by scripts/test.sh after the suite (cargo test --test secrets_scan -- --ignored)"]
fn no_password_or_hash_in_any_log_of_ours() {
    let dir = secrets::dir().unwrap_or_else(|| {
        panic!("{ENV} is not set: run the suite with it set first (scripts/test.sh does)")
    });
    let list = fs::read_to_string(dir.join(LIST))
        .unwrap_or_else(|e| panic!("no {LIST} in {}: {e}", dir.display()));
    let mut all = Secrets::default();
    all.add_list(&list);
    let recorded = all.origins.len();
    all.add_fixtures();
    let logs = logs_in(&dir.join(LOGS));
    // A broken collection must not pass as a clean scan.
    assert!(
        recorded >= 20,
        "only {recorded} passwords recorded in {}: did the suite run with {ENV} set?",
        dir.join(LIST).display()
    );
    assert!(
        logs.len() >= 20,
        "only {} logs kept in {}: did the suite run with {ENV} set?",
        logs.len(),
        dir.join(LOGS).display()
    );

    let secrets: Vec<(Vec<u8>, BTreeSet<String>)> = all.origins.into_iter().collect();
    let matcher = Matcher::new(secrets.iter().map(|(s, _)| s.clone()), MIN_SECRET_LEN);
    let mut hits = Vec::new();
    let mut bytes = 0;
    for log in &logs {
        let text = fs::read(log).unwrap_or_else(|e| panic!("read {}: {e}", log.display()));
        bytes += text.len();
        for (id, form) in matcher.find(&text) {
            let secret = &matcher.secrets[id];
            let origins = &secrets.iter().find(|(s, _)| s == secret).expect("secret").1;
            hits.push(format!(
                "  {}: {:?}{} (sent by {})",
                log.display(),
                String::from_utf8_lossy(&secret[..secret.len().min(64)]),
                match form {
                    Form::Raw => String::new(),
                    form => format!(", {}", form.name()),
                },
                origins
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    eprintln!(
        "secrets scan: {} logs ({bytes} bytes) searched for {} secrets ({} shorter than \
         {MIN_SECRET_LEN} bytes skipped)",
        logs.len(),
        matcher.secrets.len(),
        matcher.skipped
    );
    assert!(
        hits.is_empty(),
        "{} secret(s) found in logs of ours:\n{}",
        hits.len(),
        hits.join("\n")
    );
}

// The scanner itself (no root, no daemon).

#[test]
fn matcher_finds_raw_escaped_and_truncated_leaks_only() {
    let long = "Z".repeat(300);
    let matcher = Matcher::new(
        vec![
            b"Sha-512-pw1".to_vec(),
            b"tab\there".to_vec(),
            b"\xff\xfebinary".to_vec(),
            long.as_bytes().to_vec(),
            b"short".to_vec(),
            b"q\"uo\\te".to_vec(),
        ],
        MIN_SECRET_LEN,
    );
    assert_eq!(matcher.skipped, 1);
    let found = |log: &[u8]| matcher.find(log);
    assert!(found(b"auth failure: [user=suser] [reason=Incorrect password]").is_empty());
    assert_eq!(
        found(b"x Sha-512-pw1 y"),
        BTreeSet::from([(0, Form::Raw)]),
        "raw"
    );
    assert_eq!(
        found(br"[user=tab\x09here]"),
        BTreeSet::from([(1, Form::Sanitized)]),
        "escaped"
    );
    assert_eq!(
        found(br"login \xff\xfebinary"),
        BTreeSet::from([(2, Form::Sanitized)]),
        "escaped invalid UTF-8"
    );
    let cut = format!("[user={}...]", &long[..256]);
    assert_eq!(
        found(cut.as_bytes()),
        BTreeSet::from([(3, Form::Raw)]),
        "cut at 256"
    );
    assert_eq!(
        found(&long.as_bytes()[..KEY_LEN]),
        BTreeSet::from([(3, Form::Raw)]),
        "the first {KEY_LEN} bytes of a long secret"
    );
    assert!(
        found(&long.as_bytes()[..KEY_LEN - 1]).is_empty(),
        "fewer than {KEY_LEN} bytes of a long secret"
    );
    assert_eq!(
        found(br"panicked: tab\there"),
        BTreeSet::from([(1, Form::Debug)]),
        "Debug"
    );
    assert_eq!(
        found(br#"got "q\"uo\\te", "q\x22uo\x5cte""#),
        BTreeSet::from([(4, Form::Debug)]),
        "Debug form (the sanitized one escapes the backslash only)"
    );
    assert_eq!(
        found(br#"[user=q"uo\x5cte]"#),
        BTreeSet::from([(4, Form::Sanitized)]),
        "sanitized backslash"
    );
    assert!(found(b"Sha-512-pw").is_empty(), "a prefix is not a leak");
}

#[test]
fn masking_hides_every_form_and_the_whole_of_a_cut_leak() {
    let long = "Z".repeat(300);
    let matcher = Matcher::new(
        vec![
            b"Sha-512-pw1".to_vec(),
            b"tab\there".to_vec(),
            long.into_bytes(),
        ],
        1,
    );
    let log = format!(
        "a Sha-512-pw1 b tab\\x09here c [user={}...] d {} e",
        "Z".repeat(256),
        "Z".repeat(300)
    );
    assert_eq!(
        String::from_utf8(matcher.mask(log.as_bytes())).unwrap(),
        "a <secret #0 (11 bytes)> b <secret #1 (8 bytes)> c [user=<secret #2 (300 bytes)>] d \
         <secret #2 (300 bytes)> e"
    );
    assert_eq!(matcher.mask(b"nothing here"), b"nothing here");
}

#[test]
fn recorded_list_round_trips_through_hex() {
    let mut s = Secrets::default();
    let line = format!("{}\tdaemon.some_test\n", secrets::to_hex(b"p\xe4 \n\x00"));
    s.add_list(&line);
    assert_eq!(
        s.origins.keys().collect::<Vec<_>>(),
        [&b"p\xe4 \n\x00".to_vec()]
    );
    s.add_fixtures();
    assert!(s.origins.contains_key(b"Sha-512-pw1".as_slice()));
    assert!(s.origins.keys().any(|k| k.starts_with(b"$y$")));
}

#[test]
fn frame_passwords_are_found_in_whole_truncated_and_odd_frames() {
    let frame = common::request(&[b"suser", b"Sha-512-pw1", b"imap", b""]);
    assert_eq!(secrets::frame_password(&frame), Some(&b"Sha-512-pw1"[..]));
    assert_eq!(secrets::frame_password(&frame[..12]), Some(&b"Sha"[..]));
    assert_eq!(secrets::frame_password(&frame[..8]), None);
    assert_eq!(secrets::frame_password(b"\xff\xff"), None);
    assert_eq!(secrets::frame_password(b""), None);
}
