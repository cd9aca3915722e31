//! Readings of a session while it runs, for sessions that run until told to stop (`rtrace
//! serve --watch`): one session for the whole watch set (roots.rs), which adopts each root
//! sent on `adopt`; every `every`, each root's ledger so far and its part of the kernel's
//! aggregates go to `publish`; a root whose whole tree is gone gets a last reading (with its
//! profiles when they are pushed) and is forgotten. `stop` ends the session at its next tick
//! (≤ 100 ms), which then detaches and returns its capture like any other.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::Receiver,
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use tracer_common::{
    syscall::{SysKey, SysStats},
    target::{EXISTING_DESCENDANT, ROOT},
};

use super::{go::GoSession, life::LifeCollector, ustacks::Ustacks, Registry};
use crate::{
    analyze::children::Evidence,
    capture::{Capture, OffState, RawSyscall},
    lifecycle::Lifecycle,
    loader::Probes,
};

pub struct Live {
    pub stop: Arc<AtomicBool>,
    pub every: Duration,
    pub publish: Box<dyn FnMut(Reading) + Send>,
    /// How often a reading carries the profiles so far (`LiveSnapshot::profile`); None: never
    /// (then a root's last reading has none either).
    pub profile_every: Option<Duration>,
    pub last_profile: Option<Instant>,
    /// The watch set's new roots, as the daemon finds them (the session's target is the first).
    pub adopt: Receiver<u32>,
}

impl Live {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether this reading carries the profiles (the first one after `profile_every`).
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

/// One reading of the whole watch set.
pub struct Reading {
    pub roots: Vec<LiveSnapshot>,
    /// Records lost in the kernel since the session attached, by kind (the whole set's: the
    /// kernel does not say whose they were).
    pub lost: BTreeMap<&'static str, u64>,
    /// Processes the session's ledger holds now (watched, their descendants, the exited ones
    /// not folded or forgotten yet).
    pub held: usize,
}

/// What a session has seen of one root's tree since it adopted it (absolute values, never
/// reset while the root lives).
pub struct LiveSnapshot {
    pub root: u32,
    /// Its whole tree is gone: its last reading (the session forgets it next).
    pub ended: bool,
    /// The ledger up to now, waits in flight included, "now" as its end, times since adoption.
    pub lifecycle: Lifecycle,
    pub syscalls: Vec<RawSyscall>,
    /// Off-CPU time by state, ns (blocks that ended; the ones in progress count when they end).
    pub offcpu_ns: BTreeMap<&'static str, u64>,
    pub cpu_samples: u64,
    /// The on-CPU samples and ended off-CPU blocks so far, with the processes' mappings to
    /// symbolize them (when `Live::profile_due`, and in an ended root's last reading).
    pub profile: Option<Capture>,
    /// The Go processes' runtime readings (when the session has the Go view).
    pub go: Vec<super::go::GoLive>,
    /// What each process did (CPU, blocks), for the ledger's wait-stall verdicts as the
    /// one-shot report has them; see `evidence`.
    pub evidence: Evidence,
    /// Descendants folded since the previous reading (roots.rs): in that reading's ledger,
    /// not in this one's; the publisher keeps what they counted.
    pub folded: BTreeSet<u32>,
}

/// How often a watch set folds freed descendants when it pushes no profiles (with pushes: at
/// each push).
const FOLD_EVERY: Duration = Duration::from_secs(1);

/// What a watch set keeps of the descendants it folded: their CPU samples and off-CPU time,
/// per root (the counters never go down), and the ones to fold next.
#[derive(Default)]
pub struct Folds {
    /// Freed descendants some reading has shown (the publisher has their rows).
    shown: Vec<u32>,
    /// The descendants that had exited at the last fold.
    exited: BTreeSet<u32>,
    last: Option<Instant>,
    cpu: HashMap<u32, u64>,
    off: HashMap<u32, BTreeMap<&'static str, u64>>,
}

type Off = (tracer_common::sched::OffKey, tracer_common::sched::OffVal);

/// The parts of a running session a watch set changes (the session loop's own state).
pub struct Parts<'a> {
    pub probes: &'a mut Probes,
    pub registry: &'a mut Registry,
    pub life: &'a mut LifeCollector,
    pub gos: &'a mut GoSession,
    pub ustacks: &'a mut Ustacks,
    /// Syscall stats of exited processes, one entry per (root, syscall) (`fold_exited`).
    pub harvested: &'a mut Vec<(SysKey, SysStats)>,
    pub folds: &'a mut Folds,
}

/// Adopts `root` (a watched process the daemon found): tracked with its descendants, as a
/// session does at attach (session.rs), while the programs run.
pub fn adopt(root: u32, s: &mut Parts<'_>, choice: crate::unwind::Choice) -> Result<()> {
    // Followed already (a root is adopted once). A pid the set knows as an exited process is
    // a new process now: it becomes a root of its own.
    if s.life.owners.of(root).is_some() && s.registry.alive(root) {
        return Ok(());
    }
    s.probes.track(root, ROOT)?;
    s.registry.forked(root);
    s.registry.snapshot(root, false);
    let me = std::process::id();
    let existing: Vec<u32> = crate::procfs::descendants(root).into_iter().filter(|&p| p != me).collect();
    for &d in &existing {
        s.probes.track(d, EXISTING_DESCENDANT)?;
        s.registry.forked(d);
        s.registry.snapshot(d, false);
    }
    for p in std::iter::once(root).chain(existing.iter().copied()) {
        if let Some(mode) = super::ustacks::decide(s.probes, p, None, choice) {
            s.ustacks.set_mode(p, mode);
        }
        s.gos.seen(p);
    }
    s.life.adopt(root, &existing, super::drain::monotonic_ns());
    Ok(())
}

/// Forgets `root` (its last reading is published): what every stage kept of its processes.
pub fn forget(root: u32, s: &mut Parts<'_>) {
    let tree = s.life.owners.tree(root);
    s.life.forget(root, &tree);
    s.registry.forget(&tree);
    s.ustacks.forget(&tree);
    s.gos.forget(&tree);
    s.harvested.retain(|(k, _)| k.tgid != root);
    s.folds.cpu.remove(&root);
    s.folds.off.remove(&root);
    match s.probes.forget(&tree) {
        Ok(copies) => s.ustacks.drop_copies(&copies),
        Err(e) => log::warn!("forgetting pid {root}'s processes in the kernel maps: {e:#}"),
    }
}

/// Folds the descendants shown freed (of roots that live on: an ended one is forgotten whole):
/// what the kernel maps counted of them goes into their root's totals, then every stage
/// forgets them. Returns them by root.
/// `off`, `cpu`: the kernel maps as this reading read them.
fn fold(
    s: &mut Parts<'_>,
    ended: &BTreeSet<u32>,
    (off, cpu): (&[Off], &[(tracer_common::cpu::CpuKey, u64)]),
) -> Result<BTreeMap<u32, BTreeSet<u32>>> {
    s.folds.last = Some(Instant::now());
    let mut by_root: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    // Exited at the previous fold (so shown since) and gone from /proc, though no free came
    // (the kernel skips a program that would run nested in itself: counted, rare).
    let exited = s.life.exited_descendants();
    let unfreed = std::mem::replace(&mut s.folds.exited, exited);
    let unfreed = unfreed
        .into_iter()
        .filter(|&p| s.life.owners.of(p).is_some() && !std::path::Path::new(&format!("/proc/{p}")).exists());
    let candidates: BTreeSet<u32> = std::mem::take(&mut s.folds.shown).into_iter().chain(unfreed).collect();
    for p in candidates {
        // Not a pid a new process has taken since (it is alive again).
        match s.life.owners.of(p) {
            Some(r) if !ended.contains(&r) && !s.registry.alive(p) => by_root.entry(r).or_default().insert(p),
            _ => continue,
        };
    }
    let all: BTreeSet<u32> = by_root.values().flatten().copied().collect();
    if all.is_empty() {
        return Ok(by_root);
    }
    // Read before anything changes: a failed read leaves the fold for next time.
    let left = match s.probes.harvest_syscall_stats(|t| all.contains(&t)) {
        Ok(r) => r,
        Err(e) => {
            s.folds.shown.extend(&all);
            return Err(e);
        }
    };
    let owner = |p: u32| s.life.owners.of(p);
    for (k, v) in off.iter().filter(|(k, _)| all.contains(&k.tgid)) {
        let r = owner(k.tgid).unwrap_or(0);
        *s.folds.off.entry(r).or_default().entry(OffState::from_kernel(k.state).name()).or_default() += v.total_ns;
    }
    for (k, n) in cpu.iter().filter(|(k, _)| all.contains(&k.tgid)) {
        *s.folds.cpu.entry(owner(k.tgid).unwrap_or(0)).or_default() += n;
    }
    for (k, n) in s.ustacks.samples().filter(|(k, _)| all.contains(&k.0)) {
        *s.folds.cpu.entry(owner(k.0).unwrap_or(0)).or_default() += n;
    }
    fold_exited(s.harvested, left, |p| s.life.owners.of(p));
    s.life.fold(&all);
    s.registry.forget(&all);
    s.ustacks.forget(&all);
    s.gos.forget(&all);
    // Not fatal: what they counted is in the totals already, and the publisher needs `by_root`.
    match s.probes.forget(&all) {
        Ok(copies) => s.ustacks.drop_copies(&copies),
        Err(e) => log::warn!("forgetting folded processes in the kernel maps: {e:#}"),
    }
    Ok(by_root)
}

/// Reads the whole set and splits it per root. `hz`: the sampling frequency; `offcpu`: off-CPU
/// is traced (not --no-offcpu); `profile`: the profiles so far, for every root when due, else
/// built here for the roots that ended (when `want_profiles`).
pub fn snapshot(
    s: &mut Parts<'_>,
    (hz, offcpu): (u64, bool),
    mut go: Vec<super::go::GoLive>,
    (due, want_profiles): (bool, bool),
    profile: impl FnOnce(&Parts<'_>) -> Option<Capture>,
) -> Result<Reading> {
    let owners = &s.life.owners;
    let roots: Vec<u32> = owners.roots().collect();
    let ended: BTreeSet<u32> =
        roots.iter().copied().filter(|&r| owners.tree(r).iter().all(|&p| !s.registry.alive(p))).collect();
    // Before folding: the profiles have the folded descendants' last samples and blocks.
    let whole_profile = if due || (want_profiles && !ended.is_empty()) { profile(s) } else { None };
    // With pushes, folds wait for a push (the profile above has what they did since the last).
    let fold_now = if want_profiles { due } else { s.folds.last.is_none_or(|t| t.elapsed() >= FOLD_EVERY) };
    let (mut off, mut cpu) = (s.probes.offcpu()?, s.probes.cpu_counts()?);
    let mut folded = if fold_now { fold(s, &ended, (&off, &cpu))? } else { BTreeMap::new() };
    // What the fold took out of the kernel maps is out of this reading too (in the totals).
    let gone: BTreeSet<u32> = folded.values().flatten().copied().collect();
    off.retain(|(k, _)| !gone.contains(&k.tgid));
    cpu.retain(|(k, _)| !gone.contains(&k.tgid));
    let probes = &*s.probes;
    let in_flight = probes.syscalls_in_flight()?;
    let whole = evidence(probes, (&off, &cpu), &in_flight, hz, offcpu)?;
    let waits: Vec<_> = in_flight.into_iter().filter(|(_, i)| crate::analyze::syscalls::is_wait(i.nr)).collect();
    let lifecycle = s.life.live(super::drain::monotonic_ns(), &waits);
    // Shown in this reading: foldable at the next fold.
    s.folds.shown.extend(s.life.take_freed());
    let stats = probes.syscall_stats()?;
    let syscalls = super::drain::raw_syscalls(stats.into_iter().chain(s.harvested.iter().copied()));
    let a = super::drain::accounting(&probes.counters(), 0);
    let lost = [
        ("events", a.events_dropped),
        ("offcpu", a.offcpu_lost),
        ("samples", a.lost_samples),
        ("syscalls", a.syscalls_lost),
        ("slow_calls", a.slow_calls_dropped),
    ]
    .into();
    let owners = &s.life.owners;
    let folds = &*s.folds;
    let mut samples: HashMap<u32, u64> = HashMap::new();
    for (k, n) in &cpu {
        *samples.entry(k.tgid).or_default() += n;
    }
    for (k, n) in s.ustacks.samples() {
        *samples.entry(k.0).or_default() += n;
    }
    let mut out = Vec::new();
    for root in roots {
        let mine = |p: u32| owners.of(p) == Some(root);
        let mut offcpu_ns = folds.off.get(&root).cloned().unwrap_or_default();
        for (k, v) in off.iter().filter(|(k, _)| mine(k.tgid)) {
            *offcpu_ns.entry(OffState::from_kernel(k.state).name()).or_default() += v.total_ns;
        }
        let ended = ended.contains(&root);
        let since = owners.since(root);
        let profile = whole_profile.as_ref().filter(|_| due || ended).map(|c| part_of(c, &mine, since));
        let mut ev = Evidence { offcpu: whole.offcpu, ..Default::default() };
        ev.by_pid = whole.by_pid.iter().filter(|(p, _)| mine(**p)).map(|(p, a)| (*p, a.clone())).collect();
        out.push(LiveSnapshot {
            root,
            ended,
            lifecycle: super::roots::split(&lifecycle, root, owners),
            syscalls: syscalls.iter().filter(|c| mine(c.tgid)).cloned().collect(),
            offcpu_ns,
            cpu_samples: folds.cpu.get(&root).copied().unwrap_or(0)
                + samples.iter().filter(|(p, _)| mine(**p)).map(|(_, n)| n).sum::<u64>(),
            folded: folded.remove(&root).unwrap_or_default(),
            profile,
            go: go.extract_if(.., |g| mine(g.pid)).collect(),
            evidence: ev,
        });
    }
    Ok(Reading { roots: out, lost, held: s.life.held() })
}

/// The part of a whole-set profile that is one root's: its processes' samples, blocks and maps,
/// over the time since its adoption (`since`, session ns).
fn part_of(c: &Capture, mine: &impl Fn(u32) -> bool, since: u64) -> Capture {
    let mut session = c.session.clone();
    session.start_mono_ns += since;
    session.start_realtime_ns += since;
    session.duration_ms = session.duration_ms.saturating_sub(since / 1_000_000);
    Capture {
        cpu_samples: c.cpu_samples.iter().filter(|s| mine(s.tgid)).cloned().collect(),
        offcpu: c.offcpu.iter().filter(|o| mine(o.tgid)).cloned().collect(),
        processes: c.processes.iter().filter(|(p, _)| mine(**p)).map(|(p, i)| (*p, i.clone())).collect(),
        held_files: c.held_files.clone(),
        vdso_symbols: c.vdso_symbols.clone(),
        session,
        ..Default::default()
    }
}

/// Adds exited processes' syscall stats to `into`, one entry per (root, syscall) (the key's
/// tgid is the root `owner` says, 0 for none; sorted): a watch session's readings only ever
/// sum them by syscall (analyze::syscalls::rows), and kept per process they grew by ~19
/// entries of 352 bytes per child for as long as the watched process lived (57,000 entries
/// after 3,000 children, all re-read into rows by every snapshot).
pub fn fold_exited(
    into: &mut Vec<(SysKey, SysStats)>,
    exited: Vec<(SysKey, SysStats)>,
    owner: impl Fn(u32) -> Option<u32>,
) {
    for (k, v) in exited {
        let key = SysKey { tgid: owner(k.tgid).unwrap_or(0), nr: k.nr };
        match into.binary_search_by_key(&(key.tgid, key.nr), |(k, _)| (k.tgid, k.nr)) {
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
    (off, cpu): (&[Off], &[(tracer_common::cpu::CpuKey, u64)]),
    in_flight: &[(u32, tracer_common::syscall::Inflight)],
    hz: u64,
    offcpu: bool,
) -> Result<Evidence> {
    use crate::analyze::children::Block;
    let mut ev = Evidence { offcpu, ..Default::default() };
    let period_ns = 1_000_000_000 / hz.max(1);
    for (k, n) in cpu {
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
        // 100 and 101 belong to root 7, 300 to root 9, 555 to none.
        let owner = |p| match p {
            100 | 101 => Some(7),
            300 => Some(9),
            _ => None,
        };
        super::fold_exited(&mut into, vec![(k(100, 59), stats(1, 500, 9)), (k(100, 0), stats(4, 20, 4))], owner);
        super::fold_exited(&mut into, vec![(k(101, 59), stats(2, 300, 8)), (k(101, 0), stats(6, 90, 4))], owner);
        super::fold_exited(&mut into, vec![(k(300, 0), stats(1, 5, 2)), (k(555, 0), stats(2, 5, 2))], owner);
        let got: Vec<(u32, u32, u64, u64, u64, u64)> =
            into.iter().map(|(k, s)| (k.tgid, k.nr, s.count, s.errors, s.total_ns, s.max_ns)).collect();
        assert_eq!(got, [(0, 0, 2, 1, 20, 5), (7, 0, 10, 5, 100, 90), (7, 59, 3, 1, 30, 500), (9, 0, 1, 0, 10, 5)]);
        assert_eq!((into[1].1.hist[4], into[2].1.hist[8], into[2].1.hist[9]), (10, 2, 1));
    }
}
