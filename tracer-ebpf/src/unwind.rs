//! Recovering callers a frame-pointer walk skipped (see tracer_common::unwind). x86_64 only:
//! the check decodes x86 call instructions.
use tracer_common::unwind::{LeafFix, LEAF_RETS};

/// Words scanned above sp at most (bounded loop for the verifier; libc wrappers and Go stubs
/// keep their return address within a few words).
#[cfg(bpf_target_arch = "x86_64")]
const SCAN_WORDS: u64 = 16;

/// Scans user stack words in [sp, min(bp, sp + SCAN_WORDS*8)) for return addresses. One word
/// per bpf_loop callback: the verifier checks the callback once, where an inline loop is walked
/// iteration by iteration (with its many branches) at every call site — hundreds of ms of load
/// time.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn scan(sp: u64, bp: u64) -> LeafFix {
    let limit = if bp > sp && bp - sp < SCAN_WORDS * 8 { (bp - sp) / 8 } else { SCAN_WORDS };
    let mut sc = ScanCtx { sp, found: 0, _pad: 0, fix: LeafFix::default() };
    // SAFETY: the callback gets back the ScanCtx on this stack.
    unsafe { aya_ebpf::helpers::bpf_loop(limit as u32, scan_word as *mut core::ffi::c_void, (&raw mut sc).cast(), 0) };
    sc.fix
}

#[cfg(bpf_target_arch = "x86_64")]
#[repr(C)]
struct ScanCtx {
    sp: u64,
    found: u32,
    _pad: u32,
    fix: LeafFix,
}

/// Word `i` above sp: a return address right after a call instruction is recorded.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(never)]
extern "C" fn scan_word(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    use aya_ebpf::helpers::bpf_probe_read_user;
    // SAFETY: bpf_loop passes back the ScanCtx of scan().
    let sc = unsafe { &mut *(ctx as *mut ScanCtx) };
    let found = sc.found as usize;
    if i >= SCAN_WORDS || found >= LEAF_RETS {
        return 1;
    }
    // SAFETY: user memory reads through the helper; faults return Err.
    let Ok(ret) = (unsafe { bpf_probe_read_user((sc.sp + i * 8) as *const u64) }) else { return 1 };
    // User code addresses only (canonical lower half, not the null page).
    if ret < 0x10000 || ret >= 0x0000_8000_0000_0000 {
        return 0;
    }
    let Ok(b) = (unsafe { bpf_probe_read_user((ret - 8) as *const [u8; 8]) }) else { return 0 };
    let callee = if b[3] == 0xE8 {
        // call rel32: the target is relative to the return address.
        ret.wrapping_add(i32::from_le_bytes([b[4], b[5], b[6], b[7]]) as i64 as u64)
    } else if (b[6] == 0xFF && b[7] & 0xF8 == 0xD0)   // call reg (r8-r15: a REX prefix before)
        || (b[5] == 0xFF && b[6] & 0xF8 == 0x50)       // call [reg+disp8]
        || (b[2] == 0xFF && b[3] == 0x15)               // call [rip+disp32]
        || (b[2] == 0xFF && b[3] & 0xF8 == 0x90)
    // call [reg+disp32]
    {
        0
    } else {
        return 0;
    };
    sc.fix.rets[found] = ret;
    sc.fix.callees[found] = callee;
    sc.found += 1;
    0
}

#[cfg(not(bpf_target_arch = "x86_64"))]
#[inline(always)]
pub fn scan(_sp: u64, _bp: u64) -> LeafFix {
    LeafFix::default()
}

/// For a perf event sample taken in user mode.
#[inline(always)]
pub fn from_perf(ctx: &aya_ebpf::programs::PerfEventContext) -> LeafFix {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: perf_event programs may read their bpf_perf_event_data context.
        let regs = unsafe { &(*ctx.ctx).regs };
        if regs.cs & 3 == 3 {
            return scan(regs.rsp, regs.rbp);
        }
        // In kernel mode (an interrupt's work, a syscall) these are kernel registers; the user
        // stack was walked from those the thread entered the kernel with, and so is the scan.
        match crate::ustack::current_regs() {
            Some([_, sp, bp]) => scan(sp, bp),
            None => LeafFix::default(),
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        let _ = ctx;
        LeafFix::default()
    }
}

/// For a thread inside a syscall, from the kernel address of its saved user registers.
#[inline(always)]
pub fn from_saved_regs(regs: u64) -> LeafFix {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        use aya_ebpf::{bindings::pt_regs, helpers::bpf_probe_read_kernel};
        let p = regs as *const pt_regs;
        // SAFETY: kernel reads through the helper; the registers stay saved on the thread's
        // kernel stack until its syscall returns.
        let sp = unsafe { bpf_probe_read_kernel(core::ptr::addr_of!((*p).rsp)) };
        let bp = unsafe { bpf_probe_read_kernel(core::ptr::addr_of!((*p).rbp)) };
        match (sp, bp) {
            (Ok(sp), Ok(bp)) => scan(sp, bp),
            _ => LeafFix::default(),
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        let _ = regs;
        LeafFix::default()
    }
}
