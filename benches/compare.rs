//! Side-by-side benchmark: our `saslauthd` against Debian's `/usr/sbin/saslauthd` (sasl2-bin)
//! on the same fixture users, in one run, each daemon in a private mount namespace with the
//! test fixtures over `/etc` (the integration tests' harness). Run it with
//! `scripts/bench.sh [--duration SECS] [--warmup SECS] [--smoke] [--out PATH] [--only TEXT]`
//! (root).
//!
//! Scenarios, each against a fresh daemon of each kind: cache hit (`-c`, one warming
//! request first) at c = 1, 8, 64; yescrypt miss at c = 8, 64, 512 (peak RSS measured under
//! the c = 512 load); sha512crypt miss at c = 8, 64. The report (a markdown table with the
//! issue's targets marked met / not met) goes to stdout and to `target/bench/compare.md`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "compare/load.rs"]
mod load;
#[path = "compare/machine.rs"]
mod machine;
#[path = "compare/report.rs"]
mod report;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::fixtures::{SUSER_PW, YUSER_PW};
use common::{Daemon, Options, UPSTREAM_SASLAUTHD, ours_bin, request};
use load::{LoadResult, LoadSpec};
use machine::{Machine, PeakRss};

/// Per-request deadline of the load generator (fair-share latency at c=512 with yescrypt
/// is about 5 s on 2 cores).
const DEADLINE: Duration = Duration::from_secs(60);
/// Length of the load under `strace` (shortened to the scenario's duration in `--smoke`).
const STRACE_WINDOW: Duration = Duration::from_secs(2);
/// Client cap in `--smoke` runs.
const SMOKE_MAX_CLIENTS: usize = 16;

/// Command-line settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub duration: Duration,
    pub warmup: Duration,
    pub smoke: bool,
    pub out: PathBuf,
    /// Run only the scenarios whose name (e.g. `yescrypt miss c=512`) contains one of these.
    pub only: Vec<String>,
}

const USAGE: &str = "usage: cargo bench --bench compare -- [--duration SECS] [--warmup SECS] \
                     [--smoke] [--out PATH] [--only TEXT]...
  --duration SECS  measured time per scenario and daemon (default 10; --smoke: 1)
  --warmup SECS    unmeasured time before it (default 2; --smoke: 0.2)
  --smoke          very short run with at most 16 clients, for CI (numbers not meaningful)
  --out PATH       where to write the markdown report (default target/bench/compare.md)
  --only TEXT      run only the scenarios whose name contains TEXT (repeatable), e.g.
                   --only 'cache hit' --only 'yescrypt miss c=512'";

fn parse_secs(flag: &str, v: Option<String>) -> Result<Duration, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    let secs: f64 = v
        .parse()
        .map_err(|_| format!("{flag}: not a number: {v:?}"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err(format!("{flag}: must be in (0, 3600]: {v}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_args() -> Result<Settings, String> {
    let mut duration = None;
    let mut warmup = None;
    let mut smoke = false;
    let mut out = None;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            // `cargo bench` appends --bench to the arguments of every bench binary.
            "--bench" => {}
            "--smoke" => smoke = true,
            "--duration" => duration = Some(parse_secs("--duration", args.next())?),
            "--warmup" => warmup = Some(parse_secs("--warmup", args.next())?),
            "--out" => out = Some(PathBuf::from(args.next().ok_or("--out needs a value")?)),
            "--only" => only.push(args.next().ok_or("--only needs a value")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let (d, w) = if smoke { (1.0, 0.2) } else { (10.0, 2.0) };
    Ok(Settings {
        duration: duration.unwrap_or(Duration::from_secs_f64(d)),
        warmup: warmup.unwrap_or(Duration::from_secs_f64(w)),
        smoke,
        out: out.unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/compare.md")
        }),
        only,
    })
}

/// Which load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Both daemons with `-c`, the cache warmed with one request, `yuser`'s password.
    CacheHit,
    /// No cache, `yuser` (`$y$`).
    YescryptMiss,
    /// No cache, `suser` (`$6$`).
    Sha512Miss,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::CacheHit => "cache hit",
            Kind::YescryptMiss => "yescrypt miss",
            Kind::Sha512Miss => "sha512crypt miss",
        }
    }

    fn user_password(self) -> (&'static str, &'static str) {
        match self {
            Kind::CacheHit | Kind::YescryptMiss => ("yuser", YUSER_PW),
            Kind::Sha512Miss => ("suser", SUSER_PW),
        }
    }
}

/// One scenario: a load kind at a client count (as the issue asks; capped by `--smoke`).
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub kind: Kind,
    pub clients: usize,
    /// Measure peak RSS under this load.
    pub rss: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        kind: Kind::CacheHit,
        clients: 1,
        rss: false,
    },
    Scenario {
        kind: Kind::CacheHit,
        clients: 8,
        rss: false,
    },
    Scenario {
        kind: Kind::CacheHit,
        clients: 64,
        rss: false,
    },
    Scenario {
        kind: Kind::YescryptMiss,
        clients: 8,
        rss: false,
    },
    Scenario {
        kind: Kind::YescryptMiss,
        clients: 64,
        rss: false,
    },
    Scenario {
        kind: Kind::YescryptMiss,
        clients: 512,
        rss: true,
    },
    Scenario {
        kind: Kind::Sha512Miss,
        clients: 8,
        rss: false,
    },
    Scenario {
        kind: Kind::Sha512Miss,
        clients: 64,
        rss: false,
    },
];

/// Which daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Ours,
    Upstream,
}

impl Which {
    pub fn label(self) -> &'static str {
        match self {
            Which::Ours => "ours",
            Which::Upstream => "upstream",
        }
    }

    fn program(self) -> PathBuf {
        match self {
            Which::Ours => ours_bin("saslauthd"),
            Which::Upstream => PathBuf::from(UPSTREAM_SASLAUTHD),
        }
    }

    /// Mechanism and defaults (`-m <rundir>` is added by the harness).
    pub fn args(self, cache: bool) -> Vec<&'static str> {
        let mut a = match self {
            Which::Ours => vec!["-a", "shadow"],
            Which::Upstream => vec!["-a", "shadow", "-n", "5"],
        };
        if cache {
            a.push("-c");
        }
        a
    }
}

/// Peak RSS figures of one daemon under the RSS scenario's load, in KiB.
#[derive(Clone, Debug)]
pub struct RssFigures {
    /// VmHWM summed over the daemon's processes right after start-up, before any request.
    pub base_kib: u64,
    /// VmHWM summed over the daemon's processes after the load.
    pub peak: PeakRss,
}

/// System calls of one daemon under a scenario's load, from a short `strace -c -f` pass.
#[derive(Clone, Debug)]
pub struct SyscallPass {
    /// Connections the daemon accepted during the pass (successful accept/accept4 calls):
    /// the per-request divisor.
    pub accepted: u64,
    /// Every system call during the pass, failed ones included.
    pub total: u64,
    /// Per system call, most calls first.
    pub rows: Vec<machine::SyscallCount>,
}

impl SyscallPass {
    pub fn per_request(&self) -> Option<f64> {
        (self.accepted > 0).then(|| self.total as f64 / self.accepted as f64)
    }
}

/// One daemon's result for one scenario.
#[derive(Clone, Debug)]
pub struct Side {
    pub load: LoadResult,
    /// CPU time (user + system) the daemon's processes used during the load.
    pub cpu: Duration,
    /// Context switches (voluntary + involuntary) of the daemon's threads during the load.
    pub switches: u64,
    /// The `strace` pass after the load.
    pub syscalls: Result<SyscallPass, String>,
    /// CPU time the load generator (this process) used during the load.
    pub client_cpu: Duration,
    pub rss: Option<RssFigures>,
    /// Lines the daemon logged that the reader should know about (e.g. `-c` unsupported).
    pub notes: Vec<String>,
}

/// Both daemons' results for one scenario.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub scenario: Scenario,
    /// Clients actually used (capped by `--smoke`).
    pub clients: usize,
    pub ours: Result<Side, String>,
    pub upstream: Result<Side, String>,
}

fn rss_now(d: &Daemon) -> PeakRss {
    PeakRss::of(&machine::process_family(d.pid()))
}

/// Starts a fresh daemon, runs one scenario against it, stops it.
fn run_side(which: Which, sc: Scenario, clients: usize, s: &Settings) -> Result<Side, String> {
    let cache = sc.kind == Kind::CacheHit;
    let args = which.args(cache);
    let opts = Options {
        foreground: false,
        ..Options::default()
    };
    let mut d = Daemon::try_start_with(&which.program(), &args, opts).map_err(|f| {
        format!(
            "{} did not start: {} ({:?}); log: {}",
            which.label(),
            f.reason,
            f.status,
            f.log.trim()
        )
    })?;
    let base_kib = rss_now(&d).total_kib();
    wait_out_fresh_fixtures(&d);
    let (user, password) = sc.kind.user_password();
    let req = request(&[user.as_bytes(), password.as_bytes(), b"imap", b""]);
    // One request first: it checks the daemon answers OK and, with -c, fills the cache.
    let first = load::single(&d.socket(), &req, DEADLINE)
        .map_err(|e| format!("{}: first request failed: {e}", which.label()))?;
    if first != "OK" {
        return Err(format!(
            "{}: first request answered {first:?}, not \"OK\"",
            which.label()
        ));
    }
    let spec = LoadSpec {
        socket: d.socket(),
        request: req,
        expected: b"OK".to_vec(),
        clients,
        warmup: s.warmup,
        duration: s.duration,
        deadline: DEADLINE,
    };
    let ticks = machine::clock_ticks();
    let family = machine::process_family(d.pid());
    let cpu_before = machine::cpu_time(&family, ticks);
    let switches_before = machine::context_switches(&family);
    let own_before = machine::own_cpu_time();
    let result = load::run(&spec).map_err(|e| format!("{}: load: {e}", which.label()));
    let client_cpu = machine::own_cpu_time().saturating_sub(own_before);
    let family = machine::process_family(d.pid());
    let cpu = machine::cpu_time(&family, ticks).saturating_sub(cpu_before);
    let switches = machine::context_switches(&family).saturating_sub(switches_before);
    let rss = sc.rss.then(|| RssFigures {
        base_kib,
        peak: rss_now(&d),
    });
    let syscalls = strace_pass(&d, &spec, s);
    let mut notes = Vec::new();
    for line in d.log().lines() {
        if line.contains("not implemented") {
            notes.push(line.trim().to_string());
        }
    }
    if !d.running() {
        notes.push(format!(
            "{} was no longer running after the load",
            which.label()
        ));
    }
    d.stop();
    Ok(Side {
        load: result?,
        cpu,
        switches,
        syscalls,
        client_cpu,
        rss,
        notes,
    })
}

/// The fixture files were copied for this daemon just now; a real `/etc/shadow` is not. Our
/// cache takes files changed within `file_stamp::RACY_SECS` as possibly changed again
/// (git's "racy clean" rule) and reads the account on every hit meanwhile, so the load
/// waits until they are that old: both daemons then run as on a real system.
fn wait_out_fresh_fixtures(d: &Daemon) {
    use std::os::unix::fs::MetadataExt;
    let etc = d.dir().join("etc");
    let newest = ["passwd", "shadow", "nsswitch.conf"]
        .iter()
        .filter_map(|name| fs::metadata(etc.join(name)).ok())
        .map(|meta| meta.ctime().max(meta.mtime()))
        .max();
    let Some(newest) = newest else {
        return;
    };
    let limit = Instant::now() + Duration::from_secs(10);
    while saslauthd_rs::mech::file_stamp::now()
        .is_some_and(|now| now - newest < saslauthd_rs::mech::file_stamp::RACY_SECS)
        && Instant::now() < limit
    {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Counts the daemon's system calls under the same load for a short window: `strace -c
/// -f` attached to every process of the daemon (all their threads), the load run without
/// warm-up, then strace interrupted for its summary. Tracing slows the daemon down; the
/// counts per request, not the rates, are what this pass is for.
fn strace_pass(d: &Daemon, spec: &LoadSpec, s: &Settings) -> Result<SyscallPass, String> {
    let family = machine::process_family(d.pid());
    let out =
        std::env::temp_dir().join(format!("compare-strace-{}-{}", std::process::id(), d.pid()));
    let mut command = std::process::Command::new("strace");
    command.args(["-c", "-f", "-q", "-o"]).arg(&out);
    for pid in &family {
        command.args(["-p", &pid.to_string()]);
    }
    let mut strace = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("strace: {e} (apt-get install strace)"))?;
    let attach_deadline = Instant::now() + Duration::from_secs(10);
    while !machine::all_traced(&family) {
        if Instant::now() > attach_deadline {
            let _ = strace.kill();
            let _ = strace.wait();
            return Err("strace did not attach within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pass = LoadSpec {
        warmup: Duration::ZERO,
        duration: STRACE_WINDOW.min(s.duration),
        ..spec.clone()
    };
    let loaded = load::run(&pass);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(strace.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = strace.wait();
    let text = fs::read_to_string(&out).map_err(|e| format!("strace summary: {e}"));
    let _ = fs::remove_file(&out);
    loaded.map_err(|e| format!("load under strace: {e}"))?;
    let rows = machine::parse_strace_summary(&text?);
    let accepted = rows
        .iter()
        .filter(|r| r.name == "accept" || r.name == "accept4")
        .map(|r| r.calls.saturating_sub(r.errors))
        .sum();
    Ok(SyscallPass {
        accepted,
        total: rows.iter().map(|r| r.calls).sum(),
        rows,
    })
}

fn main() -> ExitCode {
    // `cargo bench` passes --bench; `cargo test --all-targets` (scripts/test.sh) runs bench
    // binaries without it, with libtest's arguments: run the self-checks only then.
    if !std::env::args().any(|a| a == "--bench") {
        machine::self_check();
        println!("compare: not run (no --bench: this is `cargo test`); run scripts/bench.sh");
        return ExitCode::SUCCESS;
    }
    let settings = match parse_args() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("compare: {e}");
            return ExitCode::from(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "compare: run me as root (scripts/bench.sh): the daemons run in a private mount \
             namespace with the fixture users bind-mounted over /etc"
        );
        return ExitCode::from(2);
    }
    if !Path::new(UPSTREAM_SASLAUTHD).exists() {
        eprintln!("compare: {UPSTREAM_SASLAUTHD} is missing: apt-get install sasl2-bin");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let machine = Machine::probe();
    eprintln!(
        "compare: {} cores, {}; {} s per scenario after {} s warm-up{}",
        machine.cores,
        machine.cpu_model,
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64(),
        if settings.smoke { " (smoke)" } else { "" }
    );

    // One verification's CPU time, single-threaded, with the fixture hashes.
    let min_cpu = if settings.smoke {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(2)
    };
    let crypt = (|| -> Result<report::CryptCost, String> {
        let (yescrypt, y_runs) =
            machine::crypt_cpu_time(YUSER_PW, &machine::fixture_hash("yuser")?, 5, min_cpu)?;
        let (sha512crypt, s_runs) =
            machine::crypt_cpu_time(SUSER_PW, &machine::fixture_hash("suser")?, 20, min_cpu)?;
        Ok(report::CryptCost {
            yescrypt,
            y_runs,
            sha512crypt,
            s_runs,
        })
    })();
    let crypt = match crypt {
        Ok(c) => c,
        Err(e) => {
            eprintln!("compare: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "compare: one verification: yescrypt {:.2} ms, sha512crypt {:.3} ms (CPU time)",
        crypt.yescrypt.as_secs_f64() * 1e3,
        crypt.sha512crypt.as_secs_f64() * 1e3
    );

    let mut outcomes = Vec::new();
    for (i, &sc) in SCENARIOS.iter().enumerate() {
        let clients = if settings.smoke {
            sc.clients.min(SMOKE_MAX_CLIENTS)
        } else {
            sc.clients
        };
        let name = format!("{} c={clients}", sc.kind.label());
        if !settings.only.is_empty() && !settings.only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        // Alternate which daemon goes first, so slow drifts in background load even out.
        let order = if i % 2 == 0 {
            [Which::Ours, Which::Upstream]
        } else {
            [Which::Upstream, Which::Ours]
        };
        let mut ours = Err("not run".to_string());
        let mut upstream = Err("not run".to_string());
        for which in order {
            let t = Instant::now();
            let r = run_side(which, sc, clients, &settings);
            match &r {
                Ok(side) => eprintln!(
                    "compare: {} c={clients} {}: {:.1} req/s, p99 {:.2} ms, {} errors ({:.1} s)",
                    sc.kind.label(),
                    which.label(),
                    side.load.rps(),
                    side.load
                        .percentile(99.0)
                        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
                    side.load.errors.total(),
                    t.elapsed().as_secs_f64()
                ),
                Err(e) => eprintln!(
                    "compare: {} c={clients} {}: FAILED: {e}",
                    sc.kind.label(),
                    which.label()
                ),
            }
            match which {
                Which::Ours => ours = r,
                Which::Upstream => upstream = r,
            }
        }
        outcomes.push(Outcome {
            scenario: sc,
            clients,
            ours,
            upstream,
        });
    }

    // Ours' memory apart from yescrypt's scratch: its peak under the same number of clients
    // with sha512crypt (a few KiB per verification), the "base" of the RSS target.
    let rss_base = outcomes.iter().find(|o| o.scenario.rss).map(|o| {
        let sc = Scenario {
            kind: Kind::Sha512Miss,
            clients: o.clients,
            rss: true,
        };
        let short = Settings {
            duration: settings.duration.min(Duration::from_secs(3)),
            warmup: settings.warmup.min(Duration::from_secs(1)),
            ..settings.clone()
        };
        let r = run_side(Which::Ours, sc, o.clients, &short).and_then(|side| {
            side.rss
                .map(|f| f.peak.total_kib())
                .ok_or_else(|| "no RSS figures".to_string())
        });
        match &r {
            Ok(kib) => eprintln!(
                "compare: RSS base: ours' peak under sha512crypt c={}: {kib} KiB",
                o.clients
            ),
            Err(e) => eprintln!("compare: RSS base run failed: {e}"),
        }
        r
    });

    let text = report::render(&report::Report {
        machine: &machine,
        settings: &settings,
        crypt: &crypt,
        outcomes: &outcomes,
        rss_base: rss_base.as_ref(),
        elapsed: started.elapsed(),
    });
    println!("{text}");
    if let Some(dir) = settings.out.parent()
        && let Err(e) = fs::create_dir_all(dir)
    {
        eprintln!("compare: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    if let Err(e) = fs::write(&settings.out, &text) {
        eprintln!("compare: cannot write {}: {e}", settings.out.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "compare: report written to {} ({:.0} s)",
        settings.out.display(),
        started.elapsed().as_secs_f64()
    );
    // A scenario that could not run at all is a failure of the harness (CI's smoke run).
    let failed = outcomes
        .iter()
        .any(|o| o.ours.is_err() || o.upstream.is_err())
        || matches!(rss_base, Some(Err(_)));
    if failed {
        eprintln!("compare: some scenarios failed to run (see the report)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
