//! On-CPU sampling: the key of the in-kernel sample counts map.

/// No stack: the helper returned an error (counted in `counters`), or a kernel stack was not
/// wanted because the sample was taken in user mode.
pub const NO_STACK: i32 = -1;

/// Key of `CPU_COUNTS`; the value is a `u64` sample count.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuKey {
    pub tgid: u32,
    pub tid: u32,
    /// Id in `USER_STACKS`, or `NO_STACK`.
    pub user_stack_id: i32,
    /// Id in `KERNEL_STACKS`, or `NO_STACK`.
    pub kernel_stack_id: i32,
    /// Callers a frame-pointer walk skipped (see `unwind`); zero for kernel-mode samples.
    pub leaf: crate::unwind::LeafFix,
}

crate::user_pod!(CpuKey);

#[cfg(test)]
mod tests {
    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<super::CpuKey>(), 64);
    }
}
