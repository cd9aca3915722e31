//! `--pyroscope URL` (issue #15): profiles pushed to Grafana Pyroscope (or Grafana Alloy's
//! `pyroscope.receive_http`) by one background thread, so that tracing never waits on the
//! network: a push is queued (at most `QUEUE`; beyond that it is dropped and counted), sent
//! with retries and backoff, and counted as sent or failed. The bodies are render/pyroscope.rs'.
//!
//! Decisions: plain http only — TLS and credentials belong to the local agent a fleet already
//! runs (Alloy forwards to Grafana Cloud); a push that fails `ATTEMPTS` times is given up.
use std::{
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Result;

pub mod http;

/// Where pushes go: `http://HOST[:PORT][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// host:port, as connected to and sent in Host.
    pub authority: String,
    /// A path the server is mounted under ("" for the root), without a trailing slash.
    pub prefix: String,
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Endpoint, String> {
        if s.starts_with("https://") {
            return Err(format!(
                "--pyroscope {s}: https is not supported; push to a local Grafana Alloy \
                 (pyroscope.receive_http, plain http on loopback) that forwards with TLS"
            ));
        }
        let rest = s.strip_prefix("http://").ok_or_else(|| {
            format!("--pyroscope {s:?}: expected http://HOST[:PORT][/PATH], e.g. http://localhost:4040")
        })?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if host.is_empty() || host.contains('@') {
            return Err(format!("--pyroscope {s:?}: expected http://HOST[:PORT] (no credentials in the URL)"));
        }
        let authority = match host.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => host.to_owned(),
            Some(_) => return Err(format!("--pyroscope {s:?}: {host:?} is not HOST:PORT")),
            None => format!("{host}:80"),
        };
        Ok(Endpoint { authority, prefix: path.trim_end_matches('/').to_owned() })
    }
}

/// Pushes waiting to be sent at most; more are dropped (and counted).
const QUEUE: usize = 16;
/// Tries per push, with `BACKOFF` doubling between them.
const ATTEMPTS: u32 = 4;
const BACKOFF: Duration = Duration::from_millis(500);
/// One try's limit (connect, send, answer).
const TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of the pushes so far.
#[derive(Debug, Default)]
pub struct PushStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub retries: AtomicU64,
    /// The last failure, said once at the end (the CLI) or logged (the daemon).
    pub last_error: Mutex<Option<String>>,
}

impl PushStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

pub struct Pusher {
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    stats: Arc<PushStats>,
    /// Set by `finish`: from then on, no retry waits past it.
    give_up_at: Arc<Mutex<Option<Instant>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub endpoint: Endpoint,
}

impl Pusher {
    pub fn start(to: Endpoint) -> Result<Pusher> {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let stats = Arc::new(PushStats::default());
        let give_up_at = Arc::new(Mutex::new(None));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (s, g, e) = (stats.clone(), give_up_at.clone(), to.clone());
        let thread = std::thread::Builder::new().name("rtrace-push".into()).spawn(move || {
            for body in rx {
                send_one(&rt, &e, body, &s, &g);
            }
        })?;
        Ok(Pusher { tx: Some(tx), stats, give_up_at, thread: Some(thread), endpoint: to })
    }

    /// Queues a push; never waits (a full queue drops it and counts the drop).
    pub fn push(&self, body: Vec<u8>) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(body).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> Arc<PushStats> {
        self.stats.clone()
    }

    /// Sends what is queued, retrying for at most `within` more, and stops the thread.
    pub fn finish(mut self, within: Duration) -> Arc<PushStats> {
        *lock(&self.give_up_at) = Some(Instant::now() + within);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.stats.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn send_one(
    rt: &tokio::runtime::Runtime,
    to: &Endpoint,
    body: Vec<u8>,
    stats: &PushStats,
    give_up_at: &Mutex<Option<Instant>>,
) {
    let mut wait = BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let limit = lock(give_up_at).map(|t| t.saturating_duration_since(Instant::now()));
        let timeout = limit.map_or(TRY_TIMEOUT, |l| l.min(TRY_TIMEOUT)).max(Duration::from_millis(100));
        match rt.block_on(http::post(to, body.clone(), timeout)) {
            Ok(()) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                let give_up = attempt == ATTEMPTS || lock(give_up_at).is_some_and(|t| Instant::now() >= t);
                if give_up {
                    log::warn!("pushing a profile to {}: {e:#} (given up after {attempt} tries)", to.authority);
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    *lock(&stats.last_error) = Some(format!("{e:#}"));
                    return;
                }
                stats.retries.fetch_add(1, Ordering::Relaxed);
                // In steps, so that `finish` cuts a long backoff short.
                let until = Instant::now() + wait;
                while Instant::now() < until && lock(give_up_at).is_none_or(|t| Instant::now() < t) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                wait *= 2;
            }
        }
    }
}

#[cfg(test)]
mod tests;
