//! The kerberos5 helper process: our own executable started as `saslauthd
//! --kerberos5-helper` (see [`super::pool`]), which runs libkrb5 for one request at a time.
//!
//! Why a process: libkrb5 has no bound on how long it talks to a KDC (MIT 1.20 waits about
//! 27 s for a silent one, with no setting for the total), and name canonicalisation and
//! DNS lookups inside it are no better. A thread stuck in it can't be stopped; a process
//! can. So the daemon's thread waits for the helper's answer under the deadline and, when
//! it passes, kills the helper and answers `NO` at once: the thread is free again at the
//! deadline, and nothing keeps running in the background. Everything krb5.conf can say
//! (DNS SRV records, KKDCP proxies, locator plugins, primary-KDC retries) works, because
//! libkrb5 does the talking.
//!
//! Per request, in a fresh library context (so krb5.conf edits apply to the next request):
//! `krb5_parse_name`, `krb5_get_init_creds_password`, the keytab (`krb5_kt_resolve` when
//! `krb5_keytab` names one), the server principal (`krb5_sname_to_principal`) and
//! `krb5_verify_init_creds` with `ap_req_nofail`. No credential or replay cache is written.
//!
//! The pipe protocol (private to one build: the helper is always our own executable).
//! Daemon → helper: a job frame, a `u32` big-endian length and then five fields, each a
//! `u32` big-endian length (`u32::MAX`: absent) and its bytes — principal, password,
//! keytab, service, host name. Helper → daemon: text lines, `step verify` when the
//! password has been accepted and the KDC is asked about the server, `log <text>` for a
//! line to log (libkrb5's error texts), `outage` when the `NO` to come is no verdict (no
//! KDC could be reached, see [`Krb5Error::no_kdc_answered`]), and last `reply <text>`.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::process::ExitCode;

use zeroize::Zeroizing;

use super::text;
use crate::log::sanitize;
use crate::protocol::Reply;
use crate::secret::Password;
use crate::sys::krb5::{Context, Krb5Error};

/// The argument that makes `saslauthd` a helper.
pub const HELPER_ARG: &str = "--kerberos5-helper";
/// The longest job frame a helper accepts (five fields of up to 64 KiB each, and more).
const MAX_FRAME: usize = 1 << 20;
const ABSENT: u32 = u32::MAX;

/// One verification for a helper.
#[derive(Debug, PartialEq, Eq)]
pub struct Job {
    pub principal: Vec<u8>,
    pub password: Password,
    /// `krb5_keytab` (`None`: libkrb5's default keytab).
    pub keytab: Option<Vec<u8>>,
    /// `krb5_verify_principal`.
    pub service: Vec<u8>,
    /// `krb5_servername` (`None`: this host's name).
    pub hostname: Option<Vec<u8>>,
}

/// Where a verification is (what a deadline interrupts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `krb5_get_init_creds_password`: the AS exchange.
    InitialCredentials,
    /// `krb5_verify_init_creds`: the TGS exchange for the server and the keytab check.
    Verification,
}

impl Step {
    /// The reply when the step fails (or runs out of time).
    pub fn failure(self) -> &'static str {
        match self {
            Step::InitialCredentials => text::GET_INIT_CREDS_FAILED,
            Step::Verification => text::VERIFY_FAILED,
        }
    }
}

/// One line from a helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Step(Step),
    Log(String),
    /// The reply to come reports an outage (no KDC answered), not a wrong password.
    Outage,
    Reply(String),
}

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        let line = match self {
            Event::Step(Step::InitialCredentials) => "step init".to_string(),
            Event::Step(Step::Verification) => "step verify".to_string(),
            Event::Log(text) => format!("log {}", sanitize(text.as_bytes())),
            Event::Outage => "outage".to_string(),
            Event::Reply(text) => format!("reply {}", sanitize(text.as_bytes())),
        };
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        bytes
    }

    /// A line without its `\n`.
    pub fn decode(line: &[u8]) -> Option<Event> {
        let line = std::str::from_utf8(line).ok()?;
        if line == "outage" {
            return Some(Event::Outage);
        }
        let (kind, rest) = line.split_once(' ')?;
        match (kind, rest) {
            ("step", "init") => Some(Event::Step(Step::InitialCredentials)),
            ("step", "verify") => Some(Event::Step(Step::Verification)),
            ("log", text) => Some(Event::Log(text.to_string())),
            ("reply", text) => Some(Event::Reply(text.to_string())),
            _ => None,
        }
    }
}

impl Job {
    /// The frame, in a buffer that wipes itself (it holds the password).
    pub fn encode(&self) -> Password {
        let fields: [Option<&[u8]>; 5] = [
            Some(&self.principal),
            Some(self.password.as_bytes()),
            self.keytab.as_deref(),
            Some(&self.service),
            self.hostname.as_deref(),
        ];
        let body_len: usize = fields.iter().map(|f| 4 + f.map_or(0, <[u8]>::len)).sum();
        let mut frame = Password::new(Vec::with_capacity(4 + body_len));
        frame.extend_from_slice(&(body_len as u32).to_be_bytes());
        for field in fields {
            match field {
                Some(bytes) => {
                    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    frame.extend_from_slice(bytes);
                }
                None => frame.extend_from_slice(&ABSENT.to_be_bytes()),
            }
        }
        frame
    }

    /// Reads one frame; `Ok(None)` at a clean end of input (the daemon is gone).
    pub fn read(input: &mut impl Read) -> io::Result<Option<Job>> {
        let mut length = [0u8; 4];
        match input.read_exact(&mut length) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let length = u32::from_be_bytes(length) as usize;
        if length > MAX_FRAME {
            return Err(invalid("frame too long"));
        }
        // The body holds the password: wipe it.
        let mut body = Zeroizing::new(vec![0; length]);
        input.read_exact(&mut body)?;
        Job::decode(&body)
            .map(Some)
            .ok_or_else(|| invalid("malformed frame"))
    }

    fn decode(mut body: &[u8]) -> Option<Job> {
        let mut next = || -> Option<Option<Vec<u8>>> {
            let length = u32::from_be_bytes(body.get(..4)?.try_into().ok()?);
            body = &body[4..];
            if length == ABSENT {
                return Some(None);
            }
            let field = body.get(..length as usize)?.to_vec();
            body = &body[length as usize..];
            Some(Some(field))
        };
        let principal = next()??;
        let password = Password::new(next()??);
        let keytab = next()?;
        let service = next()??;
        let hostname = next()?;
        body.is_empty().then_some(Job {
            principal,
            password,
            keytab,
            service,
            hostname,
        })
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The helper's `main`: jobs from stdin, events to stdout, until stdin ends.
pub fn main() -> ExitCode {
    let _ = nix::sys::prctl::set_name(c"saslauthd-krb5");
    // It holds passwords, as the daemon does; execve made it dumpable again.
    if crate::privileges::forbid_core_dumps().is_err() {
        return ExitCode::from(1);
    }
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    loop {
        let job = match Job::read(&mut input) {
            Ok(Some(job)) => job,
            Ok(None) => return ExitCode::SUCCESS,
            Err(_) => return ExitCode::from(1),
        };
        let mut failed = false;
        let mut emit = |event: Event| {
            failed |= output.write_all(&event.encode()).is_err() || output.flush().is_err();
        };
        let reply = verify(&job, &mut emit);
        emit(Event::Reply(reply.text()));
        if failed {
            return ExitCode::from(1);
        }
    }
}

/// The libkrb5 sequence for one job; `emit` gets progress and log lines.
pub fn verify(job: &Job, emit: &mut dyn FnMut(Event)) -> Reply {
    let mut fail = |call: &str, error: Krb5Error, reply: &str| failure(emit, call, error, reply);
    let context = match Context::new() {
        Ok(context) => context,
        Err(error) => return fail("krb5_init_context", error, text::INTERNAL),
    };
    let Ok(name) = CString::new(job.principal.clone()) else {
        return Reply::no(text::INTERNAL);
    };
    let client = match context.parse_name(&name) {
        Ok(client) => client,
        Err(error) => return fail("krb5_parse_name", error, text::INTERNAL),
    };
    let mut creds = match context.get_init_creds_password(&client, &job.password) {
        Ok(creds) => creds,
        Err(error) => {
            return fail(
                "krb5_get_init_creds_password",
                error,
                text::GET_INIT_CREDS_FAILED,
            );
        }
    };
    emit(Event::Step(Step::Verification));
    let mut fail = |call: &str, error: Krb5Error, reply: &str| failure(emit, call, error, reply);
    let keytab = match job.keytab.as_deref().map(CString::new) {
        None => None,
        Some(Ok(name)) => match context.keytab(&name) {
            Ok(keytab) => Some(keytab),
            Err(error) => return fail("krb5_kt_resolve", error, text::INTERNAL),
        },
        Some(Err(_)) => return Reply::no(text::INTERNAL),
    };
    let (Ok(service), Ok(hostname)) = (
        CString::new(job.service.clone()),
        job.hostname.clone().map(CString::new).transpose(),
    ) else {
        return Reply::no(text::INTERNAL);
    };
    let server = match context.host_service_principal(hostname.as_deref(), &service) {
        Ok(server) => server,
        Err(error) => return fail("krb5_sname_to_principal", error, text::INTERNAL),
    };
    match context.verify_init_creds(&mut creds, &server, keytab.as_ref()) {
        Ok(()) => Reply::ok(),
        Err(error) => fail("krb5_verify_init_creds", error, text::VERIFY_FAILED),
    }
}

/// `NO reply` for a failed libkrb5 call: its error is logged, and flagged as an outage
/// when no KDC answered.
fn failure(emit: &mut dyn FnMut(Event), call: &str, error: Krb5Error, reply: &str) -> Reply {
    emit(Event::Log(format!("auth_krb5: {call}: {error}")));
    if error.no_kdc_answered() {
        emit(Event::Outage);
    }
    Reply::no(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            principal: b"kuser@EXAMPLE.TEST".to_vec(),
            password: Password::new("pä ss\nword".as_bytes().to_vec()),
            keytab: None,
            service: b"host".to_vec(),
            hostname: Some(b"kdchost".to_vec()),
        }
    }

    #[test]
    fn jobs_survive_the_pipe() {
        let frame = job().encode();
        let mut input = frame.as_bytes();
        assert_eq!(Job::read(&mut input).unwrap(), Some(job()));
        assert_eq!(Job::read(&mut input).unwrap(), None, "end of input");
        let with_keytab = Job {
            keytab: Some(b"FILE:/etc/krb5.keytab".to_vec()),
            hostname: None,
            ..job()
        };
        let frame = with_keytab.encode();
        assert_eq!(Job::read(&mut frame.as_bytes()).unwrap(), Some(with_keytab));
    }

    #[test]
    fn malformed_frames_are_errors() {
        let frame = job().encode();
        let bytes = frame.as_bytes();
        assert!(
            Job::read(&mut &bytes[..bytes.len() - 1]).is_err(),
            "cut short"
        );
        let mut longer = bytes.to_vec();
        longer[3] += 1;
        longer.push(0);
        assert!(Job::read(&mut &longer[..]).is_err(), "trailing byte");
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(Job::read(&mut &huge[..]).is_err());
        assert!(Job::decode(&[0, 0, 0, 9]).is_none());
    }

    #[test]
    fn events_are_single_lines() {
        for event in [
            Event::Step(Step::Verification),
            Event::Step(Step::InitialCredentials),
            Event::Log("auth_krb5: x: y (1)".into()),
            Event::Reply("NO krb5_verify_init_creds failed".into()),
            Event::Reply("OK".into()),
            Event::Outage,
        ] {
            let line = event.encode();
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(Event::decode(&line[..line.len() - 1]), Some(event));
        }
        let log = Event::Log("two\nlines".into()).encode();
        assert_eq!(log.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(Event::decode(b"nonsense"), None);
        assert_eq!(Event::decode(b"step later"), None);
    }
}
