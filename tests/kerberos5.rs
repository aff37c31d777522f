//! `-a kerberos5` against a private MIT KDC (tests/common/kdc.rs), ours and Debian's
//! saslauthd side by side.
//!
//! Daemons run in a private mount and UTS namespace with the hostname `kdchost` (their
//! host principal is `host/kdchost@EXAMPLE.TEST`), reading a private krb5.conf
//! (`KRB5_CONFIG`) and a private saslauthd.conf (`-O`). The KDC listens on a free loopback
//! port. Needs root (namespaces); fails without it.

#![forbid(unsafe_code)]

mod common;

use common::clients::{NO, OK, run_client};
use common::kdc::{HOSTNAME, Kdc, Krb5Conf, Principal, REALM, SilentKdc, daemon_env};
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

const GOOD_PW: &str = "Krb-good-pw1";
const EXPIRED_PW: &str = "Krb-expired-pw1";
const DISABLED_PW: &str = "Krb-disabled-pw1";
const PWEXPIRED_PW: &str = "Krb-pwexpired-pw1";
const INSTANCE_PW: &str = "Krb-instance-pw1";
const SPECIAL_PW: &str = "pä ss \"q\\ €";

const PRINCIPALS: &[Principal] = &[
    Principal {
        name: "kgood",
        password: Some(GOOD_PW),
        flags: "",
    },
    Principal {
        name: "kexpired",
        password: Some(EXPIRED_PW),
        flags: "-expire 2020-01-01",
    },
    Principal {
        name: "kdisabled",
        password: Some(DISABLED_PW),
        flags: "-allow_tix",
    },
    Principal {
        name: "kpwexpired",
        password: Some(PWEXPIRED_PW),
        flags: "-pwexpire 2020-01-01",
    },
    Principal {
        name: "kspecial",
        password: Some(SPECIAL_PW),
        flags: "",
    },
    Principal {
        name: "kinst/mail",
        password: Some(INSTANCE_PW),
        flags: "",
    },
];

const GET_INIT_CREDS_FAILED: &str = "NO krb5_get_init_creds_password failed";
const VERIFY_FAILED: &str = "NO krb5_verify_init_creds failed";
const INTERNAL: &str = "NO saslauthd internal error";
const PRINCIPAL_NAME: &str = "NO saslauthd principal name error";

/// Files a daemon reads, in one directory: krb5.conf, saslauthd.conf, an empty replay-cache
/// directory and the name of a credential cache that must never appear.
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new(krb5: Krb5Conf, saslauthd_conf: &str) -> Setup {
        let dir = TempDir::new("krb5-setup");
        let setup = Setup { dir };
        fs::create_dir(setup.rcache_dir()).expect("rcache dir");
        krb5.default_ccache(&setup.ccache())
            .write(&setup.krb5_conf());
        fs::write(setup.saslauthd_conf(), saslauthd_conf).expect("write saslauthd.conf");
        setup
    }

    fn krb5_conf(&self) -> PathBuf {
        self.dir.join("krb5.conf")
    }

    fn saslauthd_conf(&self) -> PathBuf {
        self.dir.join("saslauthd.conf")
    }

    fn rcache_dir(&self) -> PathBuf {
        self.dir.join("rcache")
    }

    fn ccache(&self) -> PathBuf {
        self.dir.join("ccache")
    }

    /// `program -a kerberos5 -O saslauthd.conf extra…` in a namespace named `kdchost`.
    fn start(&self, program: &Path, extra: &[&str]) -> Daemon {
        let conf = self.saslauthd_conf();
        let mut args = vec!["-a", "kerberos5", "-O", conf.to_str().expect("UTF-8 path")];
        args.extend_from_slice(extra);
        Daemon::start_with(
            program,
            &args,
            Options {
                hostname: Some(HOSTNAME.to_string()),
                env: daemon_env(&self.krb5_conf(), &self.rcache_dir()),
                ..Options::default()
            },
        )
    }

    /// No credential cache and no replay cache was written.
    fn assert_no_cache_files(&self) {
        assert!(!self.ccache().exists(), "a credential cache was written");
        let rcache: Vec<_> = fs::read_dir(self.rcache_dir())
            .expect("read rcache dir")
            .collect();
        assert!(rcache.is_empty(), "replay cache files: {rcache:?}");
    }
}

/// The saslauthd.conf of most tests: the host keytab, and a forced instance for `smtp`.
fn conf_with_keytab(kdc: &Kdc) -> String {
    format!(
        "# saslauthd-rs test\nkrb5_keytab: {}\nkrb5_smtp_instance: mail\n",
        kdc.host_keytab().display()
    )
}

/// One request: (login, password, service, realm, expected reply).
type Case = Expected<'static>;

/// The cases both daemons must answer alike (measured with Debian's saslauthd).
const COMPAT_CASES: &[Case] = &[
    ("kgood", GOOD_PW, "imap", "", "OK"),
    ("kgood", "Krb-good-pw2", "imap", "", GET_INIT_CREDS_FAILED),
    (
        "nosuchprincipal",
        GOOD_PW,
        "imap",
        "",
        GET_INIT_CREDS_FAILED,
    ),
    ("kexpired", EXPIRED_PW, "imap", "", GET_INIT_CREDS_FAILED),
    ("kdisabled", DISABLED_PW, "imap", "", GET_INIT_CREDS_FAILED),
    (
        "kpwexpired",
        PWEXPIRED_PW,
        "imap",
        "",
        GET_INIT_CREDS_FAILED,
    ),
    ("kspecial", SPECIAL_PW, "imap", "", "OK"),
    ("kspecial", "pä ss \"q\\", "imap", "", GET_INIT_CREDS_FAILED),
    // The request realm is appended (no -r needed).
    ("kgood", GOOD_PW, "imap", REALM, "OK"),
    (
        "kgood",
        GOOD_PW,
        "imap",
        "example.test",
        GET_INIT_CREDS_FAILED,
    ),
    (
        "kgood",
        GOOD_PW,
        "imap",
        "OTHER.TEST",
        GET_INIT_CREDS_FAILED,
    ),
    // A realm in the login itself.
    ("kgood@EXAMPLE.TEST", GOOD_PW, "imap", "", "OK"),
    // Malformed names.
    ("kgood\\", GOOD_PW, "imap", "", INTERNAL),
    ("kgood@OTHER.TEST", GOOD_PW, "imap", REALM, INTERNAL),
    // krb5_smtp_instance: mail.
    ("kinst", INSTANCE_PW, "smtp", "", "OK"),
    ("kinst/mail", INSTANCE_PW, "smtp", "", "OK"),
    ("kinst/other", INSTANCE_PW, "smtp", "", PRINCIPAL_NAME),
    ("kinst", INSTANCE_PW, "imap", "", GET_INIT_CREDS_FAILED),
    ("kinst/mail", INSTANCE_PW, "imap", "", "OK"),
];

fn passwords(cases: &[Case]) -> Vec<&'static str> {
    cases.iter().map(|c| c.1).collect()
}

#[test]
fn every_principal_state_answers_as_debian_saslauthd_does() {
    let kdc = Kdc::start(REALM, PRINCIPALS);
    let setup = Setup::new(
        Krb5Conf::new(REALM).realm(REALM, kdc.port()),
        &conf_with_keytab(&kdc),
    );
    let ours = setup.start(&ours_bin("saslauthd"), &[]);
    let upstream = setup.start(Path::new(UPSTREAM_SASLAUTHD), &[]);
    let (f_ours, f_up) = mismatches_side_by_side(&ours, &upstream, COMPAT_CASES.iter().copied());
    assert!(
        f_ours.is_empty() && f_up.is_empty(),
        "ours:\n{}\nDebian's:\n{}\n--- our log ---\n{}\n--- Debian's log ---\n{}\n{}",
        f_ours.join("\n"),
        f_up.join("\n"),
        ours.log(),
        upstream.log(),
        kdc.log()
    );
    // Interop: Debian's testsaslauthd against both.
    for daemon in [&ours, &upstream] {
        let client = Path::new(UPSTREAM_TESTSASLAUTHD);
        let good = run_client(client, &["-u", "kgood", "-p", GOOD_PW], &daemon.socket());
        assert_eq!(good.stdout_str(), OK, "{}", good.output());
        let bad = run_client(client, &["-u", "kgood", "-p", "x"], &daemon.socket());
        assert_eq!(bad.stdout_str(), NO, "{}", bad.output());
        let realm = ["-u", "kgood", "-r", REALM, "-s", "imap", "-p", GOOD_PW];
        let with_realm = run_client(client, &realm, &daemon.socket());
        assert_eq!(with_realm.stdout_str(), OK, "{}", with_realm.output());
    }
    // libkrb5's reasons reach our log; no password does.
    assert!(
        ours.log().contains(
            "auth_krb5: krb5_get_init_creds_password: Client's entry in database has expired"
        ),
        "{}",
        ours.log()
    );
    setup.assert_no_cache_files();
    ours.finish(&passwords(COMPAT_CASES));
}

/// Asks both daemons the same question; both must give `want`.
fn both_answer(daemons: &[&Daemon], login: &str, password: &str, realm: &str, want: &str) {
    for daemon in daemons {
        let got = auth(&daemon.socket(), login, password, "imap", realm);
        assert_eq!(
            got.as_deref(),
            Some(want),
            "{login:?} realm {realm:?}\n--- log ---\n{}",
            daemon.log()
        );
    }
}

#[test]
fn only_a_kdc_that_knows_the_host_key_is_believed() {
    let kdc = Kdc::start(REALM, PRINCIPALS);
    // Another KDC for the same realm that knows kgood's password, but has its own
    // host/kdchost key.
    let spoofed = Kdc::start(REALM, &PRINCIPALS[..1]);
    let real_conf = Krb5Conf::new(REALM).realm(REALM, kdc.port());
    let setup = Setup::new(real_conf, &conf_with_keytab(&kdc));
    let ours = setup.start(&ours_bin("saslauthd"), &[]);
    let upstream = setup.start(Path::new(UPSTREAM_SASLAUTHD), &[]);
    let both = [&ours, &upstream];
    both_answer(&both, "kgood", GOOD_PW, "", "OK");
    // krb5.conf now names the spoofed KDC: read again for the next request.
    Krb5Conf::new(REALM)
        .realm(REALM, spoofed.port())
        .default_ccache(&setup.ccache())
        .write(&setup.krb5_conf());
    both_answer(&both, "kgood", GOOD_PW, "", VERIFY_FAILED);
    both_answer(&both, "kgood", "wrong", "", GET_INIT_CREDS_FAILED);
    Krb5Conf::new(REALM)
        .realm(REALM, kdc.port())
        .default_ccache(&setup.ccache())
        .write(&setup.krb5_conf());
    both_answer(&both, "kgood", GOOD_PW, "", "OK");
    setup.assert_no_cache_files();
    drop(upstream);
    ours.finish(&[GOOD_PW, "wrong"]);

    // No keytab at all (none configured, the default one missing): fail closed.
    let no_keytab = Setup::new(
        Krb5Conf::new(REALM)
            .realm(REALM, kdc.port())
            .default_keytab(Path::new("/nonexistent/krb5.keytab")),
        "",
    );
    let ours = no_keytab.start(&ours_bin("saslauthd"), &[]);
    let upstream = no_keytab.start(Path::new(UPSTREAM_SASLAUTHD), &[]);
    both_answer(&[&ours, &upstream], "kgood", GOOD_PW, "", VERIFY_FAILED);
    drop(upstream);
    ours.finish(&[GOOD_PW]);

    // The default keytab works when krb5.conf names it; a keytab with another key for
    // the host principal does not; an unknown keytab type is an internal error once the
    // password is right.
    let default_keytab = Setup::new(
        Krb5Conf::new(REALM)
            .realm(REALM, kdc.port())
            .default_keytab(&kdc.host_keytab()),
        "",
    );
    let ours = default_keytab.start(&ours_bin("saslauthd"), &[]);
    let upstream = default_keytab.start(Path::new(UPSTREAM_SASLAUTHD), &[]);
    both_answer(&[&ours, &upstream], "kgood", GOOD_PW, "", "OK");
    drop(upstream);
    ours.finish(&[GOOD_PW]);
    let other_key = Setup::new(
        Krb5Conf::new(REALM).realm(REALM, kdc.port()),
        &format!("krb5_keytab: {}\n", spoofed.host_keytab().display()),
    );
    let ours = other_key.start(&ours_bin("saslauthd"), &[]);
    let upstream = other_key.start(Path::new(UPSTREAM_SASLAUTHD), &[]);
    both_answer(&[&ours, &upstream], "kgood", GOOD_PW, "", VERIFY_FAILED);
    drop(upstream);
    ours.finish(&[GOOD_PW]);
    let bad_type = Setup::new(
        Krb5Conf::new(REALM).realm(REALM, kdc.port()),
        "krb5_keytab: NOSUCHTYPE:/etc/krb5.keytab\n",
    );
    let ours = bad_type.start(&ours_bin("saslauthd"), &[]);
    let upstream = bad_type.start(Path::new(UPSTREAM_SASLAUTHD), &[]);
    both_answer(&[&ours, &upstream], "kgood", GOOD_PW, "", INTERNAL);
    both_answer(
        &[&ours, &upstream],
        "kgood",
        "wrong",
        "",
        GET_INIT_CREDS_FAILED,
    );
    drop(upstream);
    ours.finish(&[GOOD_PW, "wrong"]);
}

#[test]
fn realm_concatenation_is_not_doubled() {
    let kdc = Kdc::start(REALM, PRINCIPALS);
    let setup = Setup::new(
        Krb5Conf::new(REALM).realm(REALM, kdc.port()),
        &conf_with_keytab(&kdc),
    );
    let ours = setup.start(&ours_bin("saslauthd"), &["-r"]);
    let cases: &[Case] = &[
        ("kgood", GOOD_PW, "imap", REALM, "OK"),
        ("kgood", "wrong", "imap", REALM, GET_INIT_CREDS_FAILED),
        ("kgood", GOOD_PW, "imap", "", "OK"),
        ("kgood@EXAMPLE.TEST", GOOD_PW, "imap", "", "OK"),
        ("kinst", INSTANCE_PW, "smtp", REALM, "OK"),
        (
            "kgood",
            GOOD_PW,
            "imap",
            "OTHER.TEST",
            GET_INIT_CREDS_FAILED,
        ),
    ];
    let failures = mismatches(&ours, cases.iter().copied());
    assert!(
        failures.is_empty(),
        "{}\n--- log ---\n{}",
        failures.join("\n"),
        ours.log()
    );
    let client = Path::new(UPSTREAM_TESTSASLAUTHD);
    let r = run_client(
        client,
        &["-u", "kgood", "-r", REALM, "-p", GOOD_PW],
        &ours.socket(),
    );
    assert_eq!(r.stdout_str(), OK, "{}", r.output());
    // Upstream (issue #832) appends the realm twice: every request with a realm fails.
    let upstream = setup.start(Path::new(UPSTREAM_SASLAUTHD), &["-r"]);
    both_answer(&[&upstream], "kgood", GOOD_PW, REALM, INTERNAL);
    both_answer(&[&upstream], "kgood", GOOD_PW, "", "OK");
    ours.finish(&passwords(cases));
}

/// Sends one request on its own thread; the reply and how long it took.
fn timed(
    daemon: &Daemon,
    login: &'static str,
    realm: &'static str,
) -> thread::JoinHandle<(Option<String>, Duration)> {
    let socket = daemon.socket();
    thread::spawn(move || {
        let start = Instant::now();
        let reply = auth(&socket, login, GOOD_PW, "imap", realm);
        (reply, start.elapsed())
    })
}

/// The daemon's kerberos5 helper processes (its children named `saslauthd-krb5`).
fn helper_processes(daemon: i32) -> Vec<i32> {
    let mut children = Vec::new();
    for task in fs::read_dir(format!("/proc/{daemon}/task")).expect("read the daemon's tasks") {
        let path = task.expect("task").path().join("children");
        let text = fs::read_to_string(path).unwrap_or_default();
        children.extend(
            text.split_whitespace()
                .filter_map(|pid| pid.parse::<i32>().ok()),
        );
    }
    children
        .into_iter()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "saslauthd-krb5")
        })
        .collect()
}

#[test]
fn a_silent_kdc_gets_no_within_the_deadline_and_frees_the_thread() {
    const SILENT: &str = "SILENT.TEST";
    const DEADLINE: Duration = Duration::from_secs(2);
    let kdc = Kdc::start(REALM, PRINCIPALS);
    let silent = SilentKdc::start();
    let setup = Setup::new(
        Krb5Conf::new(REALM)
            .realm(REALM, kdc.port())
            .realm(SILENT, silent.port()),
        &conf_with_keytab(&kdc),
    );
    // Two verification threads; the deadline is --verify-timeout.
    let ours = setup.start(
        &ours_bin("saslauthd"),
        &["-n", "2", "--verify-timeout", "2"],
    );
    // One request hangs on the silent KDC; another user, on the working KDC, is served
    // meanwhile.
    let hanging = timed(&ours, "kgood", SILENT);
    thread::sleep(Duration::from_millis(200));
    let (served, served_in) = timed(&ours, "kgood", "").join().unwrap();
    let (refused, refused_in) = hanging.join().unwrap();
    assert_eq!(served.as_deref(), Some("OK"), "{}", ours.log());
    assert!(
        served_in < Duration::from_secs(1),
        "served in {served_in:?}"
    );
    assert_eq!(
        refused.as_deref(),
        Some(GET_INIT_CREDS_FAILED),
        "{}",
        ours.log()
    );
    assert!(
        refused_in >= DEADLINE && refused_in < DEADLINE + Duration::from_millis(500),
        "NO after {refused_in:?}, deadline {DEADLINE:?}\n{}",
        ours.log()
    );
    // Both threads hang; a third request waits for one of them. It is served as soon as
    // the deadline frees them (not after libkrb5's ~27 s).
    let first = timed(&ours, "kgood", SILENT);
    let second = timed(&ours, "kdisabled", SILENT);
    thread::sleep(Duration::from_millis(200));
    let (queued, queued_in) = timed(&ours, "kgood", "").join().unwrap();
    for hung in [first, second] {
        let (reply, took) = hung.join().unwrap();
        assert_eq!(reply.as_deref(), Some(GET_INIT_CREDS_FAILED));
        assert!(took < DEADLINE + Duration::from_millis(500), "{took:?}");
    }
    assert_eq!(queued.as_deref(), Some("OK"), "{}", ours.log());
    assert!(
        queued_in < DEADLINE + Duration::from_millis(500),
        "the queued request waited {queued_in:?}\n{}",
        ours.log()
    );
    // The hung helpers were killed: at most one helper per verification thread is left.
    let helpers = helper_processes(ours.pid());
    assert!(
        (1..=2).contains(&helpers.len()),
        "helper processes left: {helpers:?}"
    );
    // A helper holds its pipes and none of the daemon's sockets or files (what else it has
    // came from whoever started the daemon), and can't be dumped (it holds passwords).
    for pid in &helpers {
        let fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("read the helper's fds")
            .filter_map(|e| fs::read_link(e.expect("fd").path()).ok())
            .map(|target| target.display().to_string())
            .collect();
        assert!(
            fds.iter().all(
                |t| !t.starts_with("socket:") && !t.contains(&ours.dir().display().to_string())
            ),
            "helper {pid}: {fds:?}"
        );
        let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
    }
    eprintln!(
        "measured: silent KDC → NO after {refused_in:?} (deadline {DEADLINE:?}); concurrent \
         request served in {served_in:?}; request queued behind two hung ones served in \
         {queued_in:?}"
    );
    assert!(
        ours.log().contains("no verdict within 2 s") && ours.log().contains("stopped the helper"),
        "{}",
        ours.log()
    );
    ours.finish(&[GOOD_PW]);
}

/// Prints the latency of one verification, ours (libkrb5 in a reused helper process) and
/// Debian's (libkrb5 in its worker process), against the same KDC on loopback:
/// `cargo test --test kerberos5 latency -- --nocapture`. Checks the replies only.
#[test]
fn latency_against_a_local_kdc() {
    let kdc = Kdc::start(REALM, PRINCIPALS);
    let setup = Setup::new(
        Krb5Conf::new(REALM).realm(REALM, kdc.port()),
        &conf_with_keytab(&kdc),
    );
    let mut report = Vec::new();
    for (name, program) in [
        ("ours", ours_bin("saslauthd")),
        ("Debian's", PathBuf::from(UPSTREAM_SASLAUTHD)),
    ] {
        let daemon = setup.start(&program, &[]);
        for (what, password, want) in [
            ("OK", GOOD_PW, "OK"),
            ("wrong", "x-wrong", GET_INIT_CREDS_FAILED),
        ] {
            let mut times: Vec<Duration> = (0..20)
                .map(|_| {
                    let start = Instant::now();
                    let got = auth(&daemon.socket(), "kgood", password, "imap", "");
                    assert_eq!(got.as_deref(), Some(want), "{}", daemon.log());
                    start.elapsed()
                })
                .collect();
            times.sort();
            report.push(format!(
                "{name} {what} median {:.1} ms, max {:.1} ms",
                times[times.len() / 2].as_secs_f64() * 1000.0,
                times[times.len() - 1].as_secs_f64() * 1000.0
            ));
        }
    }
    println!(
        "kerberos5 latency per verification (20 each, KDC on 127.0.0.1): {}",
        report.join("; ")
    );
}

/// A KDC that can't be reached (nothing listens on its port) or that never answers is an
/// outage, not a wrong password: the replies keep upstream's text, but the throttle
/// counts none of them, so with a one-second penalty from the first failure on, nothing
/// waits — neither the next outage (with another password) nor the good login after.
#[test]
fn unreachable_and_silent_kdcs_build_up_no_penalty() {
    const DOWN: &str = "DOWN.TEST";
    const SILENT: &str = "SILENT.TEST";
    const DEADLINE: Duration = Duration::from_secs(1);
    let kdc = Kdc::start(REALM, PRINCIPALS);
    let silent = SilentKdc::start();
    let setup = Setup::new(
        Krb5Conf::new(REALM)
            .realm(REALM, kdc.port())
            .realm(DOWN, common::kdc::free_udp_tcp_port())
            .realm(SILENT, silent.port()),
        &conf_with_keytab(&kdc),
    );
    let mut args = vec!["--verify-timeout", "1"];
    args.extend(ONE_SECOND_PENALTY);
    let ours = setup.start(&ours_bin("saslauthd"), &args);
    let socket = ours.socket();
    let timed = |password: &str, realm: &str| {
        let start = Instant::now();
        let reply = auth(&socket, "kgood", password, "imap", realm);
        (reply, start.elapsed())
    };
    for (n, (password, realm, limit)) in [
        ("Krb-other-pw1", DOWN, Duration::from_millis(900)),
        ("Krb-other-pw2", DOWN, Duration::from_millis(900)),
        (
            "Krb-other-pw3",
            SILENT,
            DEADLINE + Duration::from_millis(900),
        ),
        ("Krb-other-pw4", DOWN, Duration::from_millis(900)),
    ]
    .into_iter()
    .enumerate()
    {
        let (reply, took) = timed(password, realm);
        assert_eq!(
            reply.as_deref(),
            Some(GET_INIT_CREDS_FAILED),
            "outage {n}\n{}",
            ours.log()
        );
        assert!(took < limit, "outage {n} took {took:?}\n{}", ours.log());
    }
    let (reply, took) = timed(GOOD_PW, REALM);
    assert_eq!(reply.as_deref(), Some("OK"), "{}", ours.log());
    assert!(
        took < Duration::from_millis(900),
        "the login after the outages waited {took:?}\n{}",
        ours.log()
    );
    // A wrong password is still a verdict: the next attempt waits its penalty (here as
    // long as the deadline: it is answered `NO verification timed out` then, unverified).
    let (reply, _) = timed("Krb-wrong-pw1", REALM);
    assert_eq!(reply.as_deref(), Some(GET_INIT_CREDS_FAILED));
    let (reply, took) = timed("Krb-wrong-pw2", REALM);
    assert_eq!(reply.as_deref(), Some("NO verification timed out"));
    assert!(
        took >= Duration::from_millis(900),
        "{took:?}\n{}",
        ours.log()
    );
    ours.finish(&[GOOD_PW, "Krb-other-pw1", "Krb-wrong-pw1"]);
}
