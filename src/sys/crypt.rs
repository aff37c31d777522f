//! libxcrypt's `crypt_rn`, so every hash scheme the system itself accepts verifies here
//! (`$y$`, `$gy$`, `$7$`, `$2b$`, `$6$`, `$5$`, `$1$`, DES, ...).
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_ulong, c_void};

use zeroize::Zeroizing;

use crate::secret::Password;

/// `sizeof(struct crypt_data)` in libxcrypt 4.x.
const CRYPT_DATA_SIZE: usize = 32768;

#[link(name = "crypt")]
unsafe extern "C" {
    fn crypt_rn(
        phrase: *const c_char,
        setting: *const c_char,
        data: *mut c_void,
        size: c_int,
    ) -> *mut c_char;
    fn crypt_gensalt_rn(
        prefix: *const c_char,
        count: c_ulong,
        rbytes: *const c_char,
        nrbytes: c_int,
        output: *mut c_char,
        output_size: c_int,
    ) -> *mut c_char;
}

/// `CRYPT_GENSALT_OUTPUT_SIZE` in libxcrypt 4.x.
const GENSALT_OUTPUT_SIZE: usize = 192;

/// A setting for libxcrypt's default scheme at its default cost (yescrypt on Debian 12),
/// with a salt libxcrypt draws from the kernel. `None` if libxcrypt can't make one.
pub fn default_setting() -> Option<Vec<u8>> {
    let mut output = [0u8; GENSALT_OUTPUT_SIZE];
    // SAFETY: a NULL prefix asks for the default scheme, count 0 for its default cost,
    // NULL random bytes (with a count of 0) for libxcrypt's own randomness; `output` is
    // GENSALT_OUTPUT_SIZE writable bytes, the size passed. The result is NULL or
    // `output`, NUL-terminated.
    let result = unsafe {
        crypt_gensalt_rn(
            std::ptr::null(),
            0,
            std::ptr::null(),
            0,
            output.as_mut_ptr().cast(),
            GENSALT_OUTPUT_SIZE as c_int,
        )
    };
    if result.is_null() {
        return None;
    }
    // SAFETY: non-NULL: a NUL-terminated string inside `output`, alive here.
    let setting = unsafe { CStr::from_ptr(result) }.to_bytes().to_vec();
    (!setting.is_empty() && setting[0] != b'*').then_some(setting)
}

/// Hashes `password` with the scheme and salt of `setting` (a stored hash).
///
/// Returns `None` when libxcrypt refuses (unknown or disabled scheme, malformed setting) or
/// when either input has an interior NUL. The result wipes itself on drop.
pub fn crypt(password: &Password, setting: &[u8]) -> Option<Password> {
    if password.as_bytes().contains(&0) || setting.contains(&0) {
        return None;
    }
    let phrase = password.to_c_bytes();
    let setting = Password::new([setting, b"\0"].concat());
    // The scratch area holds intermediate hash state: keep it in a wiping buffer.
    let mut data = Zeroizing::new(vec![0u8; CRYPT_DATA_SIZE]);
    // SAFETY: `phrase` and `setting` are NUL-terminated and live until after the call;
    // `data` is CRYPT_DATA_SIZE writable bytes that outlive the call, and the size passed
    // matches. crypt_rn is thread-safe with a per-call
    // `data` area and returns NULL or a pointer into `data`.
    let result = unsafe {
        crypt_rn(
            phrase.as_bytes().as_ptr().cast(),
            setting.as_bytes().as_ptr().cast(),
            data.as_mut_ptr().cast(),
            CRYPT_DATA_SIZE as c_int,
        )
    };
    if result.is_null() {
        return None;
    }
    // SAFETY: a non-NULL result is a NUL-terminated string inside `data`, which is still
    // alive and not modified until it is dropped at the end of this function.
    let hashed = unsafe { CStr::from_ptr(result) }.to_bytes().to_vec();
    let hashed = Password::new(hashed);
    // libxcrypt's failure tokens start with '*' (only crypt_r returns them, but be safe).
    if hashed.as_bytes().first() == Some(&b'*') {
        return None;
    }
    Some(hashed)
}
