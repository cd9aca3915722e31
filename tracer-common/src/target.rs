//! The tracked-TGID set: the target plus (unless `--no-children`) every process it forks.

/// Value of `TRACKED` for the process the user named.
pub const ROOT: u32 = 1;
/// Value of `TRACKED` for a descendant added in the kernel on fork.
pub const DESCENDANT: u32 = 2;
/// Value of `TRACKED` for a descendant found by scanning /proc at attach.
pub const EXISTING_DESCENDANT: u32 = 3;

/// `CLONE_THREAD` from <linux/sched.h>: the new task is a thread, not a child process.
pub const CLONE_THREAD: u64 = 0x0001_0000;
