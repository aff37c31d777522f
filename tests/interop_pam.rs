//! Interop tier for `-a pam`: real, unmodified Debian 12 peers against our daemon.
//!
//! * Debian's `/usr/sbin/testsaslauthd -s SERVICE` against our `saslauthd -a pam` and, with
//!   the same table, against Debian's `saslauthd -a pam`: both must print exactly the
//!   expected stdout bytes and exit with the expected code.
//! * Postfix + Debian's libsasl2 (`pwcheck_method: saslauthd`, service `smtp`) in a private
//!   instance on 127.0.0.1, driven by swaks, against both daemons; ours runs with the
//!   allow-list `--pam-services smtp`, the way a mail-only deployment would.
//!
//! Daemons run in a private mount namespace with the fixture users and the fixture
//! `/etc/pam.d` (tests/fixtures/pam.d: `smtp` and `sasl-unix` are pam_unix, `other` is
//! pam_deny). Everything needs root. `KEEP_TEST_DIRS=1` keeps the temp dirs.

#![forbid(unsafe_code)]

mod common;

use common::clients::*;
use common::fixtures::*;
use common::postfix::{Advert, SmtpAuth, SmtpCase, smtp_passwords, smtp_side_by_side};
use common::*;
use std::path::Path;
use std::time::Duration;

const CASES: &[Case] = &[
    Case {
        what: "pam_unix service, good password",
        args: &["-u", "suser", "-p", SUSER_PW, "-s", "sasl-unix"],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "pam_unix service, yescrypt user",
        args: &["-u", "yuser", "-p", YUSER_PW, "-s", "sasl-unix"],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "pam_unix service, wrong password",
        args: &["-u", "suser", "-p", "wrong-Sha-512-pw1", "-s", "sasl-unix"],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "special characters in the password",
        args: &["-u", "special", "-p", SPECIAL_PW, "-s", "sasl-unix"],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "unknown user",
        args: &["-u", "nosuchuser", "-p", SUSER_PW, "-s", "sasl-unix"],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "expired account (pam_acct_mgmt)",
        args: &["-u", "expired", "-p", EXPIRED_PW, "-s", "sasl-unix"],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "stack with info and error messages first",
        args: &["-u", "suser", "-p", SUSER_PW, "-s", "sasl-chatty"],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "pam_access stack without a client address",
        args: &["-u", "suser", "-p", SUSER_PW, "-s", "sasl-access"],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "default service imap: no file, `other` denies",
        args: &["-u", "suser", "-p", SUSER_PW],
        stdout: NO,
        code: 255,
    },
    Case {
        what: "service smtp",
        args: &["-u", "suser", "-p", SUSER_PW, "-s", "smtp"],
        stdout: OK,
        code: 0,
    },
    Case {
        what: "-R 3, good password",
        args: &["-u", "suser", "-p", SUSER_PW, "-s", "sasl-unix", "-R", "3"],
        stdout: "0: OK \"Success.\"\n1: OK \"Success.\"\n2: OK \"Success.\"\n",
        code: 0,
    },
    Case {
        what: "-R 2, wrong password",
        args: &["-u", "suser", "-p", "wrong", "-s", "sasl-unix", "-R", "2"],
        stdout: "0: NO \"authentication failed\"\n1: NO \"authentication failed\"\n",
        code: 255,
    },
];

/// Runs [`CASES`] with Debian's testsaslauthd against `program -a pam`.
fn check_daemon(program: &Path, name: &str) {
    require_root();
    assert!(
        Path::new(UPSTREAM_TESTSASLAUTHD).exists(),
        "{UPSTREAM_TESTSASLAUTHD} missing: install the Debian package `sasl2-bin`"
    );
    let d = PamDaemon::start(program, &[]);
    let failures = run_cases(Path::new(UPSTREAM_TESTSASLAUTHD), &d.daemon.socket(), CASES);
    assert!(
        failures.is_empty(),
        "upstream testsaslauthd vs {name} saslauthd -a pam: {} of {} cases differ:\n{}\n--- daemon log ---\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n"),
        d.daemon.log()
    );
    if name == "ours" {
        d.daemon.assert_log_free_of(&all_passwords(CASES));
    }
}

#[test]
fn upstream_testsaslauthd_vs_our_daemon() {
    check_daemon(&ours_bin("saslauthd"), "ours");
}

/// The same table against Debian's own `saslauthd -a pam` proves the expected literals.
#[test]
fn upstream_testsaslauthd_vs_upstream_daemon() {
    check_daemon(Path::new(UPSTREAM_SASLAUTHD), "upstream");
}

/// (user, password, expected result) through Postfix's `smtp` PAM service.
const SMTP_CASES: &[SmtpCase] = &[
    ("suser", SUSER_PW, SmtpAuth::Accepted),
    ("suser", "wrong-Sha-512-pw1", SmtpAuth::Rejected),
    ("yuser", YUSER_PW, SmtpAuth::Accepted),
    // libsasl splits at the last '@': login=yuser realm=example.org; pam ignores the realm.
    ("yuser@example.org", YUSER_PW, SmtpAuth::Accepted),
    ("special", SPECIAL_PW, SmtpAuth::Accepted),
    ("nosuchuser", SUSER_PW, SmtpAuth::Rejected),
    ("expired", EXPIRED_PW, SmtpAuth::Rejected),
];

/// Postfix → libsasl → `saslauthd -a pam` with service `smtp`, ours and Debian's side by side.
#[test]
fn postfix_smtp_auth_through_pam() {
    require_root();
    let ours = PamDaemon::start(&ours_bin("saslauthd"), &["--pam-services", "smtp"]);
    let upstream = PamDaemon::start(Path::new(UPSTREAM_SASLAUTHD), &[]);
    let (pf, mut report) = smtp_side_by_side(
        &ours.daemon,
        &upstream.daemon,
        SMTP_CASES,
        Advert::NotChecked,
        "pam",
    );
    // Our log shows what libsasl sent and what PAM said.
    for needle in [
        "auth success: [user=yuser] [service=smtp] [realm=example.org] [mech=pam]",
        "auth failure: [user=suser] [service=smtp] [realm=] [mech=pam] [reason=PAM auth error]",
        "auth failure: [user=expired] [service=smtp] [realm=] [mech=pam] [reason=PAM acct error]",
    ] {
        if !ours.daemon.wait_for_log(needle, Duration::from_secs(2)) {
            report.push_str(&format!(
                "our log lacks `{needle}`\n--- log ---\n{}\n",
                ours.daemon.log()
            ));
        }
    }
    assert!(report.is_empty(), "{report}\n{}", pf.diagnostics());
    ours.daemon.assert_log_free_of(&smtp_passwords(SMTP_CASES));
}
