//! Turns what a client sent into a reply: validation, `-r`, the mechanism on the bounded
//! verification pool, and upstream's log lines.
//!
//! Fail closed: the only way to `OK` is the mechanism's own `Reply::Ok`; a refused request,
//! a panicking or vanished verification all answer `NO`.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use super::connection::Incoming;
use super::peer::PeerCredentials;
use crate::log::{RateLimitedLog, sanitize};
use crate::mech::{Credentials, Mechanism};
use crate::protocol::{Rejection, Reply, Request, text};
use crate::{log_debug, log_err, log_info};

pub struct Handler {
    mechanism: Arc<dyn Mechanism>,
    realm_concat: bool,
    /// One permit per verification allowed to run at once (`-n`). Tokio's semaphore is
    /// FIFO, so waiting requests are served in arrival order.
    pool: Arc<Semaphore>,
    /// Requests waiting for a permit now, and how many may (`--max-queue`).
    waiting: AtomicUsize,
    max_queue: usize,
    busy_log: RateLimitedLog,
}

/// How a [`Handler`] works, from the configuration.
pub struct HandlerOptions {
    /// `-r`.
    pub realm_concat: bool,
    /// Verifications at once (`-n`, or the mechanism's default).
    pub workers: usize,
    /// `--max-queue`.
    pub max_queue: usize,
}

/// The non-secret parts of a request, made safe for log lines.
struct Subject {
    user: String,
    service: String,
    realm: String,
    remote: Option<String>,
    peer: Option<PeerCredentials>,
}

impl Subject {
    fn fields(&self) -> String {
        let remote = match &self.remote {
            Some(remote) => format!(" [remote={remote}]"),
            None => String::new(),
        };
        let peer = match &self.peer {
            Some(peer) => format!(" {peer}"),
            None => String::new(),
        };
        format!(
            "[user={}] [service={}] [realm={}]{remote}{peer}",
            self.user, self.service, self.realm
        )
    }
}

impl Handler {
    pub fn new(mechanism: Arc<dyn Mechanism>, options: HandlerOptions) -> Handler {
        Handler {
            mechanism,
            realm_concat: options.realm_concat,
            pool: Arc::new(Semaphore::new(options.workers)),
            waiting: AtomicUsize::new(0),
            max_queue: options.max_queue,
            busy_log: RateLimitedLog::default(),
        }
    }

    /// The reply to what a client sent; `peer` is who sent it, for the log lines.
    pub async fn handle(&self, incoming: Incoming, peer: Option<PeerCredentials>) -> Reply {
        match incoming {
            Incoming::Rejected(rejection) => {
                self.log_rejection(&rejection, None);
                rejection.reply()
            }
            Incoming::Request(request) => self.verify(request, peer).await,
        }
    }

    async fn verify(&self, request: Request, peer: Option<PeerCredentials>) -> Reply {
        if let Err(rejection) = request.validate() {
            self.log_rejection(&rejection, Some(&request.login));
            return rejection.reply();
        }
        let credentials = self.credentials(request);
        let subject = Subject {
            user: sanitize(&credentials.login),
            service: sanitize(&credentials.service),
            realm: sanitize(&credentials.realm),
            remote: credentials.client_addr.as_deref().map(sanitize),
            peer,
        };
        let reply = self.run_mechanism(credentials).await;
        let mech = self.mechanism.name();
        match &reply {
            Reply::Ok(_) => log_debug!("auth success: {} [mech={mech}]", subject.fields()),
            Reply::No(reason) => log_info!(
                "auth failure: {} [mech={mech}] [reason={}]",
                subject.fields(),
                sanitize(reason.as_bytes())
            ),
        }
        reply
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

    /// Runs the mechanism on the blocking pool once a verification slot is free; past
    /// `--max-queue` waiting requests, answers `NO server busy` at once instead.
    async fn run_mechanism(&self, credentials: Credentials) -> Reply {
        let Some(place) = QueuePlace::take(&self.waiting, self.max_queue) else {
            self.busy_log.log(|| {
                format!(
                    "verification queue full ({} waiting); answering: NO {}",
                    self.max_queue,
                    text::BUSY
                )
            });
            return Reply::no(text::BUSY);
        };
        let acquired = Arc::clone(&self.pool).acquire_owned().await;
        drop(place);
        let Ok(permit) = acquired else {
            return Reply::no(text::INTERNAL_FAILURE);
        };
        let mechanism = Arc::clone(&self.mechanism);
        let task = tokio::task::spawn_blocking(move || {
            let reply = mechanism.authenticate(&credentials);
            drop(permit);
            reply
        });
        match task.await {
            Ok(reply) => reply,
            Err(error) => {
                let how = if error.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                log_err!(
                    "{}: mechanism {} {how}",
                    text::INTERNAL_FAILURE,
                    self.mechanism.name()
                );
                Reply::no(text::INTERNAL_FAILURE)
            }
        }
    }

    /// Upstream logs refused requests at LOG_ERR, without an `auth failure` line.
    fn log_rejection(&self, rejection: &Rejection, login: Option<&[u8]>) {
        let user = login.map(sanitize).unwrap_or_default();
        match rejection {
            Rejection::TooLong { field, len, limit } => {
                log_err!("{field} exceeds the field limit: {len} > {limit} bytes; request refused")
            }
            Rejection::EmptyLogin => log_err!("{}", text::NULL_LOGIN),
            Rejection::EmptyPassword => log_err!("{} [user={user}]", text::NULL_PASSWORD),
            Rejection::NulByte(field) => {
                log_err!("NUL byte in {field} [user={user}]; request refused")
            }
        }
    }
}

/// A place in the verification queue, given back when dropped (also if the request's task
/// is cancelled while waiting).
struct QueuePlace<'a>(&'a AtomicUsize);

impl<'a> QueuePlace<'a> {
    fn take(waiting: &'a AtomicUsize, limit: usize) -> Option<QueuePlace<'a>> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| QueuePlace(waiting))
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
