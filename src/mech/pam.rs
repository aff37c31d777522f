//! `-a pam`: verification through the system's PAM stacks.
//!
//! Per request, on the verification pool: the service policy picks the PAM service from the
//! request's service field; then `pam_start(service, login)`, `PAM_RHOST` from the client
//! address when the request carried one, `pam_authenticate(PAM_SILENT)`, a check that no
//! module changed `PAM_USER`, `pam_acct_mgmt(PAM_SILENT)`, `pam_end`. Replies are upstream's:
//! `OK`, `NO PAM start error`, `NO PAM auth error`, `NO PAM acct error`; failed PAM calls are
//! logged at debug level with PAM's text, as upstream does. The realm is ignored (under `-r`
//! the login already carries it).
//!
//! The service policy goes beyond upstream: a client chooses the PAM service, so a local
//! client could ask for the `su` stack, which trusts our root uid. Without `--pam-services`,
//! the stacks that trust root or serve interactive logins are refused ([`policy`]);
//! `--pam-services` limits the names clients may send instead, `--pam-service-map` renames
//! some, `--pam-service` sends all other names to one service.
#![forbid(unsafe_code)]

mod padding;
mod policy;

pub use policy::{PAM_D, Refusals, Risk, ServicePolicy};

use std::borrow::Cow;
use std::ffi::CString;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::{Duration, Instant};

use super::dummy::DummyHash;
use super::{AccountState, Credentials, Mechanism, Settings, StateVersion, Verification};
use crate::log::sanitize;
use crate::protocol::Reply;
use crate::sys::pam::{Flags, Transaction};
use crate::sys::thread_uid::{self, ForeignRealUid};
use crate::{log_debug, log_info, log_warn};
use padding::Padding;

pub const START_ERROR: &str = "PAM start error";
pub const AUTH_ERROR: &str = "PAM auth error";
pub const ACCT_ERROR: &str = "PAM acct error";
/// Ours: the service policy refused the requested service name.
pub const SERVICE_NOT_ALLOWED: &str = "PAM service not allowed";

/// Verifications at once without `-n` (or one per CPU core if that is more). Fail delays
/// no longer hold a slot (they are waited on a timer after the verification), but PAM
/// modules that talk to a server (LDAP, Kerberos, RADIUS) or sleep on their own still
/// wait on their thread while using no CPU.
pub const DEFAULT_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(16).unwrap();

pub struct Pam {
    policy: ServicePolicy,
    /// Without `--pam-services`: the services refused by default.
    refusals: Option<Refusals>,
    /// How long failures are held back so that unknown users take as long as others.
    padding: Padding,
    /// The shadow mechanism's dummy hash: the padding's work part.
    dummy: DummyHash,
    /// The longest hold (fail delay plus padding): `--verify-timeout`.
    max_hold: Duration,
    /// Whether transactions run with a non-zero real uid on their thread (the daemon's
    /// real uid is 0 and switching works), so that pam_rootok never vouches.
    foreign_real_uid: bool,
}

impl Pam {
    /// The mechanism with the administrator's service policy (`settings.pam`). Without
    /// `--pam-services`, `pam_d` is scanned for stacks that trust root (the daemon passes
    /// [`PAM_D`]); a rename target or `--pam-service` naming a refused service is then an
    /// error.
    pub fn new(option: Option<&str>, settings: &Settings, pam_d: &Path) -> Result<Pam, String> {
        let policy = settings.pam.clone();
        if option.is_some() {
            log_warn!("pam: the -O option has no meaning for this mechanism; ignored");
        }
        if !nix::unistd::geteuid().is_root() {
            log_warn!(
                "pam: not running as root; pam_unix can then verify only this user's own password"
            );
        }
        let refusals = (!policy.has_allow_list()).then(|| Refusals::scan(pam_d));
        if let Some(refusals) = &refusals {
            if let Some((option, target, risk)) = policy.targets().find_map(|(option, target)| {
                Some((option, target, refusals.risk(target.as_bytes())?))
            }) {
                return Err(format!(
                    "{option} names the PAM service {target}, which is refused by default \
                     ({}); list the names clients may send with --pam-services to use it",
                    risk.describe()
                ));
            }
            log_refusals(refusals, pam_d);
        }
        log_info!("pam: service policy: {}", policy.describe());
        let dummy = DummyHash::under(Path::new("/"));
        let (one_hash, kind) = dummy.measure();
        log_info!(
            "pam: failed logins are answered no sooner than a successful one of the same \
             service takes (until one is seen: {} ms, one hash of {kind}), plus the fail delay",
            one_hash.as_millis()
        );
        Ok(Pam {
            policy,
            refusals,
            padding: Padding::new(one_hash),
            dummy,
            max_hold: settings.verify_timeout,
            foreign_real_uid: foreign_real_uid_works(),
        })
    }
}

/// Logs, at startup, which services are refused by default and why.
fn log_refusals(refusals: &Refusals, pam_d: &Path) {
    log_info!(
        "pam: without --pam-services these PAM services are refused (NO {SERVICE_NOT_ALLOWED}): \
         {} -- they trust the daemon's root uid (pam_rootok), grant privileges, change \
         passwords or serve interactive logins; --pam-services NAME,... lists the names \
         clients may use instead",
        refusals.names()
    );
    let found = refusals.found();
    if !found.is_empty() {
        log_info!(
            "pam: refused because their auth stack in {} reaches pam_rootok: {found}",
            pam_d.display()
        );
    }
    if refusals.risk(b"other").is_some() {
        log_warn!(
            "pam: the \"other\" stack trusts root (pam_rootok): every service name without \
             its own stack reaches it; use --pam-services"
        );
    }
}

/// Whether this thread (so every thread: they share the daemon's ids) can run PAM with
/// the real uid [`thread_uid::PAM_REAL_UID`]; logs why not.
fn foreign_real_uid_works() -> bool {
    let (real, effective, _) = thread_uid::thread_uids();
    if real != 0 || effective != 0 {
        // Not root: pam_rootok can't vouch anyway.
        return false;
    }
    match ForeignRealUid::enter() {
        Ok(_switched_back_on_drop) => {
            log_info!(
                "pam: PAM transactions run with the real uid {} on their thread (effective \
                 uid 0), so pam_rootok never vouches for a login",
                thread_uid::PAM_REAL_UID
            );
            true
        }
        Err(errno) => {
            log_warn!(
                "pam: cannot give PAM transactions a non-zero real uid ({}): a stack with \
                 pam_rootok allowed by --pam-services would accept any password",
                errno.desc()
            );
            false
        }
    }
}

impl Mechanism for Pam {
    fn name(&self) -> &'static str {
        "pam"
    }

    /// A PAM transaction that could not start.
    fn is_outage(&self, reason: &str) -> bool {
        reason.starts_with(START_ERROR)
    }

    fn default_concurrency(&self) -> NonZeroUsize {
        DEFAULT_CONCURRENCY.max(super::cpu_cores())
    }

    /// [`Mechanism::verify`], then the hold slept on this thread.
    fn authenticate(&self, credentials: &Credentials) -> Reply {
        let verification = self.verify(credentials, false);
        std::thread::sleep(verification.hold);
        verification.reply
    }

    /// [`Mechanism::verify`] with the state, then the hold slept on this thread.
    fn authenticate_with_state(
        &self,
        credentials: &Credentials,
    ) -> (Reply, AccountState, Option<StateVersion>) {
        let verification = self.verify(credentials, true);
        std::thread::sleep(verification.hold);
        (verification.reply, verification.state, verification.version)
    }

    /// One transaction; a failed `pam_authenticate` comes back with its hold (fail delay
    /// plus padding) instead of sleeping. The state for the cache is the account's
    /// shadow entry as `-a shadow` reads it (hash, lock, ageing, expiry), read before
    /// PAM runs, so a change made during the transaction can only make the entry stale.
    fn verify(&self, credentials: &Credentials, with_state: bool) -> Verification {
        let state = if with_state {
            local_state(&credentials.login)
        } else {
            AccountState::default()
        };
        let (reply, hold) = match self.service(credentials) {
            Ok(service) => self.transaction(&service, credentials),
            Err(reply) => (reply, Duration::ZERO),
        };
        Verification {
            outage: Verification::outage_by_text(self, &reply),
            reply,
            hold,
            state,
            version: None,
        }
    }

    /// A cache hit runs the account phase (`pam_acct_mgmt`) again, so an account that has
    /// expired or been refused by pam_access since is refused (by a full verification,
    /// which gives PAM's exact reply), and compares the shadow entry, which pam_unix's
    /// account phase never looks at (a lock, a new hash). So: no version, ever.
    fn state_version(&self, _credentials: &Credentials) -> Option<StateVersion> {
        None
    }

    fn current_state(
        &self,
        credentials: &Credentials,
    ) -> (Option<AccountState>, Option<StateVersion>) {
        let state = local_state(&credentials.login);
        let account_ok = self.service(credentials).ok().is_some_and(|service| {
            let Ok(_real_uid) = self.enter_foreign_real_uid() else {
                return false;
            };
            open(&service, credentials)
                .is_ok_and(|mut pam| account(&mut pam, &credentials.login).is_ok())
        });
        (account_ok.then_some(state), None)
    }
}

/// What the credential cache compares for `login` besides PAM's account phase: its shadow
/// entry's state as `-a shadow` records it, when NSS has one (the local files, or an NSS
/// source that serves shadow entries); empty otherwise (accounts only PAM knows: LDAP,
/// Kerberos, sssd).
fn local_state(login: &[u8]) -> AccountState {
    super::shadow::account_state(login).unwrap_or_default()
}

impl Pam {
    /// The PAM service for the request's service name, under the service policy.
    fn service<'a>(&self, credentials: &'a Credentials) -> Result<Cow<'a, [u8]>, Reply> {
        let refused = |why: &str| {
            log_warn!(
                "pam: service \"{}\" refused by the service policy ({why}) [user={}]",
                sanitize(&credentials.service),
                sanitize(&credentials.login)
            );
            Err(Reply::no(SERVICE_NOT_ALLOWED))
        };
        let Some(service) = self.policy.resolve(&credentials.service) else {
            return refused(&self.policy.describe());
        };
        if let Some(risk) = self.refusals.as_ref().and_then(|r| r.risk(&service)) {
            return refused(&format!(
                "refused by default: {}; see --pam-services",
                risk.describe()
            ));
        }
        if service.as_ref() != policy::normalize(&credentials.service).as_ref() {
            log_debug!(
                "pam: service \"{}\" mapped to \"{}\"",
                sanitize(&credentials.service),
                sanitize(&service)
            );
        }
        Ok(service)
    }

    /// This thread's real uid switched away from 0 until the guard drops, when that is on.
    /// An error (the switch worked at startup but fails now) refuses the request.
    fn enter_foreign_real_uid(&self) -> Result<Option<ForeignRealUid>, Reply> {
        if !self.foreign_real_uid {
            return Ok(None);
        }
        ForeignRealUid::enter().map(Some).map_err(|errno| {
            log_warn!(
                "pam: cannot switch the real uid for a PAM transaction: {}",
                errno.desc()
            );
            Reply::no(START_ERROR)
        })
    }

    /// One PAM transaction for `credentials` against `service`, with the hold of its reply.
    fn transaction(&self, service: &[u8], credentials: &Credentials) -> (Reply, Duration) {
        let login = credentials.login.as_slice();
        // Declared first, so dropped last: pam_end runs with the same real uid.
        let _real_uid = match self.enter_foreign_real_uid() {
            Ok(guard) => guard,
            Err(reply) => return (reply, Duration::ZERO),
        };
        let mut pam = match open(service, credentials) {
            Ok(pam) => pam,
            Err(reply) => return (reply, Duration::ZERO),
        };
        let started = Instant::now();
        let authenticated = pam.authenticate(Flags::SILENT);
        let took = started.elapsed();
        let failed = |pam: &Transaction| {
            let mut worked = took;
            if self.padding.wants_dummy(service, took) {
                let dummy = Instant::now();
                self.dummy.spend(&credentials.password);
                self.padding.record_dummy(dummy.elapsed());
                worked = started.elapsed();
            }
            let fail_delay = pam.fail_delay();
            let hold = self
                .padding
                .hold(service, worked, fail_delay, self.max_hold);
            log_debug!(
                "pam: failure after {} ms, {} ms with padding work; held back {} ms more \
                 (fail delay {} ms)",
                took.as_millis(),
                worked.as_millis(),
                hold.as_millis(),
                fail_delay.as_millis()
            );
            (Reply::no(AUTH_ERROR), hold)
        };
        if let Err(error) = authenticated {
            log_debug!("auth_pam: pam_authenticate failed: {error}");
            return failed(&pam);
        }
        if !same_user(&pam, login, "pam_authenticate") {
            return failed(&pam);
        }
        self.padding.record_success(service, took);
        match account(&mut pam, login) {
            Ok(()) => (Reply::ok(), Duration::ZERO),
            Err(reply) => (reply, Duration::ZERO),
        }
    }
}

/// `pam_start` for the login, with `PAM_RHOST` from the client address when there is one.
fn open(service: &[u8], credentials: &Credentials) -> Result<Transaction, Reply> {
    // NUL bytes were refused with the request; stay closed anyway.
    let (Ok(c_service), Ok(c_login)) = (
        CString::new(service),
        CString::new(credentials.login.as_slice()),
    ) else {
        log_debug!("auth_pam: pam_start failed: NUL byte in the service or login");
        return Err(Reply::no(START_ERROR));
    };
    let mut pam = match Transaction::start(&c_service, &c_login, &credentials.password) {
        Ok(pam) => pam,
        Err(error) => {
            log_debug!("auth_pam: pam_start failed: {error}");
            return Err(Reply::no(START_ERROR));
        }
    };
    if let Some(rhost) = credentials.client_addr.as_deref().and_then(remote_host) {
        let set = CString::new(rhost)
            .map_err(|_| "NUL byte in the client address".to_string())
            .and_then(|rhost| pam.set_rhost(&rhost).map_err(|e| e.to_string()));
        if let Err(error) = set {
            log_debug!("auth_pam: pam_set_item(PAM_RHOST) failed: {error}");
            return Err(Reply::no(START_ERROR));
        }
    }
    Ok(pam)
}

/// The account phase: `pam_acct_mgmt`, and `PAM_USER` still the login.
fn account(pam: &mut Transaction, login: &[u8]) -> Result<(), Reply> {
    if let Err(error) = pam.acct_mgmt(Flags::SILENT) {
        log_debug!("auth_pam: pam_acct_mgmt failed: {error}");
        return Err(Reply::no(ACCT_ERROR));
    }
    if !same_user(pam, login, "pam_acct_mgmt") {
        return Err(Reply::no(ACCT_ERROR));
    }
    Ok(())
}

/// Whether `PAM_USER` is still `login` after `step`; logs when it is not. A module that
/// maps the name (to a canonical or another account) would otherwise make us answer `OK`
/// for a user the client did not name.
fn same_user(pam: &Transaction, login: &[u8], step: &str) -> bool {
    match pam.user() {
        Ok(user) if user_unchanged(login, user.as_deref()) => true,
        Ok(user) => {
            log_warn!(
                "pam: a module changed PAM_USER during {step} from \"{}\" to \"{}\"; refused",
                sanitize(login),
                user.as_deref()
                    .map(sanitize)
                    .unwrap_or_else(|| "(none)".into())
            );
            false
        }
        Err(error) => {
            log_warn!("pam: cannot read PAM_USER after {step}: {error}; refused");
            false
        }
    }
}

/// True only when PAM still names exactly the login we started with.
fn user_unchanged(login: &[u8], pam_user: Option<&[u8]>) -> bool {
    pam_user == Some(login)
}

/// `PAM_RHOST` for a client address `ip;port`: the part before the first `;`. None for an
/// empty host part (nothing to tell modules).
fn remote_host(client_addr: &[u8]) -> Option<&[u8]> {
    let host = client_addr
        .split(|&b| b == b';')
        .next()
        .unwrap_or(client_addr);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Password;

    #[test]
    fn a_transaction_that_cannot_start_is_an_outage() {
        let pam = pam_with(policy(None, None, None)).unwrap();
        assert!(pam.is_outage(START_ERROR));
        assert!(!pam.is_outage(AUTH_ERROR));
        assert!(!pam.is_outage(ACCT_ERROR));
    }

    fn policy(allowed: Option<&str>, map: Option<&str>, fallback: Option<&str>) -> ServicePolicy {
        ServicePolicy::from_options(allowed, map, fallback).unwrap()
    }

    fn asking_for(service: &str) -> Credentials {
        Credentials {
            login: b"alice".to_vec(),
            password: Password::new(b"pw".to_vec()),
            service: service.as_bytes().to_vec(),
            realm: Vec::new(),
            client_addr: None,
        }
    }

    /// The service PAM would be started with, or the reply.
    fn service_for(pam: &Pam, requested: &str) -> Result<String, String> {
        pam.service(&asking_for(requested))
            .map(|s| String::from_utf8(s.into_owned()).unwrap())
            .map_err(|reply| reply.text())
    }

    const NOWHERE: &str = "/nonexistent/pam.d";

    fn pam_with(policy: ServicePolicy) -> Result<Pam, String> {
        let settings = Settings {
            pam: policy,
            ..Settings::default()
        };
        Pam::new(None, &settings, Path::new(NOWHERE))
    }

    #[test]
    fn without_an_allow_list_risky_services_are_refused_after_normalisation() {
        let pam = pam_with(policy(None, None, None)).unwrap();
        let refused = Err(format!("NO {SERVICE_NOT_ALLOWED}"));
        for name in [
            "su",
            "SU",
            "../su",
            "/etc/pam.d/su",
            "x/Su-L",
            "sudo",
            "login",
            "sshd",
        ] {
            assert_eq!(service_for(&pam, name), refused, "{name}");
        }
        assert_eq!(service_for(&pam, "smtp").as_deref(), Ok("smtp"));
        assert_eq!(service_for(&pam, "IMAP").as_deref(), Ok("imap"));
        assert_eq!(service_for(&pam, "").as_deref(), Ok(""));
        // A rename makes the target what counts.
        let pam = pam_with(policy(None, Some("su=smtp"), None)).unwrap();
        assert_eq!(service_for(&pam, "SU").as_deref(), Ok("smtp"));
        assert_eq!(service_for(&pam, "sudo"), refused);
    }

    #[test]
    fn an_allow_list_overrides_the_default_refusals() {
        let pam = pam_with(policy(Some("su,smtp"), None, None)).unwrap();
        assert_eq!(service_for(&pam, "SU").as_deref(), Ok("su"));
        assert_eq!(service_for(&pam, "smtp").as_deref(), Ok("smtp"));
        assert!(service_for(&pam, "imap").is_err());
        let pam = pam_with(policy(Some("imap"), Some("imap=login"), None));
        assert_eq!(service_for(&pam.unwrap(), "imap").as_deref(), Ok("login"));
    }

    #[test]
    fn a_target_refused_by_default_needs_an_allow_list() {
        let error = |p: ServicePolicy| pam_with(p).err().unwrap_or_default();
        assert_eq!(
            error(policy(None, None, Some("SU"))),
            "--pam-service names the PAM service su, which is refused by default (its stack \
             trusts root (pam_rootok)); list the names clients may send with --pam-services to \
             use it"
        );
        assert!(
            error(policy(None, Some("imap=mail,pop=login"), None))
                .starts_with("--pam-service-map names the PAM service login, "),
        );
        assert!(pam_with(policy(None, Some("imap=mail"), Some("smtp"))).is_ok());
    }

    #[test]
    fn remote_host_is_the_part_before_the_first_semicolon() {
        assert_eq!(remote_host(b"192.0.2.1;25"), Some(&b"192.0.2.1"[..]));
        assert_eq!(remote_host(b"2001:db8::1;587"), Some(&b"2001:db8::1"[..]));
        assert_eq!(remote_host(b"192.0.2.1"), Some(&b"192.0.2.1"[..]));
        assert_eq!(remote_host(b"a;b;c"), Some(&b"a"[..]));
        assert_eq!(remote_host(b""), None);
        assert_eq!(remote_host(b";25"), None);
    }

    #[test]
    fn only_the_same_user_passes() {
        assert!(user_unchanged(b"alice", Some(b"alice")));
        assert!(!user_unchanged(b"alice", Some(b"Alice")));
        assert!(!user_unchanged(b"alice", Some(b"root")));
        assert!(!user_unchanged(b"alice", Some(b"")));
        assert!(!user_unchanged(b"alice", None));
    }
}
