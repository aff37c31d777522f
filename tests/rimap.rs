//! Integration tests of `-a rimap`: our daemon against a private Dovecot (plain IMAP,
//! STARTTLS, IMAPS, on 127.0.0.1 and ::1; tests/common/dovecot.rs) and against a scripted
//! fake IMAP server that records every byte it receives (tests/common/fakeimap.rs), plus
//! Debian's upstream `testsaslauthd` as the client.
//!
//! Every daemon runs in the harness's private mount namespace with its own `/etc/hosts`
//! and an `nsswitch.conf` that resolves hosts from files only, so no test sends a DNS
//! query, and a test can make a name resolvable while the daemon runs. Needs root (the
//! harness panics otherwise); nothing listens beyond loopback.
#![forbid(unsafe_code)]

mod common;
#[path = "common/dovecot.rs"]
mod dovecot;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::fakeimap::{Behaviour, FakeImap};
use common::postfix::{Advert, Postfix, SmtpAuth, SmtpCase, SmtpListener, smtp_matrix};
use common::*;
use dovecot::{Dovecot, USERS};

const OK: &str = "OK remote authentication successful";
const REJECTED: &str = "NO remote server rejected your credentials";
const CANNOT_CONNECT: &str = "NO [ALERT] Couldn't contact remote authentication server";
const SYNC_ERROR: &str = "NO [ALERT] error synchronizing with remote authentication server";
const UNAVAILABLE: &str = "NO [ALERT] The remote authentication server is currently unavailable";
const UNEXPECTED: &str = "NO [ALERT] Unexpected response from remote authentication server";
const INTERNAL: &str = "NO [ALERT] saslauthd internal error";
const BAD_CHARACTER: &str = "NO CR, LF or NUL in the login or password";

const WRONG_PW: &str = "Wrong-Dove-pw-0815";
const FAKE_PW: &str = "fake\"pw\\x";
const UTF8_PW: &str = "pä ss \"q\\ €";
/// The name the tests' `/etc/hosts` may map to 127.0.0.1.
const LAB_NAME: &str = "rimap-lab.test";

/// `--rimap-timeout` for the fake-server cases.
const SHORT_TIMEOUT: u64 = 2;

fn secrets() -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = USERS.iter().map(|(_, pw)| pw.as_bytes().to_vec()).collect();
    for pw in [WRONG_PW, FAKE_PW, UTF8_PW, "Crlf-secret"] {
        all.push(pw.as_bytes().to_vec());
    }
    all
}

fn dovecot_password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, pw)| *pw)
        .expect("lab user")
}

/// Our daemon (`-a rimap -d` + `args`) with a private `/etc/hosts` and `nsswitch.conf`.
struct Lab {
    daemon: Daemon,
    etc: PrivateHosts,
}

impl Lab {
    fn start(args: &[&str]) -> Lab {
        let etc = PrivateHosts::new();
        let options = Options {
            extra_binds: etc.binds(),
            ..Options::default()
        };
        let mut all = vec!["-a", "rimap"];
        all.extend_from_slice(args);
        Lab {
            daemon: Daemon::start_with(&ours_bin("saslauthd"), &all, options),
            etc,
        }
    }

    fn socket(&self) -> PathBuf {
        self.daemon.socket()
    }

    /// Maps `name` to `addr` in the daemon's `/etc/hosts`.
    fn add_host(&self, addr: &str, name: &str) {
        self.etc.add(addr, name);
    }

    /// One request; asserts the reply and returns how long it took.
    fn expect(&self, user: &str, pass: &str, want: &str) -> Duration {
        let started = Instant::now();
        let got = auth(&self.socket(), user, pass, "imap", "");
        assert_eq!(
            got.as_deref(),
            Some(want),
            "user {user:?}\n--- log ---\n{}",
            self.daemon.log()
        );
        started.elapsed()
    }

    fn assert_log_has(&self, needle: &str) {
        assert!(
            self.daemon.wait_for_log(needle, Duration::from_secs(2)),
            "the log lacks {needle:?}\n--- log ---\n{}",
            self.daemon.log()
        );
    }

    /// No password in the log; SIGTERM; exit 0.
    fn finish(self) {
        let Lab { mut daemon, etc } = self;
        let secrets = secrets();
        let secrets: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
        daemon.assert_log_free_of(&secrets);
        let status = daemon.terminate();
        assert!(
            status.success(),
            "daemon exited with {status:?}\n--- log ---\n{}",
            daemon.log()
        );
        drop(etc);
    }
}

/// The Dovecot cases every transport must pass.
fn dovecot_cases(lab: &Lab, dovecot: &Dovecot) {
    let context = || format!("--- dovecot log ---\n{}", dovecot.log());
    let check = |user: &str, pass: &str, want: &str| {
        let got = auth(&lab.socket(), user, pass, "imap", "");
        assert_eq!(
            got.as_deref(),
            Some(want),
            "user {user:?}\n--- log ---\n{}\n{}",
            lab.daemon.log(),
            context()
        );
    };
    check("dimap", dovecot_password("dimap"), OK);
    check("dimap", WRONG_PW, REJECTED);
    check("nosuchuser", WRONG_PW, REJECTED);
    // Quoted string with escapes, like upstream.
    check("dquote", dovecot_password("dquote"), OK);
    // `"`, `\`, space and UTF-8: an IMAP literal.
    check("dutf", dovecot_password("dutf"), OK);
    check("dutf", "pä ss \"q\\ ", REJECTED);
    lab.assert_log_has("auth failure: [user=dimap] [service=imap] [realm=] [mech=rimap] [reason=remote server rejected your credentials]");
}

// ---------------------------------------------------------------------------------------------
// Real Dovecot
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_imap_on_ipv4_and_ipv6() {
    require_root();
    let dovecot = Dovecot::start();
    let port = dovecot.imap_port.to_string();
    // Upstream's host/port form, then ours.
    for server in [
        format!("127.0.0.1/{port}"),
        format!("::1/{port}"),
        format!("[::1]:{port}"),
        format!("imap://localhost:{port}"),
    ] {
        let lab = Lab::start(&["-O", &server]);
        dovecot_cases(&lab, &dovecot);
        lab.assert_log_has("in clear text");
        lab.finish();
    }
}

#[test]
fn starttls_on_ipv4_and_ipv6() {
    require_root();
    let dovecot = Dovecot::start();
    let ca = dovecot.ca_file();
    let ca = ca.to_str().expect("utf-8 path");
    let port = dovecot.imap_port.to_string();
    for server in [format!("127.0.0.1:{port}"), format!("imap://[::1]:{port}")] {
        let lab = Lab::start(&["-O", &server, "--rimap-starttls", "--rimap-ca-file", ca]);
        dovecot_cases(&lab, &dovecot);
        lab.assert_log_has("over STARTTLS, certificate checked for");
        lab.finish();
    }
}

#[test]
fn imaps_on_ipv4_ipv6_and_by_name() {
    require_root();
    let dovecot = Dovecot::start();
    let ca = dovecot.ca_file();
    let ca = ca.to_str().expect("utf-8 path");
    let port = dovecot.imaps_port.to_string();
    for server in [
        format!("imaps://127.0.0.1:{port}"),
        format!("imaps://[::1]:{port}/"),
        format!("imaps://localhost:{port}"),
    ] {
        let lab = Lab::start(&["-O", &server, "--rimap-ca-file", ca]);
        dovecot_cases(&lab, &dovecot);
        lab.assert_log_has("over implicit TLS, certificate checked for");
        lab.finish();
    }
    // The name to verify may differ from the host connected to.
    let lab = Lab::start(&[
        "-O",
        &format!("imaps://127.0.0.1:{port}"),
        "--rimap-ca-file",
        ca,
        "--rimap-tls-name",
        "localhost",
    ]);
    lab.expect("dimap", dovecot_password("dimap"), OK);
    lab.finish();
}

#[test]
fn untrusted_certificates_and_wrong_names_are_refused() {
    require_root();
    let dovecot = Dovecot::start();
    let ca = dovecot.ca_file();
    let ca = ca.to_str().expect("utf-8 path");
    let imaps = format!("imaps://127.0.0.1:{}", dovecot.imaps_port);
    let imap = format!("127.0.0.1/{}", dovecot.imap_port);

    // Self-signed, no CA file: the system's trust store does not know it.
    let lab = Lab::start(&["-O", &imaps]);
    lab.expect("dimap", dovecot_password("dimap"), CANNOT_CONNECT);
    lab.assert_log_has("rimap: TLS handshake with 127.0.0.1:");
    lab.assert_log_has("certificate verify failed");
    lab.assert_log_has("self-signed certificate");
    lab.assert_log_has("against the system's trust store");
    lab.finish();

    let lab = Lab::start(&["-O", &imap, "--rimap-starttls"]);
    lab.expect("dimap", dovecot_password("dimap"), CANNOT_CONNECT);
    lab.assert_log_has("self-signed certificate");
    lab.finish();

    // Trusted, but issued for other names.
    let lab = Lab::start(&[
        "-O",
        &imaps,
        "--rimap-ca-file",
        ca,
        "--rimap-tls-name",
        "mail.example.org",
    ]);
    lab.expect("dimap", dovecot_password("dimap"), CANNOT_CONNECT);
    lab.assert_log_has("hostname mismatch");
    lab.finish();

    // A CA file that is not the issuer.
    let other = TempDir::new("other-ca");
    dovecot::self_signed_certificate(other.path());
    let other_ca = other.join("cert.pem");
    let lab = Lab::start(&["-O", &imaps, "--rimap-ca-file", other_ca.to_str().unwrap()]);
    lab.expect("dimap", dovecot_password("dimap"), CANNOT_CONNECT);
    lab.assert_log_has("certificate verify failed");
    lab.finish();
}

/// Debian's testsaslauthd (upstream sasl2-bin) against our daemon in rimap mode.
#[test]
fn upstream_testsaslauthd_against_our_rimap() {
    require_root();
    assert!(
        Path::new(UPSTREAM_TESTSASLAUTHD).exists(),
        "{UPSTREAM_TESTSASLAUTHD} is missing: install sasl2-bin"
    );
    let dovecot = Dovecot::start();
    let ca = dovecot.ca_file();
    let server = format!("imaps://127.0.0.1:{}", dovecot.imaps_port);
    let lab = Lab::start(&["-O", &server, "--rimap-ca-file", ca.to_str().unwrap()]);
    let socket = lab.socket();
    let socket = socket.to_str().unwrap();
    for (user, pass, code, line) in [
        ("dimap", dovecot_password("dimap"), 0, "0: OK \"Success.\""),
        ("dutf", dovecot_password("dutf"), 0, "0: OK \"Success.\""),
        (
            "dquote",
            dovecot_password("dquote"),
            0,
            "0: OK \"Success.\"",
        ),
        ("dimap", WRONG_PW, 255, "0: NO \"authentication failed\""),
        (
            "nosuchuser",
            WRONG_PW,
            255,
            "0: NO \"authentication failed\"",
        ),
    ] {
        let out = run_plain(
            Path::new(UPSTREAM_TESTSASLAUTHD),
            &["-u", user, "-p", pass, "-f", socket],
            None,
        );
        assert_eq!(
            (out.code(), out.stdout_str().trim_end()),
            (code, line),
            "testsaslauthd -u {user}\n{}\n--- log ---\n{}",
            out.output(),
            lab.daemon.log()
        );
    }
    lab.finish();
}

/// The private Postfix + libsasl2 instance, driven by swaks, in front of our daemon in
/// `-a rimap -O imaps://127.0.0.1:PORT --rimap-ca-file` mode.
#[test]
fn postfix_smtp_auth_through_rimap() {
    require_root();
    let dovecot = Dovecot::start();
    let ca = dovecot.ca_file();
    let server = format!("imaps://127.0.0.1:{}", dovecot.imaps_port);
    let lab = Lab::start(&["-O", &server, "--rimap-ca-file", ca.to_str().unwrap()]);
    let postfix = Postfix::start(&[SmtpListener {
        name: "rimap".into(),
        saslauthd_socket: lab.socket(),
    }]);
    const CASES: &[SmtpCase] = &[
        ("dimap", "Dove-Lab-pw1", SmtpAuth::Accepted),
        ("dutf", UTF8_PW, SmtpAuth::Accepted),
        ("dimap", WRONG_PW, SmtpAuth::Rejected),
        ("nosuchuser", WRONG_PW, SmtpAuth::Rejected),
    ];
    assert_eq!(dovecot_password("dimap"), CASES[0].1);
    assert_eq!(dovecot_password("dutf"), CASES[1].1);
    let failures = smtp_matrix(postfix.port("rimap"), CASES, Advert::Required);
    assert!(
        failures.is_empty(),
        "{}\n--- daemon log ---\n{}\n{}",
        failures.join("\n"),
        lab.daemon.log(),
        postfix.diagnostics()
    );
    lab.assert_log_has("auth success: [user=dimap] [service=smtp] [realm=] [mech=rimap]");
    drop(postfix);
    lab.finish();
}

/// Not a test of behaviour: prints the per-verification latency of each transport
/// (`cargo test --test rimap latency -- --nocapture`).
#[test]
fn latency_of_each_transport() {
    require_root();
    let dovecot = Dovecot::start();
    let ca = dovecot.ca_file();
    let ca = ca.to_str().unwrap();
    let plain = format!("127.0.0.1/{}", dovecot.imap_port);
    let imaps = format!("imaps://127.0.0.1:{}", dovecot.imaps_port);
    let mut report = Vec::new();
    for (name, args) in [
        ("plain", vec!["-O", plain.as_str()]),
        (
            "STARTTLS",
            vec![
                "-O",
                plain.as_str(),
                "--rimap-starttls",
                "--rimap-ca-file",
                ca,
            ],
        ),
        ("IMAPS", vec!["-O", imaps.as_str(), "--rimap-ca-file", ca]),
    ] {
        let lab = Lab::start(&args);
        let mut times: Vec<Duration> = (0..20)
            .map(|_| lab.expect("dimap", dovecot_password("dimap"), OK))
            .collect();
        times.sort();
        report.push(format!(
            "{name} median {:.1} ms, max {:.1} ms",
            times[times.len() / 2].as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0
        ));
        lab.finish();
    }
    println!(
        "rimap latency per verification (20 each, Dovecot on 127.0.0.1): {}",
        report.join("; ")
    );
}

// ---------------------------------------------------------------------------------------------
// Scripted fake server
// ---------------------------------------------------------------------------------------------

fn fake_lab(fake: &FakeImap, extra: &[&str]) -> Lab {
    let server = format!("127.0.0.1/{}", fake.port());
    let timeout = SHORT_TIMEOUT.to_string();
    let mut args = vec!["-O", server.as_str(), "--rimap-timeout", timeout.as_str()];
    args.extend_from_slice(extra);
    Lab::start(&args)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Waits (bounded) until the fake has received `needle` on some connection.
fn wait_received(fake: &FakeImap, needle: &[u8]) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        if fake.received().iter().any(|c| contains(c, needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn scripted_server_replies() {
    require_root();
    let limit = Duration::from_millis(1500);
    for (behaviour, want) in [
        (Behaviour::Accept, OK),
        (Behaviour::Reject, REJECTED),
        (Behaviour::Bad, UNEXPECTED),
        (Behaviour::ByeGreeting, UNAVAILABLE),
        (Behaviour::NoGreeting, UNAVAILABLE),
        (Behaviour::PreauthGreeting, UNEXPECTED),
        (Behaviour::GarbageGreeting, UNEXPECTED),
        (Behaviour::CloseAfterLogin, UNEXPECTED),
        (Behaviour::HugeGreeting, SYNC_ERROR),
        (Behaviour::HugeReply, INTERNAL),
        (Behaviour::UntaggedThenOk, OK),
        (Behaviour::SplitOk, OK),
    ] {
        let fake = FakeImap::start(behaviour);
        let lab = fake_lab(&fake, &[]);
        let took = lab.expect("fakeuser", FAKE_PW, want);
        assert!(
            took < limit,
            "{behaviour:?} took {took:?}\n{}",
            lab.daemon.log()
        );
        let sent_login = wait_received(
            &fake,
            b"saslauthd LOGIN \"fakeuser\" \"fake\\\"pw\\\\x\"\r\n",
        );
        let greeted = !matches!(
            behaviour,
            Behaviour::ByeGreeting
                | Behaviour::NoGreeting
                | Behaviour::PreauthGreeting
                | Behaviour::GarbageGreeting
                | Behaviour::HugeGreeting
        );
        assert_eq!(
            sent_login,
            greeted,
            "{behaviour:?}: LOGIN sent: {:?}",
            fake.received()
        );
        // LOGOUT follows a verdict from the server, and only then.
        let verdict = matches!(
            behaviour,
            Behaviour::Accept | Behaviour::Reject | Behaviour::UntaggedThenOk | Behaviour::SplitOk
        );
        assert_eq!(
            wait_received(&fake, b" LOGOUT\r\n"),
            verdict,
            "{behaviour:?}"
        );
        assert_eq!(fake.connection_count(), 1, "{behaviour:?}");
        lab.finish();
    }
}

#[test]
fn a_silent_server_is_cut_off_by_the_deadline() {
    require_root();
    for behaviour in [Behaviour::SilentAfterGreeting, Behaviour::Silent] {
        let fake = FakeImap::start(behaviour);
        let lab = fake_lab(&fake, &[]);
        let took = lab.expect("fakeuser", FAKE_PW, UNEXPECTED);
        let deadline = Duration::from_secs(SHORT_TIMEOUT);
        assert!(
            took >= deadline - Duration::from_millis(100)
                && took < deadline + Duration::from_secs(2),
            "{behaviour:?} took {took:?}"
        );
        lab.assert_log_has("within the timeout (2 s)");
        lab.finish();
    }
}

#[test]
fn a_server_not_listening_is_no_quickly() {
    require_root();
    let port = dovecot::free_port();
    let lab = Lab::start(&["-O", &format!("127.0.0.1/{port}")]);
    let took = lab.expect("fakeuser", FAKE_PW, CANNOT_CONNECT);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    lab.assert_log_has(&format!(
        "rimap: connect to 127.0.0.1:{port}: Connection refused"
    ));
    // Both addresses of localhost are tried.
    let lab2 = Lab::start(&["-O", &format!("localhost:{port}")]);
    lab2.expect("fakeuser", FAKE_PW, CANNOT_CONNECT);
    lab2.assert_log_has(&format!("rimap: connect to localhost[127.0.0.1]:{port}"));
    lab2.assert_log_has(&format!("rimap: connect to localhost[::1]:{port}"));
    lab2.finish();
    lab.finish();
}

#[test]
fn literals_for_eight_bit_passwords() {
    require_root();
    let fake = FakeImap::start(Behaviour::Accept);
    let lab = fake_lab(&fake, &[]);
    lab.expect("fakeuser", UTF8_PW, OK);
    let mut want = format!("saslauthd LOGIN \"fakeuser\" {{{}}}\r\n", UTF8_PW.len()).into_bytes();
    want.extend_from_slice(UTF8_PW.as_bytes());
    want.extend_from_slice(b"\r\n");
    assert!(wait_received(&fake, &want), "{:?}", fake.received());
    lab.finish();

    // A server that refuses the literal has refused the login.
    let fake = FakeImap::start(Behaviour::RefuseLiterals);
    let lab = fake_lab(&fake, &[]);
    lab.expect("fakeuser", UTF8_PW, REJECTED);
    let announced = format!("saslauthd LOGIN \"fakeuser\" {{{}}}\r\n", UTF8_PW.len());
    assert!(wait_received(&fake, announced.as_bytes()));
    let received = fake.all_received();
    assert!(
        !contains(&received, UTF8_PW.as_bytes()),
        "the literal went out before the server's go-ahead: {received:?}"
    );
    lab.finish();
}

#[test]
fn cr_lf_never_reach_the_server() {
    require_root();
    let fake = FakeImap::start(Behaviour::Accept);
    let lab = fake_lab(&fake, &[]);
    lab.expect("fakeuser", "Crlf-secret\r\nA2 LOGOUT", BAD_CHARACTER);
    lab.expect("fakeuser", "Crlf-secret\n", BAD_CHARACTER);
    lab.expect("fake\r\nuser", "Crlf-secret", BAD_CHARACTER);
    lab.assert_log_has("which no IMAP command can carry; not sent");
    assert_eq!(fake.connection_count(), 0, "{:?}", fake.received());
    assert!(fake.all_received().is_empty());
    // The daemon still works.
    lab.expect("fakeuser", FAKE_PW, OK);
    assert_eq!(fake.connection_count(), 1);
    assert!(!contains(&fake.all_received(), b"Crlf-secret"));
    lab.finish();
}

#[test]
fn starttls_refused_means_no_login() {
    require_root();
    let fake = FakeImap::start(Behaviour::Accept);
    let lab = fake_lab(&fake, &["--rimap-starttls"]);
    lab.expect("fakeuser", FAKE_PW, UNEXPECTED);
    lab.assert_log_has("rimap: STARTTLS refused or failed at 127.0.0.1:");
    assert!(wait_received(&fake, b" STARTTLS\r\n"));
    assert!(!contains(&fake.all_received(), b"LOGIN"));
    lab.finish();
}

#[test]
fn realm_is_appended_under_dash_r() {
    require_root();
    let fake = FakeImap::start(Behaviour::Accept);
    let lab = fake_lab(&fake, &["-r"]);
    let got = auth(&lab.socket(), "fakeuser", FAKE_PW, "smtp", "example.org");
    assert_eq!(got.as_deref(), Some(OK));
    assert!(wait_received(
        &fake,
        b"saslauthd LOGIN \"fakeuser@example.org\" "
    ));
    lab.finish();
}

#[test]
fn unresolvable_host_at_start_then_resolvable() {
    require_root();
    let fake = FakeImap::start(Behaviour::Accept);
    let lab = Lab::start(&[
        "-O",
        &format!("{LAB_NAME}/{}", fake.port()),
        "--rimap-timeout",
        "2",
    ]);
    // The daemon started although the name does not resolve; requests fail cleanly.
    lab.expect("fakeuser", FAKE_PW, CANNOT_CONNECT);
    lab.assert_log_has(&format!("rimap: cannot resolve {LAB_NAME}:"));
    lab.expect("fakeuser", FAKE_PW, CANNOT_CONNECT);
    assert!(lab.daemon.running());
    // The name appears (DNS is back): the next request uses it.
    lab.add_host("127.0.0.1", LAB_NAME);
    lab.expect("fakeuser", FAKE_PW, OK);
    assert_eq!(fake.connection_count(), 1);
    lab.finish();
}

#[test]
fn startup_errors_exit_1() {
    let dir = TempDir::new("rimap-usage");
    let run_dir = dir.join("run");
    let run_dir = run_dir.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["-a", "rimap"],
            "failed to initialize mechanism rimap: no hostname specified",
        ),
        (
            vec!["-a", "rimap", "-O", "127.0.0.1:0"],
            "failed to initialize mechanism rimap",
        ),
        (
            vec!["-a", "rimap", "-O", "imaps://h", "--rimap-starttls"],
            "cannot be combined",
        ),
        (
            vec!["-a", "rimap", "-O", "h", "--rimap-ca-file", "/x"],
            "need TLS",
        ),
        (
            vec![
                "-a",
                "rimap",
                "-O",
                "imaps://h",
                "--rimap-ca-file",
                "/nonexistent.pem",
            ],
            "/nonexistent.pem",
        ),
        (vec!["-a", "shadow", "--rimap-starttls"], "need -a rimap"),
        (vec!["-a", "rimap", "-O", "h", "--rimap-timeout", "0"], "0"),
    ] {
        let mut all = args.clone();
        all.extend_from_slice(&["-m", run_dir, "-d"]);
        let out = run_plain(&ours_bin("saslauthd"), &all, None);
        assert_eq!(out.code(), 1, "{args:?}: {}", out.output());
        assert!(out.output().contains(needle), "{args:?}: {}", out.output());
    }
}
