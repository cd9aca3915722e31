//! Tests of report.rs.
use super::*;
use crate::{
    capture::{Mapping, ProcessInfo, RawSample, RawWake},
    symbolize::fake::FakeResolver,
};

/// Records which binaries the symbolizer was asked to read, and the offsets asked.
#[derive(Default)]
struct Recording {
    inner: FakeResolver,
    paths: Vec<String>,
    offsets: Vec<u64>,
}

impl Resolver for Recording {
    fn user(&mut self, path: &str, offsets: &[u64]) -> Vec<Vec<String>> {
        self.paths.push(path.to_owned());
        self.offsets.extend(offsets);
        self.inner.user(path, offsets)
    }
    fn kernel(&mut self, addrs: &[u64]) -> Vec<Option<String>> {
        self.inner.kernel(addrs)
    }
}

/// Two wakeups of a target thread: a timer expiry that interrupted an unrelated compiler
/// (pid 9), and a write by another process (pid 8) in task context. Only the second
/// waker's binary is read; the first is named [timer] from its kernel frames.
#[test]
fn interrupted_tasks_binaries_are_not_read() {
    let proc_ = |pid: u32, path: &str| {
        let maps = vec![Mapping { start: 0x1000, end: 0x9000, offset: 0, path: path.into(), build_id: None }];
        (pid, ProcessInfo { pid, comm: format!("p{pid}"), cmdline: vec![], maps })
    };
    let mut capture = Capture {
        processes: [proc_(8, "/bin/writer"), proc_(9, "/usr/lib/libLLVM.so")].into_iter().collect(),
        ..Default::default()
    };
    let wake = |waker: u32, kernel: u64| RawWake {
        tgid: 1,
        tid: 1,
        waker_pid: waker,
        waker_tid: waker,
        waker_comm: format!("p{waker}"),
        waker_user: vec![0x2000].into(),
        waker_kernel: vec![kernel].into(),
        total_ns: 5_000_000,
        count: 1,
        max_ns: 5_000_000,
        ..Default::default()
    };
    capture.wakeups = vec![wake(9, 0xffff_0000), wake(8, 0xffff_1000)];
    let mut inner = FakeResolver::default();
    inner.kernel.insert(0xffff_0000, "hrtimer_wakeup".into());
    inner.kernel.insert(0xffff_1000, "pipe_write".into());
    inner.user.push(("/bin/writer".into(), 0, 0x8000, "write_loop".into()));
    inner.user.push(("/usr/lib/libLLVM.so".into(), 0, 0x8000, "llvm_pass".into()));
    let mut r = Recording { inner, ..Default::default() };
    let (off, _) = offcpu_profile(&capture, &mut r);
    assert_eq!(r.paths, ["/bin/writer"]);
    let names = |w: &WakeEntry| w.waker.iter().map(|f| f.function.to_string()).collect::<Vec<_>>();
    let timer = off.wakeups.iter().find(|w| w.waker_comm == "[timer]").expect("a [timer] waker");
    assert_eq!(names(timer), ["[timer]", "hrtimer_wakeup"]);
    let writer = off.wakeups.iter().find(|w| w.waker_comm == "p8").expect("the writer");
    assert_eq!(names(writer), ["p8", "write_loop", "pipe_write"]);
}

/// Every stack list of a session (on-CPU, off-CPU, blocked, wakers, slow calls) in one
/// binary: the binary is looked up once for all of them, not once per list.
#[test]
fn a_binary_is_looked_up_once_for_all_stack_lists() {
    let maps = vec![Mapping { start: 0x1000, end: 0x9000, offset: 0, path: "/bin/prog".into(), build_id: None }];
    let mut capture = Capture {
        processes: [(1, ProcessInfo { pid: 1, comm: "prog".into(), cmdline: vec![], maps })].into_iter().collect(),
        ..Default::default()
    };
    capture.session.min_block_us = Some(10);
    capture.session.slow_top = Some(20);
    capture.session.sample_frequency_hz = 99;
    let user = vec![0x1100, 0x2001];
    capture.cpu_samples = vec![RawSample { tgid: 1, tid: 1, user: user.clone(), count: 3, ..Default::default() }];
    capture.offcpu =
        vec![crate::capture::RawOff { tgid: 1, tid: 2, user: user.clone().into(), count: 1, ..Default::default() }];
    capture.wakeups = vec![RawWake {
        tgid: 1,
        tid: 2,
        user: user.clone().into(),
        waker_pid: 1,
        waker_tid: 1,
        waker_comm: "prog".into(),
        waker_user: vec![0x3000].into(),
        count: 1,
        ..Default::default()
    }];
    capture.slow_calls =
        vec![crate::capture::RawSlowCall { tgid: 1, tid: 2, user: vec![0x4000], ..Default::default() }];
    let mut inner = FakeResolver::default();
    for (start, name) in [(0x100, "leaf"), (0x1000, "main"), (0x2000, "wake"), (0x3000, "call")] {
        inner.user.push(("/bin/prog".into(), start, start + 0x100, name.into()));
    }
    let mut r = Recording { inner, ..Default::default() };
    let a = analyze(&capture, &mut r);
    assert_eq!(r.paths, ["/bin/prog"]);
    let top = &a.report.cpu.top[0];
    assert_eq!((top.function.as_str(), top.self_samples), ("leaf", 3));
    let w = &a.offcpu.wakeups[0];
    let names = |f: &[symbolize::Frame]| f.iter().map(|f| f.function.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&w.blocked), ["prog", "main", "leaf"]);
    assert_eq!(names(&w.waker), ["prog", "wake"]);
    assert_eq!(a.report.slowest_syscalls.as_ref().unwrap()[0].leaf_function.as_deref(), Some("call"));
}

/// A build's Go processes: two `compile`s of one binary (same goroutine stacks, creation
/// sites and start functions, one with a heap profile) and an on-CPU sample in it. The
/// binary is read once for all of them, each distinct offset asked once, and both
/// processes' views are named from that one lookup.
#[test]
fn go_processes_of_one_binary_are_symbolized_once_with_the_samples() {
    use crate::capture::go::{GoHeap, GoProcess, Goroutine, HeapBucket, HeapProfile};
    let maps = || vec![Mapping { start: 0x1000, end: 0x9000, offset: 0, path: "/bin/compile".into(), build_id: None }];
    let proc_ = |pid| (pid, ProcessInfo { pid, comm: "compile".into(), cmdline: vec![], maps: maps() });
    let mut capture = Capture { processes: [proc_(1), proc_(2)].into_iter().collect(), ..Default::default() };
    capture.session.sample_frequency_hz = 99;
    // leaf main.work (0x1100) <- main.main (0x2001: a return address, 0x2000 looked up)
    capture.cpu_samples =
        vec![RawSample { tgid: 1, tid: 1, user: vec![0x1100, 0x2001], count: 2, ..Default::default() }];
    let g = |goid| Goroutine { goid, status: 4, stack: Some(0), gopc: 0x3001, start_pc: 0x4000, ..Default::default() };
    let go = |pid, heap| GoProcess {
        pid,
        go_version: "go1.19.8".into(),
        stacks: vec![vec![0x1100, 0x2001]],
        last: vec![g(1), g(2)],
        heap,
        ..Default::default()
    };
    let bucket = HeapBucket { stack: vec![0x1101, 0x2001], size: 64, allocs: 2, ..Default::default() };
    let profile = GoHeap::Profile(HeapProfile { rate: 1, buckets: vec![bucket] });
    capture.go = vec![go(1, profile), go(2, GoHeap::None)];
    let mut inner = FakeResolver::default();
    for (start, name) in [(0x100, "main.work"), (0x1000, "main.main"), (0x2000, "main.spawn"), (0x3000, "main.loop")] {
        inner.user.push(("/bin/compile".into(), start, start + 0x100, name.into()));
    }
    let mut r = Recording { inner, ..Default::default() };
    let a = analyze(&capture, &mut r);
    assert_eq!(r.paths, ["/bin/compile"], "one lookup of the binary for every stack list");
    let mut distinct = r.offsets.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(r.offsets.len(), distinct.len(), "an offset asked twice: {:?}", r.offsets);
    assert_eq!(distinct, [0x100, 0x1000, 0x2000, 0x3000]);
    assert_eq!(a.report.go.len(), 2);
    for g in &a.report.go {
        let group = &g.goroutines.groups[0];
        assert_eq!((g.pid, group.count), (g.pid, 2));
        assert_eq!(group.frames, ["main.main", "main.work"]);
        assert_eq!(group.created_by.as_ref().map(|c| c.function.as_str()), Some("main.spawn"));
    }
    let heap = &a.report.go[0].heap.samples[0];
    assert_eq!(heap.frames.iter().map(|f| &*f.function).collect::<Vec<_>>(), ["main.main", "main.work"]);
    assert_eq!(a.report.cpu.top[0].function, "main.work");
}
