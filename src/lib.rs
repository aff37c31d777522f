//! saslauthd-rs: a memory-safe, drop-in replacement for Cyrus SASL's `saslauthd` daemon
//! and its `testsaslauthd` client.
//!
//! Layers, bottom up: [`protocol`] (the wire format, pure), [`secret`] (the password type),
//! [`hash`] and [`mech`] (verification), [`server`] (connection → handler → listener),
//! [`config`] and [`daemon`] (the daemon process), [`client`] (`testsaslauthd`), [`log`].
//! `unsafe` code lives only in [`sys`], the FFI wrappers; every other module forbids it.
#![deny(unsafe_code)]

pub mod cache;
pub mod client;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod hash;
pub mod log;
pub mod mech;
pub mod privileges;
pub mod protocol;
pub mod secret;
pub mod server;
pub mod sys;
pub mod systemd;
