//! `cargo xtask bench watch`: what `rtrace serve --watch` costs (issue #15 item 5).
//!
//! - slowdown: the syscall (getppid loop) and ping-pong fixtures untraced, under the one-shot
//!   `rtrace --pid` (at the watch sessions' 19 Hz) and watched by a daemon (`--watch pid:N`),
//!   rounds alternating: the watched overhead should equal the one-shot's (same probes);
//! - scrape: GET /metrics with 100 processes watched (one session adopts them all), and the
//!   daemon's RSS and CPU per watched process;
//! - lifetimes: 1,000 short-lived processes (3 s each, one started every 60 ms) matched by
//!   comm; the daemon's RSS before, during and after, and its CPU per lifetime.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use super::{
    build_fixture, median,
    rounds::{alternate, ratio_text, Tracer},
    serve::{get_body, usage, Killed},
};
use crate::util::{root, rtrace_bin, step};

/// Processes watched at once for the scrape figure.
const WATCHED: usize = 100;
/// Short lifetimes for the memory figure, started this far apart.
const LIFETIMES: usize = 1000;
const APART: Duration = Duration::from_millis(60);

fn dir() -> Result<PathBuf> {
    let d = root().join("target/bench/watch");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// A daemon watching `specs` on a socket in `dir`, once it listens.
fn daemon(dir: &Path, specs: &[String]) -> Result<(Child, PathBuf)> {
    let socket = dir.join(format!("w{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let mut cmd = Command::new(rtrace_bin());
    cmd.arg("serve").arg("--socket").arg(&socket).stderr(Stdio::null()).stdout(Stdio::null());
    for s in specs {
        cmd.args(["--watch", s]);
    }
    let mut d = cmd.spawn()?;
    let t = Instant::now();
    while !socket.exists() {
        if d.try_wait()?.is_some() {
            bail!("rtrace serve exited before listening");
        }
        if t.elapsed() > Duration::from_secs(10) {
            bail!("rtrace serve never listened on {}", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((d, socket))
}

fn metrics(socket: &Path) -> Result<(String, Duration)> {
    let (status, body, took) = get_body(socket, "/metrics")?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    Ok((String::from_utf8_lossy(&body).into_owned(), took))
}

/// Until `done` holds for /metrics (60 s at most).
fn until(socket: &Path, what: &str, done: impl Fn(&str) -> bool) -> Result<String> {
    let t = Instant::now();
    loop {
        let (m, _) = metrics(socket)?;
        if done(&m) {
            return Ok(m);
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("after 60 s, /metrics still not {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// For rounds.rs's `Tracer::Watch`: a daemon watching `pid`, returned once its session has
/// published (so attached) — the daemon ends on SIGINT like the other tracers.
pub(super) fn watching(pid: &str, out: &Path) -> Result<Child> {
    std::fs::create_dir_all(out)?;
    let (mut d, socket) = daemon(out, &[format!("pid:{pid}")])?;
    let attached =
        until(&socket, "publishing the watched pid", |m| m.contains(&format!("rtrace_zombie_children{{pid=\"{pid}\"")));
    if let Err(e) = attached {
        let _ = d.kill();
        let _ = d.wait();
        return Err(e);
    }
    // The caller stops it (SIGINT) and waits.
    Ok(d)
}

fn watched_count(m: &str) -> usize {
    m.lines().find_map(|l| l.strip_prefix("rtrace_watched_processes ")?.trim().parse().ok()).unwrap_or(0)
}

pub fn watch(rounds: u32) -> Result<()> {
    let hz = ["-F", "19"];
    for (fixture, n, what) in
        [("getppid_loop", "2000000", "ns per getppid"), ("pingpong", "300000", "ns per round trip")]
    {
        let bin = build_fixture(fixture)?;
        step(&format!(
            "bench watch: {fixture} {n}, {rounds} rounds of untraced / rtrace --pid -F 19 / serve --watch pid:N"
        ));
        let configs = [("untraced", Tracer::None), ("rtrace", Tracer::Rtrace(&hz)), ("watched", Tracer::Watch)];
        let r = alternate(&bin, &[n.to_owned()], &configs, rounds)?;
        println!("bench watch {fixture} ({what}; median over {rounds} rounds of each run's fastest batch):");
        r.print_rows(&["untraced", "rtrace --pid (one-shot)", "rtrace serve --watch"]);
        println!(
            "  watched overhead / one-shot overhead: {}   (target 1.0x: the same probes)",
            ratio_text(r.overhead_ratio(2, 1, 0))
        );
    }

    let d = dir()?;
    let sleep = d.join("rtbenchidle");
    std::fs::copy("/bin/sleep", &sleep)?;
    step(&format!("bench watch: /metrics with {WATCHED} watched processes"));
    let (daemon_, socket) = daemon(&d, &["comm:rtbenchidle".into(), "comm:rtbenchlife".into()])?;
    let daemon_ = Killed(daemon_);
    let dpid = daemon_.0.id();
    let (cpu0, rss0) = usage(dpid)?;
    let idle: Vec<Killed> =
        (0..WATCHED).map(|_| Command::new(&sleep).arg("600").spawn().map(Killed)).collect::<Result<_, _>>()?;
    let t = Instant::now();
    until(&socket, "watching all of them", |m| {
        watched_count(m) == WATCHED && m.matches("rtrace_zombie_children{").count() == WATCHED
    })?;
    let attach_all = t.elapsed();
    let (cpu1, rss1) = usage(dpid)?;
    let mut took = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let (m, t) = metrics(&socket)?;
        took.push(t.as_secs_f64() * 1000.0);
        size = m.len();
    }
    println!(
        "{WATCHED} watched: all attached and published in {:.1} s; GET /metrics {:.2} ms (median of 20, {size} bytes); \
         daemon RSS {} → {} KiB ({} KiB per watched process), CPU {} ms to attach them ({} ms each)",
        attach_all.as_secs_f64(),
        median(took),
        rss0,
        rss1,
        (rss1.saturating_sub(rss0)) / WATCHED as u64,
        cpu1 - cpu0,
        (cpu1 - cpu0) / WATCHED as u64
    );
    drop(idle);
    until(&socket, "empty", |m| watched_count(m) == 0)?;

    step(&format!("bench watch: {LIFETIMES} short-lived watched processes (3 s each, one every {APART:?})"));
    let life = d.join("rtbenchlife");
    std::fs::copy("/bin/sleep", &life)?;
    let (cpu0, rss0) = usage(dpid)?;
    let mut kids = Vec::new();
    let mut during = Vec::new();
    let t0 = Instant::now();
    for i in 0..LIFETIMES {
        kids.push(Killed(Command::new(&life).arg("3").spawn()?));
        std::thread::sleep((t0 + APART * (i as u32 + 1)).saturating_duration_since(Instant::now()));
        if i % 200 == 199 {
            during.push(usage(dpid)?.1);
        }
        kids.retain_mut(|k| k.0.try_wait().ok().flatten().is_none());
    }
    drop(kids);
    until(&socket, "empty", |m| watched_count(m) == 0)?;
    let (cpu1, rss1) = usage(dpid)?;
    println!(
        "{LIFETIMES} lifetimes: daemon RSS {rss0} KiB before, {during:?} KiB every 200, {rss1} KiB after; CPU {:.1} ms per lifetime",
        (cpu1 - cpu0) as f64 / LIFETIMES as f64
    );
    drop(daemon_);
    let _ = std::fs::remove_dir_all(&d);
    Ok(())
}
