//! `-a ldap`: a password is good when an LDAP directory says so, configured by upstream's
//! `saslauthd.conf` (`-O PATH`, default `/etc/saslauthd.conf`).
//!
//! * [`config`]: the file's keys, read at start and on `SIGHUP` ([`Mechanism::reload`]); a
//!   broken file stops the start, or, on `SIGHUP`, keeps the settings in use.
//! * [`tokens`]: `%u`, `%d`, `%1`, ... in filters and DNs, escaped for where they land.
//! * [`session`]: one connection per request (ldap3, tokio), every operation bounded.
//! * [`verify`]: the methods `bind`, `fastbind`, `custom` and the group check.
//! * [`schemes`]: `{SSHA}`, `{CRYPT}`, ... for `custom`.
//! * [`tls`]: the `ldap_tls_*` keys.
//!
//! Replies are upstream's: exactly `OK` or `NO`, whatever happened (the reason goes to the
//! log). A `NO` that is no verdict on the credentials — no server reached, no answer by the
//! deadline, a connection or library failure, a server that refuses the service identity
//! or an operation other than the user's bind, a referral that can't be followed — is an
//! outage for the throttle ([`Verification::outage`], see [`verify::Verdict::Outage`]): it
//! builds up no penalty. One deadline, `ldap_timeout` (default 5 s), covers the whole verification: a server
//! that never answers gives `NO` after `ldap_timeout` (upstream retries once, so twice that),
//! and [`Mechanism::verification_deadline`] gives it to the daemon's backstop. Nothing is
//! kept between requests, so a password change or a server outage is seen by the next
//! request, with every method. With `-c`, cached successes live by the TTL alone (`-t`), as
//! for rimap: a password changed in the directory is seen after at most `-t` seconds.
//!
//! **Threads.** `authenticate` runs on a thread of the daemon's verification pool and
//! drives the exchange on the mechanism's own runtime ([`IoRuntime`]); requests never wait
//! for each other.
#![forbid(unsafe_code)]

pub mod config;
pub mod schemes;
pub mod session;
pub mod tls;
pub mod tokens;
pub mod verify;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use self::config::{Method, Settings};
use self::tls::TlsSetup;
use self::verify::Verdict;
use super::io_runtime::IoRuntime;
use super::{Credentials, Mechanism, StateVersion, Verification};
use crate::log::sanitize;
use crate::protocol::Reply;
use crate::{log_info, log_warn};

/// Verifications at once without `-n` (or one per CPU core if more): each one mostly waits
/// on the network.
pub const DEFAULT_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(32).unwrap();
/// Threads for name lookups in the mechanism's runtime.
const LOOKUP_THREADS: usize = 8;

/// The settings and what they need at run time, replaced as a whole on reload.
struct Loaded {
    settings: Settings,
    tls: Option<TlsSetup>,
}

pub struct Ldap {
    path: PathBuf,
    loaded: RwLock<Arc<Loaded>>,
    runtime: IoRuntime,
}

impl Ldap {
    /// Reads `-O PATH` (default [`config::DEFAULT_PATH`]); the error is why the daemon
    /// can't start.
    pub fn new(option: Option<&str>) -> Result<Ldap, String> {
        let path = PathBuf::from(option.unwrap_or(config::DEFAULT_PATH));
        let loaded = load(&path)?;
        describe(&loaded);
        Ok(Ldap {
            path,
            loaded: RwLock::new(Arc::new(loaded)),
            runtime: IoRuntime::new("saslauthd-ldap", LOOKUP_THREADS),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Reads and checks the file, and sets up TLS.
fn load(path: &Path) -> Result<Loaded, String> {
    let settings = config::read(path).map_err(|e| e.to_string())?;
    let needs_tls = settings
        .servers
        .iter()
        .any(|server| settings.uses_tls(server));
    let tls = if needs_tls {
        Some(TlsSetup::new(&settings.tls).map_err(|e| format!("{}: {e}", path.display()))?)
    } else {
        None
    };
    Ok(Loaded { settings, tls })
}

/// Logs what the daemon will do with these settings (at start and on reload).
fn describe(loaded: &Loaded) {
    let settings = &loaded.settings;
    let servers: Vec<String> = settings.servers.iter().map(|s| s.to_string()).collect();
    let tls = match &loaded.tls {
        Some(tls) if tls.check_peer() => {
            format!("; TLS certificates checked against {}", tls.anchors)
        }
        Some(_) => "; TLS certificates NOT checked (ldap_tls_check_peer is off)".to_string(),
        None => String::new(),
    };
    log_info!(
        "ldap: verifying passwords by {} at {} (from {}); timeout {} s{tls}",
        match settings.method {
            Method::Bind => "search and bind",
            Method::FastBind => "fastbind",
            Method::Custom => "search and local comparison (custom)",
        },
        servers.join(" "),
        settings.path.display(),
        settings.timeout.as_secs()
    );
    if loaded.tls.as_ref().is_some_and(|tls| !tls.check_peer()) {
        log_warn!(
            "ldap: ldap_tls_check_peer is off in {}: any server can pose as the directory and \
             receive passwords",
            settings.path.display()
        );
    }
    for server in &settings.servers {
        if settings.method != Method::Custom && server.clear_over_network(settings.uses_tls(server))
        {
            log_warn!(
                "ldap: {server}: passwords cross the network unencrypted (use ldaps:// or \
                 ldap_start_tls: yes)"
            );
        }
    }
    if !settings.unknown_keys.is_empty() {
        log_warn!(
            "ldap: {}: unknown keys ignored: {}",
            settings.path.display(),
            settings.unknown_keys.join(", ")
        );
    }
    for note in &settings.notes {
        log_info!("ldap: {}: {note}", settings.path.display());
    }
}

impl Mechanism for Ldap {
    fn name(&self) -> &'static str {
        "ldap"
    }

    fn default_concurrency(&self) -> NonZeroUsize {
        DEFAULT_CONCURRENCY.max(super::cpu_cores())
    }

    fn needs_root(&self) -> bool {
        false
    }

    fn verification_deadline(&self) -> Option<Duration> {
        Some(self.current().settings.timeout)
    }

    fn reload(&self) -> Result<String, String> {
        match load(&self.path) {
            Ok(loaded) => {
                describe(&loaded);
                *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
                Ok(format!("ldap: re-read {}", self.path.display()))
            }
            Err(why) => Err(format!("ldap: keeping the settings in use: {why}")),
        }
    }

    fn authenticate(&self, credentials: &Credentials) -> Reply {
        self.check(credentials).0
    }

    fn verify(&self, credentials: &Credentials, _with_state: bool) -> Verification {
        let (reply, outage) = self.check(credentials);
        // No account state: cached successes live by the TTL alone.
        Verification {
            outage,
            version: Some(StateVersion::default()),
            ..Verification::refused(reply)
        }
    }
}

impl Ldap {
    /// The reply (upstream's: `OK` or a bare `NO`), and whether a `NO` is an outage rather
    /// than a verdict on the credentials.
    fn check(&self, credentials: &Credentials) -> (Reply, bool) {
        let loaded = self.current();
        let runtime = match self.runtime.get() {
            Ok(runtime) => runtime,
            Err(error) => {
                log_warn!("ldap: cannot start the I/O runtime: {error}");
                return (Reply::bare_no(), true);
            }
        };
        let timeout = loaded.settings.timeout;
        let verdict = runtime.block_on(async {
            let deadline = Instant::now() + timeout;
            let work = verify::verify(&loaded.settings, loaded.tls.as_ref(), credentials, deadline);
            match timeout_at(deadline, work).await {
                Ok(verdict) => verdict,
                Err(_) => {
                    log_warn!(
                        "ldap: [user={}]: no verdict within ldap_timeout ({} s)",
                        sanitize(&credentials.login),
                        timeout.as_secs()
                    );
                    Verdict::Outage
                }
            }
        });
        match verdict {
            Verdict::Yes => (Reply::ok(), false),
            // Upstream's reply: `NO` and nothing else.
            Verdict::No => (Reply::bare_no(), false),
            Verdict::Outage => (Reply::bare_no(), true),
        }
    }
}
