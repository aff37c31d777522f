//! The side-by-side benchmark's report: the targets evaluated against the measured
//! numbers, rendered as markdown (header lines naming the machine and the method, the
//! scenario table with ours/upstream ratios and met / not met, the peak-RSS table, notes).

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::LoadResult;
use crate::machine::{Machine, cores};
use crate::{Kind, Outcome, Settings, Side, Which};

/// CPU time of one verification, and how many runs it was averaged over.
#[derive(Clone, Debug)]
pub struct CryptCost {
    pub yescrypt: Duration,
    pub y_runs: u32,
    pub sha512crypt: Duration,
    pub s_runs: u32,
}

/// Everything the report shows.
pub struct Report<'a> {
    pub machine: &'a Machine,
    pub settings: &'a Settings,
    pub crypt: &'a CryptCost,
    pub outcomes: &'a [Outcome],
    /// Ours' peak RSS (KiB) under the RSS scenario's clients with sha512crypt.
    pub rss_base: Option<&'a Result<u64, String>>,
    pub elapsed: Duration,
}

/// Per-verification scratch memory of yescrypt `j9T` (N = 4096, r = 32), the 16 MiB.
const YESCRYPT_MIB: u64 = 16;

/// A target's verdict.
enum Verdict {
    Met,
    /// Which parts were missed.
    NotMet(Vec<String>),
}

impl Verdict {
    fn from_misses(misses: Vec<String>) -> Verdict {
        if misses.is_empty() {
            Verdict::Met
        } else {
            Verdict::NotMet(misses)
        }
    }

    fn cell(&self) -> String {
        match self {
            Verdict::Met => "met".into(),
            Verdict::NotMet(m) => format!("**not met** ({})", m.join(", ")),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Milliseconds with about three significant digits.
fn fmt_ms(d: Duration) -> String {
    let v = ms(d);
    if v < 1.0 {
        format!("{v:.3}")
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn fmt_rps(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn fmt_ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn percentiles(l: &LoadResult) -> String {
    match (l.percentile(50.0), l.percentile(90.0), l.percentile(99.0)) {
        (Some(a), Some(b), Some(c)) => format!("{} / {} / {}", fmt_ms(a), fmt_ms(b), fmt_ms(c)),
        _ => "no replies".into(),
    }
}

fn p99(side: &Result<Side, String>) -> Option<Duration> {
    side.as_ref().ok()?.load.percentile(99.0)
}

fn rps(side: &Result<Side, String>) -> Option<f64> {
    side.as_ref().ok().map(|s| s.load.rps())
}

/// Yescrypt throughput ceiling: cores ÷ one verification's CPU time.
fn yescrypt_ceiling(r: &Report) -> f64 {
    r.machine.cores as f64 / r.crypt.yescrypt.as_secs_f64()
}

/// The target for one scenario row: its text, and the verdict.
fn target(r: &Report, o: &Outcome) -> (String, Verdict) {
    let c = o.clients;
    let (ours_rps, up_rps) = (rps(&o.ours), rps(&o.upstream));
    let ours_p99 = p99(&o.ours);
    let mut texts = Vec::new();
    let mut misses = Vec::new();
    let check = |ok: Option<bool>, what: &str, misses: &mut Vec<String>| match ok {
        Some(true) => {}
        Some(false) => misses.push(what.to_string()),
        None => misses.push(format!("{what}: not measured")),
    };
    match o.scenario.kind {
        Kind::CacheHit => {
            let want = up_rps.map(|u| 1.3 * u);
            texts.push(format!(
                "req/s ≥ 1.3 × upstream{}",
                want.map_or(String::new(), |w| format!(" = {}", fmt_rps(w)))
            ));
            check(
                ours_rps.zip(want).map(|(o, w)| o >= w),
                "req/s",
                &mut misses,
            );
            let (ours_cpu, up_cpu) = (per_ok(&o.ours, |s| s.cpu), per_ok(&o.upstream, |s| s.cpu));
            let limit = up_cpu.map(|u| u.mul_f64(0.7));
            texts.push(format!(
                "daemon CPU / request ≤ 0.7 × upstream's{}",
                limit.map_or(String::new(), |l| format!(" = {} ms", fmt_ms(l)))
            ));
            check(
                ours_cpu.zip(limit).map(|(o, l)| o <= l),
                "daemon CPU",
                &mut misses,
            );
        }
        Kind::YescryptMiss => {
            let want = 0.95 * yescrypt_ceiling(r);
            texts.push(format!(
                "req/s ≥ 0.95 × {} cores ÷ {} ms = {}",
                r.machine.cores,
                fmt_ms(r.crypt.yescrypt),
                fmt_rps(want)
            ));
            check(ours_rps.map(|o| o >= want), "req/s", &mut misses);
            if o.scenario.clients == 64 {
                let fair = r.crypt.yescrypt.mul_f64(c as f64 / r.machine.cores as f64);
                let limit = fair.mul_f64(1.3);
                texts.push(format!(
                    "p99 ≤ 1.3 × fair share ({c} × {} ms ÷ {} cores = {} ms) = {} ms",
                    fmt_ms(r.crypt.yescrypt),
                    r.machine.cores,
                    fmt_ms(fair),
                    fmt_ms(limit)
                ));
                check(ours_p99.map(|p| p <= limit), "p99", &mut misses);
            }
        }
        Kind::Sha512Miss => {
            texts.push(format!(
                "req/s ≥ upstream{}",
                up_rps.map_or(String::new(), |u| format!(" = {}", fmt_rps(u)))
            ));
            check(
                ours_rps.zip(up_rps).map(|(o, u)| o >= u),
                "req/s",
                &mut misses,
            );
        }
    }
    match &o.ours {
        Ok(s) if s.load.errors.total() > 0 => misses.push("errors".into()),
        Ok(_) => {}
        Err(_) => misses.push("run failed".into()),
    }
    (texts.join("; "), Verdict::from_misses(misses))
}

fn errors_cell(side: &Result<Side, String>) -> String {
    match side {
        Ok(s) => s.load.errors.total().to_string(),
        Err(_) => "failed".into(),
    }
}

/// A CPU time of the load (`what`: the daemon's or the client's) per `OK` reply: none
/// without a run or without an `OK`.
fn per_ok(side: &Result<Side, String>, what: fn(&Side) -> Duration) -> Option<Duration> {
    let s = side.as_ref().ok()?;
    (s.load.ok_total > 0).then(|| what(s) / s.load.ok_total.min(u32::MAX as u64) as u32)
}

/// [`per_ok`] in ms.
fn cpu_cell(side: &Result<Side, String>, what: fn(&Side) -> Duration) -> String {
    per_ok(side, what).map_or_else(|| "—".into(), fmt_ms)
}

/// The daemon's context switches per `OK` reply.
fn switches_cell(side: &Result<Side, String>) -> String {
    match side {
        Ok(s) if s.load.ok_total > 0 => {
            format!("{:.1}", s.switches as f64 / s.load.ok_total as f64)
        }
        _ => "—".into(),
    }
}

/// The daemon's system calls per accepted connection, from the strace pass.
fn syscalls_cell(side: &Result<Side, String>) -> String {
    match side.as_ref().map(|s| s.syscalls.as_ref()) {
        Ok(Ok(pass)) => pass.per_request().map_or("—".into(), |v| format!("{v:.1}")),
        _ => "—".into(),
    }
}

/// The detail of the strace passes: each daemon's system calls per request, by call.
fn syscall_details(out: &mut String, r: &Report) {
    let _ = writeln!(
        out,
        "\nSystem calls per request (`strace -c -f` attached to every process and thread of \
         the daemon for {} s of the same load after the measured run; per request = calls ÷ \
         successful accept/accept4 calls; failed calls such as EAGAIN included; calls under \
         0.05 per request left out):\n",
        crate::STRACE_WINDOW.min(r.settings.duration).as_secs_f64()
    );
    for o in r.outcomes {
        for (which, side) in [(Which::Ours, &o.ours), (Which::Upstream, &o.upstream)] {
            let at = format!(
                "{} c={} {}",
                o.scenario.kind.label(),
                o.clients,
                which.label()
            );
            let pass = match side.as_ref().map(|s| s.syscalls.as_ref()) {
                Ok(Ok(pass)) if pass.accepted > 0 => pass,
                Ok(Ok(_)) => {
                    let _ = writeln!(out, "- {at}: no connection accepted under strace");
                    continue;
                }
                Ok(Err(e)) => {
                    let _ = writeln!(out, "- {at}: strace pass failed: {e}");
                    continue;
                }
                Err(_) => continue,
            };
            let per = |n: u64| n as f64 / pass.accepted as f64;
            let calls: Vec<String> = pass
                .rows
                .iter()
                .filter(|row| per(row.calls) >= 0.05)
                .map(|row| format!("{} {:.2}", row.name, per(row.calls)))
                .collect();
            let _ = writeln!(
                out,
                "- {at}: {:.1} per request over {} requests: {}",
                per(pass.total),
                pass.accepted,
                calls.join(", ")
            );
        }
    }
}

fn header(out: &mut String, r: &Report) {
    let m = r.machine;
    let s = r.settings;
    let _ = writeln!(
        out,
        "# saslauthd-rs vs Debian's saslauthd: side-by-side benchmark{}\n",
        if s.smoke {
            " (smoke run: numbers not meaningful)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "Machine: nproc {} · {} · kernel {} · Debian {} · {}\n",
        m.cores, m.cpu_model, m.kernel, m.debian, m.date
    );
    let args = |w: Which| w.args(false).join(" ");
    let _ = writeln!(
        out,
        "- **Daemons**: ours = {} (`cargo bench` build), `saslauthd {} [-c] -m <rundir>` \
         (verification pool: its default, one per core = {}); upstream = {}, \
         `/usr/sbin/saslauthd {} [-c] -m <rundir>` (Debian's defaults: 5 pre-forked \
         processes). `-c` only in the cache-hit scenarios.",
        m.ours_version,
        args(Which::Ours),
        cores(),
        m.upstream_version,
        args(Which::Upstream)
    );
    let _ = writeln!(
        out,
        "- **Logging**: both detached (daemon mode: no `-d`, `-f` or `-V`), so neither logs \
         a successful request; each in a private mount namespace with `tests/fixtures` \
         bind-mounted over `/etc`, a fresh daemon per scenario."
    );
    let _ = writeln!(
        out,
        "- **Load**: c client threads in the benchmark process (sharing the CPUs with the \
         daemon), each looping connect → 4-field request (`yuser` or `suser`, its password, \
         `imap`, empty realm) → 2-byte-length reply → close, like libsasl. {} s warm-up \
         (unmeasured), then {} s measured. req/s = `OK` replies received in the measured \
         window ÷ its length; latency = connect to reply, over the requests started in the \
         window (nearest rank); errors = every reply other than `OK`, connect failure or \
         timeout ({} s deadline for connect + request + reply), warm-up included. The \
         cache is warmed with one request. Daemon CPU = user + system time of all the \
         daemon's processes during the load (`/proc/PID/stat`) ÷ `OK` replies; client CPU \
         = the same for the load generator (this process): when the two add up to all \
         cores, the machine, not the daemon, is the limit.",
        s.warmup.as_secs_f64(),
        s.duration.as_secs_f64(),
        crate::DEADLINE.as_secs()
    );
    let _ = writeln!(
        out,
        "- **One verification** (CPU time of `saslauthd_rs::hash::verify`, libxcrypt, one \
         thread, fixture hashes): yescrypt `$y$j9T$` {} ms ({} runs), sha512crypt `$6$` {} ms \
         ({} runs). Yescrypt ceiling = {} cores ÷ {} ms = {} req/s.\n",
        fmt_ms(r.crypt.yescrypt),
        r.crypt.y_runs,
        fmt_ms(r.crypt.sha512crypt),
        r.crypt.s_runs,
        m.cores,
        fmt_ms(r.crypt.yescrypt),
        fmt_rps(yescrypt_ceiling(r))
    );
}

/// The RSS table, and whether its target was met (None: no RSS scenario ran).
fn rss_table(out: &mut String, r: &Report) -> Option<bool> {
    let o = r.outcomes.iter().find(|o| o.scenario.rss)?;
    let ours = o.ours.as_ref().ok().and_then(|s| s.rss.as_ref());
    let up = o.upstream.as_ref().ok().and_then(|s| s.rss.as_ref());
    let _ = writeln!(
        out,
        "\n| peak RSS (VmHWM) under {} c={} | ours | upstream | ours ÷ upstream | target | met |",
        o.scenario.kind.label(),
        o.clients
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let cell = |f: Option<u64>| f.map_or("—".to_string(), mib);
    let _ = writeln!(
        out,
        "| idle, after start-up | {} | {} | | | |",
        cell(ours.map(|f| f.base_kib)),
        cell(up.map(|f| f.base_kib)),
    );
    // The base: ours' peak under the same clients with sha512crypt (no 16 MiB scratch).
    let base = r.rss_base.and_then(|b| b.as_ref().ok().copied());
    let _ = writeln!(
        out,
        "| base: ours' peak under sha512crypt miss c={} (connections, threads, no yescrypt \
         scratch) | {} | | | | |",
        o.clients,
        match r.rss_base {
            Some(Ok(k)) => mib(*k),
            Some(Err(_)) => "failed".into(),
            None => "—".into(),
        }
    );
    let pool = cores() as u64;
    let limit = base.map(|b| pool * YESCRYPT_MIB * 1024 + b);
    let (ours_peak, up_peak) = (
        ours.map(|f| f.peak.total_kib()),
        up.map(|f| f.peak.total_kib()),
    );
    let mut misses = Vec::new();
    match ours_peak.zip(limit) {
        Some((p, l)) if p > l => misses.push("pool bound".to_string()),
        Some(_) => {}
        None => misses.push("not measured".to_string()),
    }
    match ours_peak.zip(up_peak) {
        Some((o, u)) if o >= u => misses.push("not below upstream".to_string()),
        Some(_) => {}
        None => misses.push("upstream not measured".to_string()),
    }
    let verdict = Verdict::from_misses(misses);
    let up_procs = up.map_or(0, |f| f.peak.per_process.len());
    let _ = writeln!(
        out,
        "| peak under the load | {} (1 process) | {} (sum of {up_procs} processes: master + \
         workers) | {} | ≤ pool {pool} × {YESCRYPT_MIB} MiB + base{}; < upstream | {} |",
        cell(ours_peak),
        cell(up_peak),
        match ours_peak.zip(up_peak) {
            Some((o, u)) => fmt_ratio(o as f64, u as f64),
            None => "—".into(),
        },
        limit.map_or(String::new(), |l| format!(" = {}", mib(l))),
        verdict.cell()
    );
    if let Some(u) = up {
        let each: Vec<String> = u
            .peak
            .per_process
            .iter()
            .map(|(_, k)| format!("{:.1}", *k as f64 / 1024.0))
            .collect();
        let _ = writeln!(
            out,
            "\nUpstream's VmHWM per process (MiB): {} (pages shared between them count in \
             each).",
            each.join(", ")
        );
    }
    Some(matches!(verdict, Verdict::Met))
}

/// The whole report as markdown.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    header(&mut out, r);
    let _ = writeln!(
        out,
        "| scenario | c | ours req/s | upstream req/s | req/s ours ÷ upstream | ours p50 / p90 / \
         p99 ms | upstream p50 / p90 / p99 ms | p99 ours ÷ upstream | errors ours / upstream \
         | daemon CPU ms / request ours / upstream | client CPU ms / request ours / upstream \
         | daemon syscalls / request ours / upstream | daemon context switches / request ours \
         / upstream | target (ours) | met |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    let (mut met, mut total) = (0, 0);
    let mut notes = Vec::new();
    for o in r.outcomes {
        let (text, verdict) = target(r, o);
        match verdict {
            Verdict::Met => {
                met += 1;
                total += 1;
            }
            Verdict::NotMet(_) => total += 1,
        }
        let rps_cell = |s: &Result<Side, String>| rps(s).map_or("—".into(), fmt_rps);
        let pct_cell = |s: &Result<Side, String>| match s {
            Ok(s) => percentiles(&s.load),
            Err(_) => "failed".into(),
        };
        let rps_ratio = match (rps(&o.ours), rps(&o.upstream)) {
            (Some(a), Some(b)) => fmt_ratio(a, b),
            _ => "—".into(),
        };
        let p99_ratio = match (p99(&o.ours), p99(&o.upstream)) {
            (Some(a), Some(b)) => fmt_ratio(ms(a), ms(b)),
            _ => "—".into(),
        };
        let capped = if o.clients != o.scenario.clients {
            format!(" (of {})", o.scenario.clients)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {}{capped} | {} | {} | {rps_ratio} | {} | {} | {p99_ratio} | {} / {} | {} / {} \
             | {} / {} | {} / {} | {} / {} | {text} | {} |",
            o.scenario.kind.label(),
            o.clients,
            rps_cell(&o.ours),
            rps_cell(&o.upstream),
            pct_cell(&o.ours),
            pct_cell(&o.upstream),
            errors_cell(&o.ours),
            errors_cell(&o.upstream),
            cpu_cell(&o.ours, |s| s.cpu),
            cpu_cell(&o.upstream, |s| s.cpu),
            cpu_cell(&o.ours, |s| s.client_cpu),
            cpu_cell(&o.upstream, |s| s.client_cpu),
            syscalls_cell(&o.ours),
            syscalls_cell(&o.upstream),
            switches_cell(&o.ours),
            switches_cell(&o.upstream),
            verdict.cell()
        );
        for (which, side) in [(Which::Ours, &o.ours), (Which::Upstream, &o.upstream)] {
            let at = format!(
                "{} c={}, {}",
                o.scenario.kind.label(),
                o.clients,
                which.label()
            );
            match side {
                Ok(s) => {
                    let e = s.load.errors.describe();
                    if !e.is_empty() {
                        notes.push(format!("{at}: {e}"));
                    }
                    for n in &s.notes {
                        let n = format!("{}: {n}", which.label());
                        if !notes.contains(&n) {
                            notes.push(n);
                        }
                    }
                }
                Err(e) => notes.push(format!("{at}: run failed: {e}")),
            }
        }
    }
    syscall_details(&mut out, r);
    if let Some(ok) = rss_table(&mut out, r) {
        total += 1;
        if ok {
            met += 1;
        }
    }
    let _ = writeln!(
        out,
        "\nTargets met: {met} of {total}. Whole run: {:.0} s.",
        r.elapsed.as_secs_f64()
    );
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNotes:\n");
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}
