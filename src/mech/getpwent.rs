//! `-a getpwent`: the hash NSS returns in the passwd entry (`pw_passwd`), as upstream.
//!
//! Despite the name, one `getpwnam` (reentrant here, with a growing buffer: long entries
//! work), then libxcrypt hashes the password with the entry's hash as setting and the
//! result is compared in constant time ([`crate::hash`], shared with `-a shadow`). Shadow
//! is never read and there are no expiry, lock or ageing checks: this is for NSS sources
//! that return real hashes (NIS, LDAP through NSS, a passwd file with hashes). On a
//! shadowed system `pw_passwd` is `x`, which, like `*`, `!…` and an empty field, matches
//! no password. DES hashes look at the first 8 characters only (libxcrypt's behaviour).
//!
//! Replies, as upstream: `OK`, `NO Invalid username`, `NO Username lookup failure:
//! <strerror>`, `NO Incorrect password`. Realm, service and client address are ignored
//! (under `-r` the login already carries the realm).
//!
//! Equal work, beyond upstream: an unknown user, or an entry without a usable hash, costs
//! one hash of the password against a dummy of the prevailing scheme and cost of the
//! hashes in `/etc/passwd` ([`dummy`]; the system's default when it holds none, as on a
//! shadowed system), so the reply time does not tell which logins exist.
//!
//! With `-c`, a cached success is revalidated like shadow's: while /etc/passwd and
//! /etc/nsswitch.conf are unchanged (and `passwd: files` comes first), a hit stands
//! without a lookup; otherwise the entry's hash must still be the one that verified.
#![forbid(unsafe_code)]

use std::path::Path;

use super::dummy::{self, DummyHash};
use super::nss_files::Files;
use super::passwd::{self, INCORRECT_PASSWORD};
use super::{AccountState, Credentials, Mechanism, StateVersion};
use crate::log::sanitize;
use crate::protocol::Reply;
use crate::sys::nss::PasswdEntry;
use crate::{hash, log_debug, log_warn};

pub struct Getpwent {
    files: Files,
    dummy: DummyHash,
}

/// Expiry plays no part: the version's day is fixed.
const NO_DAY: i64 = 0;

impl Getpwent {
    pub fn new(option: Option<&str>) -> Getpwent {
        if option.is_some() {
            log_warn!("getpwent: the -O option has no meaning for this mechanism; ignored");
        }
        let dummy = DummyHash::of_file(Path::new("/etc/passwd").to_path_buf());
        dummy.announce("getpwent", "unknown users and entries without a hash");
        Getpwent {
            files: Files::under(Path::new("/"), &["passwd"]),
            dummy,
        }
    }

    /// The entry of the login and the verdict on the password. Every path that does not
    /// hash the password against the entry's hash hashes it against the dummy instead.
    fn verify(&self, credentials: &Credentials) -> (Reply, Option<PasswdEntry>) {
        match Getpwent::lookup(&credentials.login) {
            Ok(entry) => {
                if !dummy::is_hash(entry.hash.as_bytes()) {
                    self.dummy.spend(&credentials.password);
                }
                (check(&entry, credentials), Some(entry))
            }
            Err(reply) => {
                self.dummy.spend(&credentials.password);
                (reply, None)
            }
        }
    }

    fn lookup(login: &[u8]) -> Result<PasswdEntry, Reply> {
        passwd::lookup(login).inspect_err(|reply| {
            log_debug!(
                "getpwent: getpwnam({}): {}",
                sanitize(login),
                reply.text().trim_start_matches("NO ")
            );
        })
    }
}

/// The verdict for a found entry. Pure, for tests.
fn check(entry: &PasswdEntry, credentials: &Credentials) -> Reply {
    if hash::verify(&credentials.password, entry.hash.as_bytes()) {
        log_debug!("getpwent: OK: {}", sanitize(&credentials.login));
        Reply::ok()
    } else {
        log_debug!(
            "getpwent: {}: invalid password",
            sanitize(&credentials.login)
        );
        Reply::no(INCORRECT_PASSWORD)
    }
}

/// What a cached success depends on: the stored hash.
fn state(entry: &PasswdEntry) -> AccountState {
    AccountState::new(entry.hash.as_bytes().to_vec())
}

impl Mechanism for Getpwent {
    fn name(&self) -> &'static str {
        "getpwent"
    }

    /// Files, NSS and crypt.
    fn verifies_locally(&self) -> bool {
        true
    }

    /// NSS lookups that failed (not "no such user").
    fn is_outage(&self, reason: &str) -> bool {
        reason.starts_with(passwd::LOOKUP_FAILURE)
    }

    fn authenticate(&self, credentials: &Credentials) -> Reply {
        self.verify(credentials).0
    }

    fn authenticate_with_state(
        &self,
        credentials: &Credentials,
    ) -> (Reply, AccountState, Option<StateVersion>) {
        let version = self.files.version(NO_DAY);
        match self.verify(credentials) {
            (reply, Some(entry)) => {
                let version =
                    version.filter(|_| reply.is_ok() && self.files.holds(&credentials.login));
                (reply, state(&entry), version)
            }
            (reply, None) => (reply, AccountState::default(), None),
        }
    }

    /// Two `stat` calls: unchanged files mean unchanged accounts.
    fn state_version(&self, _credentials: &Credentials) -> Option<StateVersion> {
        self.files.version(NO_DAY)
    }

    /// One NSS lookup, no hashing: the hash must be the one that verified.
    fn current_state(
        &self,
        credentials: &Credentials,
    ) -> (Option<AccountState>, Option<StateVersion>) {
        let version = self.files.version(NO_DAY);
        match Getpwent::lookup(&credentials.login) {
            Ok(entry) => {
                let version = version.filter(|_| self.files.holds(&credentials.login));
                (Some(state(&entry)), version)
            }
            Err(_) => (None, None),
        }
    }

    /// NSS lookups of passwd work for any user.
    fn needs_root(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Password;

    fn entry(hash: &str) -> PasswdEntry {
        PasswdEntry {
            hash: Password::new(hash.as_bytes().to_vec()),
        }
    }

    fn verdict(hash: &str, password: &str) -> String {
        let credentials = Credentials {
            login: b"user".to_vec(),
            password: Password::new(password.as_bytes().to_vec()),
            service: b"imap".to_vec(),
            realm: Vec::new(),
            client_addr: None,
        };
        check(&entry(hash), &credentials).text()
    }

    #[test]
    fn hashes_verify_and_markers_refuse_everything() {
        // crypt("password", "ab"): DES reads 8 characters.
        assert_eq!(verdict("abJnggxhB/yWI", "password"), "OK");
        assert_eq!(verdict("abJnggxhB/yWI", "password-and-more"), "OK");
        assert_eq!(verdict("abJnggxhB/yWI", "passwor"), "NO Incorrect password");
        for marker in ["x", "*", "", "!", "!abJnggxhB/yWI", "*LK*"] {
            assert_eq!(
                verdict(marker, "password"),
                "NO Incorrect password",
                "{marker:?}"
            );
            assert_eq!(
                verdict(marker, marker),
                "NO Incorrect password",
                "{marker:?}"
            );
        }
    }

    #[test]
    fn the_state_is_the_hash() {
        assert_eq!(state(&entry("$6$a$b")).as_bytes(), b"$6$a$b");
        assert_ne!(
            state(&entry("$6$a$b")).as_bytes(),
            state(&entry("!$6$a$b")).as_bytes()
        );
    }
}
