//! `cargo xtask bench cpu`: the cost of tracing, as ratios against an untraced baseline run side
//! by side in the same invocation (rounds alternate untraced / traced so drift hits both).
//!
//! Work: tests/fixtures/cpu_chain in fixed-work mode (n=<calls>), started before rtrace and
//! released (one byte on stdin) once rtrace reports its probes attached, so the timed work is
//! fully traced. rtrace runs with --pid, so its own rusage (wait4) holds only rtrace's CPU.
use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::util::{build_release, root, rtrace_bin, step};

pub fn run(which: &str, rounds: u32) -> Result<()> {
    crate::setup::run()?;
    build_release()?;
    if !crate::util::is_root() {
        bail!("benchmarks load eBPF programs: run as root (`sudo cargo xtask bench {which}`)");
    }
    match which {
        "cpu" => cpu(rounds),
        other => bail!("unknown benchmark {other:?}; available: cpu"),
    }
}

fn build_fixture(name: &str) -> Result<PathBuf> {
    let out = root().join("target/fixtures").join(name);
    std::fs::create_dir_all(out.parent().unwrap())?;
    let src = root().join(format!("tests/fixtures/{name}.c"));
    let ok = Command::new("gcc").args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"]).arg(&out).arg(&src).status()?.success();
    if !ok {
        bail!("building {name} failed");
    }
    Ok(out)
}

fn start_held(bin: &Path, calls: u64) -> Result<Child> {
    Ok(Command::new(bin).arg(format!("n={calls}")).stdin(Stdio::piped()).spawn()?)
}

fn release_and_time(child: &mut Child) -> Result<Duration> {
    let t = Instant::now();
    child.stdin.take().context("fixture stdin")?.write_all(b"g")?;
    let st = child.wait()?;
    if !st.success() {
        bail!("fixture failed: {st}");
    }
    Ok(t.elapsed())
}

struct Traced {
    work: Duration,
    session: Duration,
    cpu: Duration,
    /// rtrace's CPU from probes attached to session end, per second of that interval.
    steady_cpu: f64,
    attach_cpu_ms: f64,
    report_cpu_ms: f64,
    max_rss_kib: i64,
    attach_ms: u64,
    report_ms: u64,
}

fn traced_round(bin: &Path, calls: u64, freq: &str) -> Result<Traced> {
    let mut fixture = start_held(bin, calls)?;
    let out = std::env::temp_dir().join(format!("rtrace-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let started = Instant::now();
    let mut rt = Command::new(rtrace_bin())
        .args(["-q", "-F", freq, "--pid", &fixture.id().to_string(), "-o"])
        .arg(&out)
        .env("RTRACE_TIMINGS", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut err = BufReader::new(rt.stderr.take().unwrap());
    let mut line = String::new();
    let (attach_ms, attach_cpu_us) = loop {
        line.clear();
        if err.read_line(&mut line)? == 0 {
            bail!("rtrace exited before attaching");
        }
        if line.starts_with("rtrace-timings: attached") {
            break (field(&line, "attach_ms"), field(&line, "cpu_us"));
        }
    };
    let attached = Instant::now();
    let work = release_and_time(&mut fixture)?;
    let mut rest = String::new();
    err.read_to_string(&mut rest)?;
    let (status, usage) = wait4(rt.id())?;
    let session = started.elapsed();
    if !status.success() {
        bail!("rtrace failed: {status}: {rest}");
    }
    let end_line = rest.lines().find(|l| l.starts_with("rtrace-timings: session_end")).unwrap_or("");
    let report_line = rest.lines().find(|l| l.starts_with("rtrace-timings: report_ms")).unwrap_or("");
    let (end_cpu_us, report_ms, report_cpu_us) = (field(end_line, "cpu_us"), field(report_line, "report_ms"), field(report_line, "cpu_us"));
    // The session ends when rtrace notices the target exited (within its 100 ms tick).
    let traced_secs = (started.elapsed() - (attached - started)).as_secs_f64().max(0.001);
    let steady_cpu = end_cpu_us.saturating_sub(attach_cpu_us) as f64 / 1e6 / traced_secs;
    let _ = std::fs::remove_dir_all(&out);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Traced {
        work,
        session,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        steady_cpu,
        attach_cpu_ms: attach_cpu_us as f64 / 1e3,
        report_cpu_ms: report_cpu_us.saturating_sub(end_cpu_us) as f64 / 1e3,
        max_rss_kib: usage.ru_maxrss,
        attach_ms,
        report_ms,
    })
}

/// `key=value` from an `rtrace-timings:` line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok()).unwrap_or(0)
}

fn wait4(pid: u32) -> Result<(std::process::ExitStatus, libc::rusage)> {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter; waiting for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    if r != pid as i32 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    Ok((std::process::ExitStatus::from_raw(status), usage))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn cpu(rounds: u32) -> Result<()> {
    let bin = build_fixture("cpu_chain")?;
    // Calibrate to ~3 s of work per run.
    let mut probe = start_held(&bin, 200)?;
    let per_call = release_and_time(&mut probe)?.as_secs_f64() / 200.0;
    let calls = (3.0 / per_call).max(100.0) as u64;
    step(&format!("bench cpu: {rounds} rounds of untraced / traced at 99 Hz, {calls} calls (~3 s) each"));

    let (mut base, mut traced) = (Vec::new(), Vec::new());
    let mut rounds_t = Vec::new();
    for i in 0..rounds {
        let mut c = start_held(&bin, calls)?;
        let b = release_and_time(&mut c)?;
        let t = traced_round(&bin, calls, "99")?;
        eprintln!(
            "  round {}: untraced {:.3} s, traced {:.3} s, rtrace cpu {:.1} ms over {:.1} s",
            i + 1,
            b.as_secs_f64(),
            t.work.as_secs_f64(),
            t.cpu.as_secs_f64() * 1e3,
            t.session.as_secs_f64()
        );
        base.push(b.as_secs_f64());
        traced.push(t.work.as_secs_f64());
        rounds_t.push(t);
    }
    let slowdown = median(traced) / median(base.clone());
    let own = median(rounds_t.iter().map(|t| t.steady_cpu).collect());
    let whole = median(rounds_t.iter().map(|t| t.cpu.as_secs_f64() / t.session.as_secs_f64()).collect());
    let attach_cpu = median(rounds_t.iter().map(|t| t.attach_cpu_ms).collect());
    let report_cpu = median(rounds_t.iter().map(|t| t.report_cpu_ms).collect());
    let rss = rounds_t.iter().map(|t| t.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    let attach = median(rounds_t.iter().map(|t| t.attach_ms as f64).collect());
    let report = median(rounds_t.iter().map(|t| t.report_ms as f64).collect());
    println!("bench cpu (median of {rounds} rounds, each ~{:.1} s of work):", median(base));
    println!("  target slowdown traced/untraced : {slowdown:.4}x   (target < 1.01x)");
    println!("  rtrace CPU while tracing        : {:.3}% of a core   (target < 1%)", own * 100.0);
    println!("  rtrace CPU, whole run           : {:.2}% of a core over a {:.1} s session (fixed: {attach_cpu:.0} ms to load+attach, {report_cpu:.0} ms to write the report)", whole * 100.0, median(rounds_t.iter().map(|t| t.session.as_secs_f64()).collect()));
    println!("  rtrace peak RSS                 : {rss:.1} MiB   (target < 64 MiB)");
    println!("  start -> probes attached        : {attach:.0} ms   (target < 300 ms)");
    println!("  session end -> report written   : {report:.0} ms   (target < 1000 ms for 30 s)");
    Ok(())
}
