//! The tracked-TGID set `TRACKED`: userspace seeds it with the target (and descendants found in
//! /proc); `task:task_newtask` adds every new *process* a tracked process creates. We use
//! task_newtask rather than sched_process_fork because it carries clone_flags, which tell a
//! thread (CLONE_THREAD, same TGID, already covered) from a child process, and it fires before
//! the child can run, so a child's first instructions are already tracked.
//!
//! Every syscall and context switch on the machine asks "is this thread's process tracked?"
//! when the thread has no entry in the thread table — that is, for every other process. A
//! hash lookup costs ~40 ns here, so a bitmap indexed by pid answers first: `TRACKED_BITS`
//! mirrors TRACKED's keys exactly (a bit is added when an insert creates a key and taken
//! away when a remove deletes one, with atomic adds — this BPF target has no atomic or; rtrace
//! maps the array and uses atomic or/and on it, loader/bits.rs).
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{Array, HashMap},
    programs::TracePointContext,
};
use tracer_common::{
    counters,
    limits::{MAX_TRACKED, TRACKED_BITS_DEFAULT_WORDS},
    target::{CLONE_THREAD, DESCENDANT},
};

#[map]
pub static TRACKED: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACKED, 0);
/// Bit `pid % 64` of word `pid / 64`: pid is in TRACKED. Sized to pid_max by the loader; a pid
/// beyond it (pid_max raised during the session) falls back to the hash lookup.
#[map]
pub static TRACKED_BITS: Array<u64> = Array::with_max_entries(TRACKED_BITS_DEFAULT_WORDS, BPF_F_MMAPABLE);
/// rtrace maps TRACKED_BITS to set and clear bits with atomic operations as these programs do.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// 1 unless `--no-children`. Set by the loader.
#[unsafe(no_mangle)]
static FOLLOW_CHILDREN: u32 = 1;
/// Field offsets in task:task_newtask, read from tracefs by the loader.
#[unsafe(no_mangle)]
static NEWTASK_PID_OFF: u32 = 8;
#[unsafe(no_mangle)]
static NEWTASK_FLAGS_OFF: u32 = 32;

/// task_struct.pid and task_struct.tgid, from the kernel's BTF.
#[unsafe(no_mangle)]
static TASK_PID_OFF: u32 = 0;
#[unsafe(no_mangle)]
static TASK_TGID_OFF: u32 = 0;

/// A task's (tid, tgid) by direct loads from a BTF task pointer (the idle task is (0, 0)).
#[inline(always)]
pub fn task_ids(task: *const u8) -> (u32, u32) {
    // SAFETY: `task` is a BTF task pointer and the offsets load-time constants (frozen
    // .rodata): the verifier checks each load against task_struct's BTF and makes it
    // fault-safe.
    unsafe {
        (
            core::ptr::read_volatile(task.add(global(&TASK_PID_OFF) as usize) as *const i32) as u32,
            core::ptr::read_volatile(task.add(global(&TASK_TGID_OFF) as usize) as *const i32) as u32,
        )
    }
}

#[inline(always)]
pub fn global(v: &'static u32) -> u32 {
    // SAFETY: read of a global the loader rewrites before load; volatile so the compiler
    // cannot fold the default value.
    unsafe { core::ptr::read_volatile(v) }
}

/// The hooks' first filter: false only when `tgid` is certainly not tracked (its bit is clear);
/// true for a tracked one, and for a pid beyond the bitmap.
#[inline(always)]
pub fn maybe_tracked(tgid: u32) -> bool {
    match TRACKED_BITS.get_ptr(tgid >> 6) {
        // SAFETY: a live array value.
        Some(w) => (unsafe { *w } >> (tgid & 63)) & 1 != 0,
        None => true,
    }
}

/// Whether `tgid` is tracked: the bit, confirmed in the map (the rare path: a tracked
/// process's thread before its table entry exists).
#[inline(always)]
pub fn is_tracked(tgid: u32) -> bool {
    maybe_tracked(tgid) && TRACKED.get_ptr(tgid).is_some()
}

/// Adds `tgid` to the tracked set; false if the map is full. Its bit is added only when the
/// insert created the key, so adds and removes pair up and an atomic add can set and clear it.
#[inline(always)]
pub fn track(tgid: u32, kind: u32) -> bool {
    if TRACKED.insert(tgid, kind, BPF_NOEXIST as u64).is_err() {
        return is_tracked(tgid);
    }
    bit_add(tgid, 1u64 << (tgid & 63));
    true
}

/// Removes `tgid` from the tracked set.
#[inline(always)]
pub fn untrack(tgid: u32) {
    if TRACKED.remove(tgid).is_ok() {
        bit_add(tgid, (1u64 << (tgid & 63)).wrapping_neg());
    }
}

#[inline(always)]
fn bit_add(tgid: u32, delta: u64) {
    use core::intrinsics::{atomic_xadd, AtomicOrdering::Relaxed};
    if let Some(w) = TRACKED_BITS.get_ptr_mut(tgid >> 6) {
        // SAFETY: a live array value; concurrent adds to one word from several CPUs are atomic.
        unsafe { atomic_xadd::<u64, u64, { Relaxed }>(w, delta) };
    }
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

pub fn task_newtask(ctx: &TracePointContext) -> Result<(), i64> {
    if global(&FOLLOW_CHILDREN) == 0 || !is_tracked(current_tgid()) {
        return Ok(());
    }
    // SAFETY: offsets come from the tracepoint's format file.
    let flags: u64 = unsafe { ctx.read_at(global(&NEWTASK_FLAGS_OFF) as usize) }.map_err(|e| e as i64)?;
    if flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    let pid: i32 = unsafe { ctx.read_at(global(&NEWTASK_PID_OFF) as usize) }.map_err(|e| e as i64)?;
    if !track(pid as u32, DESCENDANT) {
        crate::counters::lose!(counters::TRACKED_FULL, "pid {} not tracked: the tracked-process map is full", pid);
    }
    crate::process::emit_fork(pid as u32, current_tgid(), flags);
    Ok(())
}
