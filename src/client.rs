//! `testsaslauthd`: send one request per repetition and print upstream's exact lines.
//!
//! Output is byte-for-byte upstream's: `N: OK "Success."` or `N: NO "authentication
//! failed"` for any other reply; on a transport error, `N: ` stays without a newline and
//! the reason goes to stderr. Exit status is that of the last repetition: 0 for OK, 255
//! for NO or a transport error, 1 for a usage error. Beyond upstream: every socket step has
//! a deadline, the password can come from a prompt or stdin instead of the command line,
//! `--show-reply` prints the server's reply text, and `--dovecot` speaks the Dovecot
//! authentication protocol instead (see [`dovecot`]), to check the socket Postfix's
//! `smtpd_sasl_type = dovecot` uses the way upstream's client checks the mux socket.
#![forbid(unsafe_code)]

mod dovecot;

use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};

use crate::config::{DEFAULT_RUN_DIR, SOCKET_NAME};
use crate::protocol::dovecot::{Endpoint, Mechanism};
use crate::protocol::{MAX_COUNTED_LEN, decode_reply, encode_request, reply_is_ok};
use crate::secret::Password;

const USAGE: &str = "usage: testsaslauthd -u username -p password
              [-r realm] [-s servicename] [-a clientaddr]
              [-f socket path] [-R repeatnum] [--show-reply] [--timeout SECS]
              [--dovecot [--dovecot-mech PLAIN|LOGIN]]";

#[derive(Parser, Debug)]
#[command(
    name = "testsaslauthd",
    about = "Test client for saslauthd (saslauthd-rs)",
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true
)]
struct Cli {
    /// Login to verify
    #[arg(short = 'u', value_name = "USER")]
    user: Option<OsString>,
    /// Password (prompted for, or read from stdin, when absent)
    #[arg(short = 'p', value_name = "PASSWORD")]
    password: Option<OsString>,
    /// Realm
    #[arg(short = 'r', value_name = "REALM", default_value = "")]
    realm: OsString,
    /// Service name
    #[arg(short = 's', value_name = "SERVICE", default_value = "imap")]
    service: OsString,
    /// Client address sent as the fifth field (`ip;port`)
    #[arg(short = 'a', value_name = "CLIENTADDR")]
    client_addr: Option<OsString>,
    /// Full path of the saslauthd socket (with --dovecot: a path or inet:ADDRESS:PORT)
    #[arg(short = 'f', value_name = "SOCKET")]
    socket: Option<PathBuf>,
    /// Repeat the request this many times, one connection each
    #[arg(
        short = 'R',
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    repeat: i64,
    /// Also print the server's reply text after each result line
    #[arg(long = "show-reply")]
    show_reply: bool,
    /// Deadline in seconds for connecting, sending and receiving the reply
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Speak the Dovecot authentication protocol (the socket of saslauthd's
    /// --dovecot-socket, or Dovecot's auth socket) instead of saslauthd's; -r appends
    /// @REALM to the login, -a sends the address as the client's (rip=)
    #[arg(long = "dovecot")]
    dovecot: bool,
    /// With --dovecot: the SASL mechanism, PLAIN (initial response) or LOGIN
    #[arg(
        long = "dovecot-mech",
        value_name = "MECH",
        default_value = "PLAIN",
        requires = "dovecot"
    )]
    dovecot_mech: String,
    /// Show this help on stderr and exit
    #[arg(short = 'h')]
    help: bool,
    /// Show this help on stdout and exit
    #[arg(long = "help")]
    long_help: bool,
}

/// `testsaslauthd`'s entry point.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(std::env::args_os()) {
        Ok(cli) if !cli.help && !cli.long_help => cli,
        Ok(cli) => {
            use clap::CommandFactory;
            let help = Cli::command().render_help();
            if cli.long_help {
                print!("{help}");
            } else {
                eprint!("{help}");
            }
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let text = error.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("testsaslauthd: {}", first.trim_start_matches("error: "));
            eprintln!("{USAGE}");
            return ExitCode::from(1);
        }
    };
    let Some(user) = cli.user.as_ref() else {
        eprintln!("{USAGE}");
        return ExitCode::from(1);
    };
    let password = match &cli.password {
        Some(password) => Password::new(password.as_encoded_bytes().to_vec()),
        None => match read_password() {
            Ok(password) => password,
            Err(error) => {
                eprintln!("testsaslauthd: cannot read the password: {error}");
                return ExitCode::from(1);
            }
        },
    };
    if cli.dovecot {
        return dovecot_main(&cli, user.as_encoded_bytes(), &password);
    }
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(|| Path::new(DEFAULT_RUN_DIR).join(SOCKET_NAME));
    let request = encode_request(
        user.as_encoded_bytes(),
        password.as_bytes(),
        cli.service.as_encoded_bytes(),
        cli.realm.as_encoded_bytes(),
        cli.client_addr.as_ref().map(|a| a.as_encoded_bytes()),
    );
    let request = match request {
        Ok(request) => request,
        Err(field) => {
            eprintln!("testsaslauthd: {field} longer than {MAX_COUNTED_LEN} bytes");
            return ExitCode::from(1);
        }
    };
    let timeout = Duration::from_secs(cli.timeout);
    repeat(&cli, || {
        exchange(&socket, request.as_bytes(), timeout).map(|reply| (reply_is_ok(&reply), reply))
    })
}

/// `--dovecot`: the same loop and output over the Dovecot protocol.
fn dovecot_main(cli: &Cli, user: &[u8], password: &Password) -> ExitCode {
    let Some(socket) = &cli.socket else {
        eprintln!("testsaslauthd: --dovecot needs -f SOCKET (a path or inet:ADDRESS:PORT)");
        return ExitCode::from(1);
    };
    let endpoint = match Endpoint::parse(&socket.to_string_lossy()) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            eprintln!("testsaslauthd: -f: {error}");
            return ExitCode::from(1);
        }
    };
    let Some(mechanism) = Mechanism::from_name(cli.dovecot_mech.as_bytes()) else {
        eprintln!("testsaslauthd: --dovecot-mech: PLAIN or LOGIN");
        return ExitCode::from(1);
    };
    // libsasl's login for a realm: user@realm.
    let mut login = user.to_vec();
    if !cli.realm.is_empty() {
        login.push(b'@');
        login.extend_from_slice(cli.realm.as_encoded_bytes());
    }
    let remote_ip = match &cli.client_addr {
        None => None,
        Some(addr) => {
            let addr = addr.to_string_lossy();
            let ip = addr.split(';').next().unwrap_or_default();
            match ip.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    eprintln!("testsaslauthd: -a: {ip:?} is not an IP address");
                    return ExitCode::from(1);
                }
            }
        }
    };
    let attempt = dovecot::Attempt {
        endpoint: &endpoint,
        mechanism,
        login: &login,
        password: password.as_bytes(),
        service: cli.service.as_encoded_bytes(),
        remote_ip,
        timeout: Duration::from_secs(cli.timeout),
    };
    repeat(cli, || {
        dovecot::authenticate(&attempt).map(|verdict| (verdict.ok, verdict.reply))
    })
}

/// Runs `attempt` `-R` times, printing upstream's lines; the exit status of the last.
fn repeat(cli: &Cli, mut attempt: impl FnMut() -> Result<(bool, Vec<u8>), String>) -> ExitCode {
    // Upstream: -R 0 means once, a negative count means no attempt at all.
    let repeat = if cli.repeat == 0 { 1 } else { cli.repeat };
    let mut status = ExitCode::SUCCESS;
    let mut stdout = io::stdout().lock();
    for i in 0..repeat.max(0) {
        let _ = write!(stdout, "{i}: ");
        let _ = stdout.flush();
        status = match attempt() {
            Ok((ok, reply)) => {
                let verdict = if ok {
                    "OK \"Success.\""
                } else {
                    "NO \"authentication failed\""
                };
                let _ = writeln!(stdout, "{verdict}");
                if cli.show_reply {
                    let text = String::from_utf8_lossy(&reply);
                    let _ = writeln!(stdout, "{i}: reply {:?}", text.as_ref());
                }
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(255)
                }
            }
            Err(error) => {
                let _ = stdout.flush();
                eprintln!("{error}");
                ExitCode::from(255)
            }
        };
    }
    let _ = stdout.flush();
    status
}

/// One connection: send the request, read the counted reply. Errors carry upstream's
/// wording (`connect() : <reason>`, `size read failed`, `bad response from saslauthd`,
/// ...); a reply shorter than two bytes is a transport error, as libsasl treats it.
/// `connect` needs no deadline: on a Unix socket it succeeds at once (queued in the
/// backlog) or fails at once; sending and receiving have one.
fn exchange(socket: &Path, request: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("connect() : {}", strip(&e)))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket() : {}", strip(&e)))?;
    stream
        .write_all(request)
        .map_err(|e| failure("write failed", &e))?;
    let mut prefix = [0u8; 2];
    stream
        .read_exact(&mut prefix)
        .map_err(|e| failure("size read failed", &e))?;
    let len = usize::from(u16::from_be_bytes(prefix));
    if len < 2 {
        return Err("bad response from saslauthd".to_string());
    }
    let mut reply = prefix.to_vec();
    reply.resize(2 + len, 0);
    stream
        .read_exact(&mut reply[2..])
        .map_err(|e| failure("read failed", &e))?;
    Ok(decode_reply(&reply).unwrap_or_default().to_vec())
}

/// Upstream's message; the cause is added only when it says more than "closed early".
fn failure(what: &str, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::UnexpectedEof => what.to_string(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!("{what}: timed out"),
        _ => format!("{what}: {}", strip(error)),
    }
}

/// `io::Error`'s text without the "(os error N)" suffix, like perror.
fn strip(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_string(),
        None => text,
    }
}

/// The password from the terminal (echo off) or, when stdin is not a terminal, one line
/// of stdin.
fn read_password() -> io::Result<Password> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return read_line(&mut stdin.lock());
    }
    eprint!("Password: ");
    let saved = tcgetattr(&stdin).map_err(io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(io::Error::from)?;
    let password = read_line(&mut stdin.lock());
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    password
}

/// One line without its line end, read byte by byte into a wiping buffer.
fn read_line(input: &mut impl BufRead) -> io::Result<Password> {
    let mut password = Password::default();
    let mut byte = [0u8; 1];
    while input.read(&mut byte)? == 1 && byte[0] != b'\n' {
        password.extend_from_slice(&byte);
    }
    if password.as_bytes().last() == Some(&b'\r') {
        password.truncate(password.len() - 1);
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_line_strips_line_ends() {
        for input in [
            &b"secret\n"[..],
            b"secret\r\n",
            b"secret",
            b"secret\nnext\n",
        ] {
            let password = read_line(&mut io::Cursor::new(input)).unwrap();
            assert_eq!(password.as_bytes(), b"secret");
        }
    }

    #[test]
    fn strip_removes_the_os_error_suffix() {
        let error = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(strip(&error), "No such file or directory");
    }
}
