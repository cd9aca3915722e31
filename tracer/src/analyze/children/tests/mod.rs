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
pub(crate) fn call(
    pid: u32,
    tid: u32,
    syscall: &str,
    target: WaitTarget,
    start_ns: u64,
    end_ns: Option<u64>,
) -> WaitCall {
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

mod descendants;
mod kills;
mod reaping;
mod rtrace_chain;
mod stall;
