//! `--timeline`'s scheduling records as the capture keeps them (see tracer_common::timeline):
//! times in session ns, stacks as addresses. Field names are short: a busy thread gives
//! hundreds of thousands of switches, and capture.json holds each one.
use serde::{Deserialize, Serialize};

use super::{Leaf, OffState};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Timeline {
    /// Switch-ins of tracked threads, in time order.
    pub switches: Vec<Switch>,
    /// Threads still off-CPU when the probes were detached (`on`: that instant): their last
    /// block, which no switch-in record ends.
    #[serde(default)]
    pub open: Vec<Switch>,
    /// Threads' exits (sched_process_exit, then the last switch-out): (tid, session ns).
    #[serde(default)]
    pub exits: Vec<(u32, u64)>,
    /// On-CPU samples, in time order.
    #[serde(default)]
    pub samples: Vec<Sample>,
    /// Records beyond --timeline-events, not kept.
    #[serde(default)]
    pub dropped: u64,
    /// Records the kernel could not send (the ring was full).
    #[serde(default)]
    pub lost: u64,
    /// --timeline-events.
    #[serde(default)]
    pub cap: u64,
}

/// Thread `tid` got a CPU at `on` after leaving it at `off` (None: no switch-out seen since
/// attach) in `state`, woken at `wake` by thread `waker` (0: not woken by a traced thread in
/// a syscall).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Switch {
    #[serde(rename = "t")]
    pub tid: u32,
    #[serde(rename = "p")]
    pub tgid: u32,
    #[serde(rename = "s")]
    pub state: OffState,
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub off: Option<u64>,
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    pub wake: Option<u64>,
    #[serde(rename = "n")]
    pub on: u64,
    #[serde(rename = "k", default, skip_serializing_if = "is_zero")]
    pub waker: u32,
    #[serde(rename = "kp", default, skip_serializing_if = "is_zero")]
    pub waker_tgid: u32,
    /// How much of the block lies before the session's time 0 (a switch-out between attach
    /// and the session clock's start, as `rtrace -- CMD` has): `off` is 0 then, and this is
    /// the part not drawn.
    #[serde(rename = "b", default, skip_serializing_if = "is_zero64")]
    pub before: u64,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_zero64(v: &u64) -> bool {
    *v == 0
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    pub ts: u64,
    pub tgid: u32,
    pub tid: u32,
    pub user: Vec<u64>,
    pub kernel: Vec<u64>,
    #[serde(default, skip_serializing_if = "Leaf::is_empty")]
    pub leaf: Leaf,
}
