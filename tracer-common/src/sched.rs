//! Off-CPU (blocking) analysis: where tracked threads wait, in which state, who wakes them.

/// State classes, from sched_switch's prev_state.
pub const STATE_SLEEP: u32 = 0; // S: interruptible sleep (and other non-running states)
pub const STATE_DISK: u32 = 1; // D: uninterruptible (typically disk I/O)
pub const STATE_RUNQUEUE: u32 = 2; // switched out while runnable, or woken and waiting for a CPU

/// Stack id of a block whose stacks are taken later (see `OffStart::pend_ts`).
pub const DEFERRED_STACK: i32 = -2;

/// What we remember about a tracked thread from its switch-out until its switch-in.
///
/// Stacks are deferred for a thread blocked inside a syscall: walking them costs ~3 µs, most
/// blocks are shorter than --min-block, and the thread's user registers do not change until
/// the call returns. So at switch-out the stack ids are `DEFERRED_STACK`; at a switch-in that
/// ends a block long enough to record, the kernel stack of the (not yet running) thread is
/// taken and the block is parked in `pend_ts`/`pend_end`; the user stack is taken in the
/// thread's own context when its syscall returns (or when it blocks again in the same call),
/// and only then is the block added to the maps.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OffStart {
    /// When it switched out (the off-CPU clock: see `ClockSync`).
    pub ts: u64,
    /// When it was woken (0: not yet).
    pub wake_ts: u64,
    pub tgid: u32,
    pub state: u32,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    pub waker_tgid: u32,
    pub waker_tid: u32,
    pub waker_user_stack_id: i32,
    pub waker_kernel_stack_id: i32,
    pub waker_comm: [u8; 16],
    /// Callers skipped by the walk of the blocked stack, when blocked in a syscall.
    pub leaf: crate::unwind::LeafFix,
    /// A recorded block waiting for its user stack: switch-out and switch-in times (0: none).
    /// `wake_ts`, the state and the waker fields still describe it.
    pub pend_ts: u64,
    pub pend_end: u64,
    /// The user stack taken when the thread was last preempted outside a syscall, and where
    /// (pc, sp, bp, return address): reused when it is preempted at the same point again.
    pub pre_at: [u64; 4],
    pub pre_stack: i32,
    /// 1 when the waker was a tracked thread inside a syscall (--timeline draws its wakeup
    /// as a flow only then: an interrupt runs on whatever task it hits, and a thread in user
    /// mode wakes no one).
    pub waker_in_call: u32,
    /// Callers the walk of the waker's user stack skips (set with waker_user_stack_id).
    pub waker_leaf: crate::unwind::LeafFix,
}

/// Blocked time by (thread, stack, state).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OffKey {
    pub tgid: u32,
    pub tid: u32,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    pub state: u32,
    pub _pad: u32,
    pub leaf: crate::unwind::LeafFix,
}

/// Blocked time by (blocked thread and stack, waker and its stack): offwaketime.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WakeKey {
    pub tgid: u32,
    pub tid: u32,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    pub waker_tgid: u32,
    pub waker_tid: u32,
    pub waker_user_stack_id: i32,
    pub waker_kernel_stack_id: i32,
    pub waker_comm: [u8; 16],
    pub leaf: crate::unwind::LeafFix,
    pub waker_leaf: crate::unwind::LeafFix,
}

/// Aggregate of blocked intervals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffVal {
    pub total_ns: u64,
    pub count: u64,
    pub max_ns: u64,
}

/// How the off-CPU clock relates to bpf_ktime_get_ns (see tracer-ebpf's clock.rs): off-CPU
/// timestamps are the scheduler's clock (`rq->clock`) where the kernel's BTF has it, and
/// `ktime - offset_ns` converts a bpf_ktime_get_ns (or CLOCK_MONOTONIC) reading into it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockSync {
    /// CLOCK_MONOTONIC minus the scheduler clock, as a two's-complement i64 (0 when off-CPU
    /// uses bpf_ktime_get_ns itself).
    pub offset_ns: u64,
    /// Scheduler-clock time of the last calibration (0: none yet).
    pub at: u64,
}

crate::user_pod!(OffStart, OffKey, WakeKey, OffVal, ClockSync);

#[cfg(test)]
mod tests {
    use core::mem::size_of;
    #[test]
    fn layout() {
        assert_eq!(size_of::<super::OffStart>(), 64 + 48 + 16 + 40 + 48);
        assert_eq!(size_of::<super::OffKey>(), 24 + 48);
        assert_eq!(size_of::<super::WakeKey>(), 48 + 48 + 48);
        assert_eq!(size_of::<super::OffVal>(), 24);
        assert_eq!(size_of::<super::ClockSync>(), 16);
    }
}
