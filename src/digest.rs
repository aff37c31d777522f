//! Keyed digests of secrets, for state that must recognise a password without holding it
//! (the credential cache, the throttle's "same wrong password again" check).
//!
//! HMAC-SHA-256 under a random key drawn once per daemon start from the kernel. The key
//! never leaves the process and dies with it, so a digest is useless to anyone who reads
//! it from memory later, and cannot be brute-forced offline like plain MD5 of a password.
//! Every input part is length-prefixed, so ("ab", "c") and ("a", "bc") differ. The keyed
//! state (the key's inner and outer pad blocks, hashed) is computed once, so a digest of a
//! short input costs two SHA-256 blocks instead of four.
#![forbid(unsafe_code)]

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::hash::constant_time_eq;

/// A digest: 32 bytes, compared in constant time.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Constant-time equality, for comparisons that involve a password.
    pub fn matches(&self, other: &Digest) -> bool {
        constant_time_eq(&self.0, &other.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(..)")
    }
}

/// The per-start key, as HMAC's keyed state (the key itself is wiped once that is made).
pub struct KeyedHasher {
    keyed: Hmac<Sha256>,
}

impl KeyedHasher {
    /// A hasher with a fresh random key. Fails only if the kernel has no randomness to give.
    pub fn random() -> Result<KeyedHasher, getrandom::Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut())?;
        Ok(KeyedHasher::keyed(&key))
    }

    /// A hasher with a fixed key, for tests.
    pub fn with_key(key: [u8; 32]) -> KeyedHasher {
        KeyedHasher::keyed(&Zeroizing::new(key))
    }

    fn keyed(key: &Zeroizing<[u8; 32]>) -> KeyedHasher {
        KeyedHasher {
            keyed: <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref())
                .expect("HMAC takes keys of any length"),
        }
    }

    /// The digest of `parts` under this key; `domain` separates the uses of one key.
    pub fn digest(&self, domain: &str, parts: &[&[u8]]) -> Digest {
        let mut mac = self.keyed.clone();
        for part in std::iter::once(domain.as_bytes()).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        Digest(mac.finalize().into_bytes().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_prefixed_and_domains_separate() {
        let h = KeyedHasher::with_key([7; 32]);
        assert_ne!(h.digest("d", &[b"ab", b"c"]), h.digest("d", &[b"a", b"bc"]));
        assert_ne!(h.digest("a", &[b"x"]), h.digest("b", &[b"x"]));
        assert!(h.digest("d", &[b"x"]).matches(&h.digest("d", &[b"x"])));
    }

    #[test]
    fn keys_matter_and_random_keys_differ() {
        let a = KeyedHasher::random().unwrap();
        let b = KeyedHasher::random().unwrap();
        assert_ne!(a.digest("d", &[b"pw"]), b.digest("d", &[b"pw"]));
        assert_eq!(format!("{:?}", a.digest("d", &[b"pw"])), "Digest(..)");
    }
}
