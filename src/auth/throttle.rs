//! Brute-force throttling, after Dovecot's auth penalty: once a login (or a client
//! address, when the request carries one) has failed more than a few times, its next
//! requests wait before they are verified, longer with every further failure up to a cap;
//! quiet time makes it forget failures again.
//!
//! - **Before verification.** A penalised request waits first and is verified afterwards,
//!   whether its password is right or wrong (the credential cache included). Delaying only
//!   failure replies would be useless: a client could hang up after a short wait and take
//!   the silence for "wrong". The wait is a timer on the request's own task, so it holds
//!   no verification slot and delays no other login or address.
//! - **Two keys.** A request's penalty is the larger of its login's (the login as the
//!   mechanism sees it, `login@realm` under `-r`; not the service, so an attacker gets no
//!   fresh budget per service) and its client address's (the 5th request field up to the
//!   first `;`, IPv6 addresses by their /64, which one subscriber usually holds whole).
//! - **Growth.** `--throttle-free` failures cost nothing (typos); the next one makes the
//!   following requests wait `--throttle-delay`, doubling with each further failure up to
//!   `--throttle-max`. One failure is forgotten per `--throttle-decay` without failures.
//!   A success forgets the login's and the address's failures.
//! - **Repeats don't escalate.** A failure with the same password as one of the last
//!   [`RECENT`] failures of that key is not counted again: a client retrying a stale
//!   password locks nobody out, and the attacker learns nothing from a repeat.
//! - **Only verdicts count.** `NO` replies that say the daemon or its backend failed
//!   (server busy, internal errors, rimap's `[ALERT]`s, PAM start errors, NSS lookup
//!   errors) count neither way: an outage must not build up penalties.
//! - **Bounded, and no secrets.** Keys are keyed digests ([`crate::digest`]) of the login
//!   and the address; passwords are remembered as 64-bit truncations of keyed digests.
//!   Only failures create entries; the table holds at most [`MAX_ENTRIES`]. When it is full,
//!   fully decayed entries go first, then those with the fewest failures, oldest first, so
//!   a flood of one-off failures cannot push out the penalty of an account under attack.
//!
//! Everything here is synchronous and takes the time as an argument ([`Throttle::penalty`],
//! [`Throttle::record`]) except [`Throttle::wait`], the one async step.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::digest::{Digest, KeyedHasher};
use crate::log::{Level, RateLimitedLog};
use crate::mech::Credentials;
use crate::protocol::{Reply, text};

/// `--throttle-free`: failures without any delay, so a user's typos cost nothing.
pub const DEFAULT_FREE: u32 = 3;
/// `--throttle-delay`: the first delay, in milliseconds.
pub const DEFAULT_DELAY_MS: u64 = 250;
/// `--throttle-max`: the cap, in milliseconds (0: no throttling).
pub const DEFAULT_MAX_MS: u64 = 8_000;
/// `--throttle-decay`: seconds without failures that make a key forget one failure.
pub const DEFAULT_DECAY_SECS: u64 = 60;
/// Logins and addresses remembered at once (~100 bytes each: 6.5 MB at most).
pub const MAX_ENTRIES: usize = 65_536;
/// Recent wrong passwords remembered per key, for "the same password again".
pub const RECENT: usize = 4;

/// How the throttle grows and decays (`--throttle-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures that cost nothing.
    pub free: u32,
    /// The delay after the first failure beyond the free ones; doubles with each further.
    pub delay: Duration,
    /// The longest delay; zero turns throttling off.
    pub max: Duration,
    /// Quiet time after which one failure is forgotten.
    pub decay: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> ThrottleSettings {
        ThrottleSettings {
            free: DEFAULT_FREE,
            delay: Duration::from_millis(DEFAULT_DELAY_MS),
            max: Duration::from_millis(DEFAULT_MAX_MS),
            decay: Duration::from_secs(DEFAULT_DECAY_SECS),
        }
    }
}

impl ThrottleSettings {
    /// Throttling is on unless `--throttle-max 0`.
    pub fn enabled(&self) -> bool {
        !self.max.is_zero() && !self.delay.is_zero()
    }

    /// The wait for a key with `failures` (already decayed) failures on record.
    pub fn penalty(&self, failures: u32) -> Duration {
        if !self.enabled() || failures <= self.free {
            return Duration::ZERO;
        }
        let doublings = failures - self.free - 1;
        if doublings >= 32 {
            return self.max;
        }
        self.delay.saturating_mul(1 << doublings).min(self.max)
    }

    /// The failure count at which the penalty reaches the cap; counts stop growing there,
    /// so the penalty starts shrinking after the first quiet `decay`.
    fn ceiling(&self) -> u32 {
        let mut failures = self.free.saturating_add(1);
        while failures < u32::MAX && self.penalty(failures) < self.max {
            failures += 1;
        }
        failures
    }
}

/// One login or address with recent failures.
#[derive(Debug, Clone)]
struct Entry {
    /// Failures as of `last_failure`.
    failures: u32,
    /// The last counted failure: decay runs from here.
    last_failure: Instant,
    /// Truncated keyed digests of the last wrong (login, password) pairs, newest first.
    recent: [u64; RECENT],
    recent_len: u8,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            last_failure: now,
            recent: [0; RECENT],
            recent_len: 0,
        }
    }

    /// Failures left at `now` after one is forgotten per `decay` since the last one.
    fn failures_at(&self, decay: Duration, now: Instant) -> u32 {
        let quiet = now.saturating_duration_since(self.last_failure).as_millis();
        let forgotten = quiet / decay.as_millis().max(1);
        self.failures
            .saturating_sub(u32::try_from(forgotten).unwrap_or(u32::MAX))
    }

    fn seen(&self, tag: u64) -> bool {
        self.recent[..usize::from(self.recent_len)].contains(&tag)
    }

    fn remember(&mut self, tag: u64) {
        self.recent.copy_within(0..RECENT - 1, 1);
        self.recent[0] = tag;
        self.recent_len = (self.recent_len + 1).min(RECENT as u8);
    }
}

/// The table of keys with failures. Pure: the caller passes the time.
struct Table {
    entries: HashMap<Digest, Entry>,
    capacity: usize,
    /// [`ThrottleSettings::ceiling`], computed once.
    ceiling: u32,
}

impl Table {
    fn failures(&self, key: &Digest, settings: &ThrottleSettings, now: Instant) -> u32 {
        self.entries
            .get(key)
            .map_or(0, |entry| entry.failures_at(settings.decay, now))
    }

    /// Counts a failure of `key` with the password `tag`, unless `tag` is a recent one.
    /// Returns whether it counted and how many entries were evicted to make room.
    fn record_failure(
        &mut self,
        key: Digest,
        tag: u64,
        settings: &ThrottleSettings,
        now: Instant,
    ) -> (bool, u64) {
        let mut evicted = 0;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            evicted = self.make_room(settings, now);
        }
        let entry = self.entries.entry(key).or_insert_with(|| Entry::new(now));
        if entry.seen(tag) {
            return (false, evicted);
        }
        entry.failures = (entry.failures_at(settings.decay, now) + 1).min(self.ceiling);
        entry.last_failure = now;
        entry.remember(tag);
        (true, evicted)
    }

    fn forget(&mut self, key: &Digest) {
        self.entries.remove(key);
    }

    /// Frees at least an eighth of the table: fully decayed entries, then the ones with
    /// the fewest failures left, the longest quiet first. Amortised O(1) per insertion.
    fn make_room(&mut self, settings: &ThrottleSettings, now: Instant) -> u64 {
        let before = self.entries.len();
        let target = self.capacity - (self.capacity / 8).max(1).min(self.capacity);
        self.entries
            .retain(|_, entry| entry.failures_at(settings.decay, now) > 0);
        if self.entries.len() > target {
            let excess = self.entries.len() - target;
            let mut ranked: Vec<(u32, Instant, Digest)> = self
                .entries
                .iter()
                .map(|(key, entry)| {
                    (
                        entry.failures_at(settings.decay, now),
                        entry.last_failure,
                        *key,
                    )
                })
                .collect();
            ranked.select_nth_unstable_by_key(excess - 1, |&(failures, last, _)| (failures, last));
            for (_, _, key) in &ranked[..excess] {
                self.entries.remove(key);
            }
        }
        (before - self.entries.len()) as u64
    }
}

/// The throttle's view of one request: digests only, never the login or the password.
#[derive(Debug, Clone)]
pub struct Attempt(Option<Keys>);

#[derive(Debug, Clone)]
struct Keys {
    login: Digest,
    address: Option<Digest>,
    /// Truncated keyed digest of (login, password).
    password: u64,
}

/// Which key a penalty comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Login,
    Address,
}

/// How long a request waits, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Penalty {
    pub delay: Duration,
    /// Failures on record for the key the delay comes from.
    pub failures: u32,
    pub source: Source,
}

impl Penalty {
    const NONE: Penalty = Penalty {
        delay: Duration::ZERO,
        failures: 0,
        source: Source::Login,
    };
}

/// What a reply says about the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Not a verdict on the credentials: the daemon or the backend failed.
    Neither,
}

/// `NO` replies (prefixes) that report a failure of the daemon or the backend.
const NOT_VERDICTS: &[&str] = &[
    text::BUSY,
    text::INTERNAL_FAILURE,
    crate::mech::pam::START_ERROR,
    "[ALERT]",
    crate::mech::shadow::LOOKUP_FAILURE,
    crate::mech::shadow::SHADOW_LOOKUP_FAILURE,
];

impl Outcome {
    pub fn of(reply: &Reply) -> Outcome {
        match reply {
            Reply::Ok(_) => Outcome::Success,
            Reply::No(reason) if NOT_VERDICTS.iter().any(|p| reason.starts_with(p)) => {
                Outcome::Neither
            }
            Reply::No(_) => Outcome::Failure,
        }
    }
}

/// Counters, for the SIGUSR1 statistics line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleStats {
    pub enabled: bool,
    pub entries: usize,
    pub capacity: usize,
    /// Requests that waited.
    pub delayed: u64,
    /// Failures counted (repeats of a recent password are not).
    pub failures: u64,
    pub evicted: u64,
}

impl std::fmt::Display for ThrottleStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.enabled {
            return f.write_str("throttle: off");
        }
        write!(
            f,
            "throttle: {} of {} entries, {} requests delayed, {} failures counted, {} evicted",
            self.entries, self.capacity, self.delayed, self.failures, self.evicted
        )
    }
}

pub struct Throttle {
    settings: ThrottleSettings,
    hasher: KeyedHasher,
    table: Mutex<Table>,
    delayed: AtomicU64,
    failures: AtomicU64,
    evicted: AtomicU64,
    log: RateLimitedLog,
}

impl Throttle {
    /// A throttle with a fresh random key.
    pub fn new(settings: ThrottleSettings) -> Result<Throttle, getrandom::Error> {
        Ok(Throttle::with_hasher(
            KeyedHasher::random()?,
            settings,
            MAX_ENTRIES,
        ))
    }

    pub fn with_hasher(
        hasher: KeyedHasher,
        settings: ThrottleSettings,
        capacity: usize,
    ) -> Throttle {
        Throttle {
            settings,
            hasher,
            table: Mutex::new(Table {
                entries: HashMap::new(),
                capacity: capacity.max(1),
                ceiling: settings.ceiling(),
            }),
            delayed: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            log: RateLimitedLog::at(Level::Info),
        }
    }

    pub fn settings(&self) -> &ThrottleSettings {
        &self.settings
    }

    /// The keys of a request (after `-r`). Cheap: three HMACs, none when throttling is off.
    pub fn attempt(&self, credentials: &Credentials) -> Attempt {
        if !self.settings.enabled() {
            return Attempt(None);
        }
        let login = self.hasher.digest("throttle login", &[&credentials.login]);
        let address = credentials
            .client_addr
            .as_deref()
            .and_then(address_key)
            .map(|(kind, bytes)| self.hasher.digest("throttle address", &[kind, &bytes]));
        let password = self.hasher.digest(
            "throttle password",
            &[&credentials.login, credentials.password.as_bytes()],
        );
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&password.as_bytes()[..8]);
        Attempt(Some(Keys {
            login,
            address,
            password: u64::from_be_bytes(tag),
        }))
    }

    /// How long a request must wait at `now`: the larger of its login's and its address's.
    pub fn penalty(&self, attempt: &Attempt, now: Instant) -> Penalty {
        let Some(keys) = &attempt.0 else {
            return Penalty::NONE;
        };
        let table = self.lock();
        let by_login = table.failures(&keys.login, &self.settings, now);
        let by_address = keys
            .address
            .as_ref()
            .map_or(0, |key| table.failures(key, &self.settings, now));
        drop(table);
        let (failures, source) = if by_address > by_login {
            (by_address, Source::Address)
        } else {
            (by_login, Source::Login)
        };
        Penalty {
            delay: self.settings.penalty(failures),
            failures,
            source,
        }
    }

    /// Waits out the request's penalty, if any (on this task only). `subject` names the
    /// request for the log line (sanitised, no password); at most one line per second.
    pub async fn wait(&self, attempt: &Attempt, subject: impl FnOnce() -> String) {
        let penalty = self.penalty(attempt, Instant::now());
        if penalty.delay.is_zero() {
            return;
        }
        self.delayed.fetch_add(1, Ordering::Relaxed);
        self.log.log(|| {
            let of = match penalty.source {
                Source::Login => "login",
                Source::Address => "client address",
            };
            let plural = if penalty.failures == 1 { "" } else { "s" };
            format!(
                "throttle: delaying {} by {} ms ({of}: {} recent failure{plural})",
                subject(),
                penalty.delay.as_millis(),
                penalty.failures
            )
        });
        tokio::time::sleep(penalty.delay).await;
    }

    /// Learns from a reply: a success forgets the request's keys, a failure counts against
    /// both (unless its password is a recent one of that key), anything else is ignored.
    pub fn record(&self, attempt: &Attempt, reply: &Reply, now: Instant) {
        let Some(keys) = &attempt.0 else {
            return;
        };
        let keys_of = || std::iter::once(keys.login).chain(keys.address);
        match Outcome::of(reply) {
            Outcome::Neither => {}
            Outcome::Success => {
                let mut table = self.lock();
                for key in keys_of() {
                    table.forget(&key);
                }
            }
            Outcome::Failure => {
                let mut table = self.lock();
                let mut counted = false;
                let mut evicted = 0;
                for key in keys_of() {
                    let (new, freed) =
                        table.record_failure(key, keys.password, &self.settings, now);
                    counted |= new;
                    evicted += freed;
                }
                drop(table);
                if counted {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                }
                self.evicted.fetch_add(evicted, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> ThrottleStats {
        let table = self.lock();
        ThrottleStats {
            enabled: self.settings.enabled(),
            entries: table.entries.len(),
            capacity: table.capacity,
            delayed: self.delayed.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// Every update is one step, so a poisoned lock (a panic elsewhere) is taken over.
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The address part of a client address field (`ip;port`), normalised: IPv4 (also
/// IPv4-mapped IPv6) whole, IPv6 by its /64, anything else as sent. `None` when empty.
fn address_key(field: &[u8]) -> Option<(&'static [u8], Vec<u8>)> {
    let host = field.split(|&b| b == b';').next().unwrap_or_default();
    let host = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    let parsed = std::str::from_utf8(host)
        .ok()
        .and_then(|s| s.parse::<IpAddr>().ok());
    Some(match parsed.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => (b"ipv4", v4.octets().to_vec()),
        Some(IpAddr::V6(v6)) => (b"ipv6/64", v6.octets()[..8].to_vec()),
        None => (b"name", host.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Password;

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    fn settings() -> ThrottleSettings {
        ThrottleSettings::default()
    }

    fn throttle(settings: ThrottleSettings, capacity: usize) -> Throttle {
        Throttle::with_hasher(KeyedHasher::with_key([9; 32]), settings, capacity)
    }

    fn creds(login: &str, password: &str, addr: Option<&str>) -> Credentials {
        Credentials {
            login: login.as_bytes().to_vec(),
            password: Password::new(password.as_bytes().to_vec()),
            service: b"smtp".to_vec(),
            realm: Vec::new(),
            client_addr: addr.map(|a| a.as_bytes().to_vec()),
        }
    }

    fn wrong() -> Reply {
        Reply::no("Incorrect password")
    }

    /// Fails `login` once with a password nobody used before, at `now`.
    fn fail(t: &Throttle, login: &str, addr: Option<&str>, n: usize, now: Instant) {
        let attempt = t.attempt(&creds(login, &format!("guess-{n}"), addr));
        t.record(&attempt, &wrong(), now);
    }

    fn delay(t: &Throttle, login: &str, addr: Option<&str>, now: Instant) -> Duration {
        t.penalty(&t.attempt(&creds(login, "any", addr)), now).delay
    }

    #[test]
    fn the_default_schedule() {
        let s = settings();
        let delays: Vec<u128> = (0..=11).map(|n| s.penalty(n).as_millis()).collect();
        assert_eq!(
            delays,
            [0, 0, 0, 0, 250, 500, 1000, 2000, 4000, 8000, 8000, 8000]
        );
        assert_eq!(s.ceiling(), 9);
        assert_eq!(s.penalty(u32::MAX), 8 * SEC);
    }

    #[test]
    fn odd_settings_stay_bounded() {
        // A cap below the first delay: every penalty is the cap.
        let s = ThrottleSettings {
            free: 0,
            delay: SEC,
            max: 300 * MS,
            decay: SEC,
        };
        assert_eq!(s.penalty(1), 300 * MS);
        assert_eq!(s.ceiling(), 1);
        // A huge free budget and cap never overflow.
        let s = ThrottleSettings {
            free: u32::MAX - 1,
            delay: 60 * SEC,
            max: Duration::MAX,
            decay: SEC,
        };
        assert_eq!(s.penalty(u32::MAX), 60 * SEC);
        assert_eq!(s.ceiling(), u32::MAX);
        // A tiny delay under a huge cap: 32 doublings at most, then the cap.
        let s = ThrottleSettings {
            free: 0,
            delay: Duration::from_nanos(1),
            max: Duration::MAX,
            decay: SEC,
        };
        assert_eq!(s.ceiling(), 33);
        assert_eq!(s.penalty(33), Duration::MAX);
        // Off.
        let off = ThrottleSettings {
            max: Duration::ZERO,
            ..settings()
        };
        assert!(!off.enabled());
        assert_eq!(off.penalty(100), Duration::ZERO);
    }

    #[test]
    fn failures_grow_the_delay_up_to_the_cap() {
        let t = throttle(settings(), 100);
        let now = Instant::now();
        let mut seen = Vec::new();
        for n in 0..12 {
            seen.push(delay(&t, "alice", None, now).as_millis());
            fail(&t, "alice", None, n, now);
        }
        assert_eq!(
            seen,
            [0, 0, 0, 0, 250, 500, 1000, 2000, 4000, 8000, 8000, 8000]
        );
        // Counts stop at the cap: one quiet period later the penalty halves.
        assert_eq!(delay(&t, "alice", None, now + 60 * SEC).as_millis(), 4000);
    }

    #[test]
    fn quiet_time_forgets_one_failure_per_decay() {
        let t = throttle(settings(), 100);
        let start = Instant::now();
        for n in 0..6 {
            fail(&t, "bob", None, n, start);
        }
        assert_eq!(delay(&t, "bob", None, start), 1000 * MS);
        assert_eq!(delay(&t, "bob", None, start + 59 * SEC), 1000 * MS);
        assert_eq!(delay(&t, "bob", None, start + 60 * SEC), 500 * MS);
        assert_eq!(delay(&t, "bob", None, start + 120 * SEC), 250 * MS);
        assert_eq!(delay(&t, "bob", None, start + 180 * SEC), Duration::ZERO);
        // A failure after quiet time counts from what is left, and restarts the clock.
        fail(&t, "bob", None, 100, start + 120 * SEC);
        assert_eq!(delay(&t, "bob", None, start + 121 * SEC), 500 * MS);
        assert_eq!(delay(&t, "bob", None, start + 179 * SEC), 500 * MS);
        assert_eq!(delay(&t, "bob", None, start + 180 * SEC), 250 * MS);
        // A clock that seems to go backwards does no harm.
        assert_eq!(delay(&t, "bob", None, start), 500 * MS);
    }

    #[test]
    fn repeating_a_recent_wrong_password_does_not_escalate() {
        let t = throttle(settings(), 100);
        let now = Instant::now();
        let stale = creds("carol", "old-password", None);
        for _ in 0..50 {
            t.record(&t.attempt(&stale), &wrong(), now);
        }
        assert_eq!(
            t.table
                .lock()
                .unwrap()
                .failures(&t.attempt(&stale).0.unwrap().login, &t.settings, now),
            1
        );
        assert_eq!(t.stats().failures, 1);
        // Four passwords in turn are all "recent"; a fifth one counts.
        let t = throttle(settings(), 100);
        for round in 0..10 {
            for n in 0..RECENT {
                fail(&t, "dave", None, n, now + round * MS);
            }
        }
        assert_eq!(t.stats().failures, RECENT as u64);
        assert_eq!(delay(&t, "dave", None, now), 250 * MS);
        fail(&t, "dave", None, 99, now);
        assert_eq!(delay(&t, "dave", None, now), 500 * MS);
        // The oldest of five is no longer recent, so it counts again.
        fail(&t, "dave", None, 0, now);
        assert_eq!(delay(&t, "dave", None, now), 1000 * MS);
        // The same password for another login is another attempt.
        let t = throttle(settings(), 100);
        for login in ["a", "b", "c", "d", "e"] {
            t.record(
                &t.attempt(&creds(login, "same", Some("192.0.2.7;1"))),
                &wrong(),
                now,
            );
        }
        assert_eq!(delay(&t, "z", Some("192.0.2.7;2"), now), 500 * MS);
    }

    #[test]
    fn a_success_forgets_the_login_and_the_address() {
        let t = throttle(settings(), 100);
        let now = Instant::now();
        for n in 0..8 {
            fail(&t, "erin", Some("198.51.100.1;25"), n, now);
        }
        assert_eq!(delay(&t, "erin", None, now), 4 * SEC);
        assert_eq!(delay(&t, "other", Some("198.51.100.1;1"), now), 4 * SEC);
        let good = t.attempt(&creds("erin", "right", Some("198.51.100.1;26")));
        t.record(&good, &Reply::ok(), now);
        assert_eq!(delay(&t, "erin", None, now), Duration::ZERO);
        assert_eq!(
            delay(&t, "other", Some("198.51.100.1;1"), now),
            Duration::ZERO
        );
        assert_eq!(t.stats().entries, 0);
        // And the recent passwords with it: the old ones count again.
        fail(&t, "erin", None, 0, now);
        assert_eq!(t.stats().failures, 9);
    }

    #[test]
    fn logins_and_addresses_are_separate_keys() {
        let t = throttle(settings(), 100);
        let now = Instant::now();
        for n in 0..6 {
            fail(&t, "frank", Some("203.0.113.5;1000"), n, now);
        }
        // The login, from anywhere or nowhere.
        assert_eq!(delay(&t, "frank", None, now), SEC);
        assert_eq!(delay(&t, "frank", Some("192.0.2.1;1"), now), SEC);
        // The address, for any login and any port; IPv4-mapped is the same address.
        assert_eq!(delay(&t, "grace", Some("203.0.113.5;2000"), now), SEC);
        assert_eq!(delay(&t, "grace", Some("::ffff:203.0.113.5;1"), now), SEC);
        assert_eq!(delay(&t, "grace", Some("203.0.113.5"), now), SEC);
        // Other users, other addresses, and no address: untouched.
        assert_eq!(delay(&t, "grace", None, now), Duration::ZERO);
        assert_eq!(
            delay(&t, "grace", Some("203.0.113.6;1"), now),
            Duration::ZERO
        );
        assert_eq!(delay(&t, "grace", Some(";1"), now), Duration::ZERO);
        // Logins are exact: the mechanism decides what they mean.
        assert_eq!(delay(&t, "Frank", None, now), Duration::ZERO);
        // The larger of the two penalties applies.
        for n in 0..2 {
            fail(&t, "heidi", None, n, now);
        }
        let p = t.penalty(&t.attempt(&creds("heidi", "x", Some("203.0.113.5;9"))), now);
        assert_eq!((p.delay, p.source, p.failures), (SEC, Source::Address, 6));
        let p = t.penalty(&t.attempt(&creds("frank", "x", Some("192.0.2.99;9"))), now);
        assert_eq!((p.delay, p.source), (SEC, Source::Login));
    }

    #[test]
    fn ipv6_addresses_share_a_penalty_per_64() {
        let t = throttle(settings(), 100);
        let now = Instant::now();
        for n in 0..4 {
            fail(&t, &format!("u{n}"), Some("2001:db8:1:2::10;1"), n, now);
        }
        assert_eq!(
            delay(&t, "x", Some("2001:db8:1:2:ffff::1;5"), now),
            250 * MS
        );
        assert_eq!(delay(&t, "x", Some("[2001:db8:1:2::99];5"), now), 250 * MS);
        assert_eq!(
            delay(&t, "x", Some("2001:db8:1:3::10;1"), now),
            Duration::ZERO
        );
        // Not an address: used as sent.
        assert_eq!(
            address_key(b"mail.example.org;25"),
            Some((&b"name"[..], b"mail.example.org".to_vec()))
        );
        assert_eq!(address_key(b""), None);
    }

    #[test]
    fn only_verdicts_count() {
        assert_eq!(Outcome::of(&Reply::ok()), Outcome::Success);
        assert_eq!(Outcome::of(&Reply::Ok(Some("x".into()))), Outcome::Success);
        for verdict in [
            "Incorrect password",
            "Invalid username",
            "Account expired",
            crate::mech::pam::AUTH_ERROR,
            crate::mech::pam::ACCT_ERROR,
            crate::mech::rimap::text::REJECTED,
        ] {
            assert_eq!(
                Outcome::of(&Reply::no(verdict)),
                Outcome::Failure,
                "{verdict}"
            );
        }
        for not_verdict in [
            text::BUSY,
            text::INTERNAL_FAILURE,
            crate::mech::pam::START_ERROR,
            crate::mech::rimap::text::CANNOT_CONNECT,
            crate::mech::rimap::text::UNAVAILABLE,
            crate::mech::rimap::text::INTERNAL,
            "Username lookup failure: I/O error",
        ] {
            assert_eq!(
                Outcome::of(&Reply::no(not_verdict)),
                Outcome::Neither,
                "{not_verdict}"
            );
        }
        let t = throttle(settings(), 100);
        let now = Instant::now();
        for n in 0..20 {
            let attempt = t.attempt(&creds("ivan", &format!("p{n}"), None));
            t.record(&attempt, &Reply::no(text::BUSY), now);
        }
        assert_eq!(t.stats().entries, 0);
    }

    #[test]
    fn off_means_no_keys_no_entries_no_delay() {
        let t = throttle(
            ThrottleSettings {
                max: Duration::ZERO,
                ..settings()
            },
            100,
        );
        let now = Instant::now();
        for n in 0..20 {
            fail(&t, "judy", Some("192.0.2.1;1"), n, now);
        }
        assert_eq!(delay(&t, "judy", Some("192.0.2.1;1"), now), Duration::ZERO);
        assert_eq!(t.stats().entries, 0);
        assert_eq!(t.stats().to_string(), "throttle: off");
    }

    #[test]
    fn the_table_is_bounded_and_keeps_the_heaviest_penalties() {
        let t = throttle(settings(), 64);
        let start = Instant::now();
        // The account under attack.
        for n in 0..9 {
            fail(&t, "victim", None, n, start);
        }
        // A flood of one-off failures for other logins, later than the attack.
        for n in 0..1000 {
            fail(
                &t,
                &format!("spray{n}"),
                None,
                n,
                start + SEC + n as u32 * MS,
            );
        }
        let stats = t.stats();
        assert!(stats.entries <= 64, "{stats:?}");
        assert!(stats.evicted >= 1000 - 64, "{stats:?}");
        assert_eq!(delay(&t, "victim", None, start + 2 * SEC), 8 * SEC);
        // Fully decayed entries go before anything else.
        let t = throttle(settings(), 8);
        for n in 0..8 {
            fail(&t, &format!("old{n}"), None, n, start);
        }
        for n in 0..5 {
            fail(&t, "fresh", None, n, start + 3600 * SEC);
        }
        assert_eq!(t.stats().entries, 1);
        assert_eq!(delay(&t, "fresh", None, start + 3600 * SEC), 500 * MS);
    }

    #[test]
    fn nothing_stored_reveals_a_login_or_a_password() {
        let t = throttle(settings(), 100);
        let now = Instant::now();
        let attempt = t.attempt(&creds(
            "secret-login",
            "secret-password",
            Some("192.0.2.1;1"),
        ));
        t.record(&attempt, &wrong(), now);
        let table = t.table.lock().unwrap();
        let mut stored = Vec::new();
        for (key, entry) in &table.entries {
            stored.extend_from_slice(key.as_bytes());
            for tag in &entry.recent {
                stored.extend_from_slice(&tag.to_be_bytes());
            }
        }
        for secret in [&b"secret-login"[..], b"secret-password", b"192.0.2.1"] {
            assert!(!stored.windows(secret.len()).any(|w| w == secret));
        }
        assert!(!format!("{attempt:?}").contains("secret"));
    }

    #[test]
    fn stats_line() {
        let t = throttle(settings(), 100);
        let now = Instant::now();
        for n in 0..5 {
            fail(&t, "kim", None, n, now);
        }
        assert_eq!(
            t.stats().to_string(),
            "throttle: 1 of 100 entries, 0 requests delayed, 5 failures counted, 0 evicted"
        );
    }

    #[tokio::test]
    async fn wait_sleeps_the_penalty_and_counts_it() {
        let quick = ThrottleSettings {
            free: 0,
            delay: 30 * MS,
            max: 30 * MS,
            decay: 60 * SEC,
        };
        let t = throttle(quick, 100);
        fail(&t, "liam", None, 0, Instant::now());
        let before = Instant::now();
        t.wait(&t.attempt(&creds("liam", "x", None)), || {
            "[user=liam]".into()
        })
        .await;
        assert!(before.elapsed() >= 30 * MS);
        t.wait(&t.attempt(&creds("mia", "x", None)), || "[user=mia]".into())
            .await;
        assert_eq!(t.stats().delayed, 1);
    }
}
