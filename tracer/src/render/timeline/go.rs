//! The Go runtime view over time, under each Go process's track: counters of live goroutines
//! (every snapshot: attach, about once a second, end) and of the heap's live bytes and goal
//! (every GC statistics read), and the GC pauses as slices on a "GC stop-the-world" track.
//!
//! Clocks: snapshots and heap reads are in session time already. A pause is what the runtime
//! keeps in its `pause_end`/`pause_ns` rings: when the cycle's last stop ended, in
//! CLOCK_REALTIME, and how long its stops lasted together; it is moved onto the session clock
//! with the session's CLOCK_REALTIME at time 0, and drawn as one slice ending at `pause_end`
//! (a cycle's two stops, summed: the runtime keeps no more). Without that reference (captures
//! from before it was recorded) no pause is drawn.
use super::{
    arg,
    processes::Tracks,
    proto::{CounterDescriptor, TrackDescriptor, UNIT_COUNT, UNIT_SIZE_BYTES},
    Builder, Slice,
};
use crate::capture::Capture;

pub(super) fn render(b: &mut Builder, capture: &Capture, tracks: &mut Tracks) {
    for g in capture.go.iter().filter(|g| g.unavailable.is_none()) {
        let parent = tracks.process(b, capture, g.pid);
        let counter = |b: &mut Builder, name: &str, unit| {
            b.track(TrackDescriptor {
                name: Some(name.to_owned()),
                parent_uuid: Some(parent),
                counter: Some(CounterDescriptor { unit: Some(unit) }),
                ..Default::default()
            })
        };
        if !g.snapshots.is_empty() {
            let t = counter(b, "goroutines", UNIT_COUNT);
            for s in &g.snapshots {
                b.counter(t, s.at_ns, s.live as i64);
            }
        }
        let Some(gc) = &g.gc else { continue };
        if !gc.heap.is_empty() {
            let t = counter(b, "Go heap live", UNIT_SIZE_BYTES);
            for &(at, live, _) in &gc.heap {
                b.counter(t, at, live as i64);
            }
        }
        // Goal 0: its offset is unknown for this Go version without DWARF.
        if gc.heap.iter().any(|h| h.2 != 0) {
            let t = counter(b, "Go heap goal", UNIT_SIZE_BYTES);
            for &(at, _, goal) in gc.heap.iter().filter(|h| h.2 != 0) {
                b.counter(t, at, goal as i64);
            }
        }
        let start_real = capture.session.start_realtime_ns;
        if start_real == 0 || gc.pauses.is_empty() {
            continue;
        }
        let t = b.track(TrackDescriptor {
            name: Some("GC stop-the-world".into()),
            parent_uuid: Some(parent),
            ..Default::default()
        });
        for &(end_real, ns) in &gc.pauses {
            // A pause that ended just before time 0 (the first read's ring) starts the line.
            let end = end_real.saturating_sub(start_real);
            let args = vec![arg("pause_ns", ns), arg("what", "the GC cycle's stop-the-world pauses, summed")];
            b.slice(t, Slice { begin: end.saturating_sub(ns), end, name: "GC pause".into(), args });
        }
    }
}
