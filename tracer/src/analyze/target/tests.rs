//! The target's fate from literal captures: exit code, killer, exec, never started, zombie.
use super::*;
use crate::lifecycle::ProcSnapshot;

fn info(pid: u32, cmdline: &[&str]) -> TargetInfo {
    TargetInfo {
        pid,
        comm: cmdline[0].into(),
        cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn exec(ts_ns: u64, pid: u32, filename: &str, argv: &[&str]) -> LifeEvent {
    LifeEvent::Exec { ts_ns, pid, filename: filename.into(), argv: argv.iter().map(|s| s.to_string()).collect() }
}

fn exit_ev(ts_ns: u64, pid: u32, status: Option<i32>) -> LifeEvent {
    LifeEvent::Exit { ts_ns, pid, comm: "x".into(), status }
}

#[test]
fn exit_code_from_rtraces_own_wait() {
    let t = TargetInfo { wait_status: Some(5 << 8), ..info(100, &["sh", "-c", "exit 5"]) };
    let l = Lifecycle {
        root_pid: 100,
        events: vec![exec(1_000, 100, "/usr/bin/sh", &["sh", "-c", "exit 5"]), exit_ev(2_000_000, 100, Some(5 << 8))],
        ..Default::default()
    };
    let r = report(&t, &l);
    assert_eq!(r.exit, Some(TargetExit::Exited { code: 5, at_ns: Some(2_000_000) }));
    assert_eq!(r.exit.as_ref().unwrap().status(), Some(5));
    assert_eq!(r.comm, "sh");
    assert_eq!(r.exec_from, None, "its own first exec is not an exec from something else");
    assert_eq!(r.status_lines(), ["target exited with code 5 at 0.002s"]);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["exit"], serde_json::json!({"kind": "exited", "code": 5, "at_ns": 2_000_000}));
}

#[test]
fn killed_by_names_the_sender_and_gives_128_plus_n() {
    let t = TargetInfo { wait_status: Some(9), ..info(100, &["sleep", "10"]) };
    let l = Lifecycle {
        root_pid: 100,
        events: vec![
            LifeEvent::Signal {
                ts_ns: 1_000_000,
                sender_pid: 77,
                sender_tid: 78,
                sender_comm: "killer".into(),
                target_pid: 100,
                target_comm: "sleep".into(),
                signal: 9,
                code: 0,
                result: 0,
            },
            exit_ev(1_500_000, 100, Some(9)),
        ],
        ..Default::default()
    };
    let r = report(&t, &l);
    let Some(TargetExit::Killed { signal, killed_by: Some(k), .. }) = &r.exit else { panic!("{:?}", r.exit) };
    assert_eq!((signal.as_str(), k.sender_pid, k.sender_tid, k.sender_comm.as_str()), ("SIGKILL", 77, 78, "killer"));
    assert_eq!(r.exit.as_ref().unwrap().status(), Some(137));
    assert_eq!(r.status_lines(), ["target killed by SIGKILL (sent by pid 77 killer, tid 78) at 0.002s"]);
}

#[test]
fn exit_event_status_when_rtrace_is_not_the_parent() {
    // --pid mode: only the kernel's exit_code at the exit event.
    let l = Lifecycle { root_pid: 100, events: vec![exit_ev(3_000_000_000, 100, Some(2 << 8))], ..Default::default() };
    let r = report(&info(100, &["make"]), &l);
    assert_eq!(r.exit, Some(TargetExit::Exited { code: 2, at_ns: Some(3_000_000_000) }));
    // Still running: no exit at all.
    let r = report(&info(100, &["make"]), &Lifecycle { root_pid: 100, ..Default::default() });
    assert_eq!(r.exit, None);
    assert!(r.status_lines().is_empty());
}

#[test]
fn after_an_exec_the_new_program_and_where_it_came_from() {
    let t = info(100, &["sh", "-c", "exec sleep 1"]);
    let l = Lifecycle {
        root_pid: 100,
        events: vec![
            exec(2_000, 100, "/usr/bin/sleep", &["sleep", "1"]),
            exec(1_000, 100, "/usr/bin/sh", &["sh", "-c", "exec sleep 1"]),
        ],
        ..Default::default()
    };
    let r = report(&t, &l);
    assert_eq!(r.comm, "sleep");
    assert_eq!(r.cmdline, ["sleep", "1"]);
    assert_eq!(r.exec_from.as_deref(), Some(&["sh".to_string(), "-c".into(), "exec sleep 1".into()][..]));
}

#[test]
fn never_started_says_why_and_has_no_status() {
    let t = TargetInfo { not_started: Some("execve(./x) failed with ENOEXEC: …".into()), ..info(100, &["./x"]) };
    let r = report(&t, &Lifecycle { root_pid: 100, ..Default::default() });
    assert_eq!(r.exit, Some(TargetExit::NeverStarted { reason: "execve(./x) failed with ENOEXEC: …".into() }));
    assert_eq!(r.exit.unwrap().status(), None);
}

#[test]
fn zombie_and_stopped_at_attach_are_said() {
    let t = TargetInfo {
        attach_state: Some('Z'),
        attach_exit_status: Some(3 << 8),
        attach_ppid: Some(42),
        ..info(100, &["worker"])
    };
    let l = Lifecycle {
        root_pid: 100,
        final_procs: vec![ProcSnapshot {
            pid: 100,
            ppid: 42,
            state: 'Z',
            exit_status: Some(3 << 8),
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = report(&t, &l);
    assert_eq!(r.exit, Some(TargetExit::Exited { code: 3, at_ns: None }));
    assert_eq!(
        r.status_lines(),
        [
            "target was a zombie at attach: it had exited before the session; its parent (pid 42) has not reaped it",
            "target exited with code 3 before attach"
        ]
    );
    let t = TargetInfo { attach_state: Some('T'), ..info(100, &["worker"]) };
    let r = report(&t, &Lifecycle { root_pid: 100, ..Default::default() });
    assert_eq!(r.status_lines(), ["target was stopped (state T) at attach: it runs only after SIGCONT"]);
}

#[test]
fn a_fault_is_raised_by_the_target_itself() {
    // SIGSEGV from its own bad access: signal_generate names the faulting thread as sender.
    let t = TargetInfo { wait_status: Some(0x80 | 11), ..info(100, &["crash"]) };
    let l = Lifecycle {
        root_pid: 100,
        events: vec![
            LifeEvent::Signal {
                ts_ns: 1_000_000,
                sender_pid: 100,
                sender_tid: 101,
                sender_comm: "crash".into(),
                target_pid: 100,
                target_comm: "crash".into(),
                signal: 11,
                code: 1,
                result: 0,
            },
            exit_ev(1_000_000, 100, Some(0x80 | 11)),
        ],
        ..Default::default()
    };
    let r = report(&t, &l);
    assert_eq!(r.exit.as_ref().unwrap().status(), Some(139));
    assert_eq!(
        r.status_lines(),
        ["target killed by SIGSEGV (raised by the target itself, tid 101) at 0.001s, core dumped"]
    );
}
