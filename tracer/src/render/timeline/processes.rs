//! The process tracks: one per traced process, the target first and then the ledger's order
//! (processes there at attach, then fork order), with `alive` and `zombie` slices from the
//! ledger and instants for every exec, failed exec, signal, wait call and finding from the
//! lifecycle events and the analysis.
use std::collections::HashMap;

use serde_json::Value as J;

use super::{
    arg,
    builder::{json_args, Args, Uuid},
    proto::{ProcessDescriptor, ThreadDescriptor, TrackDescriptor},
    Builder, Slice, SESSION_END,
};
use crate::{
    analyze::children::{ChildRecord, Finding, FindingKind},
    capture::Capture,
    lifecycle::{signal_name, ExitInfo, LifeEvent, WaitCall, WaitTarget},
    report::Analysis,
};

/// The process tracks by pid, the thread tracks added under them (`thread_of`, by tid; the
/// scheduling slices of --timeline are on them), and each thread's "syscalls" track under its
/// thread track (`threads`, by tid).
pub(super) struct Tracks {
    pub procs: HashMap<u32, Uuid>,
    pub thread_of: HashMap<u32, Uuid>,
    pub threads: HashMap<u32, Uuid>,
}

impl Tracks {
    /// The track of `pid`, added (named from the capture's process table) when the ledger has
    /// none: a process with slow calls or a Go view is always a tracked one, but a capture may
    /// say otherwise.
    pub fn process(&mut self, b: &mut Builder, capture: &Capture, pid: u32) -> Uuid {
        if let Some(&t) = self.procs.get(&pid) {
            return t;
        }
        let p = capture.processes.get(&pid);
        let t = process_track(b, pid, p.map_or("", |p| p.comm.as_str()), p.map_or(&[][..], |p| &p.cmdline));
        self.procs.insert(pid, t);
        t
    }

    /// The track of thread `tid` of `pid`, under its process's.
    pub fn thread(&mut self, b: &mut Builder, capture: &Capture, pid: u32, tid: u32) -> Uuid {
        if let Some(&t) = self.thread_of.get(&tid) {
            return t;
        }
        let process = self.process(b, capture, pid);
        // Only the main thread's name is known (the process's comm).
        let name = (pid == tid).then(|| capture.processes.get(&pid).map(|p| p.comm.clone())).flatten();
        let thread = ThreadDescriptor { pid: Some(pid as i32), tid: Some(tid.into()), thread_name: name };
        let t = b.track(TrackDescriptor { thread: Some(thread), parent_uuid: Some(process), ..Default::default() });
        self.thread_of.insert(tid, t);
        t
    }
}

fn process_track(b: &mut Builder, pid: u32, comm: &str, argv: &[String]) -> Uuid {
    let process = ProcessDescriptor {
        pid: Some(pid as i32),
        cmdline: argv.to_vec(),
        process_name: (!comm.is_empty()).then(|| comm.to_owned()),
    };
    b.track(TrackDescriptor { process: Some(process), ..Default::default() })
}

pub(super) fn render(b: &mut Builder, capture: &Capture, analysis: &Analysis) -> Tracks {
    let r = &analysis.report;
    let l = &capture.lifecycle;
    let root = if l.root_pid != 0 { l.root_pid } else { r.target.pid };
    let mut tracks = Tracks { procs: HashMap::new(), thread_of: HashMap::new(), threads: HashMap::new() };
    let t = process_track(b, root, &r.target.comm, &r.target.cmdline);
    tracks.procs.insert(root, t);
    for (s, e, name, args) in root_life(capture, analysis, root) {
        b.slice(t, Slice { begin: s, end: e, name: name.into(), args });
    }
    for c in &r.children {
        let t = process_track(b, c.pid, &c.comm, &c.argv);
        tracks.procs.insert(c.pid, t);
        for (s, e, name, args) in child_life(c) {
            b.slice(t, Slice { begin: s, end: e, name: name.into(), args });
        }
    }
    events(b, capture, &mut tracks);
    let by_pid: HashMap<u32, &ChildRecord> = r.children.iter().map(|c| (c.pid, c)).collect();
    for f in &r.findings {
        let Some(pid) = finding_pid(f) else { continue };
        let t = tracks.process(b, capture, pid);
        let kind = serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let severity = serde_json::to_value(f.severity).ok().and_then(|v| v.as_str().map(str::to_owned));
        let mut args = vec![arg("severity", severity.unwrap_or_default()), arg("summary", f.summary.clone())];
        args.extend(json_args(&f.fields));
        b.instant(t, finding_time(f, &by_pid), format!("finding: {kind}"), args);
    }
    tracks
}

type Life = Vec<(u64, u64, &'static str, Args)>;

/// A child's alive and zombie spans. Alive: from its fork, or from attach when it was there
/// before, to its exit (or its reap when the exit was not seen), else to the end. Zombie: from
/// the exit to the reap, or to the end when never reaped; a zombie whose reap is unknown (an
/// untraced reaper, a lost event) gets no slice rather than an invented one.
fn child_life(c: &ChildRecord) -> Life {
    let mut out = Life::new();
    let zombie_args = |c: &ChildRecord| {
        let mut a = Args::new();
        a.extend(c.exit.map(|e| arg("exit", exit_text(e))));
        a.extend(c.reaped_by.as_ref().map(|r| arg("reaped_by", format!("pid {} tid {} ({})", r.pid, r.tid, r.call))));
        a.push(arg("never_reaped", c.never_reaped));
        a
    };
    if c.zombie_at_attach {
        out.push((0, c.reaped_at_ns.unwrap_or(SESSION_END), "zombie", zombie_args(c)));
        return out;
    }
    let begin = c.forked_at_ns.unwrap_or(0);
    let end = c.exited_at_ns.or(c.reaped_at_ns).unwrap_or(SESSION_END);
    let mut alive = vec![arg("pid", c.pid), arg("ppid", c.ppid)];
    if c.forked_at_ns.is_none() {
        alive.push(arg("since", "before attach"));
    }
    out.push((begin, end, "alive", alive));
    if let Some(exit) = c.exited_at_ns {
        let until = if c.never_reaped { Some(SESSION_END) } else { c.reaped_at_ns };
        out.extend(until.map(|r| (exit, r, "zombie", zombie_args(c))));
    }
    out
}

/// The target's spans, by the same rules: it has no ledger record, so from its exit event,
/// its release (Free), and the final snapshot.
fn root_life(capture: &Capture, analysis: &Analysis, root: u32) -> Life {
    let l = &capture.lifecycle;
    let exit = l.events.iter().find_map(|e| match e {
        LifeEvent::Exit { ts_ns, pid, .. } if *pid == root => Some(*ts_ns),
        _ => None,
    });
    let freed = l.events.iter().find_map(|e| match e {
        LifeEvent::Free { ts_ns, pid } if *pid == root => Some(*ts_ns),
        _ => None,
    });
    let zombie_at_end = l.final_procs.iter().any(|p| p.pid == root && p.state == 'Z');
    let zombie_until = freed.or(zombie_at_end.then_some(SESSION_END));
    let exit_args = || {
        let e = analysis.report.target.exit.as_ref();
        e.and_then(|e| serde_json::to_value(e).ok()).and_then(|v| v.as_object().map(json_args)).unwrap_or_default()
    };
    if analysis.report.target.state_at_attach.as_deref() == Some("zombie") {
        return vec![(0, freed.unwrap_or(SESSION_END), "zombie", exit_args())];
    }
    let mut out = vec![(0, exit.unwrap_or(SESSION_END), "alive", vec![arg("pid", root), arg("target", true)])];
    if let (Some(e), Some(z)) = (exit, zombie_until) {
        out.push((e, z, "zombie", exit_args()));
    }
    out
}

fn exit_text(e: ExitInfo) -> String {
    match e {
        ExitInfo::Exited { code } => format!("exited {code}"),
        ExitInfo::Killed { signal, core_dumped: false } => format!("killed by {}", signal_name(signal)),
        ExitInfo::Killed { signal, core_dumped: true } => format!("killed by {}, core dumped", signal_name(signal)),
    }
}

/// Instants from the lifecycle events: exec, failed exec, signals (on the target's track when
/// it is traced, else on the sender's), wait starts and returns (on the waiter's).
fn events(b: &mut Builder, capture: &Capture, tracks: &mut Tracks) {
    let l = &capture.lifecycle;
    let known = |tracks: &Tracks, pid: u32| tracks.procs.get(&pid).copied();
    for e in &l.events {
        match e {
            LifeEvent::Exec { ts_ns, pid, filename, argv } => {
                let Some(t) = known(tracks, *pid) else { continue };
                b.instant(t, *ts_ns, "exec", vec![arg("filename", filename.as_str()), arg("argv", argv.join(" "))]);
            }
            LifeEvent::ExecFailed { ts_ns, pid, filename, error } => {
                let Some(t) = known(tracks, *pid) else { continue };
                let errno = ::syscalls::Errno::new(*error).name().map_or_else(|| error.to_string(), str::to_owned);
                b.instant(t, *ts_ns, "exec failed", vec![arg("filename", filename.as_str()), arg("error", errno)]);
            }
            LifeEvent::Signal {
                ts_ns,
                sender_pid,
                sender_tid,
                sender_comm,
                target_pid,
                target_comm,
                signal,
                code,
                result,
            } => {
                let Some(t) = known(tracks, *target_pid).or_else(|| known(tracks, *sender_pid)) else { continue };
                let args = vec![
                    arg("signal", signal_name(*signal)),
                    arg("sender_pid", *sender_pid),
                    arg("sender_tid", *sender_tid),
                    arg("sender_comm", sender_comm.as_str()),
                    arg("target_pid", *target_pid),
                    arg("target_comm", target_comm.as_str()),
                    arg("si_code", *code),
                    arg("result", signal_result(*result)),
                ];
                b.instant(t, *ts_ns, format!("signal {}", signal_name(*signal)), args);
            }
            LifeEvent::Wait(w) => wait(b, tracks, w),
            _ => {}
        }
    }
    for w in &l.waits_in_flight {
        wait(b, tracks, w);
    }
}

/// signal:signal_generate's `result`.
fn signal_result(r: i32) -> String {
    match r {
        0 => "delivered".into(),
        1 => "ignored".into(),
        2 => "already pending".into(),
        3 => "overflow".into(),
        4 => "lose info".into(),
        n => format!("result {n}"),
    }
}

fn wait(b: &mut Builder, tracks: &Tracks, w: &WaitCall) {
    let Some(&t) = tracks.procs.get(&w.pid) else { return };
    let target = match w.target {
        WaitTarget::AnyChild => "any child".to_owned(),
        WaitTarget::Pid { pid } => format!("pid {pid}"),
        WaitTarget::ProcessGroup { pgid } => format!("process group {pgid}"),
        WaitTarget::Pidfd { fd, pid: Some(p) } => format!("pidfd {fd} (pid {p})"),
        WaitTarget::Pidfd { fd, pid: None } => format!("pidfd {fd}"),
    };
    let start = vec![arg("tid", w.tid), arg("waits_for", target), arg("options", format!("{:#x}", w.options))];
    b.instant(t, w.start_ns, format!("{} start", w.syscall), start);
    let Some(end) = w.end_ns else { return };
    let mut ret = vec![arg("tid", w.tid)];
    ret.extend(w.ret.map(|r| arg("ret", r)));
    ret.extend(w.reaped_pid.map(|p| arg("reaped_pid", p)));
    ret.extend(w.exit.map(|e| arg("exit", exit_text(e))));
    b.instant(t, end, format!("{} return", w.syscall), ret);
}

/// The process a finding is about: its `pid`, else the waiter of a stalled wait.
fn finding_pid(f: &Finding) -> Option<u32> {
    ["pid", "waiter_pid", "child_pid"].iter().find_map(|k| f.fields.get(*k).and_then(J::as_u64)).map(|p| p as u32)
}

/// When the fact a finding is about happened, where the ledger has it: the exit of a zombie
/// or of a killed child, the late reap, the failed exec. Otherwise (a stalled wait, a held
/// pipe, an orphan, GC pressure, a leak: conclusions about the whole session) its end.
fn finding_time(f: &Finding, by_pid: &HashMap<u32, &ChildRecord>) -> u64 {
    let c = finding_pid(f).and_then(|p| by_pid.get(&p));
    let t = match f.kind {
        FindingKind::ZombieChild | FindingKind::KilledBySignal => c.and_then(|c| c.exited_at_ns),
        FindingKind::SlowReap => c.and_then(|c| c.reaped_at_ns),
        FindingKind::ExecFailed => c.and_then(|c| c.exec_failures.last()).map(|x| x.at_ns),
        _ => None,
    };
    t.unwrap_or(SESSION_END)
}
