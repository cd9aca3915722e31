//! How each process's user stacks were obtained and how complete they are (issue #13's
//! accounting): stacks unwound by CFI, walked by frame pointers, and truncated by reason.
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnwindStats {
    /// "dwarf" or "fp": the mode the process was traced in (the last one, after execs).
    pub mode: String,
    /// Stacks unwound with CFI to their root.
    pub complete_cfi: u64,
    /// Stacks walked by frame pointers in the kernel (completeness unknown).
    pub frame_pointer: u64,
    /// Unwinds that needed more bytes than `--ustack-bytes` copied.
    pub truncated_copy: u64,
    /// Unwinds that met an address in no module.
    pub truncated_no_module: u64,
    /// Unwinds framehop could not continue.
    pub truncated_cfi: u64,
    /// Stack copies dropped because the ring buffer was full.
    pub dropped: u64,
    /// 99th percentile of the stack bytes the unwinds needed.
    pub bytes_needed_p99: u32,
    /// Stack copies the kernel maps referenced but userspace never received (their stacks
    /// are empty in the report).
    #[serde(default)]
    pub unresolved: u64,
}

impl UnwindStats {
    pub fn truncated(&self) -> u64 {
        self.truncated_copy + self.truncated_no_module + self.truncated_cfi
    }
}
