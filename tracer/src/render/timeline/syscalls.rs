//! The slow syscalls (the top K slowest and those over --slow-threshold, in flight at the end
//! included) as slices on a "syscalls" track under each thread's track, with the arguments the
//! analysis decoded for report.txt (analyze/sysargs) as debug annotations. A thread is in one
//! syscall at a time, so its calls never overlap; the builder still keeps them from doing so
//! if two timestamps disagree by a little.
use super::{
    arg,
    builder::{json_args, Uuid},
    processes::Tracks,
    proto::TrackDescriptor,
    Builder, Slice, SESSION_END,
};
use crate::{analyze::syscalls::SlowCallReport, capture::Capture, report::Analysis};

pub(super) fn render(b: &mut Builder, capture: &Capture, analysis: &Analysis, tracks: &mut Tracks) {
    let Some(calls) = &analysis.report.slowest_syscalls else { return };
    // Thread tracks in the order of the calls' starts: the first thread to block first.
    let mut calls: Vec<&SlowCallReport> = calls.iter().collect();
    calls.sort_by_key(|c| (c.start_ns, c.tid));
    for c in calls {
        let t = thread_track(b, capture, tracks, c.pid, c.tid);
        let end = if c.in_flight { SESSION_END } else { c.start_ns.saturating_add(c.duration_ns) };
        let mut args = vec![arg("args", c.args.text.clone()), arg("ret", c.ret_text.clone())];
        args.extend(json_args(&c.args.fields));
        if c.in_flight {
            args.push(arg("in_flight", true));
        }
        if c.started_before_attach {
            args.push(arg("started_before_attach", true));
        }
        args.extend(c.caller_function.clone().map(|f| arg("caller", f)));
        args.extend(c.leaf_function.clone().map(|f| arg("function", f)));
        b.slice(t, Slice { begin: c.start_ns, end, name: c.name.clone(), args });
    }
}

/// The thread's "syscalls" track, under the thread's own track (Tracks::thread).
fn thread_track(b: &mut Builder, capture: &Capture, tracks: &mut Tracks, pid: u32, tid: u32) -> Uuid {
    if let Some(&t) = tracks.threads.get(&tid) {
        return t;
    }
    let thread = tracks.thread(b, capture, pid, tid);
    let t = b.track(TrackDescriptor { name: Some("syscalls".into()), parent_uuid: Some(thread), ..Default::default() });
    tracks.threads.insert(tid, t);
    t
}
