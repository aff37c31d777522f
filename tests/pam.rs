//! Integration tests of `-a pam`: our daemon with the real libpam and Debian's modules
//! (pam_unix, pam_access, pam_exec, pam_echo, pam_deny), in a private mount namespace where
//! `tests/fixtures/pam.d` is bind-mounted over `/etc/pam.d` next to the fixture users (see
//! tests/common/mod.rs). The host's `/etc` is never touched; everything needs root.
//!
//! Fixture services: `sasl-unix` (pam_unix, `nodelay`), `sasl-slow` (pam_unix with its real
//! fail delay), `sasl-access` (pam_access on PAM_RHOST, rules in `sasl-access.conf`),
//! `sasl-chatty` (modules that send info and error messages first), `sasl-rootok`
//! (`auth sufficient pam_rootok.so` first, like Debian's `su`), `smtp`, and `other`
//! (pam_deny) for every other name. The tests of the default service policy use the
//! host's own, unmodified `/etc/pam.d` (Debian's `su`, `chfn`, `runuser`... stacks), read
//! only.

#![forbid(unsafe_code)]

mod common;

use common::fixtures::*;
use common::*;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// A wrong password for every fixture user.
const WRONG_PW: &str = "Wrong-pam-pw-0815";

const AUTH_ERROR: &str = "NO PAM auth error";
const ACCT_ERROR: &str = "NO PAM acct error";
const NOT_ALLOWED: &str = "NO PAM service not allowed";

/// Every fixture password and [`WRONG_PW`]: none may appear in a daemon log.
fn secrets() -> Vec<&'static str> {
    [FIXTURE_PASSWORDS, &[WRONG_PW]].concat()
}

/// pam_unix asks for a 2 s fail delay; libpam randomises it to [1.0 s, 3.0 s).
const MIN_FAIL_DELAY: Duration = Duration::from_secs(1);
const MAX_FAIL_DELAY: Duration = Duration::from_secs(3);

/// Our daemon (`-a pam -d` + `extra`) with the fixture pam.d.
fn start(extra: &[&str]) -> PamDaemon {
    PamDaemon::start(&ours_bin("saslauthd"), extra)
}

/// 4-field request; asserts the reply.
fn expect(lab: &PamDaemon, user: &str, pass: &str, service: &str, want: &str) {
    let got = auth(&lab.daemon.socket(), user, pass, service, "");
    assert_eq!(
        got.as_deref(),
        Some(want),
        "user {user:?} service {service:?}\n--- log ---\n{}",
        lab.daemon.log()
    );
}

/// 5-field request (client address); asserts the reply.
fn expect5(lab: &PamDaemon, user: &str, pass: &str, service: &str, addr: &str, want: &str) {
    let got = auth5(&lab.daemon.socket(), user, pass, service, "", addr);
    assert_eq!(
        got.as_deref(),
        Some(want),
        "user {user:?} service {service:?} client address {addr:?}\n--- log ---\n{}",
        lab.daemon.log()
    );
}

fn assert_log_has(lab: &PamDaemon, needle: &str) {
    assert!(
        lab.daemon.wait_for_log(needle, Duration::from_secs(2)),
        "the log lacks {needle:?}\n--- log ---\n{}",
        lab.daemon.log()
    );
}

// ---------------------------------------------------------------------------------------------
// pam_unix
// ---------------------------------------------------------------------------------------------

#[test]
fn good_passwords_are_ok() {
    let lab = start(&[]);
    expect(&lab, "suser", SUSER_PW, "sasl-unix", "OK");
    expect(&lab, "yuser", YUSER_PW, "sasl-unix", "OK");
    expect(&lab, "special", SPECIAL_PW, "sasl-unix", "OK");
    // The login is used as-is: without -r the realm is ignored.
    let got = auth(
        &lab.daemon.socket(),
        "suser",
        SUSER_PW,
        "sasl-unix",
        "example.org",
    );
    assert_eq!(got.as_deref(), Some("OK"));
    assert_log_has(
        &lab,
        "auth success: [user=suser] [service=sasl-unix] [realm=] [mech=pam]",
    );
    lab.daemon.finish(&secrets());
}

#[test]
fn wrong_password_is_pam_auth_error() {
    let lab = start(&[]);
    expect(&lab, "suser", WRONG_PW, "sasl-unix", AUTH_ERROR);
    expect(&lab, "special", "pä ss \"q\\ ", "sasl-unix", AUTH_ERROR);
    assert_log_has(
        &lab,
        "auth_pam: pam_authenticate failed: Authentication failure",
    );
    assert_log_has(
        &lab,
        "auth failure: [user=suser] [service=sasl-unix] [realm=] [mech=pam] [reason=PAM auth error]",
    );
    lab.daemon.finish(&secrets());
}

#[test]
fn unknown_user_and_locked_account_are_refused() {
    let lab = start(&[]);
    expect(&lab, "nosuchuser", SUSER_PW, "sasl-unix", AUTH_ERROR);
    assert_log_has(
        &lab,
        "auth_pam: pam_authenticate failed: User not known to the underlying authentication module",
    );
    expect(&lab, "locked", LOCKED_PW, "sasl-unix", AUTH_ERROR);
    lab.daemon.finish(&secrets());
}

#[test]
fn expired_account_and_password_are_pam_acct_error() {
    let lab = start(&[]);
    expect(&lab, "expired", EXPIRED_PW, "sasl-unix", ACCT_ERROR);
    assert_log_has(
        &lab,
        "auth_pam: pam_acct_mgmt failed: User account has expired",
    );
    expect(&lab, "pwexpired", PWEXPIRED_PW, "sasl-unix", ACCT_ERROR);
    // Expiry is only revealed to someone who knows the password.
    expect(&lab, "expired", WRONG_PW, "sasl-unix", AUTH_ERROR);
    lab.daemon.finish(&secrets());
}

#[test]
fn realm_is_appended_under_dash_r() {
    let lab = start(&["-r"]);
    let got = auth(
        &lab.daemon.socket(),
        "user",
        REALM_PW,
        "sasl-unix",
        "example.org",
    );
    assert_eq!(got.as_deref(), Some("OK"), "{}", lab.daemon.log());
    assert_log_has(
        &lab,
        "auth success: [user=user@example.org] [service=sasl-unix] [realm=example.org] [mech=pam]",
    );
    lab.daemon.finish(&secrets());
}

// ---------------------------------------------------------------------------------------------
// PAM_RHOST
// ---------------------------------------------------------------------------------------------

#[test]
fn client_address_reaches_pam_access_as_rhost() {
    let lab = start(&[]);
    // sasl-access.conf: `- : ALL : 192.0.2.66`, then `+ : ALL : ALL`.
    expect5(
        &lab,
        "suser",
        SUSER_PW,
        "sasl-access",
        "192.0.2.66;41234",
        ACCT_ERROR,
    );
    assert_log_has(&lab, "auth_pam: pam_acct_mgmt failed: Permission denied");
    assert_log_has(
        &lab,
        "[service=sasl-access] [realm=] [remote=192.0.2.66;41234] [mech=pam] [reason=PAM acct error]",
    );
    expect5(
        &lab,
        "suser",
        SUSER_PW,
        "sasl-access",
        "198.51.100.7;41235",
        "OK",
    );
    // Only the part before ';' is the host.
    expect5(
        &lab,
        "suser",
        SUSER_PW,
        "sasl-access",
        "192.0.2.66",
        ACCT_ERROR,
    );
    expect5(
        &lab,
        "suser",
        SUSER_PW,
        "sasl-access",
        "192.0.2.660;1",
        "OK",
    );
    // No address (4 fields, or an empty 5th field): no PAM_RHOST, allowed.
    expect(&lab, "suser", SUSER_PW, "sasl-access", "OK");
    expect5(&lab, "suser", SUSER_PW, "sasl-access", ";25", "OK");
    // The address does not replace the password check.
    expect5(
        &lab,
        "suser",
        WRONG_PW,
        "sasl-access",
        "198.51.100.7;1",
        AUTH_ERROR,
    );
    lab.daemon.finish(&secrets());
}

// ---------------------------------------------------------------------------------------------
// Conversation
// ---------------------------------------------------------------------------------------------

#[test]
fn info_and_error_messages_before_the_password_prompt_do_not_break_the_stack() {
    let lab = start(&[]);
    expect(&lab, "suser", SUSER_PW, "sasl-chatty", "OK");
    // pam_exec sent both through our conversation (pam_echo stays quiet under PAM_SILENT).
    assert_log_has(&lab, "PAM conversation: info message: Hello from pam_exec");
    assert_log_has(
        &lab,
        "PAM conversation: error message: /bin/false failed: exit code 1",
    );
    assert_log_has(
        &lab,
        "PAM conversation: answering the prompt \"Password: \" with the password",
    );
    expect(&lab, "suser", WRONG_PW, "sasl-chatty", AUTH_ERROR);
    lab.daemon.finish(&secrets());
}

// ---------------------------------------------------------------------------------------------
// Services and the service policy
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_service_falls_to_other_which_denies() {
    let lab = start(&[]);
    for service in ["imap", "no-such-service", "", "SASL-UNIX/../nothing"] {
        expect(&lab, "suser", SUSER_PW, service, AUTH_ERROR);
    }
    // PAM itself lower-cases the name and drops any path.
    expect(&lab, "suser", SUSER_PW, "SASL-Unix", "OK");
    expect(&lab, "suser", SUSER_PW, "../../x/sasl-unix", "OK");
    lab.daemon.finish(&secrets());
}

#[test]
fn allow_list_refuses_services_outside_it() {
    let lab = start(&["--pam-services", "sasl-unix,smtp"]);
    assert_log_has(&lab, "pam: service policy: allowed: sasl-unix,smtp");
    expect(&lab, "suser", SUSER_PW, "sasl-unix", "OK");
    expect(&lab, "suser", SUSER_PW, "smtp", "OK");
    expect(&lab, "suser", SUSER_PW, "SMTP", "OK");
    // sasl-access exists and would say OK: the policy refuses it before PAM runs.
    for service in ["sasl-access", "su", "imap", ""] {
        expect(&lab, "suser", SUSER_PW, service, NOT_ALLOWED);
    }
    assert_log_has(
        &lab,
        "pam: service \"su\" refused by the service policy (allowed: sasl-unix,smtp) [user=suser]",
    );
    assert_log_has(
        &lab,
        "auth failure: [user=suser] [service=su] [realm=] [mech=pam] [reason=PAM service not allowed]",
    );
    lab.daemon.finish(&secrets());
}

#[test]
fn service_map_and_fallback_service() {
    let lab = start(&[
        "--pam-services",
        "imap,pop,smtp,sieve",
        "--pam-service-map",
        "imap=sasl-unix,pop=sasl-access",
        "--pam-service",
        "smtp",
    ]);
    // imap → sasl-unix; pop → sasl-access (RHOST rules apply); smtp, sieve → smtp.
    expect(&lab, "suser", SUSER_PW, "imap", "OK");
    expect5(&lab, "suser", SUSER_PW, "pop", "192.0.2.66;110", ACCT_ERROR);
    expect5(&lab, "suser", SUSER_PW, "pop", "198.51.100.7;110", "OK");
    expect(&lab, "suser", SUSER_PW, "sieve", "OK");
    expect(&lab, "suser", WRONG_PW, "sieve", AUTH_ERROR);
    // Targets are not names a client may send.
    expect(&lab, "suser", SUSER_PW, "sasl-unix", NOT_ALLOWED);
    assert_log_has(&lab, "pam: service \"imap\" mapped to \"sasl-unix\"");
    lab.daemon.finish(&secrets());
}

#[test]
fn forced_service_without_allow_list_takes_every_name() {
    let lab = start(&["--pam-service", "sasl-unix"]);
    for service in ["imap", "su", "", "other"] {
        expect(&lab, "suser", SUSER_PW, service, "OK");
    }
    lab.daemon.finish(&secrets());
}

/// Services refused without `--pam-services`, as a client may spell them (PAM lower-cases
/// the name and drops any path).
const RISKY: &[&str] = &[
    "su",
    "SU",
    "../su",
    "/etc/pam.d/su",
    "su-l",
    "runuser",
    "runuser-l",
    "chfn",
    "chsh",
    "sudo",
    "sudo-i",
    "passwd",
    "login",
    "sshd",
    "cron",
    "polkit-1",
];

/// Our daemon with the host's own /etc/pam.d and the fixture users.
fn start_with_host_stacks(extra: &[&str]) -> Daemon {
    for stack in ["su", "runuser", "chfn", "common-auth", "other"] {
        let path = PathBuf::from("/etc/pam.d").join(stack);
        assert!(
            path.is_file(),
            "{} is missing: these tests need Debian's own PAM stacks (util-linux, passwd, \
             libpam-runtime)",
            path.display()
        );
    }
    let mut args = vec!["-a", "pam"];
    args.extend_from_slice(extra);
    Daemon::start(&ours_bin("saslauthd"), &args)
}

/// Debian's `su`, `chfn` and `runuser` start with `auth sufficient pam_rootok.so`, which
/// upstream (and we, before) answered `OK` for any password because the daemon's real uid
/// is 0. Without `--pam-services` they, and the other interactive stacks, are refused
/// before PAM runs, whatever the spelling; ordinary names still work.
#[test]
fn su_with_a_wrong_password_is_refused_under_the_default_policy() {
    let d = start_with_host_stacks(&[]);
    for service in RISKY {
        let got = auth(&d.socket(), "suser", WRONG_PW, service, "");
        assert_eq!(
            got.as_deref(),
            Some(NOT_ALLOWED),
            "service {service:?}\n--- log ---\n{}",
            d.log()
        );
    }
    // Refused with the right password too: the stack itself is off limits.
    let got = auth(&d.socket(), "suser", SUSER_PW, "su", "");
    assert_eq!(got.as_deref(), Some(NOT_ALLOWED), "{}", d.log());
    // A mail service name without a stack of its own reaches `other` (common-auth).
    let got = auth(&d.socket(), "suser", SUSER_PW, "smtp", "");
    assert_eq!(got.as_deref(), Some("OK"), "{}", d.log());
    let log = d.log();
    for needle in [
        "pam: without --pam-services these PAM services are refused (NO PAM service not allowed): su,su-l,runuser,runuser-l,chfn,chsh,",
        "they trust the daemon's root uid (pam_rootok)",
        "pam: service policy: allowed: any name not refused by default",
        "pam: service \"../su\" refused by the service policy (refused by default: its stack trusts root (pam_rootok); see --pam-services) [user=suser]",
        "auth failure: [user=suser] [service=SU] [realm=] [mech=pam] [reason=PAM service not allowed]",
    ] {
        assert!(
            log.contains(needle),
            "the log lacks {needle:?}\n--- log ---\n{log}"
        );
    }
    d.finish(&secrets());
}

/// `--pam-services` overrides the default; even then pam_rootok can't vouch: PAM runs with
/// a non-zero real uid on its thread, so `su`'s `auth sufficient pam_rootok.so` fails and
/// common-auth's pam_unix decides (both answers come after its real fail delay, waited on a
/// timer). `runuser` has nothing after pam_rootok: refused for every password.
#[test]
fn an_allow_list_overrides_the_default_and_pam_rootok_still_cannot_vouch() {
    let d = start_with_host_stacks(&["--pam-services", "su,runuser,smtp"]);
    let socket = d.socket();
    let attempts: Vec<_> = [
        ("su", WRONG_PW, AUTH_ERROR),
        ("SU", SUSER_PW, "OK"),
        ("runuser", WRONG_PW, AUTH_ERROR),
        ("runuser", SUSER_PW, AUTH_ERROR),
        ("chfn", SUSER_PW, NOT_ALLOWED),
    ]
    .into_iter()
    .map(|(service, pass, want)| {
        let socket = socket.clone();
        thread::spawn(move || (service, want, auth(&socket, "suser", pass, service, "")))
    })
    .collect();
    for attempt in attempts {
        let (service, want, got) = attempt.join().expect("request thread");
        assert_eq!(got.as_deref(), Some(want), "service {service}\n{}", d.log());
    }
    let log = d.log();
    assert!(
        log.contains("pam: service policy: allowed: su,runuser,smtp"),
        "{log}"
    );
    assert!(
        !log.contains("refused (NO PAM service not allowed)"),
        "{log}"
    );
    assert!(
        log.contains("pam: PAM transactions run with the real uid 65535 on their thread"),
        "{log}"
    );
    d.finish(&secrets());
}

/// The startup scan finds local stacks that trust root (the fixture `sasl-rootok`) and
/// refuses them too; a rename or fallback to a refused service is a startup error.
#[test]
fn local_stacks_that_trust_root_are_found_at_startup() {
    let lab = start(&[]);
    assert_log_has(
        &lab,
        "pam: refused because their auth stack in /etc/pam.d reaches pam_rootok: sasl-rootok",
    );
    expect(&lab, "suser", WRONG_PW, "sasl-rootok", NOT_ALLOWED);
    expect(&lab, "suser", SUSER_PW, "Sasl-Rootok", NOT_ALLOWED);
    expect(&lab, "suser", SUSER_PW, "sasl-unix", "OK");
    lab.daemon.finish(&secrets());

    for (option, value, named) in [
        ("--pam-service", "sasl-rootok", "sasl-rootok"),
        ("--pam-service-map", "imap=SU", "su"),
    ] {
        let (_pam_d, options) = pam_d_options();
        let failed = Daemon::try_start_with(
            &ours_bin("saslauthd"),
            &["-a", "pam", option, value],
            options,
        )
        .err()
        .unwrap_or_else(|| panic!("{option} {value} started"));
        assert_eq!(
            failed.status.and_then(|s| s.code()),
            Some(1),
            "{}",
            failed.log
        );
        let want = format!(
            "failed to initialize mechanism pam: {option} names the PAM service {named}, which \
             is refused by default"
        );
        assert!(
            failed.log.contains(&want),
            "{want:?}\n--- log ---\n{}",
            failed.log
        );
    }
}

#[test]
fn pam_options_are_usage_errors_without_dash_a_pam_or_when_malformed() {
    require_root();
    for args in [
        &["-a", "shadow", "--pam-services", "smtp", "-d"][..],
        &["-a", "pam", "--pam-services", "smtp,,imap", "-d"][..],
        &["-a", "pam", "--pam-service-map", "imap", "-d"][..],
        &["-a", "pam", "--pam-service", "a/b", "-d"][..],
    ] {
        let tmp = TempDir::new("pam-usage");
        let mut full = vec!["-m", tmp.path().to_str().unwrap()];
        full.extend_from_slice(args);
        let r = run_plain(&ours_bin("saslauthd"), &full, None);
        assert_eq!(r.code(), 1, "{args:?}: {}", r.output());
        assert!(
            r.stderr_str().contains("--pam-service"),
            "{args:?}: {}",
            r.output()
        );
        assert!(!tmp.join("mux").exists(), "{args:?} started anyway");
    }
}

// ---------------------------------------------------------------------------------------------
// The verification pool and slow failures
// ---------------------------------------------------------------------------------------------

/// The log line each verification writes when pam_unix asks for the password, i.e. once it
/// holds a pool slot and is about to fail slowly.
const PROMPTED: &str = "PAM conversation: answering the prompt";

struct Timed {
    reply: Option<String>,
    /// From sending the request to its reply.
    latency: Duration,
    done: Instant,
}

fn timed_request(socket: PathBuf, user: &str, pass: &str, service: &str) -> Timed {
    let opts = ExchangeOpts {
        timeout: Duration::from_secs(30),
        check_eof: false,
        ..ExchangeOpts::default()
    };
    let r = exchange(
        &socket,
        &request(&[user.as_bytes(), pass.as_bytes(), service.as_bytes(), b""]),
        &opts,
    );
    Timed {
        reply: r.text(),
        latency: r.elapsed,
        done: Instant::now(),
    }
}

/// Waits (at most 10 s after `started`) until `count` verifications have reached the
/// password prompt, then a moment more so that the rest are read and queued.
fn wait_until_prompted(lab: &PamDaemon, count: usize, started: Instant) {
    while lab.daemon.log().matches(PROMPTED).count() < count {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{count} slow verifications did not start\n--- log ---\n{}",
            lab.daemon.log()
        );
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(100));
}

/// Sends `slow` wrong-password requests to `sasl-slow` at once, waits until `in_flight` of
/// them are being verified (plus a moment for the rest to queue), then sends a good request
/// to `sasl-unix`. Returns (the slow ones, the good one).
fn slow_failures_then_a_good_request(
    lab: &PamDaemon,
    slow: usize,
    in_flight: usize,
) -> (Vec<Timed>, Timed) {
    let socket = lab.daemon.socket();
    let started = Instant::now();
    let slow_threads: Vec<_> = (0..slow)
        .map(|_| {
            let socket = socket.clone();
            thread::spawn(move || timed_request(socket, "suser", WRONG_PW, "sasl-slow"))
        })
        .collect();
    wait_until_prompted(lab, in_flight, started);
    let good = timed_request(socket, "suser", SUSER_PW, "sasl-unix");
    let slow: Vec<Timed> = slow_threads
        .into_iter()
        .map(|t| t.join().expect("slow request thread"))
        .collect();
    for s in &slow {
        assert_eq!(s.reply.as_deref(), Some(AUTH_ERROR), "{}", lab.daemon.log());
        // The fail delay was real.
        assert!(
            s.latency >= MIN_FAIL_DELAY,
            "a slow failure took {:?}",
            s.latency
        );
    }
    assert_eq!(good.reply.as_deref(), Some("OK"), "{}", lab.daemon.log());
    (slow, good)
}

/// Asserts that `good` was answered before any of the `slow` failures and in well under
/// a fail delay.
fn assert_not_delayed(lab: &PamDaemon, slow: &[Timed], good: &Timed) {
    let first_slow = slow.iter().map(|s| s.done).min().unwrap();
    assert!(
        good.done < first_slow && good.latency < MIN_FAIL_DELAY,
        "the good request waited for a slow one: {:?} (slow ones took {:?})\n--- log ---\n{}",
        good.latency,
        slow.iter().map(|s| s.latency).collect::<Vec<_>>(),
        lab.daemon.log()
    );
}

/// With the default pool (16 slots) and 8 slow failures in flight, a good request does not
/// wait for any of them: it is answered before the first slow failure is (each takes at
/// least 1 s) and in well under that second.
#[test]
fn eight_slow_failures_do_not_delay_another_request_with_the_default_pool() {
    // The pool alone: parallel failures of one login are what the throttle spaces out.
    let lab = start(&["--throttle-max", "0"]);
    let (slow, good) = slow_failures_then_a_good_request(&lab, 8, 8);
    assert_not_delayed(&lab, &slow, &good);
    lab.daemon.finish(&secrets());
}

/// Fail delays are waited on timers after the verification, so they hold no slot: with
/// `-n 2` and 4 slow failures in flight the good request is not queued behind them either
/// (before fail delays became timers, it waited up to 2 fail delays here).
#[test]
fn with_a_small_pool_slow_failures_hold_no_slot() {
    let lab = start(&["-n", "2", "--throttle-max", "0"]);
    let (slow, good) = slow_failures_then_a_good_request(&lab, 4, 4);
    assert_not_delayed(&lab, &slow, &good);
    lab.daemon.finish(&secrets());
}

/// Fail delays are timers, not blocked threads: 32 unknown users failing at once against
/// pam_unix's 2 s delay (more than the 16 verification slots) don't delay a legitimate
/// login past 2.5 s, and each of them is still answered only after its delay.
#[test]
fn a_flood_of_failures_against_the_fail_delay_does_not_hold_the_pool() {
    let lab = start(&[]);
    let socket = lab.daemon.socket();
    let started = Instant::now();
    let flood: Vec<_> = (0..32)
        .map(|i| {
            let socket = socket.clone();
            thread::spawn(move || {
                timed_request(socket, &format!("nosuchuser{i}"), WRONG_PW, "sasl-slow")
            })
        })
        .collect();
    // At least as many in flight as there are slots: a pool held by the delays is full.
    wait_until_prompted(&lab, 16, started);
    let good = timed_request(socket, "suser", SUSER_PW, "sasl-slow");
    assert_eq!(good.reply.as_deref(), Some("OK"), "{}", lab.daemon.log());
    eprintln!(
        "a legitimate login during a flood of 32 slow failures: answered in {:?}",
        good.latency
    );
    assert!(
        good.latency < Duration::from_millis(2500),
        "a legitimate login waited {:?} behind 32 slow failures\n--- log ---\n{}",
        good.latency,
        lab.daemon.log()
    );
    for failure in flood {
        let failure = failure.join().expect("flood thread");
        assert_eq!(
            failure.reply.as_deref(),
            Some(AUTH_ERROR),
            "{}",
            lab.daemon.log()
        );
        assert!(
            failure.latency >= MIN_FAIL_DELAY
                && failure.latency <= MAX_FAIL_DELAY + Duration::from_secs(1),
            "an unknown user was answered after {:?}, not after its fail delay\n--- log ---\n{}",
            failure.latency,
            lab.daemon.log()
        );
    }
    lab.daemon.finish(&secrets());
}
