//! --timeline's scheduling (capture.timeline) on each traced thread's own track: slices
//! `running`, then `sleep` / `disk` until the wakeup and `runqueue` from the wakeup until the
//! CPU is back (or `runqueue` alone for a preemption), as sched_switch and sched_waking saw
//! them; an instant `wakeup` on the waker's track with a flow (arrow) to the `running` slice
//! it led to, when the waker was a traced thread in a syscall; and an instant `cpu sample`
//! per on-CPU sample with its stack. A thread's last block, still going when the probes were
//! detached, ends there. When records were dropped (--timeline-events), nothing
//! is drawn past the last one kept: a thread's state after it is unknown.
use std::collections::{BTreeMap, HashMap};

use super::{arg, builder::Flow, processes::Tracks, Builder, Slice, SESSION_END};
use crate::{
    capture::{timeline::Switch, Capture, OffState},
    report::Analysis,
    symbolize::FrameKind,
};

pub(super) fn render(b: &mut Builder, capture: &Capture, analysis: &Analysis, tracks: &mut Tracks) {
    let Some(tl) = &capture.timeline else { return };
    let horizon = if tl.dropped > 0 {
        let last_switch = tl.switches.iter().map(|s| s.on).max();
        let last_sample = tl.samples.iter().map(|s| s.ts).max();
        last_switch.max(last_sample).unwrap_or(0)
    } else {
        SESSION_END
    };
    // Each thread's switches in time order; the blocks open at the end last (unless dropped
    // records make the end unknown).
    let mut by_tid: BTreeMap<u32, Vec<(&Switch, bool)>> = BTreeMap::new();
    for s in &tl.switches {
        by_tid.entry(s.tid).or_default().push((s, false));
    }
    if horizon == SESSION_END {
        for s in &tl.open {
            by_tid.entry(s.tid).or_default().push((s, true));
        }
    }
    // A thread's last exit record: its final switch-out, after sched_process_exit's.
    let mut exits: HashMap<u32, u64> = HashMap::new();
    for &(tid, ts) in &tl.exits {
        let e = exits.entry(tid).or_default();
        *e = (*e).max(ts);
    }
    let mut flows: Flow = 0;
    for (&tid, list) in &by_tid {
        let t = tracks.thread(b, capture, list[0].0.tgid, tid);
        // Since when it runs, and the flow of the wakeup that led there.
        let mut running: Option<(u64, Flow)> = None;
        for &(s, open) in list {
            if let Some(off) = s.off {
                if let Some((since, flow)) = running.take() {
                    b.slice_flow_end(t, slice(since, off, "running"), flow);
                }
                // An open block ends where the probes were detached (`on`), as its in-flight
                // time in the capture does.
                let on = s.on;
                let (first_end, rest) = match s.wake.filter(|_| s.state != OffState::Runqueue) {
                    Some(w) => (w, Some(slice(w, on, OffState::Runqueue.name()))),
                    None => (on, None),
                };
                let mut first = slice(off, first_end, s.state.name());
                // A block begun before the session's time 0 says how much of it is not drawn.
                if s.before > 0 {
                    first.args.push(arg("before_session_ns", s.before));
                }
                b.slice(t, first);
                if let Some(r) = rest {
                    b.slice(t, r);
                }
            }
            if open {
                continue;
            }
            let mut flow = 0;
            if let (Some(w), true) = (s.wake, s.waker != 0) {
                flows += 1;
                flow = flows;
                let waker = tracks.thread(b, capture, s.waker_tgid, s.waker);
                let args = vec![arg("woke_tid", s.tid), arg("woke_pid", s.tgid)];
                b.instant_flow_start(waker, w, "wakeup", args, flow);
            }
            running = Some((s.on, flow));
        }
        if let Some((since, flow)) = running {
            let end = exits.get(&tid).copied().unwrap_or(horizon);
            // Empty when the exit's clock read is a hair before the switch-in's (two clocks),
            // or the cap's horizon is there: drawn anyway when a wakeup's arrow ends at it.
            if end > since || flow != 0 {
                b.slice_flow_end(t, slice(since, end.max(since), "running"), flow);
            }
        }
    }
    samples(b, capture, analysis, tracks);
}

fn slice(begin: u64, end: u64, name: &str) -> Slice {
    Slice { begin, end, name: name.into(), args: Vec::new() }
}

/// Each on-CPU sample as an instant on its thread's track, with its function and its stack
/// (leaf first, one frame a line).
fn samples(b: &mut Builder, capture: &Capture, analysis: &Analysis, tracks: &mut Tracks) {
    let Some(tl) = &capture.timeline else { return };
    for (s, frames) in tl.samples.iter().zip(&analysis.timeline_stacks) {
        let t = tracks.thread(b, capture, s.tgid, s.tid);
        let leaf = frames.iter().rev().find(|f| f.kind != FrameKind::Process).map(|f| f.function.to_string());
        let stack: Vec<String> = frames.iter().rev().map(|f| f.function.to_string()).collect();
        let mut args = vec![arg("stack", stack.join("\n"))];
        args.extend(leaf.map(|f| arg("function", f)));
        b.instant(t, s.ts, "cpu sample", args);
    }
}
