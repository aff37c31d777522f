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
use std::hash::BuildHasher;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

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
/// characters, Unicode line and paragraph separators, invisible formatting characters
/// (bidirectional overrides, zero-width marks), `[`, `]`, backslashes and invalid UTF-8
/// become `\xNN` escapes, one per byte. So a value can neither end a line nor open or close
/// a `[field=value]` of its own (a login `x] [reason=forged` can't forge a field for log
/// parsers such as fail2ban). Long values are cut.
pub fn sanitize(bytes: &[u8]) -> String {
    const MAX: usize = 256;
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if out.len() >= MAX {
                out.push_str("...");
                return out;
            }
            if needs_escape(c) {
                let mut utf8 = [0u8; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
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

/// Characters [`sanitize`] escapes.
fn needs_escape(c: char) -> bool {
    matches!(c, '[' | ']' | '\\')
        || c.is_control()
        // Line and paragraph separators (Zl, Zp); NEL (U+0085) is a control character.
        || matches!(c, '\u{2028}' | '\u{2029}')
        // Format characters (Cf) that hide or reorder text: soft hyphen, Arabic letter
        // mark, Mongolian vowel separator, zero-width and directional marks, embeddings and
        // overrides, word joiner and invisible operators, isolates, deprecated format
        // controls, the byte order mark, interlinear annotations, and tags.
        || matches!(
            c,
            '\u{ad}'
                | '\u{61c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// A budget for a kind of line a client can make the daemon write at will (`auth failure`):
/// a burst of [`LineBudget::BURST`] lines, then [`LineBudget::RATE`] a second. Lines past
/// the budget are not written but counted, with the distinct subjects (logins) they were
/// about, into one summary line: written [`LineBudget::QUIET`] after the flood ends, or
/// every [`LineBudget::SUMMARY_EVERY`] while it lasts.
pub struct LineBudget {
    kind: &'static str,
    state: Mutex<Budget>,
    hasher: std::collections::hash_map::RandomState,
}

struct Budget {
    tokens: f64,
    refilled: Instant,
    /// Lines not written since `since`.
    suppressed: u64,
    since: Option<Instant>,
    last_suppressed: Option<Instant>,
    /// Hashes of the subjects of those lines (at most [`LineBudget::MAX_SUBJECTS`]).
    subjects: std::collections::HashSet<u64>,
    /// A task that writes the summary once the flood ends is running.
    summary_task: bool,
}

impl LineBudget {
    /// Lines a second, on average.
    pub const RATE: u32 = 100;
    /// Lines at once.
    pub const BURST: u32 = 50;
    /// A summary after this long without a suppressed line...
    pub const QUIET: Duration = Duration::from_secs(1);
    /// ...or this long after the first suppressed line it covers.
    pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
    /// Distinct subjects counted exactly; beyond that, "at least".
    const MAX_SUBJECTS: usize = 100_000;

    /// A budget for lines of `kind` (e.g. `auth failure`, named in the summary).
    pub fn new(kind: &'static str) -> LineBudget {
        LineBudget {
            kind,
            state: Mutex::new(Budget {
                tokens: f64::from(Self::BURST),
                refilled: Instant::now(),
                suppressed: 0,
                since: None,
                last_suppressed: None,
                subjects: std::collections::HashSet::new(),
                summary_task: false,
            }),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Writes `line` at `level` if the budget allows, else counts it for `subject`. The
    /// first line held back starts a thread that writes the summary once the flood ends
    /// (a thread, not a task: lines come from pool and accepting threads too, outside
    /// any runtime).
    pub fn log(
        self: &std::sync::Arc<Self>,
        level: Level,
        subject: &[u8],
        line: impl FnOnce() -> String,
    ) {
        let now = Instant::now();
        let (allowed, summary, start_task) = {
            let mut state = self.lock();
            let summary = self.due_summary(&mut state, now, false);
            let allowed = state.take_token(now);
            let mut start_task = false;
            if !allowed {
                state.suppressed += 1;
                state.since.get_or_insert(now);
                state.last_suppressed = Some(now);
                if state.subjects.len() < Self::MAX_SUBJECTS {
                    state.subjects.insert(self.hasher.hash_one(subject));
                }
                if !state.summary_task {
                    state.summary_task = true;
                    start_task = true;
                }
            }
            (allowed, summary, start_task)
        };
        if let Some(summary) = summary {
            write(Level::Info, format_args!("{summary}"));
        }
        if allowed {
            write(level, format_args!("{}", line()));
        }
        if start_task {
            let budget = std::sync::Arc::clone(self);
            let summarise = move || {
                loop {
                    std::thread::sleep(Self::QUIET);
                    let (summary, done) = {
                        let mut state = budget.lock();
                        let summary = budget.due_summary(&mut state, Instant::now(), true);
                        let done = state.suppressed == 0;
                        if done {
                            state.summary_task = false;
                        }
                        (summary, done)
                    };
                    if let Some(summary) = summary {
                        write(Level::Info, format_args!("{summary}"));
                    }
                    if done {
                        return;
                    }
                }
            };
            let started = std::thread::Builder::new()
                .name("saslauthd-log".to_string())
                .spawn(summarise);
            if started.is_err() {
                // The next line held back tries again.
                self.lock().summary_task = false;
            }
        }
    }

    /// The summary line, if one is due at `now` (then the counts start over). `ended`:
    /// also when the flood has ended (no line held back for [`Self::QUIET`]).
    fn due_summary(&self, state: &mut Budget, now: Instant, ended: bool) -> Option<String> {
        let since = state.since?;
        let quiet = state
            .last_suppressed
            .is_some_and(|last| now.duration_since(last) >= Self::QUIET);
        if !(now.duration_since(since) >= Self::SUMMARY_EVERY || (ended && quiet)) {
            return None;
        }
        let distinct = state.subjects.len();
        let at_least = if distinct >= Self::MAX_SUBJECTS {
            "at least "
        } else {
            ""
        };
        let summary = format!(
            "{}: {} more lines not logged in the last {} s (over {} per second), for \
             {at_least}{distinct} distinct logins",
            self.kind,
            state.suppressed,
            now.duration_since(since).as_secs_f64().ceil() as u64,
            Self::RATE
        );
        state.suppressed = 0;
        state.since = None;
        state.last_suppressed = None;
        state.subjects.clear();
        Some(summary)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Budget {
    fn take_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens =
            (self.tokens + elapsed * f64::from(LineBudget::RATE)).min(f64::from(LineBudget::BURST));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
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

    #[test]
    fn sanitize_escapes_field_brackets_and_unicode_line_breaks() {
        assert_eq!(sanitize(b"x] [reason=forged"), "x\\x5d \\x5breason=forged");
        assert_eq!(sanitize("a\u{2028}b".as_bytes()), "a\\xe2\\x80\\xa8b");
        assert_eq!(sanitize("a\u{2029}b".as_bytes()), "a\\xe2\\x80\\xa9b");
        assert_eq!(sanitize("a\u{85}b".as_bytes()), "a\\xc2\\x85b");
        assert_eq!(sanitize("\u{202e}txt".as_bytes()), "\\xe2\\x80\\xaetxt");
        assert_eq!(sanitize("z\u{200b}w".as_bytes()), "z\\xe2\\x80\\x8bw");
        assert_eq!(sanitize("\u{feff}".as_bytes()), "\\xef\\xbb\\xbf");
        assert_eq!(sanitize("\u{e0041}".as_bytes()), "\\xf3\\xa0\\x81\\x81");
        // Ordinary non-ASCII letters and spaces stay.
        assert_eq!(sanitize("Jörg Müller €".as_bytes()), "Jörg Müller €");
        // No character comes out as a bracket or a line break.
        for c in (0..0x11_0000u32).filter_map(char::from_u32) {
            let out = sanitize(c.to_string().as_bytes());
            assert!(
                !out.contains(['[', ']', '\n', '\r', '\u{2028}', '\u{2029}', '\u{85}']),
                "{c:?}"
            );
        }
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
    fn the_line_budget_allows_a_burst_then_the_rate_and_sums_up_the_rest() {
        let budget = LineBudget::new("auth failure");
        let start = Instant::now();
        let mut state = budget.lock();
        state.refilled = start;
        // A burst at one instant: 50 lines, then none.
        let written = (0..80).filter(|_| state.take_token(start)).count();
        assert_eq!(written, LineBudget::BURST as usize);
        // A second later, 100 more at most (the bucket holds 50 at most).
        let later = start + Duration::from_secs(1);
        let written = (0..200).filter(|_| state.take_token(later)).count();
        assert_eq!(written, LineBudget::BURST as usize);
        // Spread over a second: the rate.
        let mut written = 0;
        for ms in 1..=1000 {
            for _ in 0..5 {
                written += usize::from(state.take_token(later + Duration::from_millis(ms)));
            }
        }
        assert!((99..=101).contains(&written), "{written}");
        // The summary: not while the flood goes on, then once it has been quiet.
        state.suppressed = 1234;
        state.since = Some(start);
        state.last_suppressed = Some(later);
        state.subjects.extend([1, 2, 3]);
        assert_eq!(budget.due_summary(&mut state, later, true), None);
        let summary = budget
            .due_summary(&mut state, later + LineBudget::QUIET, true)
            .unwrap();
        assert_eq!(
            summary,
            "auth failure: 1234 more lines not logged in the last 2 s (over 100 per second), \
             for 3 distinct logins"
        );
        assert_eq!(state.suppressed, 0);
        assert_eq!(budget.due_summary(&mut state, later, true), None);
        // A long flood: one summary per period even without a pause.
        state.suppressed = 1;
        state.since = Some(start);
        state.last_suppressed = Some(start + LineBudget::SUMMARY_EVERY);
        assert!(
            budget
                .due_summary(&mut state, start + LineBudget::SUMMARY_EVERY, false)
                .is_some()
        );
    }

    #[test]
    fn sanitize_cuts_long_values() {
        let long = vec![b'a'; 1000];
        let out = sanitize(&long);
        assert!(out.len() < 300);
        assert!(out.ends_with("..."));
    }
}
