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
//! client could ask for the `su` or `sudo` stacks. `--pam-services` limits the names clients
//! may send, `--pam-service-map` renames some, `--pam-service` sends all other names to one
//! service. Without them every name goes to PAM as sent (upstream's behaviour).
//!
//! PAM calls block for seconds on failures (pam_unix's ~2 s delay, pam_faildelay), so this
//! mechanism asks for a larger verification pool than the CPU-bound shadow one.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::ffi::CString;
use std::num::NonZeroUsize;

use super::{AccountState, Credentials, Mechanism, StateVersion};
use crate::log::sanitize;
use crate::protocol::Reply;
use crate::sys::pam::{Flags, Transaction};
use crate::{log_debug, log_info, log_warn};

pub const START_ERROR: &str = "PAM start error";
pub const AUTH_ERROR: &str = "PAM auth error";
pub const ACCT_ERROR: &str = "PAM acct error";
/// Ours: the service policy refused the requested service name.
pub const SERVICE_NOT_ALLOWED: &str = "PAM service not allowed";

/// Verifications at once without `-n` (or one per CPU core if that is more): a failing PAM
/// verification holds its slot for the whole fail delay (~2 s with pam_unix, 3 s with
/// Debian's pam_faildelay for `login`) while using no CPU, so up to 15 slow failures in
/// flight still leave a slot for the next request.
pub const DEFAULT_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(16).unwrap();

/// Longest service name accepted in the options (PAM service names are file names).
const MAX_SERVICE_NAME: usize = 255;

pub struct Pam {
    policy: ServicePolicy,
}

impl Pam {
    pub fn new(option: Option<&str>, policy: ServicePolicy) -> Pam {
        if option.is_some() {
            log_warn!("pam: the -O option has no meaning for this mechanism; ignored");
        }
        if !nix::unistd::geteuid().is_root() {
            log_warn!(
                "pam: not running as root; pam_unix can then verify only this user's own password"
            );
        }
        log_info!("pam: service policy: {}", policy.describe());
        Pam { policy }
    }
}

impl Mechanism for Pam {
    fn name(&self) -> &'static str {
        "pam"
    }

    fn default_concurrency(&self) -> NonZeroUsize {
        DEFAULT_CONCURRENCY.max(super::cpu_cores())
    }

    fn authenticate(&self, credentials: &Credentials) -> Reply {
        let service = match self.service(credentials) {
            Ok(service) => service,
            Err(reply) => return reply,
        };
        verify(&service, credentials)
    }

    /// A cache hit still runs the account phase (`pam_acct_mgmt`), so an account that has
    /// expired or been locked since is refused (by a full verification, which gives PAM's
    /// exact reply). Cached successes otherwise live by the TTL. So: no version, ever.
    fn state_version(&self, _credentials: &Credentials) -> Option<StateVersion> {
        None
    }

    fn current_state(
        &self,
        credentials: &Credentials,
    ) -> (Option<AccountState>, Option<StateVersion>) {
        let account_ok = self.service(credentials).ok().is_some_and(|service| {
            open(&service, credentials)
                .is_ok_and(|mut pam| account(&mut pam, &credentials.login).is_ok())
        });
        (account_ok.then(AccountState::default), None)
    }
}

impl Pam {
    /// The PAM service for the request's service name, under the service policy.
    fn service<'a>(&self, credentials: &'a Credentials) -> Result<Cow<'a, [u8]>, Reply> {
        let Some(service) = self.policy.resolve(&credentials.service) else {
            log_warn!(
                "pam: service \"{}\" refused by the service policy ({}) [user={}]",
                sanitize(&credentials.service),
                self.policy.describe(),
                sanitize(&credentials.login)
            );
            return Err(Reply::no(SERVICE_NOT_ALLOWED));
        };
        if service.as_ref() != credentials.service.as_slice() {
            log_debug!(
                "pam: service \"{}\" mapped to \"{}\"",
                sanitize(&credentials.service),
                sanitize(&service)
            );
        }
        Ok(service)
    }
}

/// One PAM transaction for `credentials` against `service`.
fn verify(service: &[u8], credentials: &Credentials) -> Reply {
    let login = credentials.login.as_slice();
    let mut pam = match open(service, credentials) {
        Ok(pam) => pam,
        Err(reply) => return reply,
    };
    if let Err(error) = pam.authenticate(Flags::SILENT) {
        log_debug!("auth_pam: pam_authenticate failed: {error}");
        return Reply::no(AUTH_ERROR);
    }
    if !same_user(&pam, login, "pam_authenticate") {
        return Reply::no(AUTH_ERROR);
    }
    match account(&mut pam, login) {
        Ok(()) => Reply::ok(),
        Err(reply) => reply,
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

/// Which PAM service a request's service name leads to (`--pam-services`,
/// `--pam-service-map`, `--pam-service`).
///
/// Names are compared the way Linux-PAM uses them: anything up to the last `/` is dropped
/// and ASCII letters are lower-cased (PAM itself does both in `pam_start`), so `SMTP` and
/// `x/smtp` are `smtp`. Order: the allow-list is checked against the requested name, then a
/// rename applies, else the fallback service, else the (normalized) name itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePolicy {
    /// Names clients may send; `None`: any.
    allowed: Option<Vec<String>>,
    /// `FROM=TO` renames.
    renames: Vec<(String, String)>,
    /// The service for every name not renamed.
    fallback: Option<String>,
}

impl ServicePolicy {
    /// Builds a policy from the option values (`None`: option not given). Errors name the
    /// option and the problem.
    pub fn from_options(
        allowed: Option<&str>,
        renames: Option<&str>,
        fallback: Option<&str>,
    ) -> Result<ServicePolicy, String> {
        let allowed = allowed
            .map(|list| parse_list(list).map_err(|e| format!("--pam-services: {e}")))
            .transpose()?;
        let renames = renames
            .map(|map| parse_map(map).map_err(|e| format!("--pam-service-map: {e}")))
            .transpose()?
            .unwrap_or_default();
        let fallback = fallback
            .map(|name| parse_name(name).map_err(|e| format!("--pam-service: {e}")))
            .transpose()?;
        Ok(ServicePolicy {
            allowed,
            renames,
            fallback,
        })
    }

    /// True when no option was given: every name goes to PAM as sent.
    pub fn is_open(&self) -> bool {
        self == &ServicePolicy::default()
    }

    /// The PAM service for `requested`, or `None` when the policy refuses it.
    pub fn resolve<'a>(&self, requested: &'a [u8]) -> Option<Cow<'a, [u8]>> {
        if self.is_open() {
            return Some(Cow::Borrowed(requested));
        }
        let name = normalize(requested);
        if let Some(allowed) = &self.allowed
            && !allowed.iter().any(|a| a.as_bytes() == name.as_slice())
        {
            return None;
        }
        if let Some((_, to)) = self
            .renames
            .iter()
            .find(|(from, _)| from.as_bytes() == name.as_slice())
        {
            return Some(Cow::Owned(to.clone().into_bytes()));
        }
        if let Some(fallback) = &self.fallback {
            return Some(Cow::Owned(fallback.clone().into_bytes()));
        }
        Some(Cow::Owned(name))
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        if self.is_open() {
            return "any service name, used as sent (no --pam-services, --pam-service-map \
                    or --pam-service)"
                .into();
        }
        let mut parts = Vec::new();
        match &self.allowed {
            Some(allowed) => parts.push(format!("allowed: {}", allowed.join(","))),
            None => parts.push("allowed: any".into()),
        }
        if !self.renames.is_empty() {
            let renames: Vec<String> = self
                .renames
                .iter()
                .map(|(from, to)| format!("{from}={to}"))
                .collect();
            parts.push(format!("renamed: {}", renames.join(",")));
        }
        if let Some(fallback) = &self.fallback {
            parts.push(format!("all other names: {fallback}"));
        }
        parts.join("; ")
    }
}

/// What Linux-PAM's `pam_start` makes of a service name: the part after the last `/`,
/// ASCII-lower-cased.
fn normalize(name: &[u8]) -> Vec<u8> {
    let base = match name.iter().rposition(|&b| b == b'/') {
        Some(slash) => &name[slash + 1..],
        None => name,
    };
    base.to_ascii_lowercase()
}

/// A service name in an option: letters, digits, `.`, `_`, `-`, `+`, `@`; stored
/// lower-cased, as PAM would use it.
fn parse_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("empty service name".into());
    }
    if name.len() > MAX_SERVICE_NAME {
        return Err(format!("service name longer than {MAX_SERVICE_NAME} bytes"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@')))
    {
        return Err(format!(
            "invalid character {bad:?} in service name {name:?} \
             (allowed: letters, digits, . _ - + @)"
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// `NAME[,NAME...]`.
fn parse_list(list: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for item in list.split(',') {
        let name = parse_name(item)?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// `FROM=TO[,FROM=TO...]`; each `FROM` at most once.
fn parse_map(map: &str) -> Result<Vec<(String, String)>, String> {
    let mut renames: Vec<(String, String)> = Vec::new();
    for item in map.split(',') {
        let Some((from, to)) = item.split_once('=') else {
            return Err(format!("{item:?} is not FROM=TO"));
        };
        let (from, to) = (parse_name(from)?, parse_name(to)?);
        if renames.iter().any(|(f, _)| *f == from) {
            return Err(format!("{from:?} is renamed twice"));
        }
        renames.push((from, to));
    }
    Ok(renames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: Option<&str>, map: Option<&str>, fallback: Option<&str>) -> ServicePolicy {
        ServicePolicy::from_options(allowed, map, fallback).unwrap()
    }

    fn resolve(p: &ServicePolicy, requested: &str) -> Option<String> {
        p.resolve(requested.as_bytes())
            .map(|s| String::from_utf8(s.into_owned()).unwrap())
    }

    #[test]
    fn no_options_pass_every_name_unchanged() {
        let p = policy(None, None, None);
        assert!(p.is_open());
        for name in ["smtp", "SU", "", "../../etc/x", "imap\u{e9}"] {
            assert_eq!(resolve(&p, name).as_deref(), Some(name));
        }
        assert!(p.describe().starts_with("any service name"));
    }

    #[test]
    fn allow_list_refuses_other_names() {
        let p = policy(Some("smtp,IMAP,smtp"), None, None);
        assert_eq!(resolve(&p, "smtp").as_deref(), Some("smtp"));
        assert_eq!(resolve(&p, "imap").as_deref(), Some("imap"));
        // Compared as PAM uses them: lower case, after the last '/'.
        assert_eq!(resolve(&p, "SMTP").as_deref(), Some("smtp"));
        assert_eq!(resolve(&p, "x/y/smtp").as_deref(), Some("smtp"));
        for refused in ["su", "sudo", "", "smtp/", "smtp/../su", "smtpx", "smt"] {
            assert_eq!(resolve(&p, refused), None, "{refused:?}");
        }
        assert_eq!(p.describe(), "allowed: smtp,imap");
    }

    #[test]
    fn renames_and_fallback() {
        let p = policy(None, Some("imap=mail,pop=mail,Sieve=managesieve"), None);
        assert_eq!(resolve(&p, "imap").as_deref(), Some("mail"));
        assert_eq!(resolve(&p, "POP").as_deref(), Some("mail"));
        assert_eq!(resolve(&p, "sieve").as_deref(), Some("managesieve"));
        assert_eq!(resolve(&p, "smtp").as_deref(), Some("smtp"));

        let p = policy(None, Some("imap=dovecot"), Some("smtp"));
        assert_eq!(resolve(&p, "imap").as_deref(), Some("dovecot"));
        assert_eq!(resolve(&p, "su").as_deref(), Some("smtp"));
        assert_eq!(resolve(&p, "").as_deref(), Some("smtp"));
        assert_eq!(
            p.describe(),
            "allowed: any; renamed: imap=dovecot; all other names: smtp"
        );
    }

    #[test]
    fn allow_list_applies_to_the_requested_name_before_renaming() {
        let p = policy(Some("imap,pop"), Some("imap=mail,pop=mail"), None);
        assert_eq!(resolve(&p, "imap").as_deref(), Some("mail"));
        assert_eq!(resolve(&p, "pop").as_deref(), Some("mail"));
        assert_eq!(resolve(&p, "mail"), None);
        assert_eq!(resolve(&p, "su"), None);
    }

    #[test]
    fn bad_option_values_are_errors_naming_the_option() {
        let err = |a: Option<&str>, m: Option<&str>, f: Option<&str>| {
            ServicePolicy::from_options(a, m, f).unwrap_err()
        };
        assert!(err(Some(""), None, None).starts_with("--pam-services: empty"));
        assert!(err(Some("smtp,,imap"), None, None).contains("empty"));
        assert!(err(Some("smtp,"), None, None).contains("empty"));
        assert!(err(Some("a/b"), None, None).contains("'/'"));
        assert!(err(Some("a b"), None, None).contains("' '"));
        assert!(err(Some(&"x".repeat(256)), None, None).contains("longer"));
        assert!(err(None, Some("imap"), None).starts_with("--pam-service-map: \"imap\" is not"));
        assert!(err(None, Some("imap=,x=y"), None).contains("empty"));
        assert!(err(None, Some("=mail"), None).contains("empty"));
        assert!(err(None, Some("imap=a=b"), None).contains("'='"));
        assert!(err(None, Some("imap=a,IMAP=b"), None).contains("twice"));
        assert!(err(None, None, Some("")).starts_with("--pam-service: empty"));
        assert!(err(None, None, Some("a,b")).contains("','"));
        assert!(ServicePolicy::from_options(Some("smtp.d_1-x+y@z"), None, None).is_ok());
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
