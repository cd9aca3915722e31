//! Per-thread state of tracked threads: the syscall in flight and the off-CPU record, in one
//! entry of a direct-mapped table (slot = tid mod THREAD_SLOTS, tagged with the tid) with a
//! hash map for the rare thread whose slot is taken. The syscall and scheduler hooks look a
//! thread up several times per syscall and per context switch: an array slot costs a few ns,
//! a hash lookup ~50 ns here (measured with bpf_stats).
use crate::{sched::OffStart, syscall::Inflight};

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Thread {
    /// The thread's id: the slot's tag (0: free slot).
    pub tid: u32,
    pub _pad: u32,
    pub sys: Inflight,
    pub off: OffStart,
}

/// Slots of the table (a power of two).
pub const THREAD_SLOTS: u32 = 16_384;

crate::user_pod!(Thread);

/// A tracked thread's saved user registers, as the task iterator `rt_task_regs` dumps them:
/// /proc shows a blocked thread's sp and pc, not its frame pointer, which an exact user-stack
/// walk needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskRegs {
    pub tid: u32,
    pub tgid: u32,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

crate::user_pod!(TaskRegs);

#[cfg(test)]
mod tests {
    #[test]
    fn layout() {
        use core::mem::size_of;
        assert_eq!(size_of::<super::Thread>(), 8 + size_of::<super::Inflight>() + size_of::<super::OffStart>());
        assert!(super::THREAD_SLOTS.is_power_of_two());
    }
}
