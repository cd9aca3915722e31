//! wait_stall severities from what the waited child did (its on-CPU time and blocks).
use super::*;
use crate::{analyze::children::Block, capture::OffState};

fn block(tid: u32, syscall: &str, state: OffState, max_ns: u64, in_flight: bool) -> Block {
    Block { tid, syscall: Some(syscall.into()), state, total_ns: max_ns, count: 1, max_ns, in_flight }
}

fn with(l: &Lifecycle, ev: &Evidence) -> Finding {
    let r = analyze_with(l, &ChildrenConfig::default(), ev);
    let f: Vec<&Finding> = r.findings.iter().filter(|f| f.kind == FindingKind::WaitStall).collect();
    assert_eq!(f.len(), 1, "{:?}", r.findings);
    f[0].clone()
}

fn evidence(cpu: &[(u32, u64)], blocks: Vec<(u32, Block)>) -> Evidence {
    let mut ev = Evidence { offcpu: true, ..Default::default() };
    for &(pid, ns) in cpu {
        ev.add_cpu(pid, ns);
    }
    for (pid, b) in blocks {
        ev.add_block(pid, b);
    }
    ev
}

/// `sh -c 'sleep 2; true'`: sh waits 2 s for `sleep 2`, which sleeps as told: LOW.
fn sh_sleep() -> Lifecycle {
    let w = call(ROOT, ROOT, "wait4", WaitTarget::AnyChild, 1_000_000, Some(2 * S + 2_000_000));
    lc(
        vec![
            fork(500_000, 1234, ROOT),
            exec(600_000, 1234, &["sleep", "2"]),
            exit(2 * S + 1_000_000, 1234, "sleep"),
            reaped(w, 1234, EXITED0),
        ],
        3 * S,
    )
}

#[test]
fn child_sleeping_as_told_is_low() {
    let ev = evidence(&[], vec![(1234, block(1234, "clock_nanosleep", OffState::Sleep, 2 * S, false))]);
    let f = with(&sh_sleep(), &ev);
    assert_eq!(f.severity, Severity::Low);
    assert_eq!(
        f.summary,
        "thread 1200 of pid 1200 was blocked 2.0 s in wait4 for child pid 1234 (sleep 2), which exited: a timed sleep, not a stuck child: it slept in clock_nanosleep 2.0 s of the 2.0 s wait."
    );
    assert_eq!(f.fields["verdict"], json!("child_sleeping"));
    assert_eq!(f.fields["child_tree_cpu_ms"], json!(0));
    // Without any evidence (a ledger analyzed alone) rtrace cannot tell: MEDIUM, not HIGH.
    let f = with(&sh_sleep(), &Evidence::default());
    assert_eq!((f.severity, f.fields["verdict"].clone()), (Severity::Medium, json!("no_evidence")));
    assert!(
        f.summary.ends_with(": rtrace cannot tell whether the child is stuck (off-CPU recording was off)."),
        "{}",
        f.summary
    );
}

/// make → gcc → cc1: the root waits 4.3 s for gcc, which waits for cc1, which computes.
#[test]
fn child_whose_descendant_computes_is_low_and_says_who() {
    let w = call(ROOT, ROOT, "wait4", WaitTarget::Pid { pid: 1234 }, S, Some(5 * S + 300_000_000));
    let l = lc(
        vec![
            fork(S, 1234, ROOT),
            exec(S, 1234, &["gcc", "-c", "x.c"]),
            fork(S + 1000, 1235, 1234),
            exec(S + 2000, 1235, &["cc1", "x.c"]),
            exit(5 * S, 1235, "cc1"),
            exit(5 * S + 200_000_000, 1234, "gcc"),
            reaped(w, 1234, EXITED0),
        ],
        6 * S,
    );
    let ev = evidence(
        &[(1235, 3_900_000_000), (1234, 100_000_000)],
        vec![
            (1234, block(1234, "wait4", OffState::Sleep, 3_950_000_000, false)),
            (1235, block(1235, "read", OffState::Disk, 20_000_000, false)),
        ],
    );
    let f = with(&l, &ev);
    assert_eq!(f.severity, Severity::Low);
    assert_eq!(
        f.summary,
        "thread 1200 of pid 1200 was blocked 4.3 s in wait4 for child pid 1234 (gcc -c x.c), which exited: the child is working, not stuck: its descendant pid 1235 (cc1 x.c) was on CPU 3.9 s of the 4.3 s wait (its tree 4.0 s). The wait is as long as the child's work."
    );
    assert_eq!(f.fields["child_tree_cpu_ms"], json!(4000));
    // A Go child computing while its idle threads sit in futex is working too.
    let ev = evidence(&[(1234, 4 * S)], vec![(1234, block(1240, "futex", OffState::Sleep, 4 * S, true))]);
    assert_eq!(with(&l, &ev).severity, Severity::Low);
}

/// The child reads a pipe nobody writes (the parent holds the write end and waits): blocked
/// for the whole wait, barely on CPU, still blocked at the end: HIGH, saying in what.
#[test]
fn stuck_child_is_high() {
    let mut l = lc(vec![fork(S, 1234, ROOT), exec(S, 1234, &["cat"])], 4 * S);
    l.waits_in_flight = vec![call(ROOT, ROOT, "wait4", WaitTarget::Pid { pid: 1234 }, S + 1000, None)];
    l.final_procs = vec![ProcSnapshot { syscall: Some("read".into()), ..snap(1234, ROOT, 'S', "cat", &["cat"]) }];
    let ev = evidence(&[(1234, 2_000_000)], vec![(1234, block(1234, "read", OffState::Sleep, 3 * S - 5000, true))]);
    let f = with(&l, &ev);
    assert_eq!(f.severity, Severity::High);
    assert_eq!(
        f.summary,
        "thread 1200 of pid 1200 has been blocked 3.0 s in wait4 for child pid 1234 (cat), which is sleeping in read: the child is stuck: it was blocked in read for 3.0 s of the 3.0 s wait, and still was at the end, while its tree ran 2 ms on CPU. Find what it waits for (input or EOF from the parent, a lock, a pipe nobody writes); give the wait a timeout (or kill the child after one)."
    );
    assert_eq!(
        f.fields["stuck"],
        json!({"pid": 1234, "syscall": "read", "state": "sleep", "blocked_ms": 2999, "in_flight": true})
    );
    // The Go API is named only for Go targets.
    let go = Evidence { go_target: true, ..ev.clone() };
    assert!(with(&l, &go).summary.ends_with("; set a timeout (exec.CommandContext / cmd.WaitDelay)."));
    // The same block while the child computed a good part of the wait: not stuck. `go build`
    // on a busy machine: a compile on CPU 575 ms of a 2.4 s wait (and waiting for a CPU 300 ms),
    // an idle thread parked in futex for 2.3 s.
    let busy = evidence(&[(1234, 2 * S)], vec![(1234, block(1234, "read", OffState::Sleep, 2 * S, true))]);
    assert_eq!(with(&l, &busy).severity, Severity::Low);
    let w = call(ROOT, 1201, "waitid", WaitTarget::Pidfd { fd: 9, pid: Some(1300) }, S, Some(S + 2_400_000_000));
    let compile = lc(
        vec![
            fork(S, 1300, ROOT),
            exec(S, 1300, &["compile"]),
            exit(S + 2_390_000_000, 1300, "compile"),
            reaped(w, 1300, EXITED0),
        ],
        4 * S,
    );
    let ev = evidence(
        &[(1300, 575_000_000)],
        vec![
            (1300, block(1302, "futex", OffState::Sleep, 2_300_000_000, false)),
            (1300, block(1300, "futex", OffState::Runqueue, 300_000_000, false)),
        ],
    );
    let f = with(&compile, &ev);
    assert_eq!((f.severity, f.fields["verdict"].clone()), (Severity::Low, json!("child_working")));
    assert!(
        f.summary.ends_with(": the child is working, not stuck: it was on CPU 575 ms of the 2.4 s wait; its tree waited 300 ms for a CPU. The wait is as long as the child's work."),
        "{}",
        f.summary
    );
}

/// The child is gone but the wait is still blocked: it waits for something else.
#[test]
fn wait_outliving_its_exited_child_is_high() {
    let mut l = lc(vec![fork(S, 1234, ROOT), exit(2 * S, 1234, "worker")], 4 * S);
    l.waits_in_flight = vec![call(ROOT, 1201, "waitid", WaitTarget::Pidfd { fd: 5, pid: Some(1234) }, S, None)];
    let f = with(&l, &evidence(&[(1234, S)], vec![]));
    assert_eq!((f.severity, f.fields["verdict"].clone()), (Severity::High, json!("child_exited")));
    assert!(f.summary.contains(", which has already exited 2.0 s ago, yet the wait has not returned"), "{}", f.summary);
    // Exited just before the end: the wait was about to return; the child's life decides.
    let mut l2 = l.clone();
    l2.events[1] = exit(4 * S - 10_000_000, 1234, "worker");
    assert_eq!(with(&l2, &evidence(&[(1234, 2 * S)], vec![])).severity, Severity::Low);
}

/// Waiting for any child with several alive: which one is unknown, so is the verdict.
#[test]
fn unknown_child_is_medium() {
    let mut l = lc(vec![fork(0, 1234, ROOT), fork(0, 1235, ROOT)], 5 * S);
    l.waits_in_flight = vec![call(ROOT, 1201, "wait4", WaitTarget::AnyChild, 2 * S, None)];
    l.final_procs = vec![snap(1234, ROOT, 'S', "a", &["a"]), snap(1235, ROOT, 'S', "b", &["b"])];
    let ev = evidence(&[], vec![(1234, block(1234, "read", OffState::Sleep, 5 * S, true))]);
    let f = with(&l, &ev);
    assert_eq!((f.severity, f.fields["verdict"].clone()), (Severity::Medium, json!("child_unknown")));
}

/// `go build`: a waitid(P_PIDFD) on fd 16 returned child 5601, but the collector mapped fd 16
/// after the wait, when Go had already reused it for the next child, 5656. The child is the
/// one the wait returned.
#[test]
fn completed_pidfd_wait_names_the_child_it_returned() {
    let w = call(ROOT, 1201, "waitid", WaitTarget::Pidfd { fd: 16, pid: Some(5656) }, S, Some(3 * S));
    let l = lc(
        vec![
            fork(S, 5601, ROOT),
            exit(3 * S - 1000, 5601, "compile"),
            reaped(w, 5601, EXITED0),
            fork(3 * S + 1000, 5656, ROOT),
            exit(3 * S + 9_000_000, 5656, "asm"),
        ],
        4 * S,
    );
    let ev = evidence(&[(5601, S), (5656, 10_000_000)], vec![]);
    let f = with(&l, &ev);
    assert_eq!(f.fields["child_pid"], json!(5601));
    assert_eq!((f.severity, f.fields["verdict"].clone()), (Severity::Low, json!("child_working")));
}
