//! The daemon's command line: upstream's flags plus our long options, turned into a
//! [`Config`] the server runs from. No I/O here beyond printing help.
//!
//! Differences from upstream's getopt parsing, on purpose: an unknown option, a stray
//! argument or a missing `-a` is a usage error (exit 1) instead of usage + exit 0, and a
//! non-numeric `-n`, `-s` or `-t` is refused instead of read as 0.
#![forbid(unsafe_code)]

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};

pub use crate::auth::cache::CacheConfig;
use crate::auth::throttle::{self, ThrottleSettings};
use crate::frontend;
use crate::mech;
use crate::peer::{AccessSpec, Id, parse_id_list};
use crate::privileges::RunAsSpec;
use crate::protocol::dovecot::Endpoint;
use crate::protocol::{DEFAULT_MAX_FIELD_LEN, MAX_COUNTED_LEN};

pub const DEFAULT_RUN_DIR: &str = "/run/saslauthd";
pub const SOCKET_NAME: &str = "mux";
pub const PID_FILE_NAME: &str = "saslauthd.pid";
/// Upstream's cache defaults: 8 hours, ~1 MB.
pub const DEFAULT_CACHE_TIMEOUT_SECS: u64 = 28_800;
pub const DEFAULT_CACHE_SIZE_KB: u64 = 963;

#[derive(Parser, Debug)]
#[command(
    name = "saslauthd",
    about = "SASL authentication daemon (saslauthd-rs)",
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true
)]
struct Cli {
    /// Authentication mechanism (case-insensitive): sasldb, getpwent, kerberos5, pam,
    /// rimap, shadow, ldap
    #[arg(short = 'a', value_name = "MECH")]
    mech: Option<String>,
    /// Enable the credential cache
    #[arg(short = 'c')]
    cache: bool,
    /// Debug: run in the foreground, verbose, log to stderr too
    #[arg(short = 'd')]
    debug: bool,
    /// Run in the foreground (do not detach)
    #[arg(short = 'f')]
    foreground: bool,
    /// Show this help on stderr, like upstream, and exit
    #[arg(short = 'h')]
    help: bool,
    /// Show this help on stdout and exit
    #[arg(long = "help")]
    long_help: bool,
    /// Accepted for compatibility; no effect (there is no accept lock)
    #[arg(short = 'l')]
    no_accept_lock: bool,
    /// Run directory holding the socket `mux` (absolute path)
    #[arg(short = 'm', value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Verifications run at once (0 or absent: the mechanism's default: one per CPU core for
    /// shadow, 16 or one per core if more for pam, 32 or one per core if more for rimap)
    #[arg(short = 'n', value_name = "N", allow_negative_numbers = true)]
    workers: Option<i64>,
    /// Option for the mechanism (the last one wins); -a rimap: the IMAP server, e.g.
    /// host, host/port, host:port, [v6]:port, imaps://host[:port]; -a kerberos5 and -a ldap:
    /// the settings file (default: /etc/saslauthd.conf; for kerberos5, if it exists)
    #[arg(short = 'O', value_name = "OPTION")]
    mech_option: Option<String>,
    /// Verify `login@realm` when the request has a non-empty realm
    #[arg(short = 'r')]
    realm_concat: bool,
    /// Credential cache size in kilobytes
    #[arg(short = 's', value_name = "KB", allow_negative_numbers = true)]
    cache_size_kb: Option<i64>,
    /// Credential cache entry lifetime in seconds
    #[arg(short = 't', value_name = "SECS", allow_negative_numbers = true)]
    cache_timeout: Option<i64>,
    /// Show the version and the mechanisms, and exit
    #[arg(short = 'v', long = "version")]
    version: bool,
    /// Verbose logging (debug lines)
    #[arg(short = 'V')]
    verbose: bool,
    /// Per-connection I/O deadline in seconds (request, reply, drain)
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Longest accepted request field in bytes (upstream: 256)
    #[arg(long = "max-field-len", value_name = "BYTES", default_value_t = DEFAULT_MAX_FIELD_LEN as u64,
          value_parser = clap::value_parser!(u64).range(1..=MAX_COUNTED_LEN as u64))]
    max_field_len: u64,
    /// Client connections open at once; more are answered `NO server busy`
    #[arg(long = "max-connections", value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Connections one peer uid may hold at once (default: half of --max-connections);
    /// more are answered `NO server busy`
    #[arg(long = "max-connections-per-uid", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections_per_uid: Option<u64>,
    /// Requests waiting for a verification slot at once; more are answered `NO server busy`
    #[arg(long = "max-queue", value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_queue: u64,
    /// Failures a login (or client address) may have before its requests are delayed
    #[arg(long = "throttle-free", value_name = "N", default_value_t = throttle::DEFAULT_FREE,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    throttle_free: u32,
    /// First throttling delay in milliseconds; doubles with each further failure
    #[arg(long = "throttle-delay", value_name = "MS", default_value_t = throttle::DEFAULT_DELAY_MS,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    throttle_delay: u64,
    /// Longest throttling delay in milliseconds; 0 turns throttling off
    #[arg(long = "throttle-max", value_name = "MS", default_value_t = throttle::DEFAULT_MAX_MS,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    throttle_max: u64,
    /// Seconds without failures after which a login (or address) loses one failure
    #[arg(long = "throttle-decay", value_name = "SECS", default_value_t = throttle::DEFAULT_DECAY_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    throttle_decay: u64,
    /// Longest a verification may run, in seconds; mechanisms that talk to a server
    /// (rimap) bound their backend calls by it, and the daemon answers NO soon after
    #[arg(long = "verify-timeout", value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    verify_timeout: Option<u64>,
    /// -a pam: the only service names clients may send, comma-separated (default: any but
    /// su, sudo, login and other stacks that trust root or serve interactive logins)
    #[arg(long = "pam-services", value_name = "LIST")]
    pam_services: Option<String>,
    /// -a pam: rename service names before PAM sees them, e.g. imap=mail,pop=mail
    #[arg(long = "pam-service-map", value_name = "FROM=TO[,...]")]
    pam_service_map: Option<String>,
    /// -a pam: the PAM service for every name --pam-service-map does not rename
    #[arg(long = "pam-service", value_name = "NAME")]
    pam_service: Option<String>,
    /// -a rimap: STARTTLS before LOGIN; fail if the server refuses it
    #[arg(long = "rimap-starttls")]
    rimap_starttls: bool,
    /// -a rimap: the only trust anchors for the server certificate, PEM (default: the
    /// system's)
    #[arg(long = "rimap-ca-file", value_name = "PATH")]
    rimap_ca_file: Option<PathBuf>,
    /// -a rimap: the name the server certificate must carry (default: the host of -O)
    #[arg(long = "rimap-tls-name", value_name = "NAME")]
    rimap_tls_name: Option<String>,
    /// -a rimap: one deadline in seconds for connect, TLS, greeting and login (default:
    /// --verify-timeout)
    #[arg(long = "rimap-timeout", value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    rimap_timeout: Option<u64>,
    /// -a sasldb: the user database (default: /etc/sasldb2)
    #[arg(long = "sasldb-path", value_name = "PATH")]
    sasldb_path: Option<PathBuf>,
    // Hardening (issue 7): who may connect, whom to run as.
    /// Serve only peers with one of these uids (users or numbers, comma-separated); with
    /// --allow-gid, a peer in either list is served; uid 0 is not implied
    #[arg(long = "allow-uid", value_name = "LIST")]
    allow_uid: Option<String>,
    /// Serve only peers with one of these primary gids (groups or numbers,
    /// comma-separated); supplementary groups are not seen
    #[arg(long = "allow-gid", value_name = "LIST")]
    allow_gid: Option<String>,
    /// After binding the socket, drop root for good and run as USER (not with -a shadow
    /// or pam, which need root)
    #[arg(long = "user", value_name = "USER")]
    user: Option<String>,
    /// With --user: the group to run as (default: USER's primary group)
    #[arg(long = "group", value_name = "GROUP")]
    group: Option<String>,
    // The Dovecot authentication protocol (issue 16): Postfix and Exim without libsasl.
    /// Also serve the Dovecot authentication protocol (Postfix smtpd_sasl_type = dovecot,
    /// Exim's dovecot authenticator) on this UNIX socket, or on TCP with inet:ADDRESS:PORT
    #[arg(long = "dovecot-socket", value_name = "PATH|inet:ADDRESS:PORT")]
    dovecot_socket: Option<String>,
    /// Mode of the --dovecot-socket file, octal
    #[arg(long = "dovecot-socket-mode", value_name = "MODE")]
    dovecot_socket_mode: Option<String>,
    /// Owner of the --dovecot-socket file (default root)
    #[arg(long = "dovecot-socket-user", value_name = "USER")]
    dovecot_socket_user: Option<String>,
    /// Group of the --dovecot-socket file (default root's group)
    #[arg(long = "dovecot-socket-group", value_name = "GROUP")]
    dovecot_socket_group: Option<String>,
    /// Serve --dovecot-socket inet:ADDRESS:PORT on an address beyond loopback (passwords
    /// cross the network base64-encoded, not encrypted)
    #[arg(long = "dovecot-allow-network")]
    dovecot_allow_network: bool,
    /// Over TCP, serve only clients from these addresses or networks (ADDRESS[/BITS],
    /// comma-separated; default: 127.0.0.0/8,::1)
    #[arg(long = "dovecot-allow-from", value_name = "LIST")]
    dovecot_allow_from: Option<String>,
    /// Take the run directory over from the saslauthd serving it without a moment without
    /// a socket: swap our socket in, then stop the old daemon and take its pid-file lock
    #[arg(long = "replace")]
    replace: bool,
}

/// Everything the daemon runs from.
#[derive(Debug, Clone)]
pub struct Config {
    pub mech: String,
    pub mech_option: Option<String>,
    pub run_dir: PathBuf,
    /// Stay in the foreground (`-d` or `-f`).
    pub foreground: bool,
    /// Log debug lines (`-d` or `-V`).
    pub verbose: bool,
    /// Copy log lines to stderr (`-d`).
    pub log_to_stderr: bool,
    pub realm_concat: bool,
    pub cache: CacheConfig,
    /// `-n N`; `None` (absent or 0): the mechanism's default.
    pub workers: Option<NonZeroUsize>,
    /// Our long options for the chosen mechanism.
    pub mech_settings: mech::Settings,
    pub timeout: Duration,
    pub max_field_len: usize,
    pub max_connections: usize,
    /// `--max-connections-per-uid`; `None`: half of `--max-connections`.
    pub max_connections_per_uid: Option<usize>,
    /// Requests allowed to wait for a verification slot (`--max-queue`).
    pub max_queue: usize,
    /// `--allow-uid`, `--allow-gid` (names are looked up at startup).
    pub access: AccessSpec,
    /// `--user`, `--group`: whom to run as once the socket is bound.
    pub run_as: Option<RunAsSpec>,
    /// Brute-force throttling (`--throttle-*`).
    pub throttle: ThrottleSettings,
    /// The Dovecot protocol front end (`--dovecot-*`).
    pub dovecot: frontend::dovecot::Settings,
    /// `--replace`: take over from the daemon serving the run directory.
    pub replace: bool,
}

impl Config {
    pub fn socket_path(&self) -> PathBuf {
        self.run_dir.join(SOCKET_NAME)
    }

    pub fn pid_file_path(&self) -> PathBuf {
        self.run_dir.join(PID_FILE_NAME)
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Run(Box<Config>),
    /// `-h`: the text to print on stderr (usage, then the version block), as upstream.
    Help(String),
    /// `--help`: the same text, for stdout (so `saslauthd --help | less` works).
    LongHelp(String),
    /// `-v`: the version block, for stderr.
    Version(String),
}

/// A usage error: print the message and exit 1.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\nTry 'saslauthd -h' for more information.", self.0)
    }
}

/// `saslauthd <version>` and the mechanism list, like upstream's `-v`.
pub fn version_block() -> String {
    let mut out = format!(
        "saslauthd {} (saslauthd-rs)\nauthentication mechanisms:",
        env!("CARGO_PKG_VERSION")
    );
    for name in mech::AVAILABLE {
        out.push(' ');
        out.push_str(name);
    }
    out.push_str("\n\n");
    out
}

/// Parses the daemon's arguments (including argv[0]).
pub fn parse<I, T>(args: I) -> Result<Action, UsageError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("invalid arguments");
        UsageError(first.trim_start_matches("error: ").to_string())
    })?;
    if cli.help || cli.long_help {
        let help = Cli::command().render_help().to_string();
        let text = format!("{help}\n{}", version_block());
        return Ok(if cli.long_help {
            Action::LongHelp(text)
        } else {
            Action::Help(text)
        });
    }
    if cli.version {
        return Ok(Action::Version(version_block()));
    }
    let mech = cli
        .mech
        .clone()
        .ok_or_else(|| UsageError("no authentication mechanism specified (-a)".into()))?;
    let run_dir = cli
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
    if !run_dir.is_absolute() {
        return Err(UsageError("-m requires an absolute pathname".into()));
    }
    let workers = match cli.workers {
        None | Some(0) => None,
        Some(n) if n < 0 => {
            return Err(UsageError(
                "invalid number of worker processes defined".into(),
            ));
        }
        Some(n) => NonZeroUsize::new(n as usize),
    };
    let mech_settings = mech_settings(&mech, &cli)?;
    let size_kb = positive(cli.cache_size_kb, DEFAULT_CACHE_SIZE_KB)
        .ok_or_else(|| UsageError("cache size must be positive and non zero".into()))?;
    let cache_timeout = positive(cli.cache_timeout, DEFAULT_CACHE_TIMEOUT_SECS)
        .ok_or_else(|| UsageError("cache timeout must be positive".into()))?;
    let (access, run_as) = hardening_options(&cli)?;
    let dovecot = dovecot_options(&cli)?;
    let _ = cli.no_accept_lock;
    Ok(Action::Run(Box::new(Config {
        mech,
        mech_option: cli.mech_option,
        run_dir,
        foreground: cli.debug || cli.foreground,
        verbose: cli.debug || cli.verbose,
        log_to_stderr: cli.debug,
        realm_concat: cli.realm_concat,
        cache: CacheConfig {
            enabled: cli.cache,
            size_kb,
            timeout: Duration::from_secs(cache_timeout),
        },
        workers,
        mech_settings,
        timeout: Duration::from_secs(cli.timeout),
        max_field_len: cli.max_field_len as usize,
        max_connections: cli.max_connections as usize,
        max_connections_per_uid: cli.max_connections_per_uid.map(|n| n as usize),
        max_queue: cli.max_queue as usize,
        access,
        run_as,
        throttle: ThrottleSettings {
            free: cli.throttle_free,
            delay: Duration::from_millis(cli.throttle_delay),
            max: Duration::from_millis(cli.throttle_max),
            decay: Duration::from_secs(cli.throttle_decay),
        },
        dovecot,
        replace: cli.replace,
    })))
}

fn positive(value: Option<i64>, default: u64) -> Option<u64> {
    match value {
        None => Some(default),
        Some(v) if v > 0 => Some(v as u64),
        Some(_) => None,
    }
}

/// `--allow-uid`, `--allow-gid`, `--user` and `--group`, checked for syntax (names are
/// looked up by the daemon at startup).
fn hardening_options(cli: &Cli) -> Result<(AccessSpec, Option<RunAsSpec>), UsageError> {
    let list = |option: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|list| parse_id_list(option, list))
            .transpose()
            .map_err(UsageError)
    };
    let access = AccessSpec {
        uids: list("--allow-uid", &cli.allow_uid)?,
        gids: list("--allow-gid", &cli.allow_gid)?,
    };
    let id = |option: &str, value: &str| {
        Id::parse(value).map_err(|e| UsageError(format!("{option}: {e}")))
    };
    let run_as = match (&cli.user, &cli.group) {
        (None, None) => None,
        (None, Some(_)) => return Err(UsageError("--group needs --user".into())),
        (Some(user), group) => Some(RunAsSpec {
            user: id("--user", user)?,
            group: group.as_deref().map(|g| id("--group", g)).transpose()?,
        }),
    };
    Ok((access, run_as))
}

/// The `--dovecot-*` options. Mode and owner need `--dovecot-socket` (they are the file's);
/// the TCP allow-list and `--dovecot-allow-network` also apply to a socket the service
/// manager passes.
fn dovecot_options(cli: &Cli) -> Result<frontend::dovecot::Settings, UsageError> {
    use frontend::dovecot::{AddressRange, Settings, parse_mode};
    let endpoint = cli
        .dovecot_socket
        .as_deref()
        .map(Endpoint::parse)
        .transpose()
        .map_err(|e| UsageError(format!("--dovecot-socket: {e}")))?;
    let file_options = cli.dovecot_socket_mode.is_some()
        || cli.dovecot_socket_user.is_some()
        || cli.dovecot_socket_group.is_some();
    if file_options && endpoint.is_none() {
        return Err(UsageError(
            "--dovecot-socket-mode, --dovecot-socket-user and --dovecot-socket-group need \
             --dovecot-socket"
                .into(),
        ));
    }
    let id = |option: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| Id::parse(v).map_err(|e| UsageError(format!("{option}: {e}"))))
            .transpose()
    };
    let mut settings = Settings {
        endpoint,
        owner: id("--dovecot-socket-user", &cli.dovecot_socket_user)?,
        group: id("--dovecot-socket-group", &cli.dovecot_socket_group)?,
        allow_network: cli.dovecot_allow_network,
        ..Settings::default()
    };
    if let Some(mode) = &cli.dovecot_socket_mode {
        settings.mode = parse_mode(mode).map_err(UsageError)?;
    }
    if let Some(list) = &cli.dovecot_allow_from {
        settings.allow_from = AddressRange::parse_list(list)
            .map_err(|e| UsageError(format!("--dovecot-allow-from: {e}")))?;
    }
    settings.check().map_err(UsageError)?;
    Ok(settings)
}

/// The mechanism-specific long options, refused with any other mechanism (an allow-list
/// that silently did nothing would be worse than an error).
fn mech_settings(mech: &str, cli: &Cli) -> Result<mech::Settings, UsageError> {
    let is_pam = mech.eq_ignore_ascii_case("pam");
    let is_rimap = mech.eq_ignore_ascii_case("rimap");
    let is_sasldb = mech.eq_ignore_ascii_case("sasldb");
    if !is_sasldb && cli.sasldb_path.is_some() {
        return Err(UsageError("--sasldb-path needs -a sasldb".into()));
    }
    if !is_pam
        && (cli.pam_services.is_some()
            || cli.pam_service_map.is_some()
            || cli.pam_service.is_some())
    {
        return Err(UsageError(
            "--pam-services, --pam-service-map and --pam-service need -a pam".into(),
        ));
    }
    if !is_rimap
        && (cli.rimap_starttls
            || cli.rimap_ca_file.is_some()
            || cli.rimap_tls_name.is_some()
            || cli.rimap_timeout.is_some())
    {
        return Err(UsageError(
            "--rimap-starttls, --rimap-ca-file, --rimap-tls-name and --rimap-timeout need -a rimap"
                .into(),
        ));
    }
    let mut settings = mech::Settings::default();
    if let Some(secs) = cli.verify_timeout {
        settings.verify_timeout = Duration::from_secs(secs);
    }
    if is_pam {
        settings.pam = mech::pam::ServicePolicy::from_options(
            cli.pam_services.as_deref(),
            cli.pam_service_map.as_deref(),
            cli.pam_service.as_deref(),
        )
        .map_err(UsageError)?;
    }
    if let Some(path) = &cli.sasldb_path {
        settings.sasldb.path = path.clone();
    }
    if is_rimap {
        settings.rimap = mech::rimap::Options {
            starttls: cli.rimap_starttls,
            ca_file: cli.rimap_ca_file.clone(),
            tls_name: cli.rimap_tls_name.clone(),
            timeout: cli
                .rimap_timeout
                .map_or(settings.verify_timeout, Duration::from_secs),
        };
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Config {
        match parse(std::iter::once("saslauthd").chain(args.iter().copied())) {
            Ok(Action::Run(config)) => *config,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn usage_error(args: &[&str]) -> String {
        match parse(std::iter::once("saslauthd").chain(args.iter().copied())) {
            Err(UsageError(message)) => message,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn debian_default_command_line() {
        let c = run(&["-a", "shadow", "-c", "-m", "/var/run/saslauthd", "-n", "5"]);
        assert_eq!(c.mech, "shadow");
        assert!(c.cache.enabled);
        assert_eq!(c.run_dir, PathBuf::from("/var/run/saslauthd"));
        assert_eq!(c.socket_path(), PathBuf::from("/var/run/saslauthd/mux"));
        assert_eq!(c.workers.map(NonZeroUsize::get), Some(5));
        assert!(!c.foreground && !c.verbose && !c.log_to_stderr);
    }

    #[test]
    fn defaults() {
        let c = run(&["-a", "shadow"]);
        assert_eq!(c.run_dir, PathBuf::from(DEFAULT_RUN_DIR));
        assert_eq!(c.max_field_len, 1024);
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.max_queue, 1024);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.cache.timeout, Duration::from_secs(28_800));
        assert_eq!(c.workers, None);
        assert_eq!(c.mech_settings, mech::Settings::default());
    }

    #[test]
    fn debug_implies_foreground_verbose_and_stderr() {
        let c = run(&["-a", "shadow", "-d"]);
        assert!(c.foreground && c.verbose && c.log_to_stderr);
        let c = run(&["-a", "shadow", "-f"]);
        assert!(c.foreground && !c.verbose);
        let c = run(&["-a", "shadow", "-V"]);
        assert!(!c.foreground && c.verbose && !c.log_to_stderr);
    }

    #[test]
    fn bundled_flags_and_last_option_wins() {
        let c = run(&["-dcr", "-ashadow", "-O", "first", "-O", "second", "-l"]);
        assert!(c.foreground && c.cache.enabled && c.realm_concat);
        assert_eq!(c.mech_option.as_deref(), Some("second"));
    }

    #[test]
    fn long_options() {
        let c = run(&[
            "-a",
            "shadow",
            "--timeout",
            "2",
            "--max-field-len",
            "256",
            "--max-connections",
            "10",
            "--max-queue",
            "7",
            "--max-connections-per-uid",
            "4",
        ]);
        assert_eq!(c.max_queue, 7);
        assert_eq!(c.max_connections_per_uid, Some(4));
        assert_eq!(run(&["-a", "shadow"]).max_connections_per_uid, None);
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.max_field_len, 256);
        assert_eq!(c.max_connections, 10);
    }

    #[test]
    fn throttle_options() {
        let c = run(&["-a", "shadow"]);
        assert_eq!(c.throttle, ThrottleSettings::default());
        assert!(c.throttle.enabled());
        let c = run(&[
            "-a",
            "shadow",
            "--throttle-free",
            "0",
            "--throttle-delay",
            "100",
            "--throttle-max",
            "2000",
            "--throttle-decay",
            "30",
        ]);
        assert_eq!(
            c.throttle,
            ThrottleSettings {
                free: 0,
                delay: Duration::from_millis(100),
                max: Duration::from_secs(2),
                decay: Duration::from_secs(30),
            }
        );
        assert!(
            !run(&["-a", "shadow", "--throttle-max", "0"])
                .throttle
                .enabled()
        );
        assert!(usage_error(&["-a", "shadow", "--throttle-delay", "0"]).contains("0"));
        assert!(usage_error(&["-a", "shadow", "--throttle-max", "60001"]).contains("60001"));
        assert!(usage_error(&["-a", "shadow", "--throttle-decay", "0"]).contains("0"));
        assert!(usage_error(&["-a", "shadow", "--throttle-free", "-1"]).contains("-1"));
    }

    #[test]
    fn usage_errors() {
        assert!(usage_error(&[]).contains("no authentication mechanism"));
        assert!(usage_error(&["-a", "shadow", "-m", "run"]).contains("absolute"));
        assert!(usage_error(&["-a", "shadow", "-n", "-1"]).contains("worker"));
        assert!(usage_error(&["-a", "shadow", "-s", "0"]).contains("cache size"));
        assert!(usage_error(&["-a", "shadow", "-t", "0"]).contains("cache timeout"));
        assert!(usage_error(&["-a", "shadow", "-x"]).contains("-x"));
        assert!(usage_error(&["-a", "shadow", "stray"]).contains("stray"));
        assert!(usage_error(&["-a", "shadow", "--max-field-len", "70000"]).contains("70000"));
    }

    #[test]
    fn zero_workers_means_automatic() {
        assert_eq!(run(&["-a", "shadow", "-n", "0"]).workers, None);
        assert_eq!(run(&["-a", "pam", "-n", "0"]).workers, None);
    }

    #[test]
    fn pam_service_policy_options() {
        let c = run(&[
            "-a",
            "PAM",
            "--pam-services",
            "smtp,imap",
            "--pam-service-map",
            "imap=mail",
            "--pam-service",
            "other-mail",
        ]);
        let expected = mech::pam::ServicePolicy::from_options(
            Some("smtp,imap"),
            Some("imap=mail"),
            Some("other-mail"),
        )
        .unwrap();
        assert_eq!(c.mech_settings.pam, expected);
        assert!(run(&["-a", "pam"]).mech_settings.pam.is_default());
        // The last occurrence wins, like every other option.
        let c = run(&["-a", "pam", "--pam-services", "x", "--pam-services", "smtp"]);
        assert_eq!(
            c.mech_settings.pam,
            mech::pam::ServicePolicy::from_options(Some("smtp"), None, None).unwrap()
        );
        assert!(
            usage_error(&["-a", "pam", "--pam-services", "smtp,,imap"])
                .starts_with("--pam-services: empty")
        );
        assert!(usage_error(&["-a", "pam", "--pam-service-map", "imap"]).contains("FROM=TO"));
        assert!(usage_error(&["-a", "shadow", "--pam-services", "smtp"]).contains("need -a pam"));
        assert!(usage_error(&["-a", "shadow", "--pam-service", "smtp"]).contains("need -a pam"));
    }

    #[test]
    fn rimap_options() {
        let c = run(&["-a", "rimap", "-O", "imaps://127.0.0.1:10993"]);
        assert_eq!(c.mech_settings.rimap, mech::rimap::Options::default());
        assert_eq!(c.mech_settings.rimap.timeout, Duration::from_secs(10));
        let c = run(&[
            "-a",
            "RIMAP",
            "-O",
            "mail.example.org",
            "--rimap-starttls",
            "--rimap-ca-file",
            "/etc/ssl/mail-ca.pem",
            "--rimap-tls-name",
            "imap.example.org",
            "--rimap-timeout",
            "3",
        ]);
        assert_eq!(
            c.mech_settings.rimap,
            mech::rimap::Options {
                starttls: true,
                ca_file: Some(PathBuf::from("/etc/ssl/mail-ca.pem")),
                tls_name: Some("imap.example.org".into()),
                timeout: Duration::from_secs(3),
            }
        );
        assert!(usage_error(&["-a", "shadow", "--rimap-starttls"]).contains("need -a rimap"));
        assert!(usage_error(&["-a", "pam", "--rimap-timeout", "3"]).contains("need -a rimap"));
        assert!(usage_error(&["-a", "pam", "--rimap-timeout", "10"]).contains("need -a rimap"));
        assert!(usage_error(&["-a", "shadow", "--rimap-ca-file", "/x"]).contains("need -a rimap"));
        assert!(usage_error(&["-a", "rimap", "--rimap-timeout", "0"]).contains("0"));
        assert!(usage_error(&["-a", "rimap", "--pam-service", "smtp"]).contains("need -a pam"));
    }

    #[test]
    fn sasldb_options() {
        let c = run(&["-a", "sasldb"]);
        assert_eq!(c.mech_settings.sasldb.path, PathBuf::from("/etc/sasldb2"));
        let c = run(&["-a", "SASLDB", "--sasldb-path", "/var/lib/sasl/db"]);
        assert_eq!(
            c.mech_settings.sasldb.path,
            PathBuf::from("/var/lib/sasl/db")
        );
        assert!(usage_error(&["-a", "shadow", "--sasldb-path", "/x"]).contains("needs -a sasldb"));
    }

    #[test]
    fn hardening_options() {
        let c = run(&["-a", "shadow"]);
        assert_eq!(c.access, AccessSpec::default());
        assert_eq!(c.run_as, None);
        let c = run(&[
            "-a",
            "rimap",
            "-O",
            "127.0.0.1",
            "--allow-uid",
            "postfix,0",
            "--allow-gid",
            "sasl",
            "--user",
            "nobody",
            "--group",
            "65534",
        ]);
        assert_eq!(
            c.access,
            AccessSpec {
                uids: Some(vec![Id::Name("postfix".into()), Id::Number(0)]),
                gids: Some(vec![Id::Name("sasl".into())]),
            }
        );
        assert_eq!(
            c.run_as,
            Some(RunAsSpec {
                user: Id::Name("nobody".into()),
                group: Some(Id::Number(65534)),
            })
        );
        let c = run(&["-a", "rimap", "--user", "1000"]);
        assert_eq!(
            c.run_as,
            Some(RunAsSpec {
                user: Id::Number(1000),
                group: None,
            })
        );
        assert!(usage_error(&["-a", "shadow", "--allow-uid", ""]).contains("empty list"));
        assert!(usage_error(&["-a", "shadow", "--allow-gid", "a,,b"]).contains("empty entry"));
        assert!(usage_error(&["-a", "rimap", "--group", "mail"]).contains("--group needs --user"));
        assert!(usage_error(&["-a", "rimap", "--user", "a b"]).starts_with("--user: "));
        assert!(
            usage_error(&["-a", "rimap", "--user", "x", "--group", "4294967295"])
                .starts_with("--group: ")
        );
    }

    #[test]
    fn dovecot_options() {
        use crate::frontend::dovecot::{AddressRange, Settings};
        assert_eq!(run(&["-a", "shadow"]).dovecot, Settings::default());
        let c = run(&[
            "-a",
            "shadow",
            "--dovecot-socket",
            "/var/spool/postfix/private/auth",
            "--dovecot-socket-mode",
            "0600",
            "--dovecot-socket-user",
            "postfix",
            "--dovecot-socket-group",
            "0",
        ]);
        assert_eq!(
            c.dovecot,
            Settings {
                endpoint: Some(Endpoint::Unix("/var/spool/postfix/private/auth".into())),
                mode: 0o600,
                owner: Some(Id::Name("postfix".into())),
                group: Some(Id::Number(0)),
                ..Settings::default()
            }
        );
        let c = run(&[
            "-a",
            "shadow",
            "--dovecot-socket",
            "inet:192.0.2.1:12345",
            "--dovecot-allow-network",
            "--dovecot-allow-from",
            "192.0.2.0/24",
        ]);
        assert_eq!(
            c.dovecot.allow_from,
            AddressRange::parse_list("192.0.2.0/24").unwrap()
        );
        assert!(c.dovecot.allow_network);
        assert!(
            usage_error(&["-a", "shadow", "--dovecot-socket", "inet:0.0.0.0:1"])
                .contains("--dovecot-allow-network")
        );
        assert!(
            usage_error(&["-a", "shadow", "--dovecot-socket-mode", "0600"])
                .contains("need --dovecot-socket")
        );
        assert!(
            usage_error(&[
                "-a",
                "shadow",
                "--dovecot-socket",
                "x",
                "--dovecot-socket-mode",
                "9"
            ])
            .contains("octal")
        );
        assert!(
            usage_error(&["-a", "shadow", "--dovecot-socket", "inet:localhost:1"])
                .starts_with("--dovecot-socket: ")
        );
        assert!(
            usage_error(&["-a", "shadow", "--dovecot-allow-from", "10.0.0.0/40"])
                .starts_with("--dovecot-allow-from: ")
        );
    }

    #[test]
    fn help_and_version() {
        let parse_one = |flag: &str| parse(["saslauthd", flag]).unwrap();
        match parse_one("-v") {
            Action::Version(text) => {
                assert!(text.starts_with("saslauthd "));
                assert!(text.contains(
                    "\nauthentication mechanisms: sasldb getpwent kerberos5 pam rimap shadow ldap\n\n"
                ));
            }
            other => panic!("{other:?}"),
        }
        match parse_one("-h") {
            Action::Help(text) => {
                assert!(text.contains("-a <MECH>"));
                assert!(text.contains("--max-field-len"));
                assert!(text.ends_with(&version_block()));
            }
            other => panic!("{other:?}"),
        }
        match parse_one("--help") {
            Action::LongHelp(text) => assert!(text.contains("--max-queue")),
            other => panic!("{other:?}"),
        }
    }
}
