//! The per-CPU `COUNTERS` array: samples seen and every kind of loss (indexes in
//! `tracer_common::counters`). Per-CPU so increments need no atomics.
use aya_ebpf::{macros::map, maps::PerCpuArray};
use tracer_common::counters::COUNT;

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNT, 0);

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; programs on one CPU do not preempt each other mid-increment
        // except for NMI-driven perf events, where a rare lost increment is acceptable.
        unsafe { *p += 1 };
    }
}
