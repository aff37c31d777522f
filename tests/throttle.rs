//! Integration tests of brute-force throttling (issue 7): our daemon, `-a shadow` in the
//! private mount namespace of `tests/common` (needs root), driven over its socket.
//!
//! Timing is asserted with generous margins, because the machine has 2 cores and other
//! tests run at the same time: a delayed reply may never come early (the daemon sleeps at
//! least the penalty), and may come up to [`LATE`] after it.

#![forbid(unsafe_code)]

mod common;

use common::fixtures::*;
use common::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The user under attack: `$1$` md5crypt, the cheapest fixture hash.
const A: &str = "muser";
const A_PW: &str = MUSER_PW;
/// The bystander: `$6$` sha512crypt.
const B: &str = "suser";
const B_PW: &str = SUSER_PW;

/// How late a reply may come after its expected delay on a loaded machine.
const LATE: Duration = Duration::from_millis(900);
/// Clock granularity: the daemon sleeps at least the penalty.
const EARLY: Duration = Duration::from_millis(2);
/// The read deadline for one request: above the longest delay (8 s) plus slack.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

const MS: Duration = Duration::from_millis(1);

fn wrong_pw(n: usize) -> String {
    format!("Wrong-pw-{n}")
}

/// Every password these tests send; none may show up in the daemon's log.
fn secrets() -> Vec<String> {
    let mut v: Vec<String> = FIXTURE_PASSWORDS.iter().map(|s| s.to_string()).collect();
    v.extend((0..20).map(wrong_pw));
    v.push("Stale-pw-7".into());
    v.push("Other-pw-8".into());
    v
}

/// Our daemon, `-a shadow -d` plus `extra`.
fn start(extra: &[&str]) -> Daemon {
    let mut args = vec!["-a", "shadow"];
    args.extend_from_slice(extra);
    Daemon::start(&ours_bin("saslauthd"), &args)
}

/// Every failure counts (`--throttle-free 0`), 1 s first delay, capped at `max_ms`.
fn start_counting_every_failure(max_ms: u32) -> Daemon {
    let max = max_ms.to_string();
    start(&[
        "--throttle-free",
        "0",
        "--throttle-delay",
        "1000",
        "--throttle-max",
        &max,
    ])
}

/// One request (4 fields, or 5 with `addr`); the reply and the time from the last byte
/// sent to the reply.
fn timed(socket: &Path, user: &str, pass: &str, addr: Option<&str>) -> (String, Duration) {
    let mut fields: Vec<&[u8]> = vec![user.as_bytes(), pass.as_bytes(), b"smtp", b""];
    if let Some(addr) = addr {
        fields.push(addr.as_bytes());
    }
    let opts = ExchangeOpts {
        check_eof: false,
        timeout: READ_TIMEOUT,
        ..ExchangeOpts::default()
    };
    let r = exchange(socket, &request(&fields), &opts);
    let text = r
        .text()
        .unwrap_or_else(|| panic!("no reply for {user} after {:?}: {r:?}", r.elapsed));
    (text, r.elapsed)
}

/// Asserts the reply kind and that it came `expected` after the request (within margins).
fn expect(what: &str, got: (String, Duration), ok: bool, expected: Duration) {
    let (text, elapsed) = got;
    assert_eq!(
        text.starts_with("OK"),
        ok,
        "{what}: reply {text:?} after {elapsed:?}"
    );
    assert!(
        elapsed + EARLY >= expected && elapsed <= expected + LATE,
        "{what}: reply after {elapsed:?}, expected {expected:?} (+{LATE:?})"
    );
}

/// The 99th percentile (nearest rank).
fn p99(mut samples: Vec<Duration>) -> Duration {
    assert!(!samples.is_empty());
    samples.sort();
    let rank = (samples.len() * 99).div_ceil(100);
    samples[rank - 1]
}

/// `count` correct requests of B, `pace` apart; their latencies.
fn bystander(socket: &Path, stop: &AtomicBool, count: Option<usize>) -> Vec<Duration> {
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) && count.is_none_or(|c| latencies.len() < c) {
        let (text, elapsed) = timed(socket, B, B_PW, None);
        assert_eq!(text, "OK", "bystander {B}");
        latencies.push(elapsed);
        sleep(10 * MS);
    }
    latencies
}

#[test]
fn a_burst_of_wrong_passwords_slows_that_user_as_designed_and_no_one_else() {
    require_root();
    // One verification slot: a throttle that held it while waiting would stall B.
    let d = start(&["-n", "1"]);
    let socket = d.socket();
    let baseline = p99(bystander(&socket, &AtomicBool::new(false), Some(200)));

    let stop = Arc::new(AtomicBool::new(false));
    let during = {
        let (socket, stop) = (socket.clone(), Arc::clone(&stop));
        std::thread::spawn(move || bystander(&socket, &stop, None))
    };
    // The default schedule: 3 free failures, then 250 ms doubling up to 8 s.
    let schedule = [0, 0, 0, 0, 250, 500, 1000, 2000, 4000, 8000];
    let started = Instant::now();
    let mut seen = Vec::new();
    for (n, &ms) in schedule.iter().enumerate() {
        let got = timed(&socket, A, &wrong_pw(n), None);
        seen.push(got.1);
        if ms == 0 {
            // Free: not even the smallest delay.
            assert!(got.1 < 250 * MS, "failure {n}: {got:?}: {seen:?}");
            expect(&format!("failure {n}"), got, false, Duration::ZERO);
        } else {
            expect(&format!("failure {n}"), got, false, ms * MS);
        }
    }
    let burst = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = during.join().expect("bystander thread");
    let during_p99 = p99(during.clone());
    eprintln!(
        "{A}: {seen:?} in {burst:?}; {B}: p99 {baseline:?} alone, {during_p99:?} during the \
         burst ({} requests, max {:?})",
        during.len(),
        during.iter().max()
    );
    assert!(
        during.len() >= 100,
        "{B} made only {} requests",
        during.len()
    );
    assert!(
        during_p99 <= baseline * 3 + 100 * MS,
        "{B}'s p99 went from {baseline:?} to {during_p99:?} while {A} was throttled"
    );
    let log = d.log();
    assert!(
        log.contains("throttle: delaying [user=muser]"),
        "no throttle line in the log:\n{log}"
    );
    d.finish(&secrets());
}

#[test]
fn repeating_the_same_wrong_password_does_not_escalate() {
    require_root();
    let d = start_counting_every_failure(8000);
    let socket = d.socket();
    // A client retrying a stale password: one failure on record, however often.
    expect(
        "stale 1",
        timed(&socket, A, "Stale-pw-7", None),
        false,
        Duration::ZERO,
    );
    for n in 2..=5 {
        let got = timed(&socket, A, "Stale-pw-7", None);
        expect(&format!("stale {n}"), got, false, 1000 * MS);
    }
    // A new wrong password counts...
    expect(
        "other",
        timed(&socket, A, "Other-pw-8", None),
        false,
        1000 * MS,
    );
    // ...and the stale one still does not.
    expect(
        "stale 6",
        timed(&socket, A, "Stale-pw-7", None),
        false,
        2000 * MS,
    );
    expect(
        "stale 7",
        timed(&socket, A, "Stale-pw-7", None),
        false,
        2000 * MS,
    );
    d.finish(&secrets());
}

#[test]
fn a_correct_password_after_failures_waits_then_succeeds_and_resets() {
    require_root();
    let d = start_counting_every_failure(4000);
    let socket = d.socket();
    expect(
        "wrong 0",
        timed(&socket, A, &wrong_pw(0), None),
        false,
        Duration::ZERO,
    );
    expect(
        "wrong 1",
        timed(&socket, A, &wrong_pw(1), None),
        false,
        1000 * MS,
    );
    // Right or wrong, the request waits first: silence says nothing.
    expect(
        "right after 2",
        timed(&socket, A, A_PW, None),
        true,
        2000 * MS,
    );
    // The success forgot the failures.
    expect(
        "right again",
        timed(&socket, A, A_PW, None),
        true,
        Duration::ZERO,
    );
    expect(
        "wrong 2",
        timed(&socket, A, &wrong_pw(2), None),
        false,
        Duration::ZERO,
    );
    // Unknown users are throttled like known ones.
    expect(
        "nosuch 0",
        timed(&socket, "nosuchuser", &wrong_pw(3), None),
        false,
        Duration::ZERO,
    );
    expect(
        "nosuch 1",
        timed(&socket, "nosuchuser", &wrong_pw(4), None),
        false,
        1000 * MS,
    );
    d.finish(&secrets());
}

#[test]
fn a_client_address_is_throttled_across_logins_and_only_that_address() {
    require_root();
    let d = start_counting_every_failure(4000);
    let socket = d.socket();
    let (x, y) = ("192.0.2.10", "198.51.100.20");
    let x1 = format!("{x};4711");
    let x2 = format!("{x};4712");
    let x3 = format!("{x};25");
    let y1 = format!("{y};4711");
    expect(
        "x: nosuch1",
        timed(&socket, "nosuch1", &wrong_pw(0), Some(&x1)),
        false,
        Duration::ZERO,
    );
    // Another login from the same address (another port) waits for the address.
    expect(
        "x: nosuch2",
        timed(&socket, "nosuch2", &wrong_pw(1), Some(&x2)),
        false,
        1000 * MS,
    );
    // Another address, or none: no wait.
    expect(
        "y: B",
        timed(&socket, B, B_PW, Some(&y1)),
        true,
        Duration::ZERO,
    );
    expect(
        "no address: B",
        timed(&socket, B, B_PW, None),
        true,
        Duration::ZERO,
    );
    // B from the throttled address waits like everyone there, and its success clears it.
    expect("x: B", timed(&socket, B, B_PW, Some(&x3)), true, 2000 * MS);
    expect(
        "x: nosuch3",
        timed(&socket, "nosuch3", &wrong_pw(2), Some(&x1)),
        false,
        Duration::ZERO,
    );
    d.finish(&secrets());
}

#[test]
fn throttle_max_zero_turns_throttling_off() {
    require_root();
    let d = start_counting_every_failure(0);
    let socket = d.socket();
    let started = Instant::now();
    for n in 0..12 {
        let got = timed(&socket, A, &wrong_pw(n), Some("192.0.2.1;1"));
        assert!(got.1 < 500 * MS, "failure {n}: {got:?}");
        expect(&format!("failure {n}"), got, false, Duration::ZERO);
    }
    expect("right", timed(&socket, A, A_PW, None), true, Duration::ZERO);
    // Throttled, these 13 requests would have waited 1 + 2 + 4 × 10 seconds.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!d.log().contains("throttle: delaying"));
    d.finish(&secrets());
}
