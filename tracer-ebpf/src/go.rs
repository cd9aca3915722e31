//! The Go uprobes (issue #12 items 4 and 5): entry probes only — a uretprobe rewrites the
//! return address on the goroutine stack and crashes Go when that stack moves, so the end of
//! `runtime.newproc1` is probed at each of its RET instructions instead.
//!
//! - goroutines created: at a RET of `newproc1`, RAX = the new g; its `gopc` (the creation
//!   site) is counted in GO_CREATED per (tgid, gopc);
//! - goroutines exited: at the entry of `gdestroy(gp)` (1.22+) or `goexit0(gp)` (≤ 1.21),
//!   RAX = gp, counted in GO_EXITED per (tgid, gp.gopc);
//! - stop-the-world: a stop is opened (GO_STW_OPEN, per tgid: the runtime holds worldsema
//!   from stop to start, so a process has one at a time) and closed at each RET of
//!   `startTheWorldWithSema`, which returns the time the world restarted (RAX = now,
//!   nanotime(): CLOCK_MONOTONIC, as bpf_ktime_get_ns) — the duration is then exactly the one
//!   the runtime adds to its pause total. Opened at the entry of 1.22+'s
//!   `startTheWorldWithSema(now int64, w worldStop)` (BL = w.reason, CX = w.startedStopping),
//!   or of ≤ 1.21's `stopTheWorldWithSema()` (the clock; the reason is `g.m.preemptoff`, the
//!   string its callers set, R14 = g, when its offset is known).
//!
//! Each process's settings (GO_CFG) are set by the loader before it attaches; a hit of a
//! process without them is ignored. Every churn hit is counted in GO_HITS, which userspace
//! checks against the CPU budget (loader/go.rs).
use aya_ebpf::{
    bindings::{pt_regs, BPF_NOEXIST},
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::map,
    maps::HashMap,
    programs::ProbeContext,
};
use tracer_common::go::{GoCfg, GoHits, GoSiteKey, StwKey, StwOpen, StwVal, MAX_GO_PROCS, MAX_GO_SITES, NO_REASON};

use crate::target::current_tgid;

#[map]
pub static GO_CFG: HashMap<u32, GoCfg> = HashMap::with_max_entries(MAX_GO_PROCS, 0);
#[map]
static GO_HITS: HashMap<u32, GoHits> = HashMap::with_max_entries(MAX_GO_PROCS, 0);
#[map]
static GO_CREATED: HashMap<GoSiteKey, u64> = HashMap::with_max_entries(MAX_GO_SITES, 0);
#[map]
static GO_EXITED: HashMap<GoSiteKey, u64> = HashMap::with_max_entries(MAX_GO_SITES, 0);
#[map]
static GO_STW: HashMap<StwKey, StwVal> = HashMap::with_max_entries(MAX_GO_SITES, 0);
#[map]
static GO_STW_OPEN: HashMap<u32, StwOpen> = HashMap::with_max_entries(MAX_GO_PROCS, 0);

/// `g.m` (stable in every version, see go-runtime.md).
const G_M_OFF: u64 = 48;

#[inline(always)]
fn add(p: *mut u64, v: u64) {
    use core::intrinsics::{atomic_xadd, AtomicOrdering::Relaxed};
    // SAFETY: a live map value; several CPUs may hit the same process's probes at once.
    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(p, v) };
}

#[inline(always)]
fn reg(ctx: &ProbeContext, f: fn(*const pt_regs) -> *const u64) -> u64 {
    // SAFETY: a kprobe-type context is the pt_regs; the verifier checks the load.
    unsafe { core::ptr::read_volatile(f(ctx.regs)) }
}

#[inline(always)]
fn hits(tgid: u32) -> Option<*mut GoHits> {
    if let Some(h) = GO_HITS.get_ptr_mut(tgid) {
        return Some(h);
    }
    let _ = GO_HITS.insert(tgid, GoHits::default(), BPF_NOEXIST as u64);
    GO_HITS.get_ptr_mut(tgid)
}

/// Counts one goroutine of process `tgid` whose g is at `gp` in `map`.
#[inline(always)]
fn count_site(map: &HashMap<GoSiteKey, u64>, ctx: &ProbeContext) {
    let tgid = current_tgid();
    // SAFETY: a live map value.
    let Some(cfg) = (unsafe { GO_CFG.get(tgid) }) else { return };
    let Some(h) = hits(tgid) else { return };
    // SAFETY: `h` is a live map value.
    add(unsafe { &raw mut (*h).churn }, 1);
    let gp = reg(ctx, |r| unsafe { &raw const (*r).rax });
    let Ok(gopc) = (unsafe { bpf_probe_read_user((gp + cfg.gopc_off as u64) as *const u64) }) else {
        add(unsafe { &raw mut (*h).lost }, 1);
        return;
    };
    let key = GoSiteKey { tgid, _pad: 0, gopc };
    if let Some(n) = map.get_ptr_mut(&key) {
        add(n, 1);
        return;
    }
    if map.insert(&key, &1, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    // Another CPU inserted the key first (or the map is full).
    match map.get_ptr_mut(&key) {
        Some(n) => add(n, 1),
        None => add(unsafe { &raw mut (*h).lost }, 1),
    }
}

/// At a RET of runtime.newproc1.
#[inline(always)]
pub fn newproc_ret(ctx: &ProbeContext) {
    count_site(&GO_CREATED, ctx);
}

/// At the entry of runtime.gdestroy / runtime.goexit0.
#[inline(always)]
pub fn goroutine_exit(ctx: &ProbeContext) {
    count_site(&GO_EXITED, ctx);
}

/// Adds one stop of `dur` ns to (tgid, reason).
#[inline(always)]
fn record_stw(h: *mut GoHits, key: StwKey, dur: u64) {
    if let Some(v) = GO_STW.get_ptr_mut(&key) {
        // SAFETY: a live map value; stops of one process are serialized (worldsema), so max
        // needs no atomic compare.
        unsafe {
            add(&raw mut (*v).count, 1);
            add(&raw mut (*v).total_ns, dur);
            if dur > (*v).max_ns {
                (*v).max_ns = dur;
            }
        }
        return;
    }
    let val = StwVal { count: 1, total_ns: dur, max_ns: dur };
    if GO_STW.insert(&key, &val, BPF_NOEXIST as u64).is_err() {
        // SAFETY: a live map value.
        add(unsafe { &raw mut (*h).lost }, 1);
    }
}

/// Go 1.22+: the entry of runtime.startTheWorldWithSema(now, w): opens the stop with its
/// reason and when stopping began.
#[inline(always)]
pub fn stw_start(ctx: &ProbeContext) {
    let tgid = current_tgid();
    if unsafe { GO_CFG.get(tgid) }.is_none() {
        return;
    }
    let reason = reg(ctx, |r| unsafe { &raw const (*r).rbx }) & 0xff;
    let started = reg(ctx, |r| unsafe { &raw const (*r).rcx });
    let open = StwOpen { start_ns: started, reason, len: 0, _pad: 0 };
    let _ = GO_STW_OPEN.insert(tgid, &open, 0);
}

/// Go ≤ 1.21: the entry of runtime.stopTheWorldWithSema(): opens the stop, now.
#[inline(always)]
pub fn stw_stop_old(ctx: &ProbeContext) {
    let tgid = current_tgid();
    // SAFETY: a live map value.
    let Some(cfg) = (unsafe { GO_CFG.get(tgid) }) else { return };
    let mut open = StwOpen { start_ns: unsafe { bpf_ktime_get_ns() }, reason: 0, len: 0, _pad: 0 };
    if cfg.reason_off != NO_REASON {
        let g = reg(ctx, |r| unsafe { &raw const (*r).r14 });
        // SAFETY: reads of the target's memory, checked by the helper.
        if let Ok(m) = unsafe { bpf_probe_read_user((g + G_M_OFF) as *const u64) } {
            if let Ok(s) = unsafe { bpf_probe_read_user((m + cfg.reason_off as u64) as *const [u64; 2]) } {
                if s[1] < 256 {
                    open.reason = s[0];
                    open.len = s[1] as u32;
                }
            }
        }
    }
    let _ = GO_STW_OPEN.insert(tgid, &open, 0);
}

/// At a RET of runtime.startTheWorldWithSema (every version): RAX = the time the world
/// restarted; closes the open stop.
#[inline(always)]
pub fn stw_end(ctx: &ProbeContext) {
    let tgid = current_tgid();
    // SAFETY: a live map value, copied out before it is removed.
    let Some(open) = (unsafe { GO_STW_OPEN.get(tgid) }).copied() else { return };
    let _ = GO_STW_OPEN.remove(tgid);
    let Some(h) = hits(tgid) else { return };
    add(unsafe { &raw mut (*h).stw }, 1);
    let mut now = reg(ctx, |r| unsafe { &raw const (*r).rax });
    if now <= open.start_ns {
        // Not a time (cannot happen with the signatures above): the probe's own clock.
        now = unsafe { bpf_ktime_get_ns() };
    }
    let dur = if open.start_ns != 0 { now.saturating_sub(open.start_ns) } else { 0 };
    record_stw(h, StwKey { tgid, len: open.len, reason: open.reason }, dur);
}
