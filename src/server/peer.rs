//! Who is on the other end of a client connection: the kernel's `SO_PEERCRED` answer
//! (uid, gid and pid of the process that connected), logged with each request.
#![forbid(unsafe_code)]

use std::fmt;

use tokio::net::UnixStream;

/// The connecting process's credentials, as the kernel recorded them at `connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl PeerCredentials {
    /// `None` when the kernel cannot say (never on Linux for a connected AF_UNIX socket).
    pub fn of(stream: &UnixStream) -> Option<PeerCredentials> {
        let cred = stream.peer_cred().ok()?;
        Some(PeerCredentials {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        })
    }
}

impl fmt::Display for PeerCredentials {
    /// `[peer uid=U gid=G pid=P]`, the form used in log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[peer uid={} gid={}", self.uid, self.gid)?;
        if let Some(pid) = self.pid {
            write!(f, " pid={pid}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_form() {
        let peer = PeerCredentials {
            uid: 107,
            gid: 113,
            pid: Some(4242),
        };
        assert_eq!(peer.to_string(), "[peer uid=107 gid=113 pid=4242]");
        let no_pid = PeerCredentials { pid: None, ..peer };
        assert_eq!(no_pid.to_string(), "[peer uid=107 gid=113]");
    }

    #[tokio::test]
    async fn reads_our_own_credentials_over_a_socket_pair() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = PeerCredentials::of(&a).unwrap();
        assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(peer.pid, Some(std::process::id() as i32));
    }
}
