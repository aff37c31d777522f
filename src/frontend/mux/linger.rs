//! The post-reply drain of connections answered at once (on an accepting or a pool
//! thread), without the reactor.
//!
//! A connection answered at once lingers here, half-closed after its reply, until the
//! client closes, its drain deadline passes or the daemon stops, and whatever the client
//! still sends is taken and thrown away: the client reads its reply and a clean end of
//! stream, never a reset or a broken pipe, as on the async path. It keeps its connection
//! (or refusal) slot until then, so lingering connections count against
//! `--max-connections`.
//!
//! Nobody waits on these sockets: the accepting threads [`sweep`](Lingering::sweep) them
//! with one `poll` after every accept (before the gate counts slots, so a client that
//! closed is never counted) and whenever their accept gives up. libsasl closes right
//! after reading the reply, so a sweep usually finds the previous client gone and closes
//! its socket without reading.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, recv};
use zeroize::Zeroize;

/// What a lingering connection holds until it ends: its connection or refusal slot.
pub type Held = Box<dyn Send>;

struct Entry {
    /// Shared with the thread that is still sending the reply, until it has.
    stream: Arc<UnixStream>,
    until: Instant,
    held: Held,
}

/// The lingering connections.
#[derive(Default)]
pub struct Lingering {
    entries: Mutex<Vec<Entry>>,
    /// `entries.len()`, readable without the lock.
    count: AtomicUsize,
    /// The daemon is stopping: drains are cut short.
    stopping: AtomicBool,
}

/// A sweep's answer for one connection.
enum Fate {
    Keep,
    Close,
}

impl Lingering {
    /// Lets a connection drain until `until`, from before its reply is sent: a client that
    /// reads the reply, closes and connects again at once must find its slot free, so
    /// the connection is here, to be swept, by then. The caller then sends the reply and
    /// half-closes. When the daemon is stopping, nothing lingers: `held` is given back, to
    /// be dropped once the reply is sent.
    pub fn push(&self, stream: Arc<UnixStream>, until: Instant, held: Held) -> Option<Held> {
        if self.stopping.load(Ordering::Acquire) {
            return Some(held);
        }
        let mut entries = self.lock();
        entries.push(Entry {
            stream,
            until,
            held,
        });
        self.count.store(entries.len(), Ordering::Release);
        None
    }

    /// Takes a connection back (its reply could not be sent at once): its slot, unless a
    /// sweep has closed it already (the client went away).
    pub fn reclaim(&self, stream: &Arc<UnixStream>) -> Option<Held> {
        let mut entries = self.lock();
        let index = entries
            .iter()
            .position(|entry| Arc::ptr_eq(&entry.stream, stream))?;
        let entry = entries.swap_remove(index);
        self.count.store(entries.len(), Ordering::Release);
        Some(entry.held)
    }

    /// Closes the connections whose client closed or whose deadline passed, and takes what
    /// the others sent.
    pub fn sweep(&self) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut entries = self.lock();
        let stopping = self.stopping.load(Ordering::Acquire);
        let now = Instant::now();
        let events = PollFlags::POLLIN;
        let mut fds: Vec<PollFd<'_>> = entries
            .iter()
            .map(|entry| PollFd::new(entry.stream.as_fd(), events))
            .collect();
        let polled = poll(&mut fds, PollTimeout::ZERO).is_ok();
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        let mut index = 0;
        entries.retain_mut(|entry| {
            let revents = revents[index];
            index += 1;
            if stopping || now >= entry.until {
                drain(&entry.stream, true);
                return false;
            }
            !polled || matches!(fate(&entry.stream, revents), Fate::Keep)
        });
        self.count.store(entries.len(), Ordering::Release);
    }

    /// From now on every drain is cut short: what lingers is closed, and so is what
    /// arrives later.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let mut entries = self.lock();
        for entry in entries.drain(..) {
            drain(&entry.stream, true);
        }
        self.count.store(0, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What `poll` said about a lingering connection: the client closed (or the socket
/// failed), or it sent bytes, which are taken and dropped.
fn fate(stream: &UnixStream, revents: PollFlags) -> Fate {
    // Half-closed by us, so the client's close (or half-close) is POLLHUP, or, before our
    // half-close, POLLIN with an end of stream behind the bytes.
    let gone = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
    if revents.intersects(gone) {
        return Fate::Close;
    }
    if !revents.contains(PollFlags::POLLIN) {
        return Fate::Keep;
    }
    if drain(stream, false) {
        Fate::Close
    } else {
        Fate::Keep
    }
}

/// Takes and drops what the client has sent, without waiting, so that closing the socket
/// resets nothing: one receive, unless more is queued than it takes.
pub fn take_unread(stream: &UnixStream) {
    drain(stream, true);
}

/// Takes and drops what is queued, without waiting; `quick`: stops at a short read (all
/// that was queued is taken), else goes on to learn whether the end of the stream is
/// behind it. True when the client has closed (or the socket failed).
fn drain(stream: &UnixStream, quick: bool) -> bool {
    let mut sink = [0u8; 4096];
    let closed = loop {
        match recv(stream.as_raw_fd(), &mut sink, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => break true,
            Ok(n) if quick && n < sink.len() => break false,
            Ok(_) => {}
            Err(Errno::EAGAIN) => break false,
            Err(Errno::EINTR) => {}
            Err(_) => break true,
        }
    };
    sink.zeroize();
    closed
}
