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
//! - **Charged when it starts.** A request counts against its keys from the moment it
//!   arrives, as if it were going to fail, until its verdict is in: parallel requests share
//!   one budget instead of each getting the whole delay's worth of tries. Each key's
//!   verifications are spaced by the penalty they would face one after another — at most
//!   one per penalty window — and the requests in excess wait their turn. A request whose
//!   turn would come after its deadline is not given one: it waits until the deadline and
//!   gets `NO` (nothing was verified). A success clears the key and its waiting requests
//!   plan again at once, so a client with several connections gets all its answers.
//! - **Two keys.** A request's turn is the later of its login's and its client address's
//!   (the 5th request field up to the first `;`, IPv6 addresses by their /64, which one
//!   subscriber usually holds whole). The login key is normalised ([`login_key`]: trimmed,
//!   case-folded, without `@realm`), as backends that normalise logins would see it, so
//!   `CMP6`, ` cmp6` and `cmp6@realm` share the budget of `cmp6`; the mechanism still gets
//!   the login as sent. Not the service: an attacker gets no fresh budget per service.
//! - **Growth.** `--throttle-free` failures cost nothing (typos); the next one makes the
//!   following requests wait `--throttle-delay`, doubling with each further failure up to
//!   `--throttle-max`. One failure is forgotten per `--throttle-decay` without failures.
//!   A success forgets the login's and the address's failures.
//! - **Repeats don't escalate.** A failure with the same password as one of the last
//!   [`RECENT`] failures of that key is not counted again: a client retrying a stale
//!   password locks nobody out, and the attacker learns nothing from a repeat.
//! - **Only verdicts count.** The caller says what a reply was ([`Outcome`]): replies that
//!   say the daemon or the backend failed (server busy, deadlines, internal errors, and
//!   what each mechanism calls an outage, `Mechanism::is_outage`) count neither way, so an
//!   outage builds up no penalties.
//! - **Bounded, and no secrets.** Keys are keyed digests ([`crate::digest`]) of the login
//!   and the address; passwords are remembered as 64-bit truncations of keyed digests.
//!   The table holds at most [`MAX_ENTRIES`] keys that are not in use. When it is full,
//!   fully decayed entries go first, then those with the fewest failures, oldest first, so
//!   a flood of one-off failures cannot push out the penalty of an account under attack.
//!
//! The table is synchronous and takes the time as an argument; [`Throttle::admit`] is the
//! one async step.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::digest::{Digest, KeyedHasher};
use crate::log::{Level, RateLimitedLog};
use crate::mech::Credentials;

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

/// One login or address with recent failures or requests in flight.
#[derive(Debug, Clone)]
struct Entry {
    /// Failures as of `last_failure`.
    failures: u32,
    /// The last counted failure: decay runs from here.
    last_failure: Instant,
    /// Truncated keyed digests of the last wrong (login, password) pairs, newest first.
    recent: [u64; RECENT],
    recent_len: u8,
    /// Requests charged to this key whose verdict is not in yet.
    pending: u32,
    /// The turn of the last request charged: the next one's comes a penalty later.
    last_turn: Option<Instant>,
    /// Changes when a success clears the key: its waiting requests plan again.
    generation: u64,
    /// The password (truncated keyed digest) of the key's last success, and when: a
    /// request with it does not wait (it would not count as a failure; a client with
    /// several connections gets all its answers). Forgotten after one `decay`.
    good: Option<(u64, Instant)>,
}

impl Entry {
    fn new(now: Instant, generation: u64) -> Entry {
        Entry {
            failures: 0,
            last_failure: now,
            recent: [0; RECENT],
            recent_len: 0,
            pending: 0,
            last_turn: None,
            generation,
            good: None,
        }
    }

    /// Failures left at `now` after one is forgotten per `decay` since the last one.
    fn failures_at(&self, decay: Duration, now: Instant) -> u32 {
        let quiet = now.saturating_duration_since(self.last_failure).as_millis();
        let forgotten = quiet / decay.as_millis().max(1);
        self.failures
            .saturating_sub(u32::try_from(forgotten).unwrap_or(u32::MAX))
    }

    /// Nothing that may not be forgotten: no failures, no request in flight (a good
    /// password may go when room is needed).
    fn idle(&self, decay: Duration, now: Instant) -> bool {
        self.failures_at(decay, now) == 0 && self.pending == 0
    }

    /// Nothing left to remember at all.
    fn empty(&self, decay: Duration, now: Instant) -> bool {
        self.idle(decay, now) && self.good_tag(decay, now).is_none()
    }

    fn good_tag(&self, decay: Duration, now: Instant) -> Option<u64> {
        self.good
            .filter(|(_, at)| now.saturating_duration_since(*at) < decay)
            .map(|(tag, _)| tag)
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

/// The table of keys with failures or requests in flight. Pure: the caller passes the time.
struct Table {
    entries: HashMap<Digest, Entry>,
    capacity: usize,
    /// [`ThrottleSettings::ceiling`], computed once.
    ceiling: u32,
    /// The next [`Entry::generation`].
    generations: u64,
}

impl Table {
    fn failures(&self, key: &Digest, settings: &ThrottleSettings, now: Instant) -> u32 {
        self.entries
            .get(key)
            .map_or(0, |entry| entry.failures_at(settings.decay, now))
    }

    /// The earliest time a new request of `key` with password `tag` could be verified at
    /// `now`: the penalty for the failures on record plus the requests in flight (each
    /// charged as if it were going to fail), counted from now and from the last request's
    /// turn; now for the password of the key's last success.
    fn turn(&self, key: &Digest, tag: u64, settings: &ThrottleSettings, now: Instant) -> Instant {
        let Some(entry) = self.entries.get(key) else {
            return now;
        };
        if entry.good_tag(settings.decay, now) == Some(tag) {
            return now;
        }
        let charged = entry
            .failures_at(settings.decay, now)
            .saturating_add(entry.pending);
        let penalty = settings.penalty(charged);
        let after = entry.last_turn.map_or(now, |last| last.max(now));
        after + penalty
    }

    fn generation(&self, key: &Digest) -> Option<u64> {
        self.entries.get(key).map(|entry| entry.generation)
    }

    /// Charges a request of `key` that will be verified at `turn`. Returns the key's
    /// generation and how many entries were evicted to make room.
    fn reserve(
        &mut self,
        key: Digest,
        turn: Instant,
        settings: &ThrottleSettings,
        now: Instant,
    ) -> (u64, u64) {
        let evicted = self.make_room_for(&key, settings, now);
        let generation = &mut self.generations;
        let entry = self.entries.entry(key).or_insert_with(|| {
            *generation += 1;
            Entry::new(now, *generation)
        });
        entry.pending = entry.pending.saturating_add(1);
        entry.last_turn = Some(entry.last_turn.map_or(turn, |last| last.max(turn)));
        (entry.generation, evicted)
    }

    /// A charged request of `key` is resolved (or abandoned).
    fn release(&mut self, key: &Digest, settings: &ThrottleSettings, now: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.pending = entry.pending.saturating_sub(1);
            if entry.empty(settings.decay, now) {
                self.entries.remove(key);
            }
        }
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
        let evicted = self.make_room_for(&key, settings, now);
        let generation = &mut self.generations;
        let entry = self.entries.entry(key).or_insert_with(|| {
            *generation += 1;
            Entry::new(now, *generation)
        });
        if entry.good.is_some_and(|(good, _)| good == tag) {
            // The password changed, or the account did.
            entry.good = None;
        }
        if entry.seen(tag) {
            return (false, evicted);
        }
        entry.failures = (entry.failures_at(settings.decay, now) + 1).min(self.ceiling);
        entry.last_failure = now;
        entry.remember(tag);
        (true, evicted)
    }

    /// A success with password `tag`: the key's failures, recent passwords and turns are
    /// forgotten, the password is remembered as good. Returns whether requests were
    /// waiting on the key (they plan again).
    fn succeed(
        &mut self,
        key: Digest,
        tag: u64,
        settings: &ThrottleSettings,
        now: Instant,
    ) -> bool {
        self.make_room_for(&key, settings, now);
        self.generations += 1;
        let generation = self.generations;
        let entry = self
            .entries
            .entry(key)
            .or_insert_with(|| Entry::new(now, generation));
        let waiting = entry.pending > 0;
        *entry = Entry {
            pending: entry.pending,
            good: Some((tag, now)),
            ..Entry::new(now, generation)
        };
        waiting
    }

    /// Room for `key` when it is new and the table is full; how many entries went.
    fn make_room_for(&mut self, key: &Digest, settings: &ThrottleSettings, now: Instant) -> u64 {
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            self.make_room(settings, now)
        } else {
            0
        }
    }

    /// Frees at least an eighth of the table: idle entries, then the ones with the fewest
    /// failures left, the longest quiet first; never one with requests in flight (when
    /// all are, the table grows, bounded by the connections). Amortised O(1) per insertion.
    fn make_room(&mut self, settings: &ThrottleSettings, now: Instant) -> u64 {
        let before = self.entries.len();
        let target = self.capacity - (self.capacity / 8).max(1).min(self.capacity);
        self.entries
            .retain(|_, entry| !entry.idle(settings.decay, now));
        if self.entries.len() > target {
            let mut ranked: Vec<(u32, Instant, Digest)> = self
                .entries
                .iter()
                .filter(|(_, entry)| entry.pending == 0)
                .map(|(key, entry)| {
                    (
                        entry.failures_at(settings.decay, now),
                        entry.last_failure,
                        *key,
                    )
                })
                .collect();
            let excess = (self.entries.len() - target).min(ranked.len());
            if excess > 0 {
                ranked.select_nth_unstable_by_key(excess - 1, |&(failures, last, _)| {
                    (failures, last)
                });
                for (_, _, key) in &ranked[..excess] {
                    self.entries.remove(key);
                }
            }
        }
        (before - self.entries.len()) as u64
    }
}

/// The login as the throttle counts it: trimmed, case-folded and without `@realm`, so
/// `CMP6`, ` cmp6` and `cmp6@realm` are `cmp6`. Bytes that are not UTF-8 are folded as
/// ASCII.
pub fn login_key(login: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(login) {
        Ok(text) => {
            let text = text.trim();
            let local = text.split('@').next().unwrap_or(text).trim();
            local.to_lowercase().into_bytes()
        }
        Err(_) => {
            let text = login.trim_ascii();
            let local = text
                .split(|&b| b == b'@')
                .next()
                .unwrap_or(text)
                .trim_ascii();
            local.to_ascii_lowercase()
        }
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

/// A request's charge on its keys, from [`Throttle::admit`] (or [`Throttle::admit_now`]) to
/// [`Throttle::record`]; dropped unrecorded (the client went away), it is released. It
/// owns what it needs, so it can travel with the request to another thread.
pub struct Charge {
    held: Option<Held>,
}

struct Held {
    table: Arc<Mutex<Table>>,
    settings: ThrottleSettings,
    keys: Keys,
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            let mut table = lock(&held.table);
            release(&mut table, &held.keys, &held.settings, Instant::now());
        }
    }
}

/// What [`Throttle::admit`] decided.
pub enum Admission {
    /// Verify now.
    Go(Charge),
    /// No turn before the deadline, which has now passed: answer `NO` unverified.
    TooLate,
}

/// Counters, for the SIGUSR1 statistics line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleStats {
    pub enabled: bool,
    pub entries: usize,
    pub capacity: usize,
    /// Requests that waited.
    pub delayed: u64,
    /// Requests answered `NO` at their deadline, their turn too far away.
    pub too_late: u64,
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
            "throttle: {} of {} entries, {} requests delayed, {} answered NO at their \
             deadline, {} failures counted, {} evicted",
            self.entries, self.capacity, self.delayed, self.too_late, self.failures, self.evicted
        )
    }
}

pub struct Throttle {
    settings: ThrottleSettings,
    hasher: KeyedHasher,
    table: Arc<Mutex<Table>>,
    delayed: AtomicU64,
    too_late: AtomicU64,
    failures: AtomicU64,
    evicted: AtomicU64,
    log: RateLimitedLog,
    /// Woken when a success clears a key that requests wait on.
    cleared: Notify,
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
            table: Arc::new(Mutex::new(Table {
                entries: HashMap::new(),
                capacity: capacity.max(1),
                ceiling: settings.ceiling(),
                generations: 0,
            })),
            delayed: AtomicU64::new(0),
            too_late: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            log: RateLimitedLog::at(Level::Info),
            cleared: Notify::new(),
        }
    }

    /// The keys of a request (after `-r`, the login normalised by [`login_key`]). Cheap:
    /// three HMACs, none when throttling is off.
    pub fn attempt(&self, credentials: &Credentials) -> Attempt {
        if !self.settings.enabled() {
            return Attempt(None);
        }
        let login = login_key(&credentials.login);
        let login = self.hasher.digest("throttle login", &[&login]);
        let address = credentials
            .client_addr
            .as_deref()
            .and_then(address_key)
            .map(|(kind, bytes)| self.hasher.digest("throttle address", &[kind, &bytes]));
        let password = self.hasher.digest(
            "throttle password",
            &[login.as_bytes(), credentials.password.as_bytes()],
        );
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&password.as_bytes()[..8]);
        Attempt(Some(Keys {
            login,
            address,
            password: u64::from_be_bytes(tag),
        }))
    }

    /// How long a new request would wait at `now` (its turn on the later of its keys),
    /// and why; nothing is charged.
    pub fn penalty(&self, attempt: &Attempt, now: Instant) -> Penalty {
        let Some(keys) = &attempt.0 else {
            return Penalty::NONE;
        };
        let table = self.lock();
        let turn = self.turn(&table, keys, now);
        let (failures, source) = self.worst_failures(&table, keys, now);
        drop(table);
        Penalty {
            delay: turn.saturating_duration_since(now),
            failures,
            source,
        }
    }

    /// The failures on record for the key of `keys` that has more, and which key it is.
    fn worst_failures(&self, table: &Table, keys: &Keys, now: Instant) -> (u32, Source) {
        let by_login = table.failures(&keys.login, &self.settings, now);
        let by_address = keys
            .address
            .as_ref()
            .map_or(0, |key| table.failures(key, &self.settings, now));
        if by_address > by_login {
            (by_address, Source::Address)
        } else {
            (by_login, Source::Login)
        }
    }

    /// The request's turn: the later of its keys'.
    fn turn(&self, table: &Table, keys: &Keys, now: Instant) -> Instant {
        let tag = keys.password;
        let by_login = table.turn(&keys.login, tag, &self.settings, now);
        let by_address = keys
            .address
            .as_ref()
            .map_or(now, |key| table.turn(key, tag, &self.settings, now));
        by_login.max(by_address)
    }

    /// Charges the request and waits for its turn (on this task only), or, when its turn
    /// would come after `deadline`, waits until the deadline and says so. `subject`
    /// names the request for the log line about the wait (sanitised, no password); at
    /// most one such line per second.
    pub async fn admit(
        &self,
        attempt: Attempt,
        deadline: Instant,
        subject: impl FnOnce() -> String,
    ) -> Admission {
        let Some(keys) = attempt.0 else {
            return Admission::Go(Charge { held: None });
        };
        let mut subject = Some(subject);
        let mut counted = false;
        loop {
            let cleared = self.cleared.notified();
            tokio::pin!(cleared);
            cleared.as_mut().enable();
            let now = Instant::now();
            let (turn, generations, charge) = self.plan(&keys, now, deadline);
            if turn <= now
                && let Some(charge) = charge
            {
                return Admission::Go(charge);
            }
            if !counted {
                counted = true;
                self.delayed.fetch_add(1, Ordering::Relaxed);
                if let Some(subject) = subject.take() {
                    self.log_wait(&keys, turn.min(deadline) - now, subject);
                }
            }
            let until = if charge.is_some() { turn } else { deadline };
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(until));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => {
                        return match charge {
                            Some(charge) => Admission::Go(charge),
                            None => {
                                self.too_late.fetch_add(1, Ordering::Relaxed);
                                Admission::TooLate
                            }
                        };
                    }
                    _ = &mut cleared => {}
                }
                // A key was cleared somewhere: plan again if it is one of ours.
                if self.generations(&keys) != generations {
                    break;
                }
                cleared.set(self.cleared.notified());
                cleared.as_mut().enable();
            }
            // Releases the old turn (if any) before planning again.
            drop(charge);
        }
    }

    /// Charges the request if its turn is now, without waiting; otherwise gives the
    /// attempt back (for [`Throttle::admit`]). Nothing to wait for when throttling is off.
    pub fn admit_now(&self, attempt: Attempt) -> Result<Charge, Attempt> {
        let Some(keys) = &attempt.0 else {
            return Ok(Charge { held: None });
        };
        let now = Instant::now();
        let mut table = self.lock();
        if self.turn(&table, keys, now) > now {
            return Err(attempt);
        }
        let (_, charge) = self.reserve(&mut table, keys, now, now);
        Ok(charge)
    }

    /// Under the lock: the request's turn, its keys' generations, and its charge when the
    /// turn is not after `deadline`.
    fn plan(
        &self,
        keys: &Keys,
        now: Instant,
        deadline: Instant,
    ) -> (Instant, [Option<u64>; 2], Option<Charge>) {
        let mut table = self.lock();
        let turn = self.turn(&table, keys, now);
        if turn > deadline {
            let generations = [
                table.generation(&keys.login),
                keys.address.as_ref().and_then(|key| table.generation(key)),
            ];
            return (turn, generations, None);
        }
        let (generations, charge) = self.reserve(&mut table, keys, turn, now);
        (turn, generations, Some(charge))
    }

    /// Charges `keys` for a verification at `turn`: their generations and the charge.
    fn reserve(
        &self,
        table: &mut Table,
        keys: &Keys,
        turn: Instant,
        now: Instant,
    ) -> ([Option<u64>; 2], Charge) {
        let (login, mut evicted) = table.reserve(keys.login, turn, &self.settings, now);
        let address = keys.address.map(|key| {
            let (generation, freed) = table.reserve(key, turn, &self.settings, now);
            evicted += freed;
            generation
        });
        self.evicted.fetch_add(evicted, Ordering::Relaxed);
        ([Some(login), address], self.charge(Some(keys.clone())))
    }

    /// The charge of `keys` (already reserved).
    fn charge(&self, keys: Option<Keys>) -> Charge {
        Charge {
            held: keys.map(|keys| Held {
                table: Arc::clone(&self.table),
                settings: self.settings,
                keys,
            }),
        }
    }

    fn generations(&self, keys: &Keys) -> [Option<u64>; 2] {
        let table = self.lock();
        [
            table.generation(&keys.login),
            keys.address.as_ref().and_then(|key| table.generation(key)),
        ]
    }

    fn log_wait(&self, keys: &Keys, wait: Duration, subject: impl FnOnce() -> String) {
        self.log.log(|| {
            let ((failures, source), pending) = {
                let table = self.lock();
                let worst = self.worst_failures(&table, keys, Instant::now());
                (
                    worst,
                    table.entries.get(&keys.login).map_or(0, |e| e.pending),
                )
            };
            let of = match source {
                Source::Address => "client address",
                Source::Login => "login",
            };
            let plural = if failures == 1 { "" } else { "s" };
            format!(
                "throttle: delaying {} by {} ms ({of}: {failures} recent failure{plural}, \
                 {pending} requests in flight)",
                subject(),
                wait.as_millis(),
            )
        });
    }

    /// Learns from a request's outcome: a success forgets the request's keys (and lets
    /// their waiting requests plan again), a failure counts against both (unless its
    /// password is a recent one of that key), anything else only ends the charge.
    pub fn record(&self, mut charge: Charge, outcome: Outcome, now: Instant) {
        let Some(Held { keys, .. }) = charge.held.take() else {
            return;
        };
        let keys_of = || std::iter::once(keys.login).chain(keys.address);
        let mut table = self.lock();
        match outcome {
            Outcome::Neither => {}
            Outcome::Success => {
                let mut waiting = false;
                for key in keys_of() {
                    table.release(&key, &self.settings, now);
                    waiting |= table.succeed(key, keys.password, &self.settings, now);
                }
                drop(table);
                if waiting {
                    self.cleared.notify_waiters();
                }
                return;
            }
            Outcome::Failure => {
                let mut counted = false;
                let mut evicted = 0;
                for key in keys_of() {
                    let (new, freed) =
                        table.record_failure(key, keys.password, &self.settings, now);
                    counted |= new;
                    evicted += freed;
                }
                if counted {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                }
                self.evicted.fetch_add(evicted, Ordering::Relaxed);
            }
        }
        release(&mut table, &keys, &self.settings, now);
    }

    pub fn stats(&self) -> ThrottleStats {
        let table = self.lock();
        ThrottleStats {
            enabled: self.settings.enabled(),
            entries: table.entries.len(),
            capacity: table.capacity,
            delayed: self.delayed.load(Ordering::Relaxed),
            too_late: self.too_late.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }
}

/// Every update is one step, so a poisoned lock (a panic elsewhere) is taken over.
fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A charged request of `keys` is resolved (or abandoned).
fn release(table: &mut Table, keys: &Keys, settings: &ThrottleSettings, now: Instant) {
    table.release(&keys.login, settings, now);
    if let Some(address) = &keys.address {
        table.release(address, settings, now);
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
    use std::sync::Arc;

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

    /// The charge of a request that waited its turn already and is verified now (what
    /// [`Throttle::admit`] hands over once the turn comes), without a reservation.
    fn verified(t: &Throttle, credentials: &Credentials) -> Charge {
        t.charge(t.attempt(credentials).0)
    }

    /// Fails `login` once with a password nobody used before, at `now`.
    fn fail(t: &Throttle, login: &str, addr: Option<&str>, n: usize, now: Instant) {
        let charge = verified(t, &creds(login, &format!("guess-{n}"), addr));
        t.record(charge, Outcome::Failure, now);
    }

    /// Charges a request arriving at `now` (deadline far away): its turn, from now.
    fn reserve(t: &Throttle, credentials: &Credentials, now: Instant) -> (Duration, Charge) {
        let keys = t.attempt(credentials).0.unwrap();
        let (turn, _, charge) = t.plan(&keys, now, now + 3600 * SEC);
        (turn - now, charge.expect("a turn before the deadline"))
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
            t.record(verified(&t, &stale), Outcome::Failure, now);
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
            let charge = verified(&t, &creds(login, "same", Some("192.0.2.7;1")));
            t.record(charge, Outcome::Failure, now);
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
        let good = verified(&t, &creds("erin", "right", Some("198.51.100.1;26")));
        t.record(good, Outcome::Success, now);
        assert_eq!(delay(&t, "erin", None, now), Duration::ZERO);
        assert_eq!(
            delay(&t, "other", Some("198.51.100.1;1"), now),
            Duration::ZERO
        );
        // Only the good password is remembered, for the login and the address.
        assert_eq!(t.stats().entries, 2);
        // And the recent passwords are forgotten: the old ones count again.
        fail(&t, "erin", None, 0, now);
        assert_eq!(t.stats().failures, 9);
    }

    #[test]
    fn the_last_good_password_does_not_wait() {
        let t = throttle(settings(), 100);
        let now = Instant::now();
        let right = creds("sam", "right", None);
        t.record(verified(&t, &right), Outcome::Success, now);
        for n in 0..8 {
            fail(&t, "sam", None, n, now);
        }
        assert_eq!(delay(&t, "sam", None, now), 4 * SEC);
        assert_eq!(t.penalty(&t.attempt(&right), now).delay, Duration::ZERO);
        // In parallel too: each one goes at once.
        for _ in 0..10 {
            assert_eq!(reserve(&t, &right, now).0, Duration::ZERO);
        }
        // For one decay period; and a failure with it (the password changed) ends it.
        assert_eq!(t.penalty(&t.attempt(&right), now + 60 * SEC).delay, 2 * SEC);
        t.record(verified(&t, &right), Outcome::Failure, now);
        assert!(t.penalty(&t.attempt(&right), now).delay > Duration::ZERO);
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
        // Logins are normalised: case, blanks and a realm make no fresh budget.
        for variant in [
            "Frank",
            "FRANK",
            " frank",
            "frank\t",
            "frank@example.org",
            "Frank @x",
        ] {
            assert_eq!(delay(&t, variant, None, now), SEC, "{variant:?}");
        }
        assert_eq!(delay(&t, "franky", None, now), Duration::ZERO);
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
        let t = throttle(settings(), 100);
        let now = Instant::now();
        for n in 0..20 {
            let charge = verified(&t, &creds("ivan", &format!("p{n}"), None));
            t.record(charge, Outcome::Neither, now);
        }
        assert_eq!(t.stats().entries, 0);
        assert_eq!(t.stats().failures, 0);
    }

    #[test]
    fn login_keys_are_normalised() {
        assert_eq!(login_key(b"cmp6"), b"cmp6");
        assert_eq!(login_key(b"CMP6"), b"cmp6");
        assert_eq!(login_key(b" cmp6 "), b"cmp6");
        assert_eq!(login_key(b"cmp6@realm"), b"cmp6");
        assert_eq!(login_key(b" Cmp6 @Realm@x"), b"cmp6");
        assert_eq!(login_key("J\u{d6}RG".as_bytes()), "jörg".as_bytes());
        assert_eq!(login_key("\u{a0}anna\u{2003}".as_bytes()), b"anna");
        // Not UTF-8: folded as ASCII, the other bytes kept.
        assert_eq!(login_key(b" AB\xff@x"), b"ab\xff");
    }

    #[test]
    fn parallel_requests_share_one_budget() {
        // A penalised login: every request waits a second.
        let quick = ThrottleSettings {
            free: 0,
            delay: SEC,
            max: SEC,
            decay: 3600 * SEC,
        };
        let t = throttle(quick, 100);
        let now = Instant::now();
        fail(&t, "nina", None, 0, now);
        // 16 at once: one turn per second, in arrival order.
        let keys = t.attempt(&creds("nina", "x", None)).0.unwrap();
        let deadline = now + 10 * SEC;
        let mut turns = Vec::new();
        let mut charges = Vec::new();
        for _ in 0..16 {
            let (turn, _, charge) = t.plan(&keys, now, deadline);
            turns.push(charge.is_some().then(|| (turn - now).as_secs()));
            charges.extend(charge);
        }
        let expected: Vec<Option<u64>> = (1..=16).map(|s| (s <= 10).then_some(s)).collect();
        assert_eq!(turns, expected);
        // Another login is not held up.
        assert_eq!(delay(&t, "omar", None, now), Duration::ZERO);
        // Charges dropped unrecorded (clients gone) are released.
        drop(charges);
        assert_eq!(
            t.lock().entries.get(&keys.login).map(|e| e.pending),
            Some(0)
        );
        // A fresh login: the free failures go at once, then the same spacing.
        let t = throttle(settings(), 100);
        let mut seen = Vec::new();
        let mut held = Vec::new();
        for n in 0..8 {
            let (wait, charge) = reserve(&t, &creds("pia", &format!("p{n}"), None), now);
            seen.push(wait.as_millis());
            held.push(charge);
        }
        assert_eq!(seen, [0, 0, 0, 0, 250, 750, 1750, 3750]);
    }

    #[tokio::test]
    async fn a_success_lets_the_waiting_requests_go() {
        let slow = ThrottleSettings {
            delay: 8 * SEC,
            max: 8 * SEC,
            decay: 3600 * SEC,
            ..settings()
        };
        let t = Arc::new(throttle(slow, 100));
        for n in 0..4 {
            fail(&t, "quinn", None, n, Instant::now());
        }
        // A client with several connections and the right password: turns in 8 and
        // 16 s, the third none before its deadline.
        let started = Instant::now();
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let t = Arc::clone(&t);
                tokio::spawn(async move {
                    let attempt = t.attempt(&creds("quinn", "right", None));
                    match t
                        .admit(attempt, Instant::now() + 20 * SEC, String::new)
                        .await
                    {
                        Admission::Go(charge) => {
                            t.record(charge, Outcome::Success, Instant::now());
                            true
                        }
                        Admission::TooLate => false,
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // One more request of that client succeeds (say, with its turn taken earlier):
        // the key is clear, the others go at once.
        let (_, charge) = reserve(&t, &creds("quinn", "right", None), Instant::now());
        t.record(charge, Outcome::Success, Instant::now());
        for task in tasks {
            assert!(task.await.unwrap());
        }
        assert!(started.elapsed() < 2 * SEC, "{:?}", started.elapsed());
        assert_eq!(t.stats().failures, 4);
    }

    #[tokio::test]
    async fn no_turn_before_the_deadline_is_no_at_the_deadline() {
        let slow = ThrottleSettings {
            free: 0,
            delay: 5 * SEC,
            max: 5 * SEC,
            decay: 3600 * SEC,
        };
        let t = throttle(slow, 100);
        fail(&t, "rosa", None, 0, Instant::now());
        let started = Instant::now();
        let attempt = t.attempt(&creds("rosa", "x", None));
        let admitted = t.admit(attempt, started + 200 * MS, String::new).await;
        assert!(matches!(admitted, Admission::TooLate));
        let took = started.elapsed();
        assert!(took >= 200 * MS && took < SEC, "{took:?}");
        assert_eq!(t.stats().too_late, 1);
        // Nothing was charged.
        let keys = t.attempt(&creds("rosa", "x", None)).0.unwrap();
        assert_eq!(
            t.lock().entries.get(&keys.login).map(|e| e.pending),
            Some(0)
        );
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
        let credentials = creds("secret-login", "secret-password", Some("192.0.2.1;1"));
        let attempt = t.attempt(&credentials);
        t.record(verified(&t, &credentials), Outcome::Failure, now);
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
            "throttle: 1 of 100 entries, 0 requests delayed, 0 answered NO at their deadline, \
             5 failures counted, 0 evicted"
        );
    }

    #[tokio::test]
    async fn admit_sleeps_the_penalty_and_counts_it() {
        let quick = ThrottleSettings {
            free: 0,
            delay: 30 * MS,
            max: 30 * MS,
            decay: 60 * SEC,
        };
        let t = throttle(quick, 100);
        fail(&t, "liam", None, 0, Instant::now());
        let before = Instant::now();
        let far = before + 60 * SEC;
        let attempt = t.attempt(&creds("liam", "x", None));
        let Admission::Go(charge) = t.admit(attempt, far, || "[user=liam]".into()).await else {
            panic!("no turn");
        };
        assert!(before.elapsed() >= 30 * MS);
        t.record(charge, Outcome::Failure, Instant::now());
        let attempt = t.attempt(&creds("mia", "x", None));
        let Admission::Go(charge) = t.admit(attempt, far, || "[user=mia]".into()).await else {
            panic!("no turn");
        };
        drop(charge);
        assert_eq!(t.stats().delayed, 1);
    }
}
