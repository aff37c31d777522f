//! The authenticator core: everything between a front end's decoded request and a
//! mechanism's verdict, shared by every socket the daemon serves.
//!
//! A front end (the saslauthd `mux` socket, the Dovecot authentication socket) owns only
//! its framing, connection lifecycle and reply encoding. It maps what its client sent onto
//! a saslauthd [`Request`](crate::protocol::Request) — the credentials libsasl would have
//! sent over `mux` for the same login — and hands it to the [`Authenticator`], which does
//! the rest, identically for every front end: validation, `-r`, throttling
//! ([`throttle`]), the credential cache ([`cache`]), the FIFO verification pool ([`pool`])
//! with its queue cap and deadline, the `auth success`/`auth failure` log lines, and the
//! statistics.
#![forbid(unsafe_code)]

mod authenticator;
pub mod cache;
pub mod pool;
pub mod throttle;
mod watchdog;

pub use authenticator::{
    Authenticator, AuthenticatorOptions, Decision, FrontEnd, LocalVerification, Origin,
    OriginFields, Pending, Start,
};
