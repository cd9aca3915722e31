//! Grandchildren, orphans and the pipes they hold, pre-attach children, and inconsistent input.
use super::*;

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
        seen_at_ns: Some(4 * S),
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
        crate::lifecycle::PipeEnd {
            pid: ROOT,
            comm: "app".into(),
            fd: 3,
            inode: 1,
            write_end: false,
            seen_at_ns: None,
        },
        crate::lifecycle::PipeEnd { pid: 1300, comm: "x".into(), fd: 4, inode: 1, write_end: true, seen_at_ns: None },
    ];
    let r = run(&l);
    assert_eq!(r.children.iter().map(|c| c.pid).collect::<Vec<_>>(), vec![1302, 1300, 1301]);
    let c = rec(&r, 1302);
    assert_eq!((c.zombie_ns, c.reaped_at_ns, c.exited_at_ns), (None, Some(S), Some(8 * S)));
    assert!(r.findings.is_empty());
}

/// A grandchild that exits after its parent died is reaped by whoever adopted it (init or a
/// subreaper, not traced): a late reap is not the target's doing, and says so at low severity.
#[test]
fn late_reap_of_an_orphan_is_not_blamed_on_its_dead_parent() {
    let w = call(ROOT, ROOT, "wait4", WaitTarget::Pid { pid: 1234 }, 2 * S, Some(2 * S + 1_000_000));
    let l = lc(
        vec![
            fork(S, 1234, ROOT),
            fork(S + 1_000_000, 1236, 1234),
            exit(2 * S, 1234, "sh"),
            reaped(w, 1234, EXITED0),
            exit(3 * S, 1236, "sleep"),
            LifeEvent::Free { ts_ns: 4_500_000_000, pid: 1236 },
        ],
        6 * S,
    );
    let r = run(&l);
    let g = rec(&r, 1236);
    assert!(g.orphaned);
    assert_eq!(g.zombie_ns, Some(1_500_000_000));
    let f: Vec<&Finding> = r.findings.iter().filter(|f| f.kind == FindingKind::SlowReap).collect();
    assert_eq!(f.len(), 1, "{:?}", r.findings);
    assert_eq!(f[0].severity, Severity::Low);
    assert_eq!(f[0].fields, obj(json!({"pid": 1236, "parent_pid": 1234, "zombie_ms": 1500, "orphaned": true})));
    assert_eq!(
        f[0].summary,
        "pid 1236 (sleep) outlived its parent pid 1234 and stayed a zombie for 1.5 s until its new parent (a subreaper or init, not traced) reaped it: to stop leaving such children, kill the child's whole process group."
    );
}

/// env's PATH search finds nothing: each failed execve after its own exec is kept, and the
/// child is reported as never becoming the program; execvp-style failures before a successful
/// exec are not.
#[test]
fn failed_exec_after_the_last_successful_one() {
    let failed =
        |ts_ns, pid, filename: &str, error| LifeEvent::ExecFailed { ts_ns, pid, filename: filename.into(), error };
    let mut l = lc(
        vec![
            fork(S, 1234, ROOT),
            failed(S + 100, 1234, "/usr/local/bin/env", 2),
            exec(S + 200, 1234, &["env", "nosuch"]),
            failed(S + 300, 1234, "/usr/local/bin/nosuch", 2),
            failed(S + 400, 1234, "/usr/bin/nosuch", 2),
            failed(S + 500, 1234, "/bin/nosuch", 13),
            failed(S + 600, 1234, "/sbin/nosuch", 2),
            exit(S + 700, 1234, "env"),
        ],
        3 * S,
    );
    l.final_procs = vec![ProcSnapshot { exit_status: Some(127 << 8), ..snap(1234, ROOT, 'Z', "env", &[]) }];
    let r = run(&l);
    let c = rec(&r, 1234);
    let files: Vec<&str> = c.exec_failures.iter().map(|f| f.filename.as_str()).collect();
    assert_eq!(files, ["/usr/local/bin/nosuch", "/usr/bin/nosuch", "/bin/nosuch", "/sbin/nosuch"]);
    assert_eq!(c.exec_failures[2].error, "EACCES");
    let f: Vec<&Finding> = r.findings.iter().filter(|f| f.kind == FindingKind::ExecFailed).collect();
    assert_eq!(f.len(), 1, "{:?}", r.findings);
    assert_eq!(f[0].severity, Severity::Medium);
    assert_eq!(f[0].fields["program"], "nosuch");
    assert_eq!(f[0].fields["error"], "ENOENT");
    assert_eq!(f[0].fields["attempts"].as_array().unwrap().len(), 4);
    assert_eq!(
        f[0].summary,
        "pid 1234 (env nosuch) could not exec nosuch: ENOENT (tried 4: /usr/local/bin/nosuch, /usr/bin/nosuch, /bin/nosuch, …), then exited 127: check that the program is installed and on the PATH the child saw (or give its absolute path), and that it is executable."
    );
    // A search that ends in a successful exec is no finding.
    let ok = lc(
        vec![fork(S, 1235, ROOT), failed(S + 100, 1235, "/usr/local/bin/true", 2), exec(S + 200, 1235, &["true"])],
        3 * S,
    );
    let r = run(&ok);
    assert!(rec(&r, 1235).exec_failures.is_empty());
    assert!(r.findings.iter().all(|f| f.kind != FindingKind::ExecFailed), "{:?}", r.findings);
}

/// go build runs gcc with its stderr on a pipe it reads; gcc's cc1 inherits it (fds 1 and 2)
/// and exits before gcc does. A scan made while gcc ran saw cc1 holding the pipe: that is how
/// it should be, not golang/go#23019 (go build got four false HIGHs from it). Seen again after
/// gcc exited, it is the real thing, once for the holder, not once per fd.
#[test]
fn pipe_held_only_while_the_child_ran_is_not_a_finding() {
    let w = call(ROOT, ROOT, "wait4", WaitTarget::Pid { pid: 1234 }, S, Some(3 * S + 2_000_000));
    let mut l = lc(
        vec![
            fork(S, 1234, ROOT),
            exec(S, 1234, &["gcc", "-c", "x.c"]),
            fork(S + 1_000_000, 1235, 1234),
            exec(S + 1_000_000, 1235, &["cc1", "x.c"]),
            exit(2 * S, 1235, "cc1"),
            exit(3 * S, 1234, "gcc"),
            reaped(w, 1234, EXITED0),
        ],
        10 * S,
    );
    let pipe = |pid: u32, fd: i32, write_end: bool, seen: u64| crate::lifecycle::PipeEnd {
        pid,
        comm: if pid == ROOT { "go" } else { "cc1" }.into(),
        fd,
        inode: 4242,
        write_end,
        seen_at_ns: Some(seen),
    };
    // Seen at 1.5 s, while gcc ran.
    l.pipes = vec![pipe(ROOT, 7, false, S + S / 2), pipe(1235, 1, true, S + S / 2), pipe(1235, 2, true, S + S / 2)];
    let r = run(&l);
    assert!(r.findings.iter().all(|f| f.kind != FindingKind::PipeHeldByDescendant), "{:?}", r.findings);
    // Seen again after gcc exited (a cc1 that outlived it): one finding, not one per fd.
    l.pipes[1].seen_at_ns = Some(3 * S + 1);
    l.pipes[2].seen_at_ns = Some(3 * S + 1);
    let r = run(&l);
    let held: Vec<_> = r.findings.iter().filter(|f| f.kind == FindingKind::PipeHeldByDescendant).collect();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!((held[0].fields["pid"].as_u64(), held[0].fields["fd"].as_u64()), (Some(1235), Some(1)));
}
