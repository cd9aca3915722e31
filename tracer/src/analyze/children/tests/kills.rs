//! Children killed by a signal: who sent it, inferred when the status is missing, and the finding's JSON.
use super::*;

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
        by_descendant: false,
        kernel: false,
    };
    assert_eq!(rec(&r, 1234).killed_by, Some(sender));
    assert_eq!(
        r.findings,
        vec![Finding {
            kind: FindingKind::KilledBySignal,
            severity: Severity::Medium,
            // Not known to be a Go program: no Go API named.
            summary: "pid 1234 (sleep 10) was killed by the target's own SIGKILL from thread 1203 (an explicit kill): expected if the target meant to stop it.".into(),
            fields: obj(json!({
                "pid": 1234, "signal": "SIGKILL", "signal_number": 9, "sender_pid": 1200,
                "sender_comm": "myapp", "sender_tid": 1203, "by_target": true, "kernel": false, "by_descendant": false,
            })),
        }]
    );
    let go = Evidence { go_target: true, ..Default::default() };
    let r = analyze_with(&l, &ChildrenConfig::default(), &go);
    assert_eq!(
        r.findings[0].summary,
        "pid 1234 (sleep 10) was killed by the target's own SIGKILL from thread 1203 (exec.CommandContext cancel or an explicit Kill): expected if the target meant to stop it."
    );
}

/// `timeout 1 sleep 5` in a traced script: timeout, a descendant of the target, kills sleep.
/// Not "outside the target": the descendant is named, and it is MEDIUM like the target's own.
#[test]
fn killed_by_a_descendant() {
    let l = lc(
        vec![
            fork(S, 1234, ROOT),
            exec(S, 1234, &["timeout", "1", "sleep", "5"]),
            fork(S + 1000, 1235, 1234),
            exec(S + 2000, 1235, &["sleep", "5"]),
            sig(2 * S, 1234, 1234, "timeout", 1235, 15, SI_USER, 0),
            LifeEvent::Exit { ts_ns: 2 * S + 1000, pid: 1235, comm: "sleep".into(), status: Some(15) },
        ],
        3 * S,
    );
    let r = run(&l);
    let k: Vec<&Finding> = r.findings.iter().filter(|f| f.kind == FindingKind::KilledBySignal).collect();
    assert_eq!(k.len(), 1, "{:?}", r.findings);
    assert_eq!(k[0].severity, Severity::Medium);
    assert_eq!(
        k[0].summary,
        "pid 1235 (sleep 5) was killed by SIGTERM from pid 1234 (timeout 1 sleep 5), one of the target's own descendants: expected if it meant to stop it (timeout, a supervisor)."
    );
    assert_eq!(k[0].fields["by_descendant"], json!(true));
    assert_eq!(rec(&r, 1235).killed_by.as_ref().map(|s| s.by_descendant), Some(true));
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
            "sender_comm": "java", "sender_tid": 778, "by_target": false, "kernel": true, "by_descendant": false,
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
        // No evidence of what the child did during the wait: the stall is MEDIUM.
        vec![(FindingKind::KilledBySignal, Severity::High), (FindingKind::WaitStall, Severity::Medium)]
    );
    let f = &r.findings[0];
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
                "sender_comm": null, "sender_tid": null, "by_target": null, "kernel": null, "by_descendant": null,
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
