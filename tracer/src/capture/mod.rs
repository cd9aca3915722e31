//! `Capture`: everything a session collected, before symbolization and analysis. Raw
//! addresses, counts, process maps taken while the processes were alive, and loss counters.
//! It is serializable, so a session can be saved (`capture.json`) and replayed with
//! `rtrace report <capture.json>`, and so every later stage is testable without root.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod go;
pub mod timeline;
pub mod unwind;
pub use go::GoProcess;
pub use unwind::UnwindStats;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Capture {
    pub target: TargetInfo,
    pub session: SessionInfo,
    pub accounting: Accounting,
    /// On-CPU sample counts by (process, thread, user stack, kernel stack).
    pub cpu_samples: Vec<RawSample>,
    /// Off-CPU time by (thread, stack, state class); threads still blocked at session end are
    /// included with the time so far (`in_flight`).
    #[serde(default)]
    pub offcpu: Vec<RawOff>,
    /// Blocked time by (blocked thread and stack, waker and its stack).
    #[serde(default)]
    pub wakeups: Vec<RawWake>,
    /// Syscall latency by (process, syscall).
    #[serde(default)]
    pub syscalls: Vec<RawSyscall>,
    /// The slowest individual calls (and calls still in progress at the end).
    #[serde(default)]
    pub slow_calls: Vec<RawSlowCall>,
    /// Process lifecycle of the target's descendants (the child-process ledger's input).
    #[serde(default)]
    pub lifecycle: crate::lifecycle::Lifecycle,
    /// Every process that was tracked, by TGID, with what symbolization needs.
    pub processes: BTreeMap<u32, ProcessInfo>,
    /// The Go runtime view of every traced Go process (absent with --no-go).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub go: Vec<GoProcess>,
    /// The vDSO's functions, read from a traced process's `[vdso]` mapping (the kernel's image
    /// has no file to read later; it is the same in every process of one boot).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vdso_symbols: Vec<VdsoSymbol>,
    /// Open handles on mapped files deleted while mapped (`… (deleted)` in /proc/PID/maps),
    /// taken from /proc/PID/map_files while the process was alive; not saved.
    #[serde(skip)]
    pub held_files: HeldFiles,
    /// How user stacks were obtained, by TGID (see unwind.rs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unwind: BTreeMap<u32, UnwindStats>,
    /// --timeline's scheduling records (absent without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<timeline::Timeline>,
}

/// One vDSO function: its file offset in the image (what a `[vdso]` mapping's address turns
/// into), size and name.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct VdsoSymbol {
    pub offset: u64,
    pub size: u64,
    pub name: String,
}

/// Deleted-but-mapped files, by (tgid, path as /proc/PID/maps shows it): an open file and a
/// path that reads it (`/proc/self/fd/N`) for as long as this value lives. Compares equal
/// whatever it holds: it is a way to reach bytes, not part of what was captured.
#[derive(Clone, Debug, Default)]
pub struct HeldFiles {
    pub by_mapping: BTreeMap<(u32, String), (std::sync::Arc<std::fs::File>, String)>,
}

impl PartialEq for HeldFiles {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl HeldFiles {
    /// A path that reads the file `path` mapped in process `tgid`, if it was held.
    pub fn path_of(&self, tgid: u32, path: &str) -> Option<&str> {
        self.by_mapping.get(&(tgid, path.to_owned())).map(|(_, p)| p.as_str())
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum OffState {
    /// S: waiting for an event (read on a pipe, futex, sleep, poll…).
    #[default]
    Sleep,
    /// D: uninterruptible, typically disk I/O.
    Disk,
    /// Runnable but not running: preempted, or woken and waiting for a CPU.
    Runqueue,
}

impl OffState {
    pub fn from_kernel(v: u32) -> Self {
        match v {
            tracer_common::sched::STATE_DISK => OffState::Disk,
            tracer_common::sched::STATE_RUNQUEUE => OffState::Runqueue,
            _ => OffState::Sleep,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            OffState::Sleep => "sleep",
            OffState::Disk => "disk",
            OffState::Runqueue => "runqueue",
        }
    }
}

/// A stack's raw addresses, leaf first, shared: a build's 60,000 off-CPU and wakeup records
/// hold a few thousand distinct stacks (the kernel's stack maps give each once), and one copy
/// per record was a quarter of rtrace's peak memory.
pub type Addrs = std::sync::Arc<[u64]>;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RawOff {
    pub tgid: u32,
    pub tid: u32,
    pub user: Addrs,
    pub kernel: Addrs,
    pub state: OffState,
    pub total_ns: u64,
    pub count: u64,
    pub max_ns: u64,
    /// Still blocked when the session ended (time counted up to the end).
    #[serde(default)]
    pub in_flight: bool,
    #[serde(default, skip_serializing_if = "Leaf::is_empty")]
    pub leaf: Leaf,
    /// Blocked since before attach: time counted from attach; kernel frames by name (from
    /// /proc/PID/task/TID/stack, innermost first) instead of addresses.
    #[serde(default)]
    pub before_attach: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_names: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RawWake {
    pub tgid: u32,
    pub tid: u32,
    pub user: Addrs,
    pub kernel: Addrs,
    pub waker_pid: u32,
    pub waker_tid: u32,
    pub waker_comm: String,
    pub waker_user: Addrs,
    pub waker_kernel: Addrs,
    pub total_ns: u64,
    pub count: u64,
    pub max_ns: u64,
    #[serde(default, skip_serializing_if = "Leaf::is_empty")]
    pub leaf: Leaf,
    #[serde(default, skip_serializing_if = "Leaf::is_empty")]
    pub waker_leaf: Leaf,
}

/// Latency of one syscall in one process, aggregated in the kernel.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RawSyscall {
    pub tgid: u32,
    pub nr: u32,
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// log2 buckets: hist[i] counts calls in [2^i, 2^(i+1)) ns.
    pub hist: Vec<u64>,
}

/// One individually recorded slow call (or one still in progress at the end).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RawSlowCall {
    pub tgid: u32,
    pub tid: u32,
    pub nr: i32,
    /// Since the probes were attached.
    pub start_ns: u64,
    pub duration_ns: u64,
    pub ret: i64,
    pub user: Vec<u64>,
    pub kernel: Vec<u64>,
    #[serde(default, skip_serializing_if = "Leaf::is_empty")]
    pub leaf: Leaf,
    pub args: [u64; 6],
    /// User memory copied at entry (requested timespec, sockaddr, path).
    pub extra: Vec<u8>,
    /// What the fd argument was, read from /proc when the call was seen.
    pub fd_desc: Option<String>,
    /// For waitid(P_PIDFD): the pid behind the pidfd.
    pub pidfd_pid: Option<u32>,
    pub in_flight: bool,
    /// In this call since before attach (duration counted from attach: at least that long).
    #[serde(default)]
    pub before_attach: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_names: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetInfo {
    pub pid: u32,
    pub comm: String,
    pub cmdline: Vec<String>,
    /// `-- COMMAND`: the wait status rtrace (its parent) reaped, when it exited during the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_status: Option<i32>,
    /// `-- COMMAND`: why it never ran (its exec failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_started: Option<String>,
    /// /proc state at attach when it was not a running or sleeping process: 'T' (stopped),
    /// 't' (stopped by a debugger), 'Z' (zombie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_state: Option<char>,
    /// A zombie at attach: the wait status it left (/proc/PID/stat exit_code), and its parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_exit_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_ppid: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    #[default]
    Duration,
    Interrupt,
    TargetExit,
    /// SIGHUP: the terminal went away (a dropped ssh session).
    Hangup,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Clock {
    #[default]
    CpuClock,
    Cycles,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SessionInfo {
    pub duration_ms: u64,
    pub ended_by: EndedBy,
    pub sample_frequency_hz: u64,
    pub clock: Clock,
    /// Start → probes attached, milliseconds (measured, reported by the benchmark).
    pub attach_ms: u64,
    /// Off-CPU intervals shorter than this were not recorded (--min-block); None: off-CPU off.
    #[serde(default)]
    pub min_block_us: Option<u64>,
    /// Syscall tracing: top K slow calls kept; None: syscalls not traced.
    #[serde(default)]
    pub slow_top: Option<usize>,
    /// The machine's architecture (syscall numbers are per architecture).
    #[serde(default)]
    pub arch: String,
    /// Thresholds of the child-process findings (--slow-reap, --wait-stall), ms.
    #[serde(default = "default_threshold_ms")]
    pub slow_reap_ms: u64,
    #[serde(default = "default_threshold_ms")]
    pub wait_stall_ms: u64,
    /// CLOCK_MONOTONIC at the session's start (the 0 of every "since attach" time): places
    /// clock readings of the target's own (Go's `g.waitsince`) on the session's clock. 0:
    /// unknown (older captures).
    #[serde(default)]
    pub start_mono_ns: u64,
    /// CLOCK_REALTIME read together with `start_mono_ns`: places wall-clock readings of the
    /// target's own (the Go runtime's GC `pause_end`) on the session's clock. 0: unknown.
    #[serde(default)]
    pub start_realtime_ns: u64,
    /// Bytes of user stack copied per stack for CFI unwinding (--ustack-bytes); None: older
    /// captures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ustack_bytes: Option<u32>,
}

fn default_threshold_ms() -> u64 {
    1000
}

/// Everything seen and everything lost. `lost_samples` are samples that happened but could not be
/// counted; `stack_errors` are counted samples whose stack could not be taken.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Accounting {
    pub cpu_samples: u64,
    pub lost_samples: u64,
    pub stack_errors: u64,
    pub stack_errors_by_reason: StackErrors,
    /// Off-CPU blocks whose stack (user or kernel) could not be taken; not in `stack_errors`,
    /// which counts on-CPU samples only.
    #[serde(default)]
    pub offcpu_stack_errors: u64,
    pub tracked_map_full: u64,
    pub events_dropped: u64,
    /// Off-CPU intervals recorded, and lost because a map was full.
    #[serde(default)]
    pub offcpu_events: u64,
    #[serde(default)]
    pub offcpu_lost: u64,
    /// Syscalls completed by traced threads; lost: not counted (a map was full); slow calls
    /// sent individually and dropped (ring buffer full).
    #[serde(default)]
    pub syscalls: u64,
    #[serde(default)]
    pub syscalls_lost: u64,
    #[serde(default)]
    pub slow_calls_sent: u64,
    #[serde(default)]
    pub slow_calls_dropped: u64,
    /// Threads whose slot in the kernel's thread table was taken (kept in a spill map).
    #[serde(default)]
    pub threads_spilled: u64,
    /// Program runs the kernel skipped because another BPF program was running on that CPU
    /// (say, a free event from an RCU callback during a syscall hook): lost events, by program.
    #[serde(default)]
    pub bpf_recursion_misses: std::collections::BTreeMap<String, u64>,
    /// Processes that exited before their Go runtime could be read (just exec'd, gone within
    /// ~100 ms): no Go view for them.
    #[serde(default)]
    pub go_unread: u64,
    /// --timeline: records kept, beyond --timeline-events (not kept), and lost in the kernel
    /// (its ring was full).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeline_records: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeline_dropped: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeline_lost: u64,
    /// On-CPU samples and off-CPU stack walks of exiting threads (past exit_mm): they have no
    /// user stack, which is not a loss (not in `stack_errors` or `offcpu_stack_errors`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub samples_exiting: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offcpu_exiting: u64,
    /// Stacks moved out of the kernel's stack tables during the session to make room
    /// (collect/stacks.rs), and ids found standing for two different stacks then (hash
    /// collisions: samples of one may show the other).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stacks_harvested: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stack_id_conflicts: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StackErrors {
    /// The stack map bucket was taken by another stack (hash collision).
    pub user_collision: u64,
    /// No user stack could be walked (e.g. -EFAULT, -ENOMEM).
    pub user_error: u64,
    pub kernel_collision: u64,
    pub kernel_error: u64,
}

impl StackErrors {
    pub fn total(&self) -> u64 {
        self.user_collision + self.user_error + self.kernel_collision + self.kernel_error
    }
}

/// One (tgid, tid, user stack, kernel stack) key with its sample count. Stacks are leaf first,
/// as the kernel gives them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RawSample {
    pub tgid: u32,
    pub tid: u32,
    pub user: Vec<u64>,
    pub kernel: Vec<u64>,
    pub count: u64,
    /// Callers the frame-pointer walk skipped (see tracer_common::unwind).
    #[serde(default, skip_serializing_if = "Leaf::is_empty")]
    pub leaf: Leaf,
}

/// Return addresses found above sp that a frame-pointer walk skipped, innermost first, with the
/// target of the call before each (0: indirect call).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct Leaf {
    pub rets: [u64; 3],
    pub callees: [u64; 3],
}

impl Leaf {
    pub fn is_empty(&self) -> bool {
        self.rets[0] == 0
    }
}

impl From<tracer_common::unwind::LeafFix> for Leaf {
    fn from(f: tracer_common::unwind::LeafFix) -> Self {
        Leaf { rets: f.rets, callees: f.callees }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub cmdline: Vec<String>,
    /// Executable file mappings, as /proc/PID/maps showed them while the process was alive.
    pub maps: Vec<Mapping>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// Path of the mapped file, or a pseudo name such as `[vdso]`.
    pub path: String,
    /// GNU build id, hex, when the file has one.
    pub build_id: Option<String>,
}

impl ProcessInfo {
    /// The mapping containing `addr`.
    pub fn mapping_of(&self, addr: u64) -> Option<&Mapping> {
        self.maps.iter().find(|m| m.start <= addr && addr < m.end)
    }
}
