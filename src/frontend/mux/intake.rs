//! The accept-time path: what happens to a mux connection on the thread that accepted it.
//!
//! libsasl writes its whole request right after `connect`, so when a connection is
//! accepted its request is usually complete in the socket buffer already. One
//! non-blocking receive takes it (and is the "is a fifth field already there?" check as
//! well: it takes everything the client has sent so far). If what it got is exactly one
//! complete request, the request is decided here, without the reactor or another thread:
//!
//! - refusals (validation, `--allow-uid`, server busy) and cache hits settled by the
//!   account state's version are answered on this thread: one non-blocking send, the
//!   request taken (it was only peeked), a half-close, and the connection drains in
//!   [`linger`](super::linger) until the client closes, without the reactor.
//! - a miss of a mechanism that [verifies locally](crate::mech::Mechanism::verifies_locally)
//!   goes to the verification pool, whose thread answers the same way when it is done
//!   (or the authenticator's watchdog, at the deadline).
//!
//! Everything else goes to the async [`connection`](super::connection) path with the
//! bytes received so far: a partial or slow request, bytes after the request (pipelined
//! requests, bytes ignored after a four-field request: they need the post-reply drain), a
//! refused request's drain, throttled requests, account state to read, PAM and network
//! mechanisms (their holds), and a reply the socket won't take at once.
#![forbid(unsafe_code)]

use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv, send};
use tokio::net::UnixStream;
use tokio::runtime::Handle;
use tokio::sync::watch;
use zeroize::{Zeroize, Zeroizing};

use super::connection::{Connection, Incoming, ReadError, request_buffer};
use super::linger::{Held, Lingering, take_unread};
use crate::auth::{Authenticator, FrontEnd, Origin, OriginFields, Pending, Start};
use crate::frontend::gate::{Admission, ConnectionSlot, REFUSAL_LIMIT, Refusal};
use crate::peer::PeerCredentials;
use crate::protocol::{Decoded, Reply, decode_received};
use crate::{log_debug, log_err};

/// What every mux connection needs to be served.
pub struct Server {
    pub authenticator: Arc<Authenticator>,
    /// Shared with the other front ends.
    pub gate: Arc<crate::frontend::gate::Gate>,
    /// The deadline of each read and write, and of the post-reply drain.
    pub timeout: Duration,
    pub max_field_len: usize,
}

/// What every accepting thread shares.
pub struct Intake {
    pub server: Arc<Server>,
    /// The runtime of the async path.
    pub runtime: Handle,
    /// Turns true at shutdown (cuts drains short).
    pub stop: watch::Receiver<bool>,
    /// The connections answered here, draining.
    pub lingering: Lingering,
}

/// One accepting thread's receive buffer, reused for every connection and wiped after each
/// (it holds passwords).
pub struct Scratch {
    buffer: Zeroizing<Vec<u8>>,
}

impl Scratch {
    pub fn new(max_field_len: usize) -> Scratch {
        let mut buffer = request_buffer(max_field_len);
        let capacity = buffer.capacity();
        buffer.resize(capacity, 0);
        Scratch { buffer }
    }
}

/// What the first receive found.
enum Received {
    /// The client closed without sending anything.
    Closed,
    /// Nothing yet, or not a single complete request: for the async path.
    Partial,
    /// Exactly one complete request, nothing behind it, nothing more on its way now.
    Request(crate::protocol::Request),
}

impl Intake {
    /// Serves, or refuses, a connection just accepted.
    pub fn serve(self: &Arc<Self>, stream: StdStream, scratch: &mut Scratch) {
        let peer = PeerCredentials::of(&stream);
        match self.server.gate.admit(peer.as_ref()) {
            Admission::Serve(slot) => self.serve_admitted(stream, peer, slot, scratch),
            Admission::Refuse(refusal) => self.refuse(stream, peer, refusal, scratch),
            Admission::Close => {}
        }
    }

    fn serve_admitted(
        self: &Arc<Self>,
        stream: StdStream,
        peer: Option<PeerCredentials>,
        slot: ConnectionSlot,
        scratch: &mut Scratch,
    ) {
        let origin = Origin {
            front_end: FrontEnd::Mux,
            peer,
            client: None,
        };
        let request = match self.receive(&stream, scratch) {
            Ok(Received::Request(request)) => request,
            Ok(Received::Partial) => {
                let intake = Arc::clone(self);
                self.runtime.spawn(async move {
                    intake.read_and_serve(stream, origin, slot).await;
                });
                return;
            }
            Ok(Received::Closed) => {
                log_debug!(
                    "client closed after 0 bytes, before a complete request{}",
                    OriginFields(&origin)
                );
                return;
            }
            Err(error) => {
                log_debug!("read failure: {error}{}", OriginFields(&origin));
                return;
            }
        };
        let authenticator = &self.server.authenticator;
        match authenticator.start(request, &origin) {
            Start::Done(reply) => {
                self.answer(stream, &reply, origin, Box::new(slot), self.server.timeout)
            }
            Start::Verify(verification) => {
                let intake = Arc::clone(self);
                authenticator.verify_on_pool(verification, move |reply| {
                    let limit = intake.server.timeout;
                    intake.answer(stream, &reply, origin, Box::new(slot), limit);
                });
            }
            Start::Wait(pending) => {
                let intake = Arc::clone(self);
                self.runtime.spawn(async move {
                    intake
                        .finish_and_answer(stream, pending, origin, slot)
                        .await;
                });
            }
        }
    }

    /// One look without waiting at what the client has sent (`MSG_PEEK`: taking the bytes
    /// would wake a client that sleeps waiting for its reply, as the kernel tells a writer
    /// about freed buffer space; they are taken after the reply instead).
    fn receive(&self, stream: &StdStream, scratch: &mut Scratch) -> io::Result<Received> {
        let buffer = &mut scratch.buffer[..];
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK;
        let received = match recv(stream.as_raw_fd(), buffer, flags) {
            Ok(0) => return Ok(Received::Closed),
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => 0,
            Err(errno) => return Err(errno.into()),
        };
        // Less than the buffer holds: the client had sent nothing more.
        let settled = received < buffer.len();
        let outcome = match decode_received(&buffer[..received], self.server.max_field_len, settled)
        {
            Decoded::Complete { request, consumed } if settled && consumed == received => {
                Received::Request(request)
            }
            // The async path reads it all again.
            _ => Received::Partial,
        };
        buffer[..received].zeroize();
        Ok(outcome)
    }

    /// Sends `reply` without waiting, half-closes and lets the connection drain for at most
    /// `limit` (it keeps `held`, its slot, until it ends). A reply the socket won't take at
    /// once (never, in practice: it is small and the socket new) is finished on the async
    /// path.
    fn answer(
        self: &Arc<Self>,
        stream: StdStream,
        reply: &Reply,
        origin: Origin,
        held: Held,
        limit: Duration,
    ) {
        let bytes = reply.encode();
        let stream = Arc::new(stream);
        let held = self
            .lingering
            .push(Arc::clone(&stream), Instant::now() + limit, held);
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let sent = match send(stream.as_raw_fd(), &bytes, flags) {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => 0,
            Err(errno) => {
                let error = io::Error::from(errno);
                log_err!("write failure: {error}{}", OriginFields(&origin));
                self.lingering.reclaim(&stream);
                return;
            }
        };
        if sent == bytes.len() {
            // The request, peeked so far, is taken now: the reply has woken the client
            // already, so this wakes nobody.
            take_unread(&stream);
            let _ = stream.shutdown(Shutdown::Write);
            drop(held);
            return;
        }
        // Finished on the async path, unless a sweep found the client gone meanwhile.
        let Some(held) = held.or_else(|| self.lingering.reclaim(&stream)) else {
            return;
        };
        let Ok(stream) = Arc::try_unwrap(stream) else {
            return;
        };
        take_unread(&stream);
        let intake = Arc::clone(self);
        self.runtime.spawn(async move {
            let Some(mut connection) = intake.resume(stream, &origin) else {
                return;
            };
            if intake.write(&mut connection, &bytes[sent..], &origin).await {
                connection.finish(limit, intake.stop.clone()).await;
            }
            drop(held);
        });
    }

    /// A refused peer or a busy server: `NO reason`. Answered here when the client's
    /// request is already complete (it is taken, so closing is clean); otherwise on the
    /// async path, which replies at once and takes what the client sends until it closes.
    fn refuse(
        self: &Arc<Self>,
        stream: StdStream,
        peer: Option<PeerCredentials>,
        refusal: Refusal,
        scratch: &mut Scratch,
    ) {
        let reply = Reply::no(refusal.reason);
        let origin = Origin {
            front_end: FrontEnd::Mux,
            peer,
            client: None,
        };
        match self.receive(&stream, scratch) {
            Ok(Received::Request(_)) => {
                self.answer(
                    stream,
                    &reply,
                    origin,
                    Box::new(refusal.slot),
                    REFUSAL_LIMIT,
                );
                return;
            }
            Ok(Received::Closed) | Err(_) => return,
            Ok(Received::Partial) => {}
        }
        let intake = Arc::clone(self);
        self.runtime.spawn(async move {
            if let Ok(stream) = intake.register(stream, &origin) {
                Connection::refuse(stream, &reply, REFUSAL_LIMIT, intake.stop.clone()).await;
            }
            drop(refusal.slot);
        });
    }

    /// The async path for a request not (wholly) received at accept time.
    async fn read_and_serve(&self, stream: StdStream, origin: Origin, _slot: ConnectionSlot) {
        let Ok(stream) = self.register(stream, &origin) else {
            return;
        };
        let server = &self.server;
        let mut connection = Connection::new(stream, server.max_field_len);
        let incoming = match tokio::time::timeout(server.timeout, connection.read_request()).await {
            Ok(Ok(incoming)) => incoming,
            Ok(Err(ReadError::Truncated { received })) => {
                log_debug!(
                    "client closed after {received} bytes, before a complete request{}",
                    OriginFields(&origin)
                );
                return;
            }
            Ok(Err(ReadError::Io(error))) => {
                log_debug!("read failure: {error}{}", OriginFields(&origin));
                return;
            }
            Err(_) => {
                log_debug!(
                    "no complete request within {:?}; closing the connection{}",
                    server.timeout,
                    OriginFields(&origin)
                );
                return;
            }
        };
        let reply = match incoming {
            Incoming::Request { request, ignored } => {
                if ignored > 0 {
                    log_debug!(
                        "ignored {ignored} bytes after a four-field request (not a client \
                         address field){}",
                        OriginFields(&origin)
                    );
                }
                server.authenticator.authenticate(request, &origin).await
            }
            Incoming::Rejected(rejection) => server.authenticator.refuse(&rejection, None, &origin),
        };
        if self.write(&mut connection, &reply.encode(), &origin).await {
            connection.finish(server.timeout, self.stop.clone()).await;
        }
    }

    /// The async path for a request that must wait (throttle, account state, a mechanism
    /// with holds or a backend): the connection is registered with the reactor only now,
    /// and waits for the reply without reading; the request was consumed whole.
    async fn finish_and_answer(
        self: Arc<Self>,
        stream: StdStream,
        pending: Pending,
        origin: Origin,
        slot: ConnectionSlot,
    ) {
        // The request, peeked so far, is taken before the wait: the async drain may be cut
        // short, and a socket closed on unread bytes resets the client.
        take_unread(&stream);
        let reply = self.server.authenticator.finish(pending).await.reply;
        let Some(mut connection) = self.resume(stream, &origin) else {
            return;
        };
        if self.write(&mut connection, &reply.encode(), &origin).await {
            connection
                .finish(self.server.timeout, self.stop.clone())
                .await;
        }
        drop(slot);
    }

    /// The stream on the reactor, or `None` (logged) when it can't be registered.
    fn resume(&self, stream: StdStream, origin: &Origin) -> Option<Connection> {
        let stream = self.register(stream, origin).ok()?;
        Some(Connection::replying(stream))
    }

    fn register(&self, stream: StdStream, origin: &Origin) -> io::Result<UnixStream> {
        stream
            .set_nonblocking(true)
            .and_then(|()| UnixStream::from_std(stream))
            .inspect_err(|error| {
                log_err!("cannot serve a connection: {error}{}", OriginFields(origin));
            })
    }

    /// Writes `bytes` within the I/O deadline; false (logged) when that fails.
    async fn write(&self, connection: &mut Connection, bytes: &[u8], origin: &Origin) -> bool {
        let limit: Duration = self.server.timeout;
        match tokio::time::timeout(limit, connection.write_bytes(bytes)).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                log_err!("write failure: {error}{}", OriginFields(origin));
                false
            }
            Err(_) => {
                log_err!(
                    "write failure: client did not take the reply within {limit:?}{}",
                    OriginFields(origin)
                );
                false
            }
        }
    }
}
