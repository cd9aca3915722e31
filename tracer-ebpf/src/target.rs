//! The tracked-TGID set `TRACKED`: userspace seeds it with the target (and descendants found in
//! /proc); `task:task_newtask` adds every new *process* a tracked process creates. We use
//! task_newtask rather than sched_process_fork because it carries clone_flags, which tell a
//! thread (CLONE_THREAD, same TGID, already covered) from a child process, and it fires before
//! the child can run, so a child's first instructions are already tracked.
use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_get_current_pid_tgid, macros::map, maps::HashMap, programs::TracePointContext,
};
use tracer_common::{
    counters,
    limits::MAX_TRACKED,
    target::{CLONE_THREAD, DESCENDANT},
};

#[map]
pub static TRACKED: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACKED, 0);

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
pub static TASK_PID_OFF: u32 = 0;
#[unsafe(no_mangle)]
pub static TASK_TGID_OFF: u32 = 0;

#[inline(always)]
pub fn global(v: &'static u32) -> u32 {
    // SAFETY: read of a global the loader rewrites before load; volatile so the compiler
    // cannot fold the default value.
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
pub fn is_tracked(tgid: u32) -> bool {
    TRACKED.get_ptr(tgid).is_some()
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
    if TRACKED.insert(pid as u32, DESCENDANT, BPF_NOEXIST as u64).is_err() && !is_tracked(pid as u32) {
        crate::counters::bump(counters::TRACKED_FULL);
    }
    crate::process::emit_fork(pid as u32, current_tgid(), flags);
    Ok(())
}
