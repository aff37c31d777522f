//! The Dovecot socket's accept loop: a UNIX socket, admitted through the shared
//! [`Gate`] (the peer-credential allow-lists, the connection cap across all sockets), or a
//! TCP socket, where the address allow-list (`--dovecot-allow-from`) stands in for peer
//! credentials before the same connection cap.
//!
//! The protocol has no way to say "no" before its handshake, so a connection the gate or
//! the address list refuses is closed at once, without one: Postfix then answers the SMTP
//! client `454 4.7.0 Temporary authentication failure`, Exim `435`. The gate logs why.
//!
//! On shutdown the loop stops accepting; each connection stops reading, answers the
//! verifications it has in flight and closes (see [`connection`](super::connection)).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use super::AddressRange;
use super::connection::{self, Context};
use crate::auth::{FrontEnd, Origin};
use crate::frontend::gate::{Admission, Gate};
use crate::log::RateLimitedLog;
use crate::log_err;
use crate::peer::PeerCredentials;

/// Where the Dovecot protocol is served.
pub enum Listener {
    Unix(UnixListener),
    Tcp {
        listener: TcpListener,
        /// `--dovecot-allow-from`.
        allow_from: Vec<AddressRange>,
    },
}

/// What every Dovecot connection needs.
pub struct Server {
    pub context: Arc<Context>,
    /// Shared with the other front ends.
    pub gate: Arc<Gate>,
    /// TCP clients outside `--dovecot-allow-from`, logged at most once a second.
    pub address_log: RateLimitedLog,
}

/// Serves until `stop` turns true, then lets the connections finish (they watch `stop`
/// too) and returns.
pub async fn serve(listener: Listener, server: Arc<Server>, stop: watch::Receiver<bool>) {
    let mut stopping = stop.clone();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopping.wait_for(|s| *s) => break,
            accepted = accept(&listener, &server) => accepted,
        };
        match accepted {
            Ok(Some((origin, stream))) => admit(&server, origin, stream, &stop),
            Ok(None) => {}
            Err(error) => {
                log_err!("dovecot socket accept failure: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// An accepted stream of either kind.
enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

/// The next connection, or `None` for a TCP client outside the allow-list (closed).
async fn accept(listener: &Listener, server: &Server) -> std::io::Result<Option<(Origin, Stream)>> {
    match listener {
        Listener::Unix(listener) => {
            let (stream, _) = listener.accept().await?;
            let origin = Origin {
                front_end: FrontEnd::Dovecot,
                peer: PeerCredentials::of(&stream),
                client: None,
            };
            Ok(Some((origin, Stream::Unix(stream))))
        }
        Listener::Tcp {
            listener,
            allow_from,
        } => {
            let (stream, address) = listener.accept().await?;
            if !allow_from.iter().any(|range| range.contains(address.ip())) {
                server.address_log.log(|| {
                    let allowed: Vec<String> = allow_from.iter().map(|r| r.to_string()).collect();
                    format!(
                        "access denied: {address} is not allowed to connect to the dovecot \
                         socket (allowed: {}); closing the connection",
                        allowed.join(",")
                    )
                });
                return Ok(None);
            }
            let _ = stream.set_nodelay(true);
            let origin = Origin {
                front_end: FrontEnd::Dovecot,
                peer: None,
                client: Some(address),
            };
            Ok(Some((origin, Stream::Tcp(stream))))
        }
    }
}

/// Serves the connection in a task of its own if the gate admits it; closes it otherwise.
fn admit(server: &Arc<Server>, origin: Origin, stream: Stream, stop: &watch::Receiver<bool>) {
    // A TCP client has no credentials: the address list was its policy.
    let admission = match &stream {
        Stream::Unix(_) => server.gate.admit(origin.peer.as_ref()),
        Stream::Tcp(_) => server.gate.admit_slot(),
    };
    let Admission::Serve(slot) = admission else {
        return;
    };
    let context = Arc::clone(&server.context);
    let stop = stop.clone();
    tokio::spawn(async move {
        match stream {
            Stream::Unix(stream) => connection::serve(stream, origin, context, stop).await,
            Stream::Tcp(stream) => connection::serve(stream, origin, context, stop).await,
        }
        drop(slot);
    });
}
