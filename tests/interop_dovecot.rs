//! Interop tier of the Dovecot front end: unmodified Postfix 3.7 (`smtpd_sasl_type =
//! dovecot`, no libsasl) and Exim 4.96 (its `dovecot` authenticator, unpacked from
//! Debian's .deb, never installed) in front of our `--dovecot-socket`, driven by swaks,
//! side by side with the private Dovecot auth server as the reference. Needs root;
//! loopback only.
#![forbid(unsafe_code)]

mod common;
#[path = "common/dovecot.rs"]
mod dovecot;

use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use common::dovecot_client::{plain, wait_for_socket};
use common::exim::{self, Exim};
use common::fixtures::*;
use common::postfix::{DovecotListener, Postfix, auth_result, swaks, swaks_with};
use common::*;
use dovecot::DovecotAuth;

/// Postfix's replies with `smtpd_sasl_type = dovecot` (dovecot-auth.md §9).
const ACCEPTED: &str = "235 2.7.0 Authentication successful";
const REJECTED: &str = "535 5.7.8 Error: authentication failed: (reason unavailable)";
const TEMPFAIL: &str = "454 4.7.0 Temporary authentication failure: (reason unavailable)";

/// The host's `postfix` uid (smtpd's user; our socket's owner, as the README says).
fn postfix_uid() -> String {
    nix::unistd::User::from_name("postfix")
        .ok()
        .flatten()
        .expect("user postfix (package postfix)")
        .uid
        .to_string()
}

/// Our daemon with a Dovecot socket at `socket` owned by `owner`.
fn ours(mech: &[&str], socket: &str, owner: &str, options: Options) -> Daemon {
    let mut args: Vec<&str> = mech.to_vec();
    args.extend_from_slice(&["--dovecot-socket", socket, "--dovecot-socket-user", owner]);
    let daemon = Daemon::start_with(&ours_bin("saslauthd"), &args, options);
    if !socket.starts_with("inet:") {
        assert!(wait_for_socket(Path::new(socket)), "{}", daemon.log());
    }
    daemon
}

/// The SMTP reply to AUTH (swaks through `port`).
fn smtp(port: u16, mech: &str, user: &str, password: &str) -> String {
    let r = swaks(port, mech, user, password);
    auth_result(&r.stdout_str()).unwrap_or_else(|| format!("no AUTH reply: {}", r.output()))
}

fn listener(name: &str, sasl_path: &str, chroot: bool) -> DovecotListener {
    DovecotListener {
        name: name.into(),
        sasl_path: sasl_path.into(),
        chroot,
        max_processes: Some(1),
    }
}

/// Postfix in front of our socket, of Dovecot's, of ours in the chroot at Debian's
/// `private/auth`, and of ours over TCP on 127.0.0.1 and ::1.
#[test]
fn postfix_with_smtpd_sasl_type_dovecot() {
    let reference = DovecotAuth::start("%u");
    let dir = TempDir::new("pf-dovecot");
    let socket = dir.join("auth");
    let socket = socket.to_str().unwrap();
    let uid = postfix_uid();
    let daemon = ours(&["-a", "shadow"], socket, &uid, Options::default());
    let (v4, v6) = (dovecot::free_port(), dovecot::free_port());
    let (tcp4, tcp6) = (format!("inet:127.0.0.1:{v4}"), format!("inet:[::1]:{v6}"));
    let pf = Postfix::start_dovecot(&[
        listener("ours", socket, false),
        listener("dovecot", &reference.socket().display().to_string(), false),
        listener("chrooted", "private/auth", true),
        listener("tcp4", &tcp4, false),
        listener("tcp6", &tcp6, false),
    ]);
    // Debian's layout: the socket inside the chroot, owned by postfix.
    let private = pf.dir().join("spool/private/auth");
    let chrooted = ours(
        &["-a", "shadow"],
        private.to_str().unwrap(),
        &uid,
        Options::default(),
    );
    let tcp = [&tcp4, &tcp6].map(|endpoint| {
        Daemon::start(
            &ours_bin("saslauthd"),
            &["-a", "shadow", "--dovecot-socket", endpoint],
        )
    });
    let cases: &[(&str, &str, &str, &str)] = &[
        // (user, password, ours, dovecot)
        ("yuser", YUSER_PW, ACCEPTED, ACCEPTED),
        ("yuser", "wrong-Yes-Crypt-pw1", REJECTED, REJECTED),
        ("nosuchuser", "wrong-Yes-Crypt-pw1", REJECTED, REJECTED),
        ("special", SPECIAL_PW, ACCEPTED, ACCEPTED),
        // libsasl's split at the last @: the realm is ignored without -r.
        ("suser@example.org", SUSER_PW, ACCEPTED, REJECTED),
        // Deliberate difference: Dovecot's shadow passdb accepts expired accounts.
        ("expired", EXPIRED_PW, REJECTED, ACCEPTED),
        ("pwexpired", PWEXPIRED_PW, REJECTED, ACCEPTED),
        ("locked", LOCKED_PW, REJECTED, REJECTED),
    ];
    let mut failures = Vec::new();
    for mech in ["PLAIN", "LOGIN"] {
        for &(user, pw, want_ours, want_dovecot) in cases {
            for (name, want) in [
                ("ours", want_ours),
                ("dovecot", want_dovecot),
                ("chrooted", want_ours),
            ] {
                let got = smtp(pf.port(name), mech, user, pw);
                if got != want {
                    failures.push(format!(
                        "  - {name} AUTH {mech} {user:?}: want {want:?}, got {got:?}"
                    ));
                }
            }
        }
        for name in ["tcp4", "tcp6"] {
            let got = smtp(pf.port(name), mech, "suser", SUSER_PW);
            if got != ACCEPTED {
                failures.push(format!("  - {name} AUTH {mech}: got {got:?}"));
            }
        }
    }
    // An unknown user and a wrong password look the same to the SMTP client.
    let unknown_user = smtp(pf.port("ours"), "PLAIN", "nosuchuser", "x-pw-1");
    assert_eq!(unknown_user, REJECTED, "{}", daemon.log());
    assert_eq!(
        unknown_user,
        smtp(pf.port("ours"), "PLAIN", "yuser", "x-pw-1")
    );
    assert!(
        failures.is_empty(),
        "{}\n{}\n--- ours ---\n{}\n--- chrooted ---\n{}",
        failures.join("\n"),
        pf.diagnostics(),
        daemon.log(),
        chrooted.log()
    );
    // smtpd records user= as the session's sasl_username (the login as typed).
    assert!(
        pf.log().contains("sasl_username=nosuchuser"),
        "{}",
        pf.log()
    );
    let mut secrets: Vec<String> = cases.iter().map(|c| c.1.to_string()).collect();
    secrets.extend(cases.iter().map(|c| plain(c.0, c.1)));
    secrets.push("x-pw-1".to_string());
    secrets.extend(["nosuchuser", "yuser"].map(|user| plain(user, "x-pw-1")));
    for d in tcp {
        d.finish(&secrets);
    }
    chrooted.finish(&secrets);
    daemon.finish(&secrets);
}

/// One smtpd process (maxproc 1) keeps its one connection to us across SMTP sessions;
/// once our daemon is gone, Postfix answers 454.
#[test]
fn postfix_reuses_its_connection_and_tempfails_when_we_are_gone() {
    let dir = TempDir::new("pf-dovecot");
    let socket = dir.join("auth");
    let socket = socket.to_str().unwrap();
    let daemon = ours(
        &["-a", "shadow"],
        socket,
        &postfix_uid(),
        Options::default(),
    );
    let pf = Postfix::start_dovecot(&[listener("ours", socket, false)]);
    let port = pf.port("ours");
    for _ in 0..3 {
        assert_eq!(
            smtp(port, "PLAIN", "suser", SUSER_PW),
            ACCEPTED,
            "{}",
            daemon.log()
        );
    }
    assert_eq!(smtp(port, "LOGIN", "suser", "wrong-pw-1"), REJECTED);
    // (The harness's readiness probe, as root, is the other connection.)
    let from_smtpd = format!("[peer uid={} ", postfix_uid());
    let connections = daemon
        .log()
        .lines()
        .filter(|l| l.contains("dovecot client connected") && l.contains(&from_smtpd))
        .count();
    assert_eq!(
        connections,
        1,
        "one smtpd, one connection:\n{}\n{}",
        daemon.log(),
        pf.log()
    );
    daemon.finish(&[SUSER_PW]);
    assert_eq!(
        smtp(port, "PLAIN", "suser", SUSER_PW),
        TEMPFAIL,
        "{}",
        pf.diagnostics()
    );
}

/// `-a pam` through Postfix: the `smtp` PAM stack (Postfix's `service=smtp`) with
/// pam_access on the client address, which arrives as `rip=` and becomes PAM_RHOST.
#[test]
fn postfix_with_pam_and_pam_access_on_the_client_address() {
    let (pam_d, mut options) = pam_d_options();
    fs::write(
        pam_d.join("smtp"),
        "# test: the smtp stack with pam_access on PAM_RHOST\n\
         auth     required  pam_unix.so nodelay\n\
         account  required  pam_access.so accessfile=/etc/pam.d/smtp-access.conf\n\
         account  required  pam_unix.so\n",
    )
    .unwrap();
    fs::write(
        pam_d.join("smtp-access.conf"),
        "- : ALL : 127.0.0.2\n+ : ALL : ALL\n",
    )
    .unwrap();
    options.wait_ready = true;
    let dir = TempDir::new("pf-dovecot");
    let socket = dir.join("auth");
    let socket = socket.to_str().unwrap();
    let daemon = ours(&["-a", "pam"], socket, &postfix_uid(), options);
    let pf = Postfix::start_dovecot(&[listener("ours", socket, false)]);
    let port = pf.port("ours");
    assert_eq!(
        smtp(port, "PLAIN", "suser", SUSER_PW),
        ACCEPTED,
        "{}",
        daemon.log()
    );
    assert_eq!(smtp(port, "LOGIN", "suser", "wrong-pw-1"), REJECTED);
    // The same account from 127.0.0.2: pam_access refuses the client address.
    let from = swaks_from("127.0.0.2", port, "suser", SUSER_PW);
    assert_eq!(from.as_deref(), Some(REJECTED), "{}", daemon.log());
    assert!(
        daemon
            .log()
            .contains("[service=smtp] [realm=] [remote=127.0.0.2] [mech=pam]"),
        "{}",
        daemon.log()
    );
    daemon.finish(&[SUSER_PW]);
    drop(pam_d);
}

/// swaks AUTH PLAIN from a given local address.
fn swaks_from(local: &str, port: u16, user: &str, password: &str) -> Option<String> {
    let r = swaks_with(port, "PLAIN", user, password, &["--local-interface", local]);
    auth_result(&r.stdout_str())
}

/// Exim's dovecot authenticator in front of us and of Dovecot: 235, 535, and 435 once
/// our daemon is gone.
#[test]
fn exim_with_its_dovecot_authenticator() {
    let reference = DovecotAuth::start("%u");
    let dir = TempDir::new("exim-dovecot");
    let socket: PathBuf = dir.join("auth");
    let ours_exim = Exim::start(&socket);
    let theirs_exim = Exim::start(reference.socket());
    // Exim's receiving process runs as Debian-exim: its uid owns our socket.
    let daemon = ours(
        &["-a", "shadow"],
        socket.to_str().unwrap(),
        &ours_exim.uid.to_string(),
        Options::default(),
    );
    for mech in ["PLAIN", "LOGIN"] {
        for (user, pw, want) in [
            ("yuser", YUSER_PW, exim::ACCEPTED),
            ("yuser", "wrong-Yes-Crypt-pw1", exim::REJECTED),
            ("nosuchuser", YUSER_PW, exim::REJECTED),
            ("special", SPECIAL_PW, exim::ACCEPTED),
        ] {
            let got = smtp(ours_exim.port, mech, user, pw);
            let reference = smtp(theirs_exim.port, mech, user, pw);
            assert_eq!(
                (&got[..], &reference[..]),
                (want, want),
                "AUTH {mech} {user}\n{}\n{}",
                ours_exim.log(),
                daemon.log()
            );
        }
    }
    daemon.finish(&[YUSER_PW, SPECIAL_PW]);
    sleep(Duration::from_millis(100));
    assert_eq!(
        smtp(ours_exim.port, "PLAIN", "yuser", YUSER_PW),
        exim::UNAVAILABLE,
        "{}",
        ours_exim.log()
    );
}
