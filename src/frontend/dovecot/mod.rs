//! The Dovecot authentication protocol front end (`--dovecot-socket`): what Postfix
//! (`smtpd_sasl_type = dovecot`) and Exim (`driver = dovecot`) connect to instead of
//! linking libsasl. The codec is [`crate::protocol::dovecot`] (shared with `testsaslauthd
//! --dovecot`); this front end owns only the connection lifecycle ([`connection`]: the
//! handshake sent at connect, many requests in flight per connection, no idle timeout once
//! handshaken) and the accept loop ([`listener`]: a UNIX socket under the shared peer
//! policy, or TCP under an address allow-list). Each request goes to the one
//! [`Authenticator`](crate::auth::Authenticator) as the credentials libsasl would have sent
//! over `mux`, so both sockets share the verdicts, the cache, the throttle, the queue cap,
//! the statistics and the log lines (`[via=dovecot]`).
#![forbid(unsafe_code)]

pub mod connection;
pub mod listener;

use std::fmt;
use std::net::IpAddr;

use crate::peer::Id;
use crate::protocol::dovecot::Endpoint;

/// `--dovecot-socket-mode` default: the owner and its group (Postfix's user must be one).
pub const DEFAULT_MODE: u32 = 0o660;

/// The `--dovecot-*` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `--dovecot-socket`; `None`: only a socket the service manager passes (named
    /// `dovecot`) is served.
    pub endpoint: Option<Endpoint>,
    /// `--dovecot-socket-mode` (UNIX socket).
    pub mode: u32,
    /// `--dovecot-socket-user` / `-group`: the socket file's owner (default root).
    pub owner: Option<Id>,
    pub group: Option<Id>,
    /// `--dovecot-allow-from`: who may connect over TCP (default: loopback addresses).
    pub allow_from: Vec<AddressRange>,
    /// `--dovecot-allow-network`: a TCP address beyond loopback may be served.
    pub allow_network: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            endpoint: None,
            mode: DEFAULT_MODE,
            owner: None,
            group: None,
            allow_from: AddressRange::loopback(),
            allow_network: false,
        }
    }
}

impl Settings {
    /// Checks what only makes sense together (at startup, before anything is bound).
    pub fn check(&self) -> Result<(), String> {
        match &self.endpoint {
            Some(Endpoint::Unix(path)) if !path.is_absolute() => Err(format!(
                "--dovecot-socket {}: must be an absolute path (Postfix's smtpd_sasl_path \
                 is relative to its queue directory, ours is not)",
                path.display()
            )),
            Some(Endpoint::Tcp(address)) => {
                if self.owner.is_some() || self.group.is_some() {
                    return Err(
                        "--dovecot-socket-user and --dovecot-socket-group apply to a \
                                UNIX socket"
                            .into(),
                    );
                }
                self.check_address(*address)
            }
            _ => Ok(()),
        }
    }

    /// A TCP address beyond loopback needs `--dovecot-allow-network`: passwords cross the
    /// network only base64-encoded (applies to a socket from the service manager too).
    pub fn check_address(&self, address: std::net::SocketAddr) -> Result<(), String> {
        if address.ip().is_loopback() || self.allow_network {
            return Ok(());
        }
        Err(format!(
            "dovecot socket inet:{address}: not a loopback address; passwords cross the \
             network only base64-encoded, so serving it needs --dovecot-allow-network"
        ))
    }
}

/// Parses `--dovecot-socket-mode`: octal, `660` or `0660`, at most `0777`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|&mode| mode <= 0o777 && !text.is_empty())
        .ok_or_else(|| format!("--dovecot-socket-mode: {text:?} is not an octal mode (0 to 0777)"))
}

/// An address or a network (`ADDRESS/BITS`) of `--dovecot-allow-from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    bits: u8,
}

impl AddressRange {
    /// 127.0.0.0/8 and ::1: the default allow-list.
    pub fn loopback() -> Vec<AddressRange> {
        vec![
            AddressRange {
                network: IpAddr::from([127, 0, 0, 0]),
                bits: 8,
            },
            AddressRange {
                network: std::net::Ipv6Addr::LOCALHOST.into(),
                bits: 128,
            },
        ]
    }

    pub fn parse(text: &str) -> Result<AddressRange, String> {
        let (address, bits) = match text.split_once('/') {
            Some((address, bits)) => (address, Some(bits)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an address or ADDRESS/BITS"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(bits) => bits
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(AddressRange { network, bits })
    }

    /// A comma-separated list.
    pub fn parse_list(list: &str) -> Result<Vec<AddressRange>, String> {
        list.split(',').map(AddressRange::parse).collect()
    }

    /// Whether `address` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        let (net, addr, width): (u128, u128, u32) = match (self.network, address) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n).into(), u32::from(a).into(), 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            _ => return false,
        };
        let shift = width - u32::from(self.bits);
        shift >= width || (net >> shift) == (addr >> shift)
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn address_ranges() {
        let loopback = AddressRange::loopback();
        let allowed = |list: &[AddressRange], a: &str| list.iter().any(|r| r.contains(ip(a)));
        assert!(allowed(&loopback, "127.0.0.1"));
        assert!(allowed(&loopback, "127.200.0.9"));
        assert!(allowed(&loopback, "::1"));
        assert!(allowed(&loopback, "::ffff:127.0.0.1"));
        assert!(!allowed(&loopback, "192.0.2.1"));
        assert!(!allowed(&loopback, "::2"));
        let list = AddressRange::parse_list("192.0.2.0/24,2001:db8::/32,198.51.100.7").unwrap();
        assert!(allowed(&list, "192.0.2.200"));
        assert!(!allowed(&list, "192.0.3.1"));
        assert!(allowed(&list, "2001:db8:1::5"));
        assert!(allowed(&list, "198.51.100.7"));
        assert!(!allowed(&list, "198.51.100.8"));
        let everyone = AddressRange::parse_list("0.0.0.0/0,::/0").unwrap();
        assert!(allowed(&everyone, "203.0.113.5") && allowed(&everyone, "2001:db8::1"));
        for bad in ["", "1.2.3.4/33", "::/129", "host", "1.2.3.4/x", "1.2.3.4,"] {
            assert!(AddressRange::parse_list(bad).is_err(), "{bad:?}");
        }
        assert_eq!(loopback[0].to_string(), "127.0.0.0/8");
    }

    #[test]
    fn network_addresses_need_the_explicit_option() {
        let settings = |endpoint: &str, allow_network: bool| Settings {
            endpoint: Some(Endpoint::parse(endpoint).unwrap()),
            allow_network,
            ..Settings::default()
        };
        assert!(settings("inet:127.0.0.1:12345", false).check().is_ok());
        assert!(settings("inet:[::1]:12345", false).check().is_ok());
        assert!(settings("/run/auth", false).check().is_ok());
        assert!(settings("private/auth", false).check().is_err());
        let error = settings("inet:0.0.0.0:12345", false).check().unwrap_err();
        assert!(error.contains("--dovecot-allow-network"), "{error}");
        assert!(settings("inet:192.0.2.1:12345", false).check().is_err());
        assert!(settings("inet:192.0.2.1:12345", true).check().is_ok());
        let mut tcp_owned = settings("inet:127.0.0.1:1", false);
        tcp_owned.owner = Some(Id::Name("postfix".into()));
        assert!(tcp_owned.check().is_err());
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("666"), Ok(0o666));
        assert_eq!(parse_mode("0"), Ok(0));
        for bad in ["", "0778", "1777", "rw", "-1", "0x1"] {
            assert!(parse_mode(bad).is_err(), "{bad:?}");
        }
    }
}
