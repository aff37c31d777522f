//! The only modules with `unsafe` code: thin FFI wrappers over libc, libxcrypt and PAM.
//!
//! Each exposes a safe function; every `unsafe` block carries a `// SAFETY:` comment.
//! Nothing outside `sys` may use `unsafe` (the rest of the crate forbids it).

#[cfg(not(feature = "pure-rust-hash"))]
pub mod crypt;
pub mod pam;
pub mod shadow;
