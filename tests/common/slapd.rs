//! A private OpenLDAP `slapd` for the `-a ldap` tests (ldap.md §11): Debian's unmodified
//! slapd 2.5 with its own `slapd.conf` and mdb database in a temp dir (nothing of
//! `/etc/ldap/slapd.d` is read or changed), listening on free ports of 127.0.0.1 and ::1
//! (`ldap://` with StartTLS, `ldaps://`) and on an `ldapi://` socket in the temp dir; a
//! private EC CA made with `openssl` signs a server certificate for `localhost`, 127.0.0.1
//! and ::1, and a client certificate. Entries are loaded offline with `slapadd`; password
//! values come from `slappasswd` (and `mkpasswd` for `{CRYPT}`).
//!
//! Started in the foreground with `-d stats` (one log line per operation, which shows
//! whether a bind travelled over TLS: `ssf=`), in its own process group, stopped by its PID;
//! a [`Watchdog`] stops it (and removes its dir) if the test process goes away first, so a
//! test binary can share one instance ([`Slapd::shared`]). Needs root.
//!
//! Every password below is recorded for the secrets scan when the directory is built
//! (`secrets::record_password`), stored hashes included.
#![forbid(unsafe_code)]
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::common::dovecot_client::b64;
use crate::common::{
    CmdResult, DEFAULT_TIMEOUT, TempDir, Watchdog, free_port, loopback_ports_accept, require_root,
    run_command, secrets, start_time_of, stop_child,
};

pub const SLAPD: &str = "/usr/sbin/slapd";
pub const SLAPADD: &str = "/usr/sbin/slapadd";
pub const SLAPPASSWD: &str = "/usr/sbin/slappasswd";
pub const LDAPPASSWD: &str = "/usr/bin/ldappasswd";
pub const LDAPMODIFY: &str = "/usr/bin/ldapmodify";
pub const MKPASSWD: &str = "/usr/bin/mkpasswd";

pub const SUFFIX: &str = "dc=example,dc=org";
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
pub const CONTRACTORS: &str = "ou=contractors,dc=example,dc=org";
/// Holds [`SUB`]: a login `ldsub,ou=contractors` put into fastbind's
/// `uid=%u,ou=people,...` names it when escaped as a filter (upstream), not as a DN.
pub const PEOPLE_CONTRACTORS: &str = "ou=contractors,ou=people,dc=example,dc=org";
pub const HOSTED: &str = "ou=hosted,dc=example,dc=org";
pub const GROUPS: &str = "ou=groups,dc=example,dc=org";
/// Holds nobody, only a referral to [`PEOPLE`].
pub const STAFF: &str = "ou=staff,dc=example,dc=org";
/// A referral to itself.
pub const LOOP: &str = "ou=loop,dc=example,dc=org";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
pub const ROOT_PW: &str = "Admin-Lab-secret1";
/// The service account: may read `userPassword`.
pub const READER_DN: &str = "cn=reader,dc=example,dc=org";
pub const READER_PW: &str = "Reader-Lab-pw1";
/// `cn=mail,ou=groups` (groupOfUniqueNames) and `cn=mailusers,ou=groups` (posixGroup).
pub const MAIL_GROUP: &str = "cn=mail,ou=groups,dc=example,dc=org";

pub const ALICE: (&str, &str) = ("ldalice", "Alice-Lab-pw1");
/// Not in any group.
pub const BOB: (&str, &str) = ("ldbob", "Bob-Lab-pw1");
/// Two entries with this uid (ou=people and ou=contractors), same password.
pub const DUP: (&str, &str) = ("lddup", "Dup-Lab-pw1");
/// `employeeType: disabled` and locked by ppolicy (`pwdAccountLockedTime`).
pub const DISABLED: (&str, &str) = ("lddisabled", "Disabled-Lab-pw1");
/// Lives in ou=contractors,ou=people only.
pub const SUB: (&str, &str) = ("ldsub", "Sub-Lab-pw1");
/// A uid made of filter metacharacters.
pub const META: (&str, &str) = ("ldmeta*()\\", "Meta-Lab-pw1");
/// Space, double quote, backslash, UTF-8.
pub const SPECIAL: (&str, &str) = ("ldspecial", "pä ss \"q\\ €");
/// Used only by the test that checks, in slapd's log, that binds travel over TLS (the
/// shared slapd sees other tests' binds in clear at the same time).
pub const TLS_USER: (&str, &str) = ("ldtls", "Tls-Lab-pw1");
/// Likewise, for the test that shows upstream binding in clear.
pub const CLEAR_USER: (&str, &str) = ("ldclearbind", "Clear-bind-Lab-pw1");
/// Changed by the test that shows upstream's fastbind answering from its last bind
/// (issue #550), to [`FAST_CHANGED_PW`].
pub const FAST_USER: (&str, &str) = ("ldfast", "Fast-Lab-pw1");
pub const FAST_CHANGED_PW: &str = "Fast-Lab-pw2";
/// Changed by the ldappasswd test, to [`CHANGED_PW`].
pub const CHANGE: (&str, &str) = ("ldchange", "Change-Lab-pw1");
pub const CHANGED_PW: &str = "Changed-Lab-pw2";
/// `ou=example.net,ou=hosted` and `ou=example.com,ou=hosted` each have a `vuser`.
pub const VUSER_NET_PW: &str = "Vnet-Lab-pw1";
pub const VUSER_COM_PW: &str = "Vcom-Lab-pw1";
/// Two `userPassword` values.
pub const MULTI: (&str, &str, &str) = ("ldmulti", "Multi-A-Lab-pw1", "Multi-B-Lab-pw1");
/// `{SSHA}AAAA`: a salted value shorter than its digest.
pub const BROKEN: &str = "ldbroken";
pub const BROKEN_VALUE: &str = "{SSHA}AAAA";
/// A scheme nobody knows; the stored text is also tried as the password.
pub const UNKNOWN_SCHEME: &str = "ldunknown";
pub const UNKNOWN_SCHEME_VALUE: &str = "{PBKDF2-SHA512}10000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";

/// The 200-byte password of `ldlong`.
pub fn long_password() -> String {
    let pw: String = format!("Long-Lab-pw-{}", "0123456789".repeat(20));
    pw[..200].to_string()
}
pub const LONG_USER: &str = "ldlong";

/// One user per password scheme: (uid, scheme, password). `{CRYPT}` values come from
/// mkpasswd, the others from slappasswd; an empty scheme stores the password in clear.
pub const SCHEME_USERS: &[(&str, &str, &str)] = &[
    ("ldcrypt-y", "{CRYPT}yescrypt", "Crypt-y-Lab-pw1"),
    ("ldcrypt-6", "{CRYPT}sha512crypt", "Crypt-6-Lab-pw1"),
    ("ldssha", "{SSHA}", "Ssha-Lab-pw1"),
    ("ldsha", "{SHA}", "Sha-Lab-pw1"),
    ("ldsmd5", "{SMD5}", "Smd5-Lab-pw1"),
    ("ldmd5", "{MD5}", "Md5-Lab-pw1"),
    ("ldssha256", "{SSHA256}", "Ssha256-Lab-pw1"),
    ("ldssha512", "{SSHA512}", "Ssha512-Lab-pw1"),
    ("ldargon2", "{ARGON2}", "Argon2-Lab-pw1"),
    ("ldclear", "", "Clear-Lab-pw1"),
];

/// Every password of the directory (for the secrets checks of a test).
pub fn all_passwords() -> Vec<String> {
    let mut all: Vec<String> = [
        ROOT_PW,
        READER_PW,
        ALICE.1,
        BOB.1,
        DUP.1,
        DISABLED.1,
        SUB.1,
        META.1,
        SPECIAL.1,
        CHANGE.1,
        CHANGED_PW,
        TLS_USER.1,
        CLEAR_USER.1,
        FAST_USER.1,
        FAST_CHANGED_PW,
        VUSER_NET_PW,
        VUSER_COM_PW,
        MULTI.1,
        MULTI.2,
        UNKNOWN_SCHEME_VALUE,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.push(long_password());
    all.extend(SCHEME_USERS.iter().map(|(_, _, pw)| pw.to_string()));
    all
}

/// How to run an instance.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlapdOptions {
    /// `TLSVerifyClient demand`: TLS clients must show a certificate of the lab CA.
    pub require_client_certificate: bool,
}

pub struct Slapd {
    dir: Option<TempDir>,
    path: PathBuf,
    options: SlapdOptions,
    child: Mutex<Option<Child>>,
    watchdog: Mutex<Option<Watchdog>>,
    /// `ldap://` (and StartTLS) on 127.0.0.1 and ::1.
    pub ldap_port: u16,
    /// `ldaps://` on 127.0.0.1 and ::1.
    pub ldaps_port: u16,
    /// Every stored `userPassword` value: (the entry's uid, the value).
    pub stored_values: Vec<(String, String)>,
}

static SHARED: OnceLock<Slapd> = OnceLock::new();

impl Slapd {
    /// The instance this test binary shares (started on first use; stopped, and its dir
    /// removed, by its watchdog when the test process exits).
    pub fn shared() -> &'static Slapd {
        SHARED.get_or_init(|| {
            let mut slapd = Slapd::start_with(SlapdOptions::default());
            // No Drop runs for a static: the watchdog cleans up after the process.
            let dir = slapd.dir.take().expect("temp dir");
            let keep = std::env::var_os("KEEP_TEST_DIRS").is_some();
            let path = dir.path().to_path_buf();
            std::mem::forget(dir);
            slapd.arm_watchdog(if keep { None } else { Some(&path) });
            slapd
        })
    }

    /// A private instance, stopped on drop.
    pub fn start() -> Slapd {
        Slapd::start_with(SlapdOptions::default())
    }

    pub fn start_with(options: SlapdOptions) -> Slapd {
        require_root();
        for tool in [SLAPD, SLAPADD, SLAPPASSWD, LDAPPASSWD, MKPASSWD] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install slapd, ldap-utils and whois (scripts/test.sh does, \
                 behind a policy-rc.d so that the packaged slapd does not start)"
            );
        }
        let dir = TempDir::new("slapd");
        let ldap_port = free_port();
        let ldaps_port = loop {
            let port = free_port();
            if port != ldap_port {
                break port;
            }
        };
        let path = dir.path().to_path_buf();
        make_certificates(&path.join("tls"));
        let stored_values = write_directory(&path, options, ldap_port, ldaps_port);
        let slapd = Slapd {
            dir: Some(dir),
            path,
            options,
            child: Mutex::new(None),
            watchdog: Mutex::new(None),
            ldap_port,
            ldaps_port,
            stored_values,
        };
        slapd.run();
        slapd
    }

    fn arm_watchdog(&mut self, cleanup: Option<&Path>) {
        let pid = self.pid().expect("slapd is running");
        let started = start_time_of(pid).expect("slapd's start time");
        *self.watchdog.lock().unwrap() =
            Some(Watchdog::start("slapd-watchdog", pid, started, cleanup));
    }

    fn pid(&self) -> Option<i32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id() as i32)
    }

    /// The URLs slapd listens on.
    fn listen_urls(&self) -> String {
        format!(
            "ldap://127.0.0.1:{p}/ ldap://[::1]:{p}/ ldaps://127.0.0.1:{s}/ ldaps://[::1]:{s}/ {}",
            self.ldapi_uri(),
            p = self.ldap_port,
            s = self.ldaps_port
        )
    }

    /// Starts slapd (again) and waits until every listener answers.
    pub fn run(&self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.join("slapd.log"))
            .expect("open slapd.log");
        let mut cmd = Command::new(SLAPD);
        cmd.args(["-d", "stats", "-f"])
            .arg(self.path.join("slapd.conf"))
            .arg("-h")
            .arg(self.listen_urls())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0);
        let child = cmd.spawn().expect("spawn slapd");
        *self.child.lock().unwrap() = Some(child);
        let started = Instant::now();
        loop {
            let up = self.ldapi_path().exists()
                && loopback_ports_accept(&[self.ldap_port, self.ldaps_port]);
            if up {
                return;
            }
            let exited = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .map(|c| matches!(c.try_wait(), Ok(Some(_))))
                .unwrap_or(true);
            if exited || started.elapsed() > DEFAULT_TIMEOUT {
                let log = self.log();
                self.stop();
                panic!("slapd did not listen in time\n--- slapd log ---\n{log}");
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, SIGKILL after 10 s (the database is a throw-away).
    pub fn stop(&self) {
        if let Some(mut watchdog) = self.watchdog.lock().unwrap().take() {
            watchdog.disarm();
        }
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        stop_child(&mut child, DEFAULT_TIMEOUT);
        let _ = fs::remove_file(self.ldapi_path());
    }

    pub fn dir(&self) -> &Path {
        &self.path
    }

    pub fn ldap_uri(&self) -> String {
        format!("ldap://127.0.0.1:{}/", self.ldap_port)
    }

    pub fn ldap_v6_uri(&self) -> String {
        format!("ldap://[::1]:{}/", self.ldap_port)
    }

    pub fn ldaps_uri(&self) -> String {
        format!("ldaps://127.0.0.1:{}/", self.ldaps_port)
    }

    pub fn ldaps_v6_uri(&self) -> String {
        format!("ldaps://[::1]:{}/", self.ldaps_port)
    }

    pub fn ldaps_localhost_uri(&self) -> String {
        format!("ldaps://localhost:{}/", self.ldaps_port)
    }

    pub fn ldapi_path(&self) -> PathBuf {
        self.path.join("ldapi")
    }

    pub fn ldapi_uri(&self) -> String {
        let encoded = self.ldapi_path().display().to_string().replace('/', "%2F");
        format!("ldapi://{encoded}")
    }

    /// The lab CA (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.path.join("tls/ca.pem")
    }

    /// A directory holding the CA certificate (for `ldap_tls_cacert_dir`).
    pub fn ca_dir(&self) -> PathBuf {
        self.path.join("tls/cadir")
    }

    /// Another CA, which signed nothing slapd shows.
    pub fn other_ca_file(&self) -> PathBuf {
        self.path.join("tls/other-ca.pem")
    }

    /// A client certificate and key signed by the lab CA.
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        (
            self.path.join("tls/client.pem"),
            self.path.join("tls/client.key"),
        )
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.path.join("slapd.log")).unwrap_or_default()
    }

    /// The `ssf` of every simple bind as `dn` in the log so far (0: in clear).
    pub fn bind_ssfs(&self, dn: &str) -> Vec<u32> {
        let needle = format!("BIND dn=\"{dn}\" mech=SIMPLE");
        self.log()
            .lines()
            .filter(|line| line.contains(&needle))
            .filter_map(|line| {
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix("ssf="))
                    .and_then(|n| n.parse().ok())
            })
            .collect()
    }

    /// `ldappasswd` as the root DN over ldapi: sets `dn`'s password to `new`.
    pub fn set_password(&self, dn: &str, new: &str) {
        secrets::record_password(new.as_bytes());
        let mut cmd = Command::new(LDAPPASSWD);
        cmd.args([
            "-x",
            "-H",
            &self.ldapi_uri(),
            "-D",
            ROOT_DN,
            "-w",
            ROOT_PW,
            "-s",
            new,
            dn,
        ]);
        checked(run_command(cmd, None, DEFAULT_TIMEOUT), "ldappasswd");
    }

    /// `ldapmodify` as the root DN over ldapi.
    pub fn modify(&self, ldif: &str) {
        let mut cmd = Command::new(LDAPMODIFY);
        cmd.args(["-x", "-H", &self.ldapi_uri(), "-D", ROOT_DN, "-w", ROOT_PW]);
        checked(
            run_command(cmd, Some(ldif.as_bytes()), DEFAULT_TIMEOUT),
            "ldapmodify",
        );
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn checked(result: CmdResult, what: &str) -> String {
    assert!(
        result.status.is_some_and(|s| s.success()),
        "{what} failed: {}",
        result.output()
    );
    result.stdout_str()
}

fn openssl(args: &[&str], dir: &Path) {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    checked(
        run_command(cmd, None, DEFAULT_TIMEOUT),
        &format!("openssl {}", args[0]),
    );
}

/// A CA, a server certificate for localhost, 127.0.0.1 and ::1, a client certificate, and
/// an unrelated CA, all EC P-256, in `dir`.
fn make_certificates(dir: &Path) {
    fs::create_dir_all(dir.join("cadir")).expect("create tls dir");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, subject) in [
        ("ca", "/CN=saslauthd-rs lab CA"),
        ("other-ca", "/CN=another CA"),
    ] {
        let key = format!("{name}.key");
        let pem = format!("{name}.pem");
        let mut args = vec!["req", "-x509", "-days", "30", "-subj", subject];
        args.extend_from_slice(&ec);
        args.extend_from_slice(&["-keyout", &key, "-out", &pem]);
        openssl(&args, dir);
    }
    for (name, subject, san) in [
        (
            "server",
            "/CN=localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
        ),
        (
            "client",
            "/CN=saslauthd-client",
            "extendedKeyUsage=clientAuth",
        ),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        fs::write(dir.join(&ext), format!("{san}\n")).expect("write ext");
        let mut args = vec!["req", "-subj", subject];
        args.extend_from_slice(&ec);
        args.extend_from_slice(&["-keyout", &key, "-out", &csr]);
        openssl(&args, dir);
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
            dir,
        );
    }
    fs::copy(dir.join("ca.pem"), dir.join("cadir/lab-ca.pem")).expect("copy CA");
    for key in ["ca.key", "other-ca.key", "server.key", "client.key"] {
        fs::set_permissions(dir.join(key), fs::Permissions::from_mode(0o600)).expect("chmod key");
    }
}

/// A `userPassword` value for `password` with `scheme`.
fn hash(scheme: &str, password: &str) -> String {
    if scheme.is_empty() {
        return password.to_string();
    }
    if let Some(method) = scheme.strip_prefix("{CRYPT}") {
        let mut cmd = Command::new(MKPASSWD);
        cmd.args(["-m", method, "--stdin"]);
        let out = checked(
            run_command(cmd, Some(password.as_bytes()), DEFAULT_TIMEOUT),
            "mkpasswd",
        );
        return format!("{{CRYPT}}{}", out.trim());
    }
    let mut cmd = Command::new(SLAPPASSWD);
    match scheme {
        "{SSHA256}" | "{SSHA512}" => {
            cmd.args(["-o", "module-load=pw-sha2"]);
        }
        "{ARGON2}" => {
            cmd.args(["-o", "module-load=argon2"]);
        }
        _ => {}
    }
    cmd.args(["-h", scheme, "-s", password]);
    let out = checked(run_command(cmd, None, DEFAULT_TIMEOUT), "slappasswd");
    let value = out.trim().to_string();
    assert!(
        value.starts_with(scheme),
        "slappasswd -h {scheme}: {value:?}"
    );
    value
}

/// LDIF of one inetOrgPerson.
fn person(dn: &str, uid: &str, extra: &[(&str, &str)], passwords: &[String]) -> String {
    let mut out = format!("dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: lab\n");
    for (attr, value) in extra {
        out.push_str(&format!("{attr}: {value}\n"));
    }
    for password in passwords {
        // Base64 keeps any byte safe in LDIF.
        out.push_str(&format!("userPassword:: {}\n", b64(password.as_bytes())));
    }
    out.push('\n');
    out
}

/// `slapd.conf`, the entries (loaded with slapadd); returns every stored password value.
fn write_directory(
    dir: &Path,
    options: SlapdOptions,
    ldap_port: u16,
    ldaps_port: u16,
) -> Vec<(String, String)> {
    let d = dir.display();
    fs::create_dir_all(dir.join("db")).expect("create db dir");
    let verify_client = if options.require_client_certificate {
        "TLSVerifyClient demand\n"
    } else {
        ""
    };
    let conf = format!(
        "# private lab instance written by tests/common/slapd.rs (ports {ldap_port}, {ldaps_port})
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload pw-sha2
moduleload argon2
moduleload ppolicy
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
TLSCACertificateFile {d}/tls/ca.pem
TLSCertificateFile {d}/tls/server.pem
TLSCertificateKeyFile {d}/tls/server.key
{verify_client}database mdb
maxsize 10485760
suffix \"{SUFFIX}\"
rootdn \"{ROOT_DN}\"
rootpw {ROOT_PW}
directory {d}/db
overlay ppolicy
ppolicy_default \"cn=default,ou=policies,{SUFFIX}\"
access to attrs=userPassword
  by dn.exact=\"{READER_DN}\" read
  by self write
  by anonymous auth
  by * none
access to * by * read
"
    );
    fs::write(dir.join("slapd.conf"), conf).expect("write slapd.conf");

    let mut stored = Stored::default();
    secrets::record_password(ROOT_PW.as_bytes());
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n"
    );
    for ou in ["people", "contractors", "groups", "policies", "hosted"] {
        ldif.push_str(&format!(
            "dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
        ));
    }
    ldif.push_str(&format!(
        "dn: {PEOPLE_CONTRACTORS}\nobjectClass: organizationalUnit\nou: contractors\n\n"
    ));
    // Referrals: ou=staff holds one to ou=people; ou=loop refers to itself.
    ldif.push_str(&format!(
        "dn: {STAFF}\nobjectClass: organizationalUnit\nou: staff\n\n\
         dn: ou=remote,{STAFF}\nobjectClass: referral\nobjectClass: extensibleObject\n\
         ou: remote\nref: ldap://127.0.0.1:{ldap_port}/{PEOPLE}\n\n\
         dn: {LOOP}\nobjectClass: referral\nobjectClass: extensibleObject\nou: loop\n\
         ref: ldap://127.0.0.1:{ldap_port}/{LOOP}\n\n"
    ));
    for domain in ["example.net", "example.com"] {
        ldif.push_str(&format!(
            "dn: ou={domain},{HOSTED}\nobjectClass: organizationalUnit\nou: {domain}\n\n"
        ));
    }
    ldif.push_str(&format!(
        "dn: cn=default,ou=policies,{SUFFIX}\nobjectClass: person\nobjectClass: pwdPolicy\n\
         cn: default\nsn: policy\npwdAttribute: userPassword\npwdLockout: TRUE\n\n"
    ));
    ldif.push_str(&format!(
        "dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
         cn: reader\nuserPassword: {}\n\n",
        stored.value("reader", "{SSHA}", READER_PW)
    ));
    ldif.push_str(&ssha(
        ALICE.0,
        ALICE.1,
        &[
            ("mail", "ldalice@example.org"),
            ("businessCategory", "smtp"),
        ],
        &mut stored,
    ));
    ldif.push_str(&ssha(
        BOB.0,
        BOB.1,
        &[("mail", "ldbob@example.org")],
        &mut stored,
    ));
    ldif.push_str(&ssha(DUP.0, DUP.1, &[], &mut stored));
    ldif.push_str(&person(
        &format!("uid={},{CONTRACTORS}", DUP.0),
        DUP.0,
        &[],
        &[stored.value(DUP.0, "{SSHA}", DUP.1)],
    ));
    ldif.push_str(&ssha(
        DISABLED.0,
        DISABLED.1,
        &[
            ("employeeType", "disabled"),
            ("pwdAccountLockedTime", "000001010000Z"),
        ],
        &mut stored,
    ));
    ldif.push_str(&person(
        &format!("uid={},{PEOPLE_CONTRACTORS}", SUB.0),
        SUB.0,
        &[],
        &[stored.value(SUB.0, "{SSHA}", SUB.1)],
    ));
    ldif.push_str(&person(
        &format!("uid=ldmeta*()\\5c,{PEOPLE}"),
        META.0,
        &[],
        &[stored.value(META.0, "{SSHA}", META.1)],
    ));
    ldif.push_str(&ssha(SPECIAL.0, SPECIAL.1, &[], &mut stored));
    ldif.push_str(&ssha(CHANGE.0, CHANGE.1, &[], &mut stored));
    ldif.push_str(&ssha(TLS_USER.0, TLS_USER.1, &[], &mut stored));
    ldif.push_str(&ssha(FAST_USER.0, FAST_USER.1, &[], &mut stored));
    ldif.push_str(&ssha(CLEAR_USER.0, CLEAR_USER.1, &[], &mut stored));
    ldif.push_str(&ssha(LONG_USER, &long_password(), &[], &mut stored));
    ldif.push_str(&person(
        &format!("uid={},{PEOPLE}", MULTI.0),
        MULTI.0,
        &[],
        &[
            stored.value(MULTI.0, "{SSHA}", MULTI.1),
            stored.value(MULTI.0, "{SSHA512}", MULTI.2),
        ],
    ));
    for (uid, raw) in [
        (BROKEN, BROKEN_VALUE),
        (UNKNOWN_SCHEME, UNKNOWN_SCHEME_VALUE),
    ] {
        stored.raw(uid, raw);
        ldif.push_str(&person(
            &format!("uid={uid},{PEOPLE}"),
            uid,
            &[],
            &[raw.to_string()],
        ));
    }
    for (uid, scheme, pw) in SCHEME_USERS {
        ldif.push_str(&person(
            &format!("uid={uid},{PEOPLE}"),
            uid,
            &[],
            &[stored.value(uid, scheme, pw)],
        ));
    }
    for (domain, pw) in [("example.net", VUSER_NET_PW), ("example.com", VUSER_COM_PW)] {
        ldif.push_str(&person(
            &format!("uid=vuser,ou={domain},{HOSTED}"),
            "vuser",
            &[("mail", &format!("vuser@{domain}"))],
            &[stored.value("vuser", "{SSHA}", pw)],
        ));
    }
    ldif.push_str(&format!(
        "dn: {MAIL_GROUP}\nobjectClass: groupOfUniqueNames\ncn: mail\n\
         uniqueMember: uid={},{PEOPLE}\nuniqueMember: uid={},{PEOPLE}\n\n",
        ALICE.0, SPECIAL.0
    ));
    ldif.push_str(&format!(
        "dn: cn=mailusers,{GROUPS}\nobjectClass: posixGroup\ncn: mailusers\ngidNumber: 5000\n\
         memberUid: {}\nmemberUid: {}\n\n",
        ALICE.0, SPECIAL.0
    ));
    fs::write(dir.join("data.ldif"), &ldif).expect("write data.ldif");
    let mut cmd = Command::new(SLAPADD);
    cmd.args(["-q", "-f"])
        .arg(dir.join("slapd.conf"))
        .arg("-l")
        .arg(dir.join("data.ldif"));
    checked(run_command(cmd, None, DEFAULT_TIMEOUT), "slapadd");
    stored.values
}

/// The stored password values, each recorded for the secrets scan with its password.
#[derive(Default)]
struct Stored {
    values: Vec<(String, String)>,
}

impl Stored {
    fn value(&mut self, uid: &str, scheme: &str, password: &str) -> String {
        secrets::record_password(password.as_bytes());
        let value = hash(scheme, password);
        self.raw(uid, &value);
        value
    }

    fn raw(&mut self, uid: &str, value: &str) {
        secrets::record_password(value.as_bytes());
        self.values.push((uid.to_string(), value.to_string()));
    }
}

/// An entry in ou=people with one `{SSHA}` password.
fn ssha(uid: &str, password: &str, extra: &[(&str, &str)], stored: &mut Stored) -> String {
    person(
        &format!("uid={uid},{PEOPLE}"),
        uid,
        extra,
        &[stored.value(uid, "{SSHA}", password)],
    )
}
