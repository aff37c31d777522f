//! Integration tests of the mux socket's accept-time path (src/frontend/mux/intake.rs,
//! linger.rs, listener.rs): complete requests are answered on the accepting thread (cache
//! hits, refusals) or by the verification pool's thread, everything else on the async
//! path. These pin what that split must not change: requests in pieces, five fields,
//! bytes after a request, clients that leave early, refused peers, a shutdown in the
//! middle of it all, and the post-reply drain (no reset, no broken pipe).
//!
//! Every daemon runs in a private mount namespace with the fixture users (needs root;
//! fails without it).

#![forbid(unsafe_code)]

mod common;

use common::fixtures::*;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

const WRONG_PW: &str = "Wrong-pw-2718";

/// Every password sent (recorded for the secrets scan, which also covers the raw writes
/// of the tests below).
fn secrets() -> Vec<Vec<u8>> {
    common::secrets::record_password(WRONG_PW.as_bytes());
    common::secrets::record_password(SUSER_PW.as_bytes());
    FIXTURE_PASSWORDS
        .iter()
        .chain(&[WRONG_PW])
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

/// Our daemon, `-a shadow -d` plus `extra` options.
fn start(extra: &[&str]) -> Daemon {
    require_root();
    secrets();
    let mut args = vec!["-a", "shadow"];
    args.extend_from_slice(extra);
    Daemon::start(&ours_bin("saslauthd"), &args)
}

fn suser(extra: &[&[u8]]) -> Vec<u8> {
    let mut fields: Vec<&[u8]> = vec![b"suser", SUSER_PW.as_bytes(), b"imap", b""];
    fields.extend_from_slice(extra);
    request(&fields)
}

fn quick() -> ExchangeOpts {
    ExchangeOpts {
        timeout: Duration::from_secs(5),
        ..ExchangeOpts::default()
    }
}

/// The reply to `bytes`, which must be followed by a clean end of stream.
fn clean_reply(socket: &Path, bytes: &[u8], opts: &ExchangeOpts) -> RawReply {
    let r = exchange(socket, bytes, opts);
    assert!(
        r.closed && !r.timed_out && r.extra.is_empty(),
        "no clean end of stream after the reply: {r:?}"
    );
    r
}

/// Warms the cache (`-c`) for `suser`, once the fixture files are old enough for the
/// cache to trust their stamps (a file changed within the last 2 s could change again
/// unnoticed, so until then every hit reads the account on the async path): from then on
/// hits are answered on the accepting thread.
fn warm_cache(d: &Daemon) {
    let copied = std::fs::metadata(d.dir().join("etc/shadow"))
        .and_then(|m| m.modified())
        .expect("the fixture copy");
    while copied.elapsed().unwrap_or_default() < Duration::from_millis(2100) {
        sleep(Duration::from_millis(50));
    }
    expect_reply(d, "suser", SUSER_PW, "OK");
    expect_reply(d, "suser", SUSER_PW, "OK");
}

#[test]
fn a_request_in_several_writes_is_answered() {
    let d = start(&["-c"]);
    warm_cache(&d);
    for (what, bytes) in [
        ("four fields", suser(&[])),
        ("five fields", suser(&[b"192.0.2.7;4711"])),
    ] {
        for chunk in [1, 3, 7] {
            let opts = ExchangeOpts {
                chunk,
                delay: Duration::from_millis(5),
                ..quick()
            };
            let r = clean_reply(&d.socket(), &bytes, &opts);
            assert_eq!(
                r.text().as_deref(),
                Some("OK"),
                "{what} in {chunk}-byte writes: {r:?}\n{}",
                d.log()
            );
        }
    }
    // A five-field request split right after the fifth field's length prefix, and again
    // inside its value, is read whole: the address shows in the failure line. (Split inside
    // the length prefix, a lone byte with the rest late can't be told from a stray byte
    // and is ignored: see bytes_that_cannot_start_a_fifth_field_are_ignored.)
    let address = b"192.0.2.8;25";
    let wrong = request(&[b"suser", WRONG_PW.as_bytes(), b"imap", b"", address]);
    let value_at = wrong.len() - address.len();
    let mut s = connect(&d.socket(), Duration::from_secs(5));
    s.write_all(&wrong[..value_at]).unwrap();
    sleep(Duration::from_millis(50));
    let opts = ExchangeOpts {
        chunk: 4,
        delay: Duration::from_millis(50),
        ..quick()
    };
    let r = exchange_on(&mut s, &wrong[value_at..], &opts);
    assert_eq!(
        r.text().as_deref(),
        Some("NO Incorrect password"),
        "{r:?}\n{}",
        d.log()
    );
    assert!(
        d.wait_for_log("[remote=192.0.2.8;25]", Duration::from_secs(2)),
        "the split fifth field was not used\n{}",
        d.log()
    );
    d.finish(&secrets());
}

#[test]
fn a_five_field_request_in_one_write_uses_the_client_address() {
    let d = start(&["-c"]);
    warm_cache(&d);
    let r = clean_reply(&d.socket(), &suser(&[b"198.51.100.9;143"]), &quick());
    assert_eq!(r.text().as_deref(), Some("OK"), "{r:?}");
    let wrong = request(&[
        b"suser",
        WRONG_PW.as_bytes(),
        b"imap",
        b"",
        b"198.51.100.9;143",
    ]);
    let r = clean_reply(&d.socket(), &wrong, &quick());
    assert_eq!(r.text().as_deref(), Some("NO Incorrect password"), "{r:?}");
    assert!(
        d.wait_for_log("[remote=198.51.100.9;143]", Duration::from_secs(2)),
        "{}",
        d.log()
    );
    d.finish(&secrets());
}

/// Upstream 2.1.28 answers a four-field request whatever follows it; so do we, when what
/// follows can't start a fifth field: answered at once, the bytes ignored (logged at debug
/// level), the client sees the reply and a clean end of stream.
#[test]
fn bytes_that_cannot_start_a_fifth_field_are_ignored() {
    let d = start(&["-c"]);
    warm_cache(&d);
    for (what, trailing) in [
        ("GA (a length of 18241)", &b"GA"[..]),
        ("one stray byte", &b"\x07"[..]),
        (
            "a length over the limit, then a little",
            &b"\x04\x01abc"[..],
        ),
    ] {
        for user_pw in [SUSER_PW, WRONG_PW] {
            let mut bytes = request(&[b"suser", user_pw.as_bytes(), b"imap", b""]);
            bytes.extend_from_slice(trailing);
            let r = clean_reply(&d.socket(), &bytes, &quick());
            let want = if user_pw == SUSER_PW {
                "OK"
            } else {
                "NO Incorrect password"
            };
            assert_eq!(
                r.text().as_deref(),
                Some(want),
                "{what}: {r:?}\n{}",
                d.log()
            );
            assert!(
                r.elapsed < Duration::from_secs(1),
                "{what}: answered after {:?}",
                r.elapsed
            );
        }
    }
    assert!(
        d.wait_for_log(
            "ignored 2 bytes after a four-field request",
            Duration::from_secs(2)
        ),
        "{}",
        d.log()
    );
    assert!(
        d.log()
            .contains("ignored 1 bytes after a four-field request")
    );
    d.finish(&secrets());
}

/// Bytes after a complete request (a pipelined second request) are drained, not answered,
/// and the client can keep writing until it closes.
#[test]
fn trailing_bytes_after_a_request_are_drained() {
    let d = start(&["-c"]);
    warm_cache(&d);
    for first in [suser(&[]), suser(&[b"192.0.2.1;1"])] {
        let mut bytes = first.clone();
        bytes.extend(request(&[b"suser", WRONG_PW.as_bytes(), b"imap", b""]));
        let mut s = connect(&d.socket(), Duration::from_secs(5));
        let r = exchange_on(&mut s, &bytes, &quick());
        assert_eq!(r.text().as_deref(), Some("OK"), "{r:?}");
        assert!(r.closed && r.extra.is_empty(), "{r:?}");
        for _ in 0..3 {
            s.write_all(b"more").expect("the server stopped draining");
            sleep(Duration::from_millis(20));
        }
    }
    sleep(Duration::from_millis(200));
    assert!(
        !d.log().contains("reason=Incorrect password"),
        "a pipelined request was answered\n{}",
        d.log()
    );
    d.finish(&secrets());
}

/// Clients that send a request and close at once, on each way a reply is made: a cache
/// hit on the accepting thread, a verification on the pool's thread, a refusal. The
/// daemon logs a write failure at most and keeps serving.
#[test]
fn clients_that_close_before_the_reply_are_harmless() {
    for (what, args) in [
        ("cache hit", &["-c"][..]),
        ("pool verification", &[][..]),
        ("refused peer", &["--allow-uid", "4242"][..]),
    ] {
        let d = start(args);
        if what == "cache hit" {
            warm_cache(&d);
        }
        for _ in 0..50 {
            let mut s = UnixStream::connect(d.socket()).unwrap();
            s.write_all(&suser(&[])).unwrap();
            drop(s);
        }
        sleep(Duration::from_millis(300));
        assert!(d.running(), "{what}: daemon died\n{}", d.log());
        let want = if what == "refused peer" {
            "NO access denied"
        } else {
            "OK"
        };
        expect_reply(&d, "suser", SUSER_PW, want);
        assert!(!d.log().contains("panicked"), "{what}\n{}", d.log());
        d.finish(&secrets());
    }
}

/// A peer the allow-list refuses gets `NO access denied` and a clean end of stream, its
/// request taken (writes keep succeeding until it closes), from the first request on.
#[test]
fn a_refused_peer_gets_its_answer_and_a_clean_end_of_stream() {
    let d = start(&["--allow-uid", "4242"]);
    for bytes in [suser(&[]), suser(&[b"192.0.2.2;2"])] {
        let mut s = connect(&d.socket(), Duration::from_secs(5));
        let r = exchange_on(&mut s, &bytes, &quick());
        assert_eq!(r.text().as_deref(), Some("NO access denied"), "{r:?}");
        assert!(r.closed && r.extra.is_empty(), "{r:?}");
        s.write_all(b"x")
            .expect("the refusal's drain stopped at once");
    }
    // Slowly, in pieces: answered at once all the same (it needn't wait for the request).
    let opts = ExchangeOpts {
        chunk: 5,
        delay: Duration::from_millis(30),
        ..quick()
    };
    let r = exchange(&d.socket(), &suser(&[]), &opts);
    assert_eq!(r.text().as_deref(), Some("NO access denied"), "{r:?}");
    assert!(
        d.wait_for_log("access denied", Duration::from_secs(2)),
        "{}",
        d.log()
    );
    d.finish(&secrets());
}

/// SIGTERM while clients hammer the daemon with cache hits (answered on the accepting
/// threads) and sha512crypt misses (answered by the pool's threads): every request the
/// daemon took gets its whole reply and a clean end of stream, never a reset; the daemon
/// exits 0 and removes its socket.
#[test]
fn shutdown_while_requests_on_the_accept_time_path_are_in_flight() {
    // No throttling: the wrong passwords are verified, never delayed.
    let mut d = start(&["-c", "--throttle-max", "0"]);
    warm_cache(&d);
    let socket = d.socket();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (socket, stop, answered) =
                (socket.clone(), Arc::clone(&stop), Arc::clone(&answered));
            thread::spawn(move || -> Vec<String> {
                let mut problems = Vec::new();
                // Half the clients miss the cache (wrong password: the pool verifies).
                let password = if i % 2 == 0 { SUSER_PW } else { WRONG_PW };
                let bytes = request(&[b"suser", password.as_bytes(), b"imap", b""]);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = UnixStream::connect(&socket) else {
                        // The socket is gone or refuses: the daemon is stopping.
                        break;
                    };
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    if let Err(e) = s.write_all(&bytes) {
                        problems.push(format!("send: {e}"));
                        continue;
                    }
                    let mut reply = Vec::new();
                    match s.read_to_end(&mut reply) {
                        Ok(_) if reply.len() >= 2 => {
                            let text = String::from_utf8_lossy(&reply[2..]).into_owned();
                            let want = if password == SUSER_PW {
                                "OK"
                            } else {
                                "NO Incorrect password"
                            };
                            if text != want {
                                problems.push(format!("reply {text:?}"));
                            } else {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // Accepted, then closed unanswered: only a connection that was
                        // still in the backlog when the socket closed may see that.
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                            problems.push("reset after the request was sent".into())
                        }
                        Err(e) => problems.push(format!("read: {e}")),
                    }
                }
                problems
            })
        })
        .collect();
    sleep(Duration::from_millis(500));
    let before = answered.load(Ordering::Relaxed);
    // The clients finish the request they are in the middle of, and start no other.
    stop.store(true, Ordering::Relaxed);
    d.signal(libc::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no exit within 20 s of SIGTERM\n{}", d.log()));
    let problems: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    eprintln!(
        "{before} requests answered before SIGTERM, {} in all",
        answered.load(Ordering::Relaxed)
    );
    assert!(before > 50, "the load did not run: {before}\n{}", d.log());
    assert!(
        problems.is_empty(),
        "{} problems, e.g. {:?}\n{}",
        problems.len(),
        &problems[..problems.len().min(5)],
        d.log()
    );
    assert!(status.success(), "exit status {status:?}\n{}", d.log());
    assert!(!d.socket().exists(), "socket left behind");
    let log = d.log();
    assert!(log.contains("SIGTERM received: shutting down"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    d.assert_log_free_of(&secrets());
}

/// Connections a reply leaves draining keep their slot until the client closes, and give
/// it back once it has: one connection at a time (`--max-connections 1`), one request
/// after another. (A request that arrives after its connection was accepted goes the async
/// way, whose slot comes back a moment after the client closes: hence the retries.)
#[test]
fn draining_connections_hold_their_slot_until_the_client_closes() {
    let d = start(&["-c", "--max-connections", "1"]);
    let ok_soon = |what: &str| {
        let limit = Instant::now() + Duration::from_secs(3);
        loop {
            let r = exchange(&d.socket(), &suser(&[]), &quick());
            match r.text().as_deref() {
                Some("OK") => return,
                Some("NO server busy") if Instant::now() < limit => sleep(Duration::from_millis(5)),
                _ => panic!("{what}: {r:?}\n{}", d.log()),
            }
        }
    };
    let started = Instant::now();
    for n in 0..200 {
        ok_soon(&format!("request {n}"));
    }
    eprintln!("200 requests one after another in {:?}", started.elapsed());
    // While one client keeps its answered connection open, the next is busy.
    let limit = Instant::now() + Duration::from_secs(3);
    let held = loop {
        let mut held = connect(&d.socket(), Duration::from_secs(5));
        let r = exchange_on(&mut held, &suser(&[]), &quick());
        match r.text().as_deref() {
            Some("OK") => break held,
            Some("NO server busy") if Instant::now() < limit => sleep(Duration::from_millis(5)),
            _ => panic!("{r:?}\n{}", d.log()),
        }
    };
    for _ in 0..3 {
        let r = exchange(&d.socket(), &suser(&[]), &quick());
        assert_eq!(r.text().as_deref(), Some("NO server busy"), "{r:?}");
    }
    drop(held);
    ok_soon("after the held connection closed");
    d.finish(&secrets());
}
