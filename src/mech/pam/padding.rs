//! How long a failed PAM verification is held back so that unknown users can't be told
//! from existing ones by the reply time (OpenSSH's CVE-2016-6210 in PAM's clothes).
//!
//! pam_unix answers an unknown user in a fraction of a millisecond but hashes the
//! password of an existing one (yescrypt: tens of milliseconds), and libpam's fail delay
//! comes on top of either. So a failed `pam_authenticate` is answered no earlier than the
//! time a successful one of the same service typically takes (the median of its recent
//! successes), plus the fail delay. Successes are the measure because only they are sure
//! to have done an account's full work (a client can send failures at will, not
//! successes). Before a service has had a success, the median of all services' recent
//! successes is used, and before any success at all, the time of one hash of the
//! accounts' prevailing kind (measured at startup).
//!
//! When the rest of that time would cover most of such a hash, the failure first does
//! the hash itself (the shadow mechanism's dummy): real work slows down with the machine's
//! load exactly as an existing account's hash does, where a timer would not. Stacks whose
//! successes take less (a directory server on the network) are only padded with a timer,
//! so an unknown user never costs more than a real account.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Recent successes remembered per service.
const SAMPLES: usize = 15;
/// Services with their own record; further ones share the overall record (successes
/// need a valid password, so this only bounds odd setups).
const MAX_SERVICES: usize = 64;

/// The last [`SAMPLES`] durations of successful `pam_authenticate` calls.
#[derive(Debug, Default, Clone)]
struct Recent {
    samples: Vec<Duration>,
    next: usize,
}

impl Recent {
    fn record(&mut self, took: Duration) {
        if self.samples.len() < SAMPLES {
            self.samples.push(took);
        } else {
            self.samples[self.next] = took;
        }
        self.next = (self.next + 1) % SAMPLES;
    }

    fn median(&self) -> Option<Duration> {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied()
    }
}

#[derive(Debug, Default)]
struct Records {
    services: HashMap<Vec<u8>, Recent>,
    overall: Recent,
    /// Recent durations of one dummy hash.
    dummy: Recent,
}

/// The per-service measure of a successful verification's work.
#[derive(Debug)]
pub struct Padding {
    /// Before any success: one local hash of the prevailing kind.
    initial: Duration,
    records: Mutex<Records>,
}

impl Padding {
    pub fn new(initial: Duration) -> Padding {
        Padding {
            initial,
            records: Mutex::new(Records::default()),
        }
    }

    /// Whether a failure of `service` after `took` should do a dummy hash before its
    /// timer: when the rest of the typical time covers at least 3/4 of one.
    pub fn wants_dummy(&self, service: &[u8], took: Duration) -> bool {
        let dummy = self.lock().dummy.median().unwrap_or(self.initial);
        self.typical(service).saturating_sub(took) >= dummy * 3 / 4
    }

    /// A dummy hash took `took`.
    pub fn record_dummy(&self, took: Duration) {
        self.lock().dummy.record(took);
    }

    /// A `pam_authenticate` of `service` succeeded after `took`.
    pub fn record_success(&self, service: &[u8], took: Duration) {
        let mut records = self.lock();
        records.overall.record(took);
        if let Some(recent) = records.services.get_mut(service) {
            recent.record(took);
        } else if records.services.len() < MAX_SERVICES {
            let mut recent = Recent::default();
            recent.record(took);
            records.services.insert(service.to_vec(), recent);
        }
    }

    /// How long a successful `pam_authenticate` of `service` typically takes.
    pub fn typical(&self, service: &[u8]) -> Duration {
        let records = self.lock();
        records
            .services
            .get(service)
            .and_then(Recent::median)
            .or_else(|| records.overall.median())
            .unwrap_or(self.initial)
    }

    /// How long to hold back the reply to a `pam_authenticate` of `service` that failed
    /// after `took`, when libpam asked for `fail_delay`: the rest of the typical work, plus
    /// the fail delay; at most `max`.
    pub fn hold(
        &self,
        service: &[u8],
        took: Duration,
        fail_delay: Duration,
        max: Duration,
    ) -> Duration {
        (self.typical(service).saturating_sub(took) + fail_delay).min(max)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_typical_time_is_the_median_of_recent_successes() {
        let padding = Padding::new(20 * MS);
        assert_eq!(padding.typical(b"smtp"), 20 * MS, "nothing seen yet");
        padding.record_success(b"smtp", 30 * MS);
        assert_eq!(padding.typical(b"smtp"), 30 * MS);
        assert_eq!(
            padding.typical(b"imap"),
            30 * MS,
            "another service: overall"
        );
        for ms in [31, 29, 500, 28] {
            padding.record_success(b"smtp", ms * MS);
        }
        assert_eq!(
            padding.typical(b"smtp"),
            30 * MS,
            "an outlier doesn't move it"
        );
        padding.record_success(b"imap", 2 * MS);
        assert_eq!(padding.typical(b"imap"), 2 * MS);
        // Old samples age out.
        for _ in 0..SAMPLES {
            padding.record_success(b"smtp", 5 * MS);
        }
        assert_eq!(padding.typical(b"smtp"), 5 * MS);
    }

    #[test]
    fn failures_are_padded_to_the_typical_time_plus_the_fail_delay() {
        let padding = Padding::new(30 * MS);
        let max = Duration::from_secs(10);
        let second = Duration::from_secs(1);
        // An unknown user answered in 1 ms waits for the rest of a hash.
        assert_eq!(padding.hold(b"smtp", MS, Duration::ZERO, max), 29 * MS);
        // A wrong password that took as long as a hash waits only the fail delay.
        assert_eq!(padding.hold(b"smtp", 31 * MS, 2 * second, max), 2 * second);
        assert_eq!(
            padding.hold(b"smtp", MS, 2 * second, max),
            2 * second + 29 * MS
        );
        // Never beyond the cap.
        assert_eq!(padding.hold(b"smtp", MS, 60 * second, max), max);
    }

    #[test]
    fn a_dummy_hash_only_when_the_typical_work_covers_one() {
        // Startup: one local hash takes 30 ms; nothing seen yet, so typical = 30 ms too.
        let padding = Padding::new(30 * MS);
        assert!(padding.wants_dummy(b"smtp", MS));
        assert!(
            !padding.wants_dummy(b"smtp", 20 * MS),
            "most of the work was done"
        );
        // A directory server answers in 5 ms: a 30 ms local hash would be a tell.
        padding.record_success(b"ldap", 5 * MS);
        assert!(!padding.wants_dummy(b"ldap", MS));
        // The machine got slower: the dummy's own recent times count.
        padding.record_dummy(90 * MS);
        padding.record_success(b"smtp", 50 * MS);
        assert!(!padding.wants_dummy(b"smtp", MS));
        padding.record_success(b"smtp", 120 * MS);
        padding.record_success(b"smtp", 120 * MS);
        assert!(padding.wants_dummy(b"smtp", MS));
    }

    #[test]
    fn the_number_of_services_is_bounded() {
        let padding = Padding::new(MS);
        for i in 0..(MAX_SERVICES + 10) {
            padding.record_success(format!("s{i}").as_bytes(), 7 * MS);
        }
        assert_eq!(padding.lock().services.len(), MAX_SERVICES);
        assert_eq!(padding.typical(b"s70"), 7 * MS, "overall record");
    }
}
