//! `--timeline`: scheduling events of tracked threads, in time order, for timeline.pftrace.
//!
//! The default session only aggregates (off-CPU time by stack, samples by stack). With
//! `--timeline` the eBPF side also sends, through the `TIMELINE` ring buffer, one record per
//! switch-in of a tracked thread (when it went off-CPU, in which state, when and by whom it was
//! woken, when it got the CPU back), one per thread exit (at sched_process_exit and at its last, TASK_DEAD switch-out: it
//! can still be preempted in between), and one per on-CPU sample with its
//! stack ids. One record per switch-in is enough for the whole picture: a thread runs from one
//! switch-in to the `off_ts` of its next record, or to its exit. Records are not announced (no wakeup per
//! record): userspace reads the ring on its 100 ms tick, so the target pays the reservation
//! and copy alone.

/// `TlSwitch::kind` and friends: the first u32 of every record says which it is.
pub const TL_SWITCH: u32 = 1;
pub const TL_EXIT: u32 = 2;
pub const TL_SAMPLE: u32 = 3;

/// Ring size with `--timeline` (bytes, power of two): ping-pong at ~300k switches/s is
/// ~15 MB/s of records, read every 100 ms. Without it the ring keeps its minimum size.
pub const TIMELINE_RING_BYTES: u32 = 32 << 20;
/// The ring's size when the timeline is off (one page: never written).
pub const TIMELINE_RING_OFF: u32 = 4096;

/// A tracked thread got a CPU (`ts`) after being off it since `off_ts` (0: no switch-out
/// seen since attach — it was off-CPU or new before that).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlSwitch {
    pub kind: u32,
    pub tid: u32,
    pub tgid: u32,
    /// sched::STATE_* it left the CPU in.
    pub state: u32,
    /// All three on the off-CPU clock (sched::ClockSync).
    pub off_ts: u64,
    /// When it was woken (0: not woken — preempted, or the wakeup was not seen).
    pub wake_ts: u64,
    pub ts: u64,
    /// Who woke it (0: not woken, or from interrupt context on the idle task).
    pub waker_tid: u32,
    pub waker_tgid: u32,
}

/// A tracked thread exits (sched_process_exit) or leaves the CPU for good (TASK_DEAD) at
/// `ts`: its last run ends at the later of the two.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlExit {
    pub kind: u32,
    pub tid: u32,
    pub tgid: u32,
    pub _pad: u32,
    pub ts: u64,
}

/// An on-CPU sample at `ts` (frame-pointer processes: the stack ids of its CPU_COUNTS key;
/// DWARF processes' samples carry their time in the copy's header instead).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlSample {
    pub kind: u32,
    pub tid: u32,
    pub tgid: u32,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    pub _pad: u32,
    pub ts: u64,
    pub leaf: crate::unwind::LeafFix,
}

crate::user_pod!(TlSwitch, TlExit, TlSample);

#[cfg(test)]
mod tests {
    use core::mem::size_of;
    #[test]
    fn layout() {
        assert_eq!(size_of::<super::TlSwitch>(), 48);
        assert_eq!(size_of::<super::TlExit>(), 24);
        assert_eq!(size_of::<super::TlSample>(), 32 + 48);
    }
}
