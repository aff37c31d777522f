//! Who is on the other end of a client connection: the kernel's `SO_PEERCRED` answer
//! (uid, gid and pid of the process that connected), logged with each request, and the
//! policy on who may connect at all (`--allow-uid`, `--allow-gid`).
//!
//! The policy is pure: [`AccessSpec`] is what the command line says (numbers and names),
//! [`AccessSpec::resolve`] turns names into ids with lookup functions the caller passes
//! (the daemon's look in the user and group databases once, at startup), and
//! [`AccessPolicy::allows`] decides. A peer is allowed when its uid is in the uid list OR
//! its gid is in the gid list; uid 0 gets no exception. `SO_PEERCRED` carries the primary
//! gid the process had when it connected, never its supplementary groups, so
//! `--allow-gid` matches only a client whose *primary* (or current, after `setgid`) group
//! is listed.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fmt;
use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt};

/// The reason text of the reply to a peer the policy refuses: `NO access denied`.
pub const ACCESS_DENIED: &str = "access denied";

/// The connecting process's credentials, as the kernel recorded them at `connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl PeerCredentials {
    /// `None` when the kernel cannot say (never on Linux for a connected AF_UNIX socket).
    /// One `getsockopt(SO_PEERCRED)` on any UNIX stream socket (std's or tokio's).
    pub fn of(stream: &impl AsFd) -> Option<PeerCredentials> {
        let cred = getsockopt(stream, sockopt::PeerCredentials).ok()?;
        Some(PeerCredentials {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: (cred.pid() > 0).then_some(cred.pid()),
        })
    }
}

impl fmt::Display for PeerCredentials {
    /// `[peer uid=U gid=G pid=P]`, the form used in log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[peer uid={} gid={}", self.uid, self.gid)?;
        if let Some(pid) = self.pid {
            write!(f, " pid={pid}")?;
        }
        f.write_str("]")
    }
}

/// One entry of `--allow-uid`, `--allow-gid`, `--user` or `--group` as given: a number
/// (taken as the id itself, looked up nowhere) or a name to look up at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Number(u32),
    Name(String),
}

impl Id {
    /// Parses one entry. All digits: a number (not `u32::MAX`, which is `(uid_t) -1`, "no
    /// id" to the kernel); otherwise a name of printable characters without `,`, `:`,
    /// spaces or a leading `-`.
    pub fn parse(token: &str) -> Result<Id, String> {
        if token.is_empty() {
            return Err("empty name".into());
        }
        if token.bytes().all(|b| b.is_ascii_digit()) {
            return match token.parse::<u32>() {
                Ok(n) if n != u32::MAX => Ok(Id::Number(n)),
                _ => Err(format!("{token:?} is not a valid id (0 to 4294967294)")),
            };
        }
        let bad = |c: char| c.is_control() || c.is_whitespace() || c == ',' || c == ':';
        if token.starts_with('-') || token.chars().any(bad) || token.len() > 256 {
            return Err(format!("{token:?} is not a valid user or group name"));
        }
        Ok(Id::Name(token.to_string()))
    }

    /// Resolves a name with `lookup` (`Ok(None)`: no such name); a number is itself.
    pub fn resolve(
        &self,
        kind: &str,
        lookup: &dyn Fn(&str) -> Result<Option<u32>, String>,
    ) -> Result<u32, String> {
        match self {
            Id::Number(n) => Ok(*n),
            Id::Name(name) => match lookup(name) {
                Ok(Some(id)) => Ok(id),
                Ok(None) => Err(format!("unknown {kind} {name:?}")),
                Err(error) => Err(format!("cannot look up {kind} {name:?}: {error}")),
            },
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::Name(name) => f.write_str(name),
        }
    }
}

/// Parses a comma-separated list of ids and names (`--allow-uid`, `--allow-gid`);
/// `option` names the option in error messages.
pub fn parse_id_list(option: &str, list: &str) -> Result<Vec<Id>, String> {
    if list.is_empty() {
        return Err(format!("{option}: empty list"));
    }
    list.split(',')
        .map(|token| {
            if token.is_empty() {
                Err(format!("{option}: empty entry in {list:?}"))
            } else {
                Id::parse(token).map_err(|e| format!("{option}: {e}"))
            }
        })
        .collect()
}

/// `--allow-uid` and `--allow-gid` as given; names are looked up by [`AccessSpec::resolve`].
/// Neither given: everyone who can reach the socket may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessSpec {
    pub uids: Option<Vec<Id>>,
    pub gids: Option<Vec<Id>>,
}

impl AccessSpec {
    /// Looks up the names: `user` and `group` answer `Ok(None)` for an unknown name, which
    /// is an error here (an allow-list entry that matches nobody is a typo).
    pub fn resolve(
        &self,
        user: &dyn Fn(&str) -> Result<Option<u32>, String>,
        group: &dyn Fn(&str) -> Result<Option<u32>, String>,
    ) -> Result<AccessPolicy, String> {
        if self.uids.is_none() && self.gids.is_none() {
            return Ok(AccessPolicy::open());
        }
        let resolve = |ids: &Option<Vec<Id>>, option: &str, kind: &str, lookup| {
            ids.iter()
                .flatten()
                .map(|id| {
                    id.resolve(kind, lookup)
                        .map_err(|e| format!("{option}: {e}"))
                })
                .collect::<Result<BTreeSet<u32>, String>>()
        };
        Ok(AccessPolicy::Restricted {
            uids: resolve(&self.uids, "--allow-uid", "user", user)?,
            gids: resolve(&self.gids, "--allow-gid", "group", group)?,
        })
    }
}

/// Who may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AccessPolicy {
    /// Anyone who can reach the socket (the default, upstream's behaviour).
    #[default]
    Open,
    /// Only a peer whose uid is in `uids` or whose (primary) gid is in `gids`.
    Restricted {
        uids: BTreeSet<u32>,
        gids: BTreeSet<u32>,
    },
}

impl AccessPolicy {
    pub fn open() -> AccessPolicy {
        AccessPolicy::Open
    }

    pub fn is_open(&self) -> bool {
        matches!(self, AccessPolicy::Open)
    }

    /// Whether `peer` may be served. Fail closed: with a restriction, a peer whose
    /// credentials the kernel could not tell is refused.
    pub fn allows(&self, peer: Option<&PeerCredentials>) -> bool {
        match (self, peer) {
            (AccessPolicy::Open, _) => true,
            (AccessPolicy::Restricted { .. }, None) => false,
            (AccessPolicy::Restricted { uids, gids }, Some(peer)) => {
                uids.contains(&peer.uid) || gids.contains(&peer.gid)
            }
        }
    }
}

impl fmt::Display for AccessPolicy {
    /// For the startup log line: `any peer`, or `uid 0,107 or gid 45`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join =
            |set: &BTreeSet<u32>| set.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        match self {
            AccessPolicy::Open => f.write_str("any peer"),
            AccessPolicy::Restricted { uids, gids } => match (uids.is_empty(), gids.is_empty()) {
                (false, false) => write!(f, "uid {} or gid {}", join(uids), join(gids)),
                (false, true) => write!(f, "uid {}", join(uids)),
                (true, false) => write!(f, "gid {}", join(gids)),
                (true, true) => f.write_str("nobody"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerCredentials {
        PeerCredentials {
            uid,
            gid,
            pid: Some(1),
        }
    }

    /// A tiny user and group database for resolving names.
    fn users(name: &str) -> Result<Option<u32>, String> {
        Ok(match name {
            "root" => Some(0),
            "postfix" => Some(107),
            "broken" => return Err("NSS is down".into()),
            _ => None,
        })
    }

    fn groups(name: &str) -> Result<Option<u32>, String> {
        Ok(match name {
            "root" => Some(0),
            "sasl" => Some(45),
            _ => None,
        })
    }

    fn policy(uids: Option<&str>, gids: Option<&str>) -> Result<AccessPolicy, String> {
        let spec = AccessSpec {
            uids: uids.map(|l| parse_id_list("--allow-uid", l)).transpose()?,
            gids: gids.map(|l| parse_id_list("--allow-gid", l)).transpose()?,
        };
        spec.resolve(&users, &groups)
    }

    #[test]
    fn ids_and_names_parse() {
        assert_eq!(Id::parse("107"), Ok(Id::Number(107)));
        assert_eq!(Id::parse("0"), Ok(Id::Number(0)));
        assert_eq!(Id::parse("postfix"), Ok(Id::Name("postfix".into())));
        assert_eq!(Id::parse("Debian-exim"), Ok(Id::Name("Debian-exim".into())));
        assert_eq!(Id::parse("user@REALM"), Ok(Id::Name("user@REALM".into())));
        assert!(
            Id::parse("4294967295")
                .unwrap_err()
                .contains("not a valid id")
        );
        assert!(
            Id::parse("99999999999")
                .unwrap_err()
                .contains("not a valid id")
        );
        for bad in ["", "a b", "a:b", "-x", "a\nb", "tab\there"] {
            assert!(Id::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Id::Name("sasl".into()).to_string(), "sasl");
        assert_eq!(Id::Number(45).to_string(), "45");
    }

    #[test]
    fn lists_parse() {
        assert_eq!(
            parse_id_list("--allow-uid", "postfix,0,cyrus"),
            Ok(vec![
                Id::Name("postfix".into()),
                Id::Number(0),
                Id::Name("cyrus".into())
            ])
        );
        assert_eq!(
            parse_id_list("--allow-uid", ""),
            Err("--allow-uid: empty list".into())
        );
        assert!(
            parse_id_list("--allow-gid", "sasl,,mail")
                .unwrap_err()
                .starts_with("--allow-gid: empty entry")
        );
        assert!(parse_id_list("--allow-gid", "sasl,").is_err());
        assert!(parse_id_list("--allow-gid", "sa sl").is_err());
    }

    #[test]
    fn names_resolve_and_unknown_names_are_errors() {
        assert_eq!(
            policy(Some("postfix,2000"), Some("sasl")),
            Ok(AccessPolicy::Restricted {
                uids: BTreeSet::from([107, 2000]),
                gids: BTreeSet::from([45]),
            })
        );
        assert_eq!(
            policy(Some("nosuch"), None),
            Err("--allow-uid: unknown user \"nosuch\"".into())
        );
        assert_eq!(
            policy(None, Some("postfix")),
            Err("--allow-gid: unknown group \"postfix\"".into())
        );
        assert!(
            policy(Some("broken"), None)
                .unwrap_err()
                .contains("NSS is down")
        );
        // Numbers are taken as they are, with or without a database entry.
        assert!(policy(Some("4242"), Some("4343")).is_ok());
        assert_eq!(policy(None, None), Ok(AccessPolicy::Open));
    }

    #[test]
    fn no_options_allow_everyone() {
        let open = AccessPolicy::default();
        assert!(open.is_open());
        assert!(open.allows(Some(&peer(1000, 1000))));
        assert!(open.allows(None));
        assert_eq!(open.to_string(), "any peer");
    }

    #[test]
    fn allowed_if_the_uid_or_the_gid_is_listed() {
        let both = policy(Some("postfix"), Some("sasl")).unwrap();
        assert!(!both.is_open());
        assert!(both.allows(Some(&peer(107, 107))), "uid listed");
        assert!(both.allows(Some(&peer(1000, 45))), "gid listed");
        assert!(both.allows(Some(&peer(107, 45))), "both listed");
        assert!(!both.allows(Some(&peer(1000, 1000))), "neither listed");
        assert_eq!(both.to_string(), "uid 107 or gid 45");

        let uids_only = policy(Some("postfix,2000"), None).unwrap();
        assert!(uids_only.allows(Some(&peer(2000, 0))));
        assert!(
            !uids_only.allows(Some(&peer(45, 45))),
            "a gid list is not implied"
        );
        assert_eq!(uids_only.to_string(), "uid 107,2000");

        let gids_only = policy(None, Some("sasl")).unwrap();
        assert!(gids_only.allows(Some(&peer(5, 45))));
        assert!(
            !gids_only.allows(Some(&peer(45, 5))),
            "a uid list is not implied"
        );
        assert_eq!(gids_only.to_string(), "gid 45");
    }

    #[test]
    fn root_gets_no_exception_and_unknown_peers_are_refused() {
        let policy = policy(Some("postfix"), Some("sasl")).unwrap();
        assert!(!policy.allows(Some(&peer(0, 0))), "uid 0 is not implied");
        assert!(!policy.allows(None), "fail closed without credentials");
        let with_root = AccessSpec {
            uids: Some(vec![Id::Name("root".into())]),
            gids: None,
        }
        .resolve(&users, &groups)
        .unwrap();
        assert!(with_root.allows(Some(&peer(0, 0))));
    }

    #[test]
    fn log_form() {
        let peer = PeerCredentials {
            uid: 107,
            gid: 113,
            pid: Some(4242),
        };
        assert_eq!(peer.to_string(), "[peer uid=107 gid=113 pid=4242]");
        let no_pid = PeerCredentials { pid: None, ..peer };
        assert_eq!(no_pid.to_string(), "[peer uid=107 gid=113]");
    }

    #[test]
    fn reads_our_own_credentials_over_a_socket_pair() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let peer = PeerCredentials::of(&a).unwrap();
        assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(peer.pid, Some(std::process::id() as i32));
    }
}
