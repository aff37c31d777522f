//! `-a sasldb` against files made with the real `saslpasswd2`, ours and Debian's saslauthd
//! side by side, and Postfix + swaks through both.
//!
//! Each test makes its own database in a temp dir and bind-mounts it over /etc/sasldb2 in
//! the daemons' private mount namespace (a private overlay of /etc when the host has no
//! /etc/sasldb2); a private UTS namespace gives them the hostname `mailhost`, which an
//! empty realm means. Needs root; fails without it.

#![forbid(unsafe_code)]

mod common;

use common::clients::{NO, OK, run_client};
use common::postfix::{Advert, SmtpAuth, SmtpCase, smtp_passwords, smtp_side_by_side};
use common::sasldb::{delete_user, list, set_password};
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

const HOSTNAME: &str = "mailhost";
const FQDN: &str = "mailhost.example.test";
const REALM: &str = "EXAMPLE.ORG";
const OTHER_REALM: &str = "OTHER.ORG";

const ALICE_PW: &str = "Sasl-alice-pw1";
const ALICE_OTHER_PW: &str = "Sasl-alice-other-pw1";
const CAROL_PW: &str = "Sasl-carol-pw1";
const DAVE_PW: &str = "Sasl-dave-pw1";
const SPECIAL_PW: &str = "pä ss \"q\\ €";
const NEW_PW: &str = "Sasl-alice-pw2";

/// A database made with saslpasswd2, in its own temp dir.
struct Database {
    dir: TempDir,
}

impl Database {
    fn new() -> Database {
        let db = Database {
            dir: TempDir::new("sasldb"),
        };
        let file = db.path();
        set_password(&file, REALM, "alice", ALICE_PW);
        set_password(&file, OTHER_REALM, "alice", ALICE_OTHER_PW);
        set_password(&file, HOSTNAME, "carol", CAROL_PW);
        set_password(&file, FQDN, "dave", DAVE_PW);
        set_password(&file, REALM, "special", SPECIAL_PW);
        db
    }

    fn path(&self) -> PathBuf {
        self.dir.join("sasldb2")
    }

    /// Options that show `file` as /etc/sasldb2 (or, `None`, no /etc/sasldb2 at all).
    fn options(file: Option<&Path>) -> Options {
        let sasldb = PathBuf::from("/etc/sasldb2");
        Options {
            hostname: Some(HOSTNAME.to_string()),
            extra_binds: file
                .map(|f| vec![(f.to_path_buf(), sasldb.clone())])
                .unwrap_or_default(),
            absent: if file.is_none() {
                vec![sasldb]
            } else {
                Vec::new()
            },
            ..Options::default()
        }
    }

    fn start(&self, program: &Path, extra: &[&str]) -> Daemon {
        start_with_file(program, Some(&self.path()), extra)
    }
}

fn start_with_file(program: &Path, file: Option<&Path>, extra: &[&str]) -> Daemon {
    let mut args = vec!["-a", "sasldb"];
    args.extend_from_slice(extra);
    Daemon::start_with(program, &args, Database::options(file))
}

/// (login, password, realm, expected reply); service `imap`.
type Case = (&'static str, &'static str, &'static str, &'static str);

/// Measured with Debian's saslauthd: exactly `OK` or `NO`.
const CASES: &[Case] = &[
    ("alice", ALICE_PW, REALM, "OK"),
    ("alice", "Sasl-alice-pw2", REALM, "NO"),
    ("alice", "Sasl-alice-pw", REALM, "NO"),
    ("alice", "Sasl-alice-pw1x", REALM, "NO"),
    ("alice", ALICE_PW, OTHER_REALM, "NO"),
    ("alice", ALICE_OTHER_PW, OTHER_REALM, "OK"),
    ("alice", ALICE_PW, "example.org", "NO"),
    ("bob", ALICE_PW, REALM, "NO"),
    // An empty realm is the short hostname, not the FQDN.
    ("alice", ALICE_PW, "", "NO"),
    ("carol", CAROL_PW, "", "OK"),
    ("carol", CAROL_PW, HOSTNAME, "OK"),
    ("dave", DAVE_PW, "", "NO"),
    ("dave", DAVE_PW, FQDN, "OK"),
    // The login is never split at `@`.
    ("alice@EXAMPLE.ORG", ALICE_PW, "", "NO"),
    ("special", SPECIAL_PW, REALM, "OK"),
    ("special", "pä ss \"q\\", REALM, "NO"),
];

fn passwords(cases: &[Case]) -> Vec<&'static str> {
    cases.iter().map(|c| c.1).collect()
}

/// Both daemons give `want` for each of `logins` (with `ALICE_PW`, realm EXAMPLE.ORG).
fn both_refuse(daemons: &[&Daemon], want: &str) {
    for daemon in daemons {
        let got = auth(&daemon.socket(), "alice", ALICE_PW, "imap", REALM);
        assert_eq!(got.as_deref(), Some(want), "--- log ---\n{}", daemon.log());
    }
}

#[test]
fn replies_match_debian_saslauthd_on_a_saslpasswd2_file() {
    let db = Database::new();
    let ours = db.start(&ours_bin("saslauthd"), &[]);
    let upstream = db.start(Path::new(UPSTREAM_SASLAUTHD), &[]);
    let (f_ours, f_up) = mismatches_side_by_side(&ours, &upstream, for_imap(CASES));
    assert!(
        f_ours.is_empty() && f_up.is_empty(),
        "ours:\n{}\nDebian's:\n{}\n--- the file ---\n{}\n--- our log ---\n{}",
        f_ours.join("\n"),
        f_up.join("\n"),
        list(&db.path()),
        ours.log()
    );
    // The reply is the two bytes `NO`, no reason.
    let raw = exchange(
        &ours.socket(),
        &request(&[b"alice", b"wrong", b"imap", REALM.as_bytes()]),
        &ExchangeOpts::default(),
    );
    assert_eq!(raw.received, b"\0\x02NO");
    // Interop: Debian's testsaslauthd against both.
    for daemon in [&ours, &upstream] {
        let client = Path::new(UPSTREAM_TESTSASLAUTHD);
        let args = ["-u", "alice", "-r", REALM, "-p", ALICE_PW];
        let good = run_client(client, &args, &daemon.socket());
        assert_eq!(good.stdout_str(), OK, "{}", good.output());
        let bad = run_client(client, &["-u", "carol", "-p", "x"], &daemon.socket());
        assert_eq!(bad.stdout_str(), NO, "{}", bad.output());
        let hostname_realm = run_client(client, &["-u", "carol", "-p", CAROL_PW], &daemon.socket());
        assert_eq!(
            hostname_realm.stdout_str(),
            OK,
            "{}",
            hostname_realm.output()
        );
    }
    ours.finish(&passwords(CASES));
}

#[test]
fn missing_and_corrupt_files_answer_no_and_ours_says_why() {
    // No /etc/sasldb2: both start, both refuse.
    let ours = start_with_file(&ours_bin("saslauthd"), None, &[]);
    let upstream = start_with_file(Path::new(UPSTREAM_SASLAUTHD), None, &[]);
    both_refuse(&[&ours, &upstream], "NO");
    assert!(
        ours.log().contains(
            "sasldb: cannot read the database /etc/sasldb2: open: No such file or directory"
        ),
        "{}",
        ours.log()
    );
    // Upstream's word for a reply without a reason.
    assert!(
        ours.log().contains("[mech=sasldb] [reason=Unknown]"),
        "{}",
        ours.log()
    );
    drop(upstream);
    ours.finish(&[ALICE_PW]);
    // A file that is not a Berkeley DB, and an empty one.
    let dir = TempDir::new("sasldb-corrupt");
    for (name, contents) in [("garbage", vec![0x5a_u8; 8192]), ("empty", Vec::new())] {
        let file = dir.join(name);
        fs::write(&file, contents).unwrap();
        let ours = start_with_file(&ours_bin("saslauthd"), Some(&file), &[]);
        let upstream = start_with_file(Path::new(UPSTREAM_SASLAUTHD), Some(&file), &[]);
        both_refuse(&[&ours, &upstream], "NO");
        assert!(
            ours.log()
                .contains("sasldb: cannot read the database /etc/sasldb2: open: "),
            "{name}: {}",
            ours.log()
        );
        drop(upstream);
        ours.finish(&[ALICE_PW]);
    }
    // A truncated database: cut a real one in half.
    let db = Database::new();
    let bytes = fs::read(db.path()).unwrap();
    fs::write(db.path(), &bytes[..bytes.len() / 2]).unwrap();
    let ours = db.start(&ours_bin("saslauthd"), &[]);
    let upstream = db.start(Path::new(UPSTREAM_SASLAUTHD), &[]);
    for (login, password, realm) in [("alice", ALICE_PW, REALM), ("carol", CAROL_PW, "")] {
        let a = auth(&ours.socket(), login, password, "imap", realm);
        let b = auth(&upstream.socket(), login, password, "imap", realm);
        assert_eq!(a, b, "{login}: ours {a:?}, Debian's {b:?}\n{}", ours.log());
    }
    drop(upstream);
    ours.finish(&[ALICE_PW, CAROL_PW]);
}

/// A database that can't be read is an outage, not a wrong password, for the throttle:
/// with a penalty from the first failure on, requests while /etc/sasldb2 is missing are
/// still answered at once (with upstream's bare `NO`).
#[test]
fn a_missing_database_builds_up_no_penalty() {
    const PASSWORDS: [&str; 4] = [
        "Sasl-outage-pw1",
        "Sasl-outage-pw2",
        "Sasl-outage-pw3",
        "Sasl-outage-pw4",
    ];
    let ours = start_with_file(&ours_bin("saslauthd"), None, &ONE_SECOND_PENALTY);
    let socket = ours.socket();
    for (n, password) in PASSWORDS.iter().enumerate() {
        let start = Instant::now();
        let reply = auth(&socket, "alice", password, "imap", REALM);
        let took = start.elapsed();
        assert_eq!(reply.as_deref(), Some("NO"), "request {n}\n{}", ours.log());
        assert!(
            took < Duration::from_millis(900),
            "request {n} took {took:?}\n{}",
            ours.log()
        );
    }
    ours.finish(&PASSWORDS);
}

#[test]
fn changes_apply_to_the_next_request_even_from_the_cache() {
    let db = Database::new();
    let ours = db.start(&ours_bin("saslauthd"), &["-c"]);
    let upstream = db.start(Path::new(UPSTREAM_SASLAUTHD), &["-c"]);
    let ask = |daemon: &Daemon, password: &str| {
        auth(&daemon.socket(), "alice", password, "imap", REALM).unwrap_or_default()
    };
    for daemon in [&ours, &upstream] {
        assert_eq!(ask(daemon, ALICE_PW), "OK");
        assert_eq!(ask(daemon, ALICE_PW), "OK");
    }
    assert!(ours.log().contains("[cache=hit]"), "{}", ours.log());
    // saslpasswd2 changes alice's password (in place: the bind mount sees it).
    set_password(&db.path(), REALM, "alice", NEW_PW);
    assert_eq!(ask(&ours, ALICE_PW), "NO", "{}", ours.log());
    assert_eq!(ask(&ours, NEW_PW), "OK");
    // Upstream's cache keeps accepting the old password.
    assert_eq!(ask(&upstream, ALICE_PW), "OK");
    // saslpasswd2 deletes alice.
    assert_eq!(ask(&ours, NEW_PW), "OK");
    delete_user(&db.path(), REALM, "alice");
    assert_eq!(ask(&ours, NEW_PW), "NO", "{}", ours.log());
    assert_eq!(ask(&upstream, ALICE_PW), "OK");
    // Another user's cached success survives the file's change (the stored password is
    // compared, not just the file's times).
    assert_eq!(
        auth(&ours.socket(), "carol", CAROL_PW, "imap", "").as_deref(),
        Some("OK")
    );
    set_password(&db.path(), REALM, "bob", "Sasl-bob-pw1");
    assert_eq!(
        auth(&ours.socket(), "carol", CAROL_PW, "imap", "").as_deref(),
        Some("OK")
    );
    ours.finish(&[ALICE_PW, NEW_PW, CAROL_PW, "Sasl-bob-pw1"]);
}

#[test]
fn postfix_authenticates_through_both() {
    let db = Database::new();
    let ours = db.start(&ours_bin("saslauthd"), &[]);
    let upstream = db.start(Path::new(UPSTREAM_SASLAUTHD), &[]);
    // libsasl splits user@realm into login and realm; a bare user gets an empty realm,
    // which is the daemon's hostname.
    let cases: &[SmtpCase] = &[
        ("alice@EXAMPLE.ORG", ALICE_PW, SmtpAuth::Accepted),
        ("alice@EXAMPLE.ORG", "Sasl-alice-pw9", SmtpAuth::Rejected),
        ("carol", CAROL_PW, SmtpAuth::Accepted),
        ("alice", ALICE_PW, SmtpAuth::Rejected),
    ];
    let (_postfix, report) = smtp_side_by_side(&ours, &upstream, cases, Advert::Required, "sasldb");
    assert!(report.is_empty(), "{report}");
    ours.finish(&smtp_passwords(cases));
}

#[test]
fn concurrent_lookups_agree() {
    let db = Database::new();
    let ours = db.start(&ours_bin("saslauthd"), &["-n", "8", "--throttle-max", "0"]);
    let failures: Vec<String> = thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    (0..10)
                        .flat_map(|_| mismatches(&ours, for_imap(CASES)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        ours.log()
    );
    ours.finish(&passwords(CASES));
}

#[test]
fn sasldb_path_names_another_file() {
    let db = Database::new();
    let path = db.path();
    let ours = Daemon::start_with(
        &ours_bin("saslauthd"),
        &["-a", "sasldb", "--sasldb-path", path.to_str().unwrap()],
        Options {
            hostname: Some(HOSTNAME.to_string()),
            ..Options::default()
        },
    );
    let failures = mismatches(&ours, for_imap(CASES));
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        ours.log()
    );
    ours.finish(&passwords(CASES));
}

/// A database that never answers (here a FIFO nobody writes to: opening it blocks) holds
/// a verification thread, never a client: the watchdog answers `NO` at the verification
/// deadline, and a request queued behind the stuck thread gets `NO server busy` after
/// three verification limits. The daemon still stops cleanly.
#[test]
fn a_database_that_never_answers_is_no_within_the_deadline() {
    let dir = TempDir::new("sasldb-fifo");
    let fifo = dir.join("sasldb2");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let ours = Daemon::start_with(
        &ours_bin("saslauthd"),
        &[
            "-a",
            "sasldb",
            "--sasldb-path",
            fifo.to_str().unwrap(),
            "-n",
            "1",
            "--verify-timeout",
            "1",
        ],
        Options {
            hostname: Some(HOSTNAME.to_string()),
            ..Options::default()
        },
    );
    let socket = ours.socket();
    let started = std::time::Instant::now();
    let requests: Vec<_> = (0..2)
        .map(|i| {
            let socket = socket.clone();
            // The first takes the only thread.
            thread::sleep(std::time::Duration::from_millis(100 * i));
            thread::spawn(move || {
                let reply = auth(&socket, "alice", ALICE_PW, "imap", REALM);
                (reply, started.elapsed())
            })
        })
        .collect();
    let replies: Vec<_> = requests.into_iter().map(|r| r.join().unwrap()).collect();
    let log = ours.log();
    let (first, took) = &replies[0];
    assert_eq!(first.as_deref(), Some("NO verification timed out"), "{log}");
    assert!(
        took.as_secs_f64() >= 1.5 && took.as_secs_f64() < 2.5,
        "{took:?}"
    );
    let (second, took) = &replies[1];
    assert_eq!(second.as_deref(), Some("NO server busy"), "{log}");
    assert!(
        took.as_secs_f64() >= 4.5 && took.as_secs_f64() < 5.5,
        "{took:?}"
    );
    assert!(
        log.contains("mechanism sasldb gave no verdict within 1500 ms"),
        "{log}"
    );
    assert!(
        log.contains("waited 4500 ms for a verification thread"),
        "{log}"
    );
    ours.finish(&[ALICE_PW]);
}
