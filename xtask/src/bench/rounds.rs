//! Alternating rounds for `bench offcpu` and `bench syscalls`: a held fixture (it waits for one
//! byte on stdin and prints its ns per operation) run once per configuration per round —
//! untraced, under rtrace, under the floors, under bpftrace, or beside rtrace tracing another
//! process — and the medians and ratios over the rounds.
use std::{
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::median;
use crate::util::rtrace_bin;

/// How a fixture run is traced.
pub(super) enum Tracer<'a> {
    None,
    /// rtrace --pid with these extra arguments.
    Rtrace(&'a [&'a str]),
    /// rtrace tracing another process (an idle `sleep`) while the fixture runs untraced: what
    /// the rest of the machine pays while rtrace traces one CLI.
    Elsewhere(&'a [&'a str]),
    /// bpftrace with this program ("PID" is replaced by the fixture's pid).
    Bpftrace(&'a str),
    /// `perf record -p PID` with these extra arguments (its data written to a scratch file).
    Perf(&'a [&'a str]),
    /// `rtrace serve --watch pid:PID` (the daemon's continuous session; bench watch.rs).
    Watch,
}

struct Measured {
    /// The fixture's fastest batch (see tests/fixtures/pingpong.c for why).
    ns_per_op: f64,
    /// The whole run, noise included.
    whole_ns_per_op: f64,
    /// From rtrace's report.json: accounting (and `unwind`, under the key "unwind").
    accounting: Option<serde_json::Value>,
    /// rtrace's CPU from probes attached to session end, per second of that interval.
    tracer_cpu: Option<f64>,
}

/// Runs a held fixture (it waits for one byte on stdin and prints "ns_per_op=X") under a tracer.
fn measure(bin: &Path, args: &[String], tracer: &Tracer) -> Result<Measured> {
    let mut fixture = Command::new(bin).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let pid = fixture.id().to_string();
    let out = std::env::temp_dir().join(format!("rtrace-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut bystander_of: Option<Child> = None;
    let mut timings: Option<std::thread::JoinHandle<Vec<String>>> = None;
    let mut tracer_child = match tracer {
        Tracer::None => None,
        Tracer::Rtrace(extra) | Tracer::Elsewhere(extra) => {
            let target = if let Tracer::Elsewhere(_) = tracer {
                let idle = Command::new("sleep").arg("600").spawn()?;
                let id = idle.id().to_string();
                bystander_of = Some(idle);
                id
            } else {
                pid.clone()
            };
            let mut rt = Command::new(rtrace_bin())
                .args(["-q", "--pid", &target, "-o"])
                .arg(&out)
                .args(*extra)
                .env("RTRACE_TIMINGS", "1")
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()?;
            timings = Some(rtrace_timings(rt.stderr.take().unwrap())?);
            Some(rt)
        }
        Tracer::Perf(extra) => {
            let data = std::env::temp_dir().join(format!("rtrace-bench-perf-{}.data", std::process::id()));
            let mut perf = Command::new("perf")
                .args(["record", "-q", "-o"])
                .arg(&data)
                .args(*extra)
                .args(["-p", &pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting perf (linux-perf, installed by cargo xtask setup)")?;
            // perf says nothing when it is attached: give it the time its own start takes here.
            std::thread::sleep(std::time::Duration::from_millis(700));
            if let Some(st) = perf.try_wait()? {
                bail!("perf record exited at once: {st}");
            }
            Some(perf)
        }
        Tracer::Watch => Some(super::watch::watching(&pid, &out)?),
        Tracer::Bpftrace(prog) => {
            let mut bt = Command::new("bpftrace")
                .arg("-e")
                .arg(prog.replace("PID", &pid))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bpftrace (installed by cargo xtask setup)")?;
            wait_for_line(bt.stdout.take().unwrap(), "Attaching")?;
            Some(bt)
        }
    };
    fixture.stdin.take().context("fixture stdin")?.write_all(b"g")?;
    let mut text = String::new();
    fixture.stdout.take().unwrap().read_to_string(&mut text)?;
    let st = fixture.wait()?;
    if !st.success() {
        bail!("fixture {} failed: {st}", bin.display());
    }
    let value = |key: &str| -> Result<f64> {
        let v = text.lines().find_map(|l| l.strip_prefix(key)).with_context(|| format!("fixture printed no {key}"))?;
        Ok(v.trim().parse()?)
    };
    let (ns_per_op, whole_ns_per_op) = (value("best_ns_per_op=")?, value("ns_per_op=")?);
    let mut accounting = None;
    if let Some(mut idle) = bystander_of.take() {
        // Our own `sleep`: rtrace's session ends when its target exits.
        idle.kill()?;
        idle.wait()?;
    }
    if let Some(mut child) = tracer_child.take() {
        if let Tracer::Bpftrace(_) | Tracer::Perf(_) | Tracer::Watch = tracer {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
        let st = child.wait()?;
        if let Tracer::Rtrace(_) = tracer {
            if !st.success() {
                bail!("rtrace failed: {st}");
            }
            let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json"))?)?;
            let mut a = report["accounting"].clone();
            a["unwind"] = report["unwind"].clone();
            accounting = Some(a);
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(std::env::temp_dir().join(format!("rtrace-bench-perf-{}.data", std::process::id())));
    let tracer_cpu = timings.and_then(|t| t.join().ok()).and_then(|lines| steady_cpu(&lines));
    Ok(Measured { ns_per_op, whole_ns_per_op, accounting, tracer_cpu })
}

/// Waits for rtrace's "attached" timing line, then keeps reading its stderr (so it never blocks
/// on a full pipe) and hands back every timing line with the time it was read.
fn rtrace_timings(r: impl Read + Send + 'static) -> Result<std::thread::JoinHandle<Vec<String>>> {
    let mut lines = BufReader::new(r).lines();
    let attached = loop {
        match lines.next() {
            Some(line) => {
                let line = line?;
                if line.starts_with("rtrace-timings: attached") {
                    break line;
                }
            }
            None => bail!("rtrace exited before attaching"),
        }
    };
    let t0 = std::time::Instant::now();
    Ok(std::thread::spawn(move || {
        let mut out = vec![format!("{attached} at_ms=0")];
        for line in lines.map_while(Result::ok) {
            if line.starts_with("rtrace-timings:") {
                out.push(format!("{line} at_ms={}", t0.elapsed().as_millis()));
            }
        }
        out
    }))
}

/// rtrace's CPU share while it traces, from its timing lines: from the session loop's start to
/// its end (without the one-time work after attach — threads blocked then, the Go view — and
/// at the end — the drain, the detach: ~40 ms that made a 1.5 s run's 99 Hz figure 1.2–1.3 %
/// when the loop itself costs ~0.1 %); attach to session end for an rtrace without them.
fn steady_cpu(lines: &[String]) -> Option<f64> {
    let field = |prefix: &str, key: &str| -> Option<f64> {
        let l = lines.iter().find(|l| l.starts_with(prefix))?;
        l.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    let (from, to) = match field("rtrace-timings: loop_start", "cpu_us") {
        Some(_) => ("rtrace-timings: loop_start", "rtrace-timings: loop_end"),
        None => ("rtrace-timings: attached", "rtrace-timings: session_end"),
    };
    let cpu = field(to, "cpu_us")? - field(from, "cpu_us")?;
    let ms = (field(to, "at_ms")? - field(from, "at_ms")?).max(1.0);
    Some(cpu / 1e3 / ms)
}

fn wait_for_line(r: impl Read + Send + 'static, prefix: &str) -> Result<()> {
    let mut lines = BufReader::new(r).lines();
    loop {
        match lines.next() {
            Some(line) => {
                if line?.starts_with(prefix) {
                    break;
                }
            }
            None => bail!("tracer exited before printing {prefix:?}"),
        }
    }
    // Keep draining so the tracer never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(())
}

/// Every configuration's ns/op, round by round, and the last report's accounting of each.
pub(super) struct Rounds {
    /// Fastest batch per round, per configuration.
    pub(super) per: Vec<Vec<f64>>,
    /// Whole run per round, per configuration.
    pub(super) whole: Vec<Vec<f64>>,
    pub(super) acc: Vec<Option<serde_json::Value>>,
    /// rtrace's CPU share while tracing, per round, per configuration (empty when not rtrace).
    pub(super) tracer_cpu: Vec<Vec<f64>>,
}

impl Rounds {
    pub(super) fn median(&self, config: usize) -> f64 {
        median(self.per[config].clone())
    }

    /// `traced`'s overhead over `base` as a multiple of `floor`'s, from the medians. (A ratio
    /// per round is no steadier here: the untraced baseline alone drifts by ±10 % between
    /// rounds on this VM, as much as a floor's whole overhead, and a round's floor can then
    /// land below its baseline.)
    pub(super) fn overhead_ratio(&self, traced: usize, floor: usize, base: usize) -> f64 {
        overhead_ratio(self.median(traced), self.median(floor), self.median(base))
    }

    /// The same ratio from whole-run times (noisier: shown so the choice of metric is visible).
    pub(super) fn whole_ratio(&self, traced: usize, floor: usize, base: usize) -> f64 {
        let m = |c: usize| median(self.whole[c].clone());
        overhead_ratio(m(traced), m(floor), m(base))
    }

    /// One line per configuration (in `configs` order, the first the untraced baseline): its
    /// median, its overhead over the baseline, and its spread over the rounds.
    pub(super) fn print_rows(&self, labels: &[&str]) {
        let base = self.median(0);
        for (i, label) in labels.iter().enumerate() {
            let m = self.median(i);
            let delta = if i == 0 { String::new() } else { format!("+{:.0} ns; ", m - base) };
            println!("  {label:<38}: {m:.0} ns   ({delta}{})", self.spread(i));
        }
    }

    /// "lowest-highest" of one configuration's rounds.
    fn spread(&self, config: usize) -> String {
        let v = &self.per[config];
        let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        format!("rounds {lo:.0}-{hi:.0}")
    }
}

/// "2.71x".
pub(super) fn ratio_text(r: f64) -> String {
    format!("{r:.2}x")
}

/// Runs every configuration once per round, alternating.
pub(super) fn alternate(bin: &Path, args: &[String], configs: &[(&str, Tracer)], rounds: u32) -> Result<Rounds> {
    if std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() != "0") {
        eprintln!("warning: kernel.bpf_stats_enabled=1 adds ~40 ns to every program run: the figures will be off");
    }
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut whole: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut acc: Vec<Option<serde_json::Value>> = vec![None; configs.len()];
    let mut tracer_cpu: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for round in 0..rounds {
        let mut line = format!("  round {}:", round + 1);
        for (i, (name, tracer)) in configs.iter().enumerate() {
            let m = measure(bin, args, tracer)?;
            line.push_str(&format!(" {name} {:.0} ns", m.ns_per_op));
            per[i].push(m.ns_per_op);
            whole[i].push(m.whole_ns_per_op);
            if m.accounting.is_some() {
                acc[i] = m.accounting;
            }
            tracer_cpu[i].extend(m.tracer_cpu);
        }
        eprintln!("{line}");
    }
    Ok(Rounds { per, whole, acc, tracer_cpu })
}

fn overhead_ratio(traced: f64, floor: f64, base: f64) -> f64 {
    (traced - base) / (floor - base).max(1e-9)
}
