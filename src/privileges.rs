//! Process hardening: no core dumps, an open-file limit that fits `--max-connections`, and
//! dropping root for good (`--user`, `--group`) once the socket is bound and the pid file
//! written.
//!
//! A core dump of the daemon could hold passwords and hashes, so at startup the process
//! becomes non-dumpable (`PR_SET_DUMPABLE` 0: no core file, no ptrace by other users, its
//! `/proc` files owned by root) and `RLIMIT_CORE` is 0. The drop uses `setgroups` (just
//! the target group), `setgid`, `setuid`, in that order, through glibc, which applies
//! them to every thread; then it checks that it worked: real, effective and saved ids of
//! every thread, no capabilities left, and `setuid(0)` must fail.
//!
//! The decisions are pure functions ([`plan_open_files`], [`RunAsSpec::resolve`],
//! [`StatusIds::parse`]) with unit tests; the system calls are thin wrappers around them.
#![forbid(unsafe_code)]

use nix::sys::resource::{Resource, getrlimit, rlim_t, setrlimit};
use nix::unistd::{Gid, Group, Uid, User};

use crate::frontend::gate::REFUSAL_SLOTS;
use crate::mech::Mechanism;
use crate::peer::Id;
use crate::{log_info, log_warn};

// ---------------------------------------------------------------------------------------
// Core dumps
// ---------------------------------------------------------------------------------------

/// No core file, ever: `RLIMIT_CORE` 0 (soft and hard) and not dumpable.
pub fn forbid_core_dumps() -> Result<(), String> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| format!("cannot set RLIMIT_CORE to 0: {e}"))?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("cannot clear the dumpable flag: {e}"))
}

// ---------------------------------------------------------------------------------------
// Open files
// ---------------------------------------------------------------------------------------

/// File descriptors the daemon needs besides its client connections and its verification
/// pool: stdio, the listener, the pid file, the log socket, the runtime's epoll and
/// wake-up descriptors, NSS and libxcrypt files, with room to spare, plus connections
/// being refused ([`REFUSAL_SLOTS`]).
pub const FD_RESERVE: usize = 64 + REFUSAL_SLOTS;

/// What to do about `RLIMIT_NOFILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesPlan {
    /// The soft limit to set (never lower than the current one).
    pub soft: rlim_t,
    /// The connection cap that fits under it.
    pub max_connections: usize,
}

/// Raises the soft limit toward the hard one until `max_connections` connections plus one
/// descriptor per verification (rimap's connection, PAM's files) plus [`FD_RESERVE`] fit;
/// when the hard limit is too low, the connection cap shrinks to what fits (at least 1).
pub fn plan_open_files(
    max_connections: usize,
    workers: usize,
    soft: rlim_t,
    hard: rlim_t,
) -> OpenFilesPlan {
    let overhead = workers.saturating_add(FD_RESERVE) as u64;
    let needed = (max_connections as u64).saturating_add(overhead);
    let new_soft = soft.max(needed.min(hard));
    let max_connections = if new_soft >= needed {
        max_connections
    } else {
        usize::try_from(new_soft.saturating_sub(overhead))
            .unwrap_or(usize::MAX)
            .clamp(1, max_connections)
    };
    OpenFilesPlan {
        soft: new_soft,
        max_connections,
    }
}

/// The verification pool that fits the hard open-file limit `hard` (each verification
/// may hold a descriptor: rimap's connection, PAM's files): at most half of what
/// [`FD_RESERVE`] leaves, so at least as many connections fit beside it. Pure, for tests.
pub fn workers_for_open_files(workers: usize, hard: rlim_t) -> usize {
    let room = usize::try_from(hard.saturating_sub(FD_RESERVE as rlim_t) / 2).unwrap_or(usize::MAX);
    workers.min(room).max(1)
}

/// Holds the verification pool (`workers`, from `-n requested` if given) to
/// [`workers_for_open_files`] of the hard open-file limit, with a warning that names `-n`
/// when it lowers it.
pub fn fit_workers(workers: usize, requested: Option<usize>) -> usize {
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return workers;
    };
    let fitted = workers_for_open_files(workers, hard);
    if fitted < workers {
        let asked = requested.map_or_else(
            || format!("the default pool ({workers})"),
            |n| format!("-n {n}"),
        );
        log_warn!(
            "{asked}: the open-file limit ({hard}) leaves room for {fitted} verifications at \
             once beside the connections; using -n {fitted} (raise the hard limit, e.g. \
             LimitNOFILE= in the systemd unit, or lower -n)"
        );
    }
    fitted
}

/// Applies [`plan_open_files`]; returns the connection cap to use. Problems are logged,
/// never fatal: the accept loop copes with `EMFILE` (it backs off and retries).
pub fn fit_open_files(max_connections: usize, workers: usize) -> usize {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            log_warn!("cannot read the open-file limit: {error}");
            return max_connections;
        }
    };
    let mut plan = plan_open_files(max_connections, workers, soft, hard);
    if plan.soft != soft
        && let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, plan.soft, hard)
    {
        log_warn!(
            "cannot raise the open-file limit from {soft} to {}: {error}",
            plan.soft
        );
        plan = plan_open_files(max_connections, workers, soft, soft);
    }
    if plan.max_connections < max_connections {
        log_warn!(
            "the open-file limit ({}) is too low for --max-connections {max_connections}: \
             serving at most {} connections at once (raise the hard limit, e.g. \
             LimitNOFILE= in the systemd unit)",
            plan.soft,
            plan.max_connections
        );
    }
    plan.max_connections
}

// ---------------------------------------------------------------------------------------
// Dropping privileges
// ---------------------------------------------------------------------------------------

/// `--user` and `--group` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAsSpec {
    pub user: Id,
    /// `None`: the user's primary group.
    pub group: Option<Id>,
}

/// Whom to become, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// A user database entry as [`RunAsSpec::resolve`] needs it: uid and primary gid.
pub type UserEntry = (u32, u32);

impl RunAsSpec {
    /// Looks up the names: `user_by_name`/`user_by_uid` and `group_by_name` answer
    /// `Ok(None)` for no such entry. Root (uid 0, gid 0) is refused: dropping to it would
    /// drop nothing.
    pub fn resolve(
        &self,
        user_by_name: &dyn Fn(&str) -> Result<Option<UserEntry>, String>,
        user_by_uid: &dyn Fn(u32) -> Result<Option<UserEntry>, String>,
        group_by_name: &dyn Fn(&str) -> Result<Option<u32>, String>,
    ) -> Result<RunAs, String> {
        let (uid, primary) = match &self.user {
            Id::Name(name) => match user_by_name(name) {
                Ok(Some((uid, gid))) => (uid, Some(gid)),
                Ok(None) => return Err(format!("--user: unknown user {name:?}")),
                Err(error) => return Err(format!("--user: cannot look up {name:?}: {error}")),
            },
            Id::Number(uid) => {
                let entry = user_by_uid(*uid)
                    .map_err(|e| format!("--user: cannot look up uid {uid}: {e}"))?;
                (*uid, entry.map(|(_, gid)| gid))
            }
        };
        let gid = match (&self.group, primary) {
            (Some(group), _) => group
                .resolve("group", group_by_name)
                .map_err(|e| format!("--group: {e}"))?,
            (None, Some(primary)) => primary,
            (None, None) => {
                return Err(format!(
                    "--user: uid {uid} has no entry in the user database, so it has no \
                     primary group; give --group too"
                ));
            }
        };
        if uid == 0 {
            return Err(format!(
                "--user: {} is root (uid 0); name an unprivileged user",
                self.user
            ));
        }
        if gid == 0 {
            return Err(
                "--group: gid 0 is root's group; name another group with --group".to_string(),
            );
        }
        Ok(RunAs { uid, gid })
    }
}

/// Resolves `--user`/`--group` in the system's databases and checks that the mechanism
/// can do without root. `None` when no drop was asked for.
pub fn plan_drop(
    spec: Option<&RunAsSpec>,
    mechanism: &dyn Mechanism,
) -> Result<Option<RunAs>, String> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    if mechanism.needs_root() {
        return Err(format!(
            "--user: -a {} needs root to verify passwords, so privileges cannot be dropped \
             (every mechanism but shadow and pam runs without root)",
            mechanism.name()
        ));
    }
    spec.resolve(&user_by_name, &user_by_uid, &group_id)
        .map(Some)
}

/// Drops root for good: supplementary groups, gid, uid; then checks the result (see
/// [`verify_dropped`]). Call once the socket is bound and the pid file written.
pub fn drop_privileges(target: &RunAs) -> Result<(), String> {
    let uid = Uid::from_raw(target.uid);
    let gid = Gid::from_raw(target.gid);
    nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups([{gid}]): {e}"))?;
    nix::unistd::setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
    nix::unistd::setuid(uid).map_err(|e| format!("setuid({uid}): {e}"))?;
    // The kernel resets the dumpable flag when credentials change: clear it again.
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("cannot clear the dumpable flag: {e}"))?;
    verify_dropped(target)?;
    log_info!(
        "dropped privileges: running as uid {} gid {}",
        target.uid,
        target.gid
    );
    Ok(())
}

/// Checks a drop: real, effective and saved ids are the target's in this thread and (when
/// `/proc` can tell) in every thread, the only group is the target's, no capability is
/// left, and neither `setuid(0)` nor `setgroups([0])` works.
fn verify_dropped(target: &RunAs) -> Result<(), String> {
    let uids = nix::unistd::getresuid().map_err(|e| format!("getresuid: {e}"))?;
    let gids = nix::unistd::getresgid().map_err(|e| format!("getresgid: {e}"))?;
    let ids = [uids.real, uids.effective, uids.saved].map(Uid::as_raw);
    let group_ids = [gids.real, gids.effective, gids.saved].map(Gid::as_raw);
    if ids != [target.uid; 3] || group_ids != [target.gid; 3] {
        return Err(format!(
            "after dropping privileges the ids are uid {ids:?} gid {group_ids:?}, not {} {}",
            target.uid, target.gid
        ));
    }
    let groups = nix::unistd::getgroups().map_err(|e| format!("getgroups: {e}"))?;
    if groups.iter().any(|g| g.as_raw() != target.gid) {
        return Err(format!(
            "after dropping privileges the supplementary groups are {groups:?}"
        ));
    }
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(task.path().join("status")) else {
                continue; // a thread that just ended
            };
            let status = StatusIds::parse(&text)
                .ok_or_else(|| format!("cannot parse {}/status", task.path().display()))?;
            status.check(target).map_err(|e| {
                format!(
                    "after dropping privileges, thread {}: {e}",
                    task.file_name().to_string_lossy()
                )
            })?;
        }
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("after dropping privileges, setuid(0) still works".into());
    }
    if nix::unistd::setgroups(&[Gid::from_raw(0)]).is_ok() {
        return Err("after dropping privileges, setgroups([0]) still works".into());
    }
    Ok(())
}

/// The lines of `/proc/<pid>/status` (or `/proc/<pid>/task/<tid>/status`) that say who a
/// thread is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusIds {
    /// Real, effective, saved, file system.
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
    /// Permitted and effective capability sets.
    pub cap_prm: u64,
    pub cap_eff: u64,
}

impl StatusIds {
    pub fn parse(status: &str) -> Option<StatusIds> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let four = |name: &str| -> Option<[u32; 4]> {
            let values: Vec<u32> = field(name)?
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            values.try_into().ok()
        };
        let caps = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
        Some(StatusIds {
            uid: four("Uid")?,
            gid: four("Gid")?,
            groups: field("Groups")?
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?,
            cap_prm: caps("CapPrm")?,
            cap_eff: caps("CapEff")?,
        })
    }

    /// Whether this thread runs as `target` only, without capabilities.
    pub fn check(&self, target: &RunAs) -> Result<(), String> {
        if self.uid != [target.uid; 4] || self.gid != [target.gid; 4] {
            return Err(format!("uid {:?} gid {:?}", self.uid, self.gid));
        }
        if self.groups.iter().any(|&g| g != target.gid) {
            return Err(format!("groups {:?}", self.groups));
        }
        if self.cap_prm != 0 || self.cap_eff != 0 {
            return Err(format!(
                "capabilities left (permitted {:x}, effective {:x})",
                self.cap_prm, self.cap_eff
            ));
        }
        Ok(())
    }
}

/// The uid and primary gid of user `name`, from the user database.
pub fn user_by_name(name: &str) -> Result<Option<UserEntry>, String> {
    User::from_name(name)
        .map(|user| user.map(|u| (u.uid.as_raw(), u.gid.as_raw())))
        .map_err(|e| e.to_string())
}

fn user_by_uid(uid: u32) -> Result<Option<UserEntry>, String> {
    User::from_uid(Uid::from_raw(uid))
        .map(|user| user.map(|u| (u.uid.as_raw(), u.gid.as_raw())))
        .map_err(|e| e.to_string())
}

/// The uid of user `name`, from the user database (for `--allow-uid`).
pub fn user_id(name: &str) -> Result<Option<u32>, String> {
    user_by_name(name).map(|entry| entry.map(|(uid, _)| uid))
}

/// The gid of group `name`, from the group database (for `--allow-gid`, `--group`).
pub fn group_id(name: &str) -> Result<Option<u32>, String> {
    Group::from_name(name)
        .map(|group| group.map(|g| g.gid.as_raw()))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HARD: rlim_t = 1 << 20;

    #[test]
    fn the_pool_is_held_to_half_the_descriptors_left_by_the_reserve() {
        let reserve = FD_RESERVE as rlim_t;
        assert_eq!(
            workers_for_open_files(20_000, 1024),
            (1024 - FD_RESERVE) / 2
        );
        assert_eq!(workers_for_open_files(5, 1024), 5);
        assert_eq!(workers_for_open_files(20_000, reserve), 1);
        assert_eq!(workers_for_open_files(20_000, HARD), 20_000);
    }

    #[test]
    fn the_soft_limit_is_raised_just_enough() {
        let needed = (1024 + 4 + FD_RESERVE) as rlim_t;
        assert_eq!(
            plan_open_files(1024, 4, 1024, HARD),
            OpenFilesPlan {
                soft: needed,
                max_connections: 1024
            }
        );
        // Already high enough: left alone, never lowered.
        assert_eq!(
            plan_open_files(1024, 4, 65536, HARD),
            OpenFilesPlan {
                soft: 65536,
                max_connections: 1024
            }
        );
        // Unlimited hard limit.
        assert_eq!(plan_open_files(10, 1, 256, rlim_t::MAX).soft, 256);
        assert_eq!(
            plan_open_files(2048, 2, 256, rlim_t::MAX).soft,
            (2048 + 2 + FD_RESERVE) as rlim_t
        );
    }

    #[test]
    fn a_low_hard_limit_lowers_the_connection_cap() {
        let plan = plan_open_files(2048, 2, 1024, 1024);
        assert_eq!(plan.soft, 1024);
        assert_eq!(plan.max_connections, 1024 - 2 - FD_RESERVE);
        let plan = plan_open_files(2048, 2, 256, 1024);
        assert_eq!(plan.soft, 1024);
        assert_eq!(plan.max_connections, 1024 - 2 - FD_RESERVE);
        // Absurdly low: still one connection (EMFILE is handled by the accept loop).
        assert_eq!(plan_open_files(100, 2, 16, 16).max_connections, 1);
        // Never above what was asked for.
        assert_eq!(plan_open_files(5, 2, 16, 16).max_connections, 1);
        assert_eq!(plan_open_files(5, 2, 1000, 1000).max_connections, 5);
    }

    fn users_by_name(name: &str) -> Result<Option<UserEntry>, String> {
        Ok(match name {
            "root" => Some((0, 0)),
            "nobody" => Some((65534, 65534)),
            "sasl" => Some((200, 45)),
            "rootgroup" => Some((300, 0)),
            "broken" => return Err("NSS is down".into()),
            _ => None,
        })
    }

    fn users_by_uid(uid: u32) -> Result<Option<UserEntry>, String> {
        Ok(match uid {
            0 => Some((0, 0)),
            65534 => Some((65534, 65534)),
            _ => None,
        })
    }

    fn groups(name: &str) -> Result<Option<u32>, String> {
        Ok(match name {
            "nogroup" => Some(65534),
            "mail" => Some(8),
            "root" => Some(0),
            _ => None,
        })
    }

    fn resolve(user: &str, group: Option<&str>) -> Result<RunAs, String> {
        let spec = RunAsSpec {
            user: Id::parse(user)?,
            group: group.map(Id::parse).transpose()?,
        };
        spec.resolve(&users_by_name, &users_by_uid, &groups)
    }

    #[test]
    fn the_group_defaults_to_the_primary_group() {
        assert_eq!(
            resolve("nobody", None),
            Ok(RunAs {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(resolve("sasl", None), Ok(RunAs { uid: 200, gid: 45 }));
        assert_eq!(
            resolve("sasl", Some("mail")),
            Ok(RunAs { uid: 200, gid: 8 })
        );
        assert_eq!(resolve("sasl", Some("77")), Ok(RunAs { uid: 200, gid: 77 }));
        assert_eq!(
            resolve("65534", None),
            Ok(RunAs {
                uid: 65534,
                gid: 65534
            })
        );
        // A uid without an entry needs an explicit group.
        assert_eq!(resolve("4000", Some("8")), Ok(RunAs { uid: 4000, gid: 8 }));
        assert!(resolve("4000", None).unwrap_err().contains("give --group"));
    }

    #[test]
    fn unknown_names_and_root_are_refused() {
        assert_eq!(
            resolve("nosuch", None),
            Err("--user: unknown user \"nosuch\"".into())
        );
        assert!(resolve("broken", None).unwrap_err().contains("NSS is down"));
        assert_eq!(
            resolve("nobody", Some("nosuch")),
            Err("--group: unknown group \"nosuch\"".into())
        );
        assert!(resolve("root", None).unwrap_err().contains("is root"));
        assert!(
            resolve("0", Some("nogroup"))
                .unwrap_err()
                .contains("is root")
        );
        assert!(
            resolve("nobody", Some("root"))
                .unwrap_err()
                .contains("gid 0")
        );
        assert!(resolve("rootgroup", None).unwrap_err().contains("gid 0"));
    }

    #[test]
    fn only_mechanisms_that_need_no_root_may_drop() {
        let settings = crate::mech::Settings::default();
        let spec = RunAsSpec {
            user: Id::Number(65534),
            group: Some(Id::Number(65534)),
        };
        for name in ["shadow", "pam"] {
            let mechanism = crate::mech::create(name, None, &settings).unwrap();
            let error = plan_drop(Some(&spec), mechanism.as_ref()).unwrap_err();
            assert!(error.contains(&format!("-a {name} needs root")), "{error}");
            assert_eq!(plan_drop(None, mechanism.as_ref()), Ok(None));
        }
        let rimap = crate::mech::create("rimap", Some("127.0.0.1/1"), &settings).unwrap();
        assert_eq!(
            plan_drop(Some(&spec), rimap.as_ref()),
            Ok(Some(RunAs {
                uid: 65534,
                gid: 65534
            }))
        );
    }

    const STATUS: &str = "Name:\tsaslauthd\nUmask:\t0077\nState:\tS (sleeping)\n\
        Uid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nFDSize:\t64\n\
        Groups:\t65534 \nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
        CapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n";

    #[test]
    fn proc_status_lines_parse_and_check() {
        let nobody = RunAs {
            uid: 65534,
            gid: 65534,
        };
        let ids = StatusIds::parse(STATUS).unwrap();
        assert_eq!(ids.uid, [65534; 4]);
        assert_eq!(ids.groups, vec![65534]);
        assert_eq!(ids.check(&nobody), Ok(()));

        let saved_root = STATUS.replace("Uid:\t65534\t65534\t65534", "Uid:\t65534\t65534\t0");
        let ids = StatusIds::parse(&saved_root).unwrap();
        assert!(ids.check(&nobody).unwrap_err().contains("uid"));

        let capable = STATUS.replace("CapEff:\t0000000000000000", "CapEff:\t0000000000000080");
        let ids = StatusIds::parse(&capable).unwrap();
        assert!(ids.check(&nobody).unwrap_err().contains("capabilities"));

        let extra_group = STATUS.replace("Groups:\t65534 ", "Groups:\t0 65534");
        let ids = StatusIds::parse(&extra_group).unwrap();
        assert!(ids.check(&nobody).unwrap_err().contains("groups"));

        let no_groups = STATUS.replace("Groups:\t65534 ", "Groups:");
        assert_eq!(
            StatusIds::parse(&no_groups).unwrap().groups,
            Vec::<u32>::new()
        );

        assert_eq!(StatusIds::parse("Name:\tx\n"), None);
        assert_eq!(StatusIds::parse(&STATUS.replace("Uid:", "Xid:")), None);
    }
}
