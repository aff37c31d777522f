//! The Dovecot authentication protocol front end (`--dovecot-socket`): our daemon against
//! the private Dovecot auth server (tests/common/dovecot.rs) with raw transcripts, the same
//! verdicts through the mux and the Dovecot sockets, `testsaslauthd --dovecot` against
//! both servers, TCP on 127.0.0.1 and ::1, and the connection lifecycle (no idle timeout
//! once handshaken, deadlines before, caps). Needs root (the harness panics otherwise);
//! loopback only.
//!
//! Where we deliberately differ from Dovecot 2.3.19 (each difference is asserted below,
//! and listed in the README, "Postfix without libsasl"):
//!
//! 1. `OK` carries no trailing empty field (Dovecot's shadow passdb sends
//!    `OK\t<id>\tuser=<name>\t`; clients skip empty fields).
//! 2. Expired accounts and expired passwords are refused (`FAIL`); Dovecot's shadow passdb
//!    accepts them.
//! 3. A locked account's `FAIL` has no `code=user_disabled`: no credential failure tells
//!    the client anything about the account (Postfix and Exim ignore `code=` anyway).
//! 4. A `CONT` for a request being verified gets `FAIL … Unexpected continuation` and the
//!    request is forgotten; Dovecot also sends the verification's verdict later.
//! 5. `user=` is the login as the client sent it (without surrounding whitespace, like
//!    libsasl), not the result of Dovecot's `auth_username_format`.
//! 6. No fixed failure delay (Dovecot's `auth_failure_delay`, 2 s): our throttle delays
//!    repeated failures per login and per client address (`rip=`) instead.
//! 7. Temporary failures (queue full, verification timed out, a backend outage) are
//!    `FAIL … code=temp_fail` with `user=`; at most 64 requests per connection.
#![forbid(unsafe_code)]

mod common;
#[path = "common/dovecot.rs"]
mod dovecot;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::dovecot_client::*;
use common::fixtures::*;
use common::*;
use dovecot::DovecotAuth;
use saslauthd_rs::protocol::dovecot::Endpoint;

/// Our daemon (`-a shadow`, throttling off so transcripts are not timed) with a Dovecot
/// socket in a temp dir of its own.
struct Ours {
    daemon: Daemon,
    socket: PathBuf,
    _dir: TempDir,
}

impl Ours {
    fn start(extra: &[&str]) -> Ours {
        Ours::start_mech(&["-a", "shadow"], extra)
    }

    fn start_mech(mechanism: &[&str], extra: &[&str]) -> Ours {
        let dir = TempDir::new("dovecot-sock");
        let socket = dir.join("auth");
        let mut args = mechanism.to_vec();
        args.extend(["--throttle-max", "0", "--dovecot-socket"]);
        let path = socket.to_str().expect("utf-8 path").to_string();
        args.push(&path);
        args.extend_from_slice(extra);
        let daemon = Daemon::start(&ours_bin("saslauthd"), &args);
        assert!(
            wait_for_socket(&socket),
            "no dovecot socket\n{}",
            daemon.log()
        );
        Ours {
            daemon,
            socket,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Unix(self.socket.clone())
    }
}

/// What a server did with a transcript: its lines (OK lines without a trailing empty
/// field, deliberate difference 1) and whether it closed.
fn run_script(endpoint: &Endpoint, hello: bool, script: &[&[u8]]) -> (Vec<String>, bool) {
    let mut client = AuthClient::connect(endpoint);
    if hello {
        client.send(&client_hello());
        client.handshake();
    }
    for part in script {
        client.send(part);
        sleep(Duration::from_millis(30));
    }
    let (lines, closed) = client.drain(Duration::from_millis(500));
    let lines = masked(&lines)
        .into_iter()
        .map(|l| {
            if l.starts_with("OK\t") {
                l.trim_end_matches('\t').to_string()
            } else {
                l
            }
        })
        .collect();
    (lines, closed)
}

/// Raw transcripts that must get the same replies from both servers.
fn differential_cases() -> Vec<(&'static str, bool, Vec<Vec<u8>>, bool)> {
    let line = |s: String| s.into_bytes();
    let yplain = plain("yuser", YUSER_PW);
    let long_line = format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tx={}\tresp={}\n",
        "a".repeat(16_300),
        plain("suser", SUSER_PW)
    );
    let too_long = format!("AUTH\t1\tPLAIN\tservice=smtp\tx={}\n", "a".repeat(17_000));
    // (what, hello first, lines, compare as an unordered set)
    vec![
        (
            "PLAIN, initial response, good",
            true,
            vec![line(format!(
                "AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=127.0.0.1\tresp={yplain}\n"
            ))],
            false,
        ),
        (
            "PLAIN, wrong password",
            true,
            vec![line(format!(
                "AUTH\t2\tPLAIN\tservice=smtp\tresp={}\n",
                plain("suser", "wrong-Sha-512-pw1")
            ))],
            false,
        ),
        (
            "PLAIN, unknown user",
            true,
            vec![line(format!(
                "AUTH\t3\tPLAIN\tservice=smtp\tresp={}\n",
                plain("nosuchuser", SUSER_PW)
            ))],
            false,
        ),
        (
            "PLAIN, no initial response",
            true,
            vec![
                line("AUTH\t4\tPLAIN\tservice=smtp\n".into()),
                line(format!("CONT\t4\t{}\n", plain("suser", SUSER_PW))),
            ],
            false,
        ),
        (
            "PLAIN, empty resp= from a 1.0 client",
            true,
            vec![
                line("AUTH\t5\tPLAIN\tservice=smtp\tresp=\n".into()),
                line(format!("CONT\t5\t{yplain}\n")),
            ],
            false,
        ),
        (
            "PLAIN, resp== is an empty response",
            true,
            vec![line("AUTH\t6\tPLAIN\tservice=smtp\tresp==\n".into())],
            false,
        ),
        (
            "LOGIN",
            true,
            vec![
                line("AUTH\t7\tLOGIN\tservice=smtp\n".into()),
                line(format!("CONT\t7\t{}\n", b64(b"suser"))),
                line(format!("CONT\t7\t{}\n", b64(SUSER_PW.as_bytes()))),
            ],
            false,
        ),
        (
            "LOGIN, username as initial response",
            true,
            vec![
                line(format!(
                    "AUTH\t8\tLOGIN\tservice=smtp\tresp={}\n",
                    b64(b"suser")
                )),
                line(format!("CONT\t8\t{}\n", b64(b"wrong-pw-1"))),
            ],
            false,
        ),
        (
            "special characters",
            true,
            vec![line(format!(
                "AUTH\t9\tPLAIN\tservice=smtp\tresp={}\n",
                plain("special", SPECIAL_PW)
            ))],
            false,
        ),
        (
            "interleaved LOGIN exchanges",
            true,
            vec![
                line("AUTH\t10\tLOGIN\tservice=smtp\nAUTH\t11\tLOGIN\tservice=smtp\n".into()),
                line(format!(
                    "CONT\t11\t{}\nCONT\t10\t{}\n",
                    b64(b"muser"),
                    b64(b"suser")
                )),
                line(format!(
                    "CONT\t10\t{}\nCONT\t11\t{}\n",
                    b64(SUSER_PW.as_bytes()),
                    b64(MUSER_PW.as_bytes())
                )),
            ],
            true,
        ),
        (
            "two AUTH lines in one write",
            true,
            vec![line(format!(
                "AUTH\t12\tPLAIN\tservice=smtp\tresp={}\nAUTH\t13\tPLAIN\tservice=smtp\tresp={}\n",
                plain("suser", SUSER_PW),
                plain("muser", "wrong-pw-1")
            ))],
            true,
        ),
        (
            "id 007 is 7",
            true,
            vec![line(format!(
                "AUTH\t007\tPLAIN\tservice=smtp\tresp={}\n",
                plain("suser", SUSER_PW)
            ))],
            false,
        ),
        (
            "CANCEL, then CONT for it",
            true,
            vec![
                line("AUTH\t14\tLOGIN\tservice=smtp\nCANCEL\t14\nCANCEL\t99\n".into()),
                line(format!("CONT\t14\t{}\n", b64(b"suser"))),
            ],
            false,
        ),
        (
            "CONT for an unknown id",
            true,
            vec![line("CONT\t15\tQQ==\n".into())],
            false,
        ),
        (
            "bad base64 in the initial response",
            true,
            vec![line(
                "AUTH\t16\tPLAIN\tservice=smtp\tresp=AHN1c2VyAFNoYS01MTItcHcx!\n".into(),
            )],
            false,
        ),
        (
            "bad base64 in a continued response",
            true,
            vec![
                line("AUTH\t17\tPLAIN\tservice=smtp\n".into()),
                line("CONT\t17\tQQ=\n".into()),
            ],
            false,
        ),
        (
            "base64 with whitespace",
            true,
            vec![
                line("AUTH\t18\tPLAIN\tservice=smtp\n".to_string()),
                line(format!("CONT\t18\t {} \n", plain("suser", SUSER_PW))),
            ],
            false,
        ),
        (
            "PLAIN authzid differs",
            true,
            vec![line(format!(
                "AUTH\t19\tPLAIN\tservice=smtp\tresp={}\n",
                b64(format!("muser\0suser\0{SUSER_PW}").as_bytes())
            ))],
            false,
        ),
        (
            "PLAIN, NUL in the password",
            true,
            vec![line(format!(
                "AUTH\t20\tPLAIN\tservice=smtp\tresp={}\n",
                b64(format!("\0suser\0{SUSER_PW}\0x").as_bytes())
            ))],
            false,
        ),
        (
            "PLAIN, one NUL",
            true,
            vec![line(format!(
                "AUTH\t21\tPLAIN\tservice=smtp\tresp={}\n",
                b64(b"suser\0x")
            ))],
            false,
        ),
        (
            "LOGIN, NUL in the username",
            true,
            vec![line(format!(
                "AUTH\t22\tLOGIN\tservice=smtp\tresp={}\n",
                b64(b"su\0ser")
            ))],
            false,
        ),
        (
            "LOGIN, escaped characters echoed",
            true,
            vec![
                line(format!(
                    "AUTH\t23\tLOGIN\tservice=smtp\tresp={}\n",
                    b64(b"cm\tp\x01y\r\nz")
                )),
                line(format!("CONT\t23\t{}\n", b64(b"wrong-pw-1"))),
            ],
            false,
        ),
        (
            "a 16,3xx-byte line is served",
            true,
            vec![line(long_line)],
            false,
        ),
        // Protocol errors: the connection closes without a reply.
        (
            "AUTH before the handshake",
            false,
            vec![line(format!(
                "AUTH\t1\tPLAIN\tservice=smtp\tresp={yplain}\n"
            ))],
            false,
        ),
        (
            "VERSION 2",
            false,
            vec![line("VERSION\t2\t0\nCPID\t1\n".into())],
            false,
        ),
        (
            "CPID 0",
            false,
            vec![line("VERSION\t1\t0\nCPID\t0\n".into())],
            false,
        ),
        (
            "no CPID",
            false,
            vec![line("VERSION\t1\t0\nAUTH\t1\tPLAIN\tservice=smtp\n".into())],
            false,
        ),
        (
            "unknown command",
            true,
            vec![line("HELLO\t1\n".into())],
            false,
        ),
        ("empty line", true, vec![line("\n".into())], false),
        (
            "unknown mechanism",
            true,
            vec![line("AUTH\t1\tCRAM-MD5\tservice=smtp\n".into())],
            false,
        ),
        (
            "no service",
            true,
            vec![line(format!("AUTH\t1\tPLAIN\tresp={yplain}\n"))],
            false,
        ),
        (
            "parameter after resp=",
            true,
            vec![line(format!(
                "AUTH\t1\tPLAIN\tservice=smtp\tresp={yplain}\trip=1.2.3.4\n"
            ))],
            false,
        ),
        (
            "id 0",
            true,
            vec![line("AUTH\t0\tPLAIN\tservice=smtp\n".into())],
            false,
        ),
        (
            "duplicate id",
            true,
            vec![line(
                "AUTH\t1\tLOGIN\tservice=smtp\nAUTH\t1\tLOGIN\tservice=smtp\n".into(),
            )],
            false,
        ),
        (
            "CONT without data",
            true,
            vec![line("AUTH\t1\tLOGIN\tservice=smtp\nCONT\t1\n".into())],
            false,
        ),
        (
            "CANCEL with a bad id",
            true,
            vec![line("CANCEL\tx\n".into())],
            false,
        ),
        ("a line over 16 KB", true, vec![line(too_long)], false),
    ]
}

#[test]
fn raw_transcripts_match_dovecot() {
    let reference = DovecotAuth::start("%u");
    let ours = Ours::start(&[]);
    let theirs = Endpoint::Unix(reference.socket().to_path_buf());
    // The handshake, byte for byte but for SPID, CUID and COOKIE.
    let (_, ours_hello) = AuthClient::start(&ours.endpoint());
    let (_, theirs_hello) = AuthClient::start(&theirs);
    assert_eq!(masked(&ours_hello), masked(&theirs_hello));
    assert_eq!(
        masked(&ours_hello),
        [
            "VERSION\t1\t2",
            "MECH\tPLAIN\tplaintext",
            "MECH\tLOGIN\tplaintext",
            "SPID\t*",
            "CUID\t*",
            "COOKIE\t*",
            "DONE"
        ]
    );
    let mut failures = Vec::new();
    let mut count = 0;
    for (what, hello, script, unordered) in differential_cases() {
        let script: Vec<&[u8]> = script.iter().map(Vec::as_slice).collect();
        let mut got = run_script(&ours.endpoint(), hello, &script);
        let mut want = run_script(&theirs, hello, &script);
        if unordered {
            got.0.sort();
            want.0.sort();
        }
        count += 1;
        if got != want {
            failures.push(format!(
                "  - {what}:\n      dovecot: {want:?}\n      ours:    {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} transcripts differ:\n{}\n--- our log ---\n{}\n--- dovecot log ---\n{}",
        failures.len(),
        failures.join("\n"),
        ours.daemon.log(),
        reference.log()
    );
    ours.daemon.finish(FIXTURE_PASSWORDS);
}

#[test]
fn deliberate_differences_from_dovecot() {
    let reference = DovecotAuth::start("%u");
    let ours = Ours::start(&[]);
    let theirs = Endpoint::Unix(reference.socket().to_path_buf());
    let auth = |endpoint: &Endpoint, user: &str, pw: &str| {
        let line = format!("AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n", plain(user, pw));
        let (mut c, _) = AuthClient::start(endpoint);
        c.send(line.as_bytes());
        c.line()
    };
    // 1: no trailing empty field.
    assert_eq!(
        auth(&ours.endpoint(), "suser", SUSER_PW),
        "OK\t1\tuser=suser"
    );
    assert_eq!(auth(&theirs, "suser", SUSER_PW), "OK\t1\tuser=suser\t");
    // 2: expired accounts and passwords.
    for (user, pw) in [("expired", EXPIRED_PW), ("pwexpired", PWEXPIRED_PW)] {
        assert_eq!(
            auth(&ours.endpoint(), user, pw),
            format!("FAIL\t1\tuser={user}")
        );
        assert_eq!(auth(&theirs, user, pw), format!("OK\t1\tuser={user}\t"));
    }
    // 3: nothing about the account's state.
    assert_eq!(
        auth(&ours.endpoint(), "locked", LOCKED_PW),
        "FAIL\t1\tuser=locked"
    );
    assert_eq!(
        auth(&theirs, "locked", LOCKED_PW),
        "FAIL\t1\tuser=locked\tcode=user_disabled"
    );
    // 4: a CONT while the verification runs: only the FAIL.
    let line = format!(
        "AUTH\t2\tPLAIN\tservice=smtp\tresp={}\nCONT\t2\tQQ==\n",
        plain("yuser", YUSER_PW)
    );
    let (mut c, _) = AuthClient::start(&ours.endpoint());
    c.send(line.as_bytes());
    assert_eq!(
        c.drain(Duration::from_secs(1)).0,
        ["FAIL\t2\treason=Unexpected continuation"]
    );
    let (mut c, _) = AuthClient::start(&theirs);
    c.send(line.as_bytes());
    assert_eq!(
        c.drain(Duration::from_secs(1)).0,
        [
            "FAIL\t2\treason=Unexpected continuation",
            "OK\t2\tuser=yuser\t"
        ]
    );
    // 5: user= as sent, trimmed like libsasl; the realm split at the last @.
    assert_eq!(
        auth(&ours.endpoint(), " suser ", SUSER_PW),
        "OK\t1\tuser=suser"
    );
    assert_eq!(
        auth(&ours.endpoint(), "suser@example.org", SUSER_PW),
        "OK\t1\tuser=suser@example.org"
    );
    ours.daemon.finish(FIXTURE_PASSWORDS);
}

/// A cancelled request's verification still runs and still counts against the 64
/// requests a connection may have in progress: AUTH + CANCEL in a loop can't start more
/// verifications than that (they would fill the verification queue for everyone).
#[test]
fn cancelled_verifications_count_against_the_per_connection_limit() {
    let ours = Ours::start(&["-n", "1"]);
    let (mut c, _) = AuthClient::start(&ours.endpoint());
    let mut script = Vec::new();
    for id in 1..=100 {
        script.extend_from_slice(
            format!(
                "AUTH\t{id}\tPLAIN\tservice=smtp\tresp={}\nCANCEL\t{id}\n",
                plain("yuser", YUSER_PW)
            )
            .as_bytes(),
        );
    }
    // One write: the daemon reads the lines long before one yescrypt verification ends.
    c.send(&script);
    let (lines, _) = c.drain(Duration::from_secs(2));
    let refused: Vec<&String> = lines
        .iter()
        .filter(|line| line.ends_with("code=temp_fail"))
        .collect();
    assert!(
        refused.len() >= 100 - 64 - 4,
        "{} of 100 refused: {lines:?}\n{}",
        refused.len(),
        ours.daemon.log()
    );
    assert!(
        lines.iter().all(|line| line.ends_with("code=temp_fail")),
        "cancelled requests get no other reply: {lines:?}"
    );
    ours.daemon.finish(FIXTURE_PASSWORDS);
}

/// A `NO` that is no verdict on the password — here rimap's IMAP server is down, an
/// outage — is `FAIL … code=temp_fail`, as Dovecot answers when its passdb fails (Postfix
/// then says 454, not 535); a wrong password is a plain `FAIL`.
#[test]
fn outages_are_temporary_failures() {
    let server = format!("127.0.0.1/{}", free_port());
    let ours = Ours::start_mech(&["-a", "rimap", "-O", &server], &[]);
    let line = format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
        plain("suser", SUSER_PW)
    );
    let (mut c, _) = AuthClient::start(&ours.endpoint());
    c.send(line.as_bytes());
    assert_eq!(
        c.line(),
        "FAIL\t1\tuser=suser\tcode=temp_fail",
        "{}",
        ours.daemon.log()
    );
    ours.daemon.finish(FIXTURE_PASSWORDS);
    // The same request, verified: a wrong password stays permanent.
    let ours = Ours::start(&[]);
    let line = format!(
        "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
        plain("suser", "Wrong-pw-1")
    );
    let (mut c, _) = AuthClient::start(&ours.endpoint());
    c.send(line.as_bytes());
    assert_eq!(c.line(), "FAIL\t1\tuser=suser");
    ours.daemon.finish(FIXTURE_PASSWORDS);
}

/// Every fixture user, right and wrong password, as `user` and as `user@example.org`:
/// the mux socket (as libsasl sends it: login and realm split at the last `@`) and the
/// Dovecot socket (PLAIN) give the same verdict, with and without `-r`.
#[test]
fn same_verdict_through_mux_and_dovecot_with_and_without_r() {
    let long = long_pw();
    let users: &[(&str, &str)] = &[
        ("yuser", YUSER_PW),
        ("suser", SUSER_PW),
        ("buser", BUSER_PW),
        ("muser", MUSER_PW),
        ("special", SPECIAL_PW),
        ("locked", LOCKED_PW),
        ("expired", EXPIRED_PW),
        ("pwexpired", PWEXPIRED_PW),
        ("nohash", "Anything-pw1"),
        ("star", "Anything-pw1"),
        ("user@example.org", REALM_PW),
        ("user", REALM_PW),
        ("long", &long),
        ("nosuchuser", "Anything-pw1"),
    ];
    for realm_flag in [false, true] {
        let ours = Ours::start(if realm_flag { &["-r"] } else { &[] });
        let mut mismatches = Vec::new();
        let mut oks = 0;
        for &(user, pw) in users {
            for login in [user.to_string(), format!("{user}@example.org")] {
                for password in [pw.to_string(), format!("wrong-{pw}")] {
                    let (mux_login, realm) = login.rsplit_once('@').unwrap_or((&login, ""));
                    let mux = auth(&ours.daemon.socket(), mux_login, &password, "smtp", realm);
                    let mux_ok = mux.as_deref().is_some_and(|r| r.starts_with("OK"));
                    let (mut c, _) = AuthClient::start(&ours.endpoint());
                    c.send(
                        format!(
                            "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
                            plain(&login, &password)
                        )
                        .as_bytes(),
                    );
                    let reply = c.line();
                    let dovecot_ok = reply.starts_with("OK\t1\t");
                    assert!(dovecot_ok || reply.starts_with("FAIL\t1\t"), "{reply}");
                    oks += usize::from(mux_ok);
                    if mux_ok != dovecot_ok {
                        mismatches.push(format!(
                            "  - {login:?} (-r: {realm_flag}): mux {mux:?}, dovecot {reply:?}"
                        ));
                    }
                }
            }
        }
        assert!(
            mismatches.is_empty(),
            "{}\n{}",
            mismatches.join("\n"),
            ours.daemon.log()
        );
        // Sanity: the table has successes (without -r: 13, the realm ignored; with -r: 8).
        assert!(oks >= 8, "only {oks} successes");
        let mut secrets: Vec<String> = users.iter().map(|(_, p)| p.to_string()).collect();
        secrets.extend(users.iter().map(|(u, p)| plain(u, p)));
        ours.daemon.finish(&secrets);
    }
}

/// `testsaslauthd --dovecot` prints the same against ours and against Dovecot.
#[test]
fn testsaslauthd_dovecot_against_ours_and_dovecot() {
    let reference = DovecotAuth::start("%u");
    let ours = Ours::start(&[]);
    let client = ours_bin("testsaslauthd");
    let cases: &[&[&str]] = &[
        &["-u", "yuser", "-p", YUSER_PW],
        &["-u", "yuser", "-p", "wrong-Yes-Crypt-pw1"],
        &["-u", "nosuchuser", "-p", YUSER_PW],
        &["-u", "special", "-p", SPECIAL_PW, "--dovecot-mech", "LOGIN"],
        &[
            "-u",
            "suser",
            "-p",
            "wrong-Sha-512-pw1",
            "--dovecot-mech",
            "login",
        ],
        &[
            "-u",
            "suser",
            "-p",
            SUSER_PW,
            "-s",
            "imap",
            "-a",
            "192.0.2.7;4242",
            "-R",
            "2",
        ],
        &["-u", "suser", "-p", SUSER_PW, "--show-reply"],
        &["-u", "suser", "-p", "wrong-Sha-512-pw1", "--show-reply"],
    ];
    let run = |socket: &std::path::Path, args: &[&str]| {
        let mut full = vec!["--dovecot"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-f", socket.to_str().unwrap()]);
        run_plain(&client, &full, None)
    };
    for args in cases {
        let got = run(&ours.socket, args);
        let want = run(reference.socket(), args);
        // Deliberate difference 1 shows in --show-reply: Dovecot's trailing TAB.
        let want_out = want.stdout_str().replace("\\t\"\n", "\"\n");
        assert_eq!(
            (got.stdout_str(), got.code()),
            (want_out, want.code()),
            "testsaslauthd --dovecot {}\nours: {}\ndovecot: {}",
            common::clients::masked_args(args),
            got.output(),
            want.output()
        );
        assert!(got.stdout_str().starts_with("0: "), "{}", got.output());
    }
    // A socket that is not there: upstream's transport error form.
    let gone = run(
        &ours.socket.with_file_name("nothing"),
        &["-u", "u", "-p", "p"],
    );
    assert_eq!((gone.stdout_str(), gone.code()), ("0: ".to_string(), 255));
    assert!(
        gone.stderr_str().starts_with("connect() : "),
        "{}",
        gone.output()
    );
    ours.daemon.finish(FIXTURE_PASSWORDS);
}

/// `--dovecot-socket inet:127.0.0.1:PORT` and `inet:[::1]:PORT`, and the address
/// allow-list; a non-loopback address is refused at start without
/// `--dovecot-allow-network`.
#[test]
fn tcp_on_loopback_v4_and_v6() {
    let client = ours_bin("testsaslauthd");
    for host in ["127.0.0.1", "[::1]"] {
        let port = dovecot::free_port();
        let endpoint = format!("inet:{host}:{port}");
        let daemon = Daemon::start(
            &ours_bin("saslauthd"),
            &["-a", "shadow", "--dovecot-socket", &endpoint],
        );
        let r = run_plain(
            &client,
            &["--dovecot", "-u", "suser", "-p", SUSER_PW, "-f", &endpoint],
            None,
        );
        assert_eq!(
            (r.stdout_str(), r.code()),
            ("0: OK \"Success.\"\n".to_string(), 0),
            "{}\n{}",
            r.output(),
            daemon.log()
        );
        let r = run_plain(
            &client,
            &[
                "--dovecot",
                "-u",
                "suser",
                "-p",
                "wrong-pw-1",
                "-f",
                &endpoint,
            ],
            None,
        );
        assert_eq!(r.code(), 255, "{}", r.output());
        assert!(
            daemon
                .log()
                .contains(&format!("listening on dovecot socket: {endpoint}")),
            "{}",
            daemon.log()
        );
        daemon.finish(&[SUSER_PW]);
    }
    // Only ::1 may connect: 127.0.0.1 is closed without a handshake.
    let port = dovecot::free_port();
    let endpoint = format!("inet:127.0.0.1:{port}");
    let daemon = Daemon::start(
        &ours_bin("saslauthd"),
        &[
            "-a",
            "shadow",
            "--dovecot-socket",
            &endpoint,
            "--dovecot-allow-from",
            "::1",
        ],
    );
    let mut c = AuthClient::connect(&Endpoint::parse(&endpoint).unwrap());
    assert!(c.closes_silently());
    assert!(
        daemon.wait_for_log(
            "is not allowed to connect to the dovecot socket",
            DEFAULT_TIMEOUT
        ),
        "{}",
        daemon.log()
    );
    daemon.finish(&[SUSER_PW]);
    // Beyond loopback: refused at start, with the reason.
    let failure = Daemon::try_start_with(
        &ours_bin("saslauthd"),
        &[
            "-a",
            "shadow",
            "--dovecot-socket",
            &format!("inet:0.0.0.0:{port}"),
        ],
        Options::default(),
    )
    .err()
    .expect("0.0.0.0 without --dovecot-allow-network must not start");
    assert_eq!(
        failure.status.and_then(|s| s.code()),
        Some(1),
        "{}",
        failure.log
    );
    assert!(
        failure.log.contains("--dovecot-allow-network"),
        "{}",
        failure.log
    );
}

/// The socket file: mode 0660 by default, `--dovecot-socket-mode` and `-user`/`-group`;
/// removed at exit. The peer-credential allow-lists apply to it.
#[test]
fn socket_file_mode_owner_and_peer_policy() {
    let ours = Ours::start(&[]);
    let meta = fs::metadata(&ours.socket).unwrap();
    assert_eq!(
        (meta.permissions().mode() & 0o7777, meta.uid(), meta.gid()),
        (0o660, 0, 0)
    );
    let socket = ours.socket.clone();
    ours.daemon.finish(FIXTURE_PASSWORDS);
    assert!(!socket.exists(), "the socket file stays after exit");
    let ours = Ours::start(&[
        "--dovecot-socket-mode",
        "0600",
        "--dovecot-socket-user",
        "2001",
        "--dovecot-socket-group",
        "saslfix",
    ]);
    let meta = fs::metadata(&ours.socket).unwrap();
    assert_eq!(
        (meta.permissions().mode() & 0o7777, meta.uid(), meta.gid()),
        (0o600, 2001, 2000)
    );
    ours.daemon.finish(FIXTURE_PASSWORDS);
    // Root (the test) is not uid 4242: closed at once, no handshake; mux answers NO.
    let ours = Ours::start(&["--allow-uid", "4242"]);
    let mut c = AuthClient::unix(&ours.socket);
    assert!(c.closes_silently());
    expect_reply(&ours.daemon, "suser", SUSER_PW, "NO access denied");
    ours.daemon.finish(FIXTURE_PASSWORDS);
}

/// A socket that a process listens on is never taken for a leftover: with a live
/// listener at the `--dovecot-socket` path (real Dovecot's, another instance's) the daemon
/// refuses to start and leaves that socket as it was; a stale one (nothing listens) is
/// replaced. At exit the daemon removes the path only while it is still the socket it
/// bound: one put in its place since is another process's.
#[test]
fn a_dovecot_socket_in_use_is_never_removed() {
    let dir = TempDir::new("dovecot-in-use");
    let socket = dir.join("auth");
    let path = socket.to_str().expect("utf-8 path").to_string();
    let args = ["-a", "shadow", "--dovecot-socket", path.as_str()];
    let inode = |what: &str| {
        fs::symlink_metadata(&socket)
            .unwrap_or_else(|e| panic!("{what}: {}: {e}", socket.display()))
            .ino()
    };
    let accepts = |listener: &UnixListener| {
        let _client = UnixStream::connect(&socket).expect("connect");
        listener.set_nonblocking(false).expect("blocking");
        listener.accept().is_ok()
    };

    let live = UnixListener::bind(&socket).expect("bind the live socket");
    let before = inode("the live socket");
    let failure = Daemon::try_start_with(&ours_bin("saslauthd"), &args, Options::default())
        .err()
        .expect("the daemon started over a socket in use");
    assert!(
        failure.log.contains("in use") && failure.log.contains(&path),
        "no clear reason:\n{}",
        failure.log
    );
    assert_eq!(inode("after the refused start"), before);
    assert!(accepts(&live), "the live socket no longer accepts");

    // Its listener gone, the socket is stale: replaced.
    drop(live);
    let daemon = Daemon::start(&ours_bin("saslauthd"), &args);
    assert!(
        wait_for_socket(&socket),
        "no dovecot socket\n{}",
        daemon.log()
    );
    assert_ne!(inode("our socket"), before);
    // Another process's socket takes the place of ours: ours stops without removing it.
    fs::remove_file(&socket).expect("remove our socket");
    let other = UnixListener::bind(&socket).expect("bind the other socket");
    let theirs = inode("the other socket");
    daemon.finish(FIXTURE_PASSWORDS);
    assert_eq!(inode("after our daemon stopped"), theirs);
    assert!(accepts(&other), "the other socket no longer accepts");
}

/// No idle timeout once handshaken; the handshake and a started line have `--timeout`;
/// idle and half-written connections never delay others.
#[test]
fn connection_lifecycle_and_deadlines() {
    let ours = Ours::start(&["--timeout", "1"]);
    let ep = ours.endpoint();
    // Handshaken, idle for twice --timeout, then served.
    let (mut idle, _) = AuthClient::start(&ep);
    // Never sends its handshake: closed after --timeout.
    let mut silent = AuthClient::connect(&ep);
    assert_eq!(silent.handshake().len(), 7);
    // Starts a line and stops.
    let (mut partial, _) = AuthClient::start(&ep);
    partial.send(b"AUTH\t1\tPLAIN\tservice=sm");
    let mut crowd: Vec<AuthClient> = (0..20).map(|_| AuthClient::start(&ep).0).collect();
    for c in crowd.iter_mut().take(10) {
        c.send(b"AUTH\t1\tPL");
    }
    // Others are served at once meanwhile.
    let started = Instant::now();
    let (mut other, _) = AuthClient::start(&ep);
    other.send(
        format!(
            "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
            plain("suser", SUSER_PW)
        )
        .as_bytes(),
    );
    assert_eq!(other.line(), "OK\t1\tuser=suser");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert!(silent.closes_silently());
    assert!(partial.closes_silently());
    assert!(started.elapsed() < Duration::from_secs(3));
    sleep(Duration::from_millis(1200));
    idle.send(
        format!(
            "AUTH\t5\tPLAIN\tservice=smtp\tresp={}\n",
            plain("suser", SUSER_PW)
        )
        .as_bytes(),
    );
    assert_eq!(idle.line(), "OK\t5\tuser=suser");
    // Sequential requests on the one connection, and many ids in flight.
    let mut burst = String::new();
    for id in 100..140 {
        burst.push_str(&format!(
            "AUTH\t{id}\tPLAIN\tservice=smtp\tresp={}\n",
            plain("suser", SUSER_PW)
        ));
    }
    idle.send(burst.as_bytes());
    let mut ids: Vec<u32> = (0..40)
        .map(|_| {
            let line = idle.line();
            assert!(line.starts_with("OK\t"), "{line}");
            line.split('\t').nth(1).unwrap().parse().unwrap()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, (100..140).collect::<Vec<_>>());
    drop(crowd);
    ours.daemon.finish(FIXTURE_PASSWORDS);
}

/// No password, no base64 of one, no AUTH line in the log at any verbosity (`-d`), even
/// for an AUTH sent before the handshake (which Dovecot logs whole).
#[test]
fn no_auth_line_or_password_in_the_log() {
    let ours = Ours::start(&[]);
    let resp = plain("suser", SUSER_PW);
    run_script(
        &ours.endpoint(),
        false,
        &[format!("AUTH\t1\tPLAIN\tservice=smtp\tresp={resp}\n").as_bytes()],
    );
    run_script(
        &ours.endpoint(),
        true,
        &[format!("AUTH\t1\tPLAIN\tservice=smtp\tresp={resp}\tx=1\n").as_bytes()],
    );
    run_script(
        &ours.endpoint(),
        true,
        &[format!("AUTH\t2\tPLAIN\tservice=smtp\tresp={resp}\n").as_bytes()],
    );
    run_script(
        &ours.endpoint(),
        true,
        &[
            b"AUTH\t3\tLOGIN\tservice=smtp\n",
            format!("CONT\t3\t{}\n", b64(b"suser")).as_bytes(),
            format!("CONT\t3\t{}!\n", b64(SUSER_PW.as_bytes())).as_bytes(),
        ],
    );
    assert!(ours.daemon.wait_for_log("protocol error", DEFAULT_TIMEOUT));
    let log = ours.daemon.log();
    assert!(
        log.contains("auth success: [user=suser] [service=smtp] [realm=] [mech=shadow]"),
        "{log}"
    );
    assert!(log.contains("[via=dovecot]"), "{log}");
    assert!(!log.contains("AUTH\t") && !log.contains("resp="), "{log}");
    ours.daemon
        .finish(&[SUSER_PW.to_string(), resp, b64(SUSER_PW.as_bytes())]);
}

/// `rip=` is the client address the throttle counts (and `service=`/`rip=` reach the log
/// line): after `--throttle-free` failures from one address, even a right password from
/// it waits, while another address is served at once.
#[test]
fn throttling_counts_failures_per_rip() {
    let dir = TempDir::new("dovecot-sock");
    let socket = dir.join("auth");
    let daemon = Daemon::start(
        &ours_bin("saslauthd"),
        &[
            "-a",
            "shadow",
            "--throttle-free",
            "2",
            "--throttle-delay",
            "600",
            "--dovecot-socket",
            socket.to_str().unwrap(),
        ],
    );
    assert!(wait_for_socket(&socket));
    let (mut c, _) = AuthClient::start(&Endpoint::Unix(socket.clone()));
    let mut ask = |id: u32, user: &str, pw: &str, rip: &str| {
        let started = Instant::now();
        c.send(
            format!(
                "AUTH\t{id}\tPLAIN\tservice=smtp\trip={rip}\tresp={}\n",
                plain(user, pw)
            )
            .as_bytes(),
        );
        (c.line(), started.elapsed())
    };
    // Three failures from 192.0.2.10, each for another login (the login keys stay clean).
    for (id, user) in [(1, "buser"), (2, "muser"), (3, "special")] {
        let (reply, _) = ask(id, user, "wrong-pw-1", "192.0.2.10");
        assert_eq!(reply, format!("FAIL\t{id}\tuser={user}"));
    }
    let (reply, took) = ask(4, "suser", SUSER_PW, "192.0.2.10");
    assert_eq!(reply, "OK\t4\tuser=suser");
    assert!(
        took >= Duration::from_millis(550),
        "not delayed: {took:?}\n{}",
        daemon.log()
    );
    let (reply, took) = ask(5, "suser", SUSER_PW, "192.0.2.20");
    assert_eq!(reply, "OK\t5\tuser=suser");
    assert!(took < Duration::from_millis(500), "delayed: {took:?}");
    assert!(
        daemon
            .log()
            .contains("[user=buser] [service=smtp] [realm=] [remote=192.0.2.10] [mech=shadow]"),
        "{}",
        daemon.log()
    );
    daemon.finish(&[SUSER_PW]);
}

/// Not a timed test (run with `-- --ignored --nocapture`): requests per second through
/// the Dovecot socket (one connection, one request at a time as Postfix does, and 64 in
/// flight) and through mux (a connection per request, as libsasl does), `$6$` user, with
/// and without the cache.
#[test]
#[ignore]
fn throughput_report() {
    for cache in [false, true] {
        let extra: &[&str] = if cache { &["-c"] } else { &[] };
        let ours = Ours::start(extra);
        let n = 400;
        let (mut c, _) = AuthClient::start(&ours.endpoint());
        let line = format!(
            "AUTH\t1\tPLAIN\tservice=smtp\tresp={}\n",
            plain("suser", SUSER_PW)
        );
        let started = Instant::now();
        for _ in 0..n {
            c.send(line.as_bytes());
            assert!(c.line().starts_with("OK\t1"));
        }
        let sequential = n as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        for batch in 0..(n / 64) {
            let mut burst = String::new();
            for id in 1..=64 {
                burst.push_str(&format!(
                    "AUTH\t{}\tPLAIN\tservice=smtp\tresp={}\n",
                    batch * 64 + id,
                    plain("suser", SUSER_PW)
                ));
            }
            c.send(burst.as_bytes());
            for _ in 0..64 {
                assert!(c.line().starts_with("OK\t"));
            }
        }
        let pipelined = (n / 64 * 64) as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        for _ in 0..n {
            assert_eq!(
                auth(&ours.daemon.socket(), "suser", SUSER_PW, "smtp", "").as_deref(),
                Some("OK")
            );
        }
        let mux = n as f64 / started.elapsed().as_secs_f64();
        eprintln!(
            "cache {cache}: dovecot one at a time {sequential:.0} req/s, 64 in flight {pipelined:.0} req/s; mux {mux:.0} req/s"
        );
        ours.daemon.finish(FIXTURE_PASSWORDS);
    }
}
