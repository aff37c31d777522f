//! One client connection on the async path: read one request, write one reply, half-close,
//! drain. The [accept-time path](super::intake) hands over the connections it can't
//! answer at once.
//!
//! The caller bounds every step with a deadline. Reading decodes as bytes arrive, so an
//! over-long field is refused as soon as its length prefix is in. When the fourth field
//! completes with nothing behind it (or with a lone byte behind it), one non-blocking
//! receive checks whether a fifth field (the client address) is already there: four-field
//! clients are answered at once, and a five-field request is read whole. Bytes after a
//! four-field request that can't start a fifth field are ignored
//! ([`decode_received`]). The receive buffer holds the password, so it is wiped.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;
use zeroize::{Zeroize, Zeroizing};

use crate::protocol::{Decoded, Rejection, Reply, Request, decode_received, max_request_len};

/// What a client sent.
#[derive(Debug)]
pub enum Incoming {
    /// A request, and how many bytes after it were ignored because they can't be a fifth
    /// field (none for a pipelined request after a five-field one: those are drained).
    Request {
        request: Request,
        ignored: usize,
    },
    Rejected(Rejection),
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed (or half-closed) before the request was complete.
    Truncated {
        received: usize,
    },
    Io(io::Error),
}

pub struct Connection {
    stream: UnixStream,
    buffer: Zeroizing<Vec<u8>>,
    max_field_len: usize,
}

const CHUNK: usize = 4096;

/// A wiping receive buffer sized for the largest request up front, so it never
/// reallocates (a reallocation would leave an unwiped copy of the password behind).
pub fn request_buffer(max_field_len: usize) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(Vec::with_capacity(max_request_len(max_field_len)))
}

impl Connection {
    pub fn new(stream: UnixStream, max_field_len: usize) -> Connection {
        Connection {
            stream,
            buffer: request_buffer(max_field_len),
            max_field_len,
        }
    }

    /// A connection whose request was read elsewhere (or is not read at all): for the
    /// reply and the drain.
    pub fn replying(stream: UnixStream) -> Connection {
        Connection {
            stream,
            buffer: Zeroizing::new(Vec::new()),
            max_field_len: 0,
        }
    }

    /// Reads until a request is complete or refused. Not bounded in time by itself.
    pub async fn read_request(&mut self) -> Result<Incoming, ReadError> {
        let capacity = self.buffer.capacity();
        let mut looked_for_more = false;
        loop {
            match decode_received(&self.buffer, self.max_field_len, false) {
                Decoded::Rejected(rejection) => return Ok(Incoming::Rejected(rejection)),
                Decoded::Complete { request, consumed }
                    if request.client_addr.is_some() || consumed < self.buffer.len() =>
                {
                    let ignored = if request.client_addr.is_none() {
                        self.buffer.len() - consumed
                    } else {
                        0
                    };
                    return Ok(Incoming::Request { request, ignored });
                }
                // A four-field request with nothing behind it, or one byte behind it, or
                // not complete yet: what it is depends on whether more is on its way.
                _ => {}
            }
            let settled = decode_received(&self.buffer, self.max_field_len, true);
            if let Decoded::Complete { request, consumed } = settled {
                if !looked_for_more {
                    looked_for_more = true;
                    if self.receive_ready_bytes()? > 0 {
                        continue;
                    }
                }
                let ignored = self.buffer.len() - consumed;
                return Ok(Incoming::Request { request, ignored });
            }
            let room = capacity - self.buffer.len();
            if room == 0 {
                // Cannot happen: a capped request always fits. Refuse, don't spin.
                return Err(ReadError::Io(io::Error::other("request buffer full")));
            }
            let mut chunk = [0u8; CHUNK];
            let want = room.min(CHUNK);
            let read = self.stream.read(&mut chunk[..want]).await;
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    chunk.zeroize();
                    return Err(ReadError::Io(e));
                }
            };
            self.buffer.extend_from_slice(&chunk[..n]);
            chunk.zeroize();
            if n == 0 {
                return Err(ReadError::Truncated {
                    received: self.buffer.len(),
                });
            }
            looked_for_more = false;
        }
    }

    /// Takes whatever the client has already sent, without waiting. Returns the count.
    fn receive_ready_bytes(&mut self) -> Result<usize, ReadError> {
        let room = self.buffer.capacity() - self.buffer.len();
        if room == 0 {
            return Ok(0);
        }
        let mut chunk = [0u8; CHUNK];
        let want = room.min(CHUNK);
        let got = recv(
            self.stream.as_raw_fd(),
            &mut chunk[..want],
            MsgFlags::MSG_DONTWAIT,
        );
        let result = match got {
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(0),
            Err(errno) => Err(ReadError::Io(errno.into())),
        };
        chunk.zeroize();
        result
    }

    pub async fn write_reply(&mut self, reply: &Reply) -> io::Result<()> {
        self.write_bytes(&reply.encode()).await
    }

    /// Writes (the rest of) an encoded reply.
    pub async fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Answers `reply` without reading a request (a refused peer, a busy server): writes
    /// it within `limit`, then [`Connection::finish`]es, so the client's request is taken
    /// (and wiped) and the client reads the reply and a clean end of stream, never a reset
    /// or a broken pipe.
    pub async fn refuse(
        stream: UnixStream,
        reply: &Reply,
        limit: Duration,
        shutdown: watch::Receiver<bool>,
    ) {
        let mut connection = Connection::replying(stream);
        if let Ok(Ok(())) = tokio::time::timeout(limit, connection.write_reply(reply)).await {
            connection.finish(limit, shutdown).await;
        }
    }

    /// Half-closes, then discards input until the client closes, `limit` passes or the
    /// server shuts down. libsasl reads the reply and closes, so this is normally instant.
    pub async fn finish(mut self, limit: Duration, mut shutdown: watch::Receiver<bool>) {
        self.buffer.zeroize();
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let drain = async {
            let mut sink = [0u8; CHUNK];
            while let Ok(n) = self.stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            sink.zeroize();
        };
        tokio::select! {
            _ = tokio::time::timeout(limit, drain) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => {}
        }
    }
}
