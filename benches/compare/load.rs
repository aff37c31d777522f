//! The closed-loop load generator of the side-by-side benchmark: `c` client threads, each
//! looping connect → one 4-field request → read the counted reply → close, like libsasl's
//! `saslauthd_verify_password`, for a warm-up and then a measured window.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, connect, setsockopt, socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

/// One load run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// `<rundir>/mux` of the daemon under load.
    pub socket: PathBuf,
    /// The request bytes (4 counted fields), identical for every client.
    pub request: Vec<u8>,
    /// The reply text every request must get (e.g. `OK`).
    pub expected: Vec<u8>,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests started before this much time has passed are not measured.
    pub warmup: Duration,
    /// The measured window after the warm-up.
    pub duration: Duration,
    /// Bound for connecting, sending and waiting for the reply of one request.
    pub deadline: Duration,
}

/// Requests that did not get the expected reply.
#[derive(Clone, Debug, Default)]
pub struct Errors {
    /// connect() failed (other than by the deadline).
    pub connect: u64,
    /// The deadline passed while connecting, sending or waiting for the reply.
    pub timeout: u64,
    /// A complete reply other than the expected one.
    pub bad_reply: u64,
    /// The server closed early, or another I/O error.
    pub io: u64,
    /// The first unexpected reply text, or the first I/O error, for the report.
    pub example: Option<String>,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.bad_reply + self.io
    }

    fn merge(&mut self, other: Errors) {
        self.connect += other.connect;
        self.timeout += other.timeout;
        self.bad_reply += other.bad_reply;
        self.io += other.io;
        if self.example.is_none() {
            self.example = other.example;
        }
    }

    fn record(&mut self, e: RequestError) {
        let example = match e {
            RequestError::Connect(err) => {
                self.connect += 1;
                format!("connect: {err}")
            }
            RequestError::Timeout(stage) => {
                self.timeout += 1;
                format!("no {stage} within the deadline")
            }
            RequestError::BadReply(text) => {
                self.bad_reply += 1;
                format!("reply {:?}", String::from_utf8_lossy(&text))
            }
            RequestError::Io(err) => {
                self.io += 1;
                err
            }
        };
        if self.example.is_none() {
            self.example = Some(example);
        }
    }

    /// E.g. `2 timeouts, 1 bad reply (first: reply "NO server busy")`; empty when none.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.connect, "connect failure"),
            (self.timeout, "timeout"),
            (self.bad_reply, "unexpected reply"),
            (self.io, "I/O error"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}{}", if n == 1 { "" } else { "s" }));
            }
        }
        if parts.is_empty() {
            return String::new();
        }
        match &self.example {
            Some(e) => format!("{} (first: {e})", parts.join(", ")),
            None => parts.join(", "),
        }
    }
}

/// What one load run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    /// Requests answered as expected whose reply arrived inside the measured window.
    pub completed: u64,
    /// Every request answered as expected, warm-up and after the window included.
    pub ok_total: u64,
    /// Latency (connect to reply) of every expected reply to a request started inside the
    /// measured window, including replies that arrived after it; sorted.
    pub latencies: Vec<Duration>,
    /// Every failed request, warm-up included.
    pub errors: Errors,
    /// The measured window.
    pub window: Duration,
    /// Wall time of the whole run (warm-up, window, and the wait for in-flight requests).
    pub wall: Duration,
}

impl LoadResult {
    /// Expected replies per second inside the window.
    pub fn rps(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64()
    }

    /// Nearest-rank percentile `p` (0–100) of the latencies; None without samples.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.latencies.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        Some(self.latencies[rank.clamp(1, n) - 1])
    }
}

enum RequestError {
    Connect(Errno),
    Timeout(&'static str),
    BadReply(Vec<u8>),
    Io(String),
}

/// One libsasl-style exchange: connect, one write, read the u16 length and the reply, close;
/// all of it within `spec.deadline` (SO_SNDTIMEO bounds the connect, then the socket
/// timeouts are set to what is left).
fn one_request(addr: &UnixAddr, spec: &LoadSpec, timeout: &TimeVal) -> Result<(), RequestError> {
    let began = Instant::now();
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| RequestError::Io(format!("socket: {e}")))?;
    // On Linux a Unix-socket connect that waits for room in a full backlog honours
    // SO_SNDTIMEO (EAGAIN when it expires).
    setsockopt(&fd, sockopt::SendTimeout, timeout)
        .map_err(|e| RequestError::Io(format!("SO_SNDTIMEO: {e}")))?;
    setsockopt(&fd, sockopt::ReceiveTimeout, timeout)
        .map_err(|e| RequestError::Io(format!("SO_RCVTIMEO: {e}")))?;
    loop {
        match connect(fd.as_raw_fd(), addr) {
            Ok(()) => break,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN | Errno::ETIMEDOUT) => return Err(RequestError::Timeout("connect")),
            Err(e) => return Err(RequestError::Connect(e)),
        }
    }
    let mut stream = UnixStream::from(fd);
    let left = spec
        .deadline
        .checked_sub(began.elapsed())
        .filter(|d| !d.is_zero())
        .ok_or(RequestError::Timeout("connect"))?;
    stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .map_err(|e| RequestError::Io(format!("socket timeouts: {e}")))?;
    stream
        .write_all(&spec.request)
        .map_err(|e| io_error("send", e))?;
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .map_err(|e| io_error("reply", e))?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    stream
        .read_exact(&mut reply)
        .map_err(|e| io_error("reply", e))?;
    if reply != spec.expected {
        return Err(RequestError::BadReply(reply));
    }
    Ok(())
}

fn io_error(stage: &'static str, e: io::Error) -> RequestError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => RequestError::Timeout(stage),
        io::ErrorKind::UnexpectedEof => RequestError::Io(format!(
            "the server closed the connection before the {stage}"
        )),
        _ => RequestError::Io(format!("{stage}: {e}")),
    }
}

/// What one client thread measured.
#[derive(Default)]
struct ClientResult {
    completed: u64,
    ok_total: u64,
    latencies: Vec<Duration>,
    errors: Errors,
}

fn client(spec: &LoadSpec, addr: &UnixAddr, start: Instant) -> ClientResult {
    let timeout = TimeVal::milliseconds(spec.deadline.as_millis().min(i64::MAX as u128) as i64);
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let mut r = ClientResult::default();
    loop {
        let began = Instant::now();
        if began >= end {
            break;
        }
        let outcome = one_request(addr, spec, &timeout);
        let done = Instant::now();
        match outcome {
            Ok(()) => {
                r.ok_total += 1;
                if began >= measure_from {
                    r.latencies.push(done - began);
                }
                if done >= measure_from && done < end {
                    r.completed += 1;
                }
            }
            Err(e) => {
                r.errors.record(e);
                // Never spin on a daemon that refuses at once.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    r
}

/// Holds the clients until every thread exists, then releases them with the start time
/// (or tells them to quit when a thread could not be created).
struct Gate {
    state: Mutex<GateState>,
    cond: Condvar,
}

#[derive(Clone, Copy)]
enum GateState {
    Waiting,
    Go(Instant),
    Abort,
}

impl Gate {
    fn open(&self, state: GateState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        self.cond.notify_all();
    }

    /// The start time, or None when the run was aborted.
    fn wait(&self) -> Option<Instant> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match *g {
                GateState::Waiting => g = self.cond.wait(g).unwrap_or_else(|e| e.into_inner()),
                GateState::Go(t) => return Some(t),
                GateState::Abort => return None,
            }
        }
    }
}

/// Runs the load: all clients start together; returns once every client has finished its
/// last request (a request started inside the window is waited for, up to the deadline).
pub fn run(spec: &LoadSpec) -> io::Result<LoadResult> {
    let addr = UnixAddr::new(spec.socket.as_path()).map_err(io::Error::from)?;
    let spec = Arc::new(spec.clone());
    let addr = Arc::new(addr);
    let gate = Arc::new(Gate {
        state: Mutex::new(GateState::Waiting),
        cond: Condvar::new(),
    });
    let mut handles = Vec::with_capacity(spec.clients);
    for i in 0..spec.clients {
        let (spec, addr, client_gate) = (Arc::clone(&spec), Arc::clone(&addr), Arc::clone(&gate));
        let h = thread::Builder::new()
            .name(format!("client-{i}"))
            .stack_size(128 * 1024)
            .spawn(move || match client_gate.wait() {
                Some(t0) => client(&spec, &addr, t0),
                None => ClientResult::default(),
            });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                gate.open(GateState::Abort);
                for h in handles {
                    let _ = h.join();
                }
                return Err(io::Error::other(format!(
                    "cannot create client thread {i}: {e}"
                )));
            }
        }
    }
    let t0 = Instant::now();
    gate.open(GateState::Go(t0));
    let mut result = LoadResult {
        window: spec.duration,
        ..LoadResult::default()
    };
    for h in handles {
        let r = h
            .join()
            .map_err(|_| io::Error::other("a client thread panicked"))?;
        result.completed += r.completed;
        result.ok_total += r.ok_total;
        result.latencies.extend(r.latencies);
        result.errors.merge(r.errors);
    }
    result.latencies.sort_unstable();
    result.wall = t0.elapsed();
    Ok(result)
}

/// One request outside any measurement (to warm a cache, or to check the daemon answers);
/// returns the reply text.
pub fn single(socket: &Path, request: &[u8], deadline: Duration) -> io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(deadline))?;
    s.set_write_timeout(Some(deadline))?;
    s.write_all(request)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}
