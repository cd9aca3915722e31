//! The walk of one copied stack with framehop: registers and the copy in, addresses and how
//! the walk ended out.
use std::cell::Cell;

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
    Error, FrameAddress, Unwinder as _,
};

use super::{modules::Bytes, Outcome, Regs, Unwound};
use crate::symbolize::chain::callee;
use tracer_common::unwind::LeafFix;

/// Reads past the copy up to this far count as "the copy ran out"; farther ones come from a
/// garbage frame pointer (framehop falls back to frame pointers where there is no CFI).
const PLAUSIBLE_STACK: u64 = 8 << 20;

/// `mov $15, %rax; syscall` (rt_sigreturn): the signal trampoline (glibc's __restore_rt),
/// whose address the kernel pushes as a handler's return address.
const SIGRETURN: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05];

fn is_sigreturn(code: &dyn Code, frame: FrameAddress) -> bool {
    code.code(frame.address(), SIGRETURN.len()) == Some(&SIGRETURN[..])
}

/// Offsets in the `ucontext` at sp of the trampoline's frame (uc_mcontext at 40; gregs in
/// the kernel's sigcontext order): where the interrupted rbp, rsp and rip are.
const UC_RBP: u64 = 120;
const UC_RSP: u64 = 160;
const UC_RIP: u64 = 168;

/// What the walk needs of the process besides framehop's modules.
pub trait Code {
    /// Whether `addr` is in an executable mapping.
    fn knows(&self, addr: u64) -> bool;
    /// Whether `addr` is in a binary's entry stub (modules.rs ENTRY_STUB): the stack's root.
    fn is_entry(&self, addr: u64) -> bool;
    /// Whether the binary mapped at `addr` has CFI (`.eh_frame`).
    fn has_cfi(&self, addr: u64) -> bool;
    /// `len` bytes of code at `addr`, when its file is mapped.
    fn code(&self, addr: u64, len: usize) -> Option<&[u8]>;
}

/// Unwinds `stack` (bytes from `regs.sp` upward). The walk stops with NoModule at the first
/// address in no executable mapping (the address is kept: it is what the previous frame's
/// return slot held).
///
/// Signal frames are stepped here, not by framehop (which recovers rip/rsp/rbp through CFI
/// rules of its own and cannot evaluate __restore_rt's CFA expression): the interrupted
/// registers are read from the ucontext, and both the trampoline's address and the
/// interrupted ip are given + 1, so that the `ret - 1` lookup every later stage does for
/// non-leaf frames lands on them exactly (neither is a return address after a call).
pub fn walk(
    fh: &UnwinderX86_64<Bytes>,
    cache: &mut CacheX86_64,
    regs: Regs,
    stack: &[u8],
    cut: bool,
    code: &dyn Code,
) -> Unwound {
    let sp = regs.sp;
    let len = stack.len() as u64;
    // The highest offset above sp read (or attempted): what a copy must hold.
    let needed = Cell::new(0u64);
    let mut read = |addr: u64| -> Result<u64, ()> {
        let off = addr.checked_sub(sp).ok_or(())?;
        if off < PLAUSIBLE_STACK {
            needed.set(needed.get().max(off + 8));
        }
        let o = usize::try_from(off).map_err(|_| ())?;
        let b = stack.get(o..o.checked_add(8).ok_or(())?).ok_or(())?;
        Ok(u64::from_le_bytes(b.try_into().unwrap()))
    };
    let mut addrs = Vec::with_capacity(32);
    let mut r = UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp);
    let mut frame = FrameAddress::from_instruction_pointer(regs.ip);
    addrs.push(regs.ip);
    let step = |frame: FrameAddress,
                r: &mut UnwindRegsX86_64,
                cache: &mut CacheX86_64,
                read: &mut dyn FnMut(u64) -> Result<u64, ()>|
     -> Result<Option<(u64, FrameAddress)>, Error> {
        if is_sigreturn(code, frame) {
            let uc = r.sp();
            let mut at = |o: u64| read(uc.wrapping_add(o)).map_err(|_| Error::CouldNotReadStack(uc.wrapping_add(o)));
            let (rbp, rsp, rip) = (at(UC_RBP)?, at(UC_RSP)?, at(UC_RIP)?);
            *r = UnwindRegsX86_64::new(rip, rsp, rbp);
            return Ok(Some((rip.wrapping_add(1), FrameAddress::from_instruction_pointer(rip))));
        }
        let mut rd = |a: u64| read(a);
        Ok(fh
            .unwind_frame(frame, r, cache, &mut rd)?
            .and_then(|ret| Some((ret, FrameAddress::from_return_address(ret)?))))
    };
    let outcome = loop {
        if !code.knows(frame.address_for_lookup()) {
            break Outcome::NoModule;
        }
        if code.is_entry(frame.address()) {
            break Outcome::Complete;
        }
        if addrs.len() >= tracer_common::stack::MAX_DEPTH {
            // The kernel's walk stops at the same depth. Deeper than that is a loop the
            // CFI did not catch or a recursion too deep to keep: not a complete stack.
            break Outcome::CfiError;
        }
        if frame.is_return_address() && is_sigreturn(code, frame) {
            // The trampoline's own address (the kernel pushed it) + 1 as well: its symbol
            // starts there, and the byte before is padding no symbol covers.
            *addrs.last_mut().unwrap() += 1;
        }
        match step(frame, &mut r, cache, &mut read) {
            Ok(Some((addr, next))) => {
                addrs.push(addr);
                frame = next;
            }
            // The root (CFI says the return address is undefined), or a null return address.
            Ok(None) => break Outcome::Complete,
            Err(Error::CouldNotReadStack(a)) if a >= sp.saturating_add(len) && a - sp < PLAUSIBLE_STACK => {
                // Past the copy: cut at --ustack-bytes, the copy was too small; otherwise the
                // copy reached the end of the stack mapping, and nothing lies beyond it.
                break if cut { Outcome::CopyExhausted } else { Outcome::Complete };
            }
            Err(_) => break Outcome::CfiError,
        }
    };
    let skipped = if code.has_cfi(regs.ip) { LeafFix::default() } else { skipped_callers(regs, stack, code) };
    Unwound { addrs, outcome: Some(outcome), bytes_needed: needed.get().min(u32::MAX as u64) as u32, skipped }
}

/// Words above sp the scan below reads at most: the probes' SCAN_WORDS (tracer-ebpf unwind.rs).
const SCAN_WORDS: u64 = 16;

/// For a leaf in a binary without CFI (Go's): framehop walks it by frame pointers, and skips
/// the caller of a leaf that built no frame exactly as the kernel's walk does. The probes
/// repair that with a scan of the words between sp and bp (tracer_common::unwind); a copied
/// stack gets the same scan here, so that a Go process's stacks taken in DWARF mode (between
/// its exec and userspace's decision, when it inherited a non-Go parent's mode) come out as
/// its frame-pointer ones do. The symbolizer checks the candidates as it does the probes'.
pub fn skipped_callers(regs: Regs, stack: &[u8], code: &dyn Code) -> LeafFix {
    let limit =
        if regs.bp > regs.sp && regs.bp - regs.sp < SCAN_WORDS * 8 { (regs.bp - regs.sp) / 8 } else { SCAN_WORDS };
    let mut fix = LeafFix::default();
    let mut found = 0;
    for i in 0..limit as usize {
        let Some(w) = stack.get(i * 8..i * 8 + 8) else { break };
        let ret = u64::from_le_bytes(w.try_into().unwrap());
        if !(0x10000..0x0000_8000_0000_0000).contains(&ret) {
            continue;
        }
        let Some(callee) = code.code(ret - 8, 8).and_then(|b| callee(b, ret)) else { continue };
        fix.rets[found] = ret;
        fix.callees[found] = callee;
        found += 1;
        if found == fix.rets.len() {
            break;
        }
    }
    fix
}

/// A frame-pointer walk of the same copy (what the kernel's bpf_get_stack would see), for the
/// control in tests and for comparing the two on real stacks.
pub fn frame_pointer_walk(regs: Regs, stack: &[u8]) -> Vec<u64> {
    let read = |addr: u64| -> Option<u64> {
        let o = usize::try_from(addr.checked_sub(regs.sp)?).ok()?;
        Some(u64::from_le_bytes(stack.get(o..o.checked_add(8)?)?.try_into().ok()?))
    };
    let mut out = vec![regs.ip];
    let mut bp = regs.bp;
    while out.len() < tracer_common::stack::MAX_DEPTH {
        let (Some(next), Some(ret)) = (read(bp), bp.checked_add(8).and_then(read)) else { break };
        if ret == 0 {
            break;
        }
        out.push(ret);
        if next <= bp {
            break;
        }
        bp = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Code at 0x401000..0x402000 without CFI: a `call rel32` into the leaf at 0x401100 ends at
    /// 0x401805 (main's return address), an indirect `call *%rax` at 0x401905.
    struct NoCfi(Vec<u8>);

    impl Code for NoCfi {
        fn knows(&self, addr: u64) -> bool {
            (0x401000..0x402000).contains(&addr)
        }
        fn is_entry(&self, _: u64) -> bool {
            false
        }
        fn has_cfi(&self, _: u64) -> bool {
            false
        }
        fn code(&self, addr: u64, len: usize) -> Option<&[u8]> {
            let o = usize::try_from(addr.checked_sub(0x401000)?).ok()?;
            self.0.get(o..o + len)
        }
    }

    fn code() -> NoCfi {
        let mut c = vec![0x90u8; 0x1000];
        c[0x800] = 0xE8;
        c[0x801..0x805].copy_from_slice(&(0x1100i32 - 0x1805).to_le_bytes());
        c[0x903..0x905].copy_from_slice(&[0xFF, 0xD0]);
        NoCfi(c)
    }

    fn words(w: &[u64]) -> Vec<u8> {
        w.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// A frameless leaf's caller is found at [sp] with its call's target; a local that is no
    /// return address, a word past bp and an address outside user space are not.
    #[test]
    fn skipped_callers_of_a_frameless_leaf() {
        let sp = 0x7000_0000u64;
        // [sp] main's return address, a local, an indirect call's return address; bp at sp+24.
        let stack = words(&[0x401805, 0x1234_5678, 0x401905, 0x401805]);
        let regs = Regs { ip: 0x401110, sp, bp: sp + 24 };
        let fix = skipped_callers(regs, &stack, &code());
        assert_eq!(fix.rets, [0x401805, 0x401905, 0]);
        assert_eq!(fix.callees, [0x401100, 0, 0]);
        // bp unknown (not above sp): 16 words at most, and kernel addresses never count.
        let stack = words(&[0xffff_ffff_8100_1805, 0x401805]);
        let fix = skipped_callers(Regs { ip: 0x401110, sp, bp: 0 }, &stack, &code());
        assert_eq!(fix.rets, [0x401805, 0, 0]);
    }

    /// The walk of a copy carries the scan only for a leaf without CFI (Go's binaries).
    #[test]
    fn walk_scans_only_without_cfi() {
        let sp = 0x7000_0000u64;
        let stack = words(&[0x401805, 0]);
        let fh = UnwinderX86_64::new();
        let mut cache = CacheX86_64::new();
        let w = walk(&fh, &mut cache, Regs { ip: 0x401110, sp, bp: sp + 8 }, &stack, false, &code());
        assert_eq!(w.skipped.rets[0], 0x401805);
    }
}
