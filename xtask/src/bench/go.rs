//! `cargo xtask bench go` (issue #12 item 8): the snapshot cost of 10,000 goroutines (the
//! `snapshot_cost` test of tests/tests/go.rs), and the Go uprobes' part: the churn uprobes' CPU
//! cost per goroutine created (two hits: newproc1's RET, gdestroy/goexit0) and the target's
//! slowdown with them on, side by side with them off, on Go 1.19 and the modern Go. It is the
//! `churn_cost` test of tests/tests/go_uprobes.rs (ignored in the suite), which drives the
//! loader's Go API on tests/fixtures/go_gc.go in rounds alternating probes off and on within
//! one process.
//!
//! And the target's slowdown with the Go runtime view on (a snapshot about once a second):
//! tests/fixtures/go_batches.go (fixed CPU work in ~1 ms batches, 1,000 goroutines parked so
//! every snapshot reads something) untraced, traced with `--no-go` and traced with the Go view,
//! alternating in rounds (`rounds::alternate`), on Go 1.19 and the modern Go. Its fastest batch
//! is the cost between snapshots; the whole run's mean includes the snapshots (and the host's
//! noise).
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::rounds::{alternate, ratio_text, Tracer};
use crate::util::{cargo, root, rtrace_bin, step};

/// Batches per run and goroutines parked in the target.
const BATCHES: &str = "2000";
const PARKED: &str = "1000";

fn build_go(compiler: &str, suffix: &str) -> Result<PathBuf> {
    let out = root().join(format!("target/fixtures/go_batches-{suffix}"));
    std::fs::create_dir_all(out.parent().unwrap())?;
    let ok = Command::new(compiler)
        .args(["build", "-o"])
        .arg(&out)
        .arg(root().join("tests/fixtures/go_batches.go"))
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", root().join(format!("target/go-cache-{suffix}")))
        .status()
        .with_context(|| format!("running {compiler}"))?
        .success();
    if !ok {
        bail!("building go_batches with {compiler} failed");
    }
    Ok(out)
}

/// One traced run's Go view (from report.json): snapshots taken and goroutines seen, to show
/// the view was on while the batches ran.
fn check_view(bin: &std::path::Path) -> Result<(u64, u64)> {
    use std::io::{BufRead, Write};
    let out = std::env::temp_dir().join(format!("rtrace-bench-go-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut child = Command::new(bin).args(["1500", PARKED]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn()?;
    let mut rt = Command::new(rtrace_bin())
        .args(["-q", "--pid", &child.id().to_string(), "-o"])
        .arg(&out)
        .env("RTRACE_TIMINGS", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let mut lines = std::io::BufReader::new(rt.stderr.take().unwrap()).lines();
    if !lines.by_ref().map_while(|l| l.ok()).any(|l| l.starts_with("rtrace-timings: attached")) {
        bail!("rtrace exited before attaching");
    }
    std::thread::spawn(move || for _ in lines {});
    child.stdin.take().unwrap().write_all(b"g")?;
    child.wait()?;
    if !rt.wait()?.success() {
        bail!("rtrace failed");
    }
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json"))?)?;
    let g = &r["go"][0]["goroutines"];
    let _ = std::fs::remove_dir_all(&out);
    Ok((g["snapshots"].as_u64().unwrap_or(0), g["total"].as_u64().unwrap_or(0)))
}

fn slowdown(rounds: u32) -> Result<()> {
    step("bench go: the target's slowdown with the Go runtime view on (a snapshot about once a second)");
    let modern = root().join("target/go-modern/bin/go");
    for (compiler, suffix) in [("go".to_owned(), "go119"), (modern.display().to_string(), "modern")] {
        let bin = build_go(&compiler, suffix)?;
        let args = [BATCHES.to_owned(), PARKED.to_owned()];
        let configs =
            [("untraced", Tracer::None), ("--no-go", Tracer::Rtrace(&["--no-go"])), ("Go view", Tracer::Rtrace(&[]))];
        let r = alternate(&bin, &args, &configs, rounds)?;
        let (snapshots, seen) = check_view(&bin)?;
        println!(
            "bench go slowdown ({suffix}; {BATCHES} batches of fixed work, {PARKED} goroutines parked; a check run took {snapshots} snapshots of {seen} goroutines), fastest batch, median of {rounds} rounds:"
        );
        r.print_rows(&["untraced", "traced --no-go", "traced, Go view on"]);
        let whole = |c: usize| super::median(r.whole[c].clone());
        println!(
            "  ratio Go view / untraced: {} fastest batch, {} whole run; Go view / --no-go: {} fastest batch, {} whole run",
            ratio_text(r.median(2) / r.median(0)),
            ratio_text(whole(2) / whole(0)),
            ratio_text(r.median(2) / r.median(1)),
            ratio_text(whole(2) / whole(1)),
        );
    }
    Ok(())
}

pub fn go(rounds: u32) -> Result<()> {
    slowdown(rounds)?;
    step("bench go: goroutine churn uprobes, cost per goroutine and target slowdown");
    let ok = cargo()
        .args(["test", "--release", "-p", "tests", "--test", "go_uprobes", "--"])
        .args(["--ignored", "--exact", "churn_cost", "--nocapture", "--test-threads=1"])
        .env("RTRACE_REQUIRE_PRIVILEGED", "1")
        .current_dir(root())
        .status()?
        .success();
    if !ok {
        bail!("the go churn benchmark failed");
    }
    step("bench go: a snapshot of 10,000 goroutines (rtrace's read time per snapshot)");
    let ok = cargo()
        .args(["test", "--release", "-p", "tests", "--test", "go", "--"])
        .args(["--ignored", "--exact", "snapshot_cost", "--nocapture", "--test-threads=1"])
        .env("RTRACE_REQUIRE_PRIVILEGED", "1")
        .current_dir(root())
        .status()?
        .success();
    if !ok {
        bail!("the go snapshot benchmark failed");
    }
    Ok(())
}
