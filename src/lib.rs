//! saslauthd-rs: a memory-safe, drop-in replacement for Cyrus SASL's `saslauthd` daemon
//! and its `testsaslauthd` client.
//!
//! Layers, bottom up: [`sys`] (FFI); [`secret`] (the password type), [`digest`], [`log`],
//! [`peer`] (who connected) and [`protocol`] (the saslauthd wire format, pure, shared with
//! the client); [`hash`] and [`mech`] (verification, one module per mechanism); [`auth`]
//! (the authenticator core: validation, `-r`, throttle, cache, verification pool, log
//! lines); [`frontend`] (the sockets: framing, connections, listeners); [`config`],
//! [`privileges`], [`systemd`] and [`daemon`] (the daemon process); [`client`]
//! (`testsaslauthd`). A module only uses modules below it. `fuzz` holds the fuzz targets'
//! entry points.
//! `unsafe` code lives only in [`sys`], the FFI wrappers; every other module forbids it.
#![deny(unsafe_code)]

pub mod auth;
pub mod client;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod frontend;
#[doc(hidden)]
pub mod fuzz;
pub mod handover;
pub mod hash;
pub mod log;
pub mod mech;
pub mod peer;
pub mod privileges;
pub mod protocol;
pub mod secret;
pub mod sys;
pub mod systemd;
