//! The real uid of one thread: the raw `setresuid` system call, which Linux applies to the
//! calling thread only (glibc's `setresuid` would change every thread of the process).
//!
//! PAM transactions run with a non-zero real uid on their thread, so that `pam_rootok`
//! (which trusts a real uid of 0, and starts Debian's `su`, `chfn`, `runuser` stacks)
//! can never vouch for a login, while the effective and saved uids stay 0 and pam_unix
//! reads `/etc/shadow` as before. Measured with Linux-PAM 1.5.2 (see the README, "-a pam"):
//! every pam_unix outcome is unchanged, `su`'s `auth sufficient pam_rootok.so` no longer
//! answers for a wrong password.
#![allow(unsafe_code)]

use nix::errno::Errno;

/// The real uid PAM transactions run with: 65535, which Debian Policy (9.2.2) says must
/// never be assigned (the 16-bit `(uid_t)-1`) and systemd refuses as a user id. No
/// process normally runs with it, so none can signal the thread while it carries it.
pub const PAM_REAL_UID: libc::uid_t = 65535;

/// This thread's (real, effective, saved) uids.
pub fn thread_uids() -> (libc::uid_t, libc::uid_t, libc::uid_t) {
    let (mut real, mut effective, mut saved) = (0, 0, 0);
    // SAFETY: three live, writable locals; getresuid(2) only writes them. glibc's
    // wrapper is the plain system call, which reports the calling thread's ids.
    let rc = unsafe { libc::getresuid(&mut real, &mut effective, &mut saved) };
    debug_assert_eq!(rc, 0, "getresuid cannot fail with valid pointers");
    (real, effective, saved)
}

/// Sets the calling thread's real uid, leaving the effective and saved uids alone.
fn set_thread_real_uid(uid: libc::uid_t) -> Result<(), Errno> {
    let unchanged = libc::uid_t::MAX;
    // SAFETY: setresuid(2) takes three integers and touches no memory of ours. Called
    // through syscall(2) it changes the calling thread's credentials only, which is the
    // point; `(uid_t)-1` leaves the effective and saved uids unchanged.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_setresuid,
            libc::c_long::from(uid),
            libc::c_long::from(unchanged),
            libc::c_long::from(unchanged),
        )
    };
    if rc == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// While alive, the calling thread's real uid is [`PAM_REAL_UID`]; dropping it restores
/// the real uid it had. Not `Send`: it must be dropped on the thread that made it.
pub struct ForeignRealUid {
    previous: libc::uid_t,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl ForeignRealUid {
    /// Switches this thread's real uid to [`PAM_REAL_UID`]. Fails without `CAP_SETUID`.
    pub fn enter() -> Result<ForeignRealUid, Errno> {
        let (previous, _, _) = thread_uids();
        set_thread_real_uid(PAM_REAL_UID)?;
        Ok(ForeignRealUid {
            previous,
            _not_send: std::marker::PhantomData,
        })
    }
}

impl Drop for ForeignRealUid {
    fn drop(&mut self) {
        // With the effective uid still 0 this cannot fail; if it did, the thread would
        // keep a real uid that trusts nothing, which is safe for the PAM work it does.
        let _ = set_thread_real_uid(self.previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root only: `cargo test` runs as root in scripts/test.sh; without root the switch
    /// itself must fail (EPERM), never pretend to work.
    #[test]
    fn only_the_calling_thread_changes_and_drop_restores() {
        let (real, effective, _) = thread_uids();
        if effective != 0 {
            assert_eq!(ForeignRealUid::enter().err(), Some(Errno::EPERM));
            return;
        }
        assert_eq!(real, 0, "run the unit tests as root or as a plain user");
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (checked, checked_rx) = std::sync::mpsc::channel::<()>();
        let switched = std::thread::spawn(move || {
            let guard = ForeignRealUid::enter().expect("setresuid as root");
            let inside = thread_uids();
            entered_tx.send(()).unwrap();
            checked_rx.recv().unwrap();
            drop(guard);
            (inside, thread_uids())
        });
        entered.recv().unwrap();
        // The rest of the process is untouched while the other thread is switched.
        assert_eq!(thread_uids(), (0, 0, 0));
        checked.send(()).unwrap();
        let (inside, after) = switched.join().unwrap();
        assert_eq!(inside, (PAM_REAL_UID, 0, 0));
        assert_eq!(after, (0, 0, 0));
        assert_eq!(thread_uids(), (0, 0, 0));
    }
}
