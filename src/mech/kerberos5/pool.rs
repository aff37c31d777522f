//! The daemon's side of the kerberos5 helpers ([`super::helper`]): idle helper processes
//! kept for reuse, one job at a time each, every wait bounded by the request's deadline.
//!
//! A helper is started on first need (never in `new`: the daemon edits its environment and
//! may drop privileges after creating the mechanism; helpers inherit both) from
//! `/proc/self/exe`, so it is always this very build, even after a package upgrade
//! replaced the file. Its stdin and stdout are pipes; stderr is discarded. A helper goes
//! back to the idle list after a complete answer; on a deadline, a malformed line or any
//! I/O error it is killed (`SIGKILL`) and reaped at once. At most one helper per
//! verification thread exists, since each is held by the thread that waits for it. Idle
//! helpers exit when the daemon does (their stdin reaches its end).
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::helper::{Event, HELPER_ARG, Job, Step};
use crate::protocol::Reply;
use crate::{log_debug, log_err};

/// The longest line a helper may send.
const MAX_LINE: usize = 64 * 1024;

/// How a job ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The helper's reply.
    Reply(Reply),
    /// The helper's reply, a `NO` for a KDC it could not reach.
    Outage(Reply),
    /// The deadline passed during `step`; the helper was killed.
    TimedOut(Step),
    /// The helper could not be started or broke the protocol (why, for the log).
    Failed(String),
}

pub struct Pool {
    program: PathBuf,
    /// Arguments before [`HELPER_ARG`] (none: only the tests use a stand-in program).
    args: Vec<OsString>,
    idle: Mutex<Vec<Helper>>,
}

struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Bytes read but not yet split into lines.
    pending: Vec<u8>,
}

enum ReadError {
    TimedOut,
    Broken(String),
}

impl Pool {
    pub fn new() -> Pool {
        Pool {
            program: PathBuf::from("/proc/self/exe"),
            args: Vec::new(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `job` on a helper; `log` gets the helper's log lines. Returns by `deadline`
    /// (plus the few milliseconds a kill takes).
    pub fn run(&self, job: &Job, deadline: Instant, log: &mut dyn FnMut(&str)) -> Outcome {
        let frame = job.encode();
        let reused = self.take_idle();
        let mut helper = match reused {
            Some(mut helper) => match helper.send(frame.as_bytes()) {
                Ok(()) => helper,
                // An idle helper that died (killed by an administrator, the OOM killer):
                // one fresh try.
                Err(error) => {
                    log_debug!("kerberos5: an idle helper was gone ({error}); starting another");
                    helper.kill();
                    match self.start_and_send(frame.as_bytes()) {
                        Ok(helper) => helper,
                        Err(outcome) => return outcome,
                    }
                }
            },
            None => match self.start_and_send(frame.as_bytes()) {
                Ok(helper) => helper,
                Err(outcome) => return outcome,
            },
        };
        let mut step = Step::InitialCredentials;
        let mut outage = false;
        loop {
            match helper.next_event(deadline) {
                Ok(Event::Step(next)) => step = next,
                Ok(Event::Log(line)) => log(&line),
                Ok(Event::Outage) => outage = true,
                Ok(Event::Reply(text)) => {
                    return match parse_reply(&text) {
                        Some(reply) => {
                            self.put_back(helper);
                            if outage && !reply.is_ok() {
                                Outcome::Outage(reply)
                            } else {
                                Outcome::Reply(reply)
                            }
                        }
                        None => {
                            helper.kill();
                            Outcome::Failed(format!("unexpected reply {text:?}"))
                        }
                    };
                }
                Err(ReadError::TimedOut) => {
                    helper.kill();
                    return Outcome::TimedOut(step);
                }
                Err(ReadError::Broken(why)) => {
                    helper.kill();
                    return Outcome::Failed(why);
                }
            }
        }
    }

    fn start_and_send(&self, frame: &[u8]) -> Result<Helper, Outcome> {
        let mut helper = self
            .start()
            .map_err(|e| Outcome::Failed(format!("cannot start a helper process: {e}")))?;
        match helper.send(frame) {
            Ok(()) => Ok(helper),
            Err(error) => {
                helper.kill();
                Err(Outcome::Failed(format!(
                    "cannot talk to a new helper: {error}"
                )))
            }
        }
    }

    fn start(&self) -> io::Result<Helper> {
        // `saslauthd` as argv[0], so `ps` shows what the helper belongs to.
        let mut child = Command::new(&self.program)
            .arg0("saslauthd")
            .args(&self.args)
            .arg(HELPER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("no pipes to the helper"));
        };
        log_debug!("kerberos5: started helper process {}", child.id());
        Ok(Helper {
            child,
            stdin,
            stdout,
            pending: Vec::new(),
        })
    }

    fn take_idle(&self) -> Option<Helper> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_back(&self, helper: Helper) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(helper);
    }
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::new()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for helper in self
            .idle
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            helper.kill();
        }
    }
}

impl Helper {
    /// Writes a job frame. An idle helper is blocked reading its stdin, so this does not
    /// wait on it.
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.stdin.write_all(frame)?;
        self.stdin.flush()
    }

    /// The next line the helper sends, waiting no later than `deadline`.
    fn next_event(&mut self, deadline: Instant) -> Result<Event, ReadError> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Event::decode(&line[..end]).ok_or_else(|| {
                    ReadError::Broken(format!(
                        "unexpected line from the helper: {:?}",
                        String::from_utf8_lossy(&line[..end])
                    ))
                });
            }
            if self.pending.len() > MAX_LINE {
                return Err(ReadError::Broken("over-long line from the helper".into()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::TimedOut);
            }
            let mut fds = [PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, poll_timeout(left)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) => return Err(ReadError::Broken(format!("poll: {}", errno.desc()))),
            }
            let mut chunk = [0u8; 4096];
            match self.stdout.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Broken("the helper exited".into())),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Broken(format!("reading from the helper: {e}"))),
            }
        }
    }

    /// SIGKILL and reap: gone at once, whatever it was doing.
    fn kill(mut self) {
        let pid = self.child.id();
        if let Err(error) = self.child.kill() {
            log_err!("kerberos5: cannot stop helper process {pid}: {error}");
        }
        let _ = self.child.wait();
        log_debug!("kerberos5: stopped helper process {pid}");
    }
}

/// `left`, rounded up to whole milliseconds (so a poll never ends just before the
/// deadline and spins).
fn poll_timeout(left: Duration) -> PollTimeout {
    let millis = left.as_millis().saturating_add(1);
    PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
}

/// A helper's reply text back into a [`Reply`].
fn parse_reply(text: &str) -> Option<Reply> {
    if text == "OK" {
        return Some(Reply::ok());
    }
    text.strip_prefix("NO ").map(Reply::no)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_come_back_as_sent() {
        assert_eq!(parse_reply("OK"), Some(Reply::ok()));
        assert_eq!(
            parse_reply("NO krb5_verify_init_creds failed"),
            Some(Reply::no("krb5_verify_init_creds failed"))
        );
        assert_eq!(parse_reply("OK extra"), None);
        assert_eq!(parse_reply("maybe"), None);
    }

    #[test]
    fn poll_timeouts_round_up() {
        assert_eq!(
            poll_timeout(Duration::from_micros(10)),
            PollTimeout::try_from(1u32).unwrap()
        );
        assert_eq!(
            poll_timeout(Duration::from_millis(1500)),
            PollTimeout::try_from(1501u32).unwrap()
        );
    }

    fn stand_in(script: &str) -> Pool {
        Pool {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Stand-in helpers show the deadline, the kill and a helper that dies.
    #[test]
    fn a_silent_helper_is_killed_at_the_deadline() {
        let job = Job {
            principal: b"a".to_vec(),
            password: crate::secret::Password::new(b"p".to_vec()),
            keytab: None,
            service: b"host".to_vec(),
            hostname: None,
        };
        // Exits at once: its stdout closes.
        let pool = stand_in("exit 0");
        let outcome = pool.run(&job, Instant::now() + Duration::from_secs(5), &mut |_| {});
        assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
        // Answers after logging.
        let pool = stand_in("printf 'log hello\\nstep verify\\nreply NO x\\n'; exec sleep 30");
        let mut logged = Vec::new();
        let outcome = pool.run(&job, Instant::now() + Duration::from_secs(5), &mut |line| {
            logged.push(line.to_string())
        });
        assert_eq!(outcome, Outcome::Reply(Reply::no("x")));
        assert_eq!(logged, ["hello"]);
        assert_eq!(pool.idle.lock().unwrap().len(), 1, "kept for the next job");
        drop(pool);
        // Flags its NO as an outage.
        let pool = stand_in("printf 'log no KDC\noutage\nreply NO x\n'; exec sleep 30");
        let outcome = pool.run(&job, Instant::now() + Duration::from_secs(5), &mut |_| {});
        assert_eq!(outcome, Outcome::Outage(Reply::no("x")));
        drop(pool);
        // Reads nothing and says nothing: the deadline ends it.
        let pool = stand_in("exec sleep 30");
        let started = Instant::now();
        let outcome = pool.run(&job, started + Duration::from_millis(300), &mut |_| {});
        assert_eq!(outcome, Outcome::TimedOut(Step::InitialCredentials));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(
            pool.idle.lock().unwrap().is_empty(),
            "a killed helper is not kept"
        );
    }
}
