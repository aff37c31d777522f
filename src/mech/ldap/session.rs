//! One connection to the directory and the operations a verification needs (simple bind,
//! a search for exactly one entry, a compare, a search for any entry), each bounded by the
//! verification's deadline, through ldap3.
//!
//! **Per request, a connection of its own.** Nothing survives a request: no bound state, no
//! cached answer (upstream keeps one connection per process, left bound as whoever bound
//! last, and its fastbind answers `OK` from that state after a password change or while the
//! server is down, issue #550). A stalled operation holds only its own request's
//! connection. The price, measured on loopback against slapd (`tests/ldap.rs`,
//! `latency_of_each_transport`, release build, 2 cores): 0.43 ms per verification in plain
//! text and 2 ms with TLS (a handshake each time), against upstream's 0.3 ms on a kept
//! connection; small next to a mail client's round trips, and `-c` spares repeated logins.
//!
//! **Connecting.** The servers of `ldap_servers` are tried in order; a server whose name
//! resolves to several addresses has each tried in turn. A failure before the first
//! operation (no answer, refused, TLS refused or untrusted, StartTLS refused) moves on to
//! the next server; each attempt gets an equal share of the time left. We open the socket
//! ourselves and hand it to ldap3 (`StdStream`), which then runs StartTLS or the TLS
//! handshake with our connector. ldap3 checks the certificate for the URL's host; for an
//! IPv6 address that would be the bracketed form, which OpenSSL can't match, so for those
//! the connector skips the name check and the address is checked here against the
//! certificate's IP SANs before anything is sent.
//!
//! **Bounds.** Every operation ends by the deadline, and a search stops reading at the
//! second entry. ldap3 buffers one response message until it is complete, without a cap of
//! its own: a directory sending one huge message could make a verification hold that much
//! memory until the deadline (the directory is the administrator's; unlike rimap's IMAP
//! stream, ldap3 gives no hook to cap it).
//!
//! **Secrets and logs.** ldap3 logs through the `log` crate, only at `warn` and never a PDU;
//! this program installs no `log` backend, so nothing of it reaches our log. Our lines never
//! carry a password. ldap3 copies the password into its request buffers (freed, not wiped,
//! after the bind): its API takes `&str`.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

use ldap3::asn1::{PL, StructureTag};
use ldap3::{
    DerefAliases, Ldap, LdapConnAsync, LdapConnSettings, LdapResult, SearchOptions, StdStream,
};
use tokio::time::{Instant, timeout, timeout_at};

use super::config::{Deref, Scope, Server, Settings};
use super::tls::TlsSetup;
use crate::log::sanitize;
use crate::mech::net::{self, Host};
use crate::{log_debug, log_warn};

/// How long the polite `UNBIND` at the end may take (in the background).
const UNBIND_BOUND: Duration = Duration::from_secs(2);

/// LDAP result codes we act on (RFC 4511, appendix A).
pub mod rc {
    pub const SUCCESS: u32 = 0;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const COMPARE_FALSE: u32 = 5;
    pub const COMPARE_TRUE: u32 = 6;
    pub const REFERRAL: u32 = 10;
    pub const NO_SUCH_ATTRIBUTE: u32 = 16;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const BUSY: u32 = 51;
    pub const UNAVAILABLE: u32 = 52;
}

/// Why an operation gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The deadline passed.
    Timeout,
    /// The connection or the library failed (what, for the log).
    Failed(String),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Timeout => f.write_str("no answer before the deadline (ldap_timeout)"),
            OpError::Failed(why) => f.write_str(why),
        }
    }
}

/// An entry found by a search: its DN and the values of the attribute asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    pub values: Vec<Vec<u8>>,
}

/// What a search for one user found.
#[derive(Debug)]
pub enum Lookup {
    One(Entry),
    None,
    /// More than one entry matched.
    Many,
    /// The server answered with an error (code and text, for the log).
    Refused(LdapResult),
    /// No entry here, but referrals (LDAP URLs) to where the search may go on.
    Referred(Vec<String>),
}

/// A connection to one server.
pub struct Session {
    ldap: Ldap,
    /// The server (its display form for log lines).
    pub server: Server,
    /// Whether the connection is encrypted.
    pub tls: bool,
}

/// Connects to the first server of `settings` that takes a connection (and, where
/// configured, TLS) before `deadline`; every failure is logged.
pub async fn open(
    settings: &Settings,
    tls: Option<&TlsSetup>,
    deadline: Instant,
) -> Option<Session> {
    let count = settings.servers.len();
    for (i, server) in settings.servers.iter().enumerate() {
        let others = count - i - 1;
        if Instant::now() >= deadline {
            log_warn!("ldap: no time left to try {server}");
            return None;
        }
        match open_one(settings, tls, server, others, deadline).await {
            Ok(session) => return Some(session),
            Err(why) => log_warn!("ldap: cannot use {server}: {why}"),
        }
    }
    None
}

async fn open_one(
    settings: &Settings,
    tls: Option<&TlsSetup>,
    server: &Server,
    others: usize,
    deadline: Instant,
) -> Result<Session, String> {
    match server {
        Server::Ipc { path } => {
            let left = deadline.saturating_duration_since(Instant::now());
            let share = left / u32::try_from(others + 1).unwrap_or(u32::MAX);
            let stream = match timeout(share, tokio::net::UnixStream::connect(path)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(format!("connect: {error}")),
                Err(_) => {
                    return Err(format!(
                        "connect: no answer within {} ms",
                        share.as_millis()
                    ));
                }
            };
            let stream = stream.into_std().map_err(|e| format!("connect: {e}"))?;
            let connection = LdapConnSettings::new().set_std_stream(StdStream::Unix(stream));
            let ldap = start(connection, "ldapi:///", deadline).await?;
            Ok(Session {
                ldap,
                server: server.clone(),
                tls: false,
            })
        }
        Server::Tcp {
            host,
            port,
            implicit_tls,
        } => {
            let addrs = net::resolve(host, *port, deadline)
                .await
                .map_err(|why| format!("cannot resolve {host}: {why}"))?;
            let Some((tcp, addr)) =
                net::connect_first("ldap", host, &addrs, others, deadline).await
            else {
                return Err("no address took the connection".into());
            };
            let stream = tcp.into_std().map_err(|e| format!("connect: {e}"))?;
            let use_tls = settings.uses_tls(server);
            let mut connection = LdapConnSettings::new().set_std_stream(StdStream::Tcp(stream));
            // `ldap://host:port` or `ldaps://...`, an IPv6 address in brackets.
            let url = server.to_string();
            let check_ip = match (use_tls, host) {
                (true, Host::Ip(IpAddr::V6(ip))) => Some(IpAddr::V6(*ip)),
                _ => None,
            };
            if use_tls {
                let Some(tls) = tls else {
                    return Err("internal error: no TLS setup".into());
                };
                connection = connection
                    .set_starttls(!*implicit_tls)
                    .set_connector(tls.connector(check_ip.is_some()));
            }
            let mut ldap = start(connection, &url, deadline).await?;
            if let (Some(ip), Some(tls)) = (check_ip, tls)
                && tls.check_peer()
            {
                let certificate = timeout_at(deadline, ldap.get_peer_certificate())
                    .await
                    .map_err(|_| "no time left to check the certificate".to_string())?
                    .map_err(|e| format!("cannot read the certificate: {e}"))?
                    .ok_or("no certificate from the server")?;
                if !super::tls::names_ip(&certificate, ip) {
                    return Err(format!(
                        "TLS: the certificate does not name {ip} (no such IP address in its \
                         subjectAltName)"
                    ));
                }
            }
            log_debug!("ldap: connected to {} ({addr})", server);
            Ok(Session {
                ldap,
                server: server.clone(),
                tls: use_tls,
            })
        }
    }
}

/// Connects to the server a referral URL names (`ldap://host:port/base?...`), met on
/// `from`, with the same TLS settings; returns the session and the base DN the URL gives,
/// if any. A referral that would carry the passwords over the network in clear text is
/// refused when `from` did not (TLS, ldapi or loopback): a referral must not undo TLS.
pub async fn open_referral(
    settings: &Settings,
    tls: Option<&TlsSetup>,
    from: &Session,
    url: &str,
    deadline: Instant,
) -> Result<(Session, Option<String>), String> {
    let server = super::config::parse_server(url)?;
    if downgrades(&from.server, from.tls, &server, settings.uses_tls(&server)) {
        return Err(format!(
            "refused: passwords would cross the network in clear text to {server}, while \
             {} {} (refer to ldaps:// or set ldap_start_tls: yes)",
            from.server,
            if from.tls { "uses TLS" } else { "is local" }
        ));
    }
    let base = referral_base(url);
    let session = open_one(settings, tls, &server, 0, deadline).await?;
    Ok((session, base))
}

/// Whether a referral from `from` (over TLS when `from_tls`) to `to` (over TLS when
/// `to_tls`) would send the binds' passwords over the network in clear text where `from`
/// did not.
fn downgrades(from: &Server, from_tls: bool, to: &Server, to_tls: bool) -> bool {
    to.clear_over_network(to_tls) && !from.clear_over_network(from_tls)
}

/// The DN part of an LDAP URL (`scheme://host/DN?attributes?scope?filter`), %-decoded.
fn referral_base(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let (_, path) = rest.split_once('/')?;
    let dn = path.split('?').next().unwrap_or("");
    let decoded = super::config::percent_decode(dn)?;
    (!decoded.is_empty()).then_some(decoded)
}

/// Lets ldap3 take the socket (TLS or StartTLS included) and starts its connection driver.
async fn start(connection: LdapConnSettings, url: &str, deadline: Instant) -> Result<Ldap, String> {
    let (conn, ldap) =
        match timeout_at(deadline, LdapConnAsync::with_settings(connection, url)).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(error)) => return Err(describe(&error)),
            Err(_) => return Err("no TLS (or StartTLS) answer before the deadline".into()),
        };
    tokio::spawn(async move {
        // Errors end the connection; the operation waiting on it reports that.
        let _ = conn.drive().await;
    });
    Ok(ldap)
}

/// An ldap3 error, in one sanitized line.
fn describe(error: &ldap3::LdapError) -> String {
    match error {
        // Sanitized already.
        ldap3::LdapError::LdapResult { result } => result_text(result),
        other => sanitize(other.to_string().as_bytes()),
    }
}

/// `code N (text)` for a result, sanitized.
pub fn result_text(result: &LdapResult) -> String {
    let mut out = format!("result code {}", result.rc);
    if let Some(name) = code_name(result.rc) {
        out.push_str(&format!(" ({name})"));
    }
    if !result.text.is_empty() {
        out.push_str(&format!(": {}", sanitize(result.text.as_bytes())));
    }
    out
}

fn code_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        5 => "compareFalse",
        6 => "compareTrue",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        _ => return None,
    })
}

fn ldap3_scope(scope: Scope) -> ldap3::Scope {
    match scope {
        Scope::Base => ldap3::Scope::Base,
        Scope::One => ldap3::Scope::OneLevel,
        Scope::Sub => ldap3::Scope::Subtree,
    }
}

fn ldap3_deref(deref: Deref) -> DerefAliases {
    match deref {
        Deref::Never => DerefAliases::Never,
        Deref::Search => DerefAliases::Searching,
        Deref::Find => DerefAliases::Finding,
        Deref::Always => DerefAliases::Always,
    }
}

/// What a search is for.
pub struct Search<'a> {
    pub base: &'a str,
    pub scope: Scope,
    pub filter: &'a str,
    /// The attribute whose values to return; `None`: no attributes (`1.1`).
    pub attribute: Option<&'a str>,
    pub deref: Deref,
    pub size_limit: i32,
    pub time_limit: i32,
}

impl Session {
    /// A simple bind; `Ok` carries the server's result (success or not).
    pub async fn bind(
        &mut self,
        dn: &str,
        password: &str,
        deadline: Instant,
    ) -> Result<LdapResult, OpError> {
        match timeout_at(deadline, self.ldap.simple_bind(dn, password)).await {
            Err(_) => Err(OpError::Timeout),
            Ok(Err(error)) => Err(OpError::Failed(describe(&error))),
            Ok(Ok(result)) => Ok(result),
        }
    }

    /// An anonymous bind (to drop a user's identity from the connection).
    pub async fn bind_anonymously(&mut self, deadline: Instant) -> Result<LdapResult, OpError> {
        self.bind("", "", deadline).await
    }

    /// Searches for exactly one entry; stops reading at the second.
    pub async fn lookup(
        &mut self,
        search: &Search<'_>,
        deadline: Instant,
    ) -> Result<Lookup, OpError> {
        match timeout_at(deadline, self.lookup_unbounded(search)).await {
            Err(_) => Err(OpError::Timeout),
            Ok(result) => result,
        }
    }

    async fn lookup_unbounded(&mut self, search: &Search<'_>) -> Result<Lookup, OpError> {
        let attrs = vec![search.attribute.unwrap_or("1.1")];
        let options = SearchOptions::new()
            .deref(ldap3_deref(search.deref))
            .sizelimit(search.size_limit)
            .timelimit(search.time_limit);
        let mut stream = self
            .ldap
            .with_search_options(options)
            .streaming_search(search.base, ldap3_scope(search.scope), search.filter, attrs)
            .await
            .map_err(|e| OpError::Failed(describe(&e)))?;
        let mut found: Option<Entry> = None;
        let mut references = Vec::new();
        loop {
            let next = stream
                .next()
                .await
                .map_err(|e| OpError::Failed(describe(&e)))?;
            let Some(result_entry) = next else {
                break;
            };
            if result_entry.is_intermediate() {
                continue;
            }
            if result_entry.is_ref() {
                references.extend(parse_urls(result_entry.0).ok_or_else(|| {
                    OpError::Failed("malformed reference in the search result".into())
                })?);
                continue;
            }
            let entry = parse_entry(result_entry.0, search.attribute)
                .ok_or_else(|| OpError::Failed("malformed entry in the search result".into()))?;
            if found.is_some() {
                // The connection is dropped with the request: no need to read the rest.
                return Ok(Lookup::Many);
            }
            found = Some(entry);
        }
        let result = stream.finish().await;
        match (result.rc, found) {
            (rc::SUCCESS, Some(entry)) => Ok(Lookup::One(entry)),
            (rc::SUCCESS, None) if !references.is_empty() => Ok(Lookup::Referred(references)),
            (rc::SUCCESS | rc::NO_SUCH_OBJECT, None) => Ok(Lookup::None),
            // With a size limit of 1 (upstream's default), a second match shows up as this.
            (rc::SIZE_LIMIT_EXCEEDED, Some(_)) => Ok(Lookup::Many),
            (rc::REFERRAL, None) if !result.refs.is_empty() => {
                Ok(Lookup::Referred(result.refs.clone()))
            }
            _ => Ok(Lookup::Refused(result)),
        }
    }

    /// Whether `attr` of `dn` holds `value`: `Ok(Some(bool))` for compareTrue/False,
    /// `Ok(None)` with the result for anything else.
    pub async fn compare(
        &mut self,
        dn: &str,
        attr: &str,
        value: &str,
        deadline: Instant,
    ) -> Result<Result<bool, LdapResult>, OpError> {
        match timeout_at(deadline, self.ldap.compare(dn, attr, value)).await {
            Err(_) => Err(OpError::Timeout),
            Ok(Err(error)) => Err(OpError::Failed(describe(&error))),
            Ok(Ok(result)) => Ok(match result.0.rc {
                rc::COMPARE_TRUE => Ok(true),
                rc::COMPARE_FALSE => Ok(false),
                _ => Err(result.0),
            }),
        }
    }

    /// Whether the search finds at least one entry (the group filter check).
    pub async fn any(
        &mut self,
        search: &Search<'_>,
        deadline: Instant,
    ) -> Result<Result<bool, LdapResult>, OpError> {
        match self.lookup(search, deadline).await? {
            Lookup::One(_) | Lookup::Many => Ok(Ok(true)),
            Lookup::None => Ok(Ok(false)),
            Lookup::Refused(result) if result.rc == rc::SIZE_LIMIT_EXCEEDED => Ok(Ok(true)),
            Lookup::Refused(result) => Ok(Err(result)),
            // Group searches don't follow referrals.
            Lookup::Referred(_) => Ok(Ok(false)),
        }
    }

    /// Ends the session: `UNBIND` is sent in the background (bounded), so the reply does
    /// not wait for it.
    pub fn close(self) {
        let mut ldap = self.ldap;
        tokio::spawn(async move {
            let _ = timeout(UNBIND_BOUND, ldap.unbind()).await;
        });
    }
}

/// The URLs of a SearchResultReference, without ldap3's panicking parser.
fn parse_urls(tag: StructureTag) -> Option<Vec<String>> {
    tag.expect_constructed()?
        .into_iter()
        .map(|url| String::from_utf8(url.expect_primitive()?).ok())
        .collect()
}

/// The DN and the values of `attribute` (any returned attribute of that name, options
/// after `;` ignored, any case) of a SearchResultEntry, without ldap3's panicking parser.
fn parse_entry(tag: StructureTag, attribute: Option<&str>) -> Option<Entry> {
    let mut parts = tag.match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut values = Vec::new();
    let attributes = parts.next()?.expect_constructed()?;
    for partial in attributes {
        let mut partial = partial.expect_constructed()?.into_iter();
        let name = partial.next()?.expect_primitive()?;
        let name = String::from_utf8_lossy(&name);
        let base_name = name.split(';').next().unwrap_or("");
        let wanted = attribute.is_some_and(|a| a.eq_ignore_ascii_case(base_name));
        let set = partial.next()?;
        if !wanted {
            continue;
        }
        let PL::C(items) = set.payload else {
            return None;
        };
        for item in items {
            values.push(item.expect_primitive()?);
        }
    }
    Some(Entry { dn, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::TagClass;

    fn primitive(id: u64, bytes: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::P(bytes.to_vec()),
        }
    }

    fn constructed(class: TagClass, id: u64, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(inner),
        }
    }

    fn entry(dn: &[u8], attrs: &[(&str, &[&[u8]])]) -> StructureTag {
        let attrs = attrs
            .iter()
            .map(|(name, values)| {
                constructed(
                    TagClass::Universal,
                    16,
                    vec![
                        primitive(4, name.as_bytes()),
                        constructed(
                            TagClass::Universal,
                            17,
                            values.iter().map(|v| primitive(4, v)).collect(),
                        ),
                    ],
                )
            })
            .collect();
        constructed(
            TagClass::Application,
            4,
            vec![
                primitive(4, dn),
                constructed(TagClass::Universal, 16, attrs),
            ],
        )
    }

    #[test]
    fn entries_are_parsed_without_panics() {
        let tag = entry(
            b"uid=a,dc=example,dc=org",
            &[
                ("cn", &[b"A"]),
                ("userpassword", &[b"{SSHA}x", b"\xffbinary"]),
                ("userPassword;binary", &[b"second"]),
            ],
        );
        let parsed = parse_entry(tag.clone(), Some("userPassword")).unwrap();
        assert_eq!(parsed.dn, "uid=a,dc=example,dc=org");
        assert_eq!(
            parsed.values,
            [
                b"{SSHA}x".to_vec(),
                b"\xffbinary".to_vec(),
                b"second".to_vec()
            ]
        );
        assert!(parse_entry(tag, None).unwrap().values.is_empty());
        // Not an entry, a DN that isn't UTF-8, a missing part: None, never a panic.
        assert!(parse_entry(primitive(4, b"x"), None).is_none());
        assert!(parse_entry(entry(b"\xff", &[]), None).is_none());
        let truncated = constructed(TagClass::Application, 4, vec![primitive(4, b"dn")]);
        assert!(parse_entry(truncated, None).is_none());
    }

    #[test]
    fn referral_urls() {
        let reference = constructed(
            TagClass::Application,
            19,
            vec![
                primitive(4, b"ldap://a.example.org/ou=people,dc=example,dc=org??sub"),
                primitive(4, b"ldaps://b.example.org:636/"),
            ],
        );
        assert_eq!(
            parse_urls(reference).unwrap(),
            [
                "ldap://a.example.org/ou=people,dc=example,dc=org??sub",
                "ldaps://b.example.org:636/"
            ]
        );
        assert!(
            parse_urls(constructed(
                TagClass::Application,
                19,
                vec![primitive(4, b"\xff")]
            ))
            .is_none()
        );
        assert_eq!(
            referral_base("ldap://a/ou=people,dc=example,dc=org??sub").as_deref(),
            Some("ou=people,dc=example,dc=org")
        );
        assert_eq!(
            referral_base("ldap://a/ou=a%20b,dc=x").as_deref(),
            Some("ou=a b,dc=x")
        );
        assert_eq!(referral_base("ldap://a/"), None);
        assert_eq!(referral_base("ldap://a"), None);
    }

    /// A referral may not take the passwords from TLS (or this host) to clear text on the
    /// network; anything else is followed.
    #[test]
    fn referrals_never_drop_tls() {
        let server = |uri| super::super::config::parse_server(uri).unwrap();
        let ldaps = server("ldaps://ldap1.example.org");
        let ldap_remote = server("ldap://ldap2.example.org");
        let ldap_loopback = server("ldap://127.0.0.1:3890");
        let ldap_localhost = server("ldap://localhost");
        let ldapi = server("ldapi://");
        // From TLS (ldaps:// or StartTLS) to clear text on the network: refused.
        assert!(downgrades(&ldaps, true, &ldap_remote, false));
        let starttls = server("ldap://ldap1.example.org");
        assert!(downgrades(&starttls, true, &ldap_remote, false));
        // From this host (ldapi, loopback) to clear text on the network: refused too.
        for local in [&ldapi, &ldap_loopback, &ldap_localhost] {
            assert!(downgrades(local, false, &ldap_remote, false), "{local}");
        }
        // To TLS, to this host, or from a session already in clear on the network: followed.
        assert!(!downgrades(
            &ldaps,
            true,
            &server("ldaps://ldap2.example.org"),
            true
        ));
        assert!(!downgrades(&ldaps, true, &ldap_remote, true), "StartTLS");
        assert!(!downgrades(&ldaps, true, &ldap_loopback, false));
        assert!(!downgrades(&ldaps, true, &ldapi, false));
        assert!(!downgrades(
            &ldap_remote,
            false,
            &server("ldap://ldap3"),
            false
        ));
        assert!(!downgrades(&ldap_loopback, false, &ldap_localhost, false));
    }

    /// ldap3 logs through the `log` crate: nothing may route that to a log of ours
    /// (no backend in the dependency graph, no logger installed by our code).
    #[test]
    fn no_log_backend_can_route_ldap3_output() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
        for backend in [
            "env_logger",
            "pretty_env_logger",
            "log4rs",
            "fern",
            "simplelog",
            "simple_logger",
            "stderrlog",
            "flexi_logger",
            "syslog",
            "tracing-log",
            "systemd-journal-logger",
        ] {
            assert!(
                !lock.contains(&format!("name = \"{backend}\"\n")),
                "{backend} is in Cargo.lock: make sure it never receives ldap3's output"
            );
        }
        let mut stack = vec![root.join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && path != root.join(file!())
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for call in ["set_logger", "set_boxed_logger", "set_max_level"] {
                        assert!(!text.contains(call), "{} calls log::{call}", path.display());
                    }
                }
            }
        }
    }

    #[test]
    fn result_texts_name_the_code() {
        let result = LdapResult {
            rc: 49,
            matched: String::new(),
            text: "bad\ncredentials".into(),
            refs: Vec::new(),
            ctrls: Vec::new(),
        };
        assert_eq!(
            result_text(&result),
            "result code 49 (invalidCredentials): bad\\x0acredentials"
        );
        // Sanitized once: the escape's backslash is not escaped again.
        assert_eq!(
            describe(&ldap3::LdapError::LdapResult { result }),
            "result code 49 (invalidCredentials): bad\\x0acredentials"
        );
    }

    /// The URL handed to ldap3 is the server's display form.
    #[test]
    fn server_urls() {
        for (uri, url) in [
            ("ldap://127.0.0.1:3890/dc=x", "ldap://127.0.0.1:3890"),
            ("ldaps://[::1]/", "ldaps://[::1]:636"),
            ("ldap://[2001:db8::1]:10389", "ldap://[2001:db8::1]:10389"),
            ("LDAP://ldap.example.org", "ldap://ldap.example.org:389"),
        ] {
            let server = super::super::config::parse_server(uri).unwrap();
            assert_eq!(server.to_string(), url, "{uri}");
        }
    }
}
