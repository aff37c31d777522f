//! The daemon process: command line → run directory, pid file, socket, detaching,
//! signals, and cleanup on exit.
//!
//! Detaching re-executes the program instead of forking (fork is unsafe once threads
//! exist): the starting process launches a copy of itself with [`DETACHED_ENV`] set and
//! waits until that copy reports on a pipe that its socket listens — or until it exits,
//! whose status it then passes on. So `saslauthd` returns 0 only once clients can connect,
//! and a startup failure (another instance: 2, anything else: 1) reaches the caller; the
//! copy's startup errors appear on the caller's stderr.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::num::NonZeroUsize;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::stat::{Mode, umask};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::auth::cache::CredentialCache;
use crate::auth::throttle::{Throttle, ThrottleSettings};
use crate::auth::{Authenticator, AuthenticatorOptions};
use crate::config::{self, Action, Config};
use crate::frontend::dovecot;
use crate::frontend::gate::{self, Gate};
use crate::frontend::mux::listener::{Server, serve};
use crate::handover::{self, FileId, LockAttempt};
use crate::log::{self, LogConfig};
use crate::mech;
use crate::privileges;
use crate::sys::record_lock::{self, LockError};
use crate::{frontend, protocol};
use crate::{log_debug, log_err, log_info, systemd};

mod run_dir;
mod socket_file;

/// Set in the environment of the detached copy; its value is unused.
pub const DETACHED_ENV: &str = "SASLAUTHD_RS_DETACHED";
/// What the detached copy writes on its stdout pipe once it listens.
const READY_LINE: &str = "ready";
/// How long the starting process waits for the detached copy.
const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// Exit status when another instance holds the pid file (upstream's).
const EXIT_ALREADY_RUNNING: u8 = 2;

/// A startup failure and the exit status it maps to.
#[derive(Debug)]
pub struct StartupError {
    pub message: String,
    pub status: u8,
}

impl StartupError {
    fn new(message: impl Into<String>) -> StartupError {
        StartupError {
            message: message.into(),
            status: 1,
        }
    }
}

/// `saslauthd`'s entry point.
pub fn main() -> ExitCode {
    // Before anything opens a descriptor: none inherited survives but the service
    // manager's sockets.
    let closed = crate::sys::fd::close_inherited(systemd::passed_fds());
    let args: Vec<OsString> = std::env::args_os().collect();
    match config::parse(&args) {
        Ok(Action::Help(text)) | Ok(Action::Version(text)) => {
            eprint!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Action::LongHelp(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(usage) => {
            eprintln!("saslauthd: {usage}");
            ExitCode::from(1)
        }
        Ok(Action::Run(config)) => {
            let detached = std::env::var_os(DETACHED_ENV).is_some();
            if detached {
                // Started through /proc/self/exe, the kernel named us "exe"; `pidof
                // saslauthd`, `pkill saslauthd` and monitoring look for our own name.
                let _ = nix::sys::prctl::set_name(c"saslauthd");
            }
            // Under a service manager the pid it watches must be the serving one.
            if !config.foreground && !detached && !systemd::managed() {
                return launch_detached(&args);
            }
            if let Err(error) = closed {
                eprintln!("saslauthd: warning: cannot close inherited descriptors: {error}");
            }
            match run(*config, detached) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    crate::log::write(crate::log::Level::Err, format_args!("{}", error.message));
                    ExitCode::from(error.status)
                }
            }
        }
    }
}

/// The starting process in daemon mode: launch the detached copy, wait for its word.
fn launch_detached(args: &[OsString]) -> ExitCode {
    let program = if Path::new("/proc/self/exe").exists() {
        OsString::from("/proc/self/exe")
    } else {
        match std::env::current_exe() {
            Ok(path) => path.into_os_string(),
            Err(error) => {
                eprintln!("saslauthd: cannot find my own executable: {error}");
                return ExitCode::from(1);
            }
        }
    };
    let mut command = Command::new(program);
    if let Some(arg0) = args.first() {
        command.arg0(arg0);
    }
    let spawned = command
        .args(args.iter().skip(1))
        .env(DETACHED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            eprintln!("saslauthd: cannot start the daemon process: {error}");
            return ExitCode::from(1);
        }
    };
    let Some(stdout) = child.stdout.take() else {
        eprintln!("saslauthd: no status pipe to the daemon process");
        return ExitCode::from(1);
    };
    let (report, ready) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let got = BufReader::new(stdout).read_line(&mut line).is_ok();
        let _ = report.send(got && line.trim_end() == READY_LINE);
    });
    match ready.recv_timeout(STARTUP_LIMIT) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The copy exited before listening; it has said why on stderr.
            match child.wait() {
                Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8),
                Err(_) => ExitCode::from(1),
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!(
                "saslauthd: the daemon did not start listening within {STARTUP_LIMIT:?}; stopping it"
            );
            let _ = child.kill();
            let _ = child.wait();
            ExitCode::from(1)
        }
    }
}

/// Runs the daemon in this process until SIGTERM or SIGINT.
pub fn run(config: Config, detached: bool) -> Result<(), StartupError> {
    if detached {
        // Not a process group leader (we were spawned without one), so this succeeds.
        nix::unistd::setsid().map_err(|e| StartupError::new(format!("setsid: {e}")))?;
    }
    let has_syslog = log::init(LogConfig {
        verbose: config.verbose,
        stderr: true,
        syslog: true,
    });
    if detached && !has_syslog {
        eprintln!(
            "saslauthd: warning: no syslog socket (/dev/log); once detached, log lines are \
             lost. Run in the foreground (-f) to log to stderr."
        );
    }
    privileges::forbid_core_dumps().map_err(StartupError::new)?;
    let mechanism = mech::create(
        &config.mech,
        config.mech_option.as_deref(),
        &config.mech_settings,
    )
    .map_err(|e| StartupError::new(e.to_string()))?;
    // A daemon keeps no directory busy (an unmount of the starter's working directory
    // would fail). Relative paths in options were resolved by now: the mechanism read
    // its configuration above.
    std::env::set_current_dir("/").map_err(|e| StartupError::new(format!("chdir /: {e}")))?;
    // Hardening: names are looked up once, now; --user only with a mechanism that needs
    // no root.
    let run_as = privileges::plan_drop(config.run_as.as_ref(), mechanism.as_ref())
        .map_err(StartupError::new)?;
    let access = config
        .access
        .resolve(&privileges::user_id, &privileges::group_id)
        .map_err(StartupError::new)?;
    if !access.is_open() {
        log_info!("peers allowed to connect: {access}");
    }
    // The verification pool: `-n N`, else the mechanism's default (pam waits more than it
    // computes, so it asks for more than shadow's one per core); either way no more than
    // memory and the open-file limit allow (a lowered -n is logged).
    let workers = mech::pool_size(config.workers, mechanism.as_ref());
    let requested = config.workers.map(NonZeroUsize::get);
    let workers =
        NonZeroUsize::new(privileges::fit_workers(workers.get(), requested)).unwrap_or(workers);
    log_debug!("verification pool: {workers} at once");
    let max_connections = privileges::fit_open_files(config.max_connections, workers.get());
    let per_uid = config
        .max_connections_per_uid
        .unwrap_or_else(|| gate::default_share(max_connections))
        .min(max_connections);
    log_debug!("connections: at most {max_connections} at once, {per_uid} per peer uid");
    // Before any thread exists: this edits the environment.
    let inherited = systemd::inherited_listeners()
        .map_err(|e| StartupError::new(format!("unusable socket from the service manager: {e}")))?;
    let dovecot_owner = dovecot_socket_owner(&config.dovecot).map_err(StartupError::new)?;
    let cache = if config.cache.enabled {
        let cache = CredentialCache::new(&config.cache)
            .map_err(|e| StartupError::new(format!("credential cache: no random key: {e}")))?;
        log_debug!(
            "credential cache: {} entries ({} KB), entries live {} seconds",
            cache.capacity(),
            config.cache.size_kb,
            cache.ttl().as_secs()
        );
        Some(cache)
    } else {
        None
    };
    let throttle = Throttle::new(config.throttle)
        .map_err(|e| StartupError::new(format!("throttle: no random key: {e}")))?;
    log_throttle(&config.throttle);
    // SIGHUP asks the mechanism to re-read its configuration.
    let reloadable = Arc::clone(&mechanism);
    let authenticator = Authenticator::new(
        mechanism,
        AuthenticatorOptions {
            realm_concat: config.realm_concat,
            workers: workers.get(),
            max_queue: config.max_queue,
            cache,
            throttle,
            verify_timeout: config.mech_settings.verify_timeout,
        },
    )
    .map_err(|e| StartupError::new(format!("cannot start the verification threads: {e}")))?;
    // Verifications run on the authenticator's own threads; tokio's blocking pool is left for
    // tokio's own needs.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(8)
        .thread_name("saslauthd")
        .build()
        .map_err(|e| StartupError::new(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let signals = Signals::install()?;
        let (files, listener, dovecot) = RunFiles::create(&config, inherited, dovecot_owner)?;
        let dovecot = dovecot
            .map(|(socket, _)| dovecot_listener(socket, &config.dovecot))
            .transpose()?;
        if let Some(run_as) = &run_as
            && let Err(error) = privileges::drop_privileges(run_as)
        {
            files.remove();
            return Err(StartupError::new(format!(
                "cannot drop privileges: {error}"
            )));
        }
        if detached {
            report_ready()?;
        }
        let listening_on = match &files.socket {
            Some((path, _)) => path.display().to_string(),
            None => "the socket passed by the service manager".to_string(),
        };
        log_info!("master pid is: {}", std::process::id());
        log_info!("listening on socket: {listening_on}");
        if let Some(dovecot_on) = &files.dovecot_description {
            log_info!("listening on dovecot socket: {dovecot_on}");
        }
        systemd::notify(&format!(
            "READY=1\nMAINPID={}\nSTATUS=serving {} on {listening_on}",
            std::process::id(),
            config.mech
        ));
        let authenticator = Arc::new(authenticator);
        let gate = Arc::new(Gate::new(max_connections, per_uid, access));
        let server = Arc::new(Server {
            authenticator: Arc::clone(&authenticator),
            gate: Arc::clone(&gate),
            timeout: config.timeout,
            max_field_len: config.max_field_len,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        // The Dovecot socket first: the mux loop waits at shutdown until every connection
        // of both sockets has ended.
        let dovecot_serving = dovecot.map(|listener| {
            let server = Arc::new(dovecot::listener::Server {
                context: Arc::new(dovecot::connection::Context::new(
                    Arc::clone(&authenticator),
                    config.timeout,
                )),
                gate: Arc::clone(&gate),
                address_log: log::RateLimitedLog::default(),
            });
            tokio::spawn(dovecot::listener::serve(listener, server, stop_rx.clone()))
        });
        let serving = match serve(listener, Arc::clone(&server), stop_rx) {
            Ok(serving) => tokio::spawn(serving),
            Err(error) => {
                files.remove();
                return Err(StartupError::new(format!("cannot listen: {error}")));
            }
        };
        let name = signals
            .wait(
                || {
                    for line in authenticator.statistics() {
                        log_info!("{line}");
                    }
                },
                || match reloadable.reload() {
                    Ok(done) => log_info!("SIGHUP received: {done}"),
                    Err(kept) => log_err!("SIGHUP received: {kept}"),
                },
            )
            .await;
        log_info!("{name} received: shutting down");
        systemd::notify("STOPPING=1");
        let _ = stop_tx.send(true);
        if let Some(dovecot_serving) = dovecot_serving {
            let _ = dovecot_serving.await;
        }
        let _ = serving.await;
        files.remove();
        log_info!("master exited: {}", std::process::id());
        Ok(())
    })
}

/// The throttle's settings, at startup (debug).
fn log_throttle(settings: &ThrottleSettings) {
    if settings.enabled() {
        log_debug!(
            "throttle: {} free failures, then {} ms doubling up to {} ms; one failure forgotten per {} s",
            settings.free,
            settings.delay.as_millis(),
            settings.max.as_millis(),
            settings.decay.as_secs()
        );
    } else {
        log_debug!("throttle: off");
    }
}

/// Tells the starting process we listen, then lets go of its pipe and terminal.
fn report_ready() -> Result<(), StartupError> {
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{READY_LINE}")
        .and_then(|()| stdout.flush())
        .map_err(|e| StartupError::new(format!("cannot report readiness: {e}")))?;
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| StartupError::new(format!("/dev/null: {e}")))?;
    nix::unistd::dup2_stdout(&null).map_err(|e| StartupError::new(format!("dup2: {e}")))?;
    nix::unistd::dup2_stderr(&null).map_err(|e| StartupError::new(format!("dup2: {e}")))?;
    log::stop_stderr();
    Ok(())
}

/// SIGTERM and SIGINT stop the daemon; SIGUSR1 logs statistics; SIGHUP reloads the
/// mechanism's configuration (where it has one).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, StartupError> {
        let install = |kind| {
            signal(kind).map_err(|e| StartupError::new(format!("cannot handle signals: {e}")))
        };
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
            usr1: install(SignalKind::user_defined1())?,
        })
    }

    /// Waits for a stop signal and returns its name; runs `statistics` on each SIGUSR1 and
    /// `reload` on each SIGHUP.
    async fn wait(mut self, statistics: impl Fn(), reload: impl Fn()) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = self.hup.recv() => reload(),
                _ = self.usr1.recv() => statistics(),
            }
        }
    }
}

/// The run directory's files: the locked pid file and the socket we bound (none when the
/// service manager passed one: it owns that socket).
struct RunFiles {
    /// Locked with a POSIX record lock ([`record_lock`]), like upstream's: this must stay
    /// the only descriptor of the file we ever open, since closing any would drop the lock.
    pid_file: File,
    pid_path: PathBuf,
    socket: Option<BoundSocket>,
    /// The Dovecot protocol's socket file, when we bound one.
    dovecot_socket: Option<BoundSocket>,
    /// Where the Dovecot protocol is served, for the log.
    dovecot_description: Option<String>,
}

/// The socket's path and the file we bound there.
type BoundSocket = (PathBuf, Option<FileId>);

/// Whether the socket's name still leads to the file we bound: after `--replace`, or
/// when another process replaced it, it is not ours to remove.
fn still_ours((path, bound): &BoundSocket) -> bool {
    bound.is_some() && FileId::of_path(path) == *bound
}

impl RunFiles {
    fn create(
        config: &Config,
        inherited: systemd::Inherited,
        dovecot_owner: (Option<u32>, Option<u32>),
    ) -> Result<(RunFiles, UnixListener, Option<DovecotSocket>), StartupError> {
        run_dir::prepare(&config.run_dir, nix::unistd::geteuid().as_raw())
            .map_err(StartupError::new)?;
        // Files we create are private; `bind` sets the socket's mode through the umask.
        umask(Mode::from_bits_truncate(0o077));
        let pid_path = config.pid_file_path();
        let mux_path = config.socket_path();
        // --replace: our mux socket in place and the old daemon gone (see [`handover`]).
        let (pid_file, swapped) = match &inherited.mux {
            None if config.replace => {
                let (file, listener, socket) = take_over(&pid_path, &mux_path)?;
                (file, Some((listener, socket)))
            }
            _ => (lock_pid_file(&pid_path)?, None),
        };
        // The Dovecot socket before mux: once mux accepts connections, both serve (clients
        // and scripts take a connectable mux for "started"). With --replace, mux is in place
        // already and the Dovecot socket follows once the old daemon has removed its own.
        let dovecot = bind_dovecot(&config.dovecot, inherited.dovecot, dovecot_owner)?;
        let (listener, socket) = match (inherited.mux, swapped) {
            (Some(listener), _) => (listener, None),
            (None, Some(swapped)) => swapped,
            (None, None) => match bind(&mux_path) {
                Ok(listener) => {
                    let id = FileId::of_path(&mux_path);
                    (listener, Some((mux_path, id)))
                }
                Err(error) => {
                    if let Some(socket) = dovecot
                        .as_ref()
                        .and_then(|(_, bound)| bound.socket.as_ref())
                        && still_ours(socket)
                    {
                        let _ = fs::remove_file(&socket.0);
                    }
                    return Err(error);
                }
            },
        };
        write_pid(&pid_file, &pid_path)?;
        listener
            .set_nonblocking(true)
            .map_err(|e| StartupError::new(format!("cannot listen: {e}")))?;
        let files = RunFiles {
            pid_file,
            pid_path,
            socket,
            dovecot_socket: dovecot.as_ref().and_then(|(_, bound)| bound.socket.clone()),
            dovecot_description: dovecot.as_ref().map(|(_, bound)| bound.description.clone()),
        };
        Ok((files, listener, dovecot))
    }

    /// Removes the sockets, then the pid file (while still holding its lock), each only if
    /// its name still leads to our file: after `--replace` they belong to the new daemon,
    /// and a socket someone else put in the place of ours is theirs. After `--user` the run
    /// directory is usually not ours to write: then they stay, which is harmless (the next
    /// start replaces the stale socket and rewrites the pid file).
    fn remove(self) {
        let remove = |path: &Path| match fs::remove_file(path) {
            Ok(()) => {}
            Err(error)
                if error.kind() == std::io::ErrorKind::PermissionDenied
                    && !nix::unistd::geteuid().is_root() =>
            {
                log_info!(
                    "leaving {} behind: {error} (privileges were dropped); the next start \
                     replaces it",
                    path.display()
                )
            }
            Err(error) => log_err!("cannot remove {}: {error}", path.display()),
        };
        for socket in [&self.socket, &self.dovecot_socket].into_iter().flatten() {
            if still_ours(socket) {
                remove(&socket.0);
            } else {
                log_info!(
                    "{} is another process's socket now: left in place",
                    socket.0.display()
                );
            }
        }
        if FileId::of_path(&self.pid_path) == FileId::of_file(&self.pid_file) {
            remove(&self.pid_path);
        }
        drop(self.pid_file);
    }
}

/// `--replace`: our socket takes the place of the running daemon's, which is then asked
/// to stop; returns once its pid-file lock is ours (see [`handover`]).
fn take_over(
    pid_path: &Path,
    socket_path: &Path,
) -> Result<(File, UnixListener, Option<BoundSocket>), StartupError> {
    let swapped = handover::swap_in(socket_path, |path| bind(path).map_err(|e| e.message))
        .map_err(StartupError::new)?;
    let locked = handover::take_lock(
        pid_path,
        || match try_lock_pid_file(pid_path) {
            Ok(Ok(file)) => Ok(LockAttempt::Locked(file)),
            Ok(Err(holder)) => Ok(LockAttempt::Held(holder)),
            Err(error) => Err(error.message),
        },
        || {
            if let Err(error) = swapped.restore_if_removed() {
                log_err!("{error}");
            }
        },
    )
    .and_then(|file| swapped.settle().map(|()| file));
    match locked {
        Ok(file) => {
            let socket = Some((socket_path.to_path_buf(), Some(swapped.id)));
            Ok((file, swapped.listener, socket))
        }
        Err(message) => {
            swapped.abandon();
            Err(StartupError::new(message))
        }
    }
}

/// Binds `path` (replacing a stale socket) with upstream's mode 0777: access is
/// controlled by the run directory's mode, e.g. root:sasl 0710 on Debian. The mode is set
/// without a `chmod` by name after `bind` (see [`socket_file`]).
fn bind(path: &Path) -> Result<UnixListener, StartupError> {
    remove_stale_socket(path)?;
    socket_file::bind(path, 0o777, None, None)
        .map_err(|e| StartupError::new(format!("could not bind to socket {}: {e}", path.display())))
}

/// The Dovecot protocol's listening socket, and what the daemon must remember of it.
type DovecotSocket = (systemd::InheritedSocket, BoundDovecot);

struct BoundDovecot {
    /// The socket file we created (removed at exit if still ours).
    socket: Option<BoundSocket>,
    description: String,
}

/// `--dovecot-socket-user` and `-group` as ids (looked up once, at startup).
fn dovecot_socket_owner(
    settings: &frontend::dovecot::Settings,
) -> Result<(Option<u32>, Option<u32>), String> {
    let user = settings
        .owner
        .as_ref()
        .map(|id| id.resolve("user", &privileges::user_id))
        .transpose()
        .map_err(|e| format!("--dovecot-socket-user: {e}"))?;
    let group = settings
        .group
        .as_ref()
        .map(|id| id.resolve("group", &privileges::group_id))
        .transpose()
        .map_err(|e| format!("--dovecot-socket-group: {e}"))?;
    Ok((user, group))
}

/// The Dovecot protocol's socket: the one the service manager passed (named `dovecot`),
/// else `--dovecot-socket`: a UNIX socket (a stale one replaced) with its mode and owner,
/// or a TCP listener. None without either.
fn bind_dovecot(
    settings: &frontend::dovecot::Settings,
    inherited: Option<systemd::InheritedSocket>,
    (user, group): (Option<u32>, Option<u32>),
) -> Result<Option<DovecotSocket>, StartupError> {
    use frontend::dovecot::Settings;
    use protocol::dovecot::Endpoint;
    let tcp_address = |listener: &std::net::TcpListener, settings: &Settings| {
        let address = listener
            .local_addr()
            .map_err(|e| StartupError::new(format!("dovecot socket: {e}")))?;
        settings.check_address(address).map_err(StartupError::new)?;
        Ok::<_, StartupError>(address)
    };
    if let Some(socket) = inherited {
        let description = match &socket {
            systemd::InheritedSocket::Unix(_) => {
                "the socket passed by the service manager".to_string()
            }
            systemd::InheritedSocket::Tcp(listener) => format!(
                "inet:{} (passed by the service manager)",
                tcp_address(listener, settings)?
            ),
        };
        let bound = BoundDovecot {
            socket: None,
            description,
        };
        return Ok(Some((socket, bound)));
    }
    match &settings.endpoint {
        None => Ok(None),
        Some(Endpoint::Tcp(address)) => {
            let listener = std::net::TcpListener::bind(address).map_err(|e| {
                StartupError::new(format!(
                    "could not bind to dovecot socket inet:{address}: {e}"
                ))
            })?;
            let address = tcp_address(&listener, settings)?;
            let bound = BoundDovecot {
                socket: None,
                description: format!("inet:{address}"),
            };
            Ok(Some((systemd::InheritedSocket::Tcp(listener), bound)))
        }
        Some(Endpoint::Unix(path)) => {
            remove_stale_socket(path)?;
            // Its directory may be another user's (Postfix's private/): mode and owner are
            // set where only we can reach the socket (see `socket_file`).
            let listener = socket_file::bind(path, settings.mode, user, group).map_err(|e| {
                StartupError::new(format!(
                    "could not bind to dovecot socket {}: {e}",
                    path.display()
                ))
            })?;
            let bound = BoundDovecot {
                socket: Some((path.clone(), FileId::of_path(path))),
                description: path.display().to_string(),
            };
            Ok(Some((systemd::InheritedSocket::Unix(listener), bound)))
        }
    }
}

/// The tokio listener for the Dovecot socket.
fn dovecot_listener(
    socket: systemd::InheritedSocket,
    settings: &frontend::dovecot::Settings,
) -> Result<dovecot::listener::Listener, StartupError> {
    let failed =
        |e: std::io::Error| StartupError::new(format!("cannot listen on the dovecot socket: {e}"));
    match socket {
        systemd::InheritedSocket::Unix(listener) => {
            listener.set_nonblocking(true).map_err(failed)?;
            Ok(dovecot::listener::Listener::Unix(
                tokio::net::UnixListener::from_std(listener).map_err(failed)?,
            ))
        }
        systemd::InheritedSocket::Tcp(listener) => {
            listener.set_nonblocking(true).map_err(failed)?;
            Ok(dovecot::listener::Listener::Tcp {
                listener: tokio::net::TcpListener::from_std(listener).map_err(failed)?,
                allow_from: settings.allow_from.clone(),
            })
        }
    }
}

/// Opens the pid file without following a symbolic link.
fn open_pid_file(path: &Path) -> Result<File, StartupError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // A symbolic link planted in the run directory is never followed, and a terminal
        // planted there never becomes ours.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| StartupError::new(format!("cannot open {}: {e}", path.display())))?;
    refuse_shared_pid_file(&file, path)?;
    Ok(file)
}

/// Opens the pid file and tries to lock it once: `Ok(Err(holder))` when another process
/// (another saslauthd-rs, or Cyrus's saslauthd, which takes the same `fcntl` lock) holds
/// it, with its pid if known.
fn try_lock_pid_file(path: &Path) -> Result<Result<File, Option<i32>>, StartupError> {
    let file = open_pid_file(path)?;
    match record_lock::lock_exclusive(&file) {
        Ok(()) => Ok(Ok(file)),
        Err(LockError::Held(holder)) => Ok(Err(holder)),
        Err(LockError::Failed(errno)) => Err(StartupError::new(format!(
            "could not lock pid file {}: {errno}",
            path.display()
        ))),
    }
}

/// Opens and locks the pid file; a lock held by someone else means another instance
/// serves this directory (exit status 2).
fn lock_pid_file(path: &Path) -> Result<File, StartupError> {
    try_lock_pid_file(path)?.map_err(|holder| {
        let who = holder.map_or_else(|| "another process".to_string(), |pid| format!("pid {pid}"));
        StartupError {
            message: format!(
                "another instance of saslauthd is currently running: {who} holds the lock on \
                 {} (stop it first, or start with --replace to take over)",
                path.display()
            ),
            status: EXIT_ALREADY_RUNNING,
        }
    })
}

/// Writes our pid into the locked pid file.
fn write_pid(mut file: &File, path: &Path) -> Result<(), StartupError> {
    let written = file
        .set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all());
    written.map_err(|e| StartupError::new(format!("cannot write {}: {e}", path.display())))
}

/// The pid file we opened must be a plain file of its own: never a device or FIFO, and
/// never a second name of another file (a hard link to /etc/shadow would be truncated).
fn refuse_shared_pid_file(file: &File, path: &Path) -> Result<(), StartupError> {
    let meta = file
        .metadata()
        .map_err(|e| StartupError::new(format!("cannot examine {}: {e}", path.display())))?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        return Err(StartupError::new(format!(
            "refusing to write the pid file {}: it is not a plain file with a single name; \
             remove it",
            path.display()
        )));
    }
    Ok(())
}

/// A leftover socket from a crash is removed; a socket that a process listens on (real
/// Dovecot's, another daemon's) is in use and refused, and so is anything else at that
/// path.
fn remove_stale_socket(path: &Path) -> Result<(), StartupError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match socket_listens(path) {
                Ok(false) => {}
                Ok(true) => {
                    return Err(StartupError::new(format!(
                        "refusing to replace {}: it is in use (a process listens on it; stop \
                         that process or choose another path)",
                        path.display()
                    )));
                }
                Err(e) => {
                    return Err(StartupError::new(format!(
                        "refusing to replace {}: cannot tell whether it is in use: {e}",
                        path.display()
                    )));
                }
            }
            fs::remove_file(path).map_err(|e| {
                StartupError::new(format!(
                    "cannot remove stale socket {}: {e}",
                    path.display()
                ))
            })
        }
        Ok(_) => Err(StartupError::new(format!(
            "refusing to replace {}: it exists and is not a socket",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StartupError::new(format!("{}: {e}", path.display()))),
    }
}

/// Whether a process listens on the UNIX socket at `path`: a connection attempt that never
/// waits is accepted, or finds the backlog full (EAGAIN), or finds a socket of another
/// type (EPROTOTYPE). A stale socket, whose listener is gone, refuses it.
fn socket_listens(path: &Path) -> nix::Result<bool> {
    use nix::errno::Errno;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::AsRawFd;
    let address = UnixAddr::new(path)?;
    let probe = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match connect(probe.as_raw_fd(), &address) {
        Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS | Errno::EPROTOTYPE) => Ok(true),
        Err(Errno::ECONNREFUSED | Errno::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
