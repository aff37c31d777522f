//! Fuzz target: the Dovecot authentication protocol's lines (src/protocol/dovecot.rs). The checks live in `saslauthd_rs::fuzz::dovecot_lines`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: saslauthd_rs::fuzz::log_nowhere(),
    |data: &[u8]| saslauthd_rs::fuzz::dovecot_lines(data)
);
