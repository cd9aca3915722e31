//! The `TIMELINE` ring while the session runs (--timeline, see tracer_common::timeline): the
//! records are read on every tick (the kernel sends them without a wakeup) and kept up to
//! --timeline-events; at the end they become the capture's `Timeline`, on session time, with
//! the samples' stacks resolved like the drain's.
use std::collections::HashMap;

use tracer_common::sched::OffStart;
use tracer_common::timeline::{TlExit, TlSample, TlSwitch, TL_EXIT, TL_SAMPLE, TL_SWITCH};

use super::ustacks::{UserStacks, Ustacks};
use crate::capture::{
    timeline::{Sample, Switch, Timeline},
    OffState,
};

pub struct Reader {
    cap: u64,
    switches: Vec<TlSwitch>,
    exits: Vec<TlExit>,
    samples: Vec<TlSample>,
    dropped: u64,
    pub malformed: u64,
}

impl Reader {
    pub fn new(cap: u64) -> Self {
        Reader { cap, switches: Vec::new(), exits: Vec::new(), samples: Vec::new(), dropped: 0, malformed: 0 }
    }

    /// Records counted against the cap (exits are not: see `record`).
    fn kept(&self) -> u64 {
        (self.switches.len() + self.samples.len()) as u64
    }

    /// Every record in the ring now.
    pub fn read(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) {
        while let Some(item) = ring.next() {
            self.record(&item);
        }
    }

    fn record(&mut self, item: &[u8]) {
        let Some(kind) = super::record::<u32>(item) else {
            self.malformed += 1;
            return;
        };
        // Exits are few and close a thread's last slice: kept beyond the cap.
        if kind != TL_EXIT && self.kept() >= self.cap {
            self.dropped += 1;
            return;
        }
        let ok = match kind {
            TL_SWITCH => super::record::<TlSwitch>(item).map(|r| self.switches.push(r)),
            TL_EXIT => super::record::<TlExit>(item).map(|r| self.exits.push(r)),
            TL_SAMPLE => super::record::<TlSample>(item).map(|r| self.samples.push(r)),
            _ => None,
        };
        self.malformed += ok.is_none() as u64;
    }

    /// The capture's timeline. `to_session`: an off-CPU-clock time to session ns, negative
    /// before the session's time 0 (kept at 0, with the part before in `Switch::before`);
    /// `lost`: the kernel's TIMELINE_LOST.
    pub fn finish(
        self,
        signed: impl Fn(u64) -> i64 + Copy,
        users: &UserStacks<'_>,
        kernel: &HashMap<i32, crate::capture::Addrs>,
        ustacks: &Ustacks,
        lost: u64,
    ) -> Timeline {
        let frames = |id: i32| super::drain::frames(kernel, id).to_vec();
        let to_session = |ts: u64| signed(ts).max(0) as u64;
        let mut switches: Vec<Switch> = self
            .switches
            .iter()
            .map(|r| Switch {
                tid: r.tid,
                tgid: r.tgid,
                state: OffState::from_kernel(r.state),
                off: (r.off_ts != 0).then(|| to_session(r.off_ts)),
                wake: (r.wake_ts != 0).then(|| to_session(r.wake_ts)),
                on: to_session(r.ts),
                waker: r.waker_tid,
                waker_tgid: r.waker_tgid,
                before: before(signed, r.off_ts, r.ts),
            })
            .collect();
        // Each CPU's records are in order; across CPUs the ring interleaves them.
        switches.sort_by_key(|s| (s.on, s.tid));
        let mut samples: Vec<Sample> = self
            .samples
            .iter()
            .map(|r| Sample {
                ts: to_session(r.ts),
                tgid: r.tgid,
                tid: r.tid,
                // 0: these samples are already counted in the drain's stack accounting.
                user: users.get(r.tgid, r.user_stack_id, 0).to_vec(),
                kernel: frames(r.kernel_stack_id),
                leaf: users.leaf(r.user_stack_id, r.leaf),
            })
            .collect();
        let mut dropped = self.dropped;
        for t in ustacks.timed_samples() {
            if (switches.len() + samples.len()) as u64 >= self.cap {
                dropped += 1;
                continue;
            }
            samples.push(Sample {
                ts: to_session(t.ts),
                tgid: t.tgid,
                tid: t.tid,
                user: t.user.clone(),
                kernel: frames(t.kernel_stack_id),
                leaf: t.skipped.into(),
            });
        }
        samples.sort_by_key(|s| (s.ts, s.tid));
        let mut exits: Vec<(u32, u64)> = self.exits.iter().map(|e| (e.tid, to_session(e.ts))).collect();
        exits.sort_by_key(|e| e.1);
        Timeline { switches, open: Vec::new(), exits, samples, dropped, lost, cap: self.cap }
    }
}

/// The part of a block from `off` to `on` (off-CPU clock) before the session's time 0, ns.
fn before(signed: impl Fn(u64) -> i64, off: u64, on: u64) -> u64 {
    if off == 0 {
        return 0;
    }
    let (off, on) = (signed(off), signed(on));
    (on.min(0) - off.min(0)).max(0) as u64
}

/// The threads off-CPU at detach (Probes::off_in_flight) as switches that end at `end`.
pub fn open(in_flight: &[(u32, OffStart)], signed: impl Fn(u64) -> i64 + Copy, end: u64) -> Vec<Switch> {
    let to_session = |ts: u64| signed(ts).max(0) as u64;
    let mut v: Vec<Switch> = in_flight
        .iter()
        .map(|(tid, s)| Switch {
            tid: *tid,
            tgid: s.tgid,
            state: OffState::from_kernel(s.state),
            off: Some(to_session(s.ts)),
            wake: (s.wake_ts >= s.ts && s.wake_ts != 0).then(|| to_session(s.wake_ts)),
            on: end,
            waker: 0,
            waker_tgid: 0,
            before: if s.ts == 0 { 0 } else { (-signed(s.ts)).max(0) as u64 },
        })
        .collect();
    v.sort_by_key(|s| (s.off, s.tid));
    v
}
