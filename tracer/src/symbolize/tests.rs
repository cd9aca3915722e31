//! Symbolization on literal captures with a fake resolver.
use super::{fake::FakeResolver, *};
use crate::capture::{Mapping, RawSample};

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
    assert_eq!(s[0].frames[3].build_id.as_deref(), Some("ab"));
    assert_eq!(s[0].count, 5);
}

/// A waker's kernel stack taken in sched_waking: the program's image (symbolized as some
/// unrelated kernel symbol) and bpf_trace_run1 go; try_to_wake_up stays the leaf.
#[test]
fn probe_glue_frames_dropped() {
    let mut c = Capture::default();
    c.cpu_samples.push(RawSample {
        tgid: 7,
        tid: 7,
        kernel: vec![0xffff0003, 0xffff0002, 0xffff0001, 0xffff0000],
        count: 1,
        ..Default::default()
    });
    let mut r = FakeResolver::default();
    for (a, n) in [(0, "do_syscall_64"), (1, "try_to_wake_up"), (2, "bpf_trace_run1"), (3, "__stop_runtime_ptr")] {
        r.kernel.insert(0xffff0000 + a, n.into());
    }
    let s = cpu_stacks(&c, &mut r);
    let names: Vec<String> = s[0].frames.iter().map(Frame::folded_name).collect();
    assert_eq!(names, ["[unknown process]", "do_syscall_64_[k]", "try_to_wake_up_[k]"]);
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

/// libc wrappers without frame pointers: leaf `clock_nanosleep` (libc) was called by
/// `nanosleep` (libc, direct call), called through a PLT stub by `nap` (program); the walk
/// resumed in `main`. Both skipped callers come back, in order.
#[test]
fn chain_of_skipped_callers_across_modules() {
    let mut c = capture_of(
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
    r.user.push(("/bin/p".into(), 0x200, 0x300, "main".into()));
    r.user.push(("/bin/p".into(), 0x800, 0x810, "nanosleep@plt".into()));
    let leaf = Leaf { rets: [0x10250, 0x1150, 0x7777], callees: [0x10100, 0x1800, 0] };
    c.cpu_samples =
        vec![RawSample { tgid: 1, tid: 1, user: vec![0x10150, 0x1250], count: 1, leaf, ..Default::default() }];
    let s = cpu_stacks(&c, &mut r);
    let names: Vec<String> = s[0].frames.iter().map(Frame::folded_name).collect();
    assert_eq!(names, ["p", "main", "nap", "nanosleep", "clock_nanosleep"]);
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
