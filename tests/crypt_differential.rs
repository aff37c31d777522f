//! Differential test of password hash verification: for every scheme the system's
//! libxcrypt offers (`mkpasswd -m help`), random passwords and near-misses of them get the
//! same verdict from `saslauthd_rs::hash::verify` as from the system's crypt, and, for the
//! schemes pwhash knows, from `pwhash::unix::verify` (the `pure-rust-hash` fallback).
//!
//! The system side never goes through our code:
//!
//! * the stored hash of each base password comes from `mkpasswd -m SCHEME -s` (package
//!   `whois`; the password on stdin, so it can hold any byte but NUL, CR and LF, which a
//!   line cannot carry);
//! * each candidate's verdict comes from one long-running `python3` that calls libxcrypt's
//!   `crypt(3)` through `ctypes` (`crypt(candidate, stored) == stored`), fed hex lines, so
//!   candidates may hold any byte but NUL (no C string can; our daemon refuses NUL before
//!   hashing). Python's own `crypt` module would take only UTF-8 text.
//!
//! Candidates per base password: the password itself, then near-misses (one byte changed,
//! truncated, a byte appended or inserted, one or all ASCII letters case-flipped, padded to
//! the 511/512-byte limit) and unrelated random passwords (ASCII, UTF-8, any 8-bit bytes,
//! long ones up to 511 bytes and a few past it, where libxcrypt refuses to hash). The counts
//! per scheme ([`budget`]) keep the test under a minute on two busy cores: few cases for
//! scrypt (about 0.25 s per hash), sunmd5 and yescrypt, thousands for the cheap schemes.
//! pwhash is compiled without optimisation in tests (sha512crypt: ~50 ms per verification),
//! so it checks a prefix of each scheme's candidates. The seed is printed; set
//! `CRYPT_DIFF_SEED` to replay a run.

#![forbid(unsafe_code)]

use saslauthd_rs::hash::{MAX_PASSWORD_LEN, verify};
use saslauthd_rs::secret::Password;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How many base passwords (one `mkpasswd` each) and candidates per base (the base
/// included); pwhash checks the first `pwhash_per_base` candidates of the first
/// `pwhash_bases` bases (none when pwhash does not know the scheme).
#[derive(Debug, Clone, Copy)]
struct Budget {
    bases: usize,
    per_base: usize,
    pwhash_bases: usize,
    pwhash_per_base: usize,
}

/// The counts for each scheme, by its cost (measured on the 2-core development machine,
/// default `mkpasswd` cost parameters).
fn budget(scheme: &str) -> Budget {
    let b = |bases, per_base, pwhash_bases, pwhash_per_base| Budget {
        bases,
        per_base,
        pwhash_bases,
        pwhash_per_base,
    };
    // Per hash, libxcrypt / pwhash (unoptimised): see the module comment.
    match scheme {
        "scrypt" => b(2, 6, 0, 0),                  // ~235 ms
        "sunmd5" => b(3, 8, 0, 0),                  // ~60 ms (random rounds)
        "yescrypt" => b(6, 12, 0, 0),               // ~22 ms
        "gost-yescrypt" => b(4, 10, 0, 0),          // ~22 ms
        "bcrypt" | "bcrypt-a" => b(20, 15, 10, 10), // ~1.6 ms (cost 5) / ~7 ms
        "sha512crypt" => b(32, 25, 3, 6),           // ~1 ms / ~50 ms (more when long)
        "sha256crypt" => b(32, 25, 3, 6),           // ~1 ms / ~20 ms
        "md5crypt" => b(80, 25, 20, 15),            // ~0.1 ms / ~3 ms
        "bsdicrypt" => b(80, 25, 10, 20),           // ~0.1 ms / ~6 ms
        "descrypt" => b(80, 25, 40, 25),            // ~5 µs / ~0.4 ms
        "nt" => b(80, 25, 0, 0),                    // ~2 µs
        // A scheme this test does not know yet: assume it is expensive.
        _ => b(3, 8, 0, 0),
    }
}

/// SplitMix64: small, seedable, good enough to pick test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        lo + self.below(hi_inclusive - lo + 1)
    }

    /// A byte other than NUL, and other than CR and LF when `line_safe`.
    fn byte(&mut self, line_safe: bool) -> u8 {
        loop {
            let b = self.range(1, 255) as u8;
            if !(line_safe && (b == b'\n' || b == b'\r')) {
                return b;
            }
        }
    }
}

/// Characters for UTF-8 passwords: ASCII, Latin-1, the euro sign, CJK, an emoji.
const UTF8_CHARS: &[char] = &[
    'a', 'Z', '0', ' ', '"', '\\', '$', ':', 'ä', 'ß', 'É', 'ø', '€', '漢', '字', '😀', 'ı',
];

/// A random password: ASCII, UTF-8, any bytes, or long (up to 511 bytes). Never NUL; with
/// `line_safe` never CR or LF either (it must go through `mkpasswd`'s stdin line).
fn random_password(rng: &mut Rng, line_safe: bool) -> Vec<u8> {
    match rng.below(5) {
        0 => (0..rng.range(1, 24))
            .map(|_| rng.range(0x20, 0x7e) as u8)
            .collect(),
        1 => {
            let s: String = (0..rng.range(1, 16))
                .map(|_| UTF8_CHARS[rng.below(UTF8_CHARS.len())])
                .collect();
            s.into_bytes()
        }
        2 => (0..rng.range(1, 64)).map(|_| rng.byte(line_safe)).collect(),
        3 => {
            // Around bcrypt's 72-byte limit.
            let len = [71, 72, 73, 100][rng.below(4)];
            (0..len).map(|_| rng.range(0x21, 0x7e) as u8).collect()
        }
        _ => (0..rng.range(100, MAX_PASSWORD_LEN))
            .map(|_| rng.byte(line_safe))
            .collect(),
    }
}

fn flip_case(b: &mut u8) {
    if b.is_ascii_alphabetic() {
        *b ^= 0x20;
    }
}

/// The base password, then near-misses of it and unrelated passwords; `count` in all.
fn candidates(rng: &mut Rng, base: &[u8], count: usize) -> Vec<Vec<u8>> {
    let mut out = vec![base.to_vec()];
    while out.len() < count {
        let mut c = base.to_vec();
        match rng.below(9) {
            0 => {
                let i = rng.below(c.len());
                let old = c[i];
                while c[i] == old {
                    c[i] = rng.byte(false);
                }
            }
            1 => c.truncate(rng.below(c.len())),
            2 => c.push(rng.byte(false)),
            3 => {
                let i = rng.below(c.len() + 1);
                c.insert(i, rng.byte(false));
            }
            4 => {
                let letters: Vec<usize> = (0..c.len())
                    .filter(|&i| c[i].is_ascii_alphabetic())
                    .collect();
                match letters.get(rng.below(letters.len().max(1))) {
                    Some(&i) => flip_case(&mut c[i]),
                    None => c.push(b'A'),
                }
            }
            5 => c.iter_mut().for_each(flip_case),
            6 => {
                // Padded to the limit, or one past it (never hashed).
                let len = MAX_PASSWORD_LEN + rng.below(2);
                while c.len() < len {
                    c.push(b'P');
                }
            }
            7 => {
                // The first 8 bytes (all DES crypt looks at) with something else after.
                c.truncate(8);
                c.extend_from_slice(b"-tail");
            }
            _ => c = random_password(rng, false),
        }
        out.push(c);
    }
    out
}

/// The schemes `mkpasswd -m help` lists.
fn system_schemes() -> Vec<String> {
    let out = Command::new("mkpasswd")
        .args(["-m", "help"])
        .output()
        .expect("run mkpasswd (Debian package whois)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let schemes: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Available methods"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(
        schemes.len() >= 3,
        "cannot parse `mkpasswd -m help`:\n{text}"
    );
    schemes
}

/// `mkpasswd -m scheme -s` with `password` on stdin: the stored hash.
fn mkpasswd(scheme: &str, password: &[u8]) -> String {
    let mut child = Command::new("mkpasswd")
        .args(["-m", scheme, "-s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mkpasswd");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&[password, b"\n"].concat())
        .expect("write to mkpasswd");
    drop(stdin);
    let out = child.wait_with_output().expect("mkpasswd output");
    assert!(
        out.status.success(),
        "mkpasswd -m {scheme} -s failed ({:?}) for a {}-byte password: {}",
        out.status,
        password.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("hash is ASCII")
        .trim_end()
        .to_string()
}

const SYSTEM_CRYPT_PY: &str = r#"
import ctypes, sys
lib = ctypes.CDLL("libcrypt.so.1")
lib.crypt.restype = ctypes.c_char_p
lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
out = sys.stdout
for line in sys.stdin.buffer:
    line = line.rstrip(b"\n")
    if line == b"END":
        out.flush()
        continue
    password, stored = (bytes.fromhex(x.decode()) for x in line.split(b" ", 1))
    got = lib.crypt(password, stored)
    out.write("1\n" if got is not None and got == stored else "0\n")
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One `python3` running libxcrypt's crypt(3) for every verdict of the run.
struct SystemCrypt {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl SystemCrypt {
    fn start() -> SystemCrypt {
        let mut child = Command::new("python3")
            .args(["-c", SYSTEM_CRYPT_PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        SystemCrypt {
            child,
            stdin,
            stdout,
        }
    }

    /// Queues a batch; python works on it while we compute our own verdicts.
    fn send(&mut self, batch: &[(Vec<u8>, &str)]) -> std::thread::JoinHandle<ChildStdin> {
        let mut text = String::new();
        for (password, stored) in batch {
            text.push_str(&format!("{} {}\n", hex(password), hex(stored.as_bytes())));
        }
        text.push_str("END\n");
        let mut stdin = self.stdin.take().expect("python stdin");
        std::thread::spawn(move || {
            stdin.write_all(text.as_bytes()).expect("write to python3");
            stdin.flush().expect("flush python3");
            stdin
        })
    }

    fn receive(&mut self, writer: std::thread::JoinHandle<ChildStdin>, n: usize) -> Vec<bool> {
        let mut verdicts = Vec::with_capacity(n);
        let mut line = String::new();
        for _ in 0..n {
            line.clear();
            let read = self.stdout.read_line(&mut line).expect("read python3");
            assert!(read > 0, "python3 (system crypt) exited early");
            verdicts.push(line.trim_end() == "1");
        }
        self.stdin = Some(writer.join().expect("writer thread"));
        verdicts
    }
}

impl Drop for SystemCrypt {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.child.wait().is_err() {
            let _ = self.child.kill();
        }
    }
}

/// Counts for one scheme.
#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    system_yes: usize,
    pwhash_cases: usize,
    seconds: f64,
}

#[test]
fn our_verdict_is_the_system_crypt_verdict_for_every_scheme() {
    let seed = std::env::var("CRYPT_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("crypt differential: CRYPT_DIFF_SEED={seed}");
    let mut rng = Rng(seed);
    let schemes = system_schemes();
    let mut system = SystemCrypt::start();
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut mismatches = Vec::new();
    let started = Instant::now();

    for scheme in &schemes {
        let clock = Instant::now();
        let budget = budget(scheme);
        let mut bases = Vec::new();
        for i in 0..budget.bases {
            // Make sure each scheme sees an ASCII, a UTF-8 and a long 8-bit password.
            let base = match i {
                0 => b"Sasl-Lab-pw1".to_vec(),
                1 => "pä ss \"q\\ €".as_bytes().to_vec(),
                2 => (0..MAX_PASSWORD_LEN).map(|_| rng.byte(true)).collect(),
                _ => random_password(&mut rng, true),
            };
            let stored = mkpasswd(scheme, &base);
            bases.push((base, stored));
        }
        let mut batch: Vec<(Vec<u8>, &str)> = Vec::new();
        for (base, stored) in &bases {
            for c in candidates(&mut rng, base, budget.per_base) {
                batch.push((c, stored.as_str()));
            }
        }
        let writer = system.send(&batch);
        let ours: Vec<bool> = batch
            .iter()
            .map(|(c, stored)| verify(&Password::new(c.clone()), stored.as_bytes()))
            .collect();
        // The pure-rust-hash fallback as src/hash.rs runs it: UTF-8 text only, and nothing
        // over libxcrypt's limit (pwhash alone hashes longer passwords, so a 512-byte one
        // with the right first 8 bytes matched a DES hash: this test found that).
        let theirs: Vec<Option<bool>> = batch
            .iter()
            .enumerate()
            .map(|(i, (c, stored))| {
                let picked = i / budget.per_base < budget.pwhash_bases
                    && i % budget.per_base < budget.pwhash_per_base;
                let utf8 = std::str::from_utf8(c).ok().filter(|_| picked)?;
                Some(c.len() <= MAX_PASSWORD_LEN && pwhash::unix::verify(utf8, stored))
            })
            .collect();
        let system_verdicts = system.receive(writer, batch.len());

        let tally = tallies.entry(scheme.clone()).or_default();
        for (i, (candidate, stored)) in batch.iter().enumerate() {
            let sys = system_verdicts[i];
            tally.cases += 1;
            tally.system_yes += usize::from(sys);
            let mut disagree = |who: &str, got: bool| {
                let shown = &candidate[..candidate.len().min(80)];
                mismatches.push(format!(
                    "  {scheme}: {who} says {got}, system crypt {sys}: stored {stored}, \
                     candidate ({} bytes) {}{}",
                    candidate.len(),
                    hex(shown),
                    if shown.len() < candidate.len() {
                        "..."
                    } else {
                        ""
                    }
                ));
            };
            if ours[i] != sys {
                disagree("hash::verify", ours[i]);
            }
            if let Some(p) = theirs[i] {
                tally.pwhash_cases += 1;
                if p != sys {
                    disagree("pwhash", p);
                }
            }
        }
        // Each base password must verify, or the comparison proves nothing.
        assert!(
            tally.system_yes >= budget.bases,
            "{scheme}: the system verified only {} of {} candidates; is libxcrypt reachable \
             from python3 (ctypes, libcrypt.so.1)?",
            tally.system_yes,
            tally.cases
        );
        tally.seconds = clock.elapsed().as_secs_f64();
    }

    eprintln!("scheme            cases  system-yes  pwhash  seconds");
    for (scheme, t) in &tallies {
        eprintln!(
            "{scheme:<16} {:>6} {:>11} {:>7} {:>8.1}",
            t.cases, t.system_yes, t.pwhash_cases, t.seconds
        );
    }
    let total: usize = tallies.values().map(|t| t.cases).sum();
    let pwhash_total: usize = tallies.values().map(|t| t.pwhash_cases).sum();
    eprintln!(
        "total: {total} verdicts compared with the system's, {pwhash_total} with pwhash, \
         in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        mismatches.is_empty(),
        "{} verdict(s) differ from the system crypt's (seed {seed}):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn candidates_never_hold_nul_and_start_with_the_base() {
    let mut rng = Rng(7);
    for _ in 0..200 {
        let base = random_password(&mut rng, true);
        assert!(!base.is_empty() && base.len() <= MAX_PASSWORD_LEN);
        assert!(!base.iter().any(|b| [0, b'\n', b'\r'].contains(b)));
        let all = candidates(&mut rng, &base, 25);
        assert_eq!(all[0], base);
        assert!(
            all.iter()
                .all(|c| !c.contains(&0) && c.len() <= MAX_PASSWORD_LEN + 1)
        );
    }
}
