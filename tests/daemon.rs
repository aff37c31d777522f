//! Integration tests of our `saslauthd -a shadow` (and our `testsaslauthd` against it).
//!
//! Every daemon runs in a private mount namespace with `tests/fixtures` bind-mounted over
//! `/etc/{passwd,shadow,group,nsswitch.conf}` (see `tests/common/mod.rs`); this needs root, and
//! those tests fail (not skip) without it. Expected texts follow `docs/test-contract.md`.

#![forbid(unsafe_code)]

mod common;

use common::clients::{NO as NO_LINE, OK as OK_LINE};
use common::fixtures::*;
use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Test passwords (the fixture users' are in common::fixtures) and helpers
// ---------------------------------------------------------------------------------------------

/// A wrong password for every fixture user.
const WRONG_PW: &str = "Wrong-pw-0815";
/// A password for the users that have none (`nosuchuser`, `nohash`, `star`).
const ANY_PW: &str = "Any-pw-4711";

/// A password filling the default field limit exactly.
fn max_field_pw() -> String {
    "L".repeat(1024)
}

/// Every password any test sends; none of them may ever show up in a daemon log.
fn secrets() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = FIXTURE_PASSWORDS
        .iter()
        .chain(&[WRONG_PW, ANY_PW])
        .map(|s| s.as_bytes().to_vec())
        .collect();
    // Long and oversize passwords: a 32-byte run is already a leak.
    v.push(b"L".repeat(32));
    v.push(b"Q".repeat(32));
    // The stored hashes must not leak either.
    v.extend(fixture_hashes().into_iter().map(String::into_bytes));
    v
}

/// Non-trivial hash fields of tests/fixtures/shadow (also the part after a leading `!`).
fn fixture_hashes() -> Vec<String> {
    let shadow = fs::read_to_string(fixtures_dir().join("shadow")).expect("read fixture shadow");
    let mut out = Vec::new();
    for line in shadow.lines() {
        let hash = line.split(':').nth(1).unwrap_or("");
        let hash = hash.trim_start_matches('!');
        if hash.len() > 8 {
            out.push(hash.to_string());
        }
    }
    out
}

fn ours() -> PathBuf {
    ours_bin("saslauthd")
}

fn testsaslauthd() -> PathBuf {
    ours_bin("testsaslauthd")
}

/// Our daemon, `-a shadow -d` plus `extra` options, in the private mount namespace.
fn start(extra: &[&str]) -> Daemon {
    let mut args = vec!["-a", "shadow"];
    args.extend_from_slice(extra);
    Daemon::start(&ours(), &args)
}

/// A fresh daemon answers one request (service `imap`, no realm) with `want`, then stops
/// cleanly ([`Daemon::finish`]).
fn expect_one_reply(user: &str, pass: &str, want: &str) {
    let d = start(&[]);
    expect_reply(&d, user, pass, want);
    d.finish(&secrets());
}

fn full_request(user: &[u8], pass: &[u8]) -> Vec<u8> {
    request(&[user, pass, b"imap", b""])
}

fn quick() -> ExchangeOpts {
    ExchangeOpts {
        timeout: Duration::from_secs(5),
        ..ExchangeOpts::default()
    }
}

fn assert_healthy(d: &Daemon) {
    assert!(d.running(), "daemon died\n--- log ---\n{}", d.log());
    expect_reply(d, "suser", SUSER_PW, "OK");
}

// ---------------------------------------------------------------------------------------------
// Fixtures themselves (no daemon, no root)
// ---------------------------------------------------------------------------------------------

#[test]
fn fixtures_hashes_match_documented_passwords() {
    let shadow = fs::read_to_string(fixtures_dir().join("shadow")).unwrap();
    let passwd = fs::read_to_string(fixtures_dir().join("passwd")).unwrap();
    let hash_of = |user: &str| -> String {
        shadow
            .lines()
            .find(|l| l.split(':').next() == Some(user))
            .unwrap_or_else(|| panic!("{user} missing from fixture shadow"))
            .split(':')
            .nth(1)
            .unwrap()
            .to_string()
    };
    // pwhash has no yescrypt; the $y$ users are checked against the daemons instead.
    let long = long_pw();
    for (user, pw) in [
        ("suser", SUSER_PW),
        ("buser", BUSER_PW),
        ("muser", MUSER_PW),
        ("expired", EXPIRED_PW),
        ("pwexpired", PWEXPIRED_PW),
        ("user@example.org", REALM_PW),
        ("long", long.as_str()),
    ] {
        let h = hash_of(user);
        assert!(pwhash::unix::verify(pw, &h), "{user}: hash does not verify");
        assert!(
            !pwhash::unix::verify(WRONG_PW, &h),
            "{user}: wrong pw verifies"
        );
    }
    let locked = hash_of("locked");
    assert!(locked.starts_with("!$6$"));
    assert!(pwhash::unix::verify(LOCKED_PW, &locked[1..]));
    assert!(hash_of("yuser").starts_with("$y$"));
    assert!(hash_of("special").starts_with("$y$"));
    assert!(hash_of("buser").starts_with("$2b$"));
    assert!(hash_of("muser").starts_with("$1$"));
    assert_eq!(hash_of("nohash"), "");
    assert_eq!(hash_of("star"), "*");
    // Every shadow user is in passwd.
    for l in shadow.lines() {
        let u = l.split(':').next().unwrap();
        assert!(
            passwd.lines().any(|p| p.split(':').next() == Some(u)),
            "{u} not in fixture passwd"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Passwords and account states
// ---------------------------------------------------------------------------------------------

#[test]
fn good_password_yescrypt_ok() {
    expect_one_reply("yuser", YUSER_PW, "OK");
}

#[test]
fn good_password_sha512crypt_ok() {
    expect_one_reply("suser", SUSER_PW, "OK");
}

#[test]
fn good_password_bcrypt_ok() {
    expect_one_reply("buser", BUSER_PW, "OK");
}

#[test]
fn good_password_md5crypt_ok() {
    expect_one_reply("muser", MUSER_PW, "OK");
}

#[test]
fn good_password_with_space_quote_backslash_utf8_ok() {
    expect_one_reply("special", SPECIAL_PW, "OK");
}

#[test]
fn wrong_password_is_incorrect_password() {
    let d = start(&[]);
    for user in ["yuser", "suser", "buser", "muser", "special"] {
        expect_reply(&d, user, WRONG_PW, "NO Incorrect password");
    }
    // A prefix and an extension of the right password are wrong too.
    expect_reply(&d, "suser", "Sha-512-pw", "NO Incorrect password");
    expect_reply(&d, "suser", "Sha-512-pw11", "NO Incorrect password");
    d.finish(&secrets());
}

#[test]
fn unknown_user_is_invalid_username() {
    let d = start(&[]);
    expect_reply(&d, "nosuchuser", ANY_PW, "NO Invalid username");
    // Matching is exact: no case folding, no realm splitting.
    expect_reply(&d, "SUSER", SUSER_PW, "NO Invalid username");
    expect_reply(&d, "suser@example.org", SUSER_PW, "NO Invalid username");
    d.finish(&secrets());
}

fn expect_no(d: &Daemon, user: &str, pass: &str) {
    let got = auth(&d.socket(), user, pass, "imap", "");
    let text = got.unwrap_or_else(|| panic!("{user}: no reply\n--- log ---\n{}", d.log()));
    assert!(
        text.starts_with("NO"),
        "{user}: expected a NO reply, got {text:?}\n--- log ---\n{}",
        d.log()
    );
}

#[test]
fn locked_account_is_refused() {
    let d = start(&[]);
    expect_no(&d, "locked", LOCKED_PW);
    expect_no(&d, "locked", &format!("!{LOCKED_PW}"));
    // The debug line says whose account it is (-d logs it).
    assert!(
        d.wait_for_log(
            "shadow: account has no usable password hash (locked or empty) [user=locked]",
            DEFAULT_TIMEOUT
        ),
        "{}",
        d.log()
    );
    d.finish(&secrets());
}

#[test]
fn empty_hash_and_star_hash_are_refused() {
    let d = start(&[]);
    expect_no(&d, "nohash", ANY_PW);
    expect_no(&d, "star", ANY_PW);
    expect_no(&d, "star", "*");
    d.finish(&secrets());
}

#[test]
fn expired_account_is_account_expired() {
    expect_one_reply("expired", EXPIRED_PW, "NO Account expired");
}

#[test]
fn expired_account_with_wrong_password_is_incorrect_password() {
    expect_one_reply("expired", WRONG_PW, "NO Incorrect password");
}

#[test]
fn expired_password_is_password_expired() {
    let d = start(&[]);
    expect_reply(&d, "pwexpired", PWEXPIRED_PW, "NO Password expired");
    expect_reply(&d, "pwexpired", WRONG_PW, "NO Incorrect password");
    d.finish(&secrets());
}

#[test]
fn empty_login_is_null_login() {
    let d = start(&[]);
    expect_reply(&d, "", SUSER_PW, "NO NULL login received");
    // All four fields empty: the login check comes first.
    assert_eq!(
        auth(&d.socket(), "", "", "", "").as_deref(),
        Some("NO NULL login received")
    );
    d.finish(&secrets());
}

#[test]
fn empty_password_is_null_password() {
    expect_one_reply("suser", "", "NO NULL password received");
}

// ---------------------------------------------------------------------------------------------
// 4- and 5-field dialects
// ---------------------------------------------------------------------------------------------

#[test]
fn four_field_request_is_answered_promptly_without_half_close() {
    let d = start(&[]);
    // Like libsasl 2.1.28: one write, then wait for the reply with the connection open.
    let r = exchange(
        &d.socket(),
        &full_request(b"suser", SUSER_PW.as_bytes()),
        &ExchangeOpts {
            timeout: Duration::from_secs(5),
            check_eof: false,
            ..ExchangeOpts::default()
        },
    );
    assert_eq!(r.text().as_deref(), Some("OK"), "{r:?}\n{}", d.log());
    assert!(
        r.elapsed < Duration::from_millis(500),
        "4-field reply took {:?}",
        r.elapsed
    );
    d.finish(&secrets());
}

#[test]
fn five_field_request_is_ok() {
    let d = start(&[]);
    let got = auth5(
        &d.socket(),
        "suser",
        SUSER_PW,
        "imap",
        "",
        "127.0.0.1;12345",
    );
    assert_eq!(got.as_deref(), Some("OK"), "{}", d.log());
    let got = auth5(&d.socket(), "yuser", YUSER_PW, "smtp", "", "::1;25");
    assert_eq!(got.as_deref(), Some("OK"), "{}", d.log());
    // An empty 5th field is fine too.
    let got = auth5(&d.socket(), "suser", SUSER_PW, "imap", "", "");
    assert_eq!(got.as_deref(), Some("OK"), "{}", d.log());
    d.finish(&secrets());
}

#[test]
fn five_field_failure_logs_remote_address() {
    let d = start(&[]);
    let got = auth5(
        &d.socket(),
        "suser",
        WRONG_PW,
        "imap",
        "",
        "127.0.0.1;12345",
    );
    assert_eq!(got.as_deref(), Some("NO Incorrect password"));
    let line = "auth failure: [user=suser] [service=imap] [realm=] [remote=127.0.0.1;12345] \
                [mech=shadow] [reason=Incorrect password]";
    assert!(
        d.wait_for_log(line, Duration::from_secs(3)),
        "missing log line {line:?}\n--- log ---\n{}",
        d.log()
    );
    d.finish(&secrets());
}

#[test]
fn five_field_request_sent_with_half_close_is_ok() {
    let d = start(&[]);
    let r = exchange(
        &d.socket(),
        &request(&[
            b"suser",
            SUSER_PW.as_bytes(),
            b"imap",
            b"",
            b"127.0.0.1;12345",
        ]),
        &ExchangeOpts {
            half_close: true,
            ..quick()
        },
    );
    assert_eq!(r.text().as_deref(), Some("OK"), "{r:?}");
    assert!(r.closed, "no EOF after the reply: {r:?}");
    d.finish(&secrets());
}

// ---------------------------------------------------------------------------------------------
// Field limits
// ---------------------------------------------------------------------------------------------

#[test]
fn password_of_511_bytes_verifies() {
    let d = start(&[]);
    let got = auth(&d.socket(), "long", &long_pw(), "imap", "");
    assert_eq!(got.as_deref(), Some("OK"), "--- log ---\n{}", d.log());
    d.finish(&secrets());
}

#[test]
fn password_field_of_1024_bytes_reaches_the_mechanism() {
    let d = start(&[]);
    let got = auth(&d.socket(), "long", &max_field_pw(), "imap", "");
    let text = got.unwrap_or_else(|| panic!("no reply\n--- log ---\n{}", d.log()));
    // Accepted by the protocol layer (default limit 1024); libxcrypt then refuses to hash
    // 512 bytes or more, so the verdict is the shadow mechanism's own NO.
    assert_eq!(text, "NO Incorrect password", "--- log ---\n{}", d.log());
    assert!(!d.log().contains("exceeds"), "{}", d.log());
    d.finish(&secrets());
}

/// Sends a request whose field `idx` (0-based) is `len` bytes long and checks the NO reply and
/// that a log line names `name` and `limit`.
fn check_oversize(d: &Daemon, idx: usize, name: &str, len: usize, limit: usize) {
    let big = vec![b'Q'; len];
    let mut fields: Vec<&[u8]> = vec![b"suser", SUSER_PW.as_bytes(), b"imap", b"", b"127.0.0.1;1"];
    fields[idx] = &big;
    let r = exchange(&d.socket(), &request(&fields), &quick());
    let text = r
        .text()
        .unwrap_or_else(|| panic!("{name}: no reply: {r:?}\n--- log ---\n{}", d.log()));
    assert!(
        text.starts_with("NO "),
        "{name} of {len} bytes: expected NO, got {text:?}"
    );
    let found = || {
        d.log()
            .lines()
            .any(|l| l.contains(name) && l.contains(&limit.to_string()))
    };
    let start = Instant::now();
    while !found() && start.elapsed() < Duration::from_secs(3) {
        sleep(Duration::from_millis(20));
    }
    assert!(
        found(),
        "no log line names {name:?} and the limit {limit}\n--- log ---\n{}",
        d.log()
    );
}

#[test]
fn password_of_1025_bytes_is_refused_and_logged() {
    let d = start(&[]);
    check_oversize(&d, 1, "password", 1025, 1024);
    assert_healthy(&d);
    d.finish(&secrets());
}

#[test]
fn every_field_over_1024_bytes_is_refused_and_logged() {
    let d = start(&[]);
    check_oversize(&d, 0, "login", 1025, 1024);
    check_oversize(&d, 2, "service", 1025, 1024);
    check_oversize(&d, 3, "realm", 1025, 1024);
    check_oversize(&d, 4, "client address", 1025, 1024);
    assert_healthy(&d);
    d.finish(&secrets());
}

#[test]
fn max_field_len_option_lowers_the_limit() {
    let d = start(&["--max-field-len", "300"]);
    // 300 bytes are still fine (the user simply does not exist).
    let login300 = "u".repeat(300);
    expect_reply(&d, &login300, SUSER_PW, "NO Invalid username");
    check_oversize(&d, 0, "login", 301, 300);
    check_oversize(&d, 2, "service", 301, 300);
    // The 1024-byte password now exceeds the limit as well.
    let got = auth(&d.socket(), "long", &max_field_pw(), "imap", "").expect("a reply");
    assert!(got.starts_with("NO "), "{got:?}");
    assert_healthy(&d);
    d.finish(&secrets());
}

#[test]
fn length_claim_of_65535_without_data_is_answered_at_once() {
    let d = start(&[]);
    for prefix in [
        &[0xffu8, 0xff][..],
        &[0x00, 0x05, b's', b'u', b's', b'e', b'r', 0xff, 0xff],
    ] {
        let r = exchange(&d.socket(), prefix, &quick());
        let text = r
            .text()
            .unwrap_or_else(|| panic!("no reply to {prefix:02x?}: {r:?}\n{}", d.log()));
        assert!(text.starts_with("NO"), "{prefix:02x?}: {text:?}");
        assert!(
            r.elapsed < Duration::from_secs(1),
            "{prefix:02x?}: reply took {:?}",
            r.elapsed
        );
    }
    assert_healthy(&d);
    d.finish(&secrets());
}

// ---------------------------------------------------------------------------------------------
// NUL bytes
// ---------------------------------------------------------------------------------------------

#[test]
fn nul_inside_password_is_refused() {
    let d = start(&[]);
    let r = exchange(
        &d.socket(),
        &full_request(b"suser", b"Sha-512-pw1\0junk"),
        &quick(),
    );
    let text = r.text().expect("a reply");
    assert!(
        text.starts_with("NO"),
        "password with a NUL byte must not authenticate (upstream cuts at NUL), got {text:?}"
    );
    // NUL at the very end (C-style terminator sent by a sloppy client) is refused as well.
    let r = exchange(
        &d.socket(),
        &full_request(b"suser", b"Sha-512-pw1\0"),
        &quick(),
    );
    assert!(r.text().expect("a reply").starts_with("NO"));
    d.finish(&secrets());
}

#[test]
fn nul_inside_login_is_refused() {
    let d = start(&[]);
    let r = exchange(
        &d.socket(),
        &full_request(b"suser\0junk", SUSER_PW.as_bytes()),
        &quick(),
    );
    let text = r.text().expect("a reply");
    assert!(text.starts_with("NO"), "login with NUL: {text:?}");
    d.finish(&secrets());
}

// ---------------------------------------------------------------------------------------------
// Truncated, slow, stalled and idle clients
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_requests_get_no_reply_and_daemon_stays_healthy() {
    let d = start(&[]);
    let full = request(&[b"suser", SUSER_PW.as_bytes(), b"imap", b"example.org"]);
    // login "suser": 0..7, password: 7..20, service: 20..26, realm: 26..39
    let mid_password = 14;
    let mid_realm = full.len() - 5;
    for cut in [0usize, 1, 2, 5, 10, mid_password, mid_realm, full.len() - 1] {
        // Half-close after the prefix: the server must close without replying.
        let r = exchange(
            &d.socket(),
            &full[..cut],
            &ExchangeOpts {
                half_close: true,
                ..quick()
            },
        );
        assert!(
            r.reply.is_none() && r.received.is_empty(),
            "cut at {cut} (half-close): got bytes {:02x?}",
            r.received
        );
        assert!(r.closed, "cut at {cut}: server did not close: {r:?}");
        // Full close after the prefix.
        let mut s = connect(&d.socket(), Duration::from_secs(5));
        s.write_all(&full[..cut]).unwrap();
        drop(s);
    }
    sleep(Duration::from_millis(100));
    assert_healthy(&d);
    d.finish(&secrets());
}

#[test]
fn slow_client_one_byte_every_20ms_is_ok() {
    let d = start(&[]);
    let r = exchange(
        &d.socket(),
        &full_request(b"suser", SUSER_PW.as_bytes()),
        &ExchangeOpts {
            chunk: 1,
            delay: Duration::from_millis(20),
            ..ExchangeOpts::default()
        },
    );
    assert_eq!(r.text().as_deref(), Some("OK"), "{r:?}\n{}", d.log());
    d.finish(&secrets());
}

#[test]
fn stalled_client_is_dropped_after_timeout() {
    let d = start(&["--timeout", "1"]);
    let full = full_request(b"suser", SUSER_PW.as_bytes());
    let r = exchange(&d.socket(), &full[..10], &quick());
    assert!(r.reply.is_none(), "stalled client got a reply: {r:?}");
    assert!(
        r.closed && !r.timed_out,
        "server did not drop the stalled connection within 5 s: {r:?}"
    );
    assert!(
        r.elapsed >= Duration::from_millis(500) && r.elapsed <= Duration::from_millis(2500),
        "stalled connection dropped after {:?} (expected about 1 s)",
        r.elapsed
    );
    assert_healthy(&d);
    d.finish(&secrets());
}

#[test]
fn post_reply_drain_is_bounded_by_timeout() {
    let d = start(&["--timeout", "1"]);
    let mut s = connect(&d.socket(), Duration::from_secs(5));
    let r = exchange_on(
        &mut s,
        &full_request(b"suser", SUSER_PW.as_bytes()),
        &quick(),
    );
    assert_eq!(r.text().as_deref(), Some("OK"));
    assert!(r.closed, "no EOF after the reply: {r:?}");
    // The client never closes; after the drain deadline the server must have closed fully,
    // so writes fail (EPIPE) within a few seconds.
    let start = Instant::now();
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(5) {
        if s.write_all(b"xx").is_err() {
            closed = true;
            break;
        }
        sleep(Duration::from_millis(50));
    }
    assert!(closed, "server still draining after 5 s with --timeout 1");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "server stopped draining right after the reply ({:?})",
        start.elapsed()
    );
    d.finish(&secrets());
}

#[test]
fn idle_connections_do_not_delay_a_real_request() {
    let d = start(&[]);
    let full = full_request(b"suser", SUSER_PW.as_bytes());
    let mut idle: Vec<UnixStream> = Vec::new();
    for i in 0..20 {
        let mut s = connect(&d.socket(), Duration::from_secs(5));
        if i % 2 == 1 {
            s.write_all(&full[..5]).unwrap(); // partial request, then silence
        }
        idle.push(s);
    }
    let r = exchange(&d.socket(), &full, &quick());
    assert_eq!(r.text().as_deref(), Some("OK"), "{r:?}\n{}", d.log());
    assert!(
        r.elapsed < Duration::from_secs(1),
        "reply took {:?} with 20 idle connections",
        r.elapsed
    );
    drop(idle);
    d.finish(&secrets());
}

// ---------------------------------------------------------------------------------------------
// Connection life cycle
// ---------------------------------------------------------------------------------------------

#[test]
fn pipelined_second_request_is_not_answered_and_server_drains() {
    let d = start(&[]);
    let mut bytes = full_request(b"suser", SUSER_PW.as_bytes());
    bytes.extend(full_request(b"suser", WRONG_PW.as_bytes()));
    let mut s = connect(&d.socket(), Duration::from_secs(5));
    let r = exchange_on(&mut s, &bytes, &quick());
    assert_eq!(r.text().as_deref(), Some("OK"), "{r:?}");
    assert!(
        r.extra.is_empty(),
        "bytes after the reply: {:02x?}",
        r.extra
    );
    assert!(
        r.closed && !r.timed_out,
        "server did not half-close after the reply: {r:?}"
    );
    // The server still reads (drains) what we send: writes keep succeeding for a while.
    for _ in 0..3 {
        s.write_all(&full_request(b"suser", WRONG_PW.as_bytes()))
            .expect("server stopped reading right after the reply");
        sleep(Duration::from_millis(50));
    }
    drop(s);
    sleep(Duration::from_millis(200));
    assert!(
        !d.log().contains("reason=Incorrect password"),
        "a pipelined request was processed\n--- log ---\n{}",
        d.log()
    );
    d.finish(&secrets());
}

// ---------------------------------------------------------------------------------------------
// Signals, pid file, run directory
// ---------------------------------------------------------------------------------------------

#[test]
fn sigterm_exits_0_and_removes_socket_and_pid_file() {
    let mut d = start(&[]);
    let sock = d.socket();
    let pidf = d.pid_file();
    assert!(pidf.exists(), "no pid file in foreground mode");
    expect_reply(&d, "suser", SUSER_PW, "OK");
    let st = d.terminate();
    assert_eq!(st.code(), Some(0), "exit status {st:?}\n{}", d.log());
    assert!(!sock.exists(), "mux left behind");
    assert!(!pidf.exists(), "saslauthd.pid left behind");
}

#[test]
fn sigint_also_exits_0_and_cleans_up() {
    let mut d = start(&[]);
    d.signal(libc::SIGINT);
    let st = d
        .wait_exit(DEFAULT_TIMEOUT)
        .unwrap_or_else(|| panic!("no exit after SIGINT\n{}", d.log()));
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(!d.socket().exists());
    assert!(!d.pid_file().exists());
}

#[test]
fn pid_file_holds_the_daemon_pid() {
    let d = start(&[]);
    let content = fs::read_to_string(d.pid_file()).expect("read saslauthd.pid");
    assert_eq!(content, format!("{}\n", d.pid()));
    let mode = fs::metadata(d.pid_file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "pid file mode {mode:o}");
    d.finish(&secrets());
}

#[test]
fn socket_is_world_accessible() {
    let d = start(&[]);
    let md = fs::symlink_metadata(d.socket()).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o777);
    d.finish(&secrets());
}

#[test]
fn second_instance_on_same_run_dir_exits_2() {
    let d = start(&[]);
    let run = d.run_dir().to_str().unwrap().to_string();
    let second = run_in_namespace(
        &ours(),
        &["-a", "shadow", "-m", &run, "-d"],
        DEFAULT_TIMEOUT,
    );
    assert_eq!(
        second.status.and_then(|s| s.code()),
        Some(2),
        "second instance: {:?}\n{}",
        second.status,
        second.output()
    );
    assert!(d.running());
    assert_eq!(
        fs::read_to_string(d.pid_file()).ok(),
        Some(format!("{}\n", d.pid())),
        "the second instance touched the pid file"
    );
    assert_healthy(&d);
    d.finish(&secrets());
}

// ---------------------------------------------------------------------------------------------
// -r (realm)
// ---------------------------------------------------------------------------------------------

#[test]
fn realm_option_appends_realm_to_login() {
    let d = start(&["-r"]);
    let got = auth(&d.socket(), "user", REALM_PW, "imap", "example.org");
    assert_eq!(got.as_deref(), Some("OK"), "{}", d.log());
    // Empty realm: login used as is.
    let got = auth(&d.socket(), "user@example.org", REALM_PW, "imap", "");
    assert_eq!(got.as_deref(), Some("OK"), "{}", d.log());
    let got = auth(&d.socket(), "suser", SUSER_PW, "imap", "");
    assert_eq!(got.as_deref(), Some("OK"), "{}", d.log());
    d.finish(&secrets());
}

#[test]
fn without_realm_option_realm_is_ignored() {
    let d = start(&[]);
    let got = auth(&d.socket(), "user", REALM_PW, "imap", "example.org");
    assert_eq!(got.as_deref(), Some("NO Invalid username"));
    let got = auth(&d.socket(), "suser", SUSER_PW, "imap", "example.org");
    assert_eq!(got.as_deref(), Some("OK"));
    d.finish(&secrets());
}

// ---------------------------------------------------------------------------------------------
// Daemon mode and start-up errors
// ---------------------------------------------------------------------------------------------

#[test]
fn daemon_mode_returns_after_socket_listens() {
    let d = Daemon::try_start_with(
        &ours(),
        &["-a", "shadow"],
        Options {
            foreground: false,
            wait_ready: false,
            ..Options::default()
        },
    )
    .unwrap_or_else(|f| {
        panic!(
            "daemon mode start failed: {} {:?}\n{}",
            f.reason, f.status, f.log
        )
    });
    assert_eq!(d.starter_status().and_then(|s| s.code()), Some(0));
    // No retry: the socket must already listen when the starter has exited.
    let conn = UnixStream::connect(d.socket());
    assert!(
        conn.is_ok(),
        "connect right after the starter returned failed: {conn:?}\n{}",
        d.log()
    );
    drop(conn);
    let content = fs::read_to_string(d.pid_file()).expect("pid file");
    assert_eq!(content, format!("{}\n", d.pid()));
    assert!(pid_alive(d.pid()));
    // Re-executed through /proc/self/exe, yet found by `pidof saslauthd`.
    let comm = fs::read_to_string(format!("/proc/{}/comm", d.pid())).expect("comm");
    assert_eq!(comm, "saslauthd\n");
    expect_reply(&d, "suser", SUSER_PW, "OK");
    let sock = d.socket();
    let pidf = d.pid_file();
    let mut d = d;
    let st = d.terminate();
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(!sock.exists(), "mux left behind");
    assert!(!pidf.exists(), "pid file left behind");
}

#[test]
fn daemon_mode_with_impossible_run_dir_fails() {
    let tmp = TempDir::new("impossible");
    let file = tmp.join("file");
    fs::write(&file, b"not a directory").unwrap();
    let run = file.join("run");
    let r = run_in_namespace(
        &ours(),
        &["-a", "shadow", "-m", run.to_str().unwrap()],
        DEFAULT_TIMEOUT,
    );
    let code = r.status.and_then(|s| s.code());
    assert!(
        matches!(code, Some(c) if c != 0),
        "daemon mode with -m under a regular file: status {:?}\n{}",
        r.status,
        r.output()
    );
}

/// Runs our saslauthd with `args` (no namespace; these fail before touching any user data),
/// with a scratch working directory.
fn run_ours_plain(args: &[&str]) -> (CmdResult, TempDir) {
    let tmp = TempDir::new("startup");
    let mut c = Command::new(ours());
    c.args(args).current_dir(tmp.path());
    (run_command(c, None, DEFAULT_TIMEOUT), tmp)
}

#[test]
fn unknown_mechanism_exits_1_with_message() {
    let tmp = TempDir::new("nosuchmech");
    let run = tmp.join("run");
    let (r, _t) = run_ours_plain(&["-a", "nosuchmech", "-m", run.to_str().unwrap(), "-d"]);
    assert_eq!(r.code(), 1, "{}", r.output());
    assert!(
        r.output().contains("nosuchmech"),
        "message does not name the mechanism: {}",
        r.output()
    );
}

#[test]
fn relative_run_dir_exits_1() {
    let (r, t) = run_ours_plain(&["-a", "shadow", "-m", "relative/path", "-d"]);
    assert_eq!(r.code(), 1, "{}", r.output());
    assert!(!t.join("relative").exists(), "created a relative run dir");
}

#[test]
fn version_flag_prints_version_and_mechanisms() {
    let (r, _t) = run_ours_plain(&["-v"]);
    assert_eq!(r.code(), 0, "{}", r.output());
    let out = r.output();
    assert!(
        out.contains(&format!("saslauthd {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(out.contains("authentication mechanisms:"), "{out}");
    let mechs = out
        .lines()
        .find(|l| l.starts_with("authentication mechanisms:"))
        .unwrap();
    assert!(mechs.split_whitespace().any(|m| m == "shadow"), "{out}");
    // Debian's set (`sasldb getpwent kerberos5 pam rimap shadow ldap`), in its order.
    let upstream = run_plain(Path::new(UPSTREAM_SASLAUTHD), &["-v"], None).output();
    let upstream: Vec<&str> = upstream
        .lines()
        .find_map(|l| l.strip_prefix("authentication mechanisms:"))
        .unwrap_or_else(|| panic!("Debian's -v: {upstream}"))
        .split_whitespace()
        .collect();
    let ours: Vec<&str> = mechs
        .trim_start_matches("authentication mechanisms:")
        .split_whitespace()
        .collect();
    for name in ["sasldb", "getpwent", "kerberos5", "pam", "rimap", "shadow"] {
        assert!(ours.contains(&name), "{name} missing: {out}");
    }
    let in_upstream_order: Vec<&str> = upstream
        .iter()
        .copied()
        .filter(|m| ours.contains(m))
        .collect();
    assert_eq!(ours, in_upstream_order, "Debian's list: {upstream:?}");
}

// ---------------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------------

#[test]
fn failure_and_success_lines_are_logged_without_passwords() {
    let d = start(&[]);
    let s = d.socket();
    assert_eq!(
        auth(&s, "suser", WRONG_PW, "imap", "").as_deref(),
        Some("NO Incorrect password")
    );
    assert_eq!(
        auth(&s, "nosuchuser", ANY_PW, "smtp", "example.org").as_deref(),
        Some("NO Invalid username")
    );
    assert_eq!(
        auth(&s, "yuser", YUSER_PW, "imap", "").as_deref(),
        Some("OK")
    );
    assert_eq!(
        auth(&s, "special", SPECIAL_PW, "imap", "").as_deref(),
        Some("OK")
    );
    for line in [
        "auth failure: [user=suser] [service=imap] [realm=] [mech=shadow] [reason=Incorrect password]",
        "auth failure: [user=nosuchuser] [service=smtp] [realm=example.org] [mech=shadow] [reason=Invalid username]",
        "auth success: [user=yuser] [service=imap] [realm=] [mech=shadow]",
    ] {
        assert!(
            d.wait_for_log(line, Duration::from_secs(3)),
            "missing {line:?}\n--- log ---\n{}",
            d.log()
        );
    }
    let prefix = format!("saslauthd[{}] :", d.pid());
    assert!(
        d.log()
            .lines()
            .filter(|l| l.contains("auth failure:"))
            .all(|l| l.starts_with(&prefix)),
        "-d log lines should look like `{prefix}<message>`\n{}",
        d.log()
    );
    d.finish(&secrets()); // checks every password and stored hash against the whole log
}

// ---------------------------------------------------------------------------------------------
// Our testsaslauthd against our daemon
// ---------------------------------------------------------------------------------------------

fn tsa(args: &[&str], stdin: Option<&[u8]>) -> CmdResult {
    run_plain(&testsaslauthd(), args, stdin)
}

fn sock_str(d: &Daemon) -> String {
    d.socket().to_str().unwrap().to_string()
}

/// `testsaslauthd -u user -p pass` against a fresh daemon prints `stdout` and exits `code`;
/// then the daemon stops cleanly ([`Daemon::finish`]).
fn tsa_once(user: &str, pass: &str, stdout: &str, code: i32) {
    let d = start(&[]);
    let r = tsa(&["-u", user, "-p", pass, "-f", &sock_str(&d)], None);
    assert_eq!(r.stdout_str(), stdout, "stderr: {}", r.stderr_str());
    assert_eq!(r.code(), code);
    d.finish(&secrets());
}

#[test]
fn testsaslauthd_ok() {
    tsa_once("suser", SUSER_PW, OK_LINE, 0);
}

#[test]
fn testsaslauthd_no() {
    tsa_once("suser", WRONG_PW, NO_LINE, 255);
}

#[test]
fn testsaslauthd_repeat_three_times() {
    let d = start(&[]);
    let r = tsa(
        &[
            "-u",
            "suser",
            "-p",
            SUSER_PW,
            "-f",
            &sock_str(&d),
            "-R",
            "3",
        ],
        None,
    );
    assert_eq!(
        r.stdout_str(),
        "0: OK \"Success.\"\n1: OK \"Success.\"\n2: OK \"Success.\"\n",
        "stderr: {}",
        r.stderr_str()
    );
    assert_eq!(r.code(), 0);
    d.finish(&secrets());
}

#[test]
fn testsaslauthd_missing_socket() {
    let tmp = TempDir::new("nosock");
    let sock = tmp.join("nonexistent-socket");
    let r = tsa(
        &["-u", "suser", "-p", SUSER_PW, "-f", sock.to_str().unwrap()],
        None,
    );
    assert_eq!(r.stdout_str(), "0: ", "stderr: {}", r.stderr_str());
    assert_eq!(r.code(), 255);
}

#[test]
fn testsaslauthd_without_user_is_usage_error() {
    let r = tsa(&["-p", SUSER_PW, "-f", "/nonexistent/mux"], None);
    assert_eq!(r.code(), 1, "{}", r.output());
}

#[test]
fn testsaslauthd_show_reply() {
    let d = start(&[]);
    let r = tsa(
        &[
            "-u",
            "suser",
            "-p",
            WRONG_PW,
            "-f",
            &sock_str(&d),
            "--show-reply",
        ],
        None,
    );
    assert_eq!(
        r.stdout_str(),
        "0: NO \"authentication failed\"\n0: reply \"NO Incorrect password\"\n",
        "stderr: {}",
        r.stderr_str()
    );
    assert_eq!(r.code(), 255);
    let r = tsa(
        &[
            "-u",
            "suser",
            "-p",
            SUSER_PW,
            "-f",
            &sock_str(&d),
            "--show-reply",
        ],
        None,
    );
    assert_eq!(r.stdout_str(), format!("{OK_LINE}0: reply \"OK\"\n"));
    assert_eq!(r.code(), 0);
    d.finish(&secrets());
}

#[test]
fn testsaslauthd_reads_password_from_stdin() {
    let d = start(&[]);
    let stdin = format!("{SUSER_PW}\n");
    let r = tsa(
        &["-u", "suser", "-f", &sock_str(&d)],
        Some(stdin.as_bytes()),
    );
    assert!(
        r.stdout_str().ends_with(OK_LINE),
        "stdout {:?} stderr {:?}",
        r.stdout_str(),
        r.stderr_str()
    );
    assert_eq!(r.code(), 0);
    let stdin = format!("{WRONG_PW}\n");
    let r = tsa(
        &["-u", "suser", "-f", &sock_str(&d)],
        Some(stdin.as_bytes()),
    );
    assert!(r.stdout_str().ends_with(NO_LINE), "{:?}", r.stdout_str());
    assert_eq!(r.code(), 255);
    d.finish(&secrets());
}

#[test]
fn testsaslauthd_passes_service_realm_and_client_address() {
    let d = start(&[]);
    let r = tsa(
        &[
            "-u",
            "suser",
            "-p",
            WRONG_PW,
            "-s",
            "smtp",
            "-r",
            "example.org",
            "-a",
            "127.0.0.1;4711",
            "-f",
            &sock_str(&d),
        ],
        None,
    );
    assert_eq!(r.stdout_str(), NO_LINE, "stderr: {}", r.stderr_str());
    let line = "auth failure: [user=suser] [service=smtp] [realm=example.org] \
                [remote=127.0.0.1;4711] [mech=shadow] [reason=Incorrect password]";
    assert!(
        d.wait_for_log(line, Duration::from_secs(3)),
        "missing {line:?}\n--- log ---\n{}",
        d.log()
    );
    d.finish(&secrets());
}

#[test]
fn testsaslauthd_special_password() {
    tsa_once("special", SPECIAL_PW, OK_LINE, 0);
}

// ---------------------------------------------------------------------------------------------
// Shutdown details, connection cap, compatibility flags
// ---------------------------------------------------------------------------------------------

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let mut d = start(&[]);
    let full = full_request(b"suser", SUSER_PW.as_bytes());
    let mut s = connect(&d.socket(), Duration::from_secs(5));
    s.write_all(&full[..10]).unwrap();
    sleep(Duration::from_millis(200)); // accepted and being read
    d.signal(libc::SIGTERM);
    sleep(Duration::from_millis(200));
    let r = exchange_on(&mut s, &full[10..], &quick());
    assert_eq!(
        r.text().as_deref(),
        Some("OK"),
        "in-flight request lost at SIGTERM: {r:?}\n--- log ---\n{}",
        d.log()
    );
    drop(s);
    let st = d
        .wait_exit(DEFAULT_TIMEOUT)
        .unwrap_or_else(|| panic!("no exit after SIGTERM\n{}", d.log()));
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(!d.socket().exists());
    assert!(!d.pid_file().exists());
}

#[test]
fn sigterm_cuts_a_post_reply_drain_short() {
    let mut d = start(&["--timeout", "30"]);
    let mut s = connect(&d.socket(), Duration::from_secs(5));
    let r = exchange_on(
        &mut s,
        &full_request(b"suser", SUSER_PW.as_bytes()),
        &quick(),
    );
    assert_eq!(r.text().as_deref(), Some("OK"));
    // The client keeps the connection open; the drain would last up to 30 s.
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(5)).unwrap_or_else(|| {
        panic!(
            "daemon waited for a draining client after SIGTERM\n{}",
            d.log()
        )
    });
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(s);
}

#[test]
fn sigterm_with_an_idle_client_exits_within_the_timeout() {
    let mut d = start(&["--timeout", "1"]);
    let _idle = connect(&d.socket(), Duration::from_secs(5));
    sleep(Duration::from_millis(100));
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    let st = d
        .wait_exit(Duration::from_secs(8))
        .unwrap_or_else(|| panic!("daemon hung on an idle client at SIGTERM\n{}", d.log()));
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "exit took {:?} with --timeout 1",
        t.elapsed()
    );
}

/// Opens a connection that occupies one server slot: retries while the server answers
/// `NO server busy` (slots of just-closed connections, e.g. the harness's readiness probe,
/// are released asynchronously).
fn hold_slot(socket: &Path) -> UnixStream {
    let start = Instant::now();
    loop {
        let mut s = connect(socket, Duration::from_secs(5));
        s.set_read_timeout(Some(Duration::from_millis(150)))
            .unwrap();
        let mut buf = [0u8; 64];
        match std::io::Read::read(&mut s, &mut buf) {
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return s;
            }
            _ => {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "could not occupy a slot"
                );
                sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn connection_cap_answers_server_busy() {
    let d = start(&["--max-connections", "2"]);
    let idle: Vec<UnixStream> = (0..2).map(|_| hold_slot(&d.socket())).collect();
    let r = exchange(
        &d.socket(),
        &full_request(b"suser", SUSER_PW.as_bytes()),
        &quick(),
    );
    assert_eq!(
        r.text().as_deref(),
        Some("NO server busy"),
        "{r:?}\n--- log ---\n{}",
        d.log()
    );
    assert!(
        r.elapsed < Duration::from_secs(1),
        "busy reply took {:?}",
        r.elapsed
    );
    drop(idle);
    // Slots come back once the idle clients are gone.
    let start_t = Instant::now();
    loop {
        let got = auth(&d.socket(), "suser", SUSER_PW, "imap", "");
        if got.as_deref() == Some("OK") {
            break;
        }
        assert!(
            start_t.elapsed() < Duration::from_secs(3),
            "slots not released: {got:?}\n{}",
            d.log()
        );
        sleep(Duration::from_millis(50));
    }
    d.finish(&secrets());
}

#[test]
fn daemon_mode_second_instance_exits_2() {
    let first = Daemon::start_with(
        &ours(),
        &["-a", "shadow"],
        Options {
            foreground: false,
            ..Options::default()
        },
    );
    let run = first.run_dir().to_str().unwrap().to_string();
    let second = run_in_namespace(&ours(), &["-a", "shadow", "-m", &run], DEFAULT_TIMEOUT);
    assert_refused_as_second_instance(&second, first.pid(), "daemon-mode second instance");
    assert_eq!(
        fs::read_to_string(first.pid_file()).ok(),
        Some(format!("{}\n", first.pid()))
    );
    expect_reply(&first, "suser", SUSER_PW, "OK");
    first.finish(&secrets());
}

/// `--replace` (package upgrades, seamless restarts): a second daemon takes the run
/// directory over while a client keeps asking; no request ever finds no socket or gets
/// anything but its answer, the old daemon exits 0, and only the new one's files remain.
#[test]
fn replace_takes_over_with_no_moment_without_a_socket() {
    let daemon_mode = || Options {
        foreground: false,
        ..Options::default()
    };
    let mut first = Daemon::start_with(&ours(), &["-a", "shadow"], daemon_mode());
    let socket = first.socket();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asker = {
        let stop = std::sync::Arc::clone(&stop);
        let socket = socket.clone();
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                answers.push(auth(&socket, "suser", SUSER_PW, "imap", ""));
            }
            answers
        })
    };
    sleep(Duration::from_millis(200));
    let second = Daemon::start_with(
        &ours(),
        &["-a", "shadow", "--replace"],
        Options {
            run_dir: Some(first.run_dir().to_path_buf()),
            ..daemon_mode()
        },
    );
    let old_status = first.wait_exit(DEFAULT_TIMEOUT);
    sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = asker.join().expect("asking thread");
    assert_ne!(second.pid(), first.pid());
    assert!(
        old_status.is_some_and(|s| s.success()),
        "the replaced daemon: {old_status:?}\n{}",
        first.log()
    );
    let failed: Vec<_> = answers
        .iter()
        .filter(|a| a.as_deref() != Some("OK"))
        .collect();
    assert!(
        answers.len() > 5 && failed.is_empty(),
        "{} of {} requests across the handover failed: {failed:?}\n--- old ---\n{}\n--- new ---\n{}",
        failed.len(),
        answers.len(),
        first.log(),
        second.log()
    );
    let mut names: Vec<_> = fs::read_dir(second.run_dir())
        .expect("run dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["mux", "saslauthd.pid"]);
    assert_eq!(
        fs::read_to_string(second.pid_file()).ok(),
        Some(format!("{}\n", second.pid()))
    );
    second.finish(&secrets());
    assert!(
        !socket.exists(),
        "the new daemon removes its socket when it stops"
    );
}

#[test]
fn upstream_compatible_flags_are_accepted() {
    // -n, -l, -V and an upper-case mechanism name, as found in existing init scripts.
    let d = Daemon::start(&ours(), &["-a", "SHADOW", "-n", "5", "-l", "-V"]);
    expect_reply(&d, "suser", SUSER_PW, "OK");
    expect_reply(&d, "yuser", YUSER_PW, "OK");
    d.finish(&secrets());
}

#[test]
fn foreground_f_logs_failures_to_stderr_without_dev_log() {
    assert!(
        !Path::new("/dev/log").exists(),
        "this test assumes no syslog socket at /dev/log"
    );
    let d = Daemon::start_with(
        &ours(),
        &["-a", "shadow", "-f"],
        Options {
            dash_d: false,
            ..Options::default()
        },
    );
    assert_eq!(
        auth(&d.socket(), "suser", WRONG_PW, "imap", "").as_deref(),
        Some("NO Incorrect password")
    );
    let line = "auth failure: [user=suser] [service=imap] [realm=] [mech=shadow] \
                [reason=Incorrect password]";
    assert!(
        d.wait_for_log(line, Duration::from_secs(3)),
        "missing {line:?}\n{}",
        d.log()
    );
    assert!(
        fs::read_to_string(d.pid_file()).ok() == Some(format!("{}\n", d.pid())),
        "pid file in -f mode"
    );
    d.finish(&secrets());
}

#[test]
fn sighup_does_not_stop_the_daemon() {
    // Debian's init script sends HUP for "reload"; upstream ignores it.
    let d = start(&[]);
    d.signal(libc::SIGHUP);
    sleep(Duration::from_millis(300));
    assert_healthy(&d);
    d.finish(&secrets());
}

#[test]
fn client_closing_before_the_reply_is_harmless() {
    let d = start(&[]);
    for user in ["yuser", "suser"] {
        let pw = if user == "yuser" { YUSER_PW } else { SUSER_PW };
        for _ in 0..10 {
            let mut s = connect(&d.socket(), Duration::from_secs(5));
            s.write_all(&full_request(user.as_bytes(), pw.as_bytes()))
                .unwrap();
            drop(s); // gone before the reply is written (EPIPE on the server side)
        }
    }
    sleep(Duration::from_millis(300));
    assert_healthy(&d);
    d.finish(&secrets());
}

#[test]
fn control_characters_in_login_cannot_forge_log_lines() {
    let d = start(&[]);
    let forged = "saslauthd[1] :auth success: [user=root] [service=imap] [realm=] [mech=shadow]";
    let login = format!("x\n{forged}");
    assert_eq!(
        auth(&d.socket(), &login, WRONG_PW, "imap", "").as_deref(),
        Some("NO Invalid username")
    );
    assert!(d.wait_for_log("reason=Invalid username", Duration::from_secs(3)));
    assert!(
        !d.log().lines().any(|l| l.starts_with(forged)),
        "a newline in the login started a new log line\n{}",
        d.log()
    );
    d.finish(&secrets());
}

/// `-n` beyond what the open-file limit (and memory) allow is lowered, with a warning
/// that names `-n`, and the daemon serves with the lowered pool; the connection cap is
/// left alone (the warning is not about --max-connections).
#[test]
fn dash_n_beyond_the_limits_is_capped_with_a_warning_naming_it() {
    let tmp = TempDir::new("dash-n");
    let d = start_ours_with_nofile(
        "1024:1024",
        &["-a", "shadow", "-n", "20000", "--max-connections", "100"],
        &tmp,
    );
    let log = d.log();
    assert!(log.contains("-n 20000: "), "no warning naming -n:\n{log}");
    let pool = number_after(&log, "verification pool: ")
        .unwrap_or_else(|| panic!("no pool size in the log:\n{log}"));
    assert!((1..512).contains(&pool), "pool {pool}\n{log}");
    assert!(
        log.contains(&format!("using -n {pool}")),
        "the warning should give the pool used:\n{log}"
    );
    assert!(!log.contains("--max-connections"), "{log}");
    expect_reply(&d, "suser", SUSER_PW, "OK");
    d.finish(&secrets());
}
