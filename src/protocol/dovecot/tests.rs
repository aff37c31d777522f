//! Unit and property tests of the Dovecot protocol codec. The expected bytes are Dovecot
//! 2.3.19's, as measured (reference notes, `dovecot-auth.md`).

use super::*;
use proptest::prelude::*;

fn complete(buf: &[u8]) -> (&[u8], usize) {
    match next_line(buf, MAX_LINE) {
        Line::Complete { line, consumed } => (line, consumed),
        other => panic!("expected a line in {buf:?}, got {other:?}"),
    }
}

fn auth(line: &[u8]) -> AuthCommand {
    match parse_command(line) {
        Ok(Command::Auth(auth)) => auth,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
    }
}

#[test]
fn lines_end_at_lf_and_lose_one_cr() {
    assert_eq!(
        complete(b"VERSION\t1\t0\nCPID"),
        (&b"VERSION\t1\t0"[..], 12)
    );
    assert_eq!(complete(b"DONE\r\n"), (&b"DONE"[..], 6));
    assert_eq!(complete(b"\n"), (&b""[..], 1));
    assert_eq!(complete(b"a\r\r\n"), (&b"a\r"[..], 4));
    assert_eq!(next_line(b"AUTH\t1", MAX_LINE), Line::Incomplete);
    assert_eq!(next_line(b"", MAX_LINE), Line::Incomplete);
}

#[test]
fn the_line_limit_counts_the_lf() {
    // Dovecot serves a 16,067-byte line and closes on a 17,067-byte one.
    let mut line = vec![b'x'; MAX_LINE - 1];
    line.push(b'\n');
    assert_eq!(complete(&line).1, MAX_LINE);
    let long = vec![b'x'; MAX_LINE];
    assert_eq!(next_line(&long, MAX_LINE), Line::TooLong);
    assert_eq!(next_line(&long[..MAX_LINE - 1], MAX_LINE), Line::Incomplete);
    let mut over = vec![b'x'; MAX_LINE];
    over.push(b'\n');
    assert_eq!(next_line(&over, MAX_LINE), Line::TooLong);
}

#[test]
fn escaping_matches_dovecot() {
    // The measured reply for the LOGIN username `cm<TAB>p<0x01>y<CR><LF>z`.
    assert_eq!(
        fail(8, Some(b"cm\tp\x01y\r\nz"), None, None),
        b"FAIL\t8\tuser=cm\x01tp\x011y\x01r\x01nz\n"
    );
    assert_eq!(escape(b"a\0b"), b"a\x010b");
    assert_eq!(unescape(b"a\x010b\x01t\x01x\x01"), b"a\0b\tx");
    assert_eq!(unescape(b"plain"), b"plain");
}

#[test]
fn handshake_is_dovecots_byte_for_byte() {
    let cookie = [
        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
        0xff,
    ];
    assert_eq!(
        handshake(&Mechanism::ALL, 4242, 7, &cookie),
        b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n\
          SPID\t4242\nCUID\t7\nCOOKIE\t0123456789abcdef00112233445566ff\nDONE\n"
    );
}

#[test]
fn version_and_cpid_follow_dovecots_rules() {
    assert_eq!(parse_version(b"VERSION\t1\t0"), Ok(0));
    assert_eq!(parse_version(b"VERSION\t1\t2"), Ok(2));
    assert_eq!(parse_version(b"VERSION\t1\t99"), Ok(99));
    assert_eq!(
        parse_version(b"VERSION\t2\t0"),
        Err(ProtocolError::IncompatibleVersion(2))
    );
    for bad in [
        &b"VERSION\t1"[..],
        b"VERSION\t1\t",
        b"VERSION\t\t0",
        b"VERSION\t1\t0\t",
        b"VERSION\t1\t-1",
        b"VERSION\t1 \t0",
        b"version\t1\t0",
        b"AUTH\t1\tPLAIN\tservice=smtp",
        b"",
    ] {
        assert_eq!(
            parse_version(bad),
            Err(ProtocolError::BadVersion),
            "{bad:?}"
        );
    }
    assert_eq!(parse_cpid(b"CPID\t1234"), Ok(1234));
    for bad in [&b"CPID\t0"[..], b"CPID\t", b"CPID\tx", b"CPID", b""] {
        assert_eq!(parse_cpid(bad), Err(ProtocolError::BadCpid), "{bad:?}");
    }
}

#[test]
fn postfix_and_exim_auth_lines_parse() {
    let postfix = auth(
        b"AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=127.0.0.1\tresp=AGNtcHkAcHc=",
    );
    assert_eq!(postfix.id, 1);
    assert_eq!(postfix.mechanism, Mechanism::Plain);
    assert_eq!(postfix.service, b"smtp");
    assert_eq!(postfix.remote_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(postfix.local_ip, Some("127.0.0.1".parse().unwrap()));
    assert!(!postfix.secured);
    assert_eq!(
        postfix.initial_response(0),
        InitialResponse::Base64(b"AGNtcHkAcHc=")
    );
    let exim = auth(b"AUTH\t1\tLOGIN\tservice=smtp\tsecured\trip=::1\tlip=::1\tnologin\tresp=");
    assert_eq!(exim.mechanism, Mechanism::Login);
    assert!(exim.secured);
    assert_eq!(exim.remote_ip, Some("::1".parse().unwrap()));
    // Exim always sends resp=, empty without an initial response.
    assert_eq!(exim.initial_response(0), InitialResponse::Absent);
}

#[test]
fn initial_response_rules_depend_on_the_client_version() {
    let absent = auth(b"AUTH\t1\tPLAIN\tservice=smtp");
    let empty = auth(b"AUTH\t1\tPLAIN\tservice=smtp\tresp=");
    let equals = auth(b"AUTH\t1\tPLAIN\tservice=smtp\tresp==");
    for minor in [0, 1, 2, 3] {
        assert_eq!(absent.initial_response(minor), InitialResponse::Absent);
        assert_eq!(equals.initial_response(minor), InitialResponse::Base64(b""));
    }
    assert_eq!(empty.initial_response(1), InitialResponse::Absent);
    assert_eq!(empty.initial_response(2), InitialResponse::Base64(b""));
}

#[test]
fn auth_parameters() {
    // Ids: 007 is 7; the mechanism is case-insensitive; unknown parameters are ignored;
    // an unparsable rip is no rip; fields are unescaped.
    let a = auth(b"AUTH\t007\tplain\tservice=sm\x01ttp\tfoo=bar\tbare\trip=nonsense\t\tresp=QQ==");
    assert_eq!(a.id, 7);
    assert_eq!(a.mechanism, Mechanism::Plain);
    assert_eq!(a.service, b"sm\ttp");
    assert_eq!(a.remote_ip, None);
    assert_eq!(
        a.response.as_ref().map(Password::as_bytes),
        Some(&b"QQ=="[..])
    );
    // An empty service is a service.
    assert_eq!(auth(b"AUTH\t4294967295\tLOGIN\tservice=").service, b"");
}

#[test]
fn broken_commands_are_protocol_errors() {
    let cases: &[(&[u8], ProtocolError)] = &[
        (b"AUTH\t1", ProtocolError::BadAuth),
        (b"AUTH\t0\tPLAIN\tservice=smtp", ProtocolError::BadAuth),
        (b"AUTH\t-1\tPLAIN\tservice=smtp", ProtocolError::BadAuth),
        (b"AUTH\t+1\tPLAIN\tservice=smtp", ProtocolError::BadAuth),
        (
            b"AUTH\t4294967296\tPLAIN\tservice=smtp",
            ProtocolError::BadAuth,
        ),
        (b"AUTH\tx\tPLAIN\tservice=smtp", ProtocolError::BadAuth),
        (
            b"AUTH\t1\tCRAM-MD5\tservice=smtp",
            ProtocolError::UnknownMechanism("CRAM-MD5".into()),
        ),
        (b"AUTH\t1\tPLAIN", ProtocolError::MissingService),
        (
            b"AUTH\t1\tPLAIN\trip=1.2.3.4",
            ProtocolError::MissingService,
        ),
        (
            b"AUTH\t1\tPLAIN\tservice=smtp\tresp=QQ==\trip=1.2.3.4",
            ProtocolError::ParameterAfterResp,
        ),
        (b"CONT\t1", ProtocolError::BadCont),
        (b"CONT\tx\tQQ==", ProtocolError::BadCont),
        (b"CONT\t\tQQ==", ProtocolError::BadCont),
        (b"CANCEL\tx", ProtocolError::BadCancel),
        (b"CANCEL\t", ProtocolError::BadCancel),
        (b"CANCEL", ProtocolError::UnknownCommand),
        (b"CONT", ProtocolError::UnknownCommand),
        (
            b"auth\t1\tPLAIN\tservice=smtp",
            ProtocolError::UnknownCommand,
        ),
        (b"", ProtocolError::UnknownCommand),
        (b"VERSION\t1\t0", ProtocolError::UnknownCommand),
    ];
    for (line, error) in cases {
        assert_eq!(parse_command(line).as_ref(), Err(error), "{line:?}");
    }
}

#[test]
fn cont_and_cancel() {
    assert_eq!(
        parse_command(b"CONT\t3\tdXNlcg=="),
        Ok(Command::Cont {
            id: 3,
            data: b"dXNlcg=="
        })
    );
    assert_eq!(
        parse_command(b"CONT\t0\t"),
        Ok(Command::Cont { id: 0, data: b"" })
    );
    assert_eq!(parse_command(b"CANCEL\t9"), Ok(Command::Cancel { id: 9 }));
}

/// Debug output (a panic message, a log line) never shows base64 that may be a password:
/// a `CONT`'s data and an initial response show their length only.
#[test]
fn debug_output_hides_base64_credentials() {
    let cont = parse_command(b"CONT\t3\tc2VjcmV0").expect("CONT");
    assert_eq!(format!("{cont:?}"), "Cont { id: 3, data: <8 bytes> }");
    assert_eq!(
        format!("{:?}", Command::Cancel { id: 9 }),
        "Cancel { id: 9 }"
    );
    let auth = parse_command(b"AUTH\t1\tPLAIN\tservice=smtp\tresp=c2VjcmV0").expect("AUTH");
    let shown = format!("{auth:?}");
    assert!(shown.starts_with("Auth(AuthCommand { id: 1,"), "{shown}");
    let Command::Auth(auth) = auth else {
        panic!("{shown}")
    };
    assert!(!shown.contains("c2VjcmV0"), "{shown}");
    let response = auth.initial_response(0);
    assert_eq!(format!("{response:?}"), "Base64(<8 bytes>)");
    assert_eq!(format!("{:?}", InitialResponse::Absent), "Absent");
}

#[test]
fn base64_is_decoded_like_dovecot() {
    let decoded = |text: &[u8]| decode_base64(text).map(|p| p.as_bytes().to_vec());
    assert_eq!(decoded(b"AGFsaWNlAHB3"), Some(b"\0alice\0pw".to_vec()));
    assert_eq!(decoded(b""), Some(Vec::new()));
    assert_eq!(decoded(b"QQ=="), Some(b"A".to_vec()));
    // Whitespace anywhere is skipped; bits after the last byte are ignored.
    assert_eq!(decoded(b" Q Q\t=\r\n= "), Some(b"A".to_vec()));
    assert_eq!(decoded(b"QR=="), Some(b"A".to_vec()));
    // Bad characters, missing or extra padding, data after the padding.
    for bad in [
        &b"QQ"[..],
        b"QQ=",
        b"QQ===",
        b"Q",
        b"QUJD=",
        b"QQ==QQ==",
        b"Q-==",
        b"QQ==.",
        b"=",
        b"\0",
    ] {
        assert_eq!(decoded(bad), None, "{bad:?}");
    }
}

#[test]
fn replies() {
    assert_eq!(
        ok(1, b"alice@example.org"),
        b"OK\t1\tuser=alice@example.org\n"
    );
    assert_eq!(
        fail(2, Some(b"alice"), None, None),
        b"FAIL\t2\tuser=alice\n"
    );
    assert_eq!(
        fail(
            3,
            None,
            Some(FailCode::InvalidBase64),
            Some(text::INVALID_INITIAL_BASE64)
        ),
        b"FAIL\t3\tcode=invalid_base64\treason=Invalid base64 data in initial response\n"
    );
    assert_eq!(
        fail(4, Some(b"bob"), Some(FailCode::TempFail), None),
        b"FAIL\t4\tuser=bob\tcode=temp_fail\n"
    );
    assert_eq!(cont(5, b""), b"CONT\t5\t\n");
    assert_eq!(cont(5, b"Username:"), b"CONT\t5\tVXNlcm5hbWU6\n");
    assert_eq!(cont(5, b"Password:"), b"CONT\t5\tUGFzc3dvcmQ6\n");
}

#[test]
fn client_side_lines() {
    assert_eq!(client_handshake(77), b"VERSION\t1\t0\nCPID\t77\n");
    let line = auth_line(
        1,
        Mechanism::Plain,
        b"smtp",
        Some("127.0.0.1".parse().unwrap()),
        Some("::1".parse().unwrap()),
        false,
        Some(b"\0cmpy\0pw"),
    );
    assert_eq!(
        line.as_bytes(),
        b"AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=::1\tresp=AGNtcHkAcHc=\n"
    );
    let login = auth_line(2, Mechanism::Login, b"imap", None, None, true, None);
    assert_eq!(
        login.as_bytes(),
        b"AUTH\t2\tLOGIN\tservice=imap\tnologin\tsecured\n"
    );
    assert_eq!(cont_line(2, b"alice").as_bytes(), b"CONT\t2\tYWxpY2U=\n");
}

#[test]
fn server_lines_as_a_client_reads_them() {
    assert_eq!(
        parse_server_line(b"VERSION\t1\t2"),
        Some(ServerLine::Version { major: 1, minor: 2 })
    );
    assert_eq!(
        parse_server_line(b"MECH\tPLAIN\tplaintext"),
        Some(ServerLine::Mech {
            name: b"PLAIN".to_vec(),
            flags: vec![b"plaintext".to_vec()]
        })
    );
    assert_eq!(parse_server_line(b"DONE"), Some(ServerLine::Done));
    assert_eq!(parse_server_line(b"SPID\t1"), Some(ServerLine::Spid));
    assert_eq!(parse_server_line(b"NEWTHING\tx"), Some(ServerLine::Other));
    let Some(ServerLine::Ok { id: 6, fields }) =
        parse_server_line(b"OK\t6\tuser=alice\t\toriginal_user=alice@example.org")
    else {
        panic!("OK line")
    };
    assert_eq!(field_value(&fields, "user"), Some(&b"alice"[..]));
    assert_eq!(
        field_value(&fields, "original_user"),
        Some(&b"alice@example.org"[..])
    );
    assert_eq!(field_value(&fields, "reason"), None);
    let Some(ServerLine::Fail { id: 8, fields }) =
        parse_server_line(b"FAIL\t8\tuser=cm\x01tp\tcode=user_disabled")
    else {
        panic!("FAIL line")
    };
    assert_eq!(field_value(&fields, "user"), Some(&b"cm\tp"[..]));
    assert_eq!(
        parse_server_line(b"CONT\t1\tVXNlcm5hbWU6"),
        Some(ServerLine::Cont {
            id: 1,
            challenge: Some(b"Username:".to_vec())
        })
    );
    assert_eq!(
        parse_server_line(b"CONT\t1\t"),
        Some(ServerLine::Cont {
            id: 1,
            challenge: Some(Vec::new())
        })
    );
    assert_eq!(parse_server_line(b"OK"), None);
    assert_eq!(parse_server_line(b"FAIL\tx"), None);
}

#[test]
fn protocol_errors_never_quote_the_line() {
    let secret = b"AUTH\t1\tPLAIN\tservice=smtp\tresp=c2VjcmV0\tafter";
    let error = parse_command(secret).unwrap_err();
    assert!(!error.to_string().contains("c2VjcmV0"), "{error}");
    // An unknown mechanism's name is logged, sanitised.
    let error = parse_command(b"AUTH\t1\tX\x01n\tservice=smtp").unwrap_err();
    assert_eq!(
        error.to_string(),
        "unsupported authentication mechanism X\\x0a"
    );
}

#[test]
fn endpoints_in_postfix_syntax() {
    let unix = |p: &str| Ok(Endpoint::Unix(p.into()));
    let tcp = |a: &str| Ok(Endpoint::Tcp(a.parse().unwrap()));
    assert_eq!(
        Endpoint::parse("/var/spool/postfix/private/auth"),
        unix("/var/spool/postfix/private/auth")
    );
    assert_eq!(Endpoint::parse("unix:private/auth"), unix("private/auth"));
    assert_eq!(
        Endpoint::parse("inet:127.0.0.1:12345"),
        tcp("127.0.0.1:12345")
    );
    assert_eq!(Endpoint::parse("inet:[::1]:12345"), tcp("[::1]:12345"));
    assert_eq!(Endpoint::parse("inet:::1:12345"), tcp("[::1]:12345"));
    for bad in [
        "",
        "unix:",
        "inet:127.0.0.1",
        "inet:localhost:25",
        "inet:127.0.0.1:0",
        "inet:1.2.3.4:x",
    ] {
        assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        Endpoint::parse("inet:[::1]:25").unwrap().to_string(),
        "inet:[::1]:25"
    );
}

// ----- properties ----------------------------------------------------------------------

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

/// Bytes that look like protocol lines more often than random ones do.
fn protocolish(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"AUTH\t".to_vec()),
        Just(b"CONT\t".to_vec()),
        Just(b"CANCEL\t".to_vec()),
        Just(b"VERSION\t1\t".to_vec()),
        Just(b"CPID\t".to_vec()),
        Just(b"PLAIN\t".to_vec()),
        Just(b"service=smtp\t".to_vec()),
        Just(b"resp=".to_vec()),
        Just(b"rip=".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(vec![ESCAPE]),
        Just(b"=".to_vec()),
        "[0-9]{1,11}".prop_map(String::into_bytes),
        "[A-Za-z0-9+/=]{0,12}".prop_map(String::into_bytes),
        bytes(6),
    ];
    proptest::collection::vec(piece, 0..max).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn framing_never_reads_past_a_line(buf in protocolish(40), max in 1usize..64) {
        match next_line(&buf, max) {
            Line::Complete { line, consumed } => {
                // The line is a prefix of the buffer, ends at the first LF, within max.
                prop_assert!(consumed <= buf.len() && consumed <= max);
                prop_assert_eq!(buf[consumed - 1], b'\n');
                prop_assert!(!buf[..consumed - 1].contains(&b'\n'));
                prop_assert!(line.len() == consumed - 1 || line.len() == consumed - 2);
                prop_assert_eq!(line, &buf[..line.len()]);
                // What follows the line never changes it.
                let mut longer = buf[..consumed].to_vec();
                longer.extend_from_slice(b"AUTH\t1\tPLAIN\n");
                prop_assert_eq!(next_line(&longer, max), Line::Complete { line, consumed });
            }
            Line::Incomplete => {
                prop_assert!(buf.len() < max && !buf.contains(&b'\n'));
            }
            Line::TooLong => {
                prop_assert!(buf.len() >= max && !buf[..max].contains(&b'\n'));
            }
        }
    }

    #[test]
    fn parsers_never_panic_and_depend_only_on_their_line(line in protocolish(30)) {
        // A line as framing hands it over: no LF, no CR at its end (framing drops one).
        let mut line: Vec<u8> = line.into_iter().filter(|&b| b != b'\n').collect();
        while line.last() == Some(&b'\r') {
            line.pop();
        }
        let _ = parse_version(&line);
        let _ = parse_cpid(&line);
        let _ = parse_server_line(&line);
        let first = format!("{:?}", parse_command(&line));
        // Parsing the same line inside a bigger buffer gives the same result.
        let mut framed = line.clone();
        framed.extend_from_slice(b"\nCANCEL\t1\n");
        if let Line::Complete { line: again, .. } = next_line(&framed, usize::MAX) {
            let again = again.to_vec();
            prop_assert_eq!(format!("{:?}", parse_command(&again)), first);
        }
    }

    #[test]
    fn random_bytes_never_panic(line in bytes(200)) {
        let _ = parse_command(&line);
        let _ = parse_version(&line);
        let _ = parse_server_line(&line);
        let _ = decode_base64(&line);
        let _ = unescape(&line);
    }

    #[test]
    fn escaping_round_trips_and_hides_separators(value in bytes(64)) {
        let escaped = escape(&value);
        prop_assert!(!escaped.iter().any(|b| matches!(b, b'\t' | b'\n' | b'\r' | 0)));
        prop_assert_eq!(unescape(&escaped), value);
    }

    #[test]
    fn base64_round_trips_with_whitespace_anywhere(
        data in bytes(64),
        spaces in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..4), 0..6),
    ) {
        let mut text = encode_base64(&data);
        for (at, which) in spaces {
            let at = at.index(text.len() + 1);
            text.insert(at, [b' ', b'\t', b'\r', b'\n'][which]);
        }
        let decoded = decode_base64(&text).map(|p| p.as_bytes().to_vec());
        prop_assert_eq!(decoded, Some(data));
    }

    #[test]
    fn replies_are_one_line_each(id in any::<u32>(), user in bytes(40), reason in ".{0,20}") {
        for reply in [
            ok(id, &user),
            fail(id, Some(&user), Some(FailCode::TempFail), Some(&reason)),
            cont(id, &user),
        ] {
            prop_assert_eq!(reply.iter().filter(|&&b| b == b'\n').count(), 1);
            prop_assert_eq!(reply.last(), Some(&b'\n'));
        }
        // And a client reads back what the server meant.
        let line = ok(id, &user);
        match parse_server_line(&line[..line.len() - 1]) {
            Some(ServerLine::Ok { id: got, fields }) => {
                prop_assert_eq!(got, id);
                prop_assert_eq!(field_value(&fields, "user"), Some(&user[..]));
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn auth_lines_round_trip(
        id in 1u32..,
        service in bytes(20),
        response in proptest::option::of(bytes(80)),
        login in any::<bool>(),
    ) {
        let mechanism = if login { Mechanism::Login } else { Mechanism::Plain };
        let line = auth_line(id, mechanism, &service, None, Some("192.0.2.1".parse().unwrap()),
                             false, response.as_deref());
        let text = &line.as_bytes()[..line.len() - 1];
        let parsed = match parse_command(text) {
            Ok(Command::Auth(auth)) => auth,
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        };
        prop_assert_eq!(parsed.id, id);
        prop_assert_eq!(parsed.mechanism, mechanism);
        prop_assert_eq!(&parsed.service, &service);
        prop_assert_eq!(parsed.remote_ip, Some("192.0.2.1".parse().unwrap()));
        let decoded = match parsed.initial_response(0) {
            InitialResponse::Absent => None,
            InitialResponse::Base64(text) => decode_base64(text).map(|p| p.as_bytes().to_vec()),
        };
        // For a 1.0 client an empty resp= is no initial response.
        let expected = response.filter(|r| !r.is_empty());
        prop_assert_eq!(decoded, expected);
    }
}
