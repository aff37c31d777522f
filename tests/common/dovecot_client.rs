//! A raw client of the Dovecot authentication protocol for the tests: sends exactly the
//! bytes a test gives (valid or not), reads the server's lines with deadlines, and tells
//! a close from silence. Works against our daemon's Dovecot socket and against the
//! private Dovecot auth server alike (UNIX or TCP), so transcripts can be compared.
//!
//! Every password it sends is recorded for the secrets scan: the decoded initial response
//! and continuation data (and the password part of a PLAIN message), and the base64 text
//! itself, which is what a leaking AUTH line would show.

use super::DEFAULT_TIMEOUT;
use super::secrets;
use saslauthd_rs::protocol::dovecot::{Endpoint, decode_base64, encode_base64, unescape};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

trait Stream: Read + Write + Send {
    fn set_timeout(&self, timeout: Duration);
    fn shutdown_write(&self);
}

impl Stream for UnixStream {
    fn set_timeout(&self, timeout: Duration) {
        let _ = self.set_read_timeout(Some(timeout));
        let _ = self.set_write_timeout(Some(timeout));
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl Stream for TcpStream {
    fn set_timeout(&self, timeout: Duration) {
        let _ = self.set_read_timeout(Some(timeout));
        let _ = self.set_write_timeout(Some(timeout));
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

/// What reading found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// One line, without its LF.
    Line(String),
    /// The server closed the connection.
    Closed,
    /// Nothing complete within the deadline.
    Quiet,
}

/// One client connection.
pub struct AuthClient {
    stream: Box<dyn Stream>,
    buffer: Vec<u8>,
    closed: bool,
    /// Per request id sent: its mechanism and how many responses went out, to tell a
    /// LOGIN username (logged, not secret) from its password.
    exchanges: HashMap<Vec<u8>, (Vec<u8>, usize)>,
}

/// `VERSION\t1\t0\nCPID\t<pid>\n`, as Postfix and Exim send it.
pub fn client_hello() -> Vec<u8> {
    format!("VERSION\t1\t0\nCPID\t{}\n", std::process::id()).into_bytes()
}

/// The base64 PLAIN message `\0user\0password`.
pub fn plain(user: &str, password: &str) -> String {
    b64(format!("\0{user}\0{password}").as_bytes())
}

/// Base64 of `data`, as a string.
pub fn b64(data: &[u8]) -> String {
    String::from_utf8(encode_base64(data)).expect("base64 is ASCII")
}

impl AuthClient {
    /// Connects (panics on failure, with the reason).
    pub fn connect(endpoint: &Endpoint) -> AuthClient {
        Self::try_connect(endpoint).unwrap_or_else(|e| panic!("connect {endpoint}: {e}"))
    }

    pub fn try_connect(endpoint: &Endpoint) -> io::Result<AuthClient> {
        let stream: Box<dyn Stream> = match endpoint {
            Endpoint::Unix(path) => Box::new(UnixStream::connect(path)?),
            Endpoint::Tcp(address) => {
                Box::new(TcpStream::connect_timeout(address, DEFAULT_TIMEOUT)?)
            }
        };
        stream.set_timeout(DEFAULT_TIMEOUT);
        Ok(AuthClient {
            stream,
            buffer: Vec::new(),
            closed: false,
            exchanges: HashMap::new(),
        })
    }

    /// Connects to a UNIX socket.
    pub fn unix(path: &Path) -> AuthClient {
        Self::connect(&Endpoint::Unix(path.to_path_buf()))
    }

    /// Connects, sends the client handshake and reads the server's up to `DONE`; returns
    /// the server's handshake lines.
    pub fn start(endpoint: &Endpoint) -> (AuthClient, Vec<String>) {
        let mut client = Self::connect(endpoint);
        client.send(&client_hello());
        let handshake = client.handshake();
        (client, handshake)
    }

    /// Sends bytes as they are (recording any password in them); a failed write (the
    /// server closed) is not an error here.
    pub fn send(&mut self, bytes: &[u8]) {
        self.record_secrets(bytes);
        let _ = self.stream.write_all(bytes);
    }

    /// `shutdown(SHUT_WR)`.
    pub fn half_close(&mut self) {
        self.stream.shutdown_write();
    }

    /// The next line, waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = &line[..line.len() - 1];
                return Next::Line(String::from_utf8_lossy(line).into_owned());
            }
            if self.closed {
                return Next::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Next::Quiet;
            }
            self.stream
                .set_timeout((deadline - now).max(Duration::from_millis(1)));
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.closed = true,
            }
        }
    }

    /// The next line; panics on a close or on nothing within 10 s.
    pub fn line(&mut self) -> String {
        match self.next(DEFAULT_TIMEOUT) {
            Next::Line(line) => line,
            other => panic!("expected a line from the server, got {other:?}"),
        }
    }

    /// Lines up to and including `DONE`.
    pub fn handshake(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line == "DONE";
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Every line until the server closes or stays quiet for `quiet`, and whether it
    /// closed.
    pub fn drain(&mut self, quiet: Duration) -> (Vec<String>, bool) {
        let mut lines = Vec::new();
        loop {
            match self.next(quiet) {
                Next::Line(line) => lines.push(line),
                Next::Closed => return (lines, true),
                Next::Quiet => return (lines, false),
            }
        }
    }

    /// Waits (at most 10 s) for the server to close; true if it did without sending more.
    pub fn closes_silently(&mut self) -> bool {
        matches!(self.next(DEFAULT_TIMEOUT), Next::Closed)
    }
}

/// The handshake with what differs per server and connection masked: `SPID\t*`,
/// `CUID\t*`, `COOKIE\t<32 hex digits>` becomes `COOKIE\t*` (anything else stays, so a
/// malformed cookie shows).
pub fn masked(handshake: &[String]) -> Vec<String> {
    handshake
        .iter()
        .map(|line| {
            let (name, value) = line.split_once('\t').unwrap_or((line, ""));
            let masked = match name {
                "SPID" | "CUID" if value.parse::<u32>().is_ok() => true,
                "COOKIE" => {
                    value.len() == 32
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                }
                _ => false,
            };
            if masked {
                format!("{name}\t*")
            } else {
                line.clone()
            }
        })
        .collect()
}

impl AuthClient {
    /// Records the passwords in client lines (no-op when the scan is off): the base64 text
    /// of every response (what a leaking AUTH or CONT line would show), and decoded: a
    /// PLAIN message's password part, and LOGIN's second response.
    fn record_secrets(&mut self, bytes: &[u8]) {
        if !secrets::enabled() {
            return;
        }
        for line in bytes.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
            let (id, data) = match fields.as_slice() {
                [b"AUTH", id, mech, rest @ ..] => {
                    let resp = rest
                        .iter()
                        .map(|f| unescape(f))
                        .find_map(|f| f.strip_prefix(b"resp=").map(<[u8]>::to_vec));
                    let seen = usize::from(resp.as_ref().is_some_and(|r| !r.is_empty()));
                    self.exchanges
                        .insert(id.to_vec(), (mech.to_ascii_uppercase(), seen));
                    (id.to_vec(), resp)
                }
                [b"CONT", id, data @ ..] => {
                    if let Some((_, seen)) = self.exchanges.get_mut(*id) {
                        *seen += 1;
                    }
                    (id.to_vec(), Some(data.join(&b'\t')))
                }
                _ => continue,
            };
            let Some(data) = data else { continue };
            secrets::record_password(&data);
            let Some(decoded) = decode_base64(&data) else {
                continue;
            };
            let decoded = decoded.as_bytes();
            match self.exchanges.get(&id) {
                Some((mech, seen)) if mech == b"LOGIN" => {
                    if *seen >= 2 {
                        secrets::record_password(decoded);
                    }
                }
                _ => {
                    if let Some(nul) = decoded.iter().rposition(|&b| b == 0) {
                        secrets::record_password(&decoded[nul + 1..]);
                    } else {
                        secrets::record_password(decoded);
                    }
                }
            }
        }
    }
}

/// Polls until `path` accepts connections (bounded by 10 s); false if it never did.
pub fn wait_for_socket(path: &Path) -> bool {
    let start = Instant::now();
    while start.elapsed() < DEFAULT_TIMEOUT {
        if UnixStream::connect(path).is_ok() {
            return true;
        }
        sleep(Duration::from_millis(10));
    }
    false
}
