//! One verification against the directory: the three methods and the group check, on a
//! [`Session`] of the request's own.
//!
//! Fail closed: only these answer `OK` — `bind`: the search as the service identity finds
//! exactly one entry and a simple bind as *that entry's DN* with the user's password
//! succeeds; `fastbind`: a simple bind as the DN the template gives succeeds; `custom`:
//! exactly one entry is found and one of its password values matches — and then, when a
//! group check is configured, the server confirms membership. An empty password, an empty
//! DN, a password that can't be sent, an error, a timeout or anything unexpected is `NO`.
//!
//! A `NO` is [`Verdict::Outage`] when the directory gave no verdict on the credentials:
//! the user's password was not rejected (not compared, or compared and accepted before a
//! later step failed). Everything else — a wrong password, a user not found or found
//! twice, not a member, a password that can't be sent, a refused bind as the user other
//! than busy or unavailable — is [`Verdict::No`].
#![forbid(unsafe_code)]

use tokio::time::Instant;

use super::config::{GroupCheck, Method, Settings};
use super::schemes::{self, Outcome};
use super::session::{self, Lookup, OpError, Search, Session, rc};
use super::tls::TlsSetup;
use super::tokens::{Position, Values};
use crate::log::sanitize;
use crate::mech::Credentials;
use crate::{log_debug, log_info, log_warn};

/// A verification's result; the reason of a `No` or an `Outage` is already logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Yes,
    /// A verdict on the credentials: a failure for the throttle.
    No,
    /// `NO` too, but no verdict on the credentials: no server reached, no answer by the
    /// deadline, a connection or library failure, a server that refuses the service
    /// identity or an operation other than the user's bind (or says it is busy or
    /// unavailable), a referral that can't be followed. Not a failure for the throttle.
    Outage,
}

/// What the log needs to know about the request.
struct Request<'a> {
    /// The login, sanitized.
    user: String,
    values: Values<'a>,
    credentials: &'a Credentials,
}

/// A method, with the password its bind sends.
enum Plan<'a> {
    FastBind(&'a str),
    Bind(&'a str),
    Custom,
}

/// Verifies `credentials` with `settings` before `deadline`.
pub async fn verify(
    settings: &Settings,
    tls: Option<&TlsSetup>,
    credentials: &Credentials,
    deadline: Instant,
) -> Verdict {
    let realm = if credentials.realm.is_empty() {
        settings.default_realm.as_bytes()
    } else {
        credentials.realm.as_slice()
    };
    let request = Request {
        user: sanitize(&credentials.login),
        values: Values {
            login: &credentials.login,
            service: &credentials.service,
            realm,
            user_dn: None,
        },
        credentials,
    };
    if credentials.password.is_empty() {
        log_info!("ldap: [user={}]: empty password: refused", request.user);
        return Verdict::No;
    }
    // Refused before connecting when a bind can't carry the password.
    let plan = match settings.method {
        Method::Custom => Plan::Custom,
        method => {
            let Some(password) = bind_password(&request) else {
                return Verdict::No;
            };
            if method == Method::FastBind {
                Plan::FastBind(password)
            } else {
                Plan::Bind(password)
            }
        }
    };
    let Some(mut session) = session::open(settings, tls, deadline).await else {
        log_warn!(
            "ldap: [user={}]: no LDAP server could be reached",
            request.user
        );
        return Verdict::Outage;
    };
    let verdict = match plan {
        Plan::FastBind(password) => {
            fastbind(settings, &request, password, &mut session, deadline).await
        }
        Plan::Bind(password) => {
            bind(settings, tls, &request, password, &mut session, deadline).await
        }
        Plan::Custom => custom(settings, tls, &request, &mut session, deadline).await,
    };
    session.close();
    verdict
}

/// The user's password as a bind can carry it (ldap3 takes UTF-8 only).
fn bind_password<'a>(request: &Request<'a>) -> Option<&'a str> {
    match std::str::from_utf8(request.credentials.password.as_bytes()) {
        Ok(password) => Some(password),
        Err(_) => {
            log_info!(
                "ldap: [user={}]: the password is not UTF-8, which this LDAP client can't send \
                 in a bind: refused",
                request.user
            );
            None
        }
    }
}

/// Logs an operation that gave no result: an outage.
fn failed(request: &Request<'_>, session: &Session, what: &str, error: &OpError) -> Verdict {
    log_warn!(
        "ldap: [user={}]: {what} at {}: {error}",
        request.user,
        session.server
    );
    Verdict::Outage
}

/// Result codes of a server that could not do the operation now: busy, unavailable.
fn unavailable(code: u32) -> bool {
    matches!(code, rc::BUSY | rc::UNAVAILABLE)
}

async fn fastbind(
    settings: &Settings,
    request: &Request<'_>,
    password: &str,
    session: &mut Session,
    deadline: Instant,
) -> Verdict {
    let dn = settings.filter.expand(&request.values, Position::Dn);
    let verdict = user_bind(request, session, &dn, password, deadline).await;
    if verdict != Verdict::Yes {
        return verdict;
    }
    // Upstream checks groups with the user's own identity after fastbind.
    group_check(settings, request, session, &dn, deadline).await
}

async fn bind(
    settings: &Settings,
    tls: Option<&TlsSetup>,
    request: &Request<'_>,
    password: &str,
    session: &mut Session,
    deadline: Instant,
) -> Verdict {
    let verdict = service_bind(settings, request, session, deadline).await;
    if verdict != Verdict::Yes {
        return verdict;
    }
    let entry = match find_user(settings, tls, request, session, None, deadline).await {
        Ok(entry) => entry,
        Err(verdict) => return verdict,
    };
    let verdict = user_bind(request, session, &entry.dn, password, deadline).await;
    if verdict != Verdict::Yes {
        return verdict;
    }
    if settings.group.is_none() {
        return Verdict::Yes;
    }
    // The group check runs as the service identity (or anonymously), not as the user.
    let reset = match &settings.service {
        Some(_) => service_bind(settings, request, session, deadline).await,
        None => match session.bind_anonymously(deadline).await {
            Ok(result) if result.rc == rc::SUCCESS => Verdict::Yes,
            Ok(result) => {
                log_warn!(
                    "ldap: [user={}]: anonymous bind for the group check at {}: {}",
                    request.user,
                    session.server,
                    session::result_text(&result)
                );
                Verdict::Outage
            }
            Err(error) => failed(
                request,
                session,
                "anonymous bind for the group check",
                &error,
            ),
        },
    };
    if reset != Verdict::Yes {
        return reset;
    }
    group_check(settings, request, session, &entry.dn, deadline).await
}

async fn custom(
    settings: &Settings,
    tls: Option<&TlsSetup>,
    request: &Request<'_>,
    session: &mut Session,
    deadline: Instant,
) -> Verdict {
    let verdict = service_bind(settings, request, session, deadline).await;
    if verdict != Verdict::Yes {
        return verdict;
    }
    let attribute = settings.password_attr.as_str();
    let entry = match find_user(settings, tls, request, session, Some(attribute), deadline).await {
        Ok(entry) => entry,
        Err(verdict) => return verdict,
    };
    if entry.values.is_empty() {
        log_info!(
            "ldap: [user={}]: {} has no readable {attribute} (does the {} identity have read \
             access to it?)",
            request.user,
            sanitize(entry.dn.as_bytes()),
            if settings.service.is_some() {
                "service"
            } else {
                "anonymous"
            }
        );
        return Verdict::No;
    }
    // Every value is checked (upstream checks one); the first match decides. A value can
    // take long (crypt, Argon2) and can't be interrupted: the deadline is checked between
    // values.
    let mut matched = false;
    for (i, value) in entry.values.iter().enumerate() {
        if Instant::now() >= deadline {
            log_warn!(
                "ldap: [user={}]: no verdict within ldap_timeout ({} s): stopped after {i} of \
                 the {} value(s) of {attribute} of {}",
                request.user,
                settings.timeout.as_secs(),
                entry.values.len(),
                sanitize(entry.dn.as_bytes())
            );
            // The values compared refused the password: that is a verdict (no free guesses
            // against them); with none compared, there is none.
            return if i == 0 { Verdict::Outage } else { Verdict::No };
        }
        match schemes::check(value, &request.credentials.password) {
            Outcome::Match => {
                matched = true;
                break;
            }
            Outcome::NoMatch => {}
            Outcome::Unsupported(what) => log_warn!(
                "ldap: [user={}]: value {} of {attribute} of {} uses {what}, which is not \
                 supported: it never matches",
                request.user,
                i + 1,
                sanitize(entry.dn.as_bytes())
            ),
            Outcome::Malformed(what) => log_warn!(
                "ldap: [user={}]: value {} of {attribute} of {} is malformed ({what}): it \
                 never matches",
                request.user,
                i + 1,
                sanitize(entry.dn.as_bytes())
            ),
        }
    }
    if !matched {
        log_debug!(
            "ldap: [user={}]: the password matches none of the {} value(s) of {attribute}",
            request.user,
            entry.values.len()
        );
        return Verdict::No;
    }
    group_check(settings, request, session, &entry.dn, deadline).await
}

/// Binds as the service identity, if there is one (else the session stays anonymous).
async fn service_bind(
    settings: &Settings,
    request: &Request<'_>,
    session: &mut Session,
    deadline: Instant,
) -> Verdict {
    let Some(service) = &settings.service else {
        return Verdict::Yes;
    };
    let Ok(password) = std::str::from_utf8(service.password.as_bytes()) else {
        // The file is UTF-8, so the password is too.
        return Verdict::Outage;
    };
    match session.bind(&service.dn, password, deadline).await {
        Ok(result) if result.rc == rc::SUCCESS => Verdict::Yes,
        Ok(result) => {
            log_warn!(
                "ldap: [user={}]: bind as ldap_bind_dn {} at {} failed: {}",
                request.user,
                sanitize(service.dn.as_bytes()),
                session.server,
                session::result_text(&result)
            );
            // The service identity's credentials, not the user's.
            Verdict::Outage
        }
        Err(error) => failed(request, session, "bind as ldap_bind_dn", &error),
    }
}

/// A simple bind as the user; `Yes` only for the server's success.
async fn user_bind(
    request: &Request<'_>,
    session: &mut Session,
    dn: &str,
    password: &str,
    deadline: Instant,
) -> Verdict {
    // A bind with an empty name is anonymous whatever the password: never a user's.
    if dn.is_empty() {
        log_info!(
            "ldap: [user={}]: the user's DN is empty: refused",
            request.user
        );
        return Verdict::No;
    }
    match session.bind(dn, password, deadline).await {
        Ok(result) if result.rc == rc::SUCCESS => {
            log_debug!(
                "ldap: [user={}]: bound as {} at {}{}",
                request.user,
                sanitize(dn.as_bytes()),
                session.server,
                if session.tls { " over TLS" } else { "" }
            );
            Verdict::Yes
        }
        Ok(result) if result.rc == rc::INVALID_CREDENTIALS => {
            log_debug!(
                "ldap: [user={}]: {} refused the password of {}",
                request.user,
                session.server,
                sanitize(dn.as_bytes())
            );
            Verdict::No
        }
        Ok(result) => {
            // Busy or unavailable is no verdict on the password.
            let outage = unavailable(result.rc);
            let line = format!(
                "ldap: [user={}]: bind as {} at {}: {}",
                request.user,
                sanitize(dn.as_bytes()),
                session.server,
                session::result_text(&result)
            );
            if outage {
                log_warn!("{line}");
                Verdict::Outage
            } else {
                log_info!("{line}");
                Verdict::No
            }
        }
        Err(error) => failed(request, session, "bind as the user", &error),
    }
}

/// How many referrals a user search follows, one after the other.
pub const MAX_REFERRAL_HOPS: usize = 3;

/// Searches the user's entry: exactly one must match (else the verdict, already logged).
/// With `ldap_referrals: yes`, a search that ends in referrals goes on at the server they
/// name (with the same identity and TLS settings), which then replaces `session`: the user
/// binds where the entry lives.
async fn find_user(
    settings: &Settings,
    tls: Option<&TlsSetup>,
    request: &Request<'_>,
    session: &mut Session,
    attribute: Option<&str>,
    deadline: Instant,
) -> Result<session::Entry, Verdict> {
    let mut base = settings.search_base.expand(&request.values, Position::Dn);
    let filter = settings.filter.expand(&request.values, Position::Filter);
    let mut hops = 0;
    loop {
        let search = Search {
            base: &base,
            scope: settings.scope,
            filter: &filter,
            attribute,
            deref: settings.deref,
            size_limit: settings.size_limit,
            time_limit: settings.time_limit,
        };
        let shown = format!(
            "base {:?} filter {:?}",
            sanitize(base.as_bytes()),
            sanitize(filter.as_bytes())
        );
        let urls = match session.lookup(&search, deadline).await {
            Ok(Lookup::One(entry)) => return Ok(entry),
            Ok(Lookup::None) => {
                log_info!("ldap: [user={}]: user not found ({shown})", request.user);
                return Err(Verdict::No);
            }
            Ok(Lookup::Referred(urls)) if !settings.referrals => {
                log_info!(
                    "ldap: [user={}]: user not found ({shown}); the server refers to {} \
                     (ldap_referrals is off)",
                    request.user,
                    sanitize(urls.join(" ").as_bytes())
                );
                return Err(Verdict::No);
            }
            Ok(Lookup::Referred(urls)) => urls,
            Ok(Lookup::Many) => {
                log_warn!(
                    "ldap: [user={}]: more than one entry matches ({shown}): refused",
                    request.user
                );
                return Err(Verdict::No);
            }
            Ok(Lookup::Refused(result)) => {
                log_warn!(
                    "ldap: [user={}]: search at {} ({shown}): {}",
                    request.user,
                    session.server,
                    session::result_text(&result)
                );
                // The server could not search: no verdict on the user.
                return Err(Verdict::Outage);
            }
            Err(error) => {
                return Err(failed(
                    request,
                    session,
                    &format!("search ({shown})"),
                    &error,
                ));
            }
        };
        hops += 1;
        if hops > MAX_REFERRAL_HOPS {
            log_warn!(
                "ldap: [user={}]: more than {MAX_REFERRAL_HOPS} referrals in a row: refused",
                request.user
            );
            return Err(Verdict::Outage);
        }
        let (next, next_base) = follow(settings, tls, request, session, &urls, deadline)
            .await
            .ok_or(Verdict::Outage)?;
        std::mem::replace(session, next).close();
        let verdict = service_bind(settings, request, session, deadline).await;
        if verdict != Verdict::Yes {
            return Err(verdict);
        }
        if let Some(next_base) = next_base {
            base = next_base;
        }
    }
}

/// Connects to the first referral URL (from `session`'s server) that answers.
async fn follow(
    settings: &Settings,
    tls: Option<&TlsSetup>,
    request: &Request<'_>,
    session: &Session,
    urls: &[String],
    deadline: Instant,
) -> Option<(Session, Option<String>)> {
    for url in urls {
        match session::open_referral(settings, tls, session, url, deadline).await {
            Ok(found) => {
                log_debug!(
                    "ldap: [user={}]: following the referral to {}",
                    request.user,
                    sanitize(url.as_bytes())
                );
                return Some(found);
            }
            Err(why) => log_warn!(
                "ldap: [user={}]: cannot follow the referral to {}: {why}",
                request.user,
                sanitize(url.as_bytes())
            ),
        }
    }
    None
}

/// The group check, if one is configured, for the user `dn`.
async fn group_check(
    settings: &Settings,
    request: &Request<'_>,
    session: &mut Session,
    dn: &str,
    deadline: Instant,
) -> Verdict {
    let Some(group) = &settings.group else {
        return Verdict::Yes;
    };
    let values = Values {
        user_dn: Some(dn),
        ..request.values
    };
    let (answer, what) = match group {
        GroupCheck::Attr { dn: group_dn, attr } => {
            let group_dn = group_dn.expand(&values, Position::Dn);
            let what = format!("{attr} of {group_dn}");
            (session.compare(&group_dn, attr, dn, deadline).await, what)
        }
        GroupCheck::Filter {
            base,
            filter,
            scope,
        } => {
            let base = base.expand(&values, Position::Dn);
            let filter = filter.expand(&values, Position::Filter);
            let search = Search {
                base: &base,
                scope: *scope,
                filter: &filter,
                attribute: None,
                deref: settings.deref,
                size_limit: 1,
                time_limit: settings.time_limit,
            };
            let what = format!("group search base {base:?} filter {filter:?}");
            (session.any(&search, deadline).await, what)
        }
    };
    let what = sanitize(what.as_bytes());
    match answer {
        Ok(Ok(true)) => Verdict::Yes,
        Ok(Ok(false)) => {
            log_info!(
                "ldap: [user={}]: not a member ({what}): refused",
                request.user
            );
            Verdict::No
        }
        Ok(Err(result)) => {
            log_warn!(
                "ldap: [user={}]: group check ({what}) at {}: {}",
                request.user,
                session.server,
                session::result_text(&result)
            );
            // The password was good; the server could not say whether the user is a member.
            Verdict::Outage
        }
        Err(error) => failed(request, session, &format!("group check ({what})"), &error),
    }
}
