//! Stack tables. The kernel's BPF_MAP_TYPE_STACK_TRACE drops a stack whose hash bucket holds a
//! different stack (-EEXIST): with a few hundred distinct stacks in 32,768 buckets that loses
//! about one stack per session (the birthday problem) — measured here, and it can be the one
//! that matters. So stacks are taken with bpf_get_stack and stored in an ordinary hash map
//! keyed by a 31-bit hash of their frames: a hash map chains colliding keys, and two different
//! stacks sharing 31 bits among thousands is about one chance in a million per session.

/// Deepest stack kept (the kernel's own limit, perf_event_max_stack, defaults to 127).
pub const MAX_DEPTH: usize = 127;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackRec {
    /// Frames used in `ips` (innermost first).
    pub len: u32,
    pub _pad: u32,
    pub ips: [u64; MAX_DEPTH],
}

crate::user_pod!(StackRec);

#[cfg(test)]
mod tests {
    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<super::StackRec>(), 8 + 8 * super::MAX_DEPTH);
    }
}
