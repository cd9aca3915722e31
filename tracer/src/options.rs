//! What one tracing session traces, as a plain type: built by the CLI (cli.rs, from flags)
//! and by `rtrace serve` (serve/sessions.rs, from a request), and read by the session, the
//! loader and collect — none of which knows where the options came from. `Config` adds what
//! only the one-shot CLI has: the report directory and debug logging.
use std::{path::PathBuf, time::Duration};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    /// Resolved program path, then argv (argv[0] as the user typed it).
    Command {
        program: PathBuf,
        argv: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallOptions {
    pub slow_top: usize,
    pub slow_threshold: Option<Duration>,
}

/// Benchmark floor modes: empty programs on one analysis's hooks, nothing else; the -clock
/// variants read the clock once per run (the least any latency measurement must do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Floor {
    Offcpu,
    Syscalls,
    OffcpuClock,
    SyscallsClock,
    /// Only the sampling perf events, with an empty program.
    Sample,
}

impl Floor {
    /// Off-CPU's hooks (the scheduler's and the syscall ones), else the syscall hooks only.
    pub fn sample(self) -> bool {
        self == Floor::Sample
    }
    pub fn offcpu(self) -> bool {
        matches!(self, Floor::Offcpu | Floor::OffcpuClock)
    }
    pub fn clock(self) -> bool {
        matches!(self, Floor::OffcpuClock | Floor::SyscallsClock)
    }
}

/// What the command line asks for: one session's options, and where its report goes. Built by
/// cli.rs, run by session::trace (which imports no CLI type).
#[derive(Clone, Debug)]
pub struct Config {
    pub session: SessionOptions,
    /// None: decided once the pid is known (rtrace-<pid>-<time>).
    pub output: Option<PathBuf>,
    /// Debug logging of the eBPF side's anomalies (-v; RTRACE_LOG says more precisely).
    pub verbose: bool,
    /// Where the profiles are pushed at the end (--pyroscope), and under which service_name.
    pub pyroscope: Option<crate::push::Endpoint>,
    pub service_name: Option<String>,
}

/// One session's options. The defaults (`for_pid`) are the CLI's (cli_tests checks that the two
/// agree).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    pub target: Target,
    /// None: until interrupted or the target exits.
    pub duration: Option<Duration>,
    pub frequency_hz: u64,
    pub follow_children: bool,
    /// No countdown on the terminal while tracing (and, for the CLI, no summary on stdout).
    pub quiet: bool,
    /// None: off-CPU tracing off.
    pub min_block: Option<Duration>,
    /// None: syscalls not traced.
    pub syscalls: Option<SyscallOptions>,
    pub slow_reap: Duration,
    pub wait_stall: Duration,
    /// The Go runtime view of Go processes (off with --no-go).
    pub go: bool,
    pub bench_floor: Option<Floor>,
    /// How user stacks are unwound (see crate::unwind).
    pub unwind: crate::unwind::Choice,
    /// Stack bytes copied per user stack, within tracer_common::ustack::USTACK_MIN..=USTACK_MAX.
    pub ustack_bytes: u32,
    /// The stack-copy ring's size (a power of two ≥ 1 MiB); None: USTACKS_RING_BYTES. Watch
    /// sessions, sampling at 19 Hz, take a smaller one (its pages are kernel memory, mapped
    /// twice into rtrace).
    pub ustack_ring_bytes: Option<u32>,
    /// --timeline: scheduling records kept at most (the rest are counted as dropped); None:
    /// no scheduling in timeline.pftrace.
    pub timeline: Option<u64>,
    /// A non-root caller's session (rtrace serve --allow-group): (uid, gid). Descendants found
    /// at attach and those that exec are followed only while they run with exactly these
    /// credentials, no capability, and dumpable; the others are skipped and reported.
    pub owner: Option<(u32, u32)>,
    /// The target's start time as authorized (`rtrace serve`): once it is tracked, a pid
    /// whose process started at another time is another process (the one authorized exited
    /// and its pid was reused), and the session ends with "no such pid".
    pub expect_start: Option<u64>,
}

pub const DEFAULT_FREQUENCY_HZ: u64 = 99;
/// Default --min-block; see README "Overhead" for the measurement behind it.
pub const DEFAULT_MIN_BLOCK: Duration = Duration::from_micros(10);
pub const DEFAULT_SLOW_TOP: usize = 20;
pub const DEFAULT_SLOW_REAP: Duration = Duration::from_secs(1);
/// Default --timeline-events: ~100 MB of capture at most, ~30 s of a thread switching
/// 60k times a second.
pub const DEFAULT_TIMELINE_EVENTS: u64 = 2_000_000;
pub const DEFAULT_WAIT_STALL: Duration = Duration::from_secs(1);

impl SessionOptions {
    /// A session on `pid` with every default: what `rtrace --pid PID [-d D]` traces.
    pub fn for_pid(pid: u32, duration: Option<Duration>) -> Self {
        SessionOptions {
            target: Target::Pid(pid),
            duration,
            frequency_hz: DEFAULT_FREQUENCY_HZ,
            follow_children: true,
            quiet: false,
            min_block: Some(DEFAULT_MIN_BLOCK),
            syscalls: Some(SyscallOptions { slow_top: DEFAULT_SLOW_TOP, slow_threshold: None }),
            slow_reap: DEFAULT_SLOW_REAP,
            wait_stall: DEFAULT_WAIT_STALL,
            go: true,
            bench_floor: None,
            unwind: crate::unwind::Choice::Auto,
            ustack_bytes: tracer_common::ustack::USTACK_DEFAULT,
            ustack_ring_bytes: None,
            timeline: None,
            owner: None,
            expect_start: None,
        }
    }
}
