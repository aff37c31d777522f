//! Tables of `testsaslauthd` cases for the interop tiers (`tests/interop.rs`,
//! `tests/interop_pam.rs`): a case is the client's arguments plus the exact stdout bytes and
//! exit code it must end with; [`run_cases`] runs a table against one daemon socket.

use super::{CmdResult, run_command};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// testsaslauthd's line for a successful attempt.
pub const OK: &str = "0: OK \"Success.\"\n";
/// testsaslauthd's line for a refused attempt.
pub const NO: &str = "0: NO \"authentication failed\"\n";

/// Bound for one testsaslauthd run (-R 3 with yescrypt takes well under a second).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// One testsaslauthd run and what it must print.
pub struct Case {
    pub what: &'static str,
    /// testsaslauthd arguments, without `-f SOCKET` (appended).
    pub args: &'static [&'static str],
    pub stdout: &'static str,
    pub code: i32,
}

/// Runs `client args… -f socket` (bounded by [`CLIENT_TIMEOUT`]).
pub fn run_client(client: &Path, args: &[&str], socket: &Path) -> CmdResult {
    let mut c = Command::new(client);
    c.args(args).arg("-f").arg(socket);
    run_command(c, None, CLIENT_TIMEOUT)
}

/// `Some(code)` or `None` (signal / timeout).
pub fn code_of(r: &CmdResult) -> Option<i32> {
    r.status.and_then(|s| s.code())
}

/// `exit N`, `signal N` or `timed out (killed)`.
pub fn status_text(r: &CmdResult) -> String {
    match r.status {
        None => "timed out (killed)".to_string(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => format!("{s}"),
        },
    }
}

/// Status, stdout and stderr of a run, for failure messages.
pub fn describe(r: &CmdResult) -> String {
    format!(
        "{}, stdout {:?}, stderr {:?}",
        status_text(r),
        r.stdout_str(),
        r.stderr_str()
    )
}

/// `args` for a failure message, the value after each `-p` (a password) replaced by its
/// length: `["-u", "suser", "-p", <11 bytes>]`.
pub fn masked_args(args: &[&str]) -> String {
    let mut shown = Vec::with_capacity(args.len());
    let mut password_next = false;
    for arg in args {
        shown.push(if password_next {
            format!("<{} bytes>", arg.len())
        } else {
            format!("{arg:?}")
        });
        password_next = *arg == "-p";
    }
    format!("[{}]", shown.join(", "))
}

/// Every password `cases` send (none may appear in a daemon log).
pub fn all_passwords(cases: &[Case]) -> Vec<&'static [u8]> {
    cases
        .iter()
        .filter_map(|c| {
            c.args
                .iter()
                .position(|a| *a == "-p")
                .map(|i| c.args[i + 1])
        })
        .filter(|p| p.len() > 1)
        .map(str::as_bytes)
        .collect()
}

/// Runs every case with `client` against `socket`; one description per case whose stdout
/// bytes or exit code differ from the expected ones.
pub fn run_cases(client: &Path, socket: &Path, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let r = run_client(client, case.args, socket);
        if r.stdout != case.stdout.as_bytes() || code_of(&r) != Some(case.code) {
            failures.push(format!(
                "  - {}: testsaslauthd {} -f SOCK\n      want exit {}, stdout {:?}\n      got  {}",
                case.what,
                masked_args(case.args),
                case.code,
                case.stdout,
                describe(&r)
            ));
        }
    }
    failures
}
