//! The secrets scan's collection side: when `SASLAUTHD_TEST_SECRETS_DIR` is set (as
//! `scripts/test.sh` does for the whole suite), the harness
//!
//! * records every password it sends — raw-protocol frames ([`record_frame`], called by
//!   `exchange_on`), `testsaslauthd -p` (ours and upstream's, and a password on stdin),
//!   `swaks --auth-password` (and its base64 forms, which a Dovecot-protocol server
//!   receives), `doveadm pw -p` ([`record_command`], called by `run_command`), Dovecot
//!   protocol lines (`dovecot_client`) — as hex lines in `<dir>/secrets.list`;
//! * keeps a copy of every log our binaries wrote in `<dir>/logs/`: each of our daemons'
//!   stdout/stderr and syslog lines (see [`SyslogCapture`]), and the output of every command
//!   line that runs our `saslauthd` or `testsaslauthd` through `run_command`.
//!
//! `tests/secrets_scan.rs` then searches every kept log for every recorded password and
//! for the fixture passwords and hashes. Upstream's daemon logs are not kept: upstream
//! logs passwords and hashes with `-d`.
//!
//! Without the variable everything here is a no-op. [`Matcher`], the search itself (every
//! form a secret could take in a log), is used by the scan and by
//! `Daemon::assert_log_free_of`.
#![allow(dead_code)]

use saslauthd_rs::log::sanitize;
use saslauthd_rs::protocol::dovecot::encode_base64;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The environment variable naming the directory (absolute path) that collects logs and
/// passwords for the scan.
pub const ENV: &str = "SASLAUTHD_TEST_SECRETS_DIR";
/// The list of recorded passwords in that directory: one `<hex>\t<origin>` line each.
pub const LIST: &str = "secrets.list";
/// The subdirectory holding the kept logs.
pub const LOGS: &str = "logs";

/// The collection directory, when the scan is on.
pub fn dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os(ENV).filter(|v| !v.is_empty())?);
    assert!(
        dir.is_absolute(),
        "{ENV} must be an absolute path, not {}",
        dir.display()
    );
    Some(dir)
}

/// Whether the scan is on (`SASLAUTHD_TEST_SECRETS_DIR` set).
pub fn enabled() -> bool {
    dir().is_some()
}

/// Whether `program` is one of our binaries (their logs are kept; upstream's are not).
pub fn is_ours(program: &Path) -> bool {
    ["saslauthd", "testsaslauthd"]
        .iter()
        .any(|name| program == super::ours_bin(name))
}

/// Where a record comes from: the test binary and the test (the thread's name).
fn origin() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".into());
    // Rebuilt while running: `/proc/self/exe` names `<path> (deleted)`.
    let exe = exe.trim_end_matches(" (deleted)").to_string();
    // Cargo names test executables `<target>-<hash>`.
    let exe = match exe.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 => name.to_string(),
        _ => exe,
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed-thread")
        .to_string();
    format!("{exe}.{test}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Appends one line to `<dir>/secrets.list` (one `write` per line: tests run in parallel).
fn append_list(dir: &Path, line: &str) {
    let path = dir.join(LIST);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path);
    match file {
        Ok(mut f) => f
            .write_all(line.as_bytes())
            .unwrap_or_else(|e| panic!("cannot append to {}: {e}", path.display())),
        Err(e) => panic!("cannot open {}: {e}", path.display()),
    }
}

/// Records a password the harness is about to send (no-op when the scan is off).
pub fn record_password(password: &[u8]) {
    if password.is_empty() {
        return;
    }
    if let Some(dir) = dir() {
        append_list(&dir, &format!("{}\t{}\n", to_hex(password), origin()));
    }
}

/// The password field (the second counted string) of a raw frame, as far as it was sent:
/// the frame may be truncated or deliberately malformed.
pub fn frame_password(frame: &[u8]) -> Option<&[u8]> {
    let prefix = frame.get(0..2)?;
    let login_len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    let at = 2 + login_len;
    let prefix = frame.get(at..at + 2)?;
    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    let start = at + 2;
    let end = (start + len).min(frame.len());
    Some(&frame[start..end]).filter(|p| !p.is_empty())
}

/// Records the password inside a raw frame the harness is about to send.
pub fn record_frame(frame: &[u8]) {
    if !enabled() {
        return;
    }
    if let Some(password) = frame_password(frame) {
        record_password(password);
    }
}

/// The value after `flag` in `args` (`-p VALUE`), or glued to a short flag (`-pVALUE`).
fn flag_values<'a>(args: &'a [&'a OsStr], flag: &str) -> Vec<&'a [u8]> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let bytes = arg.as_bytes();
        if bytes == flag.as_bytes() {
            if let Some(value) = args.get(i + 1) {
                out.push(value.as_bytes());
            }
        } else if flag.len() == 2 && bytes.len() > 2 && bytes.starts_with(flag.as_bytes()) {
            out.push(&bytes[2..]);
        }
    }
    out
}

/// Records the passwords on a command line the harness is about to run: `testsaslauthd`
/// (ours or upstream's: `-p`, or the first line of stdin without `-p`), `swaks`
/// (`--auth-password`, `-ap`) and `doveadm pw` (`-p`).
pub fn record_command(cmd: &Command, stdin: Option<&[u8]>) {
    if !enabled() {
        return;
    }
    let mut words: Vec<&OsStr> = vec![cmd.get_program()];
    words.extend(cmd.get_args());
    // The program may come after a wrapper (`unshare … sh -c … PROGRAM args`).
    for (i, word) in words.iter().enumerate() {
        let name = Path::new(word).file_name().and_then(OsStr::to_str);
        let args = &words[i + 1..];
        match name {
            Some("testsaslauthd") => {
                let passwords = flag_values(args, "-p");
                if passwords.is_empty() {
                    let line = stdin.unwrap_or(b"").split(|b| *b == b'\n').next();
                    record_password(line.unwrap_or(b""));
                }
                passwords.into_iter().for_each(record_password);
            }
            Some("swaks") => {
                let users = flag_values(args, "--auth-user");
                for password in flag_values(args, "--auth-password")
                    .into_iter()
                    .chain(flag_values(args, "-ap"))
                {
                    record_password(password);
                    // What a Dovecot-protocol server sees: the base64 the SMTP client sent
                    // (LOGIN: the password; PLAIN: `\0user\0password`).
                    record_password(&encode_base64(password));
                    for user in &users {
                        let message = [&b"\0"[..], user, b"\0", password].concat();
                        record_password(&encode_base64(&message));
                    }
                }
            }
            Some("doveadm") => flag_values(args, "-p")
                .into_iter()
                .for_each(record_password),
            _ => {}
        }
    }
}

/// Whether `cmd` runs one of our binaries (directly or behind a wrapper such as `unshare`).
pub fn runs_ours(cmd: &Command) -> bool {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .any(|word| is_ours(Path::new(word)))
}

/// A fresh name in `<dir>/logs/` for a log of the current test.
fn log_name(dir: &Path, kind: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let logs = dir.join(LOGS);
    fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("cannot create {}: {e}", logs.display()));
    let _ = fs::set_permissions(&logs, fs::Permissions::from_mode(0o700));
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    logs.join(format!(
        "{}.{}-{n}.{kind}.log",
        origin(),
        std::process::id()
    ))
}

/// Keeps `contents` as a log of the current test (no-op when the scan is off).
pub fn keep_log(kind: &str, contents: &[u8]) {
    if let Some(dir) = dir() {
        let path = log_name(&dir, kind);
        fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

/// Keeps a copy of the file `path` as a log of the current test, if it exists.
pub fn keep_log_file(kind: &str, path: &Path) {
    if !enabled() {
        return;
    }
    match fs::read(path) {
        Ok(contents) => keep_log(kind, &contents),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

/// A stand-in syslog daemon: a datagram socket the harness bind-mounts at `/dev/log` in a
/// daemon's private mount namespace. Every datagram becomes one line of a file. Used for our
/// daemons in daemon mode, whose stderr is `/dev/null` once detached.
pub struct SyslogCapture {
    socket_path: PathBuf,
    log_path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SyslogCapture {
    /// Binds `socket_path` and writes what arrives to `log_path`.
    pub fn start(socket_path: &Path, log_path: &Path) -> SyslogCapture {
        let socket = UnixDatagram::bind(socket_path)
            .unwrap_or_else(|e| panic!("cannot bind {}: {e}", socket_path.display()));
        // The daemon may drop its privileges one day: anyone may send.
        fs::set_permissions(socket_path, fs::Permissions::from_mode(0o666))
            .expect("chmod syslog socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("syslog socket timeout");
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        let mut line = buf[..n].to_vec();
                        line.push(b'\n');
                        let _ = out.write_all(&line);
                    }
                    // Timed out: nothing queued. Stop only then, so nothing sent is lost.
                    Err(_) if stopping.load(Ordering::SeqCst) => return,
                    Err(_) => {}
                }
            }
        });
        SyslogCapture {
            socket_path: socket_path.to_path_buf(),
            log_path: log_path.to_path_buf(),
            stop,
            thread: Some(thread),
        }
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Receives what is still queued, then stops (call once the daemon is gone).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SyslogCapture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shell lines (for `namespaced_command`'s script) that give the namespace a `/dev` of
/// its own: a tmpfs holding bind mounts of every entry of the real `/dev`, plus `/dev/log`
/// bound to the capture socket. The host's `/dev` is never written. Consumes two positional
/// parameters: an empty directory to build the new `/dev` in, and the socket.
pub const DEV_LOG_SCRIPT: &str = r#"newdev=$1; sock=$2; shift 2
mount -t tmpfs -o mode=0755,size=1m sasl-rs-dev "$newdev"
for f in /dev/*; do
    n="$newdev/${f#/dev/}"
    if [ -L "$f" ]; then cp -P "$f" "$n"
    elif [ -d "$f" ]; then mkdir "$n" && mount --rbind "$f" "$n"
    elif [ -e "$f" ]; then : > "$n" && mount --bind "$f" "$n"
    fi || echo "harness: cannot carry $f into the private /dev" >&2
done
: > "$newdev/log"
mount --bind "$sock" "$newdev/log"
mount --move "$newdev" /dev
"#;

// ---------------------------------------------------------------------------------------------
// Searching logs for secrets (`Daemon::assert_log_free_of` and `tests/secrets_scan.rs`)
// ---------------------------------------------------------------------------------------------

/// Secrets longer than this are also searched for by their first this many bytes of each
/// form: our log lines cut client values at 256 bytes, so a leak of a long password would
/// only show its start.
pub const KEY_LEN: usize = 32;

/// A form in which a secret could show up in a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Form {
    /// The bytes themselves.
    Raw,
    /// Escaped as our log lines escape client values (`saslauthd_rs::log::sanitize`).
    Sanitized,
    /// Rust's `{:?}` of its lossy UTF-8 without the quotes (as a panic message shows it).
    Debug,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::Raw => "raw",
            Form::Sanitized => "sanitized (log::sanitize)",
            Form::Debug => "Debug ({:?})",
        }
    }
}

/// Every form of `secret` ([`Form`]), whole, in the order of [`Form`].
pub fn forms(secret: &[u8]) -> [(Form, Vec<u8>); 3] {
    let debug = format!("{:?}", String::from_utf8_lossy(secret)).into_bytes();
    let debug = debug[1..debug.len() - 1].to_vec();
    [
        (Form::Raw, secret.to_vec()),
        (Form::Sanitized, sanitize(secret).into_bytes()),
        (Form::Debug, debug),
    ]
}

/// One search key: the first [`KEY_LEN`] bytes of one or more forms of a secret (forms with
/// the same first bytes share a key, named after the first of them).
struct Key {
    bytes: Vec<u8>,
    secret: usize,
    form: Form,
    /// The whole forms that start with `bytes` (to mask as much of a leak as is there).
    whole: Vec<Vec<u8>>,
}

/// Finds secrets in a haystack, in every [`Form`], whole or by their first [`KEY_LEN`]
/// bytes. Keys are indexed by their first `min_len` bytes, so a scan costs one hash lookup
/// per byte whatever the number of secrets.
pub struct Matcher {
    /// The secrets searched for (those not skipped), by index.
    pub secrets: Vec<Vec<u8>>,
    /// How many secrets were shorter than `min_len` (not searched for).
    pub skipped: usize,
    min_len: usize,
    keys: Vec<Key>,
    index: HashMap<Vec<u8>, Vec<usize>>,
}

impl Matcher {
    /// Searches for every secret at least `min_len` (1 to [`KEY_LEN`]) bytes long.
    pub fn new(secrets: impl IntoIterator<Item = Vec<u8>>, min_len: usize) -> Matcher {
        assert!((1..=KEY_LEN).contains(&min_len), "min_len {min_len}");
        let mut m = Matcher {
            secrets: Vec::new(),
            skipped: 0,
            min_len,
            keys: Vec::new(),
            index: HashMap::new(),
        };
        for secret in secrets {
            if secret.len() < min_len {
                m.skipped += 1;
                continue;
            }
            let id = m.secrets.len();
            let first = m.keys.len();
            for (form, whole) in forms(&secret) {
                let bytes = whole[..whole.len().min(KEY_LEN)].to_vec();
                // No form is shorter than the raw secret, so every key has `min_len` bytes.
                match m.keys[first..].iter_mut().find(|k| k.bytes == bytes) {
                    Some(key) => key.whole.push(whole),
                    None => {
                        let head = bytes[..min_len].to_vec();
                        m.index.entry(head).or_default().push(m.keys.len());
                        m.keys.push(Key {
                            bytes,
                            secret: id,
                            form,
                            whole: vec![whole],
                        });
                    }
                }
            }
            m.secrets.push(secret);
        }
        m
    }

    /// `(position, key)` of every key found in `haystack`.
    fn hits<'a>(&'a self, haystack: &'a [u8]) -> impl Iterator<Item = (usize, &'a Key)> + 'a {
        haystack
            .windows(self.min_len)
            .enumerate()
            .flat_map(move |(at, head)| {
                self.index
                    .get(head)
                    .into_iter()
                    .flatten()
                    .map(move |&k| (at, &self.keys[k]))
            })
            .filter(move |(at, key)| haystack[*at..].starts_with(&key.bytes))
    }

    /// `(secret index, form)` of every secret found in `haystack`.
    pub fn find(&self, haystack: &[u8]) -> BTreeSet<(usize, Form)> {
        self.hits(haystack)
            .map(|(_, key)| (key.secret, key.form))
            .collect()
    }

    /// `haystack` with every secret found in it replaced by `<secret #N (L bytes)>`, as far
    /// as the leak goes (for a failure message that must not repeat the secret).
    pub fn mask(&self, haystack: &[u8]) -> Vec<u8> {
        let mut covered: Vec<Option<usize>> = vec![None; haystack.len()];
        for (at, key) in self.hits(haystack) {
            let rest = &haystack[at..];
            let len = key
                .whole
                .iter()
                .map(|whole| rest.iter().zip(whole).take_while(|(a, b)| a == b).count())
                .max()
                .unwrap_or(0);
            for slot in &mut covered[at..at + len] {
                slot.get_or_insert(key.secret);
            }
        }
        let mut out = Vec::with_capacity(haystack.len());
        let mut at = 0;
        while at < haystack.len() {
            match covered[at] {
                None => {
                    out.push(haystack[at]);
                    at += 1;
                }
                Some(secret) => {
                    let len = self.secrets[secret].len();
                    out.extend_from_slice(format!("<secret #{secret} ({len} bytes)>").as_bytes());
                    while at < haystack.len() && covered[at].is_some() {
                        at += 1;
                    }
                }
            }
        }
        out
    }
}
