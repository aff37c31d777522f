//! Private Postfix (+ Debian's libsasl2) instance on 127.0.0.1 and a swaks driver, for the
//! interop tiers (`tests/interop.rs`, `tests/interop_pam.rs`). See `tests/lab/README.md` and
//! lab-recipes §7/§8.
//!
//! * `config_directory`, `queue_directory`, `data_directory` and the log all live in one
//!   [`TempDir`]; `/etc/postfix` and the host's spool are never used.
//! * One `smtpd` listener per saslauthd socket, each on its own free loopback port, chroot `n`
//!   (a chrooted smtpd cannot see a socket outside the queue directory). Listener 0 reads
//!   `$config_directory/sasl/smtpd.conf`, listener `i > 0` reads `sasl/smtpd-<name>.conf`
//!   (Debian's Postfix looks in `$config_directory/sasl`, ignoring `cyrus_sasl_config_path`).
//! * Or ([`Postfix::start_dovecot`]) listeners with `smtpd_sasl_type = dovecot`: no libsasl,
//!   smtpd talks the Dovecot protocol to `smtpd_sasl_path` (a path, relative to the queue
//!   directory when the listener is chrooted, or `inet:ADDRESS:PORT`).
//! * Error transports: the instance never delivers or relays mail.
//! * `master` runs in the foreground in its own session, started as `setsid master -c DIR`
//!   (not as a process-group leader, so setsid(1) does not fork and the PID is the master's;
//!   master itself insists on `setsid()` succeeding or already leading its session). It is
//!   stopped by its recorded PID (SIGTERM; master then terminates its own process group);
//!   leftovers recorded before the stop are SIGKILLed by PID + start time. [`Postfix`] does
//!   this on drop too, so a panicking test leaves no process behind, and a watchdog stops
//!   the master if the test process is killed outright.

use super::clients::{code_of, status_text};
use super::{
    CmdResult, DEFAULT_TIMEOUT, Daemon, TempDir, Watchdog, proc_stat, run_command, signal,
    stop_child,
};
use std::fs;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

/// Debian's `postfix` command (package `postfix`).
pub const POSTFIX: &str = "/usr/sbin/postfix";
/// Debian's Postfix master daemon.
pub const POSTFIX_MASTER: &str = "/usr/lib/postfix/sbin/master";
/// swaks (package `swaks`).
pub const SWAKS: &str = "/usr/bin/swaks";

/// Bound for `postfix check` and for the listeners to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for one swaks run (swaks' own `--timeout` is shorter).
const SWAKS_TIMEOUT: Duration = Duration::from_secs(40);
const POLL: Duration = Duration::from_millis(20);

/// One smtpd listener whose libsasl talks to `saslauthd_socket` (the full `mux` path).
#[derive(Clone, Debug)]
pub struct SmtpListener {
    /// Short name (`[a-z0-9-]`), used for the SASL application name and in messages.
    pub name: String,
    pub saslauthd_socket: PathBuf,
}

/// One smtpd listener with `smtpd_sasl_type = dovecot`.
#[derive(Clone, Debug)]
pub struct DovecotListener {
    /// Short name (`[a-z0-9-]`), used in messages.
    pub name: String,
    /// `smtpd_sasl_path`: an absolute path, a path relative to the queue directory (the
    /// chroot, like Debian's `private/auth`), or `inet:ADDRESS:PORT`.
    pub sasl_path: String,
    /// Run smtpd chrooted in the queue directory (Debian's default).
    pub chroot: bool,
    /// At most this many smtpd processes (`maxproc`); `None`: Postfix's default.
    pub max_processes: Option<u32>,
}

/// How a listener's smtpd reaches its authentication server.
enum Listener<'a> {
    Cyrus(usize, &'a SmtpListener),
    Dovecot(&'a DovecotListener),
}

impl Listener<'_> {
    fn name(&self) -> &str {
        match self {
            Listener::Cyrus(_, l) => &l.name,
            Listener::Dovecot(l) => &l.name,
        }
    }

    /// Its `master.cf` entry, writing the SASL files it needs under `lab`.
    fn master_cf(&self, lab: &Path, port: u16) -> String {
        match self {
            Listener::Cyrus(i, l) => {
                let app = sasl_app(*i, l);
                fs::write(
                    lab.join("etc/sasl").join(format!("{app}.conf")),
                    format!(
                        "pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\nsaslauthd_path: {}\n",
                        l.saslauthd_socket.display()
                    ),
                )
                .expect("write sasl conf");
                format!(
                    "127.0.0.1:{port} inet  n       -       n       -       -       smtpd\n  -o smtpd_sasl_path={app}\n"
                )
            }
            Listener::Dovecot(l) => {
                let chroot = if l.chroot { "y" } else { "n" };
                let maxproc = l.max_processes.map_or("-".to_string(), |n| n.to_string());
                // The instance is IPv4 only; an auth server on [::1] needs IPv6 in smtpd.
                let ipv6 = if l.sasl_path.starts_with("inet:[") {
                    "  -o inet_protocols=all\n"
                } else {
                    ""
                };
                format!(
                    "127.0.0.1:{port} inet  n       -       {chroot}       -       {maxproc}       smtpd\n  -o smtpd_sasl_type=dovecot\n  -o smtpd_sasl_path={}\n{ipv6}",
                    l.sasl_path
                )
            }
        }
    }
}

/// A running private Postfix instance. Stopped on drop.
pub struct Postfix {
    /// Dropped after `drop()` has stopped the processes (field drop order).
    dir: TempDir,
    child: Option<Child>,
    pid: i32,
    start_time: Option<u64>,
    watchdog: Option<Watchdog>,
    /// Listener names and their ports.
    listeners: Vec<(String, u16)>,
}

/// util-linux `setsid` (Debian package `util-linux`, essential).
const SETSID: &str = "/usr/bin/setsid";

pub(super) fn alive_as(pid: i32, start_time: u64) -> bool {
    matches!(proc_stat(pid), Some((st, _, t)) if st != 'Z' && st != 'X' && t == start_time)
}

/// Processes in process group `pgrp` (other than `except`), with their start times.
pub(super) fn group_members(pgrp: i32, except: i32) -> Vec<(i32, u64)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == except {
            continue;
        }
        if let Some((st, g, t)) = proc_stat(pid)
            && g == pgrp
            && st != 'Z'
            && st != 'X'
        {
            out.push((pid, t));
        }
    }
    out
}

/// Reserves `n` distinct free loopback ports (bind `127.0.0.1:0`), released on return.
pub fn free_loopback_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// Panics when anything already listens on (or holds) `127.0.0.1:port`.
fn assert_port_free(port: u16) {
    if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
        panic!("refusing to start Postfix: 127.0.0.1:{port} is taken ({e})");
    }
    let l = tcp_listeners(port);
    assert!(
        l.is_empty(),
        "refusing to start Postfix: something listens on port {port}: {l:?}"
    );
}

/// LISTEN sockets on `port` from /proc/net/tcp{,6}: (hex local address, socket inode).
fn tcp_listeners(port: u16) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(s) = fs::read_to_string(file) else {
            continue;
        };
        for line in s.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let Some((addr, p)) = f[1].rsplit_once(':') else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() == Some(port) {
                out.push((addr.to_string(), f[9].parse().unwrap_or(0)));
            }
        }
    }
    out
}

/// Socket inodes held open by `pid`.
fn socket_inodes(pid: i32) -> Vec<u64> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in rd.flatten() {
            if let Ok(t) = fs::read_link(e.path()) {
                let t = t.to_string_lossy().into_owned();
                if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']'))
                    && let Ok(n) = n.parse()
                {
                    out.push(n);
                }
            }
        }
    }
    out
}

fn postfix_ids() -> (u32, u32) {
    let u = nix::unistd::User::from_name("postfix")
        .ok()
        .flatten()
        .expect("user `postfix` missing: install the Debian package `postfix`");
    (u.uid.as_raw(), u.gid.as_raw())
}

fn main_cf(lab: &Path) -> String {
    let l = lab.display();
    format!(
        "# private lab instance written by tests/common/postfix.rs
compatibility_level = 3.6
myhostname = lab.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
queue_directory = {l}/spool
data_directory = {l}/data
maillog_file = {l}/log/postfix.log
maillog_file_prefixes = {l}
alias_maps =
alias_database =
local_recipient_maps =
relayhost =
default_transport = error:lab instance does not deliver mail
relay_transport = error:lab instance does not deliver mail
local_transport = error:lab instance does not deliver mail
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP lab
smtpd_peername_lookup = no
biff = no
smtputf8_enable = no
smtpd_tls_security_level = none
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_service = smtp
cyrus_sasl_config_path = {l}/etc/sasl
smtpd_sasl_security_options = noanonymous
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
"
    )
}

const MASTER_CF_SERVICES: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// SASL application name of listener `i` (`smtpd` → `sasl/smtpd.conf`).
fn sasl_app(i: usize, l: &SmtpListener) -> String {
    if i == 0 {
        "smtpd".to_string()
    } else {
        format!("smtpd-{}", l.name)
    }
}

/// `program`, run through `wrapper` (e.g. `nsenter -t PID -m --`) when there is one.
fn wrapped(wrapper: &[String], program: &str) -> Command {
    match wrapper.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
    }
}

impl Postfix {
    /// Writes the configuration, runs `postfix -c DIR check`, starts `master -c DIR` and waits
    /// (bounded) until every listener is up on 127.0.0.1 and owned by that master.
    pub fn start(listeners: &[SmtpListener]) -> Postfix {
        Postfix::start_wrapped(listeners, &[])
    }

    /// [`Postfix::start`] with every Postfix command run through `wrapper`, a command that
    /// execs its arguments in place (no fork, so the master's pid stays the one spawned),
    /// e.g. `nsenter -t PID -m --` to run Postfix in another mount namespace, where it sees
    /// that namespace's `/etc/group` and sockets. The instance's directory is a temp dir
    /// both namespaces must see.
    pub fn start_wrapped(listeners: &[SmtpListener], wrapper: &[String]) -> Postfix {
        let listeners: Vec<Listener> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| Listener::Cyrus(i, l))
            .collect();
        Self::start_listeners(&listeners, wrapper)
    }

    /// Like [`Postfix::start`], with `smtpd_sasl_type = dovecot` listeners.
    pub fn start_dovecot(listeners: &[DovecotListener]) -> Postfix {
        let listeners: Vec<Listener> = listeners.iter().map(Listener::Dovecot).collect();
        Self::start_listeners(&listeners, &[])
    }

    fn start_listeners(listeners: &[Listener], wrapper: &[String]) -> Postfix {
        super::require_root();
        assert!(!listeners.is_empty(), "need at least one listener");
        for p in [POSTFIX, POSTFIX_MASTER] {
            assert!(
                Path::new(p).exists(),
                "{p} missing: install the Debian package `postfix`"
            );
        }
        let dir = TempDir::new("postfix");
        let lab = dir.path().to_path_buf();
        for sub in ["etc/sasl", "spool", "data", "log"] {
            fs::create_dir_all(lab.join(sub)).expect("create lab dir");
        }
        for sub in ["etc", "etc/sasl", "spool", "log"] {
            fs::set_permissions(lab.join(sub), fs::Permissions::from_mode(0o755))
                .expect("chmod lab dir");
        }
        let (uid, gid) = postfix_ids();
        std::os::unix::fs::chown(lab.join("data"), Some(uid), Some(gid)).expect("chown data");
        fs::set_permissions(lab.join("data"), fs::Permissions::from_mode(0o700))
            .expect("chmod data");

        let ports = free_loopback_ports(listeners.len());
        let mut master_cf = String::from("# private lab instance (tests/common/postfix.rs)\n");
        for (l, port) in listeners.iter().zip(&ports) {
            let name = l.name();
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "bad listener name {name:?}"
            );
            master_cf.push_str(&l.master_cf(&lab, *port));
        }
        master_cf.push_str(MASTER_CF_SERVICES);
        fs::write(lab.join("etc/main.cf"), main_cf(&lab)).expect("write main.cf");
        fs::write(lab.join("etc/master.cf"), master_cf).expect("write master.cf");

        let etc = lab.join("etc");
        let mut check = wrapped(wrapper, POSTFIX);
        check.arg("-c").arg(&etc).arg("check");
        let r = run_command(check, None, START_TIMEOUT);
        if r.status.and_then(|s| s.code()) != Some(0) {
            // Without /dev/log Postfix's fatal messages are invisible unless stderr is a tty.
            let mut again = wrapped(wrapper, "script");
            again
                .args(["-qec"])
                .arg(format!("{POSTFIX} -c {} check", etc.display()));
            again.arg("/dev/null");
            let diag = run_command(again, None, START_TIMEOUT);
            panic!(
                "`postfix -c {} check` failed ({:?}): {}\n--- under a pty ---\n{}",
                etc.display(),
                r.status,
                r.output(),
                diag.output()
            );
        }

        for &p in &ports {
            assert_port_free(p);
        }
        let out = fs::File::create(lab.join("log/master.out")).expect("create master.out");
        // Not `process_group(0)`: a group leader cannot setsid(), and master exits (status 1,
        // "unable to set session and process group ID") unless it leads its own session.
        let mut cmd = wrapped(wrapper, SETSID);
        cmd.arg(POSTFIX_MASTER)
            .arg("-c")
            .arg(&etc)
            .current_dir(&lab)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        let child = cmd.spawn().expect("spawn postfix master");
        let pid = child.id() as i32;
        let start_time = proc_stat(pid).map(|s| s.2);
        let mut pf = Postfix {
            dir,
            child: Some(child),
            pid,
            start_time,
            watchdog: None,
            listeners: listeners
                .iter()
                .map(|l| l.name().to_string())
                .zip(ports)
                .collect(),
        };
        if let Some(t) = start_time {
            pf.watchdog = Some(Watchdog::start("postfix-watchdog", pid, t, None));
        }
        pf.wait_ready();
        pf
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "postfix master exited during start-up ({st})\n{}",
                    self.diagnostics()
                );
            }
            // Listeners first, then the master's fds: a listener seen here that is ours is
            // already in the fd table read afterwards.
            let seen: Vec<(u16, Vec<(String, u64)>)> = self
                .listeners
                .iter()
                .map(|(_, port)| (*port, tcp_listeners(*port)))
                .collect();
            let ours = socket_inodes(self.pid);
            let mut ready = true;
            let mut foreign = Vec::new();
            for (port, ls) in &seen {
                match ls.as_slice() {
                    [] => ready = false,
                    [(addr, inode)] if addr == "0100007F" && ours.contains(inode) => {}
                    other => {
                        ready = false;
                        foreign.push(format!("port {port}: {other:?}"));
                    }
                }
            }
            if !foreign.is_empty() && start.elapsed() > Duration::from_secs(5) {
                panic!(
                    "listeners not (only) our master's 127.0.0.1 sockets: {foreign:?} (master fds: {ours:?})\n{}",
                    self.diagnostics()
                );
            }
            if ready {
                let exe = fs::read_link(format!("/proc/{}/exe", self.pid)).unwrap_or_default();
                let sid = fs::read_to_string(format!("/proc/{}/stat", self.pid))
                    .ok()
                    .and_then(|st| {
                        let rest = st[st.rfind(')')? + 2..].to_string();
                        rest.split_whitespace().nth(3)?.parse::<i32>().ok()
                    });
                assert!(
                    exe == Path::new(POSTFIX_MASTER) && sid == Some(self.pid),
                    "pid {} is not a session-leading {POSTFIX_MASTER} (exe {}, sid {sid:?})\n{}",
                    self.pid,
                    exe.display(),
                    self.diagnostics()
                );
                return;
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "postfix listeners not up within {START_TIMEOUT:?}\n{}",
                    self.diagnostics()
                );
            }
            sleep(POLL);
        }
    }

    /// The port of the listener called `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.listeners
            .iter()
            .find(|(l, _)| l == name)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no listener {name:?}"))
    }

    /// The instance's directory (config in `etc/`, queue in `spool/`, logs in `log/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Postfix's `maillog_file`.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log/postfix.log")).unwrap_or_default()
    }

    /// Log, master output and config, for failure messages.
    pub fn diagnostics(&self) -> String {
        let rd = |p: &str| fs::read_to_string(self.dir.join(p)).unwrap_or_default();
        format!(
            "--- postfix dir {} ---\n--- log/postfix.log ---\n{}--- log/master.out ---\n{}--- etc/master.cf ---\n{}",
            self.dir.path().display(),
            self.log(),
            rd("log/master.out"),
            rd("etc/master.cf")
        )
    }

    /// SIGTERM to the master (which terminates its process group), bounded wait, then SIGKILL
    /// for the master and for any recorded member of its group that is still alive.
    pub fn stop(&mut self) {
        // First, so that it cannot fire at a PID that is about to be reaped.
        if let Some(mut w) = self.watchdog.take() {
            w.disarm();
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        let members = match self.start_time {
            Some(t) if alive_as(self.pid, t) => group_members(self.pid, self.pid),
            _ => Vec::new(),
        };
        if !stop_child(&mut child, DEFAULT_TIMEOUT) {
            eprintln!("postfix master {} ignored SIGTERM; killed it", self.pid);
        }
        // The master's children exit on their own once it is gone; give them a bounded moment.
        let start = Instant::now();
        while members.iter().any(|&(p, t)| alive_as(p, t)) && start.elapsed() < DEFAULT_TIMEOUT {
            sleep(POLL);
        }
        for &(p, t) in &members {
            if alive_as(p, t) {
                eprintln!("postfix process {p} outlived its master; killing it");
                signal(p, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a swaks run ended with.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum SmtpAuth {
    /// `235 2.7.0 Authentication successful`, swaks exit 0.
    Accepted,
    /// `535 5.7.8 Error: authentication failed: authentication failure`, swaks exit 28.
    Rejected,
    /// `454 4.7.0 Temporary authentication failure: generic failure`, swaks exit 28.
    TempFail,
}

impl SmtpAuth {
    /// The exact server reply line (after swaks' `<-  ` / `<** ` marker).
    pub fn reply_line(self) -> &'static str {
        match self {
            SmtpAuth::Accepted => "235 2.7.0 Authentication successful",
            SmtpAuth::Rejected => "535 5.7.8 Error: authentication failed: authentication failure",
            SmtpAuth::TempFail => "454 4.7.0 Temporary authentication failure: generic failure",
        }
    }

    /// swaks' exit code.
    pub fn swaks_code(self) -> i32 {
        match self {
            SmtpAuth::Accepted => 0,
            _ => 28,
        }
    }
}

/// Server lines of a swaks transcript with the marker (`<-`, `<~`, `<**`) removed.
pub fn server_lines(transcript: &str) -> Vec<&str> {
    transcript
        .lines()
        .filter_map(|l| {
            l.strip_prefix("<**")
                .or_else(|| l.strip_prefix("<~"))
                .or_else(|| l.strip_prefix("<-"))
        })
        .map(str::trim)
        .collect()
}

/// The server's final answer to AUTH in a swaks transcript (`235 …`, `535 …`, `454 …`): the
/// first server line after the client's AUTH that is not a `334` challenge.
pub fn auth_result(transcript: &str) -> Option<String> {
    let mut after_auth = false;
    for line in transcript.lines() {
        if line.starts_with(" -> AUTH") || line.starts_with(" ~> AUTH") {
            after_auth = true;
            continue;
        }
        let server = line
            .strip_prefix("<**")
            .or_else(|| line.strip_prefix("<~"))
            .or_else(|| line.strip_prefix("<-"))
            .map(str::trim);
        if let Some(reply) = server.filter(|_| after_auth)
            && !reply.starts_with("334")
        {
            return Some(reply.to_string());
        }
    }
    None
}

/// `swaks --server 127.0.0.1:PORT --quit-after AUTH --helo lab-client.localdomain --auth MECH
/// --auth-user USER --auth-password PASS` (bounded).
pub fn swaks(port: u16, mech: &str, user: &str, pass: &str) -> CmdResult {
    swaks_with(port, mech, user, pass, &[])
}

/// [`swaks`] with `extra` arguments after the server's (e.g. `--local-interface ADDR`).
pub fn swaks_with(port: u16, mech: &str, user: &str, pass: &str, extra: &[&str]) -> CmdResult {
    assert!(
        Path::new(SWAKS).exists(),
        "{SWAKS} missing: install the Debian package `swaks`"
    );
    let home = TempDir::new("swaks-home");
    let mut c = Command::new(SWAKS);
    c.arg("--server")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .args(["--quit-after", "AUTH", "--helo", "lab-client.localdomain"])
        .args(["--timeout", "20", "--auth", mech, "--auth-user", user])
        .args(["--auth-password", pass])
        // No ~/.swaksrc or other per-user configuration.
        .env("HOME", home.path());
    run_command(c, None, SWAKS_TIMEOUT)
}

/// One row of a swaks table: (user, password, expected result).
pub type SmtpCase = (&'static str, &'static str, SmtpAuth);

/// Whether [`smtp_case`] also requires the EHLO reply to advertise `AUTH PLAIN LOGIN`.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Advert {
    Required,
    NotChecked,
}

/// Runs one swaks case through the listener `port`; returns a failure description.
pub fn smtp_case(
    port: u16,
    mech: &str,
    user: &str,
    pass: &str,
    want: SmtpAuth,
    advert: Advert,
) -> Option<String> {
    let r = swaks(port, mech, user, pass);
    let out = r.stdout_str();
    let lines = server_lines(&out);
    let advertised = lines.contains(&"250-AUTH PLAIN LOGIN");
    let got_line = lines.iter().any(|l| *l == want.reply_line());
    if code_of(&r) == Some(want.swaks_code())
        && got_line
        && (advertised || advert == Advert::NotChecked)
    {
        return None;
    }
    let want_advert = match advert {
        Advert::Required => ", EHLO advertising `AUTH PLAIN LOGIN`",
        Advert::NotChecked => "",
    };
    Some(format!(
        "  - AUTH {mech} user={user:?}: want {:?} ({:?}, swaks exit {}){want_advert}\n      got swaks {}; advertised={advertised}; transcript:\n{}{}",
        want,
        want.reply_line(),
        want.swaks_code(),
        status_text(&r),
        out.lines()
            .map(|l| format!("        | {l}\n"))
            .collect::<String>(),
        r.stderr_str()
    ))
}

/// The SASL mechanisms [`smtp_matrix`] tries.
pub const SMTP_MECHS: [&str; 2] = ["PLAIN", "LOGIN"];

/// All `cases` × [`SMTP_MECHS`] through the listener `port`; the failure descriptions.
pub fn smtp_matrix(port: u16, cases: &[SmtpCase], advert: Advert) -> Vec<String> {
    let mut failures = Vec::new();
    for mech in SMTP_MECHS {
        for &(user, pass, want) in cases {
            failures.extend(smtp_case(port, mech, user, pass, want, advert));
        }
    }
    failures
}

/// The interop tiers' side-by-side run: one instance with the listener `ours` in front of
/// `ours`' socket and `upstream` in front of `upstream`'s, and [`smtp_matrix`] with `cases`
/// through both at once. Returns the instance and a report of the failed cases with the
/// daemon's log (empty when every case passed); `mech` names the daemons' mechanism in it.
pub fn smtp_side_by_side(
    ours: &Daemon,
    upstream: &Daemon,
    cases: &[SmtpCase],
    advert: Advert,
    mech: &str,
) -> (Postfix, String) {
    let pf = Postfix::start(&[
        SmtpListener {
            name: "ours".into(),
            saslauthd_socket: ours.socket(),
        },
        SmtpListener {
            name: "upstream".into(),
            saslauthd_socket: upstream.socket(),
        },
    ]);
    let (p_ours, p_up) = (pf.port("ours"), pf.port("upstream"));
    let (f_ours, f_up) = thread::scope(|s| {
        let a = s.spawn(|| smtp_matrix(p_ours, cases, advert));
        let b = s.spawn(|| smtp_matrix(p_up, cases, advert));
        (
            a.join().expect("ours thread"),
            b.join().expect("upstream thread"),
        )
    });
    let mut report = String::new();
    for (name, f, d) in [("ours", &f_ours, ours), ("upstream", &f_up, upstream)] {
        if !f.is_empty() {
            report.push_str(&format!(
                "Postfix → {name} saslauthd -a {mech}: {} of {} swaks cases failed:\n{}\n--- {name} daemon log ---\n{}\n",
                f.len(),
                SMTP_MECHS.len() * cases.len(),
                f.join("\n"),
                d.log()
            ));
        }
    }
    (pf, report)
}

/// The passwords `cases` send (none may appear in our daemon's log).
pub fn smtp_passwords(cases: &[SmtpCase]) -> Vec<&'static str> {
    cases.iter().map(|c| c.1).collect()
}
