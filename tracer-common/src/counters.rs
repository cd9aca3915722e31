//! Indexes into the per-CPU `COUNTERS` array: every event the programs saw or lost.

/// On-CPU samples taken of tracked threads.
pub const CPU_SAMPLES: u32 = 0;
/// User stack could not be stored: the stack table was full.
pub const USER_STACK_COLLISION: u32 = 1;
/// User stack could not be taken: any other error (-EFAULT: no user context, -ENOMEM …).
pub const USER_STACK_ERROR: u32 = 2;
/// Kernel stack could not be stored: the stack table was full.
pub const KERNEL_STACK_COLLISION: u32 = 3;
/// Kernel stack error other than the normal -EFAULT of a sample taken in user mode.
pub const KERNEL_STACK_ERROR: u32 = 4;
/// A sample could not be counted because the CPU counts map was full.
pub const CPU_KEYS_FULL: u32 = 5;
/// A descendant could not be tracked because the tracked-TGID map was full.
pub const TRACKED_FULL: u32 = 6;
/// Lifecycle events dropped because the ring buffer was full.
pub const EVENTS_DROPPED: u32 = 7;
/// Off-CPU intervals recorded (at or above --min-block).
pub const OFF_EVENTS: u32 = 8;
/// Off-CPU intervals that could not be recorded: a map was full.
pub const OFF_LOST: u32 = 9;
/// Tracked threads left without per-thread state (their thread-table slot taken and the spill
/// map full): their syscalls are not measured.
pub const SYSCALL_INFLIGHT_FULL: u32 = 10;
/// Syscall completions not counted because the stats map was full.
pub const SYSCALL_STATS_FULL: u32 = 11;
/// Slow calls that could not be sent (ring buffer full).
pub const SLOW_CALLS_DROPPED: u32 = 12;
/// Slow calls sent to userspace.
pub const SLOW_CALLS_SENT: u32 = 13;
/// Threads put in the thread table's spill map (their slot was taken).
pub const THREADS_SPILLED: u32 = 14;
/// Off-CPU stack walks (a blocked thread's user or kernel stack) that failed, for any reason;
/// counted apart from the on-CPU samples' stack errors above.
pub const OFF_STACK_ERRORS: u32 = 15;
/// User-stack copies sent (DWARF-mode processes, see ustack.rs): on-CPU samples and stacks
/// referenced by id.
pub const USTACK_COPIES: u32 = 16;
/// User-stack copies dropped because the USTACKS ring buffer was full.
pub const USTACK_DROPPED: u32 = 17;
/// User stacks that could not be copied: no user registers, nesting too deep, or not one byte
/// readable at sp (a record is still sent in the last case).
pub const USTACK_COPY_FAILED: u32 = 18;
/// `--timeline` records lost because the TIMELINE ring buffer was full.
pub const TIMELINE_LOST: u32 = 19;
/// User stacks stored in USER_STACKS (new entries, not stacks found there already): with the
/// entries harvested during the session, how full the table is (collect/stacks.rs).
pub const USER_STACKS_STORED: u32 = 20;
/// Kernel stacks stored in KERNEL_STACKS, likewise.
pub const KERNEL_STACKS_STORED: u32 = 21;
/// On-CPU samples of exiting threads (past exit_mm: no address space, so no user stack): not
/// a loss, they keep their kernel stack.
pub const SAMPLES_EXITING: u32 = 22;
/// Off-CPU stack walks of exiting threads, likewise (not counted in OFF_STACK_ERRORS).
pub const OFF_EXITING: u32 = 23;
/// Number of counters.
pub const COUNT: u32 = 24;
