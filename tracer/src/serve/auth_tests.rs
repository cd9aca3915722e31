//! The authorization rules on literal /proc/PID/status texts and owners.
use super::*;

fn status(uids: &str, gids: &str) -> String {
    format!("Name:\tworker\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t321\nPid:\t321\nUid:\t{uids}\nGid:\t{gids}\nGroups:\t27 1000\n")
}

fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller {
    Caller { uid, gid, pid: Some(99), groups: groups.to_vec(), who: format!("uid {uid}") }
}

const OPEN: Sysctl = Sysctl { ptrace_scope: 1, perf_event_paranoid: 2 };
fn policy() -> Policy {
    Policy { allow_group: Some(("tracing".into(), 950)) }
}

#[test]
fn parses_the_four_slots_and_dumpable() {
    let t = TargetCreds::parse(321, &status("1000\t1000\t1000\t1000", "1000\t1000\t1000\t1000"), (1000, 1000)).unwrap();
    assert_eq!((t.comm.as_str(), t.uids, t.gids), ("worker", [1000; 4], [1000; 4]));
    assert!(t.dumpable());
    let t = TargetCreds::parse(321, &status("1000\t1000\t1000\t1000", "1000\t1000\t1000\t1000"), (0, 0)).unwrap();
    assert!(!t.dumpable(), "/proc/PID owned by root while the task is not dumpable");
    assert!(TargetCreds::parse(321, "Name:\tx\nUid:\t1 2\n", (0, 0)).is_none(), "a short Uid line");
}

#[test]
fn root_traces_anything_with_kernel_stacks() {
    let root = caller(0, 0, &[]);
    let sys = Sysctl { ptrace_scope: 3, perf_event_paranoid: 4 };
    let t = TargetCreds::parse(1, &status("0\t0\t0\t0", "0\t0\t0\t0"), (0, 0)).unwrap();
    assert_eq!(
        authorize(&root, &Policy::default(), sys, Some(&t), 1),
        Ok(Access { pid: 1, kernel_stacks: true, owner: None, start: None })
    );
}

#[test]
fn non_root_refused_without_allow_group() {
    let e = admit(&caller(1000, 1000, &[950]), &Policy::default(), OPEN).unwrap_err();
    assert_eq!(e, "uid 1000 refused: only root may trace (rtrace serve was started without --allow-group)");
}

#[test]
fn group_membership_primary_or_supplementary() {
    assert_eq!(
        admit(&caller(1000, 1000, &[27]), &policy(), OPEN).unwrap_err(),
        "uid 1000 refused: not a member of group tracing (--allow-group)"
    );
    assert_eq!(admit(&caller(1000, 1000, &[27, 950]), &policy(), OPEN), Ok(false));
    assert_eq!(admit(&caller(1000, 950, &[]), &policy(), OPEN), Ok(false));
}

#[test]
fn ptrace_scope_2_and_perf_paranoid() {
    let c = caller(1000, 1000, &[950]);
    let e = admit(&c, &policy(), Sysctl { ptrace_scope: 2, perf_event_paranoid: 1 }).unwrap_err();
    assert_eq!(e, "uid 1000 refused: kernel.yama.ptrace_scope is 2, so only root may trace");
    assert_eq!(admit(&c, &policy(), Sysctl { ptrace_scope: 0, perf_event_paranoid: 1 }), Ok(true));
    assert_eq!(admit(&c, &policy(), Sysctl { ptrace_scope: 0, perf_event_paranoid: 2 }), Ok(false));
}

#[test]
fn own_processes_only_every_slot() {
    let c = caller(1000, 1000, &[950]);
    let own = TargetCreds::parse(321, &status("1000\t1000\t1000\t1000", "1000\t1000\t1000\t1000"), (1000, 1000));
    assert_eq!(
        authorize(&c, &policy(), OPEN, own.as_ref(), 321),
        Ok(Access { pid: 321, kernel_stacks: false, owner: Some((1000, 1000)), start: None })
    );
    // Another user's; a setuid-root program run by us (euid and saved uid 0); a setgid one;
    // one that dropped dumpable.
    for (uids, gids, owner, why) in [
        ("1001\t1001\t1001\t1001", "1000\t1000\t1000\t1000", (1001, 1000), "runs as uid 1001/gid 1000"),
        ("1000\t0\t0\t0", "1000\t1000\t1000\t1000", (0, 0), "runs as uid 0/gid 1000"),
        ("1000\t1000\t1000\t1000", "1000\t5\t5\t5", (1000, 5), "runs as uid 1000/gid 5"),
        ("1000\t1000\t1000\t1000", "1000\t1000\t1000\t1000", (0, 0), "not dumpable"),
    ] {
        let t = TargetCreds::parse(321, &status(uids, gids), owner).unwrap();
        let e = authorize(&c, &policy(), OPEN, Some(&t), 321).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::FORBIDDEN);
        let msg = e.to_string();
        assert!(msg.starts_with("uid 1000 may not trace pid 321 (worker): ") && msg.contains(why), "{msg}");
        assert!(!msg.contains('\n'));
    }
    let e = authorize(&c, &policy(), OPEN, None, 999).unwrap_err();
    assert_eq!((e.status().as_u16(), e.to_string().as_str()), (404, "no such pid 999"));
}

/// This test process, read live: ours, dumpable.
#[test]
fn live_self() {
    let me = std::process::id();
    let t = TargetCreds::read(me).unwrap();
    assert!(t.dumpable(), "{t:?}");
    assert!(TargetCreds::read(u32::MAX - 1).is_none());
}
