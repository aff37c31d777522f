//! Shared harness for the integration tests (`mod common;` in each test file).
//!
//! * Daemons under test run inside a private mount namespace (`unshare --mount
//!   --propagation private`) in which copies of `tests/fixtures/{passwd,shadow,group,
//!   nsswitch.conf}` are bind-mounted over the files in `/etc`. The host's `/etc` and users
//!   are never touched. This needs root: [`require_root`] panics otherwise.
//! * Every daemon gets its own process group, because upstream
//!   `saslauthd -d` ends with `kill(0, SIGTERM)`. It is stopped by its recorded PID only.
//! * Every wait is bounded; nothing here can hang a test forever.
//! * With `SASLAUTHD_TEST_SECRETS_DIR` set (`scripts/test.sh` sets it), our daemons run
//!   verbose, their logs are kept and every password sent is recorded, for
//!   `tests/secrets_scan.rs` (see [`secrets`]).
#![allow(dead_code)]
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use std::fs;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upstream Cyrus SASL daemon (Debian package `sasl2-bin`).
pub const UPSTREAM_SASLAUTHD: &str = "/usr/sbin/saslauthd";
/// Upstream Cyrus SASL test client (Debian package `sasl2-bin`).
pub const UPSTREAM_TESTSASLAUTHD: &str = "/usr/sbin/testsaslauthd";

/// Default bound for every socket read, start-up wait and stop wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Throttle flags under which every failure counts and every penalised request waits one
/// second: a failure that is counted shows as a wait on the next request.
pub const ONE_SECOND_PENALTY: [&str; 6] = [
    "--throttle-free",
    "0",
    "--throttle-delay",
    "1000",
    "--throttle-max",
    "1000",
];

/// Polling interval for waits.
const POLL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------------------------
// Basics
// ---------------------------------------------------------------------------------------------

/// Panics unless the effective uid is 0.
pub fn require_root() {
    let euid = nix::unistd::geteuid();
    assert!(
        euid.is_root(),
        "this test needs root: it runs the daemon in a private mount namespace (euid is {euid})"
    );
}

/// Path of one of our binaries (`saslauthd` or `testsaslauthd`), built by Cargo for the tests.
pub fn ours_bin(name: &str) -> PathBuf {
    match name {
        "saslauthd" => PathBuf::from(env!("CARGO_BIN_EXE_saslauthd")),
        "testsaslauthd" => PathBuf::from(env!("CARGO_BIN_EXE_testsaslauthd")),
        other => panic!("unknown binary {other:?} (expected saslauthd or testsaslauthd)"),
    }
}

/// `tests/fixtures` of this package.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// A fresh directory under `std::env::temp_dir()`, removed (recursively) on drop unless the
/// environment variable `KEEP_TEST_DIRS` is set.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let base = std::env::temp_dir();
        for attempt in 0..100u32 {
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let tag: String = tag
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .take(24)
                .collect();
            let path = base.join(format!(
                "sasl-rs-{tag}-{}-{n}-{:x}",
                std::process::id(),
                nanos.wrapping_add(attempt)
            ));
            match fs::create_dir(&path) {
                Ok(()) => {
                    let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o755));
                    return TempDir { path };
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temp dir {}: {e}", path.display()),
            }
        }
        panic!("cannot create a unique temp dir under {}", base.display());
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join<P: AsRef<Path>>(&self, p: P) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_some() {
            eprintln!("KEEP_TEST_DIRS: keeping {}", self.path.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Copies the fixture files into `dir` (shadow with mode 0640) and returns the bind pairs
/// (source, target) for the private mount namespace.
pub fn install_fixtures(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir).expect("create fixture copy dir");
    let mut binds = Vec::new();
    for (name, mode) in [
        ("passwd", 0o644),
        ("group", 0o644),
        ("shadow", 0o640),
        ("nsswitch.conf", 0o644),
    ] {
        let src = fixtures_dir().join(name);
        let dst = dir.join(name);
        fs::copy(&src, &dst)
            .unwrap_or_else(|e| panic!("copy fixture {} failed: {e}", src.display()));
        fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).expect("chmod fixture");
        binds.push((dst, Path::new("/etc").join(name)));
    }
    binds
}

/// Adds system accounts a peer needs in its namespace to the fixture copies in `etc`
/// (made by [`install_fixtures`]): each `(user, group)` name is copied from the host's
/// `/etc/passwd` and `/etc/group` (read only), or, when the host has no such account
/// (e.g. `Debian-exim`), made up with an id of 2900 and up, with no login and no home.
pub fn add_accounts(etc: &Path, names: &[(&str, &str)]) {
    let host_line = |file: &str, name: &str| {
        fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .find(|line| line.split(':').next() == Some(name))
            .map(str::to_string)
    };
    let mut passwd = fs::read_to_string(etc.join("passwd")).expect("fixture passwd copy");
    let mut group = fs::read_to_string(etc.join("group")).expect("fixture group copy");
    for (n, (user, group_name)) in names.iter().enumerate() {
        let made_up = 2900 + n as u32;
        let group_line = host_line("/etc/group", group_name)
            .unwrap_or_else(|| format!("{group_name}:x:{made_up}:"));
        let gid = group_line.split(':').nth(2).unwrap_or_default().to_string();
        if !group
            .lines()
            .any(|l| l.split(':').next() == Some(group_name))
        {
            group.push_str(&format!("{group_line}\n"));
        }
        let user_line = host_line("/etc/passwd", user).unwrap_or_else(|| {
            format!(
                "{user}:x:{made_up}:{gid}:saslauthd-rs test peer:/nonexistent:/usr/sbin/nologin"
            )
        });
        if !passwd.lines().any(|l| l.split(':').next() == Some(user)) {
            passwd.push_str(&format!("{user_line}\n"));
        }
    }
    fs::write(etc.join("passwd"), passwd).expect("write passwd copy");
    fs::write(etc.join("group"), group).expect("write group copy");
}

/// Builds `unshare --mount --propagation private -- sh -c 'mount --bind …; exec "$@"' …`.
/// With no binds the program is run directly.
pub fn namespaced_command(
    binds: &[(PathBuf, PathBuf)],
    program: &Path,
    args: &[&OsStr],
) -> Command {
    let namespace = Namespace {
        binds: binds.to_vec(),
        ..Namespace::default()
    };
    namespace.command(program, args)
}

/// What a private namespace for one program holds (see [`Namespace::command`]).
#[derive(Clone, Debug, Default)]
pub struct Namespace {
    /// (source, target) bind mounts, in order.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// `(empty dir, socket)`: a private `/dev` whose `/dev/log` is `socket` (see
    /// [`secrets::DEV_LOG_SCRIPT`]).
    pub dev_log: Option<(PathBuf, PathBuf)>,
    /// A private UTS namespace with this hostname (for mechanisms that use it: sasldb's
    /// empty realm, kerberos5's host principal).
    pub hostname: Option<String>,
    /// Files that must not exist in the namespace. With any, or with a bind whose target
    /// does not exist, `/etc` becomes an overlay whose upper layer is `etc_layers` (an
    /// empty directory): the files are removed and missing targets created there, never
    /// on the host.
    pub absent: Vec<PathBuf>,
    pub etc_layers: Option<PathBuf>,
}

/// `text` quoted for `sh`.
fn sh_quote(text: &OsStr) -> String {
    format!("'{}'", text.to_string_lossy().replace('\'', "'\\''"))
}

impl Namespace {
    /// `unshare --mount [--uts] --propagation private -- sh -c SCRIPT sh … PROGRAM ARGS…`,
    /// or the program itself when there is nothing to set up.
    pub fn command(&self, program: &Path, args: &[&OsStr]) -> Command {
        if self.binds.is_empty()
            && self.dev_log.is_none()
            && self.hostname.is_none()
            && self.absent.is_empty()
        {
            let mut c = Command::new(program);
            c.args(args);
            return c;
        }
        let mut script = String::from("set -e\n");
        if self.dev_log.is_some() {
            script.push_str(secrets::DEV_LOG_SCRIPT);
        }
        if let Some(hostname) = &self.hostname {
            script.push_str(&format!("hostname {}\n", sh_quote(OsStr::new(hostname))));
        }
        let missing_target = self.binds.iter().any(|(_, target)| !target.exists());
        if !self.absent.is_empty() || missing_target {
            let layers = self
                .etc_layers
                .as_ref()
                .expect("Namespace::etc_layers: an empty directory for the /etc overlay");
            let (upper, work) = (layers.join("upper"), layers.join("work"));
            fs::create_dir_all(&upper).expect("create the overlay's upper dir");
            fs::create_dir_all(&work).expect("create the overlay's work dir");
            script.push_str(&format!(
                "mount -t overlay sasl-rs-etc -o lowerdir=/etc,upperdir={},workdir={} /etc\n",
                sh_quote(upper.as_os_str()),
                sh_quote(work.as_os_str())
            ));
            for path in &self.absent {
                assert!(
                    path.starts_with("/etc"),
                    "only files under /etc can be absent"
                );
                script.push_str(&format!("rm -rf {}\n", sh_quote(path.as_os_str())));
            }
            for (_, target) in self.binds.iter().filter(|(_, t)| !t.exists()) {
                assert!(
                    target.starts_with("/etc"),
                    "bind target {target:?} is missing"
                );
                script.push_str(&format!(
                    "[ -e {0} ] || : > {0}\n",
                    sh_quote(target.as_os_str())
                ));
            }
        }
        for _ in &self.binds {
            script.push_str("mount --bind \"$1\" \"$2\"\nshift 2\n");
        }
        script.push_str("exec \"$@\"\n");
        let mut c = Command::new("unshare");
        c.arg("--mount");
        if self.hostname.is_some() {
            c.arg("--uts");
        }
        c.args(["--propagation", "private", "--", "sh", "-c"])
            .arg(script)
            .arg("sh");
        if let Some((new_dev, socket)) = &self.dev_log {
            c.arg(new_dev).arg(socket);
        }
        for (src, dst) in &self.binds {
            c.arg(src).arg(dst);
        }
        c.arg(program).args(args);
        c
    }
}

/// Gives the child its own process group (it becomes the group leader), so a daemon's
/// `kill(0, SIGTERM)` (upstream's `-d` does that on exit) never reaches the test process.
fn own_session(c: &mut Command) {
    c.process_group(0);
}

// ---------------------------------------------------------------------------------------------
// Process helpers (by PID only)
// ---------------------------------------------------------------------------------------------

/// Fields of `/proc/<pid>/stat` after the command name: (state, pgrp, starttime).
fn proc_stat(pid: i32) -> Option<(char, i32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] = field 3 (state); field 5 = pgrp -> f[2]; field 22 = starttime -> f[19]
    Some((
        f.first()?.chars().next()?,
        f.get(2)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

/// True when `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((state, _, _)) if state != 'Z' && state != 'X')
}

enum ChildState {
    Running,
    /// Exited but not reaped yet (observed with WNOWAIT).
    Exited,
    /// Not our child (waitid → ECHILD).
    NotOurs,
}

fn child_state(pid: i32) -> ChildState {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
        Err(_) => ChildState::NotOurs,
        Ok(WaitStatus::StillAlive) => ChildState::Running,
        Ok(_) => ChildState::Exited,
    }
}

/// Reaps our child `pid` (blocking; only call once it is known to have exited).
fn reap(pid: i32) -> Option<ExitStatus> {
    match waitpid(Pid::from_raw(pid), None).ok()? {
        WaitStatus::Exited(_, code) => Some(ExitStatus::from_raw((code & 0xff) << 8)),
        WaitStatus::Signaled(_, sig, _) => Some(ExitStatus::from_raw(sig as i32)),
        _ => None,
    }
}

/// Sends `sig` to `pid` (a negative pid names a process group).
fn signal(pid: i32, sig: libc::c_int) {
    if let Ok(sig) = Signal::try_from(sig) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Stops a server the tests spawned as `child` (a peer: slapd, Postfix, Exim, Dovecot, a
/// KDC): SIGTERM while it is still running, up to `timeout` for it to exit, then SIGKILL.
/// It is reaped either way. True when it exited (or was gone) before the timeout.
pub fn stop_child(child: &mut std::process::Child, timeout: Duration) -> bool {
    if matches!(child.try_wait(), Ok(None)) {
        signal(child.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    let exited = loop {
        if !matches!(child.try_wait(), Ok(None)) {
            break true;
        }
        if start.elapsed() > timeout {
            break false;
        }
        sleep(POLL);
    };
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    exited
}

/// Stops a server the tests started if the test process dies without unwinding (SIGKILL,
/// abort) or exits while the server is still up (one shared per test binary, in a
/// `static`), when no `Drop` runs. (`PR_SET_PDEATHSIG` does not survive a server that
/// changes credentials.)
///
/// A `sh` in its own process group reads one line from a pipe whose only write end
/// (close-on-exec) is held here. `stop` → it exits quietly; EOF (this process is gone) → it
/// SIGTERMs the server, after checking the PID still has the recorded start time, and then,
/// when given one, removes the server's temp dir (only a `sasl-rs-*` dir of ours).
pub struct Watchdog {
    child: std::process::Child,
    writer: Option<io::PipeWriter>,
}

const WATCHDOG_SH: &str = r#"read -r line || line=
[ "$line" = stop ] && exit 0
st=$(cut -d' ' -f22 "/proc/$1/stat" 2>/dev/null) || st=
if [ -n "$st" ] && [ "$st" = "$2" ]; then
    kill -TERM "$1"
    n=0
    while [ "$n" -lt 50 ] && [ "$(cut -d' ' -f22 "/proc/$1/stat" 2>/dev/null)" = "$2" ]; do
        sleep 0.1; n=$((n + 1))
    done
fi
case "$3" in */sasl-rs-*) rm -rf -- "$3" ;; esac
exit 0
"#;

impl Watchdog {
    /// Watches `pid` (with /proc start time `start_time`); `cleanup`: a temp dir to remove
    /// after stopping it.
    pub fn start(label: &str, pid: i32, start_time: u64, cleanup: Option<&Path>) -> Watchdog {
        let (reader, writer) = io::pipe().expect("pipe");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(WATCHDOG_SH)
            .arg(label)
            .arg(pid.to_string())
            .arg(start_time.to_string())
            .arg(cleanup.map(Path::as_os_str).unwrap_or_default())
            .stdin(reader)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        own_session(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {label}: {e}"));
        Watchdog {
            child,
            writer: Some(writer),
        }
    }

    /// Tells the watchdog to exit without doing anything; bounded wait, then SIGKILL.
    pub fn disarm(&mut self) {
        if let Some(mut w) = self.writer.take() {
            let _ = w.write_all(b"stop\n");
        }
        let start = Instant::now();
        while start.elapsed() < DEFAULT_TIMEOUT {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The /proc start time of `pid` (to tell it from a later process with the same PID).
pub fn start_time_of(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, _, start)| start)
}

/// Whether a TCP connection to each of `ports` on both 127.0.0.1 and ::1 is accepted now
/// (a server started by a test is listening on all of them).
pub fn loopback_ports_accept(ports: &[u16]) -> bool {
    ports.iter().all(|&port| {
        [
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        ]
        .iter()
        .all(|addr| std::net::TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok())
    })
}

/// A TCP port free on both 127.0.0.1 and ::1 (released again; the caller's server binds it
/// right after).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = v4.local_addr().expect("local addr").port();
        if std::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

/// Makes this test process the reaper of orphaned descendants, so that a daemonised child
/// (whose starter exited) can be waited for and its exit status observed.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = nix::sys::prctl::set_child_subreaper(true);
    });
}

/// Result of a bounded command run.
#[derive(Debug)]
pub struct CmdResult {
    /// None: timed out and killed.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl CmdResult {
    /// Exit code (panics with the output when killed by a signal or timed out).
    pub fn code(&self) -> i32 {
        match self.status.and_then(|s| s.code()) {
            Some(c) => c,
            None => panic!(
                "command did not exit normally (status {:?})\nstdout: {}\nstderr: {}",
                self.status,
                String::from_utf8_lossy(&self.stdout),
                String::from_utf8_lossy(&self.stderr)
            ),
        }
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// stdout followed by stderr.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout_str(), self.stderr_str())
    }
}

/// Runs `cmd` with stdin from `stdin` (empty when None), stdout/stderr to files, in its own
/// session, for at most `timeout` (then SIGKILLs its process group and returns status None).
pub fn run_command(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> CmdResult {
    secrets::record_command(&cmd, stdin);
    let dir = TempDir::new("cmd");
    let inp = dir.join("stdin");
    fs::write(&inp, stdin.unwrap_or(b"")).expect("write stdin file");
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    cmd.stdin(fs::File::open(&inp).expect("open stdin file"))
        .stdout(fs::File::create(&out).expect("create stdout file"))
        .stderr(fs::File::create(&err).expect("create stderr file"));
    own_session(&mut cmd);
    let start = Instant::now();
    // Waited for by PID below (waitid/waitpid), not through `Child`.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let pid = child.id() as i32;
    let status = loop {
        match child_state(pid) {
            ChildState::Exited => break reap(pid),
            ChildState::NotOurs => break None,
            ChildState::Running => {}
        }
        if start.elapsed() > timeout {
            signal(-pid, libc::SIGKILL);
            signal(pid, libc::SIGKILL);
            let _ = reap(pid);
            break None;
        }
        sleep(POLL);
    };
    let elapsed = start.elapsed();
    let result = CmdResult {
        status,
        stdout: fs::read(&out).unwrap_or_default(),
        stderr: fs::read(&err).unwrap_or_default(),
        elapsed,
    };
    if secrets::enabled() && secrets::runs_ours(&cmd) {
        secrets::keep_log("command", &[&result.stdout[..], &result.stderr].concat());
    }
    result
}

/// Asserts that a daemon start (`result`) was refused because the process `holder`
/// serves the run directory: exit status 2 and a message naming that pid.
pub fn assert_refused_as_second_instance(result: &CmdResult, holder: i32, what: &str) {
    assert_eq!(
        result.status.and_then(|s| s.code()),
        Some(2),
        "{what}: want exit status 2 (another instance), got {:?}\n{}",
        result.status,
        result.output()
    );
    assert!(
        result
            .output()
            .contains(&format!("pid {holder} holds the lock on")),
        "{what}: the refusal should name pid {holder}:\n{}",
        result.output()
    );
}

/// The number that follows the first `phrase` in `text` (up to the next space), e.g. in a
/// log line.
pub fn number_after(text: &str, phrase: &str) -> Option<usize> {
    text.split(phrase)
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
}

/// Our daemon under `prlimit --nofile=<nofile>` (e.g. `"1024:1024"`), in the foreground
/// (`-d`), with `args` (without `-m`: the run directory is `<tmp>/run`).
pub fn start_ours_with_nofile(nofile: &str, args: &[&str], tmp: &TempDir) -> Daemon {
    let run = tmp.join("run");
    fs::create_dir(&run).expect("create run dir");
    let program = ours_bin("saslauthd");
    let limit = format!("--nofile={nofile}");
    let mut full = vec![
        limit.as_str(),
        program.to_str().expect("utf-8 path"),
        "-d",
        "-m",
        run.to_str().expect("utf-8 path"),
    ];
    full.extend_from_slice(args);
    let options = Options {
        run_dir: Some(run.clone()),
        pass_run_dir: false,
        dash_d: false,
        ..Options::default()
    };
    Daemon::start_with(Path::new("/usr/bin/prlimit"), &full, options)
}

/// Runs `program args…` with the fixtures bind-mounted over `/etc` (needs root).
pub fn run_in_namespace(program: &Path, args: &[&str], timeout: Duration) -> CmdResult {
    require_root();
    let dir = TempDir::new("ns-etc");
    let binds = install_fixtures(&dir.join("etc"));
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    run_command(namespaced_command(&binds, program, &args), None, timeout)
}

/// Runs `program args…` directly (no namespace, no root needed).
pub fn run_plain(program: &Path, args: &[&str], stdin: Option<&[u8]>) -> CmdResult {
    let mut c = Command::new(program);
    c.args(args);
    run_command(c, stdin, DEFAULT_TIMEOUT)
}

// ---------------------------------------------------------------------------------------------
// Daemon
// ---------------------------------------------------------------------------------------------

/// How to start a daemon.
#[derive(Clone, Debug)]
pub struct Options {
    /// true: pass `-d` (foreground + verbose); the spawned process is the daemon.
    /// false: daemon mode (no `-d`); the harness waits for the starting process to exit, then
    /// takes the daemon's PID from `<run>/saslauthd.pid`.
    pub foreground: bool,
    /// In the foreground, pass `-d` (default). Set false to pass your own `-f` in `args`.
    pub dash_d: bool,
    /// Run directory to pass with `-m` (default `<dir>/run`, created by the harness).
    pub run_dir: Option<PathBuf>,
    /// Pass `-m <run dir>` at all.
    pub pass_run_dir: bool,
    /// Wait until `<run>/mux` accepts a connection before returning.
    pub wait_ready: bool,
    /// Bound for the start-up (and, in daemon mode, for the starter to exit).
    pub ready_timeout: Duration,
    /// Additional (source, target) bind mounts inside the namespace, after the fixtures.
    /// A target under /etc that does not exist is created in a private overlay.
    pub extra_binds: Vec<(PathBuf, PathBuf)>,
    /// A private UTS namespace with this hostname.
    pub hostname: Option<String>,
    /// Files under /etc that must not exist for the daemon (removed in a private overlay).
    pub absent: Vec<PathBuf>,
    /// Environment variables for the daemon.
    pub env: Vec<(OsString, OsString)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            foreground: true,
            dash_d: true,
            run_dir: None,
            pass_run_dir: true,
            wait_ready: true,
            ready_timeout: DEFAULT_TIMEOUT,
            extra_binds: Vec::new(),
            hostname: None,
            absent: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// Why a start attempt failed (returned by [`Daemon::try_start_with`]).
#[derive(Debug)]
pub struct StartFailure {
    /// Exit status of the process that exited (None: timed out, killed by the harness).
    pub status: Option<ExitStatus>,
    pub log: String,
    pub reason: String,
    /// Kept so that the log and run dir stay around while the caller looks at them.
    pub dir: TempDir,
}

/// A daemon under test. Stopped (SIGTERM, then SIGKILL) on drop if still running.
pub struct Daemon {
    /// Always Some except while a failed start hands it over to [`StartFailure`].
    dir: Option<TempDir>,
    run_dir: PathBuf,
    log_path: PathBuf,
    /// PID of the serving daemon process.
    pid: i32,
    /// /proc starttime of `pid` (guards against PID reuse when it is not our child).
    start_time: Option<u64>,
    foreground: bool,
    /// Exit status of the starter in daemon mode.
    starter_status: Option<ExitStatus>,
    stopped: bool,
    /// Secrets scan on and this is our daemon: its logs are still to be kept ([`secrets`]).
    logs_to_keep: bool,
    /// Secrets scan, our daemon in daemon mode: its syslog lines (`/dev/log`).
    syslog: Option<secrets::SyslogCapture>,
}

impl Daemon {
    /// Starts `program -m <dir>/run -d <args…>` in the private mount namespace; panics with the
    /// log if it does not come up within 10 s.
    pub fn start(program: &Path, args: &[&str]) -> Daemon {
        Daemon::start_with(program, args, Options::default())
    }

    /// Like [`Daemon::start`] with options; panics with the log on failure.
    pub fn start_with(program: &Path, args: &[&str], opts: Options) -> Daemon {
        match Daemon::try_start_with(program, args, opts) {
            Ok(d) => d,
            Err(f) => panic!(
                "daemon {} {:?} failed to start: {} (status {:?})\n--- log ---\n{}",
                program.display(),
                args,
                f.reason,
                f.status,
                f.log
            ),
        }
    }

    /// Starts a daemon; returns why it failed instead of panicking.
    pub fn try_start_with(
        program: &Path,
        args: &[&str],
        opts: Options,
    ) -> Result<Daemon, StartFailure> {
        require_root();
        let dir = TempDir::new(
            program
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("daemon"),
        );
        let run_dir = opts.run_dir.clone().unwrap_or_else(|| dir.join("run"));
        if opts.run_dir.is_none() {
            fs::create_dir(&run_dir).expect("create run dir");
            fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o755)).expect("chmod run");
        }
        let log_path = dir.join("daemon.log");
        let mut binds = install_fixtures(&dir.join("etc"));
        binds.extend(opts.extra_binds.iter().cloned());

        let mut full: Vec<&OsStr> = Vec::new();
        if opts.pass_run_dir {
            full.push(OsStr::new("-m"));
            full.push(run_dir.as_os_str());
        }
        if opts.foreground && opts.dash_d {
            full.push(OsStr::new("-d"));
        }
        // Secrets scan: our daemons log everything they can (`-d` above; otherwise `-V`, unless
        // a wrapper such as `setpriv` runs ours: then the test passes its own flags), and in
        // daemon mode, once stderr is /dev/null, to a syslog socket the harness reads.
        let keep_logs = secrets::enabled()
            && std::iter::once(program.as_os_str())
                .chain(args.iter().map(OsStr::new))
                .any(|word| secrets::is_ours(Path::new(word)));
        if keep_logs && secrets::is_ours(program) && !(opts.foreground && opts.dash_d) {
            full.push(OsStr::new("-V"));
        }
        let syslog = (keep_logs && !opts.foreground).then(|| {
            fs::create_dir(dir.join("dev")).expect("create dir for the private /dev");
            secrets::SyslogCapture::start(&dir.join("syslog.sock"), &dir.join("syslog.log"))
        });
        full.extend(args.iter().map(OsStr::new));

        if !opts.foreground {
            become_subreaper();
        }
        let namespace = Namespace {
            binds,
            dev_log: syslog
                .as_ref()
                .map(|capture| (dir.join("dev"), capture.socket_path().to_path_buf())),
            hostname: opts.hostname.clone(),
            absent: opts.absent.clone(),
            etc_layers: Some(dir.join("etc-layers")),
        };
        let mut cmd = namespace.command(program, &full);
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        let log = fs::File::create(&log_path).expect("create daemon.log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        own_session(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let spawned = child.id() as i32;
        drop(child); // we wait by PID ourselves; std's Child neither kills nor waits on drop
        let start = Instant::now();

        let mut d = Daemon {
            dir: Some(dir),
            run_dir,
            log_path,
            pid: spawned,
            start_time: proc_stat(spawned).map(|s| s.2),
            foreground: opts.foreground,
            starter_status: None,
            stopped: false,
            logs_to_keep: keep_logs,
            syslog,
        };

        let fail = |mut d: Daemon, status: Option<ExitStatus>, reason: String| {
            d.kill_now();
            d.stopped = true;
            d.keep_logs();
            let log = d.log();
            let dir = d.dir.take().expect("temp dir");
            Err(StartFailure {
                status,
                log,
                reason,
                dir,
            })
        };

        if !opts.foreground {
            // Daemon mode: wait for the starter.
            let status = loop {
                match child_state(spawned) {
                    ChildState::Exited => break reap(spawned),
                    ChildState::NotOurs => break None,
                    ChildState::Running => {}
                }
                if start.elapsed() > opts.ready_timeout {
                    return fail(
                        d,
                        None,
                        "daemon-mode starter did not exit within the timeout".into(),
                    );
                }
                sleep(POLL);
            };
            d.starter_status = status;
            match status {
                Some(s) if s.success() => {}
                _ => {
                    // The starter is gone; stop a daemon it may have left behind, but only in
                    // our own run dir (a shared one holds another instance's pid file).
                    let own_run_dir = opts.run_dir.is_none();
                    if let Some(pid) = d.read_pid_file().filter(|_| own_run_dir) {
                        d.pid = pid;
                        d.start_time = proc_stat(pid).map(|s| s.2);
                    } else {
                        d.pid = 0;
                    }
                    return fail(
                        d,
                        status,
                        "daemon-mode starter exited unsuccessfully".into(),
                    );
                }
            }
            // The pid file must be there (contract: written before the starter exits).
            let pid = loop {
                if let Some(pid) = d.read_pid_file() {
                    break pid;
                }
                if start.elapsed() > opts.ready_timeout {
                    d.pid = 0;
                    return fail(d, status, "no pid file after the starter exited".into());
                }
                sleep(POLL);
            };
            d.pid = pid;
            d.start_time = proc_stat(pid).map(|s| s.2);
            if !pid_alive(pid) {
                return fail(
                    d,
                    status,
                    format!("daemon pid {pid} from pid file is not running"),
                );
            }
        }

        if opts.wait_ready {
            let sock = d.socket();
            loop {
                if d.foreground {
                    match child_state(d.pid) {
                        ChildState::Exited => {
                            let st = reap(d.pid);
                            d.stopped = true;
                            return fail(d, st, "daemon exited during start-up".into());
                        }
                        ChildState::NotOurs => {
                            return fail(d, None, "daemon vanished during start-up".into());
                        }
                        ChildState::Running => {}
                    }
                } else if !d.running() {
                    return fail(d, None, "daemon exited during start-up".into());
                }
                let is_socket = fs::symlink_metadata(&sock)
                    .map(|m| m.file_type().is_socket())
                    .unwrap_or(false);
                if is_socket && UnixStream::connect(&sock).is_ok() {
                    break;
                }
                if start.elapsed() > opts.ready_timeout {
                    return fail(
                        d,
                        None,
                        format!("{} not accepting connections in time", sock.display()),
                    );
                }
                sleep(POLL);
            }
        }
        Ok(d)
    }

    /// `<run>/mux`.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("mux")
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The daemon's temp dir (holds `run/`, `etc/`, `daemon.log`).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("saslauthd.pid")
    }

    /// The serving daemon's PID.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// In daemon mode, the exit status of the starting process.
    pub fn starter_status(&self) -> Option<ExitStatus> {
        self.starter_status
    }

    /// Everything the daemon (and in daemon mode its starter) wrote to stdout/stderr, then
    /// what it sent to syslog when the harness captured that (secrets scan, daemon mode).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log_bytes()).into_owned()
    }

    fn log_bytes(&self) -> Vec<u8> {
        let mut log = fs::read(&self.log_path).unwrap_or_default();
        if let Some(capture) = &self.syslog {
            log.extend_from_slice(b"--- syslog ---\n");
            log.extend(fs::read(capture.log_path()).unwrap_or_default());
        }
        log
    }

    /// Secrets scan: once the daemon is gone, keeps copies of its logs (once).
    fn keep_logs(&mut self) {
        if let Some(capture) = self.syslog.as_mut() {
            capture.stop();
        }
        if !self.logs_to_keep || self.dir.is_none() {
            return;
        }
        self.logs_to_keep = false;
        secrets::keep_log_file("daemon", &self.log_path);
        if let Some(capture) = &self.syslog {
            secrets::keep_log_file("syslog", capture.log_path());
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Polls the log until it contains `needle` (true) or `timeout` passes (false).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if start.elapsed() > timeout {
                return false;
            }
            sleep(POLL);
        }
    }

    /// Panics if the log contains any of `secrets` in any form our daemon or a panic
    /// message could write it ([`secrets::Matcher`]): raw, escaped by `log::sanitize`, in
    /// its `{:?}` form, or, for one longer than [`secrets::KEY_LEN`] bytes (log values are
    /// cut at 256), the first `KEY_LEN` bytes of any of those. The message names the form
    /// and the secret's length and shows the log with the secrets masked, never a secret.
    pub fn assert_log_free_of<S: AsRef<[u8]>>(&self, secrets: &[S]) {
        let log = self.log_bytes();
        let matcher = secrets::Matcher::new(secrets.iter().map(|s| s.as_ref().to_vec()), 1);
        let found = matcher.find(&log);
        if found.is_empty() {
            return;
        }
        let which: Vec<String> = found
            .iter()
            .map(|&(id, form)| {
                format!(
                    "  secret #{id} ({} bytes) in its {} form",
                    matcher.secrets[id].len(),
                    form.name()
                )
            })
            .collect();
        panic!(
            "the daemon log contains {} secret(s):\n{}\n--- log (secrets masked) ---\n{}",
            found.len(),
            which.join("\n"),
            String::from_utf8_lossy(&matcher.mask(&log))
        );
    }

    fn read_pid_file(&self) -> Option<i32> {
        let s = fs::read_to_string(self.pid_file()).ok()?;
        let pid: i32 = s.trim().parse().ok()?;
        (pid > 0).then_some(pid)
    }

    /// Whether the daemon process is still running (and is still the process we started).
    pub fn running(&self) -> bool {
        if self.stopped || self.pid <= 0 {
            return false;
        }
        match proc_stat(self.pid) {
            Some((state, _, st)) => {
                state != 'Z'
                    && state != 'X'
                    && (self.start_time.is_none() || self.start_time == Some(st))
            }
            None => false,
        }
    }

    /// Observes whether the daemon has exited, without reaping it.
    fn has_exited(&self) -> bool {
        match child_state(self.pid) {
            ChildState::Running => false,
            ChildState::Exited => true,
            ChildState::NotOurs => !self.running(),
        }
    }

    /// Kills leftovers of the daemon's own process group (only while the leader is not
    /// reaped, so the group id cannot have been reused).
    fn kill_group_leftovers(&self) {
        if let Some((_, pgrp, _)) = proc_stat(self.pid)
            && pgrp == self.pid
        {
            signal(-self.pid, libc::SIGKILL);
        }
    }

    fn kill_now(&mut self) {
        if self.stopped || self.pid <= 0 {
            return;
        }
        if self.running() || matches!(child_state(self.pid), ChildState::Exited) {
            self.kill_group_leftovers();
            signal(self.pid, libc::SIGKILL);
            let start = Instant::now();
            while !self.has_exited() && start.elapsed() < DEFAULT_TIMEOUT {
                sleep(POLL);
            }
            let _ = reap(self.pid);
        }
        self.stopped = true;
    }

    /// Waits up to `timeout` for the daemon to exit on its own; returns its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if self.has_exited() {
                self.kill_group_leftovers();
                let st = reap(self.pid);
                self.stopped = true;
                return Some(st.unwrap_or_else(|| {
                    eprintln!(
                        "harness: pid {} is gone but its exit status could not be collected",
                        self.pid
                    );
                    ExitStatus::from_raw(0)
                }));
            }
            if start.elapsed() > timeout {
                return None;
            }
            sleep(POLL);
        }
    }

    /// Sends `sig` to the daemon process.
    pub fn signal(&self, sig: libc::c_int) {
        assert!(
            self.running(),
            "daemon is not running\n--- log ---\n{}",
            self.log()
        );
        signal(self.pid, sig);
    }

    /// Stops a daemon whose shutdown is not what the test checks: SIGTERM, then SIGKILL
    /// after the timeout, never a panic. For upstream, whose SIGTERM handler calls functions
    /// that are not async-signal-safe and can deadlock.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        signal(self.pid, libc::SIGTERM);
        if self.wait_exit(DEFAULT_TIMEOUT).is_none() {
            self.kill_now();
        }
    }

    /// SIGTERM, wait up to 10 s for the exit status; on timeout SIGKILL and panic.
    ///
    /// In daemon mode the exit status is available because the test process is a child
    /// subreaper; if it cannot be collected, a zero status is returned once the process is gone.
    pub fn terminate(&mut self) -> ExitStatus {
        assert!(!self.stopped, "daemon already stopped");
        assert!(
            self.running() || self.has_exited(),
            "daemon (pid {}) is not running before terminate()\n--- log ---\n{}",
            self.pid,
            self.log()
        );
        signal(self.pid, libc::SIGTERM);
        match self.wait_exit(DEFAULT_TIMEOUT) {
            Some(st) => st,
            None => {
                self.kill_now();
                panic!(
                    "daemon (pid {}) did not exit within {:?} of SIGTERM\n--- log ---\n{}",
                    self.pid,
                    DEFAULT_TIMEOUT,
                    self.log()
                );
            }
        }
    }

    /// The end of a test of our daemon: checks the log for `secrets`, stops the daemon with
    /// SIGTERM ([`Daemon::terminate`]) and asserts that it exited 0.
    pub fn finish<S: AsRef<[u8]>>(mut self, secrets: &[S]) {
        self.assert_log_free_of(secrets);
        let st = self.terminate();
        assert!(
            st.success(),
            "daemon exited with {st:?} after SIGTERM\n--- log ---\n{}",
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.stopped && self.pid > 0 {
            let exited = self.running() && {
                signal(self.pid, libc::SIGTERM);
                self.wait_exit(Duration::from_secs(3)).is_some()
            };
            if !exited {
                self.kill_now();
            }
        }
        self.keep_logs();
    }
}

/// A private `/etc/hosts` and an `nsswitch.conf` that resolves hosts from files only, for a
/// daemon's namespace ([`Options::extra_binds`]): no test sends a DNS query, and a test can
/// make a name resolvable while the daemon runs ([`PrivateHosts::add`]).
pub struct PrivateHosts {
    dir: TempDir,
}

impl PrivateHosts {
    pub fn new() -> PrivateHosts {
        let dir = TempDir::new("hosts-etc");
        fs::write(
            dir.join("hosts"),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n",
        )
        .expect("write hosts");
        fs::write(
            dir.join("nsswitch.conf"),
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\nservices: files\n",
        )
        .expect("write nsswitch.conf");
        PrivateHosts { dir }
    }

    /// The bind mounts over `/etc/hosts` and `/etc/nsswitch.conf`.
    pub fn binds(&self) -> Vec<(PathBuf, PathBuf)> {
        vec![
            (self.dir.join("hosts"), PathBuf::from("/etc/hosts")),
            (
                self.dir.join("nsswitch.conf"),
                PathBuf::from("/etc/nsswitch.conf"),
            ),
        ]
    }

    /// Maps `name` to `addr` (written in place: the bind mount follows the inode).
    pub fn add(&self, addr: &str, name: &str) {
        let path = self.dir.join("hosts");
        let mut hosts = fs::read_to_string(&path).expect("read hosts");
        hosts.push_str(&format!("{addr}\t{name}\n"));
        fs::write(&path, hosts).expect("rewrite hosts");
    }
}

// ---------------------------------------------------------------------------------------------
// Editing the fixture shadow file a daemon sees
// ---------------------------------------------------------------------------------------------

/// The fixture shadow file this daemon sees.
pub fn shadow_path(daemon: &Daemon) -> PathBuf {
    daemon.dir().join("etc").join("shadow")
}

/// Rewrites `user`'s shadow line with `edit` (fields split on `:`), in place: the file is
/// bind-mounted, so it must stay the same inode.
pub fn edit_shadow(daemon: &Daemon, user: &str, edit: impl Fn(&mut Vec<String>)) {
    let path = shadow_path(daemon);
    let text = fs::read_to_string(&path).expect("read fixture shadow");
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let mut fields: Vec<String> = line.split(':').map(str::to_string).collect();
            if fields.first().map(String::as_str) == Some(user) {
                found = true;
                edit(&mut fields);
            }
            fields.join(":")
        })
        .collect();
    assert!(found, "{user} is not in the fixture shadow file");
    fs::write(&path, lines.join("\n") + "\n").expect("rewrite fixture shadow in place");
}

/// The stored hash of `user` in the fixture shadow file.
pub fn hash_of(daemon: &Daemon, user: &str) -> String {
    let text = fs::read_to_string(shadow_path(daemon)).expect("read fixture shadow");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{user}:")))
        .and_then(|rest| rest.split(':').next())
        .expect("user in shadow")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// `-a pam` with the fixture PAM services
// ---------------------------------------------------------------------------------------------

/// Copies `tests/fixtures/pam.d` (mode 0644) into a fresh temp dir and returns it with the
/// [`Options`] that bind-mount it over `/etc/pam.d`. Keep the dir until the daemon is gone.
pub fn pam_d_options() -> (TempDir, Options) {
    let pam_d = TempDir::new("pam.d");
    let src = fixtures_dir().join("pam.d");
    for entry in fs::read_dir(&src).expect("read tests/fixtures/pam.d") {
        let entry = entry.expect("pam.d entry");
        let dst = pam_d.join(entry.file_name());
        fs::copy(entry.path(), &dst).expect("copy pam.d fixture");
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let options = Options {
        extra_binds: vec![(pam_d.path().to_path_buf(), PathBuf::from("/etc/pam.d"))],
        ..Options::default()
    };
    (pam_d, options)
}

/// A daemon running `-a pam` with the fixture pam.d, and the copy it mounts.
pub struct PamDaemon {
    pub daemon: Daemon,
    _pam_d: TempDir,
}

impl PamDaemon {
    /// Starts `program -a pam <extra…>` (with `-m`/`-d` like [`Daemon::start`]).
    pub fn start(program: &Path, extra: &[&str]) -> PamDaemon {
        let (pam_d, options) = pam_d_options();
        let mut args = vec!["-a", "pam"];
        args.extend_from_slice(extra);
        PamDaemon {
            daemon: Daemon::start_with(program, &args, options),
            _pam_d: pam_d,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw protocol client
// ---------------------------------------------------------------------------------------------

/// One counted string: u16 big-endian length + bytes.
pub fn field(b: &[u8]) -> Vec<u8> {
    assert!(
        b.len() <= u16::MAX as usize,
        "field longer than 65535 bytes"
    );
    let mut v = (b.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

/// Concatenated counted strings.
pub fn request(fields: &[&[u8]]) -> Vec<u8> {
    fields.iter().flat_map(|f| field(f)).collect()
}

/// How [`exchange`] talks to the server.
#[derive(Clone, Debug)]
pub struct ExchangeOpts {
    /// Send in chunks of this many bytes (0 = all at once).
    pub chunk: usize,
    /// Pause after each chunk.
    pub delay: Duration,
    /// `shutdown(SHUT_WR)` after sending.
    pub half_close: bool,
    /// Bound for connecting, reading the reply and waiting for EOF.
    pub timeout: Duration,
    /// After a reply, keep reading until EOF (or `timeout`) and record extra bytes.
    pub check_eof: bool,
}

impl Default for ExchangeOpts {
    fn default() -> Self {
        ExchangeOpts {
            chunk: 0,
            delay: Duration::ZERO,
            half_close: false,
            timeout: DEFAULT_TIMEOUT,
            check_eof: true,
        }
    }
}

/// What the server did.
#[derive(Debug, Default)]
pub struct RawReply {
    /// The counted reply string; None when the server closed (or timed out) without one.
    pub reply: Option<Vec<u8>>,
    /// Every byte received (reply + anything after it).
    pub received: Vec<u8>,
    /// Bytes received after the reply (should be none: one request per connection).
    pub extra: Vec<u8>,
    /// Time from the last byte sent to the reply (or to the close/timeout when there is none).
    pub elapsed: Duration,
    /// Time from connect to the reply (or close/timeout).
    pub total: Duration,
    /// The server closed/half-closed: EOF seen (after the reply when there is one).
    pub closed: bool,
    /// A read hit `timeout`.
    pub timed_out: bool,
    /// A write failed (e.g. the server closed early); sending stopped there.
    pub send_error: Option<io::ErrorKind>,
    /// Bytes actually written.
    pub sent: usize,
}

impl RawReply {
    /// The reply as (lossy) UTF-8.
    pub fn text(&self) -> Option<String> {
        self.reply
            .as_ref()
            .map(|r| String::from_utf8_lossy(r).into_owned())
    }

    /// One bounded read into `buf`: the bytes are added to `received` and their count
    /// returned; EOF or an error sets `closed`, a timeout `timed_out` (both return None).
    fn read_more(
        &mut self,
        s: &mut UnixStream,
        buf: &mut [u8],
        deadline: Instant,
    ) -> Option<usize> {
        match read_until(s, buf, deadline) {
            ReadOutcome::Data(n) => {
                self.received.extend_from_slice(&buf[..n]);
                Some(n)
            }
            ReadOutcome::Eof | ReadOutcome::Error => {
                self.closed = true;
                None
            }
            ReadOutcome::TimedOut => {
                self.timed_out = true;
                None
            }
        }
    }
}

/// Connects with read/write timeouts set.
pub fn connect(socket: &Path, timeout: Duration) -> UnixStream {
    let s =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(timeout)).expect("set_read_timeout");
    s.set_write_timeout(Some(timeout))
        .expect("set_write_timeout");
    s
}

/// Outcome of a bounded read.
enum ReadOutcome {
    Data(usize),
    Eof,
    TimedOut,
    Error,
}

fn read_until(s: &mut UnixStream, buf: &mut [u8], deadline: Instant) -> ReadOutcome {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return ReadOutcome::TimedOut;
        }
        let left = (deadline - now).max(Duration::from_millis(1));
        let _ = s.set_read_timeout(Some(left));
        match s.read(buf) {
            Ok(0) => return ReadOutcome::Eof,
            Ok(n) => return ReadOutcome::Data(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return ReadOutcome::TimedOut;
            }
            Err(_) => return ReadOutcome::Error,
        }
    }
}

/// Sends `bytes` on an already connected stream (per `opts`), then reads one counted reply.
/// The stream stays open (unless half-closed per `opts`) so the caller can keep using it.
pub fn exchange_on(s: &mut UnixStream, bytes: &[u8], opts: &ExchangeOpts) -> RawReply {
    secrets::record_frame(bytes);
    let connected = Instant::now();
    let mut r = RawReply::default();
    let chunk = if opts.chunk == 0 {
        bytes.len().max(1)
    } else {
        opts.chunk
    };
    for (i, part) in bytes.chunks(chunk).enumerate() {
        if i > 0 && !opts.delay.is_zero() {
            sleep(opts.delay);
        }
        match s.write_all(part) {
            Ok(()) => r.sent += part.len(),
            Err(e) => {
                r.send_error = Some(e.kind());
                break;
            }
        }
    }
    if opts.half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let sent_at = Instant::now();
    let deadline = sent_at + opts.timeout;
    let mut buf = [0u8; 4096];
    let mut want: Option<usize> = None;
    loop {
        if let Some(n) = want
            && r.received.len() >= 2 + n
        {
            break;
        }
        if r.read_more(s, &mut buf, deadline).is_none() {
            break;
        }
        if want.is_none() && r.received.len() >= 2 {
            want = Some(u16::from_be_bytes([r.received[0], r.received[1]]) as usize);
        }
    }
    r.elapsed = sent_at.elapsed();
    r.total = connected.elapsed();
    if let Some(n) = want
        && r.received.len() >= 2 + n
    {
        r.reply = Some(r.received[2..2 + n].to_vec());
        r.extra = r.received[2 + n..].to_vec();
        r.closed = false;
        if opts.check_eof {
            while let Some(n) = r.read_more(s, &mut buf, deadline) {
                r.extra.extend_from_slice(&buf[..n]);
            }
        }
    }
    r
}

/// Connects to `socket`, sends `bytes` (per `opts`) and reads one counted reply.
pub fn exchange(socket: &Path, bytes: &[u8], opts: &ExchangeOpts) -> RawReply {
    exchange_on(&mut connect(socket, opts.timeout), bytes, opts)
}

/// 4-field request (like libsasl 2.1.28: one write, no half-close); returns the reply text,
/// None when the server closed or timed out without a reply.
/// A 4-field request (service `imap`, no realm) to `d`; asserts the reply text.
pub fn expect_reply(d: &Daemon, user: &str, pass: &str, want: &str) {
    let got = auth(&d.socket(), user, pass, "imap", "");
    assert_eq!(
        got.as_deref(),
        Some(want),
        "user {user:?}: unexpected reply\n--- log ---\n{}",
        d.log()
    );
}

pub fn auth(socket: &Path, user: &str, pass: &str, service: &str, realm: &str) -> Option<String> {
    auth_strs(socket, &[user, pass, service, realm])
}

/// One request to a daemon and the reply text it must get: login, password, service,
/// realm, reply.
pub type Expected<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

/// Cases without a service (login, password, realm, reply) as [`Expected`] requests for
/// service `imap`.
pub fn for_imap<'a>(
    cases: &'a [(&'a str, &'a str, &'a str, &'a str)],
) -> impl Iterator<Item = Expected<'a>> + Clone + Send {
    cases
        .iter()
        .map(|&(login, password, realm, want)| (login, password, "imap", realm, want))
}

/// Sends each case to `daemon`; one description per case whose reply differs.
pub fn mismatches<'a>(
    daemon: &Daemon,
    cases: impl IntoIterator<Item = Expected<'a>>,
) -> Vec<String> {
    cases
        .into_iter()
        .filter_map(|(login, password, service, realm, want)| {
            let got = auth(&daemon.socket(), login, password, service, realm);
            (got.as_deref() != Some(want)).then(|| {
                format!(
                    "  - {login:?} service {service:?} realm {realm:?}: want {want:?}, got {got:?}"
                )
            })
        })
        .collect()
}

/// [`mismatches`] of `ours` and `upstream` on the same cases, both at once.
pub fn mismatches_side_by_side<'a>(
    ours: &Daemon,
    upstream: &Daemon,
    cases: impl IntoIterator<Item = Expected<'a>> + Clone + Send,
) -> (Vec<String>, Vec<String>) {
    std::thread::scope(|s| {
        let theirs = cases.clone();
        let a = s.spawn(|| mismatches(ours, cases));
        let b = s.spawn(|| mismatches(upstream, theirs));
        (a.join().unwrap(), b.join().unwrap())
    })
}

/// 5-field request (client address `ip;port` as the 5th field).
pub fn auth5(
    socket: &Path,
    user: &str,
    pass: &str,
    service: &str,
    realm: &str,
    client_addr: &str,
) -> Option<String> {
    auth_strs(socket, &[user, pass, service, realm, client_addr])
}

/// Sends the given text fields as one request and returns the reply text.
fn auth_strs(socket: &Path, fields: &[&str]) -> Option<String> {
    let fields: Vec<&[u8]> = fields.iter().map(|f| f.as_bytes()).collect();
    auth_bytes(socket, &fields)
}

/// Sends the given fields as one request and returns the reply text.
pub fn auth_bytes(socket: &Path, fields: &[&[u8]]) -> Option<String> {
    let opts = ExchangeOpts {
        check_eof: false,
        ..ExchangeOpts::default()
    };
    exchange(socket, &request(fields), &opts).text()
}

pub mod clients;
pub mod dovecot_client;
pub mod exim;
pub mod fakeimap;
pub mod fixtures;
pub mod kdc;
pub mod postfix;
pub mod sasldb;
pub mod secrets;
