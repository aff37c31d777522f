//! Equal work for unknown users: an unknown login must not be answered measurably sooner
//! than an existing login with a wrong password (account enumeration by timing, as in
//! OpenSSH's CVE-2016-6210), with `-a shadow`, `-a pam` and `-a getpwent`. Our daemon in
//! a private mount namespace with the fixture users (tests/common/mod.rs); throttling is
//! off so every request costs only its verification.
//!
//! Requests alternate (unknown, wrong, unknown, ...) so that load from other tests on the
//! machine falls on both kinds alike, and the medians of [`SAMPLES`] replies each are
//! compared: they must be within 25 % of each other. The medians are printed (run with
//! `--nocapture` to see them).

#![forbid(unsafe_code)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fixtures::*;
use common::*;

/// Replies timed per kind.
const SAMPLES: usize = 61;
/// The largest accepted difference between the medians, relative to the wrong-password one.
const TOLERANCE: f64 = 0.25;
const WRONG_PW: &str = "Wrong-timing-pw-0042";
const UNKNOWN_USER: &str = "nosuchuser";

fn secrets() -> Vec<&'static str> {
    [FIXTURE_PASSWORDS, &[WRONG_PW]].concat()
}

/// One measurement at a time: the tests of this file hash on both cores, and one test's
/// load falling unevenly on another's two kinds of requests skews its medians.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MEASURING.lock().unwrap_or_else(|e| e.into_inner())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Times [`SAMPLES`] unknown-user and wrong-password requests for `user`, alternating;
/// checks their replies and returns the two medians. With `password`, each round also
/// logs `user` in (untimed), as the ordinary traffic of a mail server would.
fn medians(
    socket: &Path,
    service: &str,
    user: &str,
    password: Option<&str>,
    (unknown_reply, wrong_reply): (&str, &str),
) -> (Duration, Duration) {
    let time = |login: &str, want: &str| {
        let started = Instant::now();
        let got = auth(socket, login, WRONG_PW, service, "");
        let took = started.elapsed();
        assert_eq!(got.as_deref(), Some(want), "login {login:?}");
        took
    };
    // Warm-up: connection paths, NSS caches, the dummy hash.
    for _ in 0..3 {
        time(UNKNOWN_USER, unknown_reply);
        time(user, wrong_reply);
    }
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        unknown.push(time(UNKNOWN_USER, unknown_reply));
        wrong.push(time(user, wrong_reply));
        if let Some(password) = password {
            let got = auth(socket, user, password, service, "");
            assert_eq!(got.as_deref(), Some("OK"), "login {user:?}");
        }
    }
    (median(unknown), median(wrong))
}

fn assert_close(what: &str, (unknown, wrong): (Duration, Duration), log: &str) {
    let difference = (unknown.as_secs_f64() - wrong.as_secs_f64()).abs() / wrong.as_secs_f64();
    eprintln!(
        "{what}: median unknown user {:.2} ms, wrong password {:.2} ms ({:.0} % apart, {SAMPLES} \
         samples each)",
        unknown.as_secs_f64() * 1e3,
        wrong.as_secs_f64() * 1e3,
        difference * 100.0
    );
    assert!(
        difference <= TOLERANCE,
        "{what}: unknown user {unknown:?} vs wrong password {wrong:?}: {:.0} % apart (at most \
         {:.0} %)\n--- log ---\n{log}",
        difference * 100.0,
        TOLERANCE * 100.0
    );
}

/// The fixture's usable hashes are mostly sha512crypt, so unknown users cost one
/// sha512crypt; once the (private copy of the) shadow file holds mostly yescrypt hashes,
/// they cost one yescrypt, with no restart.
#[test]
fn shadow_unknown_users_take_as_long_as_wrong_passwords() {
    let _measuring = one_at_a_time();
    let d = Daemon::start(
        &ours_bin("saslauthd"),
        &["-a", "shadow", "--throttle-max", "0"],
    );
    assert!(
        d.wait_for_log(
            "shadow: unknown users and locked accounts cost one hash like the accounts': $6$ (",
            Duration::from_secs(2)
        ),
        "{}",
        d.log()
    );
    let replies = ("NO Invalid username", "NO Incorrect password");
    let sha512 = medians(&d.socket(), "imap", "suser", None, replies);
    assert_close("shadow, sha512crypt", sha512, &d.log());

    make_yescrypt_prevail(&d);
    let yescrypt = medians(&d.socket(), "imap", "yuser", None, replies);
    assert_close("shadow, yescrypt", yescrypt, &d.log());
    assert!(
        yescrypt.1 > sha512.1,
        "yescrypt should cost more than sha512crypt: {yescrypt:?} vs {sha512:?}"
    );
    // A locked account costs a hash too.
    let locked = medians(&d.socket(), "imap", "locked", None, replies);
    assert_close("shadow, locked account vs unknown user", locked, &d.log());
    d.finish(&secrets());
}

/// Gives four sha512crypt accounts of the daemon's private shadow copy yuser's yescrypt
/// hash, so that yescrypt is the prevailing kind.
fn make_yescrypt_prevail(d: &Daemon) {
    let yescrypt = hash_of(d, "yuser");
    for user in ["expired", "pwexpired", "long", "user@example.org"] {
        edit_shadow(d, user, |fields| fields[1] = yescrypt.clone());
    }
}

/// pam_unix answers an unknown user without hashing; the daemon makes such failures take
/// as long as a successful login of the service (its recent median): a dummy hash of the
/// prevailing kind (yescrypt here), then a timer for the rest. Ordinary successful logins
/// go on meanwhile.
#[test]
fn pam_unknown_users_take_as_long_as_wrong_passwords() {
    let _measuring = one_at_a_time();
    let lab = PamDaemon::start(&ours_bin("saslauthd"), &["--throttle-max", "0"]);
    make_yescrypt_prevail(&lab.daemon);
    let socket = lab.daemon.socket();
    // A few successes: the measure of a login's work for the service.
    for _ in 0..5 {
        let got = auth(&socket, "yuser", YUSER_PW, "sasl-unix", "");
        assert_eq!(got.as_deref(), Some("OK"), "{}", lab.daemon.log());
    }
    let auth_error = "NO PAM auth error";
    let replies = (auth_error, auth_error);
    let yescrypt = medians(&socket, "sasl-unix", "yuser", Some(YUSER_PW), replies);
    assert_close("pam_unix (nodelay), yescrypt", yescrypt, &lab.daemon.log());
    lab.daemon.finish(&secrets());
}

/// `-a getpwent` hashes unknown users, and entries without a hash (`x`), against a dummy
/// of the prevailing kind in /etc/passwd: sha512crypt in the getpwent fixture.
#[test]
fn getpwent_unknown_users_take_as_long_as_wrong_passwords() {
    let _measuring = one_at_a_time();
    let d = Daemon::start_with(
        &ours_bin("saslauthd"),
        &["-a", "getpwent", "--throttle-max", "0"],
        Options {
            extra_binds: vec![(
                fixtures_dir().join("getpwent/passwd"),
                std::path::PathBuf::from("/etc/passwd"),
            )],
            ..Options::default()
        },
    );
    assert!(
        d.wait_for_log(
            "getpwent: unknown users and entries without a hash cost one hash like the \
             accounts': $6$ (",
            Duration::from_secs(2)
        ),
        "{}",
        d.log()
    );
    let replies = ("NO Invalid username", "NO Incorrect password");
    let sha512 = medians(&d.socket(), "imap", "gsha", None, replies);
    assert_close("getpwent, sha512crypt", sha512, &d.log());
    // root's entry is `x`: no hash, but the same work.
    let shadowed = medians(&d.socket(), "imap", "root", None, replies);
    assert_close("getpwent, an `x` entry vs unknown user", shadowed, &d.log());
    d.finish(&secrets());
}
