//! Recovering the caller of a frameless leaf function (see `CpuKey::leaf_ret`). x86_64 only:
//! the check relies on the 5-byte `call rel32` encoding.
use aya_ebpf::programs::PerfEventContext;

#[cfg(bpf_target_arch = "x86_64")]
pub fn frameless_leaf(ctx: &PerfEventContext) -> (u64, u64) {
    use aya_ebpf::helpers::bpf_probe_read_user;
    // SAFETY: perf_event programs may read their bpf_perf_event_data context.
    let regs = unsafe { &(*ctx.ctx).regs };
    // Only user-mode samples: in kernel mode these are kernel registers.
    if regs.cs & 3 != 3 {
        return (0, 0);
    }
    let (ip, sp) = (regs.rip, regs.rsp);
    let Ok(ret) = (unsafe { bpf_probe_read_user(sp as *const u64) }) else { return (0, 0) };
    if ret < 5 {
        return (0, 0);
    }
    let Ok(call) = (unsafe { bpf_probe_read_user((ret - 5) as *const [u8; 5]) }) else { return (0, 0) };
    if call[0] != 0xE8 {
        return (0, 0);
    }
    let rel = i32::from_le_bytes([call[1], call[2], call[3], call[4]]);
    let callee = ret.wrapping_add(rel as i64 as u64);
    // The call must target code at or below the sampled ip, within one function's reach.
    if callee > ip || ip - callee > 1 << 20 {
        return (0, 0);
    }
    (ret, callee)
}

#[cfg(not(bpf_target_arch = "x86_64"))]
pub fn frameless_leaf(_ctx: &PerfEventContext) -> (u64, u64) {
    (0, 0)
}
