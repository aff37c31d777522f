//! Creating a listening UNIX socket at a path with its mode and owner, without ever
//! changing the mode or owner of whatever stands at that path.
//!
//! A root daemon that `bind`s and then `chmod`s or `chown`s the socket by name follows
//! anything swapped in between by a user who can write the directory: a symbolic link
//! there makes any file mode 0777, or theirs. So the socket is made in a private
//! directory created beside it (mode 0700, ours, checked through its descriptor): bound
//! there through `/proc/self/fd` with its mode from the umask, given its owner there
//! (nothing else can enter that directory), then renamed into place, which replaces
//! a name and follows nothing.
#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{AT_FDCWD, AtFlags, renameat};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, unlinkat};

/// The socket's name inside the private directory.
const INSIDE: &str = "socket";

/// Binds a listening socket at `path` with `mode` (e.g. 0o777) and, when given, the
/// owner `uid` and group `gid`. Whatever was at `path` is replaced (the caller checks
/// first that it is only a stale socket).
pub fn bind(
    path: &Path,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let (private, dir) = private_dir(parent)?;
    let made = (|| {
        let inside = format!("/proc/self/fd/{}/{INSIDE}", dir.as_raw_fd());
        let previous = umask(Mode::from_bits_truncate(!mode & 0o777));
        let bound = UnixListener::bind(&inside);
        umask(previous);
        let listener = bound?;
        if uid.is_some() || gid.is_some() {
            fchownat(
                &dir,
                INSIDE,
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        renameat(&dir, INSIDE, AT_FDCWD, path)?;
        Ok(listener)
    })();
    // Gone either way: the socket (if it was never moved) and the directory.
    let _ = unlinkat(&dir, INSIDE, UnlinkatFlags::NoRemoveDir);
    let _ = fs::remove_dir(&private);
    made
}

/// A fresh directory beside the socket's place, 0700 and ours (checked through the
/// descriptor, so a directory swapped in by someone else is refused), and its path.
fn private_dir(parent: &Path) -> io::Result<(PathBuf, File)> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for attempt in 0..16u32 {
        let name = format!(
            ".saslauthd-bind-{}-{:08x}",
            std::process::id(),
            stamp.wrapping_add(attempt)
        );
        let path = parent.join(OsStr::new(&name));
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&path)?;
        let meta = dir.metadata()?;
        if !meta.is_dir()
            || meta.uid() != nix::unistd::geteuid().as_raw()
            || meta.mode() & 0o077 != 0
        {
            return Err(io::Error::other(format!(
                "{} changed hands while the socket was being made",
                path.display()
            )));
        }
        return Ok((path, dir));
    }
    Err(io::Error::other(format!(
        "no free name for a private directory in {}",
        parent.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    #[test]
    fn the_socket_gets_its_mode_and_replaces_nothing_but_its_name() {
        let dir = std::env::temp_dir().join(format!("saslauthd-rs-bind-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        let path = dir.join("sock");
        let listener = bind(&path, 0o660, None, None).unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        // It serves at its final name, and nothing else is left beside it.
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        assert!(listener.accept().is_ok());
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [OsStr::new("sock")]);
        // A link at the name is replaced, its target left alone.
        let target = dir.join("target");
        fs::write(&target, "x").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let _listener = bind(&path, 0o777, None, None).unwrap();
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
