//! The daemon's serving layers, one per file (after mini-redis):
//! [`connection`] reads one request and writes one reply on a socket under deadlines,
//! [`handler`] turns a request into a reply (validation, `-r`, the credential cache, the
//! verification pool, logging), [`listener`] accepts connections under a cap and shuts
//! down gracefully. [`peer`] says who connected.
#![forbid(unsafe_code)]

pub mod connection;
pub mod handler;
pub mod listener;
pub mod peer;
pub mod pool;
pub mod throttle;
