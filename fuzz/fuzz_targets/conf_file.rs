//! Fuzz target: the saslauthd.conf parser (src/mech/conf_file.rs). The checks live in `saslauthd_rs::fuzz::conf_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: saslauthd_rs::fuzz::log_nowhere(),
    |data: &[u8]| saslauthd_rs::fuzz::conf_file(data)
);
