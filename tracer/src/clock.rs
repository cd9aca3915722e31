//! The kernel's clock as userspace reads it: CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns,
//! so times taken here and times in eBPF records compare directly; and rtrace's own CPU time.

/// CLOCK_MONOTONIC in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_REALTIME when CLOCK_MONOTONIC read `mono_ns` (earlier): now on both clocks, shifted
/// back by the monotonic time since. Off only by what NTP slewed the wall clock meanwhile.
pub fn realtime_at(mono_ns: u64) -> u64 {
    let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    real.saturating_sub(monotonic_ns().saturating_sub(mono_ns))
}

/// rtrace's own CPU time so far (user + system), for the benchmark's timing lines.
pub fn self_cpu_us() -> u64 {
    // SAFETY: getrusage with a valid out-pointer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(u.ru_utime) + us(u.ru_stime)
}
