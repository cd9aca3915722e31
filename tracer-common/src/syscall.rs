//! Syscall latency: per-(process, syscall) histograms in the kernel, the calls in flight per
//! thread, and the rare individual slow calls that are sent to userspace.
use crate::unwind::LeafFix;

/// log2 latency buckets: bucket i counts calls with duration in [2^i, 2^(i+1)) ns (bucket 0
/// also holds 0 and 1 ns). 40 buckets reach 2^40 ns ≈ 18 minutes; longer calls go in the last.
pub const HIST_BUCKETS: usize = 40;
/// Bytes of user memory copied at entry for decoding (timespec, sockaddr, a path).
pub const EXTRA_LEN: usize = 64;
/// Most slow calls kept per CPU (the kernel's gate for what leaves individually).
pub const MAX_SLOW_TOP: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SysKey {
    pub tgid: u32,
    pub nr: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SysStats {
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub hist: [u64; HIST_BUCKETS],
}

/// The syscall state of one tracked thread (key: tid). The entry lives as long as the thread
/// (removed at its exit) and is rewritten in place at every syscall entry: a lookup is much
/// cheaper than an insert and a delete per call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Inflight {
    pub ts: u64,
    pub tgid: u32,
    pub nr: i32,
    /// Kernel address of the thread's saved user registers (valid until the syscall returns):
    /// the arguments, and the user sp/bp of a thread blocked in this call, are read from there
    /// only when needed.
    pub regs: u64,
    /// 1 between entry and exit.
    pub active: u32,
    /// 1 once the call blocked (then the stacks are DEFERRED_STACK until a block long enough
    /// to record ends, see sched::OffStart).
    pub blocked: u32,
    /// Stacks taken when the thread blocked in this call.
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    /// 1 when a block of this call awaits its user stack (see sched::OffStart): taken at exit.
    pub off_pending: u32,
    pub _pad: u32,
    /// Set at entry only for the calls decoded from user memory (`extra`); userspace reads a
    /// blocked call's from /proc.
    pub args: [u64; 6],
    pub leaf: LeafFix,
    pub extra: [u8; EXTRA_LEN],
}

/// One slow call, sent through the ring buffer (kind = EVENT_SLOW_CALL).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SlowCall {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub nr: i32,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub ret: i64,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    pub args: [u64; 6],
    pub leaf: LeafFix,
    pub extra: [u8; EXTRA_LEN],
}

/// Per-CPU top-K floor: the K longest durations this CPU has sent, and which slot is smallest.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SlowTop {
    pub durations: [u64; MAX_SLOW_TOP],
    pub min_index: u32,
    pub _pad: u32,
}

crate::user_pod!(SysKey, SysStats, Inflight, SlowCall, SlowTop);

#[cfg(test)]
mod tests {
    use core::mem::size_of;
    #[test]
    fn layout() {
        assert_eq!(size_of::<super::SysKey>(), 8);
        assert_eq!(size_of::<super::SysStats>(), 32 + 8 * super::HIST_BUCKETS);
        assert_eq!(size_of::<super::Inflight>(), 8 + 8 + 8 + 8 + 8 + 8 + 48 + 48 + 64);
        assert_eq!(size_of::<super::SlowCall>(), 16 + 24 + 8 + 48 + 48 + 64);
        assert_eq!(size_of::<super::SlowTop>(), 8 * super::MAX_SLOW_TOP + 8);
    }
}
