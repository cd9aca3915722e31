//! The goroutine reader on live fixture processes this test starts (and kills): reading a
//! child's memory needs no BPF and no root. Every test holds on the four builds (Go 1.19 and
//! 1.27, plain and stripped).
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
};

use super::{binary, binary::GoBinary, goroutines::*, target};

/// A running `go_parked EXTRA 30`, ready (every goroutine at its parking place).
pub struct Parked {
    pub child: Child,
    pub path: std::path::PathBuf,
}

impl Parked {
    pub fn start(go: ::tests::Go, stripped: bool, extra: u32) -> Parked {
        Parked::run(::tests::go_fixture_variant("go_parked", go, stripped), extra)
    }

    pub fn run(path: std::path::PathBuf, extra: u32) -> Parked {
        let mut child = Command::new(&path)
            .args([extra.to_string(), "30".into()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting go_parked");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.any(|l| l.is_ok_and(|l| l == "ready")), "go_parked never got ready");
        Parked { child, path }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// go_parked built as a PIE (`-buildmode=pie`, as Debian and some distributions build Go
/// programs): loaded at a random base, and in Go 1.19 its function table is
/// `.data.rel.ro.gopclntab`.
fn pie_fixture(go: ::tests::Go, stripped: bool) -> std::path::PathBuf {
    let root = ::tests::root_dir();
    let (compiler, suffix) = match go {
        ::tests::Go::Debian119 => (std::path::PathBuf::from("go"), "go119"),
        ::tests::Go::Modern => (root.join("target/go-modern/bin/go"), "modern"),
    };
    let out = root.join(format!("target/fixtures/go_parked-{suffix}-pie{}", if stripped { "-stripped" } else { "" }));
    let src = root.join("tests/fixtures/go_parked.go");
    let fresh = out.metadata().and_then(|m| m.modified()).ok() >= src.metadata().and_then(|m| m.modified()).ok();
    if !(out.exists() && fresh) {
        let mut c = Command::new(compiler);
        c.args(["build", "-buildmode=pie"]);
        if stripped {
            c.arg("-ldflags=-s -w");
        }
        let ok = c
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .env("GO111MODULE", "off")
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", root.join(format!("target/go-cache-{suffix}")))
            .env("GOTOOLCHAIN", "local")
            .status()
            .unwrap()
            .success();
        assert!(ok, "building {}", out.display());
    }
    out
}

impl Drop for Parked {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_name(s: u32) -> &'static str {
    match s {
        RUNNABLE => "runnable",
        RUNNING => "running",
        SYSCALL => "syscall",
        WAITING => "waiting",
        _ => "other",
    }
}

/// (wait reason or state, innermost main.* function) → count, asserting on the way that
/// every frame of every stack is named and every stack ends in runtime.goexit.
fn census(bin: &GoBinary, t: &target::Target, snap: &Snapshot) -> BTreeMap<(String, String), u32> {
    let name = |pc: u64| bin.func_name_at(pc.wrapping_sub(t.bias)).map(str::to_owned);
    for (i, s) in snap.stacks.iter().enumerate() {
        // The resume pc as is; return addresses minus 1 (the call, not what follows it).
        let names: Vec<Option<String>> =
            s.iter().enumerate().map(|(k, pc)| name(if k == 0 { *pc } else { pc - 1 })).collect();
        assert!(names.iter().all(Option::is_some), "stack {i}: unnamed frames {s:x?} {names:?}");
        assert_eq!(names.last().unwrap().as_deref(), Some("runtime.goexit"), "stack {i}: {names:?}");
    }
    let mut out = BTreeMap::new();
    for l in &snap.goroutines {
        let g = &l.g;
        let what = if g.status == WAITING {
            t.rt.globals.wait_reasons[g.wait_reason as usize].clone()
        } else {
            status_name(g.status).to_owned()
        };
        let Some(stack) = g.stack else { continue };
        let main =
            snap.stacks[stack as usize].iter().skip(1).filter_map(|pc| name(pc - 1)).find(|n| n.starts_with("main."));
        if let Some(f) = main {
            *out.entry((what, f)).or_insert(0) += 1;
        }
    }
    out
}

fn expected(t: &target::Target, extra: u32) -> BTreeMap<(String, String), u32> {
    let wg = if t.rt.globals.wait_reasons.iter().any(|r| r == "sync.WaitGroup.Wait") {
        "sync.WaitGroup.Wait"
    } else {
        "semacquire"
    };
    let mut e: BTreeMap<(String, String), u32> = [
        ("chan receive", "main.recvWorker", 3),
        ("select", "main.selectWorker", 2),
        ("sleep", "main.sleeper", 4),
        (wg, "main.waiter", 5),
        ("syscall", "main.runChild", 1),
        ("chan receive", "main.main", 1),
    ]
    .into_iter()
    .map(|(r, f, n)| ((r.to_owned(), f.to_owned()), n))
    .collect();
    if extra > 0 {
        e.insert(("chan receive".into(), "main.bulkWorker".into()), extra);
    }
    e
}

fn no_regs(_: u32) -> Option<tracer_common::thread::TaskRegs> {
    None
}

/// A snapshot once main has parked in `<-quit` (it prints "ready" just before: it may
/// still be in that write).
fn settled(t: &target::Target) -> Snapshot {
    for _ in 0..300 {
        let s = t.snapshot(&no_regs).unwrap();
        if s.goroutines.iter().any(|l| l.g.goid == 1 && l.g.status == WAITING) {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("main never parked");
}

/// The exact counts per (wait reason, function) the fixture sets up, every frame named,
/// and the syscall goroutine unwound through os/exec.(*Cmd).Wait to main.runChild on its
/// thread: with syscallbp (1.27) and by frame size (1.19), no thread registers needed.
#[test]
fn snapshot_counts_every_parked_goroutine() {
    for (go, stripped) in ::tests::GO_VARIANTS {
        let p = Parked::start(go, stripped, 0);
        let data = binary::open(p.path.to_str().unwrap()).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        let t = target::open(p.pid()).unwrap().expect("a Go process");
        assert_eq!(t.version, bin.version.raw);
        assert_eq!(t.rt.layout.from, if stripped { "table" } else { "dwarf" });
        let snap = settled(&t);
        let what = format!("{} stripped={stripped}", t.version);
        assert_eq!(census(&bin, &t, &snap), expected(&t, 0), "{what}");
        assert_eq!(snap.dropped, 0, "{what}");
        let main = snap.goroutines.iter().find(|l| l.g.goid == 1).unwrap();
        assert_eq!(main.g.status, WAITING, "{what}");
        let sys: Vec<_> = snap.goroutines.iter().filter(|l| l.g.status == SYSCALL).collect();
        assert_eq!(sys.len(), 1, "{what}");
        let tid = sys[0].g.tid;
        assert!(
            tid != 0 && std::path::Path::new(&format!("/proc/{}/task/{tid}", p.pid())).exists(),
            "{what}: tid {tid}"
        );
        let frames: Vec<_> = snap.stacks[sys[0].g.stack.unwrap() as usize]
            .iter()
            .skip(1)
            .filter_map(|pc| bin.func_name_at(pc - 1 - t.bias))
            .collect();
        assert!(frames.contains(&"os/exec.(*Cmd).Wait"), "{what}: {frames:?}");
        // Creation sites: the 3 receivers share one, in main.main (goroutine 1); they start
        // in the go statement's wrapper (main.main.func1 / gowrap1), not main.recvWorker.
        let recv: Vec<_> = snap
            .goroutines
            .iter()
            .filter(|l| {
                l.g.stack.is_some_and(|s| {
                    snap.stacks[s as usize]
                        .iter()
                        .any(|pc| bin.func_name_at(pc - 1 - t.bias) == Some("main.recvWorker"))
                })
            })
            .collect();
        assert_eq!(recv.len(), 3, "{what}");
        assert!(recv.iter().all(|l| l.g.gopc == recv[0].g.gopc && l.g.start_pc == recv[0].g.start_pc), "{what}");
        let start = bin.func_name_at(recv[0].g.start_pc - t.bias).unwrap();
        assert!(start.starts_with("main.main.") || start == "main.recvWorker", "{what}: {start}");
        assert_eq!(bin.func_name_at(recv[0].g.gopc - 1 - t.bias), Some("main.main"), "{what}");
        if t.rt.layout.parent_goid.is_some() {
            assert!(recv.iter().all(|l| l.g.parent_goid == 1), "{what}");
        }
        eprintln!("{what}: {} goroutines in {} µs", snap.goroutines.len(), snap.read_us);
    }
}

/// Not Go: a distinct, cheap outcome (this test binary is Rust). A vanished pid: an error.
#[test]
fn not_go_and_gone() {
    assert!(matches!(target::open(std::process::id()), Ok(None)));
    let e = target::open(u32::MAX - 1).err().expect("no such process");
    assert!(e.reason.contains("No such file"), "{e}");
}

/// Wrong offsets are caught by validation, not reported: a goid offset off by 8 (the
/// stale-table failure of the doc) and a status offset pointing elsewhere.
#[test]
fn validation_refuses_wrong_offsets() {
    let p = Parked::start(::tests::Go::Modern, true, 0);
    let t = target::open(p.pid()).unwrap().unwrap();
    for (field, edit) in [("goid", 8isize), ("atomicstatus", 12), ("sched_sp", 8)] {
        let mut rt = (*t.rt).clone();
        match field {
            "goid" => rt.layout.goid = (rt.layout.goid as isize + edit) as usize,
            "atomicstatus" => rt.layout.atomicstatus = (rt.layout.atomicstatus as isize + edit) as usize,
            _ => rt.layout.sched_sp = (rt.layout.sched_sp as isize + edit) as usize,
        }
        let bad = target::Target {
            pid: t.pid,
            exe: t.exe.clone(),
            version: t.version.clone(),
            rt: Arc::new(rt),
            bias: t.bias,
            mem: super::mem::Mem::new(p.pid()),
        };
        assert!(bad.validate().is_err(), "{field} +{edit} passed validation");
    }
    assert_eq!(t.validate(), Ok(()));
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// 10,000 parked goroutines (plus the fixture's own): counted exactly, and a snapshot costs
/// at most 20 ms of this thread's CPU (the best of 5 reads: the machine is shared). Also
/// prints the figure for ~60 goroutines.
#[test]
fn snapshot_of_10000_goroutines_is_exact_and_cheap() {
    for (go, stripped) in ::tests::GO_VARIANTS {
        for extra in [40, 10_000] {
            let p = Parked::start(go, stripped, extra);
            let data = binary::open(p.path.to_str().unwrap()).unwrap();
            let bin = GoBinary::parse(&data).unwrap();
            let t = target::open(p.pid()).unwrap().unwrap();
            settled(&t);
            let mut best = u64::MAX;
            let mut snap = None;
            for _ in 0..5 {
                let c0 = thread_cpu_ns();
                let s = t.snapshot(&no_regs).unwrap();
                best = best.min(thread_cpu_ns() - c0);
                snap = Some(s);
            }
            let snap = snap.unwrap();
            let what = format!("{} stripped={stripped}", t.version);
            assert_eq!(census(&bin, &t, &snap), expected(&t, extra), "{what}");
            eprintln!(
                "{what}: {} goroutines, {} stacks: best snapshot {:.2} ms CPU",
                snap.goroutines.len(),
                snap.stacks.len(),
                best as f64 / 1e6
            );
            if extra == 10_000 {
                assert!(best <= 20_000_000, "{what}: {best} ns");
            }
        }
    }
}

/// By hand, on any Go process: `GOSNAP_PID=N cargo test --release -p tracer --lib
/// dump_a_live_process -- --ignored --nocapture` prints its goroutines grouped by stack.
#[test]
#[ignore]
fn dump_a_live_process() {
    let pid: u32 = std::env::var("GOSNAP_PID").expect("GOSNAP_PID").parse().unwrap();
    let t = match target::open(pid) {
        Ok(Some(t)) => t,
        Ok(None) => return eprintln!("{pid}: not a Go executable"),
        Err(e) => return eprintln!("{pid}: {e} ({})", e.go_version),
    };
    let data = binary::open(&format!("/proc/{pid}/exe")).unwrap();
    let bin = GoBinary::parse(&data).unwrap();
    let c0 = thread_cpu_ns();
    let snap = t.snapshot(&no_regs).unwrap();
    let cpu = thread_cpu_ns() - c0;
    eprintln!(
        "{pid} {} {} offsets, {} goroutines, {} dropped, {:.2} ms CPU",
        t.version,
        t.rt.layout.from,
        snap.goroutines.len(),
        snap.dropped,
        cpu as f64 / 1e6
    );
    let mut groups: BTreeMap<(u32, u32, Option<u32>), u32> = BTreeMap::new();
    for l in &snap.goroutines {
        *groups.entry((l.g.status, l.g.wait_reason, l.g.stack)).or_default() += 1;
    }
    for ((status, reason, stack), n) in groups {
        let what = if status == WAITING {
            t.rt.globals.wait_reasons[reason as usize].clone()
        } else {
            status_name(status).into()
        };
        let frames: Vec<&str> = stack
            .map(|s| {
                snap.stacks[s as usize]
                    .iter()
                    .enumerate()
                    .map(|(k, pc)| bin.func_name_at(if k == 0 { *pc } else { pc - 1 } - t.bias).unwrap_or("?"))
                    .collect()
            })
            .unwrap_or_default();
        eprintln!("{n} [{what}]: {}", frames.join(" <- "));
    }
}

/// PIE builds read the same, through the load bias from /proc/PID/maps.
#[test]
fn pie_builds_read_the_same() {
    for (go, stripped) in ::tests::GO_VARIANTS {
        let p = Parked::run(pie_fixture(go, stripped), 0);
        let data = binary::open(p.path.to_str().unwrap()).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        assert!(bin.is_pie());
        let t = target::open(p.pid()).unwrap().expect("a Go process");
        assert_ne!(t.bias, 0, "{}: a PIE is loaded at a random base", t.version);
        let snap = settled(&t);
        assert_eq!(census(&bin, &t, &snap), expected(&t, 0), "{} stripped={stripped} PIE", t.version);
    }
}

/// A deleted executable still reads (through /proc/PID/exe), and a second open of the same
/// binary uses the cached description.
#[test]
fn deleted_binary_and_cache() {
    let src = ::tests::go_fixture_variant("go_parked", ::tests::Go::Modern, true);
    let copy = ::tests::root_dir().join(format!("target/tmp/go_parked-deleted-{}", std::process::id()));
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&src, &copy).unwrap();
    let p = Parked::run(copy.clone(), 0);
    std::fs::remove_file(&copy).unwrap();
    let t = target::open(p.pid()).unwrap().expect("a Go process");
    assert!(t.exe.ends_with(" (deleted)"), "{}", t.exe);
    let data = binary::open(src.to_str().unwrap()).unwrap();
    let bin = GoBinary::parse(&data).unwrap();
    assert_eq!(census(&bin, &t, &settled(&t)), expected(&t, 0));
    let again = target::open(p.pid()).unwrap().unwrap();
    assert!(Arc::ptr_eq(&t.rt, &again.rt), "resolved once per binary");
}
