//! sasldb files made with the real tools (Debian's `sasl2-bin`): `saslpasswd2 -p -f FILE
//! -c -u REALM USER` with the password on stdin, `saslpasswd2 -f FILE -d`, and
//! `sasldblistusers2` to show what a file holds (for failure messages).

use super::{CmdResult, DEFAULT_TIMEOUT, run_command, secrets};
use std::path::Path;
use std::process::Command;

pub const SASLPASSWD2: &str = "/usr/sbin/saslpasswd2";
pub const SASLDBLISTUSERS2: &str = "/usr/sbin/sasldblistusers2";

fn checked(result: CmdResult, what: &str) {
    assert!(
        result.status.is_some_and(|s| s.success()),
        "{what} failed: {}",
        result.output()
    );
}

/// Creates or changes `user` in `realm` (`saslpasswd2 -c`).
pub fn set_password(file: &Path, realm: &str, user: &str, password: &str) {
    assert!(
        Path::new(SASLPASSWD2).exists(),
        "{SASLPASSWD2} missing: install the Debian package sasl2-bin"
    );
    secrets::record_password(password.as_bytes());
    let mut cmd = Command::new(SASLPASSWD2);
    cmd.args(["-p", "-f"])
        .arg(file)
        .args(["-c", "-u", realm, user]);
    // saslpasswd2 strips one trailing newline from what it reads.
    let stdin = format!("{password}\n");
    checked(
        run_command(cmd, Some(stdin.as_bytes()), DEFAULT_TIMEOUT),
        "saslpasswd2 -c",
    );
}

/// Deletes `user` in `realm` (`saslpasswd2 -d`).
pub fn delete_user(file: &Path, realm: &str, user: &str) {
    let mut cmd = Command::new(SASLPASSWD2);
    cmd.arg("-f").arg(file).args(["-d", "-u", realm, user]);
    checked(run_command(cmd, None, DEFAULT_TIMEOUT), "saslpasswd2 -d");
}

/// `sasldblistusers2 -f FILE`: `user@realm: userPassword` lines.
pub fn list(file: &Path) -> String {
    let mut cmd = Command::new(SASLDBLISTUSERS2);
    cmd.arg("-f").arg(file);
    run_command(cmd, None, DEFAULT_TIMEOUT).output()
}
