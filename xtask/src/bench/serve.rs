//! `cargo xtask bench serve`: what `rtrace serve` costs (issue #14 item 2: one session per
//! request, or one shared by concurrent requests — measured here, chosen in serve/sessions.rs).
//! The real daemon on a temporary unix socket; targets are cpu_chain processes.
//!
//! - idle: the daemon's CPU over 5 s with no request (target ~0);
//! - per request: `profile?seconds=S` answered in S + overhead; the overhead (load, attach,
//!   detach, symbolize, encode) and the daemon's CPU per request are what a shared session
//!   could save a second concurrent caller;
//! - concurrency: two profiles of two pids at once, each answered as fast as one alone;
//! - memory: the daemon's RSS after every round (a leak grows it round after round).
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{build_fixture, median};
use crate::util::{rtrace_bin, step};

/// Seconds each profile asks for.
const SECONDS: u64 = 2;

/// The daemon's CPU (user + system) so far, in ms, and its RSS in KiB.
pub(super) fn usage(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let f: Vec<u64> =
        stat[stat.rfind(')').context("stat")? + 2..].split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok(((f[11] + f[12]) * 1000 / hz, rss))
}

/// One GET over the socket: (status, body length, wall time).
fn get(socket: &Path, path: &str) -> Result<(u16, usize, Duration)> {
    get_body(socket, path).map(|(s, b, t)| (s, b.len(), t))
}

/// One GET over the socket: (status, body, wall time).
pub(super) fn get_body(socket: &Path, path: &str) -> Result<(u16, Vec<u8>, Duration)> {
    let t = Instant::now();
    let mut s = UnixStream::connect(socket).with_context(|| format!("connecting to {}", socket.display()))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |i| i + 4);
    let status =
        String::from_utf8_lossy(&raw[..at]).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, raw[at..].to_vec(), t.elapsed()))
}

pub(super) struct Killed(pub(super) Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn serve(rounds: u32) -> Result<()> {
    let chain = build_fixture("cpu_chain")?;
    let dir = tempfile_dir()?;
    let socket = dir.join("rtrace.sock");
    let daemon =
        Killed(Command::new(rtrace_bin()).arg("serve").arg("--socket").arg(&socket).stderr(Stdio::null()).spawn()?);
    let dpid = daemon.0.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            bail!("rtrace serve never listened on {}", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let targets: Vec<Killed> = (0..2)
        .map(|_| Command::new(&chain).arg("3600").stdout(Stdio::null()).spawn().map(Killed))
        .collect::<Result<_, _>>()?;
    let pids: Vec<u32> = targets.iter().map(|t| t.0.id()).collect();

    step("bench serve: idle daemon, 5 s");
    let (c0, rss0) = usage(dpid)?;
    std::thread::sleep(Duration::from_secs(5));
    let (c1, _) = usage(dpid)?;
    println!("idle: {} ms of CPU in 5 s, RSS {} KiB", c1 - c0, rss0);

    step(&format!("bench serve: {rounds} rounds of profile?seconds={SECONDS}, alone then two pids at once"));
    let path = |pid: u32| format!("/pid/{pid}/debug/pprof/profile?seconds={SECONDS}");
    let (mut alone, mut cpu, mut both, mut rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        let (before, _) = usage(dpid)?;
        let (status, len, took) = get(&socket, &path(pids[0]))?;
        if status != 200 || len < 100 {
            bail!("profile answered {status} with {len} bytes");
        }
        let (after, r) = usage(dpid)?;
        alone.push((took.as_millis() as u64).saturating_sub(SECONDS * 1000));
        cpu.push(after - before);
        let two = std::thread::scope(|s| {
            let socket = &socket;
            let h: Vec<_> = pids.iter().map(|&p| s.spawn(move || get(socket, &path(p)))).collect();
            h.into_iter().map(|h| h.join().expect("request thread")).collect::<Result<Vec<_>>>()
        })?;
        if two.iter().any(|(s, _, _)| *s != 200) {
            bail!("concurrent profiles answered {:?}", two.iter().map(|t| t.0).collect::<Vec<_>>());
        }
        both.push(two.iter().map(|t| t.2.as_millis() as u64).max().unwrap_or(0).saturating_sub(SECONDS * 1000));
        rss.push(r);
    }
    println!(
        "one profile alone: answered {SECONDS} s + {} ms (median; load, attach, detach, symbolize, encode), \
         daemon CPU {} ms per request",
        median(alone.iter().map(|&v| v as f64).collect()),
        median(cpu.iter().map(|&v| v as f64).collect())
    );
    println!(
        "two profiles of two pids at once: the slower answered {SECONDS} s + {} ms (median)",
        median(both.iter().map(|&v| v as f64).collect())
    );
    println!("daemon RSS after each round (KiB): {rss:?}");
    let _ = std::fs::remove_dir_all(&dir);
    drop(targets);
    drop(daemon);
    Ok(())
}

/// A fresh directory for the socket.
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = crate::util::root().join("target/bench/serve");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
