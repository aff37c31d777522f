//! Property-based tests of the wire codec (`saslauthd_rs::protocol`), and one end to end:
//! random frames, valid and corrupted, sent in random pieces to our daemon never get `OK`
//! unless they are a well-formed request for a fixture user with that user's password.
//!
//! The codec properties are pure (no root); `random_frames_get_ok_only_for_good_credentials`
//! starts one daemon (`-a shadow`, fixture users) and needs root like every daemon test.

#![forbid(unsafe_code)]

mod common;

use common::fixtures::*;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use saslauthd_rs::protocol::{
    DEFAULT_MAX_FIELD_LEN, Decoded, Field, MAX_COUNTED_LEN, Rejection, Reply, Request,
    decode_reply, decode_request, encode_counted, encode_request, max_request_len, reply_is_ok,
};
use std::io::Write;
use std::thread::sleep;
use std::time::Duration;

const FIELDS: [Field; 5] = [
    Field::Login,
    Field::Password,
    Field::Service,
    Field::Realm,
    Field::ClientAddr,
];

/// Any bytes (8-bit and NUL included), up to `max` of them.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

/// The four required fields and maybe a fifth, each at most `max` bytes.
fn request_fields(max: usize) -> impl Strategy<Value = (Vec<Vec<u8>>, Option<Vec<u8>>)> {
    (
        proptest::collection::vec(bytes(max), 4),
        proptest::option::of(bytes(max)),
    )
}

/// The fields in wire order.
fn wire_fields(four: &[Vec<u8>], addr: &Option<Vec<u8>>) -> Vec<Vec<u8>> {
    four.iter().cloned().chain(addr.clone()).collect()
}

fn encode(four: &[Vec<u8>], addr: &Option<Vec<u8>>) -> Vec<u8> {
    encode_request(&four[0], &four[1], &four[2], &four[3], addr.as_deref())
        .expect("fields fit counted strings")
        .as_bytes()
        .to_vec()
}

/// The request the fields make (what a correct decoder must return).
fn expected(four: &[Vec<u8>], addr: &Option<Vec<u8>>) -> Request {
    Request {
        login: four[0].clone(),
        password: saslauthd_rs::secret::Password::new(four[1].clone()),
        service: four[2].clone(),
        realm: four[3].clone(),
        client_addr: addr.clone(),
    }
}

/// Bytes a random frame is built of: counted strings whose length prefix may lie.
fn random_frame() -> impl Strategy<Value = Vec<u8>> {
    let piece = (
        bytes(300),
        prop_oneof![
            3 => Just(None),
            1 => any::<u16>().prop_map(Some),
        ],
    );
    (proptest::collection::vec(piece, 0..7), bytes(8)).prop_map(|(pieces, tail)| {
        let mut out = Vec::new();
        for (value, claimed) in pieces {
            let len = claimed.unwrap_or(value.len() as u16);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&value);
        }
        out.extend_from_slice(&tail);
        out
    })
}

/// Checks what any decoding result must satisfy, whatever the input.
fn check_decoded(buf: &[u8], limit: usize, decoded: &Decoded) -> Result<(), TestCaseError> {
    match decoded {
        Decoded::Incomplete => {}
        Decoded::Rejected(Rejection::TooLong { len, limit: l, .. }) => {
            prop_assert_eq!(*l, limit);
            prop_assert!(*len > limit);
        }
        Decoded::Rejected(other) => prop_assert!(false, "decoding never validates: {other:?}"),
        Decoded::Complete { request, consumed } => {
            prop_assert!(*consumed <= buf.len());
            prop_assert!(*consumed <= max_request_len(limit));
            let fields = [
                &request.login[..],
                request.password.as_bytes(),
                &request.service,
                &request.realm,
            ];
            let mut total = 0;
            for f in fields.iter().chain(request.client_addr.as_deref().iter()) {
                prop_assert!(f.len() <= limit);
                total += 2 + f.len();
            }
            prop_assert_eq!(total, *consumed);
            // Four fields only when nothing follows them.
            prop_assert!(request.client_addr.is_some() || *consumed == buf.len());
            // Re-encoding gives back exactly the bytes consumed.
            let again = encode_request(
                &request.login,
                request.password.as_bytes(),
                &request.service,
                &request.realm,
                request.client_addr.as_deref(),
            )
            .expect("fits");
            prop_assert_eq!(again.as_bytes(), &buf[..*consumed]);
        }
    }
    Ok(())
}

proptest! {
    // Failures print the shrunk input; no regression files in the tree.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random bytes under a random limit never panic the decoder, and what it returns is
    /// consistent with its input.
    #[test]
    fn random_bytes_never_panic_the_decoder(buf in bytes(6000), limit in 0usize..70_000) {
        let decoded = decode_request(&buf, limit);
        check_decoded(&buf, limit, &decoded)?;
        let _ = decode_reply(&buf);
        let _ = reply_is_ok(&buf);
    }

    /// Random frames (counted strings, some with lying lengths) never panic the decoder,
    /// under the default limit and random ones, nor do any of their prefixes.
    #[test]
    fn random_frames_never_panic_the_decoder(
        buf in random_frame(),
        limit in prop_oneof![Just(DEFAULT_MAX_FIELD_LEN), 0usize..2048, Just(MAX_COUNTED_LEN)],
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        check_decoded(&buf, limit, &decode_request(&buf, limit))?;
        for cut in cuts {
            let prefix = &buf[..cut.index(buf.len() + 1)];
            check_decoded(prefix, limit, &decode_request(prefix, limit))?;
        }
    }

    /// decode(encode(x)) = x for 4- and 5-field requests of any bytes, up to the limit.
    #[test]
    fn decode_inverts_encode((four, addr) in request_fields(DEFAULT_MAX_FIELD_LEN)) {
        let wire = encode(&four, &addr);
        match decode_request(&wire, DEFAULT_MAX_FIELD_LEN) {
            Decoded::Complete { request, consumed } => {
                prop_assert_eq!(consumed, wire.len());
                prop_assert_eq!(request, expected(&four, &addr));
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }

    /// The same under a random limit, with fields of exactly the limit's length included.
    #[test]
    fn decode_inverts_encode_up_to_any_limit(
        limit in 0usize..1500,
        seeds in request_fields(1500),
        at_limit in proptest::collection::vec(any::<bool>(), 5),
    ) {
        let fit = |(i, f): (usize, &Vec<u8>)| -> Vec<u8> {
            let mut f = f.clone();
            f.truncate(limit);
            if at_limit[i] {
                f.resize(limit, b'L');
            }
            f
        };
        let four: Vec<Vec<u8>> = seeds.0.iter().enumerate().map(fit).collect();
        let addr = seeds.1.as_ref().map(|a| fit((4, a)));
        let wire = encode(&four, &addr);
        match decode_request(&wire, limit) {
            Decoded::Complete { request, consumed } => {
                prop_assert_eq!(consumed, wire.len());
                prop_assert_eq!(request, expected(&four, &addr));
            }
            other => prop_assert!(false, "limit {limit}: {other:?}"),
        }
    }

    /// A frame arriving in random pieces, decoded after each one as the connection does
    /// (the whole buffer so far), is Incomplete until it is whole and then exactly the
    /// request sent. The one exception is the documented one: a prefix ending right after
    /// the fourth field of a five-field frame is a complete four-field request (the
    /// connection then checks whether the fifth field is already on its way).
    #[test]
    fn random_splits_are_incomplete_until_whole(
        (four, addr) in request_fields(300),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        trailing in bytes(20),
    ) {
        let wire = encode(&four, &addr);
        let four_len: usize = four.iter().map(|f| 2 + f.len()).sum();
        let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(wire.len())).collect();
        ends.push(wire.len());
        ends.sort_unstable();
        ends.dedup();
        let mut buffer = Vec::new();
        let mut start = 0;
        for end in ends {
            buffer.extend_from_slice(&wire[start..end]);
            start = end;
            let decoded = decode_request(&buffer, DEFAULT_MAX_FIELD_LEN);
            if end == wire.len() {
                match decoded {
                    Decoded::Complete { request, consumed } => {
                        prop_assert_eq!(consumed, wire.len());
                        prop_assert_eq!(request, expected(&four, &addr));
                    }
                    other => prop_assert!(false, "whole frame: {other:?}"),
                }
            } else if addr.is_some() && end == four_len {
                match decoded {
                    Decoded::Complete { request, consumed } => {
                        prop_assert_eq!(consumed, four_len);
                        prop_assert_eq!(request, expected(&four, &None));
                    }
                    other => prop_assert!(false, "four of five fields: {other:?}"),
                }
            } else {
                prop_assert_eq!(decoded, Decoded::Incomplete, "after {} of {} bytes", end, wire.len());
            }
        }
        // Bytes after a five-field frame (a pipelined request) are never consumed.
        if addr.is_some() {
            buffer.extend_from_slice(&trailing);
            match decode_request(&buffer, DEFAULT_MAX_FIELD_LEN) {
                Decoded::Complete { consumed, .. } => prop_assert_eq!(consumed, wire.len()),
                other => prop_assert!(false, "with trailing bytes: {other:?}"),
            }
        }
    }

    /// A length prefix over the limit is refused as soon as the prefix is there, naming the
    /// field, whether or not its data follows.
    #[test]
    fn over_long_fields_are_rejected(
        (four, addr) in request_fields(40),
        which in 0usize..5,
        limit in 0usize..2048,
        excess in 1usize..=70_000,
        with_data in any::<bool>(),
    ) {
        let fields = wire_fields(&four, &Some(addr.unwrap_or_default()));
        let len = (limit + excess).min(MAX_COUNTED_LEN);
        prop_assume!(len > limit);
        let mut buf = Vec::new();
        for f in &fields[..which] {
            let f = &f[..f.len().min(limit)];
            buf.extend_from_slice(&(f.len() as u16).to_be_bytes());
            buf.extend_from_slice(f);
        }
        buf.extend_from_slice(&(len as u16).to_be_bytes());
        if with_data {
            buf.resize(buf.len() + len, b'x');
        }
        prop_assert_eq!(
            decode_request(&buf, limit),
            Decoded::Rejected(Rejection::TooLong { field: FIELDS[which], len, limit })
        );
        // Encoding refuses what no counted string can hold.
        let huge = vec![b'h'; MAX_COUNTED_LEN + 1 + excess % 10];
        let mut args: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        args[which] = &huge;
        prop_assert_eq!(
            encode_request(args[0], args[1], args[2], args[3], Some(args[4])).err(),
            Some(FIELDS[which])
        );
    }

    /// Validation accepts exactly the requests with a login, a password and no NUL byte.
    #[test]
    fn validation_refuses_empty_credentials_and_nul_bytes(
        (four, addr) in request_fields(12),
    ) {
        let request = expected(&four, &addr);
        let any_nul = wire_fields(&four, &addr).iter().any(|f| f.contains(&0));
        let ok = !four[0].is_empty() && !four[1].is_empty() && !any_nul;
        prop_assert_eq!(request.validate().is_ok(), ok, "{:?}", request.validate());
    }

    /// decode_reply(encode(reply)) is the reply's text, and only `OK` replies are OK.
    #[test]
    fn replies_round_trip_and_only_ok_is_ok(
        ok in any::<bool>(),
        text in proptest::option::of(".{0,200}"),
        cut in any::<prop::sample::Index>(),
    ) {
        let reply = match (ok, text) {
            (true, text) => Reply::Ok(text),
            (false, text) => Reply::No(text.unwrap_or_default()),
        };
        let wire = reply.encode();
        let text = reply.text();
        prop_assert_eq!(decode_reply(&wire), Some(text.as_bytes()));
        prop_assert_eq!(reply_is_ok(reply.text().as_bytes()), ok);
        // Until it is whole, a reply is not decoded at all.
        let short = cut.index(wire.len());
        prop_assert_eq!(decode_reply(&wire[..short]), None);
    }

    /// For any bytes, `reply_is_ok` is "starts with OK" (libsasl's rule), and a counted
    /// string of them decodes back to them (cut at 65535 bytes).
    #[test]
    fn reply_is_ok_means_starts_with_ok(
        text in prop_oneof![bytes(80), bytes(20).prop_map(|b| [&b"OK"[..], &b].concat())],
    ) {
        prop_assert_eq!(reply_is_ok(&text), text.starts_with(b"OK"));
        let wire = encode_counted(&text);
        prop_assert_eq!(decode_reply(&wire), Some(&text[..]));
    }
}

#[test]
fn over_long_reply_texts_are_cut_to_a_counted_string() {
    let text = vec![b'O'; MAX_COUNTED_LEN + 100];
    let wire = encode_counted(&text);
    assert_eq!(wire.len(), 2 + MAX_COUNTED_LEN);
    assert_eq!(decode_reply(&wire), Some(&text[..MAX_COUNTED_LEN]));
}

// ---------------------------------------------------------------------------------------------
// End to end: random frames against our daemon
// ---------------------------------------------------------------------------------------------

/// How many of [`fixture_accounts`] (the first ones) can log in.
const LOGIN_ACCOUNTS: usize = 7;

/// Fixture logins and their passwords; `true` when that password must get `OK`.
fn fixture_accounts() -> Vec<(&'static str, String, bool)> {
    vec![
        ("yuser", YUSER_PW.into(), true),
        ("suser", SUSER_PW.into(), true),
        ("buser", BUSER_PW.into(), true),
        ("muser", MUSER_PW.into(), true),
        ("special", SPECIAL_PW.into(), true),
        ("user@example.org", REALM_PW.into(), true),
        ("long", long_pw(), true),
        ("locked", LOCKED_PW.into(), false),
        ("expired", EXPIRED_PW.into(), false),
        ("pwexpired", PWEXPIRED_PW.into(), false),
        ("nohash", "Any-pw-4711".into(), false),
        ("star", "Any-pw-4711".into(), false),
        ("nosuchuser", "Any-pw-4711".into(), false),
    ]
}

/// What to send as the password.
#[derive(Debug, Clone)]
enum PasswordChoice {
    Right,
    /// One byte changed (at `at`, xor `with`, never 0).
    Changed {
        at: prop::sample::Index,
        with: u8,
    },
    Truncated(prop::sample::Index),
    Appended(u8),
    CaseFlipped,
    Random(Vec<u8>),
}

/// How to break the frame.
#[derive(Debug, Clone)]
enum Corruption {
    None,
    /// Send only a strict prefix (of the four required fields when there is a fifth),
    /// then half-close.
    Truncate(prop::sample::Index),
    /// The length prefix of the login or the password is off by `delta`.
    ShiftLength {
        field: usize,
        delta: i16,
    },
    /// A NUL byte inside the login or the password.
    Nul {
        field: usize,
        at: prop::sample::Index,
    },
    /// A length claim over the daemon's limit for one of the four required fields.
    Oversize {
        field: usize,
        len: u16,
    },
    /// Random bytes instead of a frame.
    Garbage(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Case {
    account: usize,
    password: PasswordChoice,
    service: Vec<u8>,
    realm: Vec<u8>,
    addr: Option<Vec<u8>>,
    /// Bytes after a five-field frame (a pipelined request: ignored by the daemon).
    trailing: Vec<u8>,
    corruption: Corruption,
    /// Where the bytes are split into separate writes, and the pause between writes.
    cuts: Vec<prop::sample::Index>,
    pause_ms: u64,
    half_close: bool,
}

fn case_strategy(accounts: usize) -> impl Strategy<Value = Case> {
    let password = prop_oneof![
        8 => Just(PasswordChoice::Right),
        2 => (any::<prop::sample::Index>(), 1u8..=255)
            .prop_map(|(at, with)| PasswordChoice::Changed { at, with }),
        1 => any::<prop::sample::Index>().prop_map(PasswordChoice::Truncated),
        1 => any::<u8>().prop_map(PasswordChoice::Appended),
        1 => Just(PasswordChoice::CaseFlipped),
        1 => bytes(40).prop_map(PasswordChoice::Random),
    ];
    let corruption = prop_oneof![
        10 => Just(Corruption::None),
        2 => any::<prop::sample::Index>().prop_map(Corruption::Truncate),
        1 => (0usize..2, prop_oneof![-8i16..0, 1i16..9])
            .prop_map(|(field, delta)| Corruption::ShiftLength { field, delta }),
        1 => (0usize..2, any::<prop::sample::Index>())
            .prop_map(|(field, at)| Corruption::Nul { field, at }),
        1 => (0usize..4, 1025u16..=u16::MAX)
            .prop_map(|(field, len)| Corruption::Oversize { field, len }),
        1 => bytes(60).prop_map(Corruption::Garbage),
    ];
    let addr = proptest::option::of(prop_oneof![
        Just(b"127.0.0.1;5555".to_vec()),
        Just(b"::1;25".to_vec()),
        bytes(30),
    ]);
    (
        (
            // Mostly accounts that can log in (the first ones), so OK is frequent too.
            prop_oneof![3 => 0..LOGIN_ACCOUNTS, 1 => LOGIN_ACCOUNTS..accounts],
            password,
            bytes(12),
            bytes(12),
            addr,
            bytes(10),
        ),
        (
            corruption,
            proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
            0u64..3,
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (account, password, service, realm, addr, trailing),
                (corruption, cuts, pause_ms, half_close),
            )| Case {
                account,
                password,
                service,
                realm,
                addr,
                trailing,
                corruption,
                cuts,
                pause_ms,
                half_close,
            },
        )
}

/// The password bytes a case sends.
fn password_bytes(choice: &PasswordChoice, right: &[u8]) -> Vec<u8> {
    let mut pw = right.to_vec();
    match choice {
        PasswordChoice::Right => {}
        PasswordChoice::Changed { at, with } => {
            let i = at.index(pw.len());
            pw[i] ^= with;
        }
        PasswordChoice::Truncated(at) => pw.truncate(at.index(pw.len())),
        PasswordChoice::Appended(b) => pw.push(*b),
        PasswordChoice::CaseFlipped => pw.iter_mut().for_each(|b| {
            if b.is_ascii_alphabetic() {
                *b ^= 0x20;
            }
        }),
        PasswordChoice::Random(bytes) => pw = bytes.clone(),
    }
    pw
}

/// What the daemon must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `OK`: a well-formed request (no NUL byte in any field) for an account that can log
    /// in, with its exact password.
    Ok,
    /// Anything but `OK`.
    NotOk,
    /// Either: the first four fields are such a request, only the fifth is refused (a NUL
    /// byte). The daemon answers a four-field request when nothing follows it yet, so a
    /// pause in the sending right after the fourth field rightly gets `OK`.
    Either,
}

/// The bytes a case sends, its password, and what the daemon must answer.
fn build(case: &Case, accounts: &[(&'static str, String, bool)]) -> (Vec<u8>, Vec<u8>, Expect) {
    let (login, right, can_log_in) = &accounts[case.account];
    let mut login = login.as_bytes().to_vec();
    let mut password = password_bytes(&case.password, right.as_bytes());
    let mut well_formed = true;
    if let Corruption::Nul { field, at } = &case.corruption {
        let target = if *field == 0 {
            &mut login
        } else {
            &mut password
        };
        target.insert(at.index(target.len() + 1), 0);
        well_formed = false;
    }
    let mut fields = vec![
        login,
        password.clone(),
        case.service.clone(),
        case.realm.clone(),
    ];
    fields.extend(case.addr.clone());
    // A NUL byte in any field is refused (`NO NUL byte in <field>`).
    well_formed &= !fields[..4].iter().any(|f| f.contains(&0));
    let fifth_refused = case.addr.as_ref().is_some_and(|a| a.contains(&0));
    let mut lengths: Vec<u16> = fields.iter().map(|f| f.len() as u16).collect();
    match &case.corruption {
        Corruption::ShiftLength { field, delta } => {
            lengths[*field] =
                (i32::from(lengths[*field]) + i32::from(*delta)).clamp(0, 1024) as u16;
            well_formed &= lengths[*field] as usize == fields[*field].len();
        }
        Corruption::Oversize { field, len } => {
            lengths[*field] = *len;
            well_formed = false;
        }
        _ => {}
    }
    let mut wire = Vec::new();
    for (len, value) in lengths.iter().zip(&fields) {
        wire.extend_from_slice(&len.to_be_bytes());
        wire.extend_from_slice(value);
    }
    let four_len: usize = fields[..4].iter().map(|f| 2 + f.len()).sum();
    match &case.corruption {
        Corruption::Truncate(at) => {
            // With a fifth field, cut within the first four or right after them (a whole
            // four-field request then): a cut inside the fifth leaves a whole four-field
            // request in front, which the daemon may rightly answer when a pause in the
            // sending falls right after it.
            let cut = match case.addr {
                Some(_) => at.index(four_len + 1),
                None => at.index(wire.len()),
            };
            well_formed &= case.addr.is_some() && cut == four_len;
            wire.truncate(cut);
            let good = well_formed && *can_log_in && password == right.as_bytes();
            let expect = if good { Expect::Ok } else { Expect::NotOk };
            return (wire, password, expect);
        }
        Corruption::Garbage(bytes) => {
            wire = bytes.clone();
            well_formed = false;
        }
        _ => {
            if case.addr.is_some() {
                wire.extend_from_slice(&case.trailing);
            }
        }
    }
    let good = well_formed && *can_log_in && password == right.as_bytes();
    let expect = match (good, fifth_refused) {
        (false, _) => Expect::NotOk,
        (true, false) => Expect::Ok,
        (true, true) => Expect::Either,
    };
    (wire, password, expect)
}

/// Sends `wire` in pieces with pauses, then reads the reply (None: closed without one).
fn send_case(socket: &std::path::Path, wire: &[u8], case: &Case) -> Option<Vec<u8>> {
    let mut ends: Vec<usize> = case
        .cuts
        .iter()
        .map(|c| c.index(wire.len().max(1)))
        .collect();
    ends.push(wire.len());
    ends.sort_unstable();
    ends.dedup();
    let mut stream = connect(socket, Duration::from_secs(10));
    let mut start = 0;
    for end in ends {
        if start > 0 {
            sleep(Duration::from_millis(case.pause_ms));
        }
        // The daemon may answer (and close) early, e.g. on an over-long length prefix.
        if stream.write_all(&wire[start..end]).is_err() {
            break;
        }
        start = end;
    }
    // Anything not well-formed is half-closed, so an incomplete frame ends at once.
    let corrupted = !matches!(case.corruption, Corruption::None);
    let opts = ExchangeOpts {
        half_close: case.half_close || corrupted,
        check_eof: false,
        timeout: Duration::from_secs(10),
        ..ExchangeOpts::default()
    };
    exchange_on(&mut stream, &[], &opts).reply
}

#[test]
fn random_frames_get_ok_only_for_good_credentials() {
    require_root();
    let d = Daemon::start(&ours_bin("saslauthd"), &["-a", "shadow", "--timeout", "3"]);
    let socket = d.socket();
    let accounts = fixture_accounts();
    let sent_passwords = std::cell::RefCell::new(Vec::<Vec<u8>>::new());
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 128,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..RunnerConfig::default()
    });
    let goods = std::cell::Cell::new(0usize);
    let result = runner.run(&case_strategy(accounts.len()), |case| {
        let (wire, password, expect) = build(&case, &accounts);
        common::secrets::record_password(&password);
        if password.len() >= 8 {
            sent_passwords.borrow_mut().push(password.clone());
        }
        let reply = send_case(&socket, &wire, &case);
        let ok = reply.as_deref().is_some_and(reply_is_ok);
        goods.set(goods.get() + usize::from(expect == Expect::Ok));
        prop_assert!(
            expect == Expect::Either || ok == (expect == Expect::Ok),
            "expected {:?}, got the reply {:?} to {:?} ({} bytes)",
            expect,
            reply.as_deref().map(String::from_utf8_lossy),
            case,
            wire.len()
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n--- log ---\n{}", d.log());
    }
    eprintln!(
        "{} of the cases (128 and any shrinking) were good credentials",
        goods.get()
    );
    // Healthy after all that: still answers, and nothing sent shows up in its log.
    assert!(d.running(), "daemon died\n--- log ---\n{}", d.log());
    assert_eq!(
        auth(&socket, "suser", SUSER_PW, "imap", "").as_deref(),
        Some("OK"),
        "--- log ---\n{}",
        d.log()
    );
    let mut sent_passwords = sent_passwords.into_inner();
    sent_passwords.extend(FIXTURE_PASSWORDS.iter().map(|p| p.as_bytes().to_vec()));
    d.finish(&sent_passwords);
}
