//! The saslauthd protocol front end on `<rundir>/mux`: one request and one reply per
//! connection. [`connection`] reads a request and writes a reply under deadlines (the
//! codec itself is [`crate::protocol`], shared with `testsaslauthd`); [`listener`] runs
//! the accept loop, admits connections through the shared [`gate`](super::gate) and shuts
//! down gracefully.
#![forbid(unsafe_code)]

pub mod connection;
pub mod listener;
