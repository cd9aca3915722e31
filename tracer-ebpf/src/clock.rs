//! The off-CPU clock: the scheduler's own clock at sched_switch, instead of a clock read.
//!
//! One bpf_ktime_get_ns costs 40-50 ns here (the clocksource is read through a retpolined
//! indirect call), as much as the hook itself, and sched_switch needs a timestamp at every
//! switch of a tracked thread. But __schedule updates `rq->clock` (sched_clock_cpu) just
//! before the tracepoint fires, so `prev->se.cfs_rq->rq->clock` is "now" for three direct
//! loads. It is the clock schedstats and delay accounting measure run delays with: consistent
//! across CPUs, a few µs behind at a switch that follows a wakeup (the kernel skips a second
//! update then), and the same at both ends of a block, so block lengths stay exact.
//!
//! sched_waking still reads bpf_ktime_get_ns (the waker's run queue clock can be a whole tick
//! old) and converts it with `ClockSync`, which sched_switch recalibrates at most once a
//! millisecond. Without the offsets (a kernel without CONFIG_FAIR_GROUP_SCHED, say) every
//! timestamp is bpf_ktime_get_ns and the offset stays 0.
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::Array};
use tracer_common::sched::ClockSync;

use crate::target::global;

/// task_struct.se.cfs_rq, cfs_rq.rq and rq.clock, from the kernel's BTF (u32::MAX: missing).
#[unsafe(no_mangle)]
static TASK_CFS_RQ_OFF: u32 = u32::MAX;
#[unsafe(no_mangle)]
static CFS_RQ_RQ_OFF: u32 = u32::MAX;
#[unsafe(no_mangle)]
static RQ_CLOCK_OFF: u32 = u32::MAX;

/// Slot 0: the offset between bpf_ktime_get_ns and the scheduler clock (read by userspace
/// too, for blocks still in progress at the end).
#[map]
pub static CLOCK_SYNC: Array<ClockSync> = Array::with_max_entries(1, 0);

/// Recalibration period, ns of scheduler clock.
const CALIBRATE_EVERY: u64 = 1_000_000;

#[inline(always)]
fn sched_clock_available() -> bool {
    global(&TASK_CFS_RQ_OFF) != u32::MAX && global(&CFS_RQ_RQ_OFF) != u32::MAX && global(&RQ_CLOCK_OFF) != u32::MAX
}

/// "Now" at sched_switch, from `prev` (the outgoing task: current, on this CPU's run queue).
#[inline(always)]
pub fn switch_now(prev: *const u8) -> u64 {
    if !sched_clock_available() {
        return unsafe { bpf_ktime_get_ns() };
    }
    // SAFETY: `prev` is a BTF task pointer and the offsets load-time constants from the same
    // BTF: the verifier types each load (task_struct → cfs_rq → rq) and makes it fault-safe
    // (a faulting load reads 0).
    let now = unsafe {
        let cfs_rq = core::ptr::read_volatile(prev.add(global(&TASK_CFS_RQ_OFF) as usize) as *const *const u8);
        let rq = core::ptr::read_volatile(cfs_rq.add(global(&CFS_RQ_RQ_OFF) as usize) as *const *const u8);
        core::ptr::read_volatile(rq.add(global(&RQ_CLOCK_OFF) as usize) as *const u64)
    };
    if now == 0 {
        // Never expected; a zero timestamp would read as "not switched out".
        return unsafe { bpf_ktime_get_ns() };
    }
    calibrate(now);
    now
}

/// Keeps CLOCK_SYNC's offset current: at most once per CALIBRATE_EVERY, one clock read.
/// A sample is too high by however stale rq->clock was, so the offset follows the smallest
/// sample, and may rise by 1 µs per ms (1000 ppm) to follow NTP's slewing of ktime.
#[inline(always)]
fn calibrate(now: u64) {
    let Some(c) = CLOCK_SYNC.get_ptr_mut(0) else { return };
    // SAFETY: a live array value; concurrent updates from two CPUs each store a valid sample.
    let c = unsafe { &mut *c };
    let since = now.wrapping_sub(c.at);
    if c.at != 0 && since < CALIBRATE_EVERY {
        return;
    }
    // Signed: which clock is ahead depends on the machine.
    let sample = unsafe { bpf_ktime_get_ns() }.wrapping_sub(now) as i64;
    let allowed = (c.offset_ns as i64).wrapping_add((since / 1000) as i64);
    c.offset_ns = if c.at == 0 || sample < allowed { sample } else { allowed } as u64;
    c.at = now;
}

/// "Now" outside sched_switch, on the off-CPU clock.
#[inline(always)]
pub fn now() -> u64 {
    let k = unsafe { bpf_ktime_get_ns() };
    match CLOCK_SYNC.get_ptr(0) {
        // SAFETY: a live array value.
        Some(c) => k.wrapping_sub(unsafe { (*c).offset_ns }),
        None => k,
    }
}
