//! `cargo xtask test`: set-up, release build, then every test. Privileged integration tests run
//! one at a time (they measure CPU on a small machine and check that no rtrace BPF program is
//! left loaded, which a concurrent session would confuse). RTRACE_REQUIRE_PRIVILEGED=1 makes a
//! privileged test fail rather than skip when not root: CI runs as root and must run them.
use anyhow::Result;

use crate::util::{build_release, cargo, is_root, setup_note, sh};

pub fn run_tests(filter: Option<&str>) -> Result<()> {
    let mut unit = cargo();
    unit.args(["test", "--release", "--locked", "--workspace", "--exclude", "tracer-ebpf", "--lib", "--bins"]);
    if let Some(f) = filter {
        unit.arg(f);
    }
    sh(&mut unit)?;

    let mut integ = cargo();
    integ.args(["test", "--release", "--locked", "-p", "tests", "--tests"]);
    if is_root() {
        integ.env("RTRACE_REQUIRE_PRIVILEGED", "1");
    } else {
        setup_note("not root: privileged integration tests will be skipped (CI runs them as root)");
    }
    integ.arg("--");
    if let Some(f) = filter {
        integ.arg(f);
    }
    integ.args(["--test-threads=1"]);
    sh(&mut integ)
}

pub fn run(filter: Option<&str>) -> Result<()> {
    crate::setup::run()?;
    build_release()?;
    run_tests(filter)
}
