//! The per-thread table (see tracer_common::thread): lookup, creation, removal.
//!
//! Entries exist only for tracked threads: finding one is the tracked check. A free slot is
//! claimed with a plain store (the BPF target here has no compare-and-swap): if two CPUs claim
//! one slot at the same instant for two new threads whose tids share it, the one whose tag
//! was overwritten misses at its next lookup and moves to the spill map; at most the call it
//! was entering is mismeasured.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use tracer_common::{
    counters,
    cpu::NO_STACK,
    limits::MAX_SPILLED_THREADS,
    thread::{Thread, THREAD_SLOTS},
};

use crate::counters::bump;

#[map]
pub static THREADS: Array<Thread> = Array::with_max_entries(THREAD_SLOTS, 0);
#[map]
pub static THREADS_SPILL: HashMap<u32, Thread> = HashMap::with_max_entries(MAX_SPILLED_THREADS, 0);
/// Slot 0: nonzero once any thread went to THREADS_SPILL (by the kernel or the loader). Until
/// then a lookup that misses its slot needs no hash lookup.
#[map]
pub static SPILL_USED: Array<u32> = Array::with_max_entries(1, 0);
/// Scratch for building a spilled entry (too big for the BPF stack).
#[map]
static SPILL_SCRATCH: aya_ebpf::maps::PerCpuArray<Thread> = aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

/// Slots - 1 (a power of two minus one): THREAD_SLOTS unless a test shrinks the table to
/// exercise the spill map (RTRACE_THREAD_SLOTS, see the loader).
#[unsafe(no_mangle)]
static THREAD_MASK: u32 = THREAD_SLOTS - 1;

#[inline(always)]
fn slot_of(tid: u32) -> u32 {
    // SAFETY: a global the loader sets before load (frozen: the verifier knows its value).
    tid & unsafe { core::ptr::read_volatile(&THREAD_MASK) }
}

#[inline(always)]
fn spill_used() -> bool {
    // SAFETY: a live array value.
    SPILL_USED.get_ptr(0).is_some_and(|p| unsafe { *p } != 0)
}

/// The entry of a tracked thread, if it has one.
#[inline(always)]
pub fn get(tid: u32) -> Option<&'static mut Thread> {
    let slot = THREADS.get_ptr_mut(slot_of(tid))?;
    // SAFETY: a live array value; the tag is compared before anything else is used.
    let t = unsafe { &mut *slot };
    if t.tid == tid && tid != 0 {
        return Some(t);
    }
    if spill_used() {
        // SAFETY: a live map value.
        return THREADS_SPILL.get_ptr_mut(tid).map(|p| unsafe { &mut *p });
    }
    None
}

/// Resets everything a program reads before writing it.
#[inline(always)]
fn init(t: &mut Thread, tgid: u32) {
    t.sys.tgid = tgid;
    t.sys.active = 0;
    t.sys.blocked = 0;
    t.sys.off_pending = 0;
    t.sys.regs = 0;
    t.off.tgid = tgid;
    t.off.ts = 0;
    t.off.pend_ts = 0;
    t.off.pre_stack = NO_STACK;
}

/// The entry of `tid` (a thread of tracked process `tgid`), created if needed.
#[inline(always)]
pub fn get_or_create(tid: u32, tgid: u32) -> Option<&'static mut Thread> {
    if let Some(t) = get(tid) {
        return Some(t);
    }
    let slot = THREADS.get_ptr_mut(slot_of(tid))?;
    // SAFETY: a live array value.
    let t = unsafe { &mut *slot };
    if t.tid == 0 {
        t.tid = tid;
        init(t, tgid);
        return Some(t);
    }
    let scratch = SPILL_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch slot.
    let s = unsafe { &mut *scratch };
    s.tid = tid;
    init(s, tgid);
    if let Some(flag) = SPILL_USED.get_ptr_mut(0) {
        // SAFETY: a live array value; set before the insert so no lookup misses the entry.
        unsafe { *flag = 1 };
    }
    if THREADS_SPILL.insert(tid, &*s, 0).is_err() {
        crate::counters::lose!(
            counters::SYSCALL_INFLIGHT_FULL,
            "tid {} has no per-thread slot: the spill map is full",
            tid
        );
        return None;
    }
    bump(counters::THREADS_SPILLED);
    // SAFETY: a live map value.
    THREADS_SPILL.get_ptr_mut(tid).map(|p| unsafe { &mut *p })
}

/// Frees the entry of an exiting thread.
#[inline(always)]
pub fn remove(tid: u32) {
    if let Some(slot) = THREADS.get_ptr_mut(slot_of(tid)) {
        // SAFETY: a live array value.
        let t = unsafe { &mut *slot };
        if t.tid == tid {
            t.tid = 0;
            return;
        }
    }
    if spill_used() {
        let _ = THREADS_SPILL.remove(tid);
    }
}
