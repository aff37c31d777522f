//! The daemon's front ends: the sockets clients connect to, one protocol each, all
//! served by the one [`Authenticator`](crate::auth::Authenticator).
//!
//! [`mux`] is the saslauthd protocol on `<rundir>/mux` (connection → listener, one layer
//! per file after mini-redis); [`dovecot`] is the Dovecot authentication protocol on
//! `--dovecot-socket`, for Postfix and Exim without libsasl. [`gate`] is what every front end shares before a
//! connection is served: who may connect (`--allow-uid`, `--allow-gid`) and how many
//! connections may be open at once (`--max-connections`, counted across all sockets).
#![forbid(unsafe_code)]

pub mod dovecot;
pub mod gate;
pub mod mux;
