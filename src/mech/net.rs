//! Server addresses and TCP connections, shared by the mechanisms that talk to a server
//! (rimap, ldap): host syntax (names, IPv4, bracketed IPv6), and connecting to the first
//! address that answers within a deadline.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use crate::log_warn;

/// Longest host name accepted (DNS limit).
const MAX_HOST_LEN: usize = 253;

/// Where a server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    /// The host as a TLS peer name: an address without brackets, or the DNS name.
    pub fn tls_name(&self) -> String {
        match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.clone(),
        }
    }

    /// `addr`, an address of this host, for log lines: `name[addr]:port` for a name, the
    /// address alone (`[v6]:port`) for an address.
    pub fn peer(&self, addr: SocketAddr) -> String {
        match self {
            Host::Ip(_) => addr.to_string(),
            Host::Name(name) => format!("{name}[{}]:{}", addr.ip(), addr.port()),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// The addresses of `host` at `port`, each once, in the resolver's order: an address as
/// it is, a name looked up (NSS: `/etc/hosts`, DNS) within `deadline`. The error says why
/// nothing came back.
pub async fn resolve(host: &Host, port: u16, deadline: Instant) -> Result<Vec<SocketAddr>, String> {
    let name = match host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Name(name) => name,
    };
    let found = match timeout_at(deadline, tokio::net::lookup_host((name.as_str(), port))).await {
        Err(_) => return Err("no answer from the resolver in time".into()),
        Ok(Err(error)) => return Err(error.to_string()),
        Ok(Ok(found)) => found,
    };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in found {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err("no address".into());
    }
    Ok(addrs)
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port` and, when `slash` (upstream rimap's
/// form), `host/port` and `[v6]/port`. A bare IPv6 address (two or more colons) has no
/// port unless it is followed by `/port`.
pub fn split_authority(s: &str, slash: bool) -> Result<(&str, Option<&str>), String> {
    if let Some(inside) = s.strip_prefix('[') {
        let Some((v6, after)) = inside.split_once(']') else {
            return Err("missing ']' after the IPv6 address".into());
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{v6:?} in brackets is not an IPv6 address"));
        }
        return match after {
            "" => Ok((v6, None)),
            _ => match after
                .strip_prefix(':')
                .or_else(|| after.strip_prefix('/').filter(|_| slash))
            {
                Some(port) => Ok((v6, Some(port))),
                None => Err(format!("unexpected {after:?} after the IPv6 address")),
            },
        };
    }
    if slash && let Some((host, port)) = s.split_once('/') {
        return Ok((host, Some(port)));
    }
    match s.matches(':').count() {
        0 => Ok((s, None)),
        1 => {
            let (host, port) = s.split_once(':').expect("one colon");
            Ok((host, Some(port)))
        }
        // A bare IPv6 address; `parse_host` checks it.
        _ => Ok((s, None)),
    }
}

/// A host name or address (IPv6 without brackets).
pub fn parse_host(host: &str) -> Result<Host, String> {
    if host.is_empty() {
        return Err("empty host name".into());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    if host.contains(':') {
        return Err(format!(
            "{host:?} is not an IPv6 address (write [address]:port for a port)"
        ));
    }
    let valid = host.len() <= MAX_HOST_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !host.starts_with(['-', '.'])
        && !host.contains("..");
    if !valid {
        return Err(format!("{host:?} is not a valid host name"));
    }
    Ok(Host::Name(host.to_string()))
}

/// Connects to the first of `addrs` (addresses of `host`) that accepts. Each attempt gets an
/// equal share of the time left until `deadline`, counting `attempts_after` more attempts
/// the caller may make elsewhere (other servers) if all of these fail. Failures are logged
/// as `{mech}: connect to {host.peer(addr)}: ...`.
pub async fn connect_first(
    mech: &str,
    host: &Host,
    addrs: &[SocketAddr],
    attempts_after: usize,
    deadline: Instant,
) -> Option<(TcpStream, SocketAddr)> {
    for (i, &addr) in addrs.iter().enumerate() {
        let left = addrs.len() - i + attempts_after;
        let now = Instant::now();
        if now >= deadline {
            log_warn!("{mech}: connect to {}: no time left", host.peer(addr));
            return None;
        }
        let share = (deadline - now) / u32::try_from(left).unwrap_or(u32::MAX);
        match timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Some((tcp, addr));
            }
            Ok(Err(error)) => log_warn!("{mech}: connect to {}: {error}", host.peer(addr)),
            Err(_) => log_warn!(
                "{mech}: connect to {}: no answer within {} ms",
                host.peer(addr),
                share.as_millis()
            ),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn display_and_tls_name() {
        let v6 = Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST));
        let v4 = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(v6.to_string(), "[::1]");
        assert_eq!(v6.tls_name(), "::1");
        assert_eq!(v4.tls_name(), "127.0.0.1");
        assert_eq!(Host::Name("localhost".into()).tls_name(), "localhost");
    }

    #[test]
    fn peer_labels() {
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 636);
        let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 389);
        assert_eq!(Host::Ip(v6.ip()).peer(v6), "[::1]:636");
        assert_eq!(Host::Ip(v4.ip()).peer(v4), "127.0.0.1:389");
        let name = Host::Name("ldap.example.org".into());
        assert_eq!(name.peer(v6), "ldap.example.org[::1]:636");
        assert_eq!(name.peer(v4), "ldap.example.org[127.0.0.1]:389");
    }

    #[test]
    fn the_first_address_that_accepts_wins() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let closed = {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap()
            };
            let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let open_addr = open.local_addr().unwrap();
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            let host = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let (_, got) = connect_first("test", &host, &[closed, open_addr], 0, deadline)
                .await
                .expect("the open address");
            assert_eq!(got, open_addr);
            assert!(
                connect_first("test", &host, &[closed], 1, deadline)
                    .await
                    .is_none()
            );
        });
    }
}
