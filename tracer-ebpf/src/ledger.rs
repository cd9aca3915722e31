//! What the child-process ledger learns from syscall exits: wait4/waitid returning (which
//! child was reaped, how it ended), pidfds handed out (pidfd_open, clone with CLONE_PIDFD), and
//! failed execs. Called from syscalls::sys_exit, in both its modes (with or without latency).
use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_str_bytes};
use tracer_common::{
    process::{EVENT_EXEC_FAILED, EVENT_PIDFD, EVENT_WAIT},
    syscall::Inflight,
};

use crate::{
    process::{new_event, send},
    syscalls::{args_of, g32, NR_EXECVE, NR_EXECVEAT},
};

/// Calls the child-process ledger needs at exit.
#[unsafe(no_mangle)]
static NR_WAIT4: i32 = -1;
#[unsafe(no_mangle)]
static NR_WAITID: i32 = -1;
#[unsafe(no_mangle)]
static NR_CLONE: i32 = -1;
#[unsafe(no_mangle)]
static NR_CLONE3: i32 = -1;
#[unsafe(no_mangle)]
static NR_PIDFD_OPEN: i32 = -1;

const CLONE_PIDFD: u64 = 0x1000;

#[inline(always)]
pub fn is_wait(nr: i32) -> bool {
    nr == g32(&NR_WAIT4) || nr == g32(&NR_WAITID)
}

#[inline(always)]
fn is_exec(nr: i32) -> bool {
    nr == g32(&NR_EXECVE) || nr == g32(&NR_EXECVEAT)
}

/// Wait calls returning, and pidfds handed out, for the child-process ledger.
#[inline(always)]
pub fn lifecycle_exit(inf: &Inflight, ret: i64) {
    let nr = inf.nr;
    if is_wait(nr) {
        wait_event(inf, ret);
    } else if ret > 0 && (nr == g32(&NR_CLONE) || nr == g32(&NR_CLONE3)) {
        clone_pidfd(inf, ret);
    } else if ret < 0 && is_exec(nr) {
        // A successful exec shows as sched_process_exec; a failed one only here (a shell's
        // PATH search, a missing or non-executable program).
        exec_failed(inf, ret);
    } else if ret >= 0 && nr == g32(&NR_PIDFD_OPEN) {
        if let Some(mut e) = new_event(EVENT_PIDFD) {
            e.other = args_of(inf)[0] as u32;
            e.a = ret;
            send(e);
        }
    }
}

#[inline(always)]
pub fn wait_event(inf: &Inflight, ret: i64) {
    let args = args_of(inf);
    let Some(mut e) = new_event(EVENT_WAIT) else { return };
    e.a = inf.nr as i64;
    e.b = ret;
    e.c = args[0] as i64;
    e.d = args[1] as i64;
    e.f = inf.ts as i64;
    if inf.nr == g32(&NR_WAIT4) {
        // wait4(pid, int *wstatus, options, rusage)
        e.e = args[2] as i64;
        if ret > 0 {
            e.other = ret as u32;
            if args[1] != 0 {
                if let Ok(st) = unsafe { bpf_probe_read_user(args[1] as *const i32) } {
                    e.g = st as i64;
                }
            }
        }
    } else {
        // waitid(idtype, id, siginfo_t *info, options, rusage): si_code at 8, si_pid at 16,
        // si_status at 24.
        e.e = args[3] as i64;
        if ret == 0 && args[2] != 0 {
            if let Ok(w) = unsafe { bpf_probe_read_user(args[2] as *const [i32; 8]) } {
                e.g = ((w[2] as i64) << 32) | (w[6] as u32 as i64);
                e.h = w[4] as i64;
                e.other = w[4] as u32;
            }
        }
    }
    send(e);
}

/// A failed exec with its file name, read from the caller's memory (unchanged: the exec
/// failed).
#[inline(always)]
fn exec_failed(inf: &Inflight, ret: i64) {
    use tracer_common::process::ExecFailed;
    let Some(mut entry) = crate::process::reserve_zeroed::<ExecFailed>() else { return };
    // SAFETY: zeroed by reserve_zeroed.
    let e = unsafe { entry.assume_init_mut() };
    e.kind = EVENT_EXEC_FAILED;
    e.tgid = inf.tgid;
    e.ts_ns = unsafe { bpf_ktime_get_ns() };
    e.ret = ret;
    let args = args_of(inf);
    // execve(filename, …); execveat(dirfd, filename, …).
    let path = if inf.nr == g32(&NR_EXECVEAT) { args[1] } else { args[0] };
    let _ = unsafe { bpf_probe_read_user_str_bytes(path as *const u8, &mut e.filename) };
    entry.submit(0);
}

/// clone(CLONE_PIDFD) stores the pidfd through its parent_tid pointer (arg 2 on x86_64);
/// clone3 through clone_args.pidfd (offset 8), flags at offset 0.
#[inline(always)]
fn clone_pidfd(inf: &Inflight, child: i64) {
    let args = args_of(inf);
    let (flags, ptr) = if inf.nr == g32(&NR_CLONE3) {
        match unsafe { bpf_probe_read_user(args[0] as *const [u64; 2]) } {
            Ok(w) => (w[0], w[1]),
            Err(_) => return,
        }
    } else {
        (args[0], args[2])
    };
    if flags & CLONE_PIDFD == 0 || ptr == 0 {
        return;
    }
    let Ok(fd) = (unsafe { bpf_probe_read_user(ptr as *const i32) }) else { return };
    if let Some(mut e) = new_event(EVENT_PIDFD) {
        e.other = child as u32;
        e.a = fd as i64;
        send(e);
    }
}
