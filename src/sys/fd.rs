//! Closing the descriptors a daemon inherits: whatever its starter left open (a log file,
//! a socket, a terminal) would otherwise stay open for the daemon's whole life and reach
//! every program it runs (PAM's helpers).
#![allow(unsafe_code)]

use std::io;
use std::ops::Range;
use std::os::fd::RawFd;

/// The first descriptor after stdin, stdout and stderr.
const FIRST_AFTER_STDIO: RawFd = 3;
/// The last descriptor number `close_range` can name.
const LAST: libc::c_uint = libc::c_uint::MAX;

/// Closes every descriptor from 3 up, except those in `keep` (the service manager's
/// `LISTEN_FDS`), which are marked close-on-exec instead. Call it first thing, before
/// anything of this process opens a descriptor. An old kernel without `close_range`
/// (before 5.9) gives `ENOSYS`.
pub fn close_inherited(keep: Option<Range<RawFd>>) -> io::Result<()> {
    match keep.filter(|range| range.start >= FIRST_AFTER_STDIO && range.start < range.end) {
        None => close_range(FIRST_AFTER_STDIO as libc::c_uint, LAST, 0),
        Some(keep) => {
            let (start, end) = (keep.start as libc::c_uint, keep.end as libc::c_uint);
            if keep.start > FIRST_AFTER_STDIO {
                close_range(FIRST_AFTER_STDIO as libc::c_uint, start - 1, 0)?;
            }
            close_range(end, LAST, 0)?;
            close_range(start, end - 1, libc::CLOSE_RANGE_CLOEXEC as libc::c_int)
        }
    }
}

fn close_range(first: libc::c_uint, last: libc::c_uint, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: close_range takes plain integers. Closing descriptors that code in this
    // process owns would be a use-after-close bug; `close_inherited` runs before anything
    // in the process has opened one, so those closed were inherited and no value owns them.
    let status = unsafe { libc::close_range(first, last, flags) };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
