//! `getspnam_r`: the shadow entry of a user, through NSS (so nsswitch sources work).
//!
//! The buffer starts at 4 KiB and doubles on `ERANGE` up to 1 MiB, so long entries never
//! turn into "unknown user" as they can upstream (fixed 256-byte buffers).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::ptr;

use nix::errno::Errno;
use zeroize::Zeroizing;

use crate::secret::Password;

const INITIAL_BUFFER: usize = 4096;
const MAX_BUFFER: usize = 1 << 20;

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

/// Looks `name` up. `Ok(None)`: no such entry. `Err`: the lookup itself failed.
pub fn getspnam(name: &str) -> Result<Option<ShadowEntry>, Errno> {
    let Ok(c_name) = CString::new(name) else {
        return Ok(None);
    };
    let mut size = INITIAL_BUFFER;
    loop {
        // The string buffer receives the hash: wipe it whatever happens.
        let mut buf = Zeroizing::new(vec![0u8; size]);
        // SAFETY: an all-zero `spwd` is a valid value (null pointers, zero integers); it
        // is only read after getspnam_r filled it.
        let mut entry: libc::spwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::spwd = ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `c_name` is NUL-terminated, `entry`
        // and `result` are live locals, `buf` has exactly `size` writable bytes.
        let rc = unsafe {
            libc::getspnam_r(
                c_name.as_ptr(),
                &mut entry,
                buf.as_mut_ptr().cast(),
                size,
                &mut result,
            )
        };
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => {
                let hash = if entry.sp_pwdp.is_null() {
                    Vec::new()
                } else {
                    // SAFETY: on success `sp_pwdp` points to a NUL-terminated string in
                    // `buf`, which is alive until the end of this iteration.
                    unsafe { CStr::from_ptr(entry.sp_pwdp) }.to_bytes().to_vec()
                };
                return Ok(Some(ShadowEntry {
                    hash: Password::new(hash),
                    last_change: entry.sp_lstchg as i64,
                    max_age: entry.sp_max as i64,
                    expire: entry.sp_expire as i64,
                }));
            }
            libc::ERANGE if size < MAX_BUFFER => size *= 2,
            // ENOENT is how some NSS modules report "no such user".
            libc::ENOENT => return Ok(None),
            errno => return Err(Errno::from_raw(errno)),
        }
    }
}
