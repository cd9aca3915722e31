//! Off-CPU with wakers (offcputime + offwaketime of libbpf-tools, filtered to tracked TGIDs).
//!
//! sched_switch: the outgoing tracked thread (current) records when and in which state it left
//! the CPU (and its stacks, unless they are deferred: see tracer_common::sched::OffStart); the
//! incoming thread, if it has such a record, adds the time it was away to OFFCPU. A sleep that
//! was ended by a wakeup is split: switch-out → wakeup counts in its state (sleep/disk),
//! wakeup → switch-in as runqueue (waiting for a CPU). sched_waking runs in the waker's
//! context, so its stacks are the waker's. Both are BTF tracepoints: their task arguments are
//! typed pointers (direct loads, bpf_get_task_stack).
use aya_ebpf::{
    bindings::task_struct,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::map,
    maps::HashMap,
    programs::BtfTracePointContext,
};
use tracer_common::{
    counters,
    limits::{MAX_OFF_KEYS, MAX_WAKE_KEYS},
    sched::{OffKey, OffStart, OffVal, WakeKey, DEFERRED_STACK, STATE_DISK, STATE_RUNQUEUE, STATE_SLEEP},
    thread::Thread,
};

use crate::{
    counters::{bump, lose},
    cpu::{kernel_stack, stack_quiet, task_kernel_stack, user_stack},
    target::{is_tracked, maybe_tracked, task_ids},
    threads,
};
use tracer_common::{cpu::NO_STACK, unwind::LeafFix};

#[map]
static OFFCPU: HashMap<OffKey, OffVal> = HashMap::with_max_entries(MAX_OFF_KEYS, 0);
#[map]
static WAKEUPS: HashMap<WakeKey, OffVal> = HashMap::with_max_entries(MAX_WAKE_KEYS, 0);

/// Shortest off-CPU interval recorded (--min-block), ns.
#[unsafe(no_mangle)]
static MIN_BLOCK_NS: u64 = 0;

/// Raw task states (include/linux/sched.h), as sched_switch's prev_state carries them.
const TASK_UNINTERRUPTIBLE: u32 = 0x2;
const TASK_DEAD: u32 = 0x80;
const TASK_NOLOAD: u32 = 0x400;

#[inline(always)]
fn min_block_ns() -> u64 {
    // SAFETY: see target::global.
    unsafe { core::ptr::read_volatile(&MIN_BLOCK_NS) }
}

/// sched_switch(preempt, prev, next, prev_state) as a BTF tracepoint: `next` comes as a task
/// pointer, so the kernel stack of a thread coming back from a long block can be taken then
/// (bpf_get_task_stack), instead of at every switch-out.
pub fn sched_switch(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let preempt: u64 = ctx.arg(0);
    let prev: *const u8 = ctx.arg(1);
    let next: *mut task_struct = ctx.arg(2);
    let state: u64 = ctx.arg(3);
    let (prev_tid, prev_tgid) = task_ids(prev);
    let (next_tid, next_tgid) = task_ids(next as *const u8);
    // Every switch on the machine comes here: most involve no tracked thread and leave after
    // two bit tests, without reading the clock.
    let (tracked_in, tracked_out) = (maybe_tracked(next_tgid), maybe_tracked(prev_tgid));
    if !tracked_in && !tracked_out {
        return Ok(());
    }
    let now = crate::clock::switch_now(prev);
    if tracked_in {
        switch_in(next, next_tid, next_tgid, now);
    }
    if tracked_out {
        switch_out(ctx, prev, prev_tid, prev_tgid, preempt & 0xff != 0, state as u32, now);
    }
    Ok(())
}

/// The incoming thread, if it is one of ours coming back from a block.
#[inline(always)]
fn switch_in(next: *mut task_struct, tid: u32, tgid: u32, now: u64) {
    if tid == 0 {
        return;
    }
    let Some(t) = threads::get(tid) else { return };
    if crate::timeline::on() {
        crate::timeline::switch(tid, tgid, &t.off, now);
    }
    // ts == 0 marks "not switched out" (entries stay for the thread's life).
    let st = &mut t.off;
    let ts = st.ts;
    if ts == 0 {
        return;
    }
    st.ts = 0;
    // Most blocks end here: nothing else is read or copied.
    if now.saturating_sub(ts) < min_block_ns() {
        return;
    }
    if st.user_stack_id != DEFERRED_STACK {
        let mut s = *st;
        s.ts = ts;
        account(tid, &s, now);
        return;
    }
    // A long block in a syscall: its kernel stack now (the thread has not run yet), its user
    // stack when the call returns (syscalls::sys_exit → off_complete).
    let ks = task_kernel_stack(next);
    st.kernel_stack_id = ks;
    st.pend_ts = ts;
    st.pend_end = now;
    t.sys.off_pending = 1;
    t.sys.kernel_stack_id = ks;
}

/// The outgoing thread (current), if tracked: when, in which state, and — unless deferred —
/// with which stacks it left the CPU.
#[inline(always)]
fn switch_out(ctx: &BtfTracePointContext, prev: *const u8, tid: u32, tgid: u32, preempt: bool, state: u32, now: u64) {
    if tgid == 0 {
        return;
    }
    // Raw task state: 0 running (or `preempt`) = still runnable; TASK_DEAD never comes back;
    // TASK_UNINTERRUPTIBLE without TASK_NOLOAD (that is TASK_IDLE) = disk; anything else sleeps.
    if state & TASK_DEAD != 0 {
        // Its very last switch-out (it can still be preempted after sched_process_exit, which
        // sends an exit too): where the timeline's last running slice of it ends.
        if crate::timeline::on() && is_tracked(tgid) {
            crate::timeline::exit(tid, tgid, now);
        }
        return;
    }
    let class = if preempt || state == 0 {
        STATE_RUNQUEUE
    } else if state & TASK_UNINTERRUPTIBLE != 0 && state & TASK_NOLOAD == 0 {
        STATE_DISK
    } else {
        STATE_SLEEP
    };
    let t = match threads::get(tid) {
        Some(t) => t,
        None => {
            if !is_tracked(tgid) {
                return;
            }
            let Some(t) = threads::get_or_create(tid, tgid) else {
                lose!(counters::OFF_LOST, "off-CPU record lost: tid {} has no per-thread slot", tid);
                return;
            };
            t
        }
    };
    let in_call = t.sys.active != 0;
    let pending = t.off.pend_ts != 0;
    // Preempted outside a syscall (typically on its way back to user mode): nothing later runs
    // in this thread's context with the same user registers, so its user stack is taken now —
    // or reused when it is preempted at the very same point again (a loop that wakes another
    // thread, which then preempts it). Its kernel stack would only show the preemption path.
    let preempted = !in_call && class == STATE_RUNQUEUE;
    let at = if preempted { preempted_at(prev as *mut task_struct) } else { None };
    let cached = match at {
        Some(here) if t.off.pre_stack >= 0 && crate::mem::words_eq(&t.off.pre_at, &here) => Some(t.off.pre_stack),
        _ => None,
    };
    // One call site per stack kind: every inlined stack walk is verified again (load time).
    let us = if pending || (!in_call && cached.is_none()) { user_stack(ctx, true) } else { NO_STACK };
    // Back from a long block and blocking again inside the same call before returning from it
    // (a spurious wakeup): that block is added now, with the user stack it had (the same
    // registers).
    if pending {
        let leaf = leaf_of(us, t.sys.regs);
        complete(t, us, leaf);
    }
    let start = &mut t.off;
    start.wake_ts = 0;
    start.tgid = tgid;
    start.state = class;
    start.waker_tgid = 0;
    start.waker_tid = 0;
    start.waker_in_call = 0;
    start.waker_user_stack_id = -1;
    start.waker_kernel_stack_id = -1;
    crate::mem::zero(&mut start.waker_comm);
    crate::mem::zero(&mut start.leaf);
    if in_call {
        // Inside a syscall: stacks deferred (see OffStart); the slow-call report learns that
        // the call blocked (its arguments are read at exit, or from /proc if it never returns).
        start.user_stack_id = DEFERRED_STACK;
        start.kernel_stack_id = DEFERRED_STACK;
        let inf = &mut t.sys;
        if inf.blocked == 0 {
            inf.user_stack_id = DEFERRED_STACK;
            inf.kernel_stack_id = DEFERRED_STACK;
            crate::mem::zero(&mut inf.leaf);
        }
        inf.blocked = 1;
    } else if preempted {
        start.user_stack_id = cached.unwrap_or(us);
        start.kernel_stack_id = NO_STACK;
        if let (Some(here), None) = (at, cached) {
            start.pre_at = here;
            start.pre_stack = us;
        }
    } else {
        // Blocked outside a syscall (a page fault, a stop): the stacks now.
        start.user_stack_id = us;
        start.kernel_stack_id = kernel_stack(ctx, true);
    }
    let start = &mut t.off;
    // Written last: a nonzero ts publishes the record to switch-in and sched_waking.
    start.ts = now;
}

/// Where a thread outside a syscall was preempted: pc, sp, frame pointer and return address,
/// from its saved user registers (direct loads: bpf_task_pt_regs gives a BTF pointer). Not a
/// cache by call site: sp and bp pin the very frame, and the return address its caller — the
/// one user-memory read here (~115 ns), kept because two callers with frames of the same size
/// reach the same pc, sp and bp (a producer's send_a/send_b both calling write()).
#[inline(always)]
fn preempted_at(prev: *mut task_struct) -> Option<[u64; 4]> {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        use aya_ebpf::{
            bindings::pt_regs,
            helpers::{bpf_probe_read_user, generated::bpf_task_pt_regs},
        };
        // SAFETY: `prev` is a BTF task pointer (current); the helper returns a BTF pt_regs
        // pointer, whose fields the verifier lets us load directly.
        let (ip, sp, bp) = unsafe {
            let p = bpf_task_pt_regs(prev) as *const pt_regs;
            if p.is_null() {
                return None;
            }
            (
                core::ptr::read_volatile(core::ptr::addr_of!((*p).rip)),
                core::ptr::read_volatile(core::ptr::addr_of!((*p).rsp)),
                core::ptr::read_volatile(core::ptr::addr_of!((*p).rbp)),
            )
        };
        if ip == 0 {
            return None;
        }
        // SAFETY: user read through the helper (current is the thread).
        let ret = unsafe { bpf_probe_read_user((bp + 8) as *const u64) }.unwrap_or(0);
        return Some([ip, sp, bp, ret]);
    }
    #[allow(unreachable_code)]
    {
        let _ = prev;
        None
    }
}

/// The callers a frame-pointer walk of user stack `us` skipped, from a thread's saved registers
/// (`regs`); none for a stack copy, which userspace unwinds with CFI.
#[inline(always)]
pub fn leaf_of(us: i32, regs: u64) -> LeafFix {
    if crate::ustack::is_copy(us) {
        return LeafFix::default();
    }
    crate::unwind::from_saved_regs(regs)
}

/// Adds a parked block (see OffStart) with its user stack `us` and the callers its walk skips,
/// taken by the caller: current is the blocked thread, still in — or just returning from — the
/// call it blocked in, so its user registers are those it blocked with.
#[inline(always)]
pub fn complete(t: &mut Thread, us: i32, leaf: LeafFix) {
    let st = &mut t.off;
    st.user_stack_id = us;
    st.leaf = leaf;
    let mut s = *st;
    s.ts = st.pend_ts;
    account(t.tid, &s, st.pend_end);
    st.pend_ts = 0;
    st.pend_end = 0;
    t.sys.user_stack_id = us;
    t.sys.leaf = leaf;
    t.sys.off_pending = 0;
}

fn account(tid: u32, s: &OffStart, now: u64) {
    let total = now.saturating_sub(s.ts);
    if total < min_block_ns() {
        return;
    }
    bump(counters::OFF_EVENTS);
    let key = |state| OffKey {
        tgid: s.tgid,
        tid,
        user_stack_id: s.user_stack_id,
        kernel_stack_id: s.kernel_stack_id,
        state,
        _pad: 0,
        leaf: s.leaf,
    };
    if s.wake_ts != 0 && s.wake_ts >= s.ts && s.state != STATE_RUNQUEUE {
        let blocked = s.wake_ts - s.ts;
        add(&OFFCPU, &key(s.state), blocked);
        add(&OFFCPU, &key(STATE_RUNQUEUE), now.saturating_sub(s.wake_ts));
        let wk = WakeKey {
            tgid: s.tgid,
            tid,
            user_stack_id: s.user_stack_id,
            kernel_stack_id: s.kernel_stack_id,
            waker_tgid: s.waker_tgid,
            waker_tid: s.waker_tid,
            waker_user_stack_id: s.waker_user_stack_id,
            waker_kernel_stack_id: s.waker_kernel_stack_id,
            waker_comm: s.waker_comm,
            leaf: s.leaf,
            // Set only with the waker's stacks (switch-out does not reset it).
            waker_leaf: if s.waker_user_stack_id >= 0 { s.waker_leaf } else { LeafFix::default() },
        };
        add(&WAKEUPS, &wk, blocked);
    } else {
        add(&OFFCPU, &key(s.state), total);
    }
}

/// Adds one interval of `ns` to `map[key]`.
#[inline(always)]
fn add<K>(map: &HashMap<K, OffVal>, key: &K, ns: u64) {
    use core::intrinsics::{atomic_xadd, AtomicOrdering::Relaxed};
    let p = match map.get_ptr_mut(key) {
        Some(p) => p,
        None => {
            let _ = map.insert(key, OffVal::default(), aya_ebpf::bindings::BPF_NOEXIST as u64);
            match map.get_ptr_mut(key) {
                Some(p) => p,
                None => {
                    lose!(counters::OFF_LOST, "off-CPU interval lost: the off-CPU or wakeup map is full");
                    return;
                }
            }
        }
    };
    // SAFETY: p points at a live map value.
    unsafe {
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*p).total_ns, ns);
        atomic_xadd::<u64, u64, { Relaxed }>(&raw mut (*p).count, 1);
        // A racy max is fine: concurrent updates of one key are rare and both values are real.
        if (*p).max_ns < ns {
            (*p).max_ns = ns;
        }
    }
}

/// sched_waking(p) as a BTF tracepoint: the wakee's pid is a direct load from its task_struct
/// (this runs at every wakeup on the machine).
pub fn sched_waking(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let p: *const u8 = ctx.arg(0);
    let (pid, tgid) = task_ids(p);
    if !maybe_tracked(tgid) {
        return Ok(());
    }
    let Some(t) = threads::get(pid) else { return Ok(()) };
    let s = &mut t.off;
    if s.ts == 0 || s.wake_ts != 0 {
        return Ok(()); // already woken; the first wakeup is the one that counts
    }
    // bpf_ktime_get_ns, on the off-CPU clock (see clock.rs).
    s.wake_ts = crate::clock::now();
    // --timeline draws a flow from the waker: who it is, for every block (see waker_in_call).
    if crate::timeline::on() {
        let pid_tgid = bpf_get_current_pid_tgid();
        let w = threads::get(pid_tgid as u32);
        s.waker_in_call = matches!(w, Some(w) if w.sys.active != 0) as u32;
        s.waker_tgid = (pid_tgid >> 32) as u32;
        s.waker_tid = pid_tgid as u32;
    }
    // The waker matters only for a block that will be recorded: skip who it is and its
    // (costly) stacks for short blocks — the common case in context-switch-heavy programs.
    if s.wake_ts.saturating_sub(s.ts) < min_block_ns() {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    s.waker_tgid = (pid_tgid >> 32) as u32;
    s.waker_tid = pid_tgid as u32;
    s.waker_comm = bpf_get_current_comm().unwrap_or([0; 16]);
    s.waker_user_stack_id = stack_quiet(ctx, true);
    s.waker_kernel_stack_id = stack_quiet(ctx, false);
    // A traced waker inside a syscall (a write, a futex wake): the callers its walk skips.
    s.waker_leaf = match threads::get(pid_tgid as u32) {
        Some(w) if w.sys.active != 0 => leaf_of(s.waker_user_stack_id, w.sys.regs),
        _ => LeafFix::default(),
    };
    Ok(())
}
