//! The credential cache (`-c`, `-s KB`, `-t SECS`): recent successful verifications, so a
//! repeated login skips the expensive hash.
//!
//! Unlike upstream's cache (unsalted MD5 in a file, old passwords valid for hours after a
//! change) this one is built so an administrator can turn it on without fear:
//! - It lives in this process's memory only, and holds no password and no plain digest of
//!   one: entries are keyed digests ([`crate::digest`], HMAC-SHA-256 under a key drawn at
//!   start), compared in constant time. Identity = (login after `-r`, realm, service).
//! - Only successes are stored. An entry lives `-t` seconds at most; the table holds at
//!   most as many entries as fit in `-s` kilobytes (oldest evicted first).
//! - A hit is not the final word: the mechanism reports the account's current state
//!   cheaply ([`crate::mech::Mechanism::current_state`]; shadow: the stored hash and ageing
//!   fields, pam: the account phase, rimap: nothing, TTL only) and the cache answers `OK`
//!   only if that equals the state recorded with the success. So a password change, a lock
//!   or an expiry takes effect on the very next request.
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::digest::{Digest, KeyedHasher};
use crate::mech::{AccountState, Credentials, StateVersion};

/// Memory budgeted per entry: the digests and times (~160 bytes), the hash table's
/// overhead, and the eviction queue's slot, rounded up.
pub const ENTRY_BYTES: u64 = 256;

/// One cached success. Nothing in it can be turned back into a password.
struct Entry {
    /// Digest of (identity, password).
    secret: Digest,
    /// Digest of (identity, account state) at the time of the success.
    state: Digest,
    /// Digest of the state's version when it was last read, if it had one.
    version: Option<Digest>,
    stored_at: Instant,
    /// Insertion number, to match eviction-queue slots with the entry they were made for.
    serial: u64,
}

#[derive(Default)]
struct Table {
    entries: HashMap<Digest, Entry>,
    /// Identities in insertion order, oldest first; slots whose serial no longer matches
    /// the entry are leftovers of replaced or removed entries.
    order: VecDeque<(u64, Digest)>,
    next_serial: u64,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A live success with this password; the account state must still match.
    Candidate(StateCheck),
    Miss,
}

/// The recorded state a hit must match; opaque outside this module.
#[derive(Debug, PartialEq, Eq)]
pub struct StateCheck {
    identity: Digest,
    state: Digest,
    version: Option<Digest>,
}

/// Counters, for the SIGUSR1 statistics line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub capacity: usize,
    pub hits: u64,
    pub misses: u64,
    /// Candidates refused because the account changed since (or could not be checked).
    pub stale: u64,
    pub expired: u64,
    pub evicted: u64,
}

/// The credential cache settings (`-c`, `-s`, `-t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub enabled: bool,
    pub size_kb: u64,
    pub timeout: Duration,
}

pub struct CredentialCache {
    hasher: KeyedHasher,
    ttl: Duration,
    capacity: usize,
    table: Mutex<Table>,
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
}

impl CredentialCache {
    /// A cache sized from `-s` and `-t`, with a fresh random key.
    pub fn new(config: &CacheConfig) -> Result<CredentialCache, getrandom::Error> {
        Ok(CredentialCache::with_hasher(
            KeyedHasher::random()?,
            capacity_for(config.size_kb),
            config.timeout,
        ))
    }

    pub fn with_hasher(hasher: KeyedHasher, capacity: usize, ttl: Duration) -> CredentialCache {
        CredentialCache {
            hasher,
            ttl,
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether these credentials match a live cached success. Expired entries are removed
    /// here. A wrong password is a miss and leaves the entry alone.
    pub fn lookup(&self, credentials: &Credentials, now: Instant) -> Lookup {
        let identity = self.identity(credentials);
        let secret = self.secret(credentials);
        let mut table = self.lock();
        let found = match table.entries.get(&identity) {
            None => None,
            Some(entry) if now.saturating_duration_since(entry.stored_at) >= self.ttl => {
                table.entries.remove(&identity);
                self.expired.fetch_add(1, Ordering::Relaxed);
                None
            }
            Some(entry) => entry
                .secret
                .matches(&secret)
                .then_some((entry.state, entry.version)),
        };
        drop(table);
        match found {
            Some((state, version)) => Lookup::Candidate(StateCheck {
                identity,
                state,
                version,
            }),
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss
            }
        }
    }

    /// The fast way to settle a candidate: a hit if the state's version is the one
    /// recorded (so the state can't have changed). `false` decides nothing: the caller
    /// reads the state and calls [`CredentialCache::confirm`].
    pub fn confirm_version(&self, check: &StateCheck, current: Option<&StateVersion>) -> bool {
        let hit = match (&check.version, current) {
            (Some(recorded), Some(current)) => {
                recorded.matches(&self.version_digest(&check.identity, current))
            }
            _ => false,
        };
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Settles a candidate: a hit if the account's current state is the recorded one (the
    /// entry then records `version`, read before that state); otherwise (or with no state:
    /// the account can't be vouched for) the entry is removed and the caller verifies in
    /// full.
    pub fn confirm(
        &self,
        check: &StateCheck,
        current: Option<&AccountState>,
        version: Option<&StateVersion>,
    ) -> bool {
        let hit = current.is_some_and(|state| {
            self.state_digest(&check.identity, state)
                .matches(&check.state)
        });
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
            let version = version.map(|v| self.version_digest(&check.identity, v));
            if let Some(entry) = self.lock().entries.get_mut(&check.identity)
                && entry.state == check.state
            {
                entry.version = version;
            }
        } else {
            self.stale.fetch_add(1, Ordering::Relaxed);
            self.misses.fetch_add(1, Ordering::Relaxed);
            let mut table = self.lock();
            if table
                .entries
                .get(&check.identity)
                .is_some_and(|entry| entry.state == check.state)
            {
                table.entries.remove(&check.identity);
            }
        }
        hit
    }

    /// Records a success with the account state read when it was verified, and that
    /// state's version (taken before the read).
    pub fn insert(
        &self,
        credentials: &Credentials,
        state: &AccountState,
        version: Option<&StateVersion>,
        now: Instant,
    ) {
        let identity = self.identity(credentials);
        let entry_secret = self.secret(credentials);
        let entry_state = self.state_digest(&identity, state);
        let entry_version = version.map(|v| self.version_digest(&identity, v));
        let mut table = self.lock();
        let serial = table.next_serial;
        table.next_serial += 1;
        table.entries.insert(
            identity,
            Entry {
                secret: entry_secret,
                state: entry_state,
                version: entry_version,
                stored_at: now,
                serial,
            },
        );
        table.order.push_back((serial, identity));
        while table.entries.len() > self.capacity {
            let Some((serial, oldest)) = table.order.pop_front() else {
                break;
            };
            if table
                .entries
                .get(&oldest)
                .is_some_and(|e| e.serial == serial)
            {
                table.entries.remove(&oldest);
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Leftover slots of replaced or expired entries: keep the queue proportional.
        if table.order.len() > 2 * table.entries.len() + 64 {
            let Table { entries, order, .. } = &mut *table;
            order.retain(|(serial, identity)| {
                entries.get(identity).is_some_and(|e| e.serial == *serial)
            });
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.lock().entries.len(),
            capacity: self.capacity,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    fn identity(&self, c: &Credentials) -> Digest {
        self.hasher
            .digest("cache identity", &[&c.login, &c.realm, &c.service])
    }

    fn secret(&self, c: &Credentials) -> Digest {
        self.hasher.digest(
            "cache secret",
            &[&c.login, &c.realm, &c.service, c.password.as_bytes()],
        )
    }

    fn state_digest(&self, identity: &Digest, state: &AccountState) -> Digest {
        self.hasher
            .digest("cache state", &[identity.as_bytes(), state.as_bytes()])
    }

    fn version_digest(&self, identity: &Digest, version: &StateVersion) -> Digest {
        let bytes: Vec<u8> = version.0.iter().flat_map(|v| v.to_be_bytes()).collect();
        self.hasher
            .digest("cache state version", &[identity.as_bytes(), &bytes])
    }

    /// The table stays consistent under a panic elsewhere (every update is one step), so a
    /// poisoned lock is taken over rather than failing every request after it.
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every byte the cache stores, for the test that no password is among them.
    #[cfg(test)]
    fn stored_bytes(&self) -> Vec<u8> {
        let table = self.lock();
        let mut out = Vec::new();
        for (identity, entry) in &table.entries {
            out.extend_from_slice(identity.as_bytes());
            out.extend_from_slice(entry.secret.as_bytes());
            out.extend_from_slice(entry.state.as_bytes());
        }
        out
    }
}

impl std::fmt::Display for CacheStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "credential cache: {} of {} entries, {} hits, {} misses ({} stale), {} expired, {} evicted",
            self.entries,
            self.capacity,
            self.hits,
            self.misses,
            self.stale,
            self.expired,
            self.evicted
        )
    }
}

/// Entries that fit in `size_kb` kilobytes (at least one).
pub fn capacity_for(size_kb: u64) -> usize {
    let entries = size_kb.saturating_mul(1024) / ENTRY_BYTES;
    usize::try_from(entries.max(1)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Password;

    const TTL: Duration = Duration::from_secs(60);

    fn cache(capacity: usize) -> CredentialCache {
        CredentialCache::with_hasher(KeyedHasher::with_key([3; 32]), capacity, TTL)
    }

    fn creds(login: &str, password: &str, service: &str, realm: &str) -> Credentials {
        Credentials {
            login: login.as_bytes().to_vec(),
            password: Password::new(password.as_bytes().to_vec()),
            service: service.as_bytes().to_vec(),
            realm: realm.as_bytes().to_vec(),
            client_addr: None,
        }
    }

    fn state(bytes: &str) -> AccountState {
        AccountState::new(bytes.as_bytes().to_vec())
    }

    /// A full hit: candidate, and the state still matches.
    fn hit(cache: &CredentialCache, c: &Credentials, current: &str, now: Instant) -> bool {
        match cache.lookup(c, now) {
            Lookup::Candidate(check) => cache.confirm(&check, Some(&state(current)), None),
            Lookup::Miss => false,
        }
    }

    fn version(n: i64) -> StateVersion {
        StateVersion(vec![n, 7])
    }

    #[test]
    fn hit_and_miss() {
        let cache = cache(10);
        let now = Instant::now();
        let alice = creds("alice", "pw1", "smtp", "");
        assert_eq!(cache.lookup(&alice, now), Lookup::Miss);
        cache.insert(&alice, &state("s1"), None, now);
        assert!(hit(&cache, &alice, "s1", now));
        let wrong = creds("alice", "pw2", "smtp", "");
        assert_eq!(cache.lookup(&wrong, now), Lookup::Miss);
        // A wrong password doesn't evict the good entry.
        assert!(hit(&cache, &alice, "s1", now));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (2, 2, 1));
    }

    #[test]
    fn identity_includes_service_and_realm() {
        let cache = cache(10);
        let now = Instant::now();
        cache.insert(&creds("alice", "pw", "smtp", ""), &state("s"), None, now);
        assert!(!hit(&cache, &creds("alice", "pw", "imap", ""), "s", now));
        assert!(!hit(
            &cache,
            &creds("alice", "pw", "smtp", "example.org"),
            "s",
            now
        ));
        assert!(!hit(
            &cache,
            &creds("alice@example.org", "pw", "smtp", ""),
            "s",
            now
        ));
        assert!(hit(&cache, &creds("alice", "pw", "smtp", ""), "s", now));
        // -r: the login the mechanism sees carries the realm; that is the key.
        let concatenated = creds("alice@example.org", "pw", "smtp", "example.org");
        cache.insert(&concatenated, &state("s"), None, now);
        assert!(hit(&cache, &concatenated, "s", now));
        assert!(!hit(
            &cache,
            &creds("alice", "pw", "smtp", "example.org"),
            "s",
            now
        ));
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = cache(10);
        let start = Instant::now();
        let alice = creds("alice", "pw", "smtp", "");
        cache.insert(&alice, &state("s"), None, start);
        assert!(hit(
            &cache,
            &alice,
            "s",
            start + TTL - Duration::from_millis(1)
        ));
        assert!(!hit(&cache, &alice, "s", start + TTL));
        let stats = cache.stats();
        assert_eq!((stats.expired, stats.entries), (1, 0));
    }

    #[test]
    fn a_changed_or_unknown_state_is_stale_and_forgotten() {
        let cache = cache(10);
        let now = Instant::now();
        let alice = creds("alice", "pw", "smtp", "");
        cache.insert(&alice, &state("hash-1"), None, now);
        assert!(!hit(&cache, &alice, "hash-2", now));
        assert_eq!(cache.lookup(&alice, now), Lookup::Miss, "entry removed");
        cache.insert(&alice, &state("hash-1"), None, now);
        let Lookup::Candidate(check) = cache.lookup(&alice, now) else {
            panic!("expected a candidate");
        };
        assert!(!cache.confirm(&check, None, None));
        assert_eq!(cache.lookup(&alice, now), Lookup::Miss);
        assert_eq!(cache.stats().stale, 2);
    }

    #[test]
    fn an_unchanged_version_settles_a_hit_without_the_state() {
        let cache = cache(10);
        let now = Instant::now();
        let alice = creds("alice", "pw", "smtp", "");
        cache.insert(&alice, &state("s1"), Some(&version(1)), now);
        let candidate = || match cache.lookup(&alice, now) {
            Lookup::Candidate(check) => check,
            Lookup::Miss => panic!("expected a candidate"),
        };
        assert!(cache.confirm_version(&candidate(), Some(&version(1))));
        assert!(!cache.confirm_version(&candidate(), Some(&version(2))));
        assert!(!cache.confirm_version(&candidate(), None));
        // The version moved on but the state is the same: a hit that records the new one.
        assert!(cache.confirm(&candidate(), Some(&state("s1")), Some(&version(2))));
        assert!(cache.confirm_version(&candidate(), Some(&version(2))));
        // A changed state is stale whatever the version says.
        assert!(!cache.confirm(&candidate(), Some(&state("s2")), Some(&version(2))));
        assert_eq!(cache.lookup(&alice, now), Lookup::Miss);
        // No version recorded: never settled by version.
        cache.insert(&alice, &state("s1"), None, now);
        assert!(!cache.confirm_version(&candidate(), Some(&StateVersion::default())));
        assert_eq!(cache.stats().hits, 3);
    }

    #[test]
    fn the_size_bound_evicts_the_oldest() {
        let cache = cache(3);
        let now = Instant::now();
        let users: Vec<Credentials> = (0..5)
            .map(|i| creds(&format!("user{i}"), "pw", "smtp", ""))
            .collect();
        for user in &users {
            cache.insert(user, &state("s"), None, now);
        }
        assert!(!hit(&cache, &users[0], "s", now));
        assert!(!hit(&cache, &users[1], "s", now));
        for user in &users[2..] {
            assert!(hit(&cache, user, "s", now));
        }
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.evicted), (3, 2));
        // Re-inserting one user many times neither evicts others nor grows the queue.
        for _ in 0..1000 {
            cache.insert(&users[4], &state("s"), None, now);
        }
        assert_eq!(cache.stats().entries, 3);
        assert!(cache.lock().order.len() <= 2 * 3 + 64 + 1);
        assert!(hit(&cache, &users[2], "s", now));
    }

    #[test]
    fn capacity_follows_the_size_in_kilobytes() {
        assert_eq!(capacity_for(963), 963 * 1024 / 256);
        assert_eq!(capacity_for(0), 1);
        assert_eq!(
            capacity_for(u64::MAX),
            usize::try_from(u64::MAX / 256).unwrap()
        );
    }

    /// The stored form holds neither the password nor a plain (unkeyed) digest of it; the
    /// design makes that so (only keyed digests are stored), and this checks it.
    #[test]
    fn no_password_or_plain_digest_is_stored() {
        use sha2::{Digest as _, Sha256};
        let cache = cache(10);
        let password = "Sasl-Lab-pw1-unique";
        let alice = creds("alice", password, "smtp", "");
        cache.insert(&alice, &state("s"), None, Instant::now());
        let stored = cache.stored_bytes();
        let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(password.as_bytes()));
        assert!(!contains(b"alice"));
        assert!(!contains(&Sha256::digest(password.as_bytes())));
        // Another key gives other digests: the stored form is useless without this key.
        let other = CredentialCache::with_hasher(KeyedHasher::with_key([4; 32]), 10, TTL);
        other.insert(&alice, &state("s"), None, Instant::now());
        assert_ne!(other.stored_bytes(), stored);
    }
}
