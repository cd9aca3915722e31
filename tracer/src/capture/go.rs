//! What the Go runtime reader (`goruntime/`) captured of each Go process: plain records read
//! from the target's memory (goroutine snapshots, GC statistics, heap profile buckets) and
//! counts from the Go uprobes. Raw addresses only: symbolization happens later, as for every
//! other stack in the capture.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The Go view of one traced Go process.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GoProcess {
    pub pid: u32,
    /// From `.go.buildinfo`, e.g. `go1.27.3`.
    pub go_version: String,
    /// Why there is no Go view ("Go runtime view unavailable: <reason>"): unknown version,
    /// a validation that failed, the process exited before it could be read. None: available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// Where the struct offsets came from: "dwarf" or "table".
    #[serde(default)]
    pub offsets_from: String,
    /// The binary's own `runtime.waitReasonStrings`: index = `g.waitreason`.
    #[serde(default)]
    pub wait_reasons: Vec<String>,
    /// Every snapshot's summary, in time order (attach, about once a second, end).
    #[serde(default)]
    pub snapshots: Vec<GoSnapshot>,
    /// The last complete snapshot, every live goroutine (the dump and goroutine.pb.gz).
    #[serde(default)]
    pub last: Vec<Goroutine>,
    /// The distinct stacks of `last` (pcs, innermost first); `Goroutine::stack` indexes it.
    #[serde(default)]
    pub stacks: Vec<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<GoGc>,
    #[serde(default)]
    pub heap: GoHeap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<GoChurn>,
    /// Still running when the session ended (its last snapshot is from the end).
    #[serde(default)]
    pub alive_at_end: bool,
    /// Readings that failed during the session (each retried once; the others stand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_errors: Vec<String>,
}

/// One snapshot of the goroutine table, summarized.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GoSnapshot {
    /// Since attach (the session's clock), ns.
    pub at_ns: u64,
    /// How long the read took (rtrace's wall time), µs.
    pub read_us: u64,
    /// Live (not dead) goroutines.
    pub live: u64,
    /// Entries dropped because they changed while being read (a snapshot is not atomic).
    pub dropped: u64,
    /// Live goroutines by creation site (`gopc`, the return address in the creator).
    pub by_site: BTreeMap<u64, u64>,
}

/// One goroutine as the last snapshot read it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Goroutine {
    pub goid: u64,
    /// `atomicstatus` with `_Gscan` masked off (1 runnable, 2 running, 3 syscall, 4 waiting…).
    pub status: u32,
    /// Index into `GoProcess::wait_reasons` (meaningful when waiting).
    pub wait_reason: u32,
    /// `g.waitsince` (CLOCK_MONOTONIC ns; 0 until a GC has seen the goroutine blocked).
    pub wait_since: u64,
    /// Since attach, ns: the first snapshot that saw this goroutine parked where it is now
    /// (same status, wait reason and pc) and every one after too. None: not parked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_since_ns: Option<u64>,
    /// Whether it was already parked there in the first snapshot (the time is "at least").
    #[serde(default)]
    pub parked_before_first: bool,
    pub gopc: u64,
    pub start_pc: u64,
    #[serde(default)]
    pub parent_goid: u64,
    /// The thread it runs on or is in a syscall on (`m.procid`), else 0.
    #[serde(default)]
    pub tid: u32,
    /// Index into `GoProcess::stacks`; None: no stack could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<u32>,
}

/// GC and stop-the-world figures of the session.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GoGc {
    /// `memstats.numgc` at the first and the last read.
    pub numgc_start: u32,
    pub numgc_end: u32,
    /// `memstats.pause_total_ns` at the first and the last read.
    pub pause_total_start_ns: u64,
    pub pause_total_end_ns: u64,
    /// Every GC pause that ended during the session (from the `pause_ns`/`pause_end` rings):
    /// (end, CLOCK_REALTIME ns as the runtime stores it; pause ns).
    #[serde(default)]
    pub pauses: Vec<(u64, u64)>,
    /// Pauses the rings no longer held at a read (more than 256 cycles since the one before).
    #[serde(default)]
    pub pauses_missed: u64,
    /// Heap live and goal over time: (since attach ns, live bytes, goal bytes; goal 0: its
    /// offset is not known for this version without DWARF).
    #[serde(default)]
    pub heap: Vec<(u64, u64, u64)>,
    /// `memstats.gc_cpu_fraction` (or its equivalent) at the end, when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_cpu_fraction: Option<f64>,
    /// Stop-the-world pauses timed by the uprobe, by reason.
    #[serde(default)]
    pub stw: Vec<GoStw>,
    /// Why the stop-the-world uprobe did not run (version, budget, not found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stw_unavailable: Option<String>,
    /// Why the GC statistics could not be read (then only the uprobes' figures are here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GoStw {
    /// From the binary's `runtime.stwReasonStrings`, or `reason N`.
    pub reason: String,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

/// The heap profile the runtime keeps, when the binary links it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GoHeap {
    /// Not read (the view is unavailable, or not attempted).
    #[default]
    None,
    /// `runtime.MemProfile` / `memProfileInternal` is not linked: the runtime keeps no samples.
    NotLinked {
        reason: String,
    },
    /// Linked but could not be read (the reason).
    Unavailable {
        reason: String,
    },
    Profile(HeapProfile),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HeapProfile {
    /// `runtime.MemProfileRate` (the sampling period in bytes).
    pub rate: u64,
    pub buckets: Vec<HeapBucket>,
}

/// One `runtime.bucket` of the memory profile, counts as `MemProfile` would report them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HeapBucket {
    /// Return addresses, innermost first, as the runtime recorded them.
    pub stack: Vec<u64>,
    /// Object size (part of the bucket key).
    pub size: u64,
    pub allocs: u64,
    pub frees: u64,
    pub alloc_bytes: u64,
    pub free_bytes: u64,
}

/// Goroutines created and exited during the session, from the uprobes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GoChurn {
    /// Created, by creation site (the `callerpc` newproc1 got).
    pub created: BTreeMap<u64, u64>,
    /// Exited, by creation site (the exiting g's `gopc`).
    pub exited: BTreeMap<u64, u64>,
    /// Uprobe hits counted and the CPU they cost (estimated), and when the budget stopped
    /// them: since attach, ns.
    pub hits: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detached_at_ns: Option<u64>,
    /// Why the churn uprobes were not attached or were detached (said in the report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
