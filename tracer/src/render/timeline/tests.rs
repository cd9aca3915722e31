//! The timeline from constructed captures, decoded again with the same prost types: exact
//! tracks, slices and instants, and the format's rules checked on every trace (`View::of`).
use std::collections::{BTreeMap, HashMap, HashSet};

use prost::Message;

use super::proto::*;
use crate::{
    capture::{Capture, GoProcess},
    lifecycle::{LifeEvent, ProcSnapshot, WaitCall, WaitTarget},
    render::golden::literal_capture,
    report,
};

const MS: u64 = 1_000_000;
/// CLOCK_MONOTONIC at the session's time 0 in these captures.
const BASE: u64 = 7_000 * 1_000_000_000;

/// One event, its time back in session time, its annotations as text.
#[derive(Debug)]
struct Event {
    ts: u64,
    track: u64,
    ty: i32,
    name: Option<String>,
    args: BTreeMap<String, String>,
    counter: Option<i64>,
    /// Flow ids leaving the event, and ending at it.
    flows: Vec<u64>,
    ends: Vec<u64>,
}

#[derive(Debug, PartialEq)]
struct SliceView {
    name: String,
    begin: u64,
    end: u64,
    args: BTreeMap<String, String>,
}

struct View {
    tracks: BTreeMap<u64, TrackDescriptor>,
    events: Vec<Event>,
}

impl View {
    /// Decodes `bytes` and asserts what every timeline must satisfy: the sequence's first
    /// packet clears its state and declares CLOCK_MONOTONIC; every event is on the sequence,
    /// on that clock, on a track described earlier, with names interned earlier; per track,
    /// timestamps never decrease and every slice begun is ended; nothing is before time 0.
    fn of(bytes: &[u8]) -> View {
        let trace = Trace::decode(bytes).expect("a Trace");
        let first = &trace.packet[0];
        assert_eq!(first.sequence_flags, Some(SEQ_INCREMENTAL_STATE_CLEARED | SEQ_NEEDS_INCREMENTAL_STATE));
        let clock = first.clock_snapshot.as_ref().expect("a clock snapshot first");
        assert_eq!(clock.primary_trace_clock, Some(CLOCK_MONOTONIC as i32));
        assert_eq!(clock.clocks[0].clock_id, Some(CLOCK_MONOTONIC));
        let seq = first.trusted_packet_sequence_id.expect("a sequence id");
        let (mut tracks, mut events) = (BTreeMap::new(), Vec::new());
        let (mut names, mut arg_names) = (HashMap::new(), HashMap::new());
        for p in &trace.packet {
            assert_eq!(p.trusted_packet_sequence_id, Some(seq));
            if !std::ptr::eq(p, first) {
                assert_eq!(p.sequence_flags, Some(SEQ_NEEDS_INCREMENTAL_STATE));
            }
            if let Some(d) = &p.track_descriptor {
                assert!(tracks.insert(d.uuid.unwrap(), d.clone()).is_none(), "uuid described twice: {d:?}");
                if let Some(parent) = d.parent_uuid {
                    assert!(tracks.contains_key(&parent), "parent described after the child: {d:?}");
                }
            }
            for n in p.interned_data.iter().flat_map(|d| &d.event_names) {
                assert!(names.insert(n.iid.unwrap(), n.name.clone().unwrap()).is_none());
            }
            for n in p.interned_data.iter().flat_map(|d| &d.debug_annotation_names) {
                assert!(arg_names.insert(n.iid.unwrap(), n.name.clone().unwrap()).is_none());
            }
            let Some(e) = &p.track_event else { continue };
            assert_eq!(p.timestamp_clock_id, Some(CLOCK_MONOTONIC));
            let track = e.track_uuid.unwrap();
            assert!(tracks.contains_key(&track), "event before its track's descriptor: {e:?}");
            let ts = p.timestamp.unwrap().checked_sub(BASE).expect("before the session");
            let name = e.name_iid.map(|i| names.get(&i).cloned().expect("name interned earlier"));
            let args = e
                .debug_annotations
                .iter()
                .map(|a| {
                    let k = arg_names.get(&a.name_iid.unwrap()).cloned().expect("annotation name interned earlier");
                    let v = a.string_value.clone().or(a.uint_value.map(|v| v.to_string()));
                    let v = v.or(a.int_value.map(|v| v.to_string())).or(a.bool_value.map(|v| v.to_string()));
                    (k, v.or(a.double_value.map(|v| v.to_string())).expect("a value"))
                })
                .collect();
            let (flows, ends) = (e.flow_ids.clone(), e.terminating_flow_ids.clone());
            events.push(Event { ts, track, ty: e.r#type.unwrap(), name, args, counter: e.counter_value, flows, ends });
        }
        let v = View { tracks, events };
        for &t in v.tracks.keys() {
            let evs: Vec<&Event> = v.events.iter().filter(|e| e.track == t).collect();
            assert!(evs.windows(2).all(|w| w[0].ts <= w[1].ts), "time goes back on track {t}: {evs:?}");
            let mut depth = 0i64;
            for e in &evs {
                depth += match e.ty {
                    TYPE_SLICE_BEGIN => 1,
                    TYPE_SLICE_END => -1,
                    _ => 0,
                };
                assert!(depth >= 0, "an end without a begin on track {t}");
            }
            assert_eq!(depth, 0, "a slice left open on track {t}");
        }
        v
    }

    fn slices(&self, track: u64) -> Vec<SliceView> {
        let (mut open, mut out) = (Vec::new(), Vec::new());
        for e in self.events.iter().filter(|e| e.track == track) {
            match e.ty {
                TYPE_SLICE_BEGIN => open.push(e),
                TYPE_SLICE_END => {
                    let b = open.pop().unwrap();
                    let (name, args) = (b.name.clone().unwrap(), b.args.clone());
                    out.push(SliceView { name, begin: b.ts, end: e.ts, args });
                }
                _ => {}
            }
        }
        out.sort_by_key(|s| s.begin);
        out
    }

    fn instants(&self, track: u64) -> Vec<&Event> {
        self.events.iter().filter(|e| e.track == track && e.ty == TYPE_INSTANT).collect()
    }

    fn process(&self, pid: u32) -> u64 {
        let mut t = self.tracks.values().filter(|d| d.process.as_ref().and_then(|p| p.pid) == Some(pid as i32));
        let d = t.next().unwrap_or_else(|| panic!("no track for pid {pid}"));
        assert!(t.next().is_none(), "two tracks for pid {pid}");
        d.uuid.unwrap()
    }

    fn child(&self, parent: u64, name: &str) -> u64 {
        let mut t = self.tracks.values().filter(|d| d.parent_uuid == Some(parent) && d.name.as_deref() == Some(name));
        t.next().unwrap_or_else(|| panic!("no {name} track under {parent}")).uuid.unwrap()
    }

    /// The session slice's end: "the end" every open slice is closed at.
    fn end(&self) -> u64 {
        let t = self.tracks.values().find(|d| d.name.as_deref() == Some("rtrace session")).unwrap();
        let s = self.slices(t.uuid.unwrap());
        assert_eq!((s.len(), s[0].begin), (1, 0));
        s[0].end
    }
}

fn render(c: &Capture) -> View {
    let (_, mut r) = literal_capture();
    let a = report::analyze(c, &mut r);
    let mut bytes = Vec::new();
    super::write(c, &a, &mut bytes).unwrap();
    View::of(&bytes)
}

fn fork(ts_ms: u64, pid: u32, parent: u32) -> LifeEvent {
    LifeEvent::Fork { ts_ns: ts_ms * MS, pid, parent_pid: parent, parent_tid: parent, parent_comm: "mycli".into() }
}

fn exit(ts_ms: u64, pid: u32, status: i32) -> LifeEvent {
    LifeEvent::Exit { ts_ns: ts_ms * MS, pid, comm: "mycli".into(), status: Some(status) }
}

fn zombie(pid: u32, status: i32) -> ProcSnapshot {
    ProcSnapshot { pid, ppid: 4242, state: 'Z', comm: "mycli".into(), exit_status: Some(status), ..Default::default() }
}

/// The literal capture (a 2 s session of pid 4242 with one slow read) whose target started
/// three children that exited at once and were never reaped, as tests/fixtures/zombies.c does.
fn zombies() -> Capture {
    let (mut c, _) = literal_capture();
    c.session.start_mono_ns = BASE;
    let l = &mut c.lifecycle;
    l.root_pid = 4242;
    l.end_ns = 2000 * MS;
    for (i, pid) in [5001u32, 5002, 5003].into_iter().enumerate() {
        l.events.push(fork(10 + i as u64, pid, 4242));
        l.events.push(exit(20 + i as u64, pid, (i as i32) << 8));
        l.final_procs.push(zombie(pid, (i as i32) << 8));
    }
    l.final_procs.push(ProcSnapshot { pid: 4242, ppid: 1, state: 'S', comm: "mycli".into(), ..Default::default() });
    c
}

#[test]
fn three_zombies_have_a_zombie_slice_each_to_the_session_end() {
    let v = render(&zombies());
    let end = v.end();
    assert_eq!(end, 2000 * MS);
    for (i, pid) in [5001u32, 5002, 5003].into_iter().enumerate() {
        let s = v.slices(v.process(pid));
        let spans: Vec<(&str, u64, u64)> = s.iter().map(|s| (s.name.as_str(), s.begin, s.end)).collect();
        let (forked, exited) = ((10 + i as u64) * MS, (20 + i as u64) * MS);
        assert_eq!(spans, [("alive", forked, exited), ("zombie", exited, end)], "pid {pid}");
        assert_eq!(s[1].args["exit"], format!("exited {i}"));
        assert_eq!(s[1].args["never_reaped"], "true");
        // The zombie_child finding, on the zombie's own track, at its exit.
        let f: Vec<(&str, u64)> =
            v.instants(v.process(pid)).iter().map(|e| (e.name.as_deref().unwrap(), e.ts)).collect();
        assert_eq!(f, [("finding: zombie_child", exited)], "pid {pid}");
    }
    let all_zombies = v.tracks.keys().flat_map(|&t| v.slices(t)).filter(|s| s.name == "zombie").count();
    assert_eq!(all_zombies, 3);
    // The target ran throughout; its track comes first, named by its command line.
    let root = v.process(4242);
    let spans: Vec<(String, u64, u64)> = v.slices(root).into_iter().map(|s| (s.name, s.begin, s.end)).collect();
    assert_eq!(spans, [("alive".to_owned(), 0, end)]);
    let d = v.tracks[&root].process.clone().unwrap();
    assert_eq!((d.process_name.as_deref(), d.cmdline), (Some("mycli"), vec!["mycli".to_owned(), "build".into()]));
    let order: Vec<i32> = v.tracks.values().filter_map(|d| d.process.as_ref()?.pid).collect();
    assert_eq!(order, [4242, 5001, 5002, 5003], "target first, then fork order");
}

#[test]
fn a_slow_call_is_a_slice_on_its_threads_syscalls_track_with_decoded_arguments() {
    let v = render(&zombies());
    let thread = v.tracks.values().find(|d| d.thread.as_ref().and_then(|t| t.tid) == Some(4242)).unwrap();
    assert_eq!(thread.parent_uuid, Some(v.process(4242)));
    assert_eq!(thread.thread.as_ref().unwrap().pid, Some(4242));
    let s = v.slices(v.child(thread.uuid.unwrap(), "syscalls"));
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].name.as_str(), s[0].begin, s[0].end), ("read", 500 * MS, 1500 * MS));
    let a = &s[0].args;
    assert_eq!((a["fd"].as_str(), a["fd_desc"].as_str(), a["count"].as_str()), ("3", "pipe:[777] (read end)", "4096"));
    assert_eq!(a["args"], "fd=3 (pipe:[777] (read end)), count=4096");
    assert_eq!(a["ret"], "4096");
}

/// A child killed by the target and reaped by its wait4 0.3 s after dying; a second one exec'd
/// and still running at the end.
#[test]
fn signals_waits_and_execs_are_instants_and_a_reaped_zombie_ends_at_its_reap() {
    let (mut c, _) = literal_capture();
    c.session.start_mono_ns = BASE;
    let l = &mut c.lifecycle;
    (l.root_pid, l.end_ns) = (4242, 2000 * MS);
    l.events.push(fork(100, 6001, 4242));
    l.events.push(LifeEvent::Exec {
        ts_ns: 101 * MS,
        pid: 6001,
        filename: "/bin/sleep".into(),
        argv: vec!["sleep".into(), "5".into()],
    });
    l.events.push(LifeEvent::Signal {
        ts_ns: 300 * MS,
        sender_pid: 4242,
        sender_tid: 4243,
        sender_comm: "mycli".into(),
        target_pid: 6001,
        target_comm: "sleep".into(),
        signal: 9,
        code: 0,
        result: 0,
    });
    l.events.push(LifeEvent::Exit { ts_ns: 301 * MS, pid: 6001, comm: "sleep".into(), status: Some(9) });
    let wait = WaitCall {
        pid: 4242,
        tid: 4242,
        syscall: "wait4".into(),
        target: WaitTarget::Pid { pid: 6001 },
        options: 0,
        start_ns: 250 * MS,
        end_ns: Some(601 * MS),
        ret: Some(6001),
        reaped_pid: Some(6001),
        exit: Some(crate::lifecycle::ExitInfo::Killed { signal: 9, core_dumped: false }),
    };
    l.events.push(LifeEvent::Wait(wait));
    l.events.push(fork(700, 6002, 4242));
    l.events.push(LifeEvent::Exec {
        ts_ns: 710 * MS,
        pid: 6002,
        filename: "/bin/cat".into(),
        argv: vec!["cat".into()],
    });
    l.final_procs.push(ProcSnapshot { pid: 6002, ppid: 4242, state: 'S', comm: "cat".into(), ..Default::default() });
    let v = render(&c);
    let killed = v.process(6001);
    let spans: Vec<(String, u64, u64)> = v.slices(killed).into_iter().map(|s| (s.name, s.begin, s.end)).collect();
    assert_eq!(spans, [("alive".to_owned(), 100 * MS, 301 * MS), ("zombie".into(), 301 * MS, 601 * MS)]);
    let z = &v.slices(killed)[1];
    assert_eq!(
        (z.args["exit"].as_str(), z.args["reaped_by"].as_str()),
        ("killed by SIGKILL", "pid 4242 tid 4242 (wait4)")
    );
    let inst: Vec<(&str, u64)> = v.instants(killed).iter().map(|e| (e.name.as_deref().unwrap(), e.ts)).collect();
    assert_eq!(inst, [("exec", 101 * MS), ("signal SIGKILL", 300 * MS), ("finding: killed_by_signal", 301 * MS)]);
    let sig = &v.instants(killed)[1].args;
    assert_eq!((sig["sender_pid"].as_str(), sig["sender_tid"].as_str()), ("4242", "4243"));
    assert_eq!((sig["signal"].as_str(), sig["result"].as_str()), ("SIGKILL", "delivered"));
    let root: Vec<(&str, u64)> =
        v.instants(v.process(4242)).iter().map(|e| (e.name.as_deref().unwrap(), e.ts)).collect();
    assert_eq!(root, [("wait4 start", 250 * MS), ("wait4 return", 601 * MS)]);
    let ret = &v.instants(v.process(4242))[1].args;
    assert_eq!((ret["reaped_pid"].as_str(), ret["exit"].as_str()), ("6001", "killed by SIGKILL"));
    // Still running: alive to the end, no zombie.
    let running: Vec<(String, u64, u64)> =
        v.slices(v.process(6002)).into_iter().map(|s| (s.name, s.begin, s.end)).collect();
    assert_eq!(running, [("alive".to_owned(), 700 * MS, v.end())]);
}

#[test]
fn go_counters_and_gc_pauses_on_the_session_clock() {
    let mut c = zombies();
    let real0 = 1_800_000_000 * 1_000_000_000u64;
    c.session.start_realtime_ns = real0;
    let mut g = GoProcess { pid: 4242, go_version: "go1.22.1".into(), ..Default::default() };
    for (at, live) in [(0, 4), (1000, 40), (2000, 7)] {
        g.snapshots.push(crate::capture::go::GoSnapshot { at_ns: at * MS, live, ..Default::default() });
    }
    g.gc = Some(crate::capture::go::GoGc {
        heap: vec![(0, 1 << 20, 4 << 20), (1000 * MS, 3 << 20, 4 << 20)],
        // Ended 800 ms and 1.6 s into the session, 2 ms and 5 ms long.
        pauses: vec![(real0 + 800 * MS, 2 * MS), (real0 + 1600 * MS, 5 * MS)],
        ..Default::default()
    });
    c.go.push(g);
    let v = render(&c);
    let root = v.process(4242);
    let counter = |name: &str| -> Vec<(u64, i64)> {
        let t = v.child(root, name);
        assert!(v.tracks[&t].counter.is_some(), "{name} is a counter track");
        v.events.iter().filter(|e| e.track == t).map(|e| (e.ts, e.counter.unwrap())).collect()
    };
    assert_eq!(counter("goroutines"), [(0, 4), (1000 * MS, 40), (2000 * MS, 7)]);
    assert_eq!(counter("Go heap live"), [(0, 1 << 20), (1000 * MS, 3 << 20)]);
    assert_eq!(counter("Go heap goal"), [(0, 4 << 20), (1000 * MS, 4 << 20)]);
    let p: Vec<(String, u64, u64)> =
        v.slices(v.child(root, "GC stop-the-world")).into_iter().map(|s| (s.name, s.begin, s.end)).collect();
    assert_eq!(p, [("GC pause".to_owned(), 798 * MS, 800 * MS), ("GC pause".into(), 1595 * MS, 1600 * MS)]);
    // Without the session's wall-clock reference (older captures) no pause is placed.
    c.session.start_realtime_ns = 0;
    let v = render(&c);
    assert!(!v.tracks.values().any(|d| d.name.as_deref() == Some("GC stop-the-world")));
}

/// Two calls of one thread whose times overlap by a little (clock skew between CPUs), and an
/// event past the recorded end: the slices still nest, and the end moves out to that event.
#[test]
fn overlapping_slices_are_kept_apart_and_the_end_covers_every_event() {
    use super::builder::{Builder, Slice, SESSION_END};
    let mut b = Builder::new(BASE, 100);
    let t = b.track(TrackDescriptor { name: Some("syscalls".into()), ..Default::default() });
    let s = |begin, end| Slice { begin, end, name: "read".into(), args: vec![] };
    b.slice(t, s(10, 50));
    b.slice(t, s(40, 60));
    b.slice(t, s(70, SESSION_END));
    b.instant(t, 150, "late", vec![]);
    b.instant(t, SESSION_END, "at the end", vec![]);
    let v = View::of(&b.finish().encode_to_vec());
    let got: Vec<(u64, u64)> = v.slices(t).iter().map(|s| (s.begin, s.end)).collect();
    assert_eq!(got, [(10, 50), (50, 60), (70, 150)]);
    let inst: Vec<(&str, u64)> = v.instants(t).iter().map(|e| (e.name.as_deref().unwrap(), e.ts)).collect();
    assert_eq!(inst, [("late", 150), ("at the end", 150)]);
    let names: HashSet<&str> = v.events.iter().filter_map(|e| e.name.as_deref()).collect();
    assert_eq!(names, HashSet::from(["read", "late", "at the end"]));
}

/// --timeline's records of two threads of pid 4242: 4243 blocks at 100 ms (sleep), is woken at
/// 300 ms by 4244 (in a syscall), gets the CPU at 301 ms and exits at 350 ms; 4244 is preempted
/// at 400 ms, runs again at 402 ms, and is blocked from 500 ms until the end (1900 ms).
#[test]
fn scheduling_slices_and_a_wakeup_flow() {
    use crate::capture::{
        timeline::{Switch, Timeline},
        OffState,
    };
    let mut c = zombies();
    let sw = |tid, state, off: Option<u64>, wake: Option<u64>, on, waker| Switch {
        tid,
        tgid: 4242,
        state,
        off: off.map(|ms| ms * MS),
        wake: wake.map(|ms| ms * MS),
        on: on * MS,
        waker,
        waker_tgid: if waker != 0 { 4242 } else { 0 },
        before: 0,
    };
    c.timeline = Some(Timeline {
        switches: vec![
            sw(4243, OffState::Sleep, None, None, 50, 0),
            sw(4244, OffState::Sleep, None, None, 60, 0),
            sw(4243, OffState::Sleep, Some(100), Some(300), 301, 4244),
            sw(4244, OffState::Runqueue, Some(400), None, 402, 0),
        ],
        open: vec![sw(4244, OffState::Disk, Some(500), None, 1900, 0)],
        exits: vec![(4243, 350 * MS)],
        ..Default::default()
    });
    let v = render(&c);
    let thread = |tid: i64| {
        let d = v.tracks.values().find(|d| d.thread.as_ref().and_then(|t| t.tid) == Some(tid));
        d.unwrap_or_else(|| panic!("no track for thread {tid}")).uuid.unwrap()
    };
    let spans = |t| v.slices(t).into_iter().map(|s| (s.name, s.begin / MS, s.end / MS)).collect::<Vec<_>>();
    let (a, b) = (thread(4243), thread(4244));
    let s = |n: &str, b, e| (n.to_owned(), b, e);
    assert_eq!(
        spans(a),
        [s("running", 50, 100), s("sleep", 100, 300), s("runqueue", 300, 301), s("running", 301, 350)]
    );
    assert_eq!(
        spans(b),
        [s("running", 60, 400), s("runqueue", 400, 402), s("running", 402, 500), s("disk", 500, 1900)]
    );
    // The wakeup: an instant on the waker's track whose flow ends where 4243 runs again.
    let wake = v.instants(b);
    assert_eq!(wake.len(), 1, "{wake:?}");
    assert_eq!((wake[0].name.as_deref(), wake[0].ts), (Some("wakeup"), 300 * MS));
    assert_eq!(wake[0].args["woke_tid"], "4243");
    let flow = wake[0].flows.clone();
    assert_eq!(flow.len(), 1);
    let ends: Vec<(u64, u64)> = v.events.iter().filter(|e| e.ends == flow).map(|e| (e.track, e.ts)).collect();
    assert_eq!(ends, [(a, 301 * MS)]);
    // With records dropped past the cap, nothing is drawn after the last one kept.
    c.timeline.as_mut().unwrap().dropped = 5;
    c.timeline.as_mut().unwrap().exits.clear();
    let v = render(&c);
    let spans = |t| v.slices(t).into_iter().map(|s| (s.name, s.begin / MS, s.end / MS)).collect::<Vec<_>>();
    assert_eq!(spans(thread(4243)).last(), Some(&s("running", 301, 402)));
    assert_eq!(spans(thread(4244)).last(), Some(&s("runqueue", 400, 402)));
}

/// A thread woken (by a traced waker) whose exit's clock read comes a hair before its
/// switch-in's (two clocks): the wakeup's arrow still ends at a (zero-length) running slice.
#[test]
fn a_wakeup_flow_ends_even_when_the_thread_exits_at_once() {
    use crate::capture::{
        timeline::{Switch, Timeline},
        OffState,
    };
    let mut c = zombies();
    let on = 301 * MS;
    c.timeline = Some(Timeline {
        switches: vec![Switch {
            tid: 4243,
            tgid: 4242,
            state: OffState::Sleep,
            off: Some(100 * MS),
            wake: Some(300 * MS),
            on,
            waker: 4242,
            waker_tgid: 4242,
            before: 0,
        }],
        exits: vec![(4243, on - 2_000)],
        ..Default::default()
    });
    let v = render(&c);
    let flow_out: Vec<&Event> = v.events.iter().filter(|e| !e.flows.is_empty()).collect();
    assert_eq!(flow_out.len(), 1);
    let ends: Vec<(u64, i32)> = v.events.iter().filter(|e| e.ends == flow_out[0].flows).map(|e| (e.ts, e.ty)).collect();
    assert_eq!(ends, [(on, TYPE_SLICE_BEGIN)]);
}
