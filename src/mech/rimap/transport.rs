//! The byte stream under async-imap: plain TCP or TLS over TCP, with a cap on how much the
//! server may send in one verification.
//!
//! async-imap buffers a response until it is complete and lets that buffer grow to 512 MiB,
//! so a hostile or broken server could make each verification hold that much memory until
//! the deadline. [`Capped`] counts the bytes read and fails the read that goes past the cap;
//! a real server sends well under 1 KiB before the tagged reply to `LOGIN`.
//!
//! It also stops, as a read error, the one input found by fuzzing (`fuzz/`) on which
//! async-imap's parser (imap-proto 0.17.0) panics: a response code's `]` followed directly
//! by a non-ASCII byte (`* OK [ALERT]\xff`), where the grammar wants a space. The parser
//! slices that text one byte in, inside a character.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_native_tls::TlsStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The most a server may send during one verification (greeting, STARTTLS, LOGIN reply).
pub const MAX_SERVER_BYTES: usize = 64 * 1024;

/// Plain TCP, or TLS over TCP; or a server played back from memory (the fuzz targets and
/// unit tests drive the real conversation code with it).
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Scripted(Scripted),
}

/// A server played back from memory: reads return the script in pieces of at most `piece`
/// bytes (so responses arrive split anywhere), then end of stream; writes are taken whole
/// and dropped.
#[derive(Debug)]
pub struct Scripted {
    script: Vec<u8>,
    at: usize,
    piece: usize,
}

impl Scripted {
    pub fn new(script: &[u8], piece: usize) -> Scripted {
        Scripted {
            script: script.to_vec(),
            at: 0,
            piece: piece.max(1),
        }
    }

    fn read(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self
            .piece
            .min(buf.remaining())
            .min(self.script.len() - self.at);
        buf.put_slice(&self.script[self.at..self.at + n]);
        self.at += n;
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Plain(_) => f.write_str("Transport::Plain"),
            Transport::Tls(_) => f.write_str("Transport::Tls"),
            Transport::Scripted(_) => f.write_str("Transport::Scripted"),
        }
    }
}

/// A [`Transport`] that fails reads once the server has sent more than its allowance, or
/// something the parser above can't take (see the module's notes).
#[derive(Debug)]
pub struct Capped {
    inner: Transport,
    received: usize,
    limit: usize,
    exceeded: bool,
    /// The last byte received was `]`.
    after_bracket: bool,
}

impl Capped {
    pub fn new(inner: Transport, limit: usize) -> Capped {
        Capped {
            inner,
            received: 0,
            limit,
            exceeded: false,
            after_bracket: false,
        }
    }

    /// Whether a read failed because the server sent too much.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// The transport and the bytes read so far (for STARTTLS).
    pub fn into_parts(self) -> (Transport, usize) {
        (self.inner, self.received)
    }

    /// A new transport (after STARTTLS) that keeps counting against the same cap.
    pub fn resume(inner: Transport, limit: usize, received: usize) -> Capped {
        Capped {
            inner,
            received,
            limit,
            exceeded: false,
            after_bracket: false,
        }
    }

    pub fn into_inner(self) -> Transport {
        self.inner
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.exceeded {
            return Poll::Ready(Err(too_much(this.limit)));
        }
        let before = buf.filled().len();
        let polled = match &mut this.inner {
            Transport::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            Transport::Scripted(script) => {
                script.read(buf);
                Poll::Ready(Ok(()))
            }
        };
        if let Poll::Ready(Ok(())) = polled {
            this.received += buf.filled().len() - before;
            if this.received > this.limit {
                this.exceeded = true;
                // A failed read must not hand out data.
                buf.set_filled(before);
                return Poll::Ready(Err(too_much(this.limit)));
            }
            if this.bracket_then_non_ascii(&buf.filled()[before..]) {
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a response code's ']' is followed by a non-ASCII byte instead of a space",
                )));
            }
        }
        polled
    }
}

impl Capped {
    /// Whether `new`, read after what came before, has `]` then a non-ASCII byte.
    fn bracket_then_non_ascii(&mut self, new: &[u8]) -> bool {
        let mut after_bracket = self.after_bracket;
        for &byte in new {
            if after_bracket && !byte.is_ascii() {
                return true;
            }
            after_bracket = byte == b']';
        }
        self.after_bracket = after_bracket;
        false
    }
}

fn too_much(limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the server sent more than {limit} bytes"),
    )
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Transport::Plain(tcp) => Pin::new(tcp).poll_write(cx, data),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, data),
            Transport::Scripted(_) => Poll::Ready(Ok(data.len())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Transport::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            Transport::Scripted(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Transport::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            Transport::Scripted(_) => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn reads_past_the_cap_fail() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut peer, _) = listener.accept().await.unwrap();
                let _ = peer.write_all(&[b'x'; 300]).await;
                let mut echo = [0u8; 5];
                let _ = peer.read_exact(&mut echo).await;
                echo
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut capped = Capped::new(Transport::Plain(tcp), 100);
            capped.write_all(b"hello").await.unwrap();
            let mut sink = Vec::new();
            let error = capped.read_to_end(&mut sink).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            assert!(capped.exceeded());
            assert!(sink.len() <= 300);
            assert_eq!(&server.await.unwrap(), b"hello");
        });
    }
}
