//! Turns a request into a verdict, for every front end: validation, `-r`, throttling, the
//! credential cache, the mechanism on the bounded verification pool (FIFO, with a cap on
//! waiting requests and a deadline), and upstream's log lines (with the peer, and the
//! socket when it is not `mux`).
//!
//! Fail closed: the only way to `OK` is the mechanism's own `Reply::Ok`; a refused request,
//! a panicking, late or vanished verification all answer `NO`.
#![forbid(unsafe_code)]

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::cache::{CredentialCache, Lookup};
use super::pool::WorkerPool;
use super::throttle::{Admission, Outcome, Throttle};
use crate::log::{Level, LineBudget, RateLimitedLog, sanitize};
use crate::mech::{Credentials, DEADLINE_GRACE, Mechanism, Verification, cpu_cores};
use crate::peer::PeerCredentials;
use crate::protocol::{Rejection, Reply, Request, text};
use crate::{log_debug, log_err};

/// The socket a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// `<rundir>/mux`, the saslauthd protocol.
    Mux,
    /// `--dovecot-socket`, the Dovecot authentication protocol.
    Dovecot,
}

impl FrontEnd {
    /// The `[via=…]` log field; none for `mux`, so upstream's line format is unchanged.
    fn log_field(self) -> &'static str {
        match self {
            FrontEnd::Mux => "",
            FrontEnd::Dovecot => " [via=dovecot]",
        }
    }
}

/// Where a request came from, for the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub front_end: FrontEnd,
    /// The connecting process (`SO_PEERCRED`), when the socket can tell.
    pub peer: Option<PeerCredentials>,
}

pub struct Authenticator {
    mechanism: Arc<dyn Mechanism>,
    realm_concat: bool,
    /// The verification threads (`-n`), first come first served, at most `--max-queue`
    /// requests waiting.
    pool: WorkerPool,
    max_queue: usize,
    busy_log: RateLimitedLog,
    /// `-c`. Cache hits that must read the account's state do it on threads of their own
    /// (`state_pool`), so they never wait behind crypt work.
    cache: Option<CredentialCache>,
    state_pool: WorkerPool,
    /// `--throttle-*`: penalised requests wait before verification (cache included).
    throttle: Throttle,
    /// `auth failure` lines: a client chooses how many it causes.
    failure_log: Arc<LineBudget>,
    /// `--verify-timeout`, for mechanisms without a deadline of their own.
    verify_timeout: Duration,
    timeout_log: RateLimitedLog,
}

/// How an [`Authenticator`] works, from the configuration.
pub struct AuthenticatorOptions {
    /// `-r`.
    pub realm_concat: bool,
    /// Verifications at once (`-n`, or the mechanism's default).
    pub workers: usize,
    /// `--max-queue`.
    pub max_queue: usize,
    /// `-c`: the credential cache.
    pub cache: Option<CredentialCache>,
    /// `--throttle-*`.
    pub throttle: Throttle,
    /// `--verify-timeout`, for mechanisms without a deadline of their own.
    pub verify_timeout: Duration,
}

/// Cache hits reading account state at once: it takes microseconds (shadow: two NSS
/// lookups) or a PAM account phase, so a few threads per core suffice.
pub fn state_slots() -> usize {
    2 * cpu_cores().get()
}

/// Who gave a request its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answerer {
    /// The credential cache (a success).
    Cache,
    Mechanism,
    /// The daemon itself: server busy, a deadline, a panic.
    Daemon,
}

/// The non-secret parts of a request, made safe for log lines.
struct Subject {
    user: String,
    service: String,
    realm: String,
    remote: Option<String>,
    origin: Origin,
}

impl Subject {
    /// Upstream's fields, in upstream's order.
    fn fields(&self) -> String {
        let remote = match &self.remote {
            Some(remote) => format!(" [remote={remote}]"),
            None => String::new(),
        };
        format!(
            "[user={}] [service={}] [realm={}]{remote}",
            self.user, self.service, self.realm
        )
    }

    /// Ours, after upstream's so that parsers of upstream's lines keep working.
    fn peer(&self) -> String {
        origin_fields(&self.origin)
    }
}

/// ` [peer uid=… gid=… pid=…]` and ` [via=…]`, as far as known.
fn origin_fields(origin: &Origin) -> String {
    let peer = match &origin.peer {
        Some(peer) => format!(" {peer}"),
        None => String::new(),
    };
    format!("{peer}{}", origin.front_end.log_field())
}

impl Authenticator {
    /// Fails only if the pool threads can't be started.
    pub fn new(
        mechanism: Arc<dyn Mechanism>,
        options: AuthenticatorOptions,
    ) -> io::Result<Authenticator> {
        Ok(Authenticator {
            realm_concat: options.realm_concat,
            pool: WorkerPool::new("saslauthd-verify", options.workers, options.max_queue)?,
            max_queue: options.max_queue,
            busy_log: RateLimitedLog::default(),
            state_pool: WorkerPool::new("saslauthd-state", state_slots(), options.max_queue)?,
            cache: options.cache,
            throttle: options.throttle,
            failure_log: Arc::new(LineBudget::new("auth failure")),
            verify_timeout: options.verify_timeout,
            timeout_log: RateLimitedLog::at(Level::Warning),
            mechanism,
        })
    }

    /// The mechanism's deadline, or `--verify-timeout`. Asked per request: a mechanism's
    /// deadline may change on SIGHUP (ldap_timeout).
    fn deadline(&self) -> Duration {
        self.mechanism
            .verification_deadline()
            .unwrap_or(self.verify_timeout)
    }

    /// How long a verification may run before the request is answered `NO` anyway (the
    /// [deadline](Self::deadline) plus [`DEADLINE_GRACE`]).
    fn verification_limit(&self) -> Duration {
        self.deadline() + DEADLINE_GRACE
    }

    /// The verdict on `request`, which came from `origin`. Every front end maps its
    /// client's credentials onto a saslauthd request, as libsasl would have sent them.
    pub async fn authenticate(&self, request: Request, origin: &Origin) -> Reply {
        if let Err(rejection) = request.validate() {
            return self.refuse(&rejection, Some(&request.login), origin);
        }
        let credentials = Arc::new(self.credentials(request));
        let subject = Subject {
            user: sanitize(&credentials.login),
            service: sanitize(&credentials.service),
            realm: sanitize(&credentials.realm),
            remote: credentials.client_addr.as_deref().map(sanitize),
            origin: *origin,
        };
        // Throttling: the request is charged to its login and address now; a penalised
        // one waits here for its turn, on its own task, before any verification, right or
        // wrong, so hanging up early tells a client nothing. No turn before the deadline:
        // `NO` at the deadline, unverified.
        let deadline = Instant::now() + self.deadline();
        let attempt = self.throttle.attempt(&credentials);
        let admitted = self
            .throttle
            .admit(attempt, deadline, || {
                format!("{}{}", subject.fields(), subject.peer())
            })
            .await;
        let (reply, answerer) = match admitted {
            Admission::Go(charge) => {
                let (reply, answerer) = self.decide(Arc::clone(&credentials)).await;
                self.throttle
                    .record(charge, self.outcome(&reply, answerer), Instant::now());
                (reply, answerer)
            }
            Admission::TooLate => (Reply::no(text::TIMED_OUT), Answerer::Daemon),
        };
        let mech = self.mechanism.name();
        match &reply {
            Reply::Ok(_) => {
                let cached = if answerer == Answerer::Cache {
                    " [cache=hit]"
                } else {
                    ""
                };
                log_debug!(
                    "auth success: {} [mech={mech}]{cached}{}",
                    subject.fields(),
                    subject.peer()
                )
            }
            Reply::No(reason) => self.failure_log.log(Level::Info, &credentials.login, || {
                format!(
                    "auth failure: {} [mech={mech}] [reason={}]{}",
                    subject.fields(),
                    // A bare `NO` (sasldb, ldap) has no reason: upstream logs `Unknown`.
                    if reason.is_empty() {
                        "Unknown".to_string()
                    } else {
                        sanitize(reason.as_bytes())
                    },
                    subject.peer()
                )
            }),
        }
        reply
    }

    /// What a reply says about the credentials, for the throttle: the daemon's own `NO`s
    /// (busy, deadline, panic) are no verdict, nor is a mechanism's `NO` that the
    /// mechanism calls an outage.
    fn outcome(&self, reply: &Reply, answerer: Answerer) -> Outcome {
        match (reply, answerer) {
            (Reply::Ok(_), _) => Outcome::Success,
            (Reply::No(reason), Answerer::Mechanism) if !self.mechanism.is_outage(reason) => {
                Outcome::Failure
            }
            (Reply::No(_), _) => Outcome::Neither,
        }
    }

    /// The verdict, from the credential cache when it holds a success for these
    /// credentials and the account is unchanged, else from the mechanism; and who answered.
    async fn decide(&self, credentials: Arc<Credentials>) -> (Reply, Answerer) {
        let Some(cache) = &self.cache else {
            let (verification, answerer) = self.verify_fully(credentials).await;
            return (verification.reply, answerer);
        };
        if let Lookup::Candidate(check) = cache.lookup(&credentials, Instant::now()) {
            // The version check is a few stat calls, done here; reading the state (NSS,
            // PAM) waits for a state slot, never behind crypt work.
            let version = self.mechanism.state_version(&credentials);
            if cache.confirm_version(&check, version.as_ref()) {
                return (Reply::ok(), Answerer::Cache);
            }
            let mechanism = Arc::clone(&self.mechanism);
            let job_credentials = Arc::clone(&credentials);
            let (state, version) = self
                .run_on(&self.state_pool, move || {
                    mechanism.current_state(&job_credentials)
                })
                .await
                .unwrap_or((None, None));
            if cache.confirm(&check, state.as_ref(), version.as_ref()) {
                return (Reply::ok(), Answerer::Cache);
            }
        }
        let (verification, answerer) = self.verify_fully(Arc::clone(&credentials)).await;
        if verification.reply.is_ok() {
            cache.insert(
                &credentials,
                &verification.state,
                verification.version.as_ref(),
                Instant::now(),
            );
        }
        (verification.reply, answerer)
    }

    /// The credentials a mechanism sees: under `-r`, `login@realm` for a non-empty realm
    /// (the realm itself is still passed on unchanged).
    fn credentials(&self, request: Request) -> Credentials {
        let Request {
            mut login,
            password,
            service,
            realm,
            client_addr,
        } = request;
        if self.realm_concat && !realm.is_empty() {
            login.push(b'@');
            login.extend_from_slice(&realm);
        }
        Credentials {
            login,
            password,
            service,
            realm,
            client_addr,
        }
    }

    /// Runs the mechanism once a verification slot is free (with the account state when
    /// there is a cache to record it); past `--max-queue` waiting requests, answers
    /// `NO server busy` at once instead. A hold the mechanism asks for (PAM's fail delay)
    /// is waited here, on this request's task, once the pool thread is free again. Also
    /// says who answered: the mechanism, or the daemon (busy, panic, deadline).
    async fn verify_fully(&self, credentials: Arc<Credentials>) -> (Verification, Answerer) {
        let mechanism = Arc::clone(&self.mechanism);
        let with_state = self.cache.is_some();
        let (started, has_started) = oneshot::channel();
        let verified = self.run_on(&self.pool, move || {
            let _ = started.send(());
            mechanism.verify(&credentials, with_state)
        });
        tokio::pin!(verified);
        // Asked per request: a mechanism's deadline may change on SIGHUP (ldap_timeout).
        let limit = self.verification_limit();
        let answered = |result: Result<Verification, Reply>| match result {
            Ok(verification) => (verification, Answerer::Mechanism),
            Err(reply) => (Verification::refused(reply), Answerer::Daemon),
        };
        // Queue time doesn't count (the queue is capped): the clock starts when a thread
        // takes the job. A job that never starts (queue full, panic) ends `verified` too.
        let (verification, answerer) = tokio::select! {
            result = &mut verified => answered(result),
            _ = has_started => match tokio::time::timeout(limit, verified).await {
                Ok(result) => answered(result),
                Err(_) => {
                    self.timeout_log.log(|| {
                        format!(
                            "mechanism {} gave no verdict within {} ms; answering: NO {} \
                             (its thread stays busy until the call returns)",
                            self.mechanism.name(),
                            limit.as_millis(),
                            text::TIMED_OUT
                        )
                    });
                    (Verification::refused(Reply::no(text::TIMED_OUT)), Answerer::Daemon)
                }
            },
        };
        if !verification.hold.is_zero() {
            tokio::time::sleep(verification.hold.min(limit)).await;
        }
        (verification, answerer)
    }

    /// Runs `job` on `pool` and waits for its result. A full queue is `NO server busy`
    /// (logged at most once a second); a job that panics is `NO internal mechanism
    /// failure`.
    async fn run_on<T: Send + 'static>(
        &self,
        pool: &WorkerPool,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Reply> {
        let Ok(result) = pool.submit(job) else {
            self.busy_log.log(|| {
                format!(
                    "verification queue full ({} waiting); answering: NO {}",
                    self.max_queue,
                    text::BUSY
                )
            });
            return Err(Reply::no(text::BUSY));
        };
        result.await.map_err(|_| {
            log_err!(
                "{}: mechanism {} panicked",
                text::INTERNAL_FAILURE,
                self.mechanism.name()
            );
            Reply::no(text::INTERNAL_FAILURE)
        })
    }

    /// Statistics lines for the administrator (logged on SIGUSR1).
    pub fn statistics(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match &self.cache {
            Some(cache) => lines.push(cache.stats().to_string()),
            None => lines.push("credential cache: off".to_string()),
        }
        lines.push(self.throttle.stats().to_string());
        lines.push(format!(
            "verification queue: {} waiting (limit {})",
            self.pool.waiting(),
            self.max_queue
        ));
        lines
    }

    /// Refuses a request that can't be verified (a front end's framing refused it, or
    /// validation did): the reply, and a log line at LOG_ERR without an `auth failure`
    /// line, as upstream logs them. `login` when it was read.
    pub fn refuse(&self, rejection: &Rejection, login: Option<&[u8]>, origin: &Origin) -> Reply {
        let user = login.map(sanitize).unwrap_or_default();
        let from = origin_fields(origin);
        match rejection {
            Rejection::TooLong { field, len, limit } => log_err!(
                "{field} exceeds the field limit: {len} > {limit} bytes; request refused{from}"
            ),
            Rejection::EmptyLogin => log_err!("{}{from}", text::NULL_LOGIN),
            Rejection::EmptyPassword => log_err!("{} [user={user}]{from}", text::NULL_PASSWORD),
            Rejection::NulByte(field) => {
                log_err!("NUL byte in {field} [user={user}]; request refused{from}")
            }
        }
        rejection.reply()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::throttle::ThrottleSettings;
    use crate::secret::Password;

    /// A mechanism whose backend never answers in time.
    struct Hanging {
        deadline: Option<Duration>,
    }

    impl Mechanism for Hanging {
        fn name(&self) -> &'static str {
            "hanging"
        }
        fn authenticate(&self, _credentials: &Credentials) -> Reply {
            std::thread::sleep(Duration::from_secs(3));
            Reply::ok()
        }
        fn verification_deadline(&self) -> Option<Duration> {
            self.deadline
        }
    }

    fn authenticator(deadline: Option<Duration>, verify_timeout: Duration) -> Authenticator {
        Authenticator::new(
            Arc::new(Hanging { deadline }),
            AuthenticatorOptions {
                realm_concat: false,
                workers: 1,
                max_queue: 4,
                cache: None,
                throttle: Throttle::new(ThrottleSettings::default()).unwrap(),
                verify_timeout,
            },
        )
        .unwrap()
    }

    fn request() -> Request {
        Request {
            login: b"user".to_vec(),
            password: Password::new(b"secret".to_vec()),
            service: b"imap".to_vec(),
            realm: Vec::new(),
            client_addr: None,
        }
    }

    const MUX: Origin = Origin {
        front_end: FrontEnd::Mux,
        peer: None,
    };

    #[tokio::test]
    async fn a_verification_past_its_deadline_is_no() {
        for (deadline, general) in [
            (Some(Duration::from_millis(100)), Duration::from_secs(60)),
            (None, Duration::from_millis(100)),
        ] {
            let authenticator = authenticator(deadline, general);
            let started = Instant::now();
            let reply = authenticator.authenticate(request(), &MUX).await;
            let took = started.elapsed();
            assert_eq!(reply, Reply::no(text::TIMED_OUT));
            assert!(
                took >= Duration::from_millis(100) + DEADLINE_GRACE
                    && took < Duration::from_millis(100) + DEADLINE_GRACE * 2,
                "{took:?}"
            );
        }
    }

    /// A mechanism that fails at once but asks for its reply to be held back.
    struct Delaying;

    const HOLD: Duration = Duration::from_millis(300);

    impl Mechanism for Delaying {
        fn name(&self) -> &'static str {
            "delaying"
        }
        fn authenticate(&self, _credentials: &Credentials) -> Reply {
            unreachable!("the authenticator calls verify")
        }
        fn verify(&self, _credentials: &Credentials, _with_state: bool) -> Verification {
            Verification {
                hold: HOLD,
                ..Verification::refused(Reply::no("delayed failure"))
            }
        }
    }

    /// Holds are timers: with one verification thread, eight held failures at once are
    /// all answered after one hold, not eight in a row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn holds_are_waited_without_holding_the_verification_thread() {
        let authenticator = Arc::new(
            Authenticator::new(
                Arc::new(Delaying),
                AuthenticatorOptions {
                    realm_concat: false,
                    workers: 1,
                    max_queue: 16,
                    cache: None,
                    throttle: Throttle::new(ThrottleSettings {
                        max: Duration::ZERO,
                        ..ThrottleSettings::default()
                    })
                    .unwrap(),
                    verify_timeout: Duration::from_secs(10),
                },
            )
            .unwrap(),
        );
        let started = Instant::now();
        let requests: Vec<_> = (0..8)
            .map(|_| {
                let authenticator = Arc::clone(&authenticator);
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let reply = authenticator.authenticate(request(), &MUX).await;
                    (reply, sent.elapsed())
                })
            })
            .collect();
        for request in requests {
            let (reply, took) = request.await.unwrap();
            assert_eq!(reply, Reply::no("delayed failure"));
            assert!(took >= HOLD, "answered after {took:?}, before its hold");
        }
        let took = started.elapsed();
        assert!(
            took < HOLD * 3,
            "the holds were waited one after another: {took:?}"
        );
    }
}
