//! User-facing errors. Each names the object and the fix; all exit with code 2, so scripts can
//! tell bad input (2) from a runtime failure (1).
use std::path::PathBuf;

use thiserror::Error;

/// The capabilities README documents (see privileges.rs), as `setcap` spells them.
pub const SETCAP: &str = "cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_ptrace,cap_syslog,cap_sys_nice+ep";

#[derive(Debug, Error)]
pub enum UsageError {
    #[error("pid {0} not found (it may have exited); check it with `ps -p {0}`")]
    NoSuchPid(u32),
    #[error("rtrace needs root or CAP_BPF+CAP_PERFMON ({missing} missing); run it with sudo, or give the binary the capabilities README lists: sudo setcap {} $(which rtrace)", SETCAP)]
    NotPrivileged { missing: String },
    #[error("tracefs is mounted at /sys/kernel/tracing but this user cannot read it (mode 0700){}: rtrace needs CAP_DAC_READ_SEARCH too; run it with sudo, or sudo setcap {} $(which rtrace)", missing.as_ref().map(|m| format!(", {m} missing")).unwrap_or_default(), SETCAP)]
    TracefsNotReadable { missing: Option<String> },
    #[error("pid {pid} belongs to another user (or is not dumpable), and reading its /proc/{pid}/mem, syscall and maps needs CAP_SYS_PTRACE{}; run rtrace with sudo, or sudo setcap {} $(which rtrace)", missing.as_ref().map(|m| format!(" ({m} missing)")).unwrap_or_default(), SETCAP)]
    TargetNotReadable { pid: u32, missing: Option<String> },
    #[error("bad duration {0:?}: use a number with a unit, e.g. 30s, 2m, 500ms")]
    BadDuration(String),
    #[error(
        "bad duration {0:?}: a session must last longer than zero; omit -d to trace until Ctrl-C or the target exits"
    )]
    ZeroDuration(String),
    #[error("bad {0} {1:?}: longer than a year, the most rtrace accepts")]
    DurationTooLong(&'static str, String),
    #[error("bad frequency {0:?}: use a whole number of Hz between 1 and 10000, e.g. -F 99")]
    BadFrequency(String),
    #[error("bad --min-block {0:?}: use a duration with a unit, e.g. 10us, 1ms")]
    BadMinBlock(String),
    #[error("bad {0} {1:?}: use a duration with a unit, e.g. 500ms, 2s")]
    BadDurationOption(&'static str, String),
    #[error("bad --slow-top {0}: use a number from 1 to 64")]
    BadSlowTop(usize),
    #[error("bad --slow-threshold {0:?}: use a duration with a unit, e.g. 100ms, 1s")]
    BadSlowThreshold(String),
    #[error("bad --unwind {0:?}: use auto (CFI except for Go), fp (frame pointers) or dwarf (CFI)")]
    BadUnwind(String),
    #[error("bad --ustack-bytes {0:?}: use a size from 4K to 64K (4096 to 65536 bytes), e.g. 16384, 16K or 16KiB")]
    BadUstackBytes(String),
    #[error("bad --bench-floor {0:?}: use offcpu, syscalls, offcpu-clock, syscalls-clock or sample")]
    BadFloor(String),
    #[error("--timeline draws scheduling from the off-CPU hooks: drop --no-offcpu, or drop --timeline")]
    TimelineWithoutOffcpu,
    #[error("bad --timeline-events {0:?}: a count of records from 1000 to 100000000 (default 2000000)")]
    BadTimelineEvents(String),
    #[error("{0}")]
    BadPyroscope(String),
    #[error("output directory {path} is not writable ({reason}); pick another with -o DIR")]
    OutputNotWritable { path: PathBuf, reason: String },
    #[error("output directory {path} is not an rtrace report (it holds {entry:?}); give a new or empty directory with -o DIR")]
    OutputNotReport { path: PathBuf, entry: String },
    #[error("command {0:?} not found; check the name or give its full path")]
    CommandNotFound(String),
    #[error("command {0:?} is a directory, not a program; give the path of the program to run")]
    CommandIsDirectory(String),
    #[error("command {0:?} is not executable; `chmod +x` it, or run it through its interpreter (rtrace -- sh {0})")]
    CommandNotExecutable(String),
    #[error("unexpected argument {arg:?}: to start a command, put it after `--`: {suggestion}")]
    CommandWithoutDashes { arg: String, suggestion: String },
    #[error("pid {0} is rtrace itself; give the pid of the process to trace")]
    OwnPid(u32),
    #[error("pid {pid} ({comm}) is a kernel thread: rtrace traces user processes; give a program's pid (see `ps -e`)")]
    KernelThread { pid: u32, comm: String },
    #[error("pid {tid} is a thread of process {tgid}; trace the process: --pid {tgid}")]
    ThreadNotProcess { tid: u32, tgid: u32 },
    #[error("the kernel has no BTF (/sys/kernel/btf/vmlinux missing); rtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf,
    #[error(
        "tracefs is not available at /sys/kernel/tracing; mount it with `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    NoTracefs,
    #[error("give either --pid PID or -- COMMAND, not both")]
    PidAndCommand,
    #[error("nothing to trace: give --pid PID or -- COMMAND [ARGS]")]
    NoTarget,
    #[error("the command never ran: {0}")]
    NeverStarted(String),
    #[error("capture file {path} could not be read: {reason}")]
    BadCapture { path: PathBuf, reason: String },
}

impl UsageError {
    pub const EXIT_CODE: u8 = 2;
}
