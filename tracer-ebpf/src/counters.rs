//! The per-CPU `COUNTERS` array: samples seen and every kind of loss (indexes in
//! `tracer_common::counters`). Per-CPU so increments need no atomics.
use aya_ebpf::{macros::map, maps::PerCpuArray};
use tracer_common::counters::COUNT;

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNT, 0);

/// Adds one; returns the count before (on this CPU).
#[inline(always)]
pub fn bump(index: u32) -> u64 {
    match COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; programs on one CPU do not preempt each other mid-increment
        // except for NMI-driven perf events, where a rare lost increment is acceptable.
        Some(p) => unsafe {
            let before = *p;
            *p = before + 1;
            before
        },
        None => 0,
    }
}

/// Counts a loss of kind `index`; the first one on each CPU is also logged through aya-log at
/// debug level (`RTRACE_LOG=debug`), so a map that fills up says so once, not at every event.
/// Without it the loader freezes AYA_LOG_LEVEL to 0 and the verifier drops the logging code.
macro_rules! lose {
    ($index:expr, $($msg:tt)+) => {{
        if crate::counters::bump($index) == 0 {
            aya_log_ebpf::debug!(&(), $($msg)+);
        }
    }};
}
pub(crate) use lose;
