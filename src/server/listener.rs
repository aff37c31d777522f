//! The accept loop: the peer policy, one task per connection under a cap, and graceful
//! shutdown.
//!
//! Each connection gets one deadline for its request, one for the reply and one for the
//! post-reply drain, so idle or slow clients cost a task and a small buffer until their
//! deadline, never a verification slot. A peer that `--allow-uid`/`--allow-gid` do not
//! allow is answered `NO access denied` at once, and past `--max-connections` new
//! clients are answered `NO server busy` at once; both refusals take no connection slot
//! and run no mechanism, they reply, half-close and take what the client sends until it
//! closes (at most [`REFUSAL_LIMIT`]), at most [`REFUSAL_SLOTS`] at a time: beyond that,
//! a connection is closed without a reply.
//!
//! On shutdown the loop stops accepting, then takes every connection already waiting in
//! the listen backlog (without waiting for more) and serves those too; drains are cut
//! short, and in-flight requests get their replies (bounded wait).
#![forbid(unsafe_code)]

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::connection::{Connection, ReadError};
use super::handler::Handler;
use super::peer::{ACCESS_DENIED, AccessPolicy, PeerCredentials};
use crate::log::RateLimitedLog;
use crate::protocol::{Reply, text};
use crate::{log_debug, log_err, log_info};

/// What every connection needs to be served.
pub struct Server {
    pub handler: Handler,
    pub timeout: Duration,
    pub max_field_len: usize,
    pub max_connections: usize,
    /// Who may connect (`--allow-uid`, `--allow-gid`).
    pub access: AccessPolicy,
}

/// Extra time in-flight requests get at shutdown beyond one I/O deadline.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Refusals (`NO access denied`, `NO server busy`) in progress at once.
pub const REFUSAL_SLOTS: usize = 128;
/// Deadline of a refusal's write, and of its drain after the half-close.
pub const REFUSAL_LIMIT: Duration = Duration::from_secs(1);
/// At shutdown, connections taken from the backlog beyond `--max-connections` (the
/// kernel's backlog is at most `net.core.somaxconn`, 4096 by default); a bound for a
/// flood that keeps arriving while the backlog is emptied.
const BACKLOG_DRAIN_LIMIT: usize = 65536;

/// The admission decisions for new connections, shared by the accept loop and the backlog
/// drain at shutdown.
struct Gate {
    server: Arc<Server>,
    stop: watch::Receiver<bool>,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    busy_log: RateLimitedLog,
    denied_log: RateLimitedLog,
    overflow_log: RateLimitedLog,
}

impl Gate {
    fn new(server: Arc<Server>, stop: watch::Receiver<bool>) -> Gate {
        Gate {
            slots: Arc::new(Semaphore::new(server.max_connections)),
            refusals: Arc::new(Semaphore::new(REFUSAL_SLOTS)),
            server,
            stop,
            busy_log: RateLimitedLog::default(),
            denied_log: RateLimitedLog::default(),
            overflow_log: RateLimitedLog::default(),
        }
    }

    /// Serves, or refuses, one accepted connection (spawns a task either way).
    fn admit(&self, stream: UnixStream) {
        let peer = PeerCredentials::of(&stream);
        if !self.server.access.allows(peer.as_ref()) {
            self.denied_log.log(|| {
                let who = peer.map_or_else(|| "[peer unknown]".to_string(), |p| p.to_string());
                format!(
                    "access denied: {who} is not allowed to connect (allowed: {}); \
                     answering: NO {ACCESS_DENIED}",
                    self.server.access
                )
            });
            self.refuse(stream, ACCESS_DENIED);
            return;
        }
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => {
                let server = Arc::clone(&self.server);
                let stop = self.stop.clone();
                tokio::spawn(serve_connection(stream, peer, server, permit, stop));
            }
            Err(_) => {
                self.busy_log.log(|| {
                    format!(
                        "connection limit ({}) reached; answering new clients: NO {}",
                        self.server.max_connections,
                        text::BUSY
                    )
                });
                self.refuse(stream, text::BUSY);
            }
        }
    }

    /// Answers `NO reason` in a task of its own, if a refusal slot is free.
    fn refuse(&self, stream: UnixStream, reason: &'static str) {
        match Arc::clone(&self.refusals).try_acquire_owned() {
            Ok(permit) => {
                let stop = self.stop.clone();
                tokio::spawn(async move {
                    Connection::refuse(stream, &Reply::no(reason), REFUSAL_LIMIT, stop).await;
                    drop(permit);
                });
            }
            Err(_) => {
                self.overflow_log.log(|| {
                    format!(
                        "{REFUSAL_SLOTS} refusals in progress; closing new connections \
                         without a reply"
                    )
                });
            }
        }
    }

    /// Waits (at most `limit`) until every connection and refusal has ended.
    async fn wait_idle(&self, limit: Duration) -> bool {
        let everyone = u32::try_from(self.server.max_connections).unwrap_or(u32::MAX);
        let refusals = u32::try_from(REFUSAL_SLOTS).unwrap_or(u32::MAX);
        let all_done = async {
            let _connections = self.slots.acquire_many(everyone).await;
            let _refusals = self.refusals.acquire_many(refusals).await;
        };
        tokio::time::timeout(limit, all_done).await.is_ok()
    }
}

/// Serves until `stop` turns true, then serves what waits in the backlog, finishes
/// in-flight requests and returns.
pub async fn serve(listener: UnixListener, server: Arc<Server>, stop: watch::Receiver<bool>) {
    let gate = Gate::new(Arc::clone(&server), stop.clone());
    let mut stopping = stop.clone();
    loop {
        // Stop first: under a flood, accepting must not delay the shutdown (what is
        // queued then is taken by the backlog drain below).
        let accepted = tokio::select! {
            biased;
            _ = stopping.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => gate.admit(stream),
            Err(error) => {
                // EMFILE and friends: log, back off briefly instead of spinning.
                log_err!("socket accept failure: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let limit = server.max_connections.saturating_add(BACKLOG_DRAIN_LIMIT);
    let waiting = drain_backlog(listener, limit, |stream| gate.admit(stream));
    if waiting > 0 {
        log_info!("shutdown: serving {waiting} connections that were waiting to be accepted");
    }
    let limit = server.timeout * 2 + SHUTDOWN_GRACE;
    if !gate.wait_idle(limit).await {
        log_err!("shutdown: connections still open after {limit:?}; exiting anyway");
    }
}

/// Accepts, without waiting, every connection already queued on `listener` (at most
/// `limit`) and hands each to `admit`; returns how many. The listener is closed on return.
fn drain_backlog(listener: UnixListener, limit: usize, mut admit: impl FnMut(UnixStream)) -> usize {
    // Off the reactor: plain non-blocking accepts until the queue is empty.
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(error) => {
            log_err!("shutdown: cannot take the waiting connections: {error}");
            return 0;
        }
    };
    let mut taken = 0;
    while taken < limit {
        match listener.accept() {
            Ok((stream, _)) => {
                taken += 1;
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| UnixStream::from_std(stream));
                match stream {
                    Ok(stream) => admit(stream),
                    Err(error) => log_err!("shutdown: cannot serve a waiting connection: {error}"),
                }
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

async fn serve_connection(
    stream: UnixStream,
    peer: Option<PeerCredentials>,
    server: Arc<Server>,
    _slot: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    let mut connection = Connection::new(stream, server.max_field_len);
    let incoming = match tokio::time::timeout(server.timeout, connection.read_request()).await {
        Ok(Ok(incoming)) => incoming,
        Ok(Err(ReadError::Truncated { received })) => {
            log_debug!("client closed after {received} bytes, before a complete request");
            return;
        }
        Ok(Err(ReadError::Io(error))) => {
            log_debug!("read failure: {error}");
            return;
        }
        Err(_) => {
            log_debug!(
                "no complete request within {:?}; closing the connection",
                server.timeout
            );
            return;
        }
    };
    let reply = server.handler.handle(incoming, peer).await;
    match tokio::time::timeout(server.timeout, connection.write_reply(&reply)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            log_err!("write failure: {error}");
            return;
        }
        Err(_) => {
            log_err!(
                "write failure: client did not take the reply within {:?}",
                server.timeout
            );
            return;
        }
    }
    connection.finish(server.timeout, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net;

    fn listener_with_queued_clients(
        dir: &std::path::Path,
        name: &str,
        clients: usize,
    ) -> (UnixListener, Vec<net::UnixStream>, std::path::PathBuf) {
        let path = dir.join(name);
        let listener = net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let clients = (0..clients)
            .map(|_| net::UnixStream::connect(&path).unwrap())
            .collect();
        (UnixListener::from_std(listener).unwrap(), clients, path)
    }

    #[tokio::test]
    async fn the_backlog_drain_takes_what_is_queued_without_waiting() {
        let dir = std::env::temp_dir().join(format!("saslauthd-rs-drain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();

        let (listener, mut clients, path) = listener_with_queued_clients(&dir, "a", 5);
        let mut taken = Vec::new();
        assert_eq!(drain_backlog(listener, 100, |s| taken.push(s)), 5);
        // Each one is a live connection to one of the clients, in arrival order.
        for (i, (server_side, client)) in taken.iter_mut().zip(&mut clients).enumerate() {
            tokio::io::AsyncWriteExt::write_all(server_side, &[i as u8])
                .await
                .unwrap();
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).unwrap();
            assert_eq!(byte[0], i as u8);
        }
        // The listener is closed: nobody can queue behind the drain.
        assert!(net::UnixStream::connect(&path).is_err());

        // Nothing queued: returns at once.
        let (listener, _, _) = listener_with_queued_clients(&dir, "b", 0);
        assert_eq!(
            drain_backlog(listener, 100, |_| panic!("nothing queued")),
            0
        );

        // The bound holds.
        let (listener, mut clients, _) = listener_with_queued_clients(&dir, "c", 5);
        assert_eq!(drain_backlog(listener, 3, drop), 3);
        // The two left in the queue are reset when the listener closes.
        let mut buf = [0u8; 1];
        let last = clients.last_mut().unwrap();
        let _ = last.write_all(b"x");
        assert!(!matches!(last.read(&mut buf), Ok(1)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
