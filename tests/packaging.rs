//! Packaging checks (issue 6): the man pages, the systemd units, the init scripts, socket
//! activation and readiness for real, every distribution's way of starting the daemon, and
//! the Debian package.
//!
//! Run as root. Tools: mandoc, groff, man-db, shellcheck, systemd (systemd-analyze,
//! systemd-socket-activate), openrc (openrc-run), util-linux (unshare, nsenter), dpkg,
//! lintian, swaks and postfix, cargo-deb (`cargo install cargo-deb`), and Debian's
//! sasl2-bin package file in target/test-debs/ (`scripts/test.sh` downloads it).
//!
//! The host is left alone: the service-manager paths run in private mount namespaces
//! whose /etc, /usr/sbin, /usr/libexec (and /run, /usr/share/man/man8) are overlays that
//! add our files and the sample configuration files, so the scripts and the unit's
//! ExecStart= run exactly as installed. Daemons use run directories in temporary
//! directories, and requests ask for a user that does not exist (`NO Invalid username` is
//! the shadow mechanism's answer, which shows both that the daemon serves and which
//! mechanism it runs). The Debian package tests (`slow_deb_*`, select them with
//! `cargo test --test packaging slow_deb`) run dpkg in namespaces whose /etc, /usr and
//! /var are overlays and whose /run is private: install over running Cyrus daemons
//! serving a private Postfix, upgrade, remove, purge, sasl2-bin in every order; each
//! checks that the host's package state is the same afterwards.

#![forbid(unsafe_code)]

mod common;

use common::postfix::{Advert, Postfix, SmtpAuth, SmtpListener, smtp_case};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const DAEMON: &str = env!("CARGO_BIN_EXE_saslauthd");
const CLIENT: &str = env!("CARGO_BIN_EXE_testsaslauthd");
/// Upper bound for every single wait in these tests.
const STEP: Duration = Duration::from_secs(20);
/// A login no test machine has: the shadow mechanism answers `NO Invalid username`.
const NOBODY: &str = "saslauthd-rs-no-such-user";
const INVALID_USERNAME: &str = "NO Invalid username";
const HELPER_PATH: &str = "/usr/libexec/saslauthd-rs/saslauthd-start";

// ---------------------------------------------------------------------------------------
// helpers

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn require_root() {
    let euid = nix::unistd::geteuid();
    assert!(
        euid.is_root(),
        "the packaging tests need root (mount namespaces, overlays, dpkg); euid is {euid}"
    );
}

/// Finds a tool or fails with the package that provides it.
fn require_tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is missing: install it (apt-get install {package})");
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let template = std::env::temp_dir().join(format!("saslauthd-rs-{tag}.XXXXXX"));
        let path = nix::unistd::mkdtemp(&template).expect("mkdtemp");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        TempDir(path)
    }

    fn join(&self, part: impl AsRef<Path>) -> PathBuf {
        self.0.join(part)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write_file(path: &Path, content: &str, mode: u32) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn copy_file(from: &Path, to: &Path, mode: u32) {
    fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    // A hard link is cheap for the big debug binary; copy across file systems.
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to)
            .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), to.display()));
    }
    fs::set_permissions(to, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Reads a pipe in a thread; the result is collected with a bound.
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs a command to completion within `limit`, with its output.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    // A daemon started by the command may hold the pipes a little longer.
    let collect = |rx: mpsc::Receiver<Vec<u8>>| rx.recv_timeout(STEP).unwrap_or_default();
    Output {
        status,
        stdout: collect(out),
        stderr: collect(err),
    }
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What a command that passes may print.
#[derive(Clone, Copy)]
enum Prints {
    Anything,
    StdoutOnly,
    Nothing,
}

/// Asserts that the command described by `what` succeeded, printing no more than `allowed`;
/// returns its output.
fn assert_passed(output: Output, what: &str, allowed: Prints) -> Output {
    let quiet = match allowed {
        Prints::Anything => true,
        Prints::StdoutOnly => output.stderr.is_empty(),
        Prints::Nothing => output.stdout.is_empty() && output.stderr.is_empty(),
    };
    assert!(
        output.status.success() && quiet,
        "{what}:\n{}",
        text(&output)
    );
    output
}

fn run_ok(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?} failed");
    assert_passed(run(cmd, limit), &what, Prints::Anything)
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// One request; returns the reply text (`None`: no reply).
fn ask(socket: &Path, login: &str) -> Option<String> {
    let mut stream =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream.set_read_timeout(Some(STEP)).expect("timeout");
    stream.set_write_timeout(Some(STEP)).expect("timeout");
    let mut request = Vec::new();
    for field in [login, "not-the-password", "imap", ""] {
        request.extend_from_slice(&(field.len() as u16).to_be_bytes());
        request.extend_from_slice(field.as_bytes());
    }
    stream.write_all(&request).expect("write request");
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).ok()?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut reply).ok()?;
    Some(String::from_utf8_lossy(&reply).into_owned())
}

fn assert_serves_shadow(socket: &Path) {
    assert_eq!(
        ask(socket, NOBODY).as_deref(),
        Some(INVALID_USERNAME),
        "the daemon on {} should answer as the shadow mechanism",
        socket.display()
    );
}

fn cmdline(pid: i32) -> Vec<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Alive and not a zombie.
fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

fn read_pid_file(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A daemon process: our child, or a detached one known by pid. Killed on drop.
struct Proc {
    pid: i32,
    child: Option<Child>,
}

impl Proc {
    fn child(child: Child) -> Proc {
        Proc {
            pid: child.id() as i32,
            child: Some(child),
        }
    }

    fn detached(pid: i32) -> Proc {
        Proc { pid, child: None }
    }

    fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => pid_alive(self.pid),
        }
    }

    fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid), signal);
    }

    /// Waits for the process to end; the exit status if it was our child.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(status);
                }
            } else if !pid_alive(self.pid) {
                return None;
            }
            if Instant::now() > deadline {
                self.signal(Signal::SIGKILL);
                panic!("process {} did not exit within {limit:?}", self.pid);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        self.wait_exit(STEP)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            self.signal(Signal::SIGKILL);
            let deadline = Instant::now() + STEP;
            while self.alive() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(child) = &mut self.child {
            let _ = child.try_wait();
        }
    }
}

/// The datagram socket a service manager would listen on for `sd_notify` messages.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> NotifySocket {
        let socket = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        NotifySocket { socket, path }
    }

    /// Sets up `cmd` the way systemd starts a `Type=notify` service without socket
    /// activation: NOTIFY_SOCKET is this socket, no LISTEN_* variables.
    fn notify_env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("NOTIFY_SOCKET", &self.path)
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
    }

    /// Waits for a message containing `line`; returns the whole message.
    fn expect(&self, line: &str, proc: &mut Proc, log: &Path) -> String {
        let deadline = Instant::now() + STEP;
        let mut seen = Vec::new();
        loop {
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.lines().any(|l| l == line) {
                    return message;
                }
                seen.push(message);
            }
            assert!(
                Instant::now() < deadline && (proc.alive() || line == "STOPPING=1"),
                "no {line} on NOTIFY_SOCKET (got {seen:?}); daemon log:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

fn main_pid(message: &str) -> Option<i32> {
    message
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|pid| pid.parse().ok())
}

/// Spawns `cmd` with stdin from /dev/null and stdout and stderr to the file `log`.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Proc {
    let file = fs::File::create(log).expect("log file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Proc::child(child)
}

/// Adds the daemon's arguments `-a <mech> -f -m <run_dir>` to `cmd` (which runs the daemon
/// program last): in the foreground, without a service manager to notify.
fn foreground_daemon<'a>(cmd: &'a mut Command, mech: &str, run_dir: &Path) -> &'a mut Command {
    cmd.args(["-a", mech, "-f", "-m"])
        .arg(run_dir)
        .env_remove("NOTIFY_SOCKET")
}

/// SIGTERM; the process must exit 0 (its log, `log`, in the message otherwise).
fn assert_terminates_cleanly(daemon: &mut Proc, log: &Path) {
    let status = daemon.terminate().expect("status");
    assert!(
        status.success(),
        "exit {status:?}:\n{}",
        fs::read_to_string(log).unwrap_or_default()
    );
}

/// The daemon `pid` runs as `/usr/sbin/saslauthd expected_args…`.
fn assert_cmdline(pid: i32, expected_args: &[&str]) {
    let mut expected = strings(&["/usr/sbin/saslauthd"]);
    expected.extend(strings(expected_args));
    assert_eq!(cmdline(pid), expected, "the daemon's command line");
}

// ---------------------------------------------------------------------------------------
// private mount namespaces with overlays

/// Extra files seen inside a namespace: for each overlaid directory, the files added
/// (relative path, source, mode) and the files hidden (whiteouts).
#[derive(Default)]
struct Layer {
    files: Vec<(String, Content, u32)>,
    hidden: Vec<String>,
}

enum Content {
    Text(String),
    Copy(PathBuf),
}

/// What a namespace sees at /run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RunFs {
    /// The host's.
    Host,
    /// A fresh tmpfs: no systemd (so the LSB functions never hand over to systemctl),
    /// no daemon's run directory.
    Private,
    /// A fresh tmpfs prepared for openrc-run.
    Openrc,
}

/// A process parked in a private mount namespace; commands run in it with nsenter. On
/// drop, every process still in the namespace (daemons a test started there) is killed.
struct Namespace {
    holder: Proc,
    _dir: TempDir,
}

impl Namespace {
    /// `layers`: (directory to overlay, what to add to it); `run`: what /run is.
    fn new(layers: Vec<(&str, Layer)>, run: RunFs) -> Namespace {
        require_tool("unshare", "util-linux");
        require_tool("nsenter", "util-linux");
        let dir = TempDir::new("ns");
        let mut script = String::from("set -e\n");
        for (n, (target, layer)) in layers.into_iter().enumerate() {
            let upper = dir.join(format!("{n}/upper"));
            let work = dir.join(format!("{n}/work"));
            fs::create_dir_all(&upper).expect("mkdir");
            fs::create_dir_all(&work).expect("mkdir");
            for (relative, content, mode) in layer.files {
                let to = upper.join(&relative);
                match content {
                    Content::Text(text) => write_file(&to, &text, mode),
                    Content::Copy(from) => copy_file(&from, &to, mode),
                }
            }
            for relative in layer.hidden {
                let path = upper.join(&relative);
                fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                script.push_str(&format!("mknod '{}' c 0 0\n", path.display()));
            }
            script.push_str(&format!(
                "mount -t overlay overlay -o lowerdir={target},upperdir='{}',workdir='{}' {target}\n",
                upper.display(),
                work.display()
            ));
        }
        if run != RunFs::Host {
            script.push_str("mount -t tmpfs -o mode=0755 tmpfs /run\nmkdir -p /run/lock\n");
        }
        if run == RunFs::Openrc {
            script.push_str(
                "mkdir -p /run/openrc\n\
                 cd /run/openrc\n\
                 mkdir daemons exclusive failed hotplugged inactive options scheduled \
                 started starting stopping tmp wasinactive\n\
                 touch softlevel\n\
                 cd /\n",
            );
        }
        let ready = dir.join("ready");
        script.push_str(&format!("touch '{}'\nexec sleep 3600\n", ready.display()));
        let log = dir.join("holder.log");
        let mut holder = spawn_logged(
            Command::new("unshare").args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
            ]),
            &log,
        );
        let deadline = Instant::now() + STEP;
        while !ready.exists() {
            assert!(
                holder.alive() && Instant::now() < deadline,
                "the namespace setup failed:\n{script}\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
        Namespace { holder, _dir: dir }
    }

    /// A command that runs inside the namespace.
    fn command(&self, program: &str) -> Command {
        let enter = self.enter();
        let mut cmd = Command::new(&enter[0]);
        cmd.args(&enter[1..])
            .arg(program)
            .env("_SYSTEMCTL_SKIP_REDIRECT", "1");
        cmd
    }

    /// The words that run a command inside the namespace (nsenter execs it in place).
    fn enter(&self) -> Vec<String> {
        strings(&["nsenter", "-t", &self.holder.pid.to_string(), "-m", "--"])
    }

    /// Processes in this mount namespace other than the holder: (pid, command name).
    fn processes(&self) -> Vec<(i32, String)> {
        let ours = fs::read_link(format!("/proc/{}/ns/mnt", self.holder.pid)).ok();
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == self.holder.pid || !pid_alive(pid) {
                continue;
            }
            if ours.is_some() && fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == ours {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                found.push((pid, comm.trim().to_string()));
            }
        }
        found
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Only processes started inside this namespace can be in it.
        for signal in [Signal::SIGTERM, Signal::SIGKILL] {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for (pid, _) in &left {
                let _ = kill(Pid::from_raw(*pid), signal);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while !self.processes().is_empty() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// /usr/sbin with our daemon as /usr/sbin/saslauthd.
fn sbin_layer() -> (&'static str, Layer) {
    let mut layer = Layer::default();
    layer
        .files
        .push(("saslauthd".into(), Content::Copy(DAEMON.into()), 0o755));
    ("/usr/sbin", layer)
}

/// /usr/libexec with the start helper and the instances helper.
fn libexec_layer() -> (&'static str, Layer) {
    let mut layer = Layer::default();
    for helper in ["saslauthd-start", "saslauthd-instances"] {
        layer.files.push((
            format!("saslauthd-rs/{helper}"),
            Content::Copy(repo().join("init").join(helper)),
            0o755,
        ));
    }
    ("/usr/libexec", layer)
}

/// /etc with the given files (relative to /etc) and the given files hidden.
fn etc_layer(files: &[(&str, String, u32)], hidden: &[&str]) -> (&'static str, Layer) {
    let mut layer = Layer::default();
    for (path, content, mode) in files {
        layer
            .files
            .push((path.to_string(), Content::Text(content.clone()), *mode));
    }
    layer.hidden = hidden.iter().map(|s| s.to_string()).collect();
    ("/etc", layer)
}

fn repo_text(path: &str) -> String {
    fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Each of `lines` is a whole line of the repository file `path`.
fn assert_has_lines(path: &str, lines: &[&str]) {
    let content = repo_text(path);
    let name = Path::new(path).file_name().expect("name").to_string_lossy();
    for line in lines {
        assert!(content.lines().any(|l| l == *line), "{name} lacks {line}");
    }
}

fn sasl_gid() -> Option<u32> {
    nix::unistd::Group::from_name("sasl")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// A fresh temp dir `tag` and the run directory `<dir>/run` a configuration names, as a path
/// and as it appears on the daemon's command line.
fn scratch_run_dir(tag: &str) -> (TempDir, PathBuf, String) {
    let dir = TempDir::new(tag);
    let run_dir = dir.join("run");
    let arg = run_dir.display().to_string();
    (dir, run_dir, arg)
}

/// The run directory as the init scripts make it: root:sasl 0710.
fn assert_run_dir_private(dir: &Path) {
    let meta = fs::metadata(dir).expect("run dir");
    assert_eq!(meta.mode() & 0o7777, 0o710, "{} mode", dir.display());
    assert_eq!(meta.uid(), 0, "{} owner", dir.display());
    if let Some(gid) = sasl_gid() {
        assert_eq!(meta.gid(), gid, "{} group", dir.display());
    }
}

// ---------------------------------------------------------------------------------------
// man pages

const MAN_PAGES: [&str; 2] = ["man/saslauthd.8", "man/testsaslauthd.8"];

#[test]
fn man_pages_lint_clean() {
    require_root();
    require_tool("mandoc", "mandoc");
    require_tool("groff", "groff");
    for page in MAN_PAGES {
        let path = repo().join(page);
        assert_passed(
            run(
                Command::new("mandoc")
                    .args(["-T", "lint", "-W", "all"])
                    .arg(&path),
                STEP,
            ),
            &format!("mandoc -T lint {page}"),
            Prints::Nothing,
        );
        assert_passed(
            run(
                Command::new("groff").args(["-man", "-ww", "-z"]).arg(&path),
                STEP,
            ),
            &format!("groff -man -ww -z {page}"),
            Prints::StdoutOnly,
        );
        let content = fs::read_to_string(&path).expect("read");
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "EXIT STATUS",
            "EXAMPLES",
            "DIFFERENCES FROM CYRUS SASL",
            "SEE ALSO",
        ] {
            assert!(
                content.contains(&format!("\n.SH {section}\n")),
                "{page} lacks a {section} section"
            );
        }
    }
    let daemon = fs::read_to_string(repo().join(MAN_PAGES[0])).expect("read");
    for section in [
        "MECHANISMS",
        "FILES",
        "SIGNALS",
        "LOGGING",
        "SECURITY",
        "ENVIRONMENT",
    ] {
        assert!(
            daemon.contains(&format!("\n.SH {section}\n")),
            "saslauthd.8 lacks {section}"
        );
    }
}

/// Option names (`-a`, `--timeout`) in clap's `--help` output.
fn help_options(program: &str) -> BTreeSet<String> {
    // --help on stdout (so it can be piped), -h on stderr like upstream's.
    let output = assert_passed(
        run(Command::new(program).arg("--help"), STEP),
        &format!("{program} --help"),
        Prints::StdoutOnly,
    );
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let short = assert_passed(
        run(Command::new(program).arg("-h"), STEP),
        &format!("{program} -h"),
        Prints::Anything,
    );
    assert!(
        short.stdout.is_empty() && String::from_utf8_lossy(&short.stderr) == help,
        "{program} -h should print --help's text on stderr:\n{}",
        text(&short)
    );
    let mut options = BTreeSet::new();
    for line in help.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        // The option column ends where the description begins (two spaces).
        let spec = line.split("  ").next().unwrap_or_default();
        options.extend(option_tokens(spec));
    }
    assert!(
        !options.is_empty(),
        "no options found in {program} --help:\n{help}"
    );
    options
}

/// Option names on the tag lines (after `.TP`) of a man page's OPTIONS section.
fn man_options(page: &str) -> BTreeSet<String> {
    let content = fs::read_to_string(repo().join(page)).expect("read");
    let section = content
        .split("\n.SH ")
        .find(|s| s.starts_with("OPTIONS\n"))
        .unwrap_or_else(|| panic!("{page} has no OPTIONS section"));
    let mut options = BTreeSet::new();
    let mut tag_next = false;
    for line in section.lines() {
        if tag_next {
            options.extend(option_tokens(&line.replace("\\-", "-")));
        }
        tag_next = line == ".TP";
    }
    options
}

fn option_tokens(spec: &str) -> Vec<String> {
    spec.split(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '|')
        .filter(|t| {
            let short = t.len() == 2
                && t.starts_with('-')
                && t.chars().nth(1).is_some_and(|c| c.is_ascii_alphanumeric());
            let long = t.len() > 2
                && t.starts_with("--")
                && t[2..]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            short || long
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn help_and_man_page_list_the_same_options() {
    require_root();
    for (program, page) in [(DAEMON, MAN_PAGES[0]), (CLIENT, MAN_PAGES[1])] {
        let help = help_options(program);
        let man = man_options(page);
        let missing: Vec<_> = help.difference(&man).collect();
        let extra: Vec<_> = man.difference(&help).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{page} vs {program} --help: undocumented {missing:?}, documented but unknown {extra:?}"
        );
    }
    // saslauthd(8) sums up the options Cyrus SASL lacks: all of our long options.
    let daemon_page = repo_text(MAN_PAGES[0]);
    let differences = daemon_page
        .split("\n.SH ")
        .find(|s| s.starts_with("DIFFERENCES FROM CYRUS SASL\n"))
        .expect("saslauthd.8: DIFFERENCES FROM CYRUS SASL");
    let summary = differences
        .split(".IP ")
        .find(|item| item.contains("are new."))
        .expect("the bullet listing the new options")
        .replace("\\-", "-");
    let listed: BTreeSet<String> = option_tokens(&summary).into_iter().collect();
    let long: BTreeSet<String> = help_options(DAEMON)
        .into_iter()
        .filter(|o| o.starts_with("--"))
        .collect();
    let unlisted: Vec<_> = long.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "saslauthd.8's summary of the new options lacks {unlisted:?}"
    );
}

// ---------------------------------------------------------------------------------------
// units and scripts

const SHELL_SCRIPTS: [&str; 9] = [
    "init/saslauthd-start",
    "init/saslauthd-instances",
    "pkg/deb/build-deb",
    "init/saslauthd.init",
    "init/saslauthd.openrc",
    "pkg/deb/preinst",
    "pkg/deb/postinst",
    "pkg/deb/prerm",
    "pkg/deb/postrm",
];
/// Shell fragments sourced by the scripts: their variables are used elsewhere.
const SHELL_CONFIGS: [&str; 3] = [
    "init/default/saslauthd",
    "init/sysconfig/saslauthd",
    "init/conf.d/saslauthd",
];

#[test]
fn shell_scripts_pass_shellcheck() {
    require_root();
    require_tool("shellcheck", "shellcheck");
    for script in SHELL_SCRIPTS {
        let path = repo().join(script);
        let mode = fs::metadata(&path).expect("script").mode();
        assert!(mode & 0o111 != 0, "{script} is not executable");
        assert_passed(
            run(
                Command::new("shellcheck")
                    .args(["--shell=sh", "--severity=style"])
                    .arg(&path),
                STEP,
            ),
            &format!("shellcheck {script}"),
            Prints::Anything,
        );
    }
    for config in SHELL_CONFIGS {
        assert_passed(
            run(
                Command::new("shellcheck")
                    .args(["--shell=sh", "--severity=style", "--exclude=SC2034"])
                    .arg(repo().join(config)),
                STEP,
            ),
            &format!("shellcheck {config}"),
            Prints::Anything,
        );
    }
}

/// `scripts/test.sh` leaves every peer's system service enabled or disabled at boot as it
/// found it: it records the boot links of PEER_SERVICES before its apt installs and
/// restores them after. Here the restore undoes, in a namespace whose /etc is an overlay,
/// what package installs and administrators do: boot links enabled, a unit disabled, a
/// socket unit enabled, a service masked.
#[test]
fn test_command_restores_the_peers_boot_state() {
    require_root();
    require_tool("update-rc.d", "init-system-helpers");
    let script = repo_text("scripts/test.sh");
    let snapshot = script
        .find("service_links \"${PEER_SERVICES[@]}\" >")
        .expect("test.sh records the boot state of PEER_SERVICES");
    let install = script
        .find("\napt_install ")
        .expect("test.sh installs with apt_install");
    let restore = script[install..]
        .find("\nservice_links_restore ")
        .expect("test.sh restores the boot state after apt_install");
    assert!(snapshot < install && restore > 0);
    assert!(
        script.contains("trap 'service_links_restore"),
        "test.sh restores on every exit"
    );
    let ns = Namespace::new(vec![("/etc", Layer::default())], RunFs::Host);
    let services = "postfix dovecot saslauthd";
    let lib = repo().join("scripts/lib.sh");
    let output = run(
        ns.command("bash").args([
            "-c",
            &format!(
                "set -e
                 . '{lib}'
                 state=$(mktemp)
                 service_links {services} >\"$state\"
                 update-rc.d saslauthd enable >/dev/null 2>&1 || true
                 update-rc.d postfix disable >/dev/null 2>&1 || true
                 rm -f /etc/systemd/system/multi-user.target.wants/postfix.service
                 mkdir -p /etc/systemd/system/sockets.target.wants
                 ln -sf /lib/systemd/system/dovecot.socket /etc/systemd/system/sockets.target.wants/dovecot.socket
                 ln -sf /dev/null /etc/systemd/system/saslauthd.service
                 changed=$(service_links {services})
                 [ \"$changed\" != \"$(cat \"$state\")\" ]
                 service_links_restore \"$state\" {services}
                 service_links {services} | diff \"$state\" -
                 rm -f \"$state\"",
                lib = lib.display()
            ),
        ]),
        STEP,
    );
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn systemd_units_verify_clean() {
    require_root();
    require_tool("systemd-analyze", "systemd");
    // The unit names the installed helper and man pages: provide them in a namespace.
    let mut man = Layer::default();
    for page in MAN_PAGES {
        let name = Path::new(page).file_name().expect("name");
        man.files.push((
            name.to_string_lossy().into_owned(),
            Content::Copy(repo().join(page)),
            0o644,
        ));
    }
    let ns = Namespace::new(
        vec![sbin_layer(), libexec_layer(), ("/usr/share/man/man8", man)],
        RunFs::Host,
    );
    // As installed: the units, and the shared sandbox as a drop-in for both services.
    let dir = TempDir::new("units");
    for unit in [
        "saslauthd.service",
        "saslauthd@.service",
        "saslauthd.socket",
        "saslauthd-dovecot.socket",
    ] {
        copy_file(&repo().join("init").join(unit), &dir.join(unit), 0o644);
    }
    for service in ["saslauthd.service", "saslauthd@.service"] {
        copy_file(
            &repo().join("init/sandbox.conf"),
            &dir.join(format!("{service}.d/sandbox.conf")),
            0o644,
        );
    }
    let service = dir.join("saslauthd.service");
    // An instance is verified by its name; the template's directory is searched.
    let instance = dir.join("saslauthd@second.service");
    let socket = dir.join("saslauthd.socket");
    assert_passed(
        run(
            ns.command("systemd-analyze")
                .arg("verify")
                .arg(&service)
                .arg(&instance)
                .arg(&socket)
                .arg(dir.join("saslauthd-dovecot.socket")),
            STEP,
        ),
        "systemd-analyze verify",
        Prints::Nothing,
    );
    // The sandbox stays tight: exposure 3.5 or better on systemd's 0-10 scale.
    for unit in [&service, &instance] {
        assert_passed(
            run(
                ns.command("systemd-analyze")
                    .args(["security", "--offline=yes", "--threshold=35", "--no-pager"])
                    .arg(unit),
                STEP,
            ),
            "systemd-analyze security",
            Prints::Anything,
        );
    }
    // The facts the rest of the packaging relies on.
    assert_has_lines(
        "init/sandbox.conf",
        &[
            "Type=notify",
            "RuntimeDirectoryMode=0710",
            "Group=sasl",
            "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
        ],
    );
    assert_has_lines("init/saslauthd.service", &["RuntimeDirectory=saslauthd"]);
    assert_has_lines(
        "init/saslauthd@.service",
        &[
            "RuntimeDirectory=saslauthd-%i",
            "ConditionPathExists=/etc/default/saslauthd-%i",
            "ExecCondition=/usr/libexec/saslauthd-rs/saslauthd-start --check /etc/default/saslauthd-%i",
        ],
    );
    for unit in ["init/saslauthd.service", "init/saslauthd@.service"] {
        let text = repo_text(unit);
        assert!(
            !text.contains("ProtectSystem") && !text.contains("Type="),
            "{unit}: the sandbox and process settings belong in init/sandbox.conf"
        );
    }
    assert_has_lines(
        "init/saslauthd.socket",
        &[
            "ListenStream=/run/saslauthd/mux",
            "SocketGroup=sasl",
            "SocketMode=0660",
        ],
    );
    assert_has_lines(
        "init/saslauthd-dovecot.socket",
        &[
            "ListenStream=/var/spool/postfix/private/auth",
            "FileDescriptorName=dovecot",
            "Service=saslauthd.service",
            "SocketUser=postfix",
            "SocketMode=0660",
        ],
    );
    let tmpfiles = repo_text("init/tmpfiles.d/saslauthd.conf");
    assert!(tmpfiles.contains("d /run/saslauthd 0710 root sasl"));
    let sysusers = repo_text("init/sysusers.d/saslauthd.conf");
    assert!(sysusers.lines().any(|l| l.starts_with("g sasl ")));
}

// ---------------------------------------------------------------------------------------
// socket activation and readiness

/// `systemd-socket-activate <activate_args…>` in front of our daemon (`-a shadow`, run
/// directory `<dir>/run`, log `<dir>/daemon.log`), which it execs on the first connection.
fn socket_activated(dir: &TempDir, activate_args: &[&OsStr]) -> Proc {
    require_tool("systemd-socket-activate", "systemd");
    let mut activate = Command::new("systemd-socket-activate");
    activate.args(activate_args).arg(DAEMON);
    spawn_logged(
        foreground_daemon(&mut activate, "shadow", &dir.join("run")),
        &dir.join("daemon.log"),
    )
}

#[test]
fn socket_activation_serves_the_inherited_socket() {
    require_root();
    let dir = TempDir::new("activate");
    let listen = dir.join("mux");
    let mut daemon = socket_activated(&dir, &["-l".as_ref(), listen.as_ref()]);
    let (run_dir, log) = (dir.join("run"), dir.join("daemon.log"));
    wait_until(STEP, "the activation socket", || listen.exists());
    // The first connection makes systemd-socket-activate exec the daemon (same pid).
    assert_serves_shadow(&listen);
    assert_serves_shadow(&listen);
    let log_text = || fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !run_dir.join("mux").exists(),
        "the daemon bound its own socket instead of using the inherited one:\n{}",
        log_text()
    );
    assert_eq!(
        read_pid_file(&run_dir.join("saslauthd.pid")),
        Some(daemon.pid)
    );
    assert_terminates_cleanly(&mut daemon, &log);
    assert!(listen.exists(), "the inherited socket must stay in place");
    assert!(
        !run_dir.join("saslauthd.pid").exists(),
        "pid file left behind"
    );
}

#[test]
fn socket_activation_picks_the_socket_named_saslauthd() {
    require_root();
    let dir = TempDir::new("activate-named");
    let other = dir.join("other");
    let listen = dir.join("mux");
    let mut daemon = socket_activated(
        &dir,
        &[
            "-l".as_ref(),
            other.as_ref(),
            "-l".as_ref(),
            listen.as_ref(),
            "--fdname=jail:saslauthd".as_ref(),
        ],
    );
    wait_until(STEP, "the activation sockets", || {
        listen.exists() && other.exists()
    });
    assert_serves_shadow(&listen);
    assert_terminates_cleanly(&mut daemon, &dir.join("daemon.log"));
}

/// The Dovecot protocol socket as a second named socket (`FileDescriptorName=dovecot`,
/// e.g. from `init/saslauthd-dovecot.socket`), beside the mux socket, whatever the order.
#[test]
fn socket_activation_serves_the_dovecot_socket_named_dovecot() {
    require_root();
    let dir = TempDir::new("activate-dovecot");
    let (mux, auth) = (dir.join("mux"), dir.join("auth"));
    let mut daemon = socket_activated(
        &dir,
        &[
            "-l".as_ref(),
            auth.as_ref(),
            "-l".as_ref(),
            mux.as_ref(),
            "--fdname=dovecot:saslauthd".as_ref(),
        ],
    );
    wait_until(STEP, "the activation sockets", || {
        mux.exists() && auth.exists()
    });
    // The first connection (to the Dovecot socket) starts the daemon; both sockets serve.
    let output = run(
        Command::new(CLIENT)
            .args([
                "--dovecot",
                "--show-reply",
                "-u",
                NOBODY,
                "-p",
                "not-the-password",
                "-f",
            ])
            .arg(&auth),
        STEP,
    );
    assert_eq!(output.status.code(), Some(255), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("0: NO \"authentication failed\"\n0: reply \"FAIL\\t1\\tuser={NOBODY}\"\n")
    );
    assert_serves_shadow(&mux);
    let log = fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    assert!(
        log.contains("listening on dovecot socket: the socket passed by the service manager"),
        "{log}"
    );
    assert_terminates_cleanly(&mut daemon, &dir.join("daemon.log"));
    assert!(auth.exists(), "the inherited socket must stay in place");
}

#[test]
fn readiness_is_notified_once_serving_and_stopping_on_sigterm() {
    require_root();
    let dir = TempDir::new("notify");
    let notify = NotifySocket::bind(dir.join("notify"));
    let run_dir = dir.join("run");
    let log = dir.join("daemon.log");
    let mut daemon = spawn_logged(
        notify.notify_env(
            Command::new(DAEMON)
                .args(["-a", "shadow", "-f", "-m"])
                .arg(&run_dir),
        ),
        &log,
    );
    let ready = notify.expect("READY=1", &mut daemon, &log);
    assert_eq!(main_pid(&ready), Some(daemon.pid), "MAINPID in {ready:?}");
    // READY=1 comes only once the socket listens.
    assert_serves_shadow(&run_dir.join("mux"));
    daemon.signal(Signal::SIGTERM);
    notify.expect("STOPPING=1", &mut daemon, &log);
    let status = daemon.wait_exit(STEP).expect("status");
    assert!(status.success(), "exit {status:?}");
    assert!(!run_dir.join("mux").exists(), "socket left behind");
}

// ---------------------------------------------------------------------------------------
// the distributions' ways of starting it

/// The `key=` command line (`ExecStart`, `ExecCondition`) of the unit `unit` in init/,
/// split into words, with `instance` for `%i`.
fn unit_command(unit: &str, key: &str, instance: &str) -> Vec<String> {
    let text = repo_text(&format!("init/{unit}"));
    let prefix = format!("{key}=");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in {unit}"));
    let words: Vec<String> = line
        .trim_start_matches(['-', '@', ':', '+', '!'])
        .split_whitespace()
        .map(|w| w.replace("%i", instance))
        .collect();
    assert_eq!(words[0], HELPER_PATH, "{key}= runs the helper");
    words
}

/// A unit's ExecCondition= and then ExecStart= run inside a namespace the way systemd
/// would (foreground, NOTIFY_SOCKET), once it has sent READY=1.
struct UnitService {
    daemon: Proc,
    /// The READY=1 message.
    ready: String,
    log: PathBuf,
    _notify: NotifySocket,
}

impl UnitService {
    /// Starts saslauthd.service in `ns`, with the notify socket and the log in `dir`.
    fn start(ns: &Namespace, dir: &TempDir) -> UnitService {
        UnitService::start_unit(ns, dir, "saslauthd.service", "")
    }

    /// Starts `unit` (with `instance` for `%i`): its ExecCondition= must pass.
    fn start_unit(ns: &Namespace, dir: &TempDir, unit: &str, instance: &str) -> UnitService {
        let condition = unit_command(unit, "ExecCondition", instance);
        assert_passed(
            run(ns.command(&condition[0]).args(&condition[1..]), STEP),
            &format!("{unit}: ExecCondition= {condition:?}"),
            Prints::Nothing,
        );
        let exec_start = unit_command(unit, "ExecStart", instance);
        let notify = NotifySocket::bind(dir.join("notify"));
        let log = dir.join("daemon.log");
        let mut daemon = spawn_logged(
            notify.notify_env(ns.command(&exec_start[0]).args(&exec_start[1..])),
            &log,
        );
        let ready = notify.expect("READY=1", &mut daemon, &log);
        UnitService {
            daemon,
            ready,
            log,
            _notify: notify,
        }
    }
}

/// Runs the unit's ExecStart= in a namespace whose /etc has `etc_files` (and lacks
/// `hidden`), like systemd would (foreground, NOTIFY_SOCKET), and checks the command line
/// the daemon ends up with and that it serves shadow on `<run_dir>/mux`.
fn check_unit_start(
    dir: &TempDir,
    etc_files: &[(&str, String, u32)],
    hidden: &[&str],
    run_dir: &Path,
    expected_args: &[&str],
) {
    check_unit_instance_start(
        dir,
        ("saslauthd.service", ""),
        etc_files,
        hidden,
        run_dir,
        expected_args,
    );
}

/// [`check_unit_start`] for `(unit, instance)`.
fn check_unit_instance_start(
    dir: &TempDir,
    (unit, instance): (&str, &str),
    etc_files: &[(&str, String, u32)],
    hidden: &[&str],
    run_dir: &Path,
    expected_args: &[&str],
) {
    let ns = Namespace::new(
        vec![etc_layer(etc_files, hidden), sbin_layer(), libexec_layer()],
        RunFs::Host,
    );
    let mut unit = UnitService::start_unit(&ns, dir, unit, instance);
    let ready = &unit.ready;
    // nsenter and the helper exec: the process systemd started is the daemon.
    assert_eq!(
        main_pid(ready),
        Some(unit.daemon.pid),
        "MAINPID in {ready:?}"
    );
    assert_cmdline(unit.daemon.pid, expected_args);
    assert_serves_shadow(&run_dir.join("mux"));
    assert_terminates_cleanly(&mut unit.daemon, &unit.log);
}

/// saslauthd@NAME.service runs the daemon of /etc/default/saslauthd-NAME, with its own
/// run directory.
#[test]
fn unit_template_serves_an_instance_file() {
    require_root();
    let (dir, run_dir, run_dir_arg) = scratch_run_dir("instance");
    let second = format!(
        "NAME=\"saslauthd-second\"\nMECHANISMS=\"shadow\"\nMECH_OPTIONS=\"\"\nTHREADS=2\n\
         OPTIONS=\"-m {run_dir_arg}\"\n"
    );
    check_unit_instance_start(
        &dir,
        ("saslauthd@.service", "second"),
        &[("default/saslauthd-second", second, 0o644)],
        &[],
        &run_dir,
        &["-a", "shadow", "-m", &run_dir_arg, "-n", "2", "-f"],
    );
}

/// `saslauthd-start --check`, the units' ExecCondition=: START=no (any value but "yes")
/// skips the start (exit 1, which systemd treats as a failed condition, not a failure),
/// an unset START or START=yes starts, formats without START always start, and an
/// unusable file fails the unit (255).
#[test]
fn unit_exec_condition_honours_start() {
    let dir = TempDir::new("check");
    let helper = repo().join("init/saslauthd-start");
    for (content, want) in [
        ("MECHANISMS=\"shadow\"\n", 0),
        ("START=yes\nMECHANISMS=\"shadow\"\n", 0),
        ("START=no\nMECHANISMS=\"shadow\"\n", 1),
        ("START=No\nMECHANISMS=\"pam\"\n", 1),
        (
            "MECHANISMS=\"ldap\"\nMECH_OPTIONS=\"/etc/saslauthd.conf\"\nSTART=yes\n",
            0,
        ),
        ("SOCKETDIR=/run/saslauthd\nMECH=shadow\n", 0),
        ("START=yes\n", 255),
    ] {
        let file = dir.join("settings");
        write_file(&file, content, 0o644);
        let output = run(Command::new(&helper).arg("--check").arg(&file), STEP);
        assert_eq!(
            output.status.code(),
            Some(want),
            "{content:?}:\n{}",
            text(&output)
        );
        if want == 1 {
            assert!(
                String::from_utf8_lossy(&output.stderr).contains("START="),
                "{}",
                text(&output)
            );
        }
    }
    // MECH_OPTIONS reaches any mechanism as -O, with or without its own -O: the ldap,
    // kerberos5, sasldb and getpwent mechanisms get their configuration file this way.
    for mech in ["ldap", "kerberos5", "sasldb", "getpwent"] {
        for options in ["/etc/saslauthd.conf", "-O /etc/saslauthd.conf"] {
            let file = dir.join("settings");
            write_file(
                &file,
                &format!(
                    "MECHANISMS=\"{mech}\"\nMECH_OPTIONS=\"{options}\"\nOPTIONS=\"-m /run/saslauthd\"\n"
                ),
                0o644,
            );
            let output = run_ok(Command::new(&helper).arg("--print").arg(&file), STEP);
            assert_eq!(
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .collect::<Vec<_>>(),
                [
                    "/usr/sbin/saslauthd",
                    "-a",
                    mech,
                    "-O",
                    "/etc/saslauthd.conf",
                    "-m",
                    "/run/saslauthd"
                ]
            );
        }
    }
}

/// `saslauthd-start --rundir` (the run directory, hence the pid file, that status, stop and
/// takeover use) finds `-m` after every option of the daemon: the helper's option scan
/// knows which options take a value as saslauthd's `--help` shows them (`--timeout <SECS>`
/// does, `--dovecot-allow-network` does not), so no `-m` is taken for an option's value.
#[test]
fn start_helper_finds_the_run_directory_after_every_option() {
    let helper = repo().join("init/saslauthd-start");
    let rundir = |opts: &str| {
        let output = run(
            Command::new(&helper).args(["--rundir", "--opts", opts]),
            STEP,
        );
        assert!(output.status.success(), "{opts:?}:\n{}", text(&output));
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string()
    };
    let help = run_ok(Command::new(DAEMON).arg("--help"), STEP);
    let mut checked = 0;
    for line in String::from_utf8_lossy(&help.stdout).lines() {
        // Option lines are indented by 2 or 6 spaces; descriptions (which may begin with
        // "-a pam:") further.
        let option_line = line.trim_start();
        if !option_line.starts_with('-') || line.len() - option_line.len() > 6 {
            continue;
        }
        let spec = option_line.split("  ").next().unwrap_or_default();
        let takes_value = spec.contains('<');
        for option in option_tokens(spec) {
            let want = "/run/saslauthd-after";
            let mut forms = vec![if takes_value {
                format!("{option} 1 -m {want}")
            } else {
                format!("{option} -m {want}")
            }];
            if takes_value && option.starts_with("--") {
                forms.push(format!("{option}=1 -m {want}"));
            }
            for opts in forms {
                assert_eq!(
                    rundir(&opts),
                    want,
                    "saslauthd-start --rundir --opts {opts:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} options found in saslauthd --help"
    );
    // The review's case, from a Debian file.
    let dir = TempDir::new("rundir");
    let file = dir.join("saslauthd");
    write_file(
        &file,
        "MECHANISMS=\"shadow\"\n\
         OPTIONS=\"--dovecot-allow-network -c -m /var/spool/postfix/var/run/saslauthd\"\n",
        0o644,
    );
    let output = run_ok(Command::new(&helper).arg("--rundir").arg(&file), STEP);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "/var/spool/postfix/var/run/saslauthd\n"
    );
}

#[test]
fn unit_exec_start_reads_debian_defaults() {
    require_root();
    // Debian 12's init-script style (the script added -O), Debian 13's unit style
    // (MECH_OPTIONS carries -O), and the minimal file.
    for (tag, mech_options) in [
        ("deb12", "ignored-by-shadow"),
        ("deb13", "-O ignored-by-shadow"),
    ] {
        let (dir, run_dir, run_dir_arg) = scratch_run_dir(tag);
        let defaults = format!(
            "DESC=\"SASL Authentication Daemon\"\nNAME=\"saslauthd\"\nMECHANISMS=\"shadow\"\n\
             MECH_OPTIONS=\"{mech_options}\"\nTHREADS=3\nOPTIONS=\"-c -m {run_dir_arg}\"\n"
        );
        check_unit_start(
            &dir,
            &[("default/saslauthd", defaults, 0o644)],
            &[],
            &run_dir,
            &[
                "-a",
                "shadow",
                "-O",
                "ignored-by-shadow",
                "-c",
                "-m",
                &run_dir_arg,
                "-n",
                "3",
                "-f",
            ],
        );
    }
    let (dir, run_dir, run_dir_arg) = scratch_run_dir("deb-minimal");
    let defaults =
        format!("MECHANISMS=\"SHADOW\"\nMECH_OPTIONS=\"\"\nOPTIONS=\"-m {run_dir_arg}\"\n");
    check_unit_start(
        &dir,
        &[("default/saslauthd", defaults, 0o644)],
        &[],
        &run_dir,
        &["-a", "SHADOW", "-m", &run_dir_arg, "-f"],
    );
}

#[test]
fn unit_exec_start_reads_fedora_sysconfig() {
    require_root();
    let (dir, run_dir, run_dir_arg) = scratch_run_dir("fedora");
    let sysconfig = format!(
        "# Directory in which to place saslauthd's listening socket\nSOCKETDIR={run_dir_arg}\n\
         MECH=shadow\nFLAGS=\"--timeout 7 -r\"\n"
    );
    // /etc/default/saslauthd (sasl2-bin's, if installed) is hidden: on Fedora it is absent.
    check_unit_start(
        &dir,
        &[("sysconfig/saslauthd", sysconfig, 0o644)],
        &["default/saslauthd"],
        &run_dir,
        &[
            "-m",
            &run_dir_arg,
            "-a",
            "shadow",
            "--timeout",
            "7",
            "-r",
            "-f",
        ],
    );
}

/// A namespace for the init script `script` (a path in this repository) installed as
/// /etc/init.d/saslauthd, with its configuration file `config` (path below /etc, content),
/// without the files `hidden` (below /etc), with our daemon and start helper, and with a
/// private /run.
fn init_script_namespace(script: &str, config: (&str, String), hidden: &[&str]) -> Namespace {
    let (config_path, config_text) = config;
    Namespace::new(
        vec![
            etc_layer(
                &[
                    (config_path, config_text, 0o644),
                    ("init.d/saslauthd", repo_text(script), 0o755),
                ],
                hidden,
            ),
            sbin_layer(),
            libexec_layer(),
        ],
        RunFs::Openrc,
    )
}

/// Starts, checks, restarts and stops the daemon with an init script installed as
/// /etc/init.d/saslauthd in a namespace.
fn check_init_script(
    ns: &Namespace,
    run_dir: &Path,
    expected_args: &[&str],
    restart_action: Option<&str>,
) {
    let script = "/etc/init.d/saslauthd";
    let pid_file = run_dir.join("saslauthd.pid");
    let output = run_ok(ns.command(script).arg("start"), STEP);
    let pid = read_pid_file(&pid_file)
        .unwrap_or_else(|| panic!("no pid file after start:\n{}", text(&output)));
    let mut daemon = Proc::detached(pid);
    assert_cmdline(pid, expected_args);
    assert_serves_shadow(&run_dir.join("mux"));
    assert_run_dir_private(run_dir);
    run_ok(ns.command(script).arg("status"), STEP);
    // Starting again leaves the running daemon alone.
    run_ok(ns.command(script).arg("start"), STEP);
    assert_eq!(read_pid_file(&pid_file), Some(pid));
    assert!(daemon.alive());
    if let Some(action) = restart_action {
        run_ok(ns.command(script).arg(action), STEP);
        let new_pid = read_pid_file(&pid_file).expect("pid file after restart");
        assert_ne!(new_pid, pid, "{action} did not restart the daemon");
        assert!(!daemon.alive(), "the old daemon survived {action}");
        daemon = Proc::detached(new_pid);
        assert_serves_shadow(&run_dir.join("mux"));
    }
    run_ok(ns.command(script).arg("stop"), STEP);
    daemon.wait_exit(STEP);
    assert!(!pid_file.exists(), "pid file left behind by stop");
    assert!(!run_dir.join("mux").exists(), "socket left behind by stop");
    let output = run(ns.command(script).arg("status"), STEP);
    assert_eq!(
        output.status.code(),
        Some(3),
        "status after stop:\n{}",
        text(&output)
    );
}

#[test]
fn lsb_init_script_honours_debian_defaults() {
    require_root();
    require_tool("start-stop-daemon", "dpkg");
    let (_dir, run_dir, run_dir_arg) = scratch_run_dir("lsb");
    let defaults = format!(
        "MECHANISMS=\"shadow\"\nMECH_OPTIONS=\"\"\nTHREADS=2\nOPTIONS=\"-m {run_dir_arg}\"\n"
    );
    let ns = init_script_namespace("init/saslauthd.init", ("default/saslauthd", defaults), &[]);
    check_init_script(
        &ns,
        &run_dir,
        &["-a", "shadow", "-m", &run_dir_arg, "-n", "2"],
        Some("force-reload"),
    );
    // restart too, with the daemon running and with it stopped.
    run_ok(ns.command("/etc/init.d/saslauthd").arg("restart"), STEP);
    let pid = read_pid_file(&run_dir.join("saslauthd.pid")).expect("pid after restart");
    let mut daemon = Proc::detached(pid);
    assert_serves_shadow(&run_dir.join("mux"));
    run_ok(ns.command("/etc/init.d/saslauthd").arg("stop"), STEP);
    daemon.wait_exit(STEP);
}

#[test]
fn lsb_init_script_honours_fedora_sysconfig_and_start_no() {
    require_root();
    require_tool("start-stop-daemon", "dpkg");
    let (dir, run_dir, run_dir_arg) = scratch_run_dir("lsb-fedora");
    let sysconfig = format!("SOCKETDIR={run_dir_arg}\nMECH=shadow\nFLAGS=\n");
    let ns = init_script_namespace(
        "init/saslauthd.init",
        ("sysconfig/saslauthd", sysconfig),
        &["default/saslauthd"],
    );
    check_init_script(
        &ns,
        &run_dir,
        &["-m", &run_dir_arg, "-a", "shadow"],
        Some("restart"),
    );
    drop(ns);

    // START=no (Debian's old switch) keeps the script from starting the daemon.
    let run_dir = dir.join("run-disabled");
    let defaults = format!(
        "START=no\nMECHANISMS=\"shadow\"\nOPTIONS=\"-m {}\"\n",
        run_dir.display()
    );
    let ns = init_script_namespace("init/saslauthd.init", ("default/saslauthd", defaults), &[]);
    let output = run_ok(ns.command("/etc/init.d/saslauthd").arg("start"), STEP);
    assert!(
        !run_dir.join("saslauthd.pid").exists() && !run_dir.join("mux").exists(),
        "START=no started the daemon:\n{}",
        text(&output)
    );
}

/// Like Debian's init script, ours runs one daemon per instance file
/// (/etc/default/saslauthd and /etc/default/saslauthd-NAME, not backups such as
/// saslauthd.dpkg-old), skips those with START=no, acts on one instance by name, and
/// restarts one without touching the others and without a moment without a socket.
#[test]
fn lsb_init_script_runs_every_instance() {
    require_root();
    require_tool("start-stop-daemon", "dpkg");
    let dir = TempDir::new("lsb-instances");
    let run_dir = |name: &str| dir.join(name);
    let settings = |start: &str, name: &str| {
        format!(
            "START={start}\nMECHANISMS=\"shadow\"\nTHREADS=1\nOPTIONS=\"-m {}\"\n",
            run_dir(name).display()
        )
    };
    let ns = Namespace::new(
        vec![
            etc_layer(
                &[
                    ("default/saslauthd", settings("yes", "default"), 0o644),
                    ("default/saslauthd-second", settings("yes", "second"), 0o644),
                    ("default/saslauthd-off", settings("no", "off"), 0o644),
                    (
                        "default/saslauthd.dpkg-old",
                        settings("yes", "backup"),
                        0o644,
                    ),
                    ("init.d/saslauthd", repo_text("init/saslauthd.init"), 0o755),
                ],
                &[],
            ),
            sbin_layer(),
            libexec_layer(),
        ],
        RunFs::Private,
    );
    let script = "/etc/init.d/saslauthd";
    let pid = |name: &str| read_pid_file(&run_dir(name).join("saslauthd.pid"));
    run_ok(ns.command(script).arg("start"), STEP);
    let (first, second) = (
        pid("default").expect("default"),
        pid("second").expect("second"),
    );
    assert_serves_shadow(&run_dir("default").join("mux"));
    assert_serves_shadow(&run_dir("second").join("mux"));
    assert!(pid("off").is_none() && pid("backup").is_none());
    assert!(!run_dir("off").exists() && !run_dir("backup").exists());
    run_ok(ns.command(script).arg("status"), STEP);
    // reload: SIGHUP to every running daemon of ours, which keeps serving (SIGHUP's default
    // action would have ended it).
    run_ok(ns.command(script).arg("reload"), STEP);
    run_ok(
        ns.command(script)
            .args(["reload-instance", "saslauthd-second"]),
        STEP,
    );
    assert_eq!((pid("default"), pid("second")), (Some(first), Some(second)));
    assert_serves_shadow(&run_dir("default").join("mux"));
    assert_serves_shadow(&run_dir("second").join("mux"));

    // One instance restarted: a new daemon, the other untouched, no moment without a socket.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asker = {
        let stop = std::sync::Arc::clone(&stop);
        let socket = run_dir("second").join("mux");
        thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || answers.len() < 3 {
                answers.push(socket.exists().then(|| ask(&socket, NOBODY)).flatten());
            }
            answers
        })
    };
    run_ok(
        ns.command(script)
            .args(["restart-instance", "saslauthd-second"]),
        STEP,
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = asker.join().expect("asker");
    assert!(
        answers
            .iter()
            .all(|a| a.as_deref() == Some(INVALID_USERNAME)),
        "requests failed across the restart: {answers:?}"
    );
    let restarted = pid("second").expect("second after restart");
    assert_ne!(restarted, second);
    assert!(!pid_alive(second), "the old daemon survived the restart");
    assert_eq!(pid("default"), Some(first));

    run_ok(
        ns.command(script)
            .args(["stop-instance", "saslauthd-second"]),
        STEP,
    );
    wait_until(STEP, "the second instance to stop", || {
        !pid_alive(restarted)
    });
    assert!(pid_alive(first));
    let status = run(
        ns.command(script)
            .args(["status-instance", "saslauthd-second"]),
        STEP,
    );
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));
    run_ok(ns.command(script).arg("stop"), STEP);
    wait_until(STEP, "the default instance to stop", || !pid_alive(first));
    let status = run(ns.command(script).arg("status"), STEP);
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));
    let unknown = run(
        ns.command(script)
            .args(["start-instance", "saslauthd-nosuch"]),
        STEP,
    );
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
}

/// An instance file that cannot be used (here: two mechanisms) fails every action of the
/// LSB script and of saslauthd-instances, with a message, instead of passing for a stopped
/// or skipped instance: a running daemon is neither reported stopped nor touched. START=no
/// still succeeds without starting anything.
#[test]
fn lsb_init_script_fails_on_unusable_settings() {
    require_root();
    require_tool("start-stop-daemon", "dpkg");
    let (_dir, run_dir, run_dir_arg) = scratch_run_dir("lsb-unusable");
    let settings = |start: &str, mechanisms: &str| {
        format!("START={start}\nMECHANISMS=\"{mechanisms}\"\nOPTIONS=\"-m {run_dir_arg}\"\n")
    };
    let ns = init_script_namespace(
        "init/saslauthd.init",
        ("default/saslauthd", settings("yes", "shadow")),
        &[],
    );
    let write_settings = |content: &str| {
        run_ok(
            ns.command("sh")
                .args(["-c", "printf '%s' \"$1\" >/etc/default/saslauthd", "-"])
                .arg(content),
            STEP,
        );
    };
    let script = "/etc/init.d/saslauthd";
    let instances = "/usr/libexec/saslauthd-rs/saslauthd-instances";
    let pid_file = run_dir.join("saslauthd.pid");
    run_ok(ns.command(script).arg("start"), STEP);
    let pid = read_pid_file(&pid_file).expect("pid file after start");
    let mut daemon = Proc::detached(pid);

    write_settings(&settings("yes", "shadow pam"));
    for (command, args, want) in [
        (script, &["stop"][..], 1),
        (script, &["stop-instance", "saslauthd"], 1),
        (script, &["status"], 4),
        (script, &["reload"], 1),
        (script, &["restart"], 1),
        (script, &["force-reload"], 1),
        (script, &["start"], 1),
        (instances, &["status", "/etc/default/saslauthd"], 1),
        (instances, &["stop", "/etc/default/saslauthd"], 1),
        (instances, &["reload", "/etc/default/saslauthd"], 1),
        (instances, &["start", "/etc/default/saslauthd"], 1),
        (
            instances,
            &["start", "--replace", "/etc/default/saslauthd"],
            1,
        ),
    ] {
        let output = run(ns.command(command).args(args), STEP);
        assert_eq!(
            output.status.code(),
            Some(want),
            "{command} {args:?} with unusable settings:\n{}",
            text(&output)
        );
        assert!(
            text(&output).contains("MECHANISMS must name exactly one mechanism")
                || !output.stdout.is_empty(),
            "{command} {args:?} failed without a word:\n{}",
            text(&output)
        );
        assert!(daemon.alive(), "{command} {args:?} stopped the daemon");
        assert_eq!(read_pid_file(&pid_file), Some(pid), "{command} {args:?}");
    }
    assert_serves_shadow(&run_dir.join("mux"));

    write_settings(&settings("yes", "shadow"));
    run_ok(ns.command(script).arg("stop"), STEP);
    daemon.wait_exit(STEP);

    // START=no: every action succeeds, and nothing starts.
    write_settings(&settings("no", "shadow"));
    for action in ["start", "status", "restart", "reload", "stop"] {
        run_ok(ns.command(script).arg(action), STEP);
        assert!(
            !pid_file.exists() && !run_dir.join("mux").exists(),
            "{action} with START=no started the daemon"
        );
    }
}

/// OpenRC's instances: /etc/init.d/saslauthd.NAME (a copy or link of the script) reads
/// /etc/conf.d/saslauthd.NAME and runs its own daemon; one without its own -m is refused,
/// since it would collide with the default instance.
#[test]
fn openrc_script_runs_an_instance() {
    require_root();
    require_tool("openrc-run", "openrc");
    let (_dir, run_dir, run_dir_arg) = scratch_run_dir("openrc-instance");
    let ns = Namespace::new(
        vec![
            etc_layer(
                &[
                    (
                        "conf.d/saslauthd",
                        "SASLAUTHD_OPTS=\"-a shadow\"\n".into(),
                        0o644,
                    ),
                    (
                        "conf.d/saslauthd.second",
                        format!("SASLAUTHD_OPTS=\"-a shadow -m {run_dir_arg}\"\n"),
                        0o644,
                    ),
                    (
                        "conf.d/saslauthd.third",
                        "SASLAUTHD_OPTS=\"-a shadow\"\n".into(),
                        0o644,
                    ),
                    (
                        "init.d/saslauthd.second",
                        repo_text("init/saslauthd.openrc"),
                        0o755,
                    ),
                    (
                        "init.d/saslauthd.third",
                        repo_text("init/saslauthd.openrc"),
                        0o755,
                    ),
                ],
                &[],
            ),
            sbin_layer(),
            libexec_layer(),
        ],
        RunFs::Openrc,
    );
    let output = run_ok(
        ns.command("/etc/init.d/saslauthd.second").arg("start"),
        STEP,
    );
    let pid = read_pid_file(&run_dir.join("saslauthd.pid"))
        .unwrap_or_else(|| panic!("no pid file:\n{}", text(&output)));
    let mut daemon = Proc::detached(pid);
    assert_cmdline(pid, &["-a", "shadow", "-m", &run_dir_arg]);
    assert_serves_shadow(&run_dir.join("mux"));
    run_ok(
        ns.command("/etc/init.d/saslauthd.second").arg("reload"),
        STEP,
    );
    assert_eq!(read_pid_file(&run_dir.join("saslauthd.pid")), Some(pid));
    assert_serves_shadow(&run_dir.join("mux"));
    // reload signals only the daemon: a pid file naming another process (a reused pid)
    // fails it, and that process gets no SIGHUP (which would end it).
    let mut other = Proc::child(
        Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep"),
    );
    let pid_file = run_dir.join("saslauthd.pid");
    fs::write(&pid_file, format!("{}\n", other.pid)).expect("pid file");
    let refused = run(
        ns.command("/etc/init.d/saslauthd.second").arg("reload"),
        STEP,
    );
    fs::write(&pid_file, format!("{pid}\n")).expect("pid file");
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        other.alive(),
        "reload signalled a process that is not the daemon"
    );
    other.terminate();
    let refused = run(ns.command("/etc/init.d/saslauthd.third").arg("start"), STEP);
    assert!(
        !refused.status.success() && text(&refused).contains("needs its own run directory"),
        "{}",
        text(&refused)
    );
    run_ok(ns.command("/etc/init.d/saslauthd.second").arg("stop"), STEP);
    daemon.wait_exit(STEP);
}

#[test]
fn openrc_script_honours_conf_d() {
    require_root();
    require_tool("openrc-run", "openrc");
    let (_dir, run_dir, run_dir_arg) = scratch_run_dir("openrc");
    let conf = format!("SASLAUTHD_OPTS=\"-a shadow -m {run_dir_arg} -n 2\"\n");
    let ns = init_script_namespace("init/saslauthd.openrc", ("conf.d/saslauthd", conf), &[]);
    check_init_script(
        &ns,
        &run_dir,
        &["-a", "shadow", "-m", &run_dir_arg, "-n", "2"],
        Some("restart"),
    );
}

// ---------------------------------------------------------------------------------------
// the Debian package
//
// Never installed on the host: every test below runs dpkg in a private mount namespace
// whose /etc, /usr and /var are overlays and whose /run is private ([`deb_namespace`]),
// and compares the host's package state before and after ([`PackageState`]).

/// The Debian package, built once per test run by `pkg/deb/build-deb` into the target
/// directory.
fn built_deb() -> PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        assert_passed(
            run(Command::new(&cargo).args(["deb", "--version"]), STEP),
            "cargo-deb is missing: cargo install cargo-deb",
            Prints::Anything,
        );
        let deb = target_dir().join("packaging-test/saslauthd-rs.deb");
        run_ok(
            Command::new(repo().join("pkg/deb/build-deb"))
                .arg(&deb)
                .env("CARGO", &cargo),
            Duration::from_secs(1800),
        );
        deb
    })
    .clone()
}

/// target/ (the parent of target/debug/).
fn target_dir() -> PathBuf {
    Path::new(DAEMON)
        .ancestors()
        .nth(2)
        .expect("target directory")
        .to_path_buf()
}

/// Debian's sasl2-bin package file, which `scripts/test.sh` downloads (apt-get download)
/// into target/test-debs/, so that the tests can install it inside a namespace without
/// the network.
fn sasl2_bin_deb() -> PathBuf {
    let dir = target_dir().join("test-debs");
    let found = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sasl2-bin_") && n.ends_with(".deb"))
        });
    found.unwrap_or_else(|| {
        panic!(
            "no sasl2-bin_*.deb in {}: scripts/test.sh downloads it (mkdir -p {0} && cd {0} \
             && apt-get download sasl2-bin)",
            dir.display()
        )
    })
}

/// What of a system's package state the package may touch, as text: the relevant
/// packages' status, diversions, statoverrides, the daemon binaries, the saslauthd
/// settings files, boot links and enabled units, the package's own directories.
const PACKAGE_STATE_SCRIPT: &str = r#"
dpkg-query -W -f='${Package} ${Version} ${Status}\n' sasl2-bin saslauthd-rs libsasl2-2 libsasl2-modules postfix 2>&1
echo '--- diversions'; dpkg-divert --list | sort
echo '--- statoverrides'; dpkg-statoverride --list | sort
echo '--- binaries'; for f in /usr/sbin/saslauthd /usr/sbin/testsaslauthd /usr/sbin/saslauthd.cyrus /usr/sbin/testsaslauthd.cyrus; do
  if [ -e "$f" ]; then md5sum "$f"; else echo "no $f"; fi; done
echo '--- settings'; for f in /etc/default/saslauthd* /etc/init.d/saslauthd*; do [ -e "$f" ] && md5sum "$f"; done
echo '--- boot'; ls -l /etc/rc?.d/*saslauthd* /etc/systemd/system/*/saslauthd* 2>/dev/null | sed 's/.* \(\/etc\/\)/\1/'
echo '--- ours'; ls -d /var/lib/saslauthd-rs /usr/libexec/saslauthd-rs /usr/share/saslauthd-rs /usr/share/doc/saslauthd-rs 2>/dev/null
echo '--- group'; getent group sasl | cut -d: -f1,3
true
"#;

/// A snapshot of [`PACKAGE_STATE_SCRIPT`]'s view, on the host or in a namespace.
#[derive(Debug, PartialEq)]
struct PackageState(String);

impl PackageState {
    fn of_host() -> PackageState {
        let output = run_ok(Command::new("sh").args(["-c", PACKAGE_STATE_SCRIPT]), STEP);
        PackageState(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn of(ns: &Namespace) -> PackageState {
        PackageState(ns_sh_ok(ns, PACKAGE_STATE_SCRIPT))
    }

    /// Asserts that `self` (after) equals `before`, showing the lines that differ.
    fn assert_same_as(&self, before: &PackageState, what: &str) {
        if self == before {
            return;
        }
        let old: BTreeSet<&str> = before.0.lines().collect();
        let new: BTreeSet<&str> = self.0.lines().collect();
        panic!(
            "{what} differs:\n  gone: {:?}\n  new: {:?}",
            old.difference(&new).collect::<Vec<_>>(),
            new.difference(&old).collect::<Vec<_>>()
        );
    }
}

/// The host's package state, checked unchanged when the test ends (also when it fails).
struct HostUnchanged(PackageState);

impl HostUnchanged {
    fn take() -> HostUnchanged {
        let state = PackageState::of_host();
        assert!(
            state
                .0
                .contains("dpkg-query: no packages found matching saslauthd-rs"),
            "saslauthd-rs is installed on this host; these tests never touch the host's \
             packages, but refuse to run next to it:\n{}",
            state.0
        );
        HostUnchanged(state)
    }
}

impl Drop for HostUnchanged {
    fn drop(&mut self) {
        let after = PackageState::of_host();
        if !thread::panicking() {
            after.assert_same_as(&self.0, "the host's package state");
        }
    }
}

/// Runs a shell command inside the namespace; the output.
fn ns_sh(ns: &Namespace, script: &str) -> Output {
    run(
        ns.command("sh")
            .args(["-c", script])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        STEP * 6,
    )
}

fn ns_sh_ok(ns: &Namespace, script: &str) -> String {
    let output = assert_passed(ns_sh(ns, script), script, Prints::Anything);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `dpkg ARGS` in the namespace with stdin closed (a conffile prompt fails instead
/// of waiting) and asserts it succeeded without asking anything and left no
/// `.dpkg-new`/`.dpkg-dist`/`.dpkg-old` file in /etc; returns its output.
fn ns_dpkg(ns: &Namespace, args: &str) -> String {
    let list_leftovers = "find /etc -name '*.dpkg-*' | sort";
    let before = ns_sh_ok(ns, list_leftovers);
    let output = ns_sh(ns, &format!("exec dpkg {args} <&-"));
    let all = text(&output);
    assert!(output.status.success(), "dpkg {args}:\n{all}");
    assert!(
        !all.contains("conffile prompt") && !all.contains("Configuration file '"),
        "dpkg {args} asked about a configuration file:\n{all}"
    );
    assert_eq!(
        ns_sh_ok(ns, list_leftovers),
        before,
        "dpkg {args} left files for the administrator to merge:\n{all}"
    );
    all
}

/// A namespace for dpkg: /etc, /usr and /var overlays and a private /run, made to look
/// like a running sysvinit system in runlevel 2 (so invoke-rc.d acts on boot links, as
/// on a real machine) with no policy-rc.d (the host's, if any, is hidden).
fn deb_namespace() -> Namespace {
    let mut usr = Layer::default();
    usr.files.push((
        "sbin/runlevel".into(),
        Content::Text("#!/bin/sh\necho N 2\n".into()),
        0o755,
    ));
    usr.hidden.push("sbin/policy-rc.d".into());
    let ns = Namespace::new(
        vec![
            ("/usr", usr),
            ("/var", Layer::default()),
            ("/etc", Layer::default()),
        ],
        RunFs::Private,
    );
    // dpkg's database and debconf's as private copies rather than overlays: dpkg on the
    // host (another test run, an apt install) would change the overlays' lower layers
    // under us, which overlayfs answers with ESTALE.
    let copies = ns._dir.join("var-lib");
    fs::create_dir_all(&copies).expect("mkdir");
    with_dpkg_locked(|| {
        for dir in ["/var/lib/dpkg", "/var/cache/debconf"] {
            run_ok(Command::new("cp").args(["-a", dir]).arg(&copies), STEP);
        }
    });
    ns_sh_ok(
        &ns,
        &format!(
            "mount --bind '{0}/dpkg' /var/lib/dpkg && mount --bind '{0}/debconf' /var/cache/debconf",
            copies.display()
        ),
    );
    ns_sh_ok(&ns, "! dpkg-query -W saslauthd-rs 2>/dev/null");
    ns
}

/// Runs `f` while holding dpkg's frontend lock (the fcntl lock apt and dpkg take), so
/// that no dpkg on the host changes its database meanwhile; waits for it up to 10 minutes.
fn with_dpkg_locked<T>(f: impl FnOnce() -> T) -> T {
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/var/lib/dpkg/lock-frontend")
        .expect("/var/lib/dpkg/lock-frontend");
    let request = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while nix::fcntl::fcntl(&lock, nix::fcntl::FcntlArg::F_SETLK(&request)).is_err() {
        assert!(
            Instant::now() < deadline,
            "dpkg's lock on the host stayed taken for 10 minutes"
        );
        thread::sleep(Duration::from_millis(200));
    }
    // Closing the file drops the lock.
    let result = f();
    drop(lock);
    result
}

/// What every `.deb` test starts from: the package built, the host's package state
/// recorded (checked on drop, after the namespace is gone), and a [`deb_namespace`] with
/// sasl2-bin installed or not.
struct DebLab {
    ns: Namespace,
    deb: PathBuf,
    _host: HostUnchanged,
}

impl DebLab {
    fn new(with_sasl2_bin: bool) -> DebLab {
        require_root();
        require_tool("dpkg", "dpkg");
        let deb = built_deb();
        let host = HostUnchanged::take();
        let ns = deb_namespace();
        if with_sasl2_bin {
            ensure_sasl2_bin(&ns);
        } else {
            ns_sh_ok(
                &ns,
                "if dpkg-query -W sasl2-bin >/dev/null 2>&1; then dpkg --purge sasl2-bin; fi",
            );
        }
        DebLab {
            ns,
            deb,
            _host: host,
        }
    }

    /// `-i <our package>`.
    fn install_ours(&self) -> String {
        format!("-i '{}'", self.deb.display())
    }
}

/// Installs Debian's sasl2-bin in the namespace unless it is there (configured).
fn ensure_sasl2_bin(ns: &Namespace) {
    let status = ns_sh_ok(
        ns,
        "dpkg-query -W -f='${Status}' sasl2-bin 2>/dev/null; true",
    );
    if status != "install ok installed" {
        ns_dpkg(ns, &format!("-i '{}'", sasl2_bin_deb().display()));
    }
}

/// A daemon in a namespace: its pid and the first line of `<its binary> -v`.
#[derive(Debug, Clone, PartialEq)]
struct Server {
    pid: i32,
    version: String,
}

impl Server {
    fn is_ours(&self) -> bool {
        self.version.contains("(saslauthd-rs)")
    }

    fn is_cyrus(&self) -> bool {
        self.version.starts_with("saslauthd 2.") && !self.is_ours()
    }
}

/// The first line of `<the binary of process pid> -v`: /proc/PID/exe is the running
/// binary itself, whatever its name is now.
fn version_of(pid: i32) -> String {
    let output = run(Command::new(format!("/proc/{pid}/exe")).arg("-v"), STEP);
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Who serves the run directory `run_dir` of the namespace, by its pid file.
fn server(ns: &Namespace, run_dir: &str) -> Option<Server> {
    let pid: i32 = ns_sh_ok(
        ns,
        &format!("cat {run_dir}/saslauthd.pid 2>/dev/null; true"),
    )
    .trim()
    .parse()
    .ok()?;
    pid_alive(pid).then(|| Server {
        pid,
        version: version_of(pid),
    })
}

/// The saslauthd processes in the namespace, with the path of their binary.
fn saslauthd_processes(ns: &Namespace) -> Vec<(i32, String)> {
    ns.processes()
        .into_iter()
        .filter(|(_, comm)| comm.starts_with("saslauthd"))
        .map(|(pid, _)| {
            let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            (pid, exe.display().to_string())
        })
        .collect()
}

/// The packaged files, installed in the namespace, are what they should be: the daemon
/// and client run, the man pages render, the units verify, Cyrus's copies stay runnable.
fn check_installed_files(ns: &Namespace, with_sasl2_bin: bool) {
    let version = ns_sh(ns, "/usr/sbin/saslauthd -v");
    assert!(
        String::from_utf8_lossy(&version.stderr).contains("(saslauthd-rs)"),
        "{}",
        text(&version)
    );
    let help = ns_sh_ok(ns, "/usr/sbin/testsaslauthd --help");
    assert!(help.contains("saslauthd-rs"), "{help}");
    for page in ["saslauthd", "testsaslauthd"] {
        let rendered = ns_sh_ok(
            ns,
            &format!("MANPAGER=cat PAGER=cat MANWIDTH=80 man -l /usr/share/man/man8/{page}.8.gz"),
        );
        assert!(
            rendered.contains("saslauthd-rs") && rendered.contains("NAME"),
            "{rendered}"
        );
    }
    let verify = ns_sh(
        ns,
        "systemd-analyze verify /usr/lib/systemd/system/saslauthd.service \
         /usr/lib/systemd/system/saslauthd.socket /usr/lib/systemd/system/saslauthd-dovecot.socket \
         /usr/lib/systemd/system/saslauthd@second.service",
    );
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify of the installed units:\n{}",
        text(&verify)
    );
    ns_sh_ok(ns, "dpkg --verify saslauthd-rs");
    if with_sasl2_bin {
        let diversions = ns_sh_ok(ns, "dpkg-divert --list");
        assert!(
            diversions.contains(
                "diversion of /usr/sbin/saslauthd to /usr/sbin/saslauthd.cyrus by saslauthd-rs"
            ),
            "{diversions}"
        );
        let cyrus = ns_sh(ns, "/usr/sbin/saslauthd.cyrus -v");
        let cyrus = String::from_utf8_lossy(&cyrus.stderr);
        assert!(
            cyrus.starts_with("saslauthd 2") && !cyrus.contains("saslauthd-rs"),
            "Cyrus's daemon should stay available as saslauthd.cyrus: {cyrus}"
        );
    }
}

#[test]
fn slow_deb_package_is_lintian_clean() {
    require_root();
    require_tool("lintian", "lintian");
    let deb = built_deb();
    let contents = run_ok(Command::new("dpkg-deb").arg("--contents").arg(&deb), STEP);
    let contents = String::from_utf8_lossy(&contents.stdout);
    for path in [
        "./usr/sbin/saslauthd",
        "./usr/sbin/testsaslauthd",
        "./usr/share/man/man8/saslauthd.8.gz",
        "./usr/share/man/man8/testsaslauthd.8.gz",
        "./usr/lib/systemd/system/saslauthd.service",
        "./usr/lib/systemd/system/saslauthd@.service",
        "./usr/lib/systemd/system/saslauthd.service.d/sandbox.conf",
        "./usr/lib/systemd/system/saslauthd@.service.d/sandbox.conf",
        "./usr/lib/systemd/system/saslauthd.socket",
        "./usr/lib/systemd/system/saslauthd-dovecot.socket",
        "./usr/libexec/saslauthd-rs/saslauthd-start",
        "./usr/libexec/saslauthd-rs/saslauthd-instances",
        "./usr/lib/tmpfiles.d/saslauthd.conf",
        "./usr/lib/sysusers.d/saslauthd.conf",
        "./usr/share/saslauthd-rs/default/saslauthd",
        "./usr/share/doc/saslauthd-rs/changelog.Debian.gz",
        "./usr/share/doc/saslauthd-rs/copyright",
    ] {
        assert!(
            contents.contains(path),
            "the package lacks {path}:\n{contents}"
        );
    }
    let control = run_ok(Command::new("dpkg-deb").arg("--info").arg(&deb), STEP);
    let control = String::from_utf8_lossy(&control.stdout);
    assert!(control.contains(" md5sums"), "no md5sums:\n{control}");

    // Every tag lintian reports, at any level, must be justified in pkg/deb/README.md's
    // table, which may hold no error.
    let readme = repo_text("pkg/deb/README.md");
    let justified: BTreeSet<(String, String)> = readme
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            match cells.as_slice() {
                ["", level, tag, ..] if level.len() == 1 && tag.starts_with('`') => {
                    Some((level.to_string(), tag.trim_matches('`').to_string()))
                }
                _ => None,
            }
        })
        .collect();
    assert!(
        !justified.is_empty() && justified.iter().all(|(level, _)| level != "E"),
        "pkg/deb/README.md: no table of justified lintian tags, or an error in it: {justified:?}"
    );
    let output = run(
        Command::new("lintian")
            .args(["--pedantic", "--display-info", "--no-tag-display-limit"])
            .arg(&deb),
        Duration::from_secs(300),
    );
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let unjustified: Vec<&str> = report
        .lines()
        .filter(|l| {
            // "W: saslauthd-rs: tag-name [context]"
            let mut parts = l.splitn(3, ": ");
            match (parts.next(), parts.next(), parts.next()) {
                (Some(level), Some(_), Some(rest)) if level.len() == 1 => {
                    let tag = rest.split_whitespace().next().unwrap_or_default();
                    !justified.contains(&(level.to_string(), tag.to_string()))
                }
                _ => false,
            }
        })
        .collect();
    assert!(
        unjustified.is_empty(),
        "lintian tags not justified in pkg/deb/README.md:\n{}\n--- full report ---\n{}{}",
        unjustified.join("\n"),
        report,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// [`configure_instances`], then sasl2-bin's init script started (it starts both with
/// `START=yes`, neither with `START=no`); the namespace's package state at that point.
fn start_cyrus_instances(ns: &Namespace, start: &str) -> PackageState {
    configure_instances(ns, start);
    ns_sh_ok(ns, "invoke-rc.d saslauthd start");
    PackageState::of(ns)
}

/// The Cyrus and saslauthd-rs settings of the lifecycle test: the default instance and
/// a second one (/etc/default/saslauthd-second), both with `START` as given.
fn configure_instances(ns: &Namespace, start: &str) {
    ns_sh_ok(
        ns,
        &format!(
            "set -e
             f=/etc/default/saslauthd
             sed -i -e 's/^MECHANISMS=.*/MECHANISMS=\"shadow\"/' -e 's/^THREADS=.*/THREADS=2/' \
                 -e '/^START=/d' $f
             echo 'START={start}' >>$f
             sed -e 's#/var/run/saslauthd#/var/run/saslauthd-second#' \
                 -e 's/^NAME=.*/NAME=\"saslauthd-second\"/' $f >$f-second
             update-rc.d saslauthd enable"
        ),
    );
}

const FIXTURE_USER: &str = "saslrs-pkg";
const FIXTURE_PASSWORD: &str = "Pkg-Lifecycle-pw1";
const RUN_DIRS: [&str; 2] = ["/var/run/saslauthd", "/var/run/saslauthd-second"];

/// Who serves each instance (default, second), `None` where nobody does.
fn servers(ns: &Namespace) -> [Option<Server>; 2] {
    RUN_DIRS.map(|dir| server(ns, dir))
}

/// Both instances are served by ours (`ours`), or both by Cyrus's, and no other
/// saslauthd process is left in the namespace; returns the servers.
fn assert_served_by(ns: &Namespace, ours: bool, step: &str) -> Vec<Server> {
    let found = servers(ns);
    let processes = saslauthd_processes(ns);
    let wanted = if ours { "saslauthd-rs" } else { "Cyrus" };
    let served: Vec<Server> = found
        .iter()
        .map(|s| match s {
            Some(s) if (ours && s.is_ours()) || (!ours && s.is_cyrus()) => s.clone(),
            _ => panic!(
                "{step}: an instance is not served by {wanted}: {found:?}; saslauthd \
                 processes: {processes:?}"
            ),
        })
        .collect();
    // Ours is one process per instance; Cyrus a master and its workers (THREADS=2).
    for (pid, exe) in &processes {
        let fine = if ours {
            served.iter().any(|s| s.pid == *pid)
        } else {
            Server {
                pid: *pid,
                version: version_of(*pid),
            }
            .is_cyrus()
        };
        assert!(
            fine && exe == "/usr/sbin/saslauthd",
            "{step}: process {pid} ({exe}) should not be running; {wanted} serves {served:?}"
        );
    }
    served
}

/// One AUTH PLAIN through each listener; `want` from both.
fn assert_smtp(ports: [u16; 2], want: SmtpAuth, step: &str) {
    for port in ports {
        if let Some(failure) = smtp_case(
            port,
            "PLAIN",
            FIXTURE_USER,
            FIXTURE_PASSWORD,
            want,
            Advert::NotChecked,
        ) {
            panic!("{step}:\n{failure}");
        }
    }
}

/// The whole life of the package on a machine where Cyrus's saslauthd serves Postfix (a
/// private instance in the namespace, its smtpd in group sasl as README.Debian says):
/// install over the running daemons (two instances), upgrade, remove, purge, with swaks
/// through both sockets after every step and throughout the upgrade.
#[test]
fn slow_deb_lifecycle_over_running_cyrus_never_leaves_smtp_without_auth() {
    require_tool("swaks", "swaks");
    let lab = DebLab::new(true);
    let ns = &lab.ns;
    ns_sh_ok(
        ns,
        &format!(
            "set -e
             useradd -M -d /nonexistent -s /usr/sbin/nologin {FIXTURE_USER}
             echo '{FIXTURE_USER}:{FIXTURE_PASSWORD}' | chpasswd
             adduser --quiet postfix sasl"
        ),
    );
    let before = start_cyrus_instances(ns, "yes");
    let postfix = Postfix::start_wrapped(
        &[
            SmtpListener {
                name: "default".into(),
                saslauthd_socket: PathBuf::from(RUN_DIRS[0]).join("mux"),
            },
            SmtpListener {
                name: "second".into(),
                saslauthd_socket: PathBuf::from(RUN_DIRS[1]).join("mux"),
            },
        ],
        &ns.enter(),
    );
    let ports = [postfix.port("default"), postfix.port("second")];
    assert_served_by(ns, false, "Cyrus before the install");
    assert_smtp(ports, SmtpAuth::Accepted, "Cyrus before the install");

    // Install over the running Cyrus daemons: ours takes both over.
    ns_dpkg(ns, &lab.install_ours());
    let installed = assert_served_by(ns, true, "after the install");
    assert_smtp(ports, SmtpAuth::Accepted, "after the install");
    check_installed_files(ns, true);

    // Upgrade (the same package again) while swaks keeps asking through both sockets.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asker = {
        let stop = std::sync::Arc::clone(&stop);
        thread::spawn(move || {
            let mut failures = Vec::new();
            let mut tries = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || tries < 4 {
                let port = ports[tries % 2];
                tries += 1;
                failures.extend(smtp_case(
                    port,
                    "PLAIN",
                    FIXTURE_USER,
                    FIXTURE_PASSWORD,
                    SmtpAuth::Accepted,
                    Advert::NotChecked,
                ));
            }
            (tries, failures)
        })
    };
    ns_dpkg(ns, &lab.install_ours());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (tries, failures) = asker.join().expect("swaks thread");
    assert!(
        failures.is_empty(),
        "{} of {tries} AUTH attempts failed during the upgrade:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("upgrade: {tries} AUTH attempts through both sockets meanwhile, all 235");
    let upgraded = assert_served_by(ns, true, "after the upgrade");
    for (old, new) in installed.iter().zip(&upgraded) {
        assert_ne!(old.pid, new.pid, "the upgrade did not restart the daemon");
    }
    assert_smtp(ports, SmtpAuth::Accepted, "after the upgrade");

    // Remove: Cyrus's daemons serve again.
    ns_dpkg(ns, "-r saslauthd-rs");
    assert_served_by(ns, false, "after remove");
    assert_smtp(ports, SmtpAuth::Accepted, "after remove");

    // Purge: the namespace is as before the install.
    ns_dpkg(ns, "--purge saslauthd-rs");
    PackageState::of(ns).assert_same_as(&before, "the namespace after purge");
    assert_served_by(ns, false, "after purge");
    assert_smtp(ports, SmtpAuth::Accepted, "after purge");
}

/// The maintainer scripts' systemd branches. systemd is not PID 1 here, so with
/// /run/systemd/system present, stand-ins for systemctl and deb-systemd-invoke record what
/// the scripts ask of it: over Cyrus daemons started outside any unit, install takes them
/// over outside the units too and enables the units Cyrus's boot links stood for; remove
/// stops the units (the socket first) and everything still running, then asks for
/// sasl2-bin's unit; purge drops the enablement.
#[test]
fn slow_deb_scripts_drive_the_units_under_systemd() {
    let lab = DebLab::new(true);
    let ns = &lab.ns;
    let before = start_cyrus_instances(ns, "yes");
    ns_sh_ok(
        ns,
        r#"set -e
           mkdir -p /run/systemd/system
           for tool in systemctl deb-systemd-invoke; do
             printf '#!/bin/sh\necho "%s $*" >>/run/systemd-calls\n' "$tool" >/usr/bin/$tool
             chmod 755 /usr/bin/$tool
           done"#,
    );
    let calls = || {
        ns_sh_ok(
            ns,
            "cat /run/systemd-calls 2>/dev/null; : >/run/systemd-calls",
        )
    };
    ns_dpkg(ns, &lab.install_ours());
    assert_served_by(ns, true, "after the install under systemd");
    let installed = calls();
    assert!(
        installed.contains("systemctl daemon-reload\n"),
        "{installed}"
    );
    assert_eq!(
        ns_sh_ok(
            ns,
            "ls /etc/systemd/system/multi-user.target.wants/ | grep saslauthd"
        ),
        "saslauthd@second.service\n",
        "saslauthd@second is enabled by a link ({installed})"
    );
    ns_dpkg(ns, "-r saslauthd-rs");
    let removed = calls();
    for call in [
        "deb-systemd-invoke stop saslauthd.socket saslauthd.service saslauthd@*.service\n",
        "deb-systemd-invoke start saslauthd.service\n",
    ] {
        assert!(removed.contains(call), "no {call:?} in {removed}");
    }
    assert_eq!(
        saslauthd_processes(ns),
        [],
        "the removed binary still runs ({removed})"
    );
    ns_dpkg(ns, "--purge saslauthd-rs");
    ns_sh_ok(ns, "rm -rf /run/systemd/system /run/systemd-calls");
    PackageState::of(ns).assert_same_as(&before, "the namespace after purge");
}

/// The same life with START=no in both instances' files: nothing ever starts, and no
/// unit is enabled for boot.
#[test]
fn slow_deb_lifecycle_with_start_no_starts_nothing() {
    let lab = DebLab::new(true);
    let ns = &lab.ns;
    let before = start_cyrus_instances(ns, "no");
    let nothing_runs = |step: &str| {
        assert_eq!(servers(ns), [None, None], "{step}");
        assert_eq!(saslauthd_processes(ns), [], "{step}");
        assert_eq!(
            ns_sh_ok(
                ns,
                "ls /etc/systemd/system/*.wants/saslauthd* 2>/dev/null; true"
            ),
            "",
            "{step}: a unit was enabled"
        );
    };
    nothing_runs("before the install");
    for (step, args) in [
        ("install", lab.install_ours()),
        ("upgrade", lab.install_ours()),
        ("remove", "-r saslauthd-rs".to_string()),
        ("purge", "--purge saslauthd-rs".to_string()),
    ] {
        ns_dpkg(ns, &args);
        nothing_runs(step);
    }
    PackageState::of(ns).assert_same_as(&before, "the namespace after purge");
}

/// sasl2-bin installed after ours, reinstalled, and before ours, each with stdin closed:
/// no conffile prompt, no `.dpkg-new`, exit 0, and the diversions in place.
#[test]
fn slow_deb_sasl2_bin_in_any_order_without_prompts() {
    let cyrus_deb = sasl2_bin_deb();
    let lab = DebLab::new(false);
    let ns = &lab.ns;
    let diverted = |step: &str| {
        let ours = ns_sh(ns, "/usr/sbin/saslauthd -v");
        let cyrus = ns_sh(ns, "/usr/sbin/saslauthd.cyrus -v");
        assert!(
            String::from_utf8_lossy(&ours.stderr).contains("(saslauthd-rs)")
                && String::from_utf8_lossy(&cyrus.stderr).starts_with("saslauthd 2"),
            "{step}:\n{}\n{}",
            text(&ours),
            text(&cyrus)
        );
        assert_eq!(
            ns_sh_ok(ns, "dpkg-query -W -f='${Status}' sasl2-bin saslauthd-rs"),
            "install ok installedinstall ok installed",
            "{step}"
        );
    };
    ns_dpkg(ns, &lab.install_ours());
    ns_dpkg(ns, &format!("-i '{}'", cyrus_deb.display()));
    diverted("sasl2-bin after ours");
    ns_dpkg(ns, &format!("-i '{}'", cyrus_deb.display()));
    diverted("sasl2-bin reinstalled");
    check_installed_files(ns, true);
    ns_dpkg(ns, "--purge saslauthd-rs");
    ns_dpkg(ns, &lab.install_ours());
    diverted("sasl2-bin before ours");
}

/// A machine without sasl2-bin (purged in the namespace only): the package creates
/// /run/saslauthd, reads its shipped defaults (no /etc/default/saslauthd: that name is
/// sasl2-bin's conffile), the unit's start helper runs the daemon on the default socket,
/// and purge removes everything.
#[test]
fn slow_deb_package_without_sasl2_bin() {
    let lab = DebLab::new(false);
    let ns = &lab.ns;
    let before = PackageState::of(ns);
    assert_eq!(
        ns_sh_ok(
            ns,
            "ls -d /etc/default/saslauthd /run/saslauthd 2>/dev/null || true"
        ),
        ""
    );
    ns_dpkg(ns, &lab.install_ours());
    check_installed_files(ns, false);
    assert_eq!(
        ns_sh_ok(ns, "ls -d /etc/default/saslauthd 2>/dev/null || true"),
        ""
    );
    assert_eq!(
        ns_sh_ok(ns, "stat -c '%U:%G %a' /run/saslauthd"),
        "root:sasl 710\n"
    );
    assert_eq!(
        ns_sh_ok(ns, "/usr/libexec/saslauthd-rs/saslauthd-instances list"),
        "/usr/share/saslauthd-rs/default/saslauthd\n"
    );
    let helper = ns_sh_ok(
        ns,
        &format!(
            "{HELPER_PATH} --print /etc/default/saslauthd /etc/sysconfig/saslauthd \
             /usr/share/saslauthd-rs/default/saslauthd"
        ),
    );
    assert_eq!(
        helper.lines().collect::<Vec<_>>(),
        [
            "/usr/sbin/saslauthd",
            "-a",
            "shadow",
            "-m",
            "/run/saslauthd",
            "-n",
            "0"
        ]
    );
    // The unit's ExecStart= as installed, with the shipped defaults.
    let dir = TempDir::new("deb-ns");
    let mut unit = UnitService::start(ns, &dir);
    let reply = ns_sh(
        ns,
        &format!("testsaslauthd -u {NOBODY} -p not-the-password --show-reply"),
    );
    assert_eq!(
        String::from_utf8_lossy(&reply.stdout),
        "0: NO \"authentication failed\"\n0: reply \"NO Invalid username\"\n",
        "{}",
        text(&reply)
    );
    assert_terminates_cleanly(&mut unit.daemon, &unit.log);
    ns_dpkg(ns, "--purge saslauthd-rs");
    PackageState::of(ns).assert_same_as(&before, "the namespace after purge");
    assert_eq!(
        ns_sh_ok(
            ns,
            "ls -d /run/saslauthd /var/lib/saslauthd-rs 2>/dev/null; true"
        ),
        ""
    );
}

// ---------------------------------------------------------------------------------------
// the unit's sandbox against what the daemon really does

/// System calls in a `SystemCallFilter=` set, groups expanded.
fn syscall_set(name: &str, out: &mut BTreeSet<String>) {
    let output = run_ok(
        Command::new("systemd-analyze").args(["syscall-filter", name]),
        STEP,
    );
    for line in String::from_utf8_lossy(&output.stdout).lines().skip(1) {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        if item.starts_with('@') {
            syscall_set(item, out);
        } else {
            out.insert(item.to_string());
        }
    }
}

/// Runs `saslauthd -a <mech>` under strace, sends a few requests, and returns the system
/// calls it made and the socket address families it asked for.
fn traced_daemon(mech: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let dir = TempDir::new("strace");
    let run_dir = dir.join("run");
    let trace = dir.join("trace");
    let log = dir.join("daemon.log");
    let mut strace = Command::new("strace");
    strace.args(["-f", "-qq", "-o"]).arg(&trace).arg(DAEMON);
    let mut tracer = spawn_logged(foreground_daemon(&mut strace, mech, &run_dir), &log);
    let socket = run_dir.join("mux");
    wait_until(STEP, "the traced daemon's socket", || socket.exists());
    for (login, service) in [(NOBODY, "imap"), ("root", "smtp")] {
        let output = run(
            Command::new(CLIENT)
                .args(["-u", login, "-p", "not-the-password", "-s", service, "-f"])
                .arg(&socket),
            STEP,
        );
        assert_eq!(output.status.code(), Some(255), "{}", text(&output));
    }
    let pid = read_pid_file(&run_dir.join("saslauthd.pid")).expect("pid file");
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let status = tracer.wait_exit(STEP).expect("status");
    assert!(
        status.success(),
        "{status:?}\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let trace = fs::read_to_string(&trace).expect("trace");
    let mut calls = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in trace.lines() {
        let call = line.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
        if let Some((name, args)) = call.split_once('(')
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            calls.insert(name.to_string());
            if name == "socket"
                && let Some(family) = args.split(',').next()
            {
                families.insert(family.to_string());
            }
        }
    }
    assert!(
        calls.contains("accept4") || calls.contains("accept"),
        "{calls:?}"
    );
    (calls, families)
}

/// systemd cannot run here (it is not PID 1), so the sandbox is checked piecewise: every
/// system call the daemon makes, for shadow, for PAM (whose modules open netlink audit
/// sockets), getpwent and sasldb (Berkeley DB), is in the unit's SystemCallFilter=, and every socket family it opens is in
/// RestrictAddressFamilies=.
#[test]
fn unit_sandbox_allows_what_the_daemon_uses() {
    require_root();
    require_tool("strace", "strace");
    require_tool("systemd-analyze", "systemd");
    let unit = repo_text("init/sandbox.conf");
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key))
            .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    let mut allowed = BTreeSet::new();
    for set in value("SystemCallFilter=") {
        assert!(!set.starts_with('~'), "deny lists are not modelled here");
        if set.starts_with('@') {
            syscall_set(&set, &mut allowed);
        } else {
            allowed.insert(set);
        }
    }
    assert!(allowed.len() > 100, "{allowed:?}");
    let families: BTreeSet<String> = value("RestrictAddressFamilies=").into_iter().collect();
    let version = run_ok(Command::new(DAEMON).arg("-v"), STEP);
    let version = String::from_utf8_lossy(&version.stderr).into_owned();
    for mech in ["shadow", "pam", "getpwent", "sasldb"] {
        if mech == "pam" && !version.contains(" pam") {
            continue;
        }
        let (calls, used_families) = traced_daemon(mech);
        let denied: Vec<_> = calls.difference(&allowed).collect();
        assert!(
            denied.is_empty(),
            "-a {mech}: system calls outside the filter: {denied:?}"
        );
        let denied: Vec<_> = used_families.difference(&families).collect();
        assert!(
            denied.is_empty(),
            "-a {mech}: socket families outside the list: {denied:?}"
        );
    }
}
