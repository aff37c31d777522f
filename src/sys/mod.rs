//! The only modules with `unsafe` code: thin FFI wrappers over libc, libxcrypt, PAM,
//! MIT libkrb5 and Berkeley DB.
//!
//! Each exposes a safe function; every `unsafe` block carries a `// SAFETY:` comment.
//! Nothing outside `sys` may use `unsafe` (the rest of the crate forbids it).

pub mod berkeley_db;
#[cfg(not(feature = "pure-rust-hash"))]
pub mod crypt;
pub mod fd;
pub mod krb5;
pub mod nss;
pub mod pam;
pub mod record_lock;
pub mod thread_uid;
