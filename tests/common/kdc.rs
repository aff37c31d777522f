//! A private MIT KDC (Debian's `krb5-kdc`, `kdb5_util`, `kadmin.local`) on 127.0.0.1, and
//! a silent one, for `tests/kerberos5.rs`. See the fact sheet's "Running the real peer".
//!
//! * Everything lives in one [`TempDir`]: `kdc.conf` (`KRB5_KDC_PROFILE`), the tools'
//!   `krb5.conf` (`KRB5_CONFIG`), the database, its stash and the log. The host's
//!   /etc/krb5.conf and /etc/krb5kdc are never read or written.
//! * `krb5kdc -n` runs in the foreground in its own process group, on a free port (UDP and
//!   TCP), stopped by its recorded PID on drop; a watchdog stops it if the test process
//!   dies without unwinding.
//! * [`Krb5Conf`] writes the `krb5.conf` a daemon under test reads (`KRB5_CONFIG`), with
//!   no DNS, no reverse lookups and the credential cache name pointing into a directory
//!   the test can check stays empty.
//! * [`SilentKdc`]: a UDP socket that reads and drops, and a TCP listener that accepts and
//!   never answers — a KDC that hangs.

use super::Watchdog;
use super::{CmdResult, DEFAULT_TIMEOUT, TempDir, proc_stat, run_command, secrets, stop_child};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

/// The realm of the test KDCs.
pub const REALM: &str = "EXAMPLE.TEST";
/// The daemon's hostname (a private UTS namespace): its host principal is
/// `host/kdchost@EXAMPLE.TEST`.
pub const HOSTNAME: &str = "kdchost";

const KDB5_UTIL: &str = "/usr/sbin/kdb5_util";
const KADMIN_LOCAL: &str = "/usr/sbin/kadmin.local";
const KRB5KDC: &str = "/usr/sbin/krb5kdc";
/// Not a user password: it only protects the throw-away database.
const MASTER_PASSWORD: &str = "Kdc-master-key-1";

/// One principal to create: `kadmin.local` `addprinc` with `flags` (e.g. `-expire
/// 2020-01-01`, `-allow_tix`) and a password (`None`: `-randkey`).
#[derive(Clone, Copy, Debug)]
pub struct Principal {
    pub name: &'static str,
    pub password: Option<&'static str>,
    pub flags: &'static str,
}

/// A running KDC. Stopped on drop.
pub struct Kdc {
    /// Dropped after `drop()` has stopped the process (field order).
    dir: TempDir,
    pub realm: String,
    port: u16,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
}

/// A port free for both UDP and TCP on 127.0.0.1 (released again; the KDC binds it next).
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// Runs a KDC tool with the private profile; panics with its output unless it succeeds.
fn kdc_tool(dir: &Path, program: &str, args: &[&str], stdin: &str) -> CmdResult {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("KRB5_CONFIG", dir.join("krb5.conf"))
        .env("KRB5_KDC_PROFILE", dir.join("kdc.conf"));
    let result = run_command(cmd, Some(stdin.as_bytes()), Duration::from_secs(60));
    assert!(
        result.status.is_some_and(|s| s.success()),
        "{program} {args:?} failed: {}",
        result.output()
    );
    result
}

/// A `kadmin.local` argument in double quotes (a literal `"` doubled).
fn kadmin_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

impl Kdc {
    /// Creates a database for `realm` with `principals` and `host/<HOSTNAME>` (random
    /// key), writes the host key to [`Kdc::host_keytab`], and starts `krb5kdc`.
    pub fn start(realm: &str, principals: &[Principal]) -> Kdc {
        super::require_root();
        for tool in [KDB5_UTIL, KADMIN_LOCAL, KRB5KDC] {
            assert!(
                Path::new(tool).exists(),
                "{tool} missing: install the Debian packages krb5-kdc and krb5-admin-server"
            );
        }
        let dir = TempDir::new("kdc");
        let port = free_udp_tcp_port();
        let d = dir.path().display();
        fs::write(
            dir.join("kdc.conf"),
            format!(
                "[kdcdefaults]\n    kdc_listen = 127.0.0.1:{port}\n    kdc_tcp_listen = 127.0.0.1:{port}\n\
                 [realms]\n    {realm} = {{\n        database_name = {d}/principal\n        \
                 acl_file = {d}/kadm5.acl\n        key_stash_file = {d}/stash\n        \
                 master_key_type = aes256-cts-hmac-sha1-96\n        \
                 supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n        \
                 default_principal_flags = +preauth\n    }}\n\
                 [logging]\n    kdc = FILE:{d}/kdc.log\n"
            ),
        )
        .expect("write kdc.conf");
        fs::write(dir.join("kadm5.acl"), "").expect("write kadm5.acl");
        Krb5Conf::new(realm)
            .realm(realm, port)
            .write(&dir.join("krb5.conf"));
        kdc_tool(
            dir.path(),
            KDB5_UTIL,
            &["-r", realm, "create", "-s", "-P", MASTER_PASSWORD],
            "",
        );
        let mut commands = String::new();
        for p in principals {
            match p.password {
                Some(password) => {
                    secrets::record_password(password.as_bytes());
                    writeln!(
                        commands,
                        "addprinc {} -pw {} {}",
                        p.flags,
                        kadmin_quote(password),
                        kadmin_quote(p.name)
                    )
                }
                None => writeln!(
                    commands,
                    "addprinc {} -randkey {}",
                    p.flags,
                    kadmin_quote(p.name)
                ),
            }
            .expect("write to a String");
        }
        let host = format!("host/{HOSTNAME}");
        let keytab = dir.join("host.keytab");
        writeln!(commands, "addprinc -randkey {host}").expect("write to a String");
        writeln!(commands, "ktadd -k {} {host}", keytab.display()).expect("write to a String");
        kdc_tool(dir.path(), KADMIN_LOCAL, &["-r", realm], &commands);
        let mut kdc = Kdc {
            dir,
            realm: realm.to_string(),
            port,
            child: None,
            watchdog: None,
        };
        kdc.run();
        kdc
    }

    fn run(&mut self) {
        let log = fs::File::create(self.dir.join("krb5kdc.out")).expect("create krb5kdc.out");
        let mut cmd = Command::new(KRB5KDC);
        cmd.args(["-n", "-r", &self.realm, "-P"])
            .arg(self.dir.join("krb5kdc.pid"))
            .env("KRB5_CONFIG", self.dir.join("krb5.conf"))
            .env("KRB5_KDC_PROFILE", self.dir.join("kdc.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("spawn krb5kdc");
        let pid = child.id() as i32;
        self.child = Some(child);
        if let Some((_, _, start_time)) = proc_stat(pid) {
            self.watchdog = Some(Watchdog::start("kdc-watchdog", pid, start_time, None));
        }
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("krb5kdc exited with {status}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < DEFAULT_TIMEOUT,
                "krb5kdc does not listen on 127.0.0.1:{} in time:\n{}",
                self.port,
                self.log()
            );
            sleep(Duration::from_millis(10));
        }
    }

    /// The port the KDC listens on (UDP and TCP).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A keytab with the key of `host/<HOSTNAME>@realm`.
    pub fn host_keytab(&self) -> PathBuf {
        self.dir.join("host.keytab")
    }

    /// The KDC's output and log, for failure messages.
    pub fn log(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "--- krb5kdc output ---\n{}--- kdc.log ---\n{}",
            read("krb5kdc.out"),
            read("kdc.log")
        )
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, DEFAULT_TIMEOUT);
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
    }
}

/// A `krb5.conf` for the daemons under test.
pub struct Krb5Conf {
    default_realm: String,
    realms: Vec<(String, u16)>,
    keytab: Option<PathBuf>,
    ccache: Option<PathBuf>,
}

impl Krb5Conf {
    pub fn new(default_realm: &str) -> Krb5Conf {
        Krb5Conf {
            default_realm: default_realm.to_string(),
            realms: Vec::new(),
            keytab: None,
            ccache: None,
        }
    }

    /// A realm whose KDC listens on 127.0.0.1:`port`.
    pub fn realm(mut self, realm: &str, port: u16) -> Krb5Conf {
        self.realms.push((realm.to_string(), port));
        self
    }

    /// `default_keytab_name`.
    pub fn default_keytab(mut self, keytab: &Path) -> Krb5Conf {
        self.keytab = Some(keytab.to_path_buf());
        self
    }

    /// `default_ccache_name` (a file that must never appear).
    pub fn default_ccache(mut self, ccache: &Path) -> Krb5Conf {
        self.ccache = Some(ccache.to_path_buf());
        self
    }

    pub fn text(&self) -> String {
        let mut text = format!(
            "[libdefaults]\n    default_realm = {}\n    dns_lookup_kdc = false\n    \
             dns_lookup_realm = false\n    dns_canonicalize_hostname = false\n    rdns = false\n",
            self.default_realm
        );
        if let Some(keytab) = &self.keytab {
            let _ = writeln!(text, "    default_keytab_name = FILE:{}", keytab.display());
        }
        if let Some(ccache) = &self.ccache {
            let _ = writeln!(text, "    default_ccache_name = FILE:{}", ccache.display());
        }
        text.push_str("[realms]\n");
        for (realm, port) in &self.realms {
            let _ = writeln!(
                text,
                "    {realm} = {{\n        kdc = 127.0.0.1:{port}\n    }}"
            );
        }
        let _ = writeln!(
            text,
            "[domain_realm]\n    {HOSTNAME} = {}",
            self.default_realm
        );
        text
    }

    pub fn write(&self, path: &Path) {
        fs::write(path, self.text()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// The environment a daemon under test needs to read `krb5_conf` (and nothing of /etc),
/// with the replay-cache directory at `rcache_dir`.
pub fn daemon_env(krb5_conf: &Path, rcache_dir: &Path) -> Vec<(OsString, OsString)> {
    vec![
        ("KRB5_CONFIG".into(), krb5_conf.into()),
        ("KRB5RCACHEDIR".into(), rcache_dir.into()),
    ]
}

/// A KDC that never answers: UDP datagrams are read and dropped, TCP connections are
/// accepted and held open in silence. Stopped on drop.
pub struct SilentKdc {
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl SilentKdc {
    pub fn start() -> SilentKdc {
        let (udp, tcp) = loop {
            let port = free_udp_tcp_port();
            if let (Ok(udp), Ok(tcp)) = (
                UdpSocket::bind(("127.0.0.1", port)),
                TcpListener::bind(("127.0.0.1", port)),
            ) {
                break (udp, tcp);
            }
        };
        let port = udp.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("udp timeout");
        tcp.set_nonblocking(true).expect("nonblocking listener");
        let udp_stop = Arc::clone(&stop);
        let udp_thread = thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !udp_stop.load(Ordering::SeqCst) {
                let _ = udp.recv_from(&mut buf);
            }
        });
        let tcp_stop = Arc::clone(&stop);
        let tcp_thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !tcp_stop.load(Ordering::SeqCst) {
                match tcp.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => sleep(Duration::from_millis(20)),
                }
            }
        });
        SilentKdc {
            port,
            stop,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for SilentKdc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
