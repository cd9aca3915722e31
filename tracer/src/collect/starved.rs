//! Threads off CPU for the whole session without any probe seeing it: runnable (preempted)
//! or asleep outside a syscall since before attach, and never switched in until the end, so
//! sched_switch never saw them leave or come back. On an overloaded machine (1000 runnable
//! threads on 2 CPUs) a thread can wait in the run queue for seconds. The kernel's own
//! accounting tells: the run time in /proc/PID/task/TID/schedstat did not move between
//! attach and the end. Threads blocked in a syscall since before attach are preexisting.rs's.
use std::collections::{BTreeMap, BTreeSet};

use crate::capture::OffState;

/// Run time (ns) of every thread of the traced processes at attach, by tid: (tgid, ns).
#[derive(Debug, Default)]
pub struct RunTimes(BTreeMap<u32, (u32, u64)>);

fn run_ns(tgid: u32, tid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Now (at attach, and again at detach).
pub fn read(pids: &[u32]) -> RunTimes {
    let mut out = BTreeMap::new();
    for &pid in pids {
        for tid in super::preexisting::task_ids(pid) {
            if let Some(ns) = run_ns(pid, tid) {
                out.insert(tid, (pid, ns));
            }
        }
    }
    RunTimes(out)
}

/// One thread that never ran during the session: (tgid, tid, its state now).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeverRan {
    pub tgid: u32,
    pub tid: u32,
    pub state: OffState,
}

/// The threads of `at` (attach) that no off-CPU record covers (`recorded` tids) and whose
/// run time had not moved at `end` (detach); their state is read now.
pub fn never_ran(at: &RunTimes, end: &RunTimes, recorded: &BTreeSet<u32>) -> Vec<NeverRan> {
    at.0.iter()
        .filter(|(tid, _)| !recorded.contains(tid))
        .filter(|(tid, a)| end.0.get(tid) == Some(a))
        .filter_map(|(&tid, &(tgid, _))| {
            let stat = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()?;
            let state = match state {
                'R' => OffState::Runqueue,
                'D' => OffState::Disk,
                'S' | 'I' => OffState::Sleep,
                // Stopped, traced, dead or a zombie: not a wait rtrace reports.
                _ => return None,
            };
            Some(NeverRan { tgid, tid, state })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_ran() {
        let me = std::process::id();
        // SAFETY: gettid has no arguments and cannot fail.
        let this = unsafe { libc::gettid() } as u32;
        let at = read(&[me]);
        assert!(at.0.contains_key(&this), "{at:?}");
        // This thread runs between the two readings (for several scheduler ticks: a running
        // thread's run time is brought up to date at each tick).
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(never_ran(&at, &read(&[me]), &BTreeSet::new()).iter().all(|n| n.tid != this));
        // A thread that sleeps throughout is found asleep.
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: as above.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = stop_rx.recv();
        });
        let tid = rx.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let at = read(&[me]);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let end = read(&[me]);
        let found = never_ran(&at, &end, &BTreeSet::new());
        assert!(found.contains(&NeverRan { tgid: me, tid, state: OffState::Sleep }), "{found:?}");
        assert!(never_ran(&at, &end, &[tid].into()).iter().all(|n| n.tid != tid));
        stop_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
