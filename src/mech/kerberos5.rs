//! `-a kerberos5`: a password is good when MIT libkrb5 gets initial credentials with it
//! and a ticket for this host's service principal, decrypted with the keytab, proves that
//! the KDC which issued them is the real one.
//!
//! Upstream's behaviour, kept: the settings of [`config`] (from `-O PATH` or
//! /etc/saslauthd.conf), the same principal formation, `krb5_get_init_creds_password` then
//! `krb5_verify_init_creds` with `ap_req_nofail` (no usable keytab: every password fails;
//! a spoofed KDC that knows the password but not the host key: fails), a fresh library
//! context per request (krb5.conf edits apply to the next request), no credential or
//! replay cache files, and upstream's replies: `OK`, `NO krb5_get_init_creds_password
//! failed`, `NO krb5_verify_init_creds failed`, `NO saslauthd internal error`, `NO
//! saslauthd principal name error`. libkrb5's error texts are logged at LOG_ERR as
//! `auth_krb5: <call>: <text> (<code>)`.
//!
//! Beyond upstream:
//! - `-r` works: a login that already ends in `@REALM` for the request's realm is not
//!   suffixed again (see [`config`] for the exact rule).
//! - A bounded verdict. The whole verification has the daemon's `--verify-timeout`
//!   (default 10 s) as its deadline, counted from when a verification thread takes the
//!   request. libkrb5 runs in a [helper process](helper); when the deadline passes, the
//!   helper is killed and the request answered at once with the reply of the step that
//!   was interrupted (`NO krb5_get_init_creds_password failed` while talking to the
//!   client's KDC, `NO krb5_verify_init_creds failed` while getting the service ticket).
//!   The verification thread is free again at the deadline. Upstream waits for libkrb5:
//!   about 27 s per request for a KDC that never answers.
//! - Outages are told apart from wrong passwords for the throttle: a KDC that can't be
//!   reached or gives no answer in time keeps upstream's reply text, but the
//!   [`Verification`] says it is an outage, so it builds up no penalty.
//!
//! With `-c`, cached successes live by the TTL (`-t`) alone, as rimap's: there is no cheap
//! way to ask a KDC whether a password is still the same.
#![forbid(unsafe_code)]

pub mod config;
pub mod helper;
pub mod pool;

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use self::config::{Config, PrincipalNameError};
use self::helper::Job;
use self::pool::{Outcome, Pool};
use super::{Credentials, Mechanism, StateVersion, Verification};
use crate::log::sanitize;
use crate::protocol::Reply;
use crate::secret::Password;
use crate::{log_debug, log_err, log_info, log_warn};

/// The reply texts (after `NO `).
pub mod text {
    pub const GET_INIT_CREDS_FAILED: &str = "krb5_get_init_creds_password failed";
    pub const VERIFY_FAILED: &str = "krb5_verify_init_creds failed";
    pub const INTERNAL: &str = "saslauthd internal error";
    pub const PRINCIPAL_NAME: &str = "saslauthd principal name error";
}

/// Verifications at once without `-n` (or one per CPU core if more): each one mostly
/// waits for a KDC.
pub const DEFAULT_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(32).unwrap();

pub struct Kerberos5 {
    config: Config,
    deadline: Duration,
    helpers: Pool,
}

impl Kerberos5 {
    /// Reads the configuration file; the error is why startup fails. No Kerberos call is
    /// made here (the KDC may be down while the daemon starts).
    pub fn new(option: Option<&str>, deadline: Duration) -> Result<Kerberos5, String> {
        let config = Config::load(option)?;
        match &config.path {
            Some(path) => log_info!("kerberos5: settings from {}", path.display()),
            None => log_debug!("kerberos5: no settings file; libkrb5's defaults"),
        }
        log_debug!(
            "kerberos5: keytab {}, server principal {}/{}, deadline {} s",
            config.keytab.as_deref().unwrap_or("(libkrb5's default)"),
            config.verify_principal,
            config.servername.as_deref().unwrap_or("(this host)"),
            deadline.as_secs_f64()
        );
        if !nix::unistd::geteuid().is_root() {
            log_warn!("kerberos5: not running as root; the keytab must be readable by this user");
        }
        Ok(Kerberos5 {
            config,
            deadline,
            helpers: Pool::new(),
        })
    }

    fn job(&self, credentials: &Credentials) -> Result<Job, Reply> {
        let principal = self
            .config
            .principal(&credentials.login, &credentials.service, &credentials.realm)
            .map_err(|PrincipalNameError| {
                log_info!(
                    "kerberos5: login {} can't carry the instance forced for service {}",
                    sanitize(&credentials.login),
                    sanitize(&credentials.service)
                );
                Reply::no(text::PRINCIPAL_NAME)
            })?;
        log_debug!("kerberos5: principal {}", sanitize(&principal));
        Ok(Job {
            principal,
            password: Password::new(credentials.password.as_bytes().to_vec()),
            keytab: self.config.keytab.clone().map(String::into_bytes),
            service: self.config.verify_principal.clone().into_bytes(),
            hostname: self.config.servername.clone().map(String::into_bytes),
        })
    }
    /// The verdict, and whether a `NO` is an outage (no KDC reached, or none answered in
    /// time) rather than a verdict on the password.
    fn check(&self, credentials: &Credentials) -> (Reply, bool) {
        let deadline = Instant::now() + self.deadline;
        let job = match self.job(credentials) {
            Ok(job) => job,
            Err(reply) => return (reply, false),
        };
        match self
            .helpers
            .run(&job, deadline, &mut |line| log_err!("{line}"))
        {
            Outcome::Reply(reply) => (reply, false),
            Outcome::Outage(reply) => (reply, true),
            Outcome::TimedOut(step) => {
                log_warn!(
                    "kerberos5: no verdict within {} s for {} (in {}); stopped the helper \
                     process, answering: NO {}",
                    self.deadline.as_secs_f64(),
                    sanitize(&job.principal),
                    match step {
                        helper::Step::InitialCredentials => "krb5_get_init_creds_password",
                        helper::Step::Verification => "krb5_verify_init_creds",
                    },
                    step.failure()
                );
                (Reply::no(step.failure()), true)
            }
            Outcome::Failed(why) => {
                log_err!("kerberos5: helper process: {why}");
                (Reply::no(text::INTERNAL), false)
            }
        }
    }
}

impl Mechanism for Kerberos5 {
    fn name(&self) -> &'static str {
        "kerberos5"
    }

    /// The helper process failed. (A KDC that could not be reached or gave no answer in
    /// time is an outage too, flagged by [`Kerberos5::check`]: upstream's text for it is
    /// the same as for a wrong password.)
    fn is_outage(&self, reason: &str) -> bool {
        reason == text::INTERNAL
    }

    fn authenticate(&self, credentials: &Credentials) -> Reply {
        self.check(credentials).0
    }

    fn verify(&self, credentials: &Credentials, _with_state: bool) -> Verification {
        let (reply, outage) = self.check(credentials);
        // No account state: cached successes live by the TTL alone.
        Verification {
            outage: outage || Verification::outage_by_text(self, &reply),
            version: Some(StateVersion::default()),
            ..Verification::refused(reply)
        }
    }

    fn default_concurrency(&self) -> NonZeroUsize {
        DEFAULT_CONCURRENCY.max(super::cpu_cores())
    }

    /// The keytab is all it reads; give `--user` a user that can read it.
    fn needs_root(&self) -> bool {
        false
    }

    fn verification_deadline(&self) -> Option<Duration> {
        Some(self.deadline)
    }
}
