//! User-stack copies for DWARF-mode processes (see tracer_common::ustack): the user registers
//! and the top of the user stack go into the `USTACKS` ring buffer, and userspace unwinds them
//! with the binaries' CFI. `UNWIND_MODE[tgid]` (set by userspace at attach and exec, inherited
//! at fork) says which processes; the others keep the kernel's frame-pointer walk (cpu.rs).
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{pt_regs, task_struct},
    helpers::{
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_loop, bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_probe_read_user, bpf_task_pt_regs},
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    counters,
    cpu::NO_STACK,
    limits::MAX_TRACKED,
    ustack::{
        UstackHeader, COPY_ID_BIT, FLAG_CUT, KIND_COPY, MAX_DROP_KEYS, MODE_DWARF, USTACKS_RING_BYTES, USTACK_LEVELS,
        USTACK_MAX,
    },
};

use crate::counters::{bump, lose};

#[map]
pub static UNWIND_MODE: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TRACKED, 0);
/// Copies dropped (ring full), by TGID: the per-process accounting of report.json.
#[map]
static USTACK_DROPS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_DROP_KEYS, 0);
#[map]
static USTACKS: RingBuf = RingBuf::with_byte_size(USTACKS_RING_BYTES, 0);
/// Slot 0: when a copy last woke the reader (bpf_ktime_get_ns; racy across CPUs, which only
/// moves a wakeup by one copy).
#[map]
static USTACK_WOKE: Array<u64> = Array::with_max_entries(1, 0);

/// A wakeup at most every 2 ms, or sooner once 1 MiB waits: at 4999 Hz a wakeup per copy cost
/// rtrace a context switch and an epoll round per sample (bench unwind: 8.7 µs of rtrace CPU
/// per sample, 1.75× perf's overhead on the target). The reader also drains the ring on its
/// 100 ms tick, so a last copy without a wakeup waits at most that.
const WAKE_EVERY_NS: u64 = 2_000_000;
const WAKE_BYTES: u64 = 1 << 20;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// The output flag for the next copy (see WAKE_EVERY_NS). Not the adaptive default (0): it
/// wakes only a reader that has caught up, which never happens behind unannounced copies.
#[inline(always)]
fn wake_flag() -> u64 {
    let Some(woke) = USTACK_WOKE.get_ptr_mut(0) else { return BPF_RB_FORCE_WAKEUP };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a live map value; a torn race between CPUs is harmless (see USTACK_WOKE).
    let last = unsafe { *woke };
    if now.wrapping_sub(last) >= WAKE_EVERY_NS || USTACKS.query(BPF_RB_AVAIL_DATA) >= WAKE_BYTES {
        unsafe { *woke = now };
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

const PAGE: u32 = 4096;
/// Nesting levels per CPU (task, softirq, hardirq, NMI), as cpu.rs's STACK_SCRATCH.
const LEVELS: u32 = USTACK_LEVELS;

/// A record being built: the header, then the stack bytes. One page more than the largest
/// copy, so that the verifier can prove any chunk (offset < USTACK_MAX, size ≤ PAGE) fits.
#[repr(C)]
pub struct UstackBuf {
    hdr: UstackHeader,
    data: [u8; (USTACK_MAX + PAGE) as usize],
    /// Copies this slot has numbered (never sent).
    seq: u64,
}

/// Scratch records, indexed by cpu * LEVELS + level: an ordinary array, because a per-CPU
/// value is limited to 32 KiB. The loader sizes it to the possible CPUs.
#[map]
pub static USTACK_SCRATCH: Array<UstackBuf> = Array::with_max_entries(64 * LEVELS, 0);
#[map]
static USTACK_NEST: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// --ustack-bytes (set by the loader; clamped to [USTACK_MIN, USTACK_MAX] there).
#[unsafe(no_mangle)]
static USTACK_BYTES: u32 = tracer_common::ustack::USTACK_DEFAULT;
/// Slots of USTACK_SCRATCH (possible CPUs × LEVELS; set by the loader).
#[unsafe(no_mangle)]
static USTACK_SLOTS: u32 = 64 * LEVELS;

/// Whether `tgid`'s user stacks are copied rather than walked.
#[inline(always)]
pub fn dwarf(tgid: u32) -> bool {
    // SAFETY: a live map value.
    matches!(UNWIND_MODE.get_ptr(tgid), Some(m) if unsafe { *m } == MODE_DWARF)
}

/// A new process (`child`) gets its parent's mode: it runs the same image until it execs,
/// when userspace decides again.
#[inline(always)]
pub fn inherit(child: u32, parent: u32) {
    if let Some(m) = UNWIND_MODE.get_ptr(parent) {
        // SAFETY: a live map value.
        let m = unsafe { *m };
        let _ = UNWIND_MODE.insert(child, m, 0);
    }
}

#[inline(always)]
pub fn forget(tgid: u32) {
    let _ = UNWIND_MODE.remove(tgid);
}

/// Whether a user stack id is a copy's (see tracer_common::ustack::COPY_ID_BIT).
#[inline(always)]
pub fn is_copy(id: i32) -> bool {
    id >= 0 && id & COPY_ID_BIT != 0
}

/// User registers (ip, sp, bp).
pub type Regs = [u64; 3];

/// The user registers current entered the kernel with (syscall, interrupt, fault): tracepoints,
/// and perf samples taken in kernel mode. None for a task without user context (a kernel
/// thread: ip 0).
#[inline(always)]
pub fn current_regs() -> Option<Regs> {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: the helpers return BTF pointers; the fields are read through
        // bpf_probe_read_kernel, which every program type here may call.
        unsafe {
            let task: *mut task_struct = bpf_get_current_task_btf();
            let p = bpf_task_pt_regs(task) as *const pt_regs;
            if p.is_null() {
                return None;
            }
            let ip = bpf_probe_read_kernel(core::ptr::addr_of!((*p).rip)).ok()?;
            let sp = bpf_probe_read_kernel(core::ptr::addr_of!((*p).rsp)).ok()?;
            let bp = bpf_probe_read_kernel(core::ptr::addr_of!((*p).rbp)).ok()?;
            if ip == 0 || sp == 0 {
                return None;
            }
            Some([ip, sp, bp])
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        None
    }
}

/// The registers of a perf sample: the interrupted ones in user mode, else those saved at
/// kernel entry.
#[inline(always)]
pub fn perf_regs(ctx: &aya_ebpf::programs::PerfEventContext) -> Option<Regs> {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: perf_event programs may read their bpf_perf_event_data context.
        let regs = unsafe { &(*ctx.ctx).regs };
        if regs.cs & 3 == 3 {
            return Some([regs.rip, regs.rsp, regs.rbp]);
        }
    }
    let _ = ctx;
    current_regs()
}

/// Copies current's user stack from `regs` into a record of `kind` and sends it. Returns the
/// copy's id, or NO_STACK when nothing was sent (no user registers, nesting too deep, the ring
/// full: each counted).
#[inline(always)]
pub fn copy(kind: u32, tgid: u32, tid: u32, kernel_stack_id: i32, regs: Option<Regs>) -> i32 {
    let Some(regs) = regs else {
        lose!(counters::USTACK_COPY_FAILED, "user stack not copied: no user registers");
        return NO_STACK;
    };
    let Some(nest) = USTACK_NEST.get_ptr_mut(0) else { return NO_STACK };
    // SAFETY: per-CPU counter; a nested program restores it before the outer one resumes.
    let level = unsafe { *nest };
    if level >= LEVELS {
        lose!(counters::USTACK_COPY_FAILED, "user stack not copied: programs nested too deep");
        return NO_STACK;
    }
    unsafe { *nest = level + 1 };
    let idx = unsafe { bpf_get_smp_processor_id() } * LEVELS + level;
    let r = copy_in(idx, kind, tgid, tid, kernel_stack_id, regs);
    unsafe { *nest = level };
    r
}

#[inline(always)]
fn copy_in(idx: u32, kind: u32, tgid: u32, tid: u32, kernel_stack_id: i32, regs: Regs) -> i32 {
    let Some(buf) = USTACK_SCRATCH.get_ptr_mut(idx) else {
        lose!(counters::USTACK_COPY_FAILED, "user stack not copied: no scratch slot for cpu slot {}", idx);
        return NO_STACK;
    };
    // SAFETY: the (cpu, nesting level) slot is ours until this program returns.
    let buf = unsafe { &mut *buf };
    // SAFETY: a loader-set global (see target::global).
    let mut limit = unsafe { core::ptr::read_volatile(&USTACK_BYTES) };
    if limit > USTACK_MAX {
        limit = USTACK_MAX;
    }
    // Pages one by one in a bpf_loop (one callback to verify; bpf_probe_read_user is
    // all-or-nothing and cannot fault a page in): what was copied before a failing page stays.
    let mut c = CopyCtx { sp: regs[1], idx, off: 0, limit };
    unsafe { bpf_loop(limit / PAGE + 2, copy_page as *mut c_void, (&raw mut c).cast(), 0) };
    let mut len = c.off;
    if len > USTACK_MAX {
        len = USTACK_MAX;
    }
    if len == 0 {
        lose!(counters::USTACK_COPY_FAILED, "user stack not copied: sp {} unreadable", regs[1]);
    }
    let id = if kind == KIND_COPY {
        // Unique without atomics (this target's atomic add returns nothing): slot `idx`
        // numbers its copies idx, idx + slots, idx + 2 × slots, … — 2^30 / slots ids each
        // (4 M with 64 CPUs) before they wrap.
        let seq = buf.seq;
        buf.seq = seq + 1;
        // SAFETY: a loader-set global.
        let slots = unsafe { core::ptr::read_volatile(&USTACK_SLOTS) } as u64;
        COPY_ID_BIT | ((seq * slots + idx as u64) as i32 & (COPY_ID_BIT - 1))
    } else {
        0
    };
    buf.hdr = UstackHeader {
        kind,
        id,
        tgid,
        tid,
        kernel_stack_id,
        flags: if len >= limit { FLAG_CUT } else { 0 },
        ip: regs[0],
        sp: regs[1],
        bp: regs[2],
        len,
        _pad: 0,
        ts: if kind == tracer_common::ustack::KIND_SAMPLE && crate::timeline::on() { crate::clock::now() } else { 0 },
    };
    let total = core::mem::size_of::<UstackHeader>() + len as usize;
    // SAFETY: total ≤ size_of::<UstackBuf>() (len ≤ USTACK_MAX); the slice is the scratch slot.
    let bytes = unsafe { core::slice::from_raw_parts((buf as *const UstackBuf).cast::<u8>(), total) };
    if USTACKS.output::<[u8]>(bytes, wake_flag()).is_err() {
        lose!(counters::USTACK_DROPPED, "user stack copy dropped: the USTACKS ring buffer is full");
        // A racy increment is fine (a rare lost count; the global counter above is exact
        // enough), and a process beyond MAX_DROP_KEYS is still counted there.
        match USTACK_DROPS.get_ptr_mut(tgid) {
            // SAFETY: a live map value.
            Some(p) => unsafe { *p += 1 },
            None => {
                let _ = USTACK_DROPS.insert(tgid, 1, 0);
            }
        }
        return NO_STACK;
    }
    bump(counters::USTACK_COPIES);
    if kind == KIND_COPY {
        id
    } else {
        0
    }
}

#[repr(C)]
struct CopyCtx {
    sp: u64,
    idx: u32,
    /// Bytes copied so far.
    off: u32,
    limit: u32,
}

/// Copies the next chunk: from sp to the end of its page first, then whole pages, up to the
/// limit. Stops at the first page that cannot be read (the top of the stack mapping).
#[inline(never)]
extern "C" fn copy_page(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back copy_in's CopyCtx.
    let c = unsafe { &mut *(ctx as *mut CopyCtx) };
    let off = c.off;
    if off >= c.limit || off >= USTACK_MAX {
        return 1;
    }
    let addr = c.sp.wrapping_add(off as u64);
    let room = PAGE - (addr as u32 & (PAGE - 1));
    let want = c.limit - off;
    let n = if want < room { want } else { room };
    if n == 0 || n > PAGE {
        return 1;
    }
    let Some(buf) = USTACK_SCRATCH.get_ptr_mut(c.idx) else { return 1 };
    // SAFETY: off < USTACK_MAX and n ≤ PAGE: inside data (USTACK_MAX + PAGE bytes).
    let r = unsafe {
        let dst = (*buf).data.as_mut_ptr().add((off & (USTACK_MAX - 1)) as usize);
        bpf_probe_read_user(dst.cast(), n, addr as *const c_void)
    };
    if r != 0 {
        return 1;
    }
    c.off = off + n;
    0
}
