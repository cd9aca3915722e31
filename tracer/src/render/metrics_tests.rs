//! The OpenMetrics text of a known ledger: exact series and values.
use serde_json::json;

use super::*;
use crate::analyze::children::{ChildRecord, Finding};

fn child(pid: u32, exit: serde_json::Value, killed_by: serde_json::Value, never_reaped: bool) -> ChildRecord {
    serde_json::from_value(json!({
        "pid": pid, "ppid": 10, "argv": ["x"], "comm": "x", "forked_at_ns": 1, "execd_at_ns": null,
        "exited_at_ns": 2, "exit": exit, "killed_by": killed_by, "sigchld_delivered": true,
        "reaped_at_ns": null, "reaped_by": null, "zombie_ns": null, "never_reaped": never_reaped,
        "zombie_age_ns": null, "zombie_at_attach": false, "alive_at_end": false, "orphaned": false
    }))
    .unwrap()
}

#[test]
fn ledger_latency_and_health() {
    let kill = json!({"signal": "SIGTERM", "signal_number": 15, "sender_pid": 10, "sender_tid": 10,
        "sender_comm": "cli", "by_target": true, "by_descendant": false, "kernel": false});
    let stall: Finding =
        serde_json::from_value(json!({"kind": "wait_stall", "severity": "low", "summary": "s"})).unwrap();
    let w = Watched {
        pid: 10,
        comm: "cli".into(),
        ledger: Some(ChildrenReport {
            children: vec![
                child(11, json!({"kind": "exited", "code": 0}), json!(null), true),
                child(12, json!({"kind": "exited", "code": 2}), json!(null), true),
                child(13, json!({"kind": "killed", "signal": 15, "core_dumped": false}), kill, false),
            ],
            findings: vec![stall],
        }),
        syscalls: vec![SyscallRow {
            name: "read".into(),
            nr: 0,
            count: 3,
            errors: 0,
            total_ns: 1_500_000_000,
            p50_ns: 0,
            p90_ns: 0,
            p99_ns: 0,
            max_ns: 0,
            histogram: vec![(1024, 2), (1 << 30, 1)],
        }],
        offcpu_ns: [("sleep", 2_500_000_000)].into(),
        cpu_samples: 7,
        go: vec![crate::collect::GoLive {
            pid: 14,
            go_version: "go1.27.3".into(),
            goroutines: Some(12),
            gc_cycles: Some(5),
            gc_pause_ns: Some(1_500_000),
        }],
        folded: Default::default(),
    };
    let health = Health {
        watched: 1,
        watched_total: 3,
        held: 4,
        lost: [("events", 0), ("syscalls", 5)].into(),
        cpu_seconds: 0.25,
        pushes: Some((4, 1, 2)),
    };
    let text = render(&[w], &health);
    let l = r#"{pid="10",comm="cli""#;
    for line in [
        "# TYPE rtrace_zombie_children gauge".to_owned(),
        format!("rtrace_zombie_children{l}}} 2"),
        format!(r#"rtrace_children_exited_total{l},outcome="exit_0"}} 1"#),
        format!(r#"rtrace_children_exited_total{l},outcome="exit_nonzero"}} 1"#),
        format!(r#"rtrace_children_exited_total{l},outcome="signal"}} 1"#),
        format!(r#"rtrace_children_killed_total{l},signal="SIGTERM",sender="cli"}} 1"#),
        format!("rtrace_wait_stalls_total{l}}} 1"),
        format!(r#"rtrace_findings_total{l},kind="wait_stall",severity="low"}} 1"#),
        "# TYPE rtrace_syscall_duration_seconds histogram".to_owned(),
        format!(r#"rtrace_syscall_duration_seconds_sum{l},syscall="read"}} 1.5"#),
        format!(r#"rtrace_syscall_duration_seconds_count{l},syscall="read"}} 3"#),
        (r#"rtrace_syscall_duration_seconds_bucket{le="0.000001024",pid="10",comm="cli",syscall="read"} 2"#).to_owned(),
        (r#"rtrace_syscall_duration_seconds_bucket{le="1.073741824",pid="10",comm="cli",syscall="read"} 3"#).to_owned(),
        (r#"rtrace_syscall_duration_seconds_bucket{le="+Inf",pid="10",comm="cli",syscall="read"} 3"#).to_owned(),
        format!(r#"rtrace_offcpu_seconds_total{l},state="sleep"}} 2.5"#),
        format!("rtrace_cpu_samples_total{l}}} 7"),
        r#"rtrace_events_lost_total{kind="events"} 0"#.to_owned(),
        r#"rtrace_events_lost_total{kind="syscalls"} 5"#.to_owned(),
        format!(r#"rtrace_go_goroutines{l},go_pid="14",go_version="go1.27.3"}} 12"#),
        format!(r#"rtrace_go_gc_cycles_total{l},go_pid="14",go_version="go1.27.3"}} 5"#),
        format!(r#"rtrace_go_gc_pause_seconds_total{l},go_pid="14",go_version="go1.27.3"}} 0.0015"#),
        r#"rtrace_pushes_total{result="sent"} 4"#.to_owned(),
        r#"rtrace_pushes_total{result="failed"} 1"#.to_owned(),
        r#"rtrace_pushes_total{result="dropped"} 2"#.to_owned(),
        "rtrace_watched_processes 1".to_owned(),
        "rtrace_watched_total 3".to_owned(),
        "rtrace_ledger_processes 4".to_owned(),
        "rtrace_self_cpu_seconds_total 0.25".to_owned(),
        "# EOF".to_owned(),
    ] {
        assert!(text.lines().any(|x| x == line), "{line} missing from:\n{text}");
    }
}

#[test]
fn folded_descendants_keep_counting() {
    use crate::analyze::children::{ChildrenReport, Finding, FindingKind, Severity};
    let row = |pid, code| {
        let mut c: crate::analyze::children::ChildRecord =
            serde_json::from_value(serde_json::json!({"pid": pid, "ppid": 1, "argv": [], "comm": "x", "never_reaped": false, "zombie_at_attach": false, "alive_at_end": false, "orphaned": false})).unwrap();
        c.exit = Some(crate::lifecycle::ExitInfo::Exited { code });
        c
    };
    let stall = |child: u32| Finding {
        kind: FindingKind::WaitStall,
        severity: Severity::Low,
        summary: String::new(),
        fields: serde_json::json!({"waiter_pid": 1, "child_pid": child}).as_object().unwrap().clone(),
    };
    let prev = ChildrenReport { children: vec![row(5, 0), row(6, 1), row(7, 0)], findings: vec![stall(6), stall(7)] };
    let mut f = super::Folded::default();
    f.add(&prev, &[5, 6].into());
    assert_eq!(f.exited, [("exit_0", 1), ("exit_nonzero", 1)].into());
    assert_eq!((f.stalls, f.findings.clone()), (1, [(("wait_stall".to_owned(), "low"), 1)].into()));
    // Rendered: the folded counts plus the ledger's own (7 and its stall).
    let w = Watched {
        pid: 1,
        comm: "cli".into(),
        ledger: Some(ChildrenReport { children: vec![row(7, 0)], findings: vec![stall(7)] }),
        folded: f,
        ..Default::default()
    };
    let text = render(&[w], &Health::default());
    for line in [
        r#"rtrace_children_exited_total{pid="1",comm="cli",outcome="exit_0"} 2"#,
        r#"rtrace_children_exited_total{pid="1",comm="cli",outcome="exit_nonzero"} 1"#,
        r#"rtrace_wait_stalls_total{pid="1",comm="cli"} 2"#,
        r#"rtrace_findings_total{pid="1",comm="cli",kind="wait_stall",severity="low"} 2"#,
    ] {
        assert!(text.lines().any(|x| x == line), "{line} missing from:\n{text}");
    }
}
