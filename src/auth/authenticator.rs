//! Turns a request into a verdict, for every front end: validation, `-r`, throttling, the
//! credential cache, the mechanism on the bounded verification pool (FIFO, with a cap on
//! waiting requests and a deadline), and upstream's log lines (with the peer, and the
//! socket when it is not `mux`).
//!
//! Fail closed: the only way to `OK` is the mechanism's own `Reply::Ok`; a refused request,
//! a panicking, late or vanished verification all answer `NO`.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::cache::{CredentialCache, Lookup, StateCheck};
use super::pool::{Task, WorkerPool};
use super::throttle::{Admission, Attempt, Charge, Outcome, Throttle};
use super::watchdog::{Overdue, Watch, Watchdog};
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
    /// The client's address and port, on a TCP socket.
    pub client: Option<std::net::SocketAddr>,
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
    /// The deadline of verifications that answer their client from the pool.
    watchdog: Watchdog,
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

/// A request waits for a verification thread at most this many verification limits.
const QUEUE_WAIT_LIMITS: u32 = 3;

/// Cache hits reading account state at once: it takes microseconds (shadow: two NSS
/// lookups) or a PAM account phase, so a few threads per core suffice.
fn state_slots() -> usize {
    2 * cpu_cores().get()
}

/// Who gave a request its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answerer {
    /// The credential cache (a success).
    Cache,
    Mechanism,
    /// The mechanism, with a `NO` that reports an outage of its backend: no verdict.
    Outage,
    /// The daemon itself: server busy, a deadline, a panic.
    Daemon,
}

impl Answerer {
    /// Who answered `verification`: the mechanism, or its backend's outage.
    fn of(verification: &Verification) -> Answerer {
        if verification.outage {
            Answerer::Outage
        } else {
            Answerer::Mechanism
        }
    }
}

/// Upstream's fields of a request (`[user=…] [service=…] [realm=…]`, and `[remote=…]` when
/// there is a client address), in upstream's order, made safe for a log line. Formatted
/// only when a line is written.
struct Fields<'a>(&'a Credentials);

impl fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        write!(
            f,
            "[user={}] [service={}] [realm={}]",
            sanitize(&c.login),
            sanitize(&c.service),
            sanitize(&c.realm)
        )?;
        match &c.client_addr {
            Some(remote) => write!(f, " [remote={}]", sanitize(remote)),
            None => Ok(()),
        }
    }
}

/// ` [peer uid=… gid=… pid=…]` (or ` [client ADDRESS:PORT]`) and ` [via=…]`, as far as known: ours, after upstream's
/// fields so that parsers of upstream's lines keep working.
pub struct OriginFields<'a>(pub &'a Origin);

impl fmt::Display for OriginFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.0.peer, &self.0.client) {
            (Some(peer), _) => write!(f, " {peer}")?,
            (None, Some(client)) => write!(f, " [client {client}]")?,
            (None, None) => {}
        }
        f.write_str(self.0.front_end.log_field())
    }
}

/// A request's reply, and whether a `NO` is temporary: no verdict on the credentials
/// (server busy, a deadline, a panic, an outage of the mechanism's backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub reply: Reply,
    pub temporary: bool,
}

/// What [`Authenticator::start`] found a request needs.
pub enum Start {
    /// Decided without waiting: refused, or a cache hit that the account state's version
    /// confirms.
    Done(Reply),
    /// A verification by a mechanism that [verifies locally](Mechanism::verifies_locally):
    /// [`Authenticator::verify_on_pool`] runs it on a pool thread, which delivers the reply.
    Verify(LocalVerification),
    /// Something to wait for (a throttle turn, the account state of a cache hit, a
    /// mechanism with holds or a backend): [`Authenticator::finish`].
    Wait(Pending),
}

/// A request that needs waiting for, with what it has been through so far.
pub struct Pending {
    credentials: Arc<Credentials>,
    origin: Origin,
    stage: Stage,
}

enum Stage {
    /// Its turn with the throttle is later: not charged yet; no turn by the deadline is
    /// `NO` then.
    Throttled(Attempt, Instant),
    /// Charged to the throttle.
    Charged(Charge, Next),
}

/// What a charged request needs next.
enum Next {
    /// The cache holds a success with this password but the account may have changed:
    /// read its state.
    ReadState(StateCheck),
    Verify,
}

/// A charged request for a mechanism that verifies locally.
pub struct LocalVerification {
    credentials: Arc<Credentials>,
    origin: Origin,
    charge: Charge,
}

/// What the credential cache says about a request.
enum Cached {
    /// A success with this password, and the account's state version is unchanged.
    Hit,
    /// A success with this password; the account's state must be read to be sure.
    Stale(StateCheck),
    Miss,
}

/// A local verification on a pool thread, and where its reply goes.
struct PoolTask<D> {
    slot: Arc<AnswerSlot<D>>,
    /// From the moment it is queued.
    watch: Watch,
}

/// What answers a local verification's client: taken by whoever comes first, the pool
/// thread with the verdict or the [watchdog](super::watchdog) at a deadline (the wait
/// for a thread, then the verification's).
struct AnswerSlot<D> {
    authenticator: Arc<Authenticator>,
    credentials: Arc<Credentials>,
    answer: Mutex<Option<(LocalVerification, D)>>,
    /// A thread took the job; `limit` is its deadline.
    started: AtomicBool,
    limit: Duration,
}

impl<D> AnswerSlot<D> {
    fn take(&self) -> Option<(LocalVerification, D)> {
        self.answer.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl<D: FnOnce(Reply) + Send + 'static> AnswerSlot<D> {
    /// Answers the client with what `reply` makes of its verification, unless that was
    /// done already.
    fn answer_with(&self, reply: impl FnOnce(&Authenticator) -> (Reply, Answerer)) {
        let Some((verification, deliver)) = self.take() else {
            return;
        };
        let authenticator = &self.authenticator;
        let (reply, answerer) = reply(authenticator);
        let LocalVerification { origin, charge, .. } = verification;
        let credentials = &self.credentials;
        let decision = authenticator.conclude(credentials, &origin, Some(charge), reply, answerer);
        deliver(decision.reply);
    }
}

impl<D: FnOnce(Reply) + Send + 'static> Overdue for AnswerSlot<D> {
    /// No thread in time, or no verdict in time: `NO`, as on the async path.
    fn expire(&self) {
        self.answer_with(|authenticator| {
            let reply = if self.started.load(Ordering::Acquire) {
                authenticator.timed_out(self.limit)
            } else {
                authenticator.no_thread_in_time()
            };
            (reply, Answerer::Daemon)
        });
    }
}

impl<D: FnOnce(Reply) + Send + 'static> Task for PoolTask<D> {
    fn run(self: Box<Self>) {
        let PoolTask { slot, watch } = *self;
        // The verification's clock starts when a thread takes the job.
        if !watch.rearm(Instant::now() + slot.limit) {
            return;
        }
        slot.started.store(true, Ordering::Release);
        let authenticator = &slot.authenticator;
        let credentials = &slot.credentials;
        let with_state = authenticator.cache.is_some();
        let verified = catch_unwind(AssertUnwindSafe(|| {
            authenticator.mechanism.verify(credentials, with_state)
        }));
        drop(watch);
        // Answered by the watchdog already: the late verdict is not used, nor cached.
        slot.answer_with(|authenticator| match verified {
            Ok(verification) => {
                authenticator.remember(credentials, &verification);
                let answerer = Answerer::of(&verification);
                (verification.reply, answerer)
            }
            Err(_) => (authenticator.panicked(), Answerer::Daemon),
        });
    }
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
            watchdog: Watchdog::new()?,
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

    /// How long a request may wait for a verification thread: [`QUEUE_WAIT_LIMITS`] times
    /// the [verification limit](Self::verification_limit). Only a pool whose threads are
    /// all stuck in calls that never return (or a flood far beyond what they can verify)
    /// keeps a request waiting that long; it is answered `NO server busy`.
    fn queue_limit(&self) -> Duration {
        self.verification_limit() * QUEUE_WAIT_LIMITS
    }

    /// The verdict on `request`, which came from `origin`. Every front end maps its
    /// client's credentials onto a saslauthd request, as libsasl would have sent them.
    pub async fn authenticate(&self, request: Request, origin: &Origin) -> Reply {
        self.decide(request, origin).await.reply
    }

    /// [`authenticate`](Self::authenticate), saying also whether a `NO` is temporary: for
    /// a front end whose protocol can tell a client so (Dovecot's `temp_fail`).
    pub async fn decide(&self, request: Request, origin: &Origin) -> Decision {
        match self.start(request, origin) {
            Start::Done(reply) => Decision {
                reply,
                temporary: false,
            },
            Start::Verify(verification) => {
                let LocalVerification {
                    credentials,
                    origin,
                    charge,
                } = verification;
                self.finish(Pending {
                    credentials,
                    origin,
                    stage: Stage::Charged(charge, Next::Verify),
                })
                .await
            }
            Start::Wait(pending) => self.finish(pending).await,
        }
    }

    /// Takes `request` as far as it goes without waiting: validation, `-r`, the throttle
    /// (charged now if its turn is now), and the credential cache (a hit whose account
    /// state version is unchanged is answered here). Cheap: no blocking call beyond the
    /// mechanism's [`Mechanism::state_version`] (shadow: three `stat` calls).
    pub fn start(&self, request: Request, origin: &Origin) -> Start {
        if let Err(rejection) = request.validate() {
            return Start::Done(self.refuse(&rejection, Some(&request.login), origin));
        }
        let credentials = Arc::new(self.credentials(request));
        // Throttling: the request is charged to its login and address now; a penalised
        // one waits for its turn, on its own task, before any verification, right or
        // wrong, so hanging up early tells a client nothing. No turn before the deadline:
        // `NO` at the deadline, unverified.
        let attempt = self.throttle.attempt(&credentials);
        let charge = match self.throttle.admit_now(attempt) {
            Ok(charge) => charge,
            Err(attempt) => {
                let deadline = Instant::now() + self.deadline();
                return Start::Wait(Pending {
                    credentials,
                    origin: *origin,
                    stage: Stage::Throttled(attempt, deadline),
                });
            }
        };
        match self.after_charge(&credentials, origin, charge) {
            Err(hit) => Start::Done(hit),
            Ok((charge, Next::Verify)) if self.mechanism.verifies_locally() => {
                Start::Verify(LocalVerification {
                    credentials,
                    origin: *origin,
                    charge,
                })
            }
            Ok((charge, next)) => Start::Wait(Pending {
                credentials,
                origin: *origin,
                stage: Stage::Charged(charge, next),
            }),
        }
    }

    /// What a charged request needs next, by the credential cache; `Err`: the reply to a
    /// hit that the account state's version settles (concluded).
    fn after_charge(
        &self,
        credentials: &Credentials,
        origin: &Origin,
        charge: Charge,
    ) -> Result<(Charge, Next), Reply> {
        match self.cached(credentials) {
            Cached::Hit => {
                let reply = Reply::ok();
                let decision =
                    self.conclude(credentials, origin, Some(charge), reply, Answerer::Cache);
                Err(decision.reply)
            }
            Cached::Stale(check) => Ok((charge, Next::ReadState(check))),
            Cached::Miss => Ok((charge, Next::Verify)),
        }
    }

    /// Finishes a request [`start`](Self::start) could not: waits for its throttle turn,
    /// reads account state, verifies on the pool with the deadline and any hold.
    pub async fn finish(&self, pending: Pending) -> Decision {
        let Pending {
            credentials,
            origin,
            stage,
        } = pending;
        let (charge, next) = match stage {
            Stage::Charged(charge, next) => (charge, next),
            Stage::Throttled(attempt, deadline) => {
                let admitted = self
                    .throttle
                    .admit(attempt, deadline, || {
                        format!("{}{}", Fields(&credentials), OriginFields(&origin))
                    })
                    .await;
                let charge = match admitted {
                    Admission::Go(charge) => charge,
                    Admission::TooLate => {
                        let reply = Reply::no(text::TIMED_OUT);
                        return self.conclude(&credentials, &origin, None, reply, Answerer::Daemon);
                    }
                };
                match self.after_charge(&credentials, &origin, charge) {
                    Ok(next) => next,
                    Err(hit) => {
                        return Decision {
                            reply: hit,
                            temporary: false,
                        };
                    }
                }
            }
        };
        let (reply, answerer) = match next {
            Next::ReadState(check) => self.confirm_state(Arc::clone(&credentials), check).await,
            Next::Verify => self.verify_fully(Arc::clone(&credentials)).await,
        };
        self.conclude(&credentials, &origin, Some(charge), reply, answerer)
    }

    /// Runs a local verification on a pool thread (in line with every other verification,
    /// first come, first served), which concludes the request and hands the reply to
    /// `deliver`. Past `--max-queue` waiting requests, `deliver` gets `NO server busy` at
    /// once, on this thread.
    pub fn verify_on_pool(
        self: &Arc<Self>,
        verification: LocalVerification,
        deliver: impl FnOnce(Reply) + Send + 'static,
    ) {
        let slot = Arc::new(AnswerSlot {
            authenticator: Arc::clone(self),
            credentials: Arc::clone(&verification.credentials),
            answer: Mutex::new(Some((verification, deliver))),
            started: AtomicBool::new(false),
            limit: self.verification_limit(),
        });
        let deadline = Instant::now() + self.queue_limit();
        let watch = self
            .watchdog
            .watch(deadline, Arc::clone(&slot) as Arc<dyn Overdue>);
        let task = PoolTask {
            slot: Arc::clone(&slot),
            watch,
        };
        if let Err(task) = self.pool.execute(task) {
            drop(task);
            slot.answer_with(|authenticator| (authenticator.busy(), Answerer::Daemon));
        }
    }

    /// What the credential cache says: nothing (no cache, no live success with this
    /// password), a hit settled by the state's version, or a candidate to confirm.
    fn cached(&self, credentials: &Credentials) -> Cached {
        let Some(cache) = &self.cache else {
            return Cached::Miss;
        };
        match cache.lookup(credentials, Instant::now()) {
            Lookup::Miss => Cached::Miss,
            Lookup::Candidate(check) => {
                // The version check is a few stat calls, done here; reading the state (NSS,
                // PAM) waits for a state slot, never behind crypt work.
                let version = self.mechanism.state_version(credentials);
                if cache.confirm_version(&check, version.as_ref()) {
                    Cached::Hit
                } else {
                    Cached::Stale(check)
                }
            }
        }
    }

    /// Settles a cache candidate by reading the account's state: a hit if it is unchanged,
    /// else a full verification.
    async fn confirm_state(
        &self,
        credentials: Arc<Credentials>,
        check: StateCheck,
    ) -> (Reply, Answerer) {
        if let Some(cache) = &self.cache {
            let mechanism = Arc::clone(&self.mechanism);
            let job_credentials = Arc::clone(&credentials);
            let read = self.run_on(&self.state_pool, move || {
                mechanism.current_state(&job_credentials)
            });
            // Bounded like a verification with its wait for a thread.
            let limit = self.queue_limit();
            let Ok(read) = tokio::time::timeout(limit, read).await else {
                return (self.timed_out(limit), Answerer::Daemon);
            };
            let (state, version) = read.unwrap_or((None, None));
            if cache.confirm(&check, state.as_ref(), version.as_ref()) {
                return (Reply::ok(), Answerer::Cache);
            }
        }
        self.verify_fully(credentials).await
    }

    /// Records a successful verification in the credential cache (when there is one).
    fn remember(&self, credentials: &Credentials, verification: &Verification) {
        if let Some(cache) = &self.cache
            && verification.reply.is_ok()
        {
            cache.insert(
                credentials,
                &verification.state,
                verification.version.as_ref(),
                Instant::now(),
            );
        }
    }

    /// The end of every request: the throttle learns the outcome (`charge`: `None` when the
    /// request never got a turn), and the `auth success` (debug) or `auth failure` line is
    /// logged. Returns `reply`.
    fn conclude(
        &self,
        credentials: &Credentials,
        origin: &Origin,
        charge: Option<Charge>,
        reply: Reply,
        answerer: Answerer,
    ) -> Decision {
        let outcome = self.outcome(&reply, answerer);
        if let Some(charge) = charge {
            self.throttle.record(charge, outcome, Instant::now());
        }
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
                    Fields(credentials),
                    OriginFields(origin)
                )
            }
            Reply::No(reason) => self.failure_log.log(Level::Info, &credentials.login, || {
                format!(
                    "auth failure: {} [mech={mech}] [reason={}]{}",
                    Fields(credentials),
                    // A bare `NO` (sasldb, ldap) has no reason: upstream logs `Unknown`.
                    if reason.is_empty() {
                        "Unknown".to_string()
                    } else {
                        sanitize(reason.as_bytes())
                    },
                    OriginFields(origin)
                )
            }),
        }
        Decision {
            temporary: !reply.is_ok() && outcome == Outcome::Neither,
            reply,
        }
    }

    /// What a reply says about the credentials, for the throttle: the daemon's own `NO`s
    /// (busy, deadline, panic) are no verdict, nor is a mechanism's `NO` that the
    /// mechanism calls an outage.
    fn outcome(&self, reply: &Reply, answerer: Answerer) -> Outcome {
        match (reply, answerer) {
            (Reply::Ok(_), _) => Outcome::Success,
            (Reply::No(_), Answerer::Mechanism) => Outcome::Failure,
            (Reply::No(_), Answerer::Outage | Answerer::Cache | Answerer::Daemon) => {
                Outcome::Neither
            }
        }
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
    /// there is a cache to record it), and records a success in the cache; past
    /// `--max-queue` waiting requests, answers `NO server busy` at once instead. A hold
    /// the mechanism asks for (PAM's fail delay) is waited here, on this request's task,
    /// once the pool thread is free again. Also says who answered: the mechanism, or the
    /// daemon (busy, panic, deadline).
    async fn verify_fully(&self, credentials: Arc<Credentials>) -> (Reply, Answerer) {
        let mechanism = Arc::clone(&self.mechanism);
        let with_state = self.cache.is_some();
        let (started, has_started) = oneshot::channel();
        let job_credentials = Arc::clone(&credentials);
        let verified = self.run_on(&self.pool, move || {
            if started.send(()).is_err() {
                // Answered already: it waited too long for a thread.
                return Verification::refused(Reply::no(text::BUSY));
            }
            mechanism.verify(&job_credentials, with_state)
        });
        tokio::pin!(verified);
        // Asked per request: a mechanism's deadline may change on SIGHUP (ldap_timeout).
        let limit = self.verification_limit();
        let answered = |result: Result<Verification, Reply>| match result {
            Ok(verification) => {
                let answerer = Answerer::of(&verification);
                (verification, answerer)
            }
            Err(reply) => (Verification::refused(reply), Answerer::Daemon),
        };
        // Queue time doesn't count (the queue is capped, and bounded apart): the clock
        // starts when a thread takes the job. A job that never starts (queue full, panic)
        // ends `verified` too.
        let (verification, answerer) = tokio::select! {
            result = &mut verified => answered(result),
            _ = tokio::time::sleep(self.queue_limit()) => {
                (Verification::refused(self.no_thread_in_time()), Answerer::Daemon)
            }
            _ = has_started => match tokio::time::timeout(limit, verified).await {
                Ok(result) => answered(result),
                Err(_) => (Verification::refused(self.timed_out(limit)), Answerer::Daemon),
            },
        };
        self.remember(&credentials, &verification);
        if !verification.hold.is_zero() {
            tokio::time::sleep(verification.hold.min(limit)).await;
        }
        (verification.reply, answerer)
    }

    /// `NO server busy` for a request that waited longer than the [queue
    /// limit](Self::queue_limit) for a verification thread (logged at most once a second).
    fn no_thread_in_time(&self) -> Reply {
        self.busy_log.log(|| {
            format!(
                "a request waited {} ms for a verification thread; answering: NO {} \
                 (are the verification threads stuck?)",
                self.queue_limit().as_millis(),
                text::BUSY
            )
        });
        Reply::no(text::BUSY)
    }

    /// `NO` for a verification that gave no verdict within `limit` (logged at most once a
    /// second).
    fn timed_out(&self, limit: Duration) -> Reply {
        self.timeout_log.log(|| {
            format!(
                "mechanism {} gave no verdict within {} ms; answering: NO {} \
                 (its thread stays busy until the call returns)",
                self.mechanism.name(),
                limit.as_millis(),
                text::TIMED_OUT
            )
        });
        Reply::no(text::TIMED_OUT)
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
            return Err(self.busy());
        };
        result.await.map_err(|_| self.panicked())
    }

    /// `NO server busy` for a full verification queue (logged at most once a second).
    fn busy(&self) -> Reply {
        self.busy_log.log(|| {
            format!(
                "verification queue full ({} waiting); answering: NO {}",
                self.max_queue,
                text::BUSY
            )
        });
        Reply::no(text::BUSY)
    }

    /// `NO internal mechanism failure` for a verification that panicked (logged).
    fn panicked(&self) -> Reply {
        log_err!(
            "{}: mechanism {} panicked",
            text::INTERNAL_FAILURE,
            self.mechanism.name()
        );
        Reply::no(text::INTERNAL_FAILURE)
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
        let subject = login.unwrap_or_default();
        self.log_client_failure(Level::Err, subject, || {
            let user = login.map(sanitize).unwrap_or_default();
            let from = OriginFields(origin);
            match rejection {
                Rejection::TooLong { field, len, limit } => format!(
                    "{field} exceeds the field limit: {len} > {limit} bytes; request refused{from}"
                ),
                Rejection::EmptyLogin => format!("{}{from}", text::NULL_LOGIN),
                Rejection::EmptyPassword => format!("{} [user={user}]{from}", text::NULL_PASSWORD),
                Rejection::NulByte(field) => {
                    format!("NUL byte in {field} [user={user}]; request refused{from}")
                }
            }
        });
        rejection.reply()
    }

    /// Writes a line about a failed or refused request, which a client can cause at will,
    /// within the budget of `auth failure` lines (`subject`: the login, counted in the
    /// summary of the lines held back).
    pub fn log_client_failure(&self, level: Level, subject: &[u8], line: impl FnOnce() -> String) {
        self.failure_log.log(level, subject, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::cache::CacheConfig;
    use crate::auth::throttle::ThrottleSettings;
    use crate::secret::Password;

    /// A mechanism whose backend never answers in time.
    struct Hanging {
        deadline: Option<Duration>,
        local: bool,
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
        fn verifies_locally(&self) -> bool {
            self.local
        }
    }

    fn authenticator(deadline: Option<Duration>, verify_timeout: Duration) -> Authenticator {
        hanging(
            Hanging {
                deadline,
                local: false,
            },
            verify_timeout,
        )
    }

    fn hanging(mechanism: Hanging, verify_timeout: Duration) -> Authenticator {
        Authenticator::new(
            Arc::new(mechanism),
            AuthenticatorOptions {
                realm_concat: false,
                workers: 1,
                max_queue: 4,
                // A late `OK` must never be cached.
                cache: Some(
                    CredentialCache::new(&CacheConfig {
                        enabled: true,
                        size_kb: 64,
                        timeout: Duration::from_secs(3600),
                    })
                    .unwrap(),
                ),
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
        client: None,
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

    /// A local verification answers its client from the pool thread; when the mechanism
    /// hangs, the watchdog answers `NO` at the deadline instead, once.
    #[test]
    fn a_local_verification_past_its_deadline_is_no() {
        let mechanism = Hanging {
            deadline: None,
            local: true,
        };
        let authenticator = Arc::new(hanging(mechanism, Duration::from_millis(100)));
        let Start::Verify(verification) = authenticator.start(request(), &MUX) else {
            panic!("a local mechanism's miss is verified on the pool");
        };
        let (sender, replies) = std::sync::mpsc::channel();
        let started = Instant::now();
        authenticator.verify_on_pool(verification, move |reply| {
            let _ = sender.send((reply, started.elapsed()));
        });
        let (reply, took) = replies.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(reply, Reply::no(text::TIMED_OUT));
        assert!(
            took >= Duration::from_millis(100) + DEADLINE_GRACE
                && took < Duration::from_millis(100) + DEADLINE_GRACE * 2,
            "{took:?}"
        );
        // The mechanism's late `OK` (after 3 s) is not cached.
        std::thread::sleep(Duration::from_secs(3));
        let cache = authenticator.cache.as_ref().unwrap();
        assert_eq!(cache.stats().entries, 0, "the late verdict was cached");
    }

    /// With its only thread stuck, a second request waits for a thread no longer than
    /// the queue limit (three verification limits), on either path, and is answered
    /// `NO server busy`; the stuck thread later skips it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wait_for_a_stuck_thread_is_bounded() {
        let verify_timeout = Duration::from_millis(100);
        let limit = verify_timeout + DEADLINE_GRACE;
        for local in [false, true] {
            let mechanism = Hanging {
                deadline: None,
                local,
            };
            let authenticator = Arc::new(hanging(mechanism, verify_timeout));
            let started = Instant::now();
            let (sender, replies) = std::sync::mpsc::channel();
            for _ in 0..2 {
                let sender = sender.clone();
                if local {
                    let Start::Verify(verification) = authenticator.start(request(), &MUX) else {
                        panic!("a local mechanism's miss is verified on the pool");
                    };
                    authenticator.verify_on_pool(verification, move |reply| {
                        let _ = sender.send((reply, started.elapsed()));
                    });
                } else {
                    let authenticator = Arc::clone(&authenticator);
                    tokio::spawn(async move {
                        let reply = authenticator.authenticate(request(), &MUX).await;
                        let _ = sender.send((reply, started.elapsed()));
                    });
                }
                // In this order.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let wait = |replies: &std::sync::mpsc::Receiver<(Reply, Duration)>| {
                replies.recv_timeout(Duration::from_secs(5)).unwrap()
            };
            let (first, took) = wait(&replies);
            assert_eq!(first, Reply::no(text::TIMED_OUT), "local: {local}");
            assert!(
                took >= limit && took < limit * 2,
                "local: {local}: {took:?}"
            );
            let (second, took) = wait(&replies);
            assert_eq!(second, Reply::no(text::BUSY), "local: {local}");
            assert!(
                took >= limit * QUEUE_WAIT_LIMITS && took < limit * (QUEUE_WAIT_LIMITS + 1),
                "local: {local}: {took:?}"
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
