//! Tests of ustacks.rs.
use super::*;

fn rec(kind: u32, id: i32, tgid: u32, tid: u32, ks: i32, flags: u32, stack: &[u8]) -> Vec<u8> {
    let h = UstackHeader {
        kind,
        id,
        tgid,
        tid,
        kernel_stack_id: ks,
        flags,
        ip: 0x401000 + tid as u64,
        sp: 0x7ffd_0000,
        bp: 0,
        len: stack.len() as u32,
        _pad: 0,
        ts: 0,
    };
    // SAFETY: plain data of its own size.
    let mut v = unsafe { std::slice::from_raw_parts((&raw const h).cast::<u8>(), std::mem::size_of::<UstackHeader>()) }
        .to_vec();
    v.extend_from_slice(stack);
    v
}

#[test]
fn p99_nearest_rank() {
    assert_eq!(p99(&[]), 0);
    assert_eq!(p99(&[7]), 7);
    let v: Vec<u32> = (1..=100).collect();
    assert_eq!(p99(&v), 99);
    let v: Vec<u32> = (1..=1000).rev().collect();
    assert_eq!(p99(&v), 990);
    // 199 small values and one outlier: the outlier is above the 99th percentile.
    let mut v = vec![360; 199];
    v.push(60_000);
    assert_eq!(p99(&v), 360);
}

#[test]
fn copies_by_id_and_samples_counted() {
    let mut u = Ustacks::new(Choice::Dwarf, &[(10, MODE_DWARF), (20, MODE_FP)], 16384);
    let id = COPY_ID_BIT | 5;
    u.record(&rec(KIND_COPY, id, 10, 11, -1, 0, &[0; 64]));
    // The stub unwinder gives [ip]: the addresses come from the record's registers.
    assert_eq!(u.copy(id), Some(&[0x401000 + 11][..]));
    assert_eq!(u.copy(COPY_ID_BIT | 6), None);
    for _ in 0..3 {
        u.record(&rec(KIND_SAMPLE, 0, 10, 12, 77, 0, &[0; 16]));
    }
    u.record(&rec(KIND_SAMPLE, 0, 10, 12, 78, FLAG_CUT, &[]));
    let mut got: Vec<(SampleKey, u64)> = u.samples().map(|(k, n)| (k.clone(), n)).collect();
    got.sort_by_key(|(k, _)| k.3);
    let none = LeafFix::default();
    assert_eq!(got, vec![((10, 12, vec![0x401000 + 12], 77, none), 3), ((10, 12, vec![0x401000 + 12], 78, none), 1)]);
    assert_eq!((u.records, u.malformed), (5, 0));
    // A record shorter than its length says.
    let mut bad = rec(KIND_COPY, id + 1, 10, 11, -1, 0, &[0; 64]);
    bad.truncate(bad.len() - 1);
    u.record(&bad);
    assert_eq!((u.records, u.malformed), (6, 1));
    assert_eq!(u.copy(id + 1), None);
}

#[test]
fn ids_resolved_and_counted() {
    let mut u = Ustacks::new(Choice::Dwarf, &[], 16384);
    let id = COPY_ID_BIT | 9;
    u.record(&rec(KIND_COPY, id, 10, 11, -1, 0, &[0; 8]));
    let walked = HashMap::from([(5, crate::capture::Addrs::from(vec![1, 2, 3]))]);
    let r = UserStacks::new(&walked, &u);
    assert_eq!(*r.get(10, id, 4), [0x401000 + 11]);
    // A copy the ring never delivered: empty, and counted for its process.
    assert_eq!(*r.get(10, COPY_ID_BIT | 10, 1), [0u64; 0]);
    assert_eq!(*r.get(10, COPY_ID_BIT | 10, 0), [0u64; 0]);
    // Hash ids are frame-pointer walks, counted by the stacks they stand for.
    assert_eq!(*r.get(20, 5, 3), [1, 2, 3]);
    assert_eq!(*r.get(20, 5, 0), [1, 2, 3]);
    assert_eq!(*r.get(30, 5, 2), [1, 2, 3]);
    // No stack, deferred, or a hash id not stored: nothing, counted nowhere.
    for id in [-1, -2, 6] {
        assert_eq!(*r.get(40, id, 1), [0u64; 0]);
    }
    let (fp, unresolved) = r.counts();
    assert_eq!(fp, BTreeMap::from([(20, 3), (30, 2)]));
    assert_eq!(unresolved, BTreeMap::from([(10, 2)]));
}

#[test]
fn counted_samples_join_the_kernel_ones() {
    let mut u = Ustacks::new(Choice::Dwarf, &[], 16384);
    u.record(&rec(KIND_SAMPLE, 0, 10, 12, 7, 0, &[0; 8]));
    u.record(&rec(KIND_SAMPLE, 0, 10, 12, 7, 0, &[0; 8]));
    u.record(&rec(KIND_SAMPLE, 0, 10, 13, -1, 0, &[0; 8]));
    let mut samples =
        vec![RawSample { tgid: 20, tid: 20, user: vec![9], kernel: vec![], count: 5, ..Default::default() }];
    add_counted_samples(&mut samples, &u, |id| if id == 7 { vec![0xffff_0007] } else { vec![] });
    samples.sort_by(|a, b| (a.tgid, a.tid, &a.user, &a.kernel).cmp(&(b.tgid, b.tid, &b.user, &b.kernel)));
    type Row = (u32, u32, Vec<u64>, Vec<u64>, u64);
    let got: Vec<Row> = samples.into_iter().map(|s| (s.tgid, s.tid, s.user, s.kernel, s.count)).collect();
    assert_eq!(
        got,
        [
            (10, 12, vec![0x401000 + 12], vec![0xffff_0007], 2),
            (10, 13, vec![0x401000 + 13], vec![], 1),
            (20, 20, vec![9], vec![], 5),
        ]
    );
}

#[test]
fn stats_per_process() {
    let mut u = Ustacks::new(Choice::Auto, &[(10, MODE_DWARF), (20, MODE_FP)], 16384);
    u.on_fork(30, 10);
    u.on_fork(40, 20);
    for _ in 0..4 {
        u.record(&rec(KIND_SAMPLE, 0, 10, 10, -1, 0, &[0; 8]));
    }
    let fp = BTreeMap::from([(20, 12), (40, 3)]);
    let unresolved = BTreeMap::from([(10, 1)]);
    let drops = BTreeMap::from([(10, 2)]);
    let s = u.stats(&fp, &unresolved, &drops);
    assert_eq!(s.keys().copied().collect::<Vec<_>>(), [10, 20, 30, 40]);
    let a = &s[&10];
    assert_eq!(a.mode, "dwarf");
    // The stub's outcome for every stack: no module.
    assert_eq!((a.truncated_no_module, a.complete_cfi, a.frame_pointer), (4, 0, 0));
    assert_eq!((a.dropped, a.unresolved, a.bytes_needed_p99), (2, 1, 0));
    assert_eq!(s[&20].mode, "fp");
    assert_eq!(s[&20].frame_pointer, 12);
    // Children inherit their parent's mode.
    assert_eq!(s[&30].mode, "dwarf");
    assert_eq!((s[&40].mode.as_str(), s[&40].frame_pointer), ("fp", 3));
}
