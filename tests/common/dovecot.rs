//! Private Dovecot instances:
//!
//! * [`Dovecot`], for the `-a rimap` tests (lab-recipes §5): IMAP (with STARTTLS) and IMAPS
//!   on free ports of 127.0.0.1 and ::1 only, a self-signed certificate for `localhost`,
//!   `127.0.0.1` and `::1`, passwd-file users hashed with `doveadm pw`;
//! * [`DovecotAuth`], the reference server of the Dovecot authentication protocol
//!   (dovecot-auth.md §12): only its auth service, `passdb shadow`, on a UNIX socket
//!   Postfix may use, run in the harness's private mount namespace over the same fixture
//!   users as our daemon (plus the accounts Dovecot and Postfix need).
//!
//! Everything lives in a temp dir; `/etc/dovecot` is neither read nor changed (`-c` names
//! our file and nothing includes the system's). Started with `setsid`, stopped by its PID
//! (and its own process group's leftovers, by PID); every wait is bounded.
//!
//! Dovecot's failure delay and anvil's auth penalty are turned off so that failures do not
//! slow later logins from 127.0.0.1 down (timings would be noisy otherwise).
#![allow(dead_code)]
#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{Gid, Group, Pid, Uid, User};

use crate::common::{
    CmdResult, DEFAULT_TIMEOUT, TempDir, loopback_ports_accept, run_command, stop_child,
};

pub const DOVECOT: &str = "/usr/sbin/dovecot";
pub const DOVEADM: &str = "/usr/bin/doveadm";

/// Users of the lab: (login, password).
pub const USERS: &[(&str, &str)] = &[
    ("dimap", "Dove-Lab-pw1"),
    ("dquote", "q\"uo\\te d pw"),
    // Double quote, backslash, space and UTF-8: goes out as an IMAP literal.
    ("dutf", "pä ss \"q\\ €"),
];

pub struct Dovecot {
    /// Declared first: stopped before the directory goes.
    master: Master,
    dir: TempDir,
    pub imap_port: u16,
    pub imaps_port: u16,
}

/// A Dovecot master started by the harness (in the foreground, `-F`, its own session).
/// Stopped on drop: SIGTERM, SIGKILL after 10 s, then its process group's leftovers.
struct Master {
    child: Option<Child>,
    pid: i32,
}

impl Master {
    /// Runs `command` (ending in `dovecot -F -c CONF`) under `setsid`, output to `log`.
    fn start(command: Command, log: &Path) -> Master {
        let log = fs::File::create(log).expect("create the dovecot output file");
        let mut setsid = Command::new("setsid");
        setsid
            .arg(command.get_program())
            .args(command.get_args())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = setsid.spawn().expect("spawn dovecot");
        Master {
            pid: child.id() as i32,
            child: Some(child),
        }
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .map(|c| matches!(c.try_wait(), Ok(Some(_))))
            .unwrap_or(true)
    }

    /// SIGTERM to the master, SIGKILL after 10 s; then its process group's leftovers.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        stop_child(&mut child, DEFAULT_TIMEOUT);
        // Children of the master (auth, imap-login, ...) share its process group.
        let started = Instant::now();
        loop {
            let left = group_members(self.pid);
            if left.is_empty() || started.elapsed() > DEFAULT_TIMEOUT {
                break;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                // Reap it if it became our child (the test process may be a subreaper).
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Dovecot's own output and its log file.
fn log_of(dir: &TempDir) -> String {
    let mut out = String::new();
    for name in ["dovecot.out", "dovecot.log"] {
        out.push_str(&fs::read_to_string(dir.join(name)).unwrap_or_default());
    }
    out
}

impl Dovecot {
    /// Starts a private Dovecot; panics (with its log) if it does not listen within 10 s.
    pub fn start() -> Dovecot {
        assert!(
            Path::new(DOVECOT).exists() && Path::new(DOVEADM).exists(),
            "{DOVECOT} or {DOVEADM} is missing: install dovecot-imapd (scripts/test.sh does, \
             behind a policy-rc.d so that it does not start on port 143)"
        );
        let dir = TempDir::new("dovecot");
        let imap_port = free_port();
        let imaps_port = loop {
            let port = free_port();
            if port != imap_port {
                break port;
            }
        };
        write_lab(dir.path(), imap_port, imaps_port);
        let mut command = Command::new(DOVECOT);
        command.arg("-F").arg("-c").arg(dir.join("dovecot.conf"));
        let mut lab = Dovecot {
            master: Master::start(command, &dir.join("dovecot.out")),
            dir,
            imap_port,
            imaps_port,
        };
        lab.wait_listening();
        lab
    }

    /// Makes the passdb's users file unreadable (a new file, mode 0), as when Dovecot's
    /// authentication backend fails: logins are answered `NO [UNAVAILABLE] Temporary
    /// authentication failure` until [`Dovecot::restore_passdb`]. (A missing file would
    /// mean "no such user" to Dovecot.)
    pub fn break_passdb(&self) {
        let users = self.dir.join("users");
        fs::rename(&users, self.dir.join("users.away")).expect("move users");
        fs::write(&users, "").expect("write an empty users file");
        fs::set_permissions(&users, fs::Permissions::from_mode(0o000)).expect("chmod users");
    }

    pub fn restore_passdb(&self) {
        let users = self.dir.join("users");
        fs::rename(self.dir.join("users.away"), &users).expect("restore users");
        // A new time, or Dovecot takes the file for the one it read before.
        fs::File::options()
            .write(true)
            .open(&users)
            .and_then(|file| {
                file.set_modified(std::time::SystemTime::now() + Duration::from_secs(1))
            })
            .expect("touch users");
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/cert.pem")
    }

    pub fn log(&self) -> String {
        log_of(&self.dir)
    }

    fn wait_listening(&mut self) {
        let started = Instant::now();
        loop {
            let up = loopback_ports_accept(&[self.imap_port, self.imaps_port]);
            if up {
                return;
            }
            if self.master.exited() || started.elapsed() > DEFAULT_TIMEOUT {
                let log = self.log();
                self.master.stop();
                panic!(
                    "dovecot did not listen on ports {} and {} in time\n--- log ---\n{log}",
                    self.imap_port, self.imaps_port
                );
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Dovecot {
    pub fn stop(&mut self) {
        self.master.stop();
    }
}

/// A private Dovecot auth server: the reference for the Dovecot authentication protocol.
pub struct DovecotAuth {
    master: Master,
    dir: TempDir,
    socket: PathBuf,
}

/// The accounts Dovecot's auth service needs in its namespace (its internal users, and the
/// owner of the socket Postfix connects to).
const DOVECOT_ACCOUNTS: &[(&str, &str)] = &[
    ("dovecot", "dovecot"),
    ("dovenull", "dovenull"),
    ("postfix", "postfix"),
];

impl DovecotAuth {
    /// Starts Dovecot with only its auth service and `passdb shadow` over the fixture
    /// users, its socket (`<dir>/auth`, `postfix:postfix` 0666, so Postfix's and Exim's users may
    /// connect) ready for a handshake;
    /// `username_format` is `%u` (the whole login, like `-r`) or `%n` (cut at the first
    /// `@`). Panics with its log if it does not come up within 10 s. Needs root.
    pub fn start(username_format: &str) -> DovecotAuth {
        crate::common::require_root();
        assert!(
            Path::new(DOVECOT).exists(),
            "{DOVECOT} is missing: install dovecot-core (scripts/test.sh does, through \
             dovecot-imapd, behind a policy-rc.d)"
        );
        let dir = TempDir::new("dovecot-auth");
        for sub in ["run", "state"] {
            fs::create_dir_all(dir.join(sub)).expect("create lab dir");
        }
        let socket = dir.join("auth");
        let d = dir.path().display();
        let instance = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let conf = format!(
            "instance_name = {instance}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = none
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
auth_username_format = {username_format}
auth_username_chars =
auth_failure_delay = 0
auth_verbose = yes
passdb {{
  driver = shadow
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  unix_listener {socket} {{
    mode = 0666
    user = postfix
    group = postfix
  }}
}}
",
            socket = socket.display()
        );
        fs::write(dir.join("dovecot.conf"), conf).expect("write dovecot.conf");
        let etc = dir.join("etc");
        let binds = crate::common::install_fixtures(&etc);
        crate::common::add_accounts(&etc, DOVECOT_ACCOUNTS);
        let conf = dir.join("dovecot.conf");
        let args = [
            std::ffi::OsStr::new("-F"),
            std::ffi::OsStr::new("-c"),
            conf.as_os_str(),
        ];
        let command = crate::common::namespaced_command(&binds, Path::new(DOVECOT), &args);
        let mut auth = DovecotAuth {
            master: Master::start(command, &dir.join("dovecot.out")),
            dir,
            socket,
        };
        auth.wait_ready();
        auth
    }

    /// The auth socket (a client socket in Dovecot's terms).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn log(&self) -> String {
        log_of(&self.dir)
    }

    /// Waits until a connection gets the whole handshake.
    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&self.socket) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while let Ok(n) = std::io::Read::read(&mut stream, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if got.ends_with(b"DONE\n") {
                        return;
                    }
                }
            }
            if self.master.exited() || started.elapsed() > DEFAULT_TIMEOUT {
                let log = self.log();
                self.master.stop();
                panic!(
                    "dovecot auth did not serve {} in time\n--- log ---\n{log}",
                    self.socket.display()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        self.master.stop();
    }
}

/// PIDs of live processes in process group `pgrp`.
fn group_members(pgrp: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() != Some(&"Z")
                && fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgrp)
        })
        .collect()
}

pub use crate::common::free_port;

fn checked(result: CmdResult, what: &str) -> String {
    assert!(
        result.status.is_some_and(|s| s.success()),
        "{what} failed: {result:?}\n{}",
        result.output()
    );
    result.stdout_str()
}

/// Writes a self-signed `cert.pem` and `key.pem` into `dir`, for `localhost`, 127.0.0.1
/// and ::1 (IP SANs, so clients can verify a server reached by address).
pub fn self_signed_certificate(dir: &Path) {
    let mut openssl = Command::new("openssl");
    openssl.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
    ]);
    openssl.args(["-subj", "/CN=localhost"]);
    openssl.args([
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
    ]);
    openssl.arg("-keyout").arg(dir.join("key.pem"));
    openssl.arg("-out").arg(dir.join("cert.pem"));
    checked(
        run_command(openssl, None, DEFAULT_TIMEOUT),
        "openssl req (self-signed certificate)",
    );
}

/// Certificate, users, homes and `dovecot.conf` under `dir`.
fn write_lab(dir: &Path, imap_port: u16, imaps_port: u16) {
    let d = dir.display();
    for sub in ["tls", "home", "run", "state"] {
        fs::create_dir_all(dir.join(sub)).expect("create lab dir");
    }
    self_signed_certificate(&dir.join("tls"));
    fs::set_permissions(dir.join("tls/key.pem"), fs::Permissions::from_mode(0o600))
        .expect("chmod key");
    fs::set_permissions(dir.join("tls/cert.pem"), fs::Permissions::from_mode(0o644))
        .expect("chmod cert");

    let nobody = User::from_name("nobody")
        .ok()
        .flatten()
        .expect("user nobody");
    let dovecot_group = Group::from_name("dovecot")
        .ok()
        .flatten()
        .expect("group dovecot (created by the dovecot-core package)");
    let mut users = String::new();
    for (login, password) in USERS {
        let mut pw = Command::new(DOVEADM);
        pw.args(["pw", "-s", "SHA512-CRYPT", "-p", password]);
        let hash = checked(run_command(pw, None, DEFAULT_TIMEOUT), "doveadm pw");
        users.push_str(&format!("{login}:{}::::::\n", hash.trim()));
        let home = dir.join("home").join(login);
        fs::create_dir_all(&home).expect("create home");
        nix::unistd::chown(&home, Some(nobody.uid), Some(nobody.gid)).expect("chown home");
    }
    let users_file = dir.join("users");
    fs::write(&users_file, users).expect("write users");
    nix::unistd::chown(&users_file, Some(Uid::from_raw(0)), Some(dovecot_group.gid))
        .expect("chgrp users");
    fs::set_permissions(&users_file, fs::Permissions::from_mode(0o640)).expect("chmod users");

    let dh = Path::new("/usr/share/dovecot/dh.pem");
    let ssl_dh = if dh.exists() {
        format!("ssl_dh = <{}\n", dh.display())
    } else {
        String::new()
    };
    let (uid, gid): (Uid, Gid) = (nobody.uid, nobody.gid);
    let instance = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let conf = format!(
        "instance_name = {instance}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1, ::1
ssl = yes
ssl_cert = <{d}/tls/cert.pem
ssl_key = <{d}/tls/key.pem
{ssl_dh}ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
first_valid_uid = 100
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%u {d}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
  default_fields = uid={uid} gid={gid} home={d}/home/%u
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1, ::1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1, ::1
    port = {imaps_port}
    ssl = yes
  }}
}}
"
    );
    fs::write(dir.join("dovecot.conf"), conf).expect("write dovecot.conf");
}
