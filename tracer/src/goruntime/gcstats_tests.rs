//! Tests of `gcstats` on live fixture processes (no root needed: reading one's own child's
//! memory is allowed), on the four builds: Go 1.19 and the modern Go, plain and `-s -w`.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::Mutex,
};

use super::*;
use crate::goruntime::binary::{open, GoBinary};

static BUILD: Mutex<()> = Mutex::new(());

/// (modern Go, stripped) for each of the four builds.
pub(crate) const VARIANTS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Builds tests/fixtures/NAME.go with Debian's Go 1.19 or target/go-modern, plain or stripped,
/// into target/fixtures/unit-NAME-… (rebuilt when the source is newer).
pub(crate) fn go_fixture(name: &str, modern: bool, stripped: bool) -> PathBuf {
    let _g = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let src = root().join(format!("tests/fixtures/{name}.go"));
    let (go, suffix) =
        if modern { (root().join("target/go-modern/bin/go"), "modern") } else { (PathBuf::from("go"), "go119") };
    assert!(!modern || go.exists(), "{} missing: `cargo xtask setup` installs it", go.display());
    let out = root().join(format!("target/fixtures/unit-{name}-{suffix}{}", if stripped { "-stripped" } else { "" }));
    let mtime = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    if out.exists() && mtime(&out) >= mtime(&src) {
        return out;
    }
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    // Built beside and renamed: another test binary may be running the old one.
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let mut cmd = Command::new(&go);
    cmd.arg("build");
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    let status = cmd
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", root().join(format!("target/go-cache-{suffix}")))
        .env("GOPATH", root().join("target/go-path"))
        .env("GOTOOLCHAIN", "local")
        .status()
        .expect("running go");
    assert!(status.success(), "building {name} with {} failed", go.display());
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// A fixture process this test started; killed when dropped.
pub(crate) struct Fixture {
    pub child: Child,
    pub stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Fixture {
    pub fn start(path: &Path, env: &[(&str, &str)]) -> Fixture {
        let mut child = Command::new(path)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Fixture { child, stdin, out }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines it prints up to (not including) "ready…", and that line.
    pub fn until_ready(&mut self) -> (Vec<String>, String) {
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            assert!(self.out.read_line(&mut l).unwrap() > 0, "fixture exited before ready: {lines:?}");
            let l = l.trim_end().to_owned();
            if l.starts_with("ready") {
                return (lines, l);
            }
            lines.push(l);
        }
    }

    pub fn send_line(&mut self) {
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=value` from a line of words.
pub(crate) fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .parse()
        .unwrap()
}

fn resolved(path: &Path) -> (GcGlobals, bool, u32) {
    let data = open(path.to_str().unwrap()).unwrap();
    let bin = GoBinary::parse(&data).unwrap();
    let g = resolve(&bin).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sym = bin.symbol("runtime.memstats").is_some();
    (g, sym, bin.version.minor)
}

/// Stripped builds find memstats and gcController through the code alone; on plain builds
/// the code must agree with the symbols (`resolve` refuses otherwise) and the DWARF with the
/// built-in table. That the stripped addresses are right is shown by reading them live
/// (`reads_the_gc_statistics_the_program_reports`).
#[test]
fn stripped_builds_find_the_globals_the_symbols_name() {
    for modern in [false, true] {
        let (plain, has_sym, minor) = resolved(&go_fixture("go_gcstats", modern, false));
        let (stripped, no_sym, _) = resolved(&go_fixture("go_gcstats", modern, true));
        assert!(has_sym && !no_sym);
        assert_eq!(plain.offsets_from, "dwarf");
        assert_eq!(stripped.offsets_from, "table");
        // `resolve` checked the plain build's code against its symbols. The stripped build
        // (its data may sit a few bytes elsewhere: the build flags are in .go.buildinfo) has
        // the same layout: every field at the same offset from its struct.
        let rel = |g: &GcGlobals| {
            let (m, c) = (g.memstats, g.gc_controller);
            [g.numgc - m, g.pause_total_ns - m, g.pause_ns - m, g.pause_end - m, g.heap_live - c, g.heap_marked - c]
        };
        assert_eq!(rel(&plain), rel(&stripped), "modern {modern}");
        assert!(stripped.memstats.abs_diff(plain.memstats) < 4096, "modern {modern}");
        // The built-in table is the DWARF's layout for this version.
        let t = table(minor).unwrap();
        assert_eq!(plain.numgc - plain.memstats, t.numgc);
        assert_eq!(plain.heap_live - plain.gc_controller, t.heap_live);
        assert_eq!(plain.heap_marked - plain.gc_controller, t.heap_marked);
        assert_eq!(plain.heap_goal.map(|a| a - plain.gc_controller), t.heap_goal);
        assert_eq!(plain.gc_cpu_fraction.map(|a| a - plain.memstats), t.gc_cpu_fraction);
    }
}

#[test]
fn no_table_for_unmeasured_versions() {
    assert!(table(20).is_none() && table(18).is_none() && table(28).is_none());
    assert_eq!(table(24).unwrap().numgc, 7704);
    assert_eq!(table(25).unwrap().numgc, 7680);
}

/// The GC fixture runs 7 cycles and prints its own ReadMemStats: numgc, the pause total and
/// the pauses read from outside equal its own, then 5 more cycles are seen as 5 new pauses.
#[test]
fn reads_the_gc_statistics_the_program_reports() {
    for (modern, stripped) in VARIANTS {
        let path = go_fixture("go_gcstats", modern, stripped);
        let (g, _, _) = resolved(&path);
        let mut f = Fixture::start(&path, &[("GO_GC_CYCLES", "7"), ("GO_GC_MORE", "5")]);
        let (lines, _) = f.until_ready();
        let mut r = GcReader::new(f.pid(), &g, 0);
        r.read(0).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let numgc = field(&lines[0], "numgc");
        assert!(numgc >= 7, "{lines:?}");
        assert_eq!(u64::from(r.gc().numgc_start), numgc, "{}", path.display());
        assert_eq!(r.gc().pause_total_start_ns, field(&lines[0], "pause_total_ns"));
        let (live, goal) = (r.gc().heap[0].1, r.gc().heap[0].2);
        assert!(live > 0 && live < 1 << 30, "heap live {live}");
        assert!((4 << 20..1 << 30).contains(&goal), "heap goal {goal}");
        // Nothing happened between two reads.
        r.read(1).unwrap();
        assert!(r.gc().pauses.is_empty());

        f.send_line();
        let (lines, _) = f.until_ready();
        r.read(2).unwrap();
        let gc = r.into_gc();
        assert_eq!(u64::from(gc.numgc_end), field(&lines[0], "numgc"));
        assert_eq!(gc.numgc_end - gc.numgc_start, 5, "{}", path.display());
        assert_eq!(gc.pause_total_end_ns, field(&lines[0], "pause_total_ns"));
        let theirs: Vec<(u64, u64)> =
            lines[lines.len() - 5..].iter().map(|l| (field(l, "end"), field(l, "ns"))).collect();
        assert_eq!(gc.pauses, theirs);
        assert_eq!(gc.pauses_missed, 0);
        assert_eq!(gc.heap.len(), 3);
    }
}

/// Validation refuses what is not a GC history: the same reader pointed 8 bytes off.
#[test]
fn refuses_a_wrong_address() {
    let path = go_fixture("go_gcstats", false, true);
    let (g, _, _) = resolved(&path);
    let mut f = Fixture::start(&path, &[("GO_GC_CYCLES", "3")]);
    f.until_ready();
    let off = GcGlobals { pause_total_ns: g.pause_total_ns + 8, ..g.clone() };
    let e = GcReader::new(f.pid(), &off, 0).read(0).unwrap_err();
    assert!(e.contains("does not hold GC statistics"), "{e}");
    assert!(GcReader::new(f.pid(), &g, 0).read(0).is_ok());
}
