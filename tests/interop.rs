//! Interop tier: our binaries against real, unmodified Debian 12 peers.
//!
//! * `testsaslauthd` matrix: every (client, daemon) pair of {upstream `/usr/sbin/testsaslauthd`,
//!   ours} × {upstream `/usr/sbin/saslauthd -a shadow`, ours} runs the same table of cases and
//!   must print exactly the expected stdout bytes and exit with the expected code. The table
//!   was measured with upstream × upstream (that pair proves the literals); since every pair
//!   must equal the same literal, all four pairs are byte-identical to each other.
//! * Client-only cases (missing socket, usage errors) for both clients, and both clients
//!   against a scripted fake saslauthd (odd replies; identical request bytes).
//! * Postfix + Debian's libsasl2 (`pwcheck_method: saslauthd`) in a private instance on
//!   127.0.0.1, driven by swaks: AUTH PLAIN and AUTH LOGIN against our daemon and, through a
//!   second listener of the same instance, against upstream's, with identical expectations.
//!
//! Daemons run in a private mount namespace with the fixture users (see tests/common/mod.rs);
//! the tests that start a daemon or Postfix need root and fail without it. `KEEP_TEST_DIRS=1`
//! keeps the temp dirs. See tests/lab/README.md.

#![forbid(unsafe_code)]

mod common;

use common::clients::*;
use common::fixtures::*;
use common::postfix::{Advert, SmtpAuth, SmtpCase, smtp_case, smtp_passwords, smtp_side_by_side};
use common::*;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// Cases that go through a daemon. Expected values measured with upstream × upstream
/// (Debian 12, sasl2-bin 2.1.28+dfsg-10+deb12u1).
const CASES: &[Case] = &[
    Case {
        what: "yescrypt user, good password",
        args: &["-u", "yuser", "-p", YUSER_PW],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "yescrypt user, wrong password",
        args: &["-u", "yuser", "-p", "wrong-Yes-Crypt-pw1"],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "sha512crypt user, good password",
        args: &["-u", "suser", "-p", SUSER_PW],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "sha512crypt user, wrong password",
        args: &["-u", "suser", "-p", "Sha-512-pw2"],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "special user (space, quote, backslash, UTF-8), good password",
        args: &["-u", "special", "-p", SPECIAL_PW],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "special user, password without the trailing UTF-8 character",
        args: &["-u", "special", "-p", "pä ss \"q\\ "],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "special user, backslash doubled (no unescaping anywhere)",
        args: &["-u", "special", "-p", "pä ss \"q\\\\ €"],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "unknown user",
        args: &["-u", "nosuchuser", "-p", YUSER_PW],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "bcrypt user",
        args: &["-u", "buser", "-p", BUSER_PW],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "md5crypt user",
        args: &["-u", "muser", "-p", MUSER_PW],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "locked account (! prefix), right password",
        args: &["-u", "locked", "-p", LOCKED_PW],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "expired account",
        args: &["-u", "expired", "-p", EXPIRED_PW],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "expired password",
        args: &["-u", "pwexpired", "-p", PWEXPIRED_PW],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "empty hash field",
        args: &["-u", "nohash", "-p", "x"],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "`*` hash",
        args: &["-u", "star", "-p", "*"],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "empty login",
        args: &["-u", "", "-p", SUSER_PW],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "empty password",
        args: &["-u", "suser", "-p", ""],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "service smtp + realm: shadow ignores the realm without -r",
        args: &[
            "-u",
            "yuser",
            "-p",
            YUSER_PW,
            "-s",
            "smtp",
            "-r",
            "example.org",
        ],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "login containing @ is looked up as-is",
        args: &["-u", "user@example.org", "-p", REALM_PW],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "login + realm are not joined without -r",
        args: &["-u", "user", "-p", REALM_PW, "-r", "example.org"],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "-R 3, good password (yescrypt)",
        args: &["-u", "yuser", "-p", YUSER_PW, "-R", "3"],
        stdout: "0: OK \"Success.\"\n1: OK \"Success.\"\n2: OK \"Success.\"\n",
        code: 0,
    },
    Case {
        what: "-R 3, good password (sha512crypt)",
        args: &["-u", "suser", "-p", SUSER_PW, "-R", "3"],
        stdout: "0: OK \"Success.\"\n1: OK \"Success.\"\n2: OK \"Success.\"\n",
        code: 0,
    },
    Case {
        what: "-R 3, wrong password",
        args: &["-u", "suser", "-p", "wrong", "-R", "3"],
        stdout: "0: NO \"authentication failed\"\n1: NO \"authentication failed\"\n2: NO \"authentication failed\"\n",
        code: 255,
    },
    Case {
        what: "-R 2, unknown user",
        args: &["-u", "nosuchuser", "-p", "x", "-R", "2"],
        stdout: "0: NO \"authentication failed\"\n1: NO \"authentication failed\"\n",
        code: 255,
    },
    Case {
        what: "-R 0 means one attempt",
        args: &["-u", "suser", "-p", SUSER_PW, "-R", "0"],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "-R -1 means no attempt, exit 0",
        args: &["-u", "suser", "-p", SUSER_PW, "-R", "-1"],
        stdout: "",
        code: 0,
    },
];

fn client_path(which: &str) -> PathBuf {
    match which {
        "upstream" => PathBuf::from(UPSTREAM_TESTSASLAUTHD),
        "ours" => ours_bin("testsaslauthd"),
        _ => unreachable!(),
    }
}

fn daemon_path(which: &str) -> PathBuf {
    match which {
        "upstream" => PathBuf::from(UPSTREAM_SASLAUTHD),
        "ours" => ours_bin("saslauthd"),
        _ => unreachable!(),
    }
}

/// Runs [`CASES`] with `client` against a fresh `daemon -a shadow` and asserts exact bytes.
fn check_pair(client: &str, daemon: &str) {
    require_root();
    let d = Daemon::start(&daemon_path(daemon), &["-a", "shadow"]);
    let cl = client_path(client);
    assert!(cl.exists(), "{} missing", cl.display());
    let failures = run_cases(&cl, &d.socket(), CASES);
    assert!(
        failures.is_empty(),
        "client={client} daemon={daemon}: {} of {} cases differ from upstream's bytes:\n{}\n--- daemon log ---\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n"),
        d.log()
    );
    d.assert_log_free_of(&all_passwords(CASES));
}

#[test]
fn upstream_client_vs_upstream_daemon() {
    check_pair("upstream", "upstream");
}

#[test]
fn upstream_client_vs_our_daemon() {
    check_pair("upstream", "ours");
}

#[test]
fn our_client_vs_upstream_daemon() {
    check_pair("ours", "upstream");
}

#[test]
fn our_client_vs_our_daemon() {
    check_pair("ours", "ours");
}

/// Transport errors and usage errors: no daemon involved.
#[test]
fn clients_agree_without_a_daemon() {
    let tmp = TempDir::new("nosock");
    let missing = tmp.join("run/mux");
    let mut failures = Vec::new();
    for client in ["upstream", "ours"] {
        let cl = client_path(client);
        // Missing socket: "0: " without newline, perror-style text on stderr, exit 255.
        for (args, stdout) in [
            (&["-u", "yuser", "-p", YUSER_PW][..], "0: "),
            (&["-u", "yuser", "-p", YUSER_PW, "-R", "2"][..], "0: 1: "),
        ] {
            let r = run_client(&cl, args, &missing);
            if r.stdout != stdout.as_bytes()
                || code_of(&r) != Some(255)
                || !r.stderr_str().contains("connect")
            {
                failures.push(format!(
                    "  - {client}: missing socket {}: want exit 255, stdout {stdout:?}, stderr mentioning connect\n      got  {}",
                    masked_args(args),
                    describe(&r)
                ));
            }
        }
        // Usage errors: exit 1, nothing on stdout.
        for args in [&["-p", "x"][..], &["-u", "x", "-p", "x", "-x"][..]] {
            let mut c = Command::new(&cl);
            c.args(args);
            let r = run_command(c, None, CLIENT_TIMEOUT);
            if !r.stdout.is_empty() || code_of(&r) != Some(1) || r.stderr.is_empty() {
                failures.push(format!(
                    "  - {client}: usage error {args:?}: want exit 1, empty stdout, usage on stderr\n      got  {}",
                    describe(&r)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "testsaslauthd without a daemon:\n{}",
        failures.join("\n")
    );
}

/// A one-shot fake saslauthd on `path`: accepts one connection (bounded), reads the 4-field
/// request (plus whatever else arrives within 100 ms), sends `reply` verbatim, half-closes and
/// waits (bounded) for the client to close. Returns the request bytes (None: no client / incomplete request).
fn fake_mux_once(path: &Path, reply: Vec<u8>) -> thread::JoinHandle<Option<Vec<u8>>> {
    let listener = UnixListener::bind(path).expect("bind fake mux");
    listener.set_nonblocking(true).expect("nonblocking");
    thread::spawn(move || {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return None;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return None,
            }
        };
        s.set_nonblocking(false).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = Vec::new();
        for _ in 0..4 {
            let mut len = [0u8; 2];
            s.read_exact(&mut len).ok()?;
            let mut data = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut data).ok()?;
            req.extend_from_slice(&len);
            req.extend_from_slice(&data);
        }
        s.set_read_timeout(Some(Duration::from_millis(100))).ok()?;
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            req.extend_from_slice(&buf[..n]);
        }
        let _ = s.write_all(&reply);
        // EOF right after the reply, so that short replies end the client's read at once.
        let _ = s.shutdown(Shutdown::Write);
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        Some(req)
    })
}

/// What both clients print for odd server replies (fake saslauthd), and that they send the
/// same request bytes. Measured with upstream testsaslauthd (2.1.28): only a reply starting
/// with `OK` is success; a reply shorter than 2 bytes or a short read is a transport error
/// (`0: ` without newline, message on stderr, exit 255).
#[test]
fn clients_agree_on_odd_replies_and_send_the_same_request() {
    let counted = |b: &[u8]| {
        let mut v = (b.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    };
    let huge = |head: &[u8]| {
        let mut v = head.to_vec();
        v.resize(2000, b'a');
        counted(&v)
    };
    // (what, reply bytes, stdout, exit code, stderr must contain; "" = stderr empty)
    let replies: Vec<(&str, Vec<u8>, &str, i32, &str)> = vec![
        ("`OK`", counted(b"OK"), OK, 0, ""),
        ("`OK` + text", counted(b"OK whatever follows"), OK, 0, ""),
        ("`NO` + reason", counted(b"NO custom reason"), NO, 255, ""),
        ("lower-case `ok`", counted(b"ok"), NO, 255, ""),
        ("`XX`", counted(b"XX"), NO, 255, ""),
        ("2000-byte reply starting with OK", huge(b"OK"), OK, 0, ""),
        ("2000-byte reply starting with NO", huge(b"NO"), NO, 255, ""),
        (
            "length 1 (`O`)",
            counted(b"O"),
            "0: ",
            255,
            "bad response from saslauthd",
        ),
        (
            "length 0",
            counted(b""),
            "0: ",
            255,
            "bad response from saslauthd",
        ),
        (
            "close without reply",
            Vec::new(),
            "0: ",
            255,
            "size read failed",
        ),
        (
            "one length byte, close",
            vec![0],
            "0: ",
            255,
            "size read failed",
        ),
        (
            "length 10, only `OK`, close",
            b"\x00\x0aOK".to_vec(),
            "0: ",
            255,
            "read failed",
        ),
    ];
    let tmp = TempDir::new("fake-mux");
    let mut failures = Vec::new();
    for client in ["upstream", "ours"] {
        let cl = client_path(client);
        for (i, (what, reply, stdout, code, stderr)) in replies.iter().enumerate() {
            let sock = tmp.join(format!("{client}-{i}.mux"));
            let server = fake_mux_once(&sock, reply.clone());
            let args = ["-u", "us er", "-p", SPECIAL_PW];
            let r = run_client(&cl, &args, &sock);
            let req = server.join().expect("fake mux thread");
            let stderr_ok = if stderr.is_empty() {
                r.stderr.is_empty()
            } else {
                r.stderr_str().contains(stderr)
            };
            if r.stdout != stdout.as_bytes() || code_of(&r) != Some(*code) || !stderr_ok {
                failures.push(format!(
                    "  - {client} client, server reply {what}: want exit {code}, stdout {stdout:?}, stderr {}\n      got  {}",
                    if stderr.is_empty() { "empty".to_string() } else { format!("containing {stderr:?}") },
                    describe(&r)
                ));
            }
            let want_req = request(&[b"us er", SPECIAL_PW.as_bytes(), b"imap", b""]);
            if req.as_deref() != Some(&want_req[..]) {
                failures.push(format!(
                    "  - {client} client sent {:?}, want {want_req:?} (4 fields, service imap, empty realm)",
                    req
                ));
            }
        }
        // Service and realm go out as given.
        let sock = tmp.join(format!("{client}-sr.mux"));
        let server = fake_mux_once(&sock, counted(b"OK"));
        let r = run_client(
            &cl,
            &["-u", "yuser", "-p", "pw", "-s", "smtp", "-r", "example.org"],
            &sock,
        );
        let req = server.join().expect("fake mux thread");
        let want_req = request(&[b"yuser", b"pw", b"smtp", b"example.org"]);
        if req.as_deref() != Some(&want_req[..]) || r.stdout != OK.as_bytes() {
            failures.push(format!(
                "  - {client} client with -s smtp -r example.org sent {req:?}, want {want_req:?}; {}",
                describe(&r)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "testsaslauthd against a fake saslauthd:\n{}",
        failures.join("\n")
    );
}

/// (user, password, expected result) for every swaks mechanism and backend.
const SMTP_CASES: &[SmtpCase] = &[
    ("yuser", YUSER_PW, SmtpAuth::Accepted),
    ("yuser", "wrong-Yes-Crypt-pw1", SmtpAuth::Rejected),
    ("suser", SUSER_PW, SmtpAuth::Accepted),
    ("suser", "wrong-Sha-512-pw1", SmtpAuth::Rejected),
    // libsasl splits at the last '@': login=yuser realm=example.org; -a shadow ignores realm.
    ("yuser@example.org", YUSER_PW, SmtpAuth::Accepted),
    ("special", SPECIAL_PW, SmtpAuth::Accepted),
    ("nosuchuser", YUSER_PW, SmtpAuth::Rejected),
];

/// One Postfix instance for the whole tier: listener `ours` → our saslauthd, listener
/// `upstream` → Debian's saslauthd. Same swaks matrix on both; then both daemons are stopped
/// and AUTH must turn into a temporary failure (454) on both.
#[test]
fn postfix_smtp_auth_through_libsasl() {
    require_root();
    let mut ours = Daemon::start(&daemon_path("ours"), &["-a", "shadow"]);
    let mut upstream = Daemon::start(&daemon_path("upstream"), &["-a", "shadow"]);
    let (pf, mut report) =
        smtp_side_by_side(&ours, &upstream, SMTP_CASES, Advert::Required, "shadow");

    // What libsasl sent must look the same to both daemons (service smtp, realm split at '@').
    let mut log_failures = Vec::new();
    for (name, d) in [("ours", &ours), ("upstream", &upstream)] {
        for needle in [
            "auth success: [user=yuser] [service=smtp] [realm=example.org] [mech=shadow]",
            "auth failure: [user=yuser] [service=smtp] [realm=] [mech=shadow] [reason=Incorrect password]",
        ] {
            if !d.wait_for_log(needle, Duration::from_secs(2)) {
                log_failures.push(format!("  - {name} daemon log lacks `{needle}`"));
            }
        }
    }

    if !log_failures.is_empty() {
        report.push_str(&format!(
            "daemon logs:\n{}\n--- ours ---\n{}\n--- upstream ---\n{}\n",
            log_failures.join("\n"),
            ours.log(),
            upstream.log()
        ));
    }
    assert!(report.is_empty(), "{report}\n{}", pf.diagnostics());

    ours.assert_log_free_of(&smtp_passwords(SMTP_CASES));

    // Daemon gone (socket removed on SIGTERM): libsasl cannot connect → 454, on both.
    ours.terminate();
    upstream.stop();
    let mut gone = Vec::new();
    for name in ["ours", "upstream"] {
        let port = pf.port(name);
        let want = SmtpAuth::TempFail;
        if let Some(f) = smtp_case(port, "PLAIN", "yuser", YUSER_PW, want, Advert::Required) {
            gone.push(format!("{name}:\n{f}"));
        }
    }
    assert!(
        gone.is_empty(),
        "after stopping saslauthd:\n{}\n{}",
        gone.join("\n"),
        pf.diagnostics()
    );
}

/// The instance lock: Cyrus's saslauthd and ours take the same `fcntl` write lock on
/// `<rundir>/saslauthd.pid`, so neither starts in a directory the other serves (both in
/// daemon mode, as distributions run them). Ours exits 2 naming the pid that serves;
/// Cyrus refuses before it touches our socket.
#[test]
fn ours_and_upstream_exclude_each_other_on_one_run_dir() {
    require_root();
    let daemon_mode = |run_dir: Option<PathBuf>| Options {
        foreground: false,
        run_dir,
        ..Options::default()
    };
    let socket_id = |d: &Daemon| {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(d.socket())
            .map(|m| (m.dev(), m.ino()))
            .ok()
    };

    // Cyrus first, then ours.
    let mut cyrus = Daemon::start_with(
        &daemon_path("upstream"),
        &["-a", "shadow", "-n", "2"],
        daemon_mode(None),
    );
    let cyrus_socket = socket_id(&cyrus);
    let run = cyrus.run_dir().to_str().expect("utf-8").to_string();
    let refused = run_in_namespace(
        &daemon_path("ours"),
        &["-a", "shadow", "-m", &run],
        DEFAULT_TIMEOUT,
    );
    assert_refused_as_second_instance(&refused, cyrus.pid(), "ours in a directory Cyrus serves");
    assert_eq!(
        socket_id(&cyrus),
        cyrus_socket,
        "ours touched Cyrus's socket"
    );
    expect_reply(&cyrus, "suser", SUSER_PW, "OK");
    cyrus.stop();

    // Ours first, then Cyrus.
    let ours = Daemon::start_with(&daemon_path("ours"), &["-a", "shadow"], daemon_mode(None));
    let our_socket = socket_id(&ours);
    let run = ours.run_dir().to_str().expect("utf-8").to_string();
    let cyrus = run_in_namespace(
        &daemon_path("upstream"),
        &["-a", "shadow", "-m", &run, "-n", "2"],
        DEFAULT_TIMEOUT,
    );
    assert_ne!(
        cyrus.status.and_then(|s| s.code()),
        Some(0),
        "Cyrus started in a directory ours serves:\n{}",
        cyrus.output()
    );
    // A Cyrus that had started would remove the socket when it stops; it never got that far.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(socket_id(&ours), our_socket, "Cyrus touched our socket");
    assert_eq!(
        std::fs::read_to_string(ours.pid_file()).ok(),
        Some(format!("{}\n", ours.pid()))
    );
    expect_reply(&ours, "suser", SUSER_PW, "OK");
    ours.finish(&[SUSER_PW]);
}

/// A complete four-field request followed by bytes that can't start a fifth field (`GA`,
/// which would announce 18241 bytes; a single stray byte): Debian's saslauthd (2.1.28,
/// which never reads a fifth field) answers the request at once, and so must ours, with the
/// same reply bytes and a clean end of stream.
#[test]
fn bytes_after_a_four_field_request_are_answered_like_upstream() {
    require_root();
    let ours = Daemon::start(&daemon_path("ours"), &["-a", "shadow"]);
    let upstream = Daemon::start(&daemon_path("upstream"), &["-a", "shadow"]);
    let opts = ExchangeOpts {
        timeout: Duration::from_secs(5),
        ..ExchangeOpts::default()
    };
    for (what, trailing) in [("GA", &b"GA"[..]), ("one stray byte", &b"G"[..])] {
        for password in [SUSER_PW, "Sha-512-pw2"] {
            let mut bytes = request(&[b"suser", password.as_bytes(), b"imap", b""]);
            bytes.extend_from_slice(trailing);
            let theirs = exchange(&upstream.socket(), &bytes, &opts);
            let mine = exchange(&ours.socket(), &bytes, &opts);
            for (who, r) in [("upstream", &theirs), ("ours", &mine)] {
                assert!(
                    r.reply.is_some() && r.closed && r.elapsed < Duration::from_secs(1),
                    "{what}, {who}: {r:?}"
                );
            }
            assert_eq!(
                mine.reply,
                theirs.reply,
                "{what}: ours {:?}, upstream {:?}\n--- our log ---\n{}",
                mine.text(),
                theirs.text(),
                ours.log()
            );
        }
    }
    assert_eq!(
        ours.log()
            .matches("after a four-field request (not a client address field)")
            .count(),
        4,
        "{}",
        ours.log()
    );
    ours.assert_log_free_of(&[SUSER_PW, "Sha-512-pw2"]);
}
