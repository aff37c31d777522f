//! Entry points of the fuzz targets (`fuzz/fuzz_targets/`, run by `scripts/fuzz.sh`): each
//! takes arbitrary bytes, as they could come from outside the daemon, runs one parser on
//! them and checks what must hold for any input — no panic, no hang, and the parser's own
//! invariants (a decoded request re-encodes to the same bytes, a parsed `-O` address
//! prints and parses back to itself, ...). The tests below replay every checked-in seed
//! and every crash the fuzzer found (`fuzz/corpus/NAME/`, `fuzz/regressions/NAME/`) on
//! the stable toolchain, so a crash once fixed stays fixed without the fuzzer.
//!
//! Adding a target NAME (see `fuzz/README.md`): a function here and a row in [`TARGETS`];
//! `fuzz/fuzz_targets/NAME.rs` calling it, with its `[[bin]]` in `fuzz/Cargo.toml`; seeds
//! in `fuzz/corpus/NAME/`; and NAME in the list at the top of `scripts/fuzz.sh`.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::OnceLock;

use crate::log::{self, LogConfig};
use crate::mech::conf_file::{self, ConfFile};
use crate::mech::rimap::{self, Rimap, address};
use crate::protocol::dovecot::{self, sasl};
use crate::protocol::{self, Decoded, Reply};

/// A target's entry point.
pub type Target = fn(&[u8]);

/// Every target: its name (the file in `fuzz/fuzz_targets/`, the corpus directory) and
/// its entry point.
pub const TARGETS: &[(&str, Target)] = &[
    ("mux_codec", mux_codec),
    ("rimap_address", rimap_address),
    ("imap_responses", imap_responses),
    ("conf_file", conf_file),
    ("dovecot_lines", dovecot_lines),
];

/// Sends log lines nowhere (the targets run millions of inputs). Call once, first.
pub fn log_nowhere() {
    log::init(LogConfig {
        verbose: false,
        stderr: false,
        syslog: false,
    });
}

/// The mux request and reply codec, as the server decodes requests ([`decode_received`]:
/// `settled` says whether the client had sent nothing more). The first byte picks the
/// per-field limit (its two low bits) and `settled` (bit 2); the rest is what a client sent
/// so far. [`decode_request`], which does not know `settled`, is held to the same checks
/// and must agree with an unsettled `decode_received`.
///
/// [`decode_received`]: protocol::decode_received
/// [`decode_request`]: protocol::decode_request
pub fn mux_codec(data: &[u8]) {
    let Some((&control, buf)) = data.split_first() else {
        return;
    };
    let limit = match control % 4 {
        0 => 0,
        1 => usize::from(control),
        2 => protocol::DEFAULT_MAX_FIELD_LEN,
        _ => protocol::MAX_COUNTED_LEN,
    };
    let settled = control & 0b100 != 0;
    let received = protocol::decode_received(buf, limit, settled);
    check_decoded(buf, limit, Some(settled), &received);
    let plain = protocol::decode_request(buf, limit);
    check_decoded(buf, limit, None, &plain);
    if !settled {
        match (&plain, &received) {
            // A client address over the limit whose bytes may still be on their way.
            (
                Decoded::Rejected(protocol::Rejection::TooLong {
                    field: protocol::Field::ClientAddr,
                    ..
                }),
                Decoded::Incomplete,
            ) => {}
            _ => assert_eq!(
                plain, received,
                "decode_request and unsettled decode_received"
            ),
        }
    }
    // What a client reads back.
    if let Some(text) = protocol::decode_reply(buf) {
        assert!(text.len() + 2 <= buf.len());
        let _ = protocol::reply_is_ok(text);
    }
    let reply = Reply::no(String::from_utf8_lossy(buf));
    let encoded = reply.encode();
    let text = protocol::decode_reply(&encoded).expect("a whole reply");
    assert!(!protocol::reply_is_ok(text), "a NO reply reads as OK");
}

/// What a decoding of `buf` under `limit` must satisfy; `settled` as given to
/// `decode_received` (None: `decode_request`, which reads a four-field request only when
/// nothing follows it).
fn check_decoded(buf: &[u8], limit: usize, settled: Option<bool>, decoded: &Decoded) {
    match decoded {
        // Unsettled, an over-long client address (whose bytes are on their way) may fill
        // the largest request; otherwise "incomplete" is always below it.
        Decoded::Incomplete => assert!(
            buf.len() < protocol::max_request_len(limit)
                || (settled == Some(false) && buf.len() == protocol::max_request_len(limit)),
            "{} bytes and still incomplete under a limit of {limit} (settled {settled:?})",
            buf.len()
        ),
        Decoded::Rejected(protocol::Rejection::TooLong { len, limit: l, .. }) => {
            assert!(*len > *l && *l == limit, "rejected {len} under {l}");
        }
        Decoded::Rejected(other) => panic!("framing rejected with {other:?}"),
        Decoded::Complete { request, consumed } => {
            assert!(*consumed <= buf.len());
            // Bytes after a four-field request are ignored only once settled.
            assert!(
                request.client_addr.is_some() || *consumed == buf.len() || settled == Some(true),
                "{} of {} bytes make a four-field request (settled {settled:?})",
                consumed,
                buf.len()
            );
            let fields = [
                &request.login[..],
                request.password.as_bytes(),
                &request.service,
                &request.realm,
            ];
            assert!(fields.iter().all(|field| field.len() <= limit));
            let encoded = protocol::encode_request(
                fields[0],
                fields[1],
                fields[2],
                fields[3],
                request.client_addr.as_deref(),
            )
            .expect("decoded fields fit a counted string");
            assert_eq!(encoded.as_bytes(), &buf[..*consumed], "re-encoding differs");
            let _ = request.validate();
        }
    }
}

/// rimap's `-O SERVER` address and the `/etc/services` lookup: an address that parses
/// prints, in canonical form, to one that parses back to the same.
pub fn rimap_address(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The whole text as an address; as a services file, with its first word as the name.
    if let Ok(spec) = address::parse_server(text) {
        let port = match &spec.port {
            address::PortSpec::Number(n) => n.to_string(),
            address::PortSpec::Service(name) => name.clone(),
        };
        let scheme = if spec.implicit_tls { "imaps" } else { "imap" };
        let canonical = format!("{scheme}://{}:{port}", spec.host);
        let again = address::parse_server(&canonical)
            .unwrap_or_else(|e| panic!("{text:?} parsed, {canonical:?} did not: {e}"));
        assert_eq!(again, spec, "{text:?} and {canonical:?}");
        let _ = spec.host.tls_name();
    }
    if let Some(name) = text.split_whitespace().next() {
        let _ = address::service_port(text, name);
    }
}

/// rimap's handling of everything an IMAP server sends (greeting, untagged responses,
/// continuation requests, the tagged reply to LOGIN) through the real conversation code,
/// the server played back from memory. The first byte says how the bytes are split into
/// reads. Fail closed: `OK` only after the server's tagged `OK` to our LOGIN.
pub fn imap_responses(data: &[u8]) {
    static RIMAP: OnceLock<Rimap> = OnceLock::new();
    let Some((&piece, script)) = data.split_first() else {
        return;
    };
    let rimap = RIMAP.get_or_init(|| {
        Rimap::new(Some("127.0.0.1/143"), &rimap::Options::default()).expect("a valid rimap setup")
    });
    // A login with a quoted string, one that needs a literal.
    for (login, password) in [(&b"fuzz"[..], &b"pw"[..]), (b"fu\"zz", b"p\xc3\xa4ss")] {
        let reply = rimap
            .converse_with_script(script, usize::from(piece) + 1, login, password)
            .expect("valid credentials");
        if reply.is_ok() {
            let lower = script.to_ascii_lowercase();
            assert!(
                lower.windows(12).any(|w| w == b"saslauthd ok"),
                "OK without a tagged OK: {:?}",
                String::from_utf8_lossy(script)
            );
        }
    }
}

/// The `saslauthd.conf` parser: what it accepts prints back, one `key: value` line per
/// entry, to the same entries.
pub fn conf_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/saslauthd.conf");
    let Ok(conf) = ConfFile::parse(path, text) else {
        return;
    };
    let mut printed = String::new();
    let mut last_line = 0;
    for entry in &conf.entries {
        assert!(entry.line > last_line, "line numbers go up");
        last_line = entry.line;
        assert!(!entry.key.is_empty() && !entry.value.is_empty());
        assert!(
            entry
                .key
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-')),
            "key {:?}",
            entry.key
        );
        assert!(!entry.value.contains('\n') && !entry.value.starts_with([' ', '\t']));
        assert_eq!(conf.first(&entry.key).map(|e| &e.key), Some(&entry.key));
        assert!(conf.last(&entry.key).is_some_and(|e| e.line >= entry.line));
        let _ = conf_file::switch(&entry.value);
        let _ = conf.invalid(entry, "fuzz").to_string();
        printed.push_str(&format!("{}: {}\r\n", entry.key, entry.value));
    }
    let _ = conf.unknown_keys(|key| key.len() % 2 == 0);
    let again = ConfFile::parse(path, &printed).expect("printed entries parse");
    let pairs = |c: &ConfFile| -> Vec<(String, String)> {
        c.entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    };
    assert_eq!(pairs(&again), pairs(&conf));
}

/// The Dovecot authentication protocol (`src/protocol/dovecot.rs`): a client's bytes framed
/// into lines, each parsed as the handshake and the commands are, an `AUTH` or `CONT`
/// response decoded and taken through the SASL steps (PLAIN, LOGIN) as far as they go; the
/// client side's parser of server lines too. Framing never loses a byte or returns a line
/// with an LF, and escaping round-trips.
pub fn dovecot_lines(data: &[u8]) {
    let mut rest = data;
    let mut exchange: Option<sasl::Exchange> = None;
    loop {
        match dovecot::next_line(rest, dovecot::MAX_LINE) {
            dovecot::Line::Incomplete => {
                assert!(rest.len() < dovecot::MAX_LINE && !rest.contains(&b'\n'));
                return;
            }
            dovecot::Line::TooLong => {
                assert!(rest.len() >= dovecot::MAX_LINE);
                return;
            }
            dovecot::Line::Complete { line, consumed } => {
                assert!(consumed <= rest.len() && line.len() < consumed);
                assert!(!line.contains(&b'\n') && rest[consumed - 1] == b'\n');
                assert_eq!(dovecot::unescape(&dovecot::escape(line)), line);
                let _ = dovecot::parse_version(line);
                let _ = dovecot::parse_cpid(line);
                let _ = dovecot::parse_server_line(line);
                let step = match dovecot::parse_command(line) {
                    Ok(dovecot::Command::Auth(auth)) => {
                        let initial = match auth.initial_response(0) {
                            dovecot::InitialResponse::Absent => None,
                            dovecot::InitialResponse::Base64(text) => dovecot::decode_base64(text),
                        };
                        let _ = auth.initial_response(2);
                        Some(sasl::start(auth.mechanism, initial))
                    }
                    Ok(dovecot::Command::Cont { data, .. }) => {
                        match (exchange.take(), dovecot::decode_base64(data)) {
                            (Some(next), Some(response)) => Some(sasl::respond(next, response)),
                            _ => None,
                        }
                    }
                    Ok(dovecot::Command::Cancel { .. }) | Err(_) => None,
                };
                if let Some(sasl::Step::Challenge { next, .. }) = step {
                    exchange = Some(next);
                }
                rest = &rest[consumed..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    /// Every seed and every saved crash of every target, through its entry point.
    #[test]
    fn the_corpora_and_the_crashes_found_replay_cleanly() {
        for (name, target) in TARGETS {
            let mut replayed = 0;
            for kind in ["corpus", "regressions"] {
                let Ok(files) = std::fs::read_dir(fuzz_dir().join(kind).join(name)) else {
                    assert_ne!(kind, "corpus", "{name} has no seed corpus");
                    continue;
                };
                for file in files {
                    let path = file.unwrap().path();
                    let data = std::fs::read(&path).unwrap();
                    if std::panic::catch_unwind(|| target(&data)).is_err() {
                        panic!("{} fails", path.display());
                    }
                    replayed += 1;
                }
            }
            assert!(replayed > 0, "{name}: nothing to replay");
        }
    }

    #[test]
    fn every_target_is_built_and_run_by_the_script() {
        let script =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fuzz.sh"))
                .unwrap();
        let cargo = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for (name, _) in TARGETS {
            assert!(
                fuzz_dir().join(format!("fuzz_targets/{name}.rs")).exists(),
                "{name}: no fuzz_targets/{name}.rs"
            );
            assert!(
                cargo.contains(&format!("name = \"{name}\"")),
                "{name}: no [[bin]] in fuzz/Cargo.toml"
            );
            assert!(
                script.lines().any(
                    |line| line.trim() == *name || line.trim().starts_with(&format!("{name} "))
                ),
                "{name}: not in the list of scripts/fuzz.sh"
            );
        }
    }

    #[test]
    fn the_imap_conversation_fails_closed() {
        let rimap = Rimap::new(Some("127.0.0.1/143"), &rimap::Options::default()).unwrap();
        let run = |script: &[u8], piece| {
            rimap
                .converse_with_script(script, piece, b"fuzz", b"pw")
                .unwrap()
        };
        for piece in [1, 3, 1000] {
            let ok = run(b"* OK ready\r\nsaslauthd OK done\r\n", piece);
            assert_eq!(ok, Reply::Ok(Some(rimap::text::OK.into())), "piece {piece}");
            let no = run(b"* OK ready\r\nsaslauthd NO bad\r\n", piece);
            assert_eq!(no, Reply::no(rimap::text::REJECTED));
            let closed = run(b"* OK ready\r\n", piece);
            assert!(!closed.is_ok());
            let garbage = run(b"* OK ready\r\n\x00\x01garbage\r\nsaslauthd OK\r\n", piece);
            assert!(!garbage.is_ok());
            let other_tag = run(b"* OK ready\r\nother OK done\r\n", piece);
            assert!(!other_tag.is_ok());
            // imap-proto 0.17.0 panics on this one; the transport stops it first.
            let bracket = run(b"* OK [ALERT]\xc3\xa9 x\r\nsaslauthd OK\r\n", piece);
            assert_eq!(bracket, Reply::no(rimap::text::SYNC_ERROR), "piece {piece}");
        }
    }
}
