//! The mux socket's accept loop: admission through the shared [`Gate`], one task per
//! connection, and graceful shutdown.
//!
//! Each connection gets one deadline for its request, one for the reply and one for the
//! post-reply drain, so idle or slow clients cost a task and a small buffer until their
//! deadline, never a verification slot. A connection the gate refuses (a peer not
//! allowed, `--max-connections` reached) is answered `NO access denied` or `NO server
//! busy` at once, replying, half-closing and taking what the client sends until it closes
//! (at most [`REFUSAL_LIMIT`]).
//!
//! On shutdown the loop stops accepting, then takes every connection already waiting in
//! the listen backlog (without waiting for more) and serves those too; drains are cut
//! short, and in-flight requests get their replies (bounded wait).
#![forbid(unsafe_code)]

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::connection::{Connection, Incoming, ReadError};
use crate::auth::{Authenticator, FrontEnd, Origin};
use crate::frontend::gate::{Admission, ConnectionSlot, Gate, REFUSAL_LIMIT};
use crate::peer::PeerCredentials;
use crate::protocol::Reply;
use crate::{log_debug, log_err, log_info};

/// What every mux connection needs to be served.
pub struct Server {
    pub authenticator: Arc<Authenticator>,
    /// Shared with the other front ends.
    pub gate: Arc<Gate>,
    pub timeout: Duration,
    pub max_field_len: usize,
}

/// Extra time in-flight requests get at shutdown beyond one I/O deadline.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// At shutdown, connections taken from the backlog beyond `--max-connections` (the
/// kernel's backlog is at most `net.core.somaxconn`, 4096 by default); a bound for a
/// flood that keeps arriving while the backlog is emptied.
const BACKLOG_DRAIN_LIMIT: usize = 65536;

/// Serves, or refuses, one accepted connection (spawns a task either way).
fn admit(server: &Arc<Server>, stream: UnixStream, stop: &watch::Receiver<bool>) {
    let peer = PeerCredentials::of(&stream);
    match server.gate.admit(peer.as_ref()) {
        Admission::Serve(slot) => {
            let server = Arc::clone(server);
            tokio::spawn(serve_connection(stream, peer, server, slot, stop.clone()));
        }
        Admission::Refuse(refusal) => {
            let stop = stop.clone();
            tokio::spawn(async move {
                let reply = Reply::no(refusal.reason);
                Connection::refuse(stream, &reply, REFUSAL_LIMIT, stop).await;
                drop(refusal.slot);
            });
        }
        Admission::Close => {}
    }
}

/// Serves until `stop` turns true, then serves what waits in the backlog, finishes
/// in-flight requests and returns.
pub async fn serve(listener: UnixListener, server: Arc<Server>, stop: watch::Receiver<bool>) {
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
            Ok((stream, _)) => admit(&server, stream, &stop),
            Err(error) => {
                // EMFILE and friends: log, back off briefly instead of spinning.
                log_err!("socket accept failure: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let limit = server
        .gate
        .max_connections()
        .saturating_add(BACKLOG_DRAIN_LIMIT);
    let waiting = drain_backlog(listener, limit, |stream| admit(&server, stream, &stop));
    if waiting > 0 {
        log_info!("shutdown: serving {waiting} connections that were waiting to be accepted");
    }
    let limit = server.timeout * 2 + SHUTDOWN_GRACE;
    if !server.gate.wait_idle(limit).await {
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
    _slot: ConnectionSlot,
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
    let origin = Origin {
        front_end: FrontEnd::Mux,
        peer,
    };
    let reply = match incoming {
        Incoming::Request(request) => server.authenticator.authenticate(request, &origin).await,
        Incoming::Rejected(rejection) => server.authenticator.refuse(&rejection, None, &origin),
    };
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
