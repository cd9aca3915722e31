//! User stacks copied for unwinding in userspace (`--unwind dwarf`, see tracer/src/unwind).
//!
//! Code without frame pointers (libc, python3, `gcc -O2`, Rust release) defeats the kernel's
//! frame-pointer walk. For processes in DWARF mode the eBPF side copies the user registers and
//! the top of the user stack (page by page: one unmapped page must not lose the rest) into the
//! `USTACKS` ring buffer, and userspace unwinds the copy with the binaries' `.eh_frame` while
//! the process is alive. Each copy has an id from the same space as `USER_STACKS` ids, so the
//! in-kernel aggregation keys (off-CPU, wakeups, slow calls) keep referring to user stacks by
//! id; on-CPU samples of DWARF processes are counted in userspace instead (a per-sample id
//! would give every sample its own `CPU_COUNTS` key).

/// How a process's user stacks are taken (the value of `UNWIND_MODE[tgid]`; absent = FP).
pub const MODE_FP: u8 = 0;
pub const MODE_DWARF: u8 = 1;

/// Bytes of stack copied per stack: the default, and the bounds of `--ustack-bytes`.
pub const USTACK_DEFAULT: u32 = 16 * 1024;
pub const USTACK_MIN: u32 = 4 * 1024;
pub const USTACK_MAX: u32 = 64 * 1024;

/// Ids of stack copies have this bit set; content-hash ids of `USER_STACKS` use the 30 bits
/// below it, so the two never meet (both stay positive: `NO_STACK` and `DEFERRED_STACK` are
/// negative).
pub const COPY_ID_BIT: i32 = 0x4000_0000;

/// `UstackHeader::kind`: a copy referenced by id from the kernel maps.
pub const KIND_COPY: u32 = 0;
/// `UstackHeader::kind`: an on-CPU sample of a DWARF process (count 1, with its kernel stack).
pub const KIND_SAMPLE: u32 = 1;

/// `UstackHeader::flags`: the copy stopped at the `--ustack-bytes` limit (not at the end of the
/// stack mapping), so an unwind that runs out of bytes was cut short.
pub const FLAG_CUT: u32 = 1;

/// Ring buffer of stack copies (bytes, power of two): 64 busy threads × 99 Hz × a few KiB is a
/// few MB/s; the drain thread empties it every few ms. Full = a counted drop.
pub const USTACKS_RING_BYTES: u32 = 16 << 20;

/// Scratch records per CPU for building copies (nesting levels: task, softirq, hardirq, NMI);
/// the loader sizes `USTACK_SCRATCH` to possible CPUs × this.
pub const USTACK_LEVELS: u32 = 4;

/// Processes with a count of dropped copies (`USTACK_DROPS`).
pub const MAX_DROP_KEYS: u32 = 4096;

/// One record of `USTACKS`: this header, then `len` bytes of stack copied from `sp` upward.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UstackHeader {
    pub kind: u32,
    /// The copy's id (`COPY_ID_BIT` set) for KIND_COPY; unused for KIND_SAMPLE.
    pub id: i32,
    pub tgid: u32,
    pub tid: u32,
    /// KIND_SAMPLE: the sample's kernel stack id (`NO_STACK` for a user-mode sample).
    pub kernel_stack_id: i32,
    pub flags: u32,
    /// User registers at the stack's innermost frame.
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Bytes of stack that follow.
    pub len: u32,
    pub _pad: u32,
    /// KIND_SAMPLE with --timeline: when it was taken (off-CPU clock); 0 otherwise.
    pub ts: u64,
}

crate::user_pod!(UstackHeader);

#[cfg(test)]
mod tests {
    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<super::UstackHeader>(), 64);
    }
}
