//! The saslauthd protocol front end on `<rundir>/mux`: one request and one reply per
//! connection. [`connection`] reads a request and writes a reply under deadlines on the
//! async path (the codec itself is [`crate::protocol`], shared with `testsaslauthd`);
//! [`intake`] admits each accepted connection through the shared [`gate`](super::gate)
//! and answers the common case at once, on the accepting thread; [`linger`] drains what
//! it answered; [`listener`] runs the accepting threads and shuts down gracefully.
#![forbid(unsafe_code)]

pub mod connection;
pub mod intake;
pub mod linger;
pub mod listener;
