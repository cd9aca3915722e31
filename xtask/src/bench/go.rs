//! `cargo xtask bench go` (issue #12 item 8): the snapshot cost of 10,000 goroutines (the
//! `snapshot_cost` test of tests/tests/go.rs), and the Go uprobes' part: the churn uprobes' CPU
//! cost per goroutine created (two hits: newproc1's RET, gdestroy/goexit0) and the target's
//! slowdown with them on, side by side with them off, on Go 1.19 and the modern Go. It is the
//! `churn_cost` test of tests/tests/go_uprobes.rs (ignored in the suite), which drives the
//! loader's Go API on tests/fixtures/go_gc.go in rounds alternating probes off and on within
//! one process.
use anyhow::{bail, Result};

use crate::util::{cargo, root, step};

pub fn go() -> Result<()> {
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
