//! Process lifecycle events sent through the `EVENTS` ring buffer (rare: fork/exec/exit).

pub const EVENT_FORK: u32 = 1;
pub const EVENT_EXEC: u32 = 2;
pub const EVENT_EXIT: u32 = 3;
/// A `syscall::SlowCall` record (a different struct; dispatch on this first field).
pub const EVENT_SLOW_CALL: u32 = 4;

pub const COMM_LEN: usize = 16;

/// One lifecycle event. `pid`/`tid` are the subject process; `parent_tgid` is the forking
/// process for `EVENT_FORK`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub parent_tgid: u32,
    /// bpf_ktime_get_ns() (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Exit: the task's exit_code field as the tracepoint gives it (0 when not read).
    pub exit_code: i32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

crate::user_pod!(ProcEvent);

#[cfg(test)]
mod tests {
    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<super::ProcEvent>(), 48);
    }
}
