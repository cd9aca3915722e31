//! Watch mode's profiles for Grafana Pyroscope (`rtrace serve --watch … --pyroscope URL`):
//! every `--push-interval` each watched session hands over its profiles so far; what is new
//! since its previous push (what the process did in that interval) is symbolized and pushed,
//! and once more when the process exits. One worker thread does the symbolization and the
//! pushes for every session, so a session's loop never waits on either; when the worker is
//! behind, a profile is dropped and counted (`rtrace_pushes_total{result="dropped"}`).
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use anyhow::Result;

use crate::{
    capture::{Capture, Leaf, OffState},
    push::{Endpoint, PushStats, Pusher},
    render::pyroscope::{self, Identity},
    report,
    symbolize::BlazeResolver,
};

/// `--pyroscope`, `--push-interval`, `--service-name COMM=NAME`.
#[derive(Clone, Debug)]
pub struct PushConfig {
    pub to: Endpoint,
    pub interval: Duration,
    pub names: Vec<(String, String)>,
}

impl PushConfig {
    /// The service_name of a watched process: its `--service-name` mapping, else its comm.
    pub fn identity(&self, pid: u32, comm: &str) -> Identity {
        let name = self.names.iter().find(|(c, _)| c == comm).map_or(comm, |(_, n)| n.as_str());
        Identity { service_name: name.to_owned(), pid, host: pyroscope::hostname() }
    }
}

type SampleKey = (u32, u32, Vec<u64>, Vec<u64>, Leaf);
type OffKey = (u32, u32, crate::capture::Addrs, crate::capture::Addrs, OffState, Leaf);

/// One session's totals at its previous push.
#[derive(Default)]
pub struct Deltas {
    cpu: HashMap<SampleKey, u64>,
    off: HashMap<OffKey, (u64, u64)>,
    duration_ms: u64,
}

impl Deltas {
    /// Forgets the totals of folded processes (their last part was in this push).
    pub fn forget(&mut self, pids: &std::collections::BTreeSet<u32>) {
        self.cpu.retain(|k, _| !pids.contains(&k.0));
        self.off.retain(|k, _| !pids.contains(&k.0));
    }

    /// What of `now` (the session's totals so far) was not pushed yet; `now` becomes the
    /// previous push. Blocks still in flight count when they end.
    pub fn take(&mut self, mut now: Capture) -> Capture {
        now.cpu_samples.retain_mut(|s| {
            let key = (s.tgid, s.tid, s.user.clone(), s.kernel.clone(), s.leaf);
            let before = self.cpu.insert(key, s.count).unwrap_or(0);
            s.count = s.count.saturating_sub(before);
            s.count > 0
        });
        now.offcpu.retain_mut(|o| {
            if o.in_flight {
                return false;
            }
            let key = (o.tgid, o.tid, o.user.clone(), o.kernel.clone(), o.state, o.leaf);
            let (total, count) = self.off.insert(key, (o.total_ns, o.count)).unwrap_or((0, 0));
            o.total_ns = o.total_ns.saturating_sub(total);
            o.count = o.count.saturating_sub(count);
            o.count > 0
        });
        now.wakeups.clear();
        let d = now.session.duration_ms;
        now.session.duration_ms = d.saturating_sub(self.duration_ms);
        self.duration_ms = d;
        now
    }
}

/// How many profiles the worker could not take (it was behind) and what became of the pushes.
#[derive(Default)]
pub struct WorkerStats {
    pub dropped: AtomicU64,
    pub push: Arc<PushStats>,
}

/// Profiles waiting for the worker at most.
const BACKLOG: usize = 32;

pub struct Worker {
    handle: Option<Handle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a session holds to hand its profiles to the worker.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::SyncSender<(Identity, Capture)>,
    pub stats: Arc<WorkerStats>,
    pub cfg: Arc<PushConfig>,
}

impl Worker {
    pub fn start(cfg: &PushConfig) -> Result<Worker> {
        let pusher = Pusher::start(cfg.to.clone())?;
        let stats = Arc::new(WorkerStats { dropped: AtomicU64::new(0), push: pusher.stats() });
        let (tx, rx) = mpsc::sync_channel::<(Identity, Capture)>(BACKLOG);
        let thread = std::thread::Builder::new().name("rtrace-watch-push".into()).spawn(move || {
            // One resolver for every push: a binary's symbols are read once.
            let mut resolver = BlazeResolver::default();
            for (who, capture) in rx {
                let analysis = report::analyze(&capture, &mut resolver);
                if let Some(body) = pyroscope::request(&analysis, &who) {
                    pusher.push(body);
                }
            }
            pusher.finish(Duration::from_secs(5));
        })?;
        let handle = Handle { tx, stats, cfg: Arc::new(cfg.clone()) };
        Ok(Worker { handle: Some(handle), thread: Some(thread) })
    }

    pub fn handle(&self) -> Option<Handle> {
        self.handle.clone()
    }

    /// Once every session has ended (their handles are gone): pushes what is queued, for a
    /// few seconds at most, and ends the worker.
    pub fn stop(&mut self) {
        self.handle = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Handle {
    /// Hands over one interval's profiles; never waits.
    pub fn send(&self, who: Identity, capture: Capture) {
        if capture.cpu_samples.is_empty() && capture.offcpu.is_empty() {
            return;
        }
        if self.tx.try_send((who, capture)).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl WorkerStats {
    /// (sent, failed, dropped) so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let p = &self.push;
        let dropped = self.dropped.load(Ordering::Relaxed) + PushStats::get(&p.dropped);
        (PushStats::get(&p.sent), PushStats::get(&p.failed), dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{RawOff, RawSample};

    #[test]
    fn each_push_has_what_is_new() {
        let s = |count, leaf: u64| RawSample { tgid: 1, tid: 2, user: vec![leaf, 9], count, ..Default::default() };
        let o = |total_ns, count, in_flight| RawOff {
            tgid: 1,
            tid: 3,
            user: vec![5].into(),
            state: OffState::Sleep,
            total_ns,
            count,
            in_flight,
            ..Default::default()
        };
        let cap = |cpu: Vec<RawSample>, off: Vec<RawOff>, ms| {
            let mut c = Capture { cpu_samples: cpu, offcpu: off, ..Default::default() };
            c.session.duration_ms = ms;
            c
        };
        let mut d = Deltas::default();
        let first = d.take(cap(vec![s(3, 7)], vec![o(100, 2, false), o(50, 1, true)], 15_000));
        assert_eq!(first.cpu_samples.iter().map(|s| s.count).collect::<Vec<_>>(), [3]);
        assert_eq!(first.offcpu.iter().map(|o| (o.total_ns, o.count)).collect::<Vec<_>>(), [(100, 2)]);
        assert_eq!(first.session.duration_ms, 15_000);
        let second = d.take(cap(vec![s(5, 7), s(1, 8)], vec![o(100, 2, false)], 30_000));
        assert_eq!(second.cpu_samples.iter().map(|s| (s.user[0], s.count)).collect::<Vec<_>>(), [(7, 2), (8, 1)]);
        assert!(second.offcpu.is_empty(), "nothing new off CPU: {:?}", second.offcpu);
        assert_eq!(second.session.duration_ms, 15_000);
    }

    #[test]
    fn service_names() {
        let cfg = PushConfig {
            to: "http://localhost:4040".parse().unwrap(),
            interval: Duration::from_secs(15),
            names: vec![("make".into(), "ci-make".into())],
        };
        assert_eq!(cfg.identity(7, "make").service_name, "ci-make");
        assert_eq!(cfg.identity(7, "git").service_name, "git");
        assert_eq!(cfg.identity(7, "git").pid, 7);
    }
}
