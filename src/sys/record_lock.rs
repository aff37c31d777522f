//! POSIX record locks (`fcntl` `F_SETLK`/`F_GETLK`) on a whole file: the instance lock on
//! the pid file. Cyrus's saslauthd takes exactly this lock on `saslauthd.pid`, so the two
//! daemons exclude each other; `flock(2)` locks would not (Linux keeps the two kinds
//! apart).
//!
//! A record lock belongs to the process and dies when the process closes *any* descriptor
//! of the file, so the holder must keep exactly one descriptor open and never open the
//! path again while it holds the lock.
#![allow(unsafe_code)]

use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};

/// Why a lock could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockError {
    /// Another process holds a conflicting lock; its pid if the kernel told us.
    Held(Option<i32>),
    /// Any other failure.
    Failed(Errno),
}

/// A request for a lock of `kind` over the whole file.
fn whole_file(kind: libc::c_int) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers (with, on some architectures,
    // padding or extra integer fields); all-zero is a valid value for every field.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0;
    lock
}

/// Takes an exclusive (write) lock on the whole file without waiting. The file must be
/// open for writing.
pub fn lock_exclusive(file: impl AsFd + Copy) -> Result<(), LockError> {
    let request = whole_file(libc::F_WRLCK);
    match fcntl(file, FcntlArg::F_SETLK(&request)) {
        Ok(_) => Ok(()),
        Err(Errno::EAGAIN | Errno::EACCES) => Err(LockError::Held(holder(file))),
        Err(errno) => Err(LockError::Failed(errno)),
    }
}

/// The pid of a process holding a lock that would conflict with our write lock on the
/// whole file, if any (and if the kernel can say: a lock held from another pid namespace
/// reports 0, which counts as unknown).
pub fn holder(file: impl AsFd) -> Option<i32> {
    let mut probe = whole_file(libc::F_WRLCK);
    fcntl(file, FcntlArg::F_GETLK(&mut probe)).ok()?;
    if probe.l_type == libc::F_UNLCK as libc::c_short || probe.l_pid <= 0 {
        return None;
    }
    Some(probe.l_pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn a_second_descriptor_in_the_same_process_does_not_conflict() {
        // Record locks are per process: relocking is allowed (and not a way to test
        // exclusion, which the daemon's integration tests do across processes).
        let dir = std::env::temp_dir().join(format!("record-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pid");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        assert_eq!(lock_exclusive(&file), Ok(()));
        assert_eq!(lock_exclusive(&file), Ok(()));
        // F_GETLK ignores our own locks.
        assert_eq!(holder(&file), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
