//! `testsaslauthd --dovecot`: one authentication over the Dovecot protocol, the way Postfix
//! (`smtpd_sasl_type = dovecot`) does it: connect, send `VERSION` and `CPID` at once, read
//! the server's handshake up to `DONE` (refusing what Postfix and Exim refuse: no
//! `VERSION 1`, a `SPID` before any `MECH`, the mechanism not offered), then `AUTH` (PLAIN
//! with an initial response; LOGIN answering `Username:` and `Password:`), and read until
//! the `OK` or `FAIL` for that request. Every step has a deadline.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::protocol::dovecot::{
    Endpoint, Line, MAX_LINE, Mechanism, ServerLine, auth_line, client_handshake, cont_line,
    field_value, next_line, parse_server_line,
};
use crate::secret::Password;

/// The request id used (Exim's choice; any id would do on a fresh connection).
const REQUEST_ID: u32 = 1;

/// What one authentication asks for.
pub struct Attempt<'a> {
    pub endpoint: &'a Endpoint,
    pub mechanism: Mechanism,
    /// The SASL login (`user` or `user@realm`).
    pub login: &'a [u8],
    pub password: &'a [u8],
    pub service: &'a [u8],
    /// Sent as `rip=`.
    pub remote_ip: Option<std::net::IpAddr>,
    pub timeout: Duration,
}

/// The server's verdict: whether it said `OK`, and its final line, for `--show-reply`.
pub struct Verdict {
    pub ok: bool,
    pub reply: Vec<u8>,
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Runs one authentication; errors are transport or protocol problems, worded for stderr.
pub fn authenticate(attempt: &Attempt<'_>) -> Result<Verdict, String> {
    let deadline = Instant::now() + attempt.timeout;
    let mut stream = connect(attempt.endpoint, attempt.timeout)?;
    let mut reader = LineReader::default();
    send(&mut stream, &client_handshake(std::process::id()))?;
    read_handshake(&mut stream, &mut reader, attempt.mechanism, deadline)?;
    let response = match attempt.mechanism {
        Mechanism::Plain => {
            let mut message = Password::new(vec![0]);
            message.extend_from_slice(attempt.login);
            message.extend_from_slice(&[0]);
            message.extend_from_slice(attempt.password);
            Some(message)
        }
        Mechanism::Login => None,
    };
    let line = auth_line(
        REQUEST_ID,
        attempt.mechanism,
        attempt.service,
        None,
        attempt.remote_ip,
        false,
        response.as_ref().map(Password::as_bytes),
    );
    send(&mut stream, line.as_bytes())?;
    loop {
        let line = reader.next(&mut stream, deadline)?;
        match parse_server_line(&line) {
            Some(ServerLine::Ok {
                id: REQUEST_ID,
                fields,
            }) => {
                if field_value(&fields, "user").is_none() {
                    return Err("the server's OK has no user= field".into());
                }
                return Ok(Verdict {
                    ok: true,
                    reply: line,
                });
            }
            Some(ServerLine::Fail { id: REQUEST_ID, .. }) => {
                return Ok(Verdict {
                    ok: false,
                    reply: line,
                });
            }
            Some(ServerLine::Cont {
                id: REQUEST_ID,
                challenge,
            }) => {
                let answer = match challenge.as_deref() {
                    Some(b"Username:") if attempt.mechanism == Mechanism::Login => attempt.login,
                    Some(b"Password:") if attempt.mechanism == Mechanism::Login => attempt.password,
                    _ => return Err("unexpected challenge from the server".into()),
                };
                send(&mut stream, cont_line(REQUEST_ID, answer).as_bytes())?;
            }
            // Replies for other ids, and unknown lines, are not ours: skip them.
            _ => {}
        }
    }
}

fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Box<dyn Stream>, String> {
    let fail = |e: io::Error| format!("connect() : {}", super::strip(&e));
    let options = |e: io::Error| format!("socket() : {}", super::strip(&e));
    match endpoint {
        Endpoint::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(fail)?;
            stream
                .set_read_timeout(Some(timeout))
                .and_then(|()| stream.set_write_timeout(Some(timeout)))
                .map_err(options)?;
            Ok(Box::new(stream))
        }
        Endpoint::Tcp(address) => {
            let stream = TcpStream::connect_timeout(address, timeout).map_err(fail)?;
            stream
                .set_read_timeout(Some(timeout))
                .and_then(|()| stream.set_write_timeout(Some(timeout)))
                .map_err(options)?;
            Ok(Box::new(stream))
        }
    }
}

fn send(stream: &mut dyn Stream, bytes: &[u8]) -> Result<(), String> {
    stream
        .write_all(bytes)
        .and_then(|()| stream.flush())
        .map_err(|e| super::failure("write failed", &e))
}

/// Reads up to `DONE`, checking what Postfix and Exim check.
fn read_handshake(
    stream: &mut dyn Stream,
    reader: &mut LineReader,
    mechanism: Mechanism,
    deadline: Instant,
) -> Result<(), String> {
    let mut version = false;
    let mut offered = false;
    let mut any_mech = false;
    loop {
        let line = reader.next(stream, deadline)?;
        match parse_server_line(&line) {
            Some(ServerLine::Version { major: 1, .. }) => version = true,
            Some(ServerLine::Version { major, .. }) => {
                return Err(format!("unsupported protocol version {major}"));
            }
            Some(ServerLine::Mech { name, .. }) => {
                any_mech = true;
                offered |= Mechanism::from_name(&name) == Some(mechanism);
            }
            Some(ServerLine::Spid) if !any_mech => {
                return Err("SPID before any MECH line: not an authentication socket".into());
            }
            Some(ServerLine::Done) if !version => {
                return Err("no VERSION line in the server's handshake".into());
            }
            Some(ServerLine::Done) if !offered => {
                return Err(format!("the server does not offer {mechanism}"));
            }
            Some(ServerLine::Done) => return Ok(()),
            _ => {}
        }
    }
}

/// Lines from the server, each within the deadline and [`MAX_LINE`].
#[derive(Default)]
struct LineReader {
    buffer: Vec<u8>,
}

impl LineReader {
    fn next(&mut self, stream: &mut dyn Stream, deadline: Instant) -> Result<Vec<u8>, String> {
        loop {
            match next_line(&self.buffer, MAX_LINE) {
                Line::Complete { line, consumed } => {
                    let line = line.to_vec();
                    self.buffer.drain(..consumed);
                    return Ok(line);
                }
                Line::TooLong => return Err(format!("server line longer than {MAX_LINE} bytes")),
                Line::Incomplete => {}
            }
            if Instant::now() >= deadline {
                return Err("read failed: timed out".into());
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => return Err("read failed: connection closed by the server".into()),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(super::failure("read failed", &e)),
            }
        }
    }
}
