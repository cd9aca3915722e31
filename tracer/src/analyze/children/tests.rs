//! Unit tests of the ledger and findings on literal event sequences.
use super::*;

const S: u64 = 1_000_000_000;
const ROOT: u32 = 1200;
const CLD_EXITED: i32 = 1;
const SI_USER: i32 = 0;

fn lc(events: Vec<LifeEvent>, end_ns: u64) -> Lifecycle {
    Lifecycle { root_pid: ROOT, events, end_ns, ..Default::default() }
}
fn run(l: &Lifecycle) -> ChildrenReport {
    analyze(l, &ChildrenConfig::default())
}
fn fork(ts_ns: u64, pid: u32, parent_pid: u32) -> LifeEvent {
    LifeEvent::Fork { ts_ns, pid, parent_pid, parent_tid: parent_pid, parent_comm: "parent".into() }
}
fn exec(ts_ns: u64, pid: u32, argv: &[&str]) -> LifeEvent {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    LifeEvent::Exec { ts_ns, pid, filename: format!("/usr/bin/{}", argv[0]), argv }
}
fn exit(ts_ns: u64, pid: u32, comm: &str) -> LifeEvent {
    LifeEvent::Exit { ts_ns, pid, comm: comm.into(), status: None }
}
#[allow(clippy::too_many_arguments)]
fn sig(
    ts_ns: u64,
    sender_pid: u32,
    sender_tid: u32,
    sender_comm: &str,
    target_pid: u32,
    signal: i32,
    code: i32,
    result: i32,
) -> LifeEvent {
    LifeEvent::Signal {
        ts_ns,
        sender_pid,
        sender_tid,
        sender_comm: sender_comm.into(),
        target_pid,
        target_comm: String::new(),
        signal,
        code,
        result,
    }
}
fn sigchld_ev(ts: u64, child: u32, parent: u32, result: i32) -> LifeEvent {
    sig(ts, child, child, "child", parent, SIGCHLD, CLD_EXITED, result)
}
fn call(pid: u32, tid: u32, syscall: &str, target: WaitTarget, start_ns: u64, end_ns: Option<u64>) -> WaitCall {
    WaitCall {
        pid,
        tid,
        syscall: syscall.into(),
        target,
        options: 0,
        start_ns,
        end_ns,
        ret: None,
        reaped_pid: None,
        exit: None,
    }
}
fn reaped(w: WaitCall, child: u32, exit: ExitInfo) -> LifeEvent {
    LifeEvent::Wait(WaitCall { ret: Some(child as i64), reaped_pid: Some(child), exit: Some(exit), ..w })
}
fn snap(pid: u32, ppid: u32, state: char, comm: &str, cmdline: &[&str]) -> ProcSnapshot {
    ProcSnapshot {
        pid,
        ppid,
        state,
        comm: comm.into(),
        cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
        exit_status: None,
        syscall: None,
    }
}
fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}
fn rec(r: &ChildrenReport, pid: u32) -> &ChildRecord {
    r.children.iter().find(|c| c.pid == pid).unwrap()
}
fn kinds(r: &ChildrenReport) -> Vec<(FindingKind, Severity)> {
    r.findings.iter().map(|f| (f.kind, f.severity)).collect()
}
const EXITED0: ExitInfo = ExitInfo::Exited { code: 0 };
const KILLED9: ExitInfo = ExitInfo::Killed { signal: 9, core_dumped: false };

/// Exit, then Exec, then Fork in the vector: the record is built from timestamps.
#[test]
fn zombie_child_never_reaped_with_events_out_of_order() {
    let mut l = lc(
        vec![
            exit(3 * S, 1234, "sleep"),
            sigchld_ev(3 * S + 10_000, 1234, ROOT, 0),
            exec(1_100_000_000, 1234, &["sleep", "1"]),
            fork(S, 1234, ROOT),
        ],
        5_300_000_000,
    );
    l.final_procs = vec![ProcSnapshot { exit_status: Some(0), ..snap(1234, ROOT, 'Z', "sleep", &[]) }];
    let r = run(&l);
    assert_eq!(
        r.children,
        vec![ChildRecord {
            pid: 1234,
            ppid: ROOT,
            argv: vec!["sleep".into(), "1".into()],
            comm: "sleep".into(),
            forked_at_ns: Some(S),
            execd_at_ns: Some(1_100_000_000),
            exited_at_ns: Some(3 * S),
            exit: Some(EXITED0),
            killed_by: None,
            sigchld_delivered: Some(true),
            reaped_at_ns: None,
            reaped_by: None,
            zombie_ns: None,
            never_reaped: true,
            zombie_age_ns: Some(2_300_000_000),
            zombie_at_attach: false,
            alive_at_end: false,
            orphaned: false,
        }]
    );
    assert_eq!(
        r.findings,
        vec![Finding {
            kind: FindingKind::ZombieChild,
            severity: Severity::High,
            summary: "pid 1234 (sleep 1) exited 2.3 s ago and was never reaped by its parent pid 1200: call Wait() after Start() (or waitpid) for every child.".into(),
            fields: obj(json!({"pid": 1234, "parent_pid": 1200, "zombie_ms": 2300, "reaped": false, "cmdline": "sleep 1"})),
        }]
    );
}

/// No events at all: a zombie in `initial` and `final_procs` with its status in /proc.
#[test]
fn zombie_at_attach_from_snapshots_only() {
    let z = ProcSnapshot { exit_status: Some(2 << 8), ..snap(1300, ROOT, 'Z', "make", &[]) };
    let mut l = lc(vec![], 10 * S);
    l.initial = vec![z.clone()];
    l.final_procs = vec![z];
    let r = run(&l);
    let c = rec(&r, 1300);
    assert_eq!(c.forked_at_ns, None);
    assert_eq!(c.exited_at_ns, None);
    assert_eq!(c.exit, Some(ExitInfo::Exited { code: 2 }));
    assert_eq!(c.argv, vec!["make".to_string()]);
    assert!(c.zombie_at_attach && c.never_reaped && !c.alive_at_end);
    assert_eq!(c.zombie_age_ns, Some(10 * S));
    assert_eq!(c.sigchld_delivered, None);
    assert_eq!(r.findings.len(), 1);
    let f = &r.findings[0];
    assert_eq!(f.kind, FindingKind::ZombieChild);
    assert_eq!(
        f.summary,
        "pid 1300 (make) has been a zombie for over 10.0 s (since before attach) and was never reaped by its parent pid 1200: call Wait() after Start() (or waitpid) for every child."
    );
    assert_eq!(
        f.fields,
        obj(json!({"pid": 1300, "parent_pid": 1200, "zombie_ms": 10000, "reaped": false, "cmdline": "make"}))
    );
}

/// The reaping Wait comes first in the vector, the Exit and the Fork after it.
#[test]
fn slow_reap_with_wait_before_exit_in_vector() {
    let w = call(ROOT, 1201, "wait4", WaitTarget::Pid { pid: 1234 }, 3_400_000_000, Some(3_500_000_000));
    let l = lc(
        vec![
            reaped(w, 1234, EXITED0),
            exit(S, 1234, "true"),
            sigchld_ev(S + 20_000, 1234, ROOT, 0),
            fork(200_000_000, 1234, ROOT),
        ],
        5 * S,
    );
    let r = run(&l);
    let c = rec(&r, 1234);
    assert_eq!(c.reaped_at_ns, Some(3_500_000_000));
    assert_eq!(c.reaped_by, Some(Reaper { pid: ROOT, tid: 1201, call: "wait4".into() }));
    assert_eq!(c.zombie_ns, Some(2_500_000_000));
    assert_eq!(c.exit, Some(EXITED0));
    assert_eq!(c.sigchld_delivered, Some(true));
    assert_eq!(c.argv, vec!["true".to_string()]);
    assert!(!c.never_reaped && !c.alive_at_end);
    assert_eq!(
        r.findings,
        vec![Finding {
            kind: FindingKind::SlowReap,
            severity: Severity::Medium,
            summary: "pid 1234 (true) stayed a zombie for 2.5 s before pid 1200 reaped it (wait4 by thread 1201): reap promptly (call Wait as soon as the child can exit; handle SIGCHLD).".into(),
            fields: obj(json!({"pid": 1234, "parent_pid": 1200, "zombie_ms": 2500})),
        }]
    );
    // A higher threshold silences it.
    let lax = analyze(&l, &ChildrenConfig { slow_reap_ns: 3 * S, ..Default::default() });
    assert!(lax.findings.is_empty());
}

/// Prompt wait, auto-reap seen only as Free (SIGCHLD ignored), and a late Free.
#[test]
fn prompt_reaps_and_free_only_reaps() {
    let w = call(ROOT, ROOT, "waitid", WaitTarget::AnyChild, S, Some(S + 5_000_000));
    let l = lc(
        vec![
            fork(0, 1234, ROOT),
            exit(S, 1234, "a"),
            reaped(w, 1234, EXITED0),
            fork(0, 1235, ROOT),
            exit(S, 1235, "b"),
            sigchld_ev(S + 1000, 1235, ROOT, 1),
            LifeEvent::Free { ts_ns: S + 10_000_000, pid: 1235 },
            fork(0, 1236, ROOT),
            exit(S, 1236, "c"),
            LifeEvent::Free { ts_ns: 3 * S, pid: 1236 },
        ],
        5 * S,
    );
    let r = run(&l);
    assert_eq!(rec(&r, 1234).zombie_ns, Some(5_000_000));
    let b = rec(&r, 1235);
    assert_eq!(b.reaped_by, Some(Reaper { pid: 0, tid: 0, call: "free".into() }));
    assert_eq!(b.zombie_ns, Some(10_000_000));
    assert_eq!(b.sigchld_delivered, Some(false));
    assert_eq!(b.exit, None);
    assert_eq!(b.killed_by, None);
    assert_eq!(r.findings.len(), 1);
    let f = &r.findings[0];
    assert_eq!(f.kind, FindingKind::SlowReap);
    assert_eq!(f.fields, obj(json!({"pid": 1236, "parent_pid": 1200, "zombie_ms": 2000})));
    assert_eq!(
        f.summary,
        "pid 1236 (c) stayed a zombie for 2.0 s before pid 1200 reaped it (task freed): reap promptly (call Wait as soon as the child can exit; handle SIGCHLD)."
    );
}

/// Exit lost (1234), and Fork lost too (1240: known only from the wait that reaped it).
#[test]
fn reaping_wait_without_exit_or_fork() {
    let w1 = call(ROOT, ROOT, "wait4", WaitTarget::Pid { pid: 1234 }, 2 * S, Some(2 * S + 1000));
    let w2 = call(ROOT, ROOT, "wait4", WaitTarget::AnyChild, 3 * S, Some(3 * S + 1000));
    let l =
        lc(vec![fork(S, 1234, ROOT), reaped(w1, 1234, ExitInfo::Exited { code: 3 }), reaped(w2, 1240, EXITED0)], 5 * S);
    let r = run(&l);
    assert_eq!(r.children.iter().map(|c| c.pid).collect::<Vec<_>>(), vec![1240, 1234]);
    let c = rec(&r, 1234);
    assert_eq!((c.exited_at_ns, c.exit, c.zombie_ns), (None, Some(ExitInfo::Exited { code: 3 }), None));
    assert_eq!(c.reaped_at_ns, Some(2 * S + 1000));
    assert_eq!(c.sigchld_delivered, None);
    let d = rec(&r, 1240);
    assert_eq!((d.ppid, d.forked_at_ns, d.argv.clone()), (ROOT, None, Vec::<String>::new()));
    assert!(r.findings.is_empty());
}

#[test]
fn wait_stall_in_flight_for_a_pid() {
    let mut l = lc(vec![fork(S, 1234, ROOT), exec(S, 1234, &["sleep", "3"])], 5 * S);
    l.waits_in_flight = vec![call(ROOT, 1201, "waitid", WaitTarget::Pid { pid: 1234 }, 2 * S, None)];
    l.final_procs = vec![
        snap(ROOT, 1, 'S', "app", &["app"]),
        ProcSnapshot { syscall: Some("clock_nanosleep".into()), ..snap(1234, ROOT, 'S', "sleep", &["sleep", "3"]) },
    ];
    let r = run(&l);
    assert!(rec(&r, 1234).alive_at_end);
    assert_eq!(r.children.len(), 1, "the root is not a child");
    assert_eq!(
        r.findings,
        vec![Finding {
            kind: FindingKind::WaitStall,
            severity: Severity::High,
            summary: "thread 1201 of pid 1200 has been blocked 3.0 s in waitid for child pid 1234 (sleep 3), which is sleeping in clock_nanosleep: the wait is as long as the child's work; set a timeout (exec.CommandContext / WaitDelay) if that is unexpected.".into(),
            fields: obj(json!({
                "waiter_tid": 1201, "waiter_pid": 1200, "child_pid": 1234, "blocked_ms": 3000,
                "child_state": "sleeping", "child_blocked_in": "clock_nanosleep", "in_flight": true,
            })),
        }]
    );
}

/// A completed AnyChild wait names the child it reaped; waits by other processes and short
/// waits are not findings.
#[test]
fn wait_stall_completed_any_child() {
    let long = call(ROOT, ROOT, "wait4", WaitTarget::AnyChild, S, Some(3 * S));
    let short = call(ROOT, ROOT, "wait4", WaitTarget::AnyChild, 4 * S, Some(4 * S + 900_000_000));
    let by_child = call(1234, 1234, "wait4", WaitTarget::AnyChild, S, None);
    let l = lc(
        vec![
            fork(0, 1234, ROOT),
            exec(0, 1234, &["sleep", "2"]),
            exit(3 * S - 1000, 1234, "sleep"),
            reaped(long, 1234, EXITED0),
            fork(0, 1235, ROOT),
            exit(4 * S + 800_000_000, 1235, "x"),
            reaped(short, 1235, EXITED0),
            LifeEvent::Wait(WaitCall { end_ns: Some(4 * S), ..by_child.clone() }),
        ],
        6 * S,
    );
    let mut l2 = l.clone();
    l2.waits_in_flight = vec![by_child];
    for l in [l, l2] {
        let r = run(&l);
        assert_eq!(r.findings.len(), 1);
        let f = &r.findings[0];
        assert_eq!(
            f.summary,
            "thread 1200 of pid 1200 was blocked 2.0 s in wait4 for child pid 1234 (sleep 2), which exited: the wait is as long as the child's work; set a timeout (exec.CommandContext / WaitDelay) if that is unexpected."
        );
        assert_eq!(
            f.fields,
            obj(json!({
                "waiter_tid": 1200, "waiter_pid": 1200, "child_pid": 1234, "blocked_ms": 2000,
                "child_state": "exited", "child_blocked_in": null, "in_flight": false,
            }))
        );
    }
}

/// waitid(P_PIDFD) with an unmapped fd: the latest Pidfd event of the same process for that
/// fd before the wait started names the child.
#[test]
fn wait_stall_pidfd_mapped_by_event() {
    let mut l = lc(
        vec![
            fork(0, 1234, ROOT),
            fork(0, 1250, ROOT),
            LifeEvent::Pidfd { ts_ns: 400_000_000, pid: ROOT, fd: 7, target_pid: 1250 },
            LifeEvent::Pidfd { ts_ns: 500_000_000, pid: ROOT, fd: 7, target_pid: 1234 },
            LifeEvent::Pidfd { ts_ns: 600_000_000, pid: 1250, fd: 7, target_pid: 9999 },
            LifeEvent::Pidfd { ts_ns: 4 * S, pid: ROOT, fd: 7, target_pid: 1250 },
        ],
        5 * S,
    );
    l.waits_in_flight = vec![call(ROOT, 1201, "waitid", WaitTarget::Pidfd { fd: 7, pid: None }, S, None)];
    l.final_procs = vec![snap(1234, ROOT, 'R', "busy", &["busy"]), snap(1250, ROOT, 'S', "idle", &["idle"])];
    let r = run(&l);
    assert_eq!(r.findings.len(), 1);
    assert_eq!(
        r.findings[0].fields,
        obj(json!({
            "waiter_tid": 1201, "waiter_pid": 1200, "child_pid": 1234, "blocked_ms": 4000,
            "child_state": "running", "child_blocked_in": null, "in_flight": true,
        }))
    );
    assert!(r.findings[0].summary.contains("for child pid 1234 (busy), which is running: "));

    // Mapped by the collector already, to a child gone by the end.
    l.waits_in_flight[0].target = WaitTarget::Pidfd { fd: 7, pid: Some(1260) };
    let f = &run(&l).findings[0];
    assert_eq!(f.fields["child_pid"], json!(1260));
    assert_eq!(f.fields["child_state"], json!("exited"));
    assert!(f.summary.contains("for child pid 1260, which has already exited: "));
}

/// An in-flight AnyChild wait: the child is the only live one, or unknown when ambiguous.
#[test]
fn wait_stall_any_child_in_flight() {
    let mut l = lc(vec![fork(0, 1234, ROOT), fork(0, 1235, ROOT), exit(S, 1235, "done")], 5 * S);
    l.waits_in_flight = vec![call(ROOT, 1201, "wait4", WaitTarget::AnyChild, 2 * S, None)];
    l.final_procs = vec![snap(1234, ROOT, 'D', "dd", &["dd"])];
    let f = &run(&l).findings[0];
    assert_eq!((f.fields["child_pid"].clone(), f.fields["child_state"].clone()), (json!(1234), json!("disk")));

    l.final_procs.push(snap(1236, ROOT, 'S', "other", &["other"]));
    let f = &run(&l).findings[0];
    assert_eq!(
        f.fields,
        obj(json!({
            "waiter_tid": 1201, "waiter_pid": 1200, "child_pid": null, "blocked_ms": 3000,
            "child_state": null, "child_blocked_in": null, "in_flight": true,
        }))
    );
    assert_eq!(
        f.summary,
        "thread 1201 of pid 1200 has been blocked 3.0 s in wait4 for any child: the wait is as long as the child's work; set a timeout (exec.CommandContext / WaitDelay) if that is unexpected."
    );
}

/// The target's own SIGKILL (exec.CommandContext): a later already-pending duplicate from
/// elsewhere and a signal after the exit are not the cause.
#[test]
fn killed_by_the_target() {
    let w = call(ROOT, ROOT, "wait4", WaitTarget::Pid { pid: 1234 }, 2 * S, Some(2 * S + 2_000_000));
    let l = lc(
        vec![
            fork(S, 1234, ROOT),
            exec(S, 1234, &["sleep", "10"]),
            sig(2 * S, ROOT, 1203, "myapp", 1234, SIGKILL, SI_USER, 0),
            sig(2 * S + 500_000, 4444, 4444, "other", 1234, SIGKILL, SI_USER, 2),
            sig(3 * S, 5555, 5555, "late", 1234, SIGKILL, SI_USER, 0),
            exit(2 * S + 1_000_000, 1234, "sleep"),
            reaped(w, 1234, KILLED9),
        ],
        5 * S,
    );
    let r = run(&l);
    let sender = SignalSender {
        signal: "SIGKILL".into(),
        signal_number: 9,
        sender_pid: ROOT,
        sender_tid: 1203,
        sender_comm: "myapp".into(),
        by_target: true,
        kernel: false,
    };
    assert_eq!(rec(&r, 1234).killed_by, Some(sender));
    assert_eq!(
        r.findings,
        vec![Finding {
            kind: FindingKind::KilledBySignal,
            severity: Severity::Medium,
            summary: "pid 1234 (sleep 10) was killed by the target's own SIGKILL from thread 1203 (exec.CommandContext cancel or an explicit Kill): expected if the target meant to stop it.".into(),
            fields: obj(json!({
                "pid": 1234, "signal": "SIGKILL", "signal_number": 9, "sender_pid": 1200,
                "sender_comm": "myapp", "sender_tid": 1203, "by_target": true, "kernel": false,
            })),
        }]
    );
}

/// OOM kill of a child left a zombie: exit status from the final snapshot.
#[test]
fn killed_by_the_kernel_and_left_a_zombie() {
    let mut l = lc(
        vec![
            fork(S, 1234, ROOT),
            sig(2 * S, 777, 778, "java", 1234, SIGKILL, SI_KERNEL, 0),
            exit(2 * S + 1000, 1234, "hog"),
        ],
        4 * S,
    );
    l.final_procs = vec![ProcSnapshot { exit_status: Some(9), ..snap(1234, ROOT, 'Z', "hog", &[]) }];
    let r = run(&l);
    assert_eq!(rec(&r, 1234).exit, Some(KILLED9));
    assert_eq!(
        kinds(&r),
        vec![(FindingKind::ZombieChild, Severity::High), (FindingKind::KilledBySignal, Severity::High)]
    );
    let f = &r.findings[1];
    assert_eq!(
        f.summary,
        "pid 1234 (hog) was killed by SIGKILL from the kernel (OOM killer?): check dmesg and the cgroup's memory.events."
    );
    assert_eq!(
        f.fields,
        obj(json!({
            "pid": 1234, "signal": "SIGKILL", "signal_number": 9, "sender_pid": 777,
            "sender_comm": "java", "sender_tid": 778, "by_target": false, "kernel": true,
        }))
    );
}

#[test]
fn killed_from_outside_the_target() {
    let w = call(ROOT, ROOT, "wait4", WaitTarget::Pid { pid: 1234 }, S, Some(2 * S + 1000));
    let l = lc(
        vec![
            fork(0, 1234, ROOT),
            exec(0, 1234, &["worker"]),
            sig(2 * S, 999, 999, "systemd", 1234, 15, SI_USER, 0),
            exit(2 * S + 500, 1234, "worker"),
            reaped(w, 1234, ExitInfo::Killed { signal: 15, core_dumped: false }),
        ],
        3 * S,
    );
    let r = run(&l);
    assert_eq!(
        kinds(&r),
        vec![(FindingKind::WaitStall, Severity::High), (FindingKind::KilledBySignal, Severity::High)]
    );
    let f = &r.findings[1];
    assert_eq!(
        f.summary,
        "pid 1234 (worker) was killed by SIGTERM from pid 999 (systemd), outside the target: find out why that process signals it."
    );
    assert_eq!(f.fields["sender_pid"], json!(999));
    assert_eq!(f.fields["by_target"], json!(false));
}

/// The exit status says SIGSEGV but no Signal event was seen: still reported, sender unknown.
#[test]
fn killed_with_signal_event_missing() {
    let w = call(ROOT, ROOT, "wait4", WaitTarget::Pid { pid: 1234 }, 2 * S, Some(2 * S + 1000));
    let l = lc(vec![fork(0, 1234, ROOT), reaped(w, 1234, ExitInfo::Killed { signal: 11, core_dumped: true })], 3 * S);
    let r = run(&l);
    assert_eq!(rec(&r, 1234).killed_by, None);
    assert_eq!(
        r.findings,
        vec![Finding {
            kind: FindingKind::KilledBySignal,
            severity: Severity::High,
            summary: "pid 1234 (parent) was killed by SIGSEGV (sender not seen): check who signals it, or its own crash output.".into(),
            fields: obj(json!({
                "pid": 1234, "signal": "SIGSEGV", "signal_number": 11, "sender_pid": null,
                "sender_comm": null, "sender_tid": null, "by_target": null, "kernel": null,
            })),
        }]
    );
}

/// No exit status anywhere: a delivered SIGKILL before the exit is conclusive, a SIGTERM not.
#[test]
fn killed_by_inferred_from_a_delivered_sigkill() {
    let l = lc(
        vec![
            fork(0, 1234, ROOT),
            sig(S, ROOT, 1201, "app", 1234, SIGKILL, SI_USER, 0),
            exit(S + 1000, 1234, "k"),
            LifeEvent::Free { ts_ns: S + 2000, pid: 1234 },
            fork(0, 1235, ROOT),
            sig(S, ROOT, 1201, "app", 1235, 15, SI_USER, 0),
            exit(S + 1000, 1235, "t"),
        ],
        2 * S,
    );
    let r = run(&l);
    assert_eq!(rec(&r, 1234).exit, None);
    assert_eq!(rec(&r, 1234).killed_by.as_ref().map(|k| (k.signal_number, k.sender_tid)), Some((9, 1201)));
    assert_eq!(rec(&r, 1235).killed_by, None);
    assert_eq!(r.findings.len(), 1);
    assert_eq!((r.findings[0].kind, r.findings[0].severity), (FindingKind::KilledBySignal, Severity::Medium));
    assert_eq!(r.findings[0].fields["pid"], json!(1234));
    assert_eq!(r.findings[0].fields["signal"], json!("SIGKILL"));
}

/// golang/go#23019: the child (sh) was killed, its grandchild (sleep) still holds the write
/// end of the root's stdout pipe. The grandchild's Fork precedes the child's in the vector.
#[test]
fn pipe_held_by_orphaned_grandchild() {
    let w = call(ROOT, ROOT, "wait4", WaitTarget::Pid { pid: 1234 }, 3 * S, Some(3 * S + 2_000_000));
    let mut l = lc(
        vec![
            fork(1_500_000_000, 1236, 1234),
            exec(1_500_000_000, 1236, &["sleep", "100"]),
            fork(S, 1234, ROOT),
            exec(S, 1234, &["sh", "-c", "sleep 100 & wait"]),
            sig(3 * S, ROOT, 1201, "app", 1234, SIGKILL, SI_USER, 0),
            exit(3 * S + 1_000_000, 1234, "sh"),
            reaped(w, 1234, KILLED9),
        ],
        10 * S,
    );
    let pipe = |pid: u32, comm: &str, fd: i32, inode: u64, write_end: bool| crate::lifecycle::PipeEnd {
        pid,
        comm: comm.into(),
        fd,
        inode,
        write_end,
    };
    l.pipes = vec![
        pipe(ROOT, "app", 5, 98765, false),
        pipe(ROOT, "app", 6, 98765, true),
        pipe(1236, "sleep", 1, 98765, true),
        pipe(1236, "sleep", 2, 11111, true),
        pipe(1236, "sleep", 0, 98765, false),
    ];
    l.final_procs = vec![snap(ROOT, 1, 'S', "app", &["app"]), snap(1236, 1, 'S', "sleep", &["sleep", "100"])];
    let r = run(&l);
    let g = rec(&r, 1236);
    assert_eq!((g.ppid, g.orphaned, g.alive_at_end), (1234, true, true));
    assert!(!rec(&r, 1234).orphaned);
    assert_eq!(
        kinds(&r),
        vec![
            (FindingKind::PipeHeldByDescendant, Severity::High),
            (FindingKind::KilledBySignal, Severity::Medium),
            (FindingKind::OrphanedDescendant, Severity::Low),
        ]
    );
    assert_eq!(
        r.findings[0],
        Finding {
            kind: FindingKind::PipeHeldByDescendant,
            severity: Severity::High,
            summary: "pid 1236 (sleep), a descendant of exited child pid 1234, still holds the write end of pipe 98765 that pid 1200 reads, so Wait() cannot return until it exits: set cmd.WaitDelay, or start the child in its own process group and kill the group.".into(),
            fields: obj(json!({
                "pid": 1236, "comm": "sleep", "fd": 1, "inode": 98765,
                "killed_child_pid": 1234, "parent_blocked_ms": 6999,
            })),
        }
    );
    assert_eq!(
        r.findings[2],
        Finding {
            kind: FindingKind::OrphanedDescendant,
            severity: Severity::Low,
            summary: "pid 1236 (sleep 100) outlived its parent pid 1234 and was reparented to pid 1, so nothing in the target will wait for or stop it: start the child in its own process group and kill the group (or set Pdeathsig).".into(),
            fields: obj(json!({"pid": 1236, "original_parent_pid": 1234})),
        }
    );

    // While the child is alive the pipe is its own business, not a finding.
    l.events.retain(|e| !matches!(e, LifeEvent::Exit { .. } | LifeEvent::Wait(_) | LifeEvent::Signal { .. }));
    l.final_procs.push(snap(1234, ROOT, 'S', "sh", &[]));
    l.final_procs[1].ppid = 1234;
    assert!(run(&l).findings.is_empty());
}

/// An orphan reparented to init and not yet reaped by it is not the target's zombie.
#[test]
fn zombie_reparented_outside_is_not_a_finding() {
    let mut l = lc(vec![fork(S, 1234, ROOT), exit(2 * S, 1234, "sleep")], 3 * S);
    l.final_procs = vec![ProcSnapshot { exit_status: Some(0), ..snap(1234, 1, 'Z', "sleep", &[]) }];
    let r = run(&l);
    assert!(r.findings.iter().all(|f| f.kind != FindingKind::ZombieChild), "{:?}", r.findings);
    assert!(rec(&r, 1234).never_reaped);
}

/// Pre-attach children come from `initial`; their own children count (through initial
/// ppids); unrelated pids and the root itself do not.
#[test]
fn descendants_from_initial_and_forks_only() {
    let mut l = lc(
        vec![
            fork(S, 5000, 4999),
            exit(2 * S, 5000, "stranger"),
            sig(2 * S, 1, 1, "init", 5000, SIGKILL, SI_USER, 0),
            exec(S / 10, ROOT, &["app"]),
            fork(2 * S, 1236, 1235),
            exec(2 * S, 1236, &["cat"]),
        ],
        3 * S,
    );
    l.initial =
        vec![snap(1234, ROOT, 'S', "bash", &["bash", "run.sh"]), snap(1235, 1234, 'S', "sleep", &["sleep", "50"])];
    l.final_procs = vec![
        snap(ROOT, 1, 'S', "app", &["app"]),
        snap(1234, ROOT, 'S', "bash", &["bash", "run.sh"]),
        snap(1235, 1234, 'S', "sleep", &["sleep", "50"]),
        snap(1236, 1235, 'R', "cat", &["cat"]),
    ];
    let r = run(&l);
    let ids: Vec<_> = r.children.iter().map(|c| (c.pid, c.ppid, c.forked_at_ns)).collect();
    assert_eq!(ids, vec![(1234, ROOT, None), (1235, 1234, None), (1236, 1235, Some(2 * S))]);
    assert_eq!(rec(&r, 1234).argv, vec!["bash".to_string(), "run.sh".to_string()]);
    assert_eq!(rec(&r, 1236).comm, "cat");
    assert!(r.children.iter().all(|c| c.alive_at_end && !c.orphaned));
    assert!(r.findings.is_empty());
}

/// SIGCHLD outside the window is not this exit's; a sibling's SIGCHLD is not either.
#[test]
fn sigchld_window_and_siblings() {
    let l = lc(
        vec![
            fork(0, 1234, ROOT),
            exit(S, 1234, "a"),
            sigchld_ev(S + 200_000_000, 1234, ROOT, 0),
            fork(0, 1235, ROOT),
            fork(0, 1236, ROOT),
            exit(2 * S, 1235, "b"),
            exit(2 * S, 1236, "c"),
            sigchld_ev(2 * S + 1000, 1235, ROOT, 0),
            fork(0, 1237, ROOT),
            exit(3 * S, 1237, "d"),
            sig(3 * S - 500_000, 0, 0, "swapper", ROOT, SIGCHLD, CLD_EXITED, 1),
        ],
        4 * S,
    );
    let r = run(&l);
    let got: Vec<_> = r.children.iter().map(|c| (c.pid, c.sigchld_delivered)).collect();
    assert_eq!(got, vec![(1234, None), (1235, Some(true)), (1236, None), (1237, Some(false))]);
}

/// Garbage in (cycles, times past the end, ends before starts): no panic, unknowns stay None.
#[test]
fn degrades_on_inconsistent_input() {
    assert_eq!(run(&Lifecycle::default()), ChildrenReport { children: vec![], findings: vec![] });
    let mut l = lc(
        vec![
            fork(9 * S, 1300, 1301),
            fork(9 * S, 1301, 1300),
            LifeEvent::Wait(WaitCall {
                reaped_pid: Some(1302),
                ..call(ROOT, ROOT, "wait4", WaitTarget::AnyChild, 5 * S, Some(S))
            }),
            exit(8 * S, 1302, ""),
            exec(S, 1303, &[""]),
        ],
        S,
    );
    l.initial = vec![snap(1300, 1301, 'S', "", &[]), snap(ROOT, 1, 'S', "app", &[])];
    l.waits_in_flight = vec![call(ROOT, ROOT, "wait4", WaitTarget::Pid { pid: 1300 }, 5 * S, None)];
    l.pipes = vec![
        crate::lifecycle::PipeEnd { pid: ROOT, comm: "app".into(), fd: 3, inode: 1, write_end: false },
        crate::lifecycle::PipeEnd { pid: 1300, comm: "x".into(), fd: 4, inode: 1, write_end: true },
    ];
    let r = run(&l);
    assert_eq!(r.children.iter().map(|c| c.pid).collect::<Vec<_>>(), vec![1302, 1300, 1301]);
    let c = rec(&r, 1302);
    assert_eq!((c.zombie_ns, c.reaped_at_ns, c.exited_at_ns), (None, Some(S), Some(8 * S)));
    assert!(r.findings.is_empty());
}

#[test]
fn findings_serialize_flat_and_round_trip() {
    let w = call(ROOT, ROOT, "wait4", WaitTarget::Pid { pid: 1234 }, 2 * S, Some(2 * S + 1000));
    let r = run(&lc(vec![fork(0, 1234, ROOT), reaped(w, 1234, KILLED9)], 3 * S));
    let v = serde_json::to_value(&r.findings[0]).unwrap();
    assert_eq!(v["kind"], json!("killed_by_signal"));
    assert_eq!(v["severity"], json!("high"));
    assert_eq!(v["signal"], json!("SIGKILL"));
    assert!(v.get("fields").is_none());
    let back: ChildrenReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}

/// No wait seen (reaped by a wait rtrace missed, or auto-reaped): the status the kernel recorded
/// at exit still says how the child ended.
#[test]
fn exit_status_from_the_exit_event() {
    let mut l = lc(vec![fork(S, 1234, ROOT), exit(2 * S, 1234, "true")], 3 * S);
    if let LifeEvent::Exit { status, .. } = &mut l.events[1] {
        *status = Some(7 << 8);
    }
    l.events.push(LifeEvent::Free { ts_ns: 2 * S + 10_000_000, pid: 1234 });
    let r = run(&l);
    let c = rec(&r, 1234);
    assert_eq!(c.exit, Some(ExitInfo::Exited { code: 7 }));
    assert_eq!(c.reaped_at_ns, Some(2 * S + 10_000_000));
}
