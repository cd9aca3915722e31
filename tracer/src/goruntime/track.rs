//! Successive goroutine snapshots of one process → the `capture::go` records: a summary per
//! snapshot, the last snapshot in full, and how long each goroutine has been parked where it
//! is as far as the snapshots show. Memory stays bounded: the last snapshot plus one entry
//! per currently blocked goroutine.
use std::{
    collections::{hash_map::DefaultHasher, BTreeMap, HashMap},
    hash::{Hash, Hasher},
};

use super::goroutines::{Live, Snapshot, LEAKED, SYSCALL, WAITING};
use crate::capture::go::{GoSnapshot, Goroutine};

/// Where a blocked goroutine was seen, and since when.
#[derive(Clone, Copy, Debug)]
struct Blocked {
    /// Hash of (status, wait reason, resume pc, stack): the place.
    place: u64,
    since_ns: u64,
    before_first: bool,
    wait_since: u64,
}

#[derive(Default)]
pub struct Tracker {
    summaries: Vec<GoSnapshot>,
    last: Option<Snapshot>,
    blocked: HashMap<u64, Blocked>,
}

/// Blocked: parked (waiting, or leaked) or in a system call.
fn is_blocked(status: u32) -> bool {
    matches!(status, WAITING | SYSCALL | LEAKED)
}

fn place(l: &Live, stacks: &[Vec<u64>]) -> u64 {
    let mut h = DefaultHasher::new();
    (l.g.status, l.g.wait_reason, l.pc).hash(&mut h);
    // The resume pc of every parked goroutine is in gopark: the stack tells the places apart.
    l.g.stack.map(|s| &stacks[s as usize]).hash(&mut h);
    h.finish()
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// One more snapshot, taken `at_ns` after attach (snapshots come in time order).
    pub fn observe(&mut self, at_ns: u64, snap: Snapshot) {
        let first = self.summaries.is_empty();
        let mut by_site: BTreeMap<u64, u64> = BTreeMap::new();
        for l in &snap.goroutines {
            *by_site.entry(l.g.gopc).or_default() += 1;
        }
        self.summaries.push(GoSnapshot {
            at_ns,
            read_us: snap.read_us,
            live: snap.goroutines.len() as u64,
            dropped: snap.dropped,
            by_site,
        });
        let mut blocked = HashMap::with_capacity(self.blocked.len());
        for l in snap.goroutines.iter().filter(|l| is_blocked(l.g.status)) {
            let here = place(l, &snap.stacks);
            let prev = self.blocked.get(&l.g.goid).filter(|b| {
                // `waitsince` is reset when the goroutine runs and set by a GC that sees it
                // blocked: a different non-zero value, or zero after non-zero, means it ran
                // and blocked again at the same place in between.
                b.place == here && (b.wait_since == 0 || b.wait_since == l.g.wait_since)
            });
            let b = match prev {
                Some(b) => Blocked { wait_since: l.g.wait_since, ..*b },
                None => Blocked { place: here, since_ns: at_ns, before_first: first, wait_since: l.g.wait_since },
            };
            blocked.insert(l.g.goid, b);
        }
        self.blocked = blocked;
        self.last = Some(snap);
    }

    /// The start pcs of the last snapshot's goroutines (None before the first snapshot).
    pub fn start_pcs(&self) -> Option<impl Iterator<Item = u64> + '_> {
        self.last.as_ref().map(|s| s.goroutines.iter().map(|l| l.g.start_pc))
    }

    /// Keeps the last `keep` summaries (a session that runs for days: `rtrace serve --watch`).
    pub fn trim(&mut self, keep: usize) {
        let n = self.summaries.len();
        if n > keep {
            self.summaries.drain(..n - keep);
        }
    }

    /// (every snapshot's summary, the last snapshot's goroutines with their parked times and
    /// `stack` indexes into the third: the last snapshot's distinct stacks).
    pub fn finish(self) -> (Vec<GoSnapshot>, Vec<Goroutine>, Vec<Vec<u64>>) {
        let Some(last) = self.last else { return (self.summaries, Vec::new(), Vec::new()) };
        let goroutines = last
            .goroutines
            .into_iter()
            .map(|l| {
                let mut g = l.g;
                if let Some(b) = self.blocked.get(&g.goid).filter(|_| is_blocked(g.status)) {
                    g.parked_since_ns = Some(b.since_ns);
                    g.parked_before_first = b.before_first;
                }
                g
            })
            .collect();
        (self.summaries, goroutines, last.stacks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(goid: u64, status: u32, reason: u32, stack: u32, wait_since: u64) -> Live {
        Live {
            g: Goroutine {
                goid,
                status,
                wait_reason: reason,
                wait_since,
                gopc: 0x100 + goid % 2,
                stack: Some(stack),
                ..Default::default()
            },
            pc: 0x4000,
        }
    }

    fn snap(gs: Vec<Live>) -> Snapshot {
        Snapshot { read_us: 7, goroutines: gs, stacks: vec![vec![0x4000, 0x5000], vec![0x4000, 0x6000]], dropped: 1 }
    }

    #[test]
    fn parked_times_follow_the_place() {
        let mut t = Tracker::new();
        // 1: parked at stack 0 throughout. 2: moves from stack 0 to stack 1. 3: runs, then
        // parks. 4: same place, but waitsince changed (ran and re-parked between reads).
        t.observe(
            1_000,
            snap(vec![
                live(1, WAITING, 14, 0, 0),
                live(2, WAITING, 14, 0, 0),
                live(3, 2, 0, 0, 0),
                live(4, WAITING, 14, 0, 50),
            ]),
        );
        t.observe(
            2_000,
            snap(vec![
                live(1, WAITING, 14, 0, 0),
                live(2, WAITING, 14, 1, 0),
                live(3, WAITING, 9, 1, 0),
                live(4, WAITING, 14, 0, 60),
            ]),
        );
        t.observe(
            3_000,
            snap(vec![
                live(1, WAITING, 14, 0, 90),
                live(2, WAITING, 14, 1, 0),
                live(3, WAITING, 9, 1, 0),
                live(4, WAITING, 14, 0, 60),
            ]),
        );
        let (sums, last, stacks) = t.finish();
        assert_eq!(sums.len(), 3);
        assert_eq!((sums[0].at_ns, sums[0].live, sums[0].dropped, sums[0].read_us), (1_000, 4, 1, 7));
        assert_eq!(sums[2].by_site, BTreeMap::from([(0x100, 2), (0x101, 2)]));
        assert_eq!(stacks.len(), 2);
        let since: Vec<_> = last.iter().map(|g| (g.goid, g.parked_since_ns, g.parked_before_first)).collect();
        assert_eq!(
            since,
            [(1, Some(1_000), true), (2, Some(2_000), false), (3, Some(2_000), false), (4, Some(2_000), false)]
        );
    }

    #[test]
    fn running_goroutines_have_no_parked_time() {
        let mut t = Tracker::new();
        t.observe(5, snap(vec![live(1, WAITING, 14, 0, 0)]));
        t.observe(9, snap(vec![live(1, 2, 0, 0, 0), live(7, SYSCALL, 0, 1, 0)]));
        let (_, last, _) = t.finish();
        assert_eq!(last[0].parked_since_ns, None);
        assert_eq!((last[1].parked_since_ns, last[1].parked_before_first), (Some(9), false));
        assert_eq!(Tracker::new().finish(), (vec![], vec![], vec![]));
    }
}
