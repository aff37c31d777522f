//! Verification mechanisms (`-a NAME`) behind one trait.
//!
//! A mechanism gets the credentials of one request and answers with a [`Reply`]. Only an
//! explicit yes from the backend may produce `Reply::Ok`; every error path is `Reply::No`.
//! `authenticate` may block (crypt, NSS, PAM, network): the server runs it on the bounded
//! verification pool, never on the accept loop.
#![forbid(unsafe_code)]

pub mod conf_file;
pub mod dummy;
pub mod file_stamp;
pub mod getpwent;
pub mod io_runtime;
pub mod kerberos5;
pub mod ldap;
pub mod net;
pub mod nss_files;
pub mod pam;
pub mod passwd;
pub mod rimap;
pub mod sasldb;
pub mod shadow;
pub mod tls;

use std::fmt;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::Reply;
use crate::secret::Password;

/// What a mechanism verifies. `login` already has `@realm` appended under `-r`.
#[derive(Debug)]
pub struct Credentials {
    pub login: Vec<u8>,
    pub password: Password,
    pub service: Vec<u8>,
    pub realm: Vec<u8>,
    pub client_addr: Option<Vec<u8>>,
}

/// What an account looked like when its password was verified, for the credential cache to
/// compare on a later hit: the cache keeps only a keyed digest of it. Empty for mechanisms
/// whose cached successes live by the TTL alone (rimap). Wiped on drop (shadow's holds the
/// stored hash).
#[derive(Debug, Default)]
pub struct AccountState(Password);

impl AccountState {
    pub fn new(bytes: Vec<u8>) -> AccountState {
        AccountState(Password::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A cheap fingerprint of everything an account's state is read from (shadow: the
/// identity and times of /etc/passwd, /etc/shadow and /etc/nsswitch.conf, and the day).
/// While it is unchanged, so is every account's state, and a cache hit needs no lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateVersion(pub Vec<i64>);

/// What one verification produced, for the server: the reply, how long to hold it back,
/// and (for the credential cache) the account's state and its version.
#[derive(Debug)]
pub struct Verification {
    pub reply: Reply,
    /// Wait this long after the verification before sending the reply: a fail delay the
    /// backend asked for (PAM's `pam_fail_delay`) or padding that makes failures take
    /// equally long. The server waits it on a timer, so no verification thread is held.
    pub hold: Duration,
    /// As [`Mechanism::authenticate_with_state`]; empty and `None` unless asked for.
    pub state: AccountState,
    pub version: Option<StateVersion>,
    /// The `NO` reports an outage, not a verdict on the credentials: the backend could
    /// not be asked or gave no answer (see [`Mechanism::is_outage`]). Outages are not
    /// failures for the throttle.
    pub outage: bool,
}

impl Verification {
    /// A reply given without verifying (the request was refused, or the verification
    /// failed or timed out): no hold, no state.
    pub fn refused(reply: Reply) -> Verification {
        Verification {
            reply,
            hold: Duration::ZERO,
            state: AccountState::default(),
            version: None,
            outage: false,
        }
    }

    /// Whether `reply`, a `NO` `mechanism` gave, is an outage by its text.
    pub fn outage_by_text(mechanism: &(impl Mechanism + ?Sized), reply: &Reply) -> bool {
        matches!(reply, Reply::No(reason) if mechanism.is_outage(reason))
    }
}

pub trait Mechanism: Send + Sync {
    /// The name given to `-a` and shown in log lines (`[mech=...]`).
    fn name(&self) -> &'static str;
    /// Verifies one set of credentials. May block, and includes any hold (see
    /// [`Mechanism::verify`]) for callers that can't wait on a timer.
    fn authenticate(&self, credentials: &Credentials) -> Reply;
    /// What the server calls: a verification on the pool, with the account's state when
    /// `with_state` (the credential cache is on). A mechanism that must delay a reply
    /// (fail delays) returns the delay as [`Verification::hold`] instead of sleeping. The
    /// default: [`Mechanism::authenticate`] or [`Mechanism::authenticate_with_state`],
    /// no hold.
    fn verify(&self, credentials: &Credentials, with_state: bool) -> Verification {
        let (reply, state, version) = if with_state {
            self.authenticate_with_state(credentials)
        } else {
            (
                self.authenticate(credentials),
                AccountState::default(),
                None,
            )
        };
        Verification {
            outage: Verification::outage_by_text(self, &reply),
            reply,
            hold: Duration::ZERO,
            state,
            version,
        }
    }
    /// [`Mechanism::authenticate`] for the credential cache: the reply, the account's
    /// state read in the same lookup that verified the password (so a change made between
    /// the two can't be missed), and the state's version taken before that lookup. The
    /// default has an empty state and an empty version that never changes: cached
    /// successes then live by the TTL alone.
    fn authenticate_with_state(
        &self,
        credentials: &Credentials,
    ) -> (Reply, AccountState, Option<StateVersion>) {
        (
            self.authenticate(credentials),
            AccountState::default(),
            Some(StateVersion::default()),
        )
    }
    /// On a cache hit: the current [`StateVersion`], if the mechanism has one, read without
    /// blocking (it runs on the accept loop's threads). Equal to the version cached with
    /// the success: the hit stands without reading the state. `None` or different: the
    /// state is read with [`Mechanism::current_state`].
    fn state_version(&self, _credentials: &Credentials) -> Option<StateVersion> {
        Some(StateVersion::default())
    }
    /// On a cache hit whose version changed: the account's state now, cheaply, without
    /// verifying the password again (and its version, taken before the read); state `None`
    /// when the account can no longer be vouched for (then the request is verified in full,
    /// which gives the exact reply). The cache answers `OK` only if the state equals the
    /// one cached. May block.
    fn current_state(
        &self,
        _credentials: &Credentials,
    ) -> (Option<AccountState>, Option<StateVersion>) {
        (Some(AccountState::default()), Some(StateVersion::default()))
    }
    /// Verifications run at once when `-n` is absent or 0. The default, one per CPU core,
    /// suits CPU-bound work (crypt); mechanisms that mostly wait (PAM's fail delays, the
    /// network) ask for more.
    fn default_concurrency(&self) -> NonZeroUsize {
        cpu_cores()
    }
    /// Whether verifying needs root (the shadow database, pam_unix for other users);
    /// `--user` refuses to drop privileges for such a mechanism.
    fn needs_root(&self) -> bool {
        true
    }
    /// How long one verification may take once a pool thread runs it; `None`: the general
    /// `--verify-timeout`. Mechanisms that talk to a server bound their own backend calls
    /// by the same deadline; the server answers `NO` shortly after it (see
    /// [`DEADLINE_GRACE`]) whatever the mechanism is doing, so a hung library call can't
    /// hold a client for longer.
    fn verification_deadline(&self) -> Option<Duration> {
        None
    }
    /// Whether a verification is bounded local work — files, NSS lookups answered from
    /// files, crypt — with no backend that can hang and never a [`Verification::hold`].
    /// The pool thread that verifies then answers the client itself, without a hand-off
    /// back to the connection's task; a watchdog keeps the deadline (local calls can hang
    /// too: an NSS module, a file on a dead network filesystem). The default (PAM, network
    /// mechanisms): no.
    fn verifies_locally(&self) -> bool {
        false
    }
    /// Re-reads the mechanism's configuration (on `SIGHUP`): `Ok` says what was done,
    /// `Err` why the settings in use were kept. The default has nothing to reload.
    fn reload(&self) -> Result<String, String> {
        Ok("nothing to reload".to_string())
    }
    /// Whether `reason`, the text of a `NO` this mechanism answered, reports an outage —
    /// its backend could not be asked or gave no verdict (unreachable, timed out,
    /// unavailable, a lookup or library error) — rather than a verdict on the credentials.
    /// Outages are not failures for the throttle, so a backend outage builds up no
    /// penalties. The default: every `NO` is a verdict.
    fn is_outage(&self, _reason: &str) -> bool {
        false
    }
}

/// `--verify-timeout` default: the longest a verification may run.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after a mechanism's deadline the server stops waiting for it: a mechanism
/// that enforces its own deadline answers first, with its own reason.
pub const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// The number of CPU cores this process may use (1 when unknown).
pub fn cpu_cores() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Memory one verification may need: yescrypt at Debian's default cost uses 16 MiB.
pub const VERIFICATION_MEMORY: u64 = 16 << 20;

/// The verification pool without `-n`: the mechanism's default, but no more slots than
/// half the memory available to us (the lower of the system's available memory and our
/// cgroup's remaining allowance) can feed at [`VERIFICATION_MEMORY`] each.
pub fn default_pool_size(mechanism: &dyn Mechanism) -> NonZeroUsize {
    let wanted = mechanism.default_concurrency();
    match available_memory() {
        Some(bytes) => wanted.min(pool_for_memory(bytes)),
        None => wanted,
    }
}

/// The verification pool for `-n` (`requested`; `None`: the mechanism's default), held to
/// what half the available memory feeds at [`VERIFICATION_MEMORY`] each; a lowered `-n`
/// is logged as a warning that names it.
pub fn pool_size(requested: Option<NonZeroUsize>, mechanism: &dyn Mechanism) -> NonZeroUsize {
    let Some(requested) = requested else {
        return default_pool_size(mechanism);
    };
    let available = available_memory();
    let size = cap_for_memory(requested, available);
    if size < requested {
        crate::log_warn!(
            "-n {requested}: half the available memory ({} MiB) holds {size} verifications \
             at {} MiB each; using -n {size}",
            (available.unwrap_or(0) / 2) >> 20,
            VERIFICATION_MEMORY >> 20
        );
    }
    size
}

/// `requested`, or fewer if half of `available` bytes cannot feed them. Pure, for tests.
fn cap_for_memory(requested: NonZeroUsize, available: Option<u64>) -> NonZeroUsize {
    match available {
        Some(bytes) => requested.min(pool_for_memory(bytes)),
        None => requested,
    }
}

fn pool_for_memory(available: u64) -> NonZeroUsize {
    let slots = (available / 2) / VERIFICATION_MEMORY;
    NonZeroUsize::new(usize::try_from(slots).unwrap_or(usize::MAX)).unwrap_or(NonZeroUsize::MIN)
}

/// Bytes of memory this process can still use, if known.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let system = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)?;
    let read = |name: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{name}"))
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
    };
    let cgroup = match (read("memory.max"), read("memory.current")) {
        (Some(max), Some(current)) => Some(max.saturating_sub(current)),
        _ => None,
    };
    Some(cgroup.map_or(system, |allowed| allowed.min(system)))
}

/// Settings of our own long options that belong to one mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `--verify-timeout`: the deadline of one verification (mechanisms that talk to a
    /// server bound their backend calls by it).
    pub verify_timeout: Duration,
    /// `-a pam`: `--pam-services`, `--pam-service-map`, `--pam-service`.
    pub pam: pam::ServicePolicy,
    /// `-a rimap`: `--rimap-starttls`, `--rimap-ca-file`, `--rimap-tls-name`,
    /// `--rimap-timeout`.
    pub rimap: rimap::Options,
    /// `-a sasldb`: `--sasldb-path`.
    pub sasldb: sasldb::Options,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            verify_timeout: DEFAULT_VERIFY_TIMEOUT,
            pam: pam::ServicePolicy::default(),
            rimap: rimap::Options::default(),
            sasldb: sasldb::Options::default(),
        }
    }
}

/// Mechanisms this build offers, in upstream's table order.
pub const AVAILABLE: &[&str] = &[
    "sasldb",
    "getpwent",
    "kerberos5",
    "pam",
    "rimap",
    "shadow",
    "ldap",
];
/// Upstream mechanisms we know but do not offer (yet).
const NOT_AVAILABLE: &[&str] = &["dce", "sia", "httpform"];

#[derive(Debug, PartialEq, Eq)]
pub enum MechError {
    Unknown(String),
    NotAvailable(String),
    /// The mechanism's own setup failed (e.g. a malformed `-O`); upstream says
    /// `failed to initialize mechanism NAME`.
    Init {
        name: String,
        reason: String,
    },
}

impl fmt::Display for MechError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MechError::Unknown(name) => write!(f, "unknown authentication mechanism: {name}"),
            MechError::NotAvailable(name) => write!(
                f,
                "authentication mechanism {name} is not available in this build \
                 (available: {})",
                AVAILABLE.join(" ")
            ),
            MechError::Init { name, reason } => {
                write!(f, "failed to initialize mechanism {name}: {reason}")
            }
        }
    }
}

impl std::error::Error for MechError {}

/// Creates the mechanism named `name` (case-insensitive, like upstream) with the `-O`
/// option and our long options.
pub fn create(
    name: &str,
    option: Option<&str>,
    settings: &Settings,
) -> Result<Arc<dyn Mechanism>, MechError> {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "pam" => match pam::Pam::new(option, settings, Path::new(pam::PAM_D)) {
            Ok(pam) => Ok(Arc::new(pam)),
            Err(reason) => Err(MechError::Init {
                name: lower,
                reason,
            }),
        },
        "rimap" => match rimap::Rimap::new(option, &settings.rimap) {
            Ok(rimap) => Ok(Arc::new(rimap)),
            Err(reason) => Err(MechError::Init {
                name: lower,
                reason,
            }),
        },
        "shadow" => Ok(Arc::new(shadow::Shadow::new(option))),
        "sasldb" => Ok(Arc::new(sasldb::Sasldb::new(option, &settings.sasldb))),
        "getpwent" => Ok(Arc::new(getpwent::Getpwent::new(option))),
        "ldap" => match ldap::Ldap::new(option) {
            Ok(ldap) => Ok(Arc::new(ldap)),
            Err(reason) => Err(MechError::Init {
                name: lower,
                reason,
            }),
        },
        "kerberos5" => match kerberos5::Kerberos5::new(option, settings.verify_timeout) {
            Ok(kerberos5) => Ok(Arc::new(kerberos5)),
            Err(reason) => Err(MechError::Init {
                name: lower,
                reason,
            }),
        },
        other if NOT_AVAILABLE.contains(&other) => Err(MechError::NotAvailable(lower)),
        _ => Err(MechError::Unknown(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive() {
        let none = Settings::default();
        assert_eq!(create("SHADOW", None, &none).unwrap().name(), "shadow");
        assert_eq!(create("Shadow", None, &none).unwrap().name(), "shadow");
        assert_eq!(create("PAM", None, &none).unwrap().name(), "pam");
        assert_eq!(create("SASLdb", None, &none).unwrap().name(), "sasldb");
        assert_eq!(create("GetPwEnt", None, &none).unwrap().name(), "getpwent");
        let rimap = create("RIMAP", Some("127.0.0.1/10143"), &none).unwrap();
        assert_eq!(rimap.name(), "rimap");
    }

    #[test]
    fn rimap_setup_errors_are_init_errors() {
        match create("rimap", None, &Settings::default()).err() {
            Some(MechError::Init { name, reason }) => {
                assert_eq!(name, "rimap");
                assert!(reason.contains("no hostname"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let error = create("rimap", Some("a:b:c:d"), &Settings::default()).err();
        assert!(
            error
                .map(|e| e.to_string())
                .is_some_and(|e| e.starts_with("failed to initialize mechanism rimap: "))
        );
    }

    #[test]
    fn kerberos5_setup_errors_are_init_errors_and_it_has_a_deadline() {
        let settings = Settings {
            verify_timeout: Duration::from_secs(3),
            ..Settings::default()
        };
        match create("kerberos5", Some("/nonexistent/saslauthd.conf"), &settings).err() {
            Some(MechError::Init { name, reason }) => {
                assert_eq!(name, "kerberos5");
                assert!(reason.contains("cannot read"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let dir = std::env::temp_dir().join(format!("mech-krb5-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("saslauthd.conf");
        std::fs::write(&conf, "krb5_verify_principal: smtp\n").unwrap();
        let kerberos5 = create("KERBEROS5", conf.to_str(), &settings).unwrap();
        assert_eq!(kerberos5.name(), "kerberos5");
        assert_eq!(
            kerberos5.verification_deadline(),
            Some(Duration::from_secs(3))
        );
        assert!(!kerberos5.needs_root());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ldap_refuses_a_missing_file_naming_it() {
        match create(
            "LDAP",
            Some("/nonexistent/saslauthd.conf"),
            &Settings::default(),
        )
        .err()
        {
            Some(MechError::Init { name, reason }) => {
                assert_eq!(name, "ldap");
                assert!(
                    reason.starts_with("/nonexistent/saslauthd.conf: cannot read"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pam_asks_for_a_larger_pool_than_shadow() {
        let none = Settings::default();
        let pam = create("pam", None, &none).unwrap();
        let shadow = create("shadow", None, &none).unwrap();
        assert_eq!(shadow.default_concurrency(), cpu_cores());
        assert!(pam.default_concurrency() >= pam::DEFAULT_CONCURRENCY);
        assert!(pam.default_concurrency() >= shadow.default_concurrency());
    }

    #[test]
    fn an_explicit_pool_size_is_held_to_the_memory_too() {
        let n = |v: usize| NonZeroUsize::new(v).unwrap();
        let gib = 1u64 << 30;
        // 1 GiB available: half of it feeds 32 verifications of 16 MiB.
        assert_eq!(cap_for_memory(n(20_000), Some(gib)), n(32));
        assert_eq!(cap_for_memory(n(8), Some(gib)), n(8));
        assert_eq!(cap_for_memory(n(20_000), Some(0)), n(1));
        assert_eq!(cap_for_memory(n(20_000), None), n(20_000));
    }

    #[test]
    fn the_pool_fits_in_half_the_available_memory() {
        assert_eq!(pool_for_memory(0).get(), 1);
        assert_eq!(pool_for_memory(64 << 20).get(), 2);
        assert_eq!(pool_for_memory(24 << 30).get(), 768);
        let shadow = create("shadow", None, &Settings::default()).unwrap();
        assert!(default_pool_size(shadow.as_ref()) <= cpu_cores());
    }

    #[test]
    fn unknown_and_unbuilt_mechanisms_are_distinct_errors() {
        assert_eq!(
            create("nosuch", None, &Settings::default()).err(),
            Some(MechError::Unknown("nosuch".into()))
        );
        assert_eq!(
            create("HTTPFORM", None, &Settings::default()).err(),
            Some(MechError::NotAvailable("httpform".into()))
        );
    }
}
