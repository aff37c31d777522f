//! Fuzz target: the mux request/reply codec (src/protocol.rs). The checks live in `saslauthd_rs::fuzz::mux_codec`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: saslauthd_rs::fuzz::log_nowhere(),
    |data: &[u8]| saslauthd_rs::fuzz::mux_codec(data)
);
