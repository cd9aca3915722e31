//! Syscall latency: per-syscall rows (processes merged) with percentiles estimated from the
//! kernel's log2 histograms, and the slowest individual calls with decoded arguments.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    analyze::sysargs::{self, DecodedArgs, Resolved},
    capture::RawSyscall,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyscallRow {
    pub name: String,
    pub nr: u32,
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    /// Estimated from the log2 histogram (linear within a bucket, capped at max_ns).
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// [bucket upper bound in ns (exclusive), count] for non-empty buckets.
    pub histogram: Vec<(u64, u64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlowCallReport {
    pub name: String,
    pub pid: u32,
    pub tid: u32,
    /// Since the probes were attached.
    pub start_ns: u64,
    pub duration_ns: u64,
    /// Return value (0 for calls still in flight), with the errno name when negative.
    pub ret: i64,
    pub ret_text: String,
    pub args: DecodedArgs,
    /// Root first.
    pub frames: Vec<String>,
    /// Innermost user-space function.
    pub leaf_function: Option<String>,
    /// Innermost function of the program's own code (not libc, not the Go runtime).
    pub caller_function: Option<String>,
    pub in_flight: bool,
    /// Already in this call when rtrace attached: `duration_ns` counts from attach (at least).
    pub started_before_attach: bool,
}

/// The syscall's name on the traced machine's architecture.
pub fn name_of(nr: i64) -> String {
    usize::try_from(nr)
        .ok()
        .and_then(syscalls::Sysno::new)
        .map(|s| s.name().to_owned())
        .unwrap_or_else(|| format!("syscall_{nr}"))
}

/// The number of a syscall by name on this architecture, or -1 (from the syscalls crate).
pub fn nr_of(name: &str) -> i32 {
    name.parse::<syscalls::Sysno>().map(|s| s.id()).unwrap_or(-1)
}

/// wait4 or waitid: the calls the child ledger follows.
pub fn is_wait(nr: i32) -> bool {
    nr == nr_of("wait4") || nr == nr_of("waitid")
}

/// Upper bound (exclusive) of log2 bucket `i`: [2^i, 2^(i+1)).
pub fn bucket_upper(i: usize) -> u64 {
    1u64 << (i + 1).min(63)
}

/// The q-quantile (0..=1) estimated from log2 buckets.
pub fn percentile(hist: &[u64], q: f64, max_ns: u64) -> u64 {
    let count: u64 = hist.iter().sum();
    if count == 0 {
        return 0;
    }
    let rank = (q * count as f64).ceil().max(1.0);
    let mut seen = 0u64;
    for (i, &n) in hist.iter().enumerate() {
        if n == 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let lo = if i == 0 { 0 } else { 1u64 << i } as f64;
            let hi = bucket_upper(i) as f64;
            let frac = (rank - seen as f64) / n as f64;
            return ((lo + frac * (hi - lo)) as u64).min(max_ns);
        }
        seen += n;
    }
    max_ns
}

/// Rows merged across processes, sorted by total time (then name).
pub fn rows(raw: &[RawSyscall]) -> Vec<SyscallRow> {
    let mut by_nr: BTreeMap<u32, RawSyscall> = BTreeMap::new();
    for r in raw {
        let e = by_nr.entry(r.nr).or_insert_with(|| RawSyscall {
            nr: r.nr,
            hist: vec![0; r.hist.len()],
            ..Default::default()
        });
        e.count += r.count;
        e.errors += r.errors;
        e.total_ns += r.total_ns;
        e.max_ns = e.max_ns.max(r.max_ns);
        if e.hist.len() < r.hist.len() {
            e.hist.resize(r.hist.len(), 0);
        }
        for (a, b) in e.hist.iter_mut().zip(&r.hist) {
            *a += b;
        }
    }
    let mut out: Vec<SyscallRow> = by_nr
        .into_values()
        .map(|r| SyscallRow {
            name: name_of(r.nr as i64),
            nr: r.nr,
            count: r.count,
            errors: r.errors,
            total_ns: r.total_ns,
            p50_ns: percentile(&r.hist, 0.50, r.max_ns),
            p90_ns: percentile(&r.hist, 0.90, r.max_ns),
            p99_ns: percentile(&r.hist, 0.99, r.max_ns),
            max_ns: r.max_ns,
            histogram: r.hist.iter().enumerate().filter(|(_, &n)| n > 0).map(|(i, &n)| (bucket_upper(i), n)).collect(),
        })
        .collect();
    out.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then_with(|| a.name.cmp(&b.name)));
    out
}

/// Decodes one slow call's arguments (the fd and pidfd were resolved at capture time).
pub fn decode(
    name: &str,
    args: &[u64; 6],
    extra: &[u8],
    fd_desc: Option<String>,
    pidfd_pid: Option<u32>,
) -> DecodedArgs {
    sysargs::decode(name, args, extra, &Resolved { fd_desc, pidfd_pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(usize, u64)]) -> Vec<u64> {
        let mut h = vec![0; 40];
        for &(i, n) in pairs {
            h[i] = n;
        }
        h
    }

    #[test]
    fn percentiles_interpolate_within_log2_buckets() {
        // 100 calls in [1024, 2048) ns.
        let h = hist(&[(10, 100)]);
        assert_eq!(percentile(&h, 0.5, 2000), 1024 + 512);
        assert_eq!(percentile(&h, 0.99, 2000), 2000); // 1024 + 0.99*1024 = 2037, capped at max
                                                      // 90 fast calls in [128,256) and 10 slow in [2^20, 2^21): p50 fast, p99 slow.
        let h = hist(&[(7, 90), (20, 10)]);
        assert!((128..256).contains(&percentile(&h, 0.5, 3_000_000)));
        let p99 = percentile(&h, 0.99, 3_000_000);
        assert!((1 << 20..1 << 21).contains(&p99), "{p99}");
        assert_eq!(percentile(&[0; 40], 0.5, 0), 0);
    }

    #[test]
    fn rows_merge_processes_and_sort_by_total() {
        let nr = |n: &str| n.parse::<syscalls::Sysno>().unwrap().id() as u32;
        let raw = vec![
            RawSyscall {
                tgid: 1,
                nr: nr("read"),
                count: 3,
                errors: 1,
                total_ns: 300,
                max_ns: 200,
                hist: hist(&[(6, 2), (7, 1)]),
            },
            RawSyscall {
                tgid: 2,
                nr: nr("read"),
                count: 1,
                errors: 0,
                total_ns: 100,
                max_ns: 100,
                hist: hist(&[(6, 1)]),
            },
            RawSyscall {
                tgid: 1,
                nr: nr("nanosleep"),
                count: 1,
                errors: 0,
                total_ns: 500_000_000,
                max_ns: 500_000_000,
                hist: hist(&[(28, 1)]),
            },
        ];
        let r = rows(&raw);
        assert_eq!(r[0].name, "nanosleep");
        assert_eq!(r[0].histogram, vec![(1 << 29, 1)]);
        assert_eq!(r[1].name, "read");
        assert_eq!((r[1].count, r[1].errors, r[1].total_ns, r[1].max_ns), (4, 1, 400, 200));
        assert_eq!(r[1].histogram, vec![(128, 3), (256, 1)]);
    }
}
