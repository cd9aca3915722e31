//! Symbolization on literal captures with a fake resolver.
use super::{fake::FakeResolver, *};
use crate::capture::{Mapping, ProcessInfo, RawSample};

/// A capture holding one process, `pid`, named `comm`, with these mappings.
fn capture_of(pid: u32, comm: &str, maps: Vec<Mapping>) -> Capture {
    let mut c = Capture::default();
    c.processes.insert(pid, ProcessInfo { pid, comm: comm.into(), cmdline: vec![], maps });
    c
}

#[test]
fn maps_addresses_through_captured_mappings() {
    let mut c = capture_of(
        7,
        "prog",
        vec![Mapping {
            start: 0x1000,
            end: 0x3000,
            offset: 0x10000,
            path: "/bin/prog".into(),
            build_id: Some("ab".into()),
        }],
    );
    // leaf 0x1100 (offset 0x10100 → leaf), return address 0x2001 (looked up at 0x2000 →
    // main), an address outside any mapping, one kernel frame.
    c.cpu_samples.push(RawSample {
        tgid: 7,
        tid: 8,
        user: vec![0x1100, 0x2001, 0x9999],
        kernel: vec![0xffff0001],
        count: 5,
        ..Default::default()
    });
    let mut r = FakeResolver::default();
    r.user.push(("/bin/prog".into(), 0x10100, 0x10200, "leaf".into()));
    r.user.push(("/bin/prog".into(), 0x11000, 0x11001, "main".into()));
    r.kernel.insert(0xffff0001, "do_syscall_64".into());
    let s = cpu_stacks(&c, &mut r);
    let names: Vec<String> = s[0].frames.iter().map(Frame::folded_name).collect();
    assert_eq!(names, ["prog", "[unknown] ([anon]+0x9998)", "main", "leaf", "do_syscall_64_[k]"]);
    assert_eq!(s[0].frames[3].module.build_id().map(|b| &**b), Some("ab"));
    assert_eq!(s[0].count, 5);
}

/// A waker's kernel stack taken in sched_waking: the program's image (symbolized as some
/// unrelated kernel symbol) and bpf_trace_run1 go; try_to_wake_up stays the leaf.
#[test]
fn probe_glue_frames_dropped() {
    let c = Capture::default();
    let kernel = [0xffff0003, 0xffff0002, 0xffff0001, 0xffff0000];
    let input = StackInput { tgid: 7, tid: 7, user: &[], kernel: &kernel, leaf: Leaf::default(), count: 1 };
    let mut r = FakeResolver::default();
    for (a, n) in [(0, "do_syscall_64"), (1, "try_to_wake_up"), (2, "bpf_trace_run1"), (3, "__stop_runtime_ptr")] {
        r.kernel.insert(0xffff0000 + a, n.into());
    }
    let s = stacks(&c, &[input], &mut r);
    let names: Vec<String> = s[0].frames.iter().map(Frame::folded_name).collect();
    assert_eq!(names, ["[unknown process]", "do_syscall_64_[k]", "try_to_wake_up_[k]"]);
}

/// An on-CPU sample that landed in rtrace's sys_exit hook: the hook's glue and program become
/// one frame naming rtrace, under the syscall path that ran it (not the program's own cost).
#[test]
fn probe_frames_on_cpu_named_as_rtrace() {
    let mut c = Capture::default();
    c.cpu_samples.push(RawSample {
        tgid: 7,
        tid: 7,
        kernel: vec![0xffff0004, 0xffff0003, 0xffff0002, 0xffff0001, 0xffff0000],
        count: 3,
        ..Default::default()
    });
    let mut r = FakeResolver::default();
    for (a, n) in [
        (0, "do_syscall_64"),
        (1, "syscall_exit_work"),
        (2, "__bpf_trace_sys_exit"),
        (3, "bpf_trace_run2"),
        (4, "bpf_prog_6deef7357e7b4530_rt_sys_exit"),
    ] {
        r.kernel.insert(0xffff0000 + a, n.into());
    }
    let s = cpu_stacks(&c, &mut r);
    let names: Vec<String> = s[0].frames.iter().map(Frame::folded_name).collect();
    assert_eq!(
        names,
        ["[unknown process]", "do_syscall_64_[k]", "syscall_exit_work_[k]", "[rtrace probe] sys_exit_[k]"]
    );
}

/// A walk that read 0, 1 or a non-user address had left the stack: no `[anon]+0x0` or
/// `[anon]+0xe9b5…` frame, and nothing after it.
#[test]
fn zero_and_non_canonical_addresses_are_not_frames() {
    let mut c = capture_of(
        1,
        "p",
        vec![Mapping { start: 0x1000, end: 0x9000, offset: 0, path: "/bin/p".into(), build_id: None }],
    );
    let mut r = FakeResolver::default();
    r.user.push(("/bin/p".into(), 0x100, 0x200, "leaf".into()));
    r.user.push(("/bin/p".into(), 0x200, 0x300, "caller".into()));
    r.user.push(("/bin/p".into(), 0x300, 0x400, "main".into()));
    let s = |user: Vec<u64>| RawSample { tgid: 1, tid: 1, user, count: 1, ..Default::default() };
    c.cpu_samples = vec![
        s(vec![0x1150, 0x1250, 0xe9b5_dba5_b5c0_fbce, 0x1350]),
        s(vec![0x1150, 0x1250, 0x2024_7489_4c90_c32f]),
        s(vec![0x1150, 0, 0x1350]),
        s(vec![0x1150, 1, 0x1350]),
        // Kernel-half and user-space unmapped addresses: the latter may be JIT code, kept.
        s(vec![0x1150, 0x7f00_0000_1000, 0xffff_ffff_8100_0000]),
    ];
    let st = cpu_stacks(&c, &mut r);
    let names = |i: usize| st[i].frames.iter().map(Frame::folded_name).collect::<Vec<_>>();
    assert_eq!(names(0), ["p", "caller", "leaf"]);
    assert_eq!(names(1), ["p", "caller", "leaf"]);
    assert_eq!(names(2), ["p", "leaf"]);
    assert_eq!(names(3), ["p", "leaf"]);
    assert_eq!(names(4), ["p", "[unknown] ([anon]+0x7f0000000fff)", "leaf"]);
}

/// vDSO addresses are named from the table captured from the process, one frame per function
/// (not one `[unknown] ([vdso]+0x…)` per offset).
#[test]
fn vdso_frames_named_from_captured_table() {
    let mut c = capture_of(
        1,
        "p",
        vec![
            Mapping { start: 0x1000, end: 0x9000, offset: 0, path: "/bin/p".into(), build_id: None },
            Mapping {
                start: 0x7fff_0000_0000,
                end: 0x7fff_0000_2000,
                offset: 0,
                path: "[vdso]".into(),
                build_id: None,
            },
        ],
    );
    c.vdso_symbols = vec![
        crate::capture::VdsoSymbol { offset: 0xc00, size: 0x300, name: "__vdso_clock_gettime".into() },
        crate::capture::VdsoSymbol { offset: 0xf00, size: 0x80, name: "__vdso_getcpu".into() },
    ];
    let mut r = FakeResolver::default();
    r.user.push(("/bin/p".into(), 0x300, 0x400, "main".into()));
    let s = |leaf: u64| RawSample { tgid: 1, tid: 1, user: vec![leaf, 0x1350], count: 1, ..Default::default() };
    c.cpu_samples = vec![s(0x7fff_0000_0c10), s(0x7fff_0000_0d42), s(0x7fff_0000_0f10), s(0x7fff_0000_1800)];
    let st = cpu_stacks(&c, &mut r);
    let names = |i: usize| st[i].frames.iter().map(Frame::folded_name).collect::<Vec<_>>();
    assert_eq!(names(0), ["p", "main", "__vdso_clock_gettime"]);
    assert_eq!(names(1), ["p", "main", "__vdso_clock_gettime"]);
    assert_eq!(names(2), ["p", "main", "__vdso_getcpu"]);
    assert_eq!(names(3), ["p", "main", "[unknown] ([vdso]+0x1800)"]);
    let profile = crate::analyze::cpu::CpuProfile::from_stacks(&st);
    assert!(profile.folded().contains(&"p;main;__vdso_clock_gettime 2".to_owned()), "{:?}", profile.folded());
}

/// A binary deleted while it ran (`… (deleted)` in maps) is read through the file held open
/// from /proc/PID/map_files, not left `[unknown] (x (deleted)+0x…)`.
#[test]
fn deleted_binary_read_through_held_file() {
    let mut c = capture_of(
        1,
        "x",
        vec![Mapping { start: 0x1000, end: 0x9000, offset: 0, path: "/tmp/x (deleted)".into(), build_id: None }],
    );
    let held = std::sync::Arc::new(std::fs::File::open("/dev/null").unwrap());
    c.held_files.by_mapping.insert((1, "/tmp/x (deleted)".into()), (held, "/proc/self/fd/99".into()));
    c.cpu_samples.push(RawSample { tgid: 1, tid: 1, user: vec![0x1150, 0x1350], count: 1, ..Default::default() });
    // A second process mapping a deleted file that was not held stays unknown, with its module.
    c.processes.insert(
        2,
        ProcessInfo {
            pid: 2,
            comm: "y".into(),
            cmdline: vec![],
            maps: vec![Mapping {
                start: 0x1000,
                end: 0x9000,
                offset: 0,
                path: "/tmp/y (deleted)".into(),
                build_id: None,
            }],
        },
    );
    c.cpu_samples.push(RawSample { tgid: 2, tid: 2, user: vec![0x1150], count: 1, ..Default::default() });
    let mut r = FakeResolver::default();
    r.user.push(("/proc/self/fd/99".into(), 0x100, 0x200, "burn".into()));
    r.user.push(("/proc/self/fd/99".into(), 0x300, 0x400, "main".into()));
    let st = cpu_stacks(&c, &mut r);
    let names = |i: usize| st[i].frames.iter().map(Frame::folded_name).collect::<Vec<_>>();
    assert_eq!(names(0), ["x", "main", "burn"]);
    assert_eq!(&*st[0].frames[2].module, "x (deleted)");
    assert_eq!(names(1), ["y", "[unknown] (y (deleted)+0x150)"]);
}

/// `call rel32` bytes ending at file offset `ret_off`, calling file offset `target_off` (one
/// mapping at offset 0, so file offsets and address differences agree).
fn call_at(path: &str, ret_off: u64, target_off: u64) -> (String, u64, Vec<u8>) {
    let rel = (target_off as i64 - ret_off as i64) as i32;
    let mut b = vec![0x90, 0x90, 0x90, 0xE8];
    b.extend_from_slice(&rel.to_le_bytes());
    (path.into(), ret_off - 8, b)
}

/// Go's gcDrain → scanobject, sampled in scanobject after it built its frame: the walk resumes
/// in gcDrain, whose call was to scanobject itself, so nothing was skipped — the return into
/// nanotime1 (after its indirect call into the vDSO) is a stale word in scanobject's locals.
/// Before: `gcDrain;runtime.nanotime1;runtime.scanobject`.
#[test]
fn stale_return_address_rejected_when_walk_resumed_in_the_leafs_caller() {
    let mut c = capture_of(
        1,
        "go",
        vec![Mapping { start: 0x1000, end: 0x9000, offset: 0, path: "/bin/go".into(), build_id: None }],
    );
    let mut r = FakeResolver::default();
    r.user.push(("/bin/go".into(), 0x100, 0x200, "runtime.scanobject".into()));
    r.user.push(("/bin/go".into(), 0x200, 0x300, "runtime.nanotime1".into()));
    r.user.push(("/bin/go".into(), 0x300, 0x400, "runtime.gcDrain".into()));
    r.user.push(("/bin/go".into(), 0x400, 0x500, "runtime.gcBgMarkWorker".into()));
    // gcDrain's call before its return address 0x1350 goes to scanobject (0x100).
    r.code.push(call_at("/bin/go", 0x350, 0x100));
    let leaf = Leaf { rets: [0x1250, 0, 0], callees: [0, 0, 0] };
    c.cpu_samples =
        vec![RawSample { tgid: 1, tid: 1, user: vec![0x1150, 0x1350, 0x1450], count: 1, leaf, ..Default::default() }];
    let st = cpu_stacks(&c, &mut r);
    let names: Vec<String> = st[0].frames.iter().map(Frame::folded_name).collect();
    assert_eq!(names, ["go", "runtime.gcBgMarkWorker", "runtime.gcDrain", "runtime.scanobject"]);
}

/// The same leaf sampled before it built its frame: the walk resumes in gcBgMarkWorker, whose
/// call was to gcDrain; the candidate return into gcDrain reaches it and is inserted. A chain
/// of candidates that never reaches the resumed frame's call target is dropped whole.
#[test]
fn skipped_callers_must_reach_the_resumed_frames_call_target() {
    let mut c = capture_of(
        1,
        "go",
        vec![Mapping { start: 0x1000, end: 0x9000, offset: 0, path: "/bin/go".into(), build_id: None }],
    );
    let mut r = FakeResolver::default();
    r.user.push(("/bin/go".into(), 0x100, 0x200, "runtime.scanobject".into()));
    r.user.push(("/bin/go".into(), 0x200, 0x300, "runtime.nanotime1".into()));
    r.user.push(("/bin/go".into(), 0x300, 0x400, "runtime.gcDrain".into()));
    r.user.push(("/bin/go".into(), 0x400, 0x500, "runtime.gcBgMarkWorker".into()));
    r.user.push(("/bin/go".into(), 0x500, 0x600, "runtime.systemstack".into()));
    // gcBgMarkWorker (return 0x1450) called gcDrain; systemstack (return 0x1550) called
    // nanotime1.
    r.code.push(call_at("/bin/go", 0x450, 0x300));
    r.code.push(call_at("/bin/go", 0x550, 0x200));
    let good = RawSample {
        tgid: 1,
        tid: 1,
        user: vec![0x1150, 0x1450],
        count: 1,
        leaf: Leaf { rets: [0x1350, 0, 0], callees: [0x1100, 0, 0] },
        ..Default::default()
    };
    // Resumed in systemstack (which called nanotime1), but the only candidate is gcDrain.
    let bad = RawSample { user: vec![0x1150, 0x1550], ..good.clone() };
    c.cpu_samples = vec![good, bad];
    let st = cpu_stacks(&c, &mut r);
    let names = |i: usize| st[i].frames.iter().map(Frame::folded_name).collect::<Vec<_>>();
    assert_eq!(names(0), ["go", "runtime.gcBgMarkWorker", "runtime.gcDrain", "runtime.scanobject"]);
    assert_eq!(names(1), ["go", "runtime.systemstack", "runtime.scanobject"]);
}

/// A frameless leaf: the walk gives leaf, then the caller's caller; [sp] held the return
/// into `caller`, after a call to `leaf` itself, so `caller` is inserted. With a call
/// target elsewhere, nothing is inserted.
#[test]
fn frameless_leaf_caller_inserted_only_when_call_targets_leaf() {
    let mut c = capture_of(
        1,
        "p",
        vec![Mapping { start: 0x1000, end: 0x9000, offset: 0, path: "/bin/p".into(), build_id: None }],
    );
    let mut r = FakeResolver::default();
    r.user.push(("/bin/p".into(), 0x100, 0x200, "leaf".into()));
    r.user.push(("/bin/p".into(), 0x200, 0x300, "caller".into()));
    r.user.push(("/bin/p".into(), 0x300, 0x400, "main".into()));
    r.user.push(("/bin/p".into(), 0x400, 0x500, "other".into()));
    let leaf = |callee| Leaf { rets: [0x1250, 0, 0], callees: [callee, 0, 0] };
    let good =
        RawSample { tgid: 1, tid: 1, user: vec![0x1150, 0x1350], count: 1, leaf: leaf(0x1100), ..Default::default() };
    let bad = RawSample { leaf: leaf(0x1400), ..good.clone() };
    let dup = RawSample { user: vec![0x1150, 0x1250, 0x1350], ..good.clone() };
    c.cpu_samples = vec![good, bad, dup];
    let s = cpu_stacks(&c, &mut r);
    let names = |i: usize| s[i].frames.iter().map(Frame::folded_name).collect::<Vec<_>>();
    assert_eq!(names(0), ["p", "main", "caller", "leaf"]);
    assert_eq!(names(1), ["p", "main", "leaf"]);
    assert_eq!(names(2), ["p", "main", "caller", "leaf"]);
}

/// A program `p` whose `nap` sleeps through libc's frameless nanosleep → clock_nanosleep
/// (called through a PLT stub), with `caller` above nap: the two chain tests below.
fn libc_sleep_under(caller: &str) -> (Capture, FakeResolver) {
    let c = capture_of(
        1,
        "p",
        vec![
            Mapping { start: 0x1000, end: 0x9000, offset: 0, path: "/bin/p".into(), build_id: None },
            Mapping { start: 0x10000, end: 0x19000, offset: 0, path: "/lib/libc.so".into(), build_id: None },
        ],
    );
    let mut r = FakeResolver::default();
    r.user.push(("/lib/libc.so".into(), 0x100, 0x200, "clock_nanosleep".into()));
    r.user.push(("/lib/libc.so".into(), 0x200, 0x300, "nanosleep".into()));
    r.user.push(("/bin/p".into(), 0x100, 0x200, "nap".into()));
    r.user.push(("/bin/p".into(), 0x200, 0x300, caller.into()));
    r.user.push(("/bin/p".into(), 0x800, 0x810, "nanosleep@plt".into()));
    (c, r)
}

/// libc wrappers without frame pointers: leaf `clock_nanosleep` (libc) was called by
/// `nanosleep` (libc, direct call), called through a PLT stub by `nap` (program); the walk
/// resumed in `main`. Both skipped callers come back, in order.
#[test]
fn chain_of_skipped_callers_across_modules() {
    let (mut c, mut r) = libc_sleep_under("main");
    let leaf = Leaf { rets: [0x10250, 0x1150, 0x7777], callees: [0x10100, 0x1800, 0] };
    c.cpu_samples =
        vec![RawSample { tgid: 1, tid: 1, user: vec![0x10150, 0x1250], count: 1, leaf, ..Default::default() }];
    let s = cpu_stacks(&c, &mut r);
    let names: Vec<String> = s[0].frames.iter().map(Frame::folded_name).collect();
    assert_eq!(names, ["p", "main", "nap", "nanosleep", "clock_nanosleep"]);
}

/// libc's frameless nanosleep → clock_nanosleep under the program's `nap` (which has a frame):
/// the walk resumes in sleep_half_second, whose direct call went to nap; both skipped callers
/// come back, the libc one in between included (it is not the call target, nap is).
#[test]
fn skipped_chain_through_another_module_reaches_the_call_target() {
    let (mut c, mut r) = libc_sleep_under("sleep_half_second");
    // sleep_half_second's call before 0x1250 is to nap (0x100).
    r.code.push(call_at("/bin/p", 0x250, 0x100));
    let leaf = Leaf { rets: [0x10250, 0x1150, 0], callees: [0x10100, 0x1800, 0] };
    c.cpu_samples =
        vec![RawSample { tgid: 1, tid: 1, user: vec![0x10150, 0x1250], count: 1, leaf, ..Default::default() }];
    let s = cpu_stacks(&c, &mut r);
    let names: Vec<String> = s[0].frames.iter().map(Frame::folded_name).collect();
    assert_eq!(names, ["p", "sleep_half_second", "nap", "nanosleep", "clock_nanosleep"]);
}

#[test]
fn unknown_symbols_keep_module_and_offset() {
    let mut c = capture_of(
        1,
        "p",
        vec![Mapping { start: 0x1000, end: 0x2000, offset: 0, path: "/lib/libx.so".into(), build_id: None }],
    );
    c.cpu_samples.push(RawSample {
        tgid: 1,
        tid: 1,
        user: vec![0x1234],
        kernel: vec![0xdead],
        count: 1,
        ..Default::default()
    });
    let s = cpu_stacks(&c, &mut FakeResolver::default());
    let names: Vec<String> = s[0].frames.iter().map(Frame::folded_name).collect();
    assert_eq!(names, ["p", "[unknown] (libx.so+0x234)", "[unknown] ([kernel]+0xdead)_[k]"]);
}

/// A build runs a hundred processes of one binary (`compile`), some mapped elsewhere: their
/// equal stacks are one shared list, and each file offset is looked up once for all of them.
#[test]
fn processes_of_one_binary_share_their_stacks() {
    struct Counting(FakeResolver, Vec<(String, usize)>);
    impl Resolver for Counting {
        fn user(&mut self, path: &str, offsets: &[u64]) -> Vec<Vec<String>> {
            self.1.push((path.to_owned(), offsets.len()));
            self.0.user(path, offsets)
        }
        fn kernel(&mut self, addrs: &[u64]) -> Vec<Option<String>> {
            self.0.kernel(addrs)
        }
    }
    let path = "/usr/lib/go/pkg/tool/linux_amd64/compile";
    let mut c = Capture::default();
    for (pid, start) in [(10, 0x1000), (11, 0x40_0000), (12, 0x1000)] {
        let maps = vec![Mapping { start, end: start + 0x8000, offset: 0, path: path.into(), build_id: None }];
        c.processes.insert(pid, ProcessInfo { pid, comm: "compile".into(), cmdline: vec![], maps });
        c.cpu_samples.push(RawSample {
            tgid: pid,
            tid: pid,
            user: vec![start + 0x150, start + 0x251],
            kernel: vec![0xffff0001],
            count: 1,
            ..Default::default()
        });
    }
    let mut r = FakeResolver::default();
    r.user.push((path.into(), 0x100, 0x200, "gc.Compile".into()));
    r.user.push((path.into(), 0x200, 0x300, "main.main".into()));
    r.kernel.insert(0xffff0001, "asm_exc_page_fault".into());
    let mut r = Counting(r, vec![]);
    let s = cpu_stacks(&c, &mut r);
    let names: Vec<String> = s[0].frames.iter().map(Frame::folded_name).collect();
    assert_eq!(names, ["compile", "main.main", "gc.Compile", "asm_exc_page_fault_[k]"]);
    assert!(std::sync::Arc::ptr_eq(&s[0].frames, &s[1].frames), "one list for pids 10 and 11");
    assert!(std::sync::Arc::ptr_eq(&s[0].frames, &s[2].frames), "one list for pids 10 and 12");
    assert_eq!(r.1, [(path.to_owned(), 2)]);
}

/// Stacks that share their address lists are built once (one `Frames`); equal lists that are
/// not shared give equal frames all the same, and a different leaf repair a different stack.
#[test]
fn shared_address_lists_build_one_stack() {
    let c = capture_of(
        7,
        "prog",
        vec![Mapping { start: 0x1000, end: 0x3000, offset: 0, path: "/bin/prog".into(), build_id: None }],
    );
    let mut r = FakeResolver::default();
    r.user.push(("/bin/prog".into(), 0x100, 0x200, "leaf".into()));
    r.user.push(("/bin/prog".into(), 0x200, 0x300, "main".into()));
    fn input(user: &[u64], tid: u32) -> StackInput<'_> {
        StackInput { tgid: 7, tid, user, kernel: &[], leaf: Leaf::default(), count: 1 }
    }
    let shared = vec![0x1150u64, 0x1250];
    let copy = shared.clone();
    let (shared, copy) = (&shared[..], &copy[..]);
    let s = stacks(&c, &[input(shared, 1), input(shared, 2), input(copy, 3)], &mut r);
    assert!(std::sync::Arc::ptr_eq(&s[0].frames, &s[1].frames));
    assert_eq!(s[0].frames, s[2].frames);
    let names: Vec<String> = s[0].frames.iter().map(Frame::folded_name).collect();
    assert_eq!(names, ["prog", "main", "leaf"]);
    assert_eq!((s[0].tid, s[1].tid, s[2].tid), (1, 2, 3));
}
