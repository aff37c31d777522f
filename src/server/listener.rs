//! The accept loop: one task per connection under a cap, and graceful shutdown.
//!
//! Each connection gets one deadline for its request, one for the reply and one for the
//! post-reply drain, so idle or slow clients cost a task and a small buffer until their
//! deadline, never a verification slot. Past `--max-connections`, new clients are told
//! `NO server busy` at once. On shutdown the loop stops accepting, drains are cut short,
//! and in-flight requests get their replies (bounded wait).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::connection::{Connection, ReadError};
use super::handler::Handler;
use super::peer::PeerCredentials;
use crate::log::RateLimitedLog;
use crate::protocol::{Reply, text};
use crate::{log_debug, log_err};

/// What every connection needs to be served.
pub struct Server {
    pub handler: Handler,
    pub timeout: Duration,
    pub max_field_len: usize,
    pub max_connections: usize,
}

/// Extra time in-flight requests get at shutdown beyond one I/O deadline.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves until `stop` turns true, then finishes in-flight requests and returns.
pub async fn serve(listener: UnixListener, server: Arc<Server>, stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(server.max_connections));
    let busy_log = RateLimitedLog::default();
    let mut stopping = stop.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and friends: log, back off briefly instead of spinning.
                log_err!("socket accept failure: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                let server = Arc::clone(&server);
                let stop = stop.clone();
                tokio::spawn(serve_connection(stream, server, permit, stop));
            }
            Err(_) => {
                busy_log.log(|| {
                    format!(
                        "connection limit ({}) reached; answering new clients: NO {}",
                        server.max_connections,
                        text::BUSY
                    )
                });
                tokio::spawn(refuse_busy(stream));
            }
        }
    }
    drop(listener);
    let everyone = u32::try_from(server.max_connections).unwrap_or(u32::MAX);
    let limit = server.timeout * 2 + SHUTDOWN_GRACE;
    if tokio::time::timeout(limit, slots.acquire_many(everyone))
        .await
        .is_err()
    {
        log_err!("shutdown: connections still open after {limit:?}; exiting anyway");
    }
}

async fn serve_connection(
    stream: UnixStream,
    server: Arc<Server>,
    _slot: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    let peer = PeerCredentials::of(&stream);
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

/// Past the connection cap: answer at once, within a short deadline, and close.
async fn refuse_busy(mut stream: UnixStream) {
    let reply = Reply::no(text::BUSY).encode();
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&reply)).await;
}
