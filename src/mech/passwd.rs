//! The passwd lookup that `shadow` and `getpwent` share, with upstream's reply texts for
//! it: an unknown user is `Invalid username`, a failed lookup (an NSS source down) is
//! `Username lookup failure: <strerror>`.
#![forbid(unsafe_code)]

use crate::protocol::Reply;
use crate::sys::nss::{PasswdEntry, getpwnam};

pub const INVALID_USERNAME: &str = "Invalid username";
pub const INCORRECT_PASSWORD: &str = "Incorrect password";
/// Prefix of the reply for a failed passwd lookup (an NSS error, not a verdict on the user).
pub const LOOKUP_FAILURE: &str = "Username lookup failure";

/// `login`'s passwd entry; `Err` is the reply for a user that can't be looked up. A login
/// that is not UTF-8 is an unknown user.
pub fn lookup(login: &[u8]) -> Result<PasswdEntry, Reply> {
    let Ok(login) = std::str::from_utf8(login) else {
        return Err(Reply::no(INVALID_USERNAME));
    };
    match getpwnam(login) {
        Ok(Some(entry)) => Ok(entry),
        Ok(None) => Err(Reply::no(INVALID_USERNAME)),
        Err(errno) => Err(Reply::no(format!("{LOOKUP_FAILURE}: {}", errno.desc()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_non_utf8_logins_are_invalid() {
        for login in [&b"no-such-user-sasl-rs"[..], b"\xff\xfe"] {
            assert_eq!(
                lookup(login).err().map(|r| r.text()),
                Some("NO Invalid username".to_string())
            );
        }
        assert!(lookup(b"root").is_ok());
    }
}
