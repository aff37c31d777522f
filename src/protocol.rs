//! The saslauthd wire protocol, as pure functions over bytes (no I/O).
//!
//! A request is a sequence of counted strings — a big-endian `u16` length followed by that
//! many raw bytes — for login, password, service and realm, optionally followed by a fifth,
//! the client address (`ip;port`), which only unreleased upstream clients send. A reply is a
//! single counted string that starts with `OK` or `NO`.
//!
//! Both binaries share this module: the daemon decodes requests and encodes replies, the
//! client does the opposite. Nothing here blocks, allocates without bound or panics on
//! hostile input; limits are enforced as soon as a length prefix is seen.
#![forbid(unsafe_code)]

use std::fmt;

use crate::secret::Password;

/// Default per-field limit (upstream's `MAX_REQ_LEN` is 256).
pub const DEFAULT_MAX_FIELD_LEN: usize = 1024;
/// The largest length a counted string can announce.
pub const MAX_COUNTED_LEN: usize = u16::MAX as usize;

/// The Dovecot authentication protocol, the second front end's codec.
pub mod dovecot;

/// Reply texts shared by the daemon and its tests.
pub mod text {
    pub const NULL_LOGIN: &str = "NULL login received";
    pub const NULL_PASSWORD: &str = "NULL password received";
    pub const INTERNAL_FAILURE: &str = "internal mechanism failure";
    pub const BUSY: &str = "server busy";
    pub const TIMED_OUT: &str = "verification timed out";
}

/// The fields of a request, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Login,
    Password,
    Service,
    Realm,
    ClientAddr,
}

impl Field {
    const REQUIRED: [Field; 4] = [Field::Login, Field::Password, Field::Service, Field::Realm];

    /// The name upstream uses in its log lines.
    pub fn name(self) -> &'static str {
        match self {
            Field::Login => "login",
            Field::Password => "password",
            Field::Service => "service",
            Field::Realm => "realm",
            Field::ClientAddr => "client address",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One decoded request. The password is held in a [`Password`], wiped on drop.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub login: Vec<u8>,
    pub password: Password,
    pub service: Vec<u8>,
    pub realm: Vec<u8>,
    /// The fifth field, when the client sent one (`ip;port`, possibly empty).
    pub client_addr: Option<Vec<u8>>,
}

/// Why a request is refused before any mechanism sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// A length prefix above the configured limit (answered before reading the data).
    TooLong {
        field: Field,
        len: usize,
        limit: usize,
    },
    EmptyLogin,
    EmptyPassword,
    /// A NUL byte inside a field. Upstream cuts C strings at the first NUL, so
    /// `secret\0junk` would authenticate as `secret`; we refuse instead.
    NulByte(Field),
}

impl Rejection {
    /// The reply text sent to the client (without the `NO ` prefix).
    pub fn reason(&self) -> String {
        match self {
            Rejection::TooLong { field, limit, .. } => format!("{field} exceeds {limit} bytes"),
            Rejection::EmptyLogin => text::NULL_LOGIN.to_string(),
            Rejection::EmptyPassword => text::NULL_PASSWORD.to_string(),
            Rejection::NulByte(field) => format!("NUL byte in {field}"),
        }
    }

    pub fn reply(&self) -> Reply {
        Reply::No(self.reason())
    }
}

/// The outcome of decoding what a connection has sent so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed.
    Incomplete,
    /// A complete request and how many bytes it used; anything after it is ignored.
    Complete { request: Request, consumed: usize },
    /// Refused at once (a field announced more bytes than allowed).
    Rejected(Rejection),
}

/// Decodes a request from everything received so far.
///
/// The four required fields must be complete. If bytes follow them, they are the start of
/// the optional fifth field and it must be complete too; if nothing follows, the request
/// is a four-field one. The caller decides when "nothing follows" is final (it checks once,
/// without waiting, whether the client sent more), so four-field clients are answered at
/// once and five-field requests are never misread.
pub fn decode_request(buf: &[u8], max_field_len: usize) -> Decoded {
    let (four, end) = match four_fields(buf, max_field_len) {
        Ok(found) => found,
        Err(rejection) => return rejection.map_or(Decoded::Incomplete, Decoded::Rejected),
    };
    if end == buf.len() {
        return complete(four, None, end);
    }
    match counted(buf, end, Field::ClientAddr, max_field_len) {
        Counted::Done(client_addr, next) => complete(four, Some(client_addr), next),
        Counted::Incomplete => Decoded::Incomplete,
        Counted::TooLong(rejection) => Decoded::Rejected(rejection),
    }
}

/// [`decode_request`] as a server reads it, knowing whether the client has more on its
/// way right now (`settled`: a receive that did not wait found nothing more).
///
/// Bytes after a complete four-field request that can't be the start of a fifth field are
/// ignored once settled, as upstream 2.1.28 (which never reads a fifth field) ignores
/// them: a lone byte (half a length prefix), or a length prefix over the field limit
/// without that many bytes behind it (`GA…` is not a 1024-byte client address). The
/// request is then the four-field one, and `consumed` stops before the ignored bytes. A
/// client address that really is over the limit (its bytes are there) is still refused,
/// and a well-formed fifth field is read and used however it is split.
pub fn decode_received(buf: &[u8], max_field_len: usize, settled: bool) -> Decoded {
    let (four, end) = match four_fields(buf, max_field_len) {
        Ok(found) => found,
        Err(rejection) => return rejection.map_or(Decoded::Incomplete, Decoded::Rejected),
    };
    let after = buf.len() - end;
    if after == 0 {
        return complete(four, None, end);
    }
    match counted(buf, end, Field::ClientAddr, max_field_len) {
        Counted::Done(client_addr, next) => complete(four, Some(client_addr), next),
        // Half a length prefix: the rest may be on its way, unless settled.
        Counted::Incomplete if settled && after == 1 => complete(four, None, end),
        Counted::Incomplete => Decoded::Incomplete,
        // An over-long client address whose bytes are not all there (`after` counts its
        // prefix too): garbage once settled, else its bytes may still be on their way,
        // and it is not refused before they all are.
        Counted::TooLong(_) if after <= max_field_len + 2 => {
            if settled {
                complete(four, None, end)
            } else {
                Decoded::Incomplete
            }
        }
        Counted::TooLong(rejection) => Decoded::Rejected(rejection),
    }
}

/// The four required fields and where they end; or, when they are not all there, `None`
/// (the request is incomplete) or why it is refused (an over-long one).
fn four_fields(buf: &[u8], max_field_len: usize) -> Result<([&[u8]; 4], usize), Option<Rejection>> {
    let mut four: [&[u8]; 4] = [&[]; 4];
    let mut end = 0;
    for (value, field) in four.iter_mut().zip(Field::REQUIRED) {
        match counted(buf, end, field, max_field_len) {
            Counted::Done(found, next) => {
                *value = found;
                end = next;
            }
            Counted::Incomplete => return Err(None),
            Counted::TooLong(rejection) => return Err(Some(rejection)),
        }
    }
    Ok((four, end))
}

/// The request of these fields, `consumed` bytes long.
fn complete(four: [&[u8]; 4], client_addr: Option<&[u8]>, consumed: usize) -> Decoded {
    let [login, password, service, realm] = four;
    Decoded::Complete {
        request: Request {
            login: login.to_vec(),
            password: Password::new(password.to_vec()),
            service: service.to_vec(),
            realm: realm.to_vec(),
            client_addr: client_addr.map(<[u8]>::to_vec),
        },
        consumed,
    }
}

enum Counted<'a> {
    Done(&'a [u8], usize),
    Incomplete,
    TooLong(Rejection),
}

fn counted(buf: &[u8], pos: usize, field: Field, limit: usize) -> Counted<'_> {
    let Some(prefix) = buf.get(pos..pos + 2) else {
        return Counted::Incomplete;
    };
    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    if len > limit {
        return Counted::TooLong(Rejection::TooLong { field, len, limit });
    }
    let start = pos + 2;
    match buf.get(start..start + len) {
        Some(value) => Counted::Done(value, start + len),
        None => Counted::Incomplete,
    }
}

/// The most bytes a request can occupy under `max_field_len` (five fields).
pub fn max_request_len(max_field_len: usize) -> usize {
    5 * (2 + max_field_len.min(MAX_COUNTED_LEN))
}

impl Request {
    /// Checks what the framing alone cannot: empty login or password, NUL bytes.
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.login.is_empty() {
            return Err(Rejection::EmptyLogin);
        }
        if self.password.is_empty() {
            return Err(Rejection::EmptyPassword);
        }
        let fields: [(Field, &[u8]); 5] = [
            (Field::Login, &self.login),
            (Field::Password, self.password.as_bytes()),
            (Field::Service, &self.service),
            (Field::Realm, &self.realm),
            (
                Field::ClientAddr,
                self.client_addr.as_deref().unwrap_or(&[]),
            ),
        ];
        match fields.iter().find(|(_, value)| value.contains(&0)) {
            Some((field, _)) => Err(Rejection::NulByte(*field)),
            None => Ok(()),
        }
    }
}

/// Encodes a request. Fields longer than a counted string can hold are refused.
pub fn encode_request(
    login: &[u8],
    password: &[u8],
    service: &[u8],
    realm: &[u8],
    client_addr: Option<&[u8]>,
) -> Result<Password, Field> {
    let mut fields = vec![
        (Field::Login, login),
        (Field::Password, password),
        (Field::Service, service),
        (Field::Realm, realm),
    ];
    if let Some(addr) = client_addr {
        fields.push((Field::ClientAddr, addr));
    }
    // The encoded request contains the password: keep it in a wiping buffer.
    let total = fields.iter().map(|(_, v)| 2 + v.len()).sum();
    let mut out = Vec::with_capacity(total);
    for (field, value) in fields {
        let len = u16::try_from(value.len()).map_err(|_| field)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value);
    }
    Ok(Password::new(out))
}

/// A reply: `OK`, `OK <text>`, `NO <reason>` or (an empty reason) `NO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(Option<String>),
    No(String),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Ok(None)
    }

    pub fn no(reason: impl Into<String>) -> Reply {
        Reply::No(reason.into())
    }

    /// `NO` without a reason: the two bytes upstream's sasldb and ldap answer with.
    pub fn bare_no() -> Reply {
        Reply::No(String::new())
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Ok(_))
    }

    /// The text carried on the wire.
    pub fn text(&self) -> String {
        match self {
            Reply::Ok(None) => "OK".to_string(),
            Reply::Ok(Some(text)) => format!("OK {text}"),
            Reply::No(reason) if reason.is_empty() => "NO".to_string(),
            Reply::No(reason) => format!("NO {reason}"),
        }
    }

    /// The framed reply (length prefix + text); over-long texts are cut to fit.
    pub fn encode(&self) -> Vec<u8> {
        encode_counted(self.text().as_bytes())
    }
}

/// Frames raw reply text as one counted string, cutting it at 65535 bytes.
pub fn encode_counted(text: &[u8]) -> Vec<u8> {
    let text = &text[..text.len().min(MAX_COUNTED_LEN)];
    let mut out = Vec::with_capacity(2 + text.len());
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text);
    out
}

/// Decodes a reply from the bytes received so far: `None` until complete.
pub fn decode_reply(buf: &[u8]) -> Option<&[u8]> {
    let prefix = buf.get(0..2)?;
    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    buf.get(2..2 + len)
}

/// Whether reply text means success, exactly as libsasl decides: it starts with `OK`.
pub fn reply_is_ok(text: &[u8]) -> bool {
    text.starts_with(b"OK")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(value: &[u8]) -> Vec<u8> {
        let mut out = (value.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(value);
        out
    }

    fn frame(fields: &[&[u8]]) -> Vec<u8> {
        fields.iter().flat_map(|f| field(f)).collect()
    }

    fn complete(buf: &[u8]) -> (Request, usize) {
        match decode_request(buf, DEFAULT_MAX_FIELD_LEN) {
            Decoded::Complete { request, consumed } => (request, consumed),
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[test]
    fn decodes_the_upstream_success_example_byte_for_byte() {
        // upstream-saslauthd.md §1.7, the 32-byte success request.
        let bytes = [
            0x00, 0x08, b's', b'a', b's', b'l', b't', b'e', b's', b't', 0x00, 0x0c, b'S', b'a',
            b's', b'l', b'-', b'L', b'a', b'b', b'-', b'p', b'w', b'1', 0x00, 0x04, b'i', b'm',
            b'a', b'p', 0x00, 0x00,
        ];
        let (request, consumed) = complete(&bytes);
        assert_eq!(consumed, 32);
        assert_eq!(request.login, b"sasltest");
        assert_eq!(request.password.as_bytes(), b"Sasl-Lab-pw1");
        assert_eq!(request.service, b"imap");
        assert_eq!(request.realm, b"");
        assert_eq!(request.client_addr, None);
    }

    #[test]
    fn encode_then_decode_round_trips_four_and_five_fields() {
        for addr in [None, Some(&b"127.0.0.1;5555"[..]), Some(&b""[..])] {
            let wire =
                encode_request(b"user", b"p\xc3\xa4ss w", b"smtp", b"example.org", addr).unwrap();
            let (request, consumed) = complete(wire.as_bytes());
            assert_eq!(consumed, wire.as_bytes().len());
            assert_eq!(request.login, b"user");
            assert_eq!(request.password.as_bytes(), b"p\xc3\xa4ss w");
            assert_eq!(request.service, b"smtp");
            assert_eq!(request.realm, b"example.org");
            assert_eq!(request.client_addr.as_deref(), addr);
        }
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let four = frame(&[b"user", b"secret", b"imap", b"realm"]);
        let five = frame(&[b"user", b"secret", b"imap", b"realm", b"::1;25"]);
        for (len, whole) in [(four.len(), &four), (five.len(), &five)] {
            for cut in 0..len {
                let prefix = &whole[..cut];
                let got = decode_request(prefix, DEFAULT_MAX_FIELD_LEN);
                // A cut exactly after the fourth field is a complete 4-field request.
                if cut == four.len() {
                    assert!(matches!(got, Decoded::Complete { .. }), "cut {cut}");
                } else {
                    assert_eq!(got, Decoded::Incomplete, "cut {cut}");
                }
            }
        }
    }

    #[test]
    fn fifth_field_needs_to_be_complete_once_started() {
        let mut buf = frame(&[b"u", b"p", b"s", b""]);
        buf.extend_from_slice(&[0x00]); // first byte of the fifth length prefix
        assert_eq!(
            decode_request(&buf, DEFAULT_MAX_FIELD_LEN),
            Decoded::Incomplete
        );
        buf.extend_from_slice(&[0x03, b'1', b';']);
        assert_eq!(
            decode_request(&buf, DEFAULT_MAX_FIELD_LEN),
            Decoded::Incomplete
        );
        buf.push(b'2');
        let (request, _) = complete(&buf);
        assert_eq!(request.client_addr.as_deref(), Some(&b"1;2"[..]));
    }

    /// `decode_received`: what follows four complete fields, with and without more bytes
    /// on their way (`settled`).
    #[test]
    fn received_bytes_that_cannot_start_a_fifth_field_are_ignored_once_settled() {
        let four = frame(&[b"u", b"p", b"s", b"r"]);
        let with = |tail: &[u8]| [&four[..], tail].concat();
        let four_field = |buf: &[u8], settled: bool| match decode_received(buf, 1024, settled) {
            Decoded::Complete { request, consumed } => {
                assert_eq!(request.client_addr, None, "{buf:?}");
                assert_eq!(request.password.as_bytes(), b"p");
                consumed
            }
            other => panic!("{buf:?} settled={settled}: {other:?}"),
        };
        // Nothing after the four fields: a four-field request either way.
        assert_eq!(four_field(&four, false), four.len());
        assert_eq!(four_field(&four, true), four.len());
        // A lone byte, half a length prefix: more may come; settled, it is ignored.
        let lone = with(&[0x00]);
        assert_eq!(decode_received(&lone, 1024, false), Decoded::Incomplete);
        assert_eq!(four_field(&lone, true), four.len());
        // "GA…": a prefix over the limit without that many bytes behind it.
        let text = with(b"GARBAGE");
        assert_eq!(decode_received(&text, 1024, false), Decoded::Incomplete);
        assert_eq!(four_field(&text, true), four.len());
        // An over-long client address whose bytes are all there is refused, settled or not;
        // one byte short, its bytes may still be coming, or (settled) it is garbage.
        let mut over = with(&1025u16.to_be_bytes());
        over.extend_from_slice(&[b'a'; 1024]);
        assert_eq!(decode_received(&over, 1024, false), Decoded::Incomplete);
        assert_eq!(four_field(&over, true), four.len());
        over.push(b'a');
        for settled in [false, true] {
            assert_eq!(
                decode_received(&over, 1024, settled),
                Decoded::Rejected(Rejection::TooLong {
                    field: Field::ClientAddr,
                    len: 1025,
                    limit: 1024
                })
            );
        }
        // A fifth field started is waited for, settled or not, then read.
        let mut five = with(&[0x00, 0x03, b'1']);
        for settled in [false, true] {
            assert_eq!(decode_received(&five, 1024, settled), Decoded::Incomplete);
        }
        five.extend_from_slice(b";2");
        five.extend_from_slice(b"next");
        match decode_received(&five, 1024, true) {
            Decoded::Complete { request, consumed } => {
                assert_eq!(request.client_addr.as_deref(), Some(&b"1;2"[..]));
                assert_eq!(consumed, five.len() - 4);
            }
            other => panic!("{other:?}"),
        }
        // The four fields themselves: as decode_request has them.
        for settled in [false, true] {
            assert_eq!(
                decode_received(&four[..four.len() - 1], 1024, settled),
                Decoded::Incomplete
            );
            assert_eq!(
                decode_received(&four, 0, settled),
                Decoded::Rejected(Rejection::TooLong {
                    field: Field::Login,
                    len: 1,
                    limit: 0
                })
            );
        }
    }

    #[test]
    fn bytes_after_the_fifth_field_are_not_consumed() {
        let mut buf = frame(&[b"u", b"p", b"s", b"", b"a"]);
        let expected = buf.len();
        buf.extend_from_slice(&frame(&[b"second", b"request"]));
        let (_, consumed) = complete(&buf);
        assert_eq!(consumed, expected);
    }

    #[test]
    fn oversize_length_is_rejected_before_the_data_arrives() {
        for (index, which) in Field::REQUIRED.iter().enumerate() {
            let mut buf = Vec::new();
            for _ in 0..index {
                buf.extend_from_slice(&field(b"x"));
            }
            buf.extend_from_slice(&1025u16.to_be_bytes());
            assert_eq!(
                decode_request(&buf, 1024),
                Decoded::Rejected(Rejection::TooLong {
                    field: *which,
                    len: 1025,
                    limit: 1024
                })
            );
        }
        let mut buf = frame(&[b"u", b"p", b"s", b""]);
        buf.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(
            decode_request(&buf, 1024),
            Decoded::Rejected(Rejection::TooLong {
                field: Field::ClientAddr,
                ..
            })
        ));
    }

    #[test]
    fn limit_is_inclusive_and_configurable() {
        let long = vec![b'L'; 1024];
        let (request, _) = complete(&frame(&[b"u", &long, b"s", b""]));
        assert_eq!(request.password.as_bytes().len(), 1024);
        let (_, _) = match decode_request(&frame(&[b"u", &long[..256], b"s", b""]), 256) {
            Decoded::Complete { request, consumed } => (request, consumed),
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            decode_request(&frame(&[b"u", &long[..257], b"s", b""]), 256),
            Decoded::Rejected(Rejection::TooLong {
                field: Field::Password,
                len: 257,
                limit: 256
            })
        ));
    }

    #[test]
    fn validation_refuses_empty_and_nul_fields() {
        let check = |fields: &[&[u8]]| {
            let (request, _) = complete(&frame(fields));
            request.validate()
        };
        assert_eq!(check(&[b"", b"", b"", b""]), Err(Rejection::EmptyLogin));
        assert_eq!(check(&[b"u", b"", b"", b""]), Err(Rejection::EmptyPassword));
        assert_eq!(
            check(&[b"u", b"good\0junk", b"", b""]),
            Err(Rejection::NulByte(Field::Password))
        );
        assert_eq!(
            check(&[b"\0", b"p", b"", b""]),
            Err(Rejection::NulByte(Field::Login))
        );
        assert_eq!(
            check(&[b"u", b"p", b"im\0ap", b""]),
            Err(Rejection::NulByte(Field::Service))
        );
        assert_eq!(
            check(&[b"u", b"p", b"", b"r\0"]),
            Err(Rejection::NulByte(Field::Realm))
        );
        assert_eq!(
            check(&[b"u", b"p", b"", b"", b"1.2.3.4\0;1"]),
            Err(Rejection::NulByte(Field::ClientAddr))
        );
        assert_eq!(check(&[b"u", b"p", b"", b""]), Ok(()));
    }

    #[test]
    fn rejection_reasons_match_upstream_where_upstream_has_one() {
        assert_eq!(
            Rejection::EmptyLogin.reply().text(),
            "NO NULL login received"
        );
        assert_eq!(
            Rejection::EmptyPassword.reply().text(),
            "NO NULL password received"
        );
        let too_long = Rejection::TooLong {
            field: Field::ClientAddr,
            len: 2000,
            limit: 1024,
        };
        assert_eq!(
            too_long.reply().text(),
            "NO client address exceeds 1024 bytes"
        );
    }

    #[test]
    fn replies_encode_as_counted_strings_without_nul() {
        assert_eq!(Reply::ok().encode(), [0x00, 0x02, b'O', b'K']);
        let no = Reply::no("Incorrect password").encode();
        assert_eq!(&no[..2], &[0x00, 0x15]);
        assert_eq!(&no[2..], b"NO Incorrect password");
        assert_eq!(
            Reply::Ok(Some("remote authentication successful".into())).encode()[..2],
            [0x00, 0x23]
        );
    }

    #[test]
    fn a_no_without_reason_is_two_bytes() {
        assert_eq!(Reply::bare_no().encode(), b"\0\x02NO");
        assert_eq!(Reply::no("x").encode(), b"\0\x04NO x");
        assert!(!Reply::bare_no().is_ok());
    }

    #[test]
    fn reply_decoding_waits_for_the_whole_text() {
        let wire = Reply::no("x").encode();
        for cut in 0..wire.len() {
            assert_eq!(decode_reply(&wire[..cut]), None);
        }
        assert_eq!(decode_reply(&wire), Some(&b"NO x"[..]));
        assert!(reply_is_ok(b"OK"));
        assert!(reply_is_ok(b"OK remote authentication successful"));
        assert!(!reply_is_ok(b"ok"));
        assert!(!reply_is_ok(b"O"));
    }

    #[test]
    fn encoding_refuses_fields_a_counted_string_cannot_hold() {
        let huge = vec![b'x'; MAX_COUNTED_LEN + 1];
        assert_eq!(
            encode_request(b"u", &huge, b"s", b"", None).unwrap_err(),
            Field::Password
        );
        assert_eq!(encode_counted(&huge).len(), 2 + MAX_COUNTED_LEN);
    }

    #[test]
    fn max_request_len_covers_five_full_fields() {
        assert_eq!(max_request_len(1024), 5 * 1026);
        assert_eq!(max_request_len(usize::MAX), 5 * (2 + MAX_COUNTED_LEN));
    }
}
