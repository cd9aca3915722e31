//! The Go uprobes' shared records (tracer-ebpf's go.rs, tracer's loader/go.rs): the settings
//! of each traced Go process, the keys and values of the churn and stop-the-world maps.

/// Most (process, creation site) pairs counted per map; beyond it a hit is counted as lost.
pub const MAX_GO_SITES: u32 = 16384;
/// Most Go processes with uprobes at once.
pub const MAX_GO_PROCS: u32 = 1024;
/// `GoCfg::reason_off` when the stop reason cannot be read (its offset is unknown).
pub const NO_REASON: u32 = u32::MAX;

/// `GO_CFG` value, key: tgid. Set by the loader before it attaches a process's uprobes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoCfg {
    /// `runtime.g.gopc` offset.
    pub gopc_off: u32,
    /// Go ≤ 1.21: `runtime.m.preemptoff` (the stop reason, a string) offset; NO_REASON if
    /// unknown. Unused from 1.22 (the reason is an argument of startTheWorldWithSema).
    pub reason_off: u32,
}

/// `GO_CREATED` / `GO_EXITED` key: goroutines of process `tgid` created at `gopc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GoSiteKey {
    pub tgid: u32,
    pub _pad: u32,
    pub gopc: u64,
}

/// `GO_STW` key. Go 1.22+: `reason` is the `stwReason` number and `len` 0; before: `reason` is
/// the address of the `m.preemptoff` string and `len` its length (0 and 0: not readable).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StwKey {
    pub tgid: u32,
    pub len: u32,
    pub reason: u64,
}

/// `GO_STW` value: stops of one reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StwVal {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

/// `GO_STW_OPEN` value (key: tgid): a stop-the-world begun and not yet ended (a RET of
/// startTheWorldWithSema), with its reason as in `StwKey`. The runtime holds `worldsema`
/// across the stop, so a process has at most one open.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StwOpen {
    pub start_ns: u64,
    pub reason: u64,
    pub len: u32,
    pub _pad: u32,
}

/// `GO_HITS` value, key: tgid. `churn`: hits of the newproc1 and gdestroy/goexit0 probes (what
/// the budget is checked on); `stw`: hits of the stop-the-world probes; `lost`: hits not
/// counted (a map full, a g unreadable).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoHits {
    pub churn: u64,
    pub stw: u64,
    pub lost: u64,
}

crate::user_pod!(GoCfg, GoSiteKey, StwKey, StwVal, StwOpen, GoHits);

#[cfg(test)]
mod tests {
    use core::mem::size_of;
    #[test]
    fn layout() {
        assert_eq!(size_of::<super::GoCfg>(), 8);
        assert_eq!(size_of::<super::GoSiteKey>(), 16);
        assert_eq!(size_of::<super::StwKey>(), 16);
        assert_eq!(size_of::<super::StwVal>(), 24);
        assert_eq!(size_of::<super::StwOpen>(), 24);
        assert_eq!(size_of::<super::GoHits>(), 24);
    }
}
