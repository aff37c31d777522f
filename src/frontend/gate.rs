//! Admission of new connections, shared by every front end: the peer policy
//! (`--allow-uid`, `--allow-gid`), the connection cap (`--max-connections`, counted across
//! all sockets), each user's share of it (`--max-connections-per-uid`, half the cap by
//! default: one local client holding idle sockets can't starve the others; root, who can
//! stop the daemon anyway, has no share of its own) and the bounded number of refusals in
//! progress.
//!
//! A connection the gate admits holds a [`ConnectionSlot`] until it ends. One it refuses
//! gets a [`Refusal`]: the front end answers it in its own protocol (the mux socket sends
//! `NO access denied` or `NO server busy`) while holding a refusal slot, so refusals take no
//! connection slot and run no mechanism; at most [`REFUSAL_SLOTS`] are in progress at once,
//! and beyond that a connection is closed without a reply. Every decision that turns a
//! client away is logged, at most once a second per kind.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::log::RateLimitedLog;
use crate::peer::{ACCESS_DENIED, AccessPolicy, PeerCredentials};
use crate::protocol::text;

/// Refusals (`NO access denied`, `NO server busy`) in progress at once.
pub const REFUSAL_SLOTS: usize = 128;
/// Deadline of a refusal's write, and of its drain after the half-close.
pub const REFUSAL_LIMIT: Duration = Duration::from_secs(1);

/// Held by a served connection; dropping it frees the slot and the user's share.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    _share: Option<Share>,
}

/// Connections open per peer uid (`None`: the socket could not tell).
type Holders = Arc<Mutex<HashMap<Option<u32>, usize>>>;

/// One connection of a uid's share.
struct Share {
    holders: Holders,
    uid: Option<u32>,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = holders.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                holders.remove(&self.uid);
            }
        }
    }
}

/// `--max-connections-per-uid` when not given: half the cap.
pub fn default_share(max_connections: usize) -> usize {
    (max_connections / 2).max(1)
}

/// Held while a refused connection is being answered.
pub struct RefusalSlot {
    _permit: OwnedSemaphorePermit,
}

/// What to do with a new connection.
pub enum Admission {
    Serve(ConnectionSlot),
    /// Answer `NO reason` (the reason text is the mux protocol's) and close.
    Refuse(Refusal),
    /// Too many refusals in progress: close without a reply.
    Close,
}

pub struct Refusal {
    pub reason: &'static str,
    pub slot: RefusalSlot,
}

pub struct Gate {
    access: AccessPolicy,
    max_connections: usize,
    per_uid: usize,
    holders: Holders,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    busy_log: RateLimitedLog,
    share_log: RateLimitedLog,
    denied_log: RateLimitedLog,
    overflow_log: RateLimitedLog,
}

impl Gate {
    /// At most `max_connections` at once, `per_uid` of them from one peer uid.
    pub fn new(max_connections: usize, per_uid: usize, access: AccessPolicy) -> Gate {
        Gate {
            access,
            max_connections,
            per_uid: per_uid.clamp(1, max_connections.max(1)),
            holders: Arc::default(),
            slots: Arc::new(Semaphore::new(max_connections)),
            refusals: Arc::new(Semaphore::new(REFUSAL_SLOTS)),
            busy_log: RateLimitedLog::default(),
            share_log: RateLimitedLog::default(),
            denied_log: RateLimitedLog::default(),
            overflow_log: RateLimitedLog::default(),
        }
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Decides about a connection from `peer`.
    pub fn admit(&self, peer: Option<&PeerCredentials>) -> Admission {
        if !self.access.allows(peer) {
            self.denied_log.log(|| {
                let who = peer.map_or_else(|| "[peer unknown]".to_string(), |p| p.to_string());
                format!(
                    "access denied: {who} is not allowed to connect (allowed: {}); \
                     answering: NO {ACCESS_DENIED}",
                    self.access
                )
            });
            return self.refuse(ACCESS_DENIED);
        }
        self.take_slot(Some(peer))
    }

    /// Decides about a connection whose socket has no peer credentials (TCP, with a
    /// policy of its own): the connection cap only.
    pub fn admit_slot(&self) -> Admission {
        self.take_slot(None)
    }

    /// A connection slot, within the cap and, for a UNIX socket's peer (`Some`) other than
    /// root, within that peer uid's share.
    fn take_slot(&self, unix_peer: Option<Option<&PeerCredentials>>) -> Admission {
        let peer = unix_peer.flatten();
        let uid = peer.map(|p| p.uid);
        // Root, who can stop the daemon anyway, has no share of its own.
        let shared = unix_peer.is_some() && uid != Some(0);
        let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        let held = holders.get(&uid).copied().unwrap_or(0);
        if shared && held >= self.per_uid {
            drop(holders);
            self.share_log.log(|| {
                let who = peer.map_or_else(|| "[peer unknown]".to_string(), |p| p.to_string());
                format!(
                    "{who} holds {held} connections, its whole share \
                     (--max-connections-per-uid {}); answering its new ones: NO {}",
                    self.per_uid,
                    text::BUSY
                )
            });
            return self.refuse(text::BUSY);
        }
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => {
                let share = shared.then(|| {
                    *holders.entry(uid).or_insert(0) += 1;
                    Share {
                        holders: Arc::clone(&self.holders),
                        uid,
                    }
                });
                Admission::Serve(ConnectionSlot {
                    _permit: permit,
                    _share: share,
                })
            }
            Err(_) => {
                drop(holders);
                self.busy_log.log(|| {
                    format!(
                        "connection limit ({}) reached; answering new clients: NO {}",
                        self.max_connections,
                        text::BUSY
                    )
                });
                self.refuse(text::BUSY)
            }
        }
    }

    fn refuse(&self, reason: &'static str) -> Admission {
        match Arc::clone(&self.refusals).try_acquire_owned() {
            Ok(permit) => Admission::Refuse(Refusal {
                reason,
                slot: RefusalSlot { _permit: permit },
            }),
            Err(_) => {
                self.overflow_log.log(|| {
                    format!(
                        "{REFUSAL_SLOTS} refusals in progress; closing new connections \
                         without a reply"
                    )
                });
                Admission::Close
            }
        }
    }

    /// Waits (at most `limit`) until every connection and refusal has ended.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let everyone = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let refusals = u32::try_from(REFUSAL_SLOTS).unwrap_or(u32::MAX);
        let all_done = async {
            let _connections = self.slots.acquire_many(everyone).await;
            let _refusals = self.refusals.acquire_many(refusals).await;
        };
        tokio::time::timeout(limit, all_done).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::AccessSpec;

    fn peer(uid: u32) -> PeerCredentials {
        PeerCredentials {
            uid,
            gid: uid,
            pid: None,
        }
    }

    fn reason(admission: &Admission) -> Option<&'static str> {
        match admission {
            Admission::Serve(_) => None,
            Admission::Refuse(refusal) => Some(refusal.reason),
            Admission::Close => Some("closed"),
        }
    }

    #[tokio::test]
    async fn slots_are_capped_and_freed() {
        let gate = Gate::new(2, 2, AccessPolicy::default());
        let first = gate.admit(Some(&peer(1)));
        let second = gate.admit(Some(&peer(1)));
        assert_eq!(reason(&first), None);
        assert_eq!(reason(&second), None);
        assert_eq!(reason(&gate.admit(Some(&peer(1)))), Some(text::BUSY));
        drop(first);
        let third = gate.admit(Some(&peer(1)));
        assert_eq!(reason(&third), None);
        drop(second);
        assert!(!gate.wait_idle(Duration::from_millis(10)).await);
        drop(third);
        assert!(gate.wait_idle(Duration::from_millis(10)).await);
    }

    #[tokio::test]
    async fn one_uid_gets_its_share_and_the_others_the_rest() {
        let gate = Gate::new(10, default_share(10), AccessPolicy::default());
        let hog: Vec<Admission> = (0..8).map(|_| gate.admit(Some(&peer(1000)))).collect();
        let served = hog.iter().filter(|a| reason(a).is_none()).count();
        assert_eq!(served, 5, "half of the cap");
        assert!(hog[5..].iter().all(|a| reason(a) == Some(text::BUSY)));
        // Everyone else still gets in, up to the cap.
        let others: Vec<Admission> = (1..=5).map(|n| gate.admit(Some(&peer(n)))).collect();
        assert!(others.iter().all(|a| reason(a).is_none()));
        assert_eq!(reason(&gate.admit(Some(&peer(7)))), Some(text::BUSY));
        // Unknown peers share one bucket.
        drop(others);
        let unknown: Vec<Admission> = (0..6).map(|_| gate.admit(None)).collect();
        assert_eq!(unknown.iter().filter(|a| reason(a).is_none()).count(), 5);
        // A share frees up as its connections end.
        drop(hog);
        drop(unknown);
        let again = gate.admit(Some(&peer(1000)));
        assert_eq!(reason(&again), None);
        // Root has no share of its own: only the cap.
        let root: Vec<Admission> = (0..10).map(|_| gate.admit(Some(&peer(0)))).collect();
        assert_eq!(root.iter().filter(|a| reason(a).is_none()).count(), 9);
        assert_eq!(default_share(1), 1);
        assert_eq!(default_share(1024), 512);
    }

    #[tokio::test]
    async fn refused_peers_take_refusal_slots_only() {
        let spec = AccessSpec {
            uids: Some(vec![crate::peer::Id::Number(7)]),
            gids: None,
        };
        let policy = spec.resolve(&|_| Ok(None), &|_| Ok(None)).unwrap();
        let gate = Gate::new(1, 1, policy);
        let refusals: Vec<Admission> = (0..REFUSAL_SLOTS)
            .map(|_| gate.admit(Some(&peer(8))))
            .collect();
        assert!(refusals.iter().all(|a| reason(a) == Some(ACCESS_DENIED)));
        assert_eq!(reason(&gate.admit(Some(&peer(8)))), Some("closed"));
        let served = gate.admit(Some(&peer(7)));
        assert_eq!(reason(&served), None);
        drop(refusals);
        drop(served);
        assert!(gate.wait_idle(Duration::from_secs(1)).await);
    }
}
