//! `rtrace serve --watch SPEC` (issue #15): processes matching a spec — running at start or
//! started later — are traced continuously, each by one live session (the CLI's
//! `session::run`, run until the daemon stops or the process exits), with their descendants;
//! `GET /metrics` renders what those sessions have seen (render/metrics.rs).
//!
//! Decisions: a process under an already watched one is its session's descendant, not a
//! watched process of its own; sessions sample on-CPU at `--watch-frequency` (19 Hz) and read
//! the Go runtime of Go processes (goroutines, GC) about once a second; a process that exited
//! stays in /metrics for `KEEP` so that its last values are scraped, then leaves. With
//! `--pyroscope`, push.rs pushes their profiles.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

pub mod push;

use crate::{
    analyze::children::{self, ChildrenConfig},
    capture::Capture,
    collect::live::{Live, LiveSnapshot},
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

/// How long an exited process's last values stay in /metrics.
const KEEP: Duration = Duration::from_secs(60);
/// How often /proc is scanned for new matches and sessions publish their readings.
const SCAN: Duration = Duration::from_secs(1);

struct Entry {
    watched: Watched,
    ended: Option<Instant>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<u32, Entry>,
}

/// What `rtrace serve --watch` was asked for.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub specs: Vec<Spec>,
    pub frequency_hz: u64,
    pub push: Option<push::PushConfig>,
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
    /// Starts the scanner; sessions start as processes match.
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
                scan(&cfg.specs, cfg.frequency_hz, push.as_ref(), (&state, &stop, &threads));
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

    /// The OpenMetrics text of every watched process (exited ones for `KEEP`).
    pub fn metrics(&self) -> String {
        let st = lock(&self.state);
        let watched: Vec<Watched> = st.entries.values().map(|e| e.watched.clone()).collect();
        let running = st.entries.values().filter(|e| e.ended.is_none()).count();
        drop(st);
        let pushes = self.push_stats.as_ref().map(|p| p.counts());
        metrics::render(&watched, &Health { watched: running, cpu_seconds: self_cpu_seconds(), pushes })
    }

    /// Ends every session (each detaches at its next tick) and waits for them.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        loop {
            let Some(t) = lock(&self.threads).pop() else { break };
            let _ = t.join();
        }
        // The sessions' last pushes are queued: sent (for a few seconds at most).
        if let Some(mut w) = lock(&self.pusher).take() {
            w.stop();
        }
    }
}

/// One pass over /proc: new matches get a session; exited ones expire after KEEP.
type Shared<'a> = (&'a Arc<Mutex<State>>, &'a Arc<AtomicBool>, &'a Mutex<Vec<std::thread::JoinHandle<()>>>);

fn scan(specs: &[Spec], hz: u64, push: Option<&push::Handle>, (state, stop, threads): Shared<'_>) {
    // Entries: the running ones and the exited ones kept for KEEP (not watched again).
    let (known, mut watched) = {
        let mut st = lock(state);
        st.entries.retain(|_, e| e.ended.is_none_or(|t| t.elapsed() < KEEP));
        let running = st.entries.iter().filter(|(_, e)| e.ended.is_none()).map(|(p, _)| *p);
        (st.entries.keys().copied().collect::<BTreeSet<u32>>(), running.collect::<BTreeSet<u32>>())
    };
    let parents = procfs::parent_map();
    let me = std::process::id();
    for &pid in parents.keys() {
        if known.contains(&pid) || pid == me || procfs::is_kernel_thread(pid) || !specs.iter().any(|s| s.matches(pid)) {
            continue;
        }
        // A zombie has nothing left to trace; a descendant of a watched process is traced by
        // that process's session already.
        if procfs::state_and_ppid(pid).is_none_or(|(s, _)| s == 'Z') || under(pid, &watched, &parents) {
            continue;
        }
        let comm = procfs::comm(pid).unwrap_or_default();
        log::info!("rtrace serve --watch: pid {pid} ({comm}) matches: watching it");
        let entry = Entry { watched: Watched { pid, comm: comm.clone(), ..Default::default() }, ended: None };
        lock(state).entries.insert(pid, entry);
        watched.insert(pid);
        let (state, stop, push) = (state.clone(), stop.clone(), push.cloned());
        let t = std::thread::Builder::new()
            .name(format!("rtrace-watch-{pid}"))
            .spawn(move || watch_one(pid, comm, hz, push, (state, stop)));
        match t {
            Ok(t) => lock(threads).push(t),
            Err(e) => log::error!("rtrace serve --watch: starting a session for pid {pid}: {e}"),
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

/// The metrics of one watched process from its session's readings.
fn watched_of(pid: u32, comm: &str, snap: &LiveSnapshot, cfg: &ChildrenConfig) -> Watched {
    Watched {
        pid,
        comm: comm.to_owned(),
        ledger: Some(children::analyze_with(&snap.lifecycle, cfg, &snap.evidence)),
        syscalls: crate::analyze::syscalls::rows(&snap.syscalls),
        offcpu_ns: snap.offcpu_ns.clone(),
        cpu_samples: snap.cpu_samples,
        lost: snap.lost.clone(),
        go: snap.go.clone(),
    }
}

/// One live session on `pid` until it exits or the daemon stops.
fn watch_one(
    pid: u32,
    comm: String,
    hz: u64,
    push: Option<push::Handle>,
    (state, stop): (Arc<Mutex<State>>, Arc<AtomicBool>),
) {
    let mut opts = SessionOptions::for_pid(pid, None);
    opts.quiet = true;
    opts.frequency_hz = hz;
    // A quarter of the one-shot ring: copies at 19 Hz (and the off-CPU ones) are drained
    // every tick; a full ring is a counted drop.
    opts.ustack_ring_bytes = Some(4 << 20);
    let cfg = ChildrenConfig {
        slow_reap_ns: opts.slow_reap.as_nanos() as u64,
        wait_stall_ns: opts.wait_stall.as_nanos() as u64,
    };
    let deltas = Arc::new(Mutex::new(push::Deltas::default()));
    // The last snapshot's evidence, for the ledger of the whole session at its end.
    let evidence = Arc::new(Mutex::new(children::Evidence::default()));
    let publish_one = {
        let (state, comm, cfg, push, deltas) = (state.clone(), comm.clone(), cfg.clone(), push.clone(), deltas.clone());
        let evidence = evidence.clone();
        move |mut snap: LiveSnapshot| {
            if let (Some(p), Some(profile)) = (&push, snap.profile.take()) {
                p.send(p.cfg.identity(pid, &comm), lock(&deltas).take(profile));
            }
            let w = watched_of(pid, &comm, &snap, &cfg);
            *lock(&evidence) = std::mem::take(&mut snap.evidence);
            if let Some(e) = lock(&state).entries.get_mut(&pid) {
                e.watched = w;
            }
        }
    };
    // Readings are analysed and published on a thread of their own: with a few thousand
    // children the ledger's analysis took 100-150 ms, during which the session loop, which
    // drains the events ring, stood still (a 1 MiB ring holds ~0.4 s of a 500 children/s
    // burst's events). One reading waits at most; a newer one while the thread is busy is
    // skipped (readings are totals so far, profiles too: push::Deltas sends what is new).
    let (tx, rx) = std::sync::mpsc::sync_channel::<LiveSnapshot>(1);
    let publisher = std::thread::Builder::new().name(format!("rtrace-pub-{pid}")).spawn(move || {
        for snap in rx {
            publish_one(snap);
        }
    });
    if let Err(e) = &publisher {
        log::error!("rtrace serve --watch: starting the publisher of pid {pid}: {e}");
    }
    let publish = Box::new(move |snap: LiveSnapshot| {
        let _ = tx.try_send(snap);
    });
    let live =
        Live { stop, every: SCAN, publish, profile_every: push.as_ref().map(|p| p.cfg.interval), last_profile: None };
    let r = crate::session::preflight()
        .map_err(anyhow::Error::from)
        .and_then(|_| crate::session::run_live(&opts, "unchanged", |_| Ok(()), Some(live)));
    // The session has dropped its sender: the last reading is published before the whole
    // session's ledger replaces it (and its profile counted in the deltas).
    if let Ok(t) = publisher {
        let _ = t.join();
    }
    let mut st = lock(&state);
    match r {
        Ok(capture) => {
            // The whole session's ledger, as the one-shot report has it.
            if let Some(e) = st.entries.get_mut(&pid) {
                let ledger = children::analyze_with(&capture.lifecycle, &cfg, &lock(&evidence));
                for f in &ledger.findings {
                    log::debug!("rtrace serve --watch: pid {pid} ({comm}): {:?} {}", f.severity, f.summary);
                }
                e.watched.ledger = Some(ledger);
            }
            log::info!("rtrace serve --watch: pid {pid} ({comm}): session ended ({:?})", capture.session.ended_by);
            // The last part of its profiles, once more as it exits.
            if let Some(p) = &push {
                p.send(p.cfg.identity(pid, &comm), last_profiles(capture, &mut lock(&deltas)));
            }
        }
        Err(e) => log::warn!("rtrace serve --watch: pid {pid} ({comm}): {e:#}"),
    }
    if let Some(e) = st.entries.get_mut(&pid) {
        e.ended = Some(Instant::now());
    }
}

/// What of a finished session's profiles its periodic pushes did not have: its samples and
/// blocks with what symbolizes them, not the rest (the ledger, syscalls, Go view), which a
/// profile does not need analysed.
fn last_profiles(c: Capture, deltas: &mut push::Deltas) -> Capture {
    deltas.take(Capture {
        cpu_samples: c.cpu_samples,
        offcpu: c.offcpu,
        session: c.session,
        target: c.target,
        processes: c.processes,
        held_files: c.held_files,
        vdso_symbols: c.vdso_symbols,
        unwind: c.unwind,
        ..Default::default()
    })
}

fn self_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
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
