//! Goroutine groups, blocked times and the waiters the ledger's findings name, on a literal
//! capture of one Go process (pid 100) and a fake symbol table.
use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::{
    analyze::children::{FindingKind, Severity},
    capture::{
        go::{GoSnapshot, Goroutine},
        Mapping, ProcessInfo,
    },
    lifecycle::{LifeEvent, Lifecycle, PipeEnd, ProcSnapshot, WaitCall, WaitTarget},
    symbolize::fake::FakeResolver,
};

pub const PID: u32 = 100;
const S: u64 = 1_000_000_000;
/// CLOCK_MONOTONIC at the session's start.
pub const START_MONO: u64 = 1_000 * S;

const FUNCS: &[(u64, &str)] = &[
    (0x1000, "runtime.gopark"),
    (0x1100, "runtime.chanrecv"),
    (0x1200, "runtime.chanrecv1"),
    (0x2000, "main.worker"),
    (0x2100, "main.main.func1"),
    (0x2200, "main.runChild"),
    (0x3000, "main.main"),
    (0x3100, "runtime.main"),
    (0x3200, "runtime.goexit"),
    (0x3300, "runtime.bgsweep"),
    (0x4000, "os/exec.(*Cmd).Wait"),
    (0x4100, "os/exec.(*Cmd).Run"),
    (0x4200, "os/exec.(*Cmd).awaitGoroutines"),
    (0x5000, "syscall.Syscall6"),
    (0x5100, "os.(*Process).pidfdWait"),
    (0x5200, "os.(*Process).Wait"),
];

/// The address 0x10 into the function named `name`.
fn at(name: &str) -> u64 {
    0x400010 + FUNCS.iter().find(|f| f.1 == name).unwrap().0
}

pub fn resolver() -> FakeResolver {
    let mut r = FakeResolver::default();
    for (off, name) in FUNCS {
        r.user.push(("/bin/app".into(), *off, off + 0x100, (*name).into()));
    }
    r
}

fn stack(names: &[&str]) -> Vec<u64> {
    names.iter().map(|n| at(n)).collect()
}

fn reasons() -> Vec<String> {
    let mut w: Vec<String> = (0..15).map(|i| format!("reason {i}")).collect();
    w[0] = String::new();
    w[2] = "chan receive (nil chan)".into();
    w[5] = "GC sweep wait".into();
    w[14] = "chan receive".into();
    w
}

fn g(goid: u64, status: u32, reason: u32, stack: u32, gopc: u64, start: &str) -> Goroutine {
    Goroutine {
        goid,
        status,
        wait_reason: reason,
        gopc,
        start_pc: at(start) - 0x10,
        parent_goid: if goid == 1 { 0 } else { 1 },
        stack: Some(stack),
        ..Default::default()
    }
}

/// The creation site of the workers (a return address in main.main) and of the nil-channel
/// goroutine.
pub fn worker_site() -> u64 {
    at("main.main") + 0x10
}
fn nil_site() -> u64 {
    at("main.main") + 0x20
}

/// Goroutine 1 in os/exec.(*Cmd).Wait (in waitid on thread 101), three workers in chan
/// receive (one blocked since 5 s before attach, as `waitsince` shows), one on a nil channel,
/// and the runtime's sweeper. Snapshots at 0, 1, 2, 3 s.
pub fn go_capture() -> Capture {
    let mut c = Capture::default();
    c.session.start_mono_ns = START_MONO;
    c.session.duration_ms = 3000;
    c.target.pid = PID;
    let maps = vec![Mapping { start: 0x400000, end: 0x500000, offset: 0, path: "/bin/app".into(), build_id: None }];
    c.processes.insert(PID, ProcessInfo { pid: PID, comm: "app".into(), cmdline: vec!["app".into()], maps });
    let stacks = vec![
        stack(&["runtime.gopark", "runtime.chanrecv", "runtime.chanrecv1", "main.worker", "runtime.goexit"]),
        stack(&[
            "syscall.Syscall6",
            "os.(*Process).pidfdWait",
            "os.(*Process).Wait",
            "os/exec.(*Cmd).Wait",
            "os/exec.(*Cmd).Run",
            "main.runChild",
            "main.main",
            "runtime.main",
            "runtime.goexit",
        ]),
        stack(&["runtime.gopark", "runtime.chanrecv", "runtime.chanrecv1", "main.main.func1", "runtime.goexit"]),
        stack(&["runtime.gopark", "runtime.bgsweep", "runtime.goexit"]),
    ];
    // Its creation site is in the runtime (rt0_go), which Go does not name.
    let mut main = g(1, 3, 0, 1, at("runtime.main") + 0x20, "runtime.main");
    main.tid = 101;
    let parked = |mut g: Goroutine, since: u64, before: bool, wait_since: u64| {
        g.parked_since_ns = Some(since);
        g.parked_before_first = before;
        g.wait_since = wait_since;
        g
    };
    let last = vec![
        main,
        parked(g(7, 4, 14, 0, worker_site(), "main.worker"), S, false, 0),
        parked(g(8, 4, 14, 0, worker_site(), "main.worker"), 0, true, 0),
        parked(g(9, 4, 14, 0, worker_site(), "main.worker"), S, false, START_MONO - 5 * S),
        parked(g(20, 4, 2, 2, nil_site(), "main.main.func1"), 2 * S, false, 0),
        parked(g(2, 4, 5, 3, at("runtime.main"), "runtime.bgsweep"), 0, true, 0),
    ];
    let snap = |at_ns: u64| GoSnapshot { at_ns, live: 6, by_site: BTreeMap::new(), ..Default::default() };
    c.go = vec![GoProcess {
        pid: PID,
        go_version: "go1.27.3".into(),
        wait_reasons: reasons(),
        snapshots: vec![snap(0), snap(S), snap(2 * S), snap(3 * S)],
        last,
        stacks,
        ..Default::default()
    }];
    c
}

fn goroutines(c: &Capture) -> GoroutinesReport {
    crate::analyze::go::reports_alone(c, &mut resolver()).remove(0).goroutines
}

#[test]
fn groups_by_state_reason_stack_and_site_largest_first() {
    let r = goroutines(&go_capture());
    assert_eq!((r.total, r.system, r.snapshots, r.at_ms), (5, 1, 4, 3000));
    assert_eq!(r.by_state, [("syscall".to_string(), 1), ("waiting".to_string(), 4)].into_iter().collect());
    assert_eq!(
        r.by_wait_reason,
        [("chan receive".to_string(), 3), ("chan receive (nil chan)".to_string(), 1)].into_iter().collect()
    );
    let w = &r.groups[0];
    assert_eq!((w.count, w.state.as_str(), w.wait_reason.as_deref()), (3, "waiting", Some("chan receive")));
    assert_eq!(w.frames, ["main.worker", "runtime.chanrecv1", "runtime.chanrecv", "runtime.gopark"]);
    assert_eq!(w.created_by, Some(CreatedBy { function: "main.main".into(), goid: Some(1), at: None }));
    assert_eq!(w.goids, [7, 8, 9]);
    // Goroutine 9: parked since the 1 s snapshot, but the runtime's waitsince says 5 s before
    // attach: 8 s at the 3 s snapshot, a lower bound.
    assert_eq!((w.blocked_ms, w.blocked_at_least, w.forever), (Some(8000), true, false));
    // Then the longer blocked of the singles: the nil channel (forever), then the syscall.
    let n = &r.groups[1];
    assert_eq!((n.goids.as_slice(), n.wait_reason.as_deref()), (&[20][..], Some("chan receive (nil chan)")));
    assert_eq!((n.blocked_ms, n.blocked_at_least, n.forever), (Some(1000), false, true));
    assert_eq!(n.frames[0], "main.main.func1");
    let m = &r.groups[2];
    assert_eq!((m.state.as_str(), m.wait_reason.as_deref(), m.blocked_ms), ("syscall", None, None));
    assert_eq!(m.frames[..3], ["runtime.main", "main.main", "main.runChild"]);
    assert_eq!(m.created_by, None, "the runtime's unexported functions are not named as creators");
    assert_eq!(r.groups.len(), 3, "the runtime's sweeper is not a group");
    let json = serde_json::to_value(w).unwrap();
    assert_eq!(json["created_by"], json!({"function": "main.main", "goid": 1}));
    assert_eq!(json["blocked_ms"], json!(8000));
    assert!(json.get("stack").is_none() && json.get("gopc").is_none());
}

#[test]
fn without_the_session_clock_waitsince_is_not_used() {
    let mut c = go_capture();
    c.session.start_mono_ns = 0;
    let r = goroutines(&c);
    // Goroutine 8, parked there since before the first snapshot: at least 3 s.
    assert_eq!((r.groups[0].blocked_ms, r.groups[0].blocked_at_least), (Some(3000), true));
}

#[test]
fn the_cmd_wait_goroutine_is_a_waiter_with_the_callers_function() {
    let r = goroutines(&go_capture());
    let w = GoWaiter { goid: 1, tid: 101, in_syscall: true, in_cmd_wait: true, function: Some("main.runChild".into()) };
    assert_eq!(r.waiters, [w]);
}

fn child_lifecycle(wait: Option<WaitCall>) -> Lifecycle {
    let fork =
        LifeEvent::Fork { ts_ns: S / 2, pid: 18127, parent_pid: PID, parent_tid: 101, parent_comm: "app".into() };
    let argv = vec!["sleep".to_string(), "30".to_string()];
    let exec = LifeEvent::Exec { ts_ns: S / 2, pid: 18127, filename: "/usr/bin/sleep".into(), argv };
    let fin = ProcSnapshot {
        pid: 18127,
        ppid: PID,
        state: 'S',
        comm: "sleep".into(),
        cmdline: vec!["sleep".into(), "30".into()],
        exit_status: None,
        syscall: Some("clock_nanosleep".into()),
    };
    Lifecycle {
        root_pid: PID,
        events: vec![fork, exec],
        waits_in_flight: wait.into_iter().collect(),
        final_procs: vec![fin],
        end_ns: 3 * S,
        ..Default::default()
    }
}

/// The root's thread 101 has been in waitid for `sleep 30` since 0.5 s: the wait_stall names
/// goroutine 1, its function and os/exec.(*Cmd).Wait.
#[test]
fn wait_stall_names_the_goroutine_in_cmd_wait() {
    let mut c = go_capture();
    let w = WaitCall {
        pid: PID,
        tid: 101,
        syscall: "waitid".into(),
        target: WaitTarget::Pidfd { fd: 5, pid: Some(18127) },
        options: 0,
        start_ns: S / 2,
        end_ns: None,
        ret: None,
        reaped_pid: None,
        exit: None,
    };
    c.lifecycle = child_lifecycle(Some(w));
    let a = crate::report::analyze(&c, &mut resolver());
    let f = a.report.findings.iter().find(|f| f.kind == FindingKind::WaitStall).expect("a wait_stall");
    assert!(
        f.summary.starts_with(
            "goroutine 1 (main.runChild) of pid 100 has been blocked 2.5 s in os/exec.(*Cmd).Wait (waitid on thread 101) for child pid 18127 (sleep 30), which is sleeping in clock_nanosleep"
        ),
        "{}",
        f.summary
    );
    assert_eq!(f.fields["goroutine"], json!({"goid": 1, "function": "main.runChild", "in_cmd_wait": true, "tid": 101}));
    // Another thread's wait is not goroutine 1's.
    c.go[0].last[0].tid = 102;
    let a = crate::report::analyze(&c, &mut resolver());
    let f = a.report.findings.iter().find(|f| f.kind == FindingKind::WaitStall).unwrap();
    assert!(f.summary.starts_with("thread 101 of pid 100 has been blocked 2.5 s in waitid for child"), "{}", f.summary);
}

/// The child exited, its grandchild holds the root's pipe; goroutine 1 is parked in Cmd.Wait
/// (chan receive, waiting for the pipe copiers).
#[test]
fn pipe_held_names_the_parked_cmd_wait_goroutine() {
    let mut c = go_capture();
    let mut l = child_lifecycle(None);
    l.final_procs.clear();
    l.events.push(LifeEvent::Fork {
        ts_ns: S,
        pid: 18128,
        parent_pid: 18127,
        parent_tid: 18127,
        parent_comm: "sh".into(),
    });
    l.events.push(LifeEvent::Exit { ts_ns: S, pid: 18127, comm: "sleep".into(), status: Some(0) });
    let end = |pid: u32, write_end: bool| PipeEnd {
        pid,
        comm: if pid == PID { "app".into() } else { "sleep".into() },
        fd: 4,
        inode: 777,
        write_end,
        seen_at_ns: Some(2 * S),
    };
    l.pipes = vec![end(PID, false), end(18128, true)];
    c.lifecycle = l;
    let go = &mut c.go[0];
    let chanrecv = stack(&[
        "runtime.gopark",
        "runtime.chanrecv",
        "runtime.chanrecv1",
        "os/exec.(*Cmd).awaitGoroutines",
        "os/exec.(*Cmd).Wait",
        "os/exec.(*Cmd).Run",
        "main.runChild",
        "main.main",
        "runtime.main",
        "runtime.goexit",
    ]);
    go.stacks.push(chanrecv);
    go.last[0] = Goroutine { status: 4, wait_reason: 14, tid: 0, stack: Some(4), ..go.last[0].clone() };
    let a = crate::report::analyze(&c, &mut resolver());
    let f = a.report.findings.iter().find(|f| f.kind == FindingKind::PipeHeldByDescendant).expect("pipe_held");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(
        f.summary,
        "pid 18128 (sleep), a descendant of exited child pid 18127, still holds the write end of pipe 777 that pid 100 reads, so goroutine 1 (main.runChild) in os/exec.(*Cmd).Wait for child pid 18127 (sleep 30) cannot return until it exits: set cmd.WaitDelay, or start the child in its own process group and kill the group."
    );
    assert_eq!(f.fields["goroutine"]["goid"], json!(1));
}
