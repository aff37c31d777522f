//! What the benchmark measures outside the load runs: the machine it runs on, the peak RSS
//! of the daemons' processes (from `/proc`), and the CPU time of one password verification.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use saslauthd_rs::hash;
use saslauthd_rs::secret::Password;

/// The header line's facts.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub debian: String,
    pub date: String,
    pub upstream_version: String,
    pub ours_version: String,
}

/// CPUs this process may run on (what `nproc` prints, and ours' default pool for `-a shadow`).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn first_line(path: &str) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    Some(s.lines().next()?.trim().to_string())
}

/// Trimmed stdout of a command that exited 0, or None.
fn command_output(program: &str, args: &[&str], dir: Option<&Path>) -> Option<String> {
    let mut c = Command::new(program);
    c.args(args);
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let out = c.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

impl Machine {
    pub fn probe() -> Machine {
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let kernel = first_line("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into());
        let debian = first_line("/etc/debian_version").unwrap_or_else(|| "not Debian".into());
        let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"], None)
            .unwrap_or_else(|| "unknown date".into());
        let upstream_version =
            command_output("dpkg-query", &["-W", "-f", "${Version}", "sasl2-bin"], None)
                .map(|v| format!("sasl2-bin {v}"))
                .unwrap_or_else(|| "sasl2-bin (version unknown)".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let git = command_output("git", &["rev-parse", "--short", "HEAD"], Some(manifest));
        let dirty = command_output("git", &["status", "--porcelain"], Some(manifest)).is_some();
        let ours_version = match git {
            Some(rev) => format!(
                "saslauthd-rs {} (git {rev}{})",
                env!("CARGO_PKG_VERSION"),
                if dirty { ", modified" } else { "" }
            ),
            None => format!("saslauthd-rs {}", env!("CARGO_PKG_VERSION")),
        };
        Machine {
            cores: cores(),
            cpu_model,
            kernel,
            debian,
            date,
            upstream_version,
            ours_version,
        }
    }
}

/// Fields of `/proc/<pid>/stat` after the command name: (ppid, pgrp).
fn ppid_pgrp(pid: i32) -> Option<(i32, i32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] = state (field 3), f[1] = ppid (field 4), f[2] = pgrp (field 5)
    Some((f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?))
}

/// `pid` and every live process whose parent is `pid` or whose process group is `pid`'s
/// (upstream's pre-forked workers), sorted.
pub fn process_family(pid: i32) -> Vec<i32> {
    let mut family = vec![pid];
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if p == pid {
                continue;
            }
            if let Some((ppid, pgrp)) = ppid_pgrp(p)
                && (ppid == pid || pgrp == pid)
            {
                family.push(p);
            }
        }
    }
    family.sort_unstable();
    family
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; USER_HZ, 100 on
/// every mainstream Linux architecture).
pub fn clock_ticks() -> u64 {
    command_output("getconf", &["CLK_TCK"], None)
        .and_then(|s| s.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// CPU time (user + system, all threads) used so far by the live processes among `pids`.
pub fn cpu_time(pids: &[i32], ticks_per_sec: u64) -> Duration {
    let ticks: u64 = pids
        .iter()
        .filter_map(|&pid| {
            let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = s.get(s.rfind(')')? + 2..)?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            // f[0] = field 3 (state); utime = field 14 -> f[11], stime = field 15 -> f[12]
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    Duration::from_secs_f64(ticks as f64 / ticks_per_sec.max(1) as f64)
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in KiB.
pub fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Peak RSS of a set of processes: each one's VmHWM and their sum, in KiB.
#[derive(Clone, Debug, Default)]
pub struct PeakRss {
    pub per_process: Vec<(i32, u64)>,
}

impl PeakRss {
    pub fn of(pids: &[i32]) -> PeakRss {
        PeakRss {
            per_process: pids
                .iter()
                .filter_map(|&p| Some((p, status_kib(p, "VmHWM")?)))
                .collect(),
        }
    }

    pub fn total_kib(&self) -> u64 {
        self.per_process.iter().map(|(_, k)| k).sum()
    }
}

/// CPU time of one verification of `password` against `stored` with our `hash::verify`
/// (libxcrypt), on this thread: at least `min_runs` runs and at least `min_cpu` of CPU time.
pub fn crypt_cpu_time(
    password: &str,
    stored: &str,
    min_runs: u32,
    min_cpu: Duration,
) -> Result<(Duration, u32), String> {
    let pw = Password::new(password.as_bytes().to_vec());
    if !hash::verify(&pw, stored.as_bytes()) {
        return Err(format!(
            "hash::verify rejects the fixture password for {stored}"
        ));
    }
    let cpu = || -> Result<Duration, String> {
        let u = getrusage(UsageWho::RUSAGE_THREAD).map_err(|e| format!("getrusage: {e}"))?;
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::from_secs(tv.tv_sec().max(0) as u64)
                + Duration::from_micros(tv.tv_usec().max(0) as u64)
        };
        Ok(t(u.user_time()) + t(u.system_time()))
    };
    let before = cpu()?;
    let mut runs = 0u32;
    loop {
        std::hint::black_box(hash::verify(&pw, std::hint::black_box(stored.as_bytes())));
        runs += 1;
        let used = cpu()? - before;
        if runs >= min_runs && used >= min_cpu {
            return Ok((used / runs, runs));
        }
    }
}

/// CPU time (user + system) this process has used so far, all threads included.
pub fn own_cpu_time() -> Duration {
    let t = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec().max(0) as u64)
            + Duration::from_micros(tv.tv_usec().max(0) as u64)
    };
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| t(u.user_time()) + t(u.system_time()))
        .unwrap_or_default()
}

/// The hash of `user` in `tests/fixtures/shadow`.
pub fn fixture_hash(user: &str) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shadow");
    let text =
        fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == user).then(|| f.next().map(str::to_string))?
        })
        .ok_or_else(|| format!("no user {user} in {}", path.display()))
}

/// Context switches so far (voluntary + involuntary, every thread) of the live processes
/// among `pids`, from `/proc/PID/task/*/status`. Threads that exit take their counts along.
pub fn context_switches(pids: &[i32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(status) = fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            total += status
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    total
}

/// Whether every thread of every process among `pids` is being traced (`TracerPid`).
pub fn all_traced(pids: &[i32]) -> bool {
    pids.iter().all(|pid| {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().all(|task| {
            fs::read_to_string(task.path().join("status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("TracerPid:"))
                        .and_then(|v| v.trim().parse::<i32>().ok())
                })
                .is_some_and(|tracer| tracer != 0)
        })
    })
}

/// One line of `strace -c`'s summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallCount {
    pub name: String,
    pub calls: u64,
    pub errors: u64,
}

/// The rows of an `strace -c` summary (without the `total` row), most calls first.
pub fn parse_strace_summary(text: &str) -> Vec<SyscallCount> {
    let mut rows: Vec<SyscallCount> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors,] syscall
            let (calls, errors) = match fields.len() {
                5 => (fields[3], "0"),
                6 => (fields[3], fields[4]),
                _ => return None,
            };
            let name = *fields.last()?;
            if name == "total" || fields[0].parse::<f64>().is_err() {
                return None;
            }
            Some(SyscallCount {
                name: name.to_string(),
                calls: calls.parse().ok()?,
                errors: errors.parse().ok()?,
            })
        })
        .collect();
    rows.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.name.cmp(&b.name)));
    rows
}

/// Checks of this module's parsers, run by `cargo test --all-targets` (a bench binary
/// without libtest runs no `#[test]`s, so `main` calls this when it is not benchmarking).
pub fn self_check() {
    strace_summaries_parse();
}

fn strace_summaries_parse() {
    let text = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.000400           2       200           recvfrom
 30.00    0.000300           1       150        50 accept4
 30.00    0.000300           3       100           close
------ ----------- ----------- --------- --------- ----------------
100.00    0.001000           2       450        50 total
";
    let rows = parse_strace_summary(text);
    assert_eq!(
        rows,
        [
            SyscallCount {
                name: "recvfrom".into(),
                calls: 200,
                errors: 0
            },
            SyscallCount {
                name: "accept4".into(),
                calls: 150,
                errors: 50
            },
            SyscallCount {
                name: "close".into(),
                calls: 100,
                errors: 0
            },
        ]
    );
}
