//! On-CPU sampling (the profile.c of libbpf-tools, filtered to tracked TGIDs): one perf event
//! per CPU fires at the sampling frequency; we count (tgid, tid, user stack, kernel stack).
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{task_struct, BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_get_stack, bpf_get_task_stack, bpf_loop},
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::PerfEventContext,
    EbpfContext,
};
use tracer_common::{
    counters,
    cpu::{CpuKey, NO_STACK},
    limits::{KERNEL_STACK_ENTRIES, MAX_CPU_KEYS, USER_STACK_ENTRIES},
    stack::{StackRec, MAX_DEPTH},
    ustack::{KIND_COPY, KIND_SAMPLE},
};

use crate::counters::{bump, lose};

#[map]
pub static USER_STACKS: HashMap<u32, StackRec> = HashMap::with_max_entries(USER_STACK_ENTRIES, 0);
#[map]
pub static KERNEL_STACKS: HashMap<u32, StackRec> = HashMap::with_max_entries(KERNEL_STACK_ENTRIES, 0);
/// One scratch stack per nesting level on a CPU: a perf-event sample (NMI) or a wakeup from an
/// interrupt can run while another program on this CPU is in the middle of taking a stack.
#[map]
static STACK_SCRATCH: PerCpuArray<StackRec> = PerCpuArray::with_max_entries(NEST_LEVELS, 0);
#[map]
static STACK_NEST: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

const NEST_LEVELS: u32 = 4;
#[map]
static CPU_COUNTS: HashMap<CpuKey, u64> = HashMap::with_max_entries(MAX_CPU_KEYS, 0);

const EFAULT: i64 = 14;

/// Takes the current user or kernel stack and stores it under a hash of its frames (see
/// tracer_common::stack). Err(errno) when it could not be taken; Err(0) when the table was
/// full (or programs nested deeper than NEST_LEVELS).
#[inline(always)]
fn take_stack<C: EbpfContext>(ctx: &C, user: bool) -> Result<i32, i64> {
    let flags = if user { BPF_F_USER_STACK as u64 } else { 0 };
    store_stack(user, |buf, size| unsafe { bpf_get_stack(ctx.as_ptr(), buf, size, flags) })
}

/// Runs `fetch` (a stack helper filling `buf` with at most `size` bytes) into this nesting
/// level's scratch and stores the result.
#[inline(always)]
fn store_stack(user: bool, fetch: impl Fn(*mut c_void, u32) -> i64) -> Result<i32, i64> {
    let Some(nest) = STACK_NEST.get_ptr_mut(0) else { return Err(0) };
    // SAFETY: per-CPU counter; a nested program restores it before the outer one resumes.
    let level = unsafe { *nest };
    if level >= NEST_LEVELS {
        return Err(0);
    }
    unsafe { *nest = level + 1 };
    let r = store_stack_in(user, level, fetch);
    unsafe { *nest = level };
    r
}

#[inline(always)]
fn store_stack_in(user: bool, level: u32, fetch: impl Fn(*mut c_void, u32) -> i64) -> Result<i32, i64> {
    let Some(buf) = STACK_SCRATCH.get_ptr_mut(level) else { return Err(0) };
    // SAFETY: this nesting level's per-CPU scratch slot.
    let buf = unsafe { &mut *buf };
    let size = (MAX_DEPTH * 8) as u32;
    let n = fetch(buf.ips.as_mut_ptr().cast(), size);
    if n <= 0 {
        return Err(if n == 0 { EFAULT } else { -n });
    }
    let frames = (n as usize) / 8;
    // FNV-1a over the frames, in a bpf_loop callback: the verifier checks the callback once,
    // where an inline loop is walked iteration by iteration at every stack call site (that
    // made load times of several hundred ms).
    let mut hc = HashCtx { level, frames: frames as u32, h: 0xcbf2_9ce4_8422_2325 };
    unsafe { bpf_loop(frames as u32, fnv_step as *mut c_void, (&raw mut hc).cast(), 0) };
    let h = hc.h;
    // 30 bits: ids with COPY_ID_BIT set are stack copies (ustack.rs).
    let id = ((h ^ (h >> 32)) as u32) & (tracer_common::ustack::COPY_ID_BIT as u32 - 1);
    let map = if user { &USER_STACKS } else { &KERNEL_STACKS };
    if map.get_ptr(id).is_none() {
        buf.len = frames as u32;
        buf._pad = 0;
        // Another CPU may store the same stack at the same time: EEXIST is fine.
        if map.insert(id, &*buf, BPF_NOEXIST as u64).is_ok() {
            bump(if user { counters::USER_STACKS_STORED } else { counters::KERNEL_STACKS_STORED });
        } else if map.get_ptr(id).is_none() {
            return Err(0);
        }
    }
    Ok(id as i32)
}

#[repr(C)]
struct HashCtx {
    level: u32,
    frames: u32,
    h: u64,
}

/// One FNV-1a step over frame `i` of this nesting level's scratch stack.
#[inline(never)]
extern "C" fn fnv_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the HashCtx on the caller's stack.
    let hc = unsafe { &mut *(ctx as *mut HashCtx) };
    let i = i as usize;
    if i >= MAX_DEPTH || i >= hc.frames as usize {
        return 1;
    }
    let Some(buf) = STACK_SCRATCH.get_ptr(hc.level) else { return 1 };
    // SAFETY: this nesting level's per-CPU scratch slot, filled by the caller.
    hc.h ^= unsafe { (*buf).ips[i] };
    hc.h = hc.h.wrapping_mul(0x0000_0100_0000_01b3);
    0
}

/// Counts a failed stack walk: on-CPU samples' by reason (e == 0: the table was full), off-CPU
/// walks in one counter of their own, so "samples without a stack" counts samples only. The
/// first of each kind on a CPU is also logged (aya-log, debug level: see counters::lose).
/// `user_stack` calls it for current (the exiting-thread check reads current's mm).
#[inline(always)]
fn stack_failed(off: bool, user: bool, e: i64) {
    match (off, user, e == 0) {
        // An exiting thread has no user stack to walk: not a failure (measured on a go build:
        // every off-CPU user-stack -EFAULT, ~800 of them, was one).
        (off, true, false) if e == EFAULT && crate::process::current_without_mm() => {
            bump(if off { counters::OFF_EXITING } else { counters::SAMPLES_EXITING });
        }
        (true, _, _) => lose!(counters::OFF_STACK_ERRORS, "off-CPU stack not taken: error {}", e),
        (false, true, true) => lose!(counters::USER_STACK_COLLISION, "user stack not stored: the stack table is full"),
        (false, true, false) => lose!(counters::USER_STACK_ERROR, "user stack copy failed: error {}", e),
        (false, false, true) => {
            lose!(counters::KERNEL_STACK_COLLISION, "kernel stack not stored: the stack table is full")
        }
        (false, false, false) => lose!(counters::KERNEL_STACK_ERROR, "kernel stack copy failed: error {}", e),
    }
}

/// The kernel stack of a task that is not running (a blocked thread about to be switched in).
#[inline(always)]
pub fn task_kernel_stack(task: *mut task_struct) -> i32 {
    match store_stack(false, |buf, size| unsafe { bpf_get_task_stack(task, buf, size, 0) }) {
        Ok(id) => id,
        Err(e) => {
            stack_failed(true, false, e);
            NO_STACK
        }
    }
}

/// User stack id, counting failures (`off`: for an off-CPU block, else an on-CPU sample). For
/// a DWARF-mode process, the id of a copy of current's stack (ustack.rs).
#[inline(always)]
pub fn user_stack<C: EbpfContext>(ctx: &C, off: bool) -> i32 {
    if let Some(id) = copy_if_dwarf() {
        return id;
    }
    match take_stack(ctx, true) {
        Ok(id) => id,
        Err(e) => {
            stack_failed(off, true, e);
            NO_STACK
        }
    }
}

/// A stack id without loss accounting (wakers: interrupt context often has no user stack).
#[inline(always)]
pub fn stack_quiet<C: EbpfContext>(ctx: &C, user: bool) -> i32 {
    if user {
        if let Some(id) = copy_if_dwarf() {
            return id;
        }
    }
    take_stack(ctx, user).unwrap_or(NO_STACK)
}

/// For a DWARF-mode current process: a copy of its user stack, from the registers it entered
/// the kernel with (every caller but the perf sample runs in a tracepoint), by id.
#[inline(always)]
fn copy_if_dwarf() -> Option<i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !crate::ustack::dwarf(tgid) {
        return None;
    }
    Some(crate::ustack::copy(KIND_COPY, tgid, pid_tgid as u32, NO_STACK, crate::ustack::current_regs()))
}

/// Kernel stack id. -EFAULT means the sample was taken in user mode: normal, not a loss.
#[inline(always)]
pub fn kernel_stack<C: EbpfContext>(ctx: &C, off: bool) -> i32 {
    match take_stack(ctx, false) {
        Ok(id) => id,
        Err(EFAULT) => NO_STACK,
        Err(e) => {
            stack_failed(off, false, e);
            NO_STACK
        }
    }
}

pub fn sample(ctx: &PerfEventContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // tgid 0 is the idle task; never tracked.
    if tgid == 0 || !crate::target::is_tracked(tgid) {
        return;
    }
    // An owner's session (creds.rs): not a sample of a process exec'ing a program the owner
    // may not inspect, taken after its new credentials are committed and before
    // sched_process_exec takes it out of the tracked set (the rest of its exec).
    if crate::creds::foreign(crate::process::task_mm_off()).is_some() {
        return;
    }
    bump(counters::CPU_SAMPLES);
    let tid = pid_tgid as u32;
    if crate::ustack::dwarf(tgid) {
        // Counted in userspace, from the record (a per-sample copy id would give every sample
        // its own CPU_COUNTS key); without a record (ring full), counted here without a user
        // stack, so its time is not lost.
        let ks = kernel_stack(ctx, false);
        if crate::ustack::copy(KIND_SAMPLE, tgid, tid, ks, crate::ustack::perf_regs(ctx)) == NO_STACK {
            let key = CpuKey { tgid, tid, user_stack_id: NO_STACK, kernel_stack_id: ks, leaf: Default::default() };
            add(&CPU_COUNTS, &key, 1, counters::CPU_KEYS_FULL);
        }
        return;
    }
    let key = CpuKey {
        tgid,
        tid: pid_tgid as u32,
        user_stack_id: user_stack(ctx, false),
        kernel_stack_id: kernel_stack(ctx, false),
        leaf: crate::unwind::from_perf(ctx),
    };
    if crate::timeline::on() {
        crate::timeline::sample(tid, tgid, key.user_stack_id, key.kernel_stack_id, key.leaf);
    }
    add(&CPU_COUNTS, &key, 1, counters::CPU_KEYS_FULL);
}

/// Adds `n` to `map[key]`, creating the entry; counts `full_counter` when the map is full.
#[inline(always)]
pub fn add<K>(map: &HashMap<K, u64>, key: &K, n: u64, full_counter: u32) {
    if let Some(p) = map.get_ptr_mut(key) {
        // SAFETY: p points at a live map value; the kernel keeps it valid for the program run.
        unsafe { core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(p, n) };
        return;
    }
    if map.insert(key, n, BPF_NOEXIST as u64).is_err() {
        // Another CPU may have created it between lookup and insert.
        match map.get_ptr_mut(key) {
            Some(p) => unsafe {
                core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(p, n);
            },
            None => lose!(full_counter, "on-CPU sample not counted: the sample-count map is full"),
        }
    }
}
