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
    /// Off-CPU intervals shorter than this are not recorded (filtered in the kernel).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_MIN_BLOCK)]
    pub min_block: String,
    /// Do not trace off-CPU time (sched_switch / sched_waking).
    #[arg(long)]
    pub no_offcpu: bool,
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
    /// Benchmarks only: attach empty programs to the hooks of one analysis, to measure the
    /// floor cost of the hooks themselves.
    #[arg(long, hide = true, value_name = "offcpu|syscalls|offcpu-clock|syscalls-clock")]
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
}

/// Default --min-block; see README "Overhead" for the measurement behind it.
pub const DEFAULT_MIN_BLOCK: &str = "10us";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    /// Resolved program path, then argv (argv[0] as the user typed it).
    Command {
        program: PathBuf,
        argv: Vec<String>,
    },
}

#[derive(Clone, Debug)]
pub struct Config {
    pub target: Target,
    pub duration: Option<Duration>,
    pub frequency_hz: u64,
    /// None: decided once the pid is known (rtrace-<pid>-<time>).
    pub output: Option<PathBuf>,
    pub follow_children: bool,
    pub quiet: bool,
    /// None: off-CPU tracing off.
    pub min_block: Option<Duration>,
    /// None: syscalls not traced.
    pub syscalls: Option<SyscallOptions>,
    pub slow_reap: Duration,
    pub wait_stall: Duration,
    pub bench_floor: Option<Floor>,
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
}

impl Floor {
    /// Off-CPU's hooks (the scheduler's and the syscall ones), else the syscall hooks only.
    pub fn offcpu(self) -> bool {
        matches!(self, Floor::Offcpu | Floor::OffcpuClock)
    }
    pub fn clock(self) -> bool {
        matches!(self, Floor::OffcpuClock | Floor::SyscallsClock)
    }
}

fn parse_min_block(s: &str) -> Result<Duration, UsageError> {
    let d = humantime::parse_duration(s.trim()).map_err(|_| UsageError::BadMinBlock(s.into()))?;
    Ok(d)
}

pub fn parse_duration(s: &str) -> Result<Duration, UsageError> {
    let d = humantime::parse_duration(s.trim()).map_err(|_| UsageError::BadDuration(s.into()))?;
    if d.is_zero() {
        return Err(UsageError::BadDuration(s.into()));
    }
    Ok(d)
}

pub fn parse_frequency(s: &str) -> Result<u64, UsageError> {
    match s.trim().parse::<u64>() {
        Ok(hz) if (1..=10_000).contains(&hz) => Ok(hz),
        _ => Err(UsageError::BadFrequency(s.into())),
    }
}

/// Finds `name` the way execvp would: as a path if it has a slash, else on $PATH.
pub fn resolve_command(name: &str) -> Result<PathBuf, UsageError> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if executable(&p) { Ok(p) } else { Err(UsageError::CommandNotFound(name.into())) };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
        .ok_or_else(|| UsageError::CommandNotFound(name.into()))
}

impl Args {
    pub fn into_config(self) -> Result<Config, UsageError> {
        let target = match (self.pid, self.command.is_empty()) {
            (Some(_), false) => return Err(UsageError::PidAndCommand),
            (None, true) => return Err(UsageError::NoTarget),
            (Some(pid), true) => {
                if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(UsageError::NoSuchPid(pid));
                }
                Target::Pid(pid)
            }
            (None, false) => Target::Command { program: resolve_command(&self.command[0])?, argv: self.command },
        };
        Ok(Config {
            target,
            duration: self.duration.as_deref().map(parse_duration).transpose()?,
            frequency_hz: parse_frequency(&self.frequency)?,
            output: self.output,
            follow_children: !self.no_children,
            quiet: self.quiet,
            min_block: if self.no_offcpu { None } else { Some(parse_min_block(&self.min_block)?) },
            syscalls: if self.no_syscalls {
                None
            } else {
                if !(1..=tracer_common::syscall::MAX_SLOW_TOP).contains(&self.slow_top) {
                    return Err(UsageError::BadSlowTop(self.slow_top));
                }
                let slow_threshold = match self.slow_threshold.as_deref() {
                    Some(t) => {
                        Some(humantime::parse_duration(t.trim()).map_err(|_| UsageError::BadSlowThreshold(t.into()))?)
                    }
                    None => None,
                };
                Some(SyscallOptions { slow_top: self.slow_top, slow_threshold })
            },
            slow_reap: humantime::parse_duration(self.slow_reap.trim())
                .map_err(|_| UsageError::BadDurationOption("--slow-reap", self.slow_reap.clone()))?,
            wait_stall: humantime::parse_duration(self.wait_stall.trim())
                .map_err(|_| UsageError::BadDurationOption("--wait-stall", self.wait_stall.clone()))?,
            bench_floor: match self.bench_floor.as_deref() {
                None => None,
                Some("offcpu") => Some(Floor::Offcpu),
                Some("syscalls") => Some(Floor::Syscalls),
                Some("offcpu-clock") => Some(Floor::OffcpuClock),
                Some("syscalls-clock") => Some(Floor::SyscallsClock),
                Some(other) => return Err(UsageError::BadFloor(other.into())),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<Config, UsageError> {
        Args::try_parse_from(std::iter::once("rtrace").chain(args.iter().copied())).unwrap().into_config()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(matches!(parse_duration("soon"), Err(UsageError::BadDuration(_))));
        assert!(matches!(parse_duration("0s"), Err(UsageError::BadDuration(_))));
    }

    #[test]
    fn frequencies() {
        assert_eq!(parse_frequency("99").unwrap(), 99);
        for bad in ["0", "-5", "abc", "20000"] {
            assert!(matches!(parse_frequency(bad), Err(UsageError::BadFrequency(_))), "{bad}");
        }
    }

    #[test]
    fn targets() {
        let me = std::process::id().to_string();
        let c = cfg(&["--pid", &me, "-d", "1s", "-F", "49", "--no-children", "-q"]).unwrap();
        assert_eq!(c.target, Target::Pid(std::process::id()));
        assert_eq!(c.duration, Some(Duration::from_secs(1)));
        assert_eq!(c.frequency_hz, 49);
        assert!(!c.follow_children && c.quiet);
        assert_eq!(c.min_block, Some(Duration::from_micros(10)));
        let c = cfg(&["--pid", &me, "--min-block", "1ms"]).unwrap();
        assert_eq!(c.min_block, Some(Duration::from_millis(1)));
        let c = cfg(&["--pid", &me, "--no-offcpu"]).unwrap();
        assert_eq!(c.min_block, None);
        assert!(matches!(cfg(&["--pid", &me, "--min-block", "x"]), Err(UsageError::BadMinBlock(_))));
        let c = cfg(&["--pid", &me, "--slow-top", "5", "--slow-threshold", "100ms"]).unwrap();
        assert_eq!(c.syscalls, Some(SyscallOptions { slow_top: 5, slow_threshold: Some(Duration::from_millis(100)) }));
        assert_eq!(cfg(&["--pid", &me, "--no-syscalls"]).unwrap().syscalls, None);
        assert!(matches!(cfg(&["--pid", &me, "--slow-top", "0"]), Err(UsageError::BadSlowTop(0))));
        assert!(matches!(cfg(&["--pid", &me, "--slow-top", "1000"]), Err(UsageError::BadSlowTop(1000))));

        let c = cfg(&["--", "sh", "-c", "true"]).unwrap();
        match c.target {
            Target::Command { program, argv } => {
                assert!(program.ends_with("sh"));
                assert_eq!(argv, ["sh", "-c", "true"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(c.follow_children);
    }

    #[test]
    fn bad_targets() {
        assert!(matches!(cfg(&["--pid", "999999999"]), Err(UsageError::NoSuchPid(999999999))));
        assert!(matches!(cfg(&["--", "no-such-command-rtrace"]), Err(UsageError::CommandNotFound(_))));
        assert!(matches!(cfg(&[]), Err(UsageError::NoTarget)));
        let me = std::process::id().to_string();
        assert!(matches!(cfg(&["--pid", &me, "--", "true"]), Err(UsageError::PidAndCommand)));
        assert!(matches!(cfg(&["--pid", &me, "-d", "forever"]), Err(UsageError::BadDuration(_))));
        assert!(matches!(cfg(&["--pid", &me, "-F", "0"]), Err(UsageError::BadFrequency(_))));
    }
}
