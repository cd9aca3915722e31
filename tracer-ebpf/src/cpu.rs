//! On-CPU sampling (the profile.c of libbpf-tools, filtered to tracked TGIDs): one perf event
//! per CPU fires at the sampling frequency; we count (tgid, tid, user stack, kernel stack).
use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{HashMap, StackTrace},
    programs::{tracing::StackIdContext, PerfEventContext},
};
use tracer_common::{
    counters,
    cpu::{CpuKey, NO_STACK},
    limits::{KERNEL_STACK_ENTRIES, MAX_CPU_KEYS, USER_STACK_ENTRIES},
};

use crate::counters::bump;

#[map]
pub static USER_STACKS: StackTrace = StackTrace::with_max_entries(USER_STACK_ENTRIES, 0);
#[map]
pub static KERNEL_STACKS: StackTrace = StackTrace::with_max_entries(KERNEL_STACK_ENTRIES, 0);
#[map]
static CPU_COUNTS: HashMap<CpuKey, u64> = HashMap::with_max_entries(MAX_CPU_KEYS, 0);

const EEXIST: i32 = 17;
const EFAULT: i32 = 14;

/// User stack id, counting failures by reason.
#[inline(always)]
pub fn user_stack<C: StackIdContext>(ctx: &C) -> i32 {
    match ctx.get_stackid(&USER_STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(e) => {
            bump(if -e == EEXIST { counters::USER_STACK_COLLISION } else { counters::USER_STACK_ERROR });
            NO_STACK
        }
    }
}

/// A stack id without loss accounting (wakers: interrupt context often has no user stack).
#[inline(always)]
pub fn stack_quiet<C: StackIdContext>(ctx: &C, user: bool) -> i32 {
    let r = if user { ctx.get_stackid(&USER_STACKS, BPF_F_USER_STACK as u64) } else { ctx.get_stackid(&KERNEL_STACKS, 0) };
    r.map(|id| id as i32).unwrap_or(NO_STACK)
}

/// Kernel stack id. -EFAULT means the sample was taken in user mode: normal, not a loss.
#[inline(always)]
pub fn kernel_stack<C: StackIdContext>(ctx: &C) -> i32 {
    match ctx.get_stackid(&KERNEL_STACKS, 0) {
        Ok(id) => id as i32,
        Err(e) if -e == EFAULT => NO_STACK,
        Err(e) => {
            bump(if -e == EEXIST { counters::KERNEL_STACK_COLLISION } else { counters::KERNEL_STACK_ERROR });
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
    bump(counters::CPU_SAMPLES);
    let key = CpuKey {
        tgid,
        tid: pid_tgid as u32,
        user_stack_id: user_stack(ctx),
        kernel_stack_id: kernel_stack(ctx),
        leaf: crate::unwind::from_perf(ctx),
    };
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
            None => bump(full_counter),
        }
    }
}
