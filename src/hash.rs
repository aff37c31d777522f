//! Password hash verification: does a password produce the stored crypt(3) hash?
//!
//! By default libxcrypt does the hashing (see `sys::crypt`), so every scheme the system
//! accepts works, yescrypt included. With the `pure-rust-hash` cargo feature, `pwhash`
//! does it instead (no libxcrypt needed, but no `$y$`, `$gy$` or `$7$`). Either way the
//! full result is compared with the stored hash in constant time.
#![forbid(unsafe_code)]

use crate::secret::Password;

/// Whether `password` hashes to `stored`. Locked, empty or malformed hashes never match.
pub fn verify(password: &Password, stored: &[u8]) -> bool {
    match compute(password, stored) {
        Some(computed) => constant_time_eq(computed.as_bytes(), stored),
        None => false,
    }
}

#[cfg(not(feature = "pure-rust-hash"))]
fn compute(password: &Password, stored: &[u8]) -> Option<Password> {
    crate::sys::crypt::crypt(password, stored)
}

/// Whether the hashing library hashes with `setting` (a stored hash): a scheme it knows
/// and enables, well formed. Hashes a placeholder once to find out.
#[cfg(not(feature = "pure-rust-hash"))]
pub fn usable(setting: &[u8]) -> bool {
    crate::sys::crypt::crypt(&Password::new(b"x".to_vec()), setting).is_some()
}

/// Whether the hashing library hashes with `setting` (a stored hash): a scheme it knows,
/// well formed. Hashes a placeholder once to find out.
#[cfg(feature = "pure-rust-hash")]
pub fn usable(setting: &[u8]) -> bool {
    std::str::from_utf8(setting).is_ok_and(|setting| pwhash::unix::crypt("x", setting).is_ok())
}

/// A setting (or hash) of the system's default scheme and cost with a fresh salt, for
/// when no account shows which scheme is in use.
#[cfg(not(feature = "pure-rust-hash"))]
pub fn default_setting() -> Option<Password> {
    crate::sys::crypt::default_setting().map(Password::new)
}

/// A setting (or hash) of the system's default scheme and cost with a fresh salt, for
/// when no account shows which scheme is in use (pwhash: sha512crypt).
#[cfg(feature = "pure-rust-hash")]
pub fn default_setting() -> Option<Password> {
    pwhash::sha512_crypt::hash("placeholder")
        .ok()
        .map(|hash| Password::new(hash.into_bytes()))
}

/// The longest password libxcrypt hashes (CRYPT_MAX_PASSPHRASE_SIZE, 512, counts the NUL).
pub const MAX_PASSWORD_LEN: usize = 511;

#[cfg(feature = "pure-rust-hash")]
fn compute(password: &Password, stored: &[u8]) -> Option<Password> {
    // libxcrypt refuses longer passwords; pwhash would hash them (and, for DES and bcrypt,
    // which read only the first 8 or 72 bytes, accept them). Keep the system's verdict.
    if password.len() > MAX_PASSWORD_LEN {
        return None;
    }
    // pwhash verifies rather than hashes; map its verdict onto "the stored hash itself".
    let stored_str = std::str::from_utf8(stored).ok()?;
    let password = std::str::from_utf8(password.as_bytes()).ok()?;
    pwhash::unix::verify(password, stored_str).then(|| Password::new(stored.to_vec()))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with libxcrypt 4.4.33 (crypt(3)); password "Sasl-Lab-pw1".
    const SHA512: &str = "$6$3wRZf6ivvq.xq9Ko$VbpQMAHpk6DeQdugX/TzITp6iLE3wjIf/CHVH0GSKdRs/nNXdFFZPV06uBryO0NvjkkjntsPBq06E0cYYH5yP1";

    fn pw(s: &str) -> Password {
        Password::new(s.as_bytes().to_vec())
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn locked_empty_and_garbage_hashes_never_match() {
        for stored in ["", "!", "*", "!!", "*NP*", "*LK*", "x", "!$6$abc$def"] {
            assert!(!verify(&pw("anything"), stored.as_bytes()), "{stored:?}");
            assert!(!verify(&pw(""), stored.as_bytes()), "{stored:?}");
        }
    }

    #[test]
    fn usable_settings_are_those_the_library_hashes_with() {
        assert!(usable(SHA512.as_bytes()));
        assert!(!usable(b"!"));
        let default = default_setting().expect("a default setting");
        assert!(default.as_bytes().starts_with(b"$"));
        assert!(usable(default.as_bytes()));
        assert!(!verify(&pw("anything"), default.as_bytes()));
    }

    #[test]
    fn nul_in_password_never_matches() {
        assert!(!verify(&pw("Sasl-Lab-pw1\0junk"), SHA512.as_bytes()));
    }

    #[test]
    fn passwords_longer_than_libxcrypt_takes_never_match() {
        // DES reads 8 bytes: the same first 8 with any tail match, up to the limit only.
        let des = "abJnggxhB/yWI"; // crypt("password", "ab")
        let at_limit = format!("password{}", "x".repeat(MAX_PASSWORD_LEN - 8));
        assert!(verify(&pw(&at_limit), des.as_bytes()));
        assert!(!verify(&pw(&format!("{at_limit}x")), des.as_bytes()));
    }

    #[test]
    fn sha512crypt_verifies() {
        assert!(verify(&pw("Sasl-Lab-pw1"), SHA512.as_bytes()));
        assert!(!verify(&pw("Sasl-Lab-pw2"), SHA512.as_bytes()));
        let locked = format!("!{SHA512}");
        assert!(!verify(&pw("Sasl-Lab-pw1"), locked.as_bytes()));
    }

    /// DES crypt uses only the first 8 bytes of a password.
    #[cfg(not(feature = "pure-rust-hash"))]
    fn des_prefix(password: &str) -> &[u8] {
        &password.as_bytes()[..password.len().min(8)]
    }

    /// pwhash and libxcrypt must agree, both ways, on every scheme pwhash knows.
    #[cfg(not(feature = "pure-rust-hash"))]
    #[test]
    #[allow(deprecated)] // pwhash deprecates hashing with md5crypt/sha256crypt; we only cross-check
    fn libxcrypt_and_pwhash_agree() {
        let passwords = [
            "Sasl-Lab-pw1",
            "p\u{e4} ss \"q\\ \u{20ac}",
            "x",
            "long-password-0123456789",
        ];
        let settings = [
            "$6$Zq5cJ2b8y1vT4xQe$",
            "$5$Zq5cJ2b8y1vT4xQe$",
            "$1$Zq5cJ2b8$",
            "$2b$05$abcdefghijklmnopqrstuu",
            "ab",
        ];
        for password in passwords {
            let pw = Password::new(password.as_bytes().to_vec());
            for setting in settings {
                let ours = crate::sys::crypt::crypt(&pw, setting.as_bytes()).expect(setting);
                let ours = std::str::from_utf8(ours.as_bytes()).unwrap().to_string();
                for candidate in passwords {
                    assert_eq!(
                        pwhash::unix::verify(candidate, &ours),
                        candidate == password
                            || (setting == "ab" && des_prefix(candidate) == des_prefix(password)),
                        "pwhash on {setting} hash of {password:?} with {candidate:?}"
                    );
                }
            }
            for theirs in [
                pwhash::sha512_crypt::hash(password).unwrap(),
                pwhash::sha256_crypt::hash(password).unwrap(),
                pwhash::md5_crypt::hash(password).unwrap(),
                pwhash::bcrypt::hash(password).unwrap(),
            ] {
                assert!(verify(&pw, theirs.as_bytes()), "libxcrypt on {theirs}");
                assert!(!verify(
                    &Password::new(b"other".to_vec()),
                    theirs.as_bytes()
                ));
            }
        }
    }
}
