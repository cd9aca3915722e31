//! The walk of one copied stack with framehop: registers and the copy in, addresses and how
//! the walk ended out.
use std::cell::Cell;

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
    Error, FrameAddress, Unwinder as _,
};

use super::{modules::Bytes, Outcome, Regs, Unwound};

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
    Unwound { addrs, outcome: Some(outcome), bytes_needed: needed.get().min(u32::MAX as u64) as u32 }
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
