//! Which PAM service a request may use: the administrator's options (`--pam-services`,
//! `--pam-service-map`, `--pam-service`) and, without `--pam-services`, the services
//! refused by default.
//!
//! A client of the socket names the PAM service, and every PAM transaction runs as root.
//! Stacks such as Debian's `su`, `chfn` or `runuser` start with `auth sufficient
//! pam_rootok.so`, which says yes to any password because our real uid is 0; others serve
//! interactive logins, privilege changes or password changes, with side effects a mail
//! login must not trigger. So unless `--pam-services` lists the names clients may send,
//! [`Refusals`] refuses [`REFUSED_BY_DEFAULT`] plus every stack in `/etc/pam.d` whose auth
//! section reaches `pam_rootok` (found when the daemon starts).
//!
//! Names are compared the way Linux-PAM uses them: `pam_start` drops anything up to the
//! last `/` and lower-cases ASCII letters, so `SU`, `../su` and `/etc/pam.d/su` all are
//! `su`.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};

/// Longest service name accepted in the options (PAM service names are file names).
const MAX_SERVICE_NAME: usize = 255;

/// Why a service is refused by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Risk {
    /// Its auth stack trusts the caller's root uid (`pam_rootok`) on common distributions.
    TrustsRoot,
    /// It switches identity or grants privileges (sudo, polkit).
    Privileges,
    /// It changes passwords.
    PasswordChange,
    /// It serves interactive logins or sessions (pam_faildelay, pam_nologin, session
    /// and audit modules a mail login must not drive).
    Interactive,
    /// Found at startup: its auth section in `/etc/pam.d` reaches `pam_rootok`.
    FoundRootok,
}

impl Risk {
    pub fn describe(self) -> &'static str {
        match self {
            Risk::TrustsRoot => "its stack trusts root (pam_rootok)",
            Risk::Privileges => "it grants privileges",
            Risk::PasswordChange => "it changes passwords",
            Risk::Interactive => "it serves interactive logins",
            Risk::FoundRootok => "its auth stack in /etc/pam.d trusts root (pam_rootok)",
        }
    }
}

/// Refused without `--pam-services`, whether or not a stack of that name exists.
pub const REFUSED_BY_DEFAULT: &[(&str, Risk)] = &[
    ("su", Risk::TrustsRoot),
    ("su-l", Risk::TrustsRoot),
    ("runuser", Risk::TrustsRoot),
    ("runuser-l", Risk::TrustsRoot),
    ("chfn", Risk::TrustsRoot),
    ("chsh", Risk::TrustsRoot),
    ("newrole", Risk::TrustsRoot),
    ("run_init", Risk::TrustsRoot),
    ("sudo", Risk::Privileges),
    ("sudo-i", Risk::Privileges),
    ("doas", Risk::Privileges),
    ("polkit-1", Risk::Privileges),
    ("passwd", Risk::PasswordChange),
    ("chpasswd", Risk::PasswordChange),
    ("newusers", Risk::PasswordChange),
    ("chage", Risk::PasswordChange),
    ("login", Risk::Interactive),
    ("remote", Risk::Interactive),
    ("sshd", Risk::Interactive),
    ("cron", Risk::Interactive),
    ("atd", Risk::Interactive),
    ("systemd-user", Risk::Interactive),
    ("gdm-password", Risk::Interactive),
    ("gdm-autologin", Risk::Interactive),
    ("lightdm", Risk::Interactive),
    ("lightdm-autologin", Risk::Interactive),
    ("sddm", Risk::Interactive),
    ("sddm-autologin", Risk::Interactive),
    ("xdm", Risk::Interactive),
    ("xscreensaver", Risk::Interactive),
    ("cockpit", Risk::Interactive),
];

/// Where Linux-PAM reads the stacks from.
pub const PAM_D: &str = "/etc/pam.d";

/// How deep `include`, `substack` and `@include` are followed when looking for
/// `pam_rootok` (Linux-PAM itself stops at 16 levels of `include`).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Which PAM service a request's service name leads to (`--pam-services`,
/// `--pam-service-map`, `--pam-service`).
///
/// Order: the allow-list is checked against the requested name, then a rename applies,
/// else the fallback service, else the (normalized) name itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePolicy {
    /// Names clients may send; `None`: any not refused by default.
    allowed: Option<Vec<String>>,
    /// `FROM=TO` renames.
    renames: Vec<(String, String)>,
    /// The service for every name not renamed.
    fallback: Option<String>,
}

impl ServicePolicy {
    /// Builds a policy from the option values (`None`: option not given). Errors name the
    /// option and the problem.
    pub fn from_options(
        allowed: Option<&str>,
        renames: Option<&str>,
        fallback: Option<&str>,
    ) -> Result<ServicePolicy, String> {
        let allowed = allowed
            .map(|list| parse_list(list).map_err(|e| format!("--pam-services: {e}")))
            .transpose()?;
        let renames = renames
            .map(|map| parse_map(map).map_err(|e| format!("--pam-service-map: {e}")))
            .transpose()?
            .unwrap_or_default();
        let fallback = fallback
            .map(|name| parse_name(name).map_err(|e| format!("--pam-service: {e}")))
            .transpose()?;
        Ok(ServicePolicy {
            allowed,
            renames,
            fallback,
        })
    }

    /// True when no option was given.
    pub fn is_default(&self) -> bool {
        self == &ServicePolicy::default()
    }

    /// Whether `--pam-services` was given: the administrator chose the names, and nothing
    /// is refused by default.
    pub fn has_allow_list(&self) -> bool {
        self.allowed.is_some()
    }

    /// The PAM service for `requested`, or `None` when the options refuse it. The result is
    /// what `pam_start` would use anyway (normalized), borrowed when that is the request.
    pub fn resolve<'a>(&self, requested: &'a [u8]) -> Option<Cow<'a, [u8]>> {
        let name = normalize(requested);
        if let Some(allowed) = &self.allowed
            && !allowed.iter().any(|a| a.as_bytes() == name.as_ref())
        {
            return None;
        }
        if let Some((_, to)) = self
            .renames
            .iter()
            .find(|(from, _)| from.as_bytes() == name.as_ref())
        {
            return Some(Cow::Owned(to.clone().into_bytes()));
        }
        if let Some(fallback) = &self.fallback {
            return Some(Cow::Owned(fallback.clone().into_bytes()));
        }
        Some(name)
    }

    /// The services this policy may hand to PAM besides the requested names: rename
    /// targets and the fallback.
    pub fn targets(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let renamed = self
            .renames
            .iter()
            .map(|(_, to)| ("--pam-service-map", to.as_str()));
        let fallback = self
            .fallback
            .iter()
            .map(|name| ("--pam-service", name.as_str()));
        renamed.chain(fallback)
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.allowed {
            Some(allowed) => parts.push(format!("allowed: {}", allowed.join(","))),
            None => parts.push("allowed: any name not refused by default".into()),
        }
        if !self.renames.is_empty() {
            let renames: Vec<String> = self
                .renames
                .iter()
                .map(|(from, to)| format!("{from}={to}"))
                .collect();
            parts.push(format!("renamed: {}", renames.join(",")));
        }
        if let Some(fallback) = &self.fallback {
            parts.push(format!("all other names: {fallback}"));
        }
        parts.join("; ")
    }
}

/// The services refused when there is no `--pam-services`: [`REFUSED_BY_DEFAULT`] and the
/// stacks found to trust root when the daemon started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusals {
    services: Vec<(String, Risk)>,
}

impl Refusals {
    /// The built-in list plus what a scan of `pam_d` finds.
    pub fn scan(pam_d: &Path) -> Refusals {
        let mut services: Vec<(String, Risk)> = REFUSED_BY_DEFAULT
            .iter()
            .map(|(name, risk)| (name.to_string(), *risk))
            .collect();
        for name in stacks_trusting_root(pam_d) {
            if !services.iter().any(|(known, _)| *known == name) {
                services.push((name, Risk::FoundRootok));
            }
        }
        Refusals { services }
    }

    /// Why `service` (as `pam_start` will use it) is refused, if it is.
    pub fn risk(&self, service: &[u8]) -> Option<Risk> {
        let service = normalize(service);
        self.services
            .iter()
            .find(|(name, _)| name.as_bytes() == service.as_ref())
            .map(|(_, risk)| *risk)
    }

    /// The refused names, comma-separated, for the startup log.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.services.iter().map(|(n, _)| n.as_str()).collect();
        names.join(",")
    }

    /// Names found by the scan (beyond the built-in list), comma-separated; empty if none.
    pub fn found(&self) -> String {
        let found: Vec<&str> = self
            .services
            .iter()
            .filter(|(_, risk)| *risk == Risk::FoundRootok)
            .map(|(n, _)| n.as_str())
            .collect();
        found.join(",")
    }
}

/// What Linux-PAM's `pam_start` makes of a service name: the part after the last `/`,
/// ASCII-lower-cased (the daemon never calls setlocale, so `tolower` is ASCII's).
pub fn normalize(name: &[u8]) -> Cow<'_, [u8]> {
    let base = match name.iter().rposition(|&b| b == b'/') {
        Some(slash) => &name[slash + 1..],
        None => name,
    };
    if base.len() == name.len() && !base.iter().any(u8::is_ascii_uppercase) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(base.to_ascii_lowercase())
    }
}

/// The services in `pam_d` whose auth section reaches `pam_rootok`, directly or through
/// `include`, `substack` or `@include`. Unreadable files are skipped (PAM would fail on
/// them too).
pub fn stacks_trusting_root(pam_d: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(pam_d) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| parse_name(name).is_ok_and(|lower| lower == *name))
        .filter(|name| auth_reaches_rootok(pam_d, name, 0))
        .collect();
    found.sort();
    found
}

/// Whether the auth lines of `pam_d/service` (or what they include) name `pam_rootok`.
fn auth_reaches_rootok(pam_d: &Path, service: &str, depth: usize) -> bool {
    if depth > MAX_INCLUDE_DEPTH {
        return false;
    }
    let path: PathBuf = if service.starts_with('/') {
        PathBuf::from(service)
    } else {
        pam_d.join(service)
    };
    let Ok(text) = fs::read_to_string(&path) else {
        return false;
    };
    auth_lines(&text).into_iter().any(|line| match line {
        AuthLine::Module(module) => module_name(&module) == "pam_rootok.so",
        AuthLine::Include(other) => auth_reaches_rootok(pam_d, &other, depth + 1),
    })
}

#[derive(Debug, PartialEq, Eq)]
enum AuthLine {
    /// `auth CONTROL MODULE ...`: the module path.
    Module(String),
    /// `auth include|substack SERVICE` or `@include SERVICE`: the included service.
    Include(String),
}

/// The auth-relevant lines of a pam.d file, in Linux-PAM's syntax: `#` comments,
/// backslash-newline continuations, an optional `-` before the type, and a control that
/// is a word or a bracketed list (which may hold spaces).
fn auth_lines(text: &str) -> Vec<AuthLine> {
    logical_lines(text)
        .iter()
        .filter_map(|line| {
            let mut tokens = line.split_ascii_whitespace();
            let kind = tokens.next()?;
            if kind == "@include" {
                return tokens.next().map(|s| AuthLine::Include(s.to_string()));
            }
            if kind.trim_start_matches('-') != "auth" {
                return None;
            }
            let control = tokens.next()?;
            if control.starts_with('[') && !control.ends_with(']') {
                tokens.by_ref().find(|t| t.ends_with(']'))?;
            }
            let module = tokens.next()?.to_string();
            if control == "include" || control == "substack" {
                Some(AuthLine::Include(module))
            } else {
                Some(AuthLine::Module(module))
            }
        })
        .collect()
}

/// The lines of a pam.d file with comments removed and continued lines joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for physical in text.lines() {
        let (content, continued) = match physical.strip_suffix('\\') {
            Some(head) => (head, true),
            None => (physical, false),
        };
        current.push(' ');
        current.push_str(content);
        if !continued {
            let line = current.split('#').next().unwrap_or("").trim().to_string();
            if !line.is_empty() {
                lines.push(line);
            }
            current.clear();
        }
    }
    let line = current.split('#').next().unwrap_or("").trim().to_string();
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `pam_rootok.so` for `pam_rootok.so`, `/lib/security/pam_rootok.so` and the like.
fn module_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A service name in an option: letters, digits, `.`, `_`, `-`, `+`, `@`; stored
/// lower-cased, as PAM would use it.
fn parse_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("empty service name".into());
    }
    if name.len() > MAX_SERVICE_NAME {
        return Err(format!("service name longer than {MAX_SERVICE_NAME} bytes"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@')))
    {
        return Err(format!(
            "invalid character {bad:?} in service name {name:?} \
             (allowed: letters, digits, . _ - + @)"
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// `NAME[,NAME...]`.
fn parse_list(list: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for item in list.split(',') {
        let name = parse_name(item)?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// `FROM=TO[,FROM=TO...]`; each `FROM` at most once.
fn parse_map(map: &str) -> Result<Vec<(String, String)>, String> {
    let mut renames: Vec<(String, String)> = Vec::new();
    for item in map.split(',') {
        let Some((from, to)) = item.split_once('=') else {
            return Err(format!("{item:?} is not FROM=TO"));
        };
        let (from, to) = (parse_name(from)?, parse_name(to)?);
        if renames.iter().any(|(f, _)| *f == from) {
            return Err(format!("{from:?} is renamed twice"));
        }
        renames.push((from, to));
    }
    Ok(renames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: Option<&str>, map: Option<&str>, fallback: Option<&str>) -> ServicePolicy {
        ServicePolicy::from_options(allowed, map, fallback).unwrap()
    }

    fn resolve(p: &ServicePolicy, requested: &str) -> Option<String> {
        p.resolve(requested.as_bytes())
            .map(|s| String::from_utf8(s.into_owned()).unwrap())
    }

    #[test]
    fn without_options_names_are_used_as_pam_would() {
        let p = policy(None, None, None);
        assert!(p.is_default() && !p.has_allow_list());
        for (name, used) in [
            ("smtp", "smtp"),
            ("SU", "su"),
            ("", ""),
            ("../../etc/X", "x"),
            ("imap\u{e9}", "imap\u{e9}"),
        ] {
            assert_eq!(resolve(&p, name).as_deref(), Some(used));
        }
        assert!(matches!(p.resolve(b"smtp"), Some(Cow::Borrowed(_))));
        assert_eq!(p.describe(), "allowed: any name not refused by default");
    }

    #[test]
    fn allow_list_refuses_other_names() {
        let p = policy(Some("smtp,IMAP,smtp"), None, None);
        assert!(p.has_allow_list());
        assert_eq!(resolve(&p, "smtp").as_deref(), Some("smtp"));
        assert_eq!(resolve(&p, "imap").as_deref(), Some("imap"));
        // Compared as PAM uses them: lower case, after the last '/'.
        assert_eq!(resolve(&p, "SMTP").as_deref(), Some("smtp"));
        assert_eq!(resolve(&p, "x/y/smtp").as_deref(), Some("smtp"));
        for refused in ["su", "sudo", "", "smtp/", "smtp/../su", "smtpx", "smt"] {
            assert_eq!(resolve(&p, refused), None, "{refused:?}");
        }
        assert_eq!(p.describe(), "allowed: smtp,imap");
    }

    #[test]
    fn renames_and_fallback() {
        let p = policy(None, Some("imap=mail,pop=mail,Sieve=managesieve"), None);
        assert_eq!(resolve(&p, "imap").as_deref(), Some("mail"));
        assert_eq!(resolve(&p, "POP").as_deref(), Some("mail"));
        assert_eq!(resolve(&p, "sieve").as_deref(), Some("managesieve"));
        assert_eq!(resolve(&p, "smtp").as_deref(), Some("smtp"));
        assert_eq!(
            p.targets().collect::<Vec<_>>(),
            [
                ("--pam-service-map", "mail"),
                ("--pam-service-map", "mail"),
                ("--pam-service-map", "managesieve")
            ]
        );

        let p = policy(None, Some("imap=dovecot"), Some("smtp"));
        assert_eq!(resolve(&p, "imap").as_deref(), Some("dovecot"));
        assert_eq!(resolve(&p, "su").as_deref(), Some("smtp"));
        assert_eq!(resolve(&p, "").as_deref(), Some("smtp"));
        assert_eq!(
            p.describe(),
            "allowed: any name not refused by default; renamed: imap=dovecot; all other names: smtp"
        );
        assert_eq!(
            p.targets().collect::<Vec<_>>(),
            [("--pam-service-map", "dovecot"), ("--pam-service", "smtp")]
        );
    }

    #[test]
    fn allow_list_applies_to_the_requested_name_before_renaming() {
        let p = policy(Some("imap,pop"), Some("imap=mail,pop=mail"), None);
        assert_eq!(resolve(&p, "imap").as_deref(), Some("mail"));
        assert_eq!(resolve(&p, "pop").as_deref(), Some("mail"));
        assert_eq!(resolve(&p, "mail"), None);
        assert_eq!(resolve(&p, "su"), None);
    }

    #[test]
    fn bad_option_values_are_errors_naming_the_option() {
        let err = |a: Option<&str>, m: Option<&str>, f: Option<&str>| {
            ServicePolicy::from_options(a, m, f).unwrap_err()
        };
        assert!(err(Some(""), None, None).starts_with("--pam-services: empty"));
        assert!(err(Some("smtp,,imap"), None, None).contains("empty"));
        assert!(err(Some("smtp,"), None, None).contains("empty"));
        assert!(err(Some("a/b"), None, None).contains("'/'"));
        assert!(err(Some("a b"), None, None).contains("' '"));
        assert!(err(Some(&"x".repeat(256)), None, None).contains("longer"));
        assert!(err(None, Some("imap"), None).starts_with("--pam-service-map: \"imap\" is not"));
        assert!(err(None, Some("imap=,x=y"), None).contains("empty"));
        assert!(err(None, Some("=mail"), None).contains("empty"));
        assert!(err(None, Some("imap=a=b"), None).contains("'='"));
        assert!(err(None, Some("imap=a,IMAP=b"), None).contains("twice"));
        assert!(err(None, None, Some("")).starts_with("--pam-service: empty"));
        assert!(err(None, None, Some("a,b")).contains("','"));
        assert!(ServicePolicy::from_options(Some("smtp.d_1-x+y@z"), None, None).is_ok());
    }

    #[test]
    fn normalize_is_pam_starts() {
        assert_eq!(normalize(b"smtp").as_ref(), b"smtp");
        assert_eq!(normalize(b"SU").as_ref(), b"su");
        assert_eq!(normalize(b"../su").as_ref(), b"su");
        assert_eq!(normalize(b"/etc/pam.d/Su").as_ref(), b"su");
        assert_eq!(normalize(b"su/").as_ref(), b"");
        // Only ASCII letters change (the C locale's tolower).
        assert_eq!(normalize("\u{c9}".as_bytes()).as_ref(), "\u{c9}".as_bytes());
    }

    /// A pam.d directory under the temp dir with `files` in it.
    fn pam_d(tag: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("saslauthd-rs-pam.d-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn the_scan_finds_rootok_through_includes() {
        let dir = pam_d(
            "scan",
            &[
                (
                    "common-auth",
                    "auth [success=1 default=ignore] pam_unix.so nullok\n",
                ),
                (
                    "mysu",
                    "# custom\nauth   sufficient pam_rootok.so\n@include common-auth\n",
                ),
                ("mysu-l", "auth include mysu\naccount include mysu\n"),
                ("subby", "(written below)"),
                (
                    "bracket",
                    "auth [success=done default=ignore] /usr/lib/security/pam_rootok.so\n",
                ),
                (
                    "smtp",
                    "@include common-auth\naccount required pam_unix.so\n",
                ),
                (
                    "commented",
                    "#auth sufficient pam_rootok.so\nauth required pam_deny.so\n",
                ),
                ("session-only", "session optional pam_rootok.so\n"),
                ("loop", "auth include loop\n"),
                ("Upper", "auth sufficient pam_rootok.so\n"),
                (
                    "continued",
                    "auth [success=done \\\n default=ignore] \\\n pam_rootok.so\n",
                ),
            ],
        );
        // An absolute include resolves as the path it names.
        fs::write(
            dir.join("subby"),
            format!("-auth substack {}\n", dir.join("mysu-l").display()),
        )
        .unwrap();
        assert_eq!(
            stacks_trusting_root(&dir),
            ["bracket", "continued", "mysu", "mysu-l", "subby"]
        );
        let refusals = Refusals::scan(&dir);
        assert_eq!(refusals.found(), "bracket,continued,mysu,mysu-l,subby");
        assert_eq!(refusals.risk(b"MYSU"), Some(Risk::FoundRootok));
        assert_eq!(refusals.risk(b"x/../su"), Some(Risk::TrustsRoot));
        assert_eq!(refusals.risk(b"SUDO"), Some(Risk::Privileges));
        assert_eq!(refusals.risk(b"smtp"), None);
        assert_eq!(refusals.risk(b"commented"), None);
        assert_eq!(refusals.risk(b""), None);
        assert!(
            refusals
                .names()
                .starts_with("su,su-l,runuser,runuser-l,chfn,chsh,")
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_required_names_are_refused_by_default() {
        let refusals = Refusals::scan(Path::new("/nonexistent"));
        assert_eq!(refusals.found(), "");
        // The names issue 12 requires at least.
        let required = "su su-l runuser runuser-l chfn chsh sudo sudo-i passwd login sshd cron";
        for name in required.split(' ').chain(["polkit-1"]) {
            assert!(refusals.risk(name.as_bytes()).is_some(), "{name}");
            let upper = name.to_ascii_uppercase();
            assert!(refusals.risk(upper.as_bytes()).is_some(), "{upper}");
            let path = format!("../../etc/pam.d/{name}");
            assert!(refusals.risk(path.as_bytes()).is_some(), "{path}");
        }
        for name in [
            "smtp", "imap", "pop", "sieve", "other", "su ", "xsu", "sudoers",
        ] {
            assert_eq!(refusals.risk(name.as_bytes()), None, "{name}");
        }
    }
}
