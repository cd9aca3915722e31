//! Off-CPU (blocking) analysis: where tracked threads wait, in which state, who wakes them.

/// State classes, from sched_switch's prev_state.
pub const STATE_SLEEP: u32 = 0; // S: interruptible sleep (and other non-running states)
pub const STATE_DISK: u32 = 1; // D: uninterruptible (typically disk I/O)
pub const STATE_RUNQUEUE: u32 = 2; // switched out while runnable, or woken and waiting for a CPU

/// What we remember about a tracked thread from its switch-out until its switch-in.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OffStart {
    /// When it switched out (bpf_ktime_get_ns).
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
}

/// Aggregate of blocked intervals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffVal {
    pub total_ns: u64,
    pub count: u64,
    pub max_ns: u64,
}

crate::user_pod!(OffStart, OffKey, WakeKey, OffVal);

#[cfg(test)]
mod tests {
    use core::mem::size_of;
    #[test]
    fn layout() {
        assert_eq!(size_of::<super::OffStart>(), 64 + 48);
        assert_eq!(size_of::<super::OffKey>(), 24 + 48);
        assert_eq!(size_of::<super::WakeKey>(), 48 + 48);
        assert_eq!(size_of::<super::OffVal>(), 24);
    }
}
