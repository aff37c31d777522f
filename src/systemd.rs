//! The service manager's side doors: socket activation (`LISTEN_FDS`) and readiness
//! notification (`NOTIFY_SOCKET`), both optional and both plain environment protocols.
//!
//! Activation takes the inherited listening sockets (the mux socket, and the Dovecot
//! protocol socket named `dovecot`) through `listenfd`, which validates each as a stream
//! listener of the expected family (the one `unsafe` step of turning a number into a
//! socket stays in that crate). Notification is one datagram per state change, never blocking.
#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::ops::Range;
use std::os::fd::RawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::Path;

/// The first descriptor the service manager passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;
/// Names a socket unit may give our listening socket (`FileDescriptorName=`).
const OUR_FD_NAMES: [&str; 2] = ["saslauthd", "mux"];

/// Whether a service manager is waiting for our readiness or handing us a socket: then
/// the daemon must stay in the foreground (its pid is the one the manager watches).
pub fn managed() -> bool {
    let activated = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    activated || std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// The descriptors the service manager passed (`LISTEN_FDS`, from 3 up), when they are
/// meant for this process (`LISTEN_PID`). Reads the environment only.
pub fn passed_fds() -> Option<Range<RawFd>> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    let count: RawFd = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    (for_us && count > 0).then(|| LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(count))
}

/// The name a socket unit gives the Dovecot protocol socket (`FileDescriptorName=dovecot`).
pub const DOVECOT_FD_NAME: &str = "dovecot";

/// The listening sockets passed by the service manager.
#[derive(Debug, Default)]
pub struct Inherited {
    /// The saslauthd socket: the one named `saslauthd` or `mux` in `LISTEN_FDNAMES`, else
    /// the first one not named `dovecot`.
    pub mux: Option<UnixListener>,
    /// The one named `dovecot`: a UNIX or a TCP listener.
    pub dovecot: Option<InheritedSocket>,
}

/// A listening socket of either kind.
#[derive(Debug)]
pub enum InheritedSocket {
    Unix(UnixListener),
    Tcp(std::net::TcpListener),
}

/// The listening sockets passed by the service manager, if any. Call this before any
/// thread starts: it clears `LISTEN_PID`/`LISTEN_FDS` from the environment.
pub fn inherited_listeners() -> std::io::Result<Inherited> {
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let names: Vec<&str> = names.split(':').collect();
    let mut fds = listenfd::ListenFd::from_env();
    let count = fds.len();
    if count == 0 {
        return Ok(Inherited::default());
    }
    let dovecot = names
        .iter()
        .position(|&name| name == DOVECOT_FD_NAME)
        .filter(|&i| i < count);
    let mux = names
        .iter()
        .position(|name| OUR_FD_NAMES.contains(name))
        .filter(|&i| i < count)
        .or_else(|| (0..count).find(|&i| Some(i) != dovecot));
    let dovecot = match dovecot {
        None => None,
        Some(index) => match fds.take_unix_listener(index) {
            Ok(listener) => listener.map(InheritedSocket::Unix),
            Err(_) => fds.take_tcp_listener(index)?.map(InheritedSocket::Tcp),
        },
    };
    let mux = match mux {
        Some(index) => fds.take_unix_listener(index)?,
        None => None,
    };
    Ok(Inherited { mux, dovecot })
}

/// Sends one notification (`READY=1`, `STOPPING=1`, `STATUS=...`) if a manager listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.as_encoded_bytes();
    let address = match path.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
        None => SocketAddr::from_pathname(Path::new(OsStr::from_bytes(path))),
    };
    let Ok(address) = address else {
        return;
    };
    if let Ok(socket) = UnixDatagram::unbound() {
        let _ = socket.set_nonblocking(true);
        let _ = socket.send_to_addr(state.as_bytes(), &address);
    }
}
