//! `-a getpwent` against a passwd file with hashes in it (`tests/fixtures/getpwent/passwd`,
//! bind-mounted over /etc/passwd on top of the usual fixtures), ours and Debian's saslauthd
//! side by side. Needs root (a private mount namespace); fails without it.

#![forbid(unsafe_code)]

mod common;

use common::clients::{NO, OK, run_client};
use common::fixtures::{DES_PW, MUSER_PW, SUSER_PW, YUSER_PW};
use common::*;
use std::fs;
use std::path::{Path, PathBuf};

const INCORRECT: &str = "NO Incorrect password";
const INVALID: &str = "NO Invalid username";

/// A copy of the getpwent passwd fixture, shown as /etc/passwd.
struct Passwd {
    dir: TempDir,
}

impl Passwd {
    fn new() -> Passwd {
        let dir = TempDir::new("getpwent-passwd");
        fs::copy(fixtures_dir().join("getpwent/passwd"), dir.join("passwd"))
            .expect("copy the getpwent passwd fixture");
        Passwd { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("passwd")
    }

    fn start(&self, program: &Path, extra: &[&str]) -> Daemon {
        let mut args = vec!["-a", "getpwent"];
        args.extend_from_slice(extra);
        Daemon::start_with(
            program,
            &args,
            Options {
                extra_binds: vec![(self.path(), PathBuf::from("/etc/passwd"))],
                ..Options::default()
            },
        )
    }
}

/// (login, password, realm, expected reply); service `imap`.
type Case = (&'static str, &'static str, &'static str, &'static str);

/// Measured with Debian's saslauthd.
const CASES: &[Case] = &[
    ("gyes", YUSER_PW, "", "OK"),
    ("gyes", "Yes-Crypt-pw2", "", INCORRECT),
    ("gsha", SUSER_PW, "", "OK"),
    ("gsha", "Sha-512-pw", "", INCORRECT),
    ("gmd5", MUSER_PW, "", "OK"),
    ("gdes", DES_PW, "", "OK"),
    // DES reads the first 8 characters only (libxcrypt's behaviour, kept).
    ("gdes", "Des-pw12-and-more", "", "OK"),
    ("gdes", "Des-pw1", "", INCORRECT),
    // `x`: shadow is never read, even where it holds the right hash.
    ("yuser", YUSER_PW, "", INCORRECT),
    ("gstar", "*", "", INCORRECT),
    ("gstar", "anything", "", INCORRECT),
    ("gempty", "x", "", INCORRECT),
    ("glocked", SUSER_PW, "", INCORRECT),
    // A 5 KiB passwd line.
    ("glong", SUSER_PW, "", "OK"),
    ("nosuchuser", SUSER_PW, "", INVALID),
    // The realm is ignored without -r; the login is not split at `@`.
    ("gsha", SUSER_PW, "example.org", "OK"),
    ("greal@example.org", SUSER_PW, "", "OK"),
];

/// The passwords `cases` send, but those too short to tell from log text (`x`, `*`).
fn passwords(cases: &[Case]) -> Vec<&'static str> {
    cases.iter().map(|c| c.1).filter(|p| p.len() > 2).collect()
}

#[test]
fn hashes_in_passwd_answer_as_debian_saslauthd_does() {
    let passwd = Passwd::new();
    let ours = passwd.start(&ours_bin("saslauthd"), &[]);
    let upstream = passwd.start(Path::new(UPSTREAM_SASLAUTHD), &[]);
    let (f_ours, f_up) = mismatches_side_by_side(&ours, &upstream, for_imap(CASES));
    assert!(
        f_ours.is_empty() && f_up.is_empty(),
        "ours:\n{}\nDebian's:\n{}\n--- our log ---\n{}",
        f_ours.join("\n"),
        f_up.join("\n"),
        ours.log()
    );
    for daemon in [&ours, &upstream] {
        let client = Path::new(UPSTREAM_TESTSASLAUTHD);
        let good = run_client(client, &["-u", "gsha", "-p", SUSER_PW], &daemon.socket());
        assert_eq!(good.stdout_str(), OK, "{}", good.output());
        let bad = run_client(client, &["-u", "yuser", "-p", YUSER_PW], &daemon.socket());
        assert_eq!(bad.stdout_str(), NO, "{}", bad.output());
    }
    ours.finish(&passwords(CASES));
}

#[test]
fn realm_concatenation_looks_up_login_at_realm() {
    let passwd = Passwd::new();
    let ours = passwd.start(&ours_bin("saslauthd"), &["-r"]);
    let upstream = passwd.start(Path::new(UPSTREAM_SASLAUTHD), &["-r"]);
    let cases: &[Case] = &[
        ("greal", SUSER_PW, "example.org", "OK"),
        ("gsha", SUSER_PW, "example.org", INVALID),
        ("gsha", SUSER_PW, "", "OK"),
    ];
    for daemon in [&ours, &upstream] {
        let failures = mismatches(daemon, for_imap(cases));
        assert!(
            failures.is_empty(),
            "{}\n{}",
            failures.join("\n"),
            daemon.log()
        );
    }
    drop(upstream);
    ours.finish(&passwords(cases));
}

#[test]
fn a_changed_hash_ends_a_cached_success() {
    let passwd = Passwd::new();
    let ours = passwd.start(&ours_bin("saslauthd"), &["-c"]);
    let ask = |password: &str| auth(&ours.socket(), "gsha", password, "imap", "");
    assert_eq!(ask(SUSER_PW).as_deref(), Some("OK"));
    assert_eq!(ask(SUSER_PW).as_deref(), Some("OK"));
    assert!(ours.log().contains("[cache=hit]"), "{}", ours.log());
    // gsha gets md5crypt's hash (Md5-crypt-pw1) in place: the old password is refused.
    let text = fs::read_to_string(passwd.path()).unwrap();
    let md5 = "$1$fxutsi8e$nlSv5mQhvYtj.d20rquMl.";
    let changed: String = text
        .lines()
        .map(|line| match line.strip_prefix("gsha:") {
            Some(rest) => {
                let after_hash = &rest[rest.find(':').unwrap()..];
                format!("gsha:{md5}{after_hash}\n")
            }
            None => format!("{line}\n"),
        })
        .collect();
    fs::write(passwd.path(), changed).unwrap();
    assert_eq!(ask(SUSER_PW).as_deref(), Some(INCORRECT), "{}", ours.log());
    assert_eq!(ask(MUSER_PW).as_deref(), Some("OK"));
    ours.finish(&[SUSER_PW, MUSER_PW]);
}
