//! A private Exim 4.96 with its `dovecot` authenticator (dovecot-auth.md §10, §12), for
//! the interop tier of the Dovecot front end.
//!
//! Exim is never installed: installing an exim4-daemon package would remove Postfix. So
//! `scripts/test.sh` downloads Debian's `exim4-daemon-heavy` (the light daemon has no
//! dovecot authenticator) and the three libraries the host lacks with `apt-get download`
//! into [`deb_cache`], and each [`Exim`] unpacks them with `dpkg-deb -x` into its temp dir
//! and runs `usr/sbin/exim4 -C <our config> -bdf` from there (with `LD_LIBRARY_PATH`), in
//! the harness's private mount namespace, where the fixture accounts get a `Debian-exim`
//! user and group. It listens on one free port of 127.0.0.1, relays nothing, and is stopped
//! by its PID (process group leftovers too) on drop.

use super::postfix::{alive_as, group_members};
use super::{
    DEFAULT_TIMEOUT, TempDir, add_accounts, install_fixtures, namespaced_command, proc_stat,
    require_root, run_command, signal, stop_child,
};
use std::ffi::OsStr;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The packages `scripts/test.sh` downloads (names as `apt-get download` saves them start).
pub const DEBS: &[&str] = &["exim4-daemon-heavy", "libidn12", "libmariadb3", "libspf2-2"];
/// Overrides [`deb_cache`]'s default.
pub const DEB_CACHE_ENV: &str = "SASLAUTHD_TEST_DEB_CACHE";

/// Where the downloaded .debs are: `$SASLAUTHD_TEST_DEB_CACHE`, else `target/test-debs`.
pub fn deb_cache() -> PathBuf {
    std::env::var_os(DEB_CACHE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-debs"))
}

/// Exim's SMTP replies to AUTH (measured, dovecot-auth.md §10).
pub const ACCEPTED: &str = "235 Authentication succeeded";
pub const REJECTED: &str = "535 Incorrect authentication data";
pub const UNAVAILABLE: &str = "435 Unable to authenticate at present";

/// The account Exim's receiving processes run as.
const EXIM_ACCOUNT: (&str, &str) = ("Debian-exim", "Debian-exim");

pub struct Exim {
    child: Option<Child>,
    pid: i32,
    start_time: Option<u64>,
    dir: TempDir,
    pub port: u16,
    /// Uid and gid of `Debian-exim` in Exim's namespace (who connects to the socket).
    pub uid: u32,
    pub gid: u32,
}

impl Exim {
    /// Unpacks Exim, writes its configuration (authenticators PLAIN and LOGIN with
    /// `driver = dovecot`, `server_socket = socket`), checks it with `-bV`, starts the
    /// daemon and waits until it accepts SMTP connections. Panics with the reason (a
    /// missing download included) otherwise. Needs root.
    pub fn start(socket: &Path) -> Exim {
        require_root();
        let dir = TempDir::new("exim");
        let root = dir.join("root");
        unpack(&root);
        for sub in ["spool", "log"] {
            fs::create_dir_all(dir.join(sub)).expect("create exim dir");
        }
        let etc = dir.join("etc");
        let binds = install_fixtures(&etc);
        add_accounts(&etc, &[EXIM_ACCOUNT]);
        let (uid, gid) = account_ids(&etc.join("passwd"), EXIM_ACCOUNT.0);
        for sub in ["spool", "log"] {
            std::os::unix::fs::chown(dir.join(sub), Some(uid), Some(gid)).expect("chown");
            fs::set_permissions(dir.join(sub), fs::Permissions::from_mode(0o750)).expect("chmod");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.join("exim.conf");
        fs::write(&config, configuration(dir.path(), port, socket)).expect("write exim.conf");
        let exim = root.join("usr/sbin/exim4");
        let library_path = format!(
            "{}:{}",
            root.join("usr/lib/x86_64-linux-gnu").display(),
            root.join("usr/lib").display()
        );
        let command = |args: &[&OsStr]| {
            let mut c = namespaced_command(&binds, &exim, args);
            c.env("LD_LIBRARY_PATH", &library_path);
            c
        };
        let check = run_command(
            command(&[OsStr::new("-C"), config.as_os_str(), OsStr::new("-bV")]),
            None,
            DEFAULT_TIMEOUT,
        );
        let version = check.output();
        assert!(
            check.status.is_some_and(|s| s.success())
                && version.contains("Exim version 4.96")
                && version
                    .lines()
                    .any(|l| l.starts_with("Authenticators:") && l.contains("dovecot")),
            "exim4 -bV: not Exim 4.96 with a dovecot authenticator, or a bad configuration:\n{version}"
        );
        let out = fs::File::create(dir.join("exim.out")).expect("create exim.out");
        let mut daemon = command(&[OsStr::new("-C"), config.as_os_str(), OsStr::new("-bdf")]);
        daemon
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .process_group(0);
        let child = daemon.spawn().expect("spawn exim");
        let pid = child.id() as i32;
        let mut lab = Exim {
            child: Some(child),
            pid,
            start_time: proc_stat(pid).map(|s| s.2),
            dir,
            port,
            uid,
            gid,
        };
        lab.wait_listening();
        lab
    }

    fn wait_listening(&mut self) {
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || started.elapsed() > DEFAULT_TIMEOUT {
                let log = self.log();
                self.stop();
                panic!(
                    "exim did not listen on 127.0.0.1:{} in time\n{log}",
                    self.port
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Exim's main and panic logs and its output.
    pub fn log(&self) -> String {
        ["exim.out", "log/mainlog", "log/paniclog", "log/rejectlog"]
            .iter()
            .map(|name| {
                format!(
                    "--- {name} ---\n{}",
                    fs::read_to_string(self.dir.join(name)).unwrap_or_default()
                )
            })
            .collect()
    }

    /// SIGTERM, SIGKILL after 10 s; then the members of its process group (receiving
    /// processes), recorded before the stop, by PID and start time.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let members = match self.start_time {
            Some(t) if alive_as(self.pid, t) => group_members(self.pid, self.pid),
            _ => Vec::new(),
        };
        stop_child(&mut child, DEFAULT_TIMEOUT);
        for (pid, start_time) in members {
            if alive_as(pid, start_time) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Exim {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Unpacks every downloaded .deb into `root`.
fn unpack(root: &Path) {
    let cache = deb_cache();
    fs::create_dir_all(root).expect("create unpack dir");
    for name in DEBS {
        let prefix = format!("{name}_");
        let deb = fs::read_dir(&cache)
            .ok()
            .and_then(|entries| {
                entries.flatten().map(|e| e.path()).find(|p| {
                    p.extension() == Some(OsStr::new("deb"))
                        && p.file_name()
                            .and_then(OsStr::to_str)
                            .is_some_and(|n| n.starts_with(&prefix))
                })
            })
            .unwrap_or_else(|| {
                panic!(
                    "{name}_*.deb is not in {}: scripts/test.sh downloads it \
                     (`apt-get download {}` there); Exim is never installed, it would \
                     remove Postfix",
                    cache.display(),
                    DEBS.join(" ")
                )
            });
        let mut x = Command::new("dpkg-deb");
        x.arg("-x").arg(&deb).arg(root);
        let r = run_command(x, None, DEFAULT_TIMEOUT);
        assert!(
            r.status.is_some_and(|s| s.success()),
            "dpkg-deb -x {}: {}",
            deb.display(),
            r.output()
        );
    }
}

/// The uid and gid of `user` in a passwd file.
fn account_ids(passwd: &Path, user: &str) -> (u32, u32) {
    let text = fs::read_to_string(passwd).expect("read passwd copy");
    let line = text
        .lines()
        .find(|l| l.split(':').next() == Some(user))
        .unwrap_or_else(|| panic!("no {user} in {}", passwd.display()));
    let field = |i: usize| line.split(':').nth(i).and_then(|f| f.parse().ok());
    (field(2).expect("uid"), field(3).expect("gid"))
}

/// A minimal configuration: loopback only, no DNS, nothing relayed or delivered, and the
/// two dovecot authenticators of dovecot-auth.md §12.
fn configuration(dir: &Path, port: u16, socket: &Path) -> String {
    let d = dir.display();
    let socket = socket.display();
    format!(
        "# private lab instance written by tests/common/exim.rs
primary_hostname = lab.localdomain
exim_user = Debian-exim
exim_group = Debian-exim
spool_directory = {d}/spool
log_file_path = {d}/log/%slog
pid_file_path = {d}/exim.pid
local_interfaces = <; 127.0.0.1.{port}
daemon_smtp_ports = {port}
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
auth_advertise_hosts = *
acl_smtp_rcpt = acl_check_rcpt

begin acl

acl_check_rcpt:
  accept authenticated = *
  deny message = relay not permitted

begin authenticators

dovecot_plain:
  driver = dovecot
  public_name = PLAIN
  server_socket = {socket}
  server_set_id = $auth1

dovecot_login:
  driver = dovecot
  public_name = LOGIN
  server_socket = {socket}
  server_set_id = $auth1
"
    )
}
