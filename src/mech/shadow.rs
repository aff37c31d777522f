//! `-a shadow`: the local password database, through NSS.
//!
//! The user must exist in passwd (`getpwnam_r`) and shadow (`getspnam_r`). The system's
//! libxcrypt hashes the password and the whole result is compared in constant time.
//! Unknown users and locked (`!`, `*` prefixes), empty and `*NP*` hashes fail, after
//! hashing the password against a dummy of the accounts' prevailing scheme and cost
//! ([`dummy`]), so the reply time does not reveal which logins exist. Expiry
//! is checked only after a correct password, following pam_unix: the account is expired
//! from day `sp_expire` on (`0` included, since pam_unix treats it so; upstream waits one
//! more day), and the password is expired when `sp_lstchg` is 0 ("must change") or older
//! than `sp_max` days.
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::dummy::{self, DummyHash};
use super::nss_files::Files;
use super::{AccountState, Credentials, Mechanism, StateVersion, passwd};
use crate::protocol::Reply;
use crate::secret::Password;
use crate::sys::nss::{ShadowEntry, getspnam};
use crate::{hash, log_debug, log_warn};

pub use super::passwd::{INCORRECT_PASSWORD, INVALID_USERNAME, LOOKUP_FAILURE};
pub const INVALID_SHADOW_USERNAME: &str = "Invalid shadow username";
/// Prefix of the reply for a failed shadow lookup (an NSS error, not a verdict on the user).
pub const SHADOW_LOOKUP_FAILURE: &str = "Username shadow lookup failure";
pub const ACCOUNT_EXPIRED: &str = "Account expired";
pub const PASSWORD_EXPIRED: &str = "Password expired";
const NIS_NO_PERMISSION: &str =
    "Insufficient permission to access NIS authentication database (saslauthd)";

pub struct Shadow {
    files: Files,
    dummy: DummyHash,
}

impl Shadow {
    pub fn new(option: Option<&str>) -> Shadow {
        if option.is_some() {
            log_warn!("shadow: the -O option has no meaning for this mechanism; ignored");
        }
        if !nix::unistd::geteuid().is_root() {
            log_warn!("shadow: not running as root; shadow lookups will likely fail");
        }
        let dummy = DummyHash::under(Path::new("/"));
        dummy.announce("shadow", "unknown users and locked accounts");
        Shadow {
            files: Files::under(Path::new("/"), &["passwd", "shadow"]),
            dummy,
        }
    }

    /// The entry of `login` and the verdict on `password`. Every path that does not hash
    /// the password against the account's hash hashes it against the dummy instead.
    fn verify(
        &self,
        login: &[u8],
        password: &Password,
        today: i64,
    ) -> (Reply, Option<ShadowEntry>) {
        match lookup(login) {
            Ok(entry) => {
                if !dummy::is_hash(entry.hash.as_bytes()) {
                    log_debug!(
                        "shadow: account has no usable password hash (locked or empty) [user={}]",
                        crate::log::sanitize(login)
                    );
                    self.dummy.spend(password);
                }
                (check(&entry, password, today), Some(entry))
            }
            Err(reply) => {
                self.dummy.spend(password);
                (reply, None)
            }
        }
    }
}

impl Mechanism for Shadow {
    fn name(&self) -> &'static str {
        "shadow"
    }

    /// NSS lookups that failed (not "no such user").
    fn is_outage(&self, reason: &str) -> bool {
        reason.starts_with(LOOKUP_FAILURE) || reason.starts_with(SHADOW_LOOKUP_FAILURE)
    }

    /// Files, NSS and crypt.
    fn verifies_locally(&self) -> bool {
        true
    }

    fn authenticate(&self, credentials: &Credentials) -> Reply {
        self.verify(&credentials.login, &credentials.password, today())
            .0
    }

    fn authenticate_with_state(
        &self,
        credentials: &Credentials,
    ) -> (Reply, AccountState, Option<StateVersion>) {
        let today = today();
        let version = self.files.version(today);
        match self.verify(&credentials.login, &credentials.password, today) {
            (reply, Some(entry)) => {
                let version =
                    version.filter(|_| reply.is_ok() && self.files.holds(&credentials.login));
                (reply, state(&entry, today), version)
            }
            (reply, None) => (reply, AccountState::default(), None),
        }
    }

    /// Three `stat` calls: unchanged files mean unchanged accounts.
    fn state_version(&self, _credentials: &Credentials) -> Option<StateVersion> {
        self.files.version(today())
    }

    /// Two NSS lookups, no hashing: the entry's hash (so a password change or a lock),
    /// ageing fields and today's expiry verdict must all be as they were.
    fn current_state(
        &self,
        credentials: &Credentials,
    ) -> (Option<AccountState>, Option<StateVersion>) {
        let today = today();
        let version = self.files.version(today);
        match lookup(&credentials.login) {
            Ok(entry) => {
                let version = version.filter(|_| self.files.holds(&credentials.login));
                (Some(state(&entry, today)), version)
            }
            Err(_) => (None, None),
        }
    }
}

/// The passwd and shadow lookups; `Err` is the reply for a user that can't be verified
/// (the passwd lookup refuses a login that is not UTF-8).
fn lookup(login: &[u8]) -> Result<ShadowEntry, Reply> {
    passwd::lookup(login)?;
    match getspnam(login) {
        Ok(Some(entry)) => Ok(entry),
        Ok(None) => Err(Reply::no(INVALID_SHADOW_USERNAME)),
        Err(errno) => Err(Reply::no(format!(
            "{SHADOW_LOOKUP_FAILURE}: {}",
            errno.desc()
        ))),
    }
}

/// The state [`state`] records for `login` today, if NSS has its passwd and shadow
/// entries: what `-a pam -c` compares on a hit too (pam_unix's account phase never looks
/// at the hash).
pub fn account_state(login: &[u8]) -> Option<AccountState> {
    lookup(login).ok().map(|entry| state(&entry, today()))
}

/// What the credential cache compares on a hit: everything `check` depends on besides the
/// password. Any change (new hash, `!` lock, new ageing fields, an expiry that has come
/// due) makes the cached success stale.
fn state(entry: &ShadowEntry, today: i64) -> AccountState {
    let mut bytes = entry.hash.as_bytes().to_vec();
    bytes.push(0);
    for field in [entry.last_change, entry.max_age, entry.expire] {
        bytes.extend_from_slice(&field.to_be_bytes());
    }
    bytes.extend_from_slice(expiry(entry, today).unwrap_or("").as_bytes());
    AccountState::new(bytes)
}

/// Days since 1970-01-01 (UTC), the unit of the shadow file.
fn today() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs / 86_400) as i64
}

/// The verdict for a found entry: hash, then expiry. Pure, for tests.
fn check(entry: &ShadowEntry, password: &Password, today: i64) -> Reply {
    let stored = entry.hash.as_bytes();
    if stored == b"*NP*" {
        return Reply::no(NIS_NO_PERMISSION);
    }
    if !dummy::is_hash(stored) {
        return Reply::no(INCORRECT_PASSWORD);
    }
    if !hash::verify(password, stored) {
        return Reply::no(INCORRECT_PASSWORD);
    }
    if let Some(reason) = expiry(entry, today) {
        return Reply::no(reason);
    }
    Reply::ok()
}

/// pam_unix's `check_shadow_expiry`, minus the warnings.
fn expiry(entry: &ShadowEntry, today: i64) -> Option<&'static str> {
    if entry.expire != -1 && today >= entry.expire {
        return Some(ACCOUNT_EXPIRED);
    }
    if entry.last_change == 0 {
        return Some(PASSWORD_EXPIRED);
    }
    if entry.last_change == -1 || today < entry.last_change || entry.max_age == -1 {
        return None;
    }
    let age = today - entry.last_change;
    (age > entry.max_age).then_some(PASSWORD_EXPIRED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Password;

    #[test]
    fn lookup_errors_are_outages_wrong_passwords_are_not() {
        let shadow = Shadow::new(None);
        assert!(shadow.is_outage(&format!("{LOOKUP_FAILURE}: I/O error")));
        assert!(shadow.is_outage(&format!("{SHADOW_LOOKUP_FAILURE}: I/O error")));
        for verdict in ["Incorrect password", "Invalid username", "Account expired"] {
            assert!(!shadow.is_outage(verdict), "{verdict}");
        }
    }

    // crypt("Sasl-Lab-pw1", "$6$3wRZf6ivvq.xq9Ko$") from libxcrypt.
    const HASH: &str = "$6$3wRZf6ivvq.xq9Ko$VbpQMAHpk6DeQdugX/TzITp6iLE3wjIf/CHVH0GSKdRs/nNXdFFZPV06uBryO0NvjkkjntsPBq06E0cYYH5yP1";
    const TODAY: i64 = 20_000;

    fn entry(hash: &str) -> ShadowEntry {
        ShadowEntry {
            hash: Password::new(hash.as_bytes().to_vec()),
            last_change: 19_000,
            max_age: -1,
            expire: -1,
        }
    }

    fn verdict(entry: &ShadowEntry, password: &str) -> String {
        check(entry, &Password::new(password.as_bytes().to_vec()), TODAY).text()
    }

    #[test]
    fn right_and_wrong_passwords() {
        assert_eq!(verdict(&entry(HASH), "Sasl-Lab-pw1"), "OK");
        assert_eq!(
            verdict(&entry(HASH), "sasl-lab-pw1"),
            "NO Incorrect password"
        );
    }

    #[test]
    fn locked_and_empty_entries_fail_without_hashing() {
        for stored in [
            format!("!{HASH}"),
            format!("*{HASH}"),
            "!".into(),
            "".into(),
        ] {
            assert_eq!(
                verdict(&entry(&stored), "Sasl-Lab-pw1"),
                "NO Incorrect password"
            );
        }
        assert_eq!(
            verdict(&entry("*NP*"), "x"),
            "NO Insufficient permission to access NIS authentication database (saslauthd)"
        );
    }

    #[test]
    fn account_expiry_follows_pam_unix() {
        let mut e = entry(HASH);
        for (expire, expected) in [
            (-1, "OK"),
            (TODAY + 1, "OK"),
            (TODAY, "NO Account expired"),
            (1, "NO Account expired"),
            (0, "NO Account expired"),
        ] {
            e.expire = expire;
            assert_eq!(verdict(&e, "Sasl-Lab-pw1"), expected, "expire {expire}");
        }
        // Expiry is only revealed to someone who knows the password.
        e.expire = 1;
        assert_eq!(verdict(&e, "wrong"), "NO Incorrect password");
    }

    #[test]
    fn state_changes_with_the_hash_a_lock_the_fields_and_expiry() {
        let base = entry(HASH);
        let of = |e: &ShadowEntry, today: i64| state(e, today).as_bytes().to_vec();
        assert_eq!(of(&base, TODAY), of(&entry(HASH), TODAY));
        assert_eq!(
            of(&base, TODAY),
            of(&base, TODAY + 1),
            "no expiry: days don't matter"
        );
        assert_ne!(of(&base, TODAY), of(&entry(&format!("!{HASH}")), TODAY));
        assert_ne!(of(&base, TODAY), of(&entry("$6$other$hash"), TODAY));
        let mut expiring = entry(HASH);
        expiring.expire = TODAY + 1;
        assert_ne!(of(&base, TODAY), of(&expiring, TODAY));
        assert_ne!(
            of(&expiring, TODAY),
            of(&expiring, TODAY + 1),
            "expiry came due"
        );
    }

    #[test]
    fn password_age_follows_pam_unix() {
        let mut e = entry(HASH);
        for (last_change, max_age, expected) in [
            (TODAY - 10, 10, "OK"),
            (TODAY - 11, 10, "NO Password expired"),
            (0, -1, "NO Password expired"),
            (1, 10, "NO Password expired"),
            (-1, 10, "OK"),
            (TODAY + 5, 1, "OK"),
            (1, -1, "OK"),
        ] {
            e.last_change = last_change;
            e.max_age = max_age;
            assert_eq!(
                verdict(&e, "Sasl-Lab-pw1"),
                expected,
                "lstchg {last_change} max {max_age}"
            );
        }
    }
}
