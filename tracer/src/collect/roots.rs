//! A watch set's roots (`rtrace serve --watch`, issue #15): one session and one probe set for
//! every watched process. Loading and verifying the programs costs ~350-480 ms of CPU, so a
//! session per watched process could follow tens of them, not the thousand short-lived ones a
//! CI runner starts in a minute. The session adopts each root as the daemon finds it (tracked
//! with the descendants it already has, as a session does at attach), knows which root every
//! process it follows belongs to (a child inherits its parent's), and splits its readings per
//! root: each root's ledger is shifted to its adoption, so that it reads exactly as a session
//! started there would have it (0 stays "before attach"). Once a root's whole tree is gone and
//! its last reading published, the session forgets it (`forget`): the ledger's events, the
//! registry's mappings, the folded stats and the kernel maps' entries of its processes — memory
//! stays bounded however long the daemon runs.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::lifecycle::{LifeEvent, Lifecycle, WaitCall};

/// Which root each followed process belongs to, and when each root was adopted.
#[derive(Default, Clone)]
pub struct Owners {
    owner: HashMap<u32, u32>,
    /// Root → its adoption, session ns.
    adopted: BTreeMap<u32, u64>,
}

impl Owners {
    pub fn adopt(&mut self, root: u32, existing: &[u32], at_ns: u64) {
        self.adopted.insert(root, at_ns);
        self.owner.insert(root, root);
        for &p in existing {
            self.owner.insert(p, root);
        }
    }

    /// A fork: the child belongs to its parent's root.
    pub fn forked(&mut self, child: u32, parent: u32) {
        if let Some(&r) = self.owner.get(&parent) {
            self.owner.insert(child, r);
        }
    }

    pub fn of(&self, pid: u32) -> Option<u32> {
        self.owner.get(&pid).copied()
    }

    pub fn roots(&self) -> impl Iterator<Item = u32> + '_ {
        self.adopted.keys().copied()
    }

    /// When `root` was adopted, session ns (0 for the session's target, or one not adopted).
    pub fn since(&self, root: u32) -> u64 {
        self.adopted.get(&root).copied().unwrap_or(0)
    }

    /// Every process of `root`'s tree the session knows.
    pub fn tree(&self, root: u32) -> BTreeSet<u32> {
        self.owner.iter().filter(|(_, &r)| r == root).map(|(&p, _)| p).collect()
    }

    /// Forgets folded processes (their root lives on).
    pub fn drop_pids(&mut self, pids: &BTreeSet<u32>) {
        self.owner.retain(|p, _| !pids.contains(p));
    }

    pub fn is_root(&self, pid: u32) -> bool {
        self.adopted.contains_key(&pid)
    }

    /// Forgets `root` and its processes.
    pub fn forget(&mut self, root: u32) {
        self.adopted.remove(&root);
        self.owner.retain(|_, r| *r != root);
    }
}

/// The pid an event is about, or both of a signal's ends.
pub(super) fn pids_of(e: &LifeEvent) -> [u32; 2] {
    match e {
        LifeEvent::Fork { pid, .. }
        | LifeEvent::Exec { pid, .. }
        | LifeEvent::ExecFailed { pid, .. }
        | LifeEvent::Exit { pid, .. }
        | LifeEvent::SignalDeliver { pid, .. }
        | LifeEvent::Pidfd { pid, .. }
        | LifeEvent::Free { pid, .. } => [*pid, *pid],
        LifeEvent::Signal { sender_pid, target_pid, .. } => [*sender_pid, *target_pid],
        LifeEvent::Wait(w) => [w.pid, w.pid],
    }
}

fn ts_mut(e: &mut LifeEvent) -> Option<&mut u64> {
    match e {
        LifeEvent::Fork { ts_ns, .. }
        | LifeEvent::Exec { ts_ns, .. }
        | LifeEvent::ExecFailed { ts_ns, .. }
        | LifeEvent::Exit { ts_ns, .. }
        | LifeEvent::SignalDeliver { ts_ns, .. }
        | LifeEvent::Pidfd { ts_ns, .. }
        | LifeEvent::Free { ts_ns, .. }
        | LifeEvent::Signal { ts_ns, .. } => Some(ts_ns),
        LifeEvent::Wait(_) => None,
    }
}

/// A session ns as ns since `since` (the root's adoption). A wait's start 0 (unknown: begun
/// before the probes saw it) stays 0; a known one stays at least 1 (see LifeCollector).
fn shift_wait(w: &mut WaitCall, since: u64) {
    if w.start_ns != 0 {
        w.start_ns = w.start_ns.saturating_sub(since).max(1);
    }
    if let Some(t) = w.end_ns.as_mut() {
        *t = t.saturating_sub(since);
    }
}

/// Drops the events of descendants `gone` (freed, so reaped: nothing more will happen to
/// them) from a live root's ledger, so that it does not grow with every child a long-lived
/// process ever ran: theirs (fork, exec, exit, signals delivered, pidfds, free), the signals
/// sent to them, the waits that reaped them, and their own waits unless those reaped a process
/// still in the ledger (`known`: its row needs that reap). What they counted is kept by the
/// publisher (serve/watch/fold.rs), from the reading before.
pub fn fold(l: &mut Lifecycle, gone: &BTreeSet<u32>, known: &BTreeSet<u32>) {
    l.events.retain(|e| match e {
        LifeEvent::Signal { target_pid, .. } => !gone.contains(target_pid),
        LifeEvent::Wait(w) => {
            let reaped_gone = w.reaped_pid.is_some_and(|p| gone.contains(&p));
            let own = gone.contains(&w.pid) && w.reaped_pid.is_none_or(|p| !known.contains(&p));
            !reaped_gone && !own
        }
        e => !gone.contains(&pids_of(e)[0]),
    });
    l.skipped.retain(|s| !gone.contains(&s.pid));
}

/// `root`'s part of the whole session's ledger, with its times since its adoption.
pub fn split(l: &Lifecycle, root: u32, owners: &Owners) -> Lifecycle {
    let since = owners.since(root);
    let mine = |pid: u32| owners.of(pid) == Some(root);
    let mut out = Lifecycle {
        root_pid: root,
        end_ns: l.end_ns.saturating_sub(since),
        lost_events: l.lost_events,
        rtrace_chain: l.rtrace_chain.clone(),
        ..Default::default()
    };
    out.initial = l.initial.iter().filter(|p| mine(p.pid) && p.pid != root).cloned().collect();
    out.final_procs = l.final_procs.iter().filter(|p| mine(p.pid)).cloned().collect();
    for e in l.events.iter().filter(|e| pids_of(e).into_iter().any(mine)) {
        let mut e = e.clone();
        match &mut e {
            LifeEvent::Wait(w) => shift_wait(w, since),
            e => {
                if let Some(t) = ts_mut(e) {
                    *t = t.saturating_sub(since);
                }
            }
        }
        out.events.push(e);
    }
    for w in l.waits_in_flight.iter().filter(|w| mine(w.pid)) {
        let mut w = w.clone();
        shift_wait(&mut w, since);
        out.waits_in_flight.push(w);
    }
    for p in l.pipes.iter().filter(|p| mine(p.pid)) {
        let mut p = p.clone();
        p.seen_at_ns = p.seen_at_ns.map(|t| t.saturating_sub(since));
        out.pipes.push(p);
    }
    for s in l.skipped.iter().filter(|s| mine(s.pid)) {
        let mut s = s.clone();
        if s.ts_ns != 0 {
            s.ts_ns = s.ts_ns.saturating_sub(since).max(1);
        }
        out.skipped.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{ProcSnapshot, WaitTarget};

    fn wait(pid: u32, start_ns: u64, end_ns: Option<u64>) -> WaitCall {
        crate::analyze::children::tests::call(pid, pid, "wait4", WaitTarget::AnyChild, start_ns, end_ns)
    }

    #[test]
    fn each_root_gets_its_tree_with_times_since_its_adoption() {
        const S: u64 = 1_000_000_000;
        let mut o = Owners::default();
        o.adopt(100, &[101], 0);
        o.adopt(200, &[], 10 * S);
        o.forked(102, 101);
        o.forked(201, 200);
        o.forked(999, 42); // not a followed parent: nobody's
        let fork = |ts_ns, pid, parent_pid| LifeEvent::Fork {
            ts_ns,
            pid,
            parent_pid,
            parent_tid: parent_pid,
            parent_comm: String::new(),
        };
        let snap = |pid| ProcSnapshot { pid, ..Default::default() };
        let l = Lifecycle {
            root_pid: 100,
            initial: vec![snap(101)],
            events: vec![
                fork(S, 102, 101),
                fork(11 * S, 201, 200),
                // A wait of 200 that began before its adoption, and one after.
                LifeEvent::Wait(wait(200, 0, Some(12 * S))),
                LifeEvent::Wait(wait(200, 12 * S, Some(13 * S))),
                // Sent by 100's tree to 200's: both see it.
                LifeEvent::Signal {
                    ts_ns: 14 * S,
                    sender_pid: 102,
                    sender_tid: 102,
                    sender_comm: String::new(),
                    target_pid: 201,
                    target_comm: String::new(),
                    signal: 15,
                    code: 0,
                    result: 0,
                },
            ],
            waits_in_flight: vec![wait(200, 14 * S, None)],
            final_procs: vec![snap(100), snap(102), snap(200)],
            end_ns: 15 * S,
            ..Default::default()
        };
        let a = split(&l, 100, &o);
        assert_eq!((a.root_pid, a.end_ns, a.initial.len()), (100, 15 * S, 1));
        assert_eq!(a.events, vec![l.events[0].clone(), l.events[4].clone()]);
        assert!(a.waits_in_flight.is_empty());
        assert_eq!(a.final_procs.iter().map(|p| p.pid).collect::<Vec<_>>(), [100, 102]);

        let b = split(&l, 200, &o);
        assert_eq!((b.root_pid, b.end_ns, b.initial.len()), (200, 5 * S, 0));
        assert_eq!(b.events[0], fork(S, 201, 200));
        assert_eq!(b.events[1], LifeEvent::Wait(wait(200, 0, Some(2 * S))));
        assert_eq!(b.events[2], LifeEvent::Wait(wait(200, 2 * S, Some(3 * S))));
        assert!(matches!(b.events[3], LifeEvent::Signal { ts_ns, .. } if ts_ns == 4 * S));
        assert_eq!(b.waits_in_flight, vec![wait(200, 4 * S, None)]);
        assert_eq!(b.final_procs.iter().map(|p| p.pid).collect::<Vec<_>>(), [200]);

        assert_eq!(o.tree(100), [100, 101, 102].into());
        o.drop_pids(&[101].into());
        assert_eq!(o.tree(100), [100, 102].into());
        o.forget(100);
        assert_eq!((o.of(102), o.of(201), o.roots().count()), (None, Some(200), 1));
    }

    #[test]
    fn folding_drops_what_was_about_the_gone_ones_only() {
        // 10 (the root) forked 11 and 12; 11 forked 13 and reaped it; 10 reaped 11; 12 lives.
        let fork = |pid, parent_pid| LifeEvent::Fork {
            ts_ns: 1,
            pid,
            parent_pid,
            parent_tid: parent_pid,
            parent_comm: String::new(),
        };
        let exit = |pid| LifeEvent::Exit { ts_ns: 2, pid, comm: String::new(), status: Some(0) };
        let reap = |pid, child| {
            let mut w = wait(pid, 1, Some(3));
            w.reaped_pid = Some(child);
            LifeEvent::Wait(w)
        };
        let signal = |target_pid| LifeEvent::Signal {
            ts_ns: 2,
            sender_pid: 10,
            sender_tid: 10,
            sender_comm: String::new(),
            target_pid,
            target_comm: String::new(),
            signal: 15,
            code: 0,
            result: 0,
        };
        let mut l = Lifecycle {
            root_pid: 10,
            events: vec![
                fork(11, 10),
                fork(12, 10),
                fork(13, 11),
                exit(13),
                reap(11, 13),
                signal(11),
                signal(12),
                exit(11),
                reap(10, 11),
                LifeEvent::Free { ts_ns: 4, pid: 11 },
            ],
            ..Default::default()
        };
        // 11 goes while 13, which it reaped, is still held: 11's wait on it stays.
        fold(&mut l, &[11].into(), &[10, 12, 13].into());
        assert_eq!(l.events, vec![fork(12, 10), fork(13, 11), exit(13), reap(11, 13), signal(12)]);
        // Then 13 goes: the rest of 11's and 13's own go with it.
        fold(&mut l, &[13].into(), &[10, 12].into());
        assert_eq!(l.events, vec![fork(12, 10), signal(12)]);
    }
}
