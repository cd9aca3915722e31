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
    /// Frame-pointer walks skip the caller of a *frameless* leaf function (Go's small leaf
    /// functions and assembly have no frame): its return address sits at [sp], not [bp+8].
    /// For user-mode samples where [sp] holds an address just after a direct call to a
    /// function at or below the sampled ip, that address (`leaf_ret`) and the call's target
    /// (`leaf_callee`) are kept; userspace inserts the caller when the target is the leaf's own
    /// function and the walk did not already include it. 0 otherwise.
    pub leaf_ret: u64,
    pub leaf_callee: u64,
}

crate::user_pod!(CpuKey);

#[cfg(test)]
mod tests {
    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<super::CpuKey>(), 32);
    }
}
