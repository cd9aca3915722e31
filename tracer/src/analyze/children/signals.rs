//! The signals each process of the ledger received, in time order: report.html's Gantt chart
//! marks them on the receiver's row (signal and sender). The ledger itself keeps only the one
//! that killed a child (`killed_by`); a SIGTERM that was handled, a SIGCHLD to a parent that is
//! itself a child, a SIGKILL that came too late are seen here.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::ChildRecord;
use crate::lifecycle::{signal_name, LifeEvent, Lifecycle};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceivedSignal {
    /// Since attach, as the ledger's times.
    pub ts_ns: u64,
    /// The receiving process (one of the ledger's).
    pub pid: u32,
    pub signal: String,
    pub sender_pid: u32,
    pub sender_tid: u32,
    pub sender_comm: String,
    /// signal:signal_generate's result: 0 delivered, 1 ignored, 2 already pending, 3 overflow,
    /// 4 lose info.
    pub result: i32,
}

impl ReceivedSignal {
    /// "ignored", "already pending" …, None when delivered.
    pub fn not_delivered(&self) -> Option<&'static str> {
        match self.result {
            0 => None,
            1 => Some("ignored"),
            2 => Some("already pending"),
            3 => Some("queue overflow"),
            _ => Some("info lost"),
        }
    }
}

/// Every signal generated for a process of `children`, oldest first.
pub fn received(l: &Lifecycle, children: &[ChildRecord]) -> Vec<ReceivedSignal> {
    let pids: BTreeSet<u32> = children.iter().map(|c| c.pid).collect();
    let mut out: Vec<ReceivedSignal> =
        l.events
            .iter()
            .filter_map(|e| match e {
                LifeEvent::Signal {
                    ts_ns, sender_pid, sender_tid, sender_comm, target_pid, signal, result, ..
                } if pids.contains(target_pid) => Some(ReceivedSignal {
                    ts_ns: *ts_ns,
                    pid: *target_pid,
                    signal: signal_name(*signal),
                    sender_pid: *sender_pid,
                    sender_tid: *sender_tid,
                    sender_comm: sender_comm.clone(),
                    result: *result,
                }),
                _ => None,
            })
            .collect();
    // Events arrive mostly, not strictly, in time order (one ring buffer per CPU's batch).
    out.sort_by_key(|s| (s.ts_ns, s.pid));
    out
}
