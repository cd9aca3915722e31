//! `cargo xtask demo`: set up, build, and trace the bundled demo workload
//! (tests/fixtures/demo_cli.go: a Go CLI with a worker subprocess and the usual exec.Command
//! mistakes), printing the report.
use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{build_release, root, rtrace_bin, sh, step};

pub fn run() -> Result<()> {
    crate::setup::run()?;
    build_release()?;
    if !crate::util::is_root() {
        bail!("the demo loads eBPF programs: run it as root (`sudo cargo xtask demo`)");
    }
    let out_dir = root().join("target/fixtures");
    std::fs::create_dir_all(&out_dir)?;
    let demo = out_dir.join("demo_cli");
    step("building the demo workload (tests/fixtures/demo_cli.go)");
    sh(Command::new("go")
        .args(["build", "-o"])
        .arg(&demo)
        .arg(root().join("tests/fixtures/demo_cli.go"))
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", root().join("target/go-cache"))
        .env("GOPATH", root().join("target/go-path")))?;
    let report = root().join("target/demo-report");
    let _ = std::fs::remove_dir_all(&report);
    // 4 s: the demo lives about 9 s, so its never-waited-for child is still a zombie when the
    // session ends (after the demo exits, init would reap it).
    step(&format!("tracing: rtrace -d 4s -o {} -- {}", report.display(), demo.display()));
    sh(Command::new(rtrace_bin()).args(["-d", "4s", "-o"]).arg(&report).arg("--").arg(&demo))?;
    step(&format!("report files are in {}", report.display()));
    Ok(())
}
