//! Command line → validated `Config`. Bad input is rejected here, naming the fix.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Parser, Subcommand};

use crate::error::UsageError;

#[derive(Debug, Parser)]
#[command(
    name = "rtrace",
    version,
    about = "Attach to a running process, or start a command, and explain where its time goes and what its children do.",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// Trace a running process: all its threads and the children it starts.
    #[arg(short, long, value_name = "PID")]
    pub pid: Option<u32>,
    /// 30s, 2m, 500ms …; default: until Ctrl-C or the target exits.
    #[arg(short, long, value_name = "DURATION")]
    pub duration: Option<String>,
    /// On-CPU sampling frequency.
    #[arg(short = 'F', long, value_name = "HZ", default_value = "99")]
    pub frequency: String,
    /// Report directory; default ./rtrace-<pid>-<YYYYmmdd-HHMMSS>.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Trace only the target process, not its descendants.
    #[arg(long)]
    pub no_children: bool,
    /// No summary on stdout.
    #[arg(short, long)]
    pub quiet: bool,
    /// Log the eBPF side's rare anomalies (a full map, a failed stack copy) on stderr as they
    /// happen, the first of each kind per CPU: the same as RTRACE_LOG=debug.
    #[arg(short, long)]
    pub verbose: bool,
    /// Off-CPU intervals shorter than this are not recorded (filtered in the kernel).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_MIN_BLOCK)]
    pub min_block: String,
    /// Do not trace off-CPU time (sched_switch / sched_waking).
    #[arg(long)]
    pub no_offcpu: bool,
    /// No Go runtime view (goroutines, GC, heap read from Go processes' memory, Go uprobes).
    #[arg(long)]
    pub no_go: bool,
    /// How many of the slowest individual syscalls to report, with stacks and arguments.
    #[arg(long, value_name = "K", default_value_t = 20)]
    pub slow_top: usize,
    /// Also report every syscall slower than this (all of them, not only the top K).
    #[arg(long, value_name = "DURATION")]
    pub slow_threshold: Option<String>,
    /// No syscall latency (no per-syscall table, no slowest calls). The syscall hooks stay,
    /// reading no clock: the child ledger's waits and off-CPU's deferred stacks need them.
    #[arg(long)]
    pub no_syscalls: bool,
    /// A child reaped later than this after exiting is reported (slow_reap).
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub slow_reap: String,
    /// A wait4/waitid blocked longer than this is reported (wait_stall).
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub wait_stall: String,
    /// How user stacks are unwound: auto (CFI for everything but Go executables, which keep
    /// frame pointers), fp (frame pointers everywhere), dwarf (CFI everywhere). Default: auto,
    /// or RTRACE_UNWIND when set.
    #[arg(long, value_name = "auto|fp|dwarf")]
    pub unwind: Option<String>,
    /// Stack bytes copied per user stack for CFI unwinding: 4K to 64K (16384, 16K, 16KiB).
    #[arg(long, value_name = "BYTES", default_value = "16K")]
    pub ustack_bytes: String,
    /// Scheduling in timeline.pftrace: per-thread running/sleep/disk/runqueue slices from
    /// sched_switch, an arrow from each wakeup to the thread it woke, and every on-CPU sample
    /// with its stack. Costs a record per context switch of the traced threads.
    #[arg(long)]
    pub timeline: bool,
    /// --timeline keeps at most this many records (switches and samples); later ones are
    /// counted as dropped in report.json.
    #[arg(long, value_name = "N", requires = "timeline")]
    pub timeline_events: Option<String>,
    /// Push the CPU (and off-CPU) profile to Grafana Pyroscope (or Grafana Alloy's
    /// pyroscope.receive_http) at the end: http://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub pyroscope: Option<String>,
    /// The pushed profiles' service_name (default: the target's comm).
    #[arg(long, value_name = "NAME", requires = "pyroscope")]
    pub service_name: Option<String>,
    /// Benchmarks only: attach empty programs to the hooks of one analysis, to measure the
    /// floor cost of the hooks themselves.
    #[arg(long, hide = true, value_name = "offcpu|syscalls|offcpu-clock|syscalls-clock|sample")]
    pub bench_floor: Option<String>,
    #[command(subcommand)]
    pub subcommand: Option<Sub>,
    /// The command to start with probes already attached.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Re-render a report from a saved capture.json (no root needed).
    Report {
        /// A capture.json written by an earlier session.
        capture: PathBuf,
        /// Report directory; default: the capture's directory.
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Serve pprof endpoints for every process on this host (see `rtrace serve --help`).
    Serve(crate::serve::ServeArgs),
}

/// Default --min-block (crate::options::DEFAULT_MIN_BLOCK, as clap's default text).
pub const DEFAULT_MIN_BLOCK: &str = "10us";

pub use crate::options::{Config, Floor, SessionOptions, SyscallOptions, Target};

/// The longest duration any option takes: beyond it, deadlines and nanosecond counts overflow
/// (and no session is meant to run that long).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// A duration option: `bad` when it does not parse, too long past MAX_DURATION.
fn parse_bounded(option: &'static str, s: &str, bad: impl Fn(String) -> UsageError) -> Result<Duration, UsageError> {
    // humantime fails on values too large for a Duration: that is "too long", not "bad".
    let d = match humantime::parse_duration(s.trim()) {
        Ok(d) => d,
        Err(humantime::DurationError::NumberOverflow) => return Err(UsageError::DurationTooLong(option, s.into())),
        Err(_) => return Err(bad(s.into())),
    };
    if d > MAX_DURATION {
        return Err(UsageError::DurationTooLong(option, s.into()));
    }
    Ok(d)
}

fn parse_min_block(s: &str) -> Result<Duration, UsageError> {
    parse_bounded("--min-block", s, UsageError::BadMinBlock)
}

pub fn parse_duration(s: &str) -> Result<Duration, UsageError> {
    let d = parse_bounded("duration", s, UsageError::BadDuration)?;
    if d.is_zero() {
        return Err(UsageError::ZeroDuration(s.into()));
    }
    Ok(d)
}

/// --unwind; without it RTRACE_UNWIND (the tests' way to pin a mode), else auto.
pub fn parse_unwind(s: Option<&str>) -> Result<crate::unwind::Choice, UsageError> {
    use crate::unwind::Choice;
    let env = std::env::var("RTRACE_UNWIND").ok();
    match s.or(env.as_deref()).map(str::trim) {
        None | Some("") | Some("auto") => Ok(Choice::Auto),
        Some("fp") => Ok(Choice::Fp),
        Some("dwarf") => Ok(Choice::Dwarf),
        Some(other) => Err(UsageError::BadUnwind(other.into())),
    }
}

/// --timeline-events: a plain count (1000 … 10^8), default DEFAULT_TIMELINE_EVENTS.
pub fn parse_timeline_events(s: Option<&str>) -> Result<u64, UsageError> {
    let Some(s) = s else { return Ok(crate::options::DEFAULT_TIMELINE_EVENTS) };
    match s.trim().replace('_', "").parse::<u64>() {
        Ok(n) if (1000..=100_000_000).contains(&n) => Ok(n),
        _ => Err(UsageError::BadTimelineEvents(s.into())),
    }
}

/// --ustack-bytes: a byte count, optionally with K or KiB (×1024), from 4 KiB to 64 KiB.
pub fn parse_ustack_bytes(s: &str) -> Result<u32, UsageError> {
    use tracer_common::ustack::{USTACK_MAX, USTACK_MIN};
    let bad = || UsageError::BadUstackBytes(s.into());
    let t = s.trim();
    let (num, mult) = match t.find(|c: char| !c.is_ascii_digit()) {
        None => (t, 1),
        Some(i) => match &t[i..] {
            "K" | "k" | "KiB" | "kiB" | "Ki" => (&t[..i], 1024),
            "B" => (&t[..i], 1),
            _ => return Err(bad()),
        },
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if !(USTACK_MIN as u64..=USTACK_MAX as u64).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes as u32)
}

pub fn parse_frequency(s: &str) -> Result<u64, UsageError> {
    match s.trim().parse::<u64>() {
        Ok(hz) if (1..=10_000).contains(&hz) => Ok(hz),
        _ => Err(UsageError::BadFrequency(s.into())),
    }
}

/// Finds `name` the way execvp would: as a path if it has a slash, else on $PATH. What stands
/// in the way is named: nothing there, a directory, a file without execute permission.
pub fn resolve_command(name: &str) -> Result<PathBuf, UsageError> {
    use std::os::unix::fs::PermissionsExt;
    let check = |p: &Path| match p.metadata() {
        Err(_) => Err(UsageError::CommandNotFound(name.into())),
        Ok(m) if m.is_dir() => Err(UsageError::CommandIsDirectory(name.into())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(UsageError::CommandNotExecutable(name.into())),
        Ok(_) => Ok(p.to_owned()),
    };
    if name.contains('/') {
        return check(Path::new(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    // The first executable on $PATH wins; else the first reason found (execvp skips non-matches).
    let mut first_err = None;
    for dir in std::env::split_paths(&path) {
        match check(&dir.join(name)) {
            Ok(p) => return Ok(p),
            Err(UsageError::CommandNotFound(_)) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| UsageError::CommandNotFound(name.into())))
}

/// `--pid PID`: a live user process, and not rtrace itself.
fn check_pid(pid: u32) -> Result<u32, UsageError> {
    if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(UsageError::NoSuchPid(pid));
    }
    if pid == std::process::id() {
        return Err(UsageError::OwnPid(pid));
    }
    if crate::procfs::is_kernel_thread(pid) {
        return Err(UsageError::KernelThread { pid, comm: crate::procfs::comm(pid).unwrap_or_default() });
    }
    match crate::procfs::tgid_of(pid) {
        Some(tgid) if tgid == std::process::id() => Err(UsageError::OwnPid(pid)),
        Some(tgid) if tgid != pid => Err(UsageError::ThreadNotProcess { tid: pid, tgid }),
        _ => Ok(pid),
    }
}

/// Parses the command line; a program named without `--` (`rtrace sleep 1`) is answered with
/// the command that works. Other clap errors (and --help, --version) exit as clap does.
pub fn parse_args(argv: Vec<std::ffi::OsString>) -> Result<Args, UsageError> {
    match Args::try_parse_from(&argv) {
        Ok(a) => Ok(a),
        Err(e) => {
            use clap::error::{ContextKind, ContextValue, ErrorKind};
            let arg = match (e.kind(), e.get(ContextKind::InvalidArg).or(e.get(ContextKind::InvalidSubcommand))) {
                (ErrorKind::UnknownArgument | ErrorKind::InvalidSubcommand, Some(ContextValue::String(a))) => a.clone(),
                _ => e.exit(),
            };
            if arg.starts_with('-') {
                e.exit();
            }
            let argv: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
            let at = argv.iter().skip(1).position(|a| *a == arg).map_or(argv.len(), |i| i + 1);
            let mut fixed: Vec<String> = vec!["rtrace".into()];
            fixed.extend(argv[1..at].iter().cloned());
            fixed.push("--".into());
            fixed.extend(argv[at..].iter().cloned());
            Err(UsageError::CommandWithoutDashes { arg, suggestion: fixed.join(" ") })
        }
    }
}

impl Args {
    pub fn into_config(self) -> Result<Config, UsageError> {
        let target = match (self.pid, self.command.is_empty()) {
            (Some(_), false) => return Err(UsageError::PidAndCommand),
            (None, true) => return Err(UsageError::NoTarget),
            (Some(pid), true) => Target::Pid(check_pid(pid)?),
            (None, false) => Target::Command { program: resolve_command(&self.command[0])?, argv: self.command },
        };
        let session = SessionOptions {
            target,
            duration: self.duration.as_deref().map(parse_duration).transpose()?,
            frequency_hz: parse_frequency(&self.frequency)?,
            follow_children: !self.no_children,
            quiet: self.quiet,
            min_block: if self.no_offcpu { None } else { Some(parse_min_block(&self.min_block)?) },
            syscalls: if self.no_syscalls {
                None
            } else {
                if !(1..=tracer_common::syscall::MAX_SLOW_TOP).contains(&self.slow_top) {
                    return Err(UsageError::BadSlowTop(self.slow_top));
                }
                let slow_threshold = self
                    .slow_threshold
                    .as_deref()
                    .map(|t| parse_bounded("--slow-threshold", t, UsageError::BadSlowThreshold))
                    .transpose()?;
                Some(SyscallOptions { slow_top: self.slow_top, slow_threshold })
            },
            slow_reap: parse_bounded("--slow-reap", &self.slow_reap, |s| {
                UsageError::BadDurationOption("--slow-reap", s)
            })?,
            wait_stall: parse_bounded("--wait-stall", &self.wait_stall, |s| {
                UsageError::BadDurationOption("--wait-stall", s)
            })?,
            go: !self.no_go,
            unwind: parse_unwind(self.unwind.as_deref())?,
            ustack_bytes: parse_ustack_bytes(&self.ustack_bytes)?,
            ustack_ring_bytes: None,
            owner: None,
            expect_start: None,
            timeline: match (self.timeline, self.no_offcpu) {
                (false, _) => None,
                (true, true) => return Err(UsageError::TimelineWithoutOffcpu),
                (true, false) => Some(parse_timeline_events(self.timeline_events.as_deref())?),
            },
            bench_floor: match self.bench_floor.as_deref() {
                None => None,
                Some("offcpu") => Some(Floor::Offcpu),
                Some("syscalls") => Some(Floor::Syscalls),
                Some("offcpu-clock") => Some(Floor::OffcpuClock),
                Some("syscalls-clock") => Some(Floor::SyscallsClock),
                Some("sample") => Some(Floor::Sample),
                Some(other) => return Err(UsageError::BadFloor(other.into())),
            },
        };
        let pyroscope = self.pyroscope.as_deref().map(str::parse).transpose().map_err(UsageError::BadPyroscope)?;
        Ok(Config { session, output: self.output, verbose: self.verbose, pyroscope, service_name: self.service_name })
    }
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
