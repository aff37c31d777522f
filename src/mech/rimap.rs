//! `-a rimap`: a password is good when a remote IMAP server accepts it in a `LOGIN`.
//!
//! `-O SERVER` names the server ([`address`] lists the forms). Per request: resolve the host
//! (cached for [`RESOLVE_CACHE_TTL`]; never only at startup, so the daemon starts while DNS
//! is down and works once it is back), connect to each address in turn until one answers,
//! TLS from the first byte for `imaps://`, read the greeting, `STARTTLS` and a TLS handshake
//! under `--rimap-starttls`, then `LOGIN`, then `LOGOUT` after the verdict. One deadline
//! (`--rimap-timeout`, default 10 s) covers everything up to the verdict; `LOGOUT` gets at
//! most [`LOGOUT_BOUND`] more. Certificates are always verified, against `--rimap-ca-file`
//! or the system's trust store, for `--rimap-tls-name` or the host from `-O`; there is no way
//! to turn that off. The realm, service and client address are ignored (under `-r` the login
//! already carries the realm), as upstream.
//!
//! Replies are upstream's: `OK remote authentication successful`, `NO remote server rejected
//! your credentials` (tagged `NO` to `LOGIN`), and the `NO [ALERT] ...` family for every
//! other outcome (see [`text`]); the reason goes to the log. Differences: untagged responses
//! before the tagged reply (`* CAPABILITY`, `* OK [ALERT] ...`) are skipped instead of being
//! "unexpected"; a login or password with CR, LF or NUL is refused before connecting
//! (upstream sends CR and LF raw, splitting the command in two); 8-bit and control bytes go
//! in literals ([`quote`]); nothing logged ever holds the password.
//!
//! **Threads and runtimes.** `authenticate` runs on a thread of the daemon's verification
//! pool and drives the IMAP exchange on the mechanism's own runtime ([`IoRuntime`], which
//! says why).
//!
//! **async-imap and what is done by hand.** async-imap reads and parses every server
//! response (greeting, STARTTLS, LOGIN, LOGOUT) and runs `STARTTLS` and `LOGOUT`. The `LOGIN`
//! command is written by hand on the connection, because async-imap's `login` copies the
//! password into `String`s and a `Vec` that are never wiped, takes only UTF-8, and cannot
//! send literals; its unauthenticated client has no public way to send raw command bytes, so
//! they go on the stream (`Connection::get_mut`) and the replies are read back through
//! `read_response`. The command lives only in [`Password`] buffers, wiped on drop.
#![forbid(unsafe_code)]

pub mod address;
pub mod quote;
pub mod transport;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_imap::Client;
use async_imap::imap_proto::{Response, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use self::address::{Host, PortSpec, ServerSpec};
use self::transport::{Capped, MAX_SERVER_BYTES, Scripted, Transport};
use super::io_runtime::IoRuntime;
use super::{Credentials, Mechanism, net, tls};
use crate::log::sanitize;
use crate::protocol::Reply;
use crate::secret::Password;
use crate::{log_debug, log_info, log_warn};

/// The reply texts (after `OK ` / `NO `).
pub mod text {
    pub const OK: &str = "remote authentication successful";
    pub const REJECTED: &str = "remote server rejected your credentials";
    pub const CANNOT_CONNECT: &str = "[ALERT] Couldn't contact remote authentication server";
    pub const SYNC_ERROR: &str = "[ALERT] error synchronizing with remote authentication server";
    pub const UNAVAILABLE: &str =
        "[ALERT] The remote authentication server is currently unavailable";
    pub const UNEXPECTED: &str = "[ALERT] Unexpected response from remote authentication server";
    pub const INTERNAL: &str = "[ALERT] saslauthd internal error";
    /// Ours: the login or password cannot be sent in an IMAP command.
    pub const BAD_CHARACTER: &str = "CR, LF or NUL in the login or password";
}

/// `--rimap-timeout` default: the general `--verify-timeout` default.
pub const DEFAULT_TIMEOUT: Duration = super::DEFAULT_VERIFY_TIMEOUT;
/// How long `LOGOUT` may take after the verdict.
pub const LOGOUT_BOUND: Duration = Duration::from_secs(2);
/// How long a name lookup is reused. Failures are never cached.
pub const RESOLVE_CACHE_TTL: Duration = Duration::from_secs(30);
/// Verifications at once without `-n` (or one per CPU core if more): each one mostly waits
/// on the network (Dovecot delays a failure by 2 s).
pub const DEFAULT_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(32).unwrap();
/// Response codes of a tagged `NO` that mean the server could not check the password
/// (RFC 5530). imap-proto knows neither: they stay at the start of the response's text.
const OUTAGE_CODES: [&[u8]; 2] = [b"[UNAVAILABLE]", b"[SERVERBUG]"];
/// The tag of our `LOGIN` command (upstream's).
const LOGIN_TAG: &str = "saslauthd";
/// Threads for name lookups in the mechanism's runtime.
const LOOKUP_THREADS: usize = 8;
const SERVICES_FILE: &str = "/etc/services";

/// Our `--rimap-*` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--rimap-starttls`: STARTTLS before LOGIN, or fail.
    pub starttls: bool,
    /// `--rimap-ca-file`: the only trust anchors (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// `--rimap-tls-name`: the name the certificate must carry (default: the host).
    pub tls_name: Option<String>,
    /// `--rimap-timeout`: connect + TLS + greeting + login.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            starttls: false,
            ca_file: None,
            tls_name: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// Clear text (upstream's only mode).
    Plain,
    /// STARTTLS after the greeting.
    StartTls,
    /// TLS from the first byte (`imaps://`).
    Implicit,
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Security::Plain => "clear text (no TLS)",
            Security::StartTls => "STARTTLS",
            Security::Implicit => "implicit TLS",
        })
    }
}

struct Tls {
    connector: async_native_tls::TlsConnector,
    /// The name the certificate is verified for.
    name: String,
    /// Where the trust anchors come from, for log lines.
    anchors: String,
}

struct Resolved {
    at: std::time::Instant,
    addrs: Vec<IpAddr>,
}

pub struct Rimap {
    host: Host,
    port: u16,
    security: Security,
    tls: Option<Tls>,
    timeout: Duration,
    runtime: IoRuntime,
    cache: Mutex<Option<Resolved>>,
}

/// How a verification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Rejected,
    Failed(Failure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    CannotConnect,
    SyncError,
    Unavailable,
    Unexpected,
    Internal,
}

impl Failure {
    fn text(self) -> &'static str {
        match self {
            Failure::CannotConnect => text::CANNOT_CONNECT,
            Failure::SyncError => text::SYNC_ERROR,
            Failure::Unavailable => text::UNAVAILABLE,
            Failure::Unexpected => text::UNEXPECTED,
            Failure::Internal => text::INTERNAL,
        }
    }
}

/// Which step a response is read for (to pick the reply and say it in the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Greeting,
    Login,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Greeting => "the greeting",
            Step::Login => "the reply to LOGIN",
        })
    }
}

type ImapClient = Client<Capped>;

impl Rimap {
    /// Parses `-O` and our options, loads the CA file and checks the TLS setup; the error
    /// is the reason startup fails.
    pub fn new(option: Option<&str>, options: &Options) -> Result<Rimap, String> {
        let option = option.ok_or("no hostname specified (-O host[/port])")?;
        let ServerSpec {
            host,
            port,
            implicit_tls,
        } = address::parse_server(option)?;
        let port = match port {
            PortSpec::Number(port) => port,
            PortSpec::Service(name) => {
                let services = std::fs::read_to_string(SERVICES_FILE)
                    .map_err(|e| format!("-O {option:?}: cannot read {SERVICES_FILE}: {e}"))?;
                address::service_port(&services, &name).ok_or_else(|| {
                    format!("-O {option:?}: unknown service {name:?} (not in {SERVICES_FILE})")
                })?
            }
        };
        let security = match (implicit_tls, options.starttls) {
            (true, true) => {
                return Err(
                    "--rimap-starttls cannot be combined with imaps:// (TLS from the start)".into(),
                );
            }
            (true, false) => Security::Implicit,
            (false, true) => Security::StartTls,
            (false, false) => Security::Plain,
        };
        if options.timeout.is_zero() {
            return Err("--rimap-timeout must be at least 1 second".into());
        }
        let tls = match security {
            Security::Plain => {
                if options.ca_file.is_some() || options.tls_name.is_some() {
                    return Err("--rimap-ca-file and --rimap-tls-name need TLS: use \
                                imaps://HOST or --rimap-starttls"
                        .into());
                }
                None
            }
            Security::StartTls | Security::Implicit => Some(tls_setup(&host, options)?),
        };
        match &tls {
            Some(tls) => log_info!(
                "rimap: verifying passwords with IMAP LOGIN at {host} port {port} over {security}, \
                 certificate checked for \"{}\" against {}; timeout {} s",
                tls.name,
                tls.anchors,
                options.timeout.as_secs()
            ),
            None => log_warn!(
                "rimap: verifying passwords with IMAP LOGIN at {host} port {port} in clear text: \
                 passwords cross the network unencrypted unless the server is local (use \
                 imaps://HOST or --rimap-starttls); timeout {} s",
                options.timeout.as_secs()
            ),
        }
        Ok(Rimap {
            host,
            port,
            security,
            tls,
            timeout: options.timeout,
            runtime: IoRuntime::new("saslauthd-rimap", LOOKUP_THREADS),
            cache: Mutex::new(None),
        })
    }

    /// The addresses to try, from the cache or a fresh lookup.
    async fn resolve(&self, deadline: Instant) -> Result<Vec<SocketAddr>, String> {
        if let Host::Ip(ip) = &self.host {
            return Ok(vec![SocketAddr::new(*ip, self.port)]);
        }
        if let Some(cached) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && cached.at.elapsed() < RESOLVE_CACHE_TTL
        {
            let port = self.port;
            return Ok(cached
                .addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect());
        }
        let addrs = net::resolve(&self.host, self.port, deadline).await?;
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(Resolved {
            at: std::time::Instant::now(),
            addrs: addrs.iter().map(SocketAddr::ip).collect(),
        });
        Ok(addrs)
    }

    fn forget_addresses(&self) {
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Connects to the first address that answers ([`net::connect_first`]).
    async fn connect(&self, deadline: Instant) -> Option<(TcpStream, SocketAddr)> {
        let addrs = match self.resolve(deadline).await {
            Ok(addrs) => addrs,
            Err(why) => {
                log_warn!("rimap: cannot resolve {}: {why}", self.host);
                return None;
            }
        };
        let connected = net::connect_first("rimap", &self.host, &addrs, 0, deadline).await;
        if connected.is_some() {
            return connected;
        }
        // The server may have moved: look the name up again next time.
        self.forget_addresses();
        None
    }

    /// TLS handshake on `tcp`, within the deadline.
    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: &str,
        deadline: Instant,
    ) -> Result<Transport, Failure> {
        let tls = self.tls.as_ref().ok_or(Failure::Internal)?;
        match timeout_at(deadline, tls.connector.connect(tls.name.as_str(), tcp)).await {
            Ok(Ok(stream)) => Ok(Transport::Tls(Box::new(stream))),
            Ok(Err(error)) => {
                log_warn!(
                    "rimap: TLS handshake with {peer} failed (certificate checked for \"{}\" \
                     against {}): {}",
                    tls.name,
                    tls.anchors,
                    sanitize(error.to_string().as_bytes())
                );
                Err(Failure::CannotConnect)
            }
            Err(_) => {
                log_warn!(
                    "rimap: TLS handshake with {peer}: not done within the timeout ({} s)",
                    self.timeout.as_secs()
                );
                Err(Failure::CannotConnect)
            }
        }
    }

    /// One verification: connect, then [`Rimap::converse`].
    async fn verify(&self, command: &[Password], user: &str) -> Verdict {
        let deadline = Instant::now() + self.timeout;
        let Some((tcp, addr)) = self.connect(deadline).await else {
            return Verdict::Failed(Failure::CannotConnect);
        };
        let peer = self.host.peer(addr);
        let transport = match self.security {
            Security::Implicit => match self.handshake(tcp, &peer, deadline).await {
                Ok(transport) => transport,
                Err(failure) => return Verdict::Failed(failure),
            },
            Security::Plain | Security::StartTls => Transport::Plain(tcp),
        };
        self.converse(transport, command, &peer, user, deadline)
            .await
    }

    /// The conversation on a connected transport: greeting, STARTTLS, LOGIN, verdict,
    /// LOGOUT.
    async fn converse(
        &self,
        transport: Transport,
        command: &[Password],
        peer: &str,
        user: &str,
        deadline: Instant,
    ) -> Verdict {
        let peer = peer.to_string();
        let mut client = Client::new(Capped::new(transport, MAX_SERVER_BYTES));
        if let Err(failure) = self.greeting(&mut client, &peer, deadline).await {
            return Verdict::Failed(failure);
        }
        if self.security == Security::StartTls {
            client = match self.starttls(client, &peer, deadline).await {
                Ok(client) => client,
                Err(failure) => return Verdict::Failed(failure),
            };
        }
        let verdict = self
            .login(&mut client, command, &peer, user, deadline)
            .await;
        if matches!(verdict, Verdict::Accepted | Verdict::Rejected) {
            // The server is in a known state: say goodbye properly (upstream does not wait
            // for the answer; we wait briefly so a TLS session ends with close_notify).
            let _ = timeout(LOGOUT_BOUND, async move {
                let _ = client.run_command_and_check_ok("LOGOUT", None).await;
                let _ = client.into_inner().shutdown().await;
            })
            .await;
        }
        verdict
    }

    async fn greeting(
        &self,
        client: &mut ImapClient,
        peer: &str,
        deadline: Instant,
    ) -> Result<(), Failure> {
        match self.next(client, Step::Greeting, peer, deadline).await? {
            Line::Status {
                status: Kind::Ok, ..
            } => Ok(()),
            Line::Status {
                status: Kind::No | Kind::Bye,
                text,
            } => {
                log_warn!("rimap: {peer} is unavailable: {text}");
                Err(Failure::Unavailable)
            }
            Line::Status {
                status: Kind::PreAuth,
                ..
            } => {
                log_warn!(
                    "rimap: {peer} greets with PREAUTH (already logged in, so it cannot check \
                     a password); refusing"
                );
                Err(Failure::Unexpected)
            }
            other => {
                log_warn!("rimap: unexpected greeting from {peer}: {}", other.text());
                Err(Failure::Unexpected)
            }
        }
    }

    async fn starttls(
        &self,
        mut client: ImapClient,
        peer: &str,
        deadline: Instant,
    ) -> Result<ImapClient, Failure> {
        match timeout_at(deadline, client.run_command_and_check_ok("STARTTLS", None)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                log_warn!(
                    "rimap: STARTTLS refused or failed at {peer}: {}",
                    sanitize(error.to_string().as_bytes())
                );
                return Err(if client.get_ref().exceeded() {
                    Failure::SyncError
                } else {
                    Failure::Unexpected
                });
            }
            Err(_) => {
                log_warn!(
                    "rimap: no reply to STARTTLS from {peer} within the timeout ({} s)",
                    self.timeout.as_secs()
                );
                return Err(Failure::Unexpected);
            }
        }
        // Anything the server sent after its OK, still unencrypted, is dropped with the
        // client's buffer (no STARTTLS injection). No new greeting follows the handshake.
        let (transport, received) = client.into_inner().into_parts();
        let Transport::Plain(tcp) = transport else {
            return Err(Failure::Internal);
        };
        let tls = self.handshake(tcp, peer, deadline).await?;
        Ok(Client::new(Capped::resume(tls, MAX_SERVER_BYTES, received)))
    }

    /// Sends the LOGIN command (with its literals) and reads until the tagged reply.
    async fn login(
        &self,
        client: &mut ImapClient,
        command: &[Password],
        peer: &str,
        user: &str,
        deadline: Instant,
    ) -> Verdict {
        for (i, part) in command.iter().enumerate() {
            let sent = timeout_at(deadline, async {
                let stream = client.get_mut();
                stream.write_all(part.as_bytes()).await?;
                stream.flush().await
            })
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    log_warn!("rimap: cannot send LOGIN to {peer}: {error}");
                    return Verdict::Failed(Failure::Internal);
                }
                Err(_) => {
                    log_warn!(
                        "rimap: cannot send LOGIN to {peer} within the timeout ({} s)",
                        self.timeout.as_secs()
                    );
                    return Verdict::Failed(Failure::Unexpected);
                }
            }
            let literal_follows = i + 1 < command.len();
            loop {
                match self.next(client, Step::Login, peer, deadline).await {
                    Err(failure) => return Verdict::Failed(failure),
                    Ok(Line::Continue { .. }) if literal_follows => break,
                    Ok(Line::Tagged {
                        tag,
                        status,
                        text,
                        outage,
                    }) if tag == LOGIN_TAG => {
                        return self.verdict(status, outage, &text, peer, user);
                    }
                    Ok(line @ (Line::Continue { .. } | Line::Tagged { .. })) => {
                        log_warn!(
                            "rimap: unexpected response to LOGIN from {peer}: {}",
                            line.text()
                        );
                        return Verdict::Failed(Failure::Unexpected);
                    }
                    Ok(untagged) => log_debug!(
                        "rimap: skipping an untagged response from {peer}: {}",
                        untagged.text()
                    ),
                }
            }
        }
        // The last part always waits for the tagged reply above.
        Verdict::Failed(Failure::Internal)
    }

    fn verdict(&self, status: Kind, outage: bool, text: &str, peer: &str, user: &str) -> Verdict {
        match status {
            Kind::Ok => Verdict::Accepted,
            // RFC 5530: the server can't check the password now (Dovecot: its auth backend
            // is down). Not a verdict on the credentials: no penalty for the login.
            Kind::No if outage => {
                log_warn!("rimap: {peer} could not check the login of [user={user}]: {text}");
                Verdict::Failed(Failure::Unavailable)
            }
            Kind::No => {
                log_debug!("rimap: {peer} rejected the login of [user={user}]: {text}");
                Verdict::Rejected
            }
            _ => {
                log_warn!("rimap: unexpected response to LOGIN from {peer}: {text}");
                Verdict::Failed(Failure::Unexpected)
            }
        }
    }

    /// The next response for `step`, with the failure (already logged) when there is none.
    async fn next(
        &self,
        client: &mut ImapClient,
        step: Step,
        peer: &str,
        deadline: Instant,
    ) -> Result<Line, Failure> {
        let error = match timeout_at(deadline, client.read_response()).await {
            Ok(Ok(Some(response))) => return Ok(Line::from(response.parsed())),
            Ok(Ok(None)) => {
                log_warn!("rimap: {peer} closed the connection before {step}");
                return Err(Failure::Unexpected);
            }
            Err(_) => {
                log_warn!(
                    "rimap: no complete {step} from {peer} within the timeout ({} s)",
                    self.timeout.as_secs()
                );
                return Err(Failure::Unexpected);
            }
            Ok(Err(error)) => error,
        };
        if client.get_ref().exceeded() {
            log_warn!(
                "rimap: {peer} sent more than {MAX_SERVER_BYTES} bytes before the end of {step}"
            );
            return Err(match step {
                Step::Greeting => Failure::SyncError,
                Step::Login => Failure::Internal,
            });
        }
        // async-imap reports a response it cannot parse as an error of kind `Other`.
        let unparsable = error.kind() == io::ErrorKind::Other;
        log_warn!(
            "rimap: {} {step} from {peer}: {}",
            if unparsable {
                "cannot parse"
            } else {
                "error reading"
            },
            sanitize(error.to_string().as_bytes())
        );
        Err(match (unparsable, step) {
            (true, _) => Failure::Unexpected,
            (false, Step::Greeting) => Failure::SyncError,
            (false, Step::Login) => Failure::Internal,
        })
    }
}

impl Mechanism for Rimap {
    fn name(&self) -> &'static str {
        "rimap"
    }

    fn default_concurrency(&self) -> NonZeroUsize {
        DEFAULT_CONCURRENCY.max(super::cpu_cores())
    }

    fn needs_root(&self) -> bool {
        false
    }

    fn verification_deadline(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    /// Every `[ALERT]` text: the server could not be reached, was unavailable (also a
    /// tagged `NO [UNAVAILABLE]`), timed out, answered out of protocol, or we failed.
    fn is_outage(&self, reason: &str) -> bool {
        reason.starts_with("[ALERT]")
    }

    fn authenticate(&self, credentials: &Credentials) -> Reply {
        let user = sanitize(&credentials.login);
        let command = match quote::login_command(
            LOGIN_TAG,
            &credentials.login,
            credentials.password.as_bytes(),
        ) {
            Ok(command) => command,
            Err(forbidden) => {
                log_warn!(
                    "rimap: the login or password of [user={user}] contains byte 0x{:02x} \
                     (CR, LF or NUL), which no IMAP command can carry; not sent",
                    forbidden.byte
                );
                return Reply::no(text::BAD_CHARACTER);
            }
        };
        let runtime = match self.runtime.get() {
            Ok(runtime) => runtime,
            Err(error) => {
                log_warn!("rimap: cannot start the I/O runtime: {error}");
                return Reply::no(text::INTERNAL);
            }
        };
        verdict_reply(runtime.block_on(self.verify(&command, &user)))
    }
}

fn verdict_reply(verdict: Verdict) -> Reply {
    match verdict {
        Verdict::Accepted => Reply::Ok(Some(text::OK.to_string())),
        Verdict::Rejected => Reply::no(text::REJECTED),
        Verdict::Failed(failure) => Reply::no(failure.text()),
    }
}

impl Rimap {
    /// One verification of `login` and `password` against a server that sends `script`
    /// (in pieces of at most `piece` bytes) and then closes: the real conversation
    /// without a network, for the fuzz targets (`crate::fuzz`) and tests. `None` when the
    /// credentials can't be put in a command.
    #[doc(hidden)]
    pub fn converse_with_script(
        &self,
        script: &[u8],
        piece: usize,
        login: &[u8],
        password: &[u8],
    ) -> Option<Reply> {
        let command = quote::login_command(LOGIN_TAG, login, password).ok()?;
        let runtime = self.runtime.get().ok()?;
        let transport = Transport::Scripted(Scripted::new(script, piece));
        let deadline = Instant::now() + self.timeout;
        let user = sanitize(login);
        let verdict =
            runtime.block_on(self.converse(transport, &command, "the script", &user, deadline));
        Some(verdict_reply(verdict))
    }
}

/// The TLS connector: TLS 1.2 or later, the CA file as the only trust anchors when given.
fn tls_setup(host: &Host, options: &Options) -> Result<Tls, String> {
    let name = match &options.tls_name {
        Some(name) => {
            let valid =
                !name.is_empty() && name.len() <= 253 && name.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                return Err(format!(
                    "--rimap-tls-name {name:?}: not a host name or address"
                ));
            }
            name.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        }
        None => host.tls_name(),
    };
    let mut builder = tls::connector_builder();
    let anchors = match &options.ca_file {
        Some(path) => {
            let certificates =
                tls::read_pem_certificates(path).map_err(|e| format!("--rimap-ca-file {e}"))?;
            tls::trust_only(&mut builder, certificates);
            format!("the CA file {}", path.display())
        }
        None => "the system's trust store".to_string(),
    };
    // Build once now so that a broken setup stops the daemon at startup.
    builder
        .build()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    Ok(Tls {
        connector: async_native_tls::TlsConnector::from(builder),
        name,
        anchors,
    })
}

/// The status of a server response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    No,
    Bad,
    PreAuth,
    Bye,
}

impl Kind {
    fn of(status: &Status) -> Kind {
        match status {
            Status::Ok => Kind::Ok,
            Status::No => Kind::No,
            Status::Bad => Kind::Bad,
            Status::PreAuth => Kind::PreAuth,
            Status::Bye => Kind::Bye,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Ok => "OK",
            Kind::No => "NO",
            Kind::Bad => "BAD",
            Kind::PreAuth => "PREAUTH",
            Kind::Bye => "BYE",
        }
    }
}

/// A server response, reduced to what a verification needs; `text` is the whole response
/// in one line for the log (escaped and cut by `sanitize`).
#[derive(Debug)]
enum Line {
    /// `* OK ...`, `* NO ...`, `* BYE ...`, `* PREAUTH ...` (the greeting, or untagged).
    Status { status: Kind, text: String },
    /// `TAG OK|NO|BAD ...`
    Tagged {
        tag: String,
        status: Kind,
        text: String,
        /// Carries one of [`OUTAGE_CODES`].
        outage: bool,
    },
    /// `+ ...`: go on with the literal.
    Continue { text: String },
    /// Any other untagged response (`* CAPABILITY ...`).
    Other { text: String },
}

impl Line {
    fn text(&self) -> &str {
        match self {
            Line::Status { text, .. }
            | Line::Tagged { text, .. }
            | Line::Continue { text }
            | Line::Other { text } => text,
        }
    }
}

impl From<&Response<'_>> for Line {
    fn from(response: &Response<'_>) -> Line {
        let outcome = |code: &Option<_>, information: &Option<std::borrow::Cow<'_, str>>| {
            let mut out = String::new();
            if let Some(code) = code {
                out.push_str(&format!(" [{code:?}]"));
            }
            if let Some(information) = information {
                out.push(' ');
                out.push_str(information);
            }
            out
        };
        let clean = |line: String| sanitize(line.as_bytes());
        match response {
            Response::Data { status, outcome: o } => {
                let status = Kind::of(status);
                Line::Status {
                    status,
                    text: clean(format!(
                        "* {}{}",
                        status.name(),
                        outcome(&o.code, &o.information)
                    )),
                }
            }
            Response::Done {
                tag,
                status,
                outcome: o,
            } => {
                let status = Kind::of(status);
                let outage = o.code.is_none()
                    && o.information.as_deref().is_some_and(|text| {
                        OUTAGE_CODES.iter().any(|code| {
                            text.as_bytes()
                                .get(..code.len())
                                .is_some_and(|start| start.eq_ignore_ascii_case(code))
                        })
                    });
                Line::Tagged {
                    tag: tag.0.clone(),
                    status,
                    text: clean(format!(
                        "{} {}{}",
                        tag.0,
                        status.name(),
                        outcome(&o.code, &o.information)
                    )),
                    outage,
                }
            }
            Response::Continue(o) => Line::Continue {
                text: clean(format!("+{}", outcome(&o.code, &o.information))),
            },
            other => Line::Other {
                text: clean(format!("{other:?}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options::default()
    }

    #[test]
    fn startup_errors() {
        let err = |option: Option<&str>, options: &Options| match Rimap::new(option, options) {
            Ok(_) => panic!("{option:?} {options:?} was accepted"),
            Err(e) => e,
        };
        assert!(err(None, &options()).contains("no hostname"));
        assert!(err(Some("host:0"), &options()).contains("1-65535"));
        // "unknown service", or "cannot read /etc/services" where netbase is missing.
        assert!(err(Some("host/no-such-service-xyz"), &options()).contains("service"));
        let starttls = Options {
            starttls: true,
            ..options()
        };
        assert!(err(Some("imaps://host"), &starttls).contains("cannot be combined"));
        let name = Options {
            tls_name: Some("x".into()),
            ..options()
        };
        assert!(err(Some("host"), &name).contains("need TLS"));
        let missing = Options {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..options()
        };
        assert!(err(Some("imaps://host"), &missing).contains("/nonexistent/ca.pem"));
        let bad_name = Options {
            tls_name: Some("a b".into()),
            ..options()
        };
        assert!(err(Some("imaps://host"), &bad_name).contains("--rimap-tls-name"));
    }

    #[test]
    fn a_good_setup_starts_without_threads_or_connections() {
        let rimap = Rimap::new(Some("imaps://[::1]:10993"), &options()).unwrap();
        assert_eq!(rimap.security, Security::Implicit);
        assert_eq!(rimap.port, 10993);
        assert_eq!(rimap.tls.as_ref().unwrap().name, "::1");
        assert!(!rimap.runtime.started());
        let rimap = Rimap::new(Some("localhost/imap2"), &options()).unwrap();
        assert_eq!((rimap.port, rimap.security), (143, Security::Plain));
        let starttls = Options {
            starttls: true,
            tls_name: Some("mail.example.org".into()),
            ..options()
        };
        let rimap = Rimap::new(Some("127.0.0.1:10143"), &starttls).unwrap();
        assert_eq!(rimap.security, Security::StartTls);
        assert_eq!(rimap.tls.as_ref().unwrap().name, "mail.example.org");
        assert!(rimap.default_concurrency() >= DEFAULT_CONCURRENCY);
    }

    fn credentials(login: &[u8], password: &[u8]) -> Credentials {
        Credentials {
            login: login.to_vec(),
            password: Password::new(password.to_vec()),
            service: b"imap".to_vec(),
            realm: Vec::new(),
            client_addr: None,
        }
    }

    #[test]
    fn a_tagged_unavailable_is_an_outage_not_a_rejection() {
        let rimap = Rimap::new(Some("127.0.0.1/1"), &options()).unwrap();
        let reply = |tagged: &[u8]| {
            let script = [&b"* OK ready\r\n"[..], tagged].concat();
            rimap
                .converse_with_script(&script, 7, b"user", b"pw")
                .unwrap()
        };
        for outage in [
            &b"saslauthd NO [UNAVAILABLE] Temporary authentication failure.\r\n"[..],
            b"saslauthd NO [unavailable] down\r\n",
            b"saslauthd NO [SERVERBUG] oops\r\n",
        ] {
            let got = reply(outage);
            assert_eq!(got, Reply::no(text::UNAVAILABLE));
            let Reply::No(reason) = got else {
                unreachable!()
            };
            assert!(rimap.is_outage(&reason));
        }
        for verdict in [
            &b"saslauthd NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"[..],
            b"saslauthd NO Login failed\r\n",
            b"saslauthd NO [ALERT] unavailable in the text is no code\r\n",
        ] {
            let got = reply(verdict);
            assert_eq!(got, Reply::no(text::REJECTED));
            assert!(!rimap.is_outage(text::REJECTED));
        }
        for alert in [
            text::CANNOT_CONNECT,
            text::SYNC_ERROR,
            text::UNEXPECTED,
            text::INTERNAL,
        ] {
            assert!(rimap.is_outage(alert), "{alert}");
        }
    }

    #[test]
    fn line_breaks_are_refused_before_connecting() {
        // Port 1 on loopback: nothing listens, but nothing must even be tried.
        let rimap = Rimap::new(Some("127.0.0.1/1"), &options()).unwrap();
        let reply = rimap.authenticate(&credentials(b"user", b"pw\r\nA2 LOGOUT"));
        assert_eq!(reply, Reply::no(text::BAD_CHARACTER));
        let reply = rimap.authenticate(&credentials(b"us\ner", b"pw"));
        assert_eq!(reply, Reply::no(text::BAD_CHARACTER));
        assert!(!rimap.runtime.started(), "no connection was attempted");
    }

    #[test]
    fn nothing_listening_is_cannot_connect() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let rimap = Rimap::new(Some(&format!("127.0.0.1/{port}")), &options()).unwrap();
        let started = std::time::Instant::now();
        let reply = rimap.authenticate(&credentials(b"user", b"pw"));
        assert_eq!(reply, Reply::no(text::CANNOT_CONNECT));
        assert!(started.elapsed() < Duration::from_secs(2));
        // Dropping the mechanism inside an async context must not panic.
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        outer.block_on(async move { drop(rimap) });
    }
}
