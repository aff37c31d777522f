//! One Dovecot-protocol client connection, from the handshake to the close.
//!
//! * The server's handshake goes out at once, without waiting for the client (Exim reads
//!   all of it before it writes). The client's `VERSION` and `CPID` must follow within
//!   `--timeout`.
//! * After that the connection may stay idle for ever (Postfix keeps one per smtpd
//!   process), but a line, once started, must be finished within `--timeout`, and may be
//!   at most [`MAX_LINE`] bytes.
//! * Many requests may be in flight at once; each verification runs on its own task in the
//!   shared [`Authenticator`], and replies go out as they finish. A request waiting for the
//!   client's `CONT` is dropped without a reply after [`CONT_TIMEOUT`] (Dovecot's), and at
//!   most [`MAX_REQUESTS`] may be in progress per connection.
//! * A protocol error closes the connection without a reply (what Dovecot does); every
//!   credential problem is a `FAIL`, without `reason=` (the SMTP client must not learn
//!   whether the user exists). Our reason goes to the log line only.
//!
//! The receive buffer and every copy of a line hold passwords (base64 is no protection),
//! so they are wiped.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use zeroize::{Zeroize, Zeroizing};

use crate::auth::{Authenticator, Decision, Origin, OriginFields};
use crate::log::{Level, RateLimitedLog, sanitize};
use crate::log_debug;
use crate::protocol::dovecot::sasl::{self, Exchange, SaslauthdLogin, Step};
use crate::protocol::dovecot::{
    AuthCommand, Command, FailCode, InitialResponse, Line, MAX_LINE, Mechanism, ProtocolError,
    cont, decode_base64, fail, handshake, next_line, ok, parse_command, parse_cpid, parse_version,
    text,
};
use crate::protocol::{Reply, Request};
use crate::secret::Password;

/// Requests in progress on one connection at once; more get `FAIL … code=temp_fail`.
pub const MAX_REQUESTS: usize = 64;
/// How long a request waits for the client's `CONT` (Dovecot: 150 s, then dropped).
pub const CONT_TIMEOUT: Duration = Duration::from_secs(150);
/// The mechanisms offered, in the order of the MECH lines.
const MECHANISMS: [Mechanism; 2] = Mechanism::ALL;
const CHUNK: usize = 4096;

/// What every Dovecot-protocol connection needs.
pub struct Context {
    pub authenticator: Arc<Authenticator>,
    /// `--timeout`: for the client's handshake, and for a started line to be finished,
    /// and for each write.
    pub timeout: Duration,
    /// Protocol errors, logged at most once a second.
    pub protocol_log: RateLimitedLog,
}

impl Context {
    pub fn new(authenticator: Arc<Authenticator>, timeout: Duration) -> Context {
        Context {
            authenticator,
            timeout,
            protocol_log: RateLimitedLog::at(Level::Info),
        }
    }
}

/// Connection numbers for `CUID`, 1, 2, 3, … per daemon (Dovecot's per auth process).
static CONNECTIONS: AtomicU32 = AtomicU32::new(0);

/// A request in progress.
enum Pending {
    /// A challenge went out; the client's `CONT` continues `exchange`.
    Waiting {
        exchange: Exchange,
        request: RequestInfo,
        since: Instant,
    },
    /// The authenticator is deciding; its verdict carries `generation`.
    Verifying { generation: u64, user: Vec<u8> },
}

/// What an AUTH line said that the verification needs later.
struct RequestInfo {
    mechanism: Mechanism,
    service: Vec<u8>,
    remote_ip: Option<std::net::IpAddr>,
}

/// A finished verification: request id, generation, verdict.
type Verdict = (u32, u64, Decision);

/// Why a connection ended.
enum End {
    /// The client closed, or a read or write failed (debug log only).
    Gone(String),
    Protocol(ProtocolError),
    /// Nothing complete in time (handshake, or a started line).
    TooSlow(&'static str),
    Shutdown,
}

/// Serves one connection until the client closes, a protocol error, a deadline, or
/// shutdown (in-flight requests still get their replies, within `--timeout`).
pub async fn serve<S>(stream: S, origin: Origin, context: Arc<Context>, stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let cuid = CONNECTIONS.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    log_debug!(
        "dovecot client connected (CUID {cuid}){}",
        OriginFields(&origin)
    );
    let mut session = Session::new(stream, origin, Arc::clone(&context), stop);
    let end = session.run(cuid).await;
    match end {
        End::Gone(why) => log_debug!(
            "dovecot connection closed: {why}{}",
            OriginFields(&session.origin)
        ),
        End::Protocol(error) => context.protocol_log.log(|| {
            format!(
                "dovecot protocol error: {error}; closing the connection{}",
                OriginFields(&session.origin)
            )
        }),
        End::TooSlow(what) => log_debug!(
            "dovecot client did not complete its {what} within {:?}; closing the connection{}",
            context.timeout,
            OriginFields(&session.origin)
        ),
        End::Shutdown => log_debug!(
            "dovecot connection closed at shutdown{}",
            OriginFields(&session.origin)
        ),
    }
}

struct Session<S> {
    stream: S,
    origin: Origin,
    context: Arc<Context>,
    stop: watch::Receiver<bool>,
    /// Received bytes not yet handled: at most [`MAX_LINE`], never reallocated, wiped.
    buffer: Zeroizing<Vec<u8>>,
    /// When the first byte of the incomplete line in `buffer` arrived.
    partial_since: Option<Instant>,
    /// The client's minor version, once its VERSION line is in.
    client_minor: Option<u32>,
    handshaken: bool,
    requests: HashMap<u32, Pending>,
    /// Verifications started and not yet answered, including those of requests cancelled
    /// since (they still take a verification slot): counted against [`MAX_REQUESTS`].
    verifying: usize,
    generation: u64,
    verdicts: (
        mpsc::UnboundedSender<Verdict>,
        mpsc::UnboundedReceiver<Verdict>,
    ),
    /// Replies to write once the lines at hand are handled.
    outgoing: Vec<u8>,
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn new(stream: S, origin: Origin, context: Arc<Context>, stop: watch::Receiver<bool>) -> Self {
        Session {
            stream,
            origin,
            context,
            stop,
            buffer: Zeroizing::new(Vec::with_capacity(MAX_LINE)),
            partial_since: None,
            client_minor: None,
            handshaken: false,
            requests: HashMap::new(),
            verifying: 0,
            generation: 0,
            verdicts: mpsc::unbounded_channel(),
            outgoing: Vec::new(),
        }
    }

    async fn run(&mut self, cuid: u32) -> End {
        let started = Instant::now();
        let mut cookie = [0u8; 16];
        if getrandom::fill(&mut cookie).is_err() {
            return End::Gone("no random bytes for the cookie".into());
        }
        self.outgoing = handshake(&MECHANISMS, std::process::id(), cuid, &cookie);
        if let Err(end) = self.flush().await {
            return end;
        }
        loop {
            if let Err(end) = self.handle_lines() {
                // What the lines before the bad one earned still goes out (Dovecot's way).
                let _ = self.flush().await;
                return end;
            }
            if let Err(end) = self.flush().await {
                return end;
            }
            if *self.stop.borrow() {
                return self.finish_in_flight().await;
            }
            // The one deadline that applies now, if any.
            let deadline = if !self.handshaken {
                Some((started + self.context.timeout, "handshake"))
            } else {
                self.partial_since
                    .map(|since| (since + self.context.timeout, "line"))
            };
            let cont_deadline = self.next_cont_expiry();
            let mut chunk = [0u8; CHUNK];
            let room = (MAX_LINE - self.buffer.len()).min(CHUNK);
            tokio::select! {
                read = self.stream.read(&mut chunk[..room]) => {
                    let result = match read {
                        Ok(0) => Err(End::Gone("client closed".into())),
                        Ok(n) => {
                            if self.buffer.is_empty() || self.partial_since.is_none() {
                                self.partial_since = Some(Instant::now());
                            }
                            self.buffer.extend_from_slice(&chunk[..n]);
                            Ok(())
                        }
                        Err(error) => Err(End::Gone(format!("read failure: {error}"))),
                    };
                    chunk.zeroize();
                    if let Err(end) = result {
                        return end;
                    }
                }
                Some(verdict) = self.verdicts.1.recv() => self.answer(verdict),
                _ = sleep_until(deadline.map(|(at, _)| at)) => {
                    return End::TooSlow(deadline.map_or("line", |(_, what)| what));
                }
                _ = sleep_until(cont_deadline) => self.expire_waiting(),
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        return self.finish_in_flight().await;
                    }
                }
            }
        }
    }

    /// Handles every complete line in the buffer.
    fn handle_lines(&mut self) -> Result<(), End> {
        loop {
            let (line, consumed) = match next_line(&self.buffer, MAX_LINE) {
                Line::Complete { line, consumed } => (Zeroizing::new(line.to_vec()), consumed),
                Line::Incomplete => {
                    if self.buffer.is_empty() {
                        self.partial_since = None;
                    }
                    return Ok(());
                }
                Line::TooLong => return Err(End::Protocol(ProtocolError::LineTooLong)),
            };
            self.consume(consumed);
            self.partial_since = (!self.buffer.is_empty()).then(Instant::now);
            self.handle_line(&line).map_err(End::Protocol)?;
        }
    }

    /// Drops the first `n` bytes of the buffer, wiping what moves or is left behind.
    fn consume(&mut self, n: usize) {
        let len = self.buffer.len();
        self.buffer.copy_within(n..len, 0);
        self.buffer[len - n..].zeroize();
        self.buffer.truncate(len - n);
    }

    fn handle_line(&mut self, line: &[u8]) -> Result<(), ProtocolError> {
        match self.client_minor {
            None => {
                self.client_minor = Some(parse_version(line)?);
                return Ok(());
            }
            Some(_) if !self.handshaken => {
                parse_cpid(line)?;
                self.handshaken = true;
                return Ok(());
            }
            Some(_) => {}
        }
        match parse_command(line)? {
            Command::Auth(auth) => self.begin(auth),
            Command::Cont { id, data } => {
                self.continue_request(id, data);
                Ok(())
            }
            Command::Cancel { id } => {
                self.requests.remove(&id);
                Ok(())
            }
        }
    }

    /// `AUTH`: starts a request.
    fn begin(&mut self, auth: AuthCommand) -> Result<(), ProtocolError> {
        let id = auth.id;
        if self.requests.contains_key(&id) {
            return Err(ProtocolError::DuplicateId(id));
        }
        let request = RequestInfo {
            mechanism: auth.mechanism,
            service: auth.service.clone(),
            remote_ip: auth.remote_ip,
        };
        let waiting = self
            .requests
            .values()
            .filter(|pending| matches!(pending, Pending::Waiting { .. }))
            .count();
        if waiting + self.verifying >= MAX_REQUESTS {
            self.log_refusal(
                &request,
                None,
                &format!("more than {MAX_REQUESTS} requests in progress on one connection"),
            );
            self.send(fail(id, None, Some(FailCode::TempFail), None));
            return Ok(());
        }
        let minor = self.client_minor.unwrap_or_default();
        let initial = match auth.initial_response(minor) {
            InitialResponse::Absent => None,
            InitialResponse::Base64(text) => match decode_base64(text) {
                Some(decoded) => Some(decoded),
                None => {
                    self.log_refusal(&request, None, "invalid base64 in the initial response");
                    self.send(fail(
                        id,
                        None,
                        Some(FailCode::InvalidBase64),
                        Some(text::INVALID_INITIAL_BASE64),
                    ));
                    return Ok(());
                }
            },
        };
        let step = sasl::start(auth.mechanism, initial);
        self.step(id, request, step);
        Ok(())
    }

    /// `CONT`: the client's answer to a challenge.
    fn continue_request(&mut self, id: u32, data: &[u8]) {
        let waiting = match self.requests.remove(&id) {
            None => {
                self.send(fail(id, None, None, Some(text::UNKNOWN_ID)));
                return;
            }
            Some(Pending::Verifying { user, .. }) => {
                // Dovecot also answers the verification later; we forget the request.
                self.send(fail(id, None, None, Some(text::UNEXPECTED_CONT)));
                log_debug!(
                    "dovecot request {id} [user={}]: unexpected CONT; request dropped{}",
                    sanitize(&user),
                    OriginFields(&self.origin)
                );
                return;
            }
            Some(Pending::Waiting {
                exchange, request, ..
            }) => (exchange, request),
        };
        let (exchange, request) = waiting;
        let Some(response) = decode_base64(data) else {
            self.log_refusal(&request, None, "invalid base64 in a continued response");
            self.send(fail(
                id,
                None,
                Some(FailCode::InvalidBase64),
                Some(text::INVALID_CONTINUED_BASE64),
            ));
            return;
        };
        let step = sasl::respond(exchange, response);
        self.step(id, request, step);
    }

    /// Acts on what the mechanism asks for.
    fn step(&mut self, id: u32, request: RequestInfo, step: Step) {
        match step {
            Step::Challenge { next, challenge } => {
                self.send(cont(id, challenge));
                self.requests.insert(
                    id,
                    Pending::Waiting {
                        exchange: next,
                        request,
                        since: Instant::now(),
                    },
                );
            }
            Step::Fail { user } => {
                let why = format!("malformed {} exchange", request.mechanism);
                self.log_refusal(&request, user.as_deref(), &why);
                self.send(fail(id, user.as_deref(), None, None));
            }
            Step::Verify { authcid, password } => self.verify(id, request, &authcid, password),
        }
    }

    /// Hands the credentials to the authenticator, as libsasl would have sent them.
    fn verify(&mut self, id: u32, request: RequestInfo, authcid: &[u8], password: Password) {
        let Some(login) = SaslauthdLogin::from_authcid(authcid) else {
            self.log_refusal(&request, None, "all-whitespace login");
            self.send(fail(id, None, None, None));
            return;
        };
        self.generation += 1;
        let generation = self.generation;
        self.requests.insert(
            id,
            Pending::Verifying {
                generation,
                user: login.user.clone(),
            },
        );
        let saslauthd_request = Request {
            login: login.login,
            password,
            service: request.service,
            realm: login.realm,
            client_addr: request.remote_ip.map(|ip| ip.to_string().into_bytes()),
        };
        let authenticator = Arc::clone(&self.context.authenticator);
        let origin = self.origin;
        let verdicts = self.verdicts.0.clone();
        self.verifying += 1;
        tokio::spawn(async move {
            let decision = authenticator.decide(saslauthd_request, &origin).await;
            let _ = verdicts.send((id, generation, decision));
        });
    }

    /// A verification finished: reply, unless the request was cancelled meanwhile.
    fn answer(&mut self, (id, generation, decision): Verdict) {
        self.verifying -= 1;
        let user = match self.requests.get(&id) {
            Some(Pending::Verifying {
                generation: current,
                user,
            }) if *current == generation => user.clone(),
            _ => return,
        };
        self.requests.remove(&id);
        let line = match &decision.reply {
            Reply::Ok(_) => ok(id, &user),
            Reply::No(_) if decision.temporary => {
                fail(id, Some(&user), Some(FailCode::TempFail), None)
            }
            Reply::No(_) => fail(id, Some(&user), None, None),
        };
        self.send(line);
    }

    /// When the oldest request waiting for a `CONT` expires.
    fn next_cont_expiry(&self) -> Option<Instant> {
        self.requests
            .values()
            .filter_map(|pending| match pending {
                Pending::Waiting { since, .. } => Some(*since + CONT_TIMEOUT),
                Pending::Verifying { .. } => None,
            })
            .min()
    }

    /// Drops requests that waited too long for a `CONT`, without a reply (Dovecot's way).
    fn expire_waiting(&mut self) {
        let now = Instant::now();
        self.requests.retain(|_, pending| match pending {
            Pending::Waiting { since, .. } => now < *since + CONT_TIMEOUT,
            Pending::Verifying { .. } => true,
        });
    }

    fn send(&mut self, line: Vec<u8>) {
        self.outgoing.extend_from_slice(&line);
    }

    /// Writes what is queued, within `--timeout`.
    async fn flush(&mut self) -> Result<(), End> {
        if self.outgoing.is_empty() {
            return Ok(());
        }
        let outgoing = std::mem::take(&mut self.outgoing);
        let write = async {
            self.stream.write_all(&outgoing).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.context.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(End::Gone(format!("write failure: {error}"))),
            Err(_) => Err(End::Gone(format!(
                "client did not take its replies within {:?}",
                self.context.timeout
            ))),
        }
    }

    /// At shutdown: no more reading; the verifications in flight get their replies
    /// (within `--timeout`), then the connection closes.
    async fn finish_in_flight(&mut self) -> End {
        let deadline = Instant::now() + self.context.timeout;
        loop {
            let verifying = self
                .requests
                .values()
                .any(|p| matches!(p, Pending::Verifying { .. }));
            if !verifying {
                return End::Shutdown;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.verdicts.1.recv()).await {
                Ok(Some(verdict)) => self.answer(verdict),
                _ => return End::Shutdown,
            }
            if let Err(end) = self.flush().await {
                return end;
            }
        }
    }

    /// The log line of a request refused before verification.
    fn log_refusal(&self, request: &RequestInfo, user: Option<&[u8]>, why: &str) {
        let subject = user.unwrap_or_default();
        let authenticator = &self.context.authenticator;
        authenticator.log_client_failure(Level::Info, subject, || {
            let remote = request
                .remote_ip
                .map(|ip| format!(" [remote={ip}]"))
                .unwrap_or_default();
            format!(
                "auth failure: [user={}] [service={}]{remote} [sasl={}] [reason={why}]{}",
                user.map(sanitize).unwrap_or_default(),
                sanitize(&request.service),
                request.mechanism,
                OriginFields(&self.origin)
            )
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
