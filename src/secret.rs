//! The one type that holds a password: wiped from memory when dropped, never printed.
//!
//! Everything that carries password bytes — a decoded request, an encoded request, the
//! C string handed to crypt — lives in a [`Password`], so no copy outlives its use and no
//! `Debug` or log line can show it.
#![forbid(unsafe_code)]

use std::fmt;

use zeroize::Zeroize;

/// Secret bytes, zeroed on drop. `Debug` shows only the length.
#[derive(Default, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    pub fn new(bytes: Vec<u8>) -> Password {
        Password(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The bytes followed by a NUL terminator, for C functions; the copy wipes itself too.
    /// Callers must have refused interior NULs first.
    pub fn to_c_bytes(&self) -> Password {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        out.extend_from_slice(&self.0);
        out.push(0);
        Password(out)
    }

    /// Appends bytes (used when reading a password from a terminal or a reply buffer).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        // Grow by hand so that a reallocation never leaves an unwiped copy behind.
        if self.0.capacity() - self.0.len() < bytes.len() {
            let mut bigger = Vec::with_capacity((self.0.len() + bytes.len()).max(64) * 2);
            bigger.extend_from_slice(&self.0);
            self.0.zeroize();
            self.0 = bigger;
        }
        self.0.extend_from_slice(bytes);
    }

    /// Drops trailing bytes (e.g. a line end) and wipes them.
    pub fn truncate(&mut self, len: usize) {
        if len < self.0.len() {
            self.0[len..].zeroize();
            self.0.truncate(len);
        }
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Password(<{} bytes redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let pw = Password::new(b"hunter2".to_vec());
        let shown = format!("{pw:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("7 bytes"));
    }

    #[test]
    fn c_bytes_are_nul_terminated() {
        let pw = Password::new(b"abc".to_vec());
        assert_eq!(pw.to_c_bytes().as_bytes(), b"abc\0");
    }

    #[test]
    fn extend_and_truncate_keep_content() {
        let mut pw = Password::default();
        for chunk in [&b"line"[..], b" of", b" text\n"] {
            pw.extend_from_slice(chunk);
        }
        pw.truncate(pw.len() - 1);
        assert_eq!(pw.as_bytes(), b"line of text");
    }
}
