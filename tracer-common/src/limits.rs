//! Map sizes. Each value is a trade-off between kernel memory (memcg-accounted) and loss; every
//! loss is counted (see `counters`) and reported, never silent.

/// Tracked TGIDs: the target and its descendants. 2,000-child workloads must fit with room.
pub const MAX_TRACKED: u32 = 65_536;
/// Words of the tracked-set bitmap (one bit per pid) when /proc/sys/kernel/pid_max cannot be
/// read; the loader sizes it to pid_max otherwise (4 KiB for the default 32768, 512 KiB for
/// the 64-bit maximum).
pub const TRACKED_BITS_DEFAULT_WORDS: u32 = 32_768 / 64;
/// Distinct (tgid, tid, user stack, kernel stack) keys for on-CPU samples. A 30 s session at
/// 99 Hz on a busy CLI produces a few thousand.
pub const MAX_CPU_KEYS: u32 = 65_536;
/// Distinct user stacks kept (each entry costs about 1 KiB, preallocated: perf-event programs
/// run in NMI context and may only use preallocated maps).
pub const USER_STACK_ENTRIES: u32 = 16_384;
/// Distinct kernel stacks kept: far fewer in variety.
pub const KERNEL_STACK_ENTRIES: u32 = 8_192;
/// Lifecycle ring buffer size (bytes, power of two). Lifecycle events are rare.
pub const EVENTS_RING_BYTES: u32 = 1 << 20;
/// Distinct (thread, stack, state) keys of blocked time.
pub const MAX_OFF_KEYS: u32 = 65_536;
/// Distinct (blocked stack, waker stack) pairs.
pub const MAX_WAKE_KEYS: u32 = 65_536;
/// Tracked threads alive at once whose slot in the thread table was taken (see thread.rs).
pub const MAX_SPILLED_THREADS: u32 = 16_384;
/// Syscall numbers with a slot in the target's own stats array (x86_64 and aarch64 stay below
/// 512); higher numbers go to the hash map like other processes' calls.
pub const MAX_SYSCALL_NR: u32 = 512;
/// Distinct (process, syscall) pairs.
pub const MAX_SYSCALL_KEYS: u32 = 16_384;
