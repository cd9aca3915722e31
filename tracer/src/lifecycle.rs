//! Process-lifecycle records of a `Capture`: what the child-process ledger and its findings
//! are derived from. Times are ns since the probes were attached. Collected by `collect`
//! (kernel events + /proc reads), analyzed by `analyze::children`.
use serde::{Deserialize, Serialize};

/// Everything about the target's descendants.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Lifecycle {
    /// The traced root process.
    pub root_pid: u32,
    /// Descendants that existed when rtrace attached (zombies included).
    pub initial: Vec<ProcSnapshot>,
    /// Events in the order they were received (mostly, not strictly, by time).
    pub events: Vec<LifeEvent>,
    /// Wait calls still blocked at session end.
    pub waits_in_flight: Vec<WaitCall>,
    /// Every tracked process as /proc showed it at session end (gone ones absent).
    pub final_procs: Vec<ProcSnapshot>,
    /// Pipe ends held, at session end, by the root and by live tracked processes.
    pub pipes: Vec<PipeEnd>,
    /// Session length, ns (the "now" of the final snapshot).
    pub end_ns: u64,
    /// Lifecycle events lost (ring buffer full).
    pub lost_events: u64,
    /// rtrace itself and the processes between the target and it (sudo), innermost first, when
    /// rtrace runs under the target: never tracked, and the root waiting on them is waiting on
    /// rtrace's own session, not a stall.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtrace_chain: Vec<u32>,
    /// Processes a non-root caller's session stopped following (SessionOptions::owner).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
}

/// A descendant a non-root caller's session does not follow: found at attach running with
/// other credentials, or exec'ing a program that runs with them (setuid, file capabilities,
/// not readable by the caller). Nothing of it is collected from then on, nor of what it starts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub pid: u32,
    /// Session ns of the exec (0: at attach).
    pub ts_ns: u64,
    /// The exec'd file, or the process's comm at attach.
    pub program: String,
    /// Its effective uid (None: not readable).
    pub euid: Option<u32>,
    /// "runs as another user or group", "has capabilities", "is not dumpable".
    pub reasons: Vec<String>,
}

impl Skipped {
    /// "pid 812 (/usr/bin/passwd) not traced after its exec at 0.41 s: runs as another user
    /// or group (euid 0)".
    pub fn line(&self) -> String {
        let when = if self.ts_ns == 0 {
            "found at attach".to_owned()
        } else {
            format!("not traced after its exec at {:.2} s", self.ts_ns as f64 / 1e9)
        };
        let euid = self.euid.map(|u| format!(" (euid {u})")).unwrap_or_default();
        format!("pid {} ({}) {when}: {}{euid}", self.pid, self.program, self.reasons.join(", "))
    }

    /// The reasons of a SKIP_* bit set (tracer_common::process).
    pub fn reasons_of(bits: i64) -> Vec<String> {
        use tracer_common::process::{SKIP_CAPS, SKIP_CREDS, SKIP_DUMPABLE};
        let all = [
            (SKIP_CREDS, "runs as another user or group"),
            (SKIP_CAPS, "has capabilities"),
            (SKIP_DUMPABLE, "is not dumpable"),
        ];
        all.iter().filter(|(b, _)| bits & b != 0).map(|(_, r)| r.to_string()).collect()
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcSnapshot {
    pub pid: u32,
    pub ppid: u32,
    /// /proc/PID/stat state: R, S, D, Z, T …
    pub state: char,
    pub comm: String,
    pub cmdline: Vec<String>,
    /// /proc/PID/stat exit_code (meaningful for zombies): the raw wait status.
    pub exit_status: Option<i32>,
    /// For live processes at session end: the syscall they are in (from /proc/PID/syscall), if
    /// blocked in one.
    pub syscall: Option<String>,
}

/// How a process ended, decoded from a wait status (or siginfo).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitInfo {
    Exited { code: i32 },
    Killed { signal: i32, core_dumped: bool },
}

impl ExitInfo {
    /// From a wait4 status word.
    pub fn from_wait_status(status: i32) -> Option<Self> {
        let sig = status & 0x7f;
        if sig == 0 {
            Some(ExitInfo::Exited { code: (status >> 8) & 0xff })
        } else if sig != 0x7f {
            Some(ExitInfo::Killed { signal: sig, core_dumped: status & 0x80 != 0 })
        } else {
            None // stopped, not ended
        }
    }

    /// From waitid's siginfo: si_code CLD_EXITED (1) / CLD_KILLED (2) / CLD_DUMPED (3).
    pub fn from_siginfo(code: i32, status: i32) -> Option<Self> {
        match code {
            1 => Some(ExitInfo::Exited { code: status }),
            2 => Some(ExitInfo::Killed { signal: status, core_dumped: false }),
            3 => Some(ExitInfo::Killed { signal: status, core_dumped: true }),
            _ => None,
        }
    }
}

/// What a wait call waits for.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WaitTarget {
    AnyChild,
    Pid {
        pid: u32,
    },
    ProcessGroup {
        pgid: u32,
    },
    /// waitid(P_PIDFD, fd): `pid` when the pidfd could be mapped.
    Pidfd {
        fd: i32,
        pid: Option<u32>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WaitCall {
    /// Waiting process and thread.
    pub pid: u32,
    pub tid: u32,
    /// "wait4" or "waitid".
    pub syscall: String,
    pub target: WaitTarget,
    /// Raw options (WNOHANG = 1, WNOWAIT = 0x01000000 …).
    pub options: u64,
    pub start_ns: u64,
    /// None while still in flight.
    pub end_ns: Option<u64>,
    pub ret: Option<i64>,
    /// The child the call returned (reaped unless WNOWAIT).
    pub reaped_pid: Option<u32>,
    pub exit: Option<ExitInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LifeEvent {
    /// A process (not a thread) was created by a tracked process.
    Fork {
        ts_ns: u64,
        pid: u32,
        parent_pid: u32,
        parent_tid: u32,
        parent_comm: String,
    },
    Exec {
        ts_ns: u64,
        pid: u32,
        filename: String,
        argv: Vec<String>,
    },
    /// An execve/execveat of a tracked process failed: `error` is the errno.
    ExecFailed {
        ts_ns: u64,
        pid: u32,
        filename: String,
        error: i32,
    },
    /// The whole process exited (last thread). `status`: the wait status it leaves for its
    /// parent (task_struct.exit_code), when the kernel's BTF gave its offset.
    Exit {
        ts_ns: u64,
        pid: u32,
        comm: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<i32>,
    },
    /// A signal was generated (kill, tgkill, pidfd_send_signal, the kernel …) by `sender` for
    /// `target`, where one of them is tracked. `result`: 0 delivered, 1 ignored, 2 already
    /// pending, 3 overflow, 4 lose info (signal:signal_generate).
    Signal {
        ts_ns: u64,
        sender_pid: u32,
        sender_tid: u32,
        sender_comm: String,
        target_pid: u32,
        target_comm: String,
        signal: i32,
        code: i32,
        result: i32,
    },
    /// A tracked thread took a signal (signal:signal_deliver).
    SignalDeliver {
        ts_ns: u64,
        pid: u32,
        tid: u32,
        signal: i32,
    },
    /// A wait4/waitid call of a tracked thread returned.
    Wait(WaitCall),
    /// A tracked process got a pidfd for `target_pid` (pidfd_open, or clone with CLONE_PIDFD).
    Pidfd {
        ts_ns: u64,
        pid: u32,
        fd: i32,
        target_pid: u32,
    },
    /// The kernel freed the task (sched_process_free; lags the real reap by an RCU grace period).
    Free {
        ts_ns: u64,
        pid: u32,
    },
}

/// One pipe end in a process's fd table (from /proc/PID/fd and fdinfo).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PipeEnd {
    pub pid: u32,
    pub comm: String,
    pub fd: i32,
    pub inode: u64,
    pub write_end: bool,
    /// When this end was last seen there (ns since attach). A grandchild holding the root's
    /// pipe only matters if it still held it after the child exited: a compiler's cc1 holds
    /// gcc's stderr while gcc runs, as it should. None in captures from before it was kept.
    #[serde(default)]
    pub seen_at_ns: Option<u64>,
}

pub const SIGCHLD: i32 = 17;
pub const SIGKILL: i32 = 9;

/// Names of the standard signals 0..=31 (kernel numbering, the same on x86_64 and aarch64).
pub fn standard_signal_name(sig: i32) -> Option<&'static str> {
    const NAMES: [&str; 32] = [
        "0",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(sig).ok().and_then(|i| NAMES.get(i)).copied()
}

/// Signal names for reports; real-time signals as "SIGRTn" (n from the kernel's SIGRTMIN, 32).
pub fn signal_name(sig: i32) -> String {
    match (sig, standard_signal_name(sig)) {
        (1..=31, Some(n)) => n.to_owned(),
        (32..=64, _) => format!("SIGRT{}", sig - 32),
        _ => format!("signal {sig}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decoding() {
        assert_eq!(ExitInfo::from_wait_status(0), Some(ExitInfo::Exited { code: 0 }));
        assert_eq!(ExitInfo::from_wait_status(3 << 8), Some(ExitInfo::Exited { code: 3 }));
        assert_eq!(ExitInfo::from_wait_status(9), Some(ExitInfo::Killed { signal: 9, core_dumped: false }));
        assert_eq!(ExitInfo::from_wait_status(0x80 | 11), Some(ExitInfo::Killed { signal: 11, core_dumped: true }));
        assert_eq!(ExitInfo::from_wait_status(0x137f), None);
        assert_eq!(ExitInfo::from_siginfo(2, 9), Some(ExitInfo::Killed { signal: 9, core_dumped: false }));
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(17), "SIGCHLD");
        assert_eq!(signal_name(34), "SIGRT2");
    }
}
