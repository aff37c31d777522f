//! `saslauthd`: the daemon. Everything lives in the library; see `saslauthd_rs::daemon`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    saslauthd_rs::daemon::main()
}
