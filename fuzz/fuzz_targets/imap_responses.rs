//! Fuzz target: rimap's handling of IMAP server responses (src/mech/rimap.rs). The checks live in `saslauthd_rs::fuzz::imap_responses`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: saslauthd_rs::fuzz::log_nowhere(),
    |data: &[u8]| saslauthd_rs::fuzz::imap_responses(data)
);
