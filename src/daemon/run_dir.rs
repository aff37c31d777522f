//! The run directory's safety rules, after sshd's `StrictModes`.
//!
//! The run directory holds the socket every password goes through and the pid file the
//! init scripts signal. Whoever can write to it, or to any directory on the way to it, can
//! swap the socket for their own (and read every password) or plant a link where the root
//! daemon writes. So, before anything is created in it:
//!
//! - every directory on the way (each one looked up, symbolic links followed and their
//!   targets checked too) must belong to root or to the user the daemon runs as, and must
//!   not be writable by group or others — unless it has the sticky bit (`/tmp`): there,
//!   nobody else can rename or remove the root-owned entry we pass through;
//! - the run directory itself must obey the same owner rule and be writable by its owner
//!   alone, sticky bit or not.
//!
//! A missing run directory is created with mode 0710 (Debian's, without the `sasl` group:
//! only root reaches the socket until an administrator grants a group), its missing
//! parents 0755.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Mode of a run directory we create.
pub const CREATED_MODE: u32 = 0o710;
/// Mode of the missing parents we create.
const PARENT_MODE: u32 = 0o755;
/// Symbolic links followed at most while checking one path (the kernel's own limit).
const MAX_LINKS: usize = 40;

const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Why a run directory is refused: which directory, and what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub enum Unsafe {
    /// Writable by group or others.
    Writable { dir: PathBuf, mode: u32 },
    /// Owned by a user other than root or the daemon's own.
    Owner { dir: PathBuf, uid: u32 },
    /// Not a directory (or a link loop).
    NotADirectory { path: PathBuf },
    /// Could not be examined.
    Unreadable { path: PathBuf, error: String },
}

impl fmt::Display for Unsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsafe::Writable { dir, mode } => write!(
                f,
                "{} is writable by group or others (mode {:04o}): whoever can write there can \
                 replace the socket. Fix: chmod go-w {}",
                dir.display(),
                mode & 0o7777,
                dir.display()
            ),
            Unsafe::Owner { dir, uid } => write!(
                f,
                "{} belongs to uid {uid}, not root: its owner can replace the socket. Fix: \
                 chown root {}",
                dir.display(),
                dir.display()
            ),
            Unsafe::NotADirectory { path } => {
                write!(f, "{} is not a directory", path.display())
            }
            Unsafe::Unreadable { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

/// Creates `dir` if it is missing, then checks it and every directory on the way to it.
/// `owner` is the uid the daemon runs as (trusted beside root).
pub fn prepare(dir: &Path, owner: u32) -> Result<(), String> {
    let refuse = |why: Unsafe| {
        format!(
            "refusing to use the run directory {}: {why} (the run directory and every \
             directory above it must belong to root and be writable by root only; Debian's \
             is root:sasl 0710)",
            dir.display()
        )
    };
    if fs::symlink_metadata(dir).is_err() {
        create(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    check(dir, owner).map_err(refuse)
}

/// `mkdir -p` with [`PARENT_MODE`] for the parents and [`CREATED_MODE`] for `dir`. One made
/// meanwhile by someone else is fine: [`check`] judges it.
fn create(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(PARENT_MODE)
            .create(parent)?;
    }
    match fs::DirBuilder::new().mode(CREATED_MODE).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        result => result,
    }
}

/// Walks `dir` from `/` one name at a time, following symbolic links, and checks every
/// directory looked into and the final one (see the module's rules).
pub fn check(dir: &Path, owner: u32) -> Result<(), Unsafe> {
    let mut pending: VecDeque<OsString> = names(dir);
    let mut current = PathBuf::from("/");
    check_one(&current, owner, pending.is_empty())?;
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&name);
        let meta = fs::symlink_metadata(&next).map_err(|e| Unsafe::Unreadable {
            path: next.clone(),
            error: e.to_string(),
        })?;
        if meta.file_type().is_symlink() {
            links += 1;
            let target = fs::read_link(&next).map_err(|e| Unsafe::Unreadable {
                path: next.clone(),
                error: e.to_string(),
            })?;
            if links > MAX_LINKS {
                return Err(Unsafe::NotADirectory { path: next });
            }
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            for name in names(&target).into_iter().rev() {
                pending.push_front(name);
            }
            continue;
        }
        if !meta.is_dir() {
            return Err(Unsafe::NotADirectory { path: next });
        }
        check_one_meta(&next, &meta, owner, pending.is_empty())?;
        current = next;
    }
    Ok(())
}

/// The normal names of `path` (`.` dropped, `..` kept), root first.
fn names(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn check_one(dir: &Path, owner: u32, is_run_dir: bool) -> Result<(), Unsafe> {
    let meta = fs::metadata(dir).map_err(|e| Unsafe::Unreadable {
        path: dir.to_path_buf(),
        error: e.to_string(),
    })?;
    check_one_meta(dir, &meta, owner, is_run_dir)
}

fn check_one_meta(
    dir: &Path,
    meta: &fs::Metadata,
    owner: u32,
    is_run_dir: bool,
) -> Result<(), Unsafe> {
    verdict(meta.uid(), meta.mode(), owner, is_run_dir).map_err(|why| match why {
        Verdict::Owner => Unsafe::Owner {
            dir: dir.to_path_buf(),
            uid: meta.uid(),
        },
        Verdict::Writable => Unsafe::Writable {
            dir: dir.to_path_buf(),
            mode: meta.mode(),
        },
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Owner,
    Writable,
}

/// The rule for one directory, from its owner and mode.
fn verdict(uid: u32, mode: u32, owner: u32, is_run_dir: bool) -> Result<(), Verdict> {
    if uid != 0 && uid != owner {
        return Err(Verdict::Owner);
    }
    let sticky_parent = !is_run_dir && mode & STICKY != 0;
    if mode & GROUP_OR_OTHER_WRITE != 0 && !sticky_parent {
        return Err(Verdict::Writable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn the_rule_for_one_directory() {
        assert_eq!(verdict(0, 0o40755, 0, false), Ok(()));
        assert_eq!(verdict(0, 0o40710, 0, true), Ok(()));
        assert_eq!(verdict(0, 0o40775, 0, true), Err(Verdict::Writable));
        assert_eq!(verdict(0, 0o40757, 0, false), Err(Verdict::Writable));
        // /tmp: sticky, fine on the way, never as the run directory itself.
        assert_eq!(verdict(0, 0o41777, 0, false), Ok(()));
        assert_eq!(verdict(0, 0o41777, 0, true), Err(Verdict::Writable));
        assert_eq!(verdict(1000, 0o40755, 0, false), Err(Verdict::Owner));
        // The daemon's own user (started unprivileged) is trusted like root.
        assert_eq!(verdict(1000, 0o40700, 1000, true), Ok(()));
    }

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir = std::env::temp_dir()
                .join(format!("saslauthd-rs-rundir-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn a_missing_run_directory_is_created_private() {
        let scratch = Scratch::new("create");
        let run = scratch.0.join("a/b/run");
        prepare(&run, me()).unwrap();
        assert_eq!(
            fs::metadata(&run).unwrap().mode() & 0o7777,
            CREATED_MODE,
            "run directory"
        );
        assert_eq!(
            fs::metadata(scratch.0.join("a")).unwrap().mode() & 0o777,
            PARENT_MODE & !0o022,
            "parent"
        );
        // Twice is fine.
        prepare(&run, me()).unwrap();
    }

    #[test]
    fn writable_directories_are_refused_with_the_fix() {
        let scratch = Scratch::new("writable");
        let run = scratch.0.join("run");
        fs::create_dir(&run).unwrap();
        fs::set_permissions(&run, fs::Permissions::from_mode(0o777)).unwrap();
        let error = prepare(&run, me()).unwrap_err();
        assert!(error.contains(&run.display().to_string()), "{error}");
        assert!(error.contains("mode 0777"), "{error}");
        assert!(error.contains("chmod go-w"), "{error}");
        // Sticky or not, the run directory itself may not be shared.
        fs::set_permissions(&run, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(matches!(check(&run, me()), Err(Unsafe::Writable { .. })));

        // A writable parent.
        fs::set_permissions(&run, fs::Permissions::from_mode(0o710)).unwrap();
        assert_eq!(check(&run, me()), Ok(()));
        fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o775)).unwrap();
        assert_eq!(
            check(&run, me()),
            Err(Unsafe::Writable {
                dir: scratch.0.clone(),
                mode: 0o40775
            })
        );
        fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn links_are_followed_and_both_sides_checked() {
        let scratch = Scratch::new("links");
        let real = scratch.0.join("real");
        let run = real.join("run");
        fs::create_dir_all(&run).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();
        // Relative and absolute links, like /var/run -> /run.
        symlink("real", scratch.0.join("rel")).unwrap();
        symlink(&real, scratch.0.join("abs")).unwrap();
        fs::create_dir(scratch.0.join("shared")).unwrap();
        symlink("../real/run", scratch.0.join("shared/run")).unwrap();
        assert_eq!(check(&scratch.0.join("rel/run"), me()), Ok(()));
        assert_eq!(check(&scratch.0.join("abs/run"), me()), Ok(()));
        assert_eq!(check(&scratch.0.join("shared/run"), me()), Ok(()));
        assert_eq!(check(&scratch.0.join("real/./run/../run"), me()), Ok(()));
        // A link inside a directory others can write: they could redirect it.
        fs::set_permissions(scratch.0.join("shared"), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            check(&scratch.0.join("shared/run"), me()),
            Err(Unsafe::Writable { dir, .. }) if dir == scratch.0.join("shared")
        ));
        // A link target in a directory others can write.
        fs::set_permissions(&real, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            check(&scratch.0.join("abs/run"), me()),
            Err(Unsafe::Writable { dir, .. }) if dir == real
        ));
        // Loops end.
        symlink("loop", scratch.0.join("loop")).unwrap();
        assert!(matches!(
            check(&scratch.0.join("loop/run"), me()),
            Err(Unsafe::NotADirectory { .. })
        ));
        // A file on the way.
        fs::write(scratch.0.join("file"), b"").unwrap();
        assert!(matches!(
            check(&scratch.0.join("file/run"), me()),
            Err(Unsafe::NotADirectory { .. })
        ));
    }
}
