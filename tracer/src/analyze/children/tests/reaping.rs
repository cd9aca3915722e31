//! Zombies, reaps (wait, free, never), SIGCHLD delivery, exit status, and waits that stall.
use super::*;

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
            exec_failures: vec![],
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
            fields: obj(json!({"pid": 1234, "parent_pid": 1200, "zombie_ms": 2500, "orphaned": false})),
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
    assert_eq!(f.fields, obj(json!({"pid": 1236, "parent_pid": 1200, "zombie_ms": 2000, "orphaned": false})));
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
            // Known from the final snapshot only (no evidence given): sleeping as told.
            severity: Severity::Low,
            summary: "thread 1201 of pid 1200 has been blocked 3.0 s in waitid for child pid 1234 (sleep 3), which is sleeping in clock_nanosleep: a timed sleep, not a stuck child: it slept in clock_nanosleep (it still was at the end; off-CPU recording was off, so for how long is unknown).".into(),
            fields: obj(json!({
                "waiter_tid": 1201, "waiter_pid": 1200, "since_before_attach": false, "child_pid": 1234, "blocked_ms": 3000,
                "child_state": "sleeping", "child_blocked_in": "clock_nanosleep", "in_flight": true,
                "verdict": "child_sleeping", "child_tree_cpu_ms": null, "stuck": null,
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
            "thread 1200 of pid 1200 was blocked 2.0 s in wait4 for child pid 1234 (sleep 2), which exited: rtrace cannot tell whether the child is stuck (off-CPU recording was off)."
        );
        assert_eq!(
            f.fields,
            obj(json!({
                "waiter_tid": 1200, "waiter_pid": 1200, "since_before_attach": false, "child_pid": 1234, "blocked_ms": 2000,
                "child_state": "exited", "child_blocked_in": null, "in_flight": false,
                "verdict": "no_evidence", "child_tree_cpu_ms": null, "stuck": null,
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
            "waiter_tid": 1201, "waiter_pid": 1200, "since_before_attach": false, "child_pid": 1234, "blocked_ms": 4000,
            "child_state": "running", "child_blocked_in": null, "in_flight": true,
            "verdict": "no_evidence", "child_tree_cpu_ms": null, "stuck": null,
        }))
    );
    assert!(r.findings[0].summary.contains("for child pid 1234 (busy), which is running: "));

    // Mapped by the collector already, to a child gone by the end.
    l.waits_in_flight[0].target = WaitTarget::Pidfd { fd: 7, pid: Some(1260) };
    let f = &run(&l).findings[0];
    assert_eq!(f.fields["child_pid"], json!(1260));
    assert_eq!(f.fields["child_state"], json!("exited"));
    // Its exit was not seen, so whether the wait outlived it is unknown: MEDIUM.
    assert!(
        f.summary.contains(
            "for child pid 1260, which has already exited (its exit was not seen), yet the wait has not returned"
        ),
        "{}",
        f.summary
    );
    assert_eq!((f.severity, f.fields["verdict"].clone()), (Severity::Medium, json!("child_gone")));
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
            "waiter_tid": 1201, "waiter_pid": 1200, "since_before_attach": false, "child_pid": null, "blocked_ms": 3000,
            "child_state": null, "child_blocked_in": null, "in_flight": true,
            "verdict": "child_unknown", "child_tree_cpu_ms": null, "stuck": null,
        }))
    );
    assert_eq!(
        f.summary,
        "thread 1201 of pid 1200 has been blocked 3.0 s in wait4 for any child: rtrace cannot tell which child it waits for (several were alive), so not whether one is stuck."
    );
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

/// A wait that started before attach (start unknown, 0): its length is a lower bound.
#[test]
fn wait_stall_since_before_attach_is_a_lower_bound() {
    let w = call(ROOT, 1201, "wait4", WaitTarget::Pid { pid: 1234 }, 0, Some(2 * S));
    let mut l = lc(vec![exit(2 * S - 1_000, 1234, "sleep"), reaped(w, 1234, EXITED0)], 3 * S);
    l.initial = vec![snap(1234, ROOT, 'S', "sleep", &["sleep", "5"])];
    let r = run(&l);
    let f: Vec<&Finding> = r.findings.iter().filter(|f| f.kind == FindingKind::WaitStall).collect();
    assert_eq!(f.len(), 1, "{:?}", r.findings);
    assert!(
        f[0].summary.starts_with("thread 1201 of pid 1200 was blocked at least 2.0 s in wait4"),
        "{}",
        f[0].summary
    );
    assert_eq!(f[0].fields["since_before_attach"], true);
}
