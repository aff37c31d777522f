//! `-a sasldb`: the plaintext `userPassword` of a Cyrus SASL user database (`saslpasswd2`),
//! a Berkeley DB 5.3 hash file, `/etc/sasldb2` unless `--sasldb-path` names another.
//!
//! Per request, as libsasl2 does it: the key is `login NUL realm NUL "userPassword"`; an
//! empty request realm means this host's name (`gethostname`, the short kernel hostname,
//! not the FQDN: what `saslpasswd2` uses without `-u`); the realm is case-sensitive and
//! the login is never split at `@`. The file is opened read-only for each lookup and
//! closed again, so changes made by `saslpasswd2` (which rewrites it in place) count from
//! the next request, and the daemon starts without the file.
//!
//! Replies are exactly `OK` or `NO` (two bytes, no reason), as upstream, whatever the
//! cause: wrong password, unknown user or realm, missing, unreadable or corrupt file. Unlike
//! upstream, a file that can't be read is logged (once a minute per kind of error), and
//! its `NO` is an outage for the throttle ([`Verification::outage`]): no penalty. The
//! stored value is compared with the password in constant time and in full (upstream
//! copies it into a 1024-byte buffer: longer values are refused or overflow it); a NUL in
//! the stored value ends the stored password, as in upstream's `strcmp`.
//!
//! With `-c`, a cached success is revalidated against the file: while its stamp is
//! unchanged the hit stands; once `saslpasswd2` has changed it, the stored password must
//! still be the one that verified (a changed or deleted user is verified again and
//! refused). Upstream keeps answering from its cache.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::file_stamp::{now, stamp};
use super::{AccountState, Credentials, Mechanism, StateVersion, Verification};
use crate::hash::constant_time_eq;
use crate::log::sanitize;
use crate::protocol::Reply;
use crate::secret::Password;
use crate::sys::berkeley_db::{self, DbError};
use crate::{log_debug, log_err, log_warn};

/// Debian's compiled-in path (libsasl2's `SASL_DB_PATH`).
pub const DEFAULT_PATH: &str = "/etc/sasldb2";
/// The property holding the plaintext password.
const PASSWORD_PROPERTY: &[u8] = b"userPassword";
/// How often the same database error is logged.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Our `--sasldb-*` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--sasldb-path`: the database file.
    pub path: PathBuf,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            path: PathBuf::from(DEFAULT_PATH),
        }
    }
}

pub struct Sasldb {
    path: PathBuf,
    /// The last database error logged, and when (a missing file would otherwise log a
    /// line per request).
    last_error: Mutex<Option<(String, Instant)>>,
}

/// What one lookup found.
enum Lookup {
    Found(Password),
    NotFound,
    Failed,
}

impl Sasldb {
    pub fn new(option: Option<&str>, options: &Options) -> Sasldb {
        if option.is_some() {
            log_warn!(
                "sasldb: the -O option has no meaning for this mechanism (as upstream); \
                 ignored. The database is {}; --sasldb-path names another.",
                options.path.display()
            );
        }
        match std::fs::metadata(&options.path) {
            Ok(_) => log_debug!("sasldb: users from {}", options.path.display()),
            Err(error) => log_warn!(
                "sasldb: {}: {error}; every request is answered NO until it can be read",
                options.path.display()
            ),
        }
        Sasldb {
            path: options.path.clone(),
            last_error: Mutex::new(None),
        }
    }

    /// The stored password of the request's user, read from the file now.
    fn lookup(&self, credentials: &Credentials) -> Lookup {
        let realm = if credentials.realm.is_empty() {
            match nix::unistd::gethostname() {
                Ok(name) => name.into_encoded_bytes(),
                Err(errno) => {
                    self.log_error(format!("gethostname: {}", errno.desc()));
                    return Lookup::Failed;
                }
            }
        } else {
            credentials.realm.clone()
        };
        let key = key(&credentials.login, &realm);
        match berkeley_db::fetch(&self.path, &key) {
            Ok(Some(value)) => Lookup::Found(value),
            Ok(None) => {
                log_debug!(
                    "sasldb: no userPassword for {} in realm {} in {}",
                    sanitize(&credentials.login),
                    sanitize(&realm),
                    self.path.display()
                );
                Lookup::NotFound
            }
            Err(error) => {
                self.log_db_error(&error);
                Lookup::Failed
            }
        }
    }

    fn log_db_error(&self, error: &DbError) {
        self.log_error(format!(
            "cannot read the database {}: {error}",
            self.path.display()
        ));
    }

    /// Logs `message` unless it was the last one logged, less than a minute ago.
    fn log_error(&self, message: String) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some((text, at)) = last.as_ref()
            && *text == message
            && now.duration_since(*at) < ERROR_LOG_INTERVAL
        {
            return;
        }
        log_err!("sasldb: {message}; answering NO");
        *last = Some((message, now));
    }

    fn version(&self) -> Option<StateVersion> {
        stamp(&self.path, now()?).map(StateVersion)
    }
}

/// `login NUL realm NUL userPassword`, libsasl2's key layout.
fn key(login: &[u8], realm: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(login.len() + realm.len() + PASSWORD_PROPERTY.len() + 2);
    key.extend_from_slice(login);
    key.push(0);
    key.extend_from_slice(realm);
    key.push(0);
    key.extend_from_slice(PASSWORD_PROPERTY);
    key
}

/// Upstream compares with `strcmp`: a NUL in the stored value ends the password.
fn stored_password(value: &Password) -> &[u8] {
    let bytes = value.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// The verdict for what a lookup found: exactly `OK` or `NO`.
fn verdict(found: &Lookup, password: &Password) -> Reply {
    match found {
        Lookup::Found(value) if constant_time_eq(stored_password(value), password.as_bytes()) => {
            Reply::ok()
        }
        _ => Reply::bare_no(),
    }
}

/// What a cached success depends on: the stored password (the cache keeps only a keyed
/// digest of it).
fn state(found: &Lookup) -> Option<AccountState> {
    match found {
        Lookup::Found(value) => Some(AccountState::new(stored_password(value).to_vec())),
        _ => None,
    }
}

impl Mechanism for Sasldb {
    fn name(&self) -> &'static str {
        "sasldb"
    }

    /// A local database file.
    fn verifies_locally(&self) -> bool {
        true
    }

    fn authenticate(&self, credentials: &Credentials) -> Reply {
        verdict(&self.lookup(credentials), &credentials.password)
    }

    /// One lookup: the verdict, the state when `with_state` (its version taken before the
    /// lookup), and whether the `NO` is an outage: a database (or host name) that could
    /// not be read. The reply is upstream's bare `NO` all the same.
    fn verify(&self, credentials: &Credentials, with_state: bool) -> Verification {
        let version = if with_state { self.version() } else { None };
        let found = self.lookup(credentials);
        let reply = verdict(&found, &credentials.password);
        let (state, version) = if with_state {
            let version = version.filter(|_| reply.is_ok());
            (state(&found).unwrap_or_default(), version)
        } else {
            (AccountState::default(), None)
        };
        Verification {
            outage: matches!(found, Lookup::Failed),
            state,
            version,
            ..Verification::refused(reply)
        }
    }

    fn authenticate_with_state(
        &self,
        credentials: &Credentials,
    ) -> (Reply, AccountState, Option<StateVersion>) {
        let verification = self.verify(credentials, true);
        (verification.reply, verification.state, verification.version)
    }

    /// One `stat` call: an unchanged file means unchanged users.
    fn state_version(&self, _credentials: &Credentials) -> Option<StateVersion> {
        self.version()
    }

    /// One lookup: the stored password must still be the one that verified; a deleted
    /// user (or an unreadable file) can't be vouched for.
    fn current_state(
        &self,
        credentials: &Credentials,
    ) -> (Option<AccountState>, Option<StateVersion>) {
        let version = self.version();
        match state(&self.lookup(credentials)) {
            Some(state) => (Some(state), version),
            None => (None, None),
        }
    }

    /// The file is root:sasl 0660 on Debian: `--user` with `--group sasl` reads it.
    fn needs_root(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(text: &str) -> Password {
        Password::new(text.as_bytes().to_vec())
    }

    #[test]
    fn keys_follow_libsasl2() {
        assert_eq!(key(b"alice", b"EXAMPLE"), b"alice\0EXAMPLE\0userPassword");
        assert_eq!(key(b"a@b", b""), b"a@b\0\0userPassword");
    }

    #[test]
    fn only_the_exact_password_is_ok() {
        let found = Lookup::Found(pw("S3cret pä"));
        assert_eq!(verdict(&found, &pw("S3cret pä")).text(), "OK");
        for wrong in ["S3cret p", "S3cret pä ", "s3cret pä", "", "S3cret pä\u{0}"] {
            assert_eq!(verdict(&found, &pw(wrong)).text(), "NO", "{wrong:?}");
        }
        assert_eq!(verdict(&Lookup::NotFound, &pw("x")).text(), "NO");
        assert_eq!(verdict(&Lookup::Failed, &pw("x")).text(), "NO");
        assert_eq!(verdict(&Lookup::NotFound, &pw("x")).encode(), b"\0\x02NO");
    }

    #[test]
    fn a_stored_nul_ends_the_password() {
        let found = Lookup::Found(Password::new(b"abc\0def".to_vec()));
        assert_eq!(verdict(&found, &pw("abc")).text(), "OK");
        assert_eq!(state(&found).unwrap().as_bytes(), b"abc");
        let long = "x".repeat(4000);
        assert_eq!(verdict(&Lookup::Found(pw(&long)), &pw(&long)).text(), "OK");
    }

    #[test]
    fn missing_files_answer_no_and_give_no_version() {
        let sasldb = Sasldb::new(
            None,
            &Options {
                path: PathBuf::from("/nonexistent/sasldb2"),
            },
        );
        let credentials = Credentials {
            login: b"alice".to_vec(),
            password: pw("x"),
            service: b"imap".to_vec(),
            realm: b"EXAMPLE".to_vec(),
            client_addr: None,
        };
        assert_eq!(sasldb.authenticate(&credentials).text(), "NO");
        assert_eq!(sasldb.state_version(&credentials), None);
        assert!(sasldb.current_state(&credentials).0.is_none());
        let (reply, _, version) = sasldb.authenticate_with_state(&credentials);
        assert_eq!((reply.text(), version), ("NO".to_string(), None));
        // An outage for the throttle, with or without the cache.
        for with_state in [false, true] {
            let verification = sasldb.verify(&credentials, with_state);
            assert_eq!(verification.reply.text(), "NO");
            assert!(verification.outage, "with_state {with_state}");
        }
    }
}
