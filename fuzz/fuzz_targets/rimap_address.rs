//! Fuzz target: rimap's -O address parser (src/mech/rimap/address.rs). The checks live in `saslauthd_rs::fuzz::rimap_address`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: saslauthd_rs::fuzz::log_nowhere(),
    |data: &[u8]| saslauthd_rs::fuzz::rimap_address(data)
);
