//! The `-a ldap` settings, read from upstream's `saslauthd.conf` (`-O PATH`, default
//! `/etc/saslauthd.conf`) with [`ConfFile`]: every key of upstream 2.1.28, the last
//! occurrence of a key winning as upstream reads it (an alias counts as the same key).
//!
//! Unlike upstream, which reads the file on the first request, silently ignores what it
//! doesn't understand and answers `NO` to everything when the file is broken, the file is
//! read at start (and on `SIGHUP`): a missing file, a malformed line or a value we can't use
//! is an error naming the file, the line and the key. Unknown keys are allowed (deployed
//! files carry `log_level`, `ldap_port`, ...) and named in one log line. Switches take
//! `yes/no/true/false/on/off/1/0` in any case (upstream reads `Yes` as *no*). Trailing blanks
//! are dropped from every value except the bind password.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::tokens::Template;
use crate::mech::conf_file::{self, ConfError, ConfFile, Entry};
use crate::mech::net::{Host, parse_host, split_authority};
use crate::secret::Password;

/// `-O` default.
pub const DEFAULT_PATH: &str = "/etc/saslauthd.conf";
/// libldap's default `ldapi://` socket on Debian.
pub const DEFAULT_LDAPI_PATH: &str = "/var/run/slapd/ldapi";
/// Longest `ldap_timeout` accepted.
pub const MAX_TIMEOUT_SECS: u64 = 3600;

/// How a password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Search the user's entry (as the service identity), then bind as it.
    Bind,
    /// Bind as the DN `ldap_filter` expands to; no search.
    FastBind,
    /// Search the user's entry and compare its `ldap_password_attr` values here.
    Custom,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Bind => "bind",
            Method::FastBind => "fastbind",
            Method::Custom => "custom",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Base,
    One,
    Sub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deref {
    Never,
    Search,
    Find,
    Always,
}

/// One entry of `ldap_servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// `ldap://` (`implicit_tls` false) or `ldaps://`.
    Tcp {
        host: Host,
        port: u16,
        implicit_tls: bool,
    },
    /// `ldapi://`: a Unix socket.
    Ipc { path: PathBuf },
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Server::Tcp {
                host,
                port,
                implicit_tls,
            } => write!(
                f,
                "{}://{host}:{port}",
                if *implicit_tls { "ldaps" } else { "ldap" }
            ),
            Server::Ipc { path } => write!(f, "ldapi://{}", path.display()),
        }
    }
}

/// Who searches (bind, custom) and who checks groups after a bind.
#[derive(Debug)]
pub struct ServiceIdentity {
    pub dn: String,
    pub password: Password,
}

/// The group check after a good password.
#[derive(Debug)]
pub enum GroupCheck {
    /// `ldap_group_match_method: attr`: compare `attr` of `dn` with the user's DN.
    Attr { dn: Template, attr: String },
    /// `ldap_group_match_method: filter`: a member when the search finds an entry.
    Filter {
        base: Template,
        filter: Template,
        scope: Scope,
    },
}

/// TLS settings (used by `ldaps://` servers and `ldap_start_tls`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// `ldap_tls_check_peer`; verification is on unless this is explicitly off.
    pub check_peer: bool,
    pub cacert_file: Option<PathBuf>,
    pub cacert_dir: Option<PathBuf>,
    /// `ldap_tls_cert` and `ldap_tls_key`, both or neither.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// Everything `-a ldap` runs from.
#[derive(Debug)]
pub struct Settings {
    pub path: PathBuf,
    pub servers: Vec<Server>,
    pub service: Option<ServiceIdentity>,
    pub method: Method,
    pub search_base: Template,
    pub filter: Template,
    pub scope: Scope,
    pub password_attr: String,
    pub group: Option<GroupCheck>,
    pub default_realm: String,
    pub timeout: Duration,
    pub time_limit: i32,
    pub size_limit: i32,
    pub deref: Deref,
    pub referrals: bool,
    pub start_tls: bool,
    pub tls: TlsSettings,
    /// Keys present but not ours (for one log line).
    pub unknown_keys: Vec<String>,
    /// Things an administrator should know: keys accepted but without effect here.
    pub notes: Vec<String>,
}

/// Every key `-a ldap` knows (upstream 2.1.28's), lower-case, but the SASL-bind keys of
/// `SASL_KEYS`.
pub const KNOWN_KEYS: &[&str] = &[
    "ldap_servers",
    "ldap_bind_dn",
    "ldap_password",
    "ldap_bind_pw",
    "ldap_version",
    "ldap_search_base",
    "ldap_filter",
    "ldap_scope",
    "ldap_auth_method",
    "ldap_password_attr",
    "ldap_group_dn",
    "ldap_group_attr",
    "ldap_group_match_method",
    "ldap_group_filter",
    "ldap_group_search_base",
    "ldap_group_scope",
    "ldap_default_realm",
    "ldap_default_domain",
    "ldap_timeout",
    "ldap_time_limit",
    "ldap_size_limit",
    "ldap_deref",
    "ldap_referrals",
    "ldap_restart",
    "ldap_start_tls",
    "ldap_tls_check_peer",
    "ldap_tls_cacert_file",
    "ldap_tls_cacert_dir",
    "ldap_tls_cert",
    "ldap_tls_key",
    "ldap_tls_ciphers",
    "ldap_use_sasl",
    "ldap_debug",
];

/// The SASL-bind keys other than `ldap_use_sasl` (known too): without it they do nothing.
const SASL_KEYS: &[&str] = &[
    "ldap_mech",
    "ldap_sasl_mech",
    "ldap_id",
    "ldap_sasl_authc_id",
    "ldap_authz_id",
    "ldap_sasl_authz_id",
    "ldap_realm",
    "ldap_sasl_realm",
    "ldap_sasl_secprops",
];

/// Reads the file `path`.
pub fn read(path: &Path) -> Result<Settings, ConfError> {
    let file = ConfFile::read(path)?;
    Settings::from_file(&file)
}

/// The file's values, one key at a time.
struct Reader<'a> {
    file: &'a ConfFile,
}

impl<'a> Reader<'a> {
    /// The last entry of any of `keys` (aliases of one setting).
    fn entry(&self, keys: &[&str]) -> Option<&'a Entry> {
        self.file
            .entries
            .iter()
            .rev()
            .find(|entry| keys.contains(&entry.key.as_str()))
    }

    /// The value (trailing blanks dropped) and its entry.
    fn value(&self, keys: &[&str]) -> Option<(&'a str, &'a Entry)> {
        self.entry(keys)
            .map(|entry| (entry.value.trim_end_matches([' ', '\t']), entry))
    }

    /// An attribute description (see [`check_attribute`]), or `default`.
    fn attribute(&self, key: &str, default: &str) -> Result<String, ConfError> {
        match self.value(&[key]) {
            None => Ok(default.to_string()),
            Some((value, entry)) => {
                check_attribute(self, entry, value)?;
                Ok(value.to_string())
            }
        }
    }

    fn invalid(&self, entry: &Entry, message: impl fmt::Display) -> ConfError {
        self.file.invalid(entry, message)
    }

    fn switch(&self, key: &str, default: bool) -> Result<bool, ConfError> {
        match self.value(&[key]) {
            None => Ok(default),
            Some((value, entry)) => conf_file::switch(value).ok_or_else(|| {
                self.invalid(
                    entry,
                    format!("{value:?} is not a switch (yes/no, true/false, on/off, 1/0)"),
                )
            }),
        }
    }

    fn integer(&self, key: &str, default: i64, range: (i64, i64)) -> Result<i64, ConfError> {
        match self.value(&[key]) {
            None => Ok(default),
            Some((value, entry)) => match value.parse::<i64>() {
                Ok(n) if (range.0..=range.1).contains(&n) => Ok(n),
                _ => Err(self.invalid(
                    entry,
                    format!(
                        "{value:?} is not a whole number from {} to {}",
                        range.0, range.1
                    ),
                )),
            },
        }
    }

    /// One of `words` (case-insensitive) → its value.
    fn choice<T: Copy>(&self, key: &str, default: T, words: &[(&str, T)]) -> Result<T, ConfError> {
        match self.value(&[key]) {
            None => Ok(default),
            Some((value, entry)) => words
                .iter()
                .find(|(word, _)| word.eq_ignore_ascii_case(value))
                .map(|(_, choice)| *choice)
                .ok_or_else(|| {
                    let known: Vec<&str> = words.iter().map(|(word, _)| *word).collect();
                    self.invalid(
                        entry,
                        format!("{value:?} is not one of: {}", known.join(", ")),
                    )
                }),
        }
    }

    fn template(&self, key: &str, default: &str, allow_dn: bool) -> Result<Template, ConfError> {
        match self.value(&[key]) {
            None => Ok(Template::parse(default, allow_dn).expect("default templates parse")),
            Some((value, entry)) => {
                Template::parse(value, allow_dn).map_err(|why| self.invalid(entry, why))
            }
        }
    }

    /// A path that must name an existing file (or directory, with `dir`).
    fn path(&self, key: &str, dir: bool) -> Result<Option<PathBuf>, ConfError> {
        let Some((value, entry)) = self.value(&[key]) else {
            return Ok(None);
        };
        let path = PathBuf::from(value);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() == dir => Ok(Some(path)),
            Ok(_) => Err(self.invalid(
                entry,
                format!(
                    "{} is not a {}",
                    path.display(),
                    if dir { "directory" } else { "file" }
                ),
            )),
            Err(error) => Err(self.invalid(entry, format!("{}: {error}", path.display()))),
        }
    }
}

impl Settings {
    /// The settings a parsed file describes.
    pub fn from_file(file: &ConfFile) -> Result<Settings, ConfError> {
        let r = Reader { file };
        let mut notes = Vec::new();

        if r.switch("ldap_use_sasl", false)? {
            let entry = r.entry(&["ldap_use_sasl"]).expect("the switch is set");
            return Err(r.invalid(
                entry,
                "SASL binds to the directory are not supported; remove ldap_use_sasl (and \
                 ldap_mech, ldap_id, ...) to use simple binds, over TLS or ldapi://",
            ));
        }
        let sasl_keys: Vec<&str> = SASL_KEYS
            .iter()
            .copied()
            .filter(|key| r.entry(&[key]).is_some())
            .collect();
        if !sasl_keys.is_empty() {
            notes.push(format!(
                "{} ignored: they only matter with ldap_use_sasl, which is off",
                sasl_keys.join(", ")
            ));
        }

        let servers = match r.value(&["ldap_servers"]) {
            None => vec![parse_server("ldap://localhost/").expect("the default parses")],
            Some((value, entry)) => {
                let servers = value
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|uri| !uri.is_empty())
                    .map(|uri| parse_server(uri).map_err(|why| r.invalid(entry, why)))
                    .collect::<Result<Vec<_>, _>>()?;
                if servers.is_empty() {
                    return Err(r.invalid(entry, "no server URI"));
                }
                servers
            }
        };

        let bind_dn = r.value(&["ldap_bind_dn"]);
        // The password is kept exactly as written (only a CRLF file's CR goes).
        let bind_pw = r.entry(&["ldap_password", "ldap_bind_pw"]);
        let service = match (bind_dn, bind_pw) {
            (None, None) => None,
            (Some((dn, _)), Some(pw)) => Some(ServiceIdentity {
                dn: dn.to_string(),
                password: Password::new(pw.value.as_bytes().to_vec()),
            }),
            (Some((_, entry)), None) => {
                return Err(r.invalid(
                    entry,
                    "no ldap_password (or ldap_bind_pw) for this DN: a bind with a DN and no \
                     password is unauthenticated, and directories refuse or ignore it",
                ));
            }
            (None, Some(entry)) => {
                return Err(r.invalid(entry, "a password without ldap_bind_dn"));
            }
        };

        let method = r.choice(
            "ldap_auth_method",
            Method::Bind,
            &[
                ("bind", Method::Bind),
                ("fastbind", Method::FastBind),
                ("custom", Method::Custom),
            ],
        )?;
        if method == Method::FastBind && service.is_some() {
            notes.push(
                "ldap_bind_dn is not used with ldap_auth_method: fastbind (the user binds \
                 directly)"
                    .into(),
            );
        }
        let scope_words = [
            ("sub", Scope::Sub),
            ("one", Scope::One),
            ("base", Scope::Base),
        ];
        let search_base = r.template("ldap_search_base", "", false)?;
        let filter = r.template("ldap_filter", "(uid=%u)", false)?;
        let scope = r.choice("ldap_scope", Scope::Sub, &scope_words)?;
        if method == Method::FastBind {
            if filter.source().trim_start().starts_with('(') || !filter.source().contains('=') {
                let message = format!(
                    "{:?}: with ldap_auth_method: fastbind, ldap_filter is the template of the \
                     user's DN (e.g. uid=%u,ou=people,dc=example,dc=org), not a search filter",
                    filter.source()
                );
                return Err(match r.entry(&["ldap_filter"]) {
                    Some(entry) => r.invalid(entry, message),
                    None => r.invalid(
                        r.entry(&["ldap_auth_method"]).expect("fastbind is set"),
                        format!("fastbind needs ldap_filter; the default {message}"),
                    ),
                });
            }
        } else {
            check_filter(&r, "ldap_filter", &filter)?;
        }
        let password_attr = r.attribute("ldap_password_attr", "userPassword")?;

        let group = group_check(&r, scope_words)?;

        let timeout = r.integer(
            "ldap_timeout",
            5,
            (1, i64::try_from(MAX_TIMEOUT_SECS).unwrap_or(i64::MAX)),
        )?;
        let time_limit = r.integer("ldap_time_limit", 5, (0, i64::from(i32::MAX)))?;
        let size_limit = r.integer("ldap_size_limit", 1, (0, i64::from(i32::MAX)))?;
        let deref = r.choice(
            "ldap_deref",
            Deref::Never,
            &[
                ("never", Deref::Never),
                ("search", Deref::Search),
                ("find", Deref::Find),
                ("always", Deref::Always),
            ],
        )?;
        let referrals = r.switch("ldap_referrals", false)?;
        r.switch("ldap_restart", true)?;
        let version = r.integer("ldap_version", 3, (2, 3))?;
        if version == 2 {
            notes.push("ldap_version: 2 ignored: LDAPv3 is always used".into());
        }
        if let Some((_, entry)) = r.value(&["ldap_debug"]) {
            r.integer("ldap_debug", 0, (i64::from(i32::MIN), i64::from(i32::MAX)))?;
            notes.push(format!(
                "ldap_debug (line {}) ignored: -V (verbose) shows this mechanism's debug lines",
                entry.line
            ));
        }
        let start_tls = r.switch("ldap_start_tls", false)?;
        let tls = TlsSettings {
            check_peer: r.switch("ldap_tls_check_peer", true)?,
            cacert_file: r.path("ldap_tls_cacert_file", false)?,
            cacert_dir: r.path("ldap_tls_cacert_dir", true)?,
            client_identity: match (
                r.path("ldap_tls_cert", false)?,
                r.path("ldap_tls_key", false)?,
            ) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                (Some(_), None) => {
                    let entry = r.entry(&["ldap_tls_cert"]).expect("set");
                    return Err(r.invalid(entry, "ldap_tls_key is missing"));
                }
                (None, Some(_)) => {
                    let entry = r.entry(&["ldap_tls_key"]).expect("set");
                    return Err(r.invalid(entry, "ldap_tls_cert is missing"));
                }
            },
        };
        if let Some((_, entry)) = r.value(&["ldap_tls_ciphers"]) {
            notes.push(format!(
                "ldap_tls_ciphers (line {}) ignored: TLS 1.2 or later with OpenSSL's default \
                 cipher suites is used",
                entry.line
            ));
        }
        let uses_tls = start_tls
            || servers.iter().any(|server| {
                matches!(
                    server,
                    Server::Tcp {
                        implicit_tls: true,
                        ..
                    }
                )
            });
        if !uses_tls
            && (tls.cacert_file.is_some()
                || tls.cacert_dir.is_some()
                || tls.client_identity.is_some())
        {
            notes.push(
                "ldap_tls_* settings have no effect: no server is ldaps:// and ldap_start_tls \
                 is off"
                    .into(),
            );
        }
        let default_realm = r
            .value(&["ldap_default_realm", "ldap_default_domain"])
            .map(|(value, _)| value.to_string())
            .unwrap_or_default();

        // The file may be shared with -a kerberos5, whose keys are krb5_*.
        let unknown_keys = file
            .unknown_keys(|key| {
                KNOWN_KEYS.contains(&key) || SASL_KEYS.contains(&key) || key.starts_with("krb5_")
            })
            .into_iter()
            .map(str::to_string)
            .collect();
        Ok(Settings {
            path: file.path.clone(),
            servers,
            service,
            method,
            search_base,
            filter,
            scope,
            password_attr,
            group,
            default_realm,
            timeout: Duration::from_secs(timeout.unsigned_abs()),
            time_limit: i32::try_from(time_limit).unwrap_or(i32::MAX),
            size_limit: i32::try_from(size_limit).unwrap_or(i32::MAX),
            deref,
            referrals,
            start_tls,
            tls,
            unknown_keys,
            notes,
        })
    }

    /// Whether connections to `server` use TLS.
    pub fn uses_tls(&self, server: &Server) -> bool {
        match server {
            Server::Tcp { implicit_tls, .. } => *implicit_tls || self.start_tls,
            Server::Ipc { .. } => false,
        }
    }
}

/// `ldap_group_*`: enabled by `ldap_group_dn` or `ldap_group_filter`.
fn group_check(
    r: &Reader<'_>,
    scope_words: [(&str, Scope); 3],
) -> Result<Option<GroupCheck>, ConfError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Match {
        Attr,
        Filter,
    }
    let dn = r.value(&["ldap_group_dn"]);
    let filter = r.value(&["ldap_group_filter"]);
    if dn.is_none() && filter.is_none() {
        return Ok(None);
    }
    let method = r.choice(
        "ldap_group_match_method",
        Match::Attr,
        &[("attr", Match::Attr), ("filter", Match::Filter)],
    )?;
    match method {
        Match::Attr => {
            let Some((_, entry)) = dn else {
                let (_, entry) = filter.expect("one of them is set");
                return Err(r.invalid(
                    entry,
                    "ldap_group_match_method is attr (the default), which needs \
                     ldap_group_dn; set ldap_group_match_method: filter to use this filter",
                ));
            };
            let dn = r.template("ldap_group_dn", "", false)?;
            if dn.source().is_empty() {
                return Err(r.invalid(entry, "empty group DN"));
            }
            let attr = r.attribute("ldap_group_attr", "uniqueMember")?;
            Ok(Some(GroupCheck::Attr { dn, attr }))
        }
        Match::Filter => {
            let Some(_) = filter else {
                let (_, entry) = dn.expect("one of them is set");
                return Err(r.invalid(
                    entry,
                    "ldap_group_match_method is filter, which needs ldap_group_filter",
                ));
            };
            let group_filter = r.template("ldap_group_filter", "", true)?;
            check_filter(r, "ldap_group_filter", &group_filter)?;
            // Upstream copies ldap_search_base when no group search base is set.
            let base = match r.value(&["ldap_group_search_base"]) {
                Some(_) => r.template("ldap_group_search_base", "", true)?,
                None => r.template("ldap_search_base", "", false)?,
            };
            let scope = r.choice("ldap_group_scope", Scope::Sub, &scope_words)?;
            Ok(Some(GroupCheck::Filter {
                base,
                filter: group_filter,
                scope,
            }))
        }
    }
}

/// A filter template must make a valid filter for any login: tried with one full of
/// metacharacters.
fn check_filter(r: &Reader<'_>, key: &str, template: &Template) -> Result<(), ConfError> {
    use super::tokens::{Position, Values};
    let values = Values {
        login: b"u*(x)\\y@d.example.org",
        service: b"imap",
        realm: b"example.org",
        user_dn: Some("uid=u,dc=example,dc=org"),
    };
    let expanded = template.expand(&values, Position::Filter);
    if ldap3::parse_filter(&expanded).is_err() {
        let entry = r.entry(&[key]).expect("only set values are checked");
        return Err(r.invalid(
            entry,
            format!("{:?} is not a valid LDAP search filter", template.source()),
        ));
    }
    Ok(())
}

/// An attribute description: letters, digits, `-`, `;` (options) or a numeric OID.
fn check_attribute(r: &Reader<'_>, entry: &Entry, value: &str) -> Result<(), ConfError> {
    let valid = !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b';' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(r.invalid(entry, format!("{value:?} is not an attribute name")))
    }
}

/// One URI of `ldap_servers`: `ldap://host[:port][/...]`, `ldaps://...`, `ldapi://[path]`
/// (the path %-encoded, empty for Debian's default socket). A DN or anything else after the
/// host is ignored, as libldap ignores it.
pub fn parse_server(uri: &str) -> Result<Server, String> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(format!(
            "{uri:?} is not an LDAP URI (ldap://HOST, ldaps://HOST or ldapi://PATH)"
        ));
    };
    let authority = rest.split('/').next().unwrap_or("");
    match scheme.to_ascii_lowercase().as_str() {
        scheme @ ("ldap" | "ldaps") => {
            let implicit_tls = scheme == "ldaps";
            let (host, port) =
                split_authority(authority, false).map_err(|why| format!("{uri:?}: {why}"))?;
            let host = if host.is_empty() {
                Host::Name("localhost".into())
            } else {
                parse_host(host).map_err(|why| format!("{uri:?}: {why}"))?
            };
            let port = match port {
                None => {
                    if implicit_tls {
                        636
                    } else {
                        389
                    }
                }
                Some(port) => match port.parse::<u16>() {
                    Ok(port) if port > 0 => port,
                    _ => return Err(format!("{uri:?}: port {port:?} is not in 1-65535")),
                },
            };
            Ok(Server::Tcp {
                host,
                port,
                implicit_tls,
            })
        }
        "ldapi" => {
            let path = if authority.is_empty() {
                PathBuf::from(DEFAULT_LDAPI_PATH)
            } else {
                PathBuf::from(
                    percent_decode(authority)
                        .ok_or_else(|| format!("{uri:?}: bad %-escape in the socket path"))?,
                )
            };
            if !path.is_absolute() {
                return Err(format!(
                    "{uri:?}: the socket path must be absolute (%2F for each /)"
                ));
            }
            Ok(Server::Ipc { path })
        }
        other => Err(format!(
            "{uri:?}: unknown scheme {other:?} (ldap, ldaps or ldapi)"
        )),
    }
}

/// `%XX` escapes decoded; `None` for a broken escape or a result that isn't UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `host` is this machine (passwords sent there in clear never cross a network).
fn is_loopback(host: &Host) -> bool {
    match host {
        Host::Ip(ip) => ip.is_loopback(),
        Host::Name(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

impl Server {
    /// Whether a simple bind to this server can cross a network in clear text.
    pub fn clear_over_network(&self, tls: bool) -> bool {
        match self {
            Server::Tcp { host, .. } => !tls && !is_loopback(host),
            Server::Ipc { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv6Addr};

    fn parse(text: &str) -> Result<Settings, ConfError> {
        let file = ConfFile::parse(Path::new("/etc/saslauthd.conf"), text)?;
        Settings::from_file(&file)
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(settings) => panic!("accepted: {settings:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn defaults_are_upstreams() {
        let s = parse("").unwrap();
        assert_eq!(
            s.servers,
            [Server::Tcp {
                host: Host::Name("localhost".into()),
                port: 389,
                implicit_tls: false
            }]
        );
        assert!(s.service.is_none());
        assert_eq!(s.method, Method::Bind);
        assert_eq!(s.search_base.source(), "");
        assert_eq!(s.filter.source(), "(uid=%u)");
        assert_eq!(s.scope, Scope::Sub);
        assert_eq!(s.password_attr, "userPassword");
        assert!(s.group.is_none());
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!((s.time_limit, s.size_limit), (5, 1));
        assert_eq!(s.deref, Deref::Never);
        assert!(!s.referrals && !s.start_tls);
        assert!(s.tls.check_peer, "verification is on by default");
        assert!(s.unknown_keys.is_empty() && s.notes.is_empty());
    }

    #[test]
    fn a_typical_file() {
        let s = parse(
            "# OpenLDAP with a service account\n\
             ldap_servers: ldaps://ldap1.example.org ldap://[::1]:10389/ ldapi://%2Frun%2Fslapd%2Fldapi\n\
             ldap_bind_dn: cn=reader,dc=example,dc=org\n\
             ldap_bind_pw: first\n\
             ldap_password: Reader pw \n\
             ldap_search_base: ou=people,dc=example,dc=org  \n\
             ldap_filter: (&(uid=%U)(mail=*))\n\
             ldap_scope: ONE\n\
             ldap_auth_method: Custom\n\
             ldap_timeout: 10\n\
             ldap_tls_check_peer: Yes\n\
             ldap_default_domain: example.org\n\
             log_level: 10\n\
             ldap_port: 389\n",
        )
        .unwrap();
        assert_eq!(s.servers.len(), 3);
        assert_eq!(
            s.servers[1],
            Server::Tcp {
                host: Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                port: 10389,
                implicit_tls: false
            }
        );
        assert_eq!(
            s.servers[2],
            Server::Ipc {
                path: "/run/slapd/ldapi".into()
            }
        );
        let service = s.service.as_ref().unwrap();
        assert_eq!(service.dn, "cn=reader,dc=example,dc=org");
        // The last of the aliases wins; the password keeps its trailing blank.
        assert_eq!(service.password.as_bytes(), b"Reader pw ");
        assert_eq!(s.search_base.source(), "ou=people,dc=example,dc=org");
        assert_eq!(s.scope, Scope::One);
        assert_eq!(s.method, Method::Custom);
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert!(s.tls.check_peer, "Yes means yes");
        assert_eq!(s.default_realm, "example.org");
        assert_eq!(s.unknown_keys, ["log_level", "ldap_port"]);
        let shared = parse("krb5_keytab: /etc/krb5.keytab\nkrb5_imap_instance: mail\n").unwrap();
        assert!(
            shared.unknown_keys.is_empty(),
            "kerberos5's keys are not unknown"
        );
    }

    #[test]
    fn the_last_occurrence_wins() {
        let s = parse("ldap_filter: (cn=%u)\nldap_filter: (uid=%u)\nldap_default_realm: a\nldap_default_domain: b\n").unwrap();
        assert_eq!(s.filter.source(), "(uid=%u)");
        assert_eq!(s.default_realm, "b");
    }

    #[test]
    fn switches_mean_what_they_say() {
        for (value, on) in [
            ("Yes", true),
            ("TRUE", true),
            ("on", true),
            ("no", false),
            ("Off", false),
            ("0", false),
        ] {
            let s = parse(&format!(
                "ldap_tls_check_peer: {value}\nldap_start_tls: {value}\n"
            ))
            .unwrap();
            assert_eq!((s.tls.check_peer, s.start_tls), (on, on), "{value}");
        }
        assert!(
            error("ldap_start_tls: demand\n")
                .contains("line 1: ldap_start_tls: \"demand\" is not a switch")
        );
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        for (text, needle) in [
            (
                "\nldap_timeout: soon\n",
                "/etc/saslauthd.conf, line 2: ldap_timeout: \"soon\" is not a whole number from 1 to 3600",
            ),
            (
                "ldap_timeout: 0\n",
                "ldap_timeout: \"0\" is not a whole number",
            ),
            ("ldap_size_limit: -1\n", "ldap_size_limit"),
            (
                "ldap_auth_method: sasl\n",
                "ldap_auth_method: \"sasl\" is not one of: bind, fastbind, custom",
            ),
            ("ldap_scope: subtree\n", "ldap_scope"),
            ("ldap_deref: sometimes\n", "ldap_deref"),
            ("ldap_filter: (uid=%x)\n", "ldap_filter: unknown token `%x`"),
            (
                "ldap_filter: uid=%u)\n",
                "ldap_filter: \"uid=%u)\" is not a valid LDAP search filter",
            ),
            ("ldap_filter: (uid=%D)\n", "only known in ldap_group_filter"),
            ("ldap_servers: http://x\n", "unknown scheme"),
            ("ldap_servers: ldap://x:0/\n", "1-65535"),
            ("ldap_servers: ldap://[::1/\n", "missing ']'"),
            ("ldap_servers: localhost\n", "not an LDAP URI"),
            ("ldap_servers: ldapi://relative\n", "must be absolute"),
            (
                "ldap_bind_dn: cn=x\n",
                "line 1: ldap_bind_dn: no ldap_password",
            ),
            ("ldap_bind_pw: x\n", "a password without ldap_bind_dn"),
            (
                "ldap_use_sasl: yes\n",
                "SASL binds to the directory are not supported",
            ),
            (
                "ldap_tls_cacert_file: /nonexistent/ca.pem\n",
                "ldap_tls_cacert_file: /nonexistent/ca.pem: No such file",
            ),
            ("ldap_tls_cacert_dir: /etc/passwd\n", "is not a directory"),
            ("ldap_tls_cert: /etc/passwd\n", "ldap_tls_key is missing"),
            ("ldap_group_filter: (memberUid=%U)\n", "needs ldap_group_dn"),
            (
                "ldap_group_dn: cn=g\nldap_group_match_method: filter\n",
                "needs ldap_group_filter",
            ),
            (
                "ldap_group_dn: cn=g\nldap_group_attr: bad attr\n",
                "is not an attribute name",
            ),
            ("ldap_password_attr: (x)\n", "is not an attribute name"),
            ("ldap_version: 4\n", "ldap_version"),
            (
                "ldap_auth_method: fastbind\nldap_filter: (uid=%u)\n",
                "line 2: ldap_filter: \"(uid=%u)\": with ldap_auth_method: fastbind, ldap_filter is the template",
            ),
            (
                "ldap_auth_method: fastbind\n",
                "line 1: ldap_auth_method: fastbind needs ldap_filter",
            ),
            (
                "ldap_timeout : 5\n",
                "line 1: key `ldap_timeout` must be followed directly by `:`",
            ),
        ] {
            let got = error(text);
            assert!(got.contains(needle), "{text:?}: {got}");
            assert!(
                got.starts_with("/etc/saslauthd.conf, line "),
                "{text:?}: {got}"
            );
        }
    }

    #[test]
    fn group_checks() {
        let s = parse("ldap_group_dn: cn=mail,ou=groups,dc=%2,dc=%1\n").unwrap();
        match s.group {
            Some(GroupCheck::Attr { dn, attr }) => {
                assert_eq!(dn.source(), "cn=mail,ou=groups,dc=%2,dc=%1");
                assert_eq!(attr, "uniqueMember");
            }
            other => panic!("{other:?}"),
        }
        let s = parse(
            "ldap_search_base: dc=example,dc=org\nldap_group_match_method: filter\n\
             ldap_group_filter: (&(cn=mail)(member=%D))\nldap_group_scope: one\n",
        )
        .unwrap();
        match s.group {
            Some(GroupCheck::Filter {
                base,
                filter,
                scope,
            }) => {
                assert_eq!(
                    base.source(),
                    "dc=example,dc=org",
                    "copied from the search base"
                );
                assert_eq!(filter.source(), "(&(cn=mail)(member=%D))");
                assert_eq!(scope, Scope::One);
            }
            other => panic!("{other:?}"),
        }
        // A group filter of any length (upstream cuts it at 127 bytes).
        let long = format!(
            "(|{})",
            (0..40)
                .map(|i| format!("(cn=group{i})"))
                .collect::<String>()
        );
        let s = parse(&format!(
            "ldap_group_match_method: filter\nldap_group_filter: {long}\n"
        ))
        .unwrap();
        assert!(
            matches!(s.group, Some(GroupCheck::Filter { filter, .. }) if filter.source() == long)
        );
    }

    #[test]
    fn notes_for_keys_without_effect() {
        let s = parse("ldap_mech: PLAIN\nldap_tls_ciphers: HIGH\nldap_debug: -1\nldap_version: 2\nldap_use_sasl: no\n").unwrap();
        let notes = s.notes.join("\n");
        for needle in [
            "ldap_mech ignored",
            "ldap_tls_ciphers (line 2) ignored",
            "ldap_debug (line 3) ignored",
            "ldap_version: 2 ignored",
        ] {
            assert!(notes.contains(needle), "{needle}: {notes}");
        }
        let s = parse("ldap_tls_cacert_file: /etc/passwd\n").unwrap();
        assert!(s.notes.join("\n").contains("have no effect"));
        // The SASL keys are known (noted, not unknown), and in one list only.
        let text: String = SASL_KEYS.iter().map(|key| format!("{key}: x\n")).collect();
        let s = parse(&text).unwrap();
        assert!(s.unknown_keys.is_empty(), "{:?}", s.unknown_keys);
        assert!(s.notes.join("\n").contains(&SASL_KEYS.join(", ")));
        assert!(SASL_KEYS.iter().all(|key| !KNOWN_KEYS.contains(key)));
    }

    #[test]
    fn server_uris() {
        let tcp = |uri: &str| match parse_server(uri).unwrap() {
            Server::Tcp {
                host,
                port,
                implicit_tls,
            } => (host.to_string(), port, implicit_tls),
            other => panic!("{other:?}"),
        };
        assert_eq!(tcp("ldap://localhost/"), ("localhost".into(), 389, false));
        assert_eq!(
            tcp("LDAPS://ldap.example.org"),
            ("ldap.example.org".into(), 636, true)
        );
        assert_eq!(tcp("ldap:///"), ("localhost".into(), 389, false));
        assert_eq!(
            tcp("ldap://127.0.0.1:10389/dc=example,dc=org"),
            ("127.0.0.1".into(), 10389, false)
        );
        assert_eq!(tcp("ldaps://[::1]:10636"), ("[::1]".into(), 10636, true));
        assert_eq!(
            parse_server("ldapi://").unwrap(),
            Server::Ipc {
                path: DEFAULT_LDAPI_PATH.into()
            }
        );
        assert_eq!(
            parse_server("ldapi://%2Ftmp%2Flab%20x%2Fldapi/").unwrap(),
            Server::Ipc {
                path: "/tmp/lab x/ldapi".into()
            }
        );
        assert!(parse_server("ldapi://%2").is_err());
    }

    #[test]
    fn clear_text_over_a_network_is_known() {
        let s = parse_server("ldap://ldap.example.org/").unwrap();
        assert!(s.clear_over_network(false));
        assert!(!s.clear_over_network(true));
        assert!(
            !parse_server("ldap://localhost/")
                .unwrap()
                .clear_over_network(false)
        );
        assert!(
            !parse_server("ldap://[::1]/")
                .unwrap()
                .clear_over_network(false)
        );
        assert!(!parse_server("ldapi:///").unwrap().clear_over_network(false));
    }
}
