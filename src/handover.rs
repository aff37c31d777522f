//! `--replace`: a new daemon takes a run directory over from the daemon serving it without
//! a moment in which clients find no socket there (package upgrades, seamless restarts).
//!
//! 1. [`swap_in`]: the new socket is bound under a temporary name in the run directory, a
//!    spare hard link to it is kept, and it is renamed over `mux` (atomically): from then
//!    on new clients reach the new daemon and wait in its backlog until it serves.
//! 2. [`take_lock`]: the holder of the pid-file lock is asked to stop (SIGTERM, SIGKILL
//!    after [`STOP_LIMIT`], like `start-stop-daemon --retry TERM/30/KILL/5`) and the lock
//!    is taken once it is free. An old saslauthd-rs answers what it has accepted, leaves
//!    `mux` alone (it is no longer its socket) and exits.
//! 3. Cyrus's saslauthd removes `mux` by name when it exits: while waiting for the lock,
//!    and once more when it is ours ([`SwappedSocket::settle`]), a name that no longer
//!    leads to our socket is given back to it from the spare link.
#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{log_info, log_warn};

/// How long the old daemon gets after SIGTERM before SIGKILL.
pub const STOP_LIMIT: Duration = Duration::from_secs(30);
/// How long after SIGKILL before giving up.
pub const KILL_LIMIT: Duration = Duration::from_secs(5);
/// How often the lock is tried while the old daemon stops.
const POLL: Duration = Duration::from_millis(10);

/// Device and inode: which file a name leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The file `path` names now (not following a final symbolic link).
    pub fn of_path(path: &Path) -> Option<FileId> {
        fs::symlink_metadata(path).ok().map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// The file behind an open descriptor.
    pub fn of_file(file: &File) -> Option<FileId> {
        file.metadata().ok().map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// `<path>.<tag>-<our pid>`, beside `path`.
fn sibling(path: &Path, tag: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{tag}-{}", std::process::id()));
    path.with_file_name(name)
}

/// Our socket, in place at `path`, with a spare link until [`SwappedSocket::settle`].
pub struct SwappedSocket {
    pub listener: UnixListener,
    pub id: FileId,
    path: PathBuf,
    spare: PathBuf,
}

/// Binds our socket with `bind` under a temporary name and renames it over `path`.
pub fn swap_in(
    path: &Path,
    bind: impl FnOnce(&Path) -> Result<UnixListener, String>,
) -> Result<SwappedSocket, String> {
    let fresh = sibling(path, "new");
    let spare = sibling(path, "spare");
    for leftover in [&fresh, &spare] {
        let _ = fs::remove_file(leftover);
    }
    let listener = bind(&fresh)?;
    let cleanup = |error: String| {
        let _ = fs::remove_file(&fresh);
        let _ = fs::remove_file(&spare);
        error
    };
    let id = FileId::of_path(&fresh)
        .ok_or_else(|| cleanup(format!("{} vanished after bind", fresh.display())))?;
    fs::hard_link(&fresh, &spare).map_err(|e| {
        cleanup(format!(
            "cannot link {} to {}: {e}",
            fresh.display(),
            spare.display()
        ))
    })?;
    fs::rename(&fresh, path).map_err(|e| {
        cleanup(format!(
            "cannot rename {} to {}: {e}",
            fresh.display(),
            path.display()
        ))
    })?;
    Ok(SwappedSocket {
        listener,
        id,
        path: path.to_path_buf(),
        spare,
    })
}

impl SwappedSocket {
    /// Puts our socket back at `path` if the old daemon removed it (a new hard link from
    /// the spare one, which stays until [`SwappedSocket::settle`]).
    pub fn restore_if_removed(&self) -> Result<(), String> {
        if FileId::of_path(&self.path) == Some(self.id) {
            return Ok(());
        }
        log_warn!(
            "the previous daemon removed {} as it stopped: putting ours back",
            self.path.display()
        );
        let _ = fs::remove_file(&self.path);
        fs::hard_link(&self.spare, &self.path).map_err(|e| {
            format!(
                "cannot put {} back in place from {}: {e}",
                self.path.display(),
                self.spare.display()
            )
        })
    }

    /// Once the old daemon is gone: `path` leads to our socket, and the spare link goes.
    pub fn settle(&self) -> Result<(), String> {
        self.restore_if_removed()?;
        let _ = fs::remove_file(&self.spare);
        Ok(())
    }

    /// Undoes [`swap_in`] as far as it can (startup failed afterwards).
    pub fn abandon(&self) {
        let _ = fs::remove_file(&self.spare);
        if FileId::of_path(&self.path) == Some(self.id) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// One try at the pid-file lock.
pub enum LockAttempt {
    /// Locked; the file is open and locked.
    Locked(File),
    /// Another process holds it (its pid if known).
    Held(Option<i32>),
}

/// Takes the pid-file lock at `pid_path`, asking its holder to stop first. `try_lock`
/// opens the file and tries the lock once; `while_waiting` runs between tries. A lock
/// taken on a file the old daemon has meanwhile removed is dropped and taken again on the
/// new file.
pub fn take_lock(
    pid_path: &Path,
    mut try_lock: impl FnMut() -> Result<LockAttempt, String>,
    mut while_waiting: impl FnMut(),
) -> Result<File, String> {
    let mut stopping: Option<(Option<i32>, Instant)> = None;
    let mut killed = false;
    loop {
        let holder = match try_lock()? {
            LockAttempt::Locked(file) => {
                if FileId::of_file(&file).is_some()
                    && FileId::of_file(&file) == FileId::of_path(pid_path)
                {
                    return Ok(file);
                }
                continue;
            }
            LockAttempt::Held(holder) => holder,
        };
        let (pid, since) = *stopping.get_or_insert_with(|| {
            match holder {
                Some(pid) => {
                    log_info!("--replace: asking pid {pid}, which serves this directory, to stop");
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
                None => log_warn!(
                    "--replace: {} is locked by a process I cannot identify; waiting for it",
                    pid_path.display()
                ),
            }
            (holder, Instant::now())
        });
        let waited = since.elapsed();
        if waited > STOP_LIMIT && !killed {
            if let Some(pid) = pid {
                log_warn!("--replace: pid {pid} did not stop within {STOP_LIMIT:?}; killing it");
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            killed = true;
        }
        if waited > STOP_LIMIT + KILL_LIMIT {
            let who = pid.map_or("another process".to_string(), |p| format!("pid {p}"));
            return Err(format!(
                "--replace: {who} still holds {} after {:?}",
                pid_path.display(),
                STOP_LIMIT + KILL_LIMIT
            ));
        }
        while_waiting();
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("handover-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_new_socket_replaces_the_old_name_atomically_and_survives_its_removal() {
        let dir = scratch("swap");
        let path = dir.join("mux");
        let old = UnixListener::bind(&path).unwrap();
        let old_id = FileId::of_path(&path).unwrap();
        let swapped = swap_in(&path, |p| UnixListener::bind(p).map_err(|e| e.to_string())).unwrap();
        assert_ne!(FileId::of_path(&path), Some(old_id));
        assert_eq!(FileId::of_path(&path), Some(swapped.id));
        // What Cyrus does on exit: remove the name.
        fs::remove_file(&path).unwrap();
        drop(old);
        swapped.restore_if_removed().unwrap();
        assert_eq!(FileId::of_path(&path), Some(swapped.id));
        swapped.settle().unwrap();
        assert_eq!(FileId::of_path(&path), Some(swapped.id));
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["mux"], "no temporary name left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lock_on_a_file_removed_meanwhile_is_taken_again() {
        let dir = scratch("lock");
        let path = dir.join("saslauthd.pid");
        let mut tries = 0;
        let file = take_lock(
            &path,
            || {
                tries += 1;
                let file = File::create(&path).map_err(|e| e.to_string())?;
                if tries == 1 {
                    // The old daemon removes the pid file just after we opened it.
                    fs::remove_file(&path).unwrap();
                }
                Ok(LockAttempt::Locked(file))
            },
            || {},
        )
        .unwrap();
        assert_eq!(tries, 2);
        assert_eq!(FileId::of_file(&file), FileId::of_path(&path));
        fs::remove_dir_all(&dir).unwrap();
    }
}
