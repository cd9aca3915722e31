//! The session-backed endpoints (profile, offcpu, wall, report, report.html): each request runs one session
//! of rtrace on its pid — the same `session::run` as the one-shot CLI, with
//! `SessionOptions::for_pid` — on a thread of its own, then symbolizes and answers with the
//! profile built in memory (render/profiles.rs), report.json or report.html. A session follows the pid's
//! descendants only when the caller may (`Access::descendants`, root); else the profile says so
//! in a comment (the response header says it for every kind, routes.rs).
//!
//! Decision (#14 item 2): each request loads its own probes. A shared session would have to
//! trace the union of the pids and split the result, and would hand a later caller a window it
//! did not ask for; per-request sessions cost one load and attach each (measured by
//! `cargo xtask bench serve`), and nothing is loaded while the daemon is idle.
use std::{
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use super::backend::{Access, Backend, BoxFuture, Kind, ServeError};
use crate::{
    error::UsageError,
    options::SessionOptions,
    render::{flamegraph, html, json, pprof, profiles},
    report,
    symbolize::BlazeResolver,
};

/// The backend of `rtrace serve`: sessions for the session-backed endpoints, the Go runtime
/// view (serve/goview.rs) for goroutine and heap.
#[derive(Default)]
pub struct Sessions {
    /// Sessions running now (their threads hold BPF programs until they return).
    active: Arc<(Mutex<usize>, Condvar)>,
    /// `--watch`'s continuous sessions (serve/watch.rs).
    watcher: Mutex<Option<super::watch::Watcher>>,
}

/// What a session answers with.
#[derive(Clone, Copy)]
enum Want {
    Profile(Kind),
    Report,
    ReportHtml,
}

impl Sessions {
    /// Runs `want` for `seconds` on a thread of its own (a session blocks and runs its own
    /// event loop); the request's future waits for it without blocking the server.
    fn spawn(&self, access: Access, want: Want, seconds: u32) -> BoxFuture<'_, Result<Vec<u8>, ServeError>> {
        let active = self.active.clone();
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            *active.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            let spawned = std::thread::Builder::new().name(format!("rtrace-session-{}", access.pid)).spawn({
                let active = active.clone();
                move || {
                    let r = answer(access, want, seconds);
                    let (n, cv) = &*active;
                    *n.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                    cv.notify_all();
                    let _ = tx.send(r);
                }
            });
            if let Err(e) = spawned {
                *active.0.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                return Err(ServeError::Internal(format!("starting a session thread: {e}")));
            }
            rx.await.map_err(|_| ServeError::Internal("the session thread ended without an answer".into()))?
        })
    }
}

/// A session of `seconds` on `access.pid`, then the bytes asked for.
fn answer(access: Access, want: Want, seconds: u32) -> Result<Vec<u8>, ServeError> {
    crate::session::preflight().map_err(|e| ServeError::Internal(e.to_string()))?;
    let mut opts = SessionOptions::for_pid(access.pid, Some(Duration::from_secs(seconds.into())));
    opts.quiet = true;
    // Not root: descendants only while they run as the caller (session and kernel check them).
    opts.owner = access.owner;
    opts.expect_start = access.start;
    if let Want::Profile(kind) = want {
        // A profile needs its own hooks only: no syscall latency, no Go view (and no off-CPU
        // for an on-CPU profile), as Go's CPU profile is samples alone.
        opts.syscalls = None;
        opts.go = false;
        if kind == Kind::Cpu {
            opts.min_block = None;
        }
    }
    log::info!("session on pid {} for {seconds} s starts (descendants {})", access.pid, access.descendants_text());
    let capture = crate::session::run(&opts, "unchanged", |_| Ok(())).map_err(session_error)?;
    let mut analysis = report::analyze(&capture, &mut BlazeResolver::default());
    // The session's probes, dropped meanwhile (loader/reaper.rs), are gone before it answers.
    crate::loader::reaper::join_all();
    log::info!("session on pid {} ended ({} ms)", access.pid, analysis.report.session.duration_ms);
    if !access.kernel_stacks {
        profiles::strip_kernel(&mut analysis);
    }
    let mut out = Vec::new();
    let start = profiles::start_nanos(&analysis);
    let profile = match want {
        Want::Report | Want::ReportHtml => None,
        Want::Profile(Kind::Cpu) => Some(profiles::cpu(&analysis, start)),
        Want::Profile(Kind::Offcpu) => Some(profiles::offcpu(&analysis, start)),
        Want::Profile(Kind::Wall) => Some(profiles::wall(&analysis, start)),
        Want::Profile(Kind::Report | Kind::ReportHtml) => unreachable!("a report is Want::Report(Html)"),
    };
    let written = match profile {
        None if matches!(want, Want::ReportHtml) => html_report(&analysis, &mut out),
        None => json::render(&analysis.report, &mut out),
        Some(mut p) => {
            if access.owner.is_some() {
                comment(&mut p, &format!("descendants: {}", access.descendants_text()));
                for k in &analysis.report.skipped {
                    comment(&mut p, &format!("skipped: {}", k.line()));
                }
            }
            pprof::write_gz(&p, &mut out)
        }
    };
    written.map_err(|e| ServeError::Internal(format!("encoding the answer: {e:#}")))?;
    Ok(out)
}

/// report.html as the CLI writes it, without the report directory's links (there is none).
fn html_report(analysis: &report::Analysis, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let off = if analysis.report.offcpu.is_some() { analysis.offcpu.folded() } else { Vec::new() };
    let flames = flamegraph::Flames::render(analysis, &analysis.cpu.folded(), &off)?;
    html::render(analysis, &flames, html::Links::Served, out)
}

/// One more comment line in a profile (`go tool pprof -comments` prints them).
fn comment(p: &mut pprof::Profile, text: &str) {
    p.string_table.push(text.to_owned());
    p.comment.push(p.string_table.len() as i64 - 1);
}

/// A session's failure as an HTTP answer: the pid gone or not a process is the caller's
/// (404, 400), anything else is ours (500), with the message the CLI would print.
fn session_error(e: anyhow::Error) -> ServeError {
    match e.downcast_ref::<UsageError>() {
        Some(UsageError::NoSuchPid(p)) => ServeError::NotFound(format!("no process {p}")),
        Some(u @ (UsageError::OwnPid(_) | UsageError::KernelThread { .. } | UsageError::ThreadNotProcess { .. })) => {
            ServeError::BadRequest(u.to_string())
        }
        Some(u) => ServeError::Internal(u.to_string()),
        None => ServeError::Internal(format!("{e:#}")),
    }
}

impl Backend for Sessions {
    fn profile(&self, access: Access, kind: Kind, seconds: u32) -> BoxFuture<'_, Result<Vec<u8>, ServeError>> {
        self.spawn(access, Want::Profile(kind), seconds)
    }
    fn report(&self, access: Access, kind: Kind, seconds: u32) -> BoxFuture<'_, Result<Vec<u8>, ServeError>> {
        let want = if kind == Kind::ReportHtml { Want::ReportHtml } else { Want::Report };
        self.spawn(access, want, seconds)
    }
    fn goroutine(&self, pid: u32, debug: u8) -> Result<Vec<u8>, ServeError> {
        super::goview::goroutine(pid, debug)
    }
    fn heap(&self, pid: u32) -> Result<Vec<u8>, ServeError> {
        super::goview::heap(pid)
    }
    fn watch(&self, cfg: super::watch::WatchConfig) {
        *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(super::watch::Watcher::start(cfg));
    }
    fn metrics(&self) -> Option<String> {
        self.watcher.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|w| w.metrics())
    }
    fn shutdown(&self) {
        if let Some(w) = self.watcher.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.stop();
        }
    }
    fn wait_idle(&self, limit: Duration) -> bool {
        let (n, cv) = &*self.active;
        let g = n.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = cv.wait_timeout_while(g, limit, |n| *n > 0).unwrap_or_else(|e| e.into_inner());
        *g == 0
    }
}
