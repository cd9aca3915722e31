//! Frames a frame-pointer walk misses.
//!
//! A frame-pointer walk starts at the interrupted ip and follows saved bp values. Functions that
//! build no frame (Go's small leaf functions and assembly stubs such as Syscall6, libc's
//! syscall wrappers, which Debian builds without frame pointers) leave bp pointing at their
//! caller's caller's frame, so the walk skips their callers. Their return addresses are still
//! on the stack between sp and bp: the kernel side scans those words for values that follow a
//! call instruction and keeps up to `LEAF_RETS` of them (innermost first) with the call's target
//! (0 for an indirect call); userspace inserts them after checking the chain is consistent.

pub const LEAF_RETS: usize = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LeafFix {
    /// Return addresses found between sp and bp, innermost first; 0 = none.
    pub rets: [u64; LEAF_RETS],
    /// Target of the direct call before each return address (0: indirect or unknown).
    pub callees: [u64; LEAF_RETS],
}

crate::user_pod!(LeafFix);
