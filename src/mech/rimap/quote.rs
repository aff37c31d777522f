//! RFC 3501 strings for the `LOGIN` command, built in wiping buffers.
//!
//! A value made only of printable ASCII (0x20-0x7E) goes out as a quoted string, with `"`
//! and `\` escaped by a backslash: the bytes upstream's rimap sends. Anything else that a
//! quoted string cannot carry (8-bit bytes such as UTF-8, control characters) goes out as a
//! synchronizing literal `{n}` CRLF followed by the raw bytes, once the server has sent a
//! continuation request. CR, LF and NUL cannot be carried at all (a literal could carry CR
//! and LF, but no server login accepts them and upstream sent them raw, splitting the
//! command): such a value is refused before any connection is made.
//!
//! The command is returned as the parts to send one after the other; every part but the last
//! ends with a literal's `{n}` CRLF, after which the server must answer `+` before the next
//! part goes out. Every part is a [`Password`], so the password never sits in a buffer that
//! is not wiped.
#![forbid(unsafe_code)]

use crate::secret::Password;

/// How one value goes into the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Quoted,
    Literal,
}

/// A value with a byte no IMAP string may carry in a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub byte: u8,
}

/// How `value` must be sent, or which byte makes it impossible.
pub fn encoding(value: &[u8]) -> Result<Encoding, Forbidden> {
    if let Some(&byte) = value.iter().find(|&&b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(Forbidden { byte });
    }
    if value.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        Ok(Encoding::Quoted)
    } else {
        Ok(Encoding::Literal)
    }
}

/// Appends `value` as a quoted string.
fn push_quoted(out: &mut Password, value: &[u8]) {
    out.extend_from_slice(b"\"");
    for chunk in value.split_inclusive(|&b| b == b'"' || b == b'\\') {
        match chunk.split_last() {
            Some((&last, head)) if last == b'"' || last == b'\\' => {
                out.extend_from_slice(head);
                out.extend_from_slice(&[b'\\', last]);
            }
            _ => out.extend_from_slice(chunk),
        }
    }
    out.extend_from_slice(b"\"");
}

/// `TAG LOGIN login password` CRLF, as the parts to send (see the module comment).
pub fn login_command(tag: &str, login: &[u8], password: &[u8]) -> Result<Vec<Password>, Forbidden> {
    let encodings = [encoding(login)?, encoding(password)?];
    // Room for the worst case (every byte escaped), so the buffers never reallocate.
    let room = tag.len() + 16 + 2 * (login.len() + password.len()) + 32;
    let fresh = || Password::new(Vec::with_capacity(room));
    let mut parts = Vec::new();
    let mut current = fresh();
    current.extend_from_slice(tag.as_bytes());
    current.extend_from_slice(b" LOGIN");
    for (value, encoding) in [login, password].into_iter().zip(encodings) {
        current.extend_from_slice(b" ");
        match encoding {
            Encoding::Quoted => push_quoted(&mut current, value),
            Encoding::Literal => {
                current.extend_from_slice(format!("{{{}}}\r\n", value.len()).as_bytes());
                parts.push(std::mem::replace(&mut current, fresh()));
                current.extend_from_slice(value);
            }
        }
    }
    current.extend_from_slice(b"\r\n");
    parts.push(current);
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(parts: &[Password]) -> Vec<&[u8]> {
        parts.iter().map(Password::as_bytes).collect()
    }

    #[test]
    fn printable_ascii_is_quoted_like_upstream() {
        let parts = login_command("saslauthd", b"dimap", b"Dove-Lab-pw1").unwrap();
        assert_eq!(
            sent(&parts),
            [&b"saslauthd LOGIN \"dimap\" \"Dove-Lab-pw1\"\r\n"[..]]
        );
        // upstream-saslauthd.md: `us"er\x` -> `"us\"er\\x"`, `q"uo\te d pw` -> `"q\"uo\\te d pw"`.
        let parts = login_command("A1", b"us\"er\\x", b"q\"uo\\te d pw").unwrap();
        assert_eq!(
            sent(&parts),
            [&b"A1 LOGIN \"us\\\"er\\\\x\" \"q\\\"uo\\\\te d pw\"\r\n"[..]]
        );
        let parts = login_command("A1", b"\\", b"\"\"").unwrap();
        assert_eq!(sent(&parts), [&b"A1 LOGIN \"\\\\\" \"\\\"\\\"\"\r\n"[..]]);
    }

    #[test]
    fn eight_bit_and_control_bytes_go_in_literals() {
        let pw = "p\"a\\ss wö€rd".as_bytes();
        let parts = login_command("A1", b"bob", pw).unwrap();
        let mut last = pw.to_vec();
        last.extend_from_slice(b"\r\n");
        assert_eq!(sent(&parts), [&b"A1 LOGIN \"bob\" {15}\r\n"[..], &last[..]]);
        let parts = login_command("A1", "jö".as_bytes(), b"tab\there").unwrap();
        assert_eq!(
            sent(&parts),
            [
                &b"A1 LOGIN {3}\r\n"[..],
                &b"j\xc3\xb6 {8}\r\n"[..],
                &b"tab\there\r\n"[..]
            ]
        );
        assert_eq!(encoding(b"\x7f"), Ok(Encoding::Literal));
        assert_eq!(encoding(b"\x01"), Ok(Encoding::Literal));
        assert_eq!(encoding(b"\xff"), Ok(Encoding::Literal));
        assert_eq!(encoding(b" ~"), Ok(Encoding::Quoted));
        assert_eq!(encoding(b""), Ok(Encoding::Quoted));
    }

    #[test]
    fn cr_lf_and_nul_are_refused() {
        for (value, byte) in [
            (&b"pw\r\nA2 LOGOUT"[..], b'\r'),
            (b"pw\nx", b'\n'),
            (b"pw\0x", 0),
        ] {
            assert_eq!(encoding(value), Err(Forbidden { byte }));
            assert_eq!(
                login_command("A1", b"user", value).err(),
                Some(Forbidden { byte })
            );
            assert_eq!(
                login_command("A1", value, b"pw").err(),
                Some(Forbidden { byte })
            );
        }
    }

    #[test]
    fn worst_case_escaping_fits() {
        let pw = vec![b'"'; 1000];
        let parts = login_command("saslauthd", &[b'\\'; 1000], &pw).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].len(), "saslauthd LOGIN ".len() + 2 * 2002 + 1 + 2);
    }
}
