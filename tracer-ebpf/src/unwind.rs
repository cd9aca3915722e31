//! Recovering callers a frame-pointer walk skipped (see tracer_common::unwind). x86_64 only:
//! the check decodes x86 call instructions.
use tracer_common::unwind::{LeafFix, LEAF_RETS};

/// Words scanned above sp at most (bounded loop for the verifier; libc wrappers and Go stubs
/// keep their return address within a few words).
#[cfg(bpf_target_arch = "x86_64")]
const SCAN_WORDS: u64 = 16;

/// Scans user stack words in [sp, min(bp, sp + SCAN_WORDS*8)) for return addresses.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn scan(sp: u64, bp: u64) -> LeafFix {
    use aya_ebpf::helpers::bpf_probe_read_user;
    let mut fix = LeafFix::default();
    let limit = if bp > sp && bp - sp < SCAN_WORDS * 8 { (bp - sp) / 8 } else { SCAN_WORDS };
    let mut found = 0usize;
    let mut i = 0u64;
    while i < SCAN_WORDS {
        if i >= limit || found >= LEAF_RETS {
            break;
        }
        let slot = sp + i * 8;
        i += 1;
        // SAFETY: user memory reads through the helper; faults return Err.
        let Ok(ret) = (unsafe { bpf_probe_read_user(slot as *const u64) }) else { break };
        // User code addresses only (canonical lower half, not the null page).
        if ret < 0x10000 || ret >= 0x0000_8000_0000_0000 {
            continue;
        }
        let Ok(b) = (unsafe { bpf_probe_read_user((ret - 8) as *const [u8; 8]) }) else { continue };
        let callee = if b[3] == 0xE8 {
            // call rel32: the target is relative to the return address.
            ret.wrapping_add(i32::from_le_bytes([b[4], b[5], b[6], b[7]]) as i64 as u64)
        } else if (b[6] == 0xFF && b[7] & 0xF8 == 0xD0)            // call reg
            || (b[5] == 0x41 && b[6] == 0xFF && b[7] & 0xF8 == 0xD0) // call r8-r15
            || (b[5] == 0xFF && b[6] & 0xF8 == 0x50)                // call [reg+disp8]
            || (b[2] == 0xFF && b[3] == 0x15)                        // call [rip+disp32]
            || (b[2] == 0xFF && b[3] & 0xF8 == 0x90)
        // call [reg+disp32]
        {
            0
        } else {
            continue;
        };
        if found < LEAF_RETS {
            fix.rets[found] = ret;
            fix.callees[found] = callee;
        }
        found += 1;
    }
    fix
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
        // In kernel mode these are kernel registers: nothing to do.
        if regs.cs & 3 != 3 {
            return LeafFix::default();
        }
        scan(regs.rsp, regs.rbp)
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
