//! The Dovecot authentication protocol (the `auth-client` protocol, version 1.2), as pure
//! functions over bytes and lines (no I/O): what Postfix (`smtpd_sasl_type = dovecot`) and
//! Exim (`driver = dovecot`) speak to an authentication server.
//!
//! Both binaries share this module: the daemon frames the client's lines, parses its
//! handshake and commands and encodes the handshake and the replies; `testsaslauthd
//! --dovecot` does the opposite. The rules are Dovecot 2.3's, as its clients depend on
//! them (see `dovecot-auth.md` in the project's reference notes):
//!
//! * one command per line, ended by LF (a CR before it is dropped), at most [`MAX_LINE`]
//!   bytes including the LF; fields separated by TAB, values escaped with `\x01`
//!   ([`escape`], [`unescape`]);
//! * the server sends its whole handshake at once ([`handshake`]: VERSION, MECH lines,
//!   SPID, CUID, COOKIE, DONE, in that order); the client answers `VERSION` and `CPID`;
//! * then `AUTH`, `CONT` and `CANCEL` ([`parse_command`]) are answered by `OK`, `FAIL` and
//!   `CONT` lines ([`ok`], [`fail`], [`cont`]), each carrying the client's request id.
//!
//! Anything malformed is a [`ProtocolError`]: Dovecot closes the connection without a
//! reply, and so does the daemon. A parser here never looks beyond the line it is given,
//! never panics and never echoes a line's content in an error (a line may hold a
//! password); the SASL mechanisms themselves are in [`sasl`].
#![forbid(unsafe_code)]

pub mod sasl;

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

use crate::log::sanitize;
use crate::secret::Password;

/// The longest line, LF included (Dovecot's `AUTH_CLIENT_MAX_LINE_LENGTH`).
pub const MAX_LINE: usize = 16384;
/// The protocol version the server announces (`VERSION\t1\t2`).
pub const SERVER_VERSION: (u32, u32) = (1, 2);
/// The version the client side announces: Postfix and Exim send `1.0`, and so does
/// `testsaslauthd` (an empty `resp=` then means "no initial response").
pub const CLIENT_VERSION: (u32, u32) = (1, 0);
/// The escape byte of field values.
const ESCAPE: u8 = 0x01;

/// Reply texts, exactly as Dovecot sends them.
pub mod text {
    pub const INVALID_INITIAL_BASE64: &str = "Invalid base64 data in initial response";
    pub const INVALID_CONTINUED_BASE64: &str = "Invalid base64 data in continued response";
    pub const UNKNOWN_ID: &str = "Authentication request timed out";
    pub const UNEXPECTED_CONT: &str = "Unexpected continuation";
}

// ---------------------------------------------------------------------------------------
// Lines and fields
// ---------------------------------------------------------------------------------------

/// What the bytes received so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// No LF yet, and fewer than `max` bytes: wait for more.
    Incomplete,
    /// One line without its LF (nor a CR before it), and the bytes it took, LF included.
    Complete { line: &'a [u8], consumed: usize },
    /// No LF within `max` bytes: the client is over the limit.
    TooLong,
}

/// The first line in `buf`, if it ended within `max` bytes (LF included).
pub fn next_line(buf: &[u8], max: usize) -> Line<'_> {
    let window = &buf[..buf.len().min(max)];
    match window.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = &buf[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Line::Complete {
                line,
                consumed: end + 1,
            }
        }
        None if buf.len() >= max => Line::TooLong,
        None => Line::Incomplete,
    }
}

/// Escapes a field value: `\x01` → `\x01 1`, TAB → `\x01 t`, CR → `\x01 r`, LF → `\x01 n`,
/// NUL → `\x01 0`.
pub fn escape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    escape_into(&mut out, value);
    out
}

fn escape_into(out: &mut Vec<u8>, value: &[u8]) {
    for &byte in value {
        let escaped = match byte {
            0 => b'0',
            ESCAPE => b'1',
            b'\t' => b't',
            b'\r' => b'r',
            b'\n' => b'n',
            other => {
                out.push(other);
                continue;
            }
        };
        out.extend_from_slice(&[ESCAPE, escaped]);
    }
}

/// Undoes [`escape`]. Any other byte after `\x01` stands for itself; a `\x01` at the very
/// end is dropped (Dovecot's `str_append_tabunescaped`).
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&byte) = bytes.next() {
        if byte != ESCAPE {
            out.push(byte);
            continue;
        }
        match bytes.next() {
            Some(b'0') => out.push(0),
            Some(b'1') => out.push(ESCAPE),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(&other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Dovecot's `str_to_uint`: decimal digits only (no sign, not empty), fitting in 32 bits.
fn number(field: &[u8]) -> Option<u32> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// A request id: 1 to 4294967295 (`007` is 7).
fn request_id(field: &[u8]) -> Option<u32> {
    number(field).filter(|&id| id != 0)
}

// ---------------------------------------------------------------------------------------
// What a client sends
// ---------------------------------------------------------------------------------------

/// Why a connection is closed without a reply. The text never quotes the line itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The first line is not `VERSION\t<major>\t<minor>`.
    BadVersion,
    /// A major version other than 1.
    IncompatibleVersion(u32),
    /// The second line is not `CPID\t<pid>` with a pid other than 0.
    BadCpid,
    /// After the handshake, a line that is not `AUTH`, `CONT` or `CANCEL`.
    UnknownCommand,
    /// `AUTH` without an id and a mechanism, or with an id that is not 1…4294967295.
    BadAuth,
    /// `AUTH` for a mechanism the server does not offer (name sanitised).
    UnknownMechanism(String),
    /// `AUTH` without `service=`.
    MissingService,
    /// A parameter after `resp=` (which must be last).
    ParameterAfterResp,
    /// `AUTH` with an id already in progress on this connection.
    DuplicateId(u32),
    /// `CONT` without `<id>\t<data>`, or with a non-numeric id.
    BadCont,
    /// `CANCEL` with a non-numeric id.
    BadCancel,
    /// A line longer than [`MAX_LINE`].
    LineTooLong,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadVersion => f.write_str("invalid VERSION line"),
            ProtocolError::IncompatibleVersion(major) => {
                write!(f, "incompatible protocol version {major} (1 expected)")
            }
            ProtocolError::BadCpid => f.write_str("invalid CPID line"),
            ProtocolError::UnknownCommand => f.write_str("unknown command"),
            ProtocolError::BadAuth => f.write_str("broken AUTH request"),
            ProtocolError::UnknownMechanism(name) => {
                write!(f, "unsupported authentication mechanism {name}")
            }
            ProtocolError::MissingService => f.write_str("AUTH request without a service"),
            ProtocolError::ParameterAfterResp => f.write_str("AUTH parameters after resp="),
            ProtocolError::DuplicateId(id) => write!(f, "duplicate request id {id}"),
            ProtocolError::BadCont => f.write_str("broken CONT request"),
            ProtocolError::BadCancel => f.write_str("broken CANCEL request"),
            ProtocolError::LineTooLong => write!(f, "line longer than {MAX_LINE} bytes"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// The client's `VERSION\t<major>\t<minor>` (its first line): the minor version, which
/// decides what an empty `resp=` means.
pub fn parse_version(line: &[u8]) -> Result<u32, ProtocolError> {
    let rest = line
        .strip_prefix(b"VERSION\t")
        .ok_or(ProtocolError::BadVersion)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let major = number(&rest[..digits]).ok_or(ProtocolError::BadVersion)?;
    let minor = rest[digits..]
        .strip_prefix(b"\t")
        .and_then(number)
        .ok_or(ProtocolError::BadVersion)?;
    if major != SERVER_VERSION.0 {
        return Err(ProtocolError::IncompatibleVersion(major));
    }
    Ok(minor)
}

/// The client's `CPID\t<pid>` (its second line); pid 0 is refused.
pub fn parse_cpid(line: &[u8]) -> Result<u32, ProtocolError> {
    line.strip_prefix(b"CPID\t")
        .and_then(number)
        .filter(|&pid| pid != 0)
        .ok_or(ProtocolError::BadCpid)
}

/// The SASL mechanisms the server offers, in the order of its MECH lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }

    /// Case-insensitive, like Dovecot.
    pub fn from_name(name: &[u8]) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| name.eq_ignore_ascii_case(m.name().as_bytes()))
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An `AUTH` line's parameters that matter to us. Unknown parameters are ignored.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthCommand {
    pub id: u32,
    pub mechanism: Mechanism,
    /// `service=` (may be empty): the service name libsasl would send (the PAM service).
    pub service: Vec<u8>,
    /// `rip=`: the SMTP client's address; an unparsable value counts as absent.
    pub remote_ip: Option<IpAddr>,
    /// `lip=`: the address the SMTP client connected to.
    pub local_ip: Option<IpAddr>,
    /// `secured`: TLS, or a connection the client trusts.
    pub secured: bool,
    /// `resp=`, still in base64, exactly as sent (wiped on drop).
    pub response: Option<Password>,
}

/// What an initial response (`resp=`) amounts to for a client of a given minor version.
#[derive(PartialEq, Eq)]
pub enum InitialResponse<'a> {
    /// No initial response: the mechanism starts with a challenge.
    Absent,
    /// The base64 text to decode (may decode to nothing: `=` is an empty response).
    Base64(&'a [u8]),
}

/// The base64 text is a password's: only its length is shown.
impl fmt::Debug for InitialResponse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitialResponse::Absent => f.write_str("Absent"),
            InitialResponse::Base64(text) => f
                .debug_tuple("Base64")
                .field(&format_args!("<{} bytes>", text.len()))
                .finish(),
        }
    }
}

impl AuthCommand {
    /// Dovecot's rule: for clients below version 1.2 (Postfix, Exim) an empty `resp=`
    /// means no initial response; `resp==` is an empty one for everyone.
    pub fn initial_response(&self, client_minor: u32) -> InitialResponse<'_> {
        match &self.response {
            None => InitialResponse::Absent,
            Some(text) if text.is_empty() && client_minor < 2 => InitialResponse::Absent,
            Some(text) if text.as_bytes() == b"=" => InitialResponse::Base64(b""),
            Some(text) => InitialResponse::Base64(text.as_bytes()),
        }
    }
}

/// A client command after the handshake.
#[derive(PartialEq, Eq)]
pub enum Command<'a> {
    Auth(AuthCommand),
    /// `CONT\t<id>\t<base64>`: the answer to a challenge (data as sent, not unescaped).
    Cont {
        id: u32,
        data: &'a [u8],
    },
    /// `CANCEL\t<id>`: forget request `id`, no reply.
    Cancel {
        id: u32,
    },
}

/// As derived, except that a `CONT`'s data (base64 of a password, usually) shows only its
/// length.
impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Auth(auth) => f.debug_tuple("Auth").field(auth).finish(),
            Command::Cont { id, data } => f
                .debug_struct("Cont")
                .field("id", id)
                .field("data", &format_args!("<{} bytes>", data.len()))
                .finish(),
            Command::Cancel { id } => f.debug_struct("Cancel").field("id", id).finish(),
        }
    }
}

/// Parses one line after the handshake.
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, ProtocolError> {
    if let Some(args) = line.strip_prefix(b"AUTH\t") {
        return parse_auth(args).map(Command::Auth);
    }
    if let Some(args) = line.strip_prefix(b"CONT\t") {
        let tab = args
            .iter()
            .position(|&b| b == b'\t')
            .ok_or(ProtocolError::BadCont)?;
        // Id 0 is not refused here: no request has it, so it is an unknown id.
        let id = number(&args[..tab]).ok_or(ProtocolError::BadCont)?;
        return Ok(Command::Cont {
            id,
            data: &args[tab + 1..],
        });
    }
    if let Some(args) = line.strip_prefix(b"CANCEL\t") {
        let id = number(args).ok_or(ProtocolError::BadCancel)?;
        return Ok(Command::Cancel { id });
    }
    Err(ProtocolError::UnknownCommand)
}

fn parse_auth(args: &[u8]) -> Result<AuthCommand, ProtocolError> {
    let mut fields = args.split(|&b| b == b'\t');
    let (Some(id), Some(mechanism)) = (fields.next(), fields.next()) else {
        return Err(ProtocolError::BadAuth);
    };
    let id = request_id(&unescape(id)).ok_or(ProtocolError::BadAuth)?;
    let mechanism = unescape(mechanism);
    let mechanism = Mechanism::from_name(&mechanism)
        .ok_or_else(|| ProtocolError::UnknownMechanism(sanitize(&mechanism)))?;
    let mut auth = AuthCommand {
        id,
        mechanism,
        service: Vec::new(),
        remote_ip: None,
        local_ip: None,
        secured: false,
        response: None,
    };
    let mut service = None;
    for field in fields.by_ref() {
        // The initial response is the password's carrier: keep every copy wiped.
        let field = Zeroizing::new(unescape(field));
        let (name, value) = match field.iter().position(|&b| b == b'=') {
            Some(eq) => (&field[..eq], &field[eq + 1..]),
            None => (&field[..], &b""[..]),
        };
        match name {
            b"service" => service = Some(value.to_vec()),
            b"rip" => auth.remote_ip = ip_address(value),
            b"lip" => auth.local_ip = ip_address(value),
            b"secured" => auth.secured = true,
            b"resp" => {
                auth.response = Some(Password::new(value.to_vec()));
                break;
            }
            _ => {}
        }
    }
    if fields.next().is_some() {
        return Err(ProtocolError::ParameterAfterResp);
    }
    auth.service = service.ok_or(ProtocolError::MissingService)?;
    Ok(auth)
}

fn ip_address(value: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Base64
// ---------------------------------------------------------------------------------------

/// Padding required, bits after the last full byte ignored (Dovecot checks neither more
/// nor less).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Decodes base64 the way Dovecot does: standard alphabet, padding required, SP, TAB,
/// CR and LF skipped anywhere. `None` for anything else. The result is a [`Password`]
/// (it usually holds one), and so is every intermediate copy.
pub fn decode_base64(text: &[u8]) -> Option<Password> {
    // Sized up front (a filter's collect would grow the Vec, leaving unwiped copies).
    let mut compact = Zeroizing::new(Vec::with_capacity(text.len()));
    compact.extend(
        text.iter()
            .copied()
            .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')),
    );
    // Sized up front, so decoding never reallocates (and leaves no unwiped copy).
    let mut out = Zeroizing::new(Vec::with_capacity(compact.len() / 4 * 3 + 3));
    BASE64.decode_vec(&compact[..], &mut out).ok()?;
    Some(Password::new(std::mem::take(&mut *out)))
}

/// Standard base64 with padding.
pub fn encode_base64(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0; data.len().div_ceil(3) * 4];
    // Sized for the padded encoding, so this cannot fail.
    let written = BASE64.encode_slice(data, &mut out).unwrap_or(0);
    out.truncate(written);
    out
}

// ---------------------------------------------------------------------------------------
// What the server sends
// ---------------------------------------------------------------------------------------

/// The server's handshake, sent at once on connect, in Dovecot's order: VERSION, one MECH
/// line per mechanism (PLAIN and LOGIN are `plaintext`), SPID, CUID, COOKIE (32 hex
/// digits), DONE. Clients give up on a SPID before the first MECH.
pub fn handshake(mechanisms: &[Mechanism], spid: u32, cuid: u32, cookie: &[u8; 16]) -> Vec<u8> {
    let mut out = format!("VERSION\t{}\t{}\n", SERVER_VERSION.0, SERVER_VERSION.1);
    for mechanism in mechanisms {
        out.push_str(&format!("MECH\t{mechanism}\tplaintext\n"));
    }
    out.push_str(&format!("SPID\t{spid}\nCUID\t{cuid}\nCOOKIE\t"));
    for byte in cookie {
        out.push_str(&format!("{byte:02x}"));
    }
    out.push_str("\nDONE\n");
    out.into_bytes()
}

/// `FAIL`'s `code=` values (Dovecot 2.3). Postfix and Exim ignore them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailCode {
    /// The server could not decide (busy, timed out, internal failure).
    TempFail,
    InvalidBase64,
}

impl FailCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailCode::TempFail => "temp_fail",
            FailCode::InvalidBase64 => "invalid_base64",
        }
    }
}

/// `OK\t<id>\tuser=<user>`: without `user=` both Postfix and Exim refuse the success.
pub fn ok(id: u32, user: &[u8]) -> Vec<u8> {
    let mut out = format!("OK\t{id}\tuser=").into_bytes();
    escape_into(&mut out, user);
    out.push(b'\n');
    out
}

/// `FAIL\t<id>[\tuser=<user>][\tcode=<code>][\treason=<reason>]`. Postfix shows `reason=`
/// to the SMTP client (`(reason unavailable)` without it), so credential failures carry
/// none.
pub fn fail(id: u32, user: Option<&[u8]>, code: Option<FailCode>, reason: Option<&str>) -> Vec<u8> {
    let mut out = format!("FAIL\t{id}").into_bytes();
    if let Some(user) = user {
        out.extend_from_slice(b"\tuser=");
        escape_into(&mut out, user);
    }
    if let Some(code) = code {
        out.extend_from_slice(b"\tcode=");
        out.extend_from_slice(code.as_str().as_bytes());
    }
    if let Some(reason) = reason {
        out.extend_from_slice(b"\treason=");
        escape_into(&mut out, reason.as_bytes());
    }
    out.push(b'\n');
    out
}

/// `CONT\t<id>\t<base64 challenge>` (an empty challenge leaves the field empty).
pub fn cont(id: u32, challenge: &[u8]) -> Vec<u8> {
    let mut out = format!("CONT\t{id}\t").into_bytes();
    out.extend_from_slice(&encode_base64(challenge));
    out.push(b'\n');
    out
}

// ---------------------------------------------------------------------------------------
// Where the protocol is served
// ---------------------------------------------------------------------------------------

/// Where an authentication server listens, in Postfix's `smtpd_sasl_path` syntax: a
/// path (`unix:PATH` too) or `inet:ADDRESS:PORT` (`inet:[::1]:PORT` for IPv6). The
/// address must be a literal: nothing here resolves names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(std::path::PathBuf),
    Tcp(std::net::SocketAddr),
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if let Some(rest) = text.strip_prefix("inet:") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{text:?}: expected inet:ADDRESS:PORT"))?;
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let ip: IpAddr = host
                .parse()
                .map_err(|_| format!("{text:?}: {host:?} is not an IP address"))?;
            let port: u16 = port
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{text:?}: {port:?} is not a port number (1-65535)"))?;
            return Ok(Endpoint::Tcp(std::net::SocketAddr::new(ip, port)));
        }
        let path = text.strip_prefix("unix:").unwrap_or(text);
        if path.is_empty() {
            return Err("empty socket path".into());
        }
        Ok(Endpoint::Unix(path.into()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp(address) => write!(f, "inet:{address}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client side (testsaslauthd --dovecot)
// ---------------------------------------------------------------------------------------

/// `VERSION\t1\t0\nCPID\t<pid>\n`: what Postfix and Exim send first.
pub fn client_handshake(pid: u32) -> Vec<u8> {
    format!(
        "VERSION\t{}\t{}\nCPID\t{pid}\n",
        CLIENT_VERSION.0, CLIENT_VERSION.1
    )
    .into_bytes()
}

/// An `AUTH` line as Postfix writes it: `AUTH\t<id>\t<mech>\tservice=<s>\tnologin`, then
/// `lip=`/`rip=` when known, `secured`, and `resp=` (base64 of `response`) when there is an
/// initial response. A [`Password`]: with `resp=` it carries the password.
pub fn auth_line(
    id: u32,
    mechanism: Mechanism,
    service: &[u8],
    local_ip: Option<IpAddr>,
    remote_ip: Option<IpAddr>,
    secured: bool,
    response: Option<&[u8]>,
) -> Password {
    let mut line = Password::new(format!("AUTH\t{id}\t{mechanism}\tservice=").into_bytes());
    line.extend_from_slice(&escape(service));
    line.extend_from_slice(b"\tnologin");
    if let Some(ip) = local_ip {
        line.extend_from_slice(format!("\tlip={ip}").as_bytes());
    }
    if let Some(ip) = remote_ip {
        line.extend_from_slice(format!("\trip={ip}").as_bytes());
    }
    if secured {
        line.extend_from_slice(b"\tsecured");
    }
    if let Some(response) = response {
        line.extend_from_slice(b"\tresp=");
        line.extend_from_slice(&Zeroizing::new(encode_base64(response)));
    }
    line.extend_from_slice(b"\n");
    line
}

/// `CONT\t<id>\t<base64 response>\n` (carries the password in a LOGIN exchange).
pub fn cont_line(id: u32, response: &[u8]) -> Password {
    let mut line = Password::new(format!("CONT\t{id}\t").into_bytes());
    line.extend_from_slice(&Zeroizing::new(encode_base64(response)));
    line.extend_from_slice(b"\n");
    line
}

/// A line from the server, as a client reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerLine {
    Version {
        major: u32,
        minor: u32,
    },
    Mech {
        name: Vec<u8>,
        flags: Vec<Vec<u8>>,
    },
    Spid,
    Cuid,
    Cookie,
    Done,
    /// `OK` / `FAIL`: the id and the unescaped `name=value` (or bare) fields after it.
    Ok {
        id: u32,
        fields: Vec<Vec<u8>>,
    },
    Fail {
        id: u32,
        fields: Vec<Vec<u8>>,
    },
    /// `CONT`: the id and the challenge, decoded (`None`: not base64).
    Cont {
        id: u32,
        challenge: Option<Vec<u8>>,
    },
    /// Anything else (clients ignore unknown handshake lines).
    Other,
}

/// Parses one server line; malformed known lines are `Other`, except a reply without a
/// numeric id, which is `None` (a client can't tell whose reply it is).
pub fn parse_server_line(line: &[u8]) -> Option<ServerLine> {
    let mut fields = line.split(|&b| b == b'\t');
    let command = fields.next().unwrap_or_default();
    let rest: Vec<&[u8]> = fields.collect();
    let unescaped = |from: usize| rest.iter().skip(from).map(|f| unescape(f)).collect();
    Some(match command {
        b"VERSION" => match rest.as_slice() {
            [major, minor] => match (number(major), number(minor)) {
                (Some(major), Some(minor)) => ServerLine::Version { major, minor },
                _ => ServerLine::Other,
            },
            _ => ServerLine::Other,
        },
        b"MECH" if !rest.is_empty() => ServerLine::Mech {
            name: unescape(rest[0]),
            flags: unescaped(1),
        },
        b"SPID" => ServerLine::Spid,
        b"CUID" => ServerLine::Cuid,
        b"COOKIE" => ServerLine::Cookie,
        b"DONE" => ServerLine::Done,
        b"OK" | b"FAIL" | b"CONT" => {
            let id = number(rest.first()?)?;
            match command {
                b"OK" => ServerLine::Ok {
                    id,
                    fields: unescaped(1),
                },
                b"FAIL" => ServerLine::Fail {
                    id,
                    fields: unescaped(1),
                },
                _ => ServerLine::Cont {
                    id,
                    challenge: decode_base64(rest.get(1).copied().unwrap_or_default())
                        .map(|c| c.as_bytes().to_vec()),
                },
            }
        }
        _ => ServerLine::Other,
    })
}

/// The value of the first `name=value` field called `name`.
pub fn field_value<'a>(fields: &'a [Vec<u8>], name: &str) -> Option<&'a [u8]> {
    fields.iter().find_map(|field| {
        field
            .strip_prefix(name.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"="))
    })
}

#[cfg(test)]
mod tests;
