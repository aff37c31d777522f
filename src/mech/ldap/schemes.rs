//! `ldap_auth_method: custom`: does a password match one stored `userPassword` value?
//!
//! A value is `{SCHEME}data` (the scheme name in any case) or, with no `{...}` prefix at
//! all, cleartext:
//!
//! | scheme | data |
//! |---|---|
//! | `{CRYPT}`, `{UNIX}` | a crypt(3) hash, checked by libxcrypt (yescrypt, sha512crypt, bcrypt, ...) |
//! | `{MD5}`, `{SHA}`, `{SHA256}`, `{SHA384}`, `{SHA512}` | base64 of the digest |
//! | `{SMD5}`, `{SSHA}`, `{SSHA256}`, `{SSHA384}`, `{SSHA512}` | base64 of the digest followed by a salt of at least 1 byte |
//! | `{ARGON2}` | a PHC string `$argon2i$...` / `$argon2id$...` (OpenLDAP's argon2 module) |
//! | `{CLEARTEXT}` | the password itself |
//!
//! Digests are compared in constant time. Beyond upstream, which compares any value it
//! does not know as cleartext (so the stored `{SSHA512}...` text itself is accepted as a
//! password) and crashes on a salted value shorter than its digest: an unknown scheme or a
//! malformed value never matches, and says why (without the value) for the log.
#![forbid(unsafe_code)]

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::hash::{constant_time_eq, verify as crypt_verify};
use crate::secret::Password;

/// Largest Argon2 memory cost accepted, in KiB: a directory entry can't make one check
/// take gigabytes (the verification pool is sized for about 16 MiB per check; OpenLDAP's
/// argon2 module writes m=4096, 4 MiB, by default).
pub const ARGON2_MAX_MEMORY_KIB: u32 = 64 * 1024;
/// Largest Argon2 time cost (passes) accepted.
pub const ARGON2_MAX_PASSES: u32 = 64;
/// Largest Argon2 parallelism accepted.
pub const ARGON2_MAX_LANES: u32 = 16;

/// What a stored value says about a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Match,
    NoMatch,
    /// A `{SCHEME}` we don't verify (named).
    Unsupported(String),
    /// A known scheme whose data is broken (what is wrong, never the data).
    Malformed(String),
}

/// Checks `password` against one stored value.
pub fn check(stored: &[u8], password: &Password) -> Outcome {
    let Some((scheme, data)) = split_scheme(stored) else {
        return verdict(constant_time_eq(stored, password.as_bytes()));
    };
    // split_scheme allows ASCII names only.
    let name = String::from_utf8_lossy(scheme).to_ascii_uppercase();
    match name.as_str() {
        "CRYPT" | "UNIX" => {
            if data.is_empty() {
                return Outcome::Malformed(format!("{{{name}}} without a hash"));
            }
            verdict(crypt_verify(password, data))
        }
        "CLEARTEXT" => verdict(constant_time_eq(data, password.as_bytes())),
        "MD5" => digest::<Md5>(&name, data, password, false),
        "SMD5" => digest::<Md5>(&name, data, password, true),
        "SHA" => digest::<Sha1>(&name, data, password, false),
        "SSHA" => digest::<Sha1>(&name, data, password, true),
        "SHA256" => digest::<Sha256>(&name, data, password, false),
        "SSHA256" => digest::<Sha256>(&name, data, password, true),
        "SHA384" => digest::<Sha384>(&name, data, password, false),
        "SSHA384" => digest::<Sha384>(&name, data, password, true),
        "SHA512" => digest::<Sha512>(&name, data, password, false),
        "SSHA512" => digest::<Sha512>(&name, data, password, true),
        "ARGON2" => argon2(data, password),
        _ => Outcome::Unsupported(format!("{{{}}}", String::from_utf8_lossy(scheme))),
    }
}

fn verdict(matched: bool) -> Outcome {
    if matched {
        Outcome::Match
    } else {
        Outcome::NoMatch
    }
}

/// `{SCHEME}rest` → (`SCHEME`, `rest`); `None` for a value without a scheme prefix. A
/// scheme name is 1 to 32 letters, digits, `-` or `_`.
fn split_scheme(stored: &[u8]) -> Option<(&[u8], &[u8])> {
    let inner = stored.strip_prefix(b"{")?;
    let end = inner.iter().position(|&b| b == b'}')?;
    let name = &inner[..end];
    let valid = (1..=32).contains(&name.len())
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    valid.then(|| (name, &inner[end + 1..]))
}

/// `{SHA}`-style: base64(digest(password + salt) + salt).
fn digest<D: Digest>(name: &str, data: &[u8], password: &Password, salted: bool) -> Outcome {
    let Ok(decoded) = STANDARD.decode(data) else {
        return Outcome::Malformed(format!("{{{name}}} value is not base64"));
    };
    let decoded = Password::new(decoded);
    let size = <D as Digest>::output_size();
    let fits = if salted {
        decoded.len() > size
    } else {
        decoded.len() == size
    };
    if !fits {
        return Outcome::Malformed(format!(
            "{{{name}}} value has {} bytes, expected {}{size}",
            decoded.len(),
            if salted { "more than " } else { "" }
        ));
    }
    let (expected, salt) = decoded.as_bytes().split_at(size);
    let mut hasher = D::new();
    hasher.update(password.as_bytes());
    hasher.update(salt);
    let computed = hasher.finalize();
    verdict(constant_time_eq(&computed, expected))
}

/// OpenLDAP's `{ARGON2}` values: a PHC string, with bounded costs.
fn argon2(data: &[u8], password: &Password) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Malformed("{ARGON2} value is not a PHC string".into());
    };
    let hash = match PasswordHash::new(text) {
        Ok(hash) if hash.hash.is_some() && hash.salt.is_some() => hash,
        _ => return Outcome::Malformed("{ARGON2} value is not a PHC string".into()),
    };
    let Ok(params) = argon2::Params::try_from(&hash) else {
        return Outcome::Malformed("{ARGON2} value has unusable parameters".into());
    };
    if params.m_cost() > ARGON2_MAX_MEMORY_KIB
        || params.t_cost() > ARGON2_MAX_PASSES
        || params.p_cost() > ARGON2_MAX_LANES
    {
        return Outcome::Unsupported(format!(
            "{{ARGON2}} with m={} t={} p={} (limits: m={ARGON2_MAX_MEMORY_KIB} \
             t={ARGON2_MAX_PASSES} p={ARGON2_MAX_LANES})",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    match argon2::Argon2::default().verify_password(password.as_bytes(), &hash) {
        Ok(()) => Outcome::Match,
        Err(argon2::password_hash::Error::Password) => Outcome::NoMatch,
        Err(error) => Outcome::Malformed(format!("{{ARGON2}}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::new(s.as_bytes().to_vec())
    }

    fn is(stored: &str, password: &str) -> Outcome {
        check(stored.as_bytes(), &pw(password))
    }

    // Made with slappasswd 2.5.13 (-h {SSHA} etc.; pw-sha2 and argon2 modules).
    const SSHA: &str = "{SSHA}n1n6Z8zSoQ05NF+saHnkhn4T8RqIIi+1"; // Alice-pw-1
    const SSHA512: &str = "{SSHA512}YJv8xlzeHuRBPCnxSt2cI1GfSbl2SF+CTd3SgYpHeDGNGOjS32YDI+O2rjFLH3fXnPJpTrTqV+A4cFeyIU6fC22lnp1+PYAg"; // Ssha512-pw-1
    const ARGON2: &str = "{ARGON2}$argon2i$v=19$m=4096,t=3,p=1$rgVC0Wxe+VqV34tGXGLOqg$XuC85RjVfQCkozNLOROi3o7/xNe+fRcMQeyTRkAiSXE"; // x

    #[test]
    fn slappasswd_values() {
        assert_eq!(is(SSHA, "Alice-pw-1"), Outcome::Match);
        assert_eq!(is(SSHA, "Alice-pw-2"), Outcome::NoMatch);
        assert_eq!(is(SSHA512, "Ssha512-pw-1"), Outcome::Match);
        assert_eq!(is(SSHA512, "Ssha512-pw-"), Outcome::NoMatch);
        assert_eq!(is(ARGON2, "x"), Outcome::Match);
        assert_eq!(is(ARGON2, "y"), Outcome::NoMatch);
        // Scheme names in any case.
        assert_eq!(
            is(&SSHA.replace("SSHA", "ssha"), "Alice-pw-1"),
            Outcome::Match
        );
    }

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    #[test]
    fn computed_digests() {
        let password = "pä ss \"q\\ €";
        let salt = b"\x01\x02\x03\x04salt";
        let md5 = Md5::digest(password.as_bytes());
        let sha1 = Sha1::digest(password.as_bytes());
        let sha256 = Sha256::digest(password.as_bytes());
        let sha384 = Sha384::digest(password.as_bytes());
        let sha512 = Sha512::digest(password.as_bytes());
        let salted = |digest: &[u8]| [digest, &salt[..]].concat();
        let mut smd5 = Md5::new();
        smd5.update(password.as_bytes());
        smd5.update(salt);
        let smd5 = salted(&smd5.finalize());
        let mut ssha256 = Sha256::new();
        ssha256.update(password.as_bytes());
        ssha256.update(salt);
        let ssha256 = salted(&ssha256.finalize());
        for stored in [
            format!("{{MD5}}{}", b64(&md5)),
            format!("{{SMD5}}{}", b64(&smd5)),
            format!("{{SHA}}{}", b64(&sha1)),
            format!("{{SHA256}}{}", b64(&sha256)),
            format!("{{SSHA256}}{}", b64(&ssha256)),
            format!("{{SHA384}}{}", b64(&sha384)),
            format!("{{SHA512}}{}", b64(&sha512)),
            format!("{{CLEARTEXT}}{password}"),
            password.to_string(),
        ] {
            assert_eq!(is(&stored, password), Outcome::Match, "{stored}");
            assert_eq!(is(&stored, "pä ss"), Outcome::NoMatch, "{stored}");
            // The stored text is never a password (but for cleartext, which it is).
            if stored != password {
                assert_ne!(is(&stored, &stored), Outcome::Match, "{stored}");
            }
        }
    }

    #[test]
    fn crypt_values() {
        // libxcrypt 4.4.33: sha512crypt of "Sasl-Lab-pw1".
        let hash = "$6$3wRZf6ivvq.xq9Ko$VbpQMAHpk6DeQdugX/TzITp6iLE3wjIf/CHVH0GSKdRs/nNXdFFZPV06uBryO0NvjkkjntsPBq06E0cYYH5yP1";
        assert_eq!(
            is(&format!("{{CRYPT}}{hash}"), "Sasl-Lab-pw1"),
            Outcome::Match
        );
        assert_eq!(
            is(&format!("{{crypt}}{hash}"), "Sasl-Lab-pw1"),
            Outcome::Match
        );
        assert_eq!(
            is(&format!("{{UNIX}}{hash}"), "Sasl-Lab-pw2"),
            Outcome::NoMatch
        );
        assert!(matches!(is("{CRYPT}", "x"), Outcome::Malformed(_)));
        assert_eq!(is("{CRYPT}!locked", "x"), Outcome::NoMatch);
    }

    #[test]
    fn unknown_and_malformed_values_never_match() {
        let stored = "{PBKDF2-SHA512}10000$abc$def";
        assert_eq!(
            is(stored, stored),
            Outcome::Unsupported("{PBKDF2-SHA512}".into())
        );
        assert!(matches!(is("{SSHA}AAAA", "x"), Outcome::Malformed(m) if m.contains("3 bytes")));
        assert!(matches!(is("{SSHA}", "x"), Outcome::Malformed(_)));
        assert!(
            matches!(is("{SHA}not base64!", "x"), Outcome::Malformed(m) if m.contains("base64"))
        );
        assert!(matches!(is("{SSHA512}AAAA", "AAAA"), Outcome::Malformed(_)));
        // Unsalted digests must have the exact size.
        let long = b64(&[0u8; 21]);
        assert!(matches!(
            is(&format!("{{SHA}}{long}"), "x"),
            Outcome::Malformed(_)
        ));
        let garbage = is("{ARGON2}$argon2i$garbage", "x");
        assert!(matches!(garbage, Outcome::Malformed(_)), "{garbage:?}");
        let greedy = "{ARGON2}$argon2id$v=19$m=4194304,t=3,p=1$rgVC0Wxe+VqV34tGXGLOqg$XuC85RjVfQCkozNLOROi3o7/xNe+fRcMQeyTRkAiSXE";
        assert!(matches!(is(greedy, "x"), Outcome::Unsupported(m) if m.contains("m=4194304")));
        // Messages never carry the value.
        if let Outcome::Malformed(message) = is("{SHA}c2VjcmV0LXZhbHVl", "x") {
            assert!(!message.contains("c2VjcmV0"), "{message}");
        }
    }

    #[test]
    fn values_that_only_look_like_schemes_are_cleartext() {
        assert_eq!(is("{}x", "{}x"), Outcome::Match);
        assert_eq!(is("{a b}x", "{a b}x"), Outcome::Match);
        assert_eq!(is("{nobrace", "{nobrace"), Outcome::Match);
        assert_eq!(is("", "x"), Outcome::NoMatch);
    }
}
