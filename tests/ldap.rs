//! Integration and interop tests of `-a ldap`: our daemon against a private OpenLDAP slapd
//! (tests/common/slapd.rs: loopback and ldapi only, a private CA with IP SANs; one instance
//! shared by the tests of this binary, private ones where a test stops the server), against
//! scripted TCP listeners for what a real server can't do (never answer), side by side with
//! Debian's `saslauthd -a ldap` (the differential), and behind Debian's `testsaslauthd` and
//! Postfix + swaks.
//!
//! Every daemon runs in the harness's private mount namespace with a private `/etc/hosts`
//! (hosts from files only). Needs root (the harness panics otherwise).
#![forbid(unsafe_code)]

mod common;
#[path = "common/slapd.rs"]
mod slapd;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::clients;
use common::postfix::{Advert, Postfix, SmtpAuth, SmtpCase, SmtpListener, smtp_matrix};
use common::*;
use slapd::*;

const OK: &str = "OK";
const NO: &str = "NO";

/// A filter that keeps disabled accounts out (bind, custom).
const FILTER: &str = "(&(uid=%u)(!(employeeType=disabled)))";
/// fastbind's DN template.
const FASTBIND_DN: &str = "uid=%u,ou=people,dc=example,dc=org";
const WRONG_PW: &str = "Wrong-Lab-pw9";

/// The methods, with the lines that configure each against `slapd` (the service account
/// for bind and custom; custom needs it to read `userPassword`).
fn method_conf(method: &str) -> String {
    match method {
        "fastbind" => format!("ldap_auth_method: fastbind\nldap_filter: {FASTBIND_DN}\n"),
        "bind" | "custom" => format!(
            "ldap_auth_method: {method}\nldap_filter: {FILTER}\nldap_bind_dn: {READER_DN}\n\
             ldap_password: {READER_PW}\n"
        ),
        other => panic!("unknown method {other}"),
    }
}

const METHODS: [&str; 3] = ["bind", "fastbind", "custom"];

/// A daemon (ours or upstream's) with `-a ldap -O <file>`.
struct Lab {
    daemon: Daemon,
    conf_dir: TempDir,
    hosts: PrivateHosts,
}

impl Lab {
    /// Our daemon with `conf` as its saslauthd.conf, plus `extra` arguments.
    fn start(conf: &str, extra: &[&str]) -> Lab {
        Lab::start_program(&ours_bin("saslauthd"), conf, extra)
    }

    /// Debian's saslauthd with the same file.
    fn upstream(conf: &str) -> Lab {
        Lab::upstream_with(conf, &[])
    }

    /// Debian's saslauthd with the same file and more arguments.
    fn upstream_with(conf: &str, extra: &[&str]) -> Lab {
        assert!(
            Path::new(UPSTREAM_SASLAUTHD).exists(),
            "{UPSTREAM_SASLAUTHD} is missing: install sasl2-bin"
        );
        Lab::start_program(Path::new(UPSTREAM_SASLAUTHD), conf, extra)
    }

    fn start_program(program: &Path, conf: &str, extra: &[&str]) -> Lab {
        let conf_dir = TempDir::new("ldap-conf");
        let path = conf_dir.join("saslauthd.conf");
        fs::write(&path, conf).expect("write saslauthd.conf");
        record_conf_secrets(conf);
        let hosts = PrivateHosts::new();
        let options = Options {
            extra_binds: hosts.binds(),
            ..Options::default()
        };
        let path = path.to_str().expect("utf-8 path").to_string();
        let mut args = vec!["-a", "ldap", "-O", path.as_str()];
        args.extend_from_slice(extra);
        Lab {
            daemon: Daemon::start_with(program, &args, options),
            conf_dir,
            hosts,
        }
    }

    fn conf_path(&self) -> PathBuf {
        self.conf_dir.join("saslauthd.conf")
    }

    fn reply(&self, user: &str, pass: &str, service: &str, realm: &str) -> Option<String> {
        auth(&self.daemon.socket(), user, pass, service, realm)
    }

    /// One request (service imap, no realm); asserts the reply, returns the time taken.
    fn expect(&self, user: &str, pass: &str, want: &str) -> Duration {
        self.expect_in(user, pass, "imap", "", want)
    }

    fn expect_in(
        &self,
        user: &str,
        pass: &str,
        service: &str,
        realm: &str,
        want: &str,
    ) -> Duration {
        let started = Instant::now();
        let got = self.reply(user, pass, service, realm);
        assert_eq!(
            got.as_deref(),
            Some(want),
            "user {user:?} service {service:?} realm {realm:?}\n--- log ---\n{}",
            self.daemon.log()
        );
        started.elapsed()
    }

    fn assert_log_has(&self, needle: &str) {
        assert!(
            self.daemon.wait_for_log(needle, Duration::from_secs(3)),
            "the log lacks {needle:?}\n--- log ---\n{}",
            self.daemon.log()
        );
    }

    /// No password of the directory in the log; SIGTERM; exit 0.
    fn finish(self) {
        let Lab { daemon, .. } = self;
        daemon.assert_log_free_of(&all_passwords());
        daemon.finish(&[WRONG_PW]);
    }

    /// Upstream: stop it (its exit is not what is tested).
    fn stop(self) {
        let Lab { mut daemon, .. } = self;
        daemon.stop();
    }
}

/// The bind password of a config file is a secret too.
fn record_conf_secrets(conf: &str) {
    for line in conf.lines() {
        if let Some(pw) = line
            .strip_prefix("ldap_password:")
            .or_else(|| line.strip_prefix("ldap_bind_pw:"))
        {
            secrets::record_password(pw.trim_start().as_bytes());
        }
    }
}

/// `conf` for a failure message: the bind password's value replaced by its length.
fn masked_conf(conf: &str) -> String {
    conf.lines()
        .map(|line| {
            ["ldap_password:", "ldap_bind_pw:"]
                .iter()
                .find_map(|key| line.strip_prefix(key).map(|pw| (key, pw.trim_start())))
                .map_or_else(
                    || format!("{line}\n"),
                    |(key, pw)| format!("{key} <{} bytes>\n", pw.len()),
                )
        })
        .collect()
}

/// The usual file: `servers` and the lines of `method`, search base = the suffix.
fn conf(servers: &str, method: &str, extra: &str) -> String {
    format!(
        "ldap_servers: {servers}\nldap_search_base: {SUFFIX}\n{}{extra}",
        method_conf(method)
    )
}

// ---------------------------------------------------------------------------------------------
// The methods against the shared slapd
// ---------------------------------------------------------------------------------------------

#[test]
fn every_method_good_wrong_unknown_duplicate_disabled() {
    let slapd = Slapd::shared();
    for method in METHODS {
        let lab = Lab::start(&conf(&slapd.ldap_uri(), method, ""), &[]);
        lab.expect(ALICE.0, ALICE.1, OK);
        lab.expect(ALICE.0, WRONG_PW, NO);
        lab.expect(ALICE.0, &ALICE.1[..ALICE.1.len() - 1], NO);
        lab.expect("ldnosuchuser", ALICE.1, NO);
        // fastbind never searches: the template names exactly one entry, so a uid held by
        // two entries is no ambiguity there.
        let duplicate = if method == "fastbind" { OK } else { NO };
        lab.expect(DUP.0, DUP.1, duplicate);
        // Filtered out (bind, custom); locked by the server's password policy (fastbind).
        lab.expect(DISABLED.0, DISABLED.1, NO);
        lab.expect(SPECIAL.0, SPECIAL.1, OK);
        lab.expect(SPECIAL.0, "pä ss \"q\\ ", NO);
        lab.assert_log_has(
            "auth failure: [user=ldalice] [service=imap] [realm=] [mech=ldap] [reason=Unknown]",
        );
        if method != "fastbind" {
            lab.assert_log_has("ldap: [user=lddup]: more than one entry matches");
            lab.assert_log_has("ldap: [user=ldnosuchuser]: user not found");
        }
        lab.finish();
    }
}

#[test]
fn every_password_scheme() {
    let slapd = Slapd::shared();
    // custom compares here; bind lets slapd compare (a control for the fixtures).
    for method in ["custom", "bind"] {
        let lab = Lab::start(&conf(&slapd.ldap_uri(), method, ""), &[]);
        for (uid, scheme, pw) in SCHEME_USERS {
            let got = lab.reply(uid, pw, "imap", "");
            assert_eq!(
                got.as_deref(),
                Some(OK),
                "{method} {uid} {scheme}\n{}",
                lab.daemon.log()
            );
            let got = lab.reply(uid, &format!("{pw}x"), "imap", "");
            assert_eq!(
                got.as_deref(),
                Some(NO),
                "{method} {uid} {scheme}\n{}",
                lab.daemon.log()
            );
        }
        // Every value of a multi-valued userPassword.
        lab.expect(MULTI.0, MULTI.1, OK);
        lab.expect(MULTI.0, MULTI.2, OK);
        lab.expect(MULTI.0, WRONG_PW, NO);
        // The stored text is never a password (upstream's custom takes it, as cleartext,
        // for any scheme it doesn't know, e.g. {SSHA512}).
        for (uid, value) in &slapd.stored_values {
            if value.starts_with('{') && uid != "reader" {
                lab.expect(uid, value, NO);
            }
        }
        lab.expect(UNKNOWN_SCHEME, UNKNOWN_SCHEME_VALUE, NO);
        // A short salted value: NO, and the daemon carries on (upstream's worker dies).
        for _ in 0..3 {
            lab.expect(BROKEN, "AAAA", NO);
        }
        lab.expect(ALICE.0, ALICE.1, OK);
        if method == "custom" {
            lab.assert_log_has("uses {PBKDF2-SHA512}, which is not supported: it never matches");
            lab.assert_log_has("is malformed ({SSHA} value has 3 bytes, expected more than 20)");
        }
        lab.finish();
    }
}

#[test]
fn special_and_long_passwords_are_never_cut() {
    let slapd = Slapd::shared();
    let long = long_password();
    assert_eq!(long.len(), 200);
    for method in METHODS {
        let lab = Lab::start(&conf(&slapd.ldap_uri(), method, ""), &[]);
        lab.expect(LONG_USER, &long, OK);
        // Upstream cuts at 127 bytes: the prefix alone, or the prefix with any tail.
        lab.expect(LONG_USER, &long[..127], NO);
        lab.expect(
            LONG_USER,
            &format!("{}{}", &long[..127], "y".repeat(73)),
            NO,
        );
        lab.expect(LONG_USER, &long[..199], NO);
        lab.expect(LONG_USER, &format!("{long}z"), NO);
        lab.expect(SPECIAL.0, SPECIAL.1, OK);
        lab.finish();
    }
}

#[test]
fn filter_and_dn_metacharacters_never_reach_another_entry() {
    let slapd = Slapd::shared();
    let metas = [
        "*",
        "ldali*",
        "*alice",
        "ldalice)(|(uid=*",
        "ldalice)(uid=*)(|(uid=x",
        "ldalic\\65",
        "uid=ldalice",
        "ldalice,ou=people,dc=example,dc=org",
        "ldalice+cn=x",
        "ldalice\\",
        "(ldalice)",
    ];
    for method in METHODS {
        let lab = Lab::start(&conf(&slapd.ldap_uri(), method, ""), &[]);
        for login in metas {
            lab.expect(login, ALICE.1, NO);
        }
        // A login with `,`/`=` can't leave the template's DN (upstream binds as the
        // contractor: its DN escaping is filter escaping).
        lab.expect("ldsub,ou=contractors", SUB.1, NO);
        lab.expect("lddup,ou=contractors", DUP.1, NO);
        // NUL: refused before the mechanism.
        let got = auth_bytes(
            &lab.daemon.socket(),
            &[b"ldalice\0*", ALICE.1.as_bytes(), b"imap", b""],
        );
        assert_eq!(got.as_deref(), Some("NO NUL byte in login"));
        // A uid made of metacharacters matches itself, and only itself.
        lab.expect(META.0, META.1, OK);
        lab.expect("ldmeta*", META.1, NO);
        lab.expect("ldmeta*()", META.1, NO);
        lab.finish();
    }
}

#[test]
fn realm_domain_and_service_macros() {
    let slapd = Slapd::shared();
    let servers = slapd.ldap_uri();
    let with = |base: &str, filter: &str, extra: &str| {
        format!("ldap_servers: {servers}\nldap_search_base: {base}\nldap_filter: {filter}\n{extra}")
    };
    // %d: the login's domain.
    let lab = Lab::start(&with(&format!("ou=%d,{HOSTED}"), "(uid=%U)", ""), &[]);
    lab.expect("vuser@example.net", VUSER_NET_PW, OK);
    lab.expect("vuser@example.com", VUSER_COM_PW, OK);
    lab.expect("vuser@example.com", VUSER_NET_PW, NO);
    // No fallback to the realm for %d (upstream's documentation says otherwise).
    lab.expect_in("vuser", VUSER_NET_PW, "imap", "example.net", NO);
    lab.finish();

    // %1 %2: the login's domain, else the realm, else ldap_default_domain.
    let lab = Lab::start(
        &with(
            &format!("ou=%2.%1,{HOSTED}"),
            "(uid=%U)",
            "ldap_default_domain: example.com\n",
        ),
        &[],
    );
    lab.expect_in("vuser", VUSER_NET_PW, "imap", "example.net", OK);
    lab.expect_in("vuser", VUSER_COM_PW, "imap", "", OK);
    lab.expect_in("vuser@example.net", VUSER_NET_PW, "imap", "example.com", OK);
    lab.expect_in("vuser@example.net", VUSER_COM_PW, "imap", "example.com", NO);
    lab.finish();

    // %U %R %s.
    let lab = Lab::start(
        &with(SUFFIX, "(&(mail=%U%R)(businessCategory=%s))", ""),
        &[],
    );
    lab.expect_in(ALICE.0, ALICE.1, "smtp", "example.org", OK);
    lab.expect_in(ALICE.0, ALICE.1, "imap", "example.org", NO);
    lab.expect_in(ALICE.0, ALICE.1, "smtp", "", NO);
    lab.finish();

    // -r joins login@realm before the mechanism: %u is the whole, %U the user part.
    let lab = Lab::start(&with(&format!("ou=%d,{HOSTED}"), "(mail=%u)", ""), &["-r"]);
    lab.expect_in("vuser", VUSER_NET_PW, "imap", "example.net", OK);
    lab.finish();
}

#[test]
fn group_checks_by_attribute_and_by_filter() {
    let slapd = Slapd::shared();
    let long_filter = format!(
        "(&(cn=mailusers)(memberUid=%U)(|{}))",
        (0..12)
            .map(|i| format!("(cn=other-group-{i})"))
            .collect::<String>()
            + "(cn=mailusers)"
    );
    assert!(long_filter.len() > 200, "beyond upstream's 127-byte cut");
    for method in METHODS {
        for group in [
            format!("ldap_group_dn: {MAIL_GROUP}\n"),
            format!(
                "ldap_group_dn: {MAIL_GROUP}\nldap_group_attr: uniqueMember\nldap_group_match_method: attr\n"
            ),
            format!(
                "ldap_group_match_method: filter\nldap_group_search_base: {GROUPS}\nldap_group_filter: (&(cn=mailusers)(memberUid=%U))\n"
            ),
            "ldap_group_match_method: filter\nldap_group_filter: (&(cn=mail)(uniqueMember=%D))\n"
                .to_string(),
            format!(
                "ldap_group_match_method: filter\nldap_group_search_base: {GROUPS}\nldap_group_filter: {long_filter}\n"
            ),
        ] {
            let lab = Lab::start(&conf(&slapd.ldap_uri(), method, &group), &[]);
            lab.expect(ALICE.0, ALICE.1, OK);
            lab.expect(SPECIAL.0, SPECIAL.1, OK);
            lab.expect(BOB.0, BOB.1, NO);
            lab.expect(ALICE.0, WRONG_PW, NO);
            lab.assert_log_has("ldap: [user=ldbob]: not a member");
            lab.finish();
        }
    }
}

#[test]
fn service_account_and_anonymous_search() {
    let slapd = Slapd::shared();
    let servers = slapd.ldap_uri();
    // Anonymous search, then bind: the usual OpenLDAP setup.
    let lab = Lab::start(
        &format!("ldap_servers: {servers}\nldap_search_base: {SUFFIX}\n"),
        &[],
    );
    lab.expect(ALICE.0, ALICE.1, OK);
    lab.expect(ALICE.0, WRONG_PW, NO);
    lab.finish();
    // custom needs read access to userPassword, which anonymous does not have.
    let lab = Lab::start(
        &format!("ldap_servers: {servers}\nldap_search_base: {SUFFIX}\nldap_auth_method: custom\n"),
        &[],
    );
    lab.expect(ALICE.0, ALICE.1, NO);
    lab.assert_log_has("has no readable userPassword");
    lab.finish();
    // The service account with a wrong password: nothing works, and the log says why.
    for method in ["bind", "custom"] {
        let file = conf(&servers, method, "").replace(READER_PW, "Not-the-reader-pw1");
        let lab = Lab::start(&file, &[]);
        lab.expect(ALICE.0, ALICE.1, NO);
        lab.assert_log_has(&format!("bind as ldap_bind_dn {READER_DN} at"));
        lab.assert_log_has("(invalidCredentials)");
        lab.finish();
    }
}

#[test]
fn referrals_are_followed_only_when_asked_and_never_forever() {
    let slapd = Slapd::shared();
    for method in ["bind", "custom"] {
        let file = conf(&slapd.ldap_uri(), method, "").replace(
            &format!("ldap_search_base: {SUFFIX}"),
            &format!("ldap_search_base: {STAFF}"),
        );
        let lab = Lab::start(&file, &[]);
        lab.expect(ALICE.0, ALICE.1, NO);
        lab.assert_log_has("(ldap_referrals is off)");
        lab.finish();
        let lab = Lab::start(&format!("{file}ldap_referrals: yes\n"), &[]);
        lab.expect(ALICE.0, ALICE.1, OK);
        lab.expect(ALICE.0, WRONG_PW, NO);
        lab.finish();
        let looping = conf(&slapd.ldap_uri(), method, "ldap_referrals: yes\n").replace(
            &format!("ldap_search_base: {SUFFIX}"),
            &format!("ldap_search_base: {LOOP}"),
        );
        let lab = Lab::start(&looping, &[]);
        lab.expect(ALICE.0, ALICE.1, NO);
        lab.assert_log_has("more than 3 referrals in a row");
        lab.finish();
    }
}

#[test]
fn runs_without_root_after_binding_its_socket() {
    let slapd = Slapd::shared();
    let lab = Lab::start(
        &conf(
            &slapd.ldaps_uri(),
            "custom",
            &format!("ldap_tls_cacert_file: {}\n", slapd.ca_file().display()),
        ),
        &["--user", "nobody"],
    );
    lab.assert_log_has("dropped privileges");
    lab.expect(ALICE.0, ALICE.1, OK);
    lab.expect(ALICE.0, WRONG_PW, NO);
    // The file stays readable by nobody here, so SIGHUP still works.
    lab.daemon.signal(libc::SIGHUP);
    lab.assert_log_has("SIGHUP received: ldap: re-read");
    lab.expect(ALICE.0, ALICE.1, OK);
    lab.finish();
}

// ---------------------------------------------------------------------------------------------
// TLS, failover, ldapi
// ---------------------------------------------------------------------------------------------

/// Whether slapd saw `dn` bind over TLS since `before` binds were counted.
fn binds_since(slapd: &Slapd, dn: &str, before: usize) -> Vec<u32> {
    let ssfs = slapd.bind_ssfs(dn);
    ssfs[before.min(ssfs.len())..].to_vec()
}

#[test]
fn ldaps_and_starttls_with_a_ca_file() {
    let slapd = Slapd::shared();
    let ca = slapd.ca_file();
    let ca = ca.display();
    let user_dn = format!("uid={},{PEOPLE}", TLS_USER.0);
    for (servers, tls) in [
        (slapd.ldaps_uri(), String::new()),
        (slapd.ldaps_v6_uri(), String::new()),
        (slapd.ldaps_localhost_uri(), String::new()),
        (slapd.ldap_uri(), "ldap_start_tls: yes\n".to_string()),
        (slapd.ldap_v6_uri(), "ldap_start_tls: Yes\n".to_string()),
    ] {
        for method in METHODS {
            let before = slapd.bind_ssfs(&user_dn).len();
            let file = conf(
                &servers,
                method,
                &format!("{tls}ldap_tls_cacert_file: {ca}\n"),
            );
            let lab = Lab::start(&file, &[]);
            lab.expect(TLS_USER.0, TLS_USER.1, OK);
            lab.expect(TLS_USER.0, WRONG_PW, NO);
            lab.assert_log_has("TLS certificates checked against the CA file");
            if method != "custom" {
                let ssfs = binds_since(slapd, &user_dn, before);
                // slapd logs the mechanism and ssf of successful binds only.
                assert!(
                    !ssfs.is_empty() && ssfs.iter().all(|&ssf| ssf >= 128),
                    "{servers} {method}: the user's binds were not over TLS: ssf {ssfs:?}\n{}",
                    slapd.log()
                );
            }
            lab.finish();
        }
    }
    // A CA directory works like a CA file.
    let file = conf(
        &slapd.ldaps_uri(),
        "bind",
        &format!("ldap_tls_cacert_dir: {}\n", slapd.ca_dir().display()),
    );
    let lab = Lab::start(&file, &[]);
    lab.expect(ALICE.0, ALICE.1, OK);
    lab.finish();
}

#[test]
fn tls_is_refused_without_the_ca_or_with_a_wrong_name() {
    let slapd = Slapd::shared();
    let ca = slapd.ca_file();
    let other = slapd.other_ca_file();
    for (servers, extra, why) in [
        // The system's trust store does not know the lab CA.
        (
            slapd.ldaps_uri(),
            String::new(),
            "certificate verify failed",
        ),
        (
            slapd.ldap_uri(),
            "ldap_start_tls: on\n".to_string(),
            "certificate verify failed",
        ),
        (
            slapd.ldaps_uri(),
            format!("ldap_tls_cacert_file: {}\n", other.display()),
            "certificate verify failed",
        ),
        // Trusted, but not issued for this name.
        (
            format!("ldaps://ldap-wrong-name.test:{}/", slapd.ldaps_port),
            format!("ldap_tls_cacert_file: {}\n", ca.display()),
            "hostname mismatch",
        ),
    ] {
        for method in ["bind", "fastbind"] {
            let lab = Lab::start(&conf(&servers, method, &extra), &[]);
            lab.hosts.add("127.0.0.1", "ldap-wrong-name.test");
            lab.expect(ALICE.0, ALICE.1, NO);
            lab.assert_log_has(why);
            lab.finish();
        }
    }
    // ::1 is named in the certificate; a cert for 127.0.0.1 only would be refused there
    // (names_ip, unit-tested). And ldap_tls_check_peer: no turns checking off, with a warning.
    let lab = Lab::start(
        &conf(&slapd.ldaps_uri(), "bind", "ldap_tls_check_peer: no\n"),
        &[],
    );
    lab.expect(ALICE.0, ALICE.1, OK);
    lab.assert_log_has("ldap_tls_check_peer is off");
    lab.finish();
}

#[test]
fn a_client_certificate_when_the_server_demands_one() {
    let slapd = Slapd::start_with(SlapdOptions {
        require_client_certificate: true,
    });
    let (cert, key) = slapd.client_cert();
    let ca = slapd.ca_file();
    let base = conf(
        &slapd.ldaps_uri(),
        "bind",
        &format!("ldap_tls_cacert_file: {}\n", ca.display()),
    );
    let lab = Lab::start(&base, &[]);
    lab.expect(ALICE.0, ALICE.1, NO);
    lab.finish();
    let lab = Lab::start(
        &format!(
            "{base}ldap_tls_cert: {}\nldap_tls_key: {}\n",
            cert.display(),
            key.display()
        ),
        &[],
    );
    lab.expect(ALICE.0, ALICE.1, OK);
    lab.finish();
}

#[test]
fn failover_to_the_next_server_and_ldapi() {
    let slapd = Slapd::shared();
    let nothing = format!("ldap://127.0.0.1:{}/", free_port());
    let ca = slapd.ca_file();
    for servers in [
        format!("{nothing} {}", slapd.ldap_uri()),
        format!("{nothing},{}", slapd.ldaps_uri()),
        format!("ldapi://%2Fnonexistent%2Fldapi {}", slapd.ldapi_uri()),
        slapd.ldapi_uri(),
    ] {
        for method in METHODS {
            let file = conf(
                &servers,
                method,
                &format!("ldap_tls_cacert_file: {}\n", ca.display()),
            );
            let lab = Lab::start(&file, &[]);
            let took = lab.expect(ALICE.0, ALICE.1, OK);
            assert!(took < Duration::from_secs(1), "{servers}: took {took:?}");
            lab.expect(ALICE.0, WRONG_PW, NO);
            lab.finish();
        }
    }
}

#[test]
fn slapd_down_is_no_at_once_and_up_again_is_ok() {
    let slapd = Slapd::start();
    for method in METHODS {
        let lab = Lab::start(&conf(&slapd.ldap_uri(), method, ""), &["-n", "1"]);
        lab.expect(ALICE.0, ALICE.1, OK);
        slapd.stop();
        for _ in 0..2 {
            let took = lab.expect(ALICE.0, ALICE.1, NO);
            assert!(took < Duration::from_secs(1), "{method}: took {took:?}");
        }
        lab.assert_log_has("Connection refused");
        slapd.run();
        lab.expect(ALICE.0, ALICE.1, OK);
        lab.finish();
    }
}

/// An outage is no verdict: with [`ONE_SECOND_PENALTY`], requests with new passwords each
/// while slapd is down (refused connections: "no LDAP server could be reached") are
/// answered `NO` at once, and so is the first login once it is back; a wrong password is
/// still a failure that the next attempt pays for. (Were outages failures, the second
/// request would wait 1 s.)
#[test]
fn an_unreachable_server_builds_up_no_penalty() {
    let slapd = Slapd::start();
    slapd.stop();
    let fast = Duration::from_millis(900);
    for method in METHODS {
        let lab = Lab::start(&conf(&slapd.ldap_uri(), method, ""), &ONE_SECOND_PENALTY);
        let tried: Vec<String> = (1..=4).map(|n| format!("Outage-Lab-pw{n}")).collect();
        for password in &tried {
            let took = lab.expect(ALICE.0, password, NO);
            assert!(
                took < fast,
                "{method}: outage with {password} took {took:?}\n{}",
                lab.daemon.log()
            );
        }
        lab.assert_log_has("no LDAP server could be reached");
        slapd.run();
        let took = lab.expect(ALICE.0, ALICE.1, OK);
        assert!(
            took < fast,
            "{method}: the login after the outage waited {took:?}\n{}",
            lab.daemon.log()
        );
        // A wrong password is a verdict: the next attempt waits its penalty.
        lab.expect(ALICE.0, WRONG_PW, NO);
        let took = lab.expect(ALICE.0, "Wrong-Lab-pw8", NO);
        assert!(
            took >= fast,
            "{method}: a wrong password cost nothing ({took:?})"
        );
        lab.daemon.assert_log_free_of(&tried);
        lab.finish();
        slapd.stop();
    }
}

/// The directory refusing the service identity says nothing about the user's password:
/// an outage too, answered at once each time with [`ONE_SECOND_PENALTY`].
#[test]
fn a_refused_service_identity_builds_up_no_penalty() {
    let slapd = Slapd::shared();
    // A DN that does not exist: slapd refuses the bind, and no real account is locked.
    let file = conf(&slapd.ldap_uri(), "bind", "").replace(
        &format!("ldap_bind_dn: {READER_DN}"),
        &format!("ldap_bind_dn: cn=nobody,{SUFFIX}"),
    );
    let lab = Lab::start(&file, &ONE_SECOND_PENALTY);
    let tried: Vec<String> = (1..=3).map(|n| format!("Refused-Lab-pw{n}")).collect();
    for password in &tried {
        let took = lab.expect(ALICE.0, password, NO);
        assert!(
            took < Duration::from_millis(900),
            "{password} took {took:?}\n{}",
            lab.daemon.log()
        );
    }
    lab.assert_log_has("(invalidCredentials)");
    lab.daemon.assert_log_free_of(&tried);
    lab.finish();
}

/// A server that never answers is an outage too: with [`ONE_SECOND_PENALTY`] and
/// `ldap_timeout: 1`, each request is verified and answered `NO` at the deadline (were the
/// timeouts failures, the later ones would wait 1 s, past their deadline, and get the
/// daemon's `NO verification timed out` unverified).
#[test]
fn a_silent_server_builds_up_no_penalty() {
    let silent = Stall::start(usize::MAX, None);
    let lab = Lab::start(
        &conf(&silent.uri(), "bind", "ldap_timeout: 1\n"),
        &ONE_SECOND_PENALTY,
    );
    let tried: Vec<String> = (1..=3).map(|n| format!("Silent-Lab-pw{n}")).collect();
    for (n, password) in tried.iter().enumerate() {
        let took = lab.expect(ALICE.0, password, NO);
        assert!(
            took < Duration::from_millis(1900),
            "timeout {n} took {took:?}\n{}",
            lab.daemon.log()
        );
        assert_eq!(silent.accepted.load(Ordering::SeqCst), n + 1, "verified");
    }
    lab.assert_log_has("ldap_timeout");
    lab.daemon.assert_log_free_of(&tried);
    lab.finish();
}

/// A referral from a TLS session to `ldap://` on the network would carry the service's and
/// the user's passwords in clear text to a host not in `ldap_servers`: refused (an outage,
/// logged), as from a session that never left this host (loopback, ldapi). With
/// `ldap_start_tls: yes`, the referral's server gets StartTLS too (here its certificate
/// does not name it); from a session already in clear on the network, it is followed.
#[test]
fn a_referral_never_drops_tls() {
    const REMOTE: &str = "ldap-remote.test";
    let slapd = Slapd::shared();
    let base = format!("ou=downgrade,{SUFFIX}");
    slapd.modify(&format!(
        "dn: {base}\nchangetype: add\nobjectClass: referral\nobjectClass: extensibleObject\n\
         ou: downgrade\nref: ldap://{REMOTE}:{}/{PEOPLE}\n",
        slapd.ldap_port
    ));
    let ca = slapd.ca_file();
    let remote = format!("ldap://{REMOTE}:{}", slapd.ldap_port);
    let refused = format!(
        "cannot follow the referral to {remote}/{PEOPLE}??sub: refused: passwords would cross \
         the network in clear text to {remote}"
    );
    let mismatch = format!("cannot follow the referral to {remote}/{PEOPLE}??sub: native TLS");
    for method in ["bind", "custom"] {
        for (servers, extra, want, needle) in [
            (slapd.ldaps_uri(), "", NO, Some(&refused)),
            (slapd.ldap_uri(), "", NO, Some(&refused)),
            (slapd.ldapi_uri(), "", NO, Some(&refused)),
            (
                slapd.ldap_uri(),
                "ldap_start_tls: yes\n",
                NO,
                Some(&mismatch),
            ),
            (format!("{remote}/"), "", OK, None),
        ] {
            let file = conf(
                &servers,
                method,
                &format!(
                    "ldap_referrals: yes\nldap_tls_cacert_file: {}\n{extra}",
                    ca.display()
                ),
            )
            .replace(
                &format!("ldap_search_base: {SUFFIX}"),
                &format!("ldap_search_base: {base}"),
            );
            let lab = Lab::start(&file, &[]);
            lab.hosts.add("127.0.0.1", REMOTE);
            lab.expect(ALICE.0, ALICE.1, want);
            if let Some(needle) = needle {
                lab.assert_log_has(needle);
            }
            lab.finish();
        }
    }
}

/// `custom` checks the deadline between a user's password values (a crypt can't be
/// interrupted): with many slow values, none of them the password, the mechanism answers
/// `NO` soon after `ldap_timeout` (1 s), not the daemon's `NO verification timed out` at
/// its backstop (0.5 s later) while every value is still being compared.
#[test]
fn custom_stops_comparing_values_at_the_deadline() {
    const SLOW: (&str, &str) = ("ldslow", "Slow-Lab-pw1");
    /// yescrypt at cost 7 (about 70 ms each here): 40 take about 3 s.
    const VALUES: usize = 40;
    let slapd = Slapd::shared();
    secrets::record_password(SLOW.1.as_bytes());
    let (uid, _) = SLOW;
    let mut ldif = format!(
        "dn: uid={uid},{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: {uid}\n\
         cn: {uid}\nsn: lab\n"
    );
    for n in 0..VALUES {
        let other = format!("Slow-other-Lab-pw{n}");
        let out = std::process::Command::new(MKPASSWD)
            .args(["-m", "yescrypt", "-R", "7", &other])
            .output()
            .expect("run mkpasswd");
        assert!(out.status.success(), "mkpasswd: {out:?}");
        let value = format!("{{CRYPT}}{}", String::from_utf8(out.stdout).unwrap().trim());
        secrets::record_password(value.as_bytes());
        // Not userPassword: the password policy allows one value of it.
        ldif.push_str(&format!("description: {value}\n"));
    }
    slapd.modify(&ldif);
    let lab = Lab::start(
        &conf(
            &slapd.ldap_uri(),
            "custom",
            "ldap_timeout: 1\nldap_password_attr: description\n",
        ),
        &[],
    );
    let took = lab.expect(SLOW.0, SLOW.1, NO);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1450),
        "took {took:?}\n{}",
        lab.daemon.log()
    );
    lab.assert_log_has("no verdict within ldap_timeout (1 s): stopped after");
    lab.finish();
}

/// A TCP listener that accepts and never answers the first `silent` connections and
/// forwards the others to `target` (when given).
struct Stall {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Stall {
    fn start(silent: usize, target: Option<u16>) -> Stall {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (Arc::clone(&accepted), Arc::clone(&stop));
        thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        match target {
                            Some(target) if n >= silent => forward(stream, target),
                            _ => held.push(stream),
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Stall {
            port,
            accepted,
            stop,
        }
    }

    fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Pipes `client` to 127.0.0.1:`target` both ways (until either side closes).
fn forward(client: TcpStream, target: u16) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        thread::spawn(move || {
            let mut buf = [0u8; 16384];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
    pipe(server, client);
}

#[test]
fn a_silent_server_is_no_within_ldap_timeout_while_another_request_is_answered() {
    let slapd = Slapd::shared();
    for method in METHODS {
        // Only silent: NO after ldap_timeout (2 s), not twice that.
        let silent = Stall::start(usize::MAX, None);
        let lab = Lab::start(&conf(&silent.uri(), method, "ldap_timeout: 2\n"), &[]);
        let took = lab.expect(ALICE.0, ALICE.1, NO);
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_millis(2600),
            "{method}: took {took:?}"
        );
        lab.assert_log_has("ldap_timeout");
        assert_eq!(silent.accepted.load(Ordering::SeqCst), 1, "no retry");
        lab.finish();

        // The first connection stalls, later ones reach slapd: a request sent while the
        // first one waits is answered at once.
        let stall = Stall::start(1, Some(slapd.ldap_port));
        let lab = Arc::new(Lab::start(
            &conf(&stall.uri(), method, "ldap_timeout: 3\n"),
            &[],
        ));
        let first = {
            let lab = Arc::clone(&lab);
            thread::spawn(move || {
                let started = Instant::now();
                let got = lab.reply(ALICE.0, ALICE.1, "imap", "");
                (got, started.elapsed())
            })
        };
        let waited = Instant::now();
        while stall.accepted.load(Ordering::SeqCst) == 0
            && waited.elapsed() < Duration::from_secs(3)
        {
            thread::sleep(Duration::from_millis(5));
        }
        let took = lab.expect(ALICE.0, ALICE.1, OK);
        assert!(
            took < Duration::from_secs(1),
            "{method}: the second request took {took:?}"
        );
        let (got, took) = first.join().unwrap();
        assert_eq!(got.as_deref(), Some(NO), "{method}");
        assert!(
            took >= Duration::from_millis(2900) && took < Duration::from_millis(3600),
            "{method}: the stalled request took {took:?}"
        );
        let lab = Arc::into_inner(lab).expect("one owner");
        lab.finish();
    }
}

#[test]
fn a_password_changed_with_ldappasswd_is_refused_on_the_next_request() {
    let slapd = Slapd::shared();
    let labs: Vec<Lab> = METHODS
        .iter()
        .map(|method| Lab::start(&conf(&slapd.ldap_uri(), method, ""), &["-n", "1"]))
        .collect();
    for lab in &labs {
        lab.expect(CHANGE.0, CHANGE.1, OK);
    }
    let dn = format!("uid={},{PEOPLE}", CHANGE.0);
    slapd.set_password(&dn, CHANGED_PW);
    for lab in &labs {
        lab.expect(CHANGE.0, CHANGE.1, NO);
        lab.expect(CHANGE.0, CHANGED_PW, OK);
    }
    // With the credential cache, a success lives for the TTL (-t): the documented rule.
    let cached = Lab::start(&conf(&slapd.ldap_uri(), "bind", ""), &["-c", "-t", "2"]);
    cached.expect(CHANGE.0, CHANGED_PW, OK);
    slapd.set_password(&dn, CHANGE.1);
    cached.expect(CHANGE.0, CHANGED_PW, OK);
    thread::sleep(Duration::from_millis(2100));
    cached.expect(CHANGE.0, CHANGED_PW, NO);
    cached.expect(CHANGE.0, CHANGE.1, OK);
    cached.finish();
    for lab in labs {
        lab.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// The file: start, unknown keys, SIGHUP
// ---------------------------------------------------------------------------------------------

#[test]
fn startup_refuses_a_missing_or_broken_file_naming_file_line_and_key() {
    let dir = TempDir::new("ldap-usage");
    let run_dir = dir.join("run");
    let run_dir = run_dir.to_str().unwrap();
    let file = dir.join("saslauthd.conf");
    let file_arg = file.to_str().unwrap();
    for (text, needle) in [
        (
            None,
            format!("failed to initialize mechanism ldap: {file_arg}: cannot read the file"),
        ),
        (
            Some("ldap_servers: ldap://127.0.0.1/\nldap_timeout : 5\n"),
            format!("{file_arg}, line 2: key `ldap_timeout` must be followed directly by `:`"),
        ),
        (
            Some("# c\nldap_timeout: soon\n"),
            format!("{file_arg}, line 2: ldap_timeout: \"soon\" is not a whole number"),
        ),
        (
            Some("ldap_tls_check_peer: demand\n"),
            "line 1: ldap_tls_check_peer: \"demand\" is not a switch".to_string(),
        ),
        (
            Some("ldap_use_sasl: yes\nldap_mech: DIGEST-MD5\n"),
            "line 1: ldap_use_sasl: SASL binds to the directory are not supported".to_string(),
        ),
        (
            Some("ldap_filter: (uid=%u\n"),
            "line 1: ldap_filter: \"(uid=%u\" is not a valid LDAP search filter".to_string(),
        ),
    ] {
        let _ = fs::remove_file(&file);
        if let Some(text) = text {
            fs::write(&file, text).unwrap();
        }
        let out = run_plain(
            &ours_bin("saslauthd"),
            &["-a", "ldap", "-O", file_arg, "-m", run_dir, "-d"],
            None,
        );
        assert_eq!(out.code(), 1, "{text:?}: {}", out.output());
        assert!(
            out.output().contains(&needle),
            "{text:?}: want {needle:?}\n{}",
            out.output()
        );
    }
}

#[test]
fn unknown_keys_are_named_in_one_line_and_ignored() {
    let slapd = Slapd::shared();
    let file = conf(
        &slapd.ldap_uri(),
        "bind",
        "log_level: 10\nldap_port: 389\nldap_starttls: yes\nldap_mech: PLAIN\n",
    );
    let lab = Lab::start(&file, &[]);
    lab.assert_log_has(&format!(
        "ldap: {}: unknown keys ignored: log_level, ldap_port, ldap_starttls",
        lab.conf_path().display()
    ));
    lab.assert_log_has("ldap_mech ignored: they only matter with ldap_use_sasl");
    lab.expect(ALICE.0, ALICE.1, OK);
    lab.finish();
}

#[test]
fn sighup_rereads_the_file_and_a_bad_file_keeps_the_old_settings() {
    let slapd = Slapd::shared();
    let lab = Lab::start(&conf(&slapd.ldap_uri(), "bind", ""), &[]);
    lab.expect(ALICE.0, ALICE.1, OK);
    lab.expect(BOB.0, BOB.1, OK);
    // A group restriction appears: Bob is out after the reload.
    fs::write(
        lab.conf_path(),
        conf(
            &slapd.ldap_uri(),
            "bind",
            &format!("ldap_group_dn: {MAIL_GROUP}\n"),
        ),
    )
    .unwrap();
    lab.daemon.signal(libc::SIGHUP);
    lab.assert_log_has(&format!(
        "SIGHUP received: ldap: re-read {}",
        lab.conf_path().display()
    ));
    lab.expect(BOB.0, BOB.1, NO);
    lab.expect(ALICE.0, ALICE.1, OK);
    // A broken file: logged, and the settings in use stay.
    fs::write(
        lab.conf_path(),
        "ldap_servers: ldap://127.0.0.1/\nldap_timeout: -1\n",
    )
    .unwrap();
    lab.daemon.signal(libc::SIGHUP);
    lab.assert_log_has(&format!(
        "SIGHUP received: ldap: keeping the settings in use: {}, line 2: ldap_timeout",
        lab.conf_path().display()
    ));
    lab.expect(ALICE.0, ALICE.1, OK);
    lab.expect(BOB.0, BOB.1, NO);
    assert!(lab.daemon.running());
    lab.finish();
}

// ---------------------------------------------------------------------------------------------
// Differential: Debian's saslauthd -a ldap with the same file
// ---------------------------------------------------------------------------------------------

/// One request of the differential: (login, password, service, realm).
type Request = (&'static str, String, &'static str, &'static str);

/// Cases where upstream and we must give the same bytes. Upstream's defects are left out
/// on purpose (see `upstream_defects_are_not_ours`):
/// - fastbind answering from the process's last bind (#550): no password change or
///   outage happens here;
/// - passwords over 127 bytes (cut upstream), long group filters;
/// - custom's unknown `{SCHEME}` values compared as cleartext (`{SSHA256}`, `{SSHA512}`,
///   `{ARGON2}` users are left out of the custom files), and its crash on `{SSHA}AAAA`;
/// - custom checking one `userPassword` value only (ldmulti);
/// - DN escaping (fastbind login `ldsub,ou=contractors`);
/// - `Yes`/`TRUE` read as *no* (`ldap_tls_check_peer`, `ldap_start_tls`);
/// - doubled timeouts; a NUL inside a login or password (cut upstream, refused here);
/// - broken files and unknown keys (upstream starts; we refuse or log).
fn compat_requests() -> Vec<Request> {
    let mut requests: Vec<Request> = vec![
        (ALICE.0, ALICE.1.to_string(), "imap", ""),
        (ALICE.0, WRONG_PW.to_string(), "imap", ""),
        (ALICE.0, ALICE.1.to_string(), "smtp", "example.org"),
        ("ldnosuchuser", ALICE.1.to_string(), "imap", ""),
        (BOB.0, BOB.1.to_string(), "imap", ""),
        (DISABLED.0, DISABLED.1.to_string(), "imap", ""),
        (SPECIAL.0, SPECIAL.1.to_string(), "imap", ""),
        (SPECIAL.0, "pä ss \"q\\ ".to_string(), "imap", ""),
        (META.0, META.1.to_string(), "imap", ""),
        ("*", ALICE.1.to_string(), "imap", ""),
        ("ldali*", ALICE.1.to_string(), "imap", ""),
        ("ldalice)(|(uid=*", ALICE.1.to_string(), "imap", ""),
        ("ldalic\\65", ALICE.1.to_string(), "imap", ""),
        ("", ALICE.1.to_string(), "imap", ""),
        (ALICE.0, String::new(), "imap", ""),
    ];
    for (uid, _, pw) in SCHEME_USERS {
        requests.push((uid, pw.to_string(), "imap", ""));
        requests.push((uid, WRONG_PW.to_string(), "imap", ""));
    }
    requests
}

#[test]
fn same_replies_as_upstream_on_compatible_cases() {
    let slapd = Slapd::shared();
    let ca = slapd.ca_file();
    let tls = format!("ldap_tls_cacert_file: {}\n", ca.display());
    let mut files = Vec::new();
    for method in METHODS {
        files.push(conf(&slapd.ldap_uri(), method, ""));
        files.push(conf(&slapd.ldaps_uri(), method, &tls));
        files.push(conf(&slapd.ldapi_uri(), method, ""));
    }
    files.push(conf(
        &slapd.ldap_uri(),
        "bind",
        &format!("{tls}ldap_start_tls: yes\n"),
    ));
    files.push(conf(
        &slapd.ldap_uri(),
        "bind",
        &format!("ldap_group_dn: {MAIL_GROUP}\n"),
    ));
    files.push(conf(
        &slapd.ldap_uri(),
        "custom",
        &format!("ldap_group_match_method: filter\nldap_group_search_base: {GROUPS}\nldap_group_filter: (&(cn=mailusers)(memberUid=%U))\n"),
    ));
    files.push(format!(
        "ldap_servers: {}\nldap_search_base: ou=%2.%1,{HOSTED}\nldap_filter: (uid=%U)\n\
         ldap_default_domain: example.com\n",
        slapd.ldap_uri()
    ));
    let mut requests = compat_requests();
    requests.extend([
        ("vuser", VUSER_NET_PW.to_string(), "imap", "example.net"),
        ("vuser", VUSER_COM_PW.to_string(), "imap", ""),
        (
            "vuser@example.net",
            VUSER_NET_PW.to_string(),
            "imap",
            "example.com",
        ),
        (
            "vuser@example.net",
            VUSER_COM_PW.to_string(),
            "imap",
            "example.com",
        ),
    ]);
    let mut differences = Vec::new();
    let mut compared = 0;
    for file in &files {
        let ours = Lab::start(file, &[]);
        let theirs = Lab::upstream(file);
        // Upstream's custom does not know these schemes (it compares them as cleartext).
        let unknown_upstream = ["ldssha256", "ldssha512", "ldargon2"];
        let custom = file.contains("ldap_auth_method: custom");
        for (user, pass, service, realm) in &requests {
            if custom && unknown_upstream.contains(user) {
                continue;
            }
            let fields: [&[u8]; 4] = [
                user.as_bytes(),
                pass.as_bytes(),
                service.as_bytes(),
                realm.as_bytes(),
            ];
            let opts = ExchangeOpts {
                check_eof: false,
                ..ExchangeOpts::default()
            };
            let a = exchange(&ours.daemon.socket(), &request(&fields), &opts).received;
            let b = exchange(&theirs.daemon.socket(), &request(&fields), &opts).received;
            compared += 1;
            // Two empty answers (both closed or timed out) would compare equal.
            assert!(
                !a.is_empty(),
                "{user:?} service {service:?} realm {realm:?}: no answer from ours\n    file:\n{}\n--- log ---\n{}",
                masked_conf(file),
                ours.daemon.log()
            );
            if a != b {
                differences.push(format!(
                    "  {user:?} service {service:?} realm {realm:?}: ours {:?}, upstream {:?}\n    file:\n{}",
                    String::from_utf8_lossy(&a),
                    String::from_utf8_lossy(&b),
                    masked_conf(file)
                ));
            }
        }
        theirs.stop();
        ours.finish();
    }
    assert!(compared > 300, "{compared}");
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// Upstream's defects, each shown against Debian's saslauthd and refused by ours.
#[test]
fn upstream_defects_are_not_ours() {
    let slapd = Slapd::shared();
    let servers = slapd.ldap_uri();
    // custom: the stored {SSHA512} text authenticates upstream; and {SSHA}AAAA kills a worker.
    let custom = conf(&servers, "custom", "");
    let (_, _, ssha512_pw) = SCHEME_USERS
        .iter()
        .find(|(u, ..)| *u == "ldssha512")
        .unwrap();
    let stored = slapd
        .stored_values
        .iter()
        .find(|(uid, _)| uid == "ldssha512")
        .map(|(_, value)| value.clone())
        .unwrap();
    let theirs = Lab::upstream(&custom);
    assert_eq!(
        theirs.reply("ldssha512", &stored, "imap", "").as_deref(),
        Some(OK)
    );
    assert_eq!(
        theirs.reply("ldssha512", ssha512_pw, "imap", "").as_deref(),
        Some(NO),
        "upstream doesn't know {{SSHA512}}"
    );
    theirs.stop();
    let ours = Lab::start(&custom, &[]);
    ours.expect("ldssha512", &stored, NO);
    ours.expect("ldssha512", ssha512_pw, OK);
    ours.finish();

    // fastbind: a login with `,` leaves the template upstream.
    let fastbind = conf(&servers, "fastbind", "");
    let theirs = Lab::upstream(&fastbind);
    assert_eq!(
        theirs
            .reply("ldsub,ou=contractors", SUB.1, "imap", "")
            .as_deref(),
        Some(OK)
    );
    theirs.stop();
    let ours = Lab::start(&fastbind, &[]);
    ours.expect("ldsub,ou=contractors", SUB.1, NO);
    ours.finish();

    // 127-byte cut: a 200-byte password never works upstream; ours works.
    let bind = conf(&servers, "bind", "");
    let long = long_password();
    let theirs = Lab::upstream(&bind);
    assert_eq!(
        theirs.reply(LONG_USER, &long, "imap", "").as_deref(),
        Some(NO)
    );
    theirs.stop();
    let ours = Lab::start(&bind, &[]);
    ours.expect(LONG_USER, &long, OK);
    ours.finish();

    // fastbind answers from the process's last bind (#550): after a password change the
    // old password keeps working upstream (one worker, so the same process answers).
    let fast = conf(&servers, "fastbind", "");
    let theirs = Lab::upstream_with(&fast, &["-n", "1"]);
    let ours = Lab::start(&fast, &["-n", "1"]);
    assert_eq!(
        theirs
            .reply(FAST_USER.0, FAST_USER.1, "imap", "")
            .as_deref(),
        Some(OK)
    );
    ours.expect(FAST_USER.0, FAST_USER.1, OK);
    slapd.set_password(&format!("uid={},{PEOPLE}", FAST_USER.0), FAST_CHANGED_PW);
    assert_eq!(
        theirs
            .reply(FAST_USER.0, FAST_USER.1, "imap", "")
            .as_deref(),
        Some(OK),
        "upstream's stale fastbind OK (#550)"
    );
    ours.expect(FAST_USER.0, FAST_USER.1, NO);
    ours.expect(FAST_USER.0, FAST_CHANGED_PW, OK);
    theirs.stop();
    ours.finish();

    // A silent server: upstream retries, so ldap_timeout counts twice.
    let silent = Stall::start(usize::MAX, None);
    let theirs = Lab::upstream(&conf(&silent.uri(), "bind", "ldap_timeout: 1\n"));
    let started = Instant::now();
    assert_eq!(
        theirs.reply(ALICE.0, ALICE.1, "imap", "").as_deref(),
        Some(NO)
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "upstream took {took:?}"
    );
    theirs.stop();

    // `ldap_start_tls: Yes` means no TLS upstream (the bind goes in clear: ssf=0).
    let user_dn = format!("uid={},{PEOPLE}", CLEAR_USER.0);
    let yes = conf(
        &servers,
        "fastbind",
        &format!(
            "ldap_start_tls: Yes\nldap_tls_cacert_file: {}\n",
            slapd.ca_file().display()
        ),
    );
    let before = slapd.bind_ssfs(&user_dn).len();
    let theirs = Lab::upstream(&yes);
    assert_eq!(
        theirs
            .reply(CLEAR_USER.0, CLEAR_USER.1, "imap", "")
            .as_deref(),
        Some(OK)
    );
    theirs.stop();
    assert_eq!(
        binds_since(slapd, &user_dn, before),
        [0],
        "upstream binds in clear"
    );
    let before = slapd.bind_ssfs(&user_dn).len();
    let ours = Lab::start(&yes, &[]);
    ours.expect(CLEAR_USER.0, CLEAR_USER.1, OK);
    ours.finish();
    let ssfs = binds_since(slapd, &user_dn, before);
    assert!(
        ssfs.len() == 1 && ssfs[0] >= 128,
        "ours binds over TLS: {ssfs:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Interop: Debian's testsaslauthd, Postfix + swaks
// ---------------------------------------------------------------------------------------------

#[test]
fn upstream_testsaslauthd_against_our_ldap() {
    let slapd = Slapd::shared();
    let lab = Lab::start(&conf(&slapd.ldap_uri(), "bind", ""), &[]);
    let socket = lab.daemon.socket();
    for (args, stdout, code) in [
        (vec!["-u", ALICE.0, "-p", ALICE.1], clients::OK, 0),
        (vec!["-u", SPECIAL.0, "-p", SPECIAL.1], clients::OK, 0),
        (vec!["-u", ALICE.0, "-p", WRONG_PW], clients::NO, 255),
        (vec!["-u", "ldnosuchuser", "-p", WRONG_PW], clients::NO, 255),
        (
            vec![
                "-u",
                ALICE.0,
                "-p",
                ALICE.1,
                "-s",
                "smtp",
                "-r",
                "example.org",
            ],
            clients::OK,
            0,
        ),
    ] {
        let out = clients::run_client(Path::new(UPSTREAM_TESTSASLAUTHD), &args, &socket);
        assert_eq!(
            (out.stdout_str().as_str(), clients::code_of(&out)),
            (stdout, Some(code)),
            "testsaslauthd {}: {}\n--- log ---\n{}",
            clients::masked_args(&args),
            clients::describe(&out),
            lab.daemon.log()
        );
    }
    lab.finish();
}

#[test]
fn postfix_smtp_auth_through_ldap() {
    let slapd = Slapd::shared();
    let ca = slapd.ca_file();
    let lab = Lab::start(
        &conf(
            &slapd.ldaps_uri(),
            "bind",
            &format!("ldap_tls_cacert_file: {}\n", ca.display()),
        ),
        &[],
    );
    let postfix = Postfix::start(&[SmtpListener {
        name: "ldap".into(),
        saslauthd_socket: lab.daemon.socket(),
    }]);
    const CASES: &[SmtpCase] = &[
        ("ldalice", "Alice-Lab-pw1", SmtpAuth::Accepted),
        ("ldspecial", "pä ss \"q\\ €", SmtpAuth::Accepted),
        ("ldalice", "Wrong-Lab-pw9", SmtpAuth::Rejected),
        ("ldnosuchuser", "Wrong-Lab-pw9", SmtpAuth::Rejected),
    ];
    assert_eq!((CASES[0].1, CASES[1].1), (ALICE.1, SPECIAL.1));
    let failures = smtp_matrix(postfix.port("ldap"), CASES, Advert::Required);
    assert!(
        failures.is_empty(),
        "{}\n--- daemon log ---\n{}\n{}",
        failures.join("\n"),
        lab.daemon.log(),
        postfix.diagnostics()
    );
    lab.assert_log_has("auth success: [user=ldalice] [service=smtp] [realm=] [mech=ldap]");
    drop(postfix);
    lab.finish();
}

// ---------------------------------------------------------------------------------------------
// Measurements (no assertion on the numbers)
// ---------------------------------------------------------------------------------------------

/// Prints the per-verification latency of each transport, ours (a connection per request)
/// next to upstream's (one kept connection per worker):
/// `cargo test --test ldap latency -- --nocapture`.
#[test]
fn latency_of_each_transport() {
    let slapd = Slapd::shared();
    let tls = format!("ldap_tls_cacert_file: {}\n", slapd.ca_file().display());
    let mut report = Vec::new();
    for (name, file) in [
        ("ldap", conf(&slapd.ldap_uri(), "bind", "")),
        ("ldapi", conf(&slapd.ldapi_uri(), "bind", "")),
        (
            "StartTLS",
            conf(
                &slapd.ldap_uri(),
                "bind",
                &format!("{tls}ldap_start_tls: yes\n"),
            ),
        ),
        ("ldaps", conf(&slapd.ldaps_uri(), "bind", &tls)),
    ] {
        for (who, lab) in [
            ("ours", Lab::start(&file, &[])),
            ("upstream", Lab::upstream(&file)),
        ] {
            lab.expect(ALICE.0, ALICE.1, OK);
            let mut times: Vec<Duration> =
                (0..30).map(|_| lab.expect(ALICE.0, ALICE.1, OK)).collect();
            times.sort();
            report.push(format!(
                "{name} {who}: median {:.2} ms, max {:.2} ms",
                times[times.len() / 2].as_secs_f64() * 1000.0,
                times[times.len() - 1].as_secs_f64() * 1000.0
            ));
            if who == "ours" {
                lab.finish();
            } else {
                lab.stop();
            }
        }
    }
    println!(
        "ldap latency per verification (bind method, 30 each, slapd on loopback):\n  {}",
        report.join("\n  ")
    );
}

#[test]
fn a_new_ldap_timeout_applies_after_sighup_backstop_included() {
    let silent = Stall::start(usize::MAX, None);
    let lab = Lab::start(&conf(&silent.uri(), "bind", "ldap_timeout: 1\n"), &[]);
    let took = lab.expect(ALICE.0, ALICE.1, NO);
    assert!(took < Duration::from_millis(1600), "took {took:?}");
    fs::write(
        lab.conf_path(),
        conf(&silent.uri(), "bind", "ldap_timeout: 3\n"),
    )
    .unwrap();
    lab.daemon.signal(libc::SIGHUP);
    lab.assert_log_has("SIGHUP received: ldap: re-read");
    // Our own NO after 3 s: not the daemon's backstop at the old 1 s + 0.5 s.
    let took = lab.expect(ALICE.0, ALICE.1, NO);
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(3600),
        "took {took:?}"
    );
    lab.finish();
}
