//! `getpwnam_r` and `getspnam_r`: a user's passwd and shadow entries, through NSS (so
//! nsswitch sources work).
//!
//! The string buffer starts at 4 KiB and doubles on `ERANGE` up to 1 MiB, so long entries
//! never turn into "unknown user" as they can upstream (fixed 256-byte buffers), and it is
//! wiped whatever happens: it receives password hashes.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::ptr;

use nix::errno::Errno;
use zeroize::Zeroizing;

use crate::secret::Password;

const INITIAL_BUFFER: usize = 4096;
const MAX_BUFFER: usize = 1 << 20;

/// The fields of a passwd entry we use.
#[derive(Debug)]
pub struct PasswdEntry {
    /// `pw_passwd`: `x` on shadowed systems, a crypt hash where NSS returns one (NIS,
    /// LDAP, a passwd file with hashes). Wiped on drop.
    pub hash: Password,
}

/// The fields of a shadow entry we use. Day counts are days since 1970-01-01; `-1` means
/// "not set", as in `struct spwd`.
#[derive(Debug)]
pub struct ShadowEntry {
    /// The stored hash (or a lock marker). Wiped on drop.
    pub hash: Password,
    pub last_change: i64,
    pub max_age: i64,
    pub expire: i64,
}

/// Looks `name` up in passwd. `Ok(None)`: no such user (a name with a NUL included).
/// `Err`: the lookup itself failed.
pub fn getpwnam(name: impl AsRef<[u8]>) -> Result<Option<PasswdEntry>, Errno> {
    lookup(
        name.as_ref(),
        |name, entry: &mut libc::passwd, buf, size, result| {
            // SAFETY: every pointer is valid for the call: `name` is NUL-terminated,
            // `entry` and `result` are live, `buf` has exactly `size` writable bytes.
            unsafe { libc::getpwnam_r(name, entry, buf, size, result) }
        },
        |entry| PasswdEntry {
            // SAFETY: `read` runs only on success, while the buffer the entry points
            // into is alive.
            hash: unsafe { string(entry.pw_passwd) },
        },
    )
}

/// Looks `name` up in shadow. `Ok(None)`: no such entry (a name with a NUL included).
/// `Err`: the lookup itself failed.
// The day counts are `c_long`: `i64` here, `i32` on 32-bit targets.
#[allow(clippy::unnecessary_cast)]
pub fn getspnam(name: impl AsRef<[u8]>) -> Result<Option<ShadowEntry>, Errno> {
    lookup(
        name.as_ref(),
        |name, entry: &mut libc::spwd, buf, size, result| {
            // SAFETY: as in `getpwnam`.
            unsafe { libc::getspnam_r(name, entry, buf, size, result) }
        },
        |entry| ShadowEntry {
            // SAFETY: as in `getpwnam`.
            hash: unsafe { string(entry.sp_pwdp) },
            last_change: entry.sp_lstchg as i64,
            max_age: entry.sp_max as i64,
            expire: entry.sp_expire as i64,
        },
    )
}

/// The C structures `get*nam_r` fill in.
///
/// # Safety
/// All-zero bytes must be a valid value of the type (only integers and raw pointers).
/// Private to this module: no other type can be one.
unsafe trait Entry {}

// SAFETY: `struct passwd` holds only `char *` pointers and integers (uid, gid).
unsafe impl Entry for libc::passwd {}
// SAFETY: `struct spwd` holds only `char *` pointers and integers (day counts, flags).
unsafe impl Entry for libc::spwd {}

/// One `get*nam_r` call with a growing, wiped buffer; `read` copies what it needs out of
/// a filled entry.
fn lookup<E: Entry, T>(
    name: &[u8],
    mut call: impl FnMut(*const c_char, &mut E, *mut c_char, usize, *mut *mut E) -> c_int,
    read: impl FnOnce(&E) -> T,
) -> Result<Option<T>, Errno> {
    let Ok(c_name) = CString::new(name) else {
        return Ok(None);
    };
    let mut size = INITIAL_BUFFER;
    loop {
        let mut buf = Zeroizing::new(vec![0u8; size]);
        // SAFETY: all-zero is a valid `E` (`Entry`'s contract: null pointers, zero
        // integers); only read after a successful call.
        let mut entry: E = unsafe { std::mem::zeroed() };
        let mut result: *mut E = ptr::null_mut();
        let rc = call(
            c_name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr().cast(),
            size,
            &mut result,
        );
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => return Ok(Some(read(&entry))),
            libc::ERANGE if size < MAX_BUFFER => size *= 2,
            // ENOENT is how some NSS modules report "no such user".
            libc::ENOENT => return Ok(None),
            errno => return Err(Errno::from_raw(errno)),
        }
    }
}

/// A copy of the C string at `text` (empty for NULL), in a wiping buffer.
///
/// # Safety
/// `text` is NULL or points to a NUL-terminated string that is alive for the call.
unsafe fn string(text: *const c_char) -> Password {
    if text.is_null() {
        return Password::default();
    }
    // SAFETY: NUL-terminated and alive (caller).
    Password::new(unsafe { CStr::from_ptr(text) }.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_passwd_and_strangers_are_not() {
        let root = getpwnam("root").expect("lookup").expect("root exists");
        assert!(!root.hash.is_empty());
        assert!(getpwnam("no-such-user-sasl-rs").unwrap().is_none());
        assert!(getpwnam("nul\0name").unwrap().is_none());
    }
}
