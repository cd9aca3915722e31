//! Process lifecycle events sent through the `EVENTS` ring buffer (rare: fork/exec/exit).

pub const EVENT_FORK: u32 = 1;
pub const EVENT_EXEC: u32 = 2;
pub const EVENT_EXIT: u32 = 3;
/// A `syscall::SlowCall` record (a different struct; dispatch on this first field).
pub const EVENT_SLOW_CALL: u32 = 4;
/// signal:signal_generate where the sender or the target is tracked.
pub const EVENT_SIGNAL: u32 = 5;
/// signal:signal_deliver to a tracked thread.
pub const EVENT_SIGNAL_DELIVER: u32 = 6;
/// A wait4/waitid call of a tracked thread returned.
pub const EVENT_WAIT: u32 = 7;
/// A tracked process got a pidfd (pidfd_open, clone/clone3 with CLONE_PIDFD).
pub const EVENT_PIDFD: u32 = 8;
/// sched:sched_process_free of a tracked process.
pub const EVENT_FREE: u32 = 9;
/// An `ExecArgs` record (a different struct): the argv of a tracked process that just exec'd,
/// sent right before its EXEC event.
pub const EVENT_EXEC_ARGS: u32 = 10;
/// An `ExecFailed` record (a different struct): a tracked process's execve/execveat failed.
pub const EVENT_EXEC_FAILED: u32 = 11;
/// A tracked process left the tracked set at exec: its new credentials are not the session
/// owner's (a non-root caller's session; tracer-ebpf creds.rs). `a`: SKIP_* bits, `b`: its
/// effective uid, `text`: the exec'd file.
pub const EVENT_SKIPPED: u32 = 12;
pub const SKIP_CREDS: i64 = 1;
pub const SKIP_CAPS: i64 = 2;
pub const SKIP_DUMPABLE: i64 = 4;

pub const COMM_LEN: usize = 16;

pub const TEXT_LEN: usize = 64;

/// One lifecycle event. Field meaning by kind:
/// - FORK: tgid = child, tid = forking thread, other = parent tgid, a = clone flags, comm = parent's.
/// - EXEC: tgid/tid = the process, text = filename, comm = new comm.
/// - EXIT: tgid = the process, tid = its last thread, comm, a = wait status, b = 1 when `a` is known.
/// - SIGNAL: tgid/tid/comm = sender, other = target pid, a = signal, b = si_code, c = result,
///   text = target comm.
/// - SIGNAL_DELIVER: tgid/tid = receiver, a = signal, b = si_code.
/// - WAIT: tgid/tid = waiter, a = syscall nr, b = return value, c = arg0, d = arg1, e = options,
///   f = start time, g = wait4 status (or waitid si_code << 32 | si_status), h = waitid si_pid.
/// - PIDFD: tgid/tid = opener, other = pid the fd refers to, a = fd.
/// - FREE: tgid = freed process.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LifeEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub other: u32,
    /// bpf_ktime_get_ns() (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    pub a: i64,
    pub b: i64,
    pub c: i64,
    pub d: i64,
    pub e: i64,
    pub f: i64,
    pub g: i64,
    pub h: i64,
    pub comm: [u8; COMM_LEN],
    pub text: [u8; TEXT_LEN],
}

crate::user_pod!(LifeEvent);

/// argv bytes kept per exec (longer ones are cut, and say so).
pub const ARGS_LEN: usize = 512;
/// argv is copied in reads of this many bytes, none of which goes past its end: the top of a
/// new process's stack may follow it closely.
pub const ARGS_CHUNK: usize = 32;

/// The argv of a process as execve left it in the new image (mm->arg_start..arg_end): read in
/// the kernel at exec, because a short-lived child is gone before userspace could read
/// /proc/PID/cmdline.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecArgs {
    pub kind: u32,
    pub tgid: u32,
    /// Bytes of argv (NUL-separated, as in /proc/PID/cmdline), at most ARGS_LEN.
    pub len: u32,
    /// 1 when argv was longer than ARGS_LEN (cut there).
    pub truncated: u32,
    /// 1 when all `len` bytes were read: into `buf[..len]`, or for `len` < ARGS_CHUNK into
    /// the end of `tail` (which holds the ARGS_CHUNK bytes ending where argv ends).
    pub ok: u32,
    pub _pad: u32,
    pub buf: [u8; ARGS_LEN],
    pub tail: [u8; ARGS_CHUNK],
}

crate::user_pod!(ExecArgs);

/// Bytes of a failed exec's file name kept (PATH entries can be long).
pub const EXEC_PATH_LEN: usize = 256;

/// A failed execve/execveat, read at the call's exit (the file name is still in the caller's
/// memory: the image did not change).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecFailed {
    pub kind: u32,
    pub tgid: u32,
    pub ts_ns: u64,
    /// The return value: -errno.
    pub ret: i64,
    pub filename: [u8; EXEC_PATH_LEN],
}

crate::user_pod!(ExecFailed);
