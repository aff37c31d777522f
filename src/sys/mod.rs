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

use std::ffi::{CStr, c_char};

/// A copy of a C library's message text at `text` (invalid UTF-8 replaced); `None` for
/// NULL.
///
/// # Safety
/// `text` is NULL or points to a NUL-terminated string that stays alive and unchanged
/// for the call.
#[allow(unsafe_code)]
unsafe fn message(text: *const c_char) -> Option<String> {
    if text.is_null() {
        return None;
    }
    // SAFETY: non-NULL, so NUL-terminated and alive for the call (caller).
    Some(
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned(),
    )
}
