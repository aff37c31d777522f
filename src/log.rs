//! Logging: syslog (facility AUTH, ident `saslauthd`, with PID) and, when asked, stderr.
//!
//! A small syslog client of our own over the `/dev/log` datagram socket replaces the
//! `syslog` crate, which never reconnects after the syslog daemon restarts and fails
//! outright when `/dev/log` is missing. Here a failed send reconnects once and retries;
//! with no syslog socket at all, lines go to stderr instead (containers, CI). Sends never
//! block: a full syslog queue drops the line rather than stall a request.
//!
//! Stderr lines use upstream's 2.1.28 format, `saslauthd[PID] :message`. Callers pass
//! client-controlled strings through [`sanitize`] so no control character reaches a log.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Syslog severities we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Err = 3,
    Warning = 4,
    Info = 6,
    Debug = 7,
}

const FACILITY_AUTH: u8 = 4 << 3;
const SYSLOG_PATHS: [&str; 2] = ["/dev/log", "/run/systemd/journal/dev-log"];

/// Where log lines go.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Also log `Level::Debug` lines (upstream's VERBOSE, `-V`/`-d`).
    pub verbose: bool,
    /// Copy every line to stderr (`-d`).
    pub stderr: bool,
    /// Use syslog when a socket exists (and stderr when none does). With neither this nor
    /// `stderr`, lines go nowhere.
    pub syslog: bool,
}

struct Logger {
    config: LogConfig,
    stderr: AtomicBool,
    syslog: Mutex<Option<UnixDatagram>>,
    syslog_path: Option<PathBuf>,
    pid: u32,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets up logging once per process; later calls are ignored. Returns whether a syslog
/// socket was found.
pub fn init(config: LogConfig) -> bool {
    let syslog_path = if config.syslog {
        SYSLOG_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|path| connect(path).is_some())
    } else {
        None
    };
    let logger = Logger::new(config, syslog_path);
    let found = logger.syslog_path.is_some();
    let _ = LOGGER.set(logger);
    found
}

impl Logger {
    fn new(config: LogConfig, syslog_path: Option<PathBuf>) -> Logger {
        // Without a syslog socket, stderr is the only place left (unless syslog was not
        // wanted either: the fuzz targets log nowhere).
        let stderr = config.stderr || (config.syslog && syslog_path.is_none());
        Logger {
            stderr: AtomicBool::new(stderr),
            syslog: Mutex::new(syslog_path.as_deref().and_then(connect)),
            syslog_path,
            pid: std::process::id(),
            config,
        }
    }

    fn write(&self, level: Level, args: fmt::Arguments<'_>) {
        if level == Level::Debug && !self.config.verbose {
            return;
        }
        let message = args.to_string();
        if self.stderr.load(Ordering::Relaxed) {
            let _ = writeln!(
                std::io::stderr().lock(),
                "saslauthd[{}] :{}",
                self.pid,
                message
            );
        }
        if let Some(path) = &self.syslog_path {
            let datagram = format!(
                "<{}>saslauthd[{}]: {}",
                FACILITY_AUTH | level as u8,
                self.pid,
                message
            );
            let mut socket = self.syslog.lock().unwrap_or_else(|e| e.into_inner());
            let sent = socket
                .as_ref()
                .is_some_and(|s| s.send(datagram.as_bytes()).is_ok());
            if !sent {
                // The syslog daemon may have restarted: reconnect once and retry.
                *socket = connect(path);
                if let Some(s) = socket.as_ref() {
                    let _ = s.send(datagram.as_bytes());
                }
            }
        }
    }
}

/// Stops copying lines to stderr (after the daemon detached and stderr is /dev/null).
pub fn stop_stderr() {
    if let Some(logger) = LOGGER.get()
        && logger.syslog_path.is_some()
    {
        logger.stderr.store(false, Ordering::Relaxed);
    }
}

fn connect(path: &std::path::Path) -> Option<UnixDatagram> {
    let socket = UnixDatagram::unbound().ok()?;
    socket.connect(path).ok()?;
    socket.set_nonblocking(true).ok()?;
    Some(socket)
}

/// Logs one line. Use the `log_*!` macros.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    match LOGGER.get() {
        Some(logger) => logger.write(level, args),
        // Before init (argument errors): stderr only.
        None => eprintln!("saslauthd[{}] :{}", std::process::id(), args),
    }
}

#[macro_export]
macro_rules! log_err {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Err, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warning, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! log_info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! log_debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*)) };
}

/// Makes client-supplied bytes safe for a log line: printable UTF-8 stays; control
/// characters, backslashes and invalid UTF-8 become `\xNN` escapes. Long values are cut.
pub fn sanitize(bytes: &[u8]) -> String {
    const MAX: usize = 256;
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if out.len() >= MAX {
                out.push_str("...");
                return out;
            }
            if c.is_control() || c == '\\' {
                for b in c.to_string().bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Logs a repeated condition (overload, say) at most once per second, at LOG_ERR unless
/// made with [`RateLimitedLog::at`].
pub struct RateLimitedLog {
    last_second: AtomicU64,
    level: Level,
}

impl Default for RateLimitedLog {
    fn default() -> RateLimitedLog {
        RateLimitedLog::at(Level::Err)
    }
}

impl RateLimitedLog {
    pub fn at(level: Level) -> RateLimitedLog {
        RateLimitedLog {
            last_second: AtomicU64::new(0),
            level,
        }
    }

    pub fn log(&self, message: impl FnOnce() -> String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.last_second.swap(now, Ordering::Relaxed) != now {
            write(self.level, format_args!("{}", message()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_control_characters_and_invalid_utf8() {
        assert_eq!(sanitize(b"alice"), "alice");
        assert_eq!(sanitize("jörg".as_bytes()), "jörg");
        assert_eq!(sanitize(b"a\nb"), "a\\x0ab");
        assert_eq!(sanitize(b"a\\b"), "a\\x5cb");
        assert_eq!(sanitize(b"\xff\x00"), "\\xff\\x00");
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a syslog datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn syslog_lines_have_facility_auth_ident_and_pid_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("saslauthd-rs-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let syslogd = UnixDatagram::bind(&path).unwrap();
        syslogd
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let config = LogConfig {
            verbose: false,
            stderr: false,
            syslog: true,
        };
        let logger = Logger::new(config, Some(path.clone()));
        let pid = std::process::id();
        logger.write(Level::Info, format_args!("auth failure: [user=a]"));
        assert_eq!(
            receive(&syslogd),
            format!("<38>saslauthd[{pid}]: auth failure: [user=a]")
        );
        logger.write(Level::Debug, format_args!("not verbose: dropped"));
        logger.write(Level::Err, format_args!("second"));
        assert_eq!(receive(&syslogd), format!("<35>saslauthd[{pid}]: second"));
        // The syslog daemon restarts: a new socket at the same path.
        drop(syslogd);
        std::fs::remove_file(&path).unwrap();
        let syslogd = UnixDatagram::bind(&path).unwrap();
        syslogd
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        logger.write(Level::Info, format_args!("after restart"));
        assert_eq!(
            receive(&syslogd),
            format!("<38>saslauthd[{pid}]: after restart")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sanitize_cuts_long_values() {
        let long = vec![b'a'; 1000];
        let out = sanitize(&long);
        assert!(out.len() < 300);
        assert!(out.ends_with("..."));
    }
}
