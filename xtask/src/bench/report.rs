//! `cargo xtask bench report`: what the report of a real build costs (issue #11 item 7: written
//! ≤ 1 s after the build ends, rtrace's peak RSS ≤ 128 MiB). One traced `go build -a` of a small
//! module (net/http, encoding/json: ~350 processes, ~60k off-CPU and wakeup records), then
//! `rounds` replays of its capture (`rtrace report`, no BPF): the replay is the same analysis
//! and rendering minus the session, and repeats cheaply.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use super::{field, median, wait4};
use crate::util::{root, rtrace_bin, step};

/// Debian's Go; any Go builds the module.
const GO: &str = "/usr/bin/go";

const MAIN_GO: &str = r#"package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
)

func main() {
	b, _ := json.Marshal(map[string]int{"a": 1})
	fmt.Println(string(b), http.StatusOK)
	os.Exit(0)
}
"#;

const MIB: u64 = 1024;
const LIVE_ROUNDS: usize = 3;

/// One traced build's figures (RTRACE_TIMINGS).
struct Live {
    since_exit_ms: u64,
    report_ms: u64,
    peak_kib: u64,
}

/// `rtrace -- go build -a` of `module` into `out`.
fn traced_build(module: &Path, out: &Path, dir: &Path) -> Result<Live> {
    let live = Command::new(rtrace_bin())
        .arg("-q")
        .arg("-o")
        .arg(out)
        .args(["--", GO, "build", "-a", "-o"])
        .arg(dir.join("a.out"))
        .arg(".")
        .current_dir(module)
        .env("RTRACE_TIMINGS", "1")
        .stdout(Stdio::null())
        .output()
        .context("running rtrace")?;
    let err = String::from_utf8_lossy(&live.stderr);
    if !live.status.success() {
        bail!("rtrace -- go build failed: {}: {err}", live.status);
    }
    let line = err.lines().find(|l| l.starts_with("rtrace-timings: report_ms")).unwrap_or("");
    // From the build's exit as the kernel stamped it: the session's end, the drain, the detach
    // and the report — what the user waits for.
    let since_exit_ms = field(line, "since_exit_ms");
    if since_exit_ms == 0 {
        bail!("rtrace reported no exit of the build: {line:?}");
    }
    Ok(Live { since_exit_ms, report_ms: field(line, "report_ms"), peak_kib: field(line, "peak_rss_kb") })
}

pub fn report(rounds: u32) -> Result<()> {
    if !Path::new(GO).exists() {
        bail!("bench report traces a go build: {GO} not found (apt-get install golang-go)");
    }
    let dir = root().join("target/bench/report");
    let module = dir.join("gomod");
    let out = dir.join("live");
    std::fs::create_dir_all(&module)?;
    std::fs::write(module.join("go.mod"), "module benchreport\n\ngo 1.19\n")?;
    std::fs::write(module.join("main.go"), MAIN_GO)?;
    let _ = std::fs::remove_dir_all(&out);

    // Three traced builds: the machine's speed varies between runs (a VM's neighbours), and
    // one figure would say little.
    let mut live = Vec::new();
    for round in 1..=LIVE_ROUNDS {
        step(&format!("bench report: rtrace -- go build -a (net/http, encoding/json), {round}/{LIVE_ROUNDS}"));
        let _ = std::fs::remove_dir_all(&out);
        live.push(traced_build(&module, &out, &dir)?);
    }
    let capture = out.join("capture.json");
    let size_mb = std::fs::metadata(&capture).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;

    step(&format!("bench report: {rounds} replays of its capture ({size_mb:.1} MB)"));
    let (mut walls, mut rss) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let replay = dir.join(format!("replay{i}"));
        let _ = std::fs::remove_dir_all(&replay);
        let started = Instant::now();
        let child = Command::new(rtrace_bin())
            .arg("report")
            .arg(&capture)
            .arg("-q")
            .arg("-o")
            .arg(&replay)
            .stdout(Stdio::null())
            .spawn()?;
        // rtrace report starts no children: wait4's maxrss is its own.
        let (status, usage) = wait4(child.id())?;
        walls.push(started.elapsed().as_secs_f64() * 1e3);
        rss.push(usage.ru_maxrss as u64);
        if !status.success() {
            bail!("rtrace report {} failed: {status}", capture.display());
        }
        let _ = std::fs::remove_dir_all(&replay);
    }
    let verdict = |ok: bool| if ok { "ok" } else { "OVER" };
    let range = |f: fn(&Live) -> u64| {
        let mut v: Vec<u64> = live.iter().map(f).collect();
        v.sort_unstable();
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (since_min, since_med, since_max) = range(|l| l.since_exit_ms);
    let (report_min, _, report_max) = range(|l| l.report_ms);
    let (_, _, peak_kib) = range(|l| l.peak_kib);
    println!(
        "report, live:   {since_med} ms median ({since_min}-{since_max} over {LIVE_ROUNDS} builds) from the build's exit \
         to the last file written (target <= 1000: {}; the analysis and files {report_min}-{report_max} ms of it), \
         peak RSS {} MiB at most (target <= 128: {})",
        verdict(since_max <= 1000),
        peak_kib / MIB,
        verdict(peak_kib <= 128 * MIB)
    );
    let max_rss = rss.iter().copied().max().unwrap_or(0);
    println!(
        "report, replay: median {:.0} ms wall over {rounds} rounds, peak RSS {} MiB",
        median(walls),
        max_rss / MIB
    );
    Ok(())
}
