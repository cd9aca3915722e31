//! `rtrace serve --watch SPEC` (issue #15): processes matching a spec — running at start or
//! started later — are traced continuously, with their descendants, by one live session (the
//! CLI's `session::run`, run until the daemon stops) that adopts each as it is found
//! (collect/roots.rs: one probe set for all, loaded once); `GET /metrics` renders what it has
//! seen of each (render/metrics.rs).
//!
//! Decisions: a process under an already watched one is its descendant, not a watched process
//! of its own; the session samples on-CPU at `--watch-frequency` (19 Hz) and reads the Go
//! runtime of Go processes (goroutines, GC) about once a second; a process whose tree has
//! exited stays in /metrics for `--watch-keep` (60 s) so that its last values are scraped,
//! then leaves (the session forgot it already). With `--pyroscope`, push.rs pushes each
//! one's profiles.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, Sender},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

pub mod push;

use crate::{
    analyze::children::{self, ChildrenConfig},
    collect::live::{Live, LiveSnapshot, Reading},
    options::SessionOptions,
    procfs,
    render::metrics::{self, Health, Watched},
};

/// What `--watch` matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    Pid(u32),
    /// The kernel's comm (15 bytes at most).
    Comm(String),
    /// /proc/PID/exe.
    Exe(PathBuf),
    /// The cgroup v2 path (/proc/PID/cgroup `0::PATH`) is this one or under it.
    Cgroup(String),
}

impl std::str::FromStr for Spec {
    type Err = String;
    fn from_str(s: &str) -> Result<Spec, String> {
        let bad = || format!("--watch {s:?}: expected pid:N, comm:NAME, exe:PATH or cgroup:PATH");
        let (kind, v) = s.split_once(':').ok_or_else(bad)?;
        if v.is_empty() {
            return Err(bad());
        }
        match kind {
            "pid" => v.parse().map(Spec::Pid).map_err(|_| format!("--watch {s:?}: {v:?} is not a pid")),
            "comm" if v.len() > 15 => {
                Err(format!("--watch {s:?}: a comm is at most 15 bytes (the kernel cuts longer names)"))
            }
            "comm" => Ok(Spec::Comm(v.to_owned())),
            "exe" => Ok(Spec::Exe(v.into())),
            "cgroup" => Ok(Spec::Cgroup(v.trim_end_matches('/').to_owned())),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spec::Pid(p) => write!(f, "pid:{p}"),
            Spec::Comm(c) => write!(f, "comm:{c}"),
            Spec::Exe(e) => write!(f, "exe:{}", e.display()),
            Spec::Cgroup(g) => write!(f, "cgroup:{g}"),
        }
    }
}

impl Spec {
    fn matches(&self, pid: u32) -> bool {
        match self {
            Spec::Pid(p) => *p == pid,
            Spec::Comm(c) => procfs::comm(pid).as_deref() == Some(c.as_str()),
            Spec::Exe(e) => std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|x| &x == e),
            Spec::Cgroup(g) => std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|t| {
                t.lines().filter_map(|l| l.strip_prefix("0::")).any(|p| p == g || p.starts_with(&format!("{g}/")))
            }),
        }
    }
}

/// How long an exited process's last values stay in /metrics by default (`--watch-keep`):
/// long enough for a few scrapes at Prometheus's usual 15 s.
pub const KEEP: Duration = Duration::from_secs(60);
/// How often /proc is scanned for new matches and the session publishes its readings.
const SCAN: Duration = Duration::from_secs(1);

struct Entry {
    watched: Watched,
    ended: Option<Instant>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<u32, Entry>,
    /// The watch set's session (one for every watched process): where new roots go. None, or
    /// a closed channel: not running, started at the next match.
    adopt: Option<Sender<u32>>,
    /// The session's kernel losses, by kind.
    lost: BTreeMap<&'static str, u64>,
    /// Processes watched since the start.
    total: u64,
    /// Processes the session's ledger holds.
    held: usize,
}

/// What `rtrace serve --watch` was asked for.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub specs: Vec<Spec>,
    pub frequency_hz: u64,
    pub push: Option<push::PushConfig>,
    /// How long an exited process's last values stay in /metrics.
    pub keep: Duration,
}

pub struct Watcher {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
    pusher: Mutex<Option<push::Worker>>,
    /// Not a Handle: the worker ends when the sessions' handles are all gone.
    push_stats: Option<Arc<push::WorkerStats>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watcher {
    /// Starts the scanner; the session starts at the first match.
    pub fn start(cfg: WatchConfig) -> Watcher {
        let worker = cfg.push.as_ref().and_then(|p| {
            push::Worker::start(p).map_err(|e| log::error!("rtrace serve --pyroscope: starting the pusher: {e:#}")).ok()
        });
        let push = worker.as_ref().and_then(|w| w.handle());
        let w = Watcher {
            state: Default::default(),
            stop: Default::default(),
            threads: Default::default(),
            pusher: Mutex::new(worker),
            push_stats: push.as_ref().map(|h| h.stats.clone()),
        };
        let (state, stop, threads) = (w.state.clone(), w.stop.clone(), w.threads.clone());
        let scanner = std::thread::Builder::new().name("rtrace-watch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                scan(&cfg, push.as_ref(), (&state, &stop, &threads));
                let t = Instant::now();
                while t.elapsed() < SCAN && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        match scanner {
            Ok(t) => lock(&w.threads).push(t),
            Err(e) => log::error!("rtrace serve --watch: starting the scanner: {e}"),
        }
        w
    }

    /// The OpenMetrics text of every watched process (exited ones for `keep`).
    pub fn metrics(&self) -> String {
        let st = lock(&self.state);
        let watched: Vec<Watched> = st.entries.values().map(|e| e.watched.clone()).collect();
        let running = st.entries.values().filter(|e| e.ended.is_none()).count();
        let (lost, watched_total, held) = (st.lost.clone(), st.total, st.held);
        drop(st);
        let pushes = self.push_stats.as_ref().map(|p| p.counts());
        let health = Health {
            watched: running,
            watched_total,
            held,
            lost,
            cpu_seconds: crate::clock::self_cpu_us() as f64 / 1e6,
            pushes,
        };
        metrics::render(&watched, &health)
    }

    /// Ends the session (it detaches at its next tick) and waits for it.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        loop {
            let Some(t) = lock(&self.threads).pop() else { break };
            let _ = t.join();
        }
        // The session's last pushes are queued: sent (for a few seconds at most).
        if let Some(mut w) = lock(&self.pusher).take() {
            w.stop();
        }
    }
}

/// One pass over /proc: new matches are adopted by the session (started by the first one);
/// exited ones expire after `keep`.
type Shared<'a> = (&'a Arc<Mutex<State>>, &'a Arc<AtomicBool>, &'a Mutex<Vec<std::thread::JoinHandle<()>>>);

fn scan(cfg: &WatchConfig, push: Option<&push::Handle>, (state, stop, threads): Shared<'_>) {
    // Entries: the running ones and the exited ones kept for `keep` (not watched again).
    let (known, mut watched) = {
        let mut st = lock(state);
        st.entries.retain(|_, e| e.ended.is_none_or(|t| t.elapsed() < cfg.keep));
        let running = st.entries.iter().filter(|(_, e)| e.ended.is_none()).map(|(p, _)| *p);
        (st.entries.keys().copied().collect::<BTreeSet<u32>>(), running.collect::<BTreeSet<u32>>())
    };
    let parents = procfs::parent_map();
    let me = std::process::id();
    for &pid in parents.keys() {
        if known.contains(&pid)
            || pid == me
            || procfs::is_kernel_thread(pid)
            || !cfg.specs.iter().any(|s| s.matches(pid))
        {
            continue;
        }
        // A zombie has nothing left to trace; a descendant of a watched process is followed
        // as that process's already.
        if procfs::state_and_ppid(pid).is_none_or(|(s, _)| s == 'Z') || under(pid, &watched, &parents) {
            continue;
        }
        let comm = procfs::comm(pid).unwrap_or_default();
        log::info!("rtrace serve --watch: pid {pid} ({comm}) matches: watching it");
        watched.insert(pid);
        let mut st = lock(state);
        st.entries.insert(pid, Entry { watched: Watched { pid, comm, ..Default::default() }, ended: None });
        st.total += 1;
        if st.adopt.as_ref().is_some_and(|tx| tx.send(pid).is_ok()) {
            continue;
        }
        // No session yet (or it ended on an error): this process is its first root.
        let (tx, rx) = std::sync::mpsc::channel();
        st.adopt = Some(tx);
        drop(st);
        let (state, stop, push) = (state.clone(), stop.clone(), push.cloned());
        let hz = cfg.frequency_hz;
        let t = std::thread::Builder::new()
            .name("rtrace-watch-set".into())
            .spawn(move || run_set(pid, rx, hz, push, (state, stop)));
        match t {
            Ok(t) => lock(threads).push(t),
            Err(e) => log::error!("rtrace serve --watch: starting the session: {e}"),
        }
    }
}

/// True when an ancestor of `pid` is in `watched`.
fn under(pid: u32, watched: &BTreeSet<u32>, parents: &BTreeMap<u32, u32>) -> bool {
    let mut p = pid;
    for _ in 0..4096 {
        match parents.get(&p) {
            Some(&pp) if watched.contains(&pp) => return true,
            Some(&pp) if pp > 1 => p = pp,
            _ => return false,
        }
    }
    false
}

/// The metrics of one watched process from its reading.
fn watched_of(pid: u32, comm: &str, snap: &LiveSnapshot, cfg: &ChildrenConfig) -> Watched {
    Watched {
        pid,
        comm: comm.to_owned(),
        ledger: Some(children::analyze_with(&snap.lifecycle, cfg, &snap.evidence)),
        syscalls: crate::analyze::syscalls::rows(&snap.syscalls),
        offcpu_ns: snap.offcpu_ns.clone(),
        cpu_samples: snap.cpu_samples,
        go: snap.go.clone(),
        folded: Default::default(),
    }
}

/// What the publisher keeps between readings: each root's profiles at its previous push.
struct Publisher {
    state: Arc<Mutex<State>>,
    cfg: ChildrenConfig,
    push: Option<push::Handle>,
    deltas: HashMap<u32, push::Deltas>,
}

impl Publisher {
    /// Readings queued while the last one was analysed: only the newest counts (readings are
    /// totals so far), but a root's last reading in any of them is never skipped, nor one
    /// whose next reading folds some of its descendants (their counts are taken from it).
    fn batch(&mut self, batch: Vec<Reading>) {
        let folds: Vec<BTreeSet<u32>> =
            batch.iter().map(|r| r.roots.iter().filter(|s| !s.folded.is_empty()).map(|s| s.root).collect()).collect();
        let n = batch.len();
        // Folds of a skipped reading: added with the root's next one (its ledger before is
        // still the last one analysed).
        let mut pending: HashMap<u32, BTreeSet<u32>> = HashMap::new();
        for (i, reading) in batch.into_iter().enumerate() {
            if i + 1 == n {
                let mut st = lock(&self.state);
                (st.lost, st.held) = (reading.lost, reading.held);
            }
            for mut snap in reading.roots {
                // A fold's profile has the folded ones' last samples: later ones will not.
                let last_of_folded = snap.profile.is_some() && !snap.folded.is_empty();
                if i + 1 == n || snap.ended || last_of_folded || folds[i + 1].contains(&snap.root) {
                    snap.folded.extend(pending.remove(&snap.root).unwrap_or_default());
                    self.one(snap);
                } else if !snap.folded.is_empty() {
                    pending.entry(snap.root).or_default().extend(std::mem::take(&mut snap.folded));
                }
            }
        }
    }

    fn one(&mut self, mut snap: LiveSnapshot) {
        let root = snap.root;
        let Some(comm) = lock(&self.state).entries.get(&root).map(|e| e.watched.comm.clone()) else { return };
        if let (Some(p), Some(profile)) = (&self.push, snap.profile.take()) {
            let d = self.deltas.entry(root).or_default();
            p.send(p.cfg.identity(root, &comm), d.take(profile));
            // Their last part was in this profile (taken before the fold).
            d.forget(&snap.folded);
        }
        let mut w = watched_of(root, &comm, &snap, &self.cfg);
        if let Some(e) = lock(&self.state).entries.get(&root) {
            w.folded = e.watched.folded.clone();
            // Folded since the previous reading: their counts, from its ledger.
            if let Some(prev) = e.watched.ledger.as_ref().filter(|_| !snap.folded.is_empty()) {
                w.folded.add(prev, &snap.folded);
            }
        }
        if snap.ended {
            self.deltas.remove(&root);
            for f in w.ledger.iter().flat_map(|l| &l.findings) {
                log::debug!("rtrace serve --watch: pid {root} ({comm}): {:?} {}", f.severity, f.summary);
            }
            log::info!("rtrace serve --watch: pid {root} ({comm}) and its descendants exited");
        }
        if let Some(e) = lock(&self.state).entries.get_mut(&root) {
            e.watched = w;
            if snap.ended {
                e.ended = Some(Instant::now());
            }
        }
    }
}

/// The watch set's session, `first` its first root, until the daemon stops.
fn run_set(
    first: u32,
    adopt: Receiver<u32>,
    hz: u64,
    push: Option<push::Handle>,
    (state, stop): (Arc<Mutex<State>>, Arc<AtomicBool>),
) {
    let mut opts = SessionOptions::for_pid(first, None);
    opts.quiet = true;
    opts.frequency_hz = hz;
    // A quarter of the one-shot ring: copies at 19 Hz (and the off-CPU ones) are drained
    // every tick; a full ring is a counted drop.
    opts.ustack_ring_bytes = Some(4 << 20);
    let cfg = ChildrenConfig {
        slow_reap_ns: opts.slow_reap.as_nanos() as u64,
        wait_stall_ns: opts.wait_stall.as_nanos() as u64,
    };
    let mut publisher = Publisher { state: state.clone(), cfg, push: push.clone(), deltas: HashMap::new() };
    // Readings are analysed and published on a thread of their own: with a few thousand
    // children the ledger's analysis took 100-150 ms, during which the session loop, which
    // drains the events ring, stood still (a 1 MiB ring holds ~0.4 s of a 500 children/s
    // burst's events).
    let (tx, rx) = std::sync::mpsc::channel::<Reading>();
    let thread = std::thread::Builder::new().name("rtrace-watch-pub".into()).spawn(move || {
        while let Ok(first) = rx.recv() {
            publisher.batch(std::iter::once(first).chain(rx.try_iter()).collect());
        }
    });
    if let Err(e) = &thread {
        log::error!("rtrace serve --watch: starting the publisher: {e}");
    }
    let publish = Box::new(move |r: Reading| {
        let _ = tx.send(r);
    });
    let profile_every = push.as_ref().map(|p| p.cfg.interval);
    let live = Live { stop, every: SCAN, publish, profile_every, last_profile: None, adopt };
    let r = crate::session::preflight()
        .map_err(anyhow::Error::from)
        .and_then(|_| crate::session::run_live(&opts, "unchanged", |_| Ok(()), Some(live)));
    crate::loader::reaper::join_all();
    // The session has dropped its sender: its last readings are published first.
    if let Ok(t) = thread {
        let _ = t.join();
    }
    match r {
        Ok(c) => log::info!("rtrace serve --watch: the session ended ({:?})", c.session.ended_by),
        Err(e) => log::warn!("rtrace serve --watch: the session failed: {e:#}"),
    }
    // What it watched and did not see end is not watched any more.
    for e in lock(&state).entries.values_mut().filter(|e| e.ended.is_none()) {
        e.ended = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!("pid:42".parse(), Ok(Spec::Pid(42)));
        assert_eq!("comm:make".parse(), Ok(Spec::Comm("make".into())));
        assert_eq!("exe:/usr/bin/git".parse(), Ok(Spec::Exe("/usr/bin/git".into())));
        assert_eq!("cgroup:/system.slice/cron.service/".parse(), Ok(Spec::Cgroup("/system.slice/cron.service".into())));
        assert!("pid:x".parse::<Spec>().unwrap_err().contains("\"x\" is not a pid"));
        assert!("comm:a-very-long-command".parse::<Spec>().unwrap_err().contains("at most 15 bytes"));
        assert!("uid:0".parse::<Spec>().unwrap_err().contains("expected pid:N, comm:NAME"));
        assert!("comm:".parse::<Spec>().is_err());
        // This test process matches itself by pid, comm and exe.
        let me = std::process::id();
        assert!(Spec::Pid(me).matches(me));
        assert!(Spec::Comm(procfs::comm(me).unwrap()).matches(me));
        assert!(Spec::Exe(std::env::current_exe().unwrap()).matches(me));
    }

    #[test]
    fn descendants_of_watched_ones_are_theirs() {
        let parents: BTreeMap<u32, u32> = [(10, 1), (11, 10), (12, 11), (20, 1)].into();
        let watched: BTreeSet<u32> = [10].into();
        assert!(under(12, &watched, &parents));
        assert!(under(11, &watched, &parents));
        assert!(!under(20, &watched, &parents));
        assert!(!under(10, &watched, &parents));
    }
}
