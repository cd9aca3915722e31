//! The walk of one copied stack with framehop: registers and the copy in, addresses and how
//! the walk ended out.
use std::cell::Cell;

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
    Error, Unwinder as _,
};

use super::{modules::Bytes, Outcome, Regs, Unwound};

/// Reads past the copy up to this far count as "the copy ran out"; farther ones come from a
/// garbage frame pointer (framehop falls back to frame pointers where there is no CFI).
const PLAUSIBLE_STACK: u64 = 8 << 20;

/// Unwinds `stack` (bytes from `regs.sp` upward). `known(addr)`: whether an address is in an
/// executable mapping; the walk stops with NoModule at the first that is not (the address is
/// kept: it is what the previous frame's return slot held).
pub fn walk(
    fh: &UnwinderX86_64<Bytes>,
    cache: &mut CacheX86_64,
    regs: Regs,
    stack: &[u8],
    cut: bool,
    known: impl Fn(u64) -> bool,
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
    let mut it = fh.iter_frames(regs.ip, UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp), cache, &mut read);
    let outcome = loop {
        if addrs.len() >= tracer_common::stack::MAX_DEPTH {
            // The kernel's walk stops at the same depth. Deeper than that is a loop the
            // CFI did not catch or a recursion too deep to keep: not a complete stack.
            break Outcome::CfiError;
        }
        match it.next() {
            Ok(Some(f)) => {
                addrs.push(f.address());
                if !known(f.address_for_lookup()) {
                    break Outcome::NoModule;
                }
            }
            Ok(None) => break Outcome::Complete,
            Err(Error::CouldNotReadStack(a)) if a >= sp + len && a - sp < PLAUSIBLE_STACK => {
                // Past the copy: cut at --ustack-bytes, the copy was too small; otherwise the
                // copy reached the end of the stack mapping, and nothing lies beyond it.
                break if cut { Outcome::CopyExhausted } else { Outcome::Complete };
            }
            Err(_) => break Outcome::CfiError,
        }
    };
    drop(it);
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
