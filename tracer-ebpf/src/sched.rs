//! Off-CPU with wakers (offcputime + offwaketime of libbpf-tools, filtered to tracked TGIDs).
//!
//! sched_switch: the outgoing tracked thread (current) records when, in which state and with
//! which stacks it left the CPU; the incoming thread, if it has such a record, adds the time
//! it was away to OFFCPU. A sleep that was ended by a wakeup is split: switch-out → wakeup
//! counts in its state (sleep/disk), wakeup → switch-in as runqueue (waiting for a CPU).
//! sched_waking runs in the waker's context, so its stacks are the waker's.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};
use tracer_common::{
    counters,
    limits::{MAX_OFF_KEYS, MAX_OFF_THREADS, MAX_WAKE_KEYS},
    sched::{OffKey, OffStart, OffVal, WakeKey, STATE_DISK, STATE_RUNQUEUE, STATE_SLEEP},
};

use crate::{
    counters::bump,
    cpu::{kernel_stack, stack_quiet, user_stack},
    syscalls::INFLIGHT,
    target::{global, is_tracked},
};
use tracer_common::unwind::LeafFix;

#[map]
pub static OFF_START: HashMap<u32, OffStart> = HashMap::with_max_entries(MAX_OFF_THREADS, 0);
#[map]
static START_SCRATCH: PerCpuArray<OffStart> = PerCpuArray::with_max_entries(1, 0);
#[map]
static OFFCPU: HashMap<OffKey, OffVal> = HashMap::with_max_entries(MAX_OFF_KEYS, 0);
#[map]
static WAKEUPS: HashMap<WakeKey, OffVal> = HashMap::with_max_entries(MAX_WAKE_KEYS, 0);

/// Field offsets (sched:sched_switch, sched:sched_waking), from tracefs.
#[unsafe(no_mangle)]
static SWITCH_PREV_PID_OFF: u32 = 24;
#[unsafe(no_mangle)]
static SWITCH_PREV_STATE_OFF: u32 = 32;
#[unsafe(no_mangle)]
static SWITCH_NEXT_PID_OFF: u32 = 56;
#[unsafe(no_mangle)]
static WAKING_PID_OFF: u32 = 24;
/// Shortest off-CPU interval recorded (--min-block), ns.
#[unsafe(no_mangle)]
static MIN_BLOCK_NS: u64 = 0;

#[inline(always)]
fn min_block_ns() -> u64 {
    // SAFETY: see target::global.
    unsafe { core::ptr::read_volatile(&MIN_BLOCK_NS) }
}

pub fn sched_switch(ctx: &TracePointContext) -> Result<(), i64> {
    let now = unsafe { bpf_ktime_get_ns() };
    // Switch-in first: the incoming thread's record, if it is one of ours.
    let next: i32 = unsafe { ctx.read_at(global(&SWITCH_NEXT_PID_OFF) as usize) }.map_err(|e| e as i64)?;
    let next = next as u32;
    if next != 0 {
        if let Some(start) = OFF_START.get_ptr_mut(next) {
            // SAFETY: live map value; ts == 0 marks "not switched out" (entries stay for the
            // thread's life: rewriting in place is much cheaper than insert + delete).
            let st = unsafe { &mut *start };
            if st.ts != 0 {
                let s = *st;
                st.ts = 0;
                account(next, &s, now);
            }
        }
    }

    // Switch-out: current is the outgoing thread.
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if tgid == 0 || !is_tracked(tgid) {
        return Ok(());
    }
    let state: i64 = unsafe { ctx.read_at(global(&SWITCH_PREV_STATE_OFF) as usize) }.map_err(|e| e as i64)?;
    // Low byte: the TASK_REPORT state bits (0 = running, i.e. preempted); 0x100 = preempted.
    let bits = state & 0xff;
    let class = if bits == 0 {
        STATE_RUNQUEUE
    } else if bits & 2 != 0 {
        STATE_DISK
    } else {
        STATE_SLEEP
    };
    // Dead tasks (X, Z: bits 0x10, 0x20) never come back.
    if bits & 0x30 != 0 {
        return Ok(());
    }
    let start = match OFF_START.get_ptr_mut(tid) {
        Some(p) => p,
        None => {
            let Some(zero) = START_SCRATCH.get_ptr_mut(0) else { return Ok(()) };
            // SAFETY: per-CPU scratch slot.
            unsafe { (*zero).ts = 0 };
            if OFF_START.insert(tid, unsafe { &*zero }, 0).is_err() {
                bump(counters::OFF_LOST);
                return Ok(());
            }
            match OFF_START.get_ptr_mut(tid) {
                Some(p) => p,
                None => return Ok(()),
            }
        }
    };
    // SAFETY: live map value of this (current) thread.
    let start = unsafe { &mut *start };
    start.wake_ts = 0;
    start.tgid = tgid;
    start.state = class;
    start.waker_tgid = 0;
    start.waker_tid = 0;
    start.waker_user_stack_id = -1;
    start.waker_kernel_stack_id = -1;
    start.waker_comm = [0; 16];
    start.leaf = LeafFix::default();
    start.user_stack_id = user_stack(ctx);
    start.kernel_stack_id = kernel_stack(ctx);
    // Blocked inside a syscall: its saved user registers let us recover the callers the walk
    // skips (libc wrappers, Go's Syscall6), and the slow-call report gets the stacks of where
    // it waited. (Stacks are not cached by call site: a Go thread blocks at the same site with
    // the same sp for different goroutines, whose frames sit further up the same stack.)
    if class != STATE_RUNQUEUE {
        if let Some(inf) = INFLIGHT.get_ptr_mut(tid) {
            // SAFETY: live map value of this (current) thread.
            let inf = unsafe { &mut *inf };
            if inf.active != 0 {
                start.leaf = crate::unwind::from_saved_regs(inf.regs);
                if inf.blocked == 0 {
                    inf.args = crate::syscalls::args_of(inf);
                }
                inf.blocked = 1;
                inf.user_stack_id = start.user_stack_id;
                inf.kernel_stack_id = start.kernel_stack_id;
                inf.leaf = start.leaf;
            }
        }
    }
    // Written last: a nonzero ts publishes the record to switch-in and sched_waking.
    start.ts = now;
    Ok(())
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
                    bump(counters::OFF_LOST);
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

pub fn sched_waking(ctx: &TracePointContext) -> Result<(), i64> {
    let pid: i32 = unsafe { ctx.read_at(global(&WAKING_PID_OFF) as usize) }.map_err(|e| e as i64)?;
    let Some(start) = OFF_START.get_ptr_mut(pid as u32) else { return Ok(()) };
    // SAFETY: live map value.
    let s = unsafe { &mut *start };
    if s.ts == 0 || s.wake_ts != 0 {
        return Ok(()); // already woken; the first wakeup is the one that counts
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    s.wake_ts = unsafe { bpf_ktime_get_ns() };
    // The waker matters only for a block that will be recorded: skip the (costly) stacks of
    // the wakers of short blocks — the common case in context-switch-heavy programs.
    if s.wake_ts.saturating_sub(s.ts) < min_block_ns() {
        return Ok(());
    }
    s.waker_tgid = (pid_tgid >> 32) as u32;
    s.waker_tid = pid_tgid as u32;
    s.waker_comm = bpf_get_current_comm().unwrap_or([0; 16]);
    s.waker_user_stack_id = stack_quiet(ctx, true);
    s.waker_kernel_stack_id = stack_quiet(ctx, false);
    Ok(())
}
