//! What each traced process did during the session, as the profilers saw it: on-CPU time from
//! the samples, and off-CPU blocks by thread, state and syscall. The evidence a wait_stall's
//! severity is decided from (see `stall`). Built from the Capture by `report`; empty when only a
//! ledger is analyzed (then no wait is called stuck or working: rtrace cannot tell).
use std::collections::HashMap;

use crate::capture::OffState;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    /// Off-CPU blocks were recorded (not --no-offcpu): a process without any block was never
    /// blocked for long, rather than unobserved.
    pub offcpu: bool,
    /// The target is a Go program (its stacks run through the Go runtime): the fix hints name
    /// Go's APIs only then.
    pub go_target: bool,
    pub by_pid: HashMap<u32, Activity>,
    /// Goroutines of each Go process that wait for a child or sit in a syscall (from the Go
    /// runtime view): a wait finding names the goroutine and its function, not only the thread.
    pub go_waiters: HashMap<u32, Vec<crate::analyze::goroutines::GoWaiter>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Activity {
    /// On-CPU time, estimated from the samples (count × sampling period); threads add up.
    pub cpu_ns: u64,
    pub blocks: Vec<Block>,
}

/// Off-CPU time of one thread in one (stack, state), as the capture aggregates it.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub tid: u32,
    /// The call it blocked in, from its kernel stack (None: not in a syscall, or unknown).
    pub syscall: Option<String>,
    pub state: OffState,
    pub total_ns: u64,
    pub count: u64,
    /// The longest single block.
    pub max_ns: u64,
    /// Still blocked at the end of the session.
    pub in_flight: bool,
}

impl Tree {
    /// On CPU or waiting for one.
    pub(super) fn busy_ns(&self) -> u64 {
        self.cpu_ns + self.runq_ns
    }
}

impl Evidence {
    pub fn add_cpu(&mut self, pid: u32, ns: u64) {
        self.by_pid.entry(pid).or_default().cpu_ns += ns;
    }

    pub fn add_block(&mut self, pid: u32, b: Block) {
        self.by_pid.entry(pid).or_default().blocks.push(b);
    }
}

/// Calls a process blocks in because it was told to wait a given time.
pub(super) fn timed_sleep(syscall: &str) -> bool {
    matches!(syscall, "nanosleep" | "clock_nanosleep")
}

/// Calls that wait for the caller's own children: their work is the caller's (make → gcc → cc1).
pub(super) fn child_wait(syscall: &str) -> bool {
    matches!(syscall, "wait4" | "waitid")
}

/// The activity of a set of processes (a child and its descendants) during the session.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Tree {
    pub(super) cpu_ns: u64,
    /// Time runnable but waiting for a CPU (a busy machine): time it wanted to work.
    pub(super) runq_ns: u64,
    /// Pid with the most on-CPU time, and that time.
    pub(super) busiest: Option<(u32, u64)>,
    /// The longest single block in something other than a timed sleep or a wait for its own
    /// children (what a stuck child sits in): pid, block.
    pub(super) stuck: Option<(u32, Block)>,
    /// The longest single timed sleep: pid, block.
    pub(super) sleep: Option<(u32, Block)>,
    /// Whether the profilers saw any of these processes at all.
    pub(super) seen: bool,
}

pub(super) fn tree(ev: &Evidence, pids: &[u32]) -> Tree {
    let mut t = Tree::default();
    for &pid in pids {
        let Some(a) = ev.by_pid.get(&pid) else { continue };
        t.seen = true;
        t.cpu_ns += a.cpu_ns;
        if a.cpu_ns > 0 && t.busiest.is_none_or(|(_, ns)| a.cpu_ns > ns) {
            t.busiest = Some((pid, a.cpu_ns));
        }
        t.runq_ns += a.blocks.iter().filter(|b| b.state == OffState::Runqueue).map(|b| b.total_ns).sum::<u64>();
        for b in a.blocks.iter().filter(|b| b.state != OffState::Runqueue) {
            let Some(sys) = b.syscall.as_deref() else { continue };
            let slot = if timed_sleep(sys) {
                &mut t.sleep
            } else if child_wait(sys) {
                continue;
            } else {
                &mut t.stuck
            };
            if slot.as_ref().is_none_or(|(_, s)| b.max_ns > s.max_ns) {
                *slot = Some((pid, b.clone()));
            }
        }
    }
    t
}
