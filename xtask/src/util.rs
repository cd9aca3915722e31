//! Small helpers shared by the tasks.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

pub fn setup_note(msg: &str) {
    eprintln!("xtask: note: {msg}");
}

pub fn step(msg: &str) {
    eprintln!("xtask: {msg}");
}

/// Runs a command, echoing it, failing with its status.
pub fn sh(cmd: &mut Command) -> Result<()> {
    step(&format!("running {cmd:?}"));
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Output of a command, or None if it could not run or failed.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

pub fn build_release() -> Result<()> {
    // --locked: a fresh machine builds exactly the versions in Cargo.lock, never newer ones.
    sh(cargo().args(["build", "--release", "--locked", "--bins"]))
}

pub fn rtrace_bin() -> PathBuf {
    root().join("target/release/rtrace")
}

pub fn is_root() -> bool {
    // SAFETY-free: read from /proc to avoid a libc dependency.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:").map(|v| v.split_whitespace().nth(1) == Some("0"))))
        .unwrap_or(false)
}
