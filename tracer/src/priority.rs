//! rtrace's own scheduling priority: a target with a thousand runnable threads must not starve
//! the tracer that is measuring it.
//!
//! Under CFS/EEVDF a nice-0 rtrace is one thread among the target's runnable ones (and with
//! autogroup, `./threads 1000 60 & rtrace --pid $!` puts both in one group, so nice is weighed
//! against every one of them): attaching, which needs ~0.3 s of CPU, took 20-35 s of wall
//! time, and `-d 3s` was not honoured. Even nice -20 only weighs as much as ~87 nice-0
//! threads: ~15 % of a CPU against 500 runnable ones.
//!
//! So rtrace runs SCHED_FIFO at the lowest real-time priority (1) for the whole session. Why
//! that does not harm the target:
//! - rtrace is one thread that mostly sleeps (a 100 ms tick, ring-buffer wakeups); it takes
//!   the CPU only for work it would do anyway, just without waiting behind the target.
//! - The kernel's RT throttling (sched_rt_runtime_us, 95 % by default) bounds even a runaway
//!   loop to most of *one* CPU; the target keeps the others.
//! - SCHED_RESET_ON_FORK: the child `rtrace -- CMD` starts (forked before this is set anyway)
//!   and any thread rtrace or a library creates start as ordinary SCHED_OTHER threads.
//! - Nothing rtrace waits on is held by the target in a way an RT waiter could spin on: its
//!   /proc reads sleep on the target's locks, letting the holder run.
//!
//! Where RT is refused (no CAP_SYS_NICE, a cgroup with no RT budget), nice -20 is the
//! fallback, and failing that rtrace runs as it is: a warning says the session may be late.
use std::io;

/// The priority rtrace ended up with, for the report's timings and the warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    RealTime,
    Nice,
    Unchanged,
}

fn wanted() -> bool {
    // RTRACE_NO_RT: for the bench's comparison and for users who prefer rtrace to wait its turn.
    std::env::var_os("RTRACE_NO_RT").is_none()
}

fn set_fifo() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain syscall on the calling thread (0) with a valid parameter.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The first thing `main` does for a session, silently: a target with 1000 runnable threads
/// (often in rtrace's own autogroup, started from the same shell) otherwise delays even
/// rtrace's start-up — argument parsing, the privilege checks — by seconds. Refusals are
/// reported by `raise`, after the privilege check.
pub fn raise_early() {
    if wanted() {
        let _ = set_fifo();
    }
}

/// Raises the calling process's priority (see the module doc). Call after the target is
/// spawned and before loading BPF.
pub fn raise() -> Priority {
    if !wanted() {
        return Priority::Unchanged;
    }
    let rt_err = match set_fifo() {
        Ok(()) => return Priority::RealTime,
        Err(e) => e,
    };
    // SAFETY: plain syscall on ourselves.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) } == 0 {
        return Priority::Nice;
    }
    eprintln!(
        "rtrace: warning: cannot raise rtrace's priority ({rt_err}): with a busy target, attach and -d may run late; \
         run as root or grant CAP_SYS_NICE"
    );
    Priority::Unchanged
}

/// Gives a thread rtrace starts during a session (the capture writer) the session's priority:
/// SCHED_RESET_ON_FORK starts every new thread as an ordinary one, which a busy target starves
/// (a 1000-thread target held the report back by seconds).
pub fn raise_thread(p: Priority) {
    match p {
        Priority::RealTime => {
            let _ = set_fifo();
        }
        // SAFETY: plain syscall; on Linux, who = 0 with PRIO_PROCESS is the calling thread.
        Priority::Nice => unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, -20);
        },
        Priority::Unchanged => {}
    }
}

/// The calling thread's priority as `raise` left it (for threads started later).
pub fn current() -> Priority {
    // SAFETY: plain queries of the calling thread.
    let policy = unsafe { libc::sched_getscheduler(0) } & !libc::SCHED_RESET_ON_FORK;
    if policy == libc::SCHED_FIFO {
        return Priority::RealTime;
    }
    // getpriority may return -1 legitimately; -20 is all that matters here.
    if unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } == -20 {
        return Priority::Nice;
    }
    Priority::Unchanged
}
