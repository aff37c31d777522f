//! A scripted IMAP server on 127.0.0.1 for the `-a rimap` tests: one behaviour for every
//! connection, every byte each connection sent recorded.
//!
//! It understands just enough IMAP for a login: a greeting, commands ending in CRLF with
//! synchronizing literals (`{n}` CRLF: it answers `+ go ahead` and reads `n` bytes),
//! `LOGIN` (answered per [`Behaviour`]), `LOGOUT`, `CAPABILITY`, `STARTTLS` (always refused
//! with `BAD`: no TLS here) and `BAD` for anything else. Threads poll a stop flag; dropping
//! the server stops and joins them all, and an idle connection is dropped after
//! [`IDLE_LIMIT`], so nothing outlives a test.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A connection that sends nothing for this long is closed.
pub const IDLE_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
/// Size of the huge lines.
pub const HUGE: usize = 100 * 1024;

/// What the server does on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// `* OK` greeting; `LOGIN` → tagged `OK`.
    Accept,
    /// `LOGIN` → tagged `NO [AUTHENTICATIONFAILED]`.
    Reject,
    /// `LOGIN` → tagged `BAD`.
    Bad,
    /// Greeting `* BYE`, then close.
    ByeGreeting,
    /// Greeting `* NO`.
    NoGreeting,
    /// Greeting `* PREAUTH` (must never count as a verified password).
    PreauthGreeting,
    /// A greeting that is not IMAP.
    GarbageGreeting,
    /// Greeting, then nothing at all (the client's deadline must end it).
    SilentAfterGreeting,
    /// No greeting, nothing at all.
    Silent,
    /// Closes the connection as soon as `LOGIN` has arrived.
    CloseAfterLogin,
    /// A 100 KB greeting line.
    HugeGreeting,
    /// `LOGIN` → a 100 KB untagged line, then tagged `OK`.
    HugeReply,
    /// `LOGIN` → `* CAPABILITY …`, `* OK [ALERT] …`, `* NO …`, then tagged `OK`.
    UntaggedThenOk,
    /// `LOGIN` → `* CAPABILITY` and tagged `OK`, sent 3 bytes at a time.
    SplitOk,
    /// Refuses every literal: `LOGIN` with a literal → tagged `NO` instead of `+`.
    RefuseLiterals,
}

/// Bytes received on one connection.
type Recording = Arc<Mutex<Vec<u8>>>;

pub struct FakeImap {
    port: u16,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<Recording>>>,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl FakeImap {
    /// Listens on a free port of 127.0.0.1.
    pub fn start(behaviour: Behaviour) -> FakeImap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake IMAP server");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<Recording>>> = Arc::default();
        let acceptor = {
            let stop = Arc::clone(&stop);
            let connections = Arc::clone(&connections);
            thread::spawn(move || {
                let mut workers = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let recording = Recording::default();
                            connections.lock().unwrap().push(Arc::clone(&recording));
                            let stop = Arc::clone(&stop);
                            workers.push(thread::spawn(move || {
                                let _ = serve(stream, behaviour, &recording, &stop);
                            }));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
                        Err(_) => thread::sleep(POLL),
                    }
                }
                workers
            })
        };
        FakeImap {
            port,
            stop,
            connections,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections were accepted so far.
    pub fn connection_count(&self) -> usize {
        self.connections.lock().unwrap().len()
    }

    /// Everything received, per connection, in order.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.lock().unwrap().clone())
            .collect()
    }

    /// Everything received on all connections, concatenated.
    pub fn all_received(&self) -> Vec<u8> {
        self.received().concat()
    }
}

impl Drop for FakeImap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take()
            && let Ok(workers) = acceptor.join()
        {
            for worker in workers {
                let _ = worker.join();
            }
        }
    }
}

/// Reads from the client, recording the bytes, with a stop flag and an idle limit.
struct Conn<'a> {
    stream: TcpStream,
    buffered: Vec<u8>,
    recording: &'a Recording,
    stop: &'a AtomicBool,
}

impl Conn<'_> {
    /// More bytes into `buffered`; false on EOF, error, stop or idle limit.
    fn fill(&mut self) -> bool {
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            if self.stop.load(Ordering::SeqCst) || started.elapsed() > IDLE_LIMIT {
                return false;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    self.recording.lock().unwrap().extend_from_slice(&buf[..n]);
                    self.buffered.extend_from_slice(&buf[..n]);
                    return true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return false,
            }
        }
    }

    /// One line without its CRLF (None on EOF/stop).
    fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.buffered.windows(2).position(|w| w == b"\r\n") {
                let line = self.buffered[..end].to_vec();
                self.buffered.drain(..end + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn exactly(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buffered.len() < n {
            if !self.fill() {
                return None;
            }
        }
        Some(self.buffered.drain(..n).collect())
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sits on the connection until the client closes it, the stop flag or the idle limit.
    fn wait_for_close(&mut self) {
        while self.fill() {}
    }
}

/// A literal announcement `{n}` at the end of a line.
fn literal_size(line: &[u8]) -> Option<usize> {
    let rest = line.strip_suffix(b"}")?;
    let open = rest.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&rest[open + 1..]).ok()?.parse().ok()
}

/// One command with its literals (None on EOF); `refuse_literals` answers the first
/// literal with a tagged NO and returns the command so far.
fn command(conn: &mut Conn<'_>, refuse_literals: bool) -> Option<(String, String, bool)> {
    let mut whole = conn.line()?;
    let tag_and_name = |whole: &[u8]| {
        let text = String::from_utf8_lossy(whole).into_owned();
        let mut words = text.split(' ');
        let tag = words.next().unwrap_or("").to_string();
        let name = words.next().unwrap_or("").to_ascii_uppercase();
        (tag, name)
    };
    while let Some(n) = literal_size(&whole) {
        if refuse_literals {
            let (tag, name) = tag_and_name(&whole);
            let _ = conn.send(format!("{tag} NO no literals here\r\n").as_bytes());
            return Some((tag, name, true));
        }
        conn.send(b"+ go ahead\r\n").ok()?;
        whole.extend_from_slice(b"\r\n");
        whole.extend_from_slice(&conn.exactly(n)?);
        whole.extend_from_slice(&conn.line()?);
    }
    let (tag, name) = tag_and_name(&whole);
    Some((tag, name, false))
}

fn serve(
    stream: TcpStream,
    behaviour: Behaviour,
    recording: &Recording,
    stop: &AtomicBool,
) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = Conn {
        stream,
        buffered: Vec::new(),
        recording,
        stop,
    };
    match behaviour {
        Behaviour::Silent => {
            conn.wait_for_close();
            return Ok(());
        }
        Behaviour::ByeGreeting => {
            conn.send(b"* BYE [UNAVAILABLE] too busy\r\n")?;
            let _ = conn.stream.shutdown(Shutdown::Both);
            return Ok(());
        }
        Behaviour::NoGreeting => conn.send(b"* NO [UNAVAILABLE] not now\r\n")?,
        Behaviour::PreauthGreeting => conn.send(b"* PREAUTH fake logged you in\r\n")?,
        Behaviour::GarbageGreeting => conn.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")?,
        Behaviour::HugeGreeting => {
            let mut line = b"* OK ".to_vec();
            line.resize(HUGE, b'x');
            line.extend_from_slice(b"\r\n");
            conn.send(&line)?;
        }
        _ => conn.send(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] fake ready\r\n")?,
    }
    if behaviour == Behaviour::SilentAfterGreeting {
        conn.wait_for_close();
        return Ok(());
    }
    let refuse_literals = behaviour == Behaviour::RefuseLiterals;
    while let Some((tag, name, refused)) = command(&mut conn, refuse_literals) {
        if refused {
            continue;
        }
        match name.as_str() {
            "LOGIN" => match behaviour {
                Behaviour::Reject => conn.send(
                    format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
                        .as_bytes(),
                )?,
                Behaviour::Bad => conn.send(format!("{tag} BAD what?\r\n").as_bytes())?,
                Behaviour::CloseAfterLogin => {
                    let _ = conn.stream.shutdown(Shutdown::Both);
                    return Ok(());
                }
                Behaviour::HugeReply => {
                    let mut line = b"* OK [ALERT] ".to_vec();
                    line.resize(HUGE, b'y');
                    line.extend_from_slice(b"\r\n");
                    line.extend_from_slice(format!("{tag} OK Logged in\r\n").as_bytes());
                    conn.send(&line)?;
                }
                Behaviour::UntaggedThenOk => conn.send(
                    format!(
                        "* CAPABILITY IMAP4rev1 IDLE\r\n\
                         * OK [ALERT] Your password expires in 3 days\r\n\
                         * NO disk almost full\r\n\
                         {tag} OK [CAPABILITY IMAP4rev1] Logged in\r\n"
                    )
                    .as_bytes(),
                )?,
                Behaviour::SplitOk => {
                    let reply = format!("* CAPABILITY IMAP4rev1\r\n{tag} OK Logged in\r\n");
                    for chunk in reply.as_bytes().chunks(3) {
                        conn.send(chunk)?;
                        thread::sleep(Duration::from_millis(5));
                    }
                }
                _ => conn.send(format!("{tag} OK Logged in\r\n").as_bytes())?,
            },
            "LOGOUT" => {
                conn.send(
                    format!("* BYE Logging out\r\n{tag} OK Logout completed\r\n").as_bytes(),
                )?;
                let _ = conn.stream.shutdown(Shutdown::Write);
                conn.wait_for_close();
                return Ok(());
            }
            "CAPABILITY" => conn.send(
                format!("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n").as_bytes(),
            )?,
            "STARTTLS" => conn.send(format!("{tag} BAD no TLS here\r\n").as_bytes())?,
            _ => conn.send(format!("{tag} BAD unknown command\r\n").as_bytes())?,
        }
    }
    Ok(())
}
