//! Tests of `heap` on live fixture processes (no root needed) on the four builds, against the
//! profile the program writes of itself, and on literal buckets.
use super::*;
use crate::goruntime::{
    binary::open,
    gcstats::tests::{go_fixture, Fixture, VARIANTS},
};

/// One record line of a debug=1 heap profile: (inuse objects, inuse bytes, alloc objects,
/// alloc bytes, stack).
type Record = (u64, u64, u64, u64, Vec<u64>);

/// The header totals and the records of `pprof.Lookup("heap").WriteTo(w, 1)`.
pub(crate) fn parse_debug1(text: &str) -> ([u64; 4], u64, Vec<Record>) {
    let nums = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).map(|w| w.parse().unwrap()).collect()
    };
    let mut lines = text.lines();
    let head = lines.next().unwrap();
    let (counts, rate) = head.strip_prefix("heap profile: ").unwrap().split_once(" @ heap/").unwrap();
    let h = nums(counts);
    let mut records = Vec::new();
    for l in lines {
        // Each record is followed by its symbolized stack ("#\t0x…") and a blank line; the
        // MemStats at the end are comments too.
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (c, stack) = l.split_once(" @").unwrap();
        let c = nums(c);
        let stack =
            stack.split_whitespace().map(|p| u64::from_str_radix(p.trim_start_matches("0x"), 16).unwrap()).collect();
        records.push((c[0], c[1], c[2], c[3], stack));
    }
    ([h[0], h[1], h[2], h[3]], rate.trim().parse::<u64>().unwrap() / 2, records)
}

fn as_records(p: &HeapProfile) -> Vec<Record> {
    p.buckets
        .iter()
        .map(|b| (b.allocs - b.frees, b.alloc_bytes - b.free_bytes, b.allocs, b.alloc_bytes, b.stack.clone()))
        .collect()
}

/// Sorted, without empty records (the program's own allocations after it wrote its profile
/// create buckets that hold nothing yet as of the last GC).
fn comparable(mut r: Vec<Record>) -> Vec<Record> {
    r.retain(|r| r.2 != 0 || r.0 != 0);
    r.sort();
    r
}

/// The live fixture's heap, read from outside, is exactly the profile it wrote of itself:
/// every record (stack, in-use and allocated objects and bytes) and the header totals; and
/// the known allocation sites hold what the program keeps.
#[test]
fn reads_the_heap_profile_the_program_writes() {
    for (modern, stripped) in VARIANTS {
        let path = go_fixture("go_heap", modern, stripped);
        let data = open(path.to_str().unwrap()).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        let g = resolve(&bin).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("heap.txt");
        let mut f = Fixture::start(&path, &[("GO_HEAP_OUT", out.to_str().unwrap())]);
        f.until_ready();
        let GoHeap::Profile(p) = read(f.pid(), &g, 0) else { panic!("{}: no profile", path.display()) };
        let (totals, rate, theirs) = parse_debug1(&std::fs::read_to_string(&out).unwrap());
        assert_eq!(p.rate, 1, "the fixture sets MemProfileRate = 1");
        assert_eq!(rate, p.rate);
        let ours = as_records(&p);
        let sum = |i: usize| ours.iter().map(|r| [r.0, r.1, r.2, r.3][i]).sum::<u64>();
        assert_eq!([sum(0), sum(1), sum(2)], [totals[0], totals[1], totals[2]], "{}", path.display());
        // (The runtime adds 1 to the allocated bytes when they equal the in-use bytes.)
        assert!(totals[3] == sum(3) || (totals[3] == sum(3) + 1 && sum(3) == sum(1)));
        assert_eq!(comparable(ours), comparable(theirs), "{}", path.display());

        let site = |func: &str, size: u64| -> (u64, u64) {
            p.buckets
                .iter()
                .filter(|b| b.size == size && b.stack.iter().any(|&pc| bin.func_name_at(pc - 1) == Some(func)))
                .fold((0, 0), |(i, a), b| (i + b.allocs - b.frees, a + b.allocs))
        };
        assert_eq!(site("main.keepSmall", 64), (1000, 1000), "{}", path.display());
        assert_eq!(site("main.keepLarge", 1 << 20), (10, 10), "{}", path.display());
        assert_eq!(site("main.churn", 128), (0, 5000), "{}", path.display());
    }
}

/// A program without runtime/pprof keeps no heap profile: said so, nothing read.
#[test]
fn a_binary_without_mem_profile_is_not_linked() {
    for (modern, stripped) in VARIANTS {
        let path = go_fixture("go_gcstats", modern, stripped);
        let data = open(path.to_str().unwrap()).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        assert_eq!(resolve(&bin), Err(GoHeap::NotLinked { reason: NOT_LINKED.into() }), "{}", path.display());
    }
}

fn raw(size: u64, cycles: [[u64; 2]; 4]) -> Raw {
    Raw { stack: vec![0x401000], size, cycles: cycles.map(|[a, f]| [a, f, a * size, f * size]) }
}

/// As MemProfile: active plus the unflushed cycle; every cycle when nothing is active yet.
#[test]
fn counts_are_what_mem_profile_reports() {
    let counts = |b: Vec<HeapBucket>| b.iter().map(|b| (b.allocs, b.frees, b.alloc_bytes)).collect::<Vec<_>>();
    // Cycle 4: future[4 % 3 = 1] is between mark termination and its flush: it counts;
    // future[0] and [2] are later cycles: they do not.
    // cycles: [active, future[0], future[1], future[2]].
    let r = vec![raw(16, [[10, 2], [3, 1], [100, 0], [7, 7]]), raw(32, [[0, 0], [0, 0], [5, 0], [0, 0]])];
    assert_eq!(counts(as_mem_profile(r, 4)), [(110, 2, 1760), (5, 0, 160)]);
    // No GC has completed (active and future[0 % 3] empty everywhere): every cycle.
    let r = vec![raw(16, [[0, 0], [0, 0], [2, 0], [3, 1]]), raw(32, [[0, 0], [0, 0], [5, 0], [0, 0]])];
    assert_eq!(counts(as_mem_profile(r, 0)), [(5, 1, 80), (5, 0, 160)]);
}
