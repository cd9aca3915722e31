//! Readings of a session while it runs, for sessions that run until told to stop (`rtrace
//! serve --watch`): every `every`, the ledger so far and the kernel's aggregates go to
//! `publish`; `stop` ends the session at its next tick (≤ 100 ms), which then detaches and
//! returns its capture like any other.
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;

use super::life::LifeCollector;
use crate::{
    capture::{Capture, OffState, RawSyscall},
    lifecycle::Lifecycle,
    loader::Probes,
};

pub struct Live {
    pub stop: Arc<AtomicBool>,
    pub every: Duration,
    pub publish: Box<dyn FnMut(LiveSnapshot) + Send>,
    /// How often a snapshot carries the profiles so far (`LiveSnapshot::profile`); None: never.
    pub profile_every: Option<Duration>,
    pub last_profile: Option<Instant>,
}

impl Live {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether this snapshot carries the profiles (the first one after `profile_every`).
    pub fn profile_due(&mut self) -> bool {
        let Some(every) = self.profile_every else { return false };
        let last = *self.last_profile.get_or_insert_with(Instant::now);
        if last.elapsed() < every {
            return false;
        }
        self.last_profile = Some(Instant::now());
        true
    }
}

/// What a session has seen since it attached (absolute values, never reset).
pub struct LiveSnapshot {
    /// The ledger up to now, waits in flight included, "now" as its end.
    pub lifecycle: Lifecycle,
    pub syscalls: Vec<RawSyscall>,
    /// Off-CPU time by state, ns (blocks that ended; the ones in progress count when they end).
    pub offcpu_ns: BTreeMap<&'static str, u64>,
    pub cpu_samples: u64,
    /// Records lost in the kernel, by kind.
    pub lost: BTreeMap<&'static str, u64>,
    /// The on-CPU samples and ended off-CPU blocks so far, with the processes' mappings to
    /// symbolize them (when `Live::profile_due`).
    pub profile: Option<Capture>,
    /// The Go processes' runtime readings (when the session has the Go view).
    pub go: Vec<super::go::GoLive>,
    /// What each process did (CPU, blocks), for the ledger's wait-stall verdicts as the
    /// one-shot report has them; see `evidence`.
    pub evidence: crate::analyze::children::Evidence,
}

/// Reads the snapshot. `harvested`: syscall stats of exited processes already taken out of the
/// kernel map.
/// `hz`: the sampling frequency; `offcpu`: off-CPU is traced (not --no-offcpu).
pub fn snapshot(
    probes: &Probes,
    life: &mut LifeCollector,
    harvested: &[(tracer_common::syscall::SysKey, tracer_common::syscall::SysStats)],
    (hz, offcpu): (u64, bool),
) -> Result<LiveSnapshot> {
    let in_flight = probes.syscalls_in_flight()?;
    let off = probes.offcpu()?;
    let evidence = evidence(probes, &off, &in_flight, hz, offcpu)?;
    let waits: Vec<_> = in_flight.into_iter().filter(|(_, i)| crate::analyze::syscalls::is_wait(i.nr)).collect();
    let lifecycle = life.live(super::drain::monotonic_ns(), &waits);
    let syscalls = super::drain::raw_syscalls(probes.syscall_stats()?.into_iter().chain(harvested.iter().copied()));
    let mut offcpu_ns = BTreeMap::new();
    for (k, v) in &off {
        *offcpu_ns.entry(OffState::from_kernel(k.state).name()).or_default() += v.total_ns;
    }
    let a = super::drain::accounting(&probes.counters(), 0);
    let lost = [
        ("events", a.events_dropped),
        ("offcpu", a.offcpu_lost),
        ("samples", a.lost_samples),
        ("syscalls", a.syscalls_lost),
        ("slow_calls", a.slow_calls_dropped),
    ]
    .into();
    Ok(LiveSnapshot {
        lifecycle,
        syscalls,
        offcpu_ns,
        cpu_samples: a.cpu_samples,
        lost,
        profile: None,
        go: Vec::new(),
        evidence,
    })
}

/// Adds exited processes' syscall stats to `into`, one entry per syscall (tgid 0, sorted by
/// number): a watch session's readings only ever sum them by syscall
/// (analyze::syscalls::rows), and kept per process they grew by ~19 entries of 352 bytes per
/// child for as long as the watched process lived (57,000 entries after 3,000 children, all
/// re-read into rows by every snapshot).
pub fn fold_exited(
    into: &mut Vec<(tracer_common::syscall::SysKey, tracer_common::syscall::SysStats)>,
    exited: Vec<(tracer_common::syscall::SysKey, tracer_common::syscall::SysStats)>,
) {
    for (k, v) in exited {
        let key = tracer_common::syscall::SysKey { tgid: 0, nr: k.nr };
        match into.binary_search_by_key(&k.nr, |(k, _)| k.nr) {
            Ok(i) => {
                let s = &mut into[i].1;
                s.count += v.count;
                s.errors += v.errors;
                s.total_ns += v.total_ns;
                s.max_ns = s.max_ns.max(v.max_ns);
                for (a, b) in s.hist.iter_mut().zip(v.hist) {
                    *a += b;
                }
            }
            Err(i) => into.insert(i, (key, v)),
        }
    }
}

/// The evidence the one-shot report builds from symbolized stacks (report.rs), from the raw
/// maps: CPU time per process from the sample counts, every ended block (its call unknown:
/// that needs the kernel stack symbolized), and every block in progress now with the call its
/// thread is in (from the in-flight table) — what tells a child stuck in `read` (high) from
/// one in a timed sleep (low) while the parent's wait stalls.
fn evidence(
    probes: &Probes,
    off: &[(tracer_common::sched::OffKey, tracer_common::sched::OffVal)],
    in_flight: &[(u32, tracer_common::syscall::Inflight)],
    hz: u64,
    offcpu: bool,
) -> Result<crate::analyze::children::Evidence> {
    use crate::analyze::children::{Block, Evidence};
    let mut ev = Evidence { offcpu, ..Default::default() };
    let period_ns = 1_000_000_000 / hz.max(1);
    for (k, n) in probes.cpu_counts()? {
        ev.add_cpu(k.tgid, n * period_ns);
    }
    for (k, v) in off {
        let state = OffState::from_kernel(k.state);
        let b = Block {
            tid: k.tid,
            syscall: None,
            state,
            total_ns: v.total_ns,
            count: v.count,
            max_ns: v.max_ns,
            in_flight: false,
        };
        ev.add_block(k.tgid, b);
    }
    let calls: std::collections::HashMap<u32, i64> = in_flight.iter().map(|(tid, i)| (*tid, i.nr as i64)).collect();
    let now = super::drain::off_clock(probes, super::drain::monotonic_ns());
    for (tid, s) in probes.off_in_flight()? {
        let ns = now.saturating_sub(s.ts);
        let b = Block {
            tid,
            syscall: calls.get(&tid).map(|&nr| crate::analyze::syscalls::name_of(nr)),
            state: OffState::from_kernel(s.state),
            total_ns: ns,
            count: 1,
            max_ns: ns,
            in_flight: true,
        };
        ev.add_block(s.tgid, b);
    }
    Ok(ev)
}

/// The profiles so far as a capture `report::analyze` takes (samples, blocks, mappings, and
/// the session facts the profiles need); `duration_ms` is the session's so far.
pub fn profile(
    probes: &Probes,
    ustacks: &super::ustacks::Ustacks,
    registry: &super::Registry,
    session: crate::capture::SessionInfo,
) -> Result<Capture> {
    let mut c = super::drain::profiles_now(probes, ustacks)?;
    registry.peek(&mut c);
    c.session = session;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use tracer_common::syscall::{SysKey, SysStats, HIST_BUCKETS};

    fn stats(count: u64, max_ns: u64, bucket: usize) -> SysStats {
        let mut hist = [0; HIST_BUCKETS];
        hist[bucket] = count;
        SysStats { count, errors: count / 2, total_ns: count * 10, max_ns, hist }
    }

    #[test]
    fn exited_stats_fold_into_one_entry_per_syscall() {
        let mut into = Vec::new();
        let k = |tgid, nr| SysKey { tgid, nr };
        super::fold_exited(&mut into, vec![(k(100, 59), stats(1, 500, 9)), (k(100, 0), stats(4, 20, 4))]);
        super::fold_exited(&mut into, vec![(k(101, 59), stats(2, 300, 8)), (k(101, 0), stats(6, 90, 4))]);
        let got: Vec<(u32, u32, u64, u64, u64, u64)> =
            into.iter().map(|(k, s)| (k.tgid, k.nr, s.count, s.errors, s.total_ns, s.max_ns)).collect();
        assert_eq!(got, [(0, 0, 10, 5, 100, 90), (0, 59, 3, 1, 30, 500)]);
        assert_eq!((into[0].1.hist[4], into[1].1.hist[8], into[1].1.hist[9]), (10, 2, 1));
    }
}
