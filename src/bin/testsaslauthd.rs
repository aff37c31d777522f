//! `testsaslauthd`: the diagnostic client. See `saslauthd_rs::client`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    saslauthd_rs::client::main()
}
