//! Helpers for rtrace's integration tests: build fixtures, run the real `rtrace` binary, read
//! its report directory, and check that nothing was left loaded in the kernel.
pub mod pyroscope;
pub mod serve;
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
};

use serde_json::Value;

pub fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The rtrace binary under test (built by `cargo xtask test`, or RTRACE_BIN). Tests run it
/// with its default --unwind (auto: CFI for C fixtures, frame pointers for Go), so every suite
/// checks the default path; a test that wants another mode passes --unwind.
pub fn rtrace_bin() -> PathBuf {
    let p =
        std::env::var_os("RTRACE_BIN").map(PathBuf::from).unwrap_or_else(|| root_dir().join("target/release/rtrace"));
    assert!(p.exists(), "{} missing: run `cargo xtask test` (it builds rtrace first)", p.display());
    p
}

/// Whether privileged tests can run. Not root: skip with a message, unless
/// RTRACE_REQUIRE_PRIVILEGED=1 (CI), where skipping would hide a failure.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("RTRACE_REQUIRE_PRIVILEGED").is_some() {
        panic!("{test}: needs root, and RTRACE_REQUIRE_PRIVILEGED is set");
    }
    eprintln!("SKIPPED {test}: needs root (CAP_BPF + CAP_PERFMON); `sudo cargo xtask test` runs it");
    false
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds tests/fixtures/<name>.c or <name>.go into target/fixtures/<name> (once per change).
pub fn fixture(name: &str) -> PathBuf {
    let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src_dir = root_dir().join("tests/fixtures");
    let out_dir = root_dir().join("target/fixtures");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(name);
    let c = src_dir.join(format!("{name}.c"));
    let go = src_dir.join(format!("{name}.go"));
    let src = if c.exists() { c } else { go };
    assert!(src.exists(), "no fixture source for {name}");
    let fresh = |o: &Path| {
        let (Ok(a), Ok(b)) = (o.metadata().and_then(|m| m.modified()), src.metadata().and_then(|m| m.modified()))
        else {
            return false;
        };
        a >= b
    };
    if fresh(&out) {
        return out;
    }
    let status = if src.extension().unwrap() == "c" {
        // -O0 keeps a frame pointer in every function (GCC 12 drops it in leaf functions even
        // with -mno-omit-leaf-frame-pointer at -O1), so user stacks walk completely.
        Command::new("gcc")
            .args(["-O0", "-g", "-fno-omit-frame-pointer", "-pthread", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
    } else {
        let go = std::env::var_os("RTRACE_GO").unwrap_or_else(|| "go".into());
        Command::new(go)
            .args(["build", "-o"])
            .arg(&out)
            .arg(&src)
            .env("GO111MODULE", "off")
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", root_dir().join("target/go-cache"))
            .env("GOPATH", root_dir().join("target/go-path"))
            .status()
    }
    .expect("running the fixture compiler");
    assert!(status.success(), "building fixture {name} failed");
    out
}

/// Which Go builds a Go fixture: Debian's 1.19 (wait4, kill) or the >= 1.23 that
/// `cargo xtask setup` installs (pidfds: clone CLONE_PIDFD, waitid P_PIDFD, pidfd_send_signal).
#[derive(Clone, Copy, Debug)]
pub enum Go {
    Debian119,
    Modern,
}

/// Builds tests/fixtures/<name>.go with the given Go into target/fixtures/<name>-<go>.
pub fn go_fixture(name: &str, go: Go) -> PathBuf {
    go_fixture_with(name, go, &[])
}

/// Stripped as most distributed Go CLIs are (GoReleaser's default -ldflags="-s -w"): no
/// .symtab, no DWARF.
pub fn go_fixture_stripped(name: &str) -> PathBuf {
    go_fixture_with(name, Go::Debian119, &["-ldflags=-s -w"])
}

/// One of the four builds the Go runtime view is tested on: each Go, plain or stripped.
pub fn go_fixture_variant(name: &str, go: Go, stripped: bool) -> PathBuf {
    go_fixture_with(name, go, if stripped { &["-ldflags=-s -w"] } else { &[] })
}

/// Every (Go, stripped) pair, for tests that must hold on all four builds.
pub const GO_VARIANTS: [(Go, bool); 4] =
    [(Go::Debian119, false), (Go::Debian119, true), (Go::Modern, false), (Go::Modern, true)];

fn go_fixture_with(name: &str, go: Go, flags: &[&str]) -> PathBuf {
    let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = root_dir().join(format!("tests/fixtures/{name}.go"));
    let (compiler, suffix) = match go {
        Go::Debian119 => (PathBuf::from("go"), "go119"),
        Go::Modern => (root_dir().join("target/go-modern/bin/go"), "modern"),
    };
    assert!(
        matches!(go, Go::Debian119) || compiler.exists(),
        "{} missing: `cargo xtask setup` installs a Go >= 1.23 there",
        compiler.display()
    );
    let stripped = if flags.is_empty() { "" } else { "-stripped" };
    let out = root_dir().join("target/fixtures").join(format!("{name}-{suffix}{stripped}"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let fresh = out.metadata().and_then(|m| m.modified()).ok() >= src.metadata().and_then(|m| m.modified()).ok();
    if out.exists() && fresh {
        return out;
    }
    let status = Command::new(&compiler)
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", root_dir().join(format!("target/go-cache-{suffix}")))
        .env("GOPATH", root_dir().join("target/go-path"))
        .env("GOTOOLCHAIN", "local")
        .status()
        .expect("running go");
    assert!(status.success(), "building {name} with {} failed", compiler.display());
    out
}

/// A fresh report directory under target/test-reports.
pub fn report_dir(test: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = root_dir().join("target/test-reports").join(format!(
        "{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub struct Run {
    pub output: Output,
    pub dir: PathBuf,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn report(&self) -> Value {
        let p = self.dir.join("report.json");
        let text =
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}\nstderr: {}", p.display(), self.stderr()));
        serde_json::from_str(&text).unwrap()
    }
    /// cpu.folded (or another folded file) as (stack, value) pairs.
    pub fn folded(&self, file: &str) -> Vec<(String, u64)> {
        std::fs::read_to_string(self.dir.join(file))
            .unwrap()
            .lines()
            .map(|l| {
                let (s, n) = l.rsplit_once(' ').unwrap();
                (s.to_owned(), n.parse().unwrap())
            })
            .collect()
    }
}

/// Runs rtrace with `-o <fresh dir>` and the given arguments, waiting for it to finish.
pub fn rtrace(test: &str, args: &[&str]) -> Run {
    rtrace_env(test, args, &[])
}

/// `rtrace` with extra environment variables.
pub fn rtrace_env(test: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = report_dir(test);
    let output = Command::new(rtrace_bin())
        .arg("-o")
        .arg(&dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running rtrace");
    Run { output, dir }
}

/// rtrace's BPF programs are named rt_*: none may stay loaded once a session is over. The
/// kernel frees a detached program only after its links' grace periods (raw tracepoints wait
/// for an RCU tasks-trace grace period, which takes seconds on a loaded machine), so a
/// program still listed right after exit is not yet a leak: poll, and fail only after 30 s.
pub fn assert_no_rtrace_programs() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut pause = std::time::Duration::from_millis(20);
    loop {
        let out =
            Command::new("bpftool").args(["prog", "list"]).output().expect("bpftool (installed by cargo xtask setup)");
        assert!(out.status.success(), "bpftool prog list failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let left: Vec<String> = text.lines().filter(|l| l.contains(" name rt_")).map(str::to_owned).collect();
        if left.is_empty() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!("rtrace BPF programs still loaded 30 s after the session: {left:?}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(500));
    }
}

/// Sum of values of folded stacks containing `needle`.
pub fn samples_matching(folded: &[(String, u64)], needle: &str) -> u64 {
    folded.iter().filter(|(s, _)| s.contains(needle)).map(|(_, n)| n).sum()
}

/// The CPU time a fixture reported ("<name>: cpu_ms=N") in rtrace's inherited stdout.
pub fn fixture_cpu_ms(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.split("cpu_ms=").nth(1)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no cpu_ms line in: {stdout}"))
}

/// Samples expected for `cpu_ms` of CPU time at `hz`.
pub fn expected_samples(cpu_ms: u64, hz: u64) -> u64 {
    cpu_ms * hz / 1000
}

/// Flags of the fixtures without frame pointers (issue #13): what `gcc -O2` gives by default,
/// spelled out, with debug info for line-accurate names.
pub const NOFP_CFLAGS: &[&str] = &["-O2", "-fomit-frame-pointer", "-g"];

/// Builds tests/fixtures/<name>.c with the given gcc flags into target/fixtures/<name>-<tag>
/// (once per change of the source or of the flags).
pub fn c_fixture_with(name: &str, tag: &str, flags: &[&str]) -> PathBuf {
    let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = root_dir().join(format!("tests/fixtures/{name}.c"));
    assert!(src.exists(), "no fixture source {}", src.display());
    let out = root_dir().join("target/fixtures").join(format!("{name}-{tag}"));
    let mut cmd = Command::new("gcc");
    cmd.args(flags).arg("-pthread").arg("-o").arg(&out).arg(&src);
    build_once(&src, &out, flags, cmd);
    out
}

/// A C fixture built `-O2 -fomit-frame-pointer -g` (target/fixtures/<name>-nofp).
pub fn nofp_fixture(name: &str) -> PathBuf {
    c_fixture_with(name, "nofp", NOFP_CFLAGS)
}

/// Builds tests/fixtures/<name>.rs with `rustc -C opt-level=3` (a release build: no frame
/// pointers in user code; rustc links with LLD, so text has p_offset != p_vaddr) into
/// target/fixtures/<name>-rs. No cargo: the fixture uses std only. No DWARF (names come from
/// the symbol table, unwinding from `.eh_frame`, which rustc always emits): with it, inlined
/// helpers such as core::hint::black_box would appear as frames below the fixture's own.
pub fn rust_fixture(name: &str) -> PathBuf {
    let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = root_dir().join(format!("tests/fixtures/{name}.rs"));
    assert!(src.exists(), "no fixture source {}", src.display());
    let out = root_dir().join("target/fixtures").join(format!("{name}-rs"));
    let flags = ["-C", "opt-level=3", "-C", "debuginfo=0", "--edition", "2021"];
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args(flags).arg("-o").arg(&out).arg(&src);
    build_once(&src, &out, &flags, cmd);
    out
}

/// Runs `cmd` unless `out` is newer than `src` and was built with the same flags (recorded
/// beside it in `<out>.flags`).
fn build_once(src: &Path, out: &Path, flags: &[&str], mut cmd: Command) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let stamp = out.with_extension("flags");
    let want = flags.join(" ");
    let fresh = out.metadata().and_then(|m| m.modified()).ok() >= src.metadata().and_then(|m| m.modified()).ok()
        && out.exists()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str());
    if fresh {
        return;
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(status.success(), "building fixture {} failed: {cmd:?}", src.display());
    std::fs::write(&stamp, want).unwrap();
}

/// tests/fixtures/syscall_counts `fifo`: a process blocked in `read` of a FIFO nobody writes,
/// since before rtrace attaches (a hung CLI). Killed, reaped and its FIFO removed on drop.
pub struct FifoBlocked {
    pub child: std::process::Child,
    fifo: PathBuf,
}

impl FifoBlocked {
    /// Starts it and returns once it is (nearly certainly) in its read.
    pub fn start(test: &str) -> Self {
        use std::io::BufRead;
        let fifo = report_dir(test).with_extension("fifo");
        std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut child = std::process::Command::new(fixture("syscall_counts"))
            .arg("fifo")
            .arg(&fifo)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // It prints a line just before it opens the FIFO read-write and reads it.
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        FifoBlocked { child, fifo }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn fifo(&self) -> &Path {
        &self.fifo
    }
}

impl Drop for FifoBlocked {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.fifo);
    }
}

/// Goroutines per innermost `main.*` function in a `debug=1` goroutine profile (Go's own or
/// rtrace's: "N @ …" then "#\t…" lines), without the goroutine that wrote it (in
/// runtime/pprof).
pub fn goroutines_by_main(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for block in text.split("\n\n") {
        // The first block follows the "goroutine profile: total N" header line.
        let Some(head) = block.lines().find(|l| l.contains(" @ ")) else { continue };
        let Ok(count) = head.split(" @ ").next().unwrap().trim().parse::<u64>() else { continue };
        if block.contains("runtime/pprof.writeGoroutine") {
            continue;
        }
        let main = block
            .lines()
            .filter_map(|l| l.strip_prefix("#\t"))
            .filter_map(|l| l.split('\t').nth(1))
            .map(|f| f.split('+').next().unwrap_or(f).to_owned())
            .find(|f| f.starts_with("main."));
        if let Some(f) = main {
            *out.entry(f).or_default() += count;
        }
    }
    out
}

/// The pids whose parent is `pid` now (from /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}
