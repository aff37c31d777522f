//! Integration tests of the credential cache (`-c`, `-s`, `-t`): our daemon in a private
//! mount namespace with the fixture users (see tests/common/mod.rs). Whether a reply came
//! from the cache is read from the debug log (`[cache=hit]` on the success line) and from
//! the statistics line SIGUSR1 writes. The fixture shadow file the daemon sees is the
//! harness's copy, bind-mounted over /etc/shadow, so these tests edit that copy in place to
//! change a password, lock or expire an account — the host's /etc is never touched.

#![forbid(unsafe_code)]

mod common;

use std::time::Duration;

use common::fixtures::*;
use common::*;

const WRONG_PW: &str = "Wrong-cache-pw-4711";

fn secrets() -> Vec<&'static str> {
    [FIXTURE_PASSWORDS, &[WRONG_PW]].concat()
}

fn ours(args: &[&str]) -> Daemon {
    Daemon::start(&ours_bin("saslauthd"), args)
}

fn expect(daemon: &Daemon, user: &str, pass: &str, service: &str, realm: &str, want: &str) {
    let got = auth(&daemon.socket(), user, pass, service, realm);
    assert_eq!(
        got.as_deref(),
        Some(want),
        "user {user:?} service {service:?} realm {realm:?}\n--- log ---\n{}",
        daemon.log()
    );
}

/// Cache hits logged so far for `user`.
fn hits(daemon: &Daemon, user: &str) -> usize {
    let needle = format!("[user={user}]");
    daemon
        .log()
        .lines()
        .filter(|line| line.contains("auth success") && line.contains(&needle))
        .filter(|line| line.contains("[cache=hit]"))
        .count()
}

/// Logs `user` in twice: a full verification, then a cache hit.
fn cache_success(daemon: &Daemon, user: &str, pw: &str, service: &str) {
    let before = hits(daemon, user);
    expect(daemon, user, pw, service, "", "OK");
    expect(daemon, user, pw, service, "", "OK");
    assert_eq!(
        hits(daemon, user),
        before + 1,
        "the second success is a hit"
    );
}

/// Sends SIGUSR1 and returns the statistics line it produces (the n-th such line).
fn statistics(daemon: &Daemon, nth: usize) -> String {
    daemon.signal(libc::SIGUSR1);
    let found = || {
        daemon
            .log()
            .lines()
            .filter(|line| line.contains("credential cache:") && line.contains(" hits, "))
            .nth(nth)
            .map(str::to_string)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Some(line) = found() {
            return line;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no statistics line after SIGUSR1\n--- log ---\n{}",
        daemon.log()
    );
}

#[test]
fn second_success_is_a_hit_and_wrong_passwords_never_are() {
    let daemon = ours(&["-a", "shadow", "-c"]);
    expect(&daemon, "yuser", YUSER_PW, "smtp", "", "OK");
    assert_eq!(
        hits(&daemon, "yuser"),
        0,
        "the first success verifies in full"
    );
    expect(&daemon, "yuser", YUSER_PW, "smtp", "", "OK");
    expect(&daemon, "yuser", YUSER_PW, "smtp", "", "OK");
    assert_eq!(hits(&daemon, "yuser"), 2);
    expect(
        &daemon,
        "yuser",
        WRONG_PW,
        "smtp",
        "",
        "NO Incorrect password",
    );
    // The wrong password didn't disturb the entry.
    expect(&daemon, "yuser", YUSER_PW, "smtp", "", "OK");
    assert_eq!(hits(&daemon, "yuser"), 3);
    // Failures are never cached.
    for _ in 0..2 {
        expect(
            &daemon,
            "suser",
            WRONG_PW,
            "smtp",
            "",
            "NO Incorrect password",
        );
    }
    let line = statistics(&daemon, 0);
    assert!(
        line.contains("credential cache: 1 of ") && line.contains(" 3 hits, 4 misses (0 stale)"),
        "{line}"
    );
    daemon.finish(&secrets());
}

#[test]
fn without_dash_c_nothing_is_cached() {
    let daemon = ours(&["-a", "shadow"]);
    for _ in 0..3 {
        expect(&daemon, "muser", MUSER_PW, "smtp", "", "OK");
    }
    assert_eq!(hits(&daemon, "muser"), 0);
    daemon.signal(libc::SIGUSR1);
    assert!(daemon.wait_for_log("credential cache: off", Duration::from_secs(5)));
    daemon.finish(&secrets());
}

#[test]
fn entries_expire_after_dash_t_seconds() {
    let daemon = ours(&["-a", "shadow", "-c", "-t", "1"]);
    expect(&daemon, "muser", MUSER_PW, "smtp", "", "OK");
    expect(&daemon, "muser", MUSER_PW, "smtp", "", "OK");
    assert_eq!(hits(&daemon, "muser"), 1);
    std::thread::sleep(Duration::from_millis(1300));
    expect(&daemon, "muser", MUSER_PW, "smtp", "", "OK");
    assert_eq!(hits(&daemon, "muser"), 1, "the expired entry was not used");
    let line = statistics(&daemon, 0);
    assert!(line.contains(" 1 expired"), "{line}");
    daemon.finish(&secrets());
}

#[test]
fn the_size_bound_evicts_the_oldest_entry() {
    // -s 1: 1024 bytes = 4 entries of 256 bytes. Five services make five entries.
    let daemon = ours(&["-a", "shadow", "-c", "-s", "1"]);
    let services: Vec<String> = (0..5).map(|i| format!("svc{i}")).collect();
    for service in &services {
        expect(&daemon, "muser", MUSER_PW, service, "", "OK");
    }
    expect(&daemon, "muser", MUSER_PW, "svc4", "", "OK");
    assert_eq!(hits(&daemon, "muser"), 1, "the newest entry is there");
    expect(&daemon, "muser", MUSER_PW, "svc0", "", "OK");
    assert_eq!(hits(&daemon, "muser"), 1, "the oldest entry was evicted");
    let line = statistics(&daemon, 0);
    assert!(line.contains("credential cache: 4 of 4 entries"), "{line}");
    assert!(line.contains(" evicted"), "{line}");
    daemon.finish(&secrets());
}

#[test]
fn entries_are_per_service_and_per_realm_and_follow_dash_r() {
    let daemon = ours(&["-a", "shadow", "-c", "-r"]);
    expect(&daemon, "muser", MUSER_PW, "smtp", "", "OK");
    expect(&daemon, "muser", MUSER_PW, "imap", "", "OK");
    assert_eq!(
        hits(&daemon, "muser"),
        0,
        "another service is another entry"
    );
    expect(&daemon, "muser", MUSER_PW, "imap", "", "OK");
    assert_eq!(hits(&daemon, "muser"), 1);
    // -r: the login verified (and cached) is user@example.org.
    expect(&daemon, "user", REALM_PW, "smtp", "example.org", "OK");
    expect(&daemon, "user", REALM_PW, "smtp", "example.org", "OK");
    assert_eq!(hits(&daemon, "user@example.org"), 1);
    expect(&daemon, "user", REALM_PW, "smtp", "", "NO Invalid username");
    daemon.finish(&secrets());
}

#[test]
fn shadow_password_change_takes_effect_on_the_next_request() {
    let daemon = ours(&["-a", "shadow", "-c"]);
    expect(&daemon, "yuser", YUSER_PW, "smtp", "", "OK");
    expect(&daemon, "yuser", YUSER_PW, "smtp", "", "OK");
    assert_eq!(hits(&daemon, "yuser"), 1);
    // yuser's password becomes suser's: give yuser suser's hash.
    let new_hash = hash_of(&daemon, "suser");
    edit_shadow(&daemon, "yuser", |fields| fields[1] = new_hash.clone());
    expect(
        &daemon,
        "yuser",
        YUSER_PW,
        "smtp",
        "",
        "NO Incorrect password",
    );
    expect(&daemon, "yuser", SUSER_PW, "smtp", "", "OK");
    expect(&daemon, "yuser", SUSER_PW, "smtp", "", "OK");
    assert_eq!(
        hits(&daemon, "yuser"),
        2,
        "the new password is cached in turn"
    );
    let line = statistics(&daemon, 0);
    assert!(line.contains("(1 stale)"), "{line}");
    daemon.finish(&secrets());
}

#[test]
fn shadow_lock_and_expiry_take_effect_on_the_next_request() {
    let daemon = ours(&["-a", "shadow", "-c"]);
    for (user, pw) in [("yuser", YUSER_PW), ("suser", SUSER_PW)] {
        cache_success(&daemon, user, pw, "smtp");
    }
    // usermod -L: a `!` before the hash.
    edit_shadow(&daemon, "yuser", |fields| {
        fields[1] = format!("!{}", fields[1])
    });
    expect(
        &daemon,
        "yuser",
        YUSER_PW,
        "smtp",
        "",
        "NO Incorrect password",
    );
    // usermod -e 1970-01-02: the account expired long ago.
    edit_shadow(&daemon, "suser", |fields| fields[7] = "1".to_string());
    expect(&daemon, "suser", SUSER_PW, "smtp", "", "NO Account expired");
    assert_eq!(hits(&daemon, "yuser"), 1);
    assert_eq!(hits(&daemon, "suser"), 1);
    daemon.finish(&secrets());
}

#[test]
fn pam_account_expired_after_caching_is_refused() {
    let lab = PamDaemon::start(&ours_bin("saslauthd"), &["-c"]);
    let daemon = &lab.daemon;
    cache_success(daemon, "suser", SUSER_PW, "sasl-unix");
    edit_shadow(daemon, "suser", |fields| fields[7] = "1".to_string());
    expect(
        daemon,
        "suser",
        SUSER_PW,
        "sasl-unix",
        "",
        "NO PAM acct error",
    );
    assert_eq!(hits(daemon, "suser"), 1);
    lab.daemon.assert_log_free_of(&secrets());
}

/// pam_unix's account phase never looks at the hash, so `-a pam -c` also compares the
/// account's shadow entry (as `-a shadow -c` does): `usermod -L` (a `!` before the hash)
/// and a password change take effect on the next request, not after `-t`.
#[test]
fn pam_cache_refuses_after_the_cached_users_hash_is_locked_or_changed() {
    let lab = PamDaemon::start(&ours_bin("saslauthd"), &["-c"]);
    let daemon = &lab.daemon;
    let login = |user: &str, pw: &str, want: &str| expect(daemon, user, pw, "sasl-unix", "", want);
    for (user, pw) in [("suser", SUSER_PW), ("yuser", YUSER_PW)] {
        cache_success(daemon, user, pw, "sasl-unix");
    }
    // usermod -L: a `!` before the hash.
    edit_shadow(daemon, "suser", |fields| {
        fields[1] = format!("!{}", fields[1])
    });
    login("suser", SUSER_PW, "NO PAM auth error");
    // A new password (here: muser's hash): the old one is refused at once.
    let other = hash_of(daemon, "muser");
    edit_shadow(daemon, "yuser", |fields| fields[1] = other.clone());
    login("yuser", YUSER_PW, "NO PAM auth error");
    login("yuser", MUSER_PW, "OK");
    assert_eq!(hits(daemon, "suser"), 1);
    assert_eq!(hits(daemon, "yuser"), 1);
    lab.daemon.assert_log_free_of(&secrets());
}

/// With settled files (no change in the last 2 s) a hit is vouched for by the files'
/// identity and times alone, without a lookup; a change to /etc/shadow still counts on
/// the very next request.
#[test]
fn changes_count_on_the_fast_path_too() {
    let daemon = ours(&["-a", "shadow", "-c"]);
    let settle = || std::thread::sleep(Duration::from_millis(2500));
    settle();
    for _ in 0..3 {
        expect(&daemon, "muser", MUSER_PW, "smtp", "", "OK");
    }
    assert_eq!(hits(&daemon, "muser"), 2);
    edit_shadow(&daemon, "muser", |fields| {
        fields[1] = format!("!{}", fields[1])
    });
    expect(
        &daemon,
        "muser",
        MUSER_PW,
        "smtp",
        "",
        "NO Incorrect password",
    );
    edit_shadow(&daemon, "muser", |fields| {
        fields[1] = fields[1].trim_start_matches('!').to_string()
    });
    settle();
    expect(&daemon, "muser", MUSER_PW, "smtp", "", "OK");
    expect(&daemon, "muser", MUSER_PW, "smtp", "", "OK");
    assert_eq!(hits(&daemon, "muser"), 3);
    // Another user's change (same file) makes muser's next hit read its entry again: still
    // a hit, because muser's own entry is unchanged.
    edit_shadow(&daemon, "suser", |fields| fields[7] = "1".to_string());
    expect(&daemon, "muser", MUSER_PW, "smtp", "", "OK");
    assert_eq!(hits(&daemon, "muser"), 4);
    daemon.finish(&secrets());
}

/// The cache's size figures have one source of truth, the code: the man page and the
/// README state the bytes per entry and the default number of entries, and both must be
/// what the daemon logs for the default `-s` (`credential cache: N entries (963 KB)`).
#[test]
fn the_documented_cache_size_is_what_the_daemon_logs() {
    let d = ours(&["-a", "shadow", "-c"]);
    let log = d.log();
    let (entries, kb): (u64, u64) = log
        .split("credential cache: ")
        .nth(1)
        .and_then(|rest| {
            let (entries, rest) = rest.split_once(" entries (")?;
            let (kb, _) = rest.split_once(" KB)")?;
            Some((entries.parse().ok()?, kb.parse().ok()?))
        })
        .unwrap_or_else(|| panic!("no credential cache line in the -d log:\n{log}"));
    let bytes_per_entry = kb * 1024 / entries;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let man = std::fs::read_to_string(root.join("man/saslauthd.8")).expect("man page");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    for (doc, text, statements) in [
        (
            "man/saslauthd.8",
            man.replace("\\\n", "").replace('\n', " "),
            vec![
                format!("(default {kb}): one entry per {bytes_per_entry} bytes"),
                format!("so {entries} entries by default"),
            ],
        ),
        (
            "README.md",
            readme.replace('\n', " "),
            vec![
                format!(
                    "`-s KB` (default {kb}) at {bytes_per_entry} bytes per entry ({entries} entries)"
                ),
                format!("12 of {entries} entries"),
            ],
        ),
    ] {
        for statement in statements {
            assert!(
                text.contains(&statement),
                "{doc} should say {statement:?} (the daemon logs {entries} entries ({kb} KB))"
            );
        }
    }
    d.finish(&secrets());
}
