//! The `-O SERVER` option of `-a rimap`, parsed without any I/O.
//!
//! Accepted forms (the first two are upstream's, the others ours):
//!
//! | form | example | port |
//! |---|---|---|
//! | `host` | `mail.example.org`, `127.0.0.1`, `::1` | 143 |
//! | `host/port` | `mail.example.org/imap2`, `::1/10143` | number or service name |
//! | `host:port` | `mail.example.org:143` | same |
//! | `[v6]`, `[v6]:port`, `[v6]/port` | `[::1]:10143` | same |
//! | `imap://host[:port][/]` | `imap://[::1]:10143` | default 143 |
//! | `imaps://host[:port][/]` | `imaps://mail.example.org` | implicit TLS, default 993 |
//!
//! A service name (`imap2`) is looked up in `/etc/services` when the mechanism starts
//! ([`service_port`] does the parsing); the host is resolved per request, not here.
#![forbid(unsafe_code)]

pub use crate::mech::net::Host;
use crate::mech::net::{parse_host, split_authority};

/// Port of plain IMAP (and STARTTLS).
pub const IMAP_PORT: u16 = 143;
/// Port of IMAP over implicit TLS.
pub const IMAPS_PORT: u16 = 993;

/// A port as written in the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    Number(u16),
    /// A service name from `/etc/services` (TCP).
    Service(String),
}

/// The parsed `-O` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub host: Host,
    pub port: PortSpec,
    /// `imaps://`: TLS from the first byte.
    pub implicit_tls: bool,
}

/// Parses `-O SERVER`. The error says what is wrong, for the startup failure message.
pub fn parse_server(option: &str) -> Result<ServerSpec, String> {
    if option.is_empty() {
        return Err("no hostname specified (-O host[/port])".into());
    }
    if let Some(c) = option.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "-O {option:?}: unexpected character {c:?} in the server address"
        ));
    }
    let (rest, implicit_tls, url) = match option.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("imap") => (rest, false, true),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("imaps") => (rest, true, true),
        Some((scheme, _)) => {
            return Err(format!(
                "-O {option:?}: unknown scheme {scheme:?} (use imap:// or imaps://)"
            ));
        }
        None => (option, false, false),
    };
    let default_port = if implicit_tls { IMAPS_PORT } else { IMAP_PORT };
    let (host, port) = if url {
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '@', '?', '#']) {
            return Err(format!(
                "-O {option:?}: only scheme://host[:port] is understood (no user, path or query)"
            ));
        }
        split_authority(authority, false)
    } else {
        split_authority(rest, true)
    }
    .map_err(|why| format!("-O {option:?}: {why}"))?;
    let host = parse_host(host).map_err(|why| format!("-O {option:?}: {why}"))?;
    let port = match port {
        None => PortSpec::Number(default_port),
        Some(port) => parse_port(port).map_err(|why| format!("-O {option:?}: {why}"))?,
    };
    Ok(ServerSpec {
        host,
        port,
        implicit_tls,
    })
}

fn parse_port(port: &str) -> Result<PortSpec, String> {
    if port.is_empty() {
        return Err("empty port".into());
    }
    if port.bytes().all(|b| b.is_ascii_digit()) {
        return match port.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("port {port} is not in 1-65535")),
            Ok(n) => Ok(PortSpec::Number(n)),
        };
    }
    let valid = port.len() <= 64
        && port.starts_with(|c: char| c.is_ascii_alphabetic())
        && port
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'));
    if !valid {
        return Err(format!(
            "{port:?} is neither a port number nor a service name"
        ));
    }
    Ok(PortSpec::Service(port.to_string()))
}

/// The TCP port of service `name` in the text of an `/etc/services` file (name or alias,
/// case-sensitive like getservbyname).
pub fn service_port(services: &str, name: &str) -> Option<u16> {
    services.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let official = words.next()?;
        let (port, proto) = words.next()?.split_once('/')?;
        if proto != "tcp" {
            return None;
        }
        let named = official == name || words.any(|alias| alias == name);
        if !named {
            return None;
        }
        port.parse::<u16>().ok().filter(|&p| p != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn ok(option: &str) -> (Host, PortSpec, bool) {
        let spec = parse_server(option).unwrap_or_else(|e| panic!("{option}: {e}"));
        (spec.host, spec.port, spec.implicit_tls)
    }

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    const V6_LOOPBACK: Host = Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST));
    const V4_LOOPBACK: Host = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));

    #[test]
    fn upstream_forms() {
        assert_eq!(
            ok("mail.example.org"),
            (name("mail.example.org"), PortSpec::Number(143), false)
        );
        assert_eq!(
            ok("127.0.0.1/10143"),
            (V4_LOOPBACK, PortSpec::Number(10143), false)
        );
        assert_eq!(
            ok("localhost/imap2"),
            (name("localhost"), PortSpec::Service("imap2".into()), false)
        );
        assert_eq!(
            ok("::1/10143"),
            (V6_LOOPBACK, PortSpec::Number(10143), false)
        );
        assert_eq!(ok("::1"), (V6_LOOPBACK, PortSpec::Number(143), false));
        assert_eq!(ok("127.0.0.1"), (V4_LOOPBACK, PortSpec::Number(143), false));
    }

    #[test]
    fn colon_and_bracket_forms() {
        assert_eq!(
            ok("127.0.0.1:10143"),
            (V4_LOOPBACK, PortSpec::Number(10143), false)
        );
        assert_eq!(
            ok("mail.example.org:imaps"),
            (
                name("mail.example.org"),
                PortSpec::Service("imaps".into()),
                false
            )
        );
        assert_eq!(
            ok("[::1]:10143"),
            (V6_LOOPBACK, PortSpec::Number(10143), false)
        );
        assert_eq!(
            ok("[::1]/10143"),
            (V6_LOOPBACK, PortSpec::Number(10143), false)
        );
        assert_eq!(ok("[::1]"), (V6_LOOPBACK, PortSpec::Number(143), false));
        assert_eq!(
            ok("[2001:db8::1]:1"),
            (
                Host::Ip("2001:db8::1".parse().unwrap()),
                PortSpec::Number(1),
                false
            )
        );
    }

    #[test]
    fn url_forms() {
        assert_eq!(
            ok("imaps://mail.example.org"),
            (name("mail.example.org"), PortSpec::Number(993), true)
        );
        assert_eq!(
            ok("IMAPS://127.0.0.1:10993/"),
            (V4_LOOPBACK, PortSpec::Number(10993), true)
        );
        assert_eq!(
            ok("imap://[::1]:10143"),
            (V6_LOOPBACK, PortSpec::Number(10143), false)
        );
        assert_eq!(
            ok("imap://mail.example.org"),
            (name("mail.example.org"), PortSpec::Number(143), false)
        );
        assert_eq!(
            ok("imaps://[::1]"),
            (V6_LOOPBACK, PortSpec::Number(993), true)
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |option: &str| parse_server(option).unwrap_err();
        assert!(err("").contains("no hostname"));
        assert!(err("pop3://host").contains("unknown scheme"));
        assert!(err("imap://host/path").contains("no user, path"));
        assert!(err("imaps://user@host").contains("no user, path"));
        assert!(err("host:0").contains("1-65535"));
        assert!(err("host/65536").contains("1-65535"));
        assert!(err("host:").contains("empty port"));
        assert!(err("/143").contains("empty host"));
        assert!(err("[::1").contains("missing ']'"));
        assert!(err("[127.0.0.1]:143").contains("not an IPv6"));
        assert!(err("[::1]x").contains("unexpected"));
        assert!(err("imap://[::1]/143").contains("no user, path"));
        assert!(err("1::2::3").contains("not an IPv6"));
        assert!(err("host name").contains("unexpected character"));
        assert!(err("host\n").contains("unexpected character"));
        assert!(err("ho$t").contains("not a valid host name"));
        assert!(err("-host").contains("not a valid host name"));
        assert!(err("host:1x").contains("neither a port"));
        assert!(err(&"a".repeat(254)).contains("not a valid host name"));
    }

    #[test]
    fn services_file() {
        let services = "# comment\n\
                        tcpmux\t\t1/tcp\t\t\t\t# TCP port service multiplexer\n\
                        imap2\t\t143/tcp\t\timap\t\t# Interim Mail Access P 2 and 4\n\
                        imaps\t\t993/tcp\t\t\t\t# IMAP over SSL\n\
                        odd\t\t77/udp\n\
                        odd\t\t78/tcp\n";
        assert_eq!(service_port(services, "imap2"), Some(143));
        assert_eq!(service_port(services, "imap"), Some(143));
        assert_eq!(service_port(services, "imaps"), Some(993));
        assert_eq!(service_port(services, "odd"), Some(78));
        assert_eq!(service_port(services, "IMAP"), None);
        assert_eq!(service_port(services, "comment"), None);
        assert_eq!(service_port(services, "nosuch"), None);
    }
}
