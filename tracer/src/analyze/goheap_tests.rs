//! Tests of the heap report: literal buckets, and the live go_heap fixture end to end (read,
//! symbolize, scale, heap.pb.gz) on the four builds.
use std::collections::HashMap;

use super::*;
use crate::{
    capture::{
        go::{HeapBucket, HeapProfile},
        Capture, Mapping, ProcessInfo,
    },
    symbolize::{BlazeResolver, Resolver},
};

/// Names by file offset (of pc-1) of one fake binary.
struct Names(HashMap<u64, &'static str>);

impl Resolver for Names {
    fn user(&mut self, _path: &str, offsets: &[u64]) -> Vec<Vec<String>> {
        offsets.iter().map(|o| self.0.get(o).map(|n| n.to_string()).into_iter().collect()).collect()
    }
    fn kernel(&mut self, addrs: &[u64]) -> Vec<Option<String>> {
        vec![None; addrs.len()]
    }
}

/// The heap report of the capture's first Go process, symbolized with `r`.
fn report(c: &Capture, p: &GoProcess, r: &mut dyn Resolver) -> HeapReport {
    assert_eq!(p.pid, c.go[0].pid);
    crate::analyze::go::reports_alone(c, r).remove(0).heap
}

fn capture_with(heap: GoHeap, version: &str) -> Capture {
    let mut c = Capture::default();
    let maps = vec![Mapping { start: 0x400000, end: 0x500000, offset: 0, path: "/bin/prog".into(), build_id: None }];
    c.processes.insert(7, ProcessInfo { pid: 7, comm: "prog".into(), cmdline: vec![], maps });
    c.go.push(GoProcess { pid: 7, go_version: version.into(), heap, ..Default::default() });
    c
}

fn bucket(stack: &[u64], size: u64, allocs: u64, frees: u64) -> HeapBucket {
    HeapBucket { stack: stack.to_vec(), size, allocs, frees, alloc_bytes: allocs * size, free_bytes: frees * size }
}

#[test]
fn scaled_trimmed_and_ranked_as_pprof_does() {
    // mallocgc (runtime, hidden) <- main.keepSmall <- main.main <- runtime.goexit (pprof ends
    // stacks before it); a runtime-only stack keeps its frames.
    let names = Names(HashMap::from([
        (0x1000, "runtime.mallocgc"),
        (0x2000, "main.keepSmall"),
        (0x3000, "main.main"),
        (0x4000, "main.keepLarge"),
        (0x5000, "runtime.malg"),
        (0x6000, "runtime.goexit"),
    ]));
    let heap = GoHeap::Profile(HeapProfile {
        rate: 512 * 1024,
        buckets: vec![
            bucket(&[0x401001, 0x402001, 0x403001, 0x406001], 64, 1000, 200),
            bucket(&[0x401001, 0x404001, 0x403001], 1 << 20, 10, 0),
            bucket(&[0x405001], 416, 2, 2),
        ],
    });
    let c = capture_with(heap, "go1.19.8");
    let r = report(&c, &c.go[0], &mut Names(names.0));
    let f = |s: &HeapSample| s.frames.iter().map(|f| f.function.to_string()).collect::<Vec<_>>();
    assert_eq!(f(&r.samples[0]), ["main.main", "main.keepSmall"]);
    assert_eq!(f(&r.samples[2]), ["runtime.malg"]);
    // 1/(1-exp(-64/524288)) = 8192.5…: as runtime/pprof computes it.
    let s = 1.0 / (1.0 - (-64.0f64 / 524288.0).exp());
    assert_eq!(r.samples[0].values.inuse_objects, (800.0 * s) as i64);
    assert_eq!(r.samples[0].values.alloc_bytes, (64000.0 * s) as i64);
    assert_eq!(r.samples[2].values.inuse_objects, 0);
    // 1.19 labels only samples with allocations; all have some here.
    assert_eq!(r.samples[1].bytes_label, Some(1 << 20));
    let top: Vec<&str> = r.top.iter().map(|t| t.function.as_str()).collect();
    // Estimated: 800 sampled 64 B objects stand for 800 × 8192.5 of them (≈ 400 MiB), the 10
    // sampled 1 MiB ones for ≈ 11.6 MiB. Largest first; nothing in use: not listed.
    assert_eq!(top, ["main.keepSmall", "main.keepLarge"]);
    assert_eq!(r.top[0].called_from, ["main.main"]);
    let t = r.totals.unwrap();
    assert_eq!(t.inuse_bytes, r.samples.iter().map(|s| s.values.inuse_bytes).sum::<i64>());
    assert_eq!(r.rate, Some(524288));
    assert_eq!(scale(3, 100, 1), (3, 300), "rate 1: every allocation is in the profile");
}

#[test]
fn no_profile_is_said_plainly() {
    let c = capture_with(GoHeap::NotLinked { reason: crate::goruntime::heap::NOT_LINKED.into() }, "go1.27.3");
    let r = report(&c, &c.go[0], &mut Names(HashMap::new()));
    let u = r.unavailable.clone().unwrap();
    assert!(u.starts_with("no heap profile: the binary does not link runtime.MemProfile"), "{u}");
    assert!(u.contains("pprof.Lookup(\"heap\")"), "{u}");
    assert!(r.totals.is_none() && r.samples.is_empty());
    assert!(crate::render::heap_pprof::profile(&r, 0, String::new()).is_none(), "no empty profile");
}

/// The live fixture, read and symbolized from outside: its top in-use sites are the ones it
/// keeps, with exactly the bytes and objects it keeps (it samples every allocation).
#[test]
fn the_fixture_heap_end_to_end() {
    use crate::goruntime::{
        binary::{open, GoBinary},
        gcstats::tests::{go_fixture, Fixture, VARIANTS},
        heap,
    };
    for (modern, stripped) in VARIANTS {
        let path = go_fixture("go_heap", modern, stripped);
        let data = open(path.to_str().unwrap()).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        let g = heap::resolve(&bin).unwrap();
        let mut f = Fixture::start(&path, &[]);
        f.until_ready();
        let mut c = Capture::default();
        let maps = crate::procfs::maps(f.pid()).unwrap();
        c.processes.insert(f.pid(), ProcessInfo { pid: f.pid(), comm: "go_heap".into(), cmdline: vec![], maps });
        let hp = heap::read(f.pid(), &g, 0);
        c.go.push(GoProcess { pid: f.pid(), go_version: bin.version.raw.clone(), heap: hp, ..Default::default() });
        let r = report(&c, &c.go[0], &mut BlazeResolver::default());
        // By (innermost function, object size): a GC that the large allocations start can
        // allocate runtime objects of other sizes under main.keepLarge (its runtime frames
        // hidden), as the program's own profile shows too.
        let site = |name: &str, size: i64| {
            r.samples
                .iter()
                .filter(|s| s.bytes_label == Some(size) && s.frames.last().is_some_and(|f| &*f.function == name))
                .fold((0, 0), |(b, o), s| (b + s.values.inuse_bytes, o + s.values.inuse_objects))
        };
        assert_eq!(site("main.keepLarge", 1 << 20), (10 << 20, 10), "{}", path.display());
        assert_eq!(site("main.keepSmall", 64), (64000, 1000), "{}", path.display());
        let large = r.top.iter().find(|t| t.function == "main.keepLarge").unwrap();
        assert_eq!(large.called_from.first().map(String::as_str), Some("main.main"));
        assert_eq!(r.top[0].function, "main.keepLarge");
        assert!(r.top.iter().all(|t| t.function != "main.churn"), "nothing of churn is in use");
        // No leading runtime frame, on any sample with a non-runtime frame.
        for s in &r.samples {
            let leaf = &s.frames.last().unwrap().function;
            let all_runtime = s
                .frames
                .iter()
                .all(|f| f.function.starts_with("runtime.") || f.function.starts_with("internal/runtime/"));
            assert!(all_runtime || !leaf.starts_with("runtime."), "{leaf} in {}", path.display());
        }
    }
}

/// `go tool pprof -top` of rtrace's heap.pb.gz and of the profile the program wrote of itself
/// give the same rows for the program's functions (flat and cumulative, in-use space and
/// allocated objects), on the four builds.
#[test]
fn go_tool_pprof_reads_it_as_the_programs_own() {
    use crate::goruntime::{
        binary::{open, GoBinary},
        gcstats::tests::{go_fixture, Fixture, VARIANTS},
        heap,
    };
    let go = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go-modern/bin/go");
    let dir = tempfile::tempdir().unwrap();
    let top = |file: &std::path::Path, index: &str| -> Vec<String> {
        let out = std::process::Command::new(&go)
            .args(["tool", "pprof", "-top", &format!("-sample_index={index}")])
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rows: Vec<String> =
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(" main.")).map(str::to_owned).collect();
        assert!(rows.len() >= 3, "{rows:?}");
        rows
    };
    for (modern, stripped) in VARIANTS {
        let path = go_fixture("go_heap", modern, stripped);
        let data = open(path.to_str().unwrap()).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        let g = heap::resolve(&bin).unwrap();
        let theirs = dir.path().join("theirs");
        let mut f = Fixture::start(&path, &[("GO_HEAP_OUT", theirs.to_str().unwrap())]);
        f.until_ready();
        let mut c = Capture::default();
        let maps = crate::procfs::maps(f.pid()).unwrap();
        c.processes.insert(f.pid(), ProcessInfo { pid: f.pid(), comm: "go_heap".into(), cmdline: vec![], maps });
        let hp = heap::read(f.pid(), &g, 0);
        c.go.push(GoProcess { pid: f.pid(), go_version: bin.version.raw.clone(), heap: hp, ..Default::default() });
        let r = report(&c, &c.go[0], &mut BlazeResolver::default());
        let p = crate::render::heap_pprof::profile(&r, 0, "rtrace".into()).unwrap();
        let ours = dir.path().join("ours.pb.gz");
        crate::render::pprof::write_gz(&p, &mut std::fs::File::create(&ours).unwrap()).unwrap();
        for index in ["inuse_space", "alloc_objects"] {
            assert_eq!(top(&ours, index), top(&theirs.with_extension("pb.gz"), index), "{} {index}", path.display());
        }
    }
}
