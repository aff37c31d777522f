//! Berkeley DB 5.3 (`libdb-5.3`), read-only: one lookup in a hash database file, as
//! libsasl2's sasldb plugin does it (no environment, no locking, opened and closed per
//! lookup, so a file rewritten in place is seen by the next lookup).
//!
//! It goes through libdb's DB 1.85 interface (`dbopen`, `db_185.h`), which libdb 5.3
//! implements on top of its current engine: the same code reads the same files, but the
//! handle is a small stable structure of function pointers, where the 5.3 `DB` handle is
//! a 400-line structure that would have to be mirrored field by field.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

use nix::errno::Errno;

use crate::secret::Password;

/// DB 1.85's `DBT`.
#[repr(C)]
struct Dbt {
    data: *mut c_void,
    size: usize,
}

/// DB 1.85's `DBTYPE`.
#[repr(C)]
#[allow(dead_code)]
enum DbType {
    Btree = 0,
    Hash = 1,
    Recno = 2,
}

/// DB 1.85's `DB` handle.
#[repr(C)]
struct Db185 {
    db_type: c_int,
    close: Option<unsafe extern "C" fn(*mut Db185) -> c_int>,
    del: Option<unsafe extern "C" fn(*const Db185, *const Dbt, c_uint) -> c_int>,
    get: Option<unsafe extern "C" fn(*const Db185, *const Dbt, *mut Dbt, c_uint) -> c_int>,
    put: Option<unsafe extern "C" fn(*const Db185, *mut Dbt, *const Dbt, c_uint) -> c_int>,
    seq: Option<unsafe extern "C" fn(*const Db185, *mut Dbt, *mut Dbt, c_uint) -> c_int>,
    sync: Option<unsafe extern "C" fn(*const Db185, c_uint) -> c_int>,
    internal: *mut c_void,
    fd: Option<unsafe extern "C" fn(*const Db185) -> c_int>,
}

#[link(name = "db-5.3")]
unsafe extern "C" {
    /// `dbopen` (a macro for this symbol in `db_185.h`).
    fn __db185_open(
        file: *const c_char,
        flags: c_int,
        mode: c_int,
        db_type: DbType,
        openinfo: *const c_void,
    ) -> *mut Db185;
    fn db_strerror(error: c_int) -> *const c_char;
}

/// Why a lookup could not be made (not "no such key": that is `Ok(None)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    /// `open` or `get`.
    pub call: &'static str,
    pub message: String,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.call, self.message)
    }
}

/// The value stored under `key` in the hash database `path`, opened read-only for this
/// lookup only. `Ok(None)`: no such key. The value is wiped on drop (sasldb values are
/// plaintext passwords).
pub fn fetch(path: &Path, key: &[u8]) -> Result<Option<Password>, DbError> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| DbError {
        call: "open",
        message: "NUL byte in the path".into(),
    })?;
    // SAFETY: `c_path` is NUL-terminated and outlives the call; O_RDONLY with mode 0660
    // (libsasl's); DB_HASH; no open info (NULL: the file's own parameters).
    let raw = unsafe {
        __db185_open(
            c_path.as_ptr(),
            libc::O_RDONLY,
            0o660,
            DbType::Hash,
            std::ptr::null(),
        )
    };
    let Some(db) = NonNull::new(raw) else {
        return Err(last_error("open"));
    };
    let handle = Handle(db);
    handle.get(key)
}

/// An open handle, closed on drop.
struct Handle(NonNull<Db185>);

impl Handle {
    fn get(&self, key: &[u8]) -> Result<Option<Password>, DbError> {
        let key = Dbt {
            data: key.as_ptr().cast_mut().cast(),
            size: key.len(),
        };
        let mut value = Dbt {
            data: std::ptr::null_mut(),
            size: 0,
        };
        // SAFETY: the handle came from a successful dbopen and is not closed yet.
        let Some(get) = (unsafe { self.0.as_ref() }).get else {
            return Err(DbError {
                call: "get",
                message: "no get method".into(),
            });
        };
        // SAFETY: `get` is the handle's own method, called on that handle; `key` points
        // to `key.size` readable bytes (libdb does not write through it); `value` is a
        // writable DBT; flags 0.
        let rc = unsafe { get(self.0.as_ptr(), &key, &mut value, 0) };
        match rc {
            0 if value.data.is_null() && value.size > 0 => Err(DbError {
                call: "get",
                message: "no data".into(),
            }),
            0 => {
                let bytes = if value.size == 0 {
                    Vec::new()
                } else {
                    // SAFETY: on success `value` points to `size` bytes owned by the
                    // handle, valid until its next call; copied here, before close.
                    unsafe { std::slice::from_raw_parts(value.data.cast::<u8>(), value.size) }
                        .to_vec()
                };
                Ok(Some(Password::new(bytes)))
            }
            1 => Ok(None),
            _ => Err(last_error("get")),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle is live; `close` is its own method and frees it, once.
        if let Some(close) = unsafe { self.0.as_ref() }.close {
            // SAFETY: as above; nothing uses the handle afterwards.
            unsafe { close(self.0.as_ptr()) };
        }
    }
}

/// The failure of the last DB 1.85 call: libdb leaves its error code (a system errno or
/// one of its own negative codes) in `errno`.
fn last_error(call: &'static str) -> DbError {
    let code = Errno::last_raw();
    // SAFETY: db_strerror returns a static string (or a thread-local buffer's contents)
    // for any code; copied at once.
    let text = unsafe { db_strerror(code) };
    // SAFETY: NULL or NUL-terminated, and nothing on this thread changes it before the
    // copy is made.
    let message = unsafe { super::message(text) }.unwrap_or_else(|| format!("error {code}"));
    DbError { call, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_an_open_error() {
        let error = fetch(Path::new("/nonexistent/sasldb2"), b"k").unwrap_err();
        assert_eq!(error.call, "open");
        assert!(error.message.contains("No such file"), "{error}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_open_error() {
        let dir = std::env::temp_dir().join(format!("bdb-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("garbage");
        std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
        assert_eq!(fetch(&path, b"k").unwrap_err().call, "open");
        std::fs::write(&path, b"").unwrap();
        assert!(fetch(&path, b"k").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
