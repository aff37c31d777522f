//! The mux socket's accept loop: threads that accept connections and serve each one at
//! once where they can ([`intake`](super::intake)), and graceful shutdown.
//!
//! One accepting thread per CPU core waits in a blocking `accept` on the socket (the
//! kernel wakes one of them per connection), so the common request costs no reactor
//! registration and no hand-off between threads. The socket gets a receive timeout of
//! [`ACCEPT_WAKE`], which is how often an idle thread looks whether the daemon is
//! stopping. The async path (tokio) serves what can't be answered at once: each such
//! connection gets one deadline for its request, one for the reply and one for the
//! post-reply drain, so idle or slow clients cost a task and a small buffer until their
//! deadline, never a verification slot. A connection the gate refuses (a peer not
//! allowed, `--max-connections` reached) is answered `NO access denied` or `NO server
//! busy` at once, taking what the client sends until it closes (at most
//! [`REFUSAL_LIMIT`](crate::frontend::gate::REFUSAL_LIMIT)).
//!
//! On shutdown the threads stop accepting, then every connection already waiting in the
//! listen backlog is taken (without waiting for more) and served too; drains are cut
//! short, and in-flight requests get their replies (bounded wait).
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use tokio::runtime::Handle;
use tokio::sync::watch;

pub use super::intake::Server;
use super::intake::{Intake, Scratch};
use super::linger::Lingering;
use crate::mech::cpu_cores;
use crate::{log_err, log_info};

/// How often an accepting thread that has nothing to accept looks whether the daemon is
/// stopping (the receive timeout of the listening socket).
pub const ACCEPT_WAKE: Duration = Duration::from_millis(100);

/// Extra time in-flight requests get at shutdown beyond one I/O deadline.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// At shutdown, connections taken from the backlog beyond `--max-connections` (the
/// kernel's backlog is at most `net.core.somaxconn`, 4096 by default); a bound for a
/// flood that keeps arriving while the backlog is emptied.
const BACKLOG_DRAIN_LIMIT: usize = 65536;

/// Starts the accepting threads on `listener` (call it inside the runtime). The future
/// serves until `stop` turns true, then serves what waits in the backlog, finishes
/// in-flight requests and returns.
pub fn serve(
    listener: UnixListener,
    server: Arc<Server>,
    stop: watch::Receiver<bool>,
) -> io::Result<impl Future<Output = ()>> {
    // Blocking accepts that give up every ACCEPT_WAKE (EAGAIN).
    listener.set_nonblocking(false)?;
    let wake = TimeVal::new(0, ACCEPT_WAKE.as_micros() as nix::libc::suseconds_t);
    setsockopt(&listener, sockopt::ReceiveTimeout, &wake)?;
    let listener = Arc::new(listener);
    let intake = Arc::new(Intake {
        server,
        runtime: Handle::current(),
        stop: stop.clone(),
        lingering: Lingering::default(),
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let threads = (0..cpu_cores().get())
        .map(|_| {
            let (listener, intake, stopping) = (
                Arc::clone(&listener),
                Arc::clone(&intake),
                Arc::clone(&stopping),
            );
            std::thread::Builder::new()
                .name("saslauthd-accept".to_string())
                .spawn(move || accept_loop(&listener, &intake, &stopping))
        })
        .collect::<io::Result<Vec<JoinHandle<()>>>>();
    let threads = match threads {
        Ok(threads) => threads,
        Err(error) => {
            stopping.store(true, Ordering::Release);
            return Err(error);
        }
    };
    Ok(shut_down(listener, intake, stopping, threads, stop))
}

/// Waits for `stop`, then stops the accepting threads, serves the backlog and waits for
/// the connections in flight.
async fn shut_down(
    listener: Arc<UnixListener>,
    intake: Arc<Intake>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stop.wait_for(|s| *s).await;
    stopping.store(true, Ordering::Release);
    // Each thread notices within ACCEPT_WAKE (at once when it is busy).
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
    intake.lingering.stop();
    let server = &intake.server;
    let limit = server
        .gate
        .max_connections()
        .saturating_add(BACKLOG_DRAIN_LIMIT);
    let mut scratch = Scratch::new(server.max_field_len);
    let waiting = drain_backlog(&listener, limit, |stream| {
        intake.serve(stream, &mut scratch)
    });
    // Closes the socket: nobody can queue behind the drain.
    drop(listener);
    if waiting > 0 {
        log_info!("shutdown: serving {waiting} connections that were waiting to be accepted");
    }
    let limit = server.timeout * 2 + SHUTDOWN_GRACE;
    if !server.gate.wait_idle(limit).await {
        log_err!("shutdown: connections still open after {limit:?}; exiting anyway");
    }
}

/// An accepting thread: accept, serve at once or hand over, until `stopping`.
fn accept_loop(listener: &UnixListener, intake: &Arc<Intake>, stopping: &AtomicBool) {
    let mut scratch = Scratch::new(intake.server.max_field_len);
    while !stopping.load(Ordering::Acquire) {
        let accepted = listener.accept();
        // Before the gate counts slots: clients that closed since are not counted.
        intake.lingering.sweep();
        match accepted {
            Ok((stream, _)) => intake.serve(stream, &mut scratch),
            Err(error) => match error.kind() {
                // ACCEPT_WAKE passed, a signal, or a client gone before it was accepted.
                io::ErrorKind::WouldBlock
                | io::ErrorKind::Interrupted
                | io::ErrorKind::ConnectionAborted => {}
                _ => {
                    // EMFILE and friends: log, back off briefly instead of spinning.
                    log_err!("socket accept failure: {error}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            },
        }
    }
}

/// Accepts, without waiting, every connection already queued on `listener` (at most
/// `limit`) and hands each to `admit`; returns how many.
fn drain_backlog(
    listener: &UnixListener,
    limit: usize,
    mut admit: impl FnMut(UnixStream),
) -> usize {
    if let Err(error) = listener.set_nonblocking(true) {
        log_err!("shutdown: cannot take the waiting connections: {error}");
        return 0;
    }
    let mut taken = 0;
    while taken < limit {
        match listener.accept() {
            Ok((stream, _)) => {
                taken += 1;
                admit(stream);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => {
                log_err!("shutdown: socket accept failure: {error}");
                break;
            }
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn listener_with_queued_clients(
        dir: &std::path::Path,
        name: &str,
        clients: usize,
    ) -> (UnixListener, Vec<UnixStream>, std::path::PathBuf) {
        let path = dir.join(name);
        let listener = UnixListener::bind(&path).unwrap();
        let clients = (0..clients)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        (listener, clients, path)
    }

    #[test]
    fn the_backlog_drain_takes_what_is_queued_without_waiting() {
        let dir = std::env::temp_dir().join(format!("saslauthd-rs-drain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();

        let (listener, mut clients, path) = listener_with_queued_clients(&dir, "a", 5);
        let mut taken = Vec::new();
        assert_eq!(drain_backlog(&listener, 100, |s| taken.push(s)), 5);
        drop(listener);
        // Each one is a live connection to one of the clients, in arrival order.
        for (i, (server_side, client)) in taken.iter_mut().zip(&mut clients).enumerate() {
            server_side.write_all(&[i as u8]).unwrap();
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).unwrap();
            assert_eq!(byte[0], i as u8);
        }
        // The listener is closed: nobody can queue behind the drain.
        assert!(UnixStream::connect(&path).is_err());

        // Nothing queued: returns at once.
        let (listener, _, _) = listener_with_queued_clients(&dir, "b", 0);
        assert_eq!(
            drain_backlog(&listener, 100, |_| panic!("nothing queued")),
            0
        );

        // The bound holds.
        let (listener, mut clients, _) = listener_with_queued_clients(&dir, "c", 5);
        assert_eq!(drain_backlog(&listener, 3, drop), 3);
        drop(listener);
        // The two left in the queue are reset when the listener closes.
        let mut buf = [0u8; 1];
        let last = clients.last_mut().unwrap();
        let _ = last.write_all(b"x");
        assert!(!matches!(last.read(&mut buf), Ok(1)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The accepting threads rely on it: a blocking accept on a UNIX socket gives up after
    /// the socket's receive timeout.
    #[test]
    fn a_blocking_accept_gives_up_after_the_receive_timeout() {
        let dir = std::env::temp_dir().join(format!("saslauthd-rs-wake-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join("s")).unwrap();
        let wake = TimeVal::new(0, 50_000);
        setsockopt(&listener, sockopt::ReceiveTimeout, &wake).unwrap();
        let started = std::time::Instant::now();
        let error = listener.accept().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
        assert!(started.elapsed() >= Duration::from_millis(45));
        assert!(started.elapsed() < Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
