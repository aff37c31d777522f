//! `saslauthd`: the daemon. Everything lives in the library; see `saslauthd_rs::daemon`.
//! `saslauthd --kerberos5-helper` is the daemon's own libkrb5 helper process (see
//! `saslauthd_rs::mech::kerberos5::helper`), started by `-a kerberos5`, never by hand.
#![forbid(unsafe_code)]

use saslauthd_rs::mech::kerberos5::helper;

fn main() -> std::process::ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == helper::HELPER_ARG)
    {
        return helper::main();
    }
    saslauthd_rs::daemon::main()
}
