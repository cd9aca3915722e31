//! Syscall latency of tracked threads (syscount/funclatency-style aggregation in the kernel).
//!
//! Raw tracepoints sys_enter/sys_exit: the cheapest syscall hooks here (no trace-event record
//! is built). Entry remembers (time, nr, args, saved-register address) per thread; exit adds
//! the duration to a per-CPU histogram of (process, syscall), and — only when the call is
//! longer than everything in this CPU's current top K, or above --slow-threshold — sends the
//! call with its stacks and arguments to userspace. Syscall numbers that need user memory
//! copied at entry are globals set from the syscall table by the loader.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap, ProgramArray},
    programs::RawTracePointContext,
};
use tracer_common::{
    counters,
    cpu::NO_STACK,
    limits::{MAX_SYSCALL_KEYS, MAX_SYSCALL_NR},
    process::EVENT_SLOW_CALL,
    syscall::{Inflight, SlowCall, SlowTop, SysKey, SysStats, EXTRA_LEN, HIST_BUCKETS, MAX_SLOW_TOP},
};

use crate::{
    counters::bump,
    target::{is_tracked, maybe_tracked},
    threads,
};

#[map]
static SYSCALL_STATS: PerCpuHashMap<SysKey, SysStats> = PerCpuHashMap::with_max_entries(MAX_SYSCALL_KEYS, 0);
/// The target process's stats, indexed by syscall number: most calls are the target's, and an
/// array slot costs a few ns where the hash lookup above costs ~80 (measured).
#[map]
static ROOT_STATS: PerCpuArray<SysStats> = PerCpuArray::with_max_entries(MAX_SYSCALL_NR, 0);
/// The target's TGID (set by the loader).
#[unsafe(no_mangle)]
static ROOT_TGID: u32 = 0;
/// The K longest durations sent so far, shared by all CPUs. A plain global (read with a direct
/// load, no helper call) keeps the common path — a call faster than the current floor — cheap.
/// Concurrent replacements can only lower the floor, so the gate errs toward sending more.
#[unsafe(no_mangle)]
static mut SLOW_TOP: SlowTop = SlowTop { durations: [0; MAX_SLOW_TOP], min_index: 0, _pad: 0 };
#[map]
static SLOW_SCRATCH: PerCpuArray<SlowCall> = PerCpuArray::with_max_entries(1, 0);
/// sys_exit → off_complete: the program (slot 0, set by the loader) and (duration, return).
#[map]
static OFF_COMPLETE: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map]
static EXIT_ARGS: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// 1: syscall latency (histograms, slowest calls). 0 (--no-syscalls): entry and exit only
/// mark a tracked thread as inside a call — what off-CPU needs to defer its stacks and the
/// child ledger to see waits and pidfds — without reading the clock (except for waits).
#[unsafe(no_mangle)]
static SYSCALL_LATENCY: u32 = 1;

#[inline(always)]
fn latency() -> bool {
    // SAFETY: see target::global.
    unsafe { core::ptr::read_volatile(&SYSCALL_LATENCY) != 0 }
}

/// --slow-top K (≤ MAX_SLOW_TOP) and --slow-threshold (ns, 0 = none).
#[unsafe(no_mangle)]
static SLOW_K: u32 = 20;
#[unsafe(no_mangle)]
static SLOW_THRESHOLD_NS: u64 = 0;
/// Syscall numbers whose user-memory arguments are copied at entry (-1: not on this arch).
#[unsafe(no_mangle)]
static NR_NANOSLEEP: i32 = -1;
#[unsafe(no_mangle)]
static NR_CLOCK_NANOSLEEP: i32 = -1;
#[unsafe(no_mangle)]
static NR_CONNECT: i32 = -1;
#[unsafe(no_mangle)]
pub(crate) static NR_EXECVE: i32 = -1;
#[unsafe(no_mangle)]
pub(crate) static NR_EXECVEAT: i32 = -1;
#[unsafe(no_mangle)]
static NR_OPENAT: i32 = -1;
#[inline(always)]
pub(crate) fn g32(v: &'static i32) -> i32 {
    unsafe { core::ptr::read_volatile(v) }
}

/// The six syscall arguments from the saved user registers.
#[inline(always)]
fn read_args(regs: *const pt_regs) -> [u64; 6] {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // r10 r9 r8 rax rcx rdx rsi rdi are consecutive in x86_64 pt_regs: one read.
        let Ok(w) = (unsafe { bpf_probe_read_kernel(core::ptr::addr_of!((*regs).r10) as *const [u64; 8]) }) else {
            return [0; 6];
        };
        // [r10, r9, r8, rax, rcx, rdx, rsi, rdi] → di, si, dx, r10, r8, r9
        [w[7], w[6], w[5], w[0], w[2], w[1]]
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        let _ = regs;
        [0; 6]
    }
}

pub fn sys_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Every process's syscalls come here: most leave at this bit test.
    if !maybe_tracked((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let tid = pid_tgid as u32;
    // An entry exists only for tracked threads: after a thread's first syscall this one table
    // slot is the whole filter.
    let t = match threads::get(tid) {
        Some(t) => t,
        None => {
            let tgid = (pid_tgid >> 32) as u32;
            if !is_tracked(tgid) {
                return Ok(());
            }
            let Some(t) = threads::get_or_create(tid, tgid) else { return Ok(()) };
            t
        }
    };
    let inf = &mut t.sys;
    let regs: *const pt_regs = ctx.arg(0);
    let nr: i64 = ctx.arg(1);
    inf.nr = nr as i32;
    inf.regs = regs as u64;
    inf.active = 1;
    inf.blocked = 0;
    if latency() {
        inf.ts = unsafe { bpf_ktime_get_ns() };
        copy_extra(inf);
    } else {
        // The ledger times waits (wait stalls); nothing else needs the clock here.
        inf.ts = if crate::ledger::is_wait(inf.nr) { unsafe { bpf_ktime_get_ns() } } else { 0 };
    }
    Ok(())
}

/// The syscall number from the saved registers (orig_ax: ax holds the return value by now).
#[inline(always)]
fn orig_nr(regs: *const pt_regs) -> Option<i32> {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        unsafe { bpf_probe_read_kernel(core::ptr::addr_of!((*regs).orig_rax)) }.ok().map(|v: u64| v as i32)
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        let _ = regs;
        None
    }
}

/// The arguments, from the saved registers (the kernel leaves the argument registers of
/// pt_regs untouched during a call).
#[inline(always)]
pub fn args_of(inf: &Inflight) -> [u64; 6] {
    read_args(inf.regs as *const pt_regs)
}

/// Copies the user memory a few syscalls need decoded (requested sleep, address, path): it may
/// change once the call returns.
#[inline(always)]
fn copy_extra(inf: &mut Inflight) {
    let nr = inf.nr;
    if nr < 0 {
        return;
    }
    let wanted = nr == g32(&NR_NANOSLEEP)
        || nr == g32(&NR_CLOCK_NANOSLEEP)
        || nr == g32(&NR_CONNECT)
        || nr == g32(&NR_EXECVE)
        || nr == g32(&NR_EXECVEAT)
        || nr == g32(&NR_OPENAT);
    if !wanted {
        return;
    }
    inf.args = args_of(inf);
    inf.extra = [0; EXTRA_LEN];
    let ptr = if nr == g32(&NR_NANOSLEEP) {
        inf.args[0]
    } else if nr == g32(&NR_CLOCK_NANOSLEEP) {
        inf.args[2]
    } else if nr == g32(&NR_CONNECT) {
        inf.args[1]
    } else if nr == g32(&NR_EXECVE) {
        let _ = unsafe { bpf_probe_read_user_str_bytes(inf.args[0] as *const u8, &mut inf.extra) };
        return;
    } else if nr == g32(&NR_EXECVEAT) || nr == g32(&NR_OPENAT) {
        let _ = unsafe { bpf_probe_read_user_str_bytes(inf.args[1] as *const u8, &mut inf.extra) };
        return;
    } else {
        return;
    };
    // 64 bytes hold any sockaddr but a long unix path; near the end of a mapping only 32 may
    // be readable.
    if let Ok(b) = unsafe { bpf_probe_read_user(ptr as *const [u8; EXTRA_LEN]) } {
        inf.extra = b;
    } else if let Ok(b) = unsafe { bpf_probe_read_user(ptr as *const [u8; 32]) } {
        inf.extra[..32].copy_from_slice(&b);
    }
}

#[inline(always)]
fn bucket(ns: u64) -> usize {
    if ns < 2 {
        return 0;
    }
    let b = 63 - ns.leading_zeros() as usize;
    if b >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        b
    }
}

pub fn sys_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !maybe_tracked((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let tid = pid_tgid as u32;
    let Some(t) = threads::get(tid) else { return Ok(()) };
    let inf = &mut t.sys;
    // Entry not seen (entered before we attached): nothing to measure. A wait returning is
    // still a lifecycle fact the ledger needs (which child was reaped, how it ended): send it,
    // with an unknown start.
    if inf.active == 0 {
        let regs: *const pt_regs = ctx.arg(0);
        if let Some(nr) = orig_nr(regs) {
            if crate::ledger::is_wait(nr) {
                inf.nr = nr;
                inf.regs = regs as u64;
                inf.ts = 0;
                crate::ledger::wait_event(inf, ctx.arg(1));
            }
        }
        return Ok(());
    }
    inf.active = 0;
    let ret: i64 = ctx.arg(1);
    let lat = latency();
    let dur = if lat {
        let dur = unsafe { bpf_ktime_get_ns() }.saturating_sub(inf.ts);
        record_stats(inf.tgid, inf.nr, dur, ret);
        dur
    } else {
        0
    };
    crate::ledger::lifecycle_exit(inf, ret);
    if inf.off_pending != 0 {
        // A long block of this call awaits its user stack: finish in a separate program (its
        // stack walks would make this one much longer to verify), which also does the
        // slow-call check. Only reached again if the tail call fails.
        if let Some(a) = EXIT_ARGS.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, read by the tail-called program right after.
            unsafe { *a = [dur, ret as u64] };
            unsafe { OFF_COMPLETE.tail_call(ctx, 0) };
        }
    }
    if lat && is_slow(dur) {
        // Where it blocked if a block was recorded (sched.rs: stacks of blocks shorter than
        // --min-block are never taken), else the user stack now: the same at exit as at entry.
        let us = if inf.blocked != 0 && inf.user_stack_id >= 0 {
            inf.user_stack_id
        } else {
            crate::cpu::stack_quiet(ctx, true)
        };
        send_slow(inf, tid, dur, ret, us);
    }
    Ok(())
}

/// Tail-called from sys_exit when a block of the returning call awaits its user stack.
pub fn off_complete(ctx: &RawTracePointContext) -> Result<(), i64> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(t) = threads::get(tid) else { return Ok(()) };
    let us = crate::cpu::user_stack(ctx, true);
    if t.off.pend_ts != 0 {
        // Callers the walk skips (libc wrappers, Go's Syscall6), from the saved registers.
        // (none for a stack copy: userspace unwinds it with CFI).
        let leaf = crate::sched::leaf_of(us, t.sys.regs);
        crate::sched::complete(t, us, leaf);
    }
    let inf = &mut t.sys;
    inf.off_pending = 0;
    let Some(a) = EXIT_ARGS.get_ptr(0) else { return Ok(()) };
    // SAFETY: per-CPU slot written by sys_exit just before the tail call.
    let [dur, ret] = unsafe { *a };
    if latency() && is_slow(dur) {
        send_slow(inf, tid, dur, ret as i64, us);
    }
    Ok(())
}

/// The stats entry of (tgid, nr) in the hash map, created if needed.
#[inline(always)]
fn hashed_stats(tgid: u32, nr: i32) -> Option<*mut SysStats> {
    let key = SysKey { tgid, nr: nr as u32 };
    if let Some(s) = SYSCALL_STATS.get_ptr_mut(&key) {
        return Some(s);
    }
    let zero = SysStats { count: 0, errors: 0, total_ns: 0, max_ns: 0, hist: [0; HIST_BUCKETS] };
    let _ = SYSCALL_STATS.insert(&key, &zero, 0);
    let s = SYSCALL_STATS.get_ptr_mut(&key);
    if s.is_none() {
        crate::counters::lose!(counters::SYSCALL_STATS_FULL, "syscall not counted: the syscall stats map is full");
    }
    s
}

#[inline(always)]
fn record_stats(tgid: u32, nr: i32, dur: u64, ret: i64) {
    let root = tgid == unsafe { core::ptr::read_volatile(&ROOT_TGID) };
    let s = match if root { ROOT_STATS.get_ptr_mut(nr as u32) } else { None } {
        Some(s) => s,
        None => match hashed_stats(tgid, nr) {
            Some(s) => s,
            None => return,
        },
    };

    // SAFETY: per-CPU value: no other CPU writes it.
    let s = unsafe { &mut *s };
    s.count += 1;
    if ret < 0 {
        s.errors += 1;
    }
    s.total_ns += dur;
    if dur > s.max_ns {
        s.max_ns = dur;
    }
    let b = bucket(dur);
    if b < HIST_BUCKETS {
        s.hist[b] += 1;
    }
}

/// Whether this call beats the smallest of this CPU's K slowest so far (then it takes that
/// slot), or is above the threshold.
#[inline(always)]
fn is_slow(dur: u64) -> bool {
    let threshold = unsafe { core::ptr::read_volatile(&SLOW_THRESHOLD_NS) };
    // SAFETY: a global in the object's .bss map; races are benign (see SLOW_TOP).
    let top = unsafe { &mut *core::ptr::addr_of_mut!(SLOW_TOP) };
    let min_i = top.min_index as usize;
    if min_i >= MAX_SLOW_TOP {
        return false;
    }
    if dur <= top.durations[min_i] {
        return threshold != 0 && dur >= threshold;
    }
    top.durations[min_i] = dur;
    // Find the new smallest slot among the first K (a bpf_loop callback: see cpu::fnv_step).
    let k = unsafe { core::ptr::read_volatile(&SLOW_K) };
    let mut m = MinCtx { best: 0, best_v: u64::MAX };
    unsafe { aya_ebpf::helpers::bpf_loop(k, min_step as *mut core::ffi::c_void, (&raw mut m).cast(), 0) };
    top.min_index = m.best;
    true
}

#[repr(C)]
struct MinCtx {
    best: u32,
    best_v: u64,
}

/// One step of the search for the smallest of the top-K durations.
#[inline(never)]
extern "C" fn min_step(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back is_slow's MinCtx.
    let m = unsafe { &mut *(ctx as *mut MinCtx) };
    let i = i as usize;
    if i >= MAX_SLOW_TOP {
        return 1;
    }
    // SAFETY: a global in the object's .bss map; races are benign (see SLOW_TOP).
    let v = unsafe { (*core::ptr::addr_of!(SLOW_TOP)).durations[i] };
    if v < m.best_v {
        m.best_v = v;
        m.best = i as u32;
    }
    0
}

/// Sends one slow call with the user stack the caller took (one walk per program).
#[inline(always)]
fn send_slow(inf: &Inflight, tid: u32, dur: u64, ret: i64, user_stack: i32) {
    let Some(sc) = SLOW_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU scratch slot.
    let sc = unsafe { &mut *sc };
    sc.kind = EVENT_SLOW_CALL;
    sc.tgid = inf.tgid;
    sc.tid = tid;
    sc.nr = inf.nr;
    sc.start_ns = inf.ts;
    sc.duration_ns = dur;
    sc.ret = ret;
    sc.args = args_of(inf);
    sc.extra = inf.extra;
    // No caller recovery for a call that never blocked: the stack scan here would make this
    // program several times longer to verify (start-up time), for calls rarely among the
    // slowest.
    let blocked = inf.blocked != 0;
    sc.user_stack_id = user_stack;
    sc.kernel_stack_id = if blocked && inf.kernel_stack_id >= 0 { inf.kernel_stack_id } else { NO_STACK };
    sc.leaf = if blocked { inf.leaf } else { tracer_common::unwind::LeafFix::default() };
    if crate::process::EVENTS.output::<SlowCall>(&*sc, 0).is_err() {
        crate::counters::lose!(counters::SLOW_CALLS_DROPPED, "slow call not sent: the events ring buffer is full");
    } else {
        bump(counters::SLOW_CALLS_SENT);
    }
}
