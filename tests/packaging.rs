//! Packaging checks (issue 6): the man pages, the systemd units, the init scripts, socket
//! activation and readiness for real, every distribution's way of starting the daemon, and
//! the Debian package.
//!
//! Run as root. Tools: mandoc, groff, man-db, shellcheck, systemd (systemd-analyze,
//! systemd-socket-activate), openrc (openrc-run), util-linux (unshare, nsenter), dpkg, and
//! cargo-deb (`cargo install cargo-deb`).
//!
//! The host is left alone: the service-manager paths run in private mount namespaces
//! whose /etc, /usr/sbin, /usr/libexec (and /run, /usr/share/man/man8) are overlays that
//! add our files and the sample configuration files, so the scripts and the unit's
//! ExecStart= run exactly as installed. Daemons use run directories in temporary
//! directories, and requests ask for a user that does not exist (`NO Invalid username` is
//! the shadow mechanism's answer, which shows both that the daemon serves and which
//! mechanism it runs). Only the Debian package test (`slow_deb_*`, select it with
//! `cargo test --test packaging slow_deb`) changes the host: it installs and purges the
//! package and checks that everything it saw before, sasl2-bin's files included, is back.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{OnceLock, RwLock, mpsc};
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

/// Namespaced tests read /usr/sbin and /etc through overlays; the package test changes
/// them. Overlay lower layers must not change under a mount, so the two kinds never
/// overlap.
static HOST: RwLock<()> = RwLock::new(());

fn host_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    HOST.read().unwrap_or_else(|e| e.into_inner())
}

fn host_exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    HOST.write().unwrap_or_else(|e| e.into_inner())
}

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

    fn path(&self) -> &Path {
        &self.0
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

/// A process parked in a private mount namespace; commands run in it with nsenter.
struct Namespace {
    holder: Proc,
    _dir: TempDir,
}

impl Namespace {
    /// `layers`: (directory to overlay, what to add to it). `private_run`: a fresh tmpfs
    /// on /run, prepared for openrc-run (and hiding systemd, so the LSB functions never
    /// hand over to systemctl).
    fn new(layers: Vec<(&str, Layer)>, private_run: bool) -> Namespace {
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
        if private_run {
            script.push_str(
                "mount -t tmpfs -o mode=0755 tmpfs /run\n\
                 mkdir -p /run/openrc /run/lock\n\
                 cd /run/openrc\n\
                 mkdir daemons exclusive failed hotplugged inactive options scheduled \
                 started starting stopping tmp wasinactive\n\
                 touch softlevel\n\
                 cd /\n",
            );
        }
        let ready = dir.join("ready");
        script.push_str(&format!("touch '{}'\nexec sleep 600\n", ready.display()));
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
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.holder.pid.to_string(), "-m", "--", program])
            .env("_SYSTEMCTL_SKIP_REDIRECT", "1");
        cmd
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

/// /usr/libexec with the start helper.
fn libexec_layer() -> (&'static str, Layer) {
    let mut layer = Layer::default();
    layer.files.push((
        "saslauthd-rs/saslauthd-start".into(),
        Content::Copy(repo().join("init/saslauthd-start")),
        0o755,
    ));
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
    let output = assert_passed(
        run(Command::new(program).arg("--help"), STEP),
        &format!("{program} --help"),
        Prints::Anything,
    );
    let help = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
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
}

// ---------------------------------------------------------------------------------------
// units and scripts

const SHELL_SCRIPTS: [&str; 7] = [
    "init/saslauthd-start",
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

#[test]
fn systemd_units_verify_clean() {
    require_root();
    require_tool("systemd-analyze", "systemd");
    let _host = host_shared();
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
        false,
    );
    let dir = TempDir::new("units");
    for unit in [
        "saslauthd.service",
        "saslauthd.socket",
        "saslauthd-dovecot.socket",
    ] {
        copy_file(&repo().join("init").join(unit), &dir.join(unit), 0o644);
    }
    let service = dir.join("saslauthd.service");
    let socket = dir.join("saslauthd.socket");
    assert_passed(
        run(
            ns.command("systemd-analyze")
                .arg("verify")
                .arg(&service)
                .arg(&socket)
                .arg(dir.join("saslauthd-dovecot.socket")),
            STEP,
        ),
        "systemd-analyze verify",
        Prints::Nothing,
    );
    // The sandbox stays tight: exposure 3.5 or better on systemd's 0-10 scale.
    assert_passed(
        run(
            ns.command("systemd-analyze")
                .args(["security", "--offline=yes", "--threshold=35", "--no-pager"])
                .arg(&service),
            STEP,
        ),
        "systemd-analyze security",
        Prints::Anything,
    );
    // The facts the rest of the packaging relies on.
    assert_has_lines(
        "init/saslauthd.service",
        &[
            "Type=notify",
            "RuntimeDirectory=saslauthd",
            "RuntimeDirectoryMode=0710",
            "Group=sasl",
            "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
            "NoNewPrivileges=yes",
        ],
    );
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

/// The unit's ExecStart= command line, split into words.
fn unit_exec_start() -> Vec<String> {
    let unit = repo_text("init/saslauthd.service");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart= in saslauthd.service");
    let words: Vec<String> = line
        .trim_start_matches(['-', '@', ':', '+', '!'])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(words[0], HELPER_PATH, "ExecStart= runs the helper");
    words
}

/// The unit's ExecStart= run inside a namespace the way systemd would (foreground,
/// NOTIFY_SOCKET), once it has sent READY=1.
struct UnitService {
    daemon: Proc,
    /// The READY=1 message.
    ready: String,
    log: PathBuf,
    _notify: NotifySocket,
}

impl UnitService {
    /// Starts it in `ns`, with the notify socket and the log in `dir`.
    fn start(ns: &Namespace, dir: &TempDir) -> UnitService {
        let exec_start = unit_exec_start();
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
    let _host = host_shared();
    let ns = Namespace::new(
        vec![etc_layer(etc_files, hidden), sbin_layer(), libexec_layer()],
        false,
    );
    let mut unit = UnitService::start(&ns, dir);
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
        true,
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
    let _host = host_shared();
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
    let _host = host_shared();
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

#[test]
fn openrc_script_honours_conf_d() {
    require_root();
    require_tool("openrc-run", "openrc");
    let _host = host_shared();
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

/// (mode, uid, gid) of a directory.
type DirStat = (u32, u32, u32);

/// Everything of the host the package may touch, to compare before and after.
#[derive(Debug, PartialEq)]
struct HostState {
    sasl2_bin: String,
    ours: String,
    /// (path, (length, hash of the content)).
    files: Vec<(String, Option<(usize, u64)>)>,
    dirs: Vec<(String, Option<DirStat>)>,
    diversions: Vec<String>,
    statoverrides: String,
    group_sasl: Option<u32>,
}

const WATCHED_FILES: [&str; 8] = [
    "/usr/sbin/saslauthd",
    "/usr/sbin/testsaslauthd",
    "/usr/share/man/man8/saslauthd.8.gz",
    "/usr/share/man/man8/testsaslauthd.8.gz",
    "/usr/lib/systemd/system/saslauthd.service",
    "/usr/lib/systemd/system/saslauthd.socket",
    "/etc/default/saslauthd",
    "/etc/init.d/saslauthd",
];
const WATCHED_DIRS: [&str; 5] = [
    "/run/saslauthd",
    "/usr/libexec/saslauthd-rs",
    "/usr/share/saslauthd-rs",
    "/var/lib/saslauthd-rs",
    "/usr/share/doc/saslauthd-rs",
];

fn digest(content: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut hasher);
    hasher.finish()
}

fn package_status(name: &str) -> String {
    let output = run(
        Command::new("dpkg-query").args(["-W", "-f=${Status}", name]),
        STEP,
    );
    if output.status.success() {
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        "absent".into()
    }
}

impl HostState {
    fn take() -> HostState {
        let mut diversions: Vec<String> = String::from_utf8_lossy(
            &run_ok(Command::new("dpkg-divert").arg("--list"), STEP).stdout,
        )
        .lines()
        .map(str::to_string)
        .collect();
        diversions.sort();
        let statoverrides = String::from_utf8_lossy(
            &run(Command::new("dpkg-statoverride").arg("--list"), STEP).stdout,
        )
        .into_owned();
        HostState {
            sasl2_bin: package_status("sasl2-bin"),
            ours: package_status("saslauthd-rs"),
            files: WATCHED_FILES
                .iter()
                .map(|f| {
                    (
                        f.to_string(),
                        fs::read(f).ok().map(|c| (c.len(), digest(&c))),
                    )
                })
                .collect(),
            dirs: WATCHED_DIRS
                .iter()
                .map(|d| {
                    let meta = fs::metadata(d).ok();
                    (d.to_string(), meta.map(|m| (m.mode(), m.uid(), m.gid())))
                })
                .collect(),
            diversions,
            statoverrides,
            group_sasl: sasl_gid(),
        }
    }
}

/// Purges the package if a check fails half-way.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        if package_status("saslauthd-rs") != "absent" {
            let _ = run(
                Command::new("dpkg").args(["--purge", "saslauthd-rs"]),
                STEP * 6,
            );
        }
    }
}

/// Builds the package once per test run (`cargo deb`), into the target directory.
fn built_deb() -> PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        assert_passed(
            run(Command::new(&cargo).args(["deb", "--version"]), STEP),
            "cargo-deb is missing: cargo install cargo-deb",
            Prints::Anything,
        );
        // target/debug/saslauthd -> target/packaging-test/
        let dir = Path::new(DAEMON)
            .ancestors()
            .nth(2)
            .expect("target directory")
            .join("packaging-test");
        fs::create_dir_all(&dir).expect("mkdir");
        let deb = dir.join("saslauthd-rs.deb");
        run_ok(
            Command::new(&cargo)
                .current_dir(repo())
                .args(["deb", "--fast", "--output"])
                .arg(&deb),
            Duration::from_secs(1800),
        );
        deb
    })
    .clone()
}

#[test]
fn slow_deb_package_installs_runs_and_purges_cleanly() {
    require_root();
    require_tool("dpkg", "dpkg");
    require_tool("man", "man-db");
    require_tool("systemd-analyze", "systemd");
    let deb = built_deb();
    let contents = run_ok(Command::new("dpkg-deb").arg("--contents").arg(&deb), STEP);
    let contents = String::from_utf8_lossy(&contents.stdout);
    for path in [
        "./usr/sbin/saslauthd",
        "./usr/sbin/testsaslauthd",
        "./usr/share/man/man8/saslauthd.8.gz",
        "./usr/share/man/man8/testsaslauthd.8.gz",
        "./usr/lib/systemd/system/saslauthd.service",
        "./usr/lib/systemd/system/saslauthd.socket",
        "./usr/lib/systemd/system/saslauthd-dovecot.socket",
        "./usr/libexec/saslauthd-rs/saslauthd-start",
        "./usr/lib/tmpfiles.d/saslauthd.conf",
        "./usr/lib/sysusers.d/saslauthd.conf",
        "./usr/share/saslauthd-rs/default/saslauthd",
    ] {
        assert!(
            contents.contains(path),
            "the package lacks {path}:\n{contents}"
        );
    }

    let _host = host_exclusive();
    let before = HostState::take();
    assert_eq!(
        before.ours, "absent",
        "saslauthd-rs is already installed here; this test leaves installed packages alone \
         (dpkg --purge saslauthd-rs first)"
    );
    let sasl2_bin_installed = before.sasl2_bin == "install ok installed";
    let purge = PurgeOnDrop;

    assert_passed(
        run(Command::new("dpkg").arg("-i").arg(&deb), STEP * 6),
        "dpkg -i",
        Prints::Anything,
    );
    assert_eq!(package_status("saslauthd-rs"), "install ok installed");

    let version = run_ok(Command::new("/usr/sbin/saslauthd").arg("-v"), STEP);
    let version = String::from_utf8_lossy(&version.stderr).into_owned();
    assert!(
        version.contains("(saslauthd-rs)") && version.contains("authentication mechanisms:"),
        "saslauthd -v: {version}"
    );
    let help = run_ok(Command::new("/usr/sbin/testsaslauthd").arg("-h"), STEP);
    assert!(String::from_utf8_lossy(&help.stderr).contains("saslauthd-rs"));
    for page in ["saslauthd", "testsaslauthd"] {
        let output = run_ok(
            Command::new("man")
                .arg("-l")
                .arg(format!("/usr/share/man/man8/{page}.8.gz"))
                .env("MANPAGER", "cat")
                .env("PAGER", "cat")
                .env("MANWIDTH", "80"),
            STEP,
        );
        let rendered = String::from_utf8_lossy(&output.stdout);
        assert!(
            rendered.contains("saslauthd-rs") && rendered.contains("NAME"),
            "man -l {page}:\n{rendered}"
        );
    }
    if sasl2_bin_installed {
        let diversions = run_ok(Command::new("dpkg-divert").arg("--list"), STEP);
        let diversions = String::from_utf8_lossy(&diversions.stdout);
        assert!(
            diversions.contains(
                "diversion of /usr/sbin/saslauthd to /usr/sbin/saslauthd.cyrus by saslauthd-rs"
            ),
            "{diversions}"
        );
        let cyrus = run(Command::new("/usr/sbin/saslauthd.cyrus").arg("-v"), STEP);
        let cyrus = String::from_utf8_lossy(&cyrus.stderr);
        assert!(
            cyrus.starts_with("saslauthd 2") && !cyrus.contains("saslauthd-rs"),
            "Cyrus's daemon should stay available as saslauthd.cyrus: {cyrus}"
        );
    }
    let run_dir = fs::metadata("/run/saslauthd").expect("/run/saslauthd after install");
    assert!(run_dir.is_dir());
    if before.dirs[0].1.is_none() {
        assert_run_dir_private(Path::new("/run/saslauthd"));
    }
    assert!(Path::new("/etc/default/saslauthd").exists());
    let print = run_ok(
        Command::new(HELPER_PATH).args(["--print", "/etc/default/saslauthd"]),
        STEP,
    );
    assert!(String::from_utf8_lossy(&print.stdout).starts_with("/usr/sbin/saslauthd\n-a\n"));
    assert_passed(
        run(
            Command::new("systemd-analyze").args([
                "verify",
                "/usr/lib/systemd/system/saslauthd.service",
                "/usr/lib/systemd/system/saslauthd.socket",
            ]),
            STEP,
        ),
        "systemd-analyze verify of the installed units",
        Prints::StdoutOnly,
    );
    // The installed binaries talk to each other.
    let work = TempDir::new("deb-run");
    let log = work.join("daemon.log");
    let mut daemon = spawn_logged(
        foreground_daemon(
            &mut Command::new("/usr/sbin/saslauthd"),
            "shadow",
            work.path(),
        ),
        &log,
    );
    let socket = work.join("mux");
    wait_until(STEP, "the installed daemon's socket", || socket.exists());
    let output = run(
        Command::new("/usr/sbin/testsaslauthd")
            .args(["-u", NOBODY, "-p", "not-the-password", "--show-reply", "-f"])
            .arg(&socket),
        STEP,
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "0: NO \"authentication failed\"\n0: reply \"NO Invalid username\"\n"
    );
    assert_eq!(output.status.code(), Some(255));
    assert_terminates_cleanly(&mut daemon, &log);

    assert_passed(
        run(
            Command::new("dpkg").args(["--purge", "saslauthd-rs"]),
            STEP * 6,
        ),
        "dpkg --purge",
        Prints::Anything,
    );
    drop(purge);
    let after = HostState::take();
    assert_eq!(after, before, "the host differs after purging the package");
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

/// A machine without sasl2-bin, made inside a namespace whose /usr, /var and /etc are
/// overlays (sasl2-bin is purged there only): the package then installs its own
/// /etc/default/saslauthd and /run/saslauthd, the unit's start helper runs the daemon on
/// the default socket with that file, and purge removes what the package created.
#[test]
fn slow_deb_package_without_sasl2_bin_in_a_namespace() {
    require_root();
    require_tool("dpkg", "dpkg");
    let deb = built_deb();
    let _host = host_shared();
    let ns = Namespace::new(
        vec![
            ("/usr", Layer::default()),
            ("/var", Layer::default()),
            ("/etc", Layer::default()),
        ],
        true,
    );
    ns_sh_ok(
        &ns,
        "if dpkg-query -W -f='${Status}' sasl2-bin 2>/dev/null | grep -q installed; then \
           dpkg --purge sasl2-bin; fi; \
         ! dpkg-query -W saslauthd-rs 2>/dev/null",
    );
    assert_eq!(
        ns_sh_ok(
            &ns,
            "ls -d /etc/default/saslauthd /run/saslauthd 2>/dev/null || true"
        ),
        ""
    );
    ns_sh_ok(&ns, &format!("dpkg -i '{}'", deb.display()));
    let defaults = ns_sh_ok(&ns, "cat /etc/default/saslauthd");
    assert!(defaults.contains("\nMECHANISMS=\"shadow\"\n"), "{defaults}");
    assert_eq!(
        ns_sh_ok(&ns, "stat -c '%U:%G %a' /run/saslauthd"),
        "root:sasl 710\n"
    );
    let helper = ns_sh_ok(
        &ns,
        &format!("{HELPER_PATH} --print /etc/default/saslauthd /etc/sysconfig/saslauthd"),
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
    // The unit's ExecStart= as installed, with the installed defaults file.
    let dir = TempDir::new("deb-ns");
    let mut unit = UnitService::start(&ns, &dir);
    let reply = ns_sh(
        &ns,
        &format!("testsaslauthd -u {NOBODY} -p not-the-password --show-reply"),
    );
    assert_eq!(
        String::from_utf8_lossy(&reply.stdout),
        "0: NO \"authentication failed\"\n0: reply \"NO Invalid username\"\n",
        "{}",
        text(&reply)
    );
    assert_terminates_cleanly(&mut unit.daemon, &unit.log);
    ns_sh_ok(&ns, "dpkg --purge saslauthd-rs");
    assert_eq!(
        ns_sh_ok(
            &ns,
            "ls -d /etc/default/saslauthd /run/saslauthd /var/lib/saslauthd-rs \
               /usr/libexec/saslauthd-rs 2>/dev/null; dpkg-divert --list | grep saslauthd-rs; true"
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
    let unit = repo_text("init/saslauthd.service");
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
