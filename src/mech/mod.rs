//! Verification mechanisms (`-a NAME`) behind one trait.
//!
//! A mechanism gets the credentials of one request and answers with a [`Reply`]. Only an
//! explicit yes from the backend may produce `Reply::Ok`; every error path is `Reply::No`.
//! `authenticate` may block (crypt, NSS, PAM, network): the server runs it on the bounded
//! verification pool, never on the accept loop.
#![forbid(unsafe_code)]

pub mod pam;
pub mod rimap;
pub mod shadow;

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;

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

pub trait Mechanism: Send + Sync {
    /// The name given to `-a` and shown in log lines (`[mech=...]`).
    fn name(&self) -> &'static str;
    /// Verifies one set of credentials. May block.
    fn authenticate(&self, credentials: &Credentials) -> Reply;
    /// Verifications run at once when `-n` is absent or 0. The default, one per CPU core,
    /// suits CPU-bound work (crypt); mechanisms that mostly wait (PAM's fail delays, the
    /// network) ask for more.
    fn default_concurrency(&self) -> NonZeroUsize {
        cpu_cores()
    }
}

/// The number of CPU cores this process may use (1 when unknown).
pub fn cpu_cores() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Settings of our own long options that belong to one mechanism.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `-a pam`: `--pam-services`, `--pam-service-map`, `--pam-service`.
    pub pam: pam::ServicePolicy,
    /// `-a rimap`: `--rimap-starttls`, `--rimap-ca-file`, `--rimap-tls-name`,
    /// `--rimap-timeout`.
    pub rimap: rimap::Options,
}

/// Mechanisms this build offers, in upstream's table order.
pub const AVAILABLE: &[&str] = &["pam", "rimap", "shadow"];
/// Upstream mechanisms we know but do not offer (yet).
const NOT_AVAILABLE: &[&str] = &[
    "sasldb",
    "dce",
    "getpwent",
    "kerberos5",
    "sia",
    "ldap",
    "httpform",
];

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
        "pam" => Ok(Arc::new(pam::Pam::new(option, settings.pam.clone()))),
        "rimap" => match rimap::Rimap::new(option, &settings.rimap) {
            Ok(rimap) => Ok(Arc::new(rimap)),
            Err(reason) => Err(MechError::Init {
                name: lower,
                reason,
            }),
        },
        "shadow" => Ok(Arc::new(shadow::Shadow::new(option))),
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
    fn pam_asks_for_a_larger_pool_than_shadow() {
        let none = Settings::default();
        let pam = create("pam", None, &none).unwrap();
        let shadow = create("shadow", None, &none).unwrap();
        assert_eq!(shadow.default_concurrency(), cpu_cores());
        assert!(pam.default_concurrency() >= pam::DEFAULT_CONCURRENCY);
        assert!(pam.default_concurrency() >= shadow.default_concurrency());
    }

    #[test]
    fn unknown_and_unbuilt_mechanisms_are_distinct_errors() {
        assert_eq!(
            create("nosuch", None, &Settings::default()).err(),
            Some(MechError::Unknown("nosuch".into()))
        );
        assert_eq!(
            create("LDAP", None, &Settings::default()).err(),
            Some(MechError::NotAvailable("ldap".into()))
        );
    }
}
